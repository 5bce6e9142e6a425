//! The daemon's live sandboxes and their life: made from a policy text through the same
//! library path as `safe-run run` (validate, compile, [`Recording`], [`Sandbox`]), ended by a
//! request, by their own timeout (the sandbox's monitor ends it; [`Daemon::reap`] then writes
//! its report, with no client needed), or by the daemon's shutdown, and always ended with their
//! evidence finished into a report. These calls block (processes, pipes): the HTTP layer runs
//! them on blocking threads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sr_common::{Diagnostic, ErrorCode};
use sr_evidence::SigningKey;
use sr_evidence::report::EndReason;
use sr_policy::{OperatorConfig, SourceFormat};
use sr_runner::cgroup::Layout;
use sr_runner::life::{ExecHandle, ExecRequest, Sandbox, SandboxError, SandboxSpec};
use sr_runner::recording::{PolicySource, Recording, RunSink, Started};
use sr_runner::{RunDir, RunStatus};

use crate::lease::{self, Busy, Expiry, Lease, PastPolicyEnd, SharedLease};
use crate::limits::{ExecSlot, Limited, Limiter};
use crate::pool::{PoolView, Pools};
use crate::streams::ExecLog;
use crate::tokens::{self, TokenHash};

/// Where a sandbox is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum State {
    /// Ready for execs.
    Running,
    /// Destroyed; its report is written (or its evidence errors are known).
    Ended,
}

enum Life {
    Running {
        sandbox: Box<Sandbox<RunSink>>,
        recording: Box<Recording>,
    },
    Ended {
        status: String,
        report_path: Option<PathBuf>,
        errors: Vec<Diagnostic>,
        /// When it ended (for [`crate::retention`]).
        at: Instant,
    },
    /// Being destroyed right now (by a request, the reaper or the shutdown).
    Ending,
}

/// One sandbox of the daemon.
pub struct Live {
    /// Its id (the run id).
    pub id: String,
    /// Its run directory.
    pub run_dir: PathBuf,
    /// When it was made (Unix ms).
    pub created_at_ms: u64,
    token: TokenHash,
    life: Mutex<Life>,
    /// Signalled when an end finishes: a second end waits for the first one's result.
    ended: std::sync::Condvar,
    streamed: Mutex<BTreeMap<u64, Arc<ExecLog>>>,
    template: Option<String>,
    /// Made for the pool; set once it is handed out.
    pooled: std::sync::atomic::AtomicBool,
    handed_out_from_pool: std::sync::atomic::AtomicBool,
    lease: SharedLease,
    /// The caller's labels (a create's `metadata`).
    metadata: Mutex<BTreeMap<String, String>>,
    /// Variables every exec gets, under the exec's own (a create's `env`).
    env: Mutex<BTreeMap<String, String>>,
    /// The operator token that made it (none: a stdio session's owner, or the pool).
    owner: Mutex<Option<TokenHash>>,
    limiter: Arc<Limiter>,
}

/// What a create may set beside the policy.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// End it this long from now (within the policy's `limits.timeout`).
    pub timeout: Option<Duration>,
    /// End it this long from now unless an exec has started in it by then.
    pub unused_timeout: Option<Duration>,
    /// Variables every exec gets, under the exec's own.
    pub env: BTreeMap<String, String>,
    /// Labels to find it by.
    pub metadata: BTreeMap<String, String>,
}

/// Streamed execs a sandbox keeps for their readers.
const KEPT_STREAMS: usize = 256;

/// At most this many metadata labels, of these lengths.
const MAX_LABELS: usize = 32;
const MAX_LABEL_KEY: usize = 64;
const MAX_LABEL_VALUE: usize = 512;

/// Why options were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionsError {
    /// The timeout would pass the policy's end.
    PastPolicyEnd(PastPolicyEnd),
    /// A label is malformed (the message says which and how).
    Metadata(String),
}

