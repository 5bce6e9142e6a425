//! The seccomp filter: compiled from the bundle's [`SeccompPlan`], installed last before exec.
//!
//! BPF programs are stacked (the kernel runs every installed filter and the most severe
//! verdict wins; ALLOW is the least severe):
//!
//! 1. **deny list** (seccompiler): each syscall in `denied_syscalls` returns `EPERM`; `clone`
//!    returns `EPERM` when its flags argument carries any of `denied_clone_flags` (one rule per
//!    flag, since seccompiler ANDs conditions within a rule and ORs rules), and so does
//!    `unshare`, which takes the same flags, unless it is denied outright (the sandbox's
//!    profile denies it; the VMM's host filter, [`crate::microvm::host_seccomp`], cannot,
//!    since `unshare(1)` starts the VMM after the filter is in place).
//! 2. **sockets** (see [`super::socket_filter`]): `socket`/`socketpair` outside the allowed
//!    address families and netlink protocols return `EAFNOSUPPORT`; `AF_INET`/`AF_INET6` types
//!    and protocols outside theirs return `EPROTONOSUPPORT`.
//! 3. **clone3** returns `ENOSYS`: its flags live in a struct the filter cannot read, and
//!    `ENOSYS` makes glibc fall back to `clone`, where filter 1 checks the flags.
//! 4. **x32** (x86_64 only): any syscall number with the x32 bit (`0x40000000`) returns
//!    `ENOSYS`, so the deny list cannot be bypassed through the x32 ABI's aliases.
//!
//! seccompiler's programs start with an architecture check that kills the process on a
//! foreign audit arch (i386 via `int 0x80`), closing that bypass too.
//!
//! The digest recorded in the report is the sha256 of the programs' instructions in install
//! order, each as `code (u16 LE) | jt | jf | k (u32 LE)`: the same plan gives the same digest.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};
use sha2::{Digest, Sha256};
use sr_bundle::SeccompPlan;

use super::socket_filter;

/// A compiled filter, ready to install.
#[derive(Debug, Clone)]
pub struct CompiledSeccomp {
    /// Programs in install order.
    pub programs: Vec<BpfProgram>,
    /// `sha256:<hex>` over the programs' instructions.
    pub digest: String,
    /// Number of BPF instructions in total.
    pub instructions: usize,
    /// Plan names that do not exist on this architecture (e.g. `vm86` on x86-64), skipped.
    pub absent_on_arch: Vec<String>,
}

/// Why a plan could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// A syscall name this build does not know (fail closed rather than silently allow it).
    #[error("unknown syscall {0:?} in the seccomp plan")]
    UnknownSyscall(String),
    /// A clone flag name this build does not know.
    #[error("unknown clone flag {0:?} in the seccomp plan")]
    UnknownCloneFlag(String),
    /// A socket family, type or protocol name this build does not know.
    #[error("unknown {what} {name:?} in the seccomp plan")]
    UnknownSocketName {
        /// Which list (`socket family`, `netlink protocol`, ...).
        what: &'static str,
        /// The name.
        name: String,
    },
    /// The deny action is not one the runner implements.
    #[error("unsupported seccomp deny action {0:?} (expected errno:EPERM)")]
    UnsupportedAction(String),
    /// seccompiler refused the filter.
    #[error("seccomp filter compilation failed: {0}")]
    Backend(String),
}

/// The architecture seccompiler compiles for: this build's.
pub(crate) fn target_arch() -> Result<TargetArch, SeccompError> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else if cfg!(target_arch = "aarch64") {
        Ok(TargetArch::aarch64)
    } else {
        Err(SeccompError::Backend(
            "unsupported architecture for seccomp".into(),
        ))
    }
}

