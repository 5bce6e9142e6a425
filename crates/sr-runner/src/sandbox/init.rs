//! The sandbox init: what runs as `safe-run __init`.
//!
//! Two processes, each single-threaded (so `fork` is sound, see `sys::fork`):
//!
//! * **init** (host pid X, real root): reads the plan, sets `PDEATHSIG=SIGKILL` (a SIGKILLed
//!   runner takes the sandbox with it), unshares mount/net/ipc/uts/pid namespaces (not net
//!   when the runner makes it: an allowlist's, with the run's link in it), says Ready, builds
//!   the new root in its private mount namespace, brings `lo` up (of a namespace it made),
//!   waits for Go (the runner has attached the cgroups and the network by then), joins the
//!   network namespace Go names (the runner's, refusing the host's), unshares the cgroup
//!   namespace (after the cgroup attach, so an exec's cgroup root is its own cgroup), forks
//!   pid 1, says Forked with pid 1's host pid, and waits for it (see [`super::bootstrap`]).
//! * **pid 1** (C): mounts a fresh /proc for the new pid namespace (only a process inside the
//!   namespace can), pivot_roots, detaches the old root, remounts `/` read-only, compiles the
//!   seccomp filter once, and becomes the agent ([`super::agent`]): it runs each exec the host
//!   asks for and reaps every orphan. When pid 1 exits the kernel kills everything left in the
//!   namespace, so a daemonizing workload cannot outlive the sandbox.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::prctl;
use nix::sys::resource::Resource;
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, chdir, pivot_root};

use super::agent::{self, Failure, spawn::ExecContext};
use super::bootstrap::{Go, InitMsg, InitPlan};
use super::mounts::{self, HostMounter, LateMounts, MountFacts, MountOp};
use super::{facts, seccomp, sys};

fn fail(phase: &'static str) -> impl Fn(nix::Error) -> Failure {
    move |e| Failure::errno(phase, e)
}

fn fail_msg(phase: &'static str, message: impl std::fmt::Display) -> Failure {
    Failure::msg(phase, message)
}

fn send(sock: &mut UnixStream, msg: &InitMsg) {
    if let Ok(mut line) = serde_json::to_vec(msg) {
        line.push(b'\n');
        // The runner going away is handled by PDEATHSIG; nothing to do on a write error.
        let _ = sock.write_all(&line);
    }
}

/// Entry point of `safe-run __init`. Returns the process exit code.
pub fn main() -> i32 {
    // Take the control socket off fd 0 before anything else (fd 0 becomes /dev/null).
    let sock = match take_control_socket() {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "safe-run __init: no control socket on stdin ({e}); this command is internal"
            );
            return 2;
        }
    };
    let mut writer = match sock.try_clone() {
        Ok(w) => w,
        Err(_) => return 2,
    };
    let mut reader = BufReader::new(sock);
    match init(&mut reader, &mut writer) {
        Ok(code) => code,
        Err(f) => {
            send(
                &mut writer,
                &InitMsg::Failed {
                    phase: f.phase.to_owned(),
                    errno: f.errno,
                    message: f.message,
                },
            );
            1
        }
    }
}

fn take_control_socket() -> Result<UnixStream, nix::Error> {
    // F_DUPFD_CLOEXEC to fd >= 3.
    let owned: OwnedFd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EBADF)))?;
    let devnull = open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())?;
    nix::unistd::dup2_stdin(&devnull)?;
    Ok(UnixStream::from(owned))
}

fn read_line<T: serde::de::DeserializeOwned>(
    reader: &mut BufReader<UnixStream>,
    phase: &'static str,
) -> Result<T, Failure> {
    let mut line = String::new();
    let n = reader
        .read_line(&mut line)
        .map_err(|e| fail_msg(phase, format!("reading from the runner: {e}")))?;
    if n == 0 {
        return Err(fail_msg(phase, "the runner closed the control socket"));
    }
    serde_json::from_str(&line).map_err(|e| fail_msg(phase, format!("bad message: {e}")))
}