impl std::fmt::Display for OptionsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OptionsError::PastPolicyEnd(p) => write!(
                f,
                "the policy's limits.timeout ends the sandbox sooner: at most {} ms can be given now",
                p.max.as_millis()
            ),
            OptionsError::Metadata(m) => f.write_str(m),
        }
    }
}

/// Checks metadata labels: at most 32, keys of 1 to 64 of `A-Za-z0-9._-`, values up to 512
/// bytes.
pub fn check_metadata(labels: &BTreeMap<String, String>) -> Result<(), OptionsError> {
    if labels.len() > MAX_LABELS {
        return Err(OptionsError::Metadata(format!(
            "{} metadata labels; at most {MAX_LABELS}",
            labels.len()
        )));
    }
    for (k, v) in labels {
        let key_ok = (1..=MAX_LABEL_KEY).contains(&k.len())
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !key_ok {
            return Err(OptionsError::Metadata(format!(
                "metadata key {k:?}: 1 to {MAX_LABEL_KEY} of A-Z a-z 0-9 . _ -"
            )));
        }
        if v.len() > MAX_LABEL_VALUE {
            return Err(OptionsError::Metadata(format!(
                "metadata {k:?}: a value of {} bytes; at most {MAX_LABEL_VALUE}",
                v.len()
            )));
        }
    }
    Ok(())
}

/// Why an exec did not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecError {
    /// The sandbox refused or could not start it.
    Sandbox(SandboxError),
    /// A limit is full.
    Limited(Limited),
}

impl From<SandboxError> for ExecError {
    fn from(e: SandboxError) -> Self {
        ExecError::Sandbox(e)
    }
}

impl From<Limited> for ExecError {
    fn from(e: Limited) -> Self {
        ExecError::Limited(e)
    }
}

impl std::fmt::Display for ExecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExecError::Sandbox(e) => e.fmt(f),
            ExecError::Limited(l) => l.fmt(f),
        }
    }
}

/// What an exec holds while it runs: the sandbox is not idle, and the exec counts against the
/// exec limits.
pub struct Running {
    _busy: Busy,
    _slot: ExecSlot,
}

/// What the API says of a sandbox.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxView {
    /// Its id.
    pub id: String,
    /// Running or ended.
    pub state: State,
    /// When it was made (Unix ms).
    pub created_at_ms: u64,
    /// How it ended (`exited`, `timeout`, `stopped`, ...), once it has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
    /// Its report, once written.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub report_path: Option<PathBuf>,
    /// The template it was made from, when a create named one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Whether it came ready from the warm pool (made before it was asked for).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub from_pool: bool,
    /// When it will be ended (Unix ms): its deadline, or the policy's end; while running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ends_at_ms: Option<u64>,
    /// The caller's labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

impl Live {
    fn lock(&self) -> MutexGuard<'_, Life> {
        self.life
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `token` is this sandbox's own.
    pub fn is_own_token(&self, token: &TokenHash) -> bool {
        self.token.matches(token)
    }

    /// Its state for the API.
    pub fn view(&self) -> SandboxView {
        let (state, ended, report_path) = match &*self.lock() {
            Life::Running { .. } | Life::Ending => (State::Running, None, None),
            Life::Ended {
                status,
                report_path,
                ..
            } => (State::Ended, Some(status.clone()), report_path.clone()),
        };
        let ends_at_ms = (state == State::Running).then(|| {
            let left = lease::with(&self.lease, |l| l.remaining(Instant::now()));
            unix_ms().saturating_add(u64::try_from(left.as_millis()).unwrap_or(u64::MAX))
        });
        SandboxView {
            id: self.id.clone(),
            state,
            created_at_ms: self.created_at_ms,
            ended,
            report_path,
            template: self.template.clone(),
            from_pool: self.handed_out_from_pool.load(Ordering::Relaxed),
            ends_at_ms,
            metadata: lock(&self.metadata).clone(),
        }
    }

