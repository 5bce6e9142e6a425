//! The agent's one error type: the step that failed (a phase such as `boot.modules` or
//! `guest.landlock`) and what failed. Every agent failure is a launch failure of the run
//! (SR-RUN-002): the host reports it under that code, with the phase as its path.

use sr_common::ErrorCode;

/// A failed step of the guest agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{phase}: {message}")]
pub struct AgentError {
    /// Where: `boot.mount`, `boot.modules`, `boot.rootfs`, `guest.setup`, `guest.landlock` ...
    pub phase: &'static str,
    /// What failed, for a human.
    pub message: String,
}

impl AgentError {
    /// A failure at `phase`.
    pub fn new(phase: &'static str, message: impl Into<String>) -> Self {
        AgentError {
            phase,
            message: message.into(),
        }
    }

    /// A failed system call at `phase`, doing `what`.
    pub fn sys(phase: &'static str, what: impl std::fmt::Display, e: nix::Error) -> Self {
        AgentError::new(phase, format!("{what}: {}", e.desc()))
    }

    /// A failed I/O call at `phase`, doing `what`.
    pub fn io(phase: &'static str, what: impl std::fmt::Display, e: &std::io::Error) -> Self {
        AgentError::new(phase, format!("{what}: {e}"))
    }

    /// The stable code: the guest could not run the workload as asked.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::RunLaunch
    }

    /// The console line for this failure.
    pub fn console_line(&self) -> String {
        format!("safe-run-agent: {} {}", self.code(), self)
    }
}
