//! `safe-run run` archives its run: the index, the log leaf, `report prove` and
//! `report verify --proof`, checkpoints and consistency. Real sandbox, as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod run_support;

use run_support::*;
use serde_json::{Value, json};

#[test]
fn a_run_is_indexed_and_proves_its_inclusion_in_the_log() {
    if !require_root("a_run_is_indexed_and_proves_its_inclusion_in_the_log") {
        return;
    }
    let env = Env::new();
    let key = env.dir.path().join("keys/signing.key");
    let cmd = |args: &[&str]| {
        let mut c = env.cmd();
        c.env("SAFE_RUN_KEY", &key).args(args);
        c.output().unwrap()
    };
    // One unsigned run (the test default), one signed.
    let unsigned = env.policy("unsigned", &sh("echo one"));
    let o = env.run(&unsigned, &[]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(err(&o).contains("archived; log leaf 0"), "{}", err(&o));
    let signed = env.policy(
        "signed",
        &policy("/bin/echo", &["two"], json!({"evidence": {"sign": true}})),
    );
    let o = env
        .run_cmd(&signed)
        .env("SAFE_RUN_KEY", &key)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert!(err(&o).contains("archived; log leaf 1"), "{}", err(&o));
    let dirs = env.run_dirs();
    assert_eq!(dirs.len(), 2);

    let o = cmd(&["report", "list", "--format", "json"]);
    assert!(o.status.success(), "{}", err(&o));
    let listed: Value = serde_json::from_str(&out(&o)).unwrap();
    let runs = listed["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{listed:#}");
    assert!(
        runs.iter()
            .all(|r| r["report"] == "present" && r["status"] == "exited")
    );
    let signed_run = runs.iter().find(|r| r["keyid"].is_string()).unwrap();
    let signed_id = signed_run["runId"].as_str().unwrap().to_owned();
    assert_eq!(signed_run["command"], "/bin/echo two");
    assert_eq!(signed_run["commandAttested"], true);
    let o = cmd(&["report", "list", "--command", "echo one"]);
    assert_eq!(out(&o).lines().count(), 3, "{}", out(&o));

    let o = cmd(&["report", "show", &signed_id]);
    assert!(o.status.success(), "{}", err(&o));
    for want in [
        "namespaces:",
        "landlock:",
        "seccomp:",
        "cgroup",
        "intact",
        "leaf 1 of 2",
    ] {
        assert!(out(&o).contains(want), "{want}: {}", out(&o));
    }

    // Prove and verify offline, with the signer's public key pinned.
    let proof = env.dir.path().join("proof.json");
    let public = env.dir.path().join("signing.pub");
    let o = cmd(&[
        "report",
        "prove",
        &signed_id,
        "--out",
        proof.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", err(&o));
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&proof).unwrap()).unwrap();
    for field in [
        "leafIndex",
        "treeSize",
        "leafHash",
        "auditPath",
        "rootHash",
        "checkpoint",
    ] {
        assert!(doc.get(field).is_some(), "{field}: {doc:#}");
    }
    assert!(
        cmd(&["key", "export-public", "--out", public.to_str().unwrap()])
            .status
            .success()
    );
    let report = env.base.join(&signed_id).join("run_report.json");
    let verify = |report: &std::path::Path| {
        cmd(&[
            "report",
            "verify",
            report.to_str().unwrap(),
            "--proof",
            proof.to_str().unwrap(),
            "--key",
            public.to_str().unwrap(),
        ])
    };
    let o = verify(&report);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    assert!(out(&o).contains("PASS  proof.inclusion"), "{}", out(&o));
    // The other run's report does not fit this proof.
    let other = dirs.iter().find(|d| !d.ends_with(&signed_id)).unwrap();
    let o = verify(&other.join("run_report.json"));
    assert_ne!(o.status.code(), Some(0));
    assert!(out(&o).contains("FAIL  proof.leaf"), "{}", out(&o));

    // Checkpoints before and after a third run are consistent; rebuild finds nothing new.
    let (cp1, cp2) = (
        env.dir.path().join("cp1.json"),
        env.dir.path().join("cp2.json"),
    );
    assert!(
        cmd(&["log", "checkpoint", "--out", cp1.to_str().unwrap()])
            .status
            .success()
    );
    assert!(env.run(&unsigned, &[]).status.success());
    assert!(
        cmd(&["log", "checkpoint", "--out", cp2.to_str().unwrap()])
            .status
            .success()
    );
    let o = cmd(&[
        "log",
        "consistency",
        cp1.to_str().unwrap(),
        cp2.to_str().unwrap(),
        "--key",
        public.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    assert!(out(&o).contains("2 -> 3"), "{}", out(&o));
    let o = cmd(&[
        "log",
        "consistency",
        cp2.to_str().unwrap(),
        cp1.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(9));
    let o = cmd(&["report", "rebuild-index"]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        out(&o).contains("indexed 0 new run(s), 3 already archived"),
        "{}",
        out(&o)
    );
}

#[test]
fn a_run_whose_archive_cannot_be_written_still_succeeds_with_a_warning() {
    if !require_root("a_run_whose_archive_cannot_be_written_still_succeeds_with_a_warning") {
        return;
    }
    let env = Env::new();
    let p = env.policy("t", &sh("echo fine"));
    // A directory cannot be created under a regular file.
    let blocker = env.dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"").unwrap();
    let o = env
        .run_cmd(&p)
        .env("SAFE_RUN_ARCHIVE", blocker.join("archive.db"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(out(&o), "fine\n");
    assert!(err(&o).contains("warning: SR-ARC-001"), "{}", err(&o));
    assert!(err(&o).contains("rebuild-index"), "{}", err(&o));
    assert!(env.run_dirs()[0].join("run_report.json").is_file());
}

#[test]
fn twenty_runs_finishing_at_once_are_all_archived() {
    if !require_root("twenty_runs_finishing_at_once_are_all_archived") {
        return;
    }
    let env = Env::new();
    let key = env.dir.path().join("keys/signing.key");
    // Each run waits for the same file, so they finish together. Starting 20 sandboxes can
    // take tens of seconds on a loaded 2-core machine, so the wait and the runs' timeout are
    // generous, and both bounded (at most 30,000 polls; 300 s).
    let go = env.share().join("go");
    let script = "i=0; while [ ! -e /data/go ] && [ $i -lt 30000 ]; do i=$((i+1)); sleep 0.01; done; echo done";
    let p = env.policy(
        "together",
        &policy(
            "/bin/sh",
            &["-c", script],
            json!({
                "runtime": {"timeout": "300s"},
                "mounts": [{"source": env.share(), "target": "/data", "readOnly": true}]
            }),
        ),
    );
    let children: Vec<_> = (0..20)
        .map(|_| {
            env.run_cmd(&p)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Bounded wait until every run is inside its sandbox (its events.jsonl exists), then go.
    let all_started = wait_for(240, || {
        env.run_dirs()
            .iter()
            .filter(|d| d.join("events.jsonl").exists())
            .count()
            == 20
    });
    std::fs::write(&go, b"").unwrap();
    assert!(all_started, "not all 20 runs started");
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", err(&o));
        assert!(err(&o).contains("archived; log leaf"), "{}", err(&o));
    }
    let o = env
        .cmd()
        .args(["report", "list", "--limit", "0", "--format", "json"])
        .output()
        .unwrap();
    let listed: Value = serde_json::from_str(&out(&o)).unwrap();
    let mut leaves: Vec<u64> = listed["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["leafIndex"].as_u64().unwrap())
        .collect();
    leaves.sort();
    assert_eq!(leaves, (0..20).collect::<Vec<u64>>());
    let o = env
        .cmd()
        .env("SAFE_RUN_KEY", &key)
        .args(["log", "checkpoint"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let cp: Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(cp["treeSize"], 20);
}
