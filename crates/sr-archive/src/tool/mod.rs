//! The evidence commands that need no privilege and no key: list and show archived runs, verify
//! a report with an inclusion proof, check two checkpoints for consistency. `safe-run` (as
//! `report list|show|verify`, `log consistency`) and `safe-run-verify` run the same code.
//!
//! One file per command: [`list`], [`show`], [`verify`], [`consistency`]; this module holds
//! what they share (output, the archive location, reading keys and proof files).
//!
//! Exit codes: 0 ok; 2 usage; 7 (SR-EVD-002) the report or its event chain does not verify;
//! 9 (SR-ARC-xxx) an archive, proof or consistency failure (see docs/errors.md).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use serde_json::json;
use sr_common::Diagnostic;
use sr_evidence::verify::{Check, Verification};
use sr_evidence::{VerifyingKey, keys};

use crate::checkpoint::Checkpoint;
use crate::{Archive, ArchiveError};

mod consistency;
mod list;
mod show;
mod verify;

pub use consistency::{ConsistencyArgs, consistency};
pub use list::{ListArgs, list, parse_since};
pub use show::{ShowArgs, render_show, show};
pub use verify::{VerifyArgs, verify};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Format {
    /// Human-readable text.
    #[default]
    Text,
    /// JSON on stdout.
    Json,
}

/// Prints diagnostics (stderr as text, or `{ok: false, errors}` on stdout) and returns the exit
/// code of the first one's family.
pub fn fail(diagnostics: &[Diagnostic], format: Format) -> u8 {
    match format {
        Format::Text => {
            let mut err = std::io::stderr().lock();
            for d in diagnostics {
                let _ = writeln!(err, "error: {d}");
            }
        }
        Format::Json => {
            let doc = json!({ "ok": false, "errors": diagnostics });
            print_out(&format!("{doc:#}\n"));
        }
    }
    diagnostics
        .first()
        .map_or(1, |d| u8::try_from(d.code.exit_code()).unwrap_or(1))
}

/// Writes to stdout; a closed pipe is not an error.
pub fn print_out(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Where the archive is.
#[derive(Debug, Clone, Args)]
pub struct ArchiveLocation {
    /// The archive database (default: $SAFE_RUN_ARCHIVE, else /var/lib/safe-run/archive/archive.db).
    #[arg(long, value_name = "DB")]
    pub archive: Option<PathBuf>,
}

impl ArchiveLocation {
    /// The resolved path.
    pub fn path(&self) -> PathBuf {
        crate::archive_path(self.archive.as_deref())
    }

    /// Opens the archive read-write; an archive that does not exist is an error here (it is
    /// created only by indexing).
    pub fn open_existing(&self) -> Result<Archive, ArchiveError> {
        Archive::open(&self.existing()?)
    }

    /// Opens the archive read-only, for queries: works on a copy in a directory the reader
    /// cannot write.
    pub fn open_read_only(&self) -> Result<Archive, ArchiveError> {
        Archive::open_read_only(&self.existing()?)
    }

    fn existing(&self) -> Result<PathBuf, ArchiveError> {
        let path = self.path();
        if !path.exists() {
            return Err(ArchiveError::NotFound {
                what: format!("archive {} (no run was indexed there yet)", path.display()),
            });
        }
        Ok(path)
    }
}

pub(crate) fn usage(message: String) -> u8 {
    eprintln!("error: {message}");
    2
}

pub(crate) fn read_key(path: Option<&Path>) -> Result<Option<VerifyingKey>, Diagnostic> {
    path.map(keys::read_public_key)
        .transpose()
        .map_err(|e| e.to_diagnostic())
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &str,
) -> Result<T, ArchiveError> {
    let bytes = std::fs::read(path).map_err(|e| ArchiveError::Proof {
        what: format!("{what} {}", path.display()),
        reason: e.to_string(),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ArchiveError::Proof {
        what: format!("{what} {}", path.display()),
        reason: format!("not a {what}: {e}"),
    })
}

/// Reads a checkpoint file.
pub fn read_checkpoint(path: &Path) -> Result<Checkpoint, ArchiveError> {
    read_json(path, "checkpoint")
}

pub(crate) fn render_checks(checks: &[Check]) -> String {
    Verification {
        checks: checks.to_vec(),
        complete: true,
    }
    .render_text()
}
