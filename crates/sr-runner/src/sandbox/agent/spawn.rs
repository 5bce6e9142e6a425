//! One exec inside the sandbox: pid 1 forks, the child takes the policy's identity and
//! confinement and execs the request's argv.
//!
//! The child becomes the unprivileged host uid (never 0), creates its own user namespace
//! mapping the plan's uid to that host uid (the namespace owns none of the other namespaces,
//! so the capabilities it grants are useless; a microVM guest's execs get none, `userns:
//! false`, and drop the bounding set before the uid change instead), chdir, drops every capability, no_new_privs,
//! rlimits, Landlock, seccomp (last: it forbids what came before), and execs with only the
//! plan's environment plus the request's. Setup failures and exec errors go to pid 1 over a
//! close-on-exec pipe, so "missing binary" is an exact error, not a guess from exit code 127.
//! The seccomp filter is compiled once by pid 1; each child only installs it.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use nix::fcntl::OFlag;
use nix::sched::{CloneFlags, unshare};
use nix::sys::prctl;
use nix::sys::resource::setrlimit;
use nix::sys::signal::Signal;
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Gid, Pid, Uid, chdir, execve, pipe2};
use sr_agent_proto::message::{Exec, StdinMode};

use super::super::bootstrap::InitPlan;
use super::super::facts::WorkloadFacts;
use super::super::init::rlimit_resource;
use super::super::seccomp::CompiledSeccomp;
use super::super::{landlock_rules, pty, seccomp, sys};
use super::Failure;

/// What every exec shares: the plan and what pid 1 prepared once.
pub struct ExecContext<'a> {
    /// The init plan (identity, environment, rlimits, Landlock, seccomp plans).
    pub plan: &'a InitPlan,
    /// The seccomp filter, compiled once.
    pub seccomp: &'a CompiledSeccomp,
    /// Whether each exec gets its own user namespace.
    pub userns: bool,
}

/// A started exec, as pid 1 holds it.
pub struct Spawned {
    /// Its pid (inside the sandbox's pid namespace).
    pub pid: Pid,
    /// The read end of its stdout (the PTY's master for a terminal exec).
    pub stdout: OwnedFd,
    /// The read end of its stderr (`None` with a terminal: both streams are the PTY).
    pub stderr: Option<OwnedFd>,
    /// Where its stdin is written (a pipe, or the PTY's master), when it has one.
    pub stdin: Option<OwnedFd>,
    /// The PTY's master, for resizes.
    pub tty: Option<OwnedFd>,
    /// What confines it.
    pub facts: WorkloadFacts,
}

/// The environment of an exec: the policy's, then the request's (a request's variable
/// replaces the policy's of the same name).
pub fn environment(plan: &BTreeMap<String, String>, req: &Exec) -> BTreeMap<String, String> {
    let mut env = plan.clone();
    for v in &req.env {
        env.insert(v.name.clone(), v.value.clone());
    }
    env
}

fn fail(phase: &'static str) -> impl Fn(nix::Error) -> Failure {
    move |e| Failure::errno(phase, e)
}

/// The child's three standard streams and what pid 1 keeps of them.
struct Stdio {
    child_in: OwnedFd,
    child_out: OwnedFd,
    child_err: OwnedFd,
    /// Kept: stdout (or master), stderr, stdin writer, tty master.
    kept: (OwnedFd, Option<OwnedFd>, Option<OwnedFd>, Option<OwnedFd>),
}

fn cloexec_pipe() -> Result<(OwnedFd, OwnedFd), Failure> {
    pipe2(OFlag::O_CLOEXEC).map_err(fail("exec.pipe"))
}

fn set_nonblocking(fd: &OwnedFd) -> Result<(), Failure> {
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).map_err(fail("exec.pipe"))?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(fail("exec.pipe"))?;
    Ok(())
}