    /// Whether it is running (being destroyed counts: its place is still taken). Cheaper than
    /// [`Live::view`], which the daemon's counts over every sandbox it keeps need not build.
    pub fn is_running(&self) -> bool {
        !matches!(&*self.lock(), Life::Ended { .. })
    }

    /// Its labels.
    pub fn metadata(&self) -> BTreeMap<String, String> {
        lock(&self.metadata).clone()
    }

    /// The operator token that made it.
    pub fn owner(&self) -> Option<TokenHash> {
        *lock(&self.owner)
    }

    /// A request reached it (it is not idle).
    pub fn touch(&self) {
        lease::with(&self.lease, |l| l.touch(Instant::now()));
    }

    /// Ends it `timeout` from now (sooner or later than before, within the policy's end).
    pub fn set_timeout(&self, timeout: Duration) -> Result<(), OptionsError> {
        lease::with(&self.lease, |l| l.set_timeout(Instant::now(), timeout))
            .map_err(OptionsError::PastPolicyEnd)
    }

    /// Applies a create's options (checked first: nothing is applied when one is refused).
    pub fn apply(&self, opts: &CreateOptions) -> Result<(), OptionsError> {
        check_metadata(&opts.metadata)?;
        if let Some(t) = opts.timeout {
            self.set_timeout(t)?;
        }
        if let Some(t) = opts.unused_timeout {
            lease::with(&self.lease, |l| l.set_unused_timeout(Instant::now(), t));
        }
        *lock(&self.metadata) = opts.metadata.clone();
        *lock(&self.env) = opts.env.clone();
        Ok(())
    }

    /// Starts an exec for `who` (the handle outlives the lock: execs run side by side), with
    /// what it holds while it runs.
    pub fn exec_as(
        &self,
        req: &ExecRequest,
        who: Option<&TokenHash>,
    ) -> Result<(ExecHandle, Running), ExecError> {
        let slot = self.limiter.exec_slot(who)?;
        let busy = Busy::start(&self.lease);
        let defaults = lock(&self.env).clone();
        let handle = if defaults.is_empty() {
            self.start_exec(req)?
        } else {
            let mut req = req.clone();
            for (k, v) in defaults {
                req.env.entry(k).or_insert(v);
            }
            self.start_exec(&req)?
        };
        Ok((
            handle,
            Running {
                _busy: busy,
                _slot: slot,
            },
        ))
    }

    fn start_exec(&self, req: &ExecRequest) -> Result<ExecHandle, SandboxError> {
        match &*self.lock() {
            Life::Running { sandbox, .. } => sandbox.exec(req),
            _ => Err(SandboxError::new(
                sr_runner::life::SandboxErrorKind::Gone,
                "exec.start",
                "the sandbox has ended",
            )),
        }
    }

    /// Runs `f` on the running sandbox (a file operation), or says it has ended.
    pub fn with_sandbox<T>(
        &self,
        f: impl FnOnce(&Sandbox<RunSink>) -> Result<T, SandboxError>,
    ) -> Result<T, SandboxError> {
        match &*self.lock() {
            Life::Running { sandbox, .. } => f(sandbox),
            _ => Err(SandboxError::new(
                sr_runner::life::SandboxErrorKind::Gone,
                "files",
                "the sandbox has ended",
            )),
        }
    }

    /// Starts an exec whose events are read as a stream ([`ExecLog`]).
    pub fn exec_streamed(&self, req: &ExecRequest) -> Result<Arc<ExecLog>, ExecError> {
        self.exec_streamed_as(req, None)
    }

