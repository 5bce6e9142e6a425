//! The host seccomp filter of QEMU's and vhost-device-vsock's processes (profile
//! `sr-vmm-host-v1`): which system calls they, and the `setpriv`/`unshare` chain that starts
//! them ([`super::confine`]), may not make, and why. This module owns the lists, their
//! compilation (with the sandbox's compiler, [`crate::sandbox::seccomp`], plus one program of
//! its own) and what the report says about them ([`facts`]).
//!
//! The filter is installed in the first process of the chain, just before it execs `setpriv`
//! ([`crate::sandbox::sys::seccomp_before_exec`]), so it covers `setpriv`, `unshare`, the
//! inner `setpriv` and the VMM with every thread and child it ever has; it cannot be removed.
//! QEMU stacks its own `-sandbox` filter on top (the kernel runs both and the stricter answer
//! wins); vhost-device-vsock has no filter of its own, so this is its only one.
//!
//! Like the sandbox's profile it is a deny list of kernel attack surface that none of the
//! chain's programs needs, not an allow list: QEMU's calls depend on its version, build,
//! accelerator and devices, and an allow list that missed one would fail a VM start on another
//! host. `strace -f` of a live start here (QEMU 7.2 under TCG, vhost-device-vsock 0.3, with and
//! without a TAP) found none of the calls below. Groups:
//!
//! * **Tracing and other processes** (`ptrace`, `process_vm_readv`, `process_vm_writev`,
//!   `process_madvise`, `pidfd_getfd`, `kcmp`): the VMM's threads share one address space and
//!   need none of them; a compromised VMM could otherwise read or steer another process of the
//!   same user (every VMM of every run runs as the operator's one workload uid).
//! * **Kernel code and state** (`init_module`, `finit_module`, `delete_module`, `kexec_load`,
//!   `kexec_file_load`, `reboot`, `swapon`, `swapoff`, `acct`, `quotactl`, `quotactl_fd`,
//!   `syslog`, `uselib`, `lookup_dcookie`, `iopl`, `ioperm`, `personality` (can turn off ASLR
//!   for what the process runs next)): privileged or obsolete; the capability checks already
//!   refuse most, the filter refuses them before the kernel parses a single argument.
//! * **Clocks** (`settimeofday`, `clock_settime`, `clock_adjtime`, `adjtimex`): time is the
//!   host's, and the run's evidence is timestamped with it.
//! * **Keyrings** (`add_key`, `request_key`, `keyctl`): not namespaced; an unprivileged user's
//!   keyrings are shared by all its processes, other runs' VMMs included.
//! * **Large, bug-prone interfaces** (`bpf`, `perf_event_open`, `userfaultfd` (the classic way
//!   to win kernel races), `io_uring_setup`, `io_uring_enter`, `io_uring_register` (its
//!   operations bypass seccomp), `fanotify_init`).
//! * **File handles** (`name_to_handle_at`, `open_by_handle_at`): open by inode, past the mount
//!   namespace's view.
//! * **Mount and root control** (`pivot_root`, `chroot`, `umount2`, `setns` and the new mount API
//!   `fsopen`, `fsconfig`, `fsmount`, `fspick`, `open_tree`, `move_mount`, `mount_setattr`).
//!
//! What the chain does need, and so is only narrowed, or left:
//!
//! * `mount`: `unshare --mount` makes `/` private in the new mount namespace
//!   (`mount("none", "/", NULL, MS_REC|MS_PRIVATE)`) after the filter is in place; every other
//!   mount fails (a program of this module's own: seccompiler ANDs conditions per rule, and the
//!   sandbox's compiler has no "all but these flags" form).
//! * `unshare` and `clone` with `CLONE_NEWUSER`, `CLONE_NEWCGROUP` or `CLONE_NEWTIME`
//!   ([`DENIED_NAMESPACE_FLAGS`]): `unshare(1)` itself calls `unshare(2)` with the pid, mount,
//!   IPC, UTS and network flags, so those stay; but none of the chain makes a user namespace,
//!   and one is what would give the capability-less VMM capabilities over new namespaces (and
//!   with them `mount`, the other namespace flags, and much more kernel code). `clone3` fails
//!   with `ENOSYS` (its flags are in memory a filter cannot read): glibc and QEMU then use
//!   `clone`, as they already do under QEMU's own `-sandbox`, which does the same.
//! * `socket`/`socketpair` for `AF_UNIX` only ([`SOCKET_FAMILIES`]), else `EAFNOSUPPORT`: both
//!   VMMs create Unix sockets only (vhost-device-vsock its two listeners, QEMU the vhost-user
//!   connection and its QMP socket; QEMU gets the TAP as a descriptor), and `setpriv` and
//!   `unshare` only glibc's nscd probe. `AF_VSOCK` would reach the hypervisor's services on a host
//!   that is itself a VM (these machines are); netlink, packet and the rest are kernel code
//!   no VMM here uses.
//! * Left allowed because QEMU calls them: `set_mempolicy`/`get_mempolicy` (its memory backend),
//!   `memfd_create` (guest memory), `seccomp` and `prctl` (its own `-sandbox`), `sysinfo`.
//!   QEMU also calls `io_uring_setup` (its event loop tries io_uring first): denied, it falls
//!   back to `ppoll`, which is why the action is `EPERM` and not a kill, which would end QEMU at
//!   its first probe. `EPERM` is also what the capability checks answer for most of the list,
//!   so no program mistakes it for a missing feature and retries differently.
//!
//! Each program starts with seccompiler's architecture check (a foreign audit arch kills) and
//! the stack ends with the sandbox's x32 program (`ENOSYS` for the x32 aliases of the list).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};
use sr_bundle::SeccompPlan;

