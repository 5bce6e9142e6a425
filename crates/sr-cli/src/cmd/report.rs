//! `safe-run report ...`: offline verification and export of run reports.
//!
//! Exit codes: 0 when every check passed or was skipped (skips are listed), 7 (SR-EVD-002)
//! when any check failed or the report cannot be exported, 2 for usage errors.

use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};
use sr_common::{Diagnostic, ErrorCode};
use sr_evidence::verify::{self, Verification};
use sr_evidence::{export, keys, report};

use crate::cmd::key::{KeyLocation, load_signing_key};
use crate::output::{Format, exit_code, fail};

/// Subcommands of `safe-run report`.
#[derive(Subcommand)]
pub enum ReportCommand {
    /// Verify a run report, its event chain and the files it names, offline. With only
    /// --events, verify an event log alone (reports an incomplete prefix after a crash).
    Verify {
        /// The run_report.json to verify.
        #[arg(value_name = "REPORT", required_unless_present = "events")]
        report: Option<PathBuf>,
        /// The event log (default: events.jsonl beside the report).
        #[arg(long, value_name = "FILE")]
        events: Option<PathBuf>,
        /// The trusted public key (PEM from `safe-run key export-public`, or base64). Without
        /// it the report's embedded key is used, which proves integrity but not who signed.
        #[arg(long, value_name = "PUBKEY")]
        key: Option<PathBuf>,
        /// Also re-hash the inputs' host files (binary, rootfs, kernel) at their recorded
        /// paths. Only meaningful on the host that ran the workload; off by default.
        #[arg(long)]
        check_host_files: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
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

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// An in-toto Statement v1 (SLSA provenance v1 predicate) in a DSSE envelope.
    Intoto,
}

/// Runs the subcommand; returns the process exit code.
pub fn execute(command: ReportCommand) -> u8 {
    match command {
        ReportCommand::Verify {
            report,
            events,
            key,
            check_host_files,
            format,
        } => run_verify(
            report,
            events,
            key,
            verify::VerifyOptions { check_host_files },
            format,
        ),
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
    let names: Vec<&str> = v.failures().map(|c| c.name.as_str()).collect();
    Diagnostic::new(
        ErrorCode::EvidenceReport,
        "evidence.verify",
        format!("verification failed: {}", names.join(", ")),
        "the report, its event log or a file it names was changed, or the key is not the signer's; see the FAIL lines",
    )
}

fn run_verify(
    report: Option<PathBuf>,
    events: Option<PathBuf>,
    key: Option<PathBuf>,
    options: verify::VerifyOptions,
    format: Format,
) -> u8 {
    let key = match key.as_deref().map(keys::read_public_key).transpose() {
        Ok(k) => k,
        Err(e) => return fail(&[e.to_diagnostic()], format),
    };
    let v = match (&report, &events) {
        (Some(r), e) => verify::verify_with(r, e.as_deref(), key.as_ref(), options),
        (None, Some(e)) => verify::verify_events(e),
        (None, None) => {
            eprintln!("error: give REPORT or --events FILE");
            return 2;
        }
    };
    let ok = v.ok();
    match format {
        Format::Text => {
            print!("{}", v.render_text());
            if ok {
                let skipped = v
                    .checks
                    .iter()
                    .filter(|c| c.status == verify::Status::Skip)
                    .count();
                let not_requested = v
                    .checks
                    .iter()
                    .filter(|c| c.status == verify::Status::NotRequested)
                    .count();
                let what = if report.is_some() {
                    "report"
                } else {
                    "event log"
                };
                let completeness = if v.complete { "complete" } else { "INCOMPLETE" };
                println!(
                    "verified: {what} is intact ({completeness}; {skipped} check(s) skipped, {not_requested} not requested)"
                );
                0
            } else {
                fail(&[verification_failed(&v)], format)
            }
        }
        Format::Json => {
            let errors: Vec<Diagnostic> = if ok {
                vec![]
            } else {
                vec![verification_failed(&v)]
            };
            let doc = serde_json::json!({
                "ok": ok, "complete": v.complete, "checks": v.checks, "errors": errors,
            });
            println!("{doc:#}");
            if ok {
                0
            } else {
                exit_code(ErrorCode::EvidenceReport.exit_code())
            }
        }
    }
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
        None => {
            print!("{text}");
            0
        }
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
            println!("{:#}", verified.statement);
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
        let plan: Vec<String> = events::ALL.iter().map(|s| s.to_string()).collect();
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
        execute(ReportCommand::Verify {
            report: report.map(Path::to_owned),
            events: events.map(Path::to_owned),
            key: key.map(Path::to_owned),
            check_host_files: false,
            format: Format::Json,
        })
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
        // A key file that is not a key is SR-EVD-002 too.
        assert_eq!(verify_cmd(Some(&report), None, Some(&report)), 7);

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