    /// [`Live::exec_streamed`] for `who`.
    pub fn exec_streamed_as(
        &self,
        req: &ExecRequest,
        who: Option<&TokenHash>,
    ) -> Result<Arc<ExecLog>, ExecError> {
        let (handle, running) = self.exec_as(req, who)?;
        let log = ExecLog::start(handle, running);
        let mut streamed = lock(&self.streamed);
        // Bounded: past KEPT_STREAMS, the oldest that have ended go (their evidence is in the
        // chain; only their replay is lost). Running ones always stay reachable.
        if streamed.len() >= KEPT_STREAMS {
            let ended: Vec<u64> = streamed
                .iter()
                .filter(|(_, l)| l.has_ended())
                .map(|(id, _)| *id)
                .take(streamed.len() + 1 - KEPT_STREAMS)
                .collect();
            for id in ended {
                streamed.remove(&id);
            }
        }
        streamed.insert(log.id, log.clone());
        Ok(log)
    }

    /// The streamed exec `id`.
    pub fn streamed(&self, id: u64) -> Option<Arc<ExecLog>> {
        self.streamed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    /// Whether the reaper should end it now: it ended by itself (its policy timeout, an
    /// evidence failure), or its lease expired.
    fn due(&self, idle_timeout: Option<Duration>) -> Option<EndReason> {
        match &*self.lock() {
            Life::Running { sandbox, .. } if sandbox.ending().cause().is_some() => {
                // The reason is the sandbox's own (its report says timeout, stopped, ...).
                Some(EndReason::Deadline)
            }
            Life::Running { .. } => lease::with(&self.lease, |l| {
                l.expired(Instant::now(), idle_timeout)
            })
            .map(|e| match e {
                Expiry::Deadline => EndReason::Deadline,
                Expiry::Idle => EndReason::Idle,
            }),
            _ => None,
        }
    }

    /// Destroys it at a client's request and finishes its evidence; returns its view. A second
    /// call finds it ended.
    pub fn destroy(&self, signer: Option<&SigningKey>) -> SandboxView {
        self.end(EndReason::Request, signer)
    }

    /// Destroys it for `reason` and finishes its evidence; returns its view. An end that finds
    /// another one under way (a request, the reaper, a client's disconnect at once) waits for
    /// it, so that every caller sees the sandbox ended, with its report.
    pub fn end(&self, reason: EndReason, signer: Option<&SigningKey>) -> SandboxView {
        let mut life = self.lock();
        while matches!(*life, Life::Ending) {
            life = self
                .ended
                .wait(life)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        let taken = std::mem::replace(&mut *life, Life::Ending);
        drop(life);
        let ended = finish_end(|| match taken {
            Life::Running { sandbox, recording } => {
                let (outcome, sink) = sandbox.destroy(RunStatus::Destroyed { reason }, None);
                let finished = recording.finish(&outcome, sink, signer);
                Life::Ended {
                    status: outcome.status_word().into(),
                    report_path: finished.report_path,
                    errors: finished.errors,
                    at: Instant::now(),
                }
            }
            other => other,
        });
        *self.lock() = ended;
        self.ended.notify_all();
        self.view()
    }

    /// Records in its chain that it was handed out from the pool of `template` (the report's
    /// `pool`), before anything runs in it.
    fn record_claim(&self, template: &str) {
        if let Life::Running { sandbox, .. } = &*self.lock() {
            let claim = sr_evidence::activity::PoolClaim {
                template: template.to_owned(),
                waited_ms: unix_ms().saturating_sub(self.created_at_ms),
            };
            sandbox.evidence().emit(
                sr_common::events::SANDBOX_CLAIMED,
                serde_json::to_value(claim).unwrap_or_default(),
            );
        }
    }

    /// The report's path once it is written.
    pub fn report_path(&self) -> Option<PathBuf> {
        match &*self.lock() {
            Life::Ended { report_path, .. } => report_path.clone(),
            _ => None,
        }
    }

    /// When it ended, once it has.
    fn ended_at(&self) -> Option<Instant> {
        match &*self.lock() {
            Life::Ended { at, .. } => Some(*at),
            _ => None,
        }
    }

    /// The evidence errors of its end.
    pub fn evidence_errors(&self) -> Vec<Diagnostic> {
        match &*self.lock() {
            Life::Ended { errors, .. } => errors.clone(),
            _ => Vec::new(),
        }
    }
}

/// Runs an end's work. A panic in it (a bug) still ends the sandbox, `lost`, with the panic as
/// its evidence error: [`Live::end`] then wakes the ends waiting for this one instead of
/// leaving them waiting for good, and the daemon keeps serving its other sandboxes.
fn finish_end(work: impl FnOnce() -> Life) -> Life {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_owned());
        Life::Ended {
            status: "lost".into(),
            report_path: None,
            errors: vec![Diagnostic::new(
                ErrorCode::EvidenceReport,
                "sandbox.end",
                format!("ending the sandbox failed: {what}"),
                "see the daemon's log; `safe-run gc` removes what the sandbox left behind",
            )],
            at: Instant::now(),
        }
    })
}

