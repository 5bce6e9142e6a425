//! The process sandbox as a [`Backend`]: spawn `safe-run __init` (on the spawner thread, so
//! PDEATHSIG holds), run the bootstrap (plan, namespaces ready, go, pid 1 forked, see
//! [`super::bootstrap`]) and hand the control socket over to the agent protocol.
//!
//! The runner never forks: the init is `std::process::Command` (fork + exec at once).

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sr_common::{Diagnostic, ErrorCode};

use super::bootstrap::{Go, InitMsg, InitPlan};
use crate::cgroup::{self, RunCgroup};
use crate::life::backend::{Backend, Killer, StartContext};
use crate::network_facts::Boundary;
use crate::network_hook::{AttachedNetwork, NamespaceSource, PreparedNamespace};
use crate::outcome::{CleanupReport, RunStatus};

/// How long the init may take to answer a bootstrap step (not the workload's timeout).
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// The hint for a launch failure in `phase` with `errno`.
pub fn launch_hint(phase: &str, errno: Option<i32>) -> &'static str {
    match (phase, errno) {
        ("launch.exec", Some(libc::ENOENT)) => {
            "runtime.command must exist inside the sandbox: check the path and that its directory is part of the rootfs or a mount"
        }
        ("launch.exec", Some(libc::EACCES)) => {
            "runtime.command must be executable by the sandbox user and lie on a mount that allows exec"
        }
        ("launch.exec", _) => {
            "check runtime.command (an ELF binary or a script with a valid interpreter)"
        }
        ("launch.cwd", _) => {
            "runtime.cwd must exist inside the sandbox and be readable by the workload's user"
        }
        ("launch.mounts", _) => {
            "check mounts[].source: it must exist, be no symlink, and lie under an operator-allowed prefix"
        }
        ("launch.landlock", _) => {
            "the kernel's Landlock is missing or too old; set requireLandlock: false in the operator config to accept that"
        }
        ("launch.userns", _) => "user namespaces must be enabled for unprivileged users",
        ("exec.tty", _) => {
            "a terminal needs the sandbox's private devpts (/dev/pts); see docs/sandbox.md"
        }
        _ => "see docs/run.md (launch sequence) and docs/sandbox.md (what each layer needs)",
    }
}

/// A launch failure (SR-RUN-002) in `phase`.
pub fn launch_diag(phase: &str, errno: Option<i32>, message: &str) -> Diagnostic {
    Diagnostic::new(
        ErrorCode::RunLaunch,
        phase,
        message.to_owned(),
        launch_hint(phase, errno),
    )
}

fn failed(phase: &str, cause: impl Into<String>, hint: &str) -> RunStatus {
    RunStatus::LaunchFailed {
        diagnostic: Diagnostic::new(ErrorCode::RunLaunch, phase, cause.into(), hint),
    }
}

/// Inputs of the process sandbox.
pub struct ProcessSandbox {
    init_exe: PathBuf,
    allowed_mount_prefixes: Vec<String>,
    child: Arc<Mutex<Option<Child>>>,
    bootstrap: Option<BufReader<UnixStream>>,
    writer: Option<UnixStream>,
    pid1: Option<super::reap::NsProcess>,
    /// The network namespace the network hook is making for this sandbox, from start until
    /// Go names it to the init.
    network_namespace: Option<PreparedNamespace>,
    deadline: Instant,
    timeout_ms: u64,
}

impl ProcessSandbox {
    /// A process sandbox whose init is `<init_exe> __init`.
    pub fn new(init_exe: PathBuf, allowed_mount_prefixes: Vec<String>) -> Self {
        super::spawner::start_early();
        ProcessSandbox {
            init_exe,
            allowed_mount_prefixes,
            child: Arc::new(Mutex::new(None)),
            bootstrap: None,
            writer: None,
            pid1: None,
            network_namespace: None,
            deadline: Instant::now(),
            timeout_ms: 0,
        }
    }

    fn send<T: serde::Serialize>(&mut self, v: &T) -> Result<(), RunStatus> {
        let mut line = serde_json::to_vec(v)
            .map_err(|e| failed("launch.plan", e.to_string(), "this is a bug"))?;
        line.push(b'\n');
        let w = self
            .writer
            .as_mut()
            .ok_or_else(|| failed("launch.plan", "no control socket", "this is a bug"))?;
        w.write_all(&line).map_err(|e| {
            failed(
                "launch.plan",
                format!("the sandbox init went away: {e}"),
                "see docs/run.md",
            )
        })
    }

