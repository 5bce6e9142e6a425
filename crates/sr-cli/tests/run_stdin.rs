//! `safe-run run` passes its stdin to the workload when it is not a terminal: a pipe or a
//! file reaches the workload byte for byte, and the report's chain records its digest.
//! Real sandbox, as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod run_support;

use std::io::Write;
use std::process::Stdio;

use run_support::*;
use serde_json::json;

#[test]
fn piped_stdin_reaches_the_workload() {
    if !require_root("piped_stdin_reaches_the_workload") {
        return;
    }
    let env = Env::new();
    let p = env.policy("cat", &policy("/bin/cat", &[], json!({})));
    // `echo hi | safe-run run --policy P -- /bin/cat`
    let mut child = env
        .run_cmd(&p)
        .args(["--", "/bin/cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hi\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(out(&o), "hi\n");
    let dir = &env.run_dirs()[0];
    let exited = events_of(dir, "exec.exited");
    assert_eq!(exited.len(), 1);
    let want = sha256_of(b"hi\n");
    assert_eq!(exited[0]["payload"]["stdin"]["sha256"], want.as_str());
    assert_eq!(exited[0]["payload"]["stdin"]["bytes"], 3);
}

#[test]
fn eight_mib_from_a_file_come_through_whole() {
    if !require_root("eight_mib_from_a_file_come_through_whole") {
        return;
    }
    let env = Env::new();
    let p = env.policy("sum", &sh("sha256sum"));
    let data: Vec<u8> = (0..8u32 << 20).map(|i| (i % 253) as u8).collect();
    let file = env.share().join("input.bin");
    std::fs::create_dir_all(env.share()).unwrap();
    std::fs::write(&file, &data).unwrap();
    let o = env
        .run_cmd(&p)
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let want = sha256_of(&data);
    assert!(
        out(&o).starts_with(want.trim_start_matches("sha256:")),
        "{}",
        out(&o)
    );
}

#[test]
fn without_a_pipe_the_workload_reads_nothing() {
    if !require_root("without_a_pipe_the_workload_reads_nothing") {
        return;
    }
    let env = Env::new();
    let p = env.policy("cat", &policy("/bin/cat", &[], json!({})));
    // stdin is /dev/null (Command::output's default): cat sees EOF at once.
    let o = env.run(&p, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(out(&o), "");
}

#[test]
fn the_reports_execs_are_checked_against_the_chain() {
    if !require_root("the_reports_execs_are_checked_against_the_chain") {
        return;
    }
    let env = Env::new();
    let p = env.policy("exit3", &sh("echo out; exit 3"));
    let o = env.run(&p, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    let dir = &env.run_dirs()[0];
    let report_path = dir.join("run_report.json");
    let report = env.report();
    let execs = report["execs"].as_array().unwrap();
    assert_eq!(execs.len(), 1);
    assert_eq!(execs[0]["status"], json!({"kind": "exited", "code": 3}));
    assert_eq!(
        execs[0]["argv"],
        json!(["/bin/sh", "-c", "echo out; exit 3"])
    );
    assert_eq!(execs[0]["stdout"]["sha256"], sha256_of(b"out\n").as_str());
    let ok = verify(&env, &report_path);
    assert_eq!(ok.status.code(), Some(0), "{}{}", out(&ok), err(&ok));
    assert!(out(&ok).contains("PASS  activity"), "{}", out(&ok));
    // An edited exit code no longer matches the chain.
    let mut edited = report.clone();
    edited["execs"][0]["status"]["code"] = json!(0);
    std::fs::write(&report_path, serde_json::to_string_pretty(&edited).unwrap()).unwrap();
    let bad = verify(&env, &report_path);
    assert_ne!(bad.status.code(), Some(0));
    let text = format!("{}{}", out(&bad), err(&bad));
    assert!(
        text.contains("FAIL  activity") && text.contains("exec 1"),
        "{text}"
    );
}

/// A policy that keeps only a few event types still records what ran: the activity events are
/// always written, so the report's exec carries its exit and verifies (before, the exec was
/// listed from a ledger that had seen events the chain dropped, and verify failed).
#[test]
fn a_narrow_event_list_still_records_and_verifies_the_exec() {
    if !require_root("a_narrow_event_list_still_records_and_verifies_the_exec") {
        return;
    }
    let env = Env::new();
    let narrow = policy(
        "/bin/sh",
        &["-c", "exit 4"],
        json!({"evidence": {"events": ["run.prepare", "cleanup.done"]}}),
    );
    let p = env.policy("narrow", &narrow);
    let o = env.run(&p, &[]);
    assert_eq!(o.status.code(), Some(4), "{}", err(&o));
    let report = env.report();
    assert_eq!(
        report["execs"][0]["status"],
        json!({"kind": "exited", "code": 4}),
        "{report}"
    );
    let dir = &env.run_dirs()[0];
    let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    assert!(!events.contains("\"process.started\""), "{events}");
    let ok = verify(&env, &dir.join("run_report.json"));
    assert_eq!(ok.status.code(), Some(0), "{}{}", out(&ok), err(&ok));
    let text = out(&ok);
    assert!(
        text.contains("PASS  activity") && text.contains("1 execs and 0 transfers match"),
        "{text}"
    );
}

/// A command that cannot start is still listed, from its `exec.exited`, with its argv.
#[test]
fn an_exec_that_never_started_is_listed_and_verifies() {
    if !require_root("an_exec_that_never_started_is_listed_and_verifies") {
        return;
    }
    let env = Env::new();
    let p = env.policy(
        "missing",
        &policy("/bin/no-such-program", &["x"], json!({})),
    );
    let o = env.run(&p, &[]);
    assert_ne!(o.status.code(), Some(0), "{}", err(&o));
    let report = env.report();
    let execs = report["execs"].as_array().cloned().unwrap_or_default();
    assert_eq!(execs.len(), 1, "{report}");
    assert_eq!(execs[0]["argv"], json!(["/bin/no-such-program", "x"]));
    assert_eq!(execs[0]["status"]["kind"], "failed", "{report}");
    let ok = verify(&env, &env.run_dirs()[0].join("run_report.json"));
    assert_eq!(ok.status.code(), Some(0), "{}{}", out(&ok), err(&ok));
    assert!(
        out(&ok).contains("1 execs and 0 transfers match"),
        "{}",
        out(&ok)
    );
}

/// `safe-run report verify REPORT`.
fn verify(env: &Env, report: &std::path::Path) -> std::process::Output {
    env.cmd()
        .args(["report", "verify"])
        .arg(report)
        .output()
        .unwrap()
}
