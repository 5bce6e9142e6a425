//! The default seccomp profile, `sr-default-v2`: which system calls a sandboxed workload may
//! not make, which socket address families it may create, and why.
//!
//! The profile is a deny list over the kernel's attack surface rather than an allow list of
//! what programs need: arbitrary workloads (interpreters, compilers, test suites) use a wide and
//! changing set of calls, while the calls below are ones an unprivileged program has no
//! business making inside a sandbox. Groups:
//!
//! * **Mount and filesystem-namespace control** (`mount`, `umount2`, `pivot_root`, the new mount
//!   API `fsopen`/`fsconfig`/`fsmount`/`fspick`/`move_mount`/`open_tree`/`mount_setattr`):
//!   the mount plan is fixed before exec; changing it later could unhide host paths.
//! * **Namespace creation and entry** (`unshare`, `setns`, and namespace flags on `clone`): a
//!   nested user namespace re-grants capabilities over new namespaces, the classic way into
//!   kernel bugs. `clone3` passes its flags in memory a filter cannot read, so it fails with
//!   ENOSYS (see [`ENOSYS_SYSCALLS`]) and libc falls back to `clone`, whose flags are checked.
//! * **Kernel code and state** (`init_module`, `finit_module`, `delete_module`,
//!   `create_module`, `get_kernel_syms`, `kexec_load`, `kexec_file_load`, `reboot`, `swapon`,
//!   `swapoff`, `acct`, `quotactl`, `nfsservctl`, `sysfs`, `ustat`, `uselib`, `vhangup`,
//!   `syslog`, `lookup_dcookie`, `personality` (can disable ASLR for the process tree)).
//! * **Clocks** (`settimeofday`, `clock_settime`, `clock_adjtime`): time is shared with the
//!   host, and evidence timestamps depend on it.
//! * **Tracing and other processes' memory** (`ptrace`, `process_vm_readv`,
//!   `process_vm_writev`, `perf_event_open`).
//! * **Kernel keyrings** (`add_key`, `request_key`, `keyctl`): not namespaced.
//! * **Large, bug-prone interfaces** (`bpf`, `userfaultfd` (used to win kernel races),
//!   `io_uring_setup`, `io_uring_enter`, `io_uring_register` (bypasses seccomp for the
//!   operations it performs)).
//! * **File handles** (`name_to_handle_at`, `open_by_handle_at`): can open files outside the
//!   sandbox's view by inode (the "shocker" escape).
//! * **Raw hardware access** (`ioperm`, `iopl`, `vm86`, `vm86old`).
//!
//! Socket address families are the one place the profile is an allow list
//! ([`ALLOWED_SOCKET_FAMILIES`]): `socket` and `socketpair` with any other family fail with
//! `EAFNOSUPPORT`, which programs already handle as "not built into this kernel". The reasons:
//!
//! * `AF_VSOCK` ignores network namespaces: on a host that is itself a VM it reaches the
//!   hypervisor's services, whatever the sandbox's network mode.
//! * The rarely used families (`AF_ALG`, `AF_KEY`, `AF_XDP`, `AF_TIPC`, `AF_RDS`, `AF_PACKET`,
//!   `AF_BLUETOOTH`, `AF_CAN`, ...) carry a long record of kernel bugs reachable by
//!   unprivileged users, and no workload of a sandbox needs them.
//! * Under `AF_INET`/`AF_INET6` only the socket types stream, datagram and raw (raw needs a
//!   capability the workload lacks) and the protocols TCP, UDP, ICMP (ping sockets) and the
//!   default (0) are allowed ([`ALLOWED_INET_SOCKET_TYPES`], [`ALLOWED_IP_PROTOCOLS`]); the rest
//!   fail with `EPROTONOSUPPORT`. That closes SCTP (`SOCK_SEQPACKET`, or `IPPROTO_SCTP`), DCCP
//!   (`SOCK_DCCP`), UDP-Lite, MPTCP and `SOCK_PACKET`, which are protocols rather than
//!   families but belong to the same bug-prone set.
//! * Netlink stays for `NETLINK_ROUTE` only ([`ALLOWED_NETLINK_PROTOCOLS`]): glibc's
//!   `getaddrinfo` and `getifaddrs` use it, and it shows only the sandbox's own network
//!   namespace, which the workload cannot change (no capability over it). Every other netlink
//!   protocol is refused, `NETLINK_KOBJECT_UEVENT` above all: the kernel broadcasts device
//!   uevents to every network namespace owned by the initial user namespace, which the
//!   sandbox's is (host root creates it), so such a socket would receive the host's events.

