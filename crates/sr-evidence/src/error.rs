//! The one error type of this crate, and how each variant reaches the user.
//!
//! Writing an event is SR-EVD-001 (the runner stops the run safely on it); everything about the
//! report, keys, verification and export is SR-EVD-002.

use std::io;
use std::path::PathBuf;

use sr_common::{Diagnostic, ErrorCode};

/// An evidence failure.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// The event log could not be created.
    #[error("cannot create the event log {}", path.display())]
    CreateLog {
        /// The events.jsonl path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing or flushing an event failed.
    #[error("cannot write event {event_type} to the event log")]
    WriteEvent {
        /// The event type being written (or `(finish)` for the final flush).
        event_type: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The payload cannot be recorded exactly (an integer beyond ±(2^53-1), ...).
    #[error("event {event_type} has a payload that cannot be recorded exactly: {reason}")]
    Payload {
        /// The event type.
        event_type: String,
        /// Why.
        reason: String,
    },
    /// An earlier failure made the log unusable; nothing more is written.
    #[error(
        "the event log stopped at an earlier failure ({first}); event {event_type} not written"
    )]
    Poisoned {
        /// The event type that was refused.
        event_type: String,
        /// The first failure.
        first: String,
    },
    /// The report could not be canonicalized or serialized.
    #[error("cannot encode the run report: {reason}")]
    ReportEncode {
        /// Why.
        reason: String,
    },
    /// Writing a file (report, envelope, public key) failed.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Reading a file failed.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file is not what it should be (not a run report, not a key, ...).
    #[error("{} is not a valid {what}: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was expected ("run report", "public key", ...).
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The key file exists but may not be used (symlink, readable by others, not a file).
    #[error("refusing to use key file {}: {reason}", path.display())]
    KeyInsecure {
        /// The key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Creating the key file or its directory failed.
    #[error("cannot create key file {}", path.display())]
    KeyCreate {
        /// The key file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The report may not be exported: it is unsigned, or its signature does not verify with
    /// the exporting key (or the public key given for the report).
    #[error("refusing to export the report: {reason}")]
    ExportRefused {
        /// Why.
        reason: String,
    },
}

impl EvidenceError {
    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            EvidenceError::CreateLog { .. }
            | EvidenceError::WriteEvent { .. }
            | EvidenceError::Payload { .. }
            | EvidenceError::Poisoned { .. } => ErrorCode::EvidenceEventWrite,
            _ => ErrorCode::EvidenceReport,
        }
    }

    /// The run phase or operation this error concerns (the diagnostic's `path`).
    pub fn phase(&self) -> &'static str {
        match self {
            EvidenceError::CreateLog { .. } => "evidence.events.create",
            EvidenceError::WriteEvent { .. } | EvidenceError::Poisoned { .. } => {
                "evidence.events.write"
            }
            EvidenceError::Payload { .. } => "evidence.events.payload",
            EvidenceError::ReportEncode { .. } => "evidence.report.encode",
            EvidenceError::Write { .. } => "evidence.write",
            EvidenceError::Read { .. } | EvidenceError::Parse { .. } => "evidence.read",
            EvidenceError::KeyInsecure { .. } | EvidenceError::KeyCreate { .. } => "evidence.key",
            EvidenceError::ExportRefused { .. } => "evidence.export",
        }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            EvidenceError::CreateLog { .. } => {
                "the run directory must be writable and must not already hold an events.jsonl"
            }
            EvidenceError::WriteEvent { .. } | EvidenceError::Poisoned { .. } => {
                "check free space and permissions of the run directory; the run was stopped so that no unrecorded activity happens"
            }
            EvidenceError::Payload { .. } => {
                "payload integers must lie within ±(2^53-1) so that every verifier reads them exactly; record larger values as strings"
            }
            EvidenceError::ReportEncode { .. } => {
                "report integers must lie within ±(2^53-1); this is a bug in whoever filled the report"
            }
            EvidenceError::Write { .. } => {
                "check free space and permissions of the target directory"
            }
            EvidenceError::Read { .. } => {
                "check the path; `safe-run report verify` reads run_report.json and events.jsonl from a run directory"
            }
            EvidenceError::Parse { .. } => {
                "pass a run_report.json written by `safe-run run`, or a public key from `safe-run key export-public`"
            }
            EvidenceError::KeyInsecure { .. } => {
                "the signing key must be a regular file readable only by its owner: chmod 600 it, or point --key / SAFE_RUN_KEY at another path"
            }
            EvidenceError::KeyCreate { .. } => {
                "the key directory must be writable; set SAFE_RUN_KEY or --key to a writable path"
            }
            EvidenceError::ExportRefused { .. } => {
                "export with the key that sealed the report, or pass that signer's public key with --report-key to export it under your own key"
            }
        }
    }

    /// The error as a user-facing diagnostic; the message includes the whole cause chain.
    pub fn to_diagnostic(&self) -> Diagnostic {
        Diagnostic::new(
            self.code(),
            self.phase(),
            sr_common::error_chain(self),
            self.hint(),
        )
    }
}