fn namespace_flags(names: &[String]) -> Result<(CloneFlags, bool, bool), Failure> {
    let mut flags = CloneFlags::empty();
    let (mut user, mut cgroup) = (false, false);
    for n in names {
        match n.as_str() {
            "mount" => flags |= CloneFlags::CLONE_NEWNS,
            "net" => flags |= CloneFlags::CLONE_NEWNET,
            "ipc" => flags |= CloneFlags::CLONE_NEWIPC,
            "uts" => flags |= CloneFlags::CLONE_NEWUTS,
            "pid" => flags |= CloneFlags::CLONE_NEWPID,
            "user" => user = true,
            "cgroup" => cgroup = true,
            other => {
                return Err(fail_msg(
                    "launch.namespaces",
                    format!("unknown namespace {other:?}"),
                ));
            }
        }
    }
    // The launch relies on these; a plan without them is not one this runner can enforce.
    for (f, n) in [
        (CloneFlags::CLONE_NEWNS, "mount"),
        (CloneFlags::CLONE_NEWPID, "pid"),
    ] {
        if !flags.contains(f) {
            return Err(fail_msg(
                "launch.namespaces",
                format!("the {n} namespace is mandatory"),
            ));
        }
    }
    Ok((flags, user, cgroup))
}

/// The network namespace Go names for the init to join, which must be there exactly when the
/// plan said the runner makes it: pid 1 is never forked on the host's network, nor into a
/// namespace the plan did not ask for.
fn namespace_to_join(plan_says_joins: bool, go: &Go) -> Result<Option<&str>, Failure> {
    match (plan_says_joins, go.net_namespace.as_deref()) {
        (true, Some(path)) => Ok(Some(path)),
        (false, None) => Ok(None),
        (true, None) | (false, Some(_)) => Err(fail_msg(
            "launch.network",
            "the plan and Go disagree on the sandbox's network namespace",
        )),
    }
}

/// Joins the network namespace at `path` (`/proc/<runner pid>/fd/<fd>`, made by the runner
/// with the run's link in it), refusing the one the init is already in: whatever went wrong,
/// the sandbox never stays on the host's network.
fn join_network_namespace(path: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::MetadataExt;
    let io = |what: &str, e: std::io::Error| Failure {
        phase: "launch.network",
        errno: e.raw_os_error(),
        message: format!("{what} {}: {e}", path.display()),
    };
    let target =
        fs::File::open(path).map_err(|e| io("opening the sandbox's network namespace", e))?;
    let theirs = target
        .metadata()
        .map_err(|e| io("reading the sandbox's network namespace", e))?;
    let ours = fs::metadata("/proc/self/ns/net")
        .map_err(|e| io("reading the init's own network namespace before joining", e))?;
    if (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()) {
        return Err(fail_msg(
            "launch.network",
            format!(
                "{} is the host's network namespace, not one made for the sandbox",
                path.display()
            ),
        ));
    }
    nix::sched::setns(&target, CloneFlags::CLONE_NEWNET).map_err(fail("launch.network"))
}

