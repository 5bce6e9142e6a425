//! The archive: indexing, queries, rebuild, tamper detection, proofs, checkpoints, migrations,
//! concurrency, and the `safe-run-verify` binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;

use sr_archive::merkle::{self, MemoryTree};
use sr_archive::proof::check_inclusion;
use sr_archive::{Archive, Filter, ReportState, check_report, index_run};
use sr_evidence::SigningKey;
use sr_evidence::report::{ExitStatus, REPORT_FILE};
use sr_evidence::verify::Status;
use support::*;

fn verify_bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_safe-run-verify"));
    c.env_remove("SAFE_RUN_ARCHIVE");
    c
}

fn failed(checks: &[sr_evidence::verify::Check]) -> Vec<String> {
    checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| c.name.clone())
        .collect()
}

#[test]
fn a_fresh_archive_is_migrated_to_the_current_version_and_a_newer_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("a/archive.db");
    let db = Archive::open(&path).unwrap();
    assert_eq!(db.schema_version().unwrap(), sr_archive::db::SCHEMA_VERSION);
    drop(db);
    // Reopening does not migrate twice.
    assert_eq!(
        Archive::open(&path).unwrap().schema_version().unwrap(),
        sr_archive::db::SCHEMA_VERSION
    );
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    conn.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(conn);
    let err = Archive::open(&path).err().unwrap();
    assert_eq!(err.code(), sr_common::ErrorCode::ArchiveStore);
    assert!(err.to_string().contains("schema version 99"), "{err}");
}

#[test]
fn runs_are_indexed_once_and_filtered() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("runs");
    let db_path = tmp.path().join("archive.db");
    let key = key();
    let runs = [
        Run {
            id: "000000000001",
            started_ms: 1_764_000_000_000,
            ..Default::default()
        },
        Run {
            id: "000000000002",
            started_ms: 1_764_000_100_500,
            status: ExitStatus::Timeout,
            code: None,
            policy: "slow",
            argv: &["/usr/bin/python3", "-c", "import time; time.sleep(99)"],
            ..Default::default()
        },
        Run {
            id: "000000000003",
            started_ms: 1_764_000_100_000,
            policy: "net",
            blocked_rule: true,
            argv: &["/usr/bin/curl", "http://example.invalid"],
            ..Default::default()
        },
    ];
    for r in &runs {
        let dir = make_run(&base, r, &key);
        let first = index_run(&db_path, &dir, Some(&key)).unwrap();
        let again = index_run(&db_path, &dir, None).unwrap();
        assert_eq!(first.recorded.leaf_index(), again.recorded.leaf_index());
        assert!(first.checkpoint.is_some());
    }
    let db = Archive::open(&db_path).unwrap();
    assert_eq!(db.count().unwrap(), 3);
    assert_eq!(db.tree_size().unwrap(), 3);
    let ids = |f: Filter| -> Vec<String> {
        db.list(&f)
            .unwrap()
            .into_iter()
            .map(|r| r.record.run_id)
            .collect()
    };
    // Newest first, by time (000000000002 started 500 ms after 000000000003).
    assert_eq!(
        ids(Filter::default()),
        ["000000000002", "000000000003", "000000000001"]
    );
    assert_eq!(
        ids(Filter {
            status: Some("timeout".into()),
            ..Default::default()
        }),
        ["000000000002"]
    );
    assert_eq!(
        ids(Filter {
            policy: Some("net".into()),
            ..Default::default()
        }),
        ["000000000003"]
    );
    assert_eq!(
        ids(Filter {
            command: Some("time.sleep".into()),
            ..Default::default()
        }),
        ["000000000002"]
    );
    assert_eq!(
        ids(Filter {
            blocked: Some(true),
            ..Default::default()
        }),
        ["000000000003"]
    );
    assert_eq!(
        ids(Filter {
            blocked: Some(false),
            ..Default::default()
        })
        .len(),
        2
    );
    assert_eq!(
        ids(Filter {
            backend: Some("firecracker".into()),
            ..Default::default()
        })
        .len(),
        0
    );
    assert_eq!(
        ids(Filter {
            since: Some(1_764_000_100_000),
            ..Default::default()
        })
        .len(),
        2
    );
    assert_eq!(
        ids(Filter {
            limit: 1,
            ..Default::default()
        }),
        ["000000000002"]
    );
    let slow = db.get("000000000002").unwrap().unwrap().record;
    assert_eq!(slow.limits_hit, ["timeout"]);
    assert!(slow.command_attested);
    let net = db
        .resolve(
            &base
                .join("000000000003")
                .join(REPORT_FILE)
                .display()
                .to_string(),
        )
        .unwrap();
    assert_eq!(net.record.blocked, ["default-drop", "rule:egress-0"]);
    assert_eq!(net.record.blocked_packets, 2);
    assert!(db.resolve("nope").is_err());
}

