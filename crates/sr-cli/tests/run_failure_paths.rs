//! The ways a run can fail, each with its exit code, message and report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod run_support;

use std::time::{Duration, Instant};

use run_support::*;
use serde_json::json;

#[test]
fn missing_binary_is_a_precise_launch_error() {
    if !require_root("missing_binary_is_a_precise_launch_error") {
        return;
    }
    let env = Env::new();
    let p = env.policy("nobin", &policy("/usr/bin/no-such-binary", &[], json!({})));
    let o = env.run(&p, &[]);
    assert_eq!(o.status.code(), Some(5), "{}", err(&o));
    assert!(err(&o).contains("SR-RUN-002 at launch.exec"), "{}", err(&o));
    assert!(err(&o).contains("/usr/bin/no-such-binary"), "{}", err(&o));
    assert_eq!(env.report()["exit"]["status"], "launchFailed");
}

#[test]
fn timeout_kills_the_tree_and_exits_6() {
    if !require_root("timeout_kills_the_tree_and_exits_6") {
        return;
    }
    let env = Env::new();
    let m = marker("timeout");
    let p = env.policy(
        "to",
        &policy(
            "/bin/sh",
            &["-c", &format!("sleep {m} & sleep {m}")],
            json!({"runtime": {"timeout": "500ms"}}),
        ),
    );
    let t = Instant::now();
    let o = env.run(&p, &[]);
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(o.status.code(), Some(6), "{}", err(&o));
    assert!(err(&o).contains("SR-RUN-003"), "{}", err(&o));
    assert_eq!(env.report()["exit"]["status"], "timeout");
    assert!(has_event(&env.run_dirs()[0], "run.timeout"));
    assert!(pids_with_cmdline(&format!("sleep {m}")).is_empty());
}

#[test]
fn oom_is_reported_as_such() {
    if !require_root("oom_is_reported_as_such") {
        return;
    }
    let env = Env::new();
    let mut p = py("b = bytearray(256 * 1024 * 1024); print('survived')");
    merge(&mut p, json!({"resources": {"memory": "32Mi"}}));
    let p = env.policy("oom", &p);
    let o = env.run(&p, &[]);
    assert_eq!(o.status.code(), Some(137), "{}", err(&o));
    assert!(!out(&o).contains("survived"));
    assert!(err(&o).contains("OOM"), "{}", err(&o));
    let r = env.report();
    assert_eq!(r["exit"]["status"], "oom");
    assert!(has_event(&env.run_dirs()[0], "run.oom"));
}

#[test]
fn pids_limit_stops_forking() {
    if !require_root("pids_limit_stops_forking") {
        return;
    }
    let env = Env::new();
    let mut p = py(FORK_UNTIL_REFUSED);
    merge(&mut p, json!({"resources": {"pids": 16}}));
    let p = env.policy("pids", &p);
    let o = env.run(&p, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let n: u32 = out(&o)
        .trim()
        .trim_start_matches("forked ")
        .parse()
        .unwrap();
    assert!(n < 16, "forked {n} with pids.max 16");
    assert!(env.report()["resources"]["pidsPeak"].as_u64().unwrap() <= 16);
}

#[test]
fn bad_cwd_is_a_launch_error() {
    if !require_root("bad_cwd_is_a_launch_error") {
        return;
    }
    let env = Env::new();
    let mut p = sh("pwd");
    merge(&mut p, json!({"runtime": {"cwd": "/does/not/exist"}}));
    let p = env.policy("cwd", &p);
    let o = env.run(&p, &[]);
    assert_eq!(o.status.code(), Some(5), "{}", err(&o));
    assert!(err(&o).contains("launch.cwd"), "{}", err(&o));
}

#[test]
fn invalid_policy_exits_3_and_creates_nothing() {
    if !require_root("invalid_policy_exits_3_and_creates_nothing") {
        return;
    }
    let env = Env::new();
    let p = env.policy("bad", &json!({"version": 1, "name": "x"}));
    let o = env.run(&p, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    assert!(env.run_dirs().is_empty());
}

#[test]
fn preflight_names_what_is_missing_when_not_root() {
    if !require_root("preflight_names_what_is_missing_when_not_root") {
        return;
    }
    // Run safe-run itself as an unprivileged user (setpriv): preflight must refuse with
    // SR-RUN-001, name the check and the fix, and create nothing.
    let env = Env::new();
    let p = env.policy("pre", &sh("true"));
    std::fs::set_permissions(
        env.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let o = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            bin(),
            "run",
            "--policy",
        ])
        .arg(&p)
        .env("SAFE_RUN_WORKDIR_BASE", &env.base)
        .env("SAFE_RUN_CONFIG", &env.config)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5), "{}", err(&o));
    assert!(
        err(&o).contains("SR-RUN-001 at preflight.root"),
        "{}",
        err(&o)
    );
    assert!(err(&o).contains("run it as root"), "{}", err(&o));
    assert!(env.run_dirs().is_empty());
}

#[test]
fn resources_are_sampled_while_the_workload_runs() {
    if !require_root("resources_are_sampled_while_the_workload_runs") {
        return;
    }
    let env = Env::new();
    let p = env.policy("sample", &sh("sleep 1.2"));
    let o = env.run(&p, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let dir = &env.run_dirs()[0];
    let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    let samples: Vec<serde_json::Value> = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["type"] == "resource.sample")
        .collect();
    assert!(samples.len() >= 2, "{} samples", samples.len());
    assert!(
        samples[0]["payload"]["pids"].as_u64().unwrap() >= 1,
        "{:?}",
        samples[0]
    );
    assert!(samples[0]["payload"]["memoryBytes"].as_u64().unwrap() > 0);
}
