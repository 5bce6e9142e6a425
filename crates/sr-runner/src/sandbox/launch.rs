//! The runner side of a sandbox run: prepare, launch, monitor, clean up. One ordered function,
//! [`Runner::run`], with a comment on each ordering constraint.
//!
//! Threads: the runner may be multi-threaded (output tees, the control-socket reader, the
//! signal forwarder); it never forks. The sandbox starts by re-executing the safe-run binary as
//! `safe-run __init` through `std::process::Command` (fork+exec done by std, exec immediately).
//!
//! Note on PDEATHSIG: the kernel sends it when the *thread* that spawned the init exits. Call
//! [`Runner::run`] on a thread that outlives the run (the CLI's main thread; a test's thread).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::fcntl::OFlag;
use serde_json::{Value, json};
use sr_common::{Diagnostic, ErrorCode};
use sr_compiler::bundle::{CompileBundle, OutputAction};
use sr_evidence::events;
use sr_evidence::sink::EventSink;

use super::protocol::{Go, InitMsg, InitPlan, WorkloadFacts};
use crate::cgroup::{self, CgroupFs, Layout, RunCgroup};
use crate::error::RunnerError;
use crate::network_hook::NetworkHook;
use crate::outcome::{
    CleanupReport, EnforcementFacts, RunOutcome, RunStatus, StreamFacts, Timings,
};
use crate::output::{self, SharedTerminal};
use crate::rundir::RunDir;

/// How long the init may take to report Ready or to exec (not the workload's timeout).
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the output tees write besides the run dir.
pub type Terminal = Box<dyn Write + Send>;

/// Inputs of a run besides the bundle.
pub struct RunOptions {
    /// The binary to execute as `<init_exe> __init` (the safe-run binary).
    pub init_exe: PathBuf,
    /// The cgroup layout (from preflight).
    pub cgroup_layout: Layout,
    /// Operator-allowed mount prefixes (re-checked through each source's fd).
    pub allowed_mount_prefixes: Vec<String>,
    /// Where the workload's stdout is streamed (the terminal, or a sink in tests).
    pub stdout: Terminal,
    /// Where the workload's stderr is streamed.
    pub stderr: Terminal,
}

struct LaunchCfg {
    init_exe: PathBuf,
    cgroup_layout: Layout,
    allowed_mount_prefixes: Vec<String>,
}

enum Event {
    Msg(InitMsg),
    ControlClosed,
    Cancel(i32),
    /// An output tee passed its limit (`stdout` or `stderr`).
    OutputCut(&'static str),
}

/// Stops a run from another thread (a signal forwarder).
#[derive(Clone)]
pub struct Canceller(Sender<Event>);

impl Canceller {
    /// Asks the run to stop because safe-run received `signal`.
    pub fn cancel(&self, signal: i32) {
        let _ = self.0.send(Event::Cancel(signal));
    }
}

/// Forwards SIGINT and SIGTERM to `canceller` from a background thread (signal-hook's
/// self-pipe; nothing but a write happens in the handler).
pub fn forward_signals(canceller: Canceller) -> std::io::Result<signal_hook::iterator::Handle> {
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    let handle = signals.handle();
    std::thread::Builder::new()
        .name("sr-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                canceller.cancel(sig);
            }
        })?;
    Ok(handle)
}

/// One run.
pub struct Runner {
    tx: Sender<Event>,
    rx: Receiver<Event>,
}

impl Default for Runner {
    fn default() -> Self {
        Self::new()
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct Ctx<'a> {
    sink: &'a mut dyn EventSink,
    warnings: Vec<Diagnostic>,
    /// The first event that could not be written. A run whose evidence cannot be recorded
    /// must not go on: the launch checks this before the workload starts, the monitor at
    /// every wake-up (SR-EVD-001).
    evidence_failure: Option<Diagnostic>,
}

impl Ctx<'_> {
    fn emit(&mut self, ty: &str, payload: Value) {
        if let Err(e) = self.sink.emit(ty, payload) {
            let d = Diagnostic::new(
                ErrorCode::EvidenceEventWrite,
                format!("evidence.{ty}"),
                e.to_string(),
                "check that the run directory is writable and not full; the run was stopped \
                 because its evidence could not be recorded",
            );
            if self.evidence_failure.is_none() {
                self.evidence_failure = Some(d.clone());
            }
            self.warnings.push(d);
        }
    }
}