#[test]
fn a_changed_or_deleted_report_is_named_and_never_reindexed() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("runs");
    let db_path = tmp.path().join("archive.db");
    let key = key();
    let a = make_run(
        &base,
        &Run {
            id: "00000000000a",
            ..Default::default()
        },
        &key,
    );
    let b = make_run(
        &base,
        &Run {
            id: "00000000000b",
            started_ms: 1_764_000_000_001,
            ..Default::default()
        },
        &key,
    );
    index_run(&db_path, &a, Some(&key)).unwrap();
    index_run(&db_path, &b, Some(&key)).unwrap();
    let mut db = Archive::open(&db_path).unwrap();
    let rec_a = db.get("00000000000a").unwrap().unwrap().record;
    assert_eq!(check_report(&rec_a, true), ReportState::Intact);

    // One byte of a's report changes (a space in the layout: the report still parses).
    let report = a.join(REPORT_FILE);
    let mut bytes = std::fs::read(&report).unwrap();
    let pos = bytes.iter().position(|b| *b == b' ').unwrap();
    bytes.insert(pos, b' ');
    std::fs::write(&report, &bytes).unwrap();
    assert!(matches!(
        check_report(&rec_a, true),
        ReportState::Changed { .. }
    ));
    // b's report is deleted.
    std::fs::remove_dir_all(&b).unwrap();

    let err = index_run(&db_path, &a, None).unwrap_err();
    assert_eq!(err.code(), sr_common::ErrorCode::ArchiveTampered);
    let summary = sr_archive::rebuild(&mut db, &base).unwrap();
    assert_eq!(summary.tampered.len(), 1, "{summary:?}");
    assert_eq!(summary.tampered[0].0, "00000000000a");
    assert_eq!(summary.missing, ["00000000000b"]);
    assert!(summary.indexed.is_empty());
    assert_eq!(db.tree_size().unwrap(), 2, "the log is never rewritten");

    // The binary names both: list --check and show exit 9 (SR-ARC-003).
    let out = verify_bin()
        .args(["report", "list", "--check", "--archive"])
        .arg(&db_path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(9), "{text}");
    assert!(
        text.contains("TAMPERED") && text.contains("missing"),
        "{text}"
    );
    let out = verify_bin()
        .args(["report", "show", "00000000000a", "--archive"])
        .arg(&db_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(9));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SR-ARC-003"));
    // A proof made before the change no longer fits the report.
    let run = db.get("00000000000a").unwrap().unwrap();
    let proof = sr_archive::prove(&mut db, &run, Some(&key)).unwrap();
    let checks = check_inclusion(&bytes, &proof, Some(&key.verifying_key()));
    assert_eq!(failed(&checks), ["proof.leaf"], "{checks:?}");
}

#[test]
fn rebuild_indexes_run_dirs_on_disk_in_run_order() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("runs");
    let key = key();
    for (i, ms) in [(1u64, 30u64), (2, 10), (3, 20)] {
        make_run(
            &base,
            &Run {
                id: &run_id(i),
                started_ms: 1_764_000_000_000 + ms,
                ..Default::default()
            },
            &key,
        );
    }
    std::fs::create_dir_all(base.join("000000000009")).unwrap(); // a run stopped before its report
    let mut db = Archive::open(&tmp.path().join("archive.db")).unwrap();
    let s = sr_archive::rebuild(&mut db, &base).unwrap();
    assert_eq!(s.indexed, [run_id(2), run_id(3), run_id(1)]);
    let again = sr_archive::rebuild(&mut db, &base).unwrap();
    assert!(again.indexed.is_empty() && again.unchanged == 3);
    assert_eq!(db.get(&run_id(2)).unwrap().unwrap().leaf_index, Some(0));
}

