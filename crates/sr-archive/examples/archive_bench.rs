//! Archive figures (bench/archive/run.sh): per-run append, proofs at 1,000,000 leaves, listing
//! 100,000 runs. Every loop has a fixed count; nothing here is a test.
//!
//! Usage: archive_bench DIR [RUNS] [LEAVES]   (defaults 100000 and 1000000)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Instant;

use sha2::{Digest, Sha256};
use sr_archive::merkle::{self};
use sr_archive::{Archive, Filter, RunRecord};
use sr_evidence::SigningKey;

fn entry(i: u64) -> [u8; 32] {
    Sha256::digest(i.to_be_bytes()).into()
}

fn record(i: u64) -> RunRecord {
    let statuses = ["exited", "exited", "exited", "timeout", "oom", "signaled"];
    RunRecord {
        run_id: format!("{i:012x}"),
        started_at: sr_evidence::report::rfc3339_from_unix_ms(1_764_000_000_000 + i * 1000),
        ended_at: sr_evidence::report::rfc3339_from_unix_ms(1_764_000_000_500 + i * 1000),
        duration_ms: 500,
        policy_name: format!("policy-{}", i % 20),
        policy_digest: format!("sha256:{}", hex::encode(entry(i % 20))),
        backend: "sandbox".into(),
        command: format!("/usr/bin/python3 -c \"job {i}\""),
        command_attested: true,
        status: statuses[(i % 6) as usize].into(),
        exit_code: Some((i % 3) as i32),
        signal: None,
        limits_hit: vec![],
        blocked: if i % 50 == 0 {
            vec!["default-drop".into()]
        } else {
            vec![]
        },
        blocked_packets: 0,
        report_digest: format!("sha256:{}", hex::encode(entry(i))),
        integrity_digest: String::new(),
        keyid: None,
        run_dir: format!("/nonexistent/runs/{i:012x}"),
    }
}

struct Stats(Vec<f64>);

impl Stats {
    fn line(&mut self, what: &str) {
        self.0.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let n = self.0.len();
        let mean = self.0.iter().sum::<f64>() / n as f64;
        let p = |q: f64| self.0[((n as f64 - 1.0) * q) as usize];
        println!(
            "{what:<44} n={n:<8} mean {mean:>9.1} µs  p50 {:>9.1}  p99 {:>9.1}  max {:>9.1}",
            p(0.5),
            p(0.99),
            p(1.0)
        );
    }
}