/// A directory's entries as the API and the stdio mode answer a listing.
pub fn listing(entries: &[sr_agent_proto::message::DirEntry]) -> Vec<serde_json::Value> {
    entries
        .iter()
        .map(|e| {
            serde_json::json!({
                "name": e.name,
                "kind": format!("{:?}", e.info.kind).to_lowercase(),
                "size": e.info.size,
                "mode": e.info.mode,
            })
        })
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Why a sandbox could not be made.
#[derive(Debug)]
pub enum CreateError {
    /// The policy is invalid or does not compile (the diagnostics say where).
    Policy(Vec<Diagnostic>),
    /// Too many sandboxes are alive (over all tokens, or of this token).
    Full(Limited),
    /// The sandbox did not start (its run directory keeps the evidence).
    Start(Vec<Diagnostic>),
}

/// What the daemon runs on.
pub struct Host {
    /// The operator config.
    pub config: OperatorConfig,
    /// The cgroup layout preflight found.
    pub layout: Layout,
    /// The binary that is the sandbox's init (`safe-run` itself).
    pub init_exe: PathBuf,
    /// The signing key (reports of policies that sign).
    pub signer: Option<SigningKey>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Sandboxes made.
    pub created: AtomicU64,
    /// Sandboxes whose start failed.
    pub failed_starts: AtomicU64,
    /// Execs started.
    pub execs: AtomicU64,
}

/// The daemon's sandboxes.
pub struct Daemon {
    /// What it runs on.
    pub host: Host,
    /// For `/metrics`.
    pub counters: Counters,
    sandboxes: Mutex<BTreeMap<String, Arc<Live>>>,
    pools: Pools,
    /// Execs and request rates.
    pub limiter: Arc<Limiter>,
    /// Sandboxes being made now, by owner (`None`: no token): counted with those alive, so
    /// two creates at once cannot both take the last place.
    starting: Mutex<Vec<Option<TokenHash>>>,
}

/// A place taken among the sandboxes alive, given back when dropped (the sandbox is then in
/// the map, or was never made).
struct Place<'a> {
    daemon: &'a Daemon,
    owner: Option<TokenHash>,
    held: bool,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        let mut s = lock(&self.daemon.starting);
        if let Some(i) = s.iter().position(|o| *o == self.owner) {
            s.swap_remove(i);
        }
    }
}

impl Daemon {
    /// A daemon with no sandboxes.
    pub fn new(host: Host) -> Daemon {
        Daemon {
            limiter: Arc::new(Limiter::new(&host.config.serve)),
            host,
            counters: Counters::default(),
            sandboxes: Mutex::new(BTreeMap::new()),
            pools: Pools::default(),
            starting: Mutex::new(Vec::new()),
        }
    }

