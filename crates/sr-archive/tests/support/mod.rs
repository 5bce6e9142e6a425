//! Run directories with real signed reports, for the archive tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use serde_json::json;
use sr_evidence::report::*;
use sr_evidence::{ChainWriter, EventSink, SigningKey, SystemClock, events};

/// The test signing key.
pub fn key() -> SigningKey {
    SigningKey::from_bytes(&[5; 32])
}

/// Options of one fake run.
pub struct Run<'a> {
    pub id: &'a str,
    pub started_ms: u64,
    pub status: ExitStatus,
    pub code: Option<i32>,
    pub policy: &'a str,
    pub argv: &'a [&'a str],
    pub blocked_rule: bool,
}

impl Default for Run<'_> {
    fn default() -> Self {
        Run {
            id: "aaaaaaaaaaaa",
            started_ms: 1_764_000_000_000,
            status: ExitStatus::Exited,
            code: Some(0),
            policy: "test",
            argv: &["/bin/true"],
            blocked_rule: false,
        }
    }
}

/// Writes `<base>/<id>/` with events.jsonl, bundle.json and a signed run_report.json.
pub fn make_run(base: &Path, run: &Run<'_>, key: &SigningKey) -> PathBuf {
    let dir = base.join(run.id);
    std::fs::create_dir_all(&dir).unwrap();
    let plan: Vec<String> = events::all_names();
    let mut chain = ChainWriter::create(&dir, &plan, Box::new(SystemClock)).unwrap();
    chain
        .emit(events::RUN_PREPARE, json!({"runId": run.id}))
        .unwrap();
    chain
        .emit(events::CLEANUP_DONE, json!({"ok": true}))
        .unwrap();
    let summary = chain.finish().unwrap();
    let argv: Vec<String> = run.argv.iter().map(|s| s.to_string()).collect();
    std::fs::write(
        dir.join("bundle.json"),
        json!({"process": {"command": argv[0], "args": argv[1..]}}).to_string(),
    )
    .unwrap();
    let network_audit = run.blocked_rule.then(|| NetworkAudit {
        rules: vec![RuleAudit {
            rule_id: "egress-0".into(),
            egress_index: 0,
            allowed_hits: 1,
            blocked_hits: 3,
        }],
        blocked: BlockedSummary {
            packets: 2,
            bytes: 120,
        },
        details: Default::default(),
    });
    let r = RunReport {
        schema_version: SCHEMA_VERSION.into(),
        run: RunInfo {
            id: run.id.into(),
            backend: "sandbox".into(),
            started_at: rfc3339_from_unix_ms(run.started_ms),
            ended_at: rfc3339_from_unix_ms(run.started_ms + 25),
            duration_ms: 25,
            host: HostInfo {
                kernel: "6.18.0".into(),
                arch: "x86_64".into(),
            },
            safe_run_version: "0.1.0".into(),
        },
        policy: PolicyInfo {
            name: run.policy.into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            path: None,
            overrides: None,
        },
        inputs: vec![Input::from_json(InputRole::Command, "command", &argv).unwrap()],
        enforcement: Enforcement {
            namespaces: vec!["mnt".into(), "pid".into(), "user".into()],
            network: NetworkFacts {
                mode: if run.blocked_rule {
                    "allowlist"
                } else {
                    "none"
                }
                .into(),
                ..Default::default()
            },
            ..Default::default()
        },
        timeline: Timeline::from_summary(&summary, true),
        resources: Resources::default(),
        network_audit,
        exit: ExitInfo {
            status: run.status,
            code: run.code,
            signal: None,
            reason: None,
        },
        outputs: vec![],
        cleanup: Cleanup {
            ok: true,
            removed: vec![],
            errors: vec![],
        },
        mounts: None,
        execs: Vec::new(),
        transfers: Vec::new(),
        pool: None,
        warnings: Vec::new(),
        integrity: None,
    };
    let sealed = seal(r, &summary.head, Some(key)).unwrap();
    write_report(&dir.join(REPORT_FILE), &sealed).unwrap();
    dir
}

/// A run id from a number: 12 hex digits.
pub fn run_id(i: u64) -> String {
    format!("{i:012x}")
}

/// The public key as a PEM file.
pub fn write_pub(path: &Path, key: &SigningKey) {
    std::fs::write(
        path,
        sr_evidence::keys::public_key_pem(&key.verifying_key()).unwrap(),
    )
    .unwrap();
}
