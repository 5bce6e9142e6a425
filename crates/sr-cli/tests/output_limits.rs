//! Output limits end to end (`runtime.output`, operator `defaultLimits`/`maxLimits.outputBytes`):
//! the saved copy and the terminal copy stop at the limit, the rest is drained, the report
//! records what was seen and kept, and `onLimit: kill` ends the run with SR-RUN-004 (exit 8).
//! Real sandbox, as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod run_support;

use std::path::Path;

use run_support::*;
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;

/// Replaces the environment's operator config with its defaults plus `extra`.
fn operator_config(env: &Env, extra: Value) {
    let mut cfg = json!({
        "allowedMountPrefixes": [env.share()],
        "allowWritableMounts": true,
    });
    merge(&mut cfg, extra);
    std::fs::write(&env.config, cfg.to_string()).unwrap();
}

fn output<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no output {name}: {report}"))
}

fn verify(env: &Env, dir: &Path) -> std::process::Output {
    env.cmd()
        .arg("report")
        .arg("verify")
        .arg(dir.join("run_report.json"))
        .output()
        .unwrap()
}

#[test]
fn truncate_keeps_exactly_the_limit_and_the_run_goes_on() {
    if !require_root("truncate_keeps_exactly_the_limit_and_the_run_goes_on") {
        return;
    }
    let env = Env::new();
    let p = env.policy(
        "cut",
        &policy(
            "/bin/sh",
            &[
                "-c",
                "head -c 8388608 /dev/urandom; echo after-the-cut >&2; exit 3",
            ],
            json!({"runtime": {"output": {"maxBytes": "1Mi"}}}),
        ),
    );
    let o = env.run(&p, &[]);
    // The workload went on past the cut and its own exit code came through.
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    assert!(err(&o).contains("after-the-cut"), "{}", err(&o));
    // One notice on stderr naming the stream and the limit.
    let stderr_text = err(&o);
    let notices: Vec<&str> = stderr_text
        .lines()
        .filter(|l| l.contains("stdout cut at its limit"))
        .collect();
    assert_eq!(notices.len(), 1, "{}", err(&o));
    assert!(notices[0].contains("1048576 bytes"), "{}", notices[0]);

    let dir = &env.run_dirs()[0];
    let log = dir.join("stdout.log");
    // The saved copy and the terminal copy: exactly the first MiB, the same bytes.
    assert_eq!(std::fs::metadata(&log).unwrap().len(), MIB);
    assert_eq!(o.stdout, std::fs::read(&log).unwrap());

    let r = env.report();
    let so = output(&r, "stdout");
    assert_eq!(so["bytes"], MIB);
    assert_eq!(so["bytesSeen"], 8 * MIB);
    assert_eq!(so["truncated"], true);
    assert_eq!(so["limitBytes"], MIB);
    assert_eq!(so["onLimit"], "truncate");
    assert_eq!(so["digest"], sha256_file(&log));
    let errs = output(&r, "stderr");
    assert_eq!(errs["truncated"], false);
    assert_eq!(errs["bytes"], errs["bytesSeen"]);
    assert_eq!(r["exit"]["status"], "exited");

    let cut = events_of(dir, "output.truncated");
    assert_eq!(cut.len(), 1, "{cut:?}");
    assert_eq!(cut[0]["payload"]["stream"], "stdout");
    assert_eq!(cut[0]["payload"]["limitBytes"], MIB);

    let v = verify(&env, dir);
    assert_eq!(v.status.code(), Some(0), "{}{}", out(&v), err(&v));
    assert!(out(&v).contains("PASS  output:stdout"), "{}", out(&v));
}