fn time_us<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed().as_secs_f64() * 1e6)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = Path::new(args.get(1).map_or("/tmp/sr-archive-bench", String::as_str));
    let runs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let leaves: u64 = args
        .get(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    std::fs::create_dir_all(dir).unwrap();
    let key = SigningKey::from_bytes(&[9; 32]);

    // 1. RUNS runs, each indexed + appended in its own transaction (synchronous=FULL), exactly
    //    as `safe-run run` does it (without the checkpoint signature, measured separately).
    let runs_db = dir.join("runs.db");
    let _ = std::fs::remove_file(&runs_db);
    let _ = std::fs::remove_file(dir.join("runs.db-wal"));
    let _ = std::fs::remove_file(dir.join("runs.db-shm"));
    let mut db = Archive::open(&runs_db).unwrap();
    let mut all = Stats(Vec::new());
    let mut last = Stats(Vec::new());
    let t0 = Instant::now();
    for i in 0..runs {
        let (_, us) = time_us(|| db.record(&record(i)).unwrap());
        all.0.push(us);
        if i >= runs.saturating_sub(1000) {
            last.0.push(us);
        }
    }
    println!(
        "# {runs} runs indexed in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    all.line(&format!("record (row + leaf, 1 txn), all {runs}"));
    last.line("record, the last 1000");
    let mut cps = Stats(Vec::new());
    for _ in 0..200 {
        cps.0.push(time_us(|| db.checkpoint(&key).unwrap()).1);
    }
    cps.line(&format!("sign + store a checkpoint at {runs}"));

    // 2. `report list` over RUNS runs.
    let lists: [(&str, Filter); 5] = [
        (
            "list newest 50",
            Filter {
                limit: 50,
                ..Default::default()
            },
        ),
        (
            "list --status timeout (limit 50)",
            Filter {
                status: Some("timeout".into()),
                limit: 50,
                ..Default::default()
            },
        ),
        (
            "list --command 'job 4242' (scan)",
            Filter {
                command: Some("job 4242\"".into()),
                limit: 50,
                ..Default::default()
            },
        ),
        (
            "list --blocked --limit 0",
            Filter {
                blocked: Some(true),
                ..Default::default()
            },
        ),
        ("list --limit 0 (every row)", Filter::default()),
    ];
    for (what, f) in lists {
        let mut s = Stats(Vec::new());
        let mut rows = 0;
        for _ in 0..20 {
            let (r, us) = time_us(|| db.list(&f).unwrap());
            rows = r.len();
            s.0.push(us);
        }
        s.line(&format!("{what} ({rows} rows)"));
    }
    drop(db);

    // 3. The log alone at LEAVES leaves (appended in batches of 10,000), then proofs.
    let log_db = dir.join("log.db");
    for f in ["log.db", "log.db-wal", "log.db-shm"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let mut log = Archive::open(&log_db).unwrap();
    let t0 = Instant::now();
    let mut batch = Vec::with_capacity(10_000);
    let mut i = 0;
    while i < leaves {
        batch.clear();
        batch.extend((i..(i + 10_000).min(leaves)).map(entry));
        log.append_entries(&batch).unwrap();
        i += batch.len() as u64;
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "# {leaves} leaves appended in batches of 10000: {secs:.1} s ({:.1} µs per leaf)",
        secs * 1e6 / leaves as f64
    );
    let n = log.tree_size().unwrap();
    let (root, us) = time_us(|| log.root(n).unwrap());
    println!("root of {n} leaves: {us:.1} µs");
    let mut prove = Stats(Vec::new());
    let mut verify = Stats(Vec::new());
    let mut bytes = Stats(Vec::new());
    let cp = sr_archive::Checkpoint::sign(n, &root, "2026-12-02T00:00:00Z", &key);
    for k in 0..1000u64 {
        let m = (k * 7_919_993) % n;
        let (p, us) = time_us(|| {
            let path = log.inclusion_path(m, n).unwrap();
            sr_archive::proof::InclusionProof {
                format: sr_archive::proof::INCLUSION_FORMAT.into(),
                run_id: format!("{m:012x}"),
                report_digest: format!("sha256:{}", hex::encode(entry(m))),
                leaf_index: m,
                tree_size: n,
                leaf_hash: hex::encode(log.leaf(m).unwrap()),
                audit_path: sr_archive::proof::to_hex(&path),
                root_hash: hex::encode(root),
                checkpoint: cp.clone(),
            }
        });
        prove.0.push(us);
        bytes
            .0
            .push(serde_json::to_string_pretty(&p).unwrap().len() as f64);
        let path: Vec<[u8; 32]> = p
            .audit_path
            .iter()
            .map(|h| sr_archive::checkpoint::parse_hash(h).unwrap())
            .collect();
        verify.0.push(
            time_us(|| {
                merkle::verify_inclusion(m, n, &merkle::leaf_hash(&entry(m)), &path, &root).unwrap()
            })
            .1,
        );
    }
    prove.line(&format!("inclusion proof at {n} (db, with JSON object)"));
    verify.line("verify inclusion (RFC 9162 2.1.3.2)");
    println!(
        "inclusion proof JSON size: {:.0} bytes (audit path {} hashes)",
        bytes.0.iter().sum::<f64>() / bytes.0.len() as f64,
        log.inclusion_path(n / 3, n).unwrap().len()
    );
    let mut cons = Stats(Vec::new());
    for k in 1..=200u64 {
        let m = (k * 4_999) % n + 1;
        cons.0
            .push(time_us(|| log.consistency_proof(m, n).unwrap()).1);
    }
    cons.line(&format!("consistency proof m -> {n}"));
    let mut tail = Stats(Vec::new());
    for k in 0..1000u64 {
        tail.0
            .push(time_us(|| log.append_entries(&[entry(leaves + k)]).unwrap()).1);
    }
    tail.line(&format!("append 1 leaf at {n}+ (own txn, FULL sync)"));
    let meta = std::fs::metadata(&runs_db).map(|m| m.len()).unwrap_or(0);
    let log_meta = std::fs::metadata(&log_db).map(|m| m.len()).unwrap_or(0);
    println!(
        "db sizes: runs.db {:.1} MB, log.db {:.1} MB",
        meta as f64 / 1e6,
        log_meta as f64 / 1e6
    );
}
