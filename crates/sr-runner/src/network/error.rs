//! The network module's error type and its mapping to stable codes.
//!
//! Every failure while attaching (links, addresses, sysctls, the nftables transaction, the
//! resolver) is SR-RUN-201 at phase `launch.network`; every failure while releasing is
//! SR-RUN-202 at phase `cleanup.network`. Reading counters during the run is SR-RUN-201 at
//! `monitor.network` (the enforcement failed to be observable).

use sr_common::{Diagnostic, ErrorCode};
use thiserror::Error;

use super::exec::CommandError;

/// What went wrong in the network lifecycle.
#[derive(Debug, Error)]
pub enum NetworkError {
    /// The compiled plan cannot be rendered faithfully (a compiler/runner mismatch).
    #[error("network plan cannot be applied: {0}")]
    Plan(String),
    /// The operator's network settings are unusable.
    #[error("operator network config: {0}")]
    Config(String),
    /// No free /30 is left in the subnet pool.
    #[error("no free /30 left in subnet pool {0}")]
    PoolExhausted(String),
    /// A host command failed while attaching.
    #[error("{step} failed")]
    Apply {
        /// What was being done.
        step: String,
        /// The failed command.
        #[source]
        source: CommandError,
    },
    /// The run's resolver could not be started.
    #[error("starting the run's DNS resolver on {addr} failed")]
    Resolver {
        /// The address it tried to bind.
        addr: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// Reading counters failed.
    #[error("reading nftables counters failed")]
    Sample(#[source] CommandError),
    /// Writing a file in the run directory failed.
    #[error("writing {path} failed")]
    RunDir {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// One or more release steps failed (all were attempted).
    #[error("releasing network resources failed: {0}")]
    Release(String),
}

/// Phase path of attach failures.
pub const PHASE_APPLY: &str = "launch.network";
/// Phase path of sampling failures (while the workload runs).
pub const PHASE_MONITOR: &str = "monitor.network";
/// Phase path of release failures.
pub const PHASE_RELEASE: &str = "cleanup.network";

impl NetworkError {
    /// The stable code: SR-RUN-202 for release, SR-RUN-201 for everything else.
    pub fn code(&self) -> ErrorCode {
        match self {
            NetworkError::Release(_) => ErrorCode::RunNetworkRelease,
            _ => ErrorCode::RunNetworkApply,
        }
    }

    /// Converts into the user-facing diagnostic, with the cause chain in the message.
    pub fn to_diagnostic(&self) -> Diagnostic {
        let mut message = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        let (path, hint) = match self {
            NetworkError::Plan(_) => (
                PHASE_APPLY,
                "recompile the policy with this safe-run version (`safe-run compile --dry-run`)",
            ),
            NetworkError::Config(_) | NetworkError::PoolExhausted(_) => (
                PHASE_APPLY,
                "check `network.subnetPool` and `network.upstreamDns` in the operator config",
            ),
            NetworkError::Release(_) => (
                PHASE_RELEASE,
                "remove leftovers with `nft delete table inet safe_run_<runId>` and \
                 `ip link del sr<runId>h`, or run safe-run's gc",
            ),
            NetworkError::Sample(_) => (
                PHASE_MONITOR,
                "the run's table disappeared or reading its counters failed; check `nft list \
                 table inet safe_run_<runId>`",
            ),
            NetworkError::Resolver { .. } => (
                PHASE_APPLY,
                "something else may listen on port 53 of the run's address; check `ss -lunp`",
            ),
            _ => (
                PHASE_APPLY,
                "allowlist runs need root (CAP_NET_ADMIN), iproute2 and nftables (`apt-get install \
                 nftables`); see docs/network.md",
            ),
        };
        Diagnostic::new(self.code(), path, message, hint)
    }
}

impl From<NetworkError> for Diagnostic {
    fn from(e: NetworkError) -> Self {
        e.to_diagnostic()
    }
}
