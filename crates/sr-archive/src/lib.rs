//! The archive of runs: an SQLite index of run reports and an RFC 6962 transparency log of
//! their digests, with signed checkpoints and offline proofs. Specified in docs/evidence.md
//! ("Archive" and "Transparency log").
//!
//! Modules:
//!
//! * [`merkle`]: pure RFC 6962 / RFC 9162 Merkle code (roots, proofs, verification);
//! * [`checkpoint`]: signed tree heads;
//! * [`proof`]: inclusion and consistency proof files, checked offline;
//! * [`record`]: the facts the index keeps about a run, read from its run dir;
//! * [`db`]: the SQLite database (schema, migrations, queries, log storage);
//! * [`tool`]: the evidence commands shared by `safe-run` and `safe-run-verify`.
//!
//! The one call a finished run makes ([`index_run`]) indexes the run and appends its leaf;
//! the CLI calls it after the report is durable, and so will the daemon.
#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod db;
mod error;
pub mod merkle;
pub mod proof;
pub mod record;
pub mod tool;

use std::path::{Path, PathBuf};

pub use checkpoint::Checkpoint;
pub use db::{Archive, ArchivedRun, Filter, Recorded};
pub use error::ArchiveError;
pub use record::RunRecord;
use sr_evidence::SigningKey;

/// Environment variable naming the archive database.
pub const ARCHIVE_ENV: &str = "SAFE_RUN_ARCHIVE";
/// The archive database when neither `--archive` nor `SAFE_RUN_ARCHIVE` names one.
pub const DEFAULT_ARCHIVE_PATH: &str = "/var/lib/safe-run/archive/archive.db";

/// The archive path: `flag`, else `SAFE_RUN_ARCHIVE`, else [`DEFAULT_ARCHIVE_PATH`].
pub fn archive_path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_owned();
    }
    match std::env::var_os(ARCHIVE_ENV).filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(DEFAULT_ARCHIVE_PATH),
    }
}

/// What [`index_run`] did.
#[derive(Debug, Clone)]
pub struct Indexed {
    /// The run id.
    pub run_id: String,
    /// Its leaf.
    pub recorded: Recorded,
    /// The checkpoint signed after the append (when a key was given).
    pub checkpoint: Option<Checkpoint>,
}

/// Indexes the finished run in `run_dir` (its report must be durable) and appends its leaf;
/// with `signer`, also signs and stores a checkpoint of the new tree.
pub fn index_run(
    archive: &Path,
    run_dir: &Path,
    signer: Option<&SigningKey>,
) -> Result<Indexed, ArchiveError> {
    let mut db = Archive::open(archive)?;
    index_run_in(&mut db, run_dir, signer)
}

/// [`index_run`] into an archive already open (`safe-run run` opens it while the workload
/// runs, so that only the append is left once the report is written).
pub fn index_run_in(
    db: &mut Archive,
    run_dir: &Path,
    signer: Option<&SigningKey>,
) -> Result<Indexed, ArchiveError> {
    let rec = record::from_run_dir(run_dir)?;
    let recorded = db.record(&rec)?;
    let checkpoint = signer.map(|k| db.checkpoint(k)).transpose()?;
    Ok(Indexed {
        run_id: rec.run_id,
        recorded,
        checkpoint,
    })
}

/// What the report of an archived run looks like now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportState {
    /// The file hashes to the archived digest.
    Intact,
    /// The file exists; not hashed (a cheap check).
    Present,
    /// The run dir or the report is gone.
    Missing,
    /// The file's digest differs from the archived one.
    Changed {
        /// The digest it has now.
        now: String,
    },
}

impl ReportState {
    /// `intact`, `present`, `missing`, `TAMPERED`.
    pub fn label(&self) -> &'static str {
        match self {
            ReportState::Intact => "intact",
            ReportState::Present => "present",
            ReportState::Missing => "missing",
            ReportState::Changed { .. } => "TAMPERED",
        }
    }
}

/// The state of `rec`'s report on disk; `hash` reads and hashes it, else only checks it exists.
pub fn check_report(rec: &RunRecord, hash: bool) -> ReportState {
    let path = rec.report_path();
    if !hash {
        return if path.is_file() {
            ReportState::Present
        } else {
            ReportState::Missing
        };
    }
    match std::fs::read(&path) {
        Err(_) => ReportState::Missing,
        Ok(bytes) => {
            let (now, _) = record::file_digest(&bytes);
            if now == rec.report_digest {
                ReportState::Intact
            } else {
                ReportState::Changed { now }
            }
        }
    }
}