fn init(reader: &mut BufReader<UnixStream>, writer: &mut UnixStream) -> Result<i32, Failure> {
    sys::cloexec_from_3().map_err(|e| fail_msg("launch.init", e))?;
    let plan: InitPlan = read_line(reader, "launch.plan")?;
    prctl::set_pdeathsig(Signal::SIGKILL).map_err(fail("launch.init"))?;
    if nix::unistd::getppid().as_raw() as u32 != plan.parent_pid {
        return Err(fail_msg(
            "launch.init",
            "the runner exited before the sandbox started",
        ));
    }
    // Into the run's cgroups first, so everything the sandbox does is accounted and limited
    // (cgroup v1: a thread moving itself skips the kernel's global lock; see cgroup.rs).
    for tasks in &plan.cgroup_self_attach {
        fs::write(tasks, "0").map_err(|e| Failure {
            phase: "launch.cgroup",
            errno: e.raw_os_error(),
            message: format!("joining the run's cgroup through {tasks}: {e}"),
        })?;
    }
    let (mut flags, userns, cgroupns) = namespace_flags(&plan.sandbox.namespaces)?;
    // A network namespace the runner makes is joined on Go, below; until then the init is in
    // the host's, where nothing of the workload runs.
    let joins_network = plan.joins_network_namespace;
    if joins_network {
        if !flags.contains(CloneFlags::CLONE_NEWNET) {
            return Err(fail_msg(
                "launch.network",
                "the runner makes a network namespace for a plan without one",
            ));
        }
        flags.remove(CloneFlags::CLONE_NEWNET);
    }
    unshare(flags).map_err(fail("launch.namespaces"))?;
    send(writer, &InitMsg::Ready);

    // Nothing we mount may propagate back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(fail("launch.mounts"))?;
    let new_root = PathBuf::from(&plan.new_root);
    let (ops, late) = mounts::plan_ops(
        &plan.sandbox.mounts,
        &new_root,
        &plan.allowed_mount_prefixes,
    )
    .map_err(|e| fail_msg("launch.mounts", e))?;
    let mut mounter = HostMounter::new(new_root.clone(), plan.sandbox.file_locks);
    mounts::execute(&ops, &mut mounter).map_err(|e| fail_msg("launch.mounts", e))?;
    if flags.contains(CloneFlags::CLONE_NEWUTS) {
        nix::unistd::sethostname(&plan.sandbox.hostname).map_err(fail("launch.hostname"))?;
    }
    if flags.contains(CloneFlags::CLONE_NEWNET) {
        sys::loopback_up()
            .map_err(|e| fail_msg("launch.network", format!("bringing lo up: {e}")))?;
    }

    let go: Go = read_line(reader, "launch.go")?;
    if let Some(path) = namespace_to_join(joins_network, &go)? {
        join_network_namespace(Path::new(path))?;
    }
    if let Some(resolv) = go.resolv_conf {
        mounts::execute(
            &[MountOp::Bind {
                source: PathBuf::from(resolv),
                target: new_root.join("etc/resolv.conf"),
                read_only: true,
                allow_dev: false,
                verify: None,
                optional: false,
            }],
            &mut mounter,
        )
        .map_err(|e| fail_msg("launch.network", e))?;
    }
    if cgroupns {
        unshare(CloneFlags::CLONE_NEWCGROUP).map_err(fail("launch.namespaces"))?;
    }
    let made = mounter.take_facts();
    match sys::fork().map_err(|e| fail_msg("launch.fork", e))? {
        ForkResult::Child => {
            let code = match pid1(&plan, &late, &new_root, writer, userns, &made) {
                Ok(code) => code,
                Err(f) => {
                    send(
                        writer,
                        &InitMsg::Failed {
                            phase: f.phase.to_owned(),
                            errno: f.errno,
                            message: f.message,
                        },
                    );
                    1
                }
            };
            sys::exit_now(code)
        }
        ForkResult::Parent { child } => {
            send(
                writer,
                &InitMsg::Forked {
                    pid1: u32::try_from(child.as_raw()).unwrap_or(0),
                },
            );
            loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                    Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
                    Ok(_) | Err(Errno::EINTR) => continue,
                    Err(e) => return Err(fail("launch.wait")(e)),
                }
            }
        }
    }
}