/// Compiles the plan. Pure: no syscall is made.
pub fn compile(plan: &SeccompPlan) -> Result<CompiledSeccomp, SeccompError> {
    let errno = match plan.deny_action.as_str() {
        "errno:EPERM" => libc::EPERM as u32,
        other => return Err(SeccompError::UnsupportedAction(other.to_owned())),
    };
    let arch = target_arch()?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let mut absent_on_arch = Vec::new();
    let mut lookup = |name: &String| -> Result<Option<i64>, SeccompError> {
        match syscall_number(name) {
            Some(nr) => Ok(Some(nr)),
            None if ABSENT_ON_THIS_ARCH.contains(&name.as_str()) => {
                absent_on_arch.push(name.clone());
                Ok(None)
            }
            None => Err(SeccompError::UnknownSyscall(name.clone())),
        }
    };
    for name in &plan.denied_syscalls {
        // clone and clone3 are handled by flag (below) and by ENOSYS (filter 2).
        if name == "clone" || name == "clone3" {
            continue;
        }
        if let Some(nr) = lookup(name)? {
            rules.insert(nr, Vec::new());
        }
    }
    let mut enosys: Vec<i64> = Vec::new();
    for name in &plan.enosys_syscalls {
        if let Some(nr) = lookup(name)? {
            enosys.push(nr);
        }
    }
    // Namespace flags on clone are only enforceable if clone3 cannot carry them.
    if !plan.denied_clone_flags.is_empty() && !enosys.contains(&libc::SYS_clone3) {
        enosys.push(libc::SYS_clone3);
    }
    let mut clone_rules = Vec::new();
    for flag in &plan.denied_clone_flags {
        let value = clone_flag(flag).ok_or_else(|| SeccompError::UnknownCloneFlag(flag.clone()))?;
        let cond = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(value),
            value,
        )
        .map_err(|e| SeccompError::Backend(e.to_string()))?;
        clone_rules
            .push(SeccompRule::new(vec![cond]).map_err(|e| SeccompError::Backend(e.to_string()))?);
    }
    if !clone_rules.is_empty() {
        // unshare(2) takes the same flags in its first argument; denied outright, it needs no
        // rule (an empty rule list is the unconditional match).
        rules
            .entry(libc::SYS_unshare)
            .or_insert_with(|| clone_rules.clone());
        rules.insert(libc::SYS_clone, clone_rules);
    }
    let deny: BpfProgram = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno),
        arch,
    )
    .and_then(TryInto::try_into)
    .map_err(|e| SeccompError::Backend(e.to_string()))?;
    let mut programs = vec![deny];
    programs.extend(socket_filter::programs(plan, arch)?);
    if !enosys.is_empty() {
        let c3: BTreeMap<i64, Vec<SeccompRule>> =
            enosys.into_iter().map(|nr| (nr, Vec::new())).collect();
        let p: BpfProgram = SeccompFilter::new(
            c3,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            arch,
        )
        .and_then(TryInto::try_into)
        .map_err(|e| SeccompError::Backend(e.to_string()))?;
        programs.push(p);
    }
    if cfg!(target_arch = "x86_64") {
        programs.push(x32_filter());
    }
    Ok(seal(programs, absent_on_arch))
}

/// The programs as a [`CompiledSeccomp`], with the digest and instruction count of the whole
/// stack in install order (for a filter that adds programs of its own to [`compile`]'s).
pub fn seal(programs: Vec<BpfProgram>, absent_on_arch: Vec<String>) -> CompiledSeccomp {
    let mut hasher = Sha256::new();
    let mut instructions = 0;
    for p in &programs {
        for ins in p {
            hasher.update(ins.code.to_le_bytes());
            hasher.update([ins.jt, ins.jf]);
            hasher.update(ins.k.to_le_bytes());
            instructions += 1;
        }
    }
    CompiledSeccomp {
        programs,
        digest: format!("sha256:{}", hex::encode(hasher.finalize())),
        instructions,
        absent_on_arch,
    }
}

/// `ld [nr]; jge 0x40000000 ? ENOSYS : ALLOW`.
fn x32_filter() -> BpfProgram {
    const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const BPF_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
    const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    vec![
        sock_filter {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        },
        sock_filter {
            code: BPF_JGE_K,
            jt: 0,
            jf: 1,
            k: 0x4000_0000,
        },
        sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        },
        sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ]
}

/// Installs the programs on the calling thread (needs no_new_privs or CAP_SYS_ADMIN).
pub fn install(compiled: &CompiledSeccomp) -> Result<(), SeccompError> {
    for p in &compiled.programs {
        seccompiler::apply_filter(p).map_err(|e| SeccompError::Backend(e.to_string()))?;
    }
    Ok(())
}

/// Names from the kernel's syscall tables that this architecture does not have (or that libc
/// does not number because the kernel only keeps them as `ENOSYS` stubs). Skipped, recorded.
pub const ABSENT_ON_THIS_ARCH: [&str; 7] = [
    "create_module",
    "get_kernel_syms",
    "query_module",
    "sysfs",
    "ustat",
    "vm86",
    "vm86old",
];

/// The value of a `CLONE_NEW*` flag by name.
pub fn clone_flag(name: &str) -> Option<u64> {
    let v = match name.trim_start_matches("CLONE_") {
        "NEWNS" => libc::CLONE_NEWNS,
        "NEWCGROUP" => libc::CLONE_NEWCGROUP,
        "NEWUTS" => libc::CLONE_NEWUTS,
        "NEWIPC" => libc::CLONE_NEWIPC,
        "NEWUSER" => libc::CLONE_NEWUSER,
        "NEWPID" => libc::CLONE_NEWPID,
        "NEWNET" => libc::CLONE_NEWNET,
        // Only meaningful for unshare/clone3; on clone() bit 0x80 falls in the exit-signal
        // byte, so matching it there refuses nothing a valid call could use.
        "NEWTIME" => 0x80,
        _ => return None,
    };
    Some(v as u64)
}

