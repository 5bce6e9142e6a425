//! The sandbox init: what runs as `safe-run __init`.
//!
//! Three processes, each single-threaded (so `fork` is sound, see `sys::fork`):
//!
//! * **init** (host pid X, real root): reads the plan, sets `PDEATHSIG=SIGKILL` (a SIGKILLed
//!   runner takes the sandbox with it), unshares mount/net/ipc/uts/pid namespaces, says Ready,
//!   builds the new root in its private mount namespace, brings `lo` up, waits for Go (the
//!   runner has attached the cgroups and the network by then), unshares the cgroup namespace
//!   (after the cgroup attach, so the workload's cgroup root is its own cgroup), forks pid 1 and
//!   waits for it.
//! * **pid 1** (C): mounts a fresh /proc for the new pid namespace (only a process inside the
//!   namespace can), pivot_roots, detaches the old root, remounts `/` read-only, forks the
//!   workload and reaps every child until the workload exits. When pid 1 exits the kernel kills
//!   everything left in the namespace, so a daemonizing workload cannot outlive the run.
//! * **workload** (W): becomes the unprivileged host uid (never 0), creates its own user
//!   namespace mapping the plan's uid to that host uid (the namespace owns none of the other
//!   namespaces, so the capabilities it grants are useless), chdir, drops every capability,
//!   no_new_privs, rlimits, Landlock, seccomp (last: it forbids what came before), and execs
//!   with only the plan's environment. Setup failures and exec errors go to pid 1 over a
//!   close-on-exec pipe, so "missing binary" is an exact error, not a guess from exit code 127.

use std::ffi::CString;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::prctl;
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid, chdir, execve, pipe2, pivot_root};

use super::landlock_rules;
use super::mounts::{self, HostMounter, LateMounts, MountFacts, MountOp};
use super::protocol::{Go, InitMsg, InitPlan, WorkloadFacts};
use super::seccomp;
use super::sys;

/// A setup failure: run phase, errno, message.
#[derive(Debug)]
struct Failure {
    phase: &'static str,
    errno: Option<i32>,
    message: String,
}

fn fail(phase: &'static str) -> impl Fn(nix::Error) -> Failure {
    move |e| Failure {
        phase,
        errno: Some(e as i32),
        message: e.desc().to_owned(),
    }
}

fn fail_msg(phase: &'static str, message: impl std::fmt::Display) -> Failure {
    Failure {
        phase,
        errno: None,
        message: message.to_string(),
    }
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
    let (flags, userns, cgroupns) = namespace_flags(&plan.sandbox.namespaces)?;
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
            let code = match pid1(&plan, &late, &new_root, writer, userns, made) {
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
        ForkResult::Parent { child } => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => return Err(fail("launch.wait")(e)),
            }
        },
    }
}

fn pid1(
    plan: &InitPlan,
    late: &LateMounts,
    new_root: &Path,
    writer: &mut UnixStream,
    userns: bool,
    mounts: MountFacts,
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
    let devnull = open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(fail("launch.dev"))?;
    let (rd, wr) = pipe2(OFlag::O_CLOEXEC).map_err(fail("launch.pipe"))?;
    match sys::fork().map_err(|e| fail_msg("launch.fork", e))? {
        ForkResult::Child => {
            drop(rd);
            let mut wr = fs::File::from(wr);
            let err = workload(plan, &devnull, &mut wr, userns, mounts);
            let mut msg = serde_json::json!({"fail": {"phase": err.phase, "errno": err.errno, "message": err.message}}).to_string();
            msg.push('\n');
            let _ = wr.write_all(msg.as_bytes());
            sys::exit_now(127)
        }
        ForkResult::Parent { child } => {
            drop(wr);
            let mut text = String::new();
            let report = match fs::File::from(rd).read_to_string(&mut text) {
                Ok(_) => parse_child_report(&text),
                Err(e) => ChildReport::NoFacts(format!(
                    "cannot read the workload's report before exec: {e}"
                )),
            };
            match report {
                ChildReport::Failed(f) => {
                    let _ = waitpid(child, None);
                    send(
                        writer,
                        &InitMsg::Failed {
                            phase: f["phase"].as_str().unwrap_or("launch.exec").to_owned(),
                            errno: f["errno"].as_i64().map(|e| e as i32),
                            message: f["message"].as_str().unwrap_or("").to_owned(),
                        },
                    );
                    return Ok(1);
                }
                ChildReport::NoFacts(reason) => {
                    // The workload may already run, but nothing says what confines it: a run
                    // without its enforcement facts is not reported as started.
                    let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                    let _ = waitpid(child, None);
                    send(
                        writer,
                        &InitMsg::Failed {
                            phase: "launch.facts".to_owned(),
                            errno: None,
                            message: reason,
                        },
                    );
                    return Ok(1);
                }
                ChildReport::Facts(facts) => send(writer, &InitMsg::Enforced { facts }),
            }
            send(
                writer,
                &InitMsg::Started {
                    pid: child.as_raw(),
                },
            );
            // Reap everything (orphans are re-parented to us) until the workload itself ends.
            let (code, signal) = loop {
                match waitpid(Pid::from_raw(-1), None) {
                    Ok(WaitStatus::Exited(pid, code)) if pid == child => break (Some(code), None),
                    Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => {
                        break (None, Some(sig as i32));
                    }
                    Ok(_) | Err(Errno::EINTR) => continue,
                    Err(_) => break (None, None),
                }
            };
            send(writer, &InitMsg::Exited { code, signal });
            Ok(0)
        }
    }
}

