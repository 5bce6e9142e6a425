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
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sr_common::{Diagnostic, ErrorCode};
use sr_evidence::SigningKey;
use sr_policy::{OperatorConfig, SourceFormat};
use sr_runner::cgroup::Layout;
use sr_runner::life::{ExecHandle, ExecRequest, Sandbox, SandboxError, SandboxSpec};
use sr_runner::recording::{PolicySource, Recording, RunSink, Started};
use sr_runner::sandbox::launch::ProcessSandbox;
use sr_runner::{RunDir, RunStatus};

use crate::pool::{PoolView, Pools};
use crate::streams::ExecLog;
use crate::tokens::{self, TokenHash};

/// Where a sandbox is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
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
    streamed: Mutex<BTreeMap<u64, Arc<ExecLog>>>,
    template: Option<String>,
    /// Made for the pool; set once it is handed out.
    pooled: std::sync::atomic::AtomicBool,
    handed_out_from_pool: std::sync::atomic::AtomicBool,
}

/// What the API says of a sandbox.
#[derive(Debug, Clone, Serialize)]
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
    pub report_path: Option<PathBuf>,
    /// The template it was made from, when a create named one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Whether it came ready from the warm pool (made before it was asked for).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub from_pool: bool,
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
        SandboxView {
            id: self.id.clone(),
            state,
            created_at_ms: self.created_at_ms,
            ended,
            report_path,
            template: self.template.clone(),
            from_pool: self.handed_out_from_pool.load(Ordering::Relaxed),
        }
    }

    /// Starts an exec (the handle outlives the lock: execs run side by side).
    pub fn exec(&self, req: &ExecRequest) -> Result<ExecHandle, SandboxError> {
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
    pub fn exec_streamed(&self, req: &ExecRequest) -> Result<Arc<ExecLog>, SandboxError> {
        let log = ExecLog::start(self.exec(req)?);
        self.streamed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(log.id, log.clone());
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

    /// Whether something (its timeout, an evidence failure) ended it without a request.
    fn ended_by_itself(&self) -> bool {
        match &*self.lock() {
            Life::Running { sandbox, .. } => sandbox.ending().cause().is_some(),
            _ => false,
        }
    }

    /// Destroys it and finishes its evidence; returns its view. A second call finds it ended.
    pub fn destroy(&self, signer: Option<&SigningKey>) -> SandboxView {
        let taken = std::mem::replace(&mut *self.lock(), Life::Ending);
        let ended = match taken {
            Life::Running { sandbox, recording } => {
                let (outcome, sink) = sandbox.destroy(RunStatus::Exited { code: 0 }, None);
                let finished = recording.finish(&outcome, sink, signer);
                Life::Ended {
                    status: outcome.status_word().into(),
                    report_path: finished.report_path,
                    errors: finished.errors,
                }
            }
            other => other,
        };
        *self.lock() = ended;
        self.view()
    }

    /// The report's path once it is written.
    pub fn report_path(&self) -> Option<PathBuf> {
        match &*self.lock() {
            Life::Ended { report_path, .. } => report_path.clone(),
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
    /// Too many sandboxes are alive.
    Full(u32),
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
}

impl Daemon {
    /// A daemon with no sandboxes.
    pub fn new(host: Host) -> Daemon {
        Daemon {
            host,
            counters: Counters::default(),
            sandboxes: Mutex::new(BTreeMap::new()),
            pools: Pools::default(),
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
        self.map()
            .values()
            .filter(|l| l.view().state == State::Running)
            .count()
    }

    /// Makes a sandbox from `policy_text` (YAML, or JSON when it starts with `{`); returns it
    /// and its token (shown once).
    pub fn create(&self, policy_text: &str) -> Result<(Arc<Live>, String), CreateError> {
        self.make(policy_text, None)
    }

    fn make(
        &self,
        policy_text: &str,
        template: Option<&str>,
    ) -> Result<(Arc<Live>, String), CreateError> {
        let max = self.host.config.serve.max_sandboxes;
        if self.running() >= max as usize {
            return Err(CreateError::Full(max));
        }
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
        if bundle.backend.sandbox().is_none() {
            return Err(CreateError::Policy(vec![Diagnostic::new(
                ErrorCode::RunLaunch,
                "runtime.backend",
                format!(
                    "backend {} cannot serve sandboxes yet",
                    bundle.backend.name()
                ),
                "use backend: sandbox",
            )]));
        }
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
        let sandbox = Sandbox::create(
            &recording.dir,
            SandboxSpec {
                bundle,
                network: hook,
                sink,
                cgroup_layout: self.host.layout.clone(),
            },
            Box::new(ProcessSandbox::new(
                self.host.init_exe.clone(),
                config.allowed_mount_prefixes.clone(),
            )),
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
            streamed: Mutex::new(BTreeMap::new()),
            template: template.map(str::to_owned),
            pooled: std::sync::atomic::AtomicBool::new(false),
            handed_out_from_pool: std::sync::atomic::AtomicBool::new(false),
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
        if let Some((live, token)) = self.pools.take(name) {
            live.handed_out_from_pool.store(true, Ordering::Relaxed);
            return Ok((live, token));
        }
        let text = self.template_text(name)?;
        self.make(&text, Some(name))
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
                if self.running() >= self.host.config.serve.max_sandboxes as usize {
                    return made;
                }
                let Ok(text) = self.template_text(&name) else {
                    break;
                };
                match self.make(&text, Some(&name)) {
                    Ok((live, token)) => {
                        live.pooled.store(true, Ordering::Relaxed);
                        self.pools.put(&name, live, token);
                        made += 1;
                    }
                    Err(_) => break,
                }
            }
        }
        made
    }

    /// Writes the reports of sandboxes that ended by themselves (their timeout). Returns
    /// their ids.
    pub fn reap(&self) -> Vec<String> {
        let ended: Vec<Arc<Live>> = self
            .list()
            .into_iter()
            .filter(|l| l.ended_by_itself())
            .collect();
        for l in &ended {
            l.destroy(self.host.signer.as_ref());
        }
        ended.iter().map(|l| l.id.clone()).collect()
    }

    /// Destroys every running sandbox and writes its report (the daemon is stopping).
    pub fn shutdown(&self) {
        for l in self.list() {
            l.destroy(self.host.signer.as_ref());
        }
    }
}
