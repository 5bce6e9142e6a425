//! `report verify [--proof]`: the report, its events, and its inclusion in the log, offline.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;
use sr_common::{Diagnostic, ErrorCode};
use sr_evidence::verify::{self, Check, Status};

use super::{Format, fail, print_out, read_json, read_key, usage};
use crate::proof::InclusionProof;

/// Arguments of `report verify`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:
  safe-run report verify /tmp/safe-run/runs/3f9c0a1b2c4d/run_report.json --key signing.pub
  safe-run report verify run_report.json --proof proof.json --key signing.pub
  safe-run report verify --events events.jsonl        # the event log alone

Offline: reads only the files given. With --proof (from `safe-run report prove`), also checks
that this exact report file is leaf `leafIndex` of the log whose signed checkpoint the proof
carries. --key pins the signer of both the report and the checkpoint. Exit 0 when no check
failed, 7 (SR-EVD-002) when the report or events fail, 9 (SR-ARC-004) when only the proof fails.")]
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
    /// Also re-hash the inputs' host files (binary, rootfs, kernel) at their recorded paths.
    /// Only meaningful on the host that ran the workload; off by default, so a report verifies
    /// anywhere with only the public key.
    #[arg(long)]
    pub check_host_files: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// `report verify [--proof]`.
pub fn verify(args: VerifyArgs) -> u8 {
    let key = match read_key(args.key.as_deref()) {
        Ok(k) => k,
        Err(d) => return fail(&[d], args.format),
    };
    let mut v = match (&args.report, &args.events) {
        (Some(r), e) => verify::verify_with(
            r,
            e.as_deref(),
            key.as_ref(),
            verify::VerifyOptions {
                check_host_files: args.check_host_files,
            },
        ),
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
    let diagnostic = if evidence_ok {
        (!ok).then(|| {
            Diagnostic::new(
                ErrorCode::ArchiveProof,
                "log.proof",
                format!("verification failed: {}", failed.join(", ")),
                "the proof is not for this report, was changed, or its checkpoint was signed by another key; see the FAIL lines",
            )
        })
    } else {
        v.failure_diagnostic()
    };
    match args.format {
        Format::Text => {
            print_out(&v.render_text());
            match diagnostic {
                None => {
                    let skipped = v.checks.iter().filter(|c| c.status == Status::Skip).count();
                    let not_requested = v
                        .checks
                        .iter()
                        .filter(|c| c.status == Status::NotRequested)
                        .count();
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
                        "verified: {what} is intact ({completeness}{logged}; {skipped} check(s) skipped, {not_requested} not requested)\n"
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
