//! The evidence commands that need no privilege and no key: list and show archived runs, verify
//! a report with an inclusion proof, check two checkpoints for consistency. `safe-run` (as
//! `report list|show|verify`, `log consistency`) and `safe-run-verify` run the same code.
//!
//! Exit codes: 0 ok; 2 usage; 7 (SR-EVD-002) the report or its event chain does not verify;
//! 8 (SR-ARC-xxx) an archive, proof or consistency failure (see docs/errors.md).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use serde_json::{Value, json};
use sr_common::{Diagnostic, ErrorCode};
use sr_evidence::verify::{self, Check, Status, Verification};
use sr_evidence::{VerifyingKey, keys};

use crate::checkpoint::Checkpoint;
use crate::proof::{ConsistencyProof, InclusionProof};
use crate::{Archive, ArchiveError, ArchivedRun, Filter, ReportState};

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

    /// Opens the archive; a read-only command on an archive that does not exist says so instead
    /// of creating one.
    pub fn open_existing(&self) -> Result<Archive, ArchiveError> {
        let path = self.path();
        if !path.exists() {
            return Err(ArchiveError::NotFound {
                what: format!("archive {} (no run was indexed there yet)", path.display()),
            });
        }
        Archive::open(&path)
    }
}

/// Arguments of `report list`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:
  safe-run report list                               # the newest 50 runs
  safe-run report list --status timeout --since 24h
  safe-run report list --policy build --command pytest --format json
  safe-run report list --blocked --limit 0           # every run that had traffic blocked
  safe-run report list --check                       # hash every report: names TAMPERED/missing