fn pid1(
    plan: &InitPlan,
    late: &LateMounts,
    new_root: &Path,
    writer: &mut UnixStream,
    userns: bool,
    mounts: &MountFacts,
) -> Result<i32, Failure> {
    prctl::set_pdeathsig(Signal::SIGKILL).map_err(fail("launch.init"))?;
    if let Some(target) = &late.proc_target {
        let at = new_root.join(target.trim_start_matches('/'));
        mount(
            Some("proc"),
            &at,
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(fail("launch.proc"))?;
        // Kernel knobs stay read-only even for a process that somehow gains privilege.
        let sysdir = at.join("sys");
        mount(
            Some(&sysdir),
            &sysdir,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(fail("launch.proc"))?;
        mount(
            None::<&str>,
            &sysdir,
            None::<&str>,
            MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(fail("launch.proc"))?;
    }
    chdir(new_root).map_err(fail("launch.pivot_root"))?;
    // pivot_root(".", "."): the old root ends up stacked under the new one and is detached
    // right away, so the read-only root needs no put_old directory.
    pivot_root(".", ".").map_err(fail("launch.pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(fail("launch.pivot_root"))?;
    chdir("/").map_err(fail("launch.pivot_root"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT
            | MsFlags::MS_BIND
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(fail("launch.root_readonly"))?;
    let compiled =
        seccomp::compile(&plan.sandbox.seccomp).map_err(|e| fail_msg("launch.seccomp", e))?;
    let ready = sr_agent_proto::message::Ready {
        kernel_release: nix::sys::utsname::uname()
            .ok()
            .map(|u| u.release().to_string_lossy().into_owned()),
        mounts: facts::mount_facts(mounts),
    };
    let sock = writer
        .try_clone()
        .map_err(|e| Failure::io("launch.init", &e))?;
    agent::serve(
        sock,
        agent::SANDBOX_AGENT_NAME,
        ExecContext {
            plan,
            seccomp: &compiled,
            userns,
        },
        ready,
    )
}

/// Maps an rlimit name (`nofile`, `RLIMIT_NOFILE`, `openFiles`) to the resource.
pub fn rlimit_resource(name: &str) -> Option<Resource> {
    let n = name.to_ascii_lowercase();
    let n = n.trim_start_matches("rlimit_");
    Some(match n {
        "nofile" | "openfiles" | "open_files" => Resource::RLIMIT_NOFILE,
        "nproc" => Resource::RLIMIT_NPROC,
        "core" => Resource::RLIMIT_CORE,
        "fsize" => Resource::RLIMIT_FSIZE,
        "stack" => Resource::RLIMIT_STACK,
        "as" => Resource::RLIMIT_AS,
        "data" => Resource::RLIMIT_DATA,
        "cpu" => Resource::RLIMIT_CPU,
        "memlock" => Resource::RLIMIT_MEMLOCK,
        "msgqueue" => Resource::RLIMIT_MSGQUEUE,
        "nice" => Resource::RLIMIT_NICE,
        "rtprio" => Resource::RLIMIT_RTPRIO,
        "sigpending" => Resource::RLIMIT_SIGPENDING,
        "locks" => Resource::RLIMIT_LOCKS,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_must_name_a_namespace_exactly_when_the_plan_said_one_comes() {
        let named = Go {
            resolv_conf: None,
            net_namespace: Some("/proc/1/fd/7".into()),
        };
        let unnamed = Go::default();
        assert_eq!(
            namespace_to_join(true, &named).ok().flatten(),
            Some("/proc/1/fd/7")
        );
        assert_eq!(namespace_to_join(false, &unnamed).ok().flatten(), None);
        for (joins, go) in [(true, &unnamed), (false, &named)] {
            let Err(refused) = namespace_to_join(joins, go) else {
                panic!("accepted joins={joins} with {:?}", go.net_namespace);
            };
            assert_eq!(refused.phase, "launch.network");
        }
    }

    #[test]
    fn the_init_refuses_to_join_the_namespace_it_is_in() {
        let Err(refused) = join_network_namespace(Path::new("/proc/self/ns/net")) else {
            panic!("joined its own network namespace as the sandbox's");
        };
        assert_eq!(refused.phase, "launch.network");
        assert!(refused.message.contains("host's"), "{}", refused.message);
        let Err(missing) = join_network_namespace(Path::new("/proc/self/fd/999999")) else {
            panic!("joined a namespace that does not exist");
        };
        assert!(missing.message.contains("opening"), "{}", missing.message);
    }
}
