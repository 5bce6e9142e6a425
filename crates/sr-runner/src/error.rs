//! The runner's error type. Each variant names the step that failed and maps to a stable code.

use std::io;
use std::path::PathBuf;

use sr_common::{Diagnostic, ErrorCode};

/// A runner failure.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// A host precondition is missing (SR-RUN-001).
    #[error("preflight check {check} failed: {cause}")]
    Preflight {
        /// Which check (`preflight.root`, `preflight.userns`, ...).
        check: String,
        /// What is missing.
        cause: String,
        /// What to do.
        hint: String,
    },
    /// The run directory could not be prepared (SR-RUN-001).
    #[error("cannot {action} {path}")]
    RunDir {
        /// What was attempted.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A launch step failed (SR-RUN-002).
    #[error("{phase}: {cause}")]
    Launch {
        /// Run phase (`launch.mounts`, `launch.exec`, `launch.cgroup`, ...).
        phase: String,
        /// What failed.
        cause: String,
        /// What to do.
        hint: String,
    },
    /// The network hook failed (its own code, SR-RUN-201/202).
    #[error("{0}")]
    Network(Diagnostic),
    /// An evidence event could not be written (SR-EVD-001), so the workload was not started.
    #[error("{0}")]
    Evidence(Diagnostic),
}

impl RunnerError {
    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            RunnerError::Preflight { .. } | RunnerError::RunDir { .. } => ErrorCode::RunPreflight,
            RunnerError::Launch { .. } => ErrorCode::RunLaunch,
            RunnerError::Network(d) | RunnerError::Evidence(d) => d.code,
        }
    }

    /// The diagnostic shown to the user.
    pub fn to_diagnostic(&self) -> Diagnostic {
        match self {
            RunnerError::Preflight { check, cause, hint } => {
                Diagnostic::new(self.code(), check.clone(), cause.clone(), hint.clone())
            }
            RunnerError::RunDir {
                action,
                path,
                source,
            } => Diagnostic::new(
                self.code(),
                "prepare.run_dir",
                format!("cannot {action} {}: {source}", path.display()),
                "check that the run directory base (SAFE_RUN_WORKDIR_BASE or the operator \
                 config's runDir) is writable by root",
            ),
            RunnerError::Launch { phase, cause, hint } => {
                Diagnostic::new(self.code(), phase.clone(), cause.clone(), hint.clone())
            }
            RunnerError::Network(d) | RunnerError::Evidence(d) => d.clone(),
        }
    }

    /// A launch error.
    pub fn launch(
        phase: impl Into<String>,
        cause: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        RunnerError::Launch {
            phase: phase.into(),
            cause: cause.into(),
            hint: hint.into(),
        }
    }
}
