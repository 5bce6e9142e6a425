//! A sandbox's life: [`Sandbox::create`] makes it ready (isolated, limited, its agent
//! waiting), [`Sandbox::exec`] runs commands in it (many, concurrently), and
//! [`Sandbox::destroy`] kills and cleans up everything and returns the [`RunOutcome`] for the
//! report, with the event sink back.
//!
//! What is the same for every boundary lives here: the cgroup, the network attach, the
//! evidence, the sandbox timeout and the resource samples (a monitor thread), cleanup and the
//! outcome. What differs is the [`Backend`].

use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sr_agent_proto::message::{Hello, MountFact, Ready};
use sr_agent_proto::{Message, PROTOCOL_VERSION, Role};
use sr_bundle::CompileBundle;
use sr_common::{Diagnostic, ErrorCode};
use sr_evidence::events;
use sr_evidence::sink::EventSink;

use super::backend::{Backend, Killer, Phases, StartContext};
use super::conn::{AgentConn, Control};
use super::error::{Kind as SandboxErrorKind, SandboxError};
use super::evidence::{Emit, Evidence};
use super::exec::{ExecHandle, ExecRequest, to_payload};
use crate::cgroup::{self, Layout, RunCgroup};
use crate::network_facts::NetworkFacts;
use crate::network_hook::{AttachedNetwork, NetworkHook};
use crate::outcome::{
    CleanupReport, EnforcementFacts, RunOutcome, RunStatus, StreamFacts, Timings,
};
use crate::rundir::RunDir;
use crate::sandbox::facts::WorkloadFacts;

/// A network hook that can move to the monitor thread.
pub type SharedHook = Arc<Mutex<Box<dyn NetworkHook + Send>>>;

pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// How a sandbox ends when something other than its exec ends it (timeout, signal, output
/// limit, evidence failure), and the switch that ends it. The first cause wins.
#[derive(Default)]
pub struct Ending {
    cause: Mutex<Option<RunStatus>>,
    killer: Mutex<Option<Killer>>,
}

impl Ending {
    /// Ends the sandbox with `status` (unless it already ends for another reason) and kills it.
    pub fn end(&self, status: RunStatus) {
        {
            let mut c = self
                .cause
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if c.is_none() {
                *c = Some(status);
            }
        }
        self.kill();
    }

    /// Runs the killer, once the boundary has one.
    fn kill(&self) {
        let killer = self
            .killer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(k) = killer {
            k();
        }
    }

    /// Why it ended, if something ended it.
    pub fn cause(&self) -> Option<RunStatus> {
        self.cause
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn arm(&self, killer: Killer) {
        *self
            .killer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(killer);
        // A cause that came before the boundary existed (a signal during start) still kills.
        if self.cause().is_some() {
            self.kill();
        }
    }
}

/// Stops a sandbox from another thread (a signal forwarder).
#[derive(Clone)]
pub struct Canceller(pub(crate) Arc<Ending>);

impl Canceller {
    /// Ends the sandbox because safe-run received `signal`.
    pub fn cancel(&self, signal: i32) {
        self.0.end(RunStatus::Interrupted { signal });
    }
}

/// Everything a sandbox needs besides its backend.
pub struct SandboxSpec<S> {
    /// The compiled policy.
    pub bundle: CompileBundle,
    /// The network lifecycle (NoNetwork for `mode: none`).
    pub network: Box<dyn NetworkHook + Send>,
    /// Where events go (the hash chain).
    pub sink: S,
    /// The host's cgroup layout (from preflight).
    pub cgroup_layout: Layout,
}

/// A live sandbox.
pub struct Sandbox<S: EventSink + 'static> {
    run_id: String,
    run_dir: std::path::PathBuf,
    bundle: CompileBundle,
    backend: Box<dyn Backend>,
    hook: SharedHook,
    evidence: Arc<Evidence<S>>,
    cgroup: Option<RunCgroup>,
    conn: Option<Arc<AgentConn>>,
    reader: Option<JoinHandle<()>>,
    _control: Option<Control>,
    monitor: Option<(Sender<()>, JoinHandle<u64>)>,
    ending: Arc<Ending>,
    next_id: AtomicU64,
    enforcement: EnforcementFacts,
    mounts: Vec<MountFact>,
    phases: Phases,
    t0: Instant,
    started_at: u64,
    network_attached: bool,
    network_facts: NetworkFacts,
    start_failure: Option<RunStatus>,
}

