//! Why a request to a live sandbox (an exec, a file operation) failed, as a type a caller can
//! act on: the daemon maps [`SandboxError::kind`] to an HTTP status, the CLI shows
//! [`SandboxError::to_diagnostic`]. How an exec that did start ended is not an error here: it is
//! the exec's `ExecEnd`.

use sr_agent_proto::ErrorCode as AgentCode;
use sr_common::{Diagnostic, ErrorCode};

/// What kind of failure, for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The sandbox is not running (never started, ending, destroyed) or its agent is gone.
    Gone,
    /// The request itself is wrong (a relative program path, a malformed path).
    Invalid,
    /// The path does not exist inside the sandbox.
    NotFound,
    /// Outside the policy's mounts and tmpfs, or through a symlink that leaves them.
    OutsideRoot,
    /// The sandbox's own permissions refuse it (a read-only mount, a mode).
    PermissionDenied,
    /// Over a limit (file size, tar entries, listing length).
    TooLarge,
    /// Something the agent does not do (a hard link in a tar stream).
    Unsupported,
    /// The content arrived damaged.
    Damaged,
    /// Reading the caller's content or writing its output failed.
    LocalIo,
    /// The agent answered something the protocol does not allow: a bug on one side.
    Protocol,
}

/// A failed request to a live sandbox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{target}: {message}")]
pub struct SandboxError {
    /// What kind.
    pub kind: Kind,
    /// The request: `exec.start`, or `files:<path>`.
    pub target: String,
    /// What happened.
    pub message: String,
}

impl SandboxError {
    /// A failure of `kind` for `target`.
    pub fn new(kind: Kind, target: impl Into<String>, message: impl Into<String>) -> Self {
        SandboxError {
            kind,
            target: target.into(),
            message: message.into(),
        }
    }

    /// The agent's refusal, by its protocol code.
    pub fn refused(target: impl Into<String>, code: AgentCode, message: &str) -> Self {
        let kind = match code {
            AgentCode::NotFound => Kind::NotFound,
            AgentCode::PermissionDenied => Kind::PermissionDenied,
            AgentCode::OutsideRoot => Kind::OutsideRoot,
            AgentCode::TooLarge => Kind::TooLarge,
            AgentCode::Invalid | AgentCode::Busy => Kind::Invalid,
            AgentCode::Unsupported => Kind::Unsupported,
            AgentCode::DigestMismatch => Kind::Damaged,
            AgentCode::Protocol | AgentCode::Internal => Kind::Protocol,
        };
        SandboxError::new(kind, target, message)
    }

    /// The stable code (SR-RUN-002: the sandbox could not do it); [`Kind`] says why.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::RunLaunch
    }

    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self.kind {
            Kind::Gone => "the sandbox is gone (destroyed, timed out or killed); create a new one",
            Kind::Invalid => "paths and programs are absolute and normalized (no ., .. or //)",
            Kind::NotFound => "check the path inside the sandbox",
            Kind::OutsideRoot => {
                "transfers reach only the policy's mounts and tmpfs, and never through a symlink that leaves them"
            }
            Kind::PermissionDenied => {
                "the path must be writable by the sandbox's user and lie on a writable mount (tmpfs or a rw mount)"
            }
            Kind::TooLarge => {
                "transfers are limited to 1 GiB per file or tar stream (and 100000 entries per tar stream)"
            }
            Kind::Unsupported => "see docs/sandbox.md (execs and files)",
            Kind::Damaged => "the transfer was damaged; retry it",
            Kind::LocalIo => "check the source or destination on this side",
            Kind::Protocol => "this is a bug; see docs/agent-protocol.md",
        }
    }

    /// As the CLI shows errors.
    pub fn to_diagnostic(&self) -> Diagnostic {
        Diagnostic::new(
            self.code(),
            self.target.clone(),
            format!("{:?}: {}", self.kind, self.message),
            self.hint(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_refusals_keep_their_kind() {
        let e = SandboxError::refused("files:/etc", AgentCode::OutsideRoot, "no");
        assert_eq!(e.kind, Kind::OutsideRoot);
        assert_eq!(e.code(), ErrorCode::RunLaunch);
        let d = e.to_diagnostic();
        assert!(d.message.starts_with("OutsideRoot: "), "{d:?}");
        assert_eq!(d.path, "files:/etc");
        let bad = SandboxError::refused("files:x", AgentCode::DigestMismatch, "damaged");
        assert_eq!(bad.kind, Kind::Damaged);
    }
}
