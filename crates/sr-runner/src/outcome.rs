//! [`RunOutcome`]: everything a run produced, for the report and the evidence writer.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;
use sr_common::{Diagnostic, ErrorCode};

use crate::cgroup::{Layout, Totals};
use crate::network_facts::{NetworkAudit, NetworkFacts};
use crate::sandbox::facts::WorkloadFacts;

/// How the run ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum RunStatus {
    /// The workload exited with `code`.
    Exited {
        /// Exit code.
        code: i32,
    },
    /// A signal killed the workload.
    Signaled {
        /// Signal number.
        signal: i32,
    },
    /// The wall-clock limit expired; the whole tree was killed (SR-RUN-003).
    #[serde(rename_all = "camelCase")]
    Timeout {
        /// The limit in milliseconds.
        limit_ms: u64,
    },
    /// The kernel's OOM killer killed a process of the run (memory limit reached).
    #[serde(rename_all = "camelCase")]
    Oom {
        /// OOM kills counted by the cgroup.
        oom_kills: u64,
        /// The workload's signal, when it was the one killed.
        signal: Option<i32>,
        /// The workload's exit code, when it survived a child's OOM kill and exited.
        code: Option<i32>,
    },
    /// The sandbox or the workload could not be started.
    LaunchFailed {
        /// Why.
        diagnostic: Diagnostic,
    },
    /// safe-run stopped the workload because the run's evidence could no longer be recorded
    /// (SR-EVD-001); the whole tree was killed.
    Stopped {
        /// Why.
        diagnostic: Diagnostic,
    },
    /// An output stream passed its limit under `runtime.output.onLimit: kill`; the whole tree
    /// was killed (SR-RUN-004).
    #[serde(rename_all = "camelCase")]
    OutputLimit {
        /// `stdout` or `stderr`.
        stream: String,
        /// The limit in bytes.
        limit_bytes: u64,
    },
    /// safe-run received SIGINT/SIGTERM and stopped the run.
    Interrupted {
        /// The signal safe-run received.
        signal: i32,
    },
    /// A daemon ended the live sandbox (a request, its deadline, idleness, the daemon's stop)
    /// and killed whatever still ran in it.
    Destroyed {
        /// Why.
        reason: sr_evidence::report::EndReason,
    },
    /// How the workload ended is unknown: the sandbox init vanished (killed from outside) or
    /// could no longer wait for it, without reporting an exit. Nothing is invented in its place.
    Lost {
        /// What was observed.
        diagnostic: Diagnostic,
    },
}

/// One output stream as saved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamFacts {
    /// Saved copy.
    pub path: PathBuf,
    /// Bytes kept (the saved copy's size).
    pub size: u64,
    /// `sha256:<hex>` of the bytes kept.
    pub sha256: String,
    /// Bytes the workload wrote, kept or not.
    pub seen: u64,
    /// Whether bytes were discarded (`seen > size`).
    pub truncated: bool,
    /// The limit in force, in bytes.
    pub limit_bytes: u64,
}

/// What was enforced, as facts.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnforcementFacts {
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// Namespaces created.
    pub namespaces: Vec<String>,
    /// Hostname inside.
    pub hostname: String,
    /// Facts the workload reported right before exec (Landlock, seccomp, identity, caps,
    /// rlimits, policy mounts).
    pub workload: Option<WorkloadFacts>,
    /// cgroup layout in use.
    pub cgroup_layout: Option<Layout>,
    /// cgroup directories of the run.
    pub cgroup_paths: Vec<PathBuf>,
    /// Limits written: file -> value.
    pub cgroup_limits: BTreeMap<String, String>,
    /// Capabilities kept (always empty).
    pub capabilities_kept: Vec<String>,
    /// A microVM's facts (VMM, accelerator, artifacts, guest), for that backend.
    pub microvm: Option<crate::microvm::facts::VmFacts>,
}

/// Phase timings in milliseconds (monotonic clock) and wall-clock start/end.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timings {
    /// Unix time in ms when the run started.
    pub started_at_unix_ms: u64,
    /// Unix time in ms when cleanup finished.
    pub finished_at_unix_ms: u64,
    /// Phase -> milliseconds, in the order they happen: `cgroup`, `spawn_to_ready`,
    /// `attach`, `go_to_exec`, `workload`, `cleanup`, `total`.
    pub phases_ms: BTreeMap<String, f64>,
}

/// What cleanup did. Errors are kept next to the run's own error, never replace it.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CleanupReport {
    /// What was removed (cgroup dirs, network objects, the root mount point).
    pub removed: Vec<String>,
    /// Cleanup errors.
    pub errors: Vec<Diagnostic>,
}