use super::facts::HostSeccomp;
use crate::sandbox::seccomp::{self, CompiledSeccomp, SeccompError};

/// Stable id of this profile; a change to the lists below gets a new one.
pub const PROFILE_ID: &str = "sr-vmm-host-v1";

/// What a denied call returns.
pub const DENY_ACTION: &str = "errno:EPERM";

/// Denied system calls, sorted (see the module doc for why each).
pub const DENIED_SYSCALLS: [&str; 51] = [
    "acct",
    "add_key",
    "adjtimex",
    "bpf",
    "chroot",
    "clock_adjtime",
    "clock_settime",
    "delete_module",
    "fanotify_init",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount_setattr",
    "move_mount",
    "name_to_handle_at",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "personality",
    "pidfd_getfd",
    "pivot_root",
    "process_madvise",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "quotactl",
    "quotactl_fd",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "swapoff",
    "swapon",
    "syslog",
    "umount2",
    "uselib",
    "userfaultfd",
    "vhangup",
];

/// Namespace flags refused on `unshare` and `clone`, sorted.
pub const DENIED_NAMESPACE_FLAGS: [&str; 3] = ["CLONE_NEWCGROUP", "CLONE_NEWTIME", "CLONE_NEWUSER"];

/// The socket address families `socket`/`socketpair` may use.
pub const SOCKET_FAMILIES: [&str; 1] = ["AF_UNIX"];

/// The flags of the one `mount` the chain makes (`unshare --mount`'s default propagation).
const PROPAGATION_PRIVATE: u64 = libc::MS_REC | libc::MS_PRIVATE;

/// The profile as the sandbox's seccomp compiler takes it.
pub fn plan() -> SeccompPlan {
    let names = |l: &[&str]| l.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
    SeccompPlan {
        profile_id: PROFILE_ID.to_owned(),
        deny_action: DENY_ACTION.to_owned(),
        denied_syscalls: names(&DENIED_SYSCALLS),
        denied_clone_flags: names(&DENIED_NAMESPACE_FLAGS),
        enosys_syscalls: vec!["clone3".to_owned()],
        allowed_socket_families: names(&SOCKET_FAMILIES),
        allowed_netlink_protocols: Vec::new(),
        allowed_inet_socket_types: Vec::new(),
        allowed_ip_protocols: Vec::new(),
    }
}

/// Compiles the filter. Pure: no syscall is made; the same build gives the same digest.
pub fn compile() -> Result<CompiledSeccomp, SeccompError> {
    let base = seccomp::compile(&plan())?;
    let mut programs = vec![mount_program()?];
    programs.extend(base.programs);
    Ok(seccomp::seal(programs, base.absent_on_arch))
}

/// `mount` with any flags but [`PROPAGATION_PRIVATE`] returns `EPERM`.
fn mount_program() -> Result<BpfProgram, SeccompError> {
    let backend = |e: seccompiler::BackendError| SeccompError::Backend(e.to_string());
    let other_flags = SeccompCondition::new(
        3,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::Ne,
        PROPAGATION_PRIVATE,
    )
    .map_err(backend)?;
    let rules = BTreeMap::from([(
        libc::SYS_mount,
        vec![SeccompRule::new(vec![other_flags]).map_err(backend)?],
    )]);
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        seccomp::target_arch()?,
    )
    .and_then(TryInto::try_into)
    .map_err(backend)
}