fn launch_hint(phase: &str, errno: Option<i32>) -> &'static str {
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
        _ => "see docs/run.md (launch sequence) and docs/sandbox.md (what each layer needs)",
    }
}

fn launch_diag(phase: &str, errno: Option<i32>, message: &str) -> Diagnostic {
    Diagnostic::new(
        ErrorCode::RunLaunch,
        phase,
        message.to_owned(),
        launch_hint(phase, errno),
    )
}

impl Runner {
    /// A runner for one run.
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel();
        Runner { tx, rx }
    }

    /// A handle that stops the run.
    pub fn canceller(&self) -> Canceller {
        Canceller(self.tx.clone())
    }

    /// Runs `bundle` in the prepared run directory. Never returns early: every path ends with
    /// cleanup and an outcome (a launch failure is [`RunStatus::LaunchFailed`]).
    pub fn run(
        self,
        dir: &RunDir,
        bundle: &CompileBundle,
        hook: &mut dyn NetworkHook,
        sink: &mut dyn EventSink,
        opts: RunOptions,
    ) -> RunOutcome {
        let t0 = Instant::now();
        let started_at = unix_ms();
        let fs = cgroup::HostFs;
        let mut ctx = Ctx {
            sink,
            warnings: Vec::new(),
            evidence_failure: None,
        };
        let mut phases: BTreeMap<String, f64> = BTreeMap::new();
        let mut enforcement = EnforcementFacts {
            kernel: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            ..EnforcementFacts::default()
        };
        let mut command = vec![bundle.process.command.clone()];
        command.extend(bundle.process.args.iter().cloned());
        // Before the init exists: its orphaned pid 1 must come to us, not the host's pid 1.
        if !super::reap::become_subreaper() {
            ctx.warnings.push(Diagnostic::new(
                ErrorCode::RunLaunch,
                "launch.reaper",
                "PR_SET_CHILD_SUBREAPER was refused",
                "the sandbox's pid 1 may be left to the host's pid 1 to reap",
            ));
        }
        ctx.emit(
            events::RUN_PREPARE,
            json!({"runId": dir.run_id, "runDir": dir.path, "backend": bundle.backend}),
        );

        let RunOptions {
            init_exe,
            cgroup_layout,
            allowed_mount_prefixes,
            stdout: out_term,
            stderr: err_term,
        } = opts;
        let opts = LaunchCfg {
            init_exe,
            cgroup_layout,
            allowed_mount_prefixes,
        };
        let mut live = Live {
            stdout: Some(out_term),
            stderr: Some(err_term),
            ..Live::default()
        };
        let status = self
            .launch(
                dir,
                bundle,
                hook,
                &mut ctx,
                &opts,
                &fs,
                &mut live,
                &mut enforcement,
                &mut phases,
                t0,
            )
            .unwrap_or_else(|e| RunStatus::LaunchFailed {
                diagnostic: e.to_diagnostic(),
            });

        // ---- cleanup: every path comes here ----
        let t_clean = Instant::now();
        let mut cleanup = CleanupReport::default();
        if let Some(mut child) = live.child.take() {
            // Exited or not, SIGKILL it: on a normal end it is already leaving (pid 1 is gone);
            // std's Child never signals a reaped pid, so this cannot hit a recycled one.
            let _ = child.kill();
            let _ = child.wait();
            // The sandbox's pid 1, if the init died before reaping it, is ours now (we are
            // its subreaper): reap it, so no zombie outlives the run (see reap.rs).
            let (_, stuck) = super::reap::reap_orphans(Duration::from_secs(5));
            if !stuck.is_empty() {
                cleanup.errors.push(Diagnostic::new(
                    ErrorCode::RunLaunch,
                    "cleanup.processes",
                    format!("sandbox processes {stuck:?} did not end within 5 s of the init"),
                    "they are in the run's cgroup, which cleanup kills; see docs/run.md",
                ));
            }
        }
        // The init is dead, so every process of the sandbox is dying with its pid namespace and
        // the pipes reach EOF. The tees end before the status is final: a stream may have
        // passed its limit in the last moments of the run.
        let mut stdout = StreamFacts::default();
        let mut stderr = StreamFacts::default();
        for (h, out) in [
            (live.out_tee.take(), &mut stdout),
            (live.err_tee.take(), &mut stderr),
        ] {
            if let Some(h) = h {
                match tee_result(h.join()) {
                    Ok(f) => *out = f,
                    Err(d) => ctx.warnings.push(d),
                }
            }
        }
        let mut status = status;
        for (name, facts) in [("stdout", &stdout), ("stderr", &stderr)] {
            if facts.truncated
                && let Some(st) = on_output_cut(&mut ctx, &mut live, bundle, name)
                && matches!(
                    status,
                    RunStatus::Exited { .. } | RunStatus::Signaled { .. }
                )
            {
                // onLimit: kill, and the workload ended before the runner could kill it: the
                // run still ends by its output limit, whatever the race.
                status = st;
            }
        }
        let mut resources = Default::default();
        if let Some(cg) = &live.cgroup {
            resources = cg.totals(&fs, live.pids_seen);
            if resources.oom_kills > 0 {
                if let RunStatus::Exited { .. } | RunStatus::Signaled { .. } = status {
                    let (code, signal) = match status {
                        RunStatus::Exited { code } => (Some(code), None),
                        RunStatus::Signaled { signal } => (None, Some(signal)),
                        _ => (None, None),
                    };
                    status = RunStatus::Oom {
                        oom_kills: resources.oom_kills,
                        signal,
                        code,
                    };
                    ctx.emit(events::RUN_OOM, json!({"oomKills": resources.oom_kills, "memoryPeakBytes": resources.memory_peak_bytes}));
                }
            }
        }
        let mut network_audit = Value::Null;
        if live.network_attached {
            match hook.sample(true) {
                Ok(s) => {
                    for (ty, payload) in s.events {
                        ctx.emit(&ty, payload);
                    }
                    network_audit = s.audit;
                }
                Err(d) => cleanup.errors.push(d),
            }
        }
        if !matches!(status, RunStatus::LaunchFailed { .. }) || live.started {
            let limits = crate::outcome::limits_hit(
                &status,
                &resources,
                [("stdout", stdout.truncated), ("stderr", stderr.truncated)],
            );
            ctx.emit(
                events::PROCESS_EXITED,
                json!({"status": status, "durationMs": phases.get("workload"), "limitsHit": limits, "pidsLimitHits": resources.pids_limit_hits}),
            );
        }
        if let Some(cg) = &live.cgroup {
            let (removed, errors) = cg.remove(&fs);
            cleanup
                .removed
                .extend(removed.iter().map(|p| format!("cgroup:{}", p.display())));
            cleanup.errors.extend(errors.into_iter().map(|e| {
                Diagnostic::new(
                    ErrorCode::RunLaunch,
                    "cleanup.cgroup",
                    e,
                    "run `safe-run gc` to retry",
                )
            }));
        }
        // Always, even when attach failed midway or never happened.
        match hook.release() {
            Ok(()) => {
                if live.network_attached && !live.network_facts.is_null() {
                    cleanup.removed.push("network".into());
                    ctx.emit(events::NETWORK_RELEASED, json!({"runId": dir.run_id}));
                }
            }
            Err(d) => cleanup.errors.push(d),
        }
        // The root mount point: the mounts on it lived in the sandbox's mount namespace and
        // are gone with it; the empty directory is removed.
        if std::fs::remove_dir(dir.path.join("root")).is_ok() {
            cleanup.removed.push("root mount point".into());
        }
        let empty_lower = super::mounts::HostMounter::empty_lower_path(&dir.path.join("root"));
        if std::fs::remove_dir(empty_lower).is_ok() {
            cleanup.removed.push("overlay lower directory".into());
        }
        phases.insert("cleanup".into(), ms(t_clean.elapsed()));
        phases.insert("total".into(), ms(t0.elapsed()));
        ctx.emit(
            events::CLEANUP_DONE,
            json!({"removed": cleanup.removed, "errors": cleanup.errors}),
        );
        RunOutcome {
            run_id: dir.run_id.clone(),
            run_dir: dir.path.clone(),
            backend: bundle.backend.clone(),
            policy_name: bundle.policy_name.clone(),
            policy_digest: bundle.policy_digest.clone(),
            command,
            status,
            timings: Timings {
                started_at_unix_ms: started_at,
                finished_at_unix_ms: unix_ms(),
                phases_ms: phases,
            },
            resources,
            enforcement,
            stdout,
            stderr,
            network: live.network_facts,
            network_audit,
            cleanup,
            warnings: ctx.warnings,
        }
    }

    fn recv(&self, deadline: Instant) -> Result<Event, RecvTimeoutError> {
        self.rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
    }

    #[allow(clippy::too_many_arguments)]
    fn launch(
        &self,
        dir: &RunDir,
        bundle: &CompileBundle,
        hook: &mut dyn NetworkHook,
        ctx: &mut Ctx<'_>,
        opts: &LaunchCfg,
        fs: &dyn CgroupFs,
        live: &mut Live,
        enforcement: &mut EnforcementFacts,
        phases: &mut BTreeMap<String, f64>,
        t0: Instant,
    ) -> Result<RunStatus, RunnerError> {
        let Some(sandbox) = &bundle.sandbox_plan else {
            return Err(RunnerError::launch(
                "launch.backend",
                format!(
                    "the bundle is for backend {:?}, not sandbox",
                    bundle.backend
                ),
                "run it with the firecracker backend",
            ));
        };
        enforcement.namespaces = sandbox.namespaces.clone();
        enforcement.hostname = sandbox.hostname.clone();
        enforcement.capabilities_kept = sandbox.capabilities.clone();

        // cgroups first: the init must be inside them before it forks anything.
        let t = Instant::now();
        let cg = RunCgroup::create(fs, &opts.cgroup_layout, &bundle.cgroup_plan, &dir.run_id)
            .map_err(|e| {
                RunnerError::launch(
                    "launch.cgroup",
                    format!("creating the run's cgroup: {e}"),
                    "check that cgroupfs is writable by root; `safe-run gc` removes leftovers",
                )
            })?;
        enforcement.cgroup_layout = Some(cg.layout.clone());
        enforcement.cgroup_paths = cg.paths.clone();
        enforcement.cgroup_limits = cg.limits_written.clone();
        live.cgroup = Some(cg);
        phases.insert("cgroup".into(), ms(t.elapsed()));

        let io_err = |phase: &'static str| {
            move |e: std::io::Error| RunnerError::launch(phase, e.to_string(), "see docs/run.md")
        };
        let (ours, theirs) = UnixStream::pair().map_err(io_err("launch.spawn"))?;
        let (out_r, out_w) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| io_err("launch.spawn")(e.into()))?;
        let (err_r, err_w) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| io_err("launch.spawn")(e.into()))?;
        let t_spawn = Instant::now();
        let child: Child = {
            let mut cmd = Command::new(&opts.init_exe);
            // Its own process group: a terminal's Ctrl-C reaches safe-run only, which then stops
            // the sandbox in order (status `interrupted`), instead of racing it.
            cmd.process_group(0);
            cmd.arg("__init")
                .env_clear()
                .current_dir("/")
                .stdin(Stdio::from(OwnedFd::from(theirs)))
                .stdout(Stdio::from(out_w))
                .stderr(Stdio::from(err_w));
            cmd.spawn().map_err(|e| {
                RunnerError::launch(
                    "launch.spawn",
                    format!(
                        "cannot start the sandbox init {}: {e}",
                        opts.init_exe.display()
                    ),
                    "reinstall safe-run",
                )
            })?
            // `cmd` drops here: our copies of the child's ends close, so EOF works.
        };
        let init_pid = child.id();
        live.child = Some(child);
        // Attach the init to the run's cgroups right away: it cannot fork before Go, so every
        // process of the sandbox is born inside them, and the migration (a cgroup rwsem write
        // lock that waits for an RCU grace period, the slowest step of a launch on cgroup v1)
        // overlaps the init's exec and namespace creation. It must precede the init's cgroup
        // namespace, which is only created after Go.
        // It runs on its own thread and is joined before Go. On cgroup v1 the init moves
        // itself instead, which is much cheaper (see `RunCgroup::self_attach_files`).
        let self_attach = live
            .cgroup
            .as_ref()
            .and_then(RunCgroup::self_attach_files)
            .unwrap_or_default();
        let attach_thread = live
            .cgroup
            .clone()
            .filter(|_| self_attach.is_empty())
            .map(|cg| {
                std::thread::spawn(move || {
                    let t = Instant::now();
                    cg.attach(&cgroup::HostFs, init_pid).map(|()| t.elapsed())
                })
            });
        let shared = |t: Option<Terminal>| -> SharedTerminal {
            Arc::new(Mutex::new(t.unwrap_or_else(|| Box::new(std::io::sink()))))
        };
        let out_term = shared(live.stdout.take());
        let err_term = shared(live.stderr.take());
        for (stream, from, terminal) in [
            ("stdout", out_r, out_term),
            ("stderr", err_r, err_term.clone()),
        ] {
            let tx = self.tx.clone();
            let handle = output::tee(
                output::Tee {
                    stream,
                    from: File::from(from),
                    path: dir.path.join(format!("{stream}.log")),
                    terminal,
                    notices: err_term.clone(),
                    plan: bundle.process.output,
                },
                move || {
                    let _ = tx.send(Event::OutputCut(stream));
                },
            );
            if stream == "stdout" {
                live.out_tee = Some(handle);
            } else {
                live.err_tee = Some(handle);
            }
        }

        let mut writer = ours.try_clone().map_err(io_err("launch.spawn"))?;
        let tx = self.tx.clone();
        std::thread::Builder::new()
            .name("sr-control".into())
            .spawn(move || {
                let mut lines = BufReader::new(ours).lines();
                while let Some(Ok(line)) = lines.next() {
                    match serde_json::from_str::<InitMsg>(&line) {
                        Ok(m) => {
                            if tx.send(Event::Msg(m)).is_err() {
                                return;
                            }
                        }
                        Err(_) => continue,
                    }
                }
                let _ = tx.send(Event::ControlClosed);
            })
            .map_err(io_err("launch.spawn"))?;

        let init_plan = InitPlan {
            run_id: dir.run_id.clone(),
            parent_pid: std::process::id(),
            new_root: dir.path.join("root").display().to_string(),
            process: bundle.process.clone(),
            sandbox: sandbox.clone(),
            allowed_mount_prefixes: opts.allowed_mount_prefixes.clone(),
            cgroup_self_attach: self_attach
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
        };
        send_line(&mut writer, &init_plan)?;

        let timeout = Duration::from_millis(bundle.process.timeout_ms.max(1));
        let deadline = t0 + timeout;
        let setup_deadline = (Instant::now() + SETUP_TIMEOUT).min(deadline);

        // Ready: the namespaces exist.
        loop {
            match self.recv(setup_deadline) {
                Ok(Event::Msg(InitMsg::Ready)) => break,
                Ok(Event::OutputCut(stream)) => {
                    if let Some(st) = on_output_cut(ctx, live, bundle, stream) {
                        return Ok(st);
                    }
                }
                Ok(ev) => {
                    if let Some(st) = self.early_end(ev)? {
                        return Ok(st);
                    }
                }
                Err(_) => return self.setup_timeout(deadline, bundle, "launch.namespaces"),
            }
        }
        phases.insert("spawn_to_ready".into(), ms(t_spawn.elapsed()));

        let t = Instant::now();
        if let Some(h) = attach_thread {
            let took = h
                .join()
                .map_err(|_| {
                    RunnerError::launch(
                        "launch.cgroup",
                        "the cgroup attach thread panicked",
                        "this is a bug",
                    )
                })?
                .map_err(|e| {
                    RunnerError::launch(
                        "launch.cgroup",
                        format!("attaching the sandbox to its cgroup: {e}"),
                        "see docs/run.md",
                    )
                })?;
            phases.insert("cgroup_attach".into(), ms(took));
            phases.insert("cgroup_attach_wait".into(), ms(t.elapsed()));
        }

        // The network namespace exists now: connect it (before the workload exists).
        let t = Instant::now();
        live.network_attached = true; // release() must run even if attach fails midway
        let attached = hook
            .attach(init_pid, &dir.path)
            .map_err(RunnerError::Network)?;
        if !attached.facts.is_null() {
            ctx.emit(events::NETWORK_APPLIED, attached.facts.clone());
        }
        live.network_facts = attached.facts.clone();
        phases.insert("attach".into(), ms(t.elapsed()));

        if let Some(d) = ctx.evidence_failure.take() {
            return Err(RunnerError::Evidence(d));
        }
        let t_go = Instant::now();
        let go = Go {
            resolv_conf: attached.resolv_conf.map(|p| p.display().to_string()),
        };
        if let Err(e) = send_line(&mut writer, &go) {
            // The init failed while building the root and said why before it exited: report
            // that, not the closed socket.
            return match self.pending_failure(setup_deadline) {
                Some(status) => Ok(status),
                None => Err(e),
            };
        }
        // Enforced + Started, or Failed.
        loop {
            match self.recv(setup_deadline) {
                Ok(Event::Msg(InitMsg::Enforced { facts })) => {
                    ctx.emit(
                        events::SANDBOX_ENFORCED,
                        enforced_payload(&facts, enforcement),
                    );
                    enforcement.workload = Some(*facts);
                }
                Ok(Event::Msg(InitMsg::Started { pid })) => {
                    if enforcement.workload.is_none() {
                        // The init checks this too; a run is never reported as started
                        // without what confines it.
                        kill_init(live);
                        return Err(RunnerError::launch(
                            "launch.facts",
                            "the workload started but its enforcement facts (Landlock, seccomp, identity) never arrived",
                            "this is a bug in the sandbox init; the workload was killed",
                        ));
                    }
                    live.started = true;
                    ctx.emit(
                        events::PROCESS_STARTED,
                        json!({"pid": pid, "command": bundle.process.command, "args": bundle.process.args}),
                    );
                    break;
                }
                Ok(Event::OutputCut(stream)) => {
                    if let Some(st) = on_output_cut(ctx, live, bundle, stream) {
                        return Ok(st);
                    }
                }
                Ok(ev) => {
                    if let Some(st) = self.early_end(ev)? {
                        return Ok(st);
                    }
                }
                Err(_) => return self.setup_timeout(deadline, bundle, "launch.exec"),
            }
        }
        phases.insert("go_to_exec".into(), ms(t_go.elapsed()));

        // Monitor.
        let t_work = Instant::now();
        let interval = Duration::from_millis(bundle.evidence_plan.sample_interval_ms);
        let mut next_sample = if interval.is_zero() {
            None
        } else {
            Some(Instant::now() + interval)
        };
        let status = loop {
            if let Some(diagnostic) = ctx.evidence_failure.take() {
                kill_init(live);
                break RunStatus::Stopped { diagnostic };
            }
            let wake = next_sample.map_or(deadline, |s| s.min(deadline));
            match self.recv(wake) {
                Ok(Event::Msg(InitMsg::Exited { code, signal })) => {
                    break match (code, signal) {
                        (Some(c), _) => RunStatus::Exited { code: c },
                        (None, Some(s)) => RunStatus::Signaled { signal: s },
                        (None, None) => lost(
                            "the sandbox init could no longer wait for the workload; how it ended is unknown",
                        ),
                    };
                }
                Ok(Event::Msg(_)) => continue,
                Ok(Event::ControlClosed) => {
                    // The init died without reporting (killed from outside): what the
                    // workload did last is unknown, and is reported so.
                    break lost(
                        "the sandbox init exited without reporting how the workload ended (killed from outside?)",
                    );
                }
                Ok(Event::Cancel(sig)) => {
                    kill_init(live);
                    break RunStatus::Interrupted { signal: sig };
                }
                Ok(Event::OutputCut(stream)) => {
                    if let Some(st) = on_output_cut(ctx, live, bundle, stream) {
                        break st;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    break lost(
                        "the runner lost its channel to the sandbox init; how the workload ended is unknown",
                    );
                }
                Err(RecvTimeoutError::Timeout) => {
                    let now = Instant::now();
                    if now >= deadline {
                        // SIGKILL the init: pid 1 dies by PDEATHSIG and the kernel kills the
                        // whole pid namespace; cleanup also empties the cgroup.
                        kill_init(live);
                        ctx.emit(
                            events::RUN_TIMEOUT,
                            json!({"limitMs": bundle.process.timeout_ms}),
                        );
                        break RunStatus::Timeout {
                            limit_ms: bundle.process.timeout_ms,
                        };
                    }
                    if let Some(cg) = &live.cgroup {
                        let s = cg.sample(fs);
                        live.pids_seen = live.pids_seen.max(s.pids);
                        ctx.emit(events::RESOURCE_SAMPLE, json!(s));
                    }
                    match hook.sample(false) {
                        Ok(s) => {
                            for (ty, payload) in s.events {
                                ctx.emit(&ty, payload);
                            }
                        }
                        Err(d) => ctx.warnings.push(d),
                    }
                    next_sample = Some(now + interval);
                }
            }
        };
        phases.insert("workload".into(), ms(t_work.elapsed()));
        Ok(status)
    }

    /// An event before the workload started: a failure, a cancel, or the init vanishing.
    fn early_end(&self, ev: Event) -> Result<Option<RunStatus>, RunnerError> {
        match ev {
            Event::Msg(InitMsg::Failed {
                phase,
                errno,
                message,
            }) => Ok(Some(RunStatus::LaunchFailed {
                diagnostic: launch_diag(&phase, errno, &message),
            })),
            Event::Msg(_) => Ok(None),
            Event::ControlClosed => Err(RunnerError::launch(
                "launch.init",
                "the sandbox init exited without reporting",
                "see docs/run.md; the kernel log may say more",
            )),
            Event::Cancel(sig) => Ok(Some(RunStatus::Interrupted { signal: sig })),
            // Recorded by cleanup, from the tee's facts.
            Event::OutputCut(_) => Ok(None),
        }
    }

    /// The init's own failure message, if it sent one before closing the control socket.
    fn pending_failure(&self, deadline: Instant) -> Option<RunStatus> {
        loop {
            match self.recv(deadline) {
                Ok(Event::Msg(InitMsg::Failed {
                    phase,
                    errno,
                    message,
                })) => {
                    return Some(RunStatus::LaunchFailed {
                        diagnostic: launch_diag(&phase, errno, &message),
                    });
                }
                Ok(Event::Msg(_) | Event::OutputCut(_)) => continue,
                Ok(Event::Cancel(sig)) => return Some(RunStatus::Interrupted { signal: sig }),
                Ok(Event::ControlClosed) | Err(_) => return None,
            }
        }
    }

    fn setup_timeout(
        &self,
        deadline: Instant,
        bundle: &CompileBundle,
        phase: &str,
    ) -> Result<RunStatus, RunnerError> {
        if Instant::now() >= deadline {
            Ok(RunStatus::Timeout {
                limit_ms: bundle.process.timeout_ms,
            })
        } else {
            Err(RunnerError::launch(
                phase,
                format!(
                    "the sandbox init did not answer within {}s",
                    SETUP_TIMEOUT.as_secs()
                ),
                "the host may be overloaded; see docs/run.md",
            ))
        }
    }
}