/// The result of [`rebuild`].
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RebuildSummary {
    /// Runs indexed now (new leaves), in the order appended.
    pub indexed: Vec<String>,
    /// Runs already indexed with the same digest.
    pub unchanged: u64,
    /// Runs whose report differs from the archived digest: `(run id, reason)`.
    pub tampered: Vec<(String, String)>,
    /// Run dirs without a readable report: `(path, reason)`.
    pub unreadable: Vec<(String, String)>,
    /// Archived runs whose run dir or report is gone.
    pub missing: Vec<String>,
}

/// Indexes every run dir under `base` that holds a report (oldest first, so leaves follow run
/// order), and names what no longer matches. The log is never rewritten: a changed report is
/// reported, not re-indexed.
pub fn rebuild(db: &mut Archive, base: &Path) -> Result<RebuildSummary, ArchiveError> {
    let mut summary = RebuildSummary::default();
    let entries = std::fs::read_dir(base).map_err(|e| ArchiveError::Unreadable {
        path: base.to_owned(),
        reason: e.to_string(),
    })?;
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    dirs.sort();
    let mut records = Vec::new();
    for dir in dirs {
        if !dir.join(sr_evidence::report::REPORT_FILE).exists() {
            continue;
        }
        let abs = std::fs::canonicalize(&dir).unwrap_or(dir);
        match record::from_run_dir(&abs) {
            Ok(r) => records.push(r),
            Err(e) => summary
                .unreadable
                .push((abs.display().to_string(), e.to_string())),
        }
    }
    records.sort_by(|a, b| (&a.started_at, &a.run_id).cmp(&(&b.started_at, &b.run_id)));
    for rec in &records {
        match db.record(rec) {
            Ok(Recorded::New { .. }) => summary.indexed.push(rec.run_id.clone()),
            Ok(Recorded::Already { .. }) => summary.unchanged += 1,
            Err(ArchiveError::Tampered { run_id, reason }) => {
                summary.tampered.push((run_id, reason))
            }
            Err(e) => return Err(e),
        }
    }
    for (run, state) in db.audit()? {
        match state {
            ReportState::Missing => summary.missing.push(run.record.run_id),
            ReportState::Changed { now } => {
                if !summary
                    .tampered
                    .iter()
                    .any(|(id, _)| *id == run.record.run_id)
                {
                    summary.tampered.push((
                        run.record.run_id,
                        format!(
                            "its report now has digest {now}, the archive recorded {}",
                            run.record.report_digest
                        ),
                    ));
                }
            }
            ReportState::Intact | ReportState::Present => {}
        }
    }
    Ok(summary)
}

/// The inclusion proof of `run` at the current tree size, with a checkpoint of that size: the
/// newest stored one when it matches, else one signed now with `signer`.
pub fn prove(
    db: &mut Archive,
    run: &ArchivedRun,
    signer: Option<&SigningKey>,
) -> Result<proof::InclusionProof, ArchiveError> {
    let index = run.leaf_index.ok_or_else(|| ArchiveError::NotFound {
        what: format!("a log leaf of run {}", run.record.run_id),
    })?;
    let checkpoint = match (db.latest_checkpoint()?, signer) {
        (Some(cp), _) if cp.tree_size == db.tree_size()? => cp,
        (_, Some(key)) => db.checkpoint(key)?,
        (_, None) => {
            return Err(ArchiveError::Proof {
                what: "checkpoint".into(),
                reason: "no stored checkpoint covers the current tree and no signing key was given"
                    .into(),
            });
        }
    };
    let size = checkpoint.tree_size;
    let path = db.inclusion_path(index, size)?;
    let leaf = db.leaf(index)?;
    let root = db.root(size)?;
    if hex::encode(root) != checkpoint.root_hash {
        return Err(ArchiveError::Proof {
            what: "checkpoint".into(),
            reason: format!(
                "the stored checkpoint of size {size} names another root than the log has: the log was rewritten"
            ),
        });
    }
    Ok(proof::InclusionProof {
        format: proof::INCLUSION_FORMAT.to_owned(),
        run_id: run.record.run_id.clone(),
        report_digest: run.record.report_digest.clone(),
        leaf_index: index,
        tree_size: size,
        leaf_hash: hex::encode(leaf),
        audit_path: proof::to_hex(&path),
        root_hash: hex::encode(root),
        checkpoint,
    })
}

/// The consistency proof between tree sizes `old` and `new` of this log.
pub fn prove_consistency(
    db: &Archive,
    old: u64,
    new: u64,
) -> Result<proof::ConsistencyProof, ArchiveError> {
    let path = db.consistency_proof(old, new)?;
    Ok(proof::ConsistencyProof {
        format: proof::CONSISTENCY_FORMAT.to_owned(),
        old_size: old,
        new_size: new,
        old_root: hex::encode(db.root(old)?),
        new_root: hex::encode(db.root(new)?),
        path: proof::to_hex(&path),
    })
}