/// The workload's setup; returns only on failure (success ends in exec).
fn workload(
    plan: &InitPlan,
    devnull: &OwnedFd,
    report: &mut fs::File,
    userns: bool,
    mounts: MountFacts,
) -> Failure {
    match workload_setup(plan, devnull, report, userns, mounts) {
        Ok(never) => match never {},
        Err(f) => f,
    }
}

enum Never {}

fn workload_setup(
    plan: &InitPlan,
    devnull: &OwnedFd,
    report: &mut fs::File,
    userns: bool,
    mounts: MountFacts,
) -> Result<Never, Failure> {
    let sb = &plan.sandbox;
    let pr = &plan.process;
    nix::unistd::setsid().map_err(fail("launch.session"))?;
    sys::reset_signals().map_err(|e| fail_msg("launch.signals", e))?;
    nix::unistd::dup2_stdin(devnull).map_err(fail("launch.stdio"))?;
    if sb.host_uid == 0 || sb.host_gid == 0 {
        return Err(fail_msg(
            "launch.identity",
            "the workload's host uid/gid must not be 0",
        ));
    }
    nix::unistd::setgroups(&[]).map_err(fail("launch.identity"))?;
    let (hg, hu) = (Gid::from_raw(sb.host_gid), Uid::from_raw(sb.host_uid));
    nix::unistd::setresgid(hg, hg, hg).map_err(fail("launch.identity"))?;
    nix::unistd::setresuid(hu, hu, hu).map_err(fail("launch.identity"))?;
    let mut facts = WorkloadFacts {
        policy_mounts: mounts.policy_mounts,
        lock_isolated_mounts: mounts.lock_isolated,
        ..WorkloadFacts::default()
    };
    if userns {
        // Dumpable again after the uid change, so /proc/self/*_map belong to us.
        prctl::set_dumpable(true).map_err(fail("launch.userns"))?;
        unshare(CloneFlags::CLONE_NEWUSER).map_err(fail("launch.userns"))?;
        let uid_map = format!("{} {} 1", pr.uid, sb.host_uid);
        let gid_map = format!("{} {} 1", pr.gid, sb.host_gid);
        let w = |path: &str, data: &str| {
            fs::write(path, data).map_err(|e| Failure {
                phase: "launch.userns",
                errno: e.raw_os_error(),
                message: format!("writing {path}: {e}"),
            })
        };
        w("/proc/self/setgroups", "deny")?;
        w("/proc/self/uid_map", &uid_map)?;
        w("/proc/self/gid_map", &gid_map)?;
        prctl::set_dumpable(false).map_err(fail("launch.userns"))?;
        facts.uid_map = uid_map;
        facts.gid_map = gid_map;
    }
    chdir(pr.cwd.as_str()).map_err(|e| Failure {
        phase: "launch.cwd",
        errno: Some(e as i32),
        message: format!("cannot enter working directory {}: {}", pr.cwd, e.desc()),
    })?;
    // Everything exec needs is built before seccomp and Landlock shut doors.
    let cstr = |s: &str| {
        CString::new(s).map_err(|_| fail_msg("launch.exec", format!("NUL byte in {s:?}")))
    };
    let path = cstr(&pr.command)?;
    let mut argv = vec![path.clone()];
    for a in &pr.args {
        argv.push(cstr(a)?);
    }
    let env: Vec<CString> = pr
        .env
        .iter()
        .map(|(k, v)| cstr(&format!("{k}={v}")))
        .collect::<Result<_, _>>()?;
    let compiled = seccomp::compile(&sb.seccomp).map_err(|e| fail_msg("launch.seccomp", e))?;

    facts.capabilities_dropped =
        sys::drop_all_capabilities().map_err(|e| fail_msg("launch.capabilities", e))?;
    // Always, whatever the bundle says: seccomp without CAP_SYS_ADMIN needs it anyway.
    prctl::set_no_new_privs().map_err(fail("launch.no_new_privs"))?;
    facts.no_new_privs = true;
    for (name, value) in &sb.rlimits {
        let res = rlimit_resource(name)
            .ok_or_else(|| fail_msg("launch.rlimits", format!("unknown rlimit {name:?}")))?;
        setrlimit(res, *value, *value).map_err(|e| Failure {
            phase: "launch.rlimits",
            errno: Some(e as i32),
            message: format!("setting {name}={value}: {}", e.desc()),
        })?;
        facts.rlimits.push((name.clone(), *value));
    }
    facts.landlock = landlock_rules::enforce(&sb.landlock, sys::landlock_abi())
        .map_err(|e| fail_msg("launch.landlock", e))?;
    seccomp::install(&compiled).map_err(|e| fail_msg("launch.seccomp", e))?;
    facts.seccomp_profile = sb.seccomp.profile_id.clone();
    facts.seccomp_digest = compiled.digest.clone();
    facts.seccomp_instructions = compiled.instructions;
    facts.seccomp_sockets = sr_evidence::report::SocketRules {
        families: sb.seccomp.allowed_socket_families.clone(),
        netlink_protocols: sb.seccomp.allowed_netlink_protocols.clone(),
        inet_socket_types: sb.seccomp.allowed_inet_socket_types.clone(),
        ip_protocols: sb.seccomp.allowed_ip_protocols.clone(),
    };
    // One write: pid 1 reads until exec closes the pipe.
    let mut line = serde_json::json!({ "facts": facts }).to_string();
    line.push('\n');
    // Unrecorded facts are a failed launch, not a workload started without them.
    report.write_all(line.as_bytes()).map_err(|e| Failure {
        phase: "launch.facts",
        errno: e.raw_os_error(),
        message: format!("cannot report the enforcement facts before exec: {e}"),
    })?;
    let e = match execve(&path, &argv, &env) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    Err(Failure {
        phase: "launch.exec",
        errno: Some(e as i32),
        message: format!("cannot execute {}: {}", pr.command, e.desc()),
    })
}