    fn map(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Live>>> {
        self.sandboxes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The sandbox `id`.
    pub fn get(&self, id: &str) -> Option<Arc<Live>> {
        self.map().get(id).cloned()
    }

    /// Every sandbox, by id.
    pub fn list(&self) -> Vec<Arc<Live>> {
        self.map().values().cloned().collect()
    }

    /// Sandboxes running now.
    pub fn running(&self) -> usize {
        self.map().values().filter(|l| l.is_running()).count()
    }

    /// Makes a sandbox from `policy_text` (YAML, or JSON when it starts with `{`); returns it
    /// and its token (shown once).
    pub fn create(&self, policy_text: &str) -> Result<(Arc<Live>, String), CreateError> {
        self.create_for(policy_text, None)
    }

    /// [`Daemon::create`] for the operator token `owner` (counted against its limits).
    pub fn create_for(
        &self,
        policy_text: &str,
        owner: Option<TokenHash>,
    ) -> Result<(Arc<Live>, String), CreateError> {
        let place = self.take_place(owner)?;
        self.make(policy_text, None, place)
    }

    /// Takes a place among the sandboxes alive for `owner`, within `serve.maxSandboxes` and
    /// the token's `perToken.maxSandboxes`.
    fn take_place(&self, owner: Option<TokenHash>) -> Result<Place<'_>, CreateError> {
        self.admit(owner, true)
    }

    /// Counts `owner`'s sandboxes (and, with `new_place`, all of them) against the limits; a
    /// pool hit needs no new place, only the token's own count.
    fn admit(&self, owner: Option<TokenHash>, new_place: bool) -> Result<Place<'_>, CreateError> {
        let serve = &self.host.config.serve;
        let alive: Vec<Option<TokenHash>> = self
            .list()
            .iter()
            .filter(|l| l.is_running())
            .map(|l| l.owner())
            .collect();
        let mut starting = lock(&self.starting);
        let full = |limit, max| {
            CreateError::Full(Limited {
                limit,
                max,
                retry_after: Duration::from_secs(1),
            })
        };
        if new_place && alive.len() + starting.len() >= serve.max_sandboxes as usize {
            return Err(full("serve.maxSandboxes", serve.max_sandboxes));
        }
        if owner.is_some() {
            let mine = alive.iter().chain(starting.iter()).filter(|o| **o == owner);
            if mine.count() >= serve.per_token.max_sandboxes as usize {
                return Err(full(
                    "serve.perToken.maxSandboxes",
                    serve.per_token.max_sandboxes,
                ));
            }
        }
        if new_place {
            starting.push(owner);
        }
        Ok(Place {
            daemon: self,
            owner,
            held: new_place,
        })
    }