/// What the report says about `compiled` (this module's filter) on one VMM process.
pub fn facts(compiled: &CompiledSeccomp) -> HostSeccomp {
    let names = |l: &[&str]| l.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
    HostSeccomp {
        profile: PROFILE_ID.to_owned(),
        action: DENY_ACTION.to_owned(),
        denied_syscalls: DENIED_SYSCALLS.len() - compiled.absent_on_arch.len(),
        denied_namespace_flags: names(&DENIED_NAMESPACE_FLAGS),
        socket_families: names(&SOCKET_FAMILIES),
        programs: compiled.programs.len(),
        instructions: compiled.instructions,
        digest: compiled.digest.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::seccomp::eval::verdict;

    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

    fn call(c: &CompiledSeccomp, nr: i64, args: [u64; 6]) -> u32 {
        verdict(&c.programs, nr, args)
    }

    #[test]
    fn the_lists_are_sorted_and_the_digest_is_stable() {
        for list in [
            &DENIED_SYSCALLS[..],
            &DENIED_NAMESPACE_FLAGS,
            &SOCKET_FAMILIES,
        ] {
            let mut sorted = list.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted, list, "sorted and without duplicates");
        }
        let (a, b) = (compile().unwrap(), compile().unwrap());
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.programs, b.programs);
        assert!(a.absent_on_arch.is_empty(), "{:?}", a.absent_on_arch);
        // mount, the deny list, sockets, clone3, x32.
        assert_eq!(a.programs.len(), 5);
        let f = facts(&a);
        assert_eq!(f.denied_syscalls, DENIED_SYSCALLS.len());
        assert_eq!((f.programs, f.instructions), (5, a.instructions));
        assert_eq!(f.digest, a.digest);
    }

    #[test]
    fn every_listed_call_is_denied_and_the_chains_calls_are_not() {
        let c = compile().unwrap();
        for name in DENIED_SYSCALLS {
            let nr = seccomp::syscall_number(name).unwrap();
            assert_eq!(call(&c, nr, [0; 6]), EPERM, "{name}");
        }
        // What setpriv, unshare, QEMU and vhost-device-vsock were seen calling.
        for nr in [
            libc::SYS_read,
            libc::SYS_execve,
            libc::SYS_setresuid,
            libc::SYS_capset,
            libc::SYS_prctl,
            libc::SYS_seccomp,
            libc::SYS_set_mempolicy,
            libc::SYS_memfd_create,
            libc::SYS_wait4,
        ] {
            assert_eq!(call(&c, nr, [0; 6]), ALLOW, "syscall {nr}");
        }
    }

    #[test]
    fn namespaces_mounts_and_sockets_are_narrowed_to_what_the_chain_does() {
        let c = compile().unwrap();
        let ns = (libc::CLONE_NEWNS
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWNET) as u64;
        // unshare(1)'s own call; a thread's clone.
        assert_eq!(call(&c, libc::SYS_unshare, [ns, 0, 0, 0, 0, 0]), ALLOW);
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        assert_eq!(call(&c, libc::SYS_clone, [thread, 0, 0, 0, 0, 0]), ALLOW);
        for flag in [libc::CLONE_NEWUSER, libc::CLONE_NEWCGROUP] {
            let f = flag as u64;
            assert_eq!(call(&c, libc::SYS_unshare, [f, 0, 0, 0, 0, 0]), EPERM);
            assert_eq!(call(&c, libc::SYS_unshare, [f | ns, 0, 0, 0, 0, 0]), EPERM);
            assert_eq!(call(&c, libc::SYS_clone, [f | 17, 0, 0, 0, 0, 0]), EPERM);
        }
        let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
        assert_eq!(call(&c, libc::SYS_clone3, [0; 6]), enosys);
        // The x32 alias of a denied call.
        assert_eq!(call(&c, 0x4000_0000 | libc::SYS_ptrace, [0; 6]), enosys);

        let mount = |flags: u64| call(&c, libc::SYS_mount, [0, 0, 0, flags, 0, 0]);
        assert_eq!(mount(PROPAGATION_PRIVATE), ALLOW);
        assert_eq!(mount(0), EPERM, "a new mount");
        assert_eq!(mount(libc::MS_BIND), EPERM);
        assert_eq!(mount(PROPAGATION_PRIVATE | libc::MS_REMOUNT), EPERM);
        assert_eq!(mount(PROPAGATION_PRIVATE | (1 << 32)), EPERM, "all 64 bits");
        assert_eq!(mount(libc::MS_SHARED), EPERM);

        let socket = |family: i32| {
            call(
                &c,
                libc::SYS_socket,
                [family as u64, libc::SOCK_STREAM as u64, 0, 0, 0, 0],
            )
        };
        assert_eq!(socket(libc::AF_UNIX), ALLOW);
        let eaf = libc::SECCOMP_RET_ERRNO | libc::EAFNOSUPPORT as u32;
        for family in [
            libc::AF_INET,
            libc::AF_INET6,
            libc::AF_NETLINK,
            libc::AF_VSOCK,
        ] {
            assert_eq!(socket(family), eaf, "family {family}");
        }
    }
}
