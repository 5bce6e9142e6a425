//! `safe-run report ...`: verification and export of run reports, and the archive of runs
//! (list, show, rebuild-index, prove; the shared, unprivileged part lives in
//! `sr_archive::tool` so that `safe-run-verify` runs the same code).
//!
//! Exit codes: 0 when every check passed or was skipped (skips are listed), 7 (SR-EVD-002)
//! when any check failed or the report cannot be exported, 9 (SR-ARC-xxx) for archive and
//! proof failures, 2 for usage errors.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use sr_archive::tool;
use sr_common::{Diagnostic, ErrorCode};
use sr_evidence::verify::{self, Verification};
use sr_evidence::{SigningKey, export, keys, report};

use crate::cmd::key::{KeyLocation, load_signing_key};
use crate::output::{Format, fail, print_stdout};

/// Subcommands of `safe-run report`.
#[derive(Subcommand)]
pub enum ReportCommand {
    /// Verify a run report, its event chain and the files it names, offline; with --proof also
    /// its inclusion in the transparency log. With only --events, verify an event log alone
    /// (reports an incomplete prefix after a crash).
    Verify(tool::VerifyArgs),
    /// List archived runs, newest first, with filters (since, status, policy, command,
    /// backend, blocked).
    List(tool::ListArgs),
    /// A human summary of one archived run: how it ended, limits hit, what was enforced,
    /// blocked destinations, report digest, whether it is archived and in the log.
    Show(tool::ShowArgs),
    /// Index every run directory on disk that is not archived yet; name tampered and missing
    /// reports.
    RebuildIndex(RebuildArgs),
    /// Write the inclusion proof of a run's report in the transparency log (JSON).
    Prove(ProveArgs),
    /// Export a verified report for supply-chain tools.
    Export {
        /// Export format.
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// The run_report.json to export (it is verified first).
        #[arg(value_name = "REPORT")]
        report: PathBuf,
        /// Where to write the envelope (default: stdout).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Signing key file for the envelope.
        #[command(flatten)]
        signing: KeyLocation,
        /// The public key that sealed the report, when it is not the exporting key (PEM or
        /// base64). Without it the report must have been signed by the exporting key.
        #[arg(long, value_name = "PUBKEY")]
        report_key: Option<PathBuf>,
    },
    /// Verify a DSSE envelope written by `report export` and print its statement.
    VerifyEnvelope {
        /// The envelope file.
        #[arg(value_name = "ENVELOPE")]
        envelope: PathBuf,
        /// The trusted public key (PEM or base64).
        #[arg(long, value_name = "PUBKEY")]
        key: PathBuf,
        /// The trusted public key of the report's signer, when it is not the envelope's.
        #[arg(long, value_name = "PUBKEY")]
        report_key: Option<PathBuf>,
    },
}

/// Arguments of `safe-run report rebuild-index`.
#[derive(Args)]
#[command(after_help = "Examples:
  safe-run report rebuild-index
  safe-run report rebuild-index --runs /srv/safe-run/runs --archive /tmp/archive.db --format json

Reads every <runs>/<runId>/run_report.json, oldest first, and indexes (and appends to the log)
each run not archived yet. Never rewrites the log: a report whose bytes changed since it was
archived is named TAMPERED and left as archived; an archived run whose dir is gone is named
missing. Exit 9 (SR-ARC-003) when any is.")]
pub struct RebuildArgs {
    /// The run-directory base (default: the operator config's runDir / SAFE_RUN_WORKDIR_BASE).
    #[arg(long, value_name = "DIR")]
    pub runs: Option<PathBuf>,
    #[command(flatten)]
    location: tool::ArchiveLocation,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: tool::Format,
}

/// Arguments of `safe-run report prove`.
#[derive(Args)]
#[command(after_help = "Examples:
  safe-run report prove 3f9c0a1b2c4d --out proof.json
  safe-run report verify /tmp/safe-run/runs/3f9c0a1b2c4d/run_report.json --proof proof.json --key signing.pub

