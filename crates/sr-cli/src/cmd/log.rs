//! `safe-run log ...`: the transparency log of run reports: export a signed checkpoint for a
//! witness, and check two checkpoints for consistency (shared with `safe-run-verify`).
//!
//! Exit codes: 0 ok, 9 (SR-ARC-xxx) archive or consistency failure, 7 (SR-EVD-002) an unusable
//! signing key, 2 usage.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use sr_archive::tool;

use crate::cmd::key::{KeyLocation, load_signing_key};

/// Subcommands of `safe-run log`.
#[derive(Subcommand)]
pub enum LogCommand {
    /// Sign (or with --stored, export the newest stored) checkpoint of the log: tree size,
    /// root hash, time, keyid.
    Checkpoint(CheckpointArgs),
    /// Prove that NEW's log extends OLD's unchanged (RFC 6962 consistency), or name the
    /// inconsistency.
    Consistency(tool::ConsistencyArgs),
}

/// Arguments of `safe-run log checkpoint`.
#[derive(Args)]
#[command(after_help = "Examples:
  safe-run log checkpoint --out cp-$(date +%F).json      # keep it, or hand it to a witness
  safe-run log checkpoint --stored                         # the newest stored one, no key needed
  safe-run log consistency cp-2026-12-01.json cp-2026-12-02.json

A checkpoint is JSON {format, treeSize, rootHash, time, keyid, publicKey, signature}; the
Ed25519 signature (report-signing key) is over the text body described in docs/evidence.md.
A witness that keeps checkpoints can later demand a consistency proof between any two.")]
pub struct CheckpointArgs {
    /// Where to write the checkpoint (default: stdout).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Export the newest stored checkpoint instead of signing one now.
    #[arg(long)]
    pub stored: bool,
    #[command(flatten)]
    location: tool::ArchiveLocation,
    /// The signing key (the report-signing key).
    #[command(flatten)]
    signing: KeyLocation,
}

/// Runs the subcommand; returns the process exit code.
pub fn execute(command: LogCommand) -> u8 {
    match command {
        LogCommand::Checkpoint(args) => checkpoint(args),
        LogCommand::Consistency(args) => tool::consistency(args),
    }
}

fn checkpoint(args: CheckpointArgs) -> u8 {
    let mut db = match args.location.open_existing() {
        Ok(db) => db,
        Err(e) => return tool::fail(&[e.to_diagnostic()], tool::Format::Text),
    };
    let cp = if args.stored {
        match db.latest_checkpoint() {
            Ok(Some(cp)) => Ok(cp),
            Ok(None) => Err(sr_archive::ArchiveError::NotFound {
                what: "a stored checkpoint".into(),
            }
            .to_diagnostic()),
            Err(e) => Err(e.to_diagnostic()),
        }
    } else {
        load_signing_key(args.signing.key.as_deref())
            .and_then(|key| db.checkpoint(&key).map_err(|e| e.to_diagnostic()))
    };
    let cp = match cp {
        Ok(cp) => cp,
        Err(d) => return tool::fail(&[d], tool::Format::Text),
    };
    let text = serde_json::to_string_pretty(&cp).unwrap_or_default() + "\n";
    match args.out {
        None => {
            tool::print_out(&text);
            0
        }
        Some(path) => match std::fs::write(&path, text) {
            Ok(()) => {
                eprintln!(
                    "wrote {}: tree size {}, root {}",
                    path.display(),
                    cp.tree_size,
                    cp.root_hash
                );
                0
            }
            Err(e) => {
                let d = sr_archive::ArchiveError::Proof {
                    what: format!("checkpoint {}", path.display()),
                    reason: format!("cannot write: {e}"),
                };
                tool::fail(&[d.to_diagnostic()], tool::Format::Text)
            }
        },
    }
}