REPORT is `present` or `missing` (the run dir or report is gone); with --check, `intact` or
`TAMPERED` (the file no longer hashes to the archived digest). --check exits 8 (SR-ARC-003) when
any listed report is missing or tampered.")]
pub struct ListArgs {
    /// Runs started at or after this time: RFC 3339 (2026-12-01T00:00:00Z) or an age (90m, 24h, 7d).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Exit status: exited, signaled, timeout, oom, launchFailed, stopped, interrupted.
    #[arg(long)]
    pub status: Option<String>,
    /// Policy name, or a policy digest (sha256:…).
    #[arg(long)]
    pub policy: Option<String>,
    /// A substring of the command line.
    #[arg(long, value_name = "TEXT")]
    pub command: Option<String>,
    /// Backend (sandbox, firecracker).
    #[arg(long)]
    pub backend: Option<String>,
    /// Only runs that had network traffic blocked.
    #[arg(long, conflicts_with = "not_blocked")]
    pub blocked: bool,
    /// Only runs that had nothing blocked.
    #[arg(long)]
    pub not_blocked: bool,
    /// At most this many runs, newest first (0: all).
    #[arg(long, default_value_t = 50)]
    pub limit: u64,
    /// Hash every listed report against its archived digest (slower).
    #[arg(long)]
    pub check: bool,
    #[command(flatten)]
    /// The archive.
    pub location: ArchiveLocation,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Arguments of `report show`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:
  safe-run report show 3f9c0a1b2c4d
  safe-run report show /tmp/safe-run/runs/3f9c0a1b2c4d
  safe-run report show /tmp/safe-run/runs/3f9c0a1b2c4d/run_report.json --format json

The summary names how the run ended, which limits it hit, what was enforced (backend,
namespaces, Landlock, seccomp, cgroup limits, network), blocked destinations, the report digest
and whether the report is intact, and the run's leaf in the transparency log. Exit 8
(SR-ARC-003) when the report is missing or no longer matches the archived digest.")]
pub struct ShowArgs {
    /// A run id, run directory, or run_report.json path.
    #[arg(value_name = "RUN")]
    pub run: String,
    #[command(flatten)]
    /// The archive.
    pub location: ArchiveLocation,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Arguments of `report verify`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:
  safe-run report verify /tmp/safe-run/runs/3f9c0a1b2c4d/run_report.json --key signing.pub
  safe-run report verify run_report.json --proof proof.json --key signing.pub
  safe-run report verify --events events.jsonl        # the event log alone

Offline: reads only the files given. With --proof (from `safe-run report prove`), also checks
that this exact report file is leaf `leafIndex` of the log whose signed checkpoint the proof
carries. --key pins the signer of both the report and the checkpoint. Exit 0 when no check
failed, 7 (SR-EVD-002) when the report or events fail, 8 (SR-ARC-004) when only the proof fails.")]
pub struct VerifyArgs {
    /// The run_report.json to verify.
    #[arg(value_name = "REPORT", required_unless_present = "events")]
    pub report: Option<PathBuf>,
    /// The event log (default: events.jsonl beside the report).
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
    /// The trusted public key (PEM from `safe-run key export-public`, or base64). Without it the
    /// embedded keys are used, which proves integrity but not who signed.
    #[arg(long, value_name = "PUBKEY")]
    pub key: Option<PathBuf>,
    /// An inclusion proof from `safe-run report prove`.
    #[arg(long, value_name = "FILE", requires = "report")]
    pub proof: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Arguments of `log consistency`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:
  safe-run log consistency old.checkpoint.json new.checkpoint.json
  safe-run log consistency old.json new.json --out consistency.json     # for a witness
  safe-run-verify log consistency old.json new.json --proof consistency.json --key signing.pub

Proves that the log of NEW contains the log of OLD unchanged (RFC 6962 consistency proof,
verified per RFC 9162 section 2.1.4.2). The proof is computed from the archive, or read from
--proof on a host without it. Names the inconsistency otherwise: a smaller NEW, equal sizes with
different roots, another key, or roots the proof cannot reconcile. Exit 8 (SR-ARC-004) on any.")]
pub struct ConsistencyArgs {
    /// The older checkpoint (from `safe-run log checkpoint`).
    #[arg(value_name = "OLD")]
    pub old: PathBuf,
    /// The newer checkpoint.
    #[arg(value_name = "NEW")]
    pub new: PathBuf,
    /// A consistency proof file (instead of computing it from the archive).
    #[arg(long, value_name = "FILE")]
    pub proof: Option<PathBuf>,
    /// Write the consistency proof here (for a witness).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// The trusted public key of the log (PEM or base64).
    #[arg(long, value_name = "PUBKEY")]
    pub key: Option<PathBuf>,
    #[command(flatten)]
    /// The archive (when no --proof is given).
    pub location: ArchiveLocation,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Parses `--since`: RFC 3339, or an age such as `90m`, `24h`, `7d`, into Unix milliseconds.
pub fn parse_since(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let age = t
        .char_indices()
        .last()
        .filter(|(_, c)| matches!(c, 's' | 'm' | 'h' | 'd'))
        .and_then(|(i, unit)| {
            let n: u64 = t[..i].parse().ok()?;
            let secs = match unit {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                _ => 86_400,
            };
            n.checked_mul(secs)
        });
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let ms = match age {
        Some(secs) => now_ms.saturating_sub(secs.saturating_mul(1000)),
        None => {
            let dt = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .map_err(|e| {
                    format!("--since {t:?}: neither RFC 3339 nor an age like 24h ({e})")
                })?;
            u64::try_from(dt.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
        }
    };
    Ok(ms)
}

fn usage(message: String) -> u8 {
    eprintln!("error: {message}");
    2
}

/// `report list`.
pub fn list(args: ListArgs) -> u8 {
    let since = match args.since.as_deref().map(parse_since).transpose() {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    let filter = Filter {
        since,
        status: args.status.clone(),
        policy: args.policy.clone(),
        command: args.command.clone(),
        backend: args.backend.clone(),
        blocked: match (args.blocked, args.not_blocked) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        limit: args.limit,
    };
    let db = match args.location.open_existing() {
        Ok(db) => db,
        Err(e) => return fail(&[e.to_diagnostic()], args.format),
    };
    let runs = match db.list(&filter) {
        Ok(r) => r,
        Err(e) => return fail(&[e.to_diagnostic()], args.format),
    };
    let states: Vec<ReportState> = runs
        .iter()
        .map(|r| crate::check_report(&r.record, args.check))
        .collect();
    let bad = states
        .iter()
        .filter(|s| matches!(s, ReportState::Missing | ReportState::Changed { .. }))
        .count();
    match args.format {
        Format::Json => {
            // Serialized straight from the rows: no intermediate `Value` per run.
            #[derive(serde::Serialize)]
            struct Row<'a> {
                #[serde(flatten)]
                run: &'a ArchivedRun,
                report: &'static str,
            }
            #[derive(serde::Serialize)]
            struct Doc<'a> {
                ok: bool,
                runs: Vec<Row<'a>>,
            }
            let doc = Doc {
                ok: true,
                runs: runs
                    .iter()
                    .zip(&states)
                    .map(|(run, s)| Row {
                        run,
                        report: s.label(),
                    })
                    .collect(),
            };
            print_out(&(serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"));
        }
        Format::Text => {
            let mut text = format!(
                "{:<12}  {:<24}  {:<12}  {:>4}  {:<16}  {:<8}  {:<8}  COMMAND\n",
                "RUN", "STARTED", "STATUS", "EXIT", "POLICY", "BACKEND", "REPORT"
            );
            for (r, s) in runs.iter().zip(&states) {
                let rec = &r.record;
                let exit = rec
                    .exit_code
                    .map(|c| c.to_string())
                    .or(rec.signal.map(|s| format!("s{s}")))
                    .unwrap_or_else(|| "-".into());
                let mut status = rec.status.clone();
                if !rec.blocked.is_empty() {
                    status.push('*');
                }
                text.push_str(&format!(
                    "{:<12}  {:<24}  {:<12}  {:>4}  {:<16}  {:<8}  {:<8}  {}\n",
                    rec.run_id,
                    rec.started_at,
                    status,
                    exit,
                    rec.policy_name,
                    rec.backend,
                    s.label(),
                    rec.command
                ));
            }
            text.push_str(&format!(
                "{} run(s){}\n",
                runs.len(),
                if runs.iter().any(|r| !r.record.blocked.is_empty()) {
                    "; * had network traffic blocked"
                } else {
                    ""
                }
            ));
            print_out(&text);
        }
    }
    if args.check && bad > 0 {
        let d = Diagnostic::new(
            ErrorCode::ArchiveTampered,
            "archive.report",
            format!("{bad} listed report(s) are missing or no longer match the archived digest"),
            "see the REPORT column; the log leaves keep the original digests",
        );
        return fail(&[d], Format::Text);
    }
    0
}

/// A tree size and this run's leaf, for `show`.
fn log_position(db: &Archive, run: &ArchivedRun) -> Option<(u64, u64)> {
    Some((run.leaf_index?, db.tree_size().ok()?))
}

/// `report show`.
pub fn show(args: ShowArgs) -> u8 {
    let db = match args.location.open_existing() {
        Ok(db) => db,
        Err(e) => return fail(&[e.to_diagnostic()], args.format),
    };
    let run = match db.resolve(&args.run) {
        Ok(r) => r,
        Err(e) => return fail(&[e.to_diagnostic()], args.format),
    };
    let state = crate::check_report(&run.record, true);
    let report: Option<Value> = std::fs::read(run.record.report_path())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let position = log_position(&db, &run);
    match args.format {
        Format::Json => {
            let doc = json!({
                "ok": matches!(state, ReportState::Intact),
                "run": run,
                "report": { "path": run.record.report_path(), "state": state.label() },
                "log": position.map(|(leaf, size)| json!({"leafIndex": leaf, "treeSize": size})),
                "enforcement": report.as_ref().and_then(|r| r.get("enforcement")).cloned(),
                "networkAudit": report.as_ref().and_then(|r| r.get("networkAudit")).cloned(),
            });
            print_out(&format!("{doc:#}\n"));
        }
        Format::Text => print_out(&render_show(&run, &state, report.as_ref(), position)),
    }
    match state {
        ReportState::Intact | ReportState::Present => 0,
        ReportState::Missing => fail(
            &[ArchiveError::Tampered {
                run_id: run.record.run_id.clone(),
                reason: format!("its report {} is gone", run.record.report_path().display()),
            }
            .to_diagnostic()],
            Format::Text,
        ),
        ReportState::Changed { now } => fail(
            &[ArchiveError::Tampered {
                run_id: run.record.run_id.clone(),
                reason: format!(
                    "its report now has digest {now}, the archive recorded {}",
                    run.record.report_digest
                ),
            }
            .to_diagnostic()],
            Format::Text,
        ),
    }
}

fn join_or_none(list: &[String]) -> String {
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

/// The human summary of `report show`.
pub fn render_show(
    run: &ArchivedRun,
    state: &ReportState,
    report: Option<&Value>,
    position: Option<(u64, u64)>,
) -> String {
    let rec = &run.record;
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<11} {v}\n"));
    line("run", rec.run_id.clone());
    let how = match (rec.exit_code, rec.signal) {
        (Some(c), _) => format!("{} (exit code {c})", rec.status),
        (None, Some(s)) => format!("{} (signal {s})", rec.status),
        _ => rec.status.clone(),
    };
    line("status", how);
    line(
        "time",
        format!(
            "{} .. {} ({} ms)",
            rec.started_at, rec.ended_at, rec.duration_ms
        ),
    );
    line(
        "policy",
        format!("{} {}", rec.policy_name, rec.policy_digest),
    );
    line(
        "command",
        format!(
            "{}{}",
            rec.command,
            if rec.command_attested {
                " (matches the report's signed command digest)"
            } else {
                " (NOT attested: bundle.json missing or not matching the report's command digest)"
            }
        ),
    );
    line("limits hit", join_or_none(&rec.limits_hit));
    let mut blocked = join_or_none(&rec.blocked);
    if rec.blocked_packets > 0 {
        blocked.push_str(&format!(
            " ({} packets dropped by default)",
            rec.blocked_packets
        ));
    }
    line("blocked", blocked);
    line("backend", rec.backend.clone());
    for (i, e) in enforcement_lines(report).into_iter().enumerate() {
        line(if i == 0 { "enforced" } else { "" }, e);
    }
    line(
        "report",
        format!("{} {}", rec.report_path().display(), rec.report_digest),
    );
    line(
        "state",
        match state {
            ReportState::Intact => "intact: the file hashes to the archived digest".into(),
            ReportState::Present => "present (not hashed)".into(),
            ReportState::Missing => "MISSING: the run dir or report is gone".into(),
            ReportState::Changed { now } => format!("TAMPERED: the file now hashes to {now}"),
        },
    );
    line(
        "signed",
        rec.keyid.as_ref().map_or_else(
            || "no (evidence.sign: false)".into(),
            |k| format!("ed25519 keyid={k}"),
        ),
    );
    line(
        "archived",
        match position {
            Some((leaf, size)) => format!(
                "yes; leaf {leaf} of {size} in the transparency log (indexed {})",
                run.indexed_at
            ),
            None => format!("indexed {}, not in the log", run.indexed_at),
        },
    );
    out
}

fn enforcement_lines(report: Option<&Value>) -> Vec<String> {
    let Some(e) = report.and_then(|r| r.get("enforcement")) else {
        return vec!["(report not readable)".into()];
    };
    let strs = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = vec![format!(
        "namespaces: {}",
        join_or_none(&strs(e.get("namespaces")))
    )];
    out.push(match e.get("landlock") {
        Some(l) => format!(
            "landlock: abi {} {} ({} rules)",
            l.get("abi").unwrap_or(&Value::Null),
            l.get("status").and_then(Value::as_str).unwrap_or("?"),
            l.get("rules").and_then(Value::as_array).map_or(0, Vec::len)
        ),
        None => "landlock: not enforced".into(),
    });
    out.push(match e.get("seccomp") {
        Some(s) => format!(
            "seccomp: profile {}, filter {}, {} syscalls denied",
            s.get("profileId").and_then(Value::as_str).unwrap_or("?"),
            s.get("filterDigest").and_then(Value::as_str).unwrap_or("?"),
            s.get("deniedSyscalls").unwrap_or(&Value::Null)
        ),
        None => "seccomp: none".into(),
    });
    out.push(match e.get("cgroup") {
        Some(c) => {
            let limits: Vec<String> = c
                .get("limits")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("?")))
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "cgroup {}: {}",
                c.get("version").and_then(Value::as_str).unwrap_or("?"),
                join_or_none(&limits)
            )
        }
        None => "cgroup: none".into(),
    });
    out.push(format!(
        "network: {}",
        e.pointer("/network/mode")
            .and_then(Value::as_str)
            .unwrap_or("?")
    ));
    out
}

fn read_key(path: Option<&Path>) -> Result<Option<VerifyingKey>, Diagnostic> {
    path.map(keys::read_public_key)
        .transpose()
        .map_err(|e| e.to_diagnostic())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T, ArchiveError> {
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

fn render_checks(checks: &[Check]) -> String {
    Verification {
        checks: checks.to_vec(),
        complete: true,
    }
    .render_text()
}

/// `report verify [--proof]`.
pub fn verify(args: VerifyArgs) -> u8 {
    let key = match read_key(args.key.as_deref()) {
        Ok(k) => k,
        Err(d) => return fail(&[d], args.format),
    };
    let mut v = match (&args.report, &args.events) {
        (Some(r), e) => verify::verify(r, e.as_deref(), key.as_ref()),
        (None, Some(e)) => verify::verify_events(e),
        (None, None) => return usage("give REPORT or --events FILE".into()),
    };
    let evidence_ok = v.ok();
    if let (Some(proof_path), Some(report)) = (&args.proof, &args.report) {
        let checks = match (
            read_json::<InclusionProof>(proof_path, "inclusion proof"),
            std::fs::read(report),
        ) {
            (Ok(p), Ok(bytes)) => crate::proof::check_inclusion(&bytes, &p, key.as_ref()),
            (Err(e), _) => vec![Check {
                name: "proof.read".into(),
                status: Status::Fail,
                detail: e.to_string(),
            }],
            (_, Err(e)) => vec![Check {
                name: "proof.read".into(),
                status: Status::Fail,
                detail: format!("{}: {e}", report.display()),
            }],
        };
        v.checks.extend(checks);
    }
    let ok = v.ok();
    let failed: Vec<&str> = v.failures().map(|c| c.name.as_str()).collect();
    let diagnostic = (!ok).then(|| {
        let code = if evidence_ok {
            ErrorCode::ArchiveProof
        } else {
            ErrorCode::EvidenceReport
        };
        Diagnostic::new(
            code,
            if evidence_ok { "log.proof" } else { "evidence.verify" },
            format!("verification failed: {}", failed.join(", ")),
            if evidence_ok {
                "the proof is not for this report, was changed, or its checkpoint was signed by another key; see the FAIL lines"
            } else {
                "the report, its event log or a file it names was changed, or the key is not the signer's; see the FAIL lines"
            },
        )
    });
    match args.format {
        Format::Text => {
            print_out(&v.render_text());
            match diagnostic {
                None => {
                    let skipped = v.checks.iter().filter(|c| c.status == Status::Skip).count();
                    let what = if args.report.is_some() {
                        "report"
                    } else {
                        "event log"
                    };
                    let completeness = if v.complete { "complete" } else { "INCOMPLETE" };
                    let logged = if args.proof.is_some() {
                        "; in the log"
                    } else {
                        ""
                    };
                    print_out(&format!(
                        "verified: {what} is intact ({completeness}{logged}; {skipped} check(s) skipped)\n"
                    ));
                    0
                }
                Some(d) => fail(&[d], Format::Text),
            }
        }
        Format::Json => {
            let errors: Vec<&Diagnostic> = diagnostic.iter().collect();
            let doc =
                json!({"ok": ok, "complete": v.complete, "checks": v.checks, "errors": errors});
            print_out(&format!("{doc:#}\n"));
            diagnostic.map_or(0, |d| u8::try_from(d.code.exit_code()).unwrap_or(1))
        }
    }
}

/// `log consistency OLD NEW`.
pub fn consistency(args: ConsistencyArgs) -> u8 {
    let key = match read_key(args.key.as_deref()) {
        Ok(k) => k,
        Err(d) => return fail(&[d], args.format),
    };
    let loaded = read_checkpoint(&args.old).and_then(|o| Ok((o, read_checkpoint(&args.new)?)));
    let (old, new) = match loaded {
        Ok(c) => c,
        Err(e) => return fail(&[e.to_diagnostic()], args.format),
    };
    let proof = match &args.proof {
        Some(p) => read_json::<ConsistencyProof>(p, "consistency proof"),
        None if new.tree_size < old.tree_size => Ok(ConsistencyProof {
            // Nothing to compute: the check below names the shrink.
            format: crate::proof::CONSISTENCY_FORMAT.into(),
            old_size: old.tree_size,
            new_size: new.tree_size,
            old_root: old.root_hash.clone(),
            new_root: new.root_hash.clone(),
            path: vec![],
        }),
        None => args
            .location
            .open_existing()
            .and_then(|db| crate::prove_consistency(&db, old.tree_size, new.tree_size)),
    };
    let proof = match proof {
        Ok(p) => p,
        Err(e) => return fail(&[e.to_diagnostic()], args.format),
    };
    let checks = crate::proof::check_consistency(&old, &new, &proof, key.as_ref());
    let ok = checks.iter().all(|c| c.status != Status::Fail);
    if ok && let Some(out) = &args.out {
        let text = serde_json::to_string_pretty(&proof).unwrap_or_default() + "\n";
        if let Err(e) = std::fs::write(out, text) {
            let d = ArchiveError::Proof {
                what: format!("consistency proof {}", out.display()),
                reason: format!("cannot write: {e}"),
            };
            return fail(&[d.to_diagnostic()], args.format);
        }
    }
    let diagnostic = (!ok).then(|| {
        let failed: Vec<&str> = checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| c.name.as_str())
            .collect();
        Diagnostic::new(
            ErrorCode::ArchiveProof,
            "log.consistency",
            format!(
                "{} and {} are not consistent: {}",
                args.old.display(),
                args.new.display(),
                failed.join(", ")
            ),
            "the log was rewritten or truncated between the two checkpoints, or they come from different logs or keys; see the FAIL lines",
        )
    });
    match args.format {
        Format::Text => {
            print_out(&render_checks(&checks));
            match diagnostic {
                None => {
                    print_out(&format!(
                        "consistent: the log of size {} extends the log of size {}\n",
                        new.tree_size, old.tree_size
                    ));
                    0
                }
                Some(d) => fail(&[d], Format::Text),
            }
        }
        Format::Json => {
            let errors: Vec<&Diagnostic> = diagnostic.iter().collect();
            let doc = json!({"ok": ok, "checks": checks, "proof": proof, "errors": errors});
            print_out(&format!("{doc:#}\n"));
            diagnostic.map_or(0, |d| u8::try_from(d.code.exit_code()).unwrap_or(1))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_rfc3339_and_ages() {
        assert_eq!(
            parse_since("2026-12-01T01:00:00.5+01:00").unwrap(),
            crate::db::unix_ms("2026-12-01T00:00:00.500Z")
        );
        assert_eq!(crate::db::unix_ms("1970-01-01T00:00:01.25Z"), 1250);
        let day = parse_since("1d").unwrap();
        let now = crate::db::unix_ms(&crate::db::now_rfc3339());
        assert!(now - day >= 86_400_000 && now - day < 86_400_000 + 60_000);
        assert!(parse_since("yesterday").is_err());
        assert!(parse_since("5x").is_err());
    }
}
