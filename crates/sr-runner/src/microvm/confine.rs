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
//! Before step 1 execs, the chain's first process installs the host seccomp filter
//! ([`super::host_seccomp`]), so the filter covers the whole chain and the VMM with every thread
//! and child; QEMU stacks its own `-sandbox` filter on top (added by the QEMU driver). The hook
//! runs between fork and exec ([`crate::sandbox::sys::seccomp_before_exec`]) and only makes the
//! `prctl`/`seccomp` calls; the filter is compiled before. A helper of ours that installed it
//! and then exec'd the chain would spare the `pre_exec`, but would add a Rust binary running as
//! root, unfiltered, to every VMM start, and make the QEMU backend depend on finding it; the
//! hook adds two system calls to the fork std already makes for the descriptor mapping's own
//! hook.
//!
//! The run's cgroup bounds the whole chain: the runner attaches the outer process right after
//! spawn.

use std::process::{Command, Stdio};
use std::sync::Arc;

use command_fds::{CommandFdExt, FdMapping, FdMappingCollision};

use crate::sandbox::seccomp::CompiledSeccomp;

/// `setpriv`.
pub const SETPRIV: &str = "/usr/bin/setpriv";
/// `unshare`.
pub const UNSHARE: &str = "/usr/bin/unshare";

/// Who the VMM runs as, which namespaces it gets, and the seccomp filter it runs under.
#[derive(Debug, Clone)]
pub struct Confinement {
    /// Unprivileged uid (never 0).
    pub uid: u32,
    /// Unprivileged gid (never 0).
    pub gid: u32,
    /// Give it an empty network namespace (no guest NIC).
    pub no_network: bool,
    /// The host filter ([`super::host_seccomp::compile`]), installed before the chain's first
    /// exec.
    pub seccomp: Arc<CompiledSeccomp>,
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

    /// The command that starts `bin args` confined: the chain of [`Self::command_line`] in its
    /// own process group, with an empty environment and stdin, `fds` mapped into the child,
    /// and the host seccomp filter installed last before the first exec. The caller adds the
    /// working directory and stdout/stderr, and spawns it on the spawner thread (its
    /// parent-death signal follows the thread that forks it).
    pub fn command(
        &self,
        bin: &str,
        args: &[String],
        fds: Vec<FdMapping>,
    ) -> Result<Command, FdMappingCollision> {
        let (prog, argv) = self.command_line(bin, args);
        let mut cmd = Command::new(prog);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.args(argv).env_clear().stdin(Stdio::null());
        // Mapped in the child only (after fork), so no other process of ours inherits them.
        cmd.fd_mappings(fds)?;
        crate::sandbox::sys::seccomp_before_exec(&mut cmd, self.seccomp.programs.clone());
        Ok(cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter() -> Arc<CompiledSeccomp> {
        Arc::new(super::super::host_seccomp::compile().unwrap())
    }

    #[test]
    fn the_vmm_runs_last_unprivileged_in_its_own_namespaces() {
        let c = Confinement {
            uid: 65534,
            gid: 65534,
            no_network: true,
            seccomp: filter(),
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
            seccomp: filter(),
        };
        let (_, argv) = c.command_line("/q", &[]);
        assert!(!argv.iter().any(|a| a == "--net"));
    }

    /// A Python program that makes calls an unprivileged user may make but the host filter
    /// denies, and prints what each returned (`ok` or the errno's name) and its seccomp mode.
    /// None leaves anything behind: `KEYCTL_CAPABILITIES` (31) only reports what the keyring
    /// code supports (a keyring lookup would create the user's keyrings, which outlive the
    /// process), the socket is closed, and the user namespace dies with the process.
    fn probe_script() -> String {
        format!(
            r#"import ctypes, errno, os, socket
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(nr, *args):
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return "ok" if r >= 0 else errno.errorcode[ctypes.get_errno()]
out = []
with open("/proc/self/status") as f:
    out += ["seccomp=" + l.split()[1] for l in f if l.startswith("Seccomp:")]
out.append("keyctl=" + call({keyctl}, 31, 0, 0))
pid = os.getpid()
out.append("kcmp=" + call({kcmp}, pid, pid, 0, 1, 1))
try:
    socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
    out.append("inet=ok")
except OSError as e:
    out.append("inet=" + errno.errorcode[e.errno])
out.append("userns=" + call({unshare}, {newuser}))
print(" ".join(out))
"#,
            keyctl = libc::SYS_keyctl,
            kcmp = libc::SYS_kcmp,
            unshare = libc::SYS_unshare,
            newuser = libc::CLONE_NEWUSER,
        )
    }

    fn output_of(cmd: Command) -> String {
        let mut cmd = cmd;
        cmd.current_dir("/")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = crate::sandbox::spawner::spawn(cmd).unwrap();
        let o = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout).trim().to_owned();
        assert!(
            o.status.success(),
            "{} {text} {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        text
    }

    /// The same chain with and without the filter: every probe that succeeds for the
    /// unprivileged VMM user without it fails with it, and the process still runs.
    #[test]
    fn the_confined_chain_cannot_make_what_the_host_filter_denies() {
        const PYTHON: &str = "/usr/bin/python3";
        let root = nix::unistd::geteuid().is_root();
        if !root || !std::path::Path::new(PYTHON).exists() {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "needs root and {PYTHON}"
            );
            eprintln!(
                "SKIPPED: the_confined_chain_cannot_make_what_the_host_filter_denies needs root and {PYTHON}"
            );
            return;
        }
        let c = Confinement {
            uid: 65534,
            gid: 65534,
            no_network: true,
            seccomp: filter(),
        };
        let args = ["-c".to_owned(), probe_script()];
        let (prog, argv) = c.command_line(PYTHON, &args);
        let mut bare = Command::new(prog);
        bare.args(argv).env_clear().stdin(Stdio::null());
        assert_eq!(
            output_of(bare),
            "seccomp=0 keyctl=ok kcmp=ok inet=ok userns=ok",
            "without the filter"
        );
        let filtered = c.command(PYTHON, &args, Vec::new()).unwrap();
        assert_eq!(
            output_of(filtered),
            "seccomp=2 keyctl=EPERM kcmp=EPERM inet=EAFNOSUPPORT userns=EPERM",
            "with the filter"
        );
    }
}