/// The syscall number of `name` on this architecture.
pub fn syscall_number(name: &str) -> Option<i64> {
    #[cfg(target_arch = "x86_64")]
    {
        let arch_only = match name {
            "iopl" => Some(libc::SYS_iopl),
            "ioperm" => Some(libc::SYS_ioperm),
            "uselib" => Some(libc::SYS_uselib),
            "_sysctl" | "sysctl" => Some(libc::SYS__sysctl),
            "nfsservctl" => Some(libc::SYS_nfsservctl),
            "modify_ldt" => Some(libc::SYS_modify_ldt),
            "lookup_dcookie" => Some(libc::SYS_lookup_dcookie),
            "sysfs" => Some(libc::SYS_sysfs),
            "ustat" => Some(libc::SYS_ustat),
            "vm86" | "vm86old" => None,
            _ => None,
        };
        if arch_only.is_some() {
            return arch_only;
        }
    }
    let n = match name {
        "acct" => libc::SYS_acct,
        "add_key" => libc::SYS_add_key,
        "adjtimex" => libc::SYS_adjtimex,
        "bpf" => libc::SYS_bpf,
        "chroot" => libc::SYS_chroot,
        "clock_adjtime" => libc::SYS_clock_adjtime,
        "clock_settime" => libc::SYS_clock_settime,
        "clone" => libc::SYS_clone,
        "clone3" => libc::SYS_clone3,
        "delete_module" => libc::SYS_delete_module,
        "fanotify_init" => libc::SYS_fanotify_init,
        "finit_module" => libc::SYS_finit_module,
        "fsconfig" => libc::SYS_fsconfig,
        "fsmount" => libc::SYS_fsmount,
        "fsopen" => libc::SYS_fsopen,
        "fspick" => libc::SYS_fspick,
        "get_mempolicy" => libc::SYS_get_mempolicy,
        "init_module" => libc::SYS_init_module,
        "io_uring_enter" => libc::SYS_io_uring_enter,
        "io_uring_register" => libc::SYS_io_uring_register,
        "io_uring_setup" => libc::SYS_io_uring_setup,
        "kcmp" => libc::SYS_kcmp,
        "kexec_file_load" => libc::SYS_kexec_file_load,
        "kexec_load" => libc::SYS_kexec_load,
        "keyctl" => libc::SYS_keyctl,
        "mbind" => libc::SYS_mbind,
        "mount" => libc::SYS_mount,
        "mount_setattr" => libc::SYS_mount_setattr,
        "move_mount" => libc::SYS_move_mount,
        "move_pages" => libc::SYS_move_pages,
        "name_to_handle_at" => libc::SYS_name_to_handle_at,
        "open_by_handle_at" => libc::SYS_open_by_handle_at,
        "open_tree" => libc::SYS_open_tree,
        "perf_event_open" => libc::SYS_perf_event_open,
        "personality" => libc::SYS_personality,
        "pidfd_getfd" => libc::SYS_pidfd_getfd,
        "pivot_root" => libc::SYS_pivot_root,
        "process_madvise" => libc::SYS_process_madvise,
        "process_vm_readv" => libc::SYS_process_vm_readv,
        "process_vm_writev" => libc::SYS_process_vm_writev,
        "ptrace" => libc::SYS_ptrace,
        "quotactl" => libc::SYS_quotactl,
        "quotactl_fd" => libc::SYS_quotactl_fd,
        "reboot" => libc::SYS_reboot,
        "request_key" => libc::SYS_request_key,
        "set_mempolicy" => libc::SYS_set_mempolicy,
        "setdomainname" => libc::SYS_setdomainname,
        "sethostname" => libc::SYS_sethostname,
        "setns" => libc::SYS_setns,
        "settimeofday" => libc::SYS_settimeofday,
        "swapoff" => libc::SYS_swapoff,
        "swapon" => libc::SYS_swapon,
        "syslog" => libc::SYS_syslog,
        "umount" | "umount2" => libc::SYS_umount2,
        "unshare" => libc::SYS_unshare,
        "userfaultfd" => libc::SYS_userfaultfd,
        "vhangup" => libc::SYS_vhangup,
        _ => return None,
    };
    Some(n)
}

/// A classic-BPF interpreter for the instructions seccompiler and [`x32_filter`] emit, so
/// tests can ask what a compiled filter answers to a call without installing it.
#[cfg(test)]
pub(crate) mod eval {
    use seccompiler::BpfProgram;