    /// The next bootstrap message, within the setup deadline.
    fn recv(&mut self, phase: &str) -> Result<InitMsg, RunStatus> {
        let setup = (Instant::now() + SETUP_TIMEOUT).min(self.deadline);
        let reader = self
            .bootstrap
            .as_mut()
            .ok_or_else(|| failed(phase, "no control socket", "this is a bug"))?;
        let mut line = String::new();
        loop {
            let left = setup.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.setup_timeout(phase));
            }
            let _ = reader.get_ref().set_read_timeout(Some(left));
            match reader.read_line(&mut line) {
                Ok(0) => {
                    return Err(failed(
                        "launch.init",
                        "the sandbox init exited without reporting",
                        "see docs/run.md; the kernel log may say more",
                    ));
                }
                Ok(_) => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(self.setup_timeout(phase));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(failed(
                        "launch.init",
                        format!("reading from the sandbox init: {e}"),
                        "see docs/run.md",
                    ));
                }
            }
        }
        match serde_json::from_str::<InitMsg>(&line) {
            Ok(InitMsg::Failed {
                phase,
                errno,
                message,
            }) => Err(RunStatus::LaunchFailed {
                diagnostic: launch_diag(&phase, errno, &message),
            }),
            Ok(m) => Ok(m),
            Err(e) => Err(failed(
                phase,
                format!("an unreadable message from the sandbox init: {e}"),
                "this is a bug",
            )),
        }
    }

    fn setup_timeout(&self, phase: &str) -> RunStatus {
        if Instant::now() >= self.deadline {
            RunStatus::Timeout {
                limit_ms: self.timeout_ms,
            }
        } else {
            failed(
                phase,
                format!(
                    "the sandbox init did not answer within {}s",
                    SETUP_TIMEOUT.as_secs()
                ),
                "the host may be overloaded; see docs/run.md",
            )
        }
    }
}

impl Backend for ProcessSandbox {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    fn network_namespace_source(&self) -> NamespaceSource {
        NamespaceSource::Hook
    }