/// What the workload process told pid 1 before exec, or instead of it.
#[derive(Debug)]
enum ChildReport {
    /// The enforcement facts, right before exec.
    Facts(Box<WorkloadFacts>),
    /// A setup failure (`{phase, errno, message}`).
    Failed(serde_json::Value),
    /// Neither: why no usable facts arrived.
    NoFacts(String),
}

/// Reads the lines the workload wrote before exec: a failure wins; facts must parse.
fn parse_child_report(text: &str) -> ChildReport {
    let mut facts = None;
    let mut problem = None;
    for line in text.lines() {
        let v = match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) => v,
            Err(e) => {
                problem = Some(format!("unreadable line from the workload: {e}"));
                continue;
            }
        };
        if let Some(f) = v.get("fail") {
            return ChildReport::Failed(f.clone());
        }
        if let Some(f) = v.get("facts") {
            match serde_json::from_value::<WorkloadFacts>(f.clone()) {
                Ok(parsed) => facts = Some(parsed),
                Err(e) => problem = Some(format!("the enforcement facts do not parse: {e}")),
            }
        }
    }
    match (facts, problem) {
        (Some(f), None) => ChildReport::Facts(Box::new(f)),
        (_, Some(p)) => ChildReport::NoFacts(p),
        (None, None) => {
            ChildReport::NoFacts("the workload sent no enforcement facts before exec".to_owned())
        }
    }
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

    /// Issue 14 item 4: facts that do not parse, or none at all, used to become a run
    /// reported as started without its Landlock and seccomp facts.
    #[test]
    fn the_workload_report_needs_facts_that_parse() {
        let good = serde_json::json!({ "facts": WorkloadFacts::default() }).to_string();
        assert!(matches!(parse_child_report(&good), ChildReport::Facts(_)));
        for (text, expect) in [
            ("", "no enforcement facts"),
            ("{\"facts\": {\"landlock\": 7}}\n", "do not parse"),
            ("{\"facts\": {}\n", "unreadable line"),
        ] {
            match parse_child_report(text) {
                ChildReport::NoFacts(reason) => assert!(reason.contains(expect), "{reason}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        let failed = format!(
            "{good}\n{}\n",
            serde_json::json!({"fail": {"phase": "launch.exec", "errno": 2, "message": "m"}})
        );
        assert!(matches!(
            parse_child_report(&failed),
            ChildReport::Failed(f) if f["errno"] == 2
        ));
    }
}