#[test]
fn twenty_runs_finishing_at_once_leave_twenty_rows_twenty_leaves_and_one_consistent_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("runs");
    let db_path = tmp.path().join("archive.db");
    let key = key();
    let dirs: Vec<_> = (0..20u64)
        .map(|i| {
            make_run(
                &base,
                &Run {
                    id: &run_id(100 + i),
                    started_ms: 1_764_000_000_000 + i,
                    ..Default::default()
                },
                &key,
            )
        })
        .collect();
    let barrier = std::sync::Barrier::new(20);
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = dirs
            .iter()
            .map(|d| {
                let (barrier, key, db_path) = (&barrier, &key, &db_path);
                s.spawn(move || {
                    barrier.wait();
                    index_run(db_path, d, Some(key))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut leaves: Vec<u64> = results
        .iter()
        .map(|r| r.as_ref().unwrap().recorded.leaf_index())
        .collect();
    leaves.sort();
    assert_eq!(leaves, (0..20).collect::<Vec<_>>());
    let mut db = Archive::open(&db_path).unwrap();
    assert_eq!(db.count().unwrap(), 20);
    assert_eq!(db.tree_size().unwrap(), 20);
    // The stored tree equals one built in memory from the runs in leaf order.
    let mut by_leaf = db.list(&Filter::default()).unwrap();
    by_leaf.sort_by_key(|r| r.leaf_index);
    let mut mem = MemoryTree::new();
    for r in &by_leaf {
        mem.push_entry(&r.record.entry().unwrap());
    }
    assert_eq!(db.root(20).unwrap(), merkle::root(&mem, 20).unwrap());
    // Every checkpoint signed along the way is a prefix of the final tree.
    let final_cp = db.checkpoint(&key).unwrap();
    for r in &results {
        let cp = r.as_ref().unwrap().checkpoint.clone().unwrap();
        let proof = sr_archive::prove_consistency(&db, cp.tree_size, 20).unwrap();
        let checks = sr_archive::proof::check_consistency(
            &cp,
            &final_cp,
            &proof,
            Some(&key.verifying_key()),
        );
        assert!(failed(&checks).is_empty(), "{checks:?}");
    }
    // And every run proves its inclusion.
    for r in &by_leaf {
        let proof = sr_archive::prove(&mut db, r, None).unwrap();
        let bytes = std::fs::read(r.record.report_path()).unwrap();
        assert!(failed(&check_inclusion(&bytes, &proof, Some(&key.verifying_key()))).is_empty());
    }
}

fn write_json(path: &Path, v: &impl serde::Serialize) {
    std::fs::write(path, serde_json::to_string_pretty(v).unwrap()).unwrap();
}

#[test]
fn proofs_and_checkpoints_verify_offline_and_tampering_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("runs");
    let db_path = tmp.path().join("archive.db");
    let key = key();
    let other = SigningKey::from_bytes(&[6; 32]);
    let good_pub = tmp.path().join("good.pub");
    let other_pub = tmp.path().join("other.pub");
    write_pub(&good_pub, &key);
    write_pub(&other_pub, &other);
    let mut dirs = Vec::new();
    for i in 0..5u64 {
        dirs.push(make_run(
            &base,
            &Run {
                id: &run_id(i),
                started_ms: 1_764_000_000_000 + i,
                ..Default::default()
            },
            &key,
        ));
        index_run(&db_path, dirs.last().unwrap(), None).unwrap();
    }
    let mut db = Archive::open(&db_path).unwrap();
    let old_cp = db.checkpoint(&key).unwrap();
    for i in 5..9u64 {
        dirs.push(make_run(
            &base,
            &Run {
                id: &run_id(i),
                started_ms: 1_764_000_000_000 + i,
                ..Default::default()
            },
            &key,
        ));
        index_run(&db_path, dirs.last().unwrap(), None).unwrap();
    }
    let run = db.get(&run_id(3)).unwrap().unwrap();
    let proof = sr_archive::prove(&mut db, &run, Some(&key)).unwrap();
    assert_eq!((proof.leaf_index, proof.tree_size), (3, 9));
    let new_cp = proof.checkpoint.clone();
    let proof_file = tmp.path().join("proof.json");
    write_json(&proof_file, &proof);
    let (old_file, new_file) = (tmp.path().join("old.json"), tmp.path().join("new.json"));
    write_json(&old_file, &old_cp);
    write_json(&new_file, &new_cp);
    let report = dirs[3].join(REPORT_FILE);

    let run_verify = |proof: &Path, key: &Path| {
        verify_bin()
            .args(["report", "verify"])
            .arg(&report)
            .arg("--proof")
            .arg(proof)
            .arg("--key")
            .arg(key)
            .output()
            .unwrap()
    };
    let ok = run_verify(&proof_file, &good_pub);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("PASS  proof.inclusion"));
    // Wrong key: the report's signature and the checkpoint both fail (SR-EVD-002, exit 7).
    assert_eq!(run_verify(&proof_file, &other_pub).status.code(), Some(7));
    // A proof for another leaf, or with a changed path: SR-ARC-004, exit 9.
    let mut wrong = proof.clone();
    wrong.leaf_index = 2;
    let wrong_file = tmp.path().join("wrong.json");
    write_json(&wrong_file, &wrong);
    let out = run_verify(&wrong_file, &good_pub);
    assert_eq!(out.status.code(), Some(9));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL  proof.inclusion"));
    let mut flipped = proof.clone();
    flipped.audit_path[1] = "00".repeat(32);
    write_json(&wrong_file, &flipped);
    assert_eq!(run_verify(&wrong_file, &good_pub).status.code(), Some(9));
    // A checkpoint for a bigger tree than the proof claims.
    let mut resized = proof.clone();
    resized.checkpoint = db.checkpoint(&key).unwrap();
    resized.checkpoint.tree_size = 10;
    write_json(&wrong_file, &resized);
    let out = run_verify(&wrong_file, &good_pub);
    assert_eq!(out.status.code(), Some(9));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL  proof.checkpoint"));

    // Consistency: from the archive, and offline from an exported proof.
    let cons_file = tmp.path().join("consistency.json");
    let consistency = |args: &[&std::ffi::OsStr]| {
        verify_bin()
            .args(["log", "consistency"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = consistency(&[
        old_file.as_os_str(),
        new_file.as_os_str(),
        "--archive".as_ref(),
        db_path.as_os_str(),
        "--out".as_ref(),
        cons_file.as_os_str(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = consistency(&[
        old_file.as_os_str(),
        new_file.as_os_str(),
        "--proof".as_ref(),
        cons_file.as_os_str(),
        "--key".as_ref(),
        good_pub.as_os_str(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Swapped: the log shrank.
    let out = consistency(&[
        new_file.as_os_str(),
        old_file.as_os_str(),
        "--archive".as_ref(),
        db_path.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(9));
    assert!(String::from_utf8_lossy(&out.stdout).contains("shrank"));
    // A forked log: a checkpoint of size 5 over another history, signed with the same key.
    let mut fork = MemoryTree::new();
    for i in 0..5u64 {
        fork.push_entry(&[i as u8; 32]);
    }
    let forked = sr_archive::Checkpoint::sign(
        5,
        &merkle::root(&fork, 5).unwrap(),
        "2026-12-02T00:00:00Z",
        &key,
    );
    let forked_file = tmp.path().join("forked.json");
    write_json(&forked_file, &forked);
    let out = consistency(&[
        forked_file.as_os_str(),
        new_file.as_os_str(),
        "--archive".as_ref(),
        db_path.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(9));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("INCONSISTENT"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = consistency(&[
        forked_file.as_os_str(),
        old_file.as_os_str(),
        "--archive".as_ref(),
        db_path.as_os_str(),
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("rewritten"));
    // Signed by another key.
    let foreign = sr_archive::Checkpoint::sign(
        old_cp.tree_size,
        &old_cp.root().unwrap(),
        &old_cp.time,
        &other,
    );
    write_json(&forked_file, &foreign);
    let out = consistency(&[
        forked_file.as_os_str(),
        new_file.as_os_str(),
        "--proof".as_ref(),
        cons_file.as_os_str(),
        "--key".as_ref(),
        good_pub.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(9));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL  checkpoint.old"));
}

/// Not a test on its own: the child of `twenty_processes_...` (does nothing without its env).
#[test]
fn child_indexer() {
    let (Some(db), Some(dir)) = (
        std::env::var_os("SR_ARCHIVE_CHILD_DB"),
        std::env::var_os("SR_ARCHIVE_CHILD_DIR"),
    ) else {
        return;
    };
    let go = std::env::var_os("SR_ARCHIVE_CHILD_GO").unwrap();
    // Start together: wait (bounded) for the parent's go file.
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !Path::new(&go).exists() && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    index_run(Path::new(&db), Path::new(&dir), Some(&key())).unwrap();
}

#[test]
fn twenty_processes_indexing_at_once_leave_twenty_rows_and_twenty_leaves() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("runs");
    let db_path = tmp.path().join("archive.db");
    let go = tmp.path().join("go");
    let key = key();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..20u64)
        .map(|i| {
            let dir = make_run(
                &base,
                &Run {
                    id: &run_id(500 + i),
                    started_ms: 1_764_000_000_000 + i,
                    ..Default::default()
                },
                &key,
            );
            Command::new(&exe)
                .args(["--exact", "child_indexer", "--test-threads", "1"])
                .env("SR_ARCHIVE_CHILD_DB", &db_path)
                .env("SR_ARCHIVE_CHILD_DIR", &dir)
                .env("SR_ARCHIVE_CHILD_GO", &go)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    std::fs::write(&go, b"").unwrap();
    for c in children {
        // The child harness prints a failing test's panic on stdout: keep both.
        let o = c.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "child indexer failed ({}):\n{}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let db = Archive::open(&db_path).unwrap();
    assert_eq!(db.count().unwrap(), 20);
    assert_eq!(db.tree_size().unwrap(), 20);
    let mut leaves: Vec<u64> = db
        .list(&Filter::default())
        .unwrap()
        .iter()
        .map(|r| r.leaf_index.unwrap())
        .collect();
    leaves.sort();
    assert_eq!(leaves, (0..20).collect::<Vec<_>>());
    let final_cp = db.latest_checkpoint().unwrap().unwrap();
    assert_eq!(final_cp.tree_size, 20);
    assert_eq!(final_cp.root().unwrap(), db.root(20).unwrap());
}

#[test]
fn a_copy_in_a_directory_the_reader_cannot_write_is_listed_read_only() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
        != 0
    {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "needs root to switch to nobody (CI=true)"
        );
        eprintln!("SKIPPED: needs root to run the reader as nobody");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("runs");
    let db_path = tmp.path().join("archive.db");
    let key = key();
    index_run(
        &db_path,
        &make_run(&base, &Run::default(), &key),
        Some(&key),
    )
    .unwrap();
    // A copy as a third party gets it: the db file alone, in a directory only root can write.
    let ro = tmp.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    rusqlite::Connection::open(&db_path)
        .unwrap()
        .execute_batch(&format!(
            "VACUUM INTO '{}'",
            ro.join("archive.db").display()
        ))
        .unwrap();
    let bin = ro.join("safe-run-verify");
    std::fs::copy(env!("CARGO_BIN_EXE_safe-run-verify"), &bin).unwrap();
    for p in [tmp.path(), ro.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(
        ro.join("archive.db"),
        std::fs::Permissions::from_mode(0o444),
    )
    .unwrap();
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["report", "list", "--archive"])
        .arg(ro.join("archive.db"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(text.contains("aaaaaaaaaaaa"), "{text}");
    assert!(!ro.join("archive.db-shm").exists());
}

/// Set in the child of `an_append_that_dies_before_close_is_in_the_wal_and_read_back`.
const CRASH_CHILD_ENV: &str = "SR_ARCHIVE_TEST_CRASH_CHILD";

#[test]
fn an_append_that_dies_before_close_is_in_the_wal_and_read_back() {
    // The child: append one run through the writer `safe-run run` uses, then die without
    // closing anything (no destructor runs on abort), as a SIGKILLed safe-run would.
    if let Some(spec) = std::env::var_os(CRASH_CHILD_ENV) {
        let spec = std::path::PathBuf::from(spec);
        let (db_path, run_dir) = (spec.join("archive.db"), spec.join("runs/000000000007"));
        let mut db = Archive::open_appending(&db_path).unwrap();
        let done = sr_archive::index_run_in(&mut db, &run_dir, Some(&key())).unwrap();
        assert_eq!(done.recorded.leaf_index(), 1);
        std::process::abort();
    }
    let tmp = tempfile::tempdir().unwrap();
    let db_path = tmp.path().join("archive.db");
    let base = tmp.path().join("runs");
    let key = key();
    for id in ["000000000006", "000000000007"] {
        make_run(
            &base,
            &Run {
                id,
                ..Default::default()
            },
            &key,
        );
    }
    // A first run appended and closed the ordinary way (the WAL folded in and deleted).
    index_run(&db_path, &base.join("000000000006"), Some(&key)).unwrap();
    let wal = tmp.path().join("archive.db-wal");
    assert!(!wal.exists());
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "an_append_that_dies_before_close_is_in_the_wal_and_read_back",
            "--nocapture",
        ])
        .env(CRASH_CHILD_ENV, tmp.path())
        .status()
        .unwrap();
    assert!(!status.success(), "the child must die, not exit");
    // The commit is in the WAL, which nothing folded in.
    assert!(std::fs::metadata(&wal).unwrap().len() > 0);
    let db = Archive::open_read_only(&db_path).unwrap();
    assert_eq!(db.count().unwrap(), 2);
    assert_eq!(db.tree_size().unwrap(), 2);
    drop(db);
    // An ordinary writer folds the WAL in on close: the database file alone then holds both.
    drop(Archive::open(&db_path).unwrap());
    assert!(!wal.exists());
    let copy = tmp.path().join("copy.db");
    std::fs::copy(&db_path, &copy).unwrap();
    let db = Archive::open_read_only(&copy).unwrap();
    assert_eq!(db.count().unwrap(), 2);
    let again = index_run(&db_path, &base.join("000000000007"), None).unwrap();
    assert_eq!(again.recorded.leaf_index(), 1, "recorded once");
}

#[test]
fn an_appending_writer_keeps_the_wal_on_close_and_the_next_one_reuses_it() {
    let tmp = tempfile::tempdir().unwrap();
    let db_path = tmp.path().join("archive.db");
    let base = tmp.path().join("runs");
    let key = key();
    let wal = tmp.path().join("archive.db-wal");
    let mut inodes = Vec::new();
    for (i, id) in ["000000000011", "000000000012", "000000000013"]
        .into_iter()
        .enumerate()
    {
        let dir = make_run(
            &base,
            &Run {
                id,
                ..Default::default()
            },
            &key,
        );
        let mut db = Archive::open_appending(&db_path).unwrap();
        let done = sr_archive::index_run_in(&mut db, &dir, None).unwrap();
        assert_eq!(done.recorded.leaf_index(), i as u64);
        drop(db);
        use std::os::unix::fs::MetadataExt;
        inodes.push(std::fs::metadata(&wal).unwrap().ino());
    }
    // One WAL file for all three: never deleted and made again.
    assert!(inodes.windows(2).all(|w| w[0] == w[1]), "{inodes:?}");
    let db = Archive::open_read_only(&db_path).unwrap();
    assert_eq!(db.count().unwrap(), 3);
}

#[test]
fn an_appending_writer_empties_the_wal_once_it_passes_its_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let db_path = tmp.path().join("archive.db");
    let base = tmp.path().join("runs");
    let key = key();
    let wal = tmp.path().join("archive.db-wal");
    let limit = 64 * 1024;
    let mut sizes = Vec::new();
    for i in 0..40u64 {
        let id = format!("{:012}", 100 + i);
        let dir = make_run(
            &base,
            &Run {
                id: &id,
                ..Default::default()
            },
            &key,
        );
        let mut db = Archive::open_appending_with_wal_limit(&db_path, limit).unwrap();
        sr_archive::index_run_in(&mut db, &dir, None).unwrap();
        drop(db);
        sizes.push(std::fs::metadata(&wal).unwrap().len());
    }
    // Bounded: never more than the limit plus one commit's frames, and emptied on the way
    // (a WAL that is only folded, never emptied, grows with every run).
    let most = *sizes.iter().max().unwrap();
    assert!(
        most < limit + 32 * 1024,
        "the WAL grew to {most} bytes: {sizes:?}"
    );
    assert!(sizes.contains(&0), "never emptied: {sizes:?}");
    let db = Archive::open_read_only(&db_path).unwrap();
    assert_eq!(db.count().unwrap(), 40);
    assert_eq!(db.tree_size().unwrap(), 40);
}