/// Everything about a finished run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunOutcome {
    /// Run id.
    pub run_id: String,
    /// Run directory.
    pub run_dir: PathBuf,
    /// `sandbox`.
    pub backend: String,
    /// Policy name.
    pub policy_name: String,
    /// Policy digest from the bundle.
    pub policy_digest: String,
    /// Command and arguments.
    pub command: Vec<String>,
    /// How it ended.
    pub status: RunStatus,
    /// Timings.
    pub timings: Timings,
    /// Resource totals from the cgroup.
    pub resources: Totals,
    /// Enforcement facts.
    pub enforcement: EnforcementFacts,
    /// Saved stdout.
    pub stdout: StreamFacts,
    /// Saved stderr.
    pub stderr: StreamFacts,
    /// Network facts from the hook (`null` for mode none).
    pub network: NetworkFacts,
    /// The network audit block (`null` for mode none).
    pub network_audit: Option<NetworkAudit>,
    /// Cleanup.
    pub cleanup: CleanupReport,
    /// Non-fatal problems during the run (an event that could not be written, ...).
    pub warnings: Vec<Diagnostic>,
}

/// The limits a run reached, as facts: `timeout`, `memory` (OOM kills), `pids` (forks the
/// pids limit refused, from `pids.events`), `output.stdout` / `output.stderr` (a stream cut
/// or killed at its limit). Recorded in the `process.exited` event and in `--result`.
pub fn limits_hit(
    status: &RunStatus,
    resources: &crate::cgroup::Totals,
    streams: [(&str, bool); 2],
) -> Vec<String> {
    let mut hit = Vec::new();
    if matches!(status, RunStatus::Timeout { .. }) {
        hit.push("timeout".to_owned());
    }
    if resources.oom_kills > 0 || matches!(status, RunStatus::Oom { .. }) {
        hit.push("memory".to_owned());
    }
    if resources.pids_limit_hits > 0 {
        hit.push("pids".to_owned());
    }
    for (name, truncated) in streams {
        let killed = matches!(status, RunStatus::OutputLimit { stream, .. } if stream == name);
        if truncated || killed {
            hit.push(format!("output.{name}"));
        }
    }
    hit
}

impl RunOutcome {
    /// See [`limits_hit`].
    pub fn limits_hit(&self) -> Vec<String> {
        limits_hit(
            &self.status,
            &self.resources,
            [
                ("stdout", self.stdout.truncated),
                ("stderr", self.stderr.truncated),
            ],
        )
    }

    /// The exit code `safe-run run` returns: the workload's own code when it exited; 128+N when
    /// a signal killed it (137 for an OOM kill); 6 for a timeout (SR-RUN-003); 5 when the
    /// launch failed (SR-RUN-001/002); 8 when an output stream passed its limit under
    /// `onLimit: kill` (SR-RUN-004); 130/143 when safe-run itself was interrupted; 5
    /// (SR-RUN-002) when how the workload ended was lost.
    pub fn exit_code(&self) -> i32 {
        match &self.status {
            RunStatus::Exited { code } => *code,
            RunStatus::Signaled { signal } => 128 + signal,
            RunStatus::Timeout { .. } => ErrorCode::RunTimeout.exit_code(),
            RunStatus::Oom { signal, code, .. } => match (code, signal) {
                (Some(c), _) => *c,
                (None, Some(s)) => 128 + s,
                (None, None) => 137,
            },
            RunStatus::LaunchFailed { diagnostic }
            | RunStatus::Stopped { diagnostic }
            | RunStatus::Lost { diagnostic } => diagnostic.code.exit_code(),
            RunStatus::OutputLimit { .. } => ErrorCode::RunOutputLimit.exit_code(),
            RunStatus::Interrupted { signal } => 128 + signal,
            RunStatus::Destroyed { .. } => 0,
        }
    }

    /// The status as a short word: exited, signaled, timeout, oom, launch_failed, stopped,
    /// output_limit, interrupted, lost, destroyed.
    pub fn status_word(&self) -> &'static str {
        match self.status {
            RunStatus::Exited { .. } => "exited",
            RunStatus::Signaled { .. } => "signaled",
            RunStatus::Timeout { .. } => "timeout",
            RunStatus::Oom { .. } => "oom",
            RunStatus::LaunchFailed { .. } => "launch_failed",
            RunStatus::Stopped { .. } => "stopped",
            RunStatus::OutputLimit { .. } => "output_limit",
            RunStatus::Interrupted { .. } => "interrupted",
            RunStatus::Lost { .. } => "lost",
            RunStatus::Destroyed { .. } => "destroyed",
        }
    }
}