/// A run whose end was not observed (SR-RUN-002).
fn lost(message: &str) -> RunStatus {
    RunStatus::Lost {
        diagnostic: Diagnostic::new(
            ErrorCode::RunLaunch,
            "monitor.exit",
            message,
            "the workload's exit status was not observed; the sandbox was killed and cleaned up; check whether something on the host kills processes (OOM killer of the host, an operator)",
        ),
    }
}

/// The facts of an output tee as it ended: a tee that failed or panicked loses its stream's
/// facts, and that loss is recorded (SR-EVD-001), never dropped.
fn tee_result(
    joined: std::thread::Result<Result<StreamFacts, String>>,
) -> Result<StreamFacts, Diagnostic> {
    let message = match joined {
        Ok(Ok(f)) => return Ok(f),
        Ok(Err(e)) => e,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_owned());
            format!("the output tee panicked ({what}); the stream's size and digest are lost")
        }
    };
    Err(Diagnostic::new(
        ErrorCode::EvidenceEventWrite,
        "monitor.output",
        message,
        "check that the run directory is writable and not full",
    ))
}

fn enforced_payload(facts: &WorkloadFacts, e: &EnforcementFacts) -> Value {
    json!({
        "kernel": e.kernel,
        "namespaces": e.namespaces,
        "landlock": facts.landlock,
        "seccomp": {"profileId": facts.seccomp_profile, "digest": facts.seccomp_digest, "instructions": facts.seccomp_instructions, "sockets": facts.seccomp_sockets},
        "cgroup": {"layout": e.cgroup_layout, "limits": e.cgroup_limits},
        "uidMap": facts.uid_map,
        "gidMap": facts.gid_map,
        "noNewPrivs": facts.no_new_privs,
        "capabilitiesKept": e.capabilities_kept,
        "rlimits": facts.rlimits,
        "policyMounts": facts.policy_mounts,
        "lockIsolatedMounts": facts.lock_isolated_mounts,
    })
}