The proof names leafIndex, treeSize, leafHash, auditPath (hex, leaf to root), rootHash and the
signed checkpoint of that tree: the newest stored one if it covers the whole log, else one
signed now with the report-signing key (--key, $SAFE_RUN_KEY, the operator config's keyPath).")]
pub struct ProveArgs {
    /// A run id, run directory, or run_report.json path.
    #[arg(value_name = "RUN")]
    pub run: String,
    /// Where to write the proof (default: stdout).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    location: tool::ArchiveLocation,
    /// The log's signing key (the report-signing key).
    #[command(flatten)]
    signing: KeyLocation,
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// An in-toto Statement v1 (SLSA provenance v1 predicate) in a DSSE envelope.
    Intoto,
}

/// Runs the subcommand; returns the process exit code.
pub fn execute(command: ReportCommand) -> u8 {
    match command {
        ReportCommand::Verify(mut args) => {
            // A run dir or a run id names its report; a target that names none is a usage
            // error (exit 2), never a failed verification.
            if let Some(target) = args.report.take() {
                match super::report_target::resolve(&target) {
                    Ok(report) => args.report = Some(report),
                    Err(message) => {
                        return verify_usage(
                            &message,
                            "give a run_report.json, a run directory, or a run id (see `ls` of the run directory base)",
                        );
                    }
                }
            }
            if let Some(e) = args.events.as_deref().filter(|e| !e.is_file()) {
                return verify_usage(
                    &format!(
                        "the event log {} does not exist or is not a file",
                        e.display()
                    ),
                    "give the events.jsonl of a run directory",
                );
            }
            if let Some(k) = args.key.as_deref()
                && let Err(e) = keys::read_public_key(k)
            {
                return verify_usage(
                    &format!("cannot use --key: {e}"),
                    "give the signer's public key: the PEM from `safe-run key export-public`, or its base64",
                );
            }
            tool::verify(args)
        }
        ReportCommand::List(args) => tool::list(args),
        ReportCommand::Show(args) => tool::show(args),
        ReportCommand::RebuildIndex(args) => rebuild_index(args),
        ReportCommand::Prove(args) => prove(args),
        ReportCommand::Export {
            format: ExportFormat::Intoto,
            report,
            out,
            signing,
            report_key,
        } => run_export(report, out, signing, report_key),
        ReportCommand::VerifyEnvelope {
            envelope,
            key,
            report_key,
        } => run_verify_envelope(envelope, key, report_key),
    }
}

fn verification_failed(v: &Verification) -> Diagnostic {
    v.failure_diagnostic().unwrap_or_else(|| {
        Diagnostic::new(
            ErrorCode::EvidenceReport,
            "evidence.verify",
            "verification failed".to_owned(),
            "see the FAIL lines",
        )
    })
}

/// Opens the archive (`SAFE_RUN_ARCHIVE` or the default) on a thread of its own, so that a run
/// can open it while its workload runs.
pub fn open_archive_in_background()
-> std::thread::JoinHandle<Result<sr_archive::Archive, sr_archive::ArchiveError>> {
    std::thread::spawn(|| sr_archive::Archive::open_appending(&sr_archive::archive_path(None)))
}

/// What [`open_archive_in_background`] opened (or why not).
pub fn opened_archive(
    handle: std::thread::JoinHandle<Result<sr_archive::Archive, sr_archive::ArchiveError>>,
) -> Result<sr_archive::Archive, sr_archive::ArchiveError> {
    handle
        .join()
        .unwrap_or_else(|_| sr_archive::Archive::open_appending(&sr_archive::archive_path(None)))
}

/// Indexes a finished run whose report is durable and appends its leaf (with `signer`, also a
/// signed checkpoint) into `archive`. A failure is a warning (SR-ARC-001), never a failed run:
/// the report exists, and `safe-run report rebuild-index` indexes it later.
pub fn archive_finished_run(
    run_dir: &std::path::Path,
    archive: Result<sr_archive::Archive, sr_archive::ArchiveError>,
    signer: Option<&SigningKey>,
    quiet: bool,
) {
    let indexed = archive.and_then(|mut db| sr_archive::index_run_in(&mut db, run_dir, signer));
    match indexed {
        Ok(done) if !quiet => {
            eprintln!(
                "safe-run: run {} archived; log leaf {}",
                done.run_id,
                done.recorded.leaf_index()
            );
        }
        Ok(_) => {}
        Err(e) => {
            let mut d = e.to_diagnostic();
            d.message = format!("the run is not archived: {}", d.message);
            d.hint = format!("{}; then `safe-run report rebuild-index`", d.hint);
            eprintln!("warning: {d}");
        }
    }
}

fn rebuild_index(args: RebuildArgs) -> u8 {
    let base = match args.runs {
        Some(b) => b,
        None => match sr_policy::OperatorConfig::load() {
            Ok(c) => PathBuf::from(c.run_dir),
            Err(d) => return tool::fail(&[d], args.format),
        },
    };
    let summary = sr_archive::Archive::open(&args.location.path())
        .and_then(|mut db| sr_archive::rebuild(&mut db, &base));
    let summary = match summary {
        Ok(s) => s,
        Err(e) => return tool::fail(&[e.to_diagnostic()], args.format),
    };
    match args.format {
        tool::Format::Json => {
            tool::print_out(&format!(
                "{:#}\n",
                serde_json::json!({"ok": summary.tampered.is_empty() && summary.missing.is_empty(), "summary": summary})
            ));
        }
        tool::Format::Text => {
            let mut text = format!(
                "indexed {} new run(s), {} already archived, from {}\n",
                summary.indexed.len(),
                summary.unchanged,
                base.display()
            );
            for (id, why) in &summary.tampered {
                text.push_str(&format!("TAMPERED  {id}  {why}\n"));
            }
            for id in &summary.missing {
                text.push_str(&format!("missing   {id}  its run dir or report is gone\n"));
            }
            for (path, why) in &summary.unreadable {
                text.push_str(&format!("skipped   {path}  {why}\n"));
            }
            tool::print_out(&text);
        }
    }
    if summary.tampered.is_empty() && summary.missing.is_empty() {
        return 0;
    }
    let d = Diagnostic::new(
        ErrorCode::ArchiveTampered,
        "archive.rebuild",
        format!(
            "{} tampered and {} missing report(s)",
            summary.tampered.len(),
            summary.missing.len()
        ),
        "the archive and the log keep the original digests; see the lines above",
    );
    tool::fail(&[d], tool::Format::Text)
}

fn prove(args: ProveArgs) -> u8 {
    let result = args.location.open_existing().and_then(|mut db| {
        let run = db.resolve(&args.run)?;
        // Only load (or create) the key when no stored checkpoint covers the tree.
        let covered = db
            .latest_checkpoint()?
            .is_some_and(|cp| db.tree_size().is_ok_and(|n| n == cp.tree_size));
        let key = if covered {
            None
        } else {
            Some(load_signing_key(args.signing.key.as_deref()))
        };
        match key {
            Some(Err(d)) => Ok(Err(d)),
            Some(Ok(k)) => sr_archive::prove(&mut db, &run, Some(&k)).map(Ok),
            None => sr_archive::prove(&mut db, &run, None).map(Ok),
        }
    });
    let proof = match result {
        Ok(Ok(p)) => p,
        Ok(Err(d)) => return fail(&[d], Format::Text),
        Err(e) => return fail(&[e.to_diagnostic()], Format::Text),
    };
    let text = serde_json::to_string_pretty(&proof).unwrap_or_default() + "\n";
    match args.out {
        None => print_stdout(&text),
        Some(path) => match std::fs::write(&path, text) {
            Ok(()) => {
                eprintln!(
                    "wrote {}: leaf {} of {}; check it with `safe-run report verify REPORT --proof {}`",
                    path.display(),
                    proof.leaf_index,
                    proof.tree_size,
                    path.display()
                );
                0
            }
            Err(e) => {
                let d = Diagnostic::new(
                    ErrorCode::ArchiveProof,
                    "log.prove",
                    format!("cannot write {}: {e}", path.display()),
                    "choose a writable --out path",
                );
                fail(&[d], Format::Text)
            }
        },
    }
}

fn verify_usage(message: &str, hint: &str) -> u8 {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr().lock(),
        "error: {message}\n  hint: {hint}\n(usage error: nothing was verified)"
    );
    2
}