impl<S: EventSink + 'static> Sandbox<S> {
    /// Creates a sandbox and waits until it is ready. Never fails outright: a sandbox that
    /// could not start says why ([`Sandbox::start_failure`]) and must still be destroyed.
    pub fn create(
        dir: &RunDir,
        spec: SandboxSpec<S>,
        backend: Box<dyn Backend>,
        ending: Arc<Ending>,
    ) -> Self {
        let t0 = Instant::now();
        let SandboxSpec {
            bundle,
            network,
            sink,
            cgroup_layout,
        } = spec;
        let evidence = Evidence::new(sink);
        let mut sb = Sandbox {
            run_id: dir.run_id.clone(),
            run_dir: dir.path.clone(),
            bundle,
            backend,
            hook: Arc::new(Mutex::new(network)),
            evidence,
            cgroup: None,
            conn: None,
            reader: None,
            _control: None,
            monitor: None,
            ending,
            next_id: AtomicU64::new(1),
            enforcement: EnforcementFacts {
                kernel: nix::sys::utsname::uname()
                    .map(|u| u.release().to_string_lossy().into_owned())
                    .unwrap_or_default(),
                ..EnforcementFacts::default()
            },
            mounts: Vec::new(),
            phases: Phases::new(),
            t0,
            started_at: unix_ms(),
            network_attached: false,
            network_facts: NetworkFacts::None,
            start_failure: None,
        };
        // Before the boundary exists: its orphaned pid 1 must come to us, not the host's.
        if !crate::sandbox::reap::become_subreaper() {
            sb.evidence.warn(Diagnostic::new(
                ErrorCode::RunLaunch,
                "launch.reaper",
                "PR_SET_CHILD_SUBREAPER was refused",
                "the sandbox's pid 1 may be left to the host's pid 1 to reap",
            ));
        }
        sb.evidence.emit(
            events::RUN_PREPARE,
            json!({"runId": sb.run_id, "runDir": sb.run_dir, "backend": sb.bundle.backend.name()}),
        );
        if let Err(st) = sb.start(&cgroup_layout) {
            sb.start_failure = Some(st);
        }
        sb
    }

    /// Why the sandbox could not start (then it runs nothing and only awaits destroy).
    pub fn start_failure(&self) -> Option<&RunStatus> {
        self.start_failure.as_ref()
    }

    /// The run id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// A handle that stops the sandbox from another thread.
    pub fn canceller(&self) -> Canceller {
        Canceller(self.ending.clone())
    }

    /// The switch that ends the sandbox.
    pub fn ending(&self) -> &Arc<Ending> {
        &self.ending
    }

    /// The compiled policy.
    pub fn bundle(&self) -> &CompileBundle {
        &self.bundle
    }

    /// The shared evidence (for the run's own events).
    pub fn evidence(&self) -> Arc<dyn Emit> {
        self.evidence.clone()
    }

    /// The facts of what confines the sandbox's execs, completed by the first exec that
    /// started (`None` until then).
    pub fn workload_facts(&self) -> Option<&WorkloadFacts> {
        self.enforcement.workload.as_ref()
    }

    /// Records what confined an exec (the report's enforcement block), once.
    pub fn record_confinement(&mut self, started: &sr_agent_proto::message::Started) -> bool {
        let Some(c) = started.confinement.as_ref() else {
            return false;
        };
        if self.enforcement.workload.is_none() {
            let facts = WorkloadFacts::from_agent(&self.mounts, c);
            self.evidence.emit(
                events::SANDBOX_ENFORCED,
                enforced_payload(&facts, &self.enforcement),
            );
            self.enforcement.workload = Some(facts);
        }
        true
    }

    fn start(&mut self, layout: &Layout) -> Result<(), RunStatus> {
        let fs = cgroup::HostFs;
        let timeout = Duration::from_millis(self.bundle.process.timeout_ms.max(1));
        let deadline = self.t0 + timeout;
        self.ending.arm(self.backend.killer());
        // What the network needs nothing of the boundary for (the allowlist's /30 and its
        // nftables table; for a process sandbox also its network namespace and the link into
        // it) starts first, on threads of its own, and runs while the cgroups are made and the
        // boundary starts; attach waits for it. release() runs on every path from here,
        // attached or not.
        let t = Instant::now();
        let network_namespace = self
            .hook
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .prepare(&self.run_dir, self.backend.network_namespace_source())
            .map_err(|d| RunStatus::LaunchFailed { diagnostic: d })?;
        self.phases
            .insert("network_prepare".into(), ms(t.elapsed()));

        // The cgroups, before the boundary: it must be inside them before it forks anything.
        let t = Instant::now();
        let cg = RunCgroup::create(&fs, layout, &self.bundle.cgroup_plan, &self.run_id).map_err(
            |e| RunStatus::LaunchFailed {
                diagnostic: Diagnostic::new(
                    ErrorCode::RunLaunch,
                    "launch.cgroup",
                    format!("creating the run's cgroup: {e}"),
                    "check that cgroupfs is writable by root; `safe-run gc` removes leftovers",
                ),
            },
        )?;
        self.enforcement.cgroup_layout = Some(cg.layout.clone());
        self.enforcement.cgroup_paths = cg.paths.clone();
        self.enforcement.cgroup_limits = cg.limits_written.clone();
        self.cgroup = Some(cg);
        self.phases.insert("cgroup".into(), ms(t.elapsed()));

        let boundary = self.backend.start(StartContext {
            run_id: &self.run_id,
            run_dir: &self.run_dir,
            bundle: &self.bundle,
            cgroup: self.cgroup.as_ref(),
            deadline,
            enforcement: &mut self.enforcement,
            phases: &mut self.phases,
            network_namespace,
        })?;
        self.stopped_early()?;

        // The network namespace exists now: connect it (before anything runs in it).
        let t = Instant::now();
        self.network_attached = true; // release() must run even if attach fails midway
        let attached: AttachedNetwork = self
            .hook
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .attach(&boundary, &self.run_dir)
            .map_err(|d| RunStatus::LaunchFailed { diagnostic: d })?;
        if attached.facts != NetworkFacts::None {
            self.evidence
                .emit(events::NETWORK_APPLIED, to_payload(&attached.facts));
        }
        self.network_facts = attached.facts.clone();
        self.phases.insert("attach".into(), ms(t.elapsed()));
        for (step, took) in &attached.steps {
            self.phases.insert(format!("attach.{step}"), ms(*took));
        }
        // A sandbox whose evidence cannot be recorded never runs anything.
        if let Some(d) = self.evidence.take_failure() {
            return Err(RunStatus::LaunchFailed { diagnostic: d });
        }

        let t = Instant::now();
        let stream = self
            .backend
            .connect(&attached, deadline, &mut self.enforcement)?;
        let ready = self.hello(stream, deadline)?;
        self.mounts = ready.mounts;
        self.phases.insert("go_to_ready".into(), ms(t.elapsed()));
        self.start_monitor(deadline);
        Ok(())
    }

    fn stopped_early(&self) -> Result<(), RunStatus> {
        match self.ending.cause() {
            Some(st) => Err(st),
            None => Ok(()),
        }
    }

    fn hello(&mut self, stream: UnixStream, deadline: Instant) -> Result<Ready, RunStatus> {
        let broken = |why: String| RunStatus::LaunchFailed {
            diagnostic: Diagnostic::new(
                ErrorCode::RunLaunch,
                "launch.agent",
                why,
                "see docs/agent-protocol.md",
            ),
        };
        let (conn, control, reader) =
            AgentConn::start(stream).map_err(|e| broken(format!("starting the reader: {e}")))?;
        self.conn = Some(conn.clone());
        self.reader = Some(reader);
        conn.send(&Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            role: Role::Host,
            name: "safe-run".into(),
            software_version: env!("CARGO_PKG_VERSION").into(),
            features: Vec::new(),
        }))
        .map_err(|e| broken(format!("saying hello: {e}")))?;
        let setup = (Instant::now() + crate::sandbox::launch::SETUP_TIMEOUT).min(deadline);
        let mut acked = false;
        loop {
            let left = setup.saturating_duration_since(Instant::now());
            match control.recv_timeout(left) {
                Ok(Message::HelloAck(_)) => acked = true,
                Ok(Message::Ready(r)) if acked => {
                    self._control = Some(control);
                    return Ok(r);
                }
                Ok(Message::VersionMismatch(m)) => return Err(broken(m.message)),
                Ok(Message::Error(e)) => return Err(broken(e.message)),
                Ok(other) => {
                    return Err(broken(format!(
                        "the agent said {} before it was ready",
                        other.type_name()
                    )));
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.stopped_early()?;
                    return Err(if Instant::now() >= deadline {
                        RunStatus::Timeout {
                            limit_ms: self.bundle.process.timeout_ms,
                        }
                    } else {
                        broken("the agent did not say ready in time".into())
                    });
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.stopped_early()?;
                    return Err(broken(
                        "the agent closed the connection before it was ready".into(),
                    ));
                }
            }
        }
    }

    fn start_monitor(&mut self, deadline: Instant) {
        let (tx, rx) = mpsc::channel();
        let monitor = Monitor {
            stop: rx,
            deadline,
            interval: Duration::from_millis(self.bundle.evidence_plan.sample_interval_ms),
            timeout_ms: self.bundle.process.timeout_ms,
            cgroup: self.cgroup.clone(),
            hook: self.hook.clone(),
            evidence: self.evidence.clone(),
            ending: self.ending.clone(),
        };
        if let Ok(h) = std::thread::Builder::new()
            .name("sr-monitor".into())
            .spawn(move || monitor.run())
        {
            self.monitor = Some((tx, h));
        }
    }

    /// Starts an exec. Its events come through the handle.
    pub fn exec(&self, req: &ExecRequest) -> Result<ExecHandle, SandboxError> {
        let gone = |why: &str| SandboxError::new(SandboxErrorKind::Gone, "exec.start", why);
        if self.start_failure.is_some() {
            return Err(gone("the sandbox did not start"));
        }
        if self.ending.cause().is_some() {
            return Err(gone("the sandbox is ending"));
        }
        let Some(conn) = self.conn.clone() else {
            return Err(gone("the sandbox has no agent connection"));
        };
        if req.argv.first().is_none_or(|c| !c.starts_with('/')) {
            return Err(SandboxError::new(
                SandboxErrorKind::Invalid,
                "exec.argv",
                "argv[0] must be an absolute path inside the sandbox (e.g. /usr/bin/python3)",
            ));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        ExecHandle::start(
            id,
            req,
            conn,
            self.evidence.clone(),
            self.bundle.process.output.max_bytes,
        )
    }

    /// A microVM's writable mounts, back to the host while the guest agent still answers:
    /// each target's tar stream (spooled unnamed in the run directory) mirrored into its
    /// source (crate::microvm::mount_sync). A guest that is gone (killed at its timeout)
    /// brings nothing back; each failure is a cleanup error naming the mount.
    fn sync_mounts(&mut self, cleanup: &mut CleanupReport) {
        let Some(plan) = self.bundle.backend.qemu() else {
            return;
        };
        let writable: Vec<_> = plan
            .mounts
            .iter()
            .filter(|m| !m.read_only)
            .cloned()
            .collect();
        if writable.is_empty() || self.start_failure.is_some() || self.conn.is_none() {
            return;
        }
        let Some((uid, gid)) = self
            .enforcement
            .microvm
            .as_ref()
            .map(|f| (f.confinement.uid, f.confinement.gid))
        else {
            return;
        };
        for m in writable {
            let failed = |why: String| {
                Diagnostic::new(
                    ErrorCode::RunLaunch,
                    "cleanup.mounts",
                    format!("the writable mount {} -> {}: {why}", m.target, m.source),
                    "the host directory keeps what it had before the run, or part of the guest's changes; see docs/microvm.md, Mounts",
                )
            };
            let spool = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(nix::fcntl::OFlag::O_TMPFILE.bits())
                .mode(0o600)
                .open(&self.run_dir);
            let mut spool = match spool {
                Ok(f) => f,
                Err(e) => {
                    cleanup
                        .errors
                        .push(failed(format!("a spool in the run directory: {e}")));
                    continue;
                }
            };
            if let Err(e) = self.get_tar(&m.target, &mut spool) {
                cleanup.errors.push(failed(format!(
                    "reading it from the guest: {}",
                    e.to_diagnostic().message
                )));
                continue;
            }
            match crate::microvm::mount_sync::sync_back(&m.source, &mut spool, uid, gid) {
                Ok(s) => cleanup
                    .removed
                    .extend(s.removed.iter().map(|r| format!("mount:{}/{r}", m.source))),
                Err(e) => cleanup.errors.push(failed(e)),
            }
        }
    }

    /// Kills everything, cleans up, and returns the outcome (with `status` unless something
    /// else ended the sandbox first) and the sink (`None` only if it was taken before, which
    /// nothing but this does). `primary`: the one exec whose end is the
    /// run's (`safe-run run`), with its output facts.
    pub fn destroy(
        mut self,
        status: RunStatus,
        primary: Option<Primary>,
    ) -> (RunOutcome, Option<S>) {
        let t_clean = Instant::now();
        let mut cleanup = CleanupReport::default();
        let mut pids_seen = 0;
        if let Some((tx, h)) = self.monitor.take() {
            let _ = tx.send(());
            pids_seen = h.join().unwrap_or(0);
        }
        self.sync_mounts(&mut cleanup);
        let t_stop = Instant::now();
        self.backend.stop(&mut cleanup);
        self.phases
            .insert("cleanup.processes".into(), ms(t_stop.elapsed()));
        if let Some(conn) = self.conn.take() {
            conn.close();
        }
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
        let mut status = match (&self.start_failure, self.ending.cause()) {
            (Some(st), _) => st.clone(),
            (None, Some(cause)) => cause,
            (None, None) => status,
        };
        let fs = cgroup::HostFs;
        let mut resources: cgroup::Totals = Default::default();
        if let Some(cg) = &self.cgroup {
            resources = cg.totals(&fs, pids_seen);
            // A guest's OOM kills are its kernel's, not the host cgroup's (which bounds the VMM).
            resources.oom_kills += self.backend.guest_oom_kills();
            if resources.oom_kills > 0
                && let RunStatus::Exited { .. } | RunStatus::Signaled { .. } = status
            {
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
                self.evidence.emit(
                    events::RUN_OOM,
                    json!({"oomKills": resources.oom_kills, "memoryPeakBytes": resources.memory_peak_bytes}),
                );
            }
        }
        let mut network_audit = None;
        if self.network_attached {
            let sampled = self
                .hook
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .sample(true);
            match sampled {
                Ok(s) => {
                    for (ty, payload) in s.events {
                        self.evidence.emit(ty, payload);
                    }
                    network_audit = s.audit;
                    match (s.ruleset_digest, &mut self.network_facts) {
                        (Some(Ok(digest)), NetworkFacts::Allowlist(facts)) => {
                            facts.nft_ruleset_digest = Some(digest);
                        }
                        (Some(Err(d)), _) => cleanup.errors.push(d),
                        _ => {}
                    }
                }
                Err(d) => cleanup.errors.push(d),
            }
        }
        let (stdout, stderr, command) = match primary {
            Some(p) => {
                if p.started || !matches!(status, RunStatus::LaunchFailed { .. }) {
                    let limits = crate::outcome::limits_hit(
                        &status,
                        &resources,
                        [
                            ("stdout", p.stdout.truncated),
                            ("stderr", p.stderr.truncated),
                        ],
                    );
                    self.evidence.emit(
                        events::PROCESS_EXITED,
                        json!({"status": status, "durationMs": self.phases.get("workload"), "limitsHit": limits, "pidsLimitHits": resources.pids_limit_hits}),
                    );
                }
                (p.stdout, p.stderr, p.command)
            }
            None => (StreamFacts::default(), StreamFacts::default(), Vec::new()),
        };
        if let Some(cg) = &self.cgroup {
            let t_cgroup = Instant::now();
            let (removed, errors) = cg.remove(&fs);
            self.phases
                .insert("cleanup.cgroup".into(), ms(t_cgroup.elapsed()));
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
        let (released, summary) = {
            let mut hook = self
                .hook
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (hook.release(), hook.release_summary())
        };
        match released {
            Ok(()) => {
                if self.network_attached && self.network_facts != NetworkFacts::None {
                    // A deferred release finishes after the report (docs/network.md).
                    cleanup.removed.push(if summary.get("deferred").is_some() {
                        "network (release deferred)".into()
                    } else {
                        "network".into()
                    });
                    let mut payload = json!({"runId": self.run_id});
                    if let (Some(p), Some(s)) = (payload.as_object_mut(), summary.as_object()) {
                        p.extend(s.clone());
                    }
                    self.evidence.emit(events::NETWORK_RELEASED, payload);
                }
            }
            Err(d) => cleanup.errors.push(d),
        }
        self.backend.remove_files(&self.run_dir, &mut cleanup);
        self.phases.insert("cleanup".into(), ms(t_clean.elapsed()));
        self.phases.insert("total".into(), ms(self.t0.elapsed()));
        self.evidence.emit(
            events::CLEANUP_DONE,
            json!({"removed": cleanup.removed, "errors": cleanup.errors}),
        );
        let Sandbox {
            run_id,
            run_dir,
            bundle,
            evidence,
            enforcement,
            phases,
            started_at,
            network_facts,
            ..
        } = self;
        let (sink, warnings) = evidence.take();
        let outcome = RunOutcome {
            run_id,
            run_dir,
            backend: bundle.backend.name().to_owned(),
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
            network: network_facts,
            network_audit,
            cleanup,
            warnings,
        };
        (outcome, sink)
    }

    /// The agent connection, while the sandbox runs.
    pub(crate) fn agent(&self) -> Option<std::sync::Arc<AgentConn>> {
        if self.start_failure.is_some() || self.ending.cause().is_some() {
            return None;
        }
        self.conn.clone()
    }

    /// A fresh id for an exec or a file request (one id space per sandbox).
    pub(crate) fn next_request_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds a phase timing.
    pub fn record_phase(&mut self, name: &str, took: Duration) {
        self.phases.insert(name.to_owned(), ms(took));
    }
}

/// The exec whose end is the run's.
pub struct Primary {
    /// Its argv.
    pub command: Vec<String>,
    /// Whether it started.
    pub started: bool,
    /// Its stdout as kept.
    pub stdout: StreamFacts,
    /// Its stderr as kept.
    pub stderr: StreamFacts,
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
        "microvm": e.microvm,
    })
}

