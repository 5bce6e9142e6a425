//! What both VMM drivers do alike on the host: a launch failure's shape, the digest of an
//! artifact or image as opened, a pinned digest's check, the tail of a log for a hint, the
//! VMM's version line, and fresh entropy for the guest.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};
use sr_bundle::ArtifactCheck;
use sr_common::{Diagnostic, ErrorCode};

use crate::outcome::RunStatus;

/// A launch failure (SR-RUN-002) at `phase`.
pub fn failed(phase: &str, cause: impl Into<String>, hint: impl Into<String>) -> RunStatus {
    RunStatus::LaunchFailed {
        diagnostic: Diagnostic::new(ErrorCode::RunLaunch, phase, cause.into(), hint.into()),
    }
}

/// `sha256:<hex>` of what `f` reads from where it stands (its start, for a fresh open).
pub fn sha256_of(mut f: &std::fs::File) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

/// `sha256:<hex>` of the file at `path`.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    sha256_of(&std::fs::File::open(path)?)
}

/// Refuses an artifact whose digest is not the one the policy pins.
pub fn check_pinned(a: &ArtifactCheck, digest: &str) -> Result<(), RunStatus> {
    match &a.expected_sha256 {
        Some(expected) if expected != digest => Err(failed(
            "launch.artifacts",
            format!(
                "the {} {} has digest {digest}, the policy pins {expected}",
                a.role, a.path
            ),
            "the file changed since the policy was written: rebuild it or update artifacts.*.sha256",
        )),
        _ => Ok(()),
    }
}

/// The last `max` bytes of a log (a guest console, a VMM's messages), as text.
pub fn console_tail(path: &Path, max: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[start..]).trim().to_owned()
}

/// The first line `bin --version` prints (`QEMU emulator version 7.2.x`, `Firecracker
/// v1.x.y`), or nothing.
pub fn version_line(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .env_clear()
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

/// Whether `name` is one plain file name (no directory, no `..`): how plans name a VMM's files
/// inside its own directory or jail.
pub fn plain_name(name: &str) -> bool {
    let p = Path::new(name);
    p.components().count() == 1
        && matches!(p.components().next(), Some(std::path::Component::Normal(_)))
}

/// Hex of `n` random bytes from the host's pool.
pub fn random_hex(n: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(hex::encode(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(expected: Option<&str>) -> ArtifactCheck {
        ArtifactCheck {
            role: "kernel".into(),
            path: "/k".into(),
            expected_sha256: expected.map(str::to_owned),
            jail_path: String::new(),
        }
    }

    #[test]
    fn a_pinned_digest_must_match_and_an_unpinned_one_is_recorded_only() {
        assert!(check_pinned(&check(None), "sha256:aa").is_ok());
        assert!(check_pinned(&check(Some("sha256:aa")), "sha256:aa").is_ok());
        assert!(check_pinned(&check(Some("sha256:aa")), "sha256:bb").is_err());
    }

    #[test]
    fn only_a_single_normal_component_is_a_plain_name() {
        assert!(plain_name("vsock.sock"));
        for bad in ["", ".", "..", "/vsock.sock", "a/b", "../x"] {
            assert!(!plain_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_file_digest_is_of_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_boot_failure_hint_carries_the_console_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        std::fs::write(&log, format!("{}the last words\n", "x".repeat(5000))).unwrap();
        let tail = console_tail(&log, 100);
        assert!(tail.ends_with("the last words"));
        assert!(tail.len() <= 100);
        assert_eq!(console_tail(&dir.path().join("missing"), 100), "");
    }
}