/// Stable id of this profile; changes to the lists below get a new id.
pub const PROFILE_ID: &str = "sr-default-v2";

/// What a denied call returns.
pub const DENY_ACTION: &str = "errno:EPERM";

/// Denied system calls, sorted (names from the kernel's syscall tables; a name the running
/// architecture lacks, such as `vm86` on x86-64, is skipped by the runner).
pub const DENIED_SYSCALLS: [&str; 54] = [
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioperm",
    "iopl",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "personality",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "quotactl",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "swapoff",
    "swapon",
    "sysfs",
    "syslog",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vhangup",
    "vm86",
    "vm86old",
    "quotactl_fd",
];

/// System calls that fail with ENOSYS instead of the deny action, so that libc falls back to
/// a call the filter can inspect (`clone3` -> `clone`).
pub const ENOSYS_SYSCALLS: [&str; 1] = ["clone3"];

/// `clone` flags refused (each creates a namespace), sorted.
pub const DENIED_CLONE_FLAGS: [&str; 8] = [
    "CLONE_NEWCGROUP",
    "CLONE_NEWIPC",
    "CLONE_NEWNET",
    "CLONE_NEWNS",
    "CLONE_NEWPID",
    "CLONE_NEWTIME",
    "CLONE_NEWUSER",
    "CLONE_NEWUTS",
];

/// Socket address families `socket` and `socketpair` may use, sorted; any other fails with
/// `EAFNOSUPPORT`.
pub const ALLOWED_SOCKET_FAMILIES: [&str; 4] = ["AF_INET", "AF_INET6", "AF_NETLINK", "AF_UNIX"];

/// Netlink protocols an `AF_NETLINK` socket may use, sorted.
pub const ALLOWED_NETLINK_PROTOCOLS: [&str; 1] = ["NETLINK_ROUTE"];

/// Socket types an `AF_INET`/`AF_INET6` socket may have (the low bits of `type`, without
/// `SOCK_NONBLOCK`/`SOCK_CLOEXEC`), sorted.
pub const ALLOWED_INET_SOCKET_TYPES: [&str; 3] = ["SOCK_DGRAM", "SOCK_RAW", "SOCK_STREAM"];

/// Protocols an `AF_INET`/`AF_INET6` socket may name (`IPPROTO_IP` is 0, the type's default),
/// sorted.
pub const ALLOWED_IP_PROTOCOLS: [&str; 5] = [
    "IPPROTO_ICMP",
    "IPPROTO_ICMPV6",
    "IPPROTO_IP",
    "IPPROTO_TCP",
    "IPPROTO_UDP",
];

/// The sorted, deduplicated deny list.
pub fn denied_syscalls() -> Vec<String> {
    let mut v: Vec<String> = DENIED_SYSCALLS.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_sorted_and_unique_where_emitted() {
        let d = denied_syscalls();
        assert_eq!(d.len(), DENIED_SYSCALLS.len(), "no duplicates");
        let mut flags = DENIED_CLONE_FLAGS.to_vec();
        flags.sort_unstable();
        assert_eq!(flags, DENIED_CLONE_FLAGS.to_vec());
        assert!(!d.iter().any(|s| ENOSYS_SYSCALLS.contains(&s.as_str())));
        let mut families = ALLOWED_SOCKET_FAMILIES.to_vec();
        families.sort_unstable();
        assert_eq!(families, ALLOWED_SOCKET_FAMILIES.to_vec());
        assert!(!families.contains(&"AF_VSOCK"));
    }
}