/// `owner`: the host uid/gid the terminal is given to.
fn stdio(req: &Exec, owner: (u32, u32)) -> Result<Stdio, Failure> {
    if let Some(size) = req.tty {
        let p = pty::open_pty(std::path::Path::new("/dev/pts/ptmx"))
            .map_err(|e| Failure::io("exec.tty", &e))?;
        pty::set_window_size(&p.master, size.rows, size.cols)
            .map_err(|e| Failure::io("exec.tty", &e))?;
        pty::give_to(&p.slave, owner.0, owner.1).map_err(|e| Failure::io("exec.tty", &e))?;
        set_nonblocking(&p.master)?;
        let clone = |fd: &OwnedFd| fd.try_clone().map_err(|e| Failure::io("exec.tty", &e));
        let out = clone(&p.master)?;
        let input = clone(&p.master)?;
        let child_in = clone(&p.slave)?;
        let child_out = clone(&p.slave)?;
        return Ok(Stdio {
            child_in,
            child_out,
            child_err: p.slave,
            kept: (out, None, Some(input), Some(p.master)),
        });
    }
    let (out_r, out_w) = cloexec_pipe()?;
    let (err_r, err_w) = cloexec_pipe()?;
    set_nonblocking(&out_r)?;
    set_nonblocking(&err_r)?;
    let (child_in, stdin_w) = match req.stdin {
        StdinMode::None => (
            nix::fcntl::open(
                "/dev/null",
                OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(fail("launch.dev"))?,
            None,
        ),
        StdinMode::Pipe => {
            let (r, w) = cloexec_pipe()?;
            set_nonblocking(&w)?;
            (r, Some(w))
        }
    };
    Ok(Stdio {
        child_in,
        child_out: out_w,
        child_err: err_w,
        kept: (out_r, Some(err_r), stdin_w, None),
    })
}

/// Starts `req`. On success the exec runs; on failure nothing of it is left.
pub fn spawn(ctx: &ExecContext<'_>, req: &Exec) -> Result<Spawned, Failure> {
    let sb = &ctx.plan.sandbox;
    let io = stdio(req, (sb.host_uid, sb.host_gid))?;
    let (rd, wr) = pipe2(OFlag::O_CLOEXEC).map_err(fail("launch.pipe"))?;
    let tty = req.tty.is_some();
    match sys::fork().map_err(|e| Failure::msg("launch.fork", e))? {
        ForkResult::Child => {
            drop(rd);
            let Stdio {
                child_in,
                child_out,
                child_err,
                kept,
            } = io;
            drop(kept);
            let mut wr = fs::File::from(wr);
            let err = match child(ctx, req, [&child_in, &child_out, &child_err], tty, &mut wr) {
                Ok(never) => match never {},
                Err(f) => f,
            };
            let line = serde_json::json!({"fail": {"phase": err.phase, "errno": err.errno, "message": err.message}});
            let _ = write_line(&mut wr, &line);
            sys::exit_now(127)
        }
        ForkResult::Parent { child } => {
            drop(wr);
            let (stdout, stderr, stdin, master) = io.kept;
            drop((io.child_in, io.child_out, io.child_err));
            let mut text = String::new();
            let report = match fs::File::from(rd).read_to_string(&mut text) {
                Ok(_) => parse_child_report(&text),
                Err(e) => {
                    ChildReport::NoFacts(format!("cannot read the exec's report before exec: {e}"))
                }
            };
            match report {
                ChildReport::Facts(facts) => Ok(Spawned {
                    pid: child,
                    stdout,
                    stderr,
                    stdin,
                    tty: master,
                    facts: *facts,
                }),
                ChildReport::Failed(f) => {
                    let _ = waitpid(child, None);
                    Err(f)
                }
                ChildReport::NoFacts(reason) => {
                    // It may already run, but nothing says what confines it: an exec without
                    // its enforcement facts is not reported as started.
                    let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                    let _ = waitpid(child, None);
                    Err(Failure::msg("launch.facts", reason))
                }
            }
        }
    }
}

enum Never {}

fn child(
    ctx: &ExecContext<'_>,
    req: &Exec,
    stdio: [&OwnedFd; 3],
    tty: bool,
    report: &mut fs::File,
) -> Result<Never, Failure> {
    let sb = &ctx.plan.sandbox;
    let pr = &ctx.plan.process;
    nix::unistd::setsid().map_err(fail("launch.session"))?;
    sys::reset_signals().map_err(|e| Failure::msg("launch.signals", e))?;
    if tty {
        pty::make_controlling_terminal(stdio[0]).map_err(|e| Failure::io("exec.tty", &e))?;
    }
    nix::unistd::dup2_stdin(stdio[0]).map_err(fail("launch.stdio"))?;
    nix::unistd::dup2_stdout(stdio[1]).map_err(fail("launch.stdio"))?;
    nix::unistd::dup2_stderr(stdio[2]).map_err(fail("launch.stdio"))?;
    if sb.host_uid == 0 || sb.host_gid == 0 {
        return Err(Failure::msg(
            "launch.identity",
            "the workload's host uid/gid must not be 0",
        ));
    }
    // Without a user namespace of its own (a microVM guest, where the agent is real root),
    // the bounding set must go while the exec is still root: PR_CAPBSET_DROP needs
    // CAP_SETPCAP, which the uid change below takes away (with every other capability).
    let dropped_as_root = if ctx.userns {
        None
    } else {
        Some(sys::drop_bounding_set().map_err(|e| Failure::msg("launch.capabilities", e))?)
    };
    nix::unistd::setgroups(&[]).map_err(fail("launch.identity"))?;
    let (hg, hu) = (Gid::from_raw(sb.host_gid), Uid::from_raw(sb.host_uid));
    nix::unistd::setresgid(hg, hg, hg).map_err(fail("launch.identity"))?;
    nix::unistd::setresuid(hu, hu, hu).map_err(fail("launch.identity"))?;
    let mut facts = WorkloadFacts::default();
    if ctx.userns {
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
    let cwd = req.cwd.as_deref().unwrap_or(pr.cwd.as_str());
    chdir(cwd).map_err(|e| Failure {
        phase: "launch.cwd",
        errno: Some(e as i32),
        message: format!("cannot enter working directory {cwd}: {}", e.desc()),
    })?;
    // Everything exec needs is built before seccomp and Landlock shut doors.
    let cstr = |s: &str| {
        CString::new(s).map_err(|_| Failure::msg("launch.exec", format!("NUL byte in {s:?}")))
    };
    let command = req.argv.first().map(String::as_str).unwrap_or_default();
    let path = cstr(command)?;
    let argv: Vec<CString> = req.argv.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?;
    let env: Vec<CString> = environment(&pr.env, req)
        .iter()
        .map(|(k, v)| cstr(&format!("{k}={v}")))
        .collect::<Result<_, _>>()?;

    // In its own user namespace the exec holds that namespace's full set now and drops it
    // here. Without one, the bounding set went while it was root (above), the uid change
    // cleared the other sets (no SECBIT_KEEP_CAPS), and this makes sure of it.
    let caps = |e: std::io::Error| Failure::msg("launch.capabilities", e);
    facts.capabilities_dropped = match dropped_as_root {
        Some(n) => {
            sys::clear_capability_sets().map_err(caps)?;
            n
        }
        None => sys::drop_all_capabilities().map_err(caps)?,
    };
    // Always, whatever the bundle says: seccomp without CAP_SYS_ADMIN needs it anyway.
    prctl::set_no_new_privs().map_err(fail("launch.no_new_privs"))?;
    facts.no_new_privs = true;
    for (name, value) in &sb.rlimits {
        let res = rlimit_resource(name)
            .ok_or_else(|| Failure::msg("launch.rlimits", format!("unknown rlimit {name:?}")))?;
        setrlimit(res, *value, *value).map_err(|e| Failure {
            phase: "launch.rlimits",
            errno: Some(e as i32),
            message: format!("setting {name}={value}: {}", e.desc()),
        })?;
        facts.rlimits.push((name.clone(), *value));
    }
    facts.landlock = landlock_rules::enforce(&sb.landlock, sys::landlock_abi())
        .map_err(|e| Failure::msg("launch.landlock", e))?;
    seccomp::install(ctx.seccomp).map_err(|e| Failure::msg("launch.seccomp", e))?;
    facts.seccomp_profile = sb.seccomp.profile_id.clone();
    facts.seccomp_digest = ctx.seccomp.digest.clone();
    facts.seccomp_instructions = ctx.seccomp.instructions;
    facts.seccomp_sockets = sr_evidence::report::SocketRules {
        families: sb.seccomp.allowed_socket_families.clone(),
        netlink_protocols: sb.seccomp.allowed_netlink_protocols.clone(),
        inet_socket_types: sb.seccomp.allowed_inet_socket_types.clone(),
        ip_protocols: sb.seccomp.allowed_ip_protocols.clone(),
    };
    // One write: pid 1 reads until exec closes the pipe. Unrecorded facts are a failed
    // launch, not an exec started without them.
    let line = serde_json::json!({ "facts": facts });
    write_line(report, &line).map_err(|e| Failure {
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
        message: format!("cannot execute {command}: {}", e.desc()),
    })
}

/// Writes `line` and a newline to the report pipe in one `write`. `writeln!` on the unbuffered
/// pipe wrote each JSON token apart (about 270 writes for the facts), and each woke pid 1 for
/// a read of its own.
fn write_line(report: &mut fs::File, line: &serde_json::Value) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(line).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    report.write_all(&bytes)
}

/// What the exec's process told pid 1 before exec, or instead of it.
#[derive(Debug)]
enum ChildReport {
    /// The enforcement facts, right before exec.
    Facts(Box<WorkloadFacts>),
    /// A setup failure.
    Failed(Failure),
    /// Neither: why no usable facts arrived.
    NoFacts(String),
}

#[derive(serde::Deserialize)]
struct ReportedFailure {
    phase: String,
    errno: Option<i32>,
    message: String,
}

/// The phases a child may report; anything else is reported as `launch.exec`.
const PHASES: &[&str] = &[
    "launch.session",
    "launch.signals",
    "launch.stdio",
    "launch.identity",
    "launch.userns",
    "launch.cwd",
    "launch.exec",
    "launch.capabilities",
    "launch.no_new_privs",
    "launch.rlimits",
    "launch.landlock",
    "launch.seccomp",
    "launch.facts",
    "exec.tty",
];

/// Reads the lines the child wrote before exec: a failure wins; facts must parse.
fn parse_child_report(text: &str) -> ChildReport {
    let mut facts = None;
    let mut problem = None;
    for line in text.lines() {
        let v = match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) => v,
            Err(e) => {
                problem = Some(format!("unreadable line from the exec: {e}"));
                continue;
            }
        };
        if let Some(f) = v.get("fail") {
            let f: ReportedFailure = match serde_json::from_value(f.clone()) {
                Ok(f) => f,
                Err(e) => {
                    problem = Some(format!("an unreadable failure from the exec: {e}"));
                    continue;
                }
            };
            let phase = PHASES
                .iter()
                .copied()
                .find(|p| *p == f.phase)
                .unwrap_or("launch.exec");
            return ChildReport::Failed(Failure {
                phase,
                errno: f.errno,
                message: f.message,
            });
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
            ChildReport::NoFacts("the exec sent no enforcement facts before exec".to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sr_agent_proto::message::{EnvVar, ExecUser};

    /// Issue 14 item 4: facts that do not parse, or none at all, used to become a run
    /// reported as started without its Landlock and seccomp facts.
    #[test]
    fn the_child_report_needs_facts_that_parse() {
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
            serde_json::json!({"fail": {"phase": "launch.cwd", "errno": 2, "message": "m"}})
        );
        assert!(matches!(
            parse_child_report(&failed),
            ChildReport::Failed(f) if f.errno == Some(2) && f.phase == "launch.cwd"
        ));
    }

    #[test]
    fn a_request_variable_replaces_the_policy_one() {
        let plan = BTreeMap::from([
            ("HOME".to_owned(), "/tmp".to_owned()),
            ("LANG".to_owned(), "C".to_owned()),
        ]);
        let req = Exec {
            id: 1,
            argv: vec!["/bin/true".into()],
            env: vec![EnvVar {
                name: "LANG".into(),
                value: "C.UTF-8".into(),
            }],
            cwd: None,
            timeout_ms: None,
            stdin: StdinMode::None,
            tty: None,
            user: ExecUser::default(),
        };
        let env = environment(&plan, &req);
        assert_eq!(env["LANG"], "C.UTF-8");
        assert_eq!(env["HOME"], "/tmp");
        assert_eq!(env.len(), 2);
    }
}
