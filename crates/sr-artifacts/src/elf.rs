//! Is a file a static x86-64 ELF executable? A few header reads, not an ELF library: the
//! initramfs has no dynamic loader, so the agent must have no `PT_INTERP` program header.

/// What [`check_static`] found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElfProblem {
    /// Not an ELF file at all (or truncated).
    NotElf(String),
    /// An ELF for another class, byte order or machine.
    WrongKind(String),
    /// Not an executable (a relocatable object, a core file).
    NotExecutable,
    /// Dynamically linked: the interpreter it asks for.
    Dynamic(String),
}

const PT_INTERP: u32 = 3;
const EM_X86_64: u16 = 62;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Checks that `bytes` is a 64-bit little-endian x86-64 executable (`ET_EXEC` or a static-pie
/// `ET_DYN`) without `PT_INTERP`.
pub fn check_static(bytes: &[u8]) -> Result<(), ElfProblem> {
    if bytes.get(..4) != Some(b"\x7fELF") {
        return Err(ElfProblem::NotElf("no ELF magic".into()));
    }
    if bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
        return Err(ElfProblem::WrongKind(
            "not a 64-bit little-endian ELF".into(),
        ));
    }
    let truncated = || ElfProblem::NotElf("truncated ELF header".into());
    let e_type = u16_at(bytes, 0x10).ok_or_else(truncated)?;
    let machine = u16_at(bytes, 0x12).ok_or_else(truncated)?;
    if machine != EM_X86_64 {
        return Err(ElfProblem::WrongKind(format!(
            "machine {machine}, not x86-64 ({EM_X86_64})"
        )));
    }
    if e_type != 2 && e_type != 3 {
        return Err(ElfProblem::NotExecutable);
    }
    let phoff = u64_at(bytes, 0x20).ok_or_else(truncated)?;
    let phentsize = u16_at(bytes, 0x36).ok_or_else(truncated)?;
    let phnum = u16_at(bytes, 0x38).ok_or_else(truncated)?;
    let phoff = usize::try_from(phoff).map_err(|_| truncated())?;
    for i in 0..usize::from(phnum) {
        let at = phoff
            .checked_add(i * usize::from(phentsize))
            .ok_or_else(truncated)?;
        let p_type = u32_at(bytes, at).ok_or_else(truncated)?;
        if p_type == PT_INTERP {
            let off = u64_at(bytes, at + 8).and_then(|o| usize::try_from(o).ok());
            let size = u64_at(bytes, at + 0x20).and_then(|s| usize::try_from(s).ok());
            let interp = match (off, size) {
                (Some(o), Some(s)) => bytes
                    .get(o..o.saturating_add(s))
                    .map(|b| String::from_utf8_lossy(b).trim_end_matches('\0').to_owned())
                    .unwrap_or_default(),
                _ => String::new(),
            };
            return Err(ElfProblem::Dynamic(interp));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 header with `phnum` program headers of the given types.
    fn elf(e_type: u16, types: &[u32]) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[0x10..0x12].copy_from_slice(&e_type.to_le_bytes());
        b[0x12..0x14].copy_from_slice(&EM_X86_64.to_le_bytes());
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&(types.len() as u16).to_le_bytes());
        let interp_at = 64 + 56 * types.len();
        for t in types {
            let mut ph = vec![0u8; 56];
            ph[..4].copy_from_slice(&t.to_le_bytes());
            ph[8..16].copy_from_slice(&(interp_at as u64).to_le_bytes());
            ph[0x20..0x28].copy_from_slice(&28u64.to_le_bytes());
            b.extend(ph);
        }
        b.extend(b"/lib64/ld-linux-x86-64.so.2\0");
        b
    }

    #[test]
    fn static_executables_pass() {
        assert_eq!(check_static(&elf(2, &[1, 1, 4])), Ok(()));
        assert_eq!(check_static(&elf(3, &[1, 2])), Ok(()), "static-pie");
    }

    #[test]
    fn an_interpreter_is_refused_and_named() {
        assert_eq!(
            check_static(&elf(3, &[6, 3, 1])),
            Err(ElfProblem::Dynamic("/lib64/ld-linux-x86-64.so.2".into()))
        );
    }

    #[test]
    fn other_files_are_refused_without_panicking() {
        assert!(matches!(
            check_static(b"#!/bin/sh\n"),
            Err(ElfProblem::NotElf(_))
        ));
        assert!(matches!(check_static(b""), Err(ElfProblem::NotElf(_))));
        assert_eq!(check_static(&elf(1, &[])), Err(ElfProblem::NotExecutable));
        let mut truncated = elf(2, &[1, 3]);
        truncated.truncate(80);
        assert!(matches!(
            check_static(&truncated),
            Err(ElfProblem::NotElf(_))
        ));
        let mut arm = elf(2, &[]);
        arm[0x12] = 183;
        assert!(matches!(check_static(&arm), Err(ElfProblem::WrongKind(_))));
    }

    #[test]
    fn the_running_test_binary_is_dynamic() {
        // The test harness is built without crt-static here, so it names its loader.
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        if let Err(ElfProblem::Dynamic(interp)) = check_static(&exe) {
            assert!(interp.contains("ld-linux"), "{interp}");
        }
    }
}