    /// Runs one program over the `seccomp_data` of an x86-64 call (`nr`, `args`); returns the
    /// action word.
    pub fn run(prog: &BpfProgram, nr: i64, args: [u64; 6]) -> u32 {
        let mut data = Vec::with_capacity(64);
        data.extend_from_slice(&(nr as u32).to_le_bytes());
        data.extend_from_slice(&0xc000_003e_u32.to_le_bytes()); // AUDIT_ARCH_X86_64
        data.extend_from_slice(&0u64.to_le_bytes());
        for a in args {
            data.extend_from_slice(&a.to_le_bytes());
        }
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let ins = &prog[pc];
            pc += 1;
            let code = u32::from(ins.code);
            match code {
                0x20 => {
                    let k = ins.k as usize;
                    acc = u32::from_le_bytes(data[k..k + 4].try_into().unwrap());
                }
                0x00 => acc = ins.k,
                0x54 => acc &= ins.k,
                0x05 => pc += ins.k as usize,
                0x15 | 0x25 | 0x35 | 0x45 => {
                    let taken = match code {
                        0x15 => acc == ins.k,
                        0x25 => acc > ins.k,
                        0x35 => acc >= ins.k,
                        _ => acc & ins.k != 0,
                    };
                    pc += usize::from(if taken { ins.jt } else { ins.jf });
                }
                0x06 => return ins.k,
                other => panic!("instruction {other:#x} not interpreted"),
            }
        }
    }

    /// What a stack of programs (in install order) answers, as the kernel decides it: every
    /// program runs, newest first, and the action lowest as a signed 32-bit value wins (kill
    /// before errno before allow); a tie keeps the newest.
    pub fn verdict(programs: &[BpfProgram], nr: i64, args: [u64; 6]) -> u32 {
        let mut best = libc::SECCOMP_RET_ALLOW;
        for p in programs.iter().rev() {
            let action = run(p, nr, args);
            let rank = |a: u32| (a & libc::SECCOMP_RET_ACTION_FULL) as i32;
            if rank(action) < rank(best) {
                best = action;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> SeccompPlan {
        SeccompPlan {
            profile_id: "sr-default-v1".into(),
            deny_action: "errno:EPERM".into(),
            denied_syscalls: vec![
                "bpf".into(),
                "mount".into(),
                "ptrace".into(),
                "unshare".into(),
            ],
            denied_clone_flags: vec!["CLONE_NEWNS".into(), "CLONE_NEWUSER".into()],
            enosys_syscalls: vec!["clone3".into()],
            allowed_socket_families: vec!["AF_UNIX".into()],
            allowed_netlink_protocols: vec![],
            allowed_inet_socket_types: vec![],
            allowed_ip_protocols: vec![],
        }
    }

    #[test]
    fn compiles_and_digest_is_stable() {
        let a = compile(&plan()).unwrap();
        let b = compile(&plan()).unwrap();
        assert_eq!(a.digest, b.digest);
        assert!(a.digest.starts_with("sha256:"));
        assert!(a.instructions > 10);
        let mut other = plan();
        other.denied_syscalls.push("keyctl".into());
        assert_ne!(compile(&other).unwrap().digest, a.digest);
    }

    #[test]
    fn namespace_flags_narrow_unshare_only_when_it_is_not_denied_outright() {
        let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
        let unshare = |p: &SeccompPlan, flags: i32| {
            eval::verdict(
                &compile(p).unwrap().programs,
                libc::SYS_unshare,
                [flags as u64, 0, 0, 0, 0, 0],
            )
        };
        // Denied outright (the sandbox's profile): even flags no rule names.
        assert_eq!(unshare(&plan(), libc::CLONE_FILES), eperm);
        let mut p = plan();
        p.denied_syscalls.retain(|n| n != "unshare");
        assert_eq!(unshare(&p, libc::CLONE_FILES), libc::SECCOMP_RET_ALLOW);
        assert_eq!(unshare(&p, libc::CLONE_NEWUSER), eperm);
        assert_eq!(unshare(&p, libc::CLONE_NEWNS | libc::CLONE_NEWPID), eperm);
        assert_eq!(unshare(&p, libc::CLONE_NEWPID), libc::SECCOMP_RET_ALLOW);
    }

    #[test]
    fn names_absent_on_the_arch_are_skipped_and_recorded() {
        let mut p = plan();
        p.denied_syscalls.push("vm86".into());
        let c = compile(&p).unwrap();
        assert_eq!(c.absent_on_arch, vec!["vm86".to_owned()]);
    }

    #[test]
    fn unknown_names_fail_closed() {
        let mut p = plan();
        p.denied_syscalls.push("frobnicate".into());
        assert!(matches!(compile(&p), Err(SeccompError::UnknownSyscall(_))));
        let mut p = plan();
        p.denied_clone_flags.push("CLONE_NEWFOO".into());
        assert!(matches!(
            compile(&p),
            Err(SeccompError::UnknownCloneFlag(_))
        ));
        let mut p = plan();
        p.deny_action = "kill".into();
        assert!(matches!(
            compile(&p),
            Err(SeccompError::UnsupportedAction(_))
        ));
    }
}
