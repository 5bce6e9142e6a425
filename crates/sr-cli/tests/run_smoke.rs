//! `safe-run run` end to end: output capture, exit codes, the report. Real sandbox, as root.

mod run_support;

use run_support::*;
use serde_json::json;

#[test]
fn echo_stdout_stderr_and_exit_code() {
    if !require_root("echo_stdout_stderr_and_exit_code") {
        return;
    }
    let env = Env::new();
    let p = env.policy("echo", &sh("echo out-line; echo err-line >&2; exit 7"));
    let o = env.run(&p, &[]);
    assert_eq!(o.status.code(), Some(7), "{}", err(&o));
    assert_eq!(out(&o), "out-line\n");
    assert!(err(&o).contains("err-line\n"));
    let dir = &env.run_dirs()[0];
    assert_eq!(
        std::fs::read_to_string(dir.join("stdout.log")).unwrap(),
        "out-line\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("stderr.log")).unwrap(),
        "err-line\n"
    );
}

#[test]
fn true_false_and_command_override() {
    if !require_root("true_false_and_command_override") {
        return;
    }
    let env = Env::new();
    let p = env.policy("t", &policy("/bin/true", &[], json!({})));
    assert_eq!(env.run(&p, &[]).status.code(), Some(0));
    assert_eq!(env.run(&p, &["/bin/false"]).status.code(), Some(1));
    let o = env.run(&p, &["/bin/echo", "hi", "there"]);
    assert_eq!(out(&o), "hi there\n");
    let o = env.run(&p, &["echo", "relative"]);
    assert_eq!(o.status.code(), Some(5));
    assert!(err(&o).contains("not an absolute path"), "{}", err(&o));
}

#[test]
fn report_is_written_with_the_run_facts() {
    if !require_root("report_is_written_with_the_run_facts") {
        return;
    }
    let env = Env::new();
    let p = env.policy("rep", &sh("echo hello"));
    let o = env.run(&p, &[]);
    assert!(o.status.success(), "{}", err(&o));
    let r = env.report();
    let dir = &env.run_dirs()[0];
    assert_eq!(r["runId"], run_id(dir));
    assert!(
        r["policy"]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(r["backend"], "sandbox");
    assert_eq!(r["status"], "exited");
    assert_eq!(r["exit"]["code"], 0);
    assert!(r["timings"]["phasesMs"]["total"].as_f64().unwrap() > 0.0);
    // Limits actually written (v1 or v2 names).
    let limits = r["limits"].as_object().unwrap();
    assert!(limits.contains_key("pids.max"), "{limits:?}");
    assert!(limits.contains_key("memory.max") || limits.contains_key("memory.limit_in_bytes"));
    let e = &r["enforcement"];
    assert_eq!(e["workload"]["uidMap"], "1000 65534 1");
    assert_eq!(e["workload"]["noNewPrivs"], true);
    assert!(
        e["workload"]["seccompDigest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(e["workload"]["landlock"]["status"], "fully_enforced");
    assert_eq!(r["outputs"]["stdout"]["size"], 6);
    assert_eq!(r["cleanup"]["errors"], json!([]));
    for ty in [
        "run.prepare",
        "policy.compiled",
        "sandbox.enforced",
        "process.started",
        "process.exited",
        "cleanup.done",
    ] {
        assert!(has_event(dir, ty), "no {ty} event");
    }
    assert!(dir.join("bundle.json").exists());
}
