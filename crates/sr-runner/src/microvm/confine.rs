//! How a VMM process (QEMU, vhost-device-vsock) is started confined on the host: the role
//! Firecracker's jailer plays, built from util-linux's `setpriv` and `unshare` so the runner
//! never forks or needs `unsafe` for it.
//!
//! The chain, outermost first:
//! 1. `setpriv --pdeathsig KILL`: if safe-run dies (even by SIGKILL), the chain is killed.
//! 2. `unshare --fork --kill-child=SIGKILL --pid --mount --ipc --uts [--net]`: the VMM is pid 1
//!    of its own pid namespace (everything it could start dies with it), with private mount,
//!    IPC and UTS namespaces and, when the guest has no network, an empty network namespace.
//!    `--kill-child` kills the VMM when `unshare` is killed (the runner's stop).
//! 3. `setpriv --reuid --regid --clear-groups --inh-caps=-all --bounding-set=-all
//!    --no-new-privs --pdeathsig keep`: an unprivileged identity with no capabilities and no
//!    way to regain any; the parent-death signal survives the identity change.
//!
//! The VMM's own seccomp filter is QEMU's `-sandbox` option (added by the QEMU driver). The run's
//! cgroup bounds the whole chain: the runner attaches the outer process right after spawn.

/// `setpriv`.
pub const SETPRIV: &str = "/usr/bin/setpriv";
/// `unshare`.
pub const UNSHARE: &str = "/usr/bin/unshare";

/// Who the VMM runs as and which namespaces it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confinement {
    /// Unprivileged uid (never 0).
    pub uid: u32,
    /// Unprivileged gid (never 0).
    pub gid: u32,
    /// Give it an empty network namespace (no guest NIC).
    pub no_network: bool,
}

impl Confinement {
    /// The namespaces the chain creates, sorted.
    pub fn namespaces(&self) -> Vec<String> {
        let mut ns = vec!["ipc", "mount", "pid", "uts"];
        if self.no_network {
            ns.insert(2, "net");
        }
        ns.into_iter().map(str::to_owned).collect()
    }

    /// The program and arguments that start `bin args` confined.
    pub fn command_line(&self, bin: &str, args: &[String]) -> (String, Vec<String>) {
        let mut argv: Vec<String> = [
            "--pdeathsig",
            "KILL",
            "--",
            UNSHARE,
            "--fork",
            "--kill-child=SIGKILL",
            "--pid",
            "--mount",
            "--ipc",
            "--uts",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if self.no_network {
            argv.push("--net".into());
        }
        argv.extend(
            [
                "--",
                SETPRIV,
                &format!("--reuid={}", self.uid),
                &format!("--regid={}", self.gid),
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
                "--pdeathsig",
                "keep",
                "--",
                bin,
            ]
            .iter()
            .map(|s| (*s).to_owned()),
        );
        argv.extend(args.iter().cloned());
        (SETPRIV.to_owned(), argv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vmm_runs_last_unprivileged_in_its_own_namespaces() {
        let c = Confinement {
            uid: 65534,
            gid: 65534,
            no_network: true,
        };
        let (prog, argv) = c.command_line("/usr/bin/qemu", &["-m".into(), "256M".into()]);
        assert_eq!(prog, SETPRIV);
        let joined = argv.join(" ");
        assert!(joined.starts_with("--pdeathsig KILL -- /usr/bin/unshare --fork --kill-child=SIGKILL --pid --mount --ipc --uts --net -- /usr/bin/setpriv --reuid=65534 --regid=65534"));
        assert!(joined.ends_with("--no-new-privs --pdeathsig keep -- /usr/bin/qemu -m 256M"));
        assert_eq!(c.namespaces(), ["ipc", "mount", "net", "pid", "uts"]);
    }

    #[test]
    fn a_guest_with_a_nic_keeps_the_host_network_namespace_for_its_tap() {
        let c = Confinement {
            uid: 1,
            gid: 1,
            no_network: false,
        };
        let (_, argv) = c.command_line("/q", &[]);
        assert!(!argv.iter().any(|a| a == "--net"));
    }
}