    fn make(
        &self,
        policy_text: &str,
        template: Option<&str>,
        place: Place<'_>,
    ) -> Result<(Arc<Live>, String), CreateError> {
        let config = &self.host.config;
        let json = policy_text.trim_start().starts_with('{');
        let format = if json {
            SourceFormat::Json
        } else {
            SourceFormat::Yaml
        };
        // Mount sources must be absolute: a policy sent over the API has no directory of its own.
        let policy = sr_policy::validate_str(policy_text, format, Path::new("/"), config)
            .map_err(|r| CreateError::Policy(r.diagnostics))?;
        let bundle =
            sr_compiler::compile(&policy, config).map_err(|d| CreateError::Policy(vec![d]))?;
        if bundle.backend.firecracker().is_some() {
            return Err(CreateError::Policy(vec![Diagnostic::new(
                ErrorCode::RunLaunch,
                "runtime.backend",
                format!(
                    "backend {} cannot serve sandboxes yet",
                    bundle.backend.name()
                ),
                "use backend: microvm (QEMU) or backend: sandbox",
            )]));
        }
        let policy_timeout = Duration::from_millis(bundle.process.timeout_ms);
        let dir = RunDir::create(Path::new(&config.run_dir))
            .map_err(|e| CreateError::Start(vec![e.to_diagnostic()]))?;
        let run_dir = dir.path.clone();
        let source = PolicySource::Text {
            name: if json { "policy.json" } else { "policy.yaml" },
            text: policy_text,
        };
        let Started {
            recording,
            hook,
            sink,
        } = Recording::start(dir, &policy, &bundle, source, config)
            .map_err(|d| CreateError::Start(vec![d]))?;
        let backend = sr_runner::life::backend::for_bundle(
            &bundle,
            sr_runner::life::backend::BackendInputs {
                init_exe: self.host.init_exe.clone(),
                allowed_mount_prefixes: config.allowed_mount_prefixes.clone(),
                vmm_identity: (config.workload_host_uid, config.workload_host_gid),
                snapshots: config.microvm.snapshot_dir(),
            },
        );
        let sandbox = Sandbox::create(
            &recording.dir,
            SandboxSpec {
                bundle,
                network: hook,
                sink,
                cgroup_layout: self.host.layout.clone(),
            },
            backend,
            Arc::default(),
        );
        let id = sandbox.run_id().to_owned();
        let failed = sandbox.start_failure().cloned();
        let token = tokens::generate();
        let live = Arc::new(Live {
            id: id.clone(),
            run_dir,
            created_at_ms: unix_ms(),
            token: TokenHash::of(&token),
            life: Mutex::new(Life::Running {
                sandbox: Box::new(sandbox),
                recording: Box::new(recording),
            }),
            ended: std::sync::Condvar::new(),
            streamed: Mutex::new(BTreeMap::new()),
            template: template.map(str::to_owned),
            pooled: std::sync::atomic::AtomicBool::new(false),
            handed_out_from_pool: std::sync::atomic::AtomicBool::new(false),
            lease: Arc::new(Mutex::new(Lease::new(Instant::now(), policy_timeout))),
            metadata: Mutex::new(BTreeMap::new()),
            env: Mutex::new(BTreeMap::new()),
            owner: Mutex::new(place.owner),
            limiter: self.limiter.clone(),
        });
        if let Some(status) = failed {
            self.counters.failed_starts.fetch_add(1, Ordering::Relaxed);
            // The start failed: its evidence is finished all the same.
            live.destroy(self.host.signer.as_ref());
            let ds = match status {
                RunStatus::LaunchFailed { diagnostic }
                | RunStatus::Stopped { diagnostic }
                | RunStatus::Lost { diagnostic } => vec![diagnostic],
                other => vec![Diagnostic::new(
                    ErrorCode::RunLaunch,
                    "launch",
                    format!("the sandbox ended while starting: {other:?}"),
                    "see the run directory's events.jsonl",
                )],
            };
            return Err(CreateError::Start(ds));
        }
        self.map().insert(id, live.clone());
        drop(place);
        self.counters.created.fetch_add(1, Ordering::Relaxed);
        Ok((live, token))
    }

    fn template_text(&self, name: &str) -> Result<String, CreateError> {
        let unknown = || {
            CreateError::Policy(vec![Diagnostic::new(
                ErrorCode::PolicyUnreadable,
                "template",
                format!("no template {name:?}"),
                "name one of serve.templates in the operator config",
            )])
        };
        let path = self
            .host
            .config
            .serve
            .templates
            .get(name)
            .ok_or_else(unknown)?;
        std::fs::read_to_string(path).map_err(|e| {
            CreateError::Policy(vec![Diagnostic::new(
                ErrorCode::PolicyUnreadable,
                "template",
                format!("template {name:?} ({path}): {e}"),
                "check serve.templates in the operator config",
            )])
        })
    }

    /// A sandbox of template `name`: a ready one from its warm pool when there is one (it is
    /// never handed out again), else one made now.
    pub fn create_from_template(&self, name: &str) -> Result<(Arc<Live>, String), CreateError> {
        self.create_from_template_for(name, None)
    }

    /// [`Daemon::create_from_template`] for the operator token `owner`.
    pub fn create_from_template_for(
        &self,
        name: &str,
        owner: Option<TokenHash>,
    ) -> Result<(Arc<Live>, String), CreateError> {
        if owner.is_some() {
            // The per-token count applies to a pool hit as well; the pooled sandbox already
            // holds its global place.
            self.admit(owner, false)?;
        }
        if let Some((live, token)) = self.pools.take(name) {
            live.handed_out_from_pool.store(true, Ordering::Relaxed);
            live.record_claim(name);
            *lock(&live.owner) = owner;
            lease::with(&live.lease, |l| {
                l.set_waiting_in_pool(false, Instant::now())
            });
            return Ok((live, token));
        }
        let place = self.take_place(owner)?;
        let text = self.template_text(name)?;
        self.make(&text, Some(name), place)
    }