fn run_export(
    report_path: PathBuf,
    out: Option<PathBuf>,
    signing: KeyLocation,
    report_key: Option<PathBuf>,
) -> u8 {
    let report_key = match report_key.as_deref().map(keys::read_public_key).transpose() {
        Ok(k) => k,
        Err(e) => return fail(&[e.to_diagnostic()], Format::Text),
    };
    let v = verify::verify(&report_path, None, None);
    if !v.ok() {
        eprint!("{}", v.render_text());
        let mut d = verification_failed(&v);
        d.path = "evidence.export".into();
        d.hint = "only a report that verifies can be exported".into();
        return fail(&[d], Format::Text);
    }
    let loaded = report::read_report(&report_path).map_err(|e| e.to_diagnostic());
    let key = load_signing_key(signing.key.as_deref());
    let envelope = loaded.and_then(|r| {
        key.and_then(|k| {
            export::export_intoto(&r, &k, report_key.as_ref()).map_err(|e| e.to_diagnostic())
        })
    });
    let envelope = match envelope {
        Ok(e) => e,
        Err(d) => return fail(&[d], Format::Text),
    };
    let text = match serde_json::to_string_pretty(&envelope) {
        Ok(t) => t + "\n",
        Err(e) => {
            let d = Diagnostic::new(
                ErrorCode::EvidenceReport,
                "evidence.export",
                e.to_string(),
                "",
            );
            return fail(&[d], Format::Text);
        }
    };
    match out {
        None => crate::output::print_stdout(&text),
        Some(path) => match std::fs::write(&path, text) {
            Ok(()) => 0,
            Err(e) => {
                let d = Diagnostic::new(
                    ErrorCode::EvidenceReport,
                    "evidence.export",
                    format!("cannot write {}: {e}", path.display()),
                    "choose a writable --out path",
                );
                fail(&[d], Format::Text)
            }
        },
    }
}

