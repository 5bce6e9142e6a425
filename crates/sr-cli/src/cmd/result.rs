//! The machine-readable result of `safe-run run`: written to the file `--result FILE` names,
//! and with `--format json` printed as one line on stderr, on every path (success, workload
//! failure, timeout, launch failure, invalid policy, interruption). Never on stdout: stdout
//! belongs to the workload.

use std::path::{Path, PathBuf};

use serde::Serialize;
use sr_common::Diagnostic;
use sr_compiler::bundle::PolicyOverrides;
use sr_runner::{RunOutcome, RunStatus};

/// Schema id of the result document.
pub const RESULT_SCHEMA: &str = "safe-run.run-result/v1";

/// What a program needs to know about one `safe-run run`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunResult {
    /// [`RESULT_SCHEMA`].
    pub schema: &'static str,
    /// Whether safe-run did its job and the workload exited 0.
    pub ok: bool,
    /// How it ended: `exited`, `signaled`, `timeout`, `oom`, `outputLimit`, `interrupted`,
    /// `launchFailed`, `stopped`, or, before any run: `usage`, `invalidPolicy`,
    /// `compileFailed`, `notStarted`, `evidenceFailed`.
    pub status: String,
    /// safe-run's exit status.
    pub exit_code: i32,
    /// The workload's own exit code, when it exited.
    pub workload_exit_code: Option<i32>,
    /// The signal that killed the workload, when one did.
    pub signal: Option<i32>,
    /// The run id, once a run directory exists.
    pub run_id: Option<String>,
    /// The run directory.
    pub run_dir: Option<PathBuf>,
    /// The signed report, when it was written.
    pub report_path: Option<PathBuf>,
    /// The policy: file path (or `builtin:strict`), name and digest, once it validated.
    pub policy: Option<PolicyRef>,
    /// Limits the run reached: `timeout`, `memory`, `pids`, `output.stdout`, `output.stderr`.
    pub limits_hit: Vec<String>,
    /// Every error and warning safe-run reported, in order.
    pub diagnostics: Vec<Diagnostic>,
    /// For `--pool`: the template, and whether the sandbox came ready from its pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolUse>,
}

/// The warm pool a `--pool` run used.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolUse {
    /// The template named.
    pub template: String,
    /// Whether the sandbox was ready in the pool (else the daemon made it on request).
    pub from_pool: bool,
}

/// The policy a result concerns.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRef {
    /// The file, or `builtin:strict`.
    pub path: String,
    /// `name`.
    pub name: String,
    /// `sha256:...` of the canonical policy, as written.
    pub digest: String,
    /// What the command line replaced in the policy for this run (`--backend`); left out
    /// when nothing was.
    #[serde(skip_serializing_if = "PolicyOverrides::is_empty")]
    pub overrides: PolicyOverrides,
}

impl Default for RunResult {
    fn default() -> Self {
        RunResult {
            schema: RESULT_SCHEMA,
            ok: false,
            status: String::new(),
            exit_code: 0,
            workload_exit_code: None,
            signal: None,
            run_id: None,
            run_dir: None,
            report_path: None,
            policy: None,
            limits_hit: Vec::new(),
            diagnostics: Vec::new(),
            pool: None,
        }
    }
}

impl RunResult {
    /// Records a failure before or around the run; the status follows the exit family unless
    /// one is already set.
    pub fn failed(&mut self, diagnostics: &[Diagnostic]) {
        self.diagnostics.extend_from_slice(diagnostics);
        if self.status.is_empty() {
            let family = diagnostics.first().map_or(5, |d| d.code.exit_code());
            self.status = match family {
                2 => "usage",
                3 => "invalidPolicy",
                4 => "compileFailed",
                7 => "evidenceFailed",
                _ => "notStarted",
            }
            .to_owned();
        }
    }

    /// Records how the run ended.
    pub fn outcome(&mut self, o: &RunOutcome) {
        let (status, code, signal) = match &o.status {
            RunStatus::Exited { code } => ("exited", Some(*code), None),
            RunStatus::Signaled { signal } => ("signaled", None, Some(*signal)),
            RunStatus::Timeout { .. } => ("timeout", None, None),
            RunStatus::Oom { code, signal, .. } => ("oom", *code, *signal),
            RunStatus::LaunchFailed { .. } => ("launchFailed", None, None),
            RunStatus::Stopped { .. } => ("stopped", None, None),
            RunStatus::OutputLimit { .. } => ("outputLimit", None, None),
            RunStatus::Interrupted { signal } => ("interrupted", None, Some(*signal)),
            RunStatus::Lost { .. } => ("lost", None, None),
            RunStatus::Destroyed { .. } => ("destroyed", None, None),
        };
        self.status = status.to_owned();
        self.workload_exit_code = code;
        self.signal = signal;
        self.limits_hit = o.limits_hit();
        self.diagnostics.extend(o.warnings.iter().cloned());
        self.diagnostics.extend(o.cleanup.errors.iter().cloned());
    }

    /// Writes the result to `path` (through a temporary file and a rename, so a reader never
    /// sees half a document).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)? + "\n";
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)
    }
}