/// A stream passed its limit: records it (once per stream) and, under `onLimit: kill`, kills
/// the sandbox and returns the status the run ends with.
fn on_output_cut(
    ctx: &mut Ctx<'_>,
    live: &mut Live,
    bundle: &CompileBundle,
    stream: &'static str,
) -> Option<RunStatus> {
    if live.cuts.contains(&stream) {
        return None;
    }
    live.cuts.push(stream);
    let plan = bundle.process.output;
    ctx.emit(
        events::OUTPUT_TRUNCATED,
        json!({"stream": stream, "limitBytes": plan.max_bytes, "onLimit": plan.on_limit.as_str()}),
    );
    match plan.on_limit {
        OutputAction::Truncate => None,
        OutputAction::Kill => {
            kill_init(live);
            Some(RunStatus::OutputLimit {
                stream: stream.to_owned(),
                limit_bytes: plan.max_bytes,
            })
        }
    }
}

fn kill_init(live: &mut Live) {
    if let Some(child) = live.child.as_mut() {
        let _ = child.kill();
    }
}

fn send_line<T: serde::Serialize>(w: &mut UnixStream, v: &T) -> Result<(), RunnerError> {
    let mut line = serde_json::to_vec(v)
        .map_err(|e| RunnerError::launch("launch.plan", e.to_string(), "this is a bug"))?;
    line.push(b'\n');
    w.write_all(&line).map_err(|e| {
        RunnerError::launch(
            "launch.plan",
            format!("the sandbox init went away: {e}"),
            "see docs/run.md",
        )
    })
}