fn run_verify_envelope(envelope: PathBuf, key: PathBuf, report_key: Option<PathBuf>) -> u8 {
    let key = match keys::read_public_key(&key) {
        Ok(k) => k,
        Err(e) => return fail(&[e.to_diagnostic()], Format::Text),
    };
    let report_key = match report_key.as_deref().map(keys::read_public_key).transpose() {
        Ok(k) => k,
        Err(e) => return fail(&[e.to_diagnostic()], Format::Text),
    };
    let result = std::fs::read(&envelope)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice::<export::Envelope>(&b).map_err(|e| e.to_string()))
        .and_then(|env| export::verify_envelope(&env, &key, report_key.as_ref()));
    match result {
        Ok(verified) => {
            // `verify-envelope ... | head` closes the pipe early; that is not an error.
            crate::output::print_stdout(&format!("{:#}\n", verified.statement));
            eprintln!("PASS  envelope  ed25519 keyid={}", verified.envelope_keyid);
            if verified.report_keyid == verified.envelope_keyid {
                eprintln!(
                    "PASS  report    sealed by the same key ({})",
                    verified.report_keyid
                );
            } else {
                eprintln!(
                    "PASS  report    sealed by key {} (given with --report-key), exported by key {}",
                    verified.report_keyid, verified.envelope_keyid
                );
            }
            0
        }
        Err(e) => {
            let d = Diagnostic::new(
                ErrorCode::EvidenceReport,
                "evidence.envelope",
                format!("{}: {e}", envelope.display()),
                "the envelope was changed, or the key is not the signer's (of the envelope, or of the report it carries)",
            );
            fail(&[d], Format::Text)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;
    use sr_evidence::report::*;
    use sr_evidence::{ChainWriter, EventSink, SigningKey, SystemClock, events};

    use super::*;

    /// A run directory with `n` events (ending in cleanup.done unless `crashed`) and, unless
    /// crashed, a signed report.
    fn make_run(dir: &Path, n: usize, crashed: bool, key: &SigningKey) {
        let plan: Vec<String> = events::all_names();
        let mut chain = ChainWriter::create(dir, &plan, Box::new(SystemClock)).unwrap();
        chain
            .emit(events::RUN_PREPARE, json!({"runId": "t"}))
            .unwrap();
        for i in 0..n {
            chain
                .emit(events::RESOURCE_SAMPLE, json!({ "i": i }))
                .unwrap();
        }
        if crashed {
            return;
        }
        chain
            .emit(events::CLEANUP_DONE, json!({"ok": true}))
            .unwrap();
        let summary = chain.finish().unwrap();
        std::fs::write(dir.join("stdout"), b"out\n").unwrap();
        let (digest, bytes) = sr_evidence::verify::digest_file(&dir.join("stdout")).unwrap();
        let r = RunReport {
            schema_version: SCHEMA_VERSION.into(),
            run: RunInfo {
                id: "t".into(),
                backend: "sandbox".into(),
                started_at: "2026-11-23T11:20:00Z".into(),
                ended_at: "2026-11-23T11:20:01Z".into(),
                duration_ms: 1000,
                host: HostInfo {
                    kernel: "6.18.0".into(),
                    arch: "x86_64".into(),
                },
                safe_run_version: "0.1.0".into(),
            },
            policy: PolicyInfo {
                name: "t".into(),
                digest: format!("sha256:{}", "a".repeat(64)),
                path: None,
                overrides: None,
            },
            inputs: vec![],
            enforcement: Enforcement {
                network: NetworkFacts {
                    mode: "none".into(),
                    ..Default::default()
                },
                ..Default::default()
            },
            timeline: Timeline {
                head: String::new(),
                count: summary.count,
                dropped: summary.dropped,
                complete: true,
            },
            resources: Resources::default(),
            network_audit: None,
            exit: ExitInfo {
                status: ExitStatus::Exited,
                code: Some(0),
                signal: None,
                reason: None,
            },
            outputs: vec![Output {
                name: "stdout".into(),
                path: "stdout".into(),
                bytes,
                digest,
                bytes_seen: Some(bytes),
                truncated: false,
                limit_bytes: None,
                on_limit: None,
            }],
            cleanup: Cleanup {
                ok: true,
                removed: vec![],
                errors: vec![],
            },
            mounts: None,
            execs: Vec::new(),
            transfers: Vec::new(),
            pool: None,
            warnings: vec![],
            integrity: None,
        };
        let sealed = seal(r, &summary.head, Some(key)).unwrap();
        write_report(&dir.join(REPORT_FILE), &sealed).unwrap();
    }

    fn write_pub(path: &Path, key: &SigningKey) {
        std::fs::write(path, keys::public_key_pem(&key.verifying_key()).unwrap()).unwrap();
    }

    fn verify_cmd(report: Option<&Path>, events: Option<&Path>, key: Option<&Path>) -> u8 {
        execute(ReportCommand::Verify(tool::VerifyArgs {
            report: report.map(Path::to_owned),
            events: events.map(Path::to_owned),
            key: key.map(Path::to_owned),
            proof: None,
            check_host_files: false,
            format: tool::Format::Json,
        }))
    }

    #[test]
    fn verify_exits_0_when_intact_and_7_on_any_failure() {
        let tmp = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[3; 32]);
        make_run(tmp.path(), 5, false, &key);
        let report = tmp.path().join(REPORT_FILE);
        let good = tmp.path().join("good.pub");
        let bad = tmp.path().join("bad.pub");
        write_pub(&good, &key);
        write_pub(&bad, &SigningKey::from_bytes(&[4; 32]));
        assert_eq!(verify_cmd(Some(&report), None, Some(&good)), 0);
        assert_eq!(verify_cmd(Some(&report), None, Some(&bad)), 7);
        // A key file that is not a key is a usage error, not a failed verification.
        assert_eq!(verify_cmd(Some(&report), None, Some(&report)), 2);

        let events = tmp.path().join("events.jsonl");
        let mut bytes = std::fs::read(&events).unwrap();
        bytes[40] ^= 0x01;
        std::fs::write(&events, &bytes).unwrap();
        assert_eq!(verify_cmd(Some(&report), None, Some(&good)), 7);
        assert_eq!(verify_cmd(None, Some(&events), None), 7);
    }

    #[test]
    fn events_alone_after_a_crash_verify_as_incomplete() {
        let tmp = tempfile::tempdir().unwrap();
        make_run(tmp.path(), 5, true, &SigningKey::from_bytes(&[3; 32]));
        let v = sr_evidence::verify::verify_events(&tmp.path().join("events.jsonl"));
        assert!(v.ok() && !v.complete);
        assert_eq!(
            verify_cmd(None, Some(&tmp.path().join("events.jsonl")), None),
            0
        );
        assert_eq!(verify_cmd(None, None, None), 2);
    }

    #[test]
    fn export_writes_an_envelope_that_verifies_and_tampering_fails() {
        let tmp = tempfile::tempdir().unwrap();
        let key_file = tmp.path().join("keys/signing.key");
        let (signer, _) = keys::load_or_create(&key_file).unwrap();
        make_run(tmp.path(), 2, false, &signer);
        let envelope = tmp.path().join("envelope.json");
        let code = execute(ReportCommand::Export {
            format: ExportFormat::Intoto,
            report: tmp.path().join(REPORT_FILE),
            out: Some(envelope.clone()),
            signing: KeyLocation {
                key: Some(key_file),
            },
            report_key: None,
        });
        assert_eq!(code, 0);
        let public = tmp.path().join("signer.pub");
        write_pub(&public, &signer);
        let verify_env = |key: &Path| {
            execute(ReportCommand::VerifyEnvelope {
                envelope: envelope.clone(),
                key: key.to_owned(),
                report_key: None,
            })
        };
        assert_eq!(verify_env(&public), 0);
        let other = tmp.path().join("other.pub");
        write_pub(&other, &SigningKey::from_bytes(&[4; 32]));
        assert_eq!(verify_env(&other), 7);
        let text = std::fs::read_to_string(&envelope).unwrap();
        let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        doc["payloadType"] = json!("application/json");
        std::fs::write(&envelope, doc.to_string()).unwrap();
        assert_eq!(verify_env(&public), 7);
    }

    /// Issue 14 item 1: the report was sealed by key A; exporting it with key B used to
    /// succeed, and the envelope then verified under B alone.
    #[test]
    fn export_refuses_a_report_sealed_by_another_key_unless_named() {
        let tmp = tempfile::tempdir().unwrap();
        let sealer = SigningKey::from_bytes(&[3; 32]);
        make_run(tmp.path(), 2, false, &sealer);
        let key_file = tmp.path().join("keys/exporter.key");
        let (exporter, _) = keys::load_or_create(&key_file).unwrap();
        let envelope = tmp.path().join("envelope.json");
        let export = |report_key: Option<PathBuf>| {
            execute(ReportCommand::Export {
                format: ExportFormat::Intoto,
                report: tmp.path().join(REPORT_FILE),
                out: Some(envelope.clone()),
                signing: KeyLocation {
                    key: Some(key_file.clone()),
                },
                report_key,
            })
        };
        assert_eq!(export(None), 7);
        assert!(!envelope.exists());

        let sealer_pub = tmp.path().join("sealer.pub");
        write_pub(&sealer_pub, &sealer);
        let exporter_pub = tmp.path().join("exporter.pub");
        write_pub(&exporter_pub, &exporter);
        assert_eq!(export(Some(exporter_pub.clone())), 7);
        assert_eq!(export(Some(sealer_pub.clone())), 0);
        let verify_env = |key: &Path, report_key: Option<&Path>| {
            execute(ReportCommand::VerifyEnvelope {
                envelope: envelope.clone(),
                key: key.to_owned(),
                report_key: report_key.map(Path::to_owned),
            })
        };
        // The exporter's key alone no longer vouches for a report someone else sealed.
        assert_eq!(verify_env(&exporter_pub, None), 7);
        assert_eq!(verify_env(&exporter_pub, Some(&exporter_pub)), 7);
        assert_eq!(verify_env(&exporter_pub, Some(&sealer_pub)), 0);
    }

    #[test]
    fn export_refuses_a_report_that_does_not_verify() {
        let tmp = tempfile::tempdir().unwrap();
        make_run(tmp.path(), 2, false, &SigningKey::from_bytes(&[3; 32]));
        std::fs::write(tmp.path().join("stdout"), b"changed\n").unwrap();
        let code = execute(ReportCommand::Export {
            format: ExportFormat::Intoto,
            report: tmp.path().join(REPORT_FILE),
            out: Some(tmp.path().join("envelope.json")),
            signing: KeyLocation {
                key: Some(tmp.path().join("k")),
            },
            report_key: None,
        });
        assert_eq!(code, 7);
        assert!(!tmp.path().join("envelope.json").exists());
    }
}
