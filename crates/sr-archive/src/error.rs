//! The one error type of this crate, and how each variant reaches the user (SR-ARC-xxx).

use std::path::PathBuf;

use sr_common::{Diagnostic, ErrorCode};

/// An archive or transparency-log failure.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The database could not be opened, migrated, read or written (SR-ARC-001).
    #[error("archive {}: {action} failed", path.display())]
    Store {
        /// The database file.
        path: PathBuf,
        /// What was being done (`open`, `migrate`, `index run 3f9c…`, ...).
        action: String,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The database has another schema version than this build can use (SR-ARC-001): newer,
    /// or (read-only) older and not yet migrated.
    #[error("archive {} has schema version {found}; this safe-run uses version {known}", path.display())]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// `PRAGMA user_version` found.
        found: i64,
        /// The newest version this build migrates to.
        known: i64,
    },
    /// A run directory or report could not be read for indexing (SR-ARC-001).
    #[error("cannot index {}: {reason}", path.display())]
    Unreadable {
        /// The report or run dir.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// RUN names no archived run (SR-ARC-002).
    #[error("{what} is not in the archive")]
    NotFound {
        /// The run id, run dir or report path given.
        what: String,
    },
    /// The run is archived with another report digest than it has now (SR-ARC-003).
    #[error("run {run_id}: {reason}")]
    Tampered {
        /// The run.
        run_id: String,
        /// What differs (missing file, digest mismatch).
        reason: String,
    },
    /// A proof or checkpoint is malformed or does not verify (SR-ARC-004).
    #[error("{what}: {reason}")]
    Proof {
        /// The file or object (`checkpoint OLD`, `proof.json`, ...).
        what: String,
        /// Why.
        reason: String,
    },
}

impl ArchiveError {
    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            ArchiveError::Store { .. }
            | ArchiveError::TooNew { .. }
            | ArchiveError::Unreadable { .. } => ErrorCode::ArchiveStore,
            ArchiveError::NotFound { .. } => ErrorCode::ArchiveNotFound,
            ArchiveError::Tampered { .. } => ErrorCode::ArchiveTampered,
            ArchiveError::Proof { .. } => ErrorCode::ArchiveProof,
        }
    }

    /// The operation this error concerns (the diagnostic's `path`).
    pub fn phase(&self) -> &'static str {
        match self {
            ArchiveError::Store { .. } | ArchiveError::TooNew { .. } => "archive.db",
            ArchiveError::Unreadable { .. } => "archive.index",
            ArchiveError::NotFound { .. } => "archive.lookup",
            ArchiveError::Tampered { .. } => "archive.report",
            ArchiveError::Proof { .. } => "log.proof",
        }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            ArchiveError::Store { .. } => {
                "check that the archive directory is writable (SAFE_RUN_ARCHIVE or --archive); a busy database is retried for 10 s"
            }
            ArchiveError::TooNew { .. } => {
                "use the safe-run version that wrote this archive; an older archive is migrated by opening it once read-write (any `safe-run report` command)"
            }
            ArchiveError::Unreadable { .. } => {
                "a run dir needs a readable run_report.json; runs stopped before the report exist only on disk"
            }
            ArchiveError::NotFound { .. } => {
                "give a run id, run dir or run_report.json path from `safe-run report list`; `safe-run report rebuild-index` indexes run dirs on disk"
            }
            ArchiveError::Tampered { .. } => {
                "the report was changed or deleted after it was archived; the log leaf keeps the original digest"
            }
            ArchiveError::Proof { .. } => {
                "the proof, checkpoint or report was changed, comes from another log, or was signed by another key"
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