#[derive(Default)]
struct Live {
    child: Option<Child>,
    cgroup: Option<RunCgroup>,
    out_tee: Option<JoinHandle<Result<StreamFacts, String>>>,
    err_tee: Option<JoinHandle<Result<StreamFacts, String>>>,
    network_attached: bool,
    network_facts: Value,
    started: bool,
    pids_seen: u64,
    stdout: Option<Terminal>,
    stderr: Option<Terminal>,
    /// Streams whose cut was recorded (`output.truncated`).
    cuts: Vec<&'static str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14 item 4: a panicked tee used to be dropped without a word.
    #[test]
    fn a_failed_or_panicked_tee_is_recorded() {
        let facts = StreamFacts {
            size: 3,
            ..StreamFacts::default()
        };
        assert_eq!(tee_result(Ok(Ok(facts.clone()))), Ok(facts));
        let failed = tee_result(Ok(Err("disk full".into()))).unwrap_err();
        assert_eq!(failed.code, ErrorCode::EvidenceEventWrite);
        assert!(failed.message.contains("disk full"));
        let panicked = std::thread::spawn(|| -> Result<StreamFacts, String> {
            panic!("tee exploded");
        })
        .join();
        let d = tee_result(panicked).unwrap_err();
        assert!(d.message.contains("panicked (tee exploded)"), "{d:?}");
        assert_eq!(d.path, "monitor.output");
    }
}