/// The sandbox timeout and the periodic samples, on their own thread.
struct Monitor<S: EventSink + 'static> {
    stop: Receiver<()>,
    deadline: Instant,
    interval: Duration,
    timeout_ms: u64,
    cgroup: Option<RunCgroup>,
    hook: SharedHook,
    evidence: Arc<Evidence<S>>,
    ending: Arc<Ending>,
}

impl<S: EventSink + 'static> Monitor<S> {
    /// Returns the most pids seen in a sample.
    fn run(self) -> u64 {
        let fs = cgroup::HostFs;
        let mut pids_seen = 0;
        let mut next_sample = (!self.interval.is_zero()).then(|| Instant::now() + self.interval);
        loop {
            if let Some(diagnostic) = self.evidence.take_failure() {
                self.ending.end(RunStatus::Stopped { diagnostic });
            }
            let wake = next_sample.map_or(self.deadline, |s| s.min(self.deadline));
            match self
                .stop
                .recv_timeout(wake.saturating_duration_since(Instant::now()))
            {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return pids_seen,
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now = Instant::now();
            if now >= self.deadline {
                if self.ending.cause().is_none() {
                    self.evidence
                        .emit(events::RUN_TIMEOUT, json!({"limitMs": self.timeout_ms}));
                }
                // SIGKILL the boundary; cleanup also empties the cgroup.
                self.ending.end(RunStatus::Timeout {
                    limit_ms: self.timeout_ms,
                });
                // Nothing more to sample or enforce; wait for destroy.
                let _ = self.stop.recv();
                return pids_seen;
            }
            if let Some(cg) = &self.cgroup {
                let s = cg.sample(&fs);
                pids_seen = pids_seen.max(s.pids);
                self.evidence.emit(events::RESOURCE_SAMPLE, json!(s));
            }
            let sampled = self
                .hook
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .sample(false);
            match sampled {
                Ok(s) => {
                    for (ty, payload) in s.events {
                        self.evidence.emit(ty, payload);
                    }
                }
                Err(d) => self.evidence.warn(d),
            }
            next_sample = Some(now + self.interval);
        }
    }
}
