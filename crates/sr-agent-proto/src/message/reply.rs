//! The one failure answer, for any request.

use serde::{Deserialize, Serialize};

/// A request failed, or (without `id`) the peer broke the protocol and the connection ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorReply {
    /// The failed request's id; `None` for a protocol error not tied to one request.
    pub id: Option<u64>,
    /// What kind of failure, stable.
    pub code: ErrorCode,
    /// For a person: what failed and why (no secrets, at most `max_text` bytes).
    pub message: String,
    /// Where inside the boundary it failed (`launch.exec`, `launch.cwd`, ...), when the agent
    /// knows: the host turns it into the run phase of its diagnostic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The errno of the failed system call, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
}

/// Stable failure codes. New codes come only with a new minor version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ErrorCode {
    /// The path, program or id does not exist.
    NotFound,
    /// The boundary's own permissions refuse it.
    PermissionDenied,
    /// The path resolves outside the agent's root, or through a symlink that leaves it.
    OutsideRoot,
    /// Over a limit: a file size, a transfer, stdin beyond the granted credit.
    TooLarge,
    /// The request is malformed or does not fit the state (an unknown exec id, a resize
    /// without a tty, a reused id).
    Invalid,
    /// Something else holds the resource; retrying later may work.
    Busy,
    /// The agent does not do this (a feature it did not acknowledge, a tty without devpts).
    Unsupported,
    /// The content received does not match the digest the sender gave.
    DigestMismatch,
    /// A frame that does not decode: the sender is broken and the connection ends.
    Protocol,
    /// The agent failed in a way that is not the request's fault.
    Internal,
}
