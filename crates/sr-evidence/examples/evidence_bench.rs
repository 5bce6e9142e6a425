//! Benchmark driver for the evidence chain (used by bench/evidence/*.sh).
//!
//! * `evidence_bench gen DIR N`: writes a run directory with N events, stdout/stderr, a signed
//!   run_report.json, the signing key (DIR/signing.key) and its public key (DIR/signing.pub).
//! * `evidence_bench verify DIR`: verifies DIR/run_report.json in-process and prints the time.
//! * `evidence_bench cost ITERATIONS`: the evidence work of one typical run (open the chain,
//!   15 events, fsync, seal, sign, write the report) against the same emits into a sink that
//!   records nothing, and prints the mean of each.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::time::Instant;

use serde_json::{Value, json};
use sr_evidence::report::{self, *};
use sr_evidence::{ChainWriter, EmitError, EventSink, SystemClock, events, keys, verify};

struct NullSink;
impl EventSink for NullSink {
    fn emit(&mut self, _: sr_evidence::events::EventType, _: Value) -> Result<(), EmitError> {
        Ok(())
    }
}

fn typical_events(sink: &mut dyn EventSink, samples: usize) {
    let d = format!("sha256:{}", "a".repeat(64));
    sink.emit(
        events::RUN_PREPARE,
        json!({"runId": "r-bench", "runDir": "/tmp/safe-run/runs/r-bench"}),
    )
    .unwrap();
    for role in ["policy", "bundle", "command", "binary"] {
        sink.emit(events::ARTIFACT_HASHED, json!({"role": role, "digest": d}))
            .unwrap();
    }
    sink.emit(events::POLICY_COMPILED, json!({"bundleDigest": d}))
        .unwrap();
    sink.emit(events::NETWORK_PLAN_GENERATED, json!({"mode": "none"}))
        .unwrap();
    sink.emit(events::SANDBOX_ENFORCED, json!({"landlockAbi": 7, "seccomp": d, "namespaces": ["ipc","mnt","net","pid","user","uts"]})).unwrap();
    sink.emit(events::PROCESS_STARTED, json!({"pid": 12345}))
        .unwrap();
    for i in 0..samples {
        sink.emit(events::RESOURCE_SAMPLE, json!({"i": i, "memoryBytes": 1_048_576 + i as u64 * 4096, "cpuUsageUs": i as u64 * 1000, "pids": 3})).unwrap();
    }
    sink.emit(
        events::PROCESS_EXITED,
        json!({"status": "exited", "code": 0}),
    )
    .unwrap();
    sink.emit(
        events::CLEANUP_DONE,
        json!({"ok": true, "removed": ["cgroup:/sys/fs/cgroup/memory/safe-run/r-bench"]}),
    )
    .unwrap();
}

fn base_report() -> RunReport {
    RunReport {
        schema_version: SCHEMA_VERSION.into(),
        run: RunInfo {
            id: "r-bench".into(),
            backend: "sandbox".into(),
            started_at: "2026-11-23T11:20:00Z".into(),
            ended_at: "2026-11-23T11:21:00Z".into(),
            duration_ms: 60000,
            host: HostInfo {
                kernel: "6.18.0".into(),
                arch: "x86_64".into(),
            },
            safe_run_version: env!("CARGO_PKG_VERSION").into(),
        },
        policy: PolicyInfo {
            name: "bench".into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            path: None,
            overrides: None,
        },
        inputs: vec![],
        enforcement: Enforcement {
            namespaces: vec!["user".into()],
            network: NetworkFacts {
                mode: "none".into(),
                ..Default::default()
            },
            ..Default::default()
        },
        timeline: Timeline {
            head: String::new(),
            count: 0,
            dropped: 0,
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
        warnings: vec![],
        integrity: None,
    }
}

fn all() -> Vec<String> {
    events::all_names()
}

fn gen_run(dir: &Path, n: usize, key: &sr_evidence::SigningKey) {
    std::fs::create_dir_all(dir).unwrap();
    let mut chain = ChainWriter::create(dir, &all(), Box::new(SystemClock)).unwrap();
    typical_events(&mut chain, n.saturating_sub(11));
    let summary = chain.finish().unwrap();
    std::fs::write(dir.join("stdout"), b"hello\n").unwrap();
    std::fs::write(dir.join("stderr"), b"").unwrap();
    let mut r = base_report();
    for name in ["stdout", "stderr"] {
        let (digest, bytes) = verify::digest_file(&dir.join(name)).unwrap();
        r.outputs.push(Output {
            name: name.into(),
            path: name.into(),
            bytes,
            digest,
            bytes_seen: Some(bytes),
            truncated: false,
            limit_bytes: None,
            on_limit: None,
        });
    }
    r.timeline.count = summary.count;
    r.timeline.dropped = summary.dropped;
    let sealed = report::seal(r, &summary.head, Some(key)).unwrap();
    report::write_report(&dir.join(REPORT_FILE), &sealed).unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("gen") => {
            let dir = Path::new(&args[2]);
            let n: usize = args[3].parse().unwrap();
            std::fs::create_dir_all(dir).unwrap();
            let (key, _) = keys::load_or_create(&dir.join("signing.key")).unwrap();
            std::fs::write(
                dir.join("signing.pub"),
                keys::public_key_pem(&key.verifying_key()).unwrap(),
            )
            .unwrap();
            let t = Instant::now();
            gen_run(&dir.join("run"), n, &key);
            eprintln!("generated {n} events in {:?}", t.elapsed());
        }
        Some("verify") => {
            let dir = Path::new(&args[2]);
            let t = Instant::now();
            let v = verify::verify(&dir.join("run").join(REPORT_FILE), None, None);
            let el = t.elapsed();
            print!("{}", v.render_text());
            println!("ok={} in {el:?}", v.ok());
        }
        Some("cost") => {
            let iters: usize = args[2].parse().unwrap();
            let base = tempfile_dir();
            let (key, _) = keys::load_or_create(&base.join("signing.key")).unwrap();
            let t = Instant::now();
            for i in 0..iters {
                gen_run(&base.join(format!("run-{i}")), 15, &key);
            }
            let with = t.elapsed() / iters as u32;
            let t = Instant::now();
            for _ in 0..iters {
                typical_events(&mut NullSink, 4);
            }
            let without = t.elapsed() / iters as u32;
            std::fs::remove_dir_all(&base).unwrap();
            println!("evidence per run (15 events, fsync, seal, sign, write report): {with:?}");
            println!("no evidence (same emits into a null sink):                      {without:?}");
        }
        _ => {
            eprintln!("usage: evidence_bench gen DIR N | verify DIR | cost ITERATIONS");
            std::process::exit(2);
        }
    }
}

fn tempfile_dir() -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("sr-evidence-cost-{}", std::process::id()));
    std::fs::create_dir_all(&p).unwrap();
    p
}