    fn start(&mut self, mut cx: StartContext<'_>) -> Result<Boundary, RunStatus> {
        let Some(sandbox) = cx.bundle.backend.sandbox() else {
            return Err(failed(
                "launch.backend",
                format!(
                    "the bundle is for backend {:?}, not sandbox",
                    cx.bundle.backend
                ),
                "run it with the firecracker backend",
            ));
        };
        self.deadline = cx.deadline;
        self.timeout_ms = cx.bundle.process.timeout_ms;
        cx.enforcement.namespaces = sandbox.namespaces.clone();
        cx.enforcement.hostname = sandbox.hostname.clone();
        cx.enforcement.capabilities_kept = sandbox.capabilities.clone();

        let io = |e: std::io::Error| failed("launch.spawn", e.to_string(), "see docs/run.md");
        let (ours, theirs) = UnixStream::pair().map_err(io)?;
        let devnull = File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(io)?;
        let t_spawn = Instant::now();
        let mut cmd = Command::new(&self.init_exe);
        // Its own process group: a terminal's Ctrl-C reaches safe-run only, which then stops
        // the sandbox in order (status `interrupted`), instead of racing it.
        cmd.process_group(0);
        cmd.arg("__init")
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::from(devnull.try_clone().map_err(io)?))
            .stderr(Stdio::from(devnull));
        let child = super::spawner::spawn(cmd).map_err(|e| {
            failed(
                "launch.spawn",
                format!(
                    "cannot start the sandbox init {}: {e}",
                    self.init_exe.display()
                ),
                "reinstall safe-run",
            )
        })?;
        // `cmd` is gone: our copies of the child's ends are closed, so EOF works.
        let init_pid = child.id();
        *self
            .child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(child);
        // Attach the init to the run's cgroups right away: it cannot fork before Go, so every
        // process of the sandbox is born inside them, and the migration (a cgroup rwsem write
        // lock that waits for an RCU grace period, the slowest step of a launch on cgroup v1)
        // overlaps the init's exec and namespace creation. On cgroup v1 the init moves itself
        // instead, which is much cheaper (see `RunCgroup::self_attach_files`).
        let self_attach = cx
            .cgroup
            .and_then(RunCgroup::self_attach_files)
            .unwrap_or_default();
        let attach_thread = cx
            .cgroup
            .cloned()
            .filter(|_| self_attach.is_empty())
            .map(|cg| {
                std::thread::spawn(move || {
                    let t = Instant::now();
                    cg.attach(&cgroup::HostFs, init_pid).map(|()| t.elapsed())
                })
            });
        self.writer = Some(ours.try_clone().map_err(io)?);
        self.bootstrap = Some(BufReader::new(ours));
        // A network namespace made for the sandbox (the run's link is going into it meanwhile)
        // is named to the init in Go.
        self.network_namespace = cx.network_namespace.take();
        let plan = InitPlan {
            run_id: cx.run_id.to_owned(),
            parent_pid: std::process::id(),
            new_root: cx
                .run_dir
                .parent()
                .unwrap_or(cx.run_dir)
                .join(crate::rundir::ROOT_MOUNT_POINT)
                .display()
                .to_string(),
            process: cx.bundle.process.clone(),
            sandbox: sandbox.clone(),
            allowed_mount_prefixes: self.allowed_mount_prefixes.clone(),
            cgroup_self_attach: self_attach
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            joins_network_namespace: self.network_namespace.is_some(),
        };
        let sent = self.send(&plan);
        let ready = sent.and_then(|()| self.recv("launch.namespaces"));
        cx.phases
            .insert("spawn_to_ready".into(), ms(t_spawn.elapsed()));
        if let Some(h) = attach_thread {
            let t = Instant::now();
            let took = h
                .join()
                .map_err(|_| {
                    failed(
                        "launch.cgroup",
                        "the cgroup attach thread panicked",
                        "this is a bug",
                    )
                })?
                .map_err(|e| {
                    failed(
                        "launch.cgroup",
                        format!("attaching the sandbox to its cgroup: {e}"),
                        "see docs/run.md",
                    )
                })?;
            cx.phases.insert("cgroup_attach".into(), ms(took));
            cx.phases
                .insert("cgroup_attach_wait".into(), ms(t.elapsed()));
        }
        match ready? {
            InitMsg::Ready => Ok(Boundary::Namespace { pid: init_pid }),
            other => Err(failed(
                "launch.namespaces",
                format!("the sandbox init said {other:?} instead of Ready"),
                "this is a bug",
            )),
        }
    }

    fn connect(
        &mut self,
        network: &AttachedNetwork,
        deadline: Instant,
        _enforcement: &mut crate::outcome::EnforcementFacts,
    ) -> Result<UnixStream, RunStatus> {
        self.deadline = deadline;
        // Held open here until the init has joined it, and named by this process's
        // descriptor: no mount, nothing to remove on any path. The link is in it by now
        // (attach waited for it).
        let net_namespace = self
            .network_namespace
            .take()
            .map(|made| {
                made.wait().map_err(|e| {
                    failed(
                        "launch.network",
                        format!("making the sandbox's network namespace: {e}"),
                        "safe-run needs CAP_SYS_ADMIN to make network namespaces",
                    )
                })
            })
            .transpose()?;
        let go = Go {
            resolv_conf: network
                .resolv_conf
                .as_ref()
                .map(|p| p.display().to_string()),
            net_namespace: net_namespace
                .as_ref()
                .map(|ns| format!("/proc/{}/fd/{}", std::process::id(), ns.as_raw_fd())),
        };
        // A failed send: the init failed while building the root and said why before it
        // exited; the next message is that reason.
        let sent = self.send(&go);
        let forked = self.recv("launch.root");
        // The init is in it now (or gone): the sandbox's processes alone keep it alive.
        drop(net_namespace);
        let pid1 = match (forked, sent) {
            (Ok(InitMsg::Forked { pid1 }), _) => pid1,
            (Err(st), _) => return Err(st),
            (Ok(other), _) => {
                return Err(failed(
                    "launch.root",
                    format!("the sandbox init said {other:?} instead of Forked"),
                    "this is a bug",
                ));
            }
        };
        self.pid1 = Some(super::reap::NsProcess::open(pid1));
        let reader = self
            .bootstrap
            .take()
            .ok_or_else(|| failed("launch.root", "no control socket", "this is a bug"))?;
        if !reader.buffer().is_empty() {
            return Err(failed(
                "launch.root",
                "the sandbox init wrote past the bootstrap",
                "this is a bug",
            ));
        }
        let sock = reader.into_inner();
        let _ = sock.set_read_timeout(None);
        self.writer = None;
        Ok(sock)
    }

    fn killer(&self) -> Killer {
        crate::life::backend::child_killer(&self.child)
    }

    fn stop(&mut self, cleanup: &mut CleanupReport) {
        let child = self
            .child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(mut child) = child else {
            return;
        };
        // SIGKILL pid 1 (the kernel kills its whole pid namespace) and the init at once, so
        // that both teardowns overlap.
        if let Some(pid1) = &self.pid1 {
            pid1.kill();
        }
        let _ = child.kill();
        let _ = child.wait();
        // pid 1, if the init died before reaping it, is ours now (we are its subreaper).
        if let Some(pid1) = &self.pid1 {
            if let Err(stuck) = pid1.reap(Duration::from_secs(5)) {
                cleanup.errors.push(Diagnostic::new(
                    ErrorCode::RunLaunch,
                    "cleanup.processes",
                    format!(
                        "the sandbox's pid 1 (host pid {}) did not end within 5 s of the init: {stuck}",
                        pid1.pid()
                    ),
                    "it is in the run's cgroup, which cleanup kills; see docs/run.md",
                ));
            }
        }
    }

    fn remove_files(&mut self, _run_dir: &Path, _cleanup: &mut CleanupReport) {
        // Nothing: the root was mounted on the base's shared mount point in the sandbox's own
        // mount namespace, which died with its last process.
    }
}