#[test]
fn kill_ends_the_run_with_sr_run_004_and_exit_8() {
    if !require_root("kill_ends_the_run_with_sr_run_004_and_exit_8") {
        return;
    }
    let env = Env::new();
    let m = marker("kill-output");
    // `yes` never stops on its own: only the limit (or the 30 s timeout) ends it.
    let p = env.policy(
        "kill",
        &policy(
            "/usr/bin/yes",
            &[&m],
            json!({"runtime": {"output": {"maxBytes": "64Ki", "onLimit": "kill"}}}),
        ),
    );
    let o = env.run(&p, &[]);
    assert_eq!(o.status.code(), Some(8), "{}", err(&o));
    assert!(err(&o).contains("SR-RUN-004"), "{}", err(&o));
    assert!(err(&o).contains("stdout cut at its limit of 65536 bytes"));
    let dir = &env.run_dirs()[0];
    let log = dir.join("stdout.log");
    assert_eq!(std::fs::metadata(&log).unwrap().len(), 64 * 1024);
    assert_eq!(o.stdout.len(), 64 * 1024);

    let r = env.report();
    assert_eq!(r["exit"]["status"], "outputLimit");
    assert_eq!(r["exit"]["signal"], 9);
    let so = output(&r, "stdout");
    assert_eq!(so["truncated"], true);
    assert_eq!(so["onLimit"], "kill");
    assert!(so["bytesSeen"].as_u64().unwrap() > 64 * 1024);
    assert_eq!(so["digest"], sha256_file(&log));
    assert_eq!(events_of(dir, "output.truncated").len(), 1);
    assert!(pids_with_cmdline(&format!("yes {m}")).is_empty());
    assert_eq!(verify(&env, dir).status.code(), Some(0));
}

#[test]
fn kill_holds_when_the_workload_exits_right_after_the_cut() {
    if !require_root("kill_holds_when_the_workload_exits_right_after_the_cut") {
        return;
    }
    let env = Env::new();
    // The workload may exit before the runner acts on the cut; the run still ends by its
    // output limit, never as a plain exit.
    let p = env.policy(
        "race",
        &policy(
            "/bin/sh",
            &["-c", "head -c 200000 /dev/zero >&2; exit 0"],
            json!({"runtime": {"output": {"maxBytes": "100000", "onLimit": "kill"}}}),
        ),
    );
    let o = env.run(&p, &[]);
    assert_eq!(o.status.code(), Some(8), "{}", err(&o));
    let r = env.report();
    assert_eq!(r["exit"]["status"], "outputLimit");
    let e = output(&r, "stderr");
    assert_eq!(e["bytes"], 100_000);
    assert_eq!(e["truncated"], true);
    let dir = &env.run_dirs()[0];
    assert_eq!(
        std::fs::metadata(dir.join("stderr.log")).unwrap().len(),
        100_000
    );
}

#[test]
fn a_limit_above_the_operator_ceiling_is_refused() {
    if !require_root("a_limit_above_the_operator_ceiling_is_refused") {
        return;
    }
    let env = Env::new();
    operator_config(
        &env,
        json!({"maxLimits": {"outputBytes": "1Mi"}, "defaultLimits": {"outputBytes": "1Mi"}}),
    );
    let p = env.policy(
        "big",
        &policy(
            "/bin/true",
            &[],
            json!({"runtime": {"output": {"maxBytes": "2Mi"}}}),
        ),
    );
    let v = env.cmd().arg("validate").arg(&p).output().unwrap();
    assert_eq!(v.status.code(), Some(3), "{}{}", out(&v), err(&v));
    let text = format!("{}{}", out(&v), err(&v));
    assert!(
        text.contains("SR-POL-003 at runtime.output.maxBytes"),
        "{text}"
    );
    assert!(text.contains("ceiling 1Mi"), "{text}");
    let o = env.run(&p, &[]);
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    assert!(env.run_dirs().is_empty(), "nothing may be created");
}

#[test]
fn the_operator_default_applies_when_the_policy_says_nothing() {
    if !require_root("the_operator_default_applies_when_the_policy_says_nothing") {
        return;
    }
    let env = Env::new();
    operator_config(&env, json!({"defaultLimits": {"outputBytes": "4Ki"}}));
    let p = env.policy("dflt", &sh("head -c 10000 /dev/zero >&2; echo small"));
    let o = env.run(&p, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(err(&o).contains("stderr cut at its limit of 4096 bytes"));
    let dir = &env.run_dirs()[0];
    let bundle: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("bundle.json")).unwrap()).unwrap();
    assert_eq!(
        bundle["process"]["output"],
        json!({"maxBytes": 4096, "onLimit": "truncate"})
    );
    assert_eq!(
        std::fs::metadata(dir.join("stderr.log")).unwrap().len(),
        4096
    );
    let r = env.report();
    let e = output(&r, "stderr");
    assert_eq!(e["bytesSeen"], 10_000);
    assert_eq!(e["bytes"], 4096);
    assert_eq!(e["limitBytes"], 4096);
    // stdout stayed under the same per-stream limit and is whole.
    let s = output(&r, "stdout");
    assert_eq!(s["bytes"], 6);
    assert_eq!(s["truncated"], false);
    assert_eq!(s["limitBytes"], 4096);
}