    /// Sets the warm pool of template `name` to keep `min_ready` sandboxes ready.
    pub fn set_pool(&self, name: &str, min_ready: u32) -> Result<PoolView, CreateError> {
        self.template_text(name)?;
        self.pools.set(name, min_ready);
        Ok(self.pools.view(name))
    }

    /// Every pool.
    pub fn pools(&self) -> Vec<PoolView> {
        self.pools.views()
    }

    /// Makes sandboxes for the pools that are short, within `serve.maxSandboxes`; returns how
    /// many it made.
    pub fn replenish(&self) -> usize {
        let mut made = 0;
        for (name, short) in self.pools.shortfalls() {
            for _ in 0..short {
                let Ok(place) = self.take_place(None) else {
                    return made;
                };
                let Ok(text) = self.template_text(&name) else {
                    break;
                };
                match self.make(&text, Some(&name), place) {
                    Ok((live, token)) => {
                        live.pooled.store(true, Ordering::Relaxed);
                        lease::with(&live.lease, |l| l.set_waiting_in_pool(true, Instant::now()));
                        self.pools.put(&name, live, token);
                        made += 1;
                    }
                    Err(_) => break,
                }
            }
        }
        made
    }

    /// Ends the sandboxes that are due (they ended by themselves, their deadline passed, or
    /// they were idle for `serve.idleTimeout`) and writes their reports, with no client
    /// needed. Returns their ids.
    pub fn reap(&self) -> Vec<String> {
        let idle = self.host.config.serve.idle_timeout.map(|d| d.as_duration());
        let due: Vec<(Arc<Live>, EndReason)> = self
            .list()
            .into_iter()
            .filter_map(|l| l.due(idle).map(|r| (l, r)))
            .collect();
        for (l, reason) in &due {
            l.end(*reason, self.host.signer.as_ref());
        }
        self.forget_ended(Instant::now());
        due.iter().map(|(l, _)| l.id.clone()).collect()
    }

    /// Forgets the ended sandboxes [`crate::retention`] no longer keeps; returns how many.
    pub fn forget_ended(&self, now: Instant) -> usize {
        let ended: Vec<(String, Instant)> = self
            .list()
            .iter()
            .filter_map(|l| l.ended_at().map(|at| (l.id.clone(), at)))
            .collect();
        let gone = crate::retention::to_forget(
            &ended,
            now,
            crate::retention::KEPT_FOR,
            crate::retention::KEPT_MAX,
        );
        let mut map = self.map();
        for id in &gone {
            map.remove(id);
        }
        gone.len()
    }

    /// Destroys every running sandbox and writes its report (the daemon is stopping).
    pub fn shutdown(&self) {
        for l in self.list() {
            l.end(EndReason::Shutdown, self.host.signer.as_ref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_end_still_ends_the_sandbox_with_the_panic_as_its_error() {
        let ended = finish_end(|| panic!("destroy went wrong"));
        let Life::Ended {
            status,
            report_path,
            errors,
            ..
        } = ended
        else {
            panic!("not ended");
        };
        assert_eq!(status, "lost");
        assert_eq!(report_path, None);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].code, ErrorCode::EvidenceReport);
        assert!(
            errors[0].message.contains("destroy went wrong"),
            "{:?}",
            errors[0]
        );
        // An end that finishes passes through untouched.
        let at = Instant::now();
        let Life::Ended { status, .. } = finish_end(|| Life::Ended {
            status: "destroyed".into(),
            report_path: Some("r.json".into()),
            errors: Vec::new(),
            at,
        }) else {
            panic!("not ended");
        };
        assert_eq!(status, "destroyed");
    }
}
