//! Real runs (as root): the `--result` document on every path, the built-in strict policy,
//! the pids limit as a recorded fact, `report verify` by run dir and run id, a closed stdout
//! pipe, run-dir retention with `gc --keep`, and the "read inputs, write results" example.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod run_support;

use std::path::{Path, PathBuf};

use run_support::*;
use serde_json::{Value, json};

fn run_with_result(env: &Env, policy: &Path, extra: &[&str]) -> (std::process::Output, Value) {
    let result = env.dir.path().join("result.json");
    let _ = std::fs::remove_file(&result);
    let mut c = env.run_cmd(policy);
    c.arg("--result").arg(&result);
    if !extra.is_empty() {
        c.arg("--").args(extra);
    }
    let o = c.output().unwrap();
    let text = std::fs::read_to_string(&result)
        .unwrap_or_else(|e| panic!("no result file ({e}): {}", err(&o)));
    (o, serde_json::from_str(&text).unwrap())
}

#[test]
fn the_result_file_is_written_on_success_failure_timeout_and_launch_failure() {
    if !require_root("the_result_file_is_written_on_success_failure_timeout_and_launch_failure") {
        return;
    }
    let env = Env::new();
    let p = env.policy("ok", &sh("echo workload-only"));
    let (o, r) = run_with_result(&env, &p, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(out(&o), "workload-only\n", "stdout is the workload's alone");
    assert_eq!(r["ok"], true);
    assert_eq!(r["status"], "exited");
    assert_eq!(r["exitCode"], 0);
    assert_eq!(r["workloadExitCode"], 0);
    let run_id = r["runId"].as_str().unwrap().to_owned();
    let report = PathBuf::from(r["reportPath"].as_str().unwrap());
    assert!(report.is_file());
    assert!(report.starts_with(env.base.join(&run_id)));
    assert_eq!(r["limitsHit"], json!([]));

    let p = env.policy("fail", &sh("exit 7"));
    let (o, r) = run_with_result(&env, &p, &[]);
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(
        (
            r["status"].as_str(),
            r["exitCode"].as_i64(),
            r["ok"].as_bool()
        ),
        (Some("exited"), Some(7), Some(false))
    );

    let p = env.policy(
        "to",
        &policy(
            "/bin/sleep",
            &["30"],
            json!({"runtime": {"timeout": "300ms"}}),
        ),
    );
    let (o, r) = run_with_result(&env, &p, &[]);
    assert_eq!(o.status.code(), Some(6), "{}", err(&o));
    assert_eq!(r["status"], "timeout");
    assert_eq!(r["limitsHit"], json!(["timeout"]));
    assert!(r["reportPath"].is_string());

    let p = env.policy("nobin", &policy("/usr/bin/no-such-binary", &[], json!({})));
    let (o, r) = run_with_result(&env, &p, &[]);
    assert_eq!(o.status.code(), Some(5), "{}", err(&o));
    assert_eq!(r["status"], "launchFailed");
    assert_eq!(r["diagnostics"][0]["code"], "SR-RUN-002");
    assert!(r["runId"].is_string());
}

#[test]
fn json_format_puts_the_result_on_stderr_and_leaves_stdout_to_the_workload() {
    if !require_root("json_format_puts_the_result_on_stderr_and_leaves_stdout_to_the_workload") {
        return;
    }
    let env = Env::new();
    let p = env.policy("j", &sh("echo only-this"));
    let o = env.run_cmd(&p).args(["--format", "json"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(out(&o), "only-this\n");
    let last = err(&o).lines().last().unwrap().to_owned();
    let r: Value = serde_json::from_str(&last).unwrap();
    assert_eq!(r["status"], "exited");
    assert!(r["runId"].is_string());
}

#[test]
fn run_without_a_policy_uses_the_builtin_strict_policy_and_names_it() {
    if !require_root("run_without_a_policy_uses_the_builtin_strict_policy_and_names_it") {
        return;
    }
    let env = Env::new();
    let result = env.dir.path().join("r.json");
    let o = env
        .cmd()
        .args(["run", "--result"])
        .arg(&result)
        .args([
            "--",
            "/bin/sh",
            "-c",
            "echo hi; touch /x 2>/dev/null || echo ro",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(out(&o), "hi\nro\n");
    let report = env.report();
    assert_eq!(report["policy"]["name"], "builtin-strict");
    assert_eq!(report["policy"]["path"], "builtin:strict");
    assert_eq!(report["enforcement"]["network"]["mode"], "none");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&result).unwrap()).unwrap();
    assert_eq!(r["policy"]["digest"], report["policy"]["digest"]);
    assert!(
        report["policy"]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
}

#[test]
fn hitting_the_pids_limit_is_recorded_as_a_fact() {
    if !require_root("hitting_the_pids_limit_is_recorded_as_a_fact") {
        return;
    }
    let env = Env::new();
    let mut p = py(FORK_UNTIL_REFUSED);
    merge(&mut p, json!({"resources": {"pids": 16}}));
    let p = env.policy("pids", &p);
    let (o, r) = run_with_result(&env, &p, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(r["limitsHit"], json!(["pids"]), "{r:#}");
    let events = std::fs::read_to_string(env.run_dirs()[0].join("events.jsonl")).unwrap();
    let exited: Value = events
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["type"] == "process.exited")
        .unwrap();
    assert_eq!(
        exited["payload"]["limitsHit"],
        json!(["pids"]),
        "{exited:#}"
    );
    assert!(exited["payload"]["pidsLimitHits"].as_u64().unwrap() > 0);
}

/// An environment whose runs are signed with a key of its own.
fn signing_env() -> (Env, PathBuf) {
    let env = Env::new();
    let key = env.dir.path().join("keys/signing.key");
    env.configure(json!({"keyPath": key}));
    (env, key)
}

#[test]
fn report_verify_takes_a_run_dir_or_a_run_id_and_words_a_key_mismatch_plainly() {
    if !require_root("report_verify_takes_a_run_dir_or_a_run_id_and_words_a_key_mismatch_plainly") {
        return;
    }
    let (env, _) = signing_env();
    let mut p = sh("echo signed");
    merge(&mut p, json!({"evidence": {"sign": true}}));
    let p = env.policy("signed", &p);
    let o = env.run(&p, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let dir = env.run_dirs()[0].clone();
    for target in [dir.clone(), PathBuf::from(run_id(&dir))] {
        let o = env
            .cmd()
            .args(["report", "verify"])
            .arg(&target)
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}: {}{}",
            target.display(),
            out(&o),
            err(&o)
        );
        assert!(
            out(&o).contains("verified: report is intact"),
            "{}",
            out(&o)
        );
    }
    // Another key: a plain sentence, no Rust debug text.
    let other = tempfile::tempdir().unwrap();
    let other_key = other.path().join("k");
    let o = env
        .cmd()
        .env("SAFE_RUN_CONFIG", other.path().join("c.json"))
        .args(["key", "export-public", "--key"])
        .arg(&other_key)
        .arg("--out")
        .arg(other.path().join("k.pub"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let o = env
        .cmd()
        .args(["report", "verify"])
        .arg(&dir)
        .arg("--key")
        .arg(other.path().join("k.pub"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(7), "{}{}", out(&o), err(&o));
    let all = format!("{}{}", out(&o), err(&o));
    assert!(all.contains("the report was signed by key"), "{all}");
    assert!(all.contains("wrong key"), "{all}");
    assert!(!all.contains("was changed"), "{all}");
    assert!(!all.contains("Some(\""), "{all}");
}

#[test]
fn verify_envelope_into_a_closed_pipe_does_not_panic() {
    if !require_root("verify_envelope_into_a_closed_pipe_does_not_panic") {
        return;
    }
    let (env, key) = signing_env();
    let mut p = sh("echo e");
    merge(&mut p, json!({"evidence": {"sign": true}}));
    let p = env.policy("env", &p);
    assert_eq!(env.run(&p, &[]).status.code(), Some(0));
    let dir = env.run_dirs()[0].clone();
    let envelope = env.dir.path().join("envelope.json");
    let public = env.dir.path().join("signer.pub");
    let o = env
        .cmd()
        .args(["report", "export", "--format", "intoto"])
        .arg(dir.join("run_report.json"))
        .arg("--out")
        .arg(&envelope)
        .arg("--key")
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let o = env
        .cmd()
        .args(["key", "export-public", "--key"])
        .arg(&key)
        .arg("--out")
        .arg(&public)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    // A pipe whose reader is already gone: every write gets EPIPE.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let o = env
        .cmd()
        .args(["report", "verify-envelope"])
        .arg(&envelope)
        .arg("--key")
        .arg(&public)
        .stdout(writer)
        .output()
        .unwrap();
    assert!(!err(&o).contains("panicked"), "{}", err(&o));
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
}

#[test]
fn gc_keep_prunes_finished_run_dirs_and_never_a_live_one() {
    if !require_root("gc_keep_prunes_finished_run_dirs_and_never_a_live_one") {
        return;
    }
    let env = Env::new();
    let p = env.policy("t", &policy("/bin/true", &[], json!({})));
    for _ in 0..3 {
        assert_eq!(env.run(&p, &[]).status.code(), Some(0));
    }
    // A "live" run: its lock is held by this test, and it is the oldest.
    let live = env.base.join("00000000live".replace("live", "abcd"));
    std::fs::create_dir_all(&live).unwrap();
    let lock = std::fs::File::create(live.join("run.lock")).unwrap();
    // std's File::lock is flock(LOCK_EX) on Linux, as the runner's own lock.
    lock.lock().unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400 * 30);
    std::fs::File::open(&live)
        .unwrap()
        .set_modified(old)
        .unwrap();
    lock.set_modified(old).unwrap();
    let newest = env
        .run_dirs()
        .into_iter()
        .filter(|d| *d != live)
        .max_by_key(|d| {
            std::fs::metadata(d.join("run_report.json"))
                .unwrap()
                .modified()
                .unwrap()
        })
        .unwrap();

    let o = env.cmd().args(["gc", "--keep", "1"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    let left = env.run_dirs();
    assert_eq!(
        left,
        {
            let mut v = vec![live.clone(), newest];
            v.sort();
            v
        },
        "{}",
        out(&o)
    );
    let o = env
        .cmd()
        .args(["gc", "--keep", "0", "--older-than", "1d"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(live.is_dir(), "a live run is never pruned");
    drop(lock);
}

#[test]
fn the_read_inputs_write_results_example_works_from_another_directory() {
    if !require_root("the_read_inputs_write_results_example_works_from_another_directory") {
        return;
    }
    let env = Env::new();
    let root = env.share().join("safe-run-example");
    std::fs::create_dir_all(root.join("inputs")).unwrap();
    std::fs::create_dir_all(root.join("results")).unwrap();
    std::fs::write(root.join("inputs/words.txt"), "alpha\nbeta\ngamma\n").unwrap();
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/read_inputs_write_results.yaml");
    let text = std::fs::read_to_string(&example)
        .unwrap()
        .replace("/srv/safe-run-example", &root.display().to_string());
    let p = env.dir.path().join("example.yaml");
    std::fs::write(&p, text).unwrap();
    // Before the chown, validate says what will go wrong and how to fix it.
    let o = env
        .cmd()
        .current_dir("/")
        .arg("validate")
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(err(&o).contains("chown 65534:65534"), "{}", err(&o));
    let st = std::process::Command::new("chown")
        .arg("65534:65534")
        .arg(root.join("results"))
        .status()
        .unwrap();
    assert!(st.success());
    let o = env
        .cmd()
        .current_dir("/")
        .arg("validate")
        .arg(&p)
        .output()
        .unwrap();
    assert!(!err(&o).contains("warning"), "{}", err(&o));
    let o = env
        .cmd()
        .current_dir("/")
        .arg("run")
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    assert!(out(&o).contains("inputs are read-only"), "{}", out(&o));
    assert_eq!(
        std::fs::read_to_string(root.join("results/summary.txt")).unwrap(),
        "3\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("results/sorted.txt")).unwrap(),
        "gamma\nbeta\nalpha\n"
    );
}

#[test]
fn the_result_file_is_written_when_safe_run_is_interrupted() {
    if !require_root("the_result_file_is_written_when_safe_run_is_interrupted") {
        return;
    }
    let env = Env::new();
    let m = marker("result-term");
    let p = env.policy("term", &sh(&format!("sleep {m}")));
    let result = env.dir.path().join("r.json");
    let child = env
        .run_cmd(&p)
        .arg("--result")
        .arg(&result)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for(10, || env
        .run_dirs()
        .iter()
        .any(|d| has_event(d, "process.started"))));
    signal(child.id(), "TERM");
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(143), "{}", err(&o));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&result).unwrap()).unwrap();
    assert_eq!(r["status"], "interrupted");
    assert_eq!(r["signal"], 15);
    assert_eq!(r["exitCode"], 143);
    assert!(r["reportPath"].is_string());
    assert!(pids_with_cmdline(&format!("sleep {m}")).is_empty());
}
