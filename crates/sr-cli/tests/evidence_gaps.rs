//! Evidence the report used to lack or invent (issue 14 items 3 and 4), end to end: a lost
//! init, the network plan event, mount digests and their bounds. Real sandbox, as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod run_support;

use std::process::Stdio;

use run_support::*;
use serde_json::{Value, json};

fn events(dir: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn ppid(pid: i32) -> i32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The sandbox's pid 1 is killed from outside: how the workload ended is unknown, and the
/// report says so instead of inventing a SIGKILL of the workload.
#[test]
fn a_vanished_init_is_reported_lost_not_signal_9() {
    if !require_root("a_vanished_init_is_reported_lost_not_signal_9") {
        return;
    }
    let env = Env::new();
    let m = marker("lost");
    let seconds = format!("1{m}");
    let p = env.policy("lost", &policy("/bin/sleep", &[&seconds], json!({})));
    let child = env
        .run_cmd(&p)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let needle = format!("sleep {seconds}");
    assert!(
        wait_for(20, || !pids_with_cmdline(&needle).is_empty()),
        "the workload never started"
    );
    let workload = pids_with_cmdline(&needle)[0];
    let pid1 = ppid(workload);
    assert!(pid1 > 1);
    // Only the sandbox's own pid 1, found through the workload this test started.
    let st = std::process::Command::new("kill")
        .args(["-KILL", &pid1.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(5), "{}", err(&o));
    assert!(err(&o).contains("unknown"), "{}", err(&o));
    let r = env.report();
    assert_eq!(r["exit"]["status"], "lost", "{:#}", r["exit"]);
    assert!(r["exit"].get("signal").is_none(), "{:#}", r["exit"]);
    assert!(r["exit"].get("code").is_none(), "{:#}", r["exit"]);
    assert!(pids_with_cmdline(&needle).is_empty());
    let o = env
        .cmd()
        .args(["report", "verify"])
        .arg(env.run_dirs()[0].join("run_report.json"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
}

/// `network.plan.generated` was documented but never written.
#[test]
fn the_network_plan_event_is_written() {
    if !require_root("the_network_plan_event_is_written") {
        return;
    }
    let env = Env::new();
    let p = env.policy("plan", &policy("/bin/true", &[], json!({})));
    let o = env.run(&p, &[]);
    assert!(o.status.success(), "{}", err(&o));
    let evs = events(&env.run_dirs()[0]);
    let plan: Vec<&Value> = evs
        .iter()
        .filter(|e| e["type"] == "network.plan.generated")
        .collect();
    assert_eq!(plan.len(), 1, "{evs:#?}");
    assert_eq!(plan[0]["payload"]["mode"], "none");
    let pos = |ty: &str| evs.iter().position(|e| e["type"] == ty).unwrap();
    assert!(pos("network.plan.generated") < pos("process.started"));
}

fn writable_work(env: &Env) -> std::path::PathBuf {
    let work = env.share().join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::set_permissions(&work, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    work
}

/// Files written to a writable mount are digested into the report, read-only ones only when
/// asked, and the manifest digest is checked by `report verify`.
#[test]
fn written_files_are_digested_and_verified() {
    if !require_root("written_files_are_digested_and_verified") {
        return;
    }
    let env = Env::new();
    let work = writable_work(&env);
    let input = env.share().join("input");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("data.txt"), b"input data\n").unwrap();
    let mut p = sh(
        "mkdir -p /work/sub && echo result > /work/sub/result.txt && ln -sf /etc/shadow /work/link && cat /in/data.txt",
    );
    merge(
        &mut p,
        json!({"mounts": [
            {"source": work, "target": "/work", "readOnly": false},
            {"source": input, "target": "/in"}
        ]}),
    );
    let p = env.policy("digests", &p);
    let o = env.run(&p, &[]);
    assert!(o.status.success(), "{}", err(&o));
    let r = env.report();
    let manifests = r["mounts"]["manifests"].as_array().unwrap();
    // Read-only mounts are off by default.
    assert_eq!(manifests.len(), 1, "{:#}", r["mounts"]);
    let m = &manifests[0];
    assert_eq!(m["target"], "/work");
    assert_eq!(m["taken"], "end");
    assert_eq!(m["complete"], true);
    let entries = m["entries"].as_array().unwrap();
    let result = entries
        .iter()
        .find(|e| e["path"] == "sub/result.txt")
        .unwrap();
    assert_eq!(
        result["digest"],
        format!("sha256:{}", sha256_hex(b"result\n"))
    );
    assert_eq!(result["bytes"], 7);
    let link = entries.iter().find(|e| e["path"] == "link").unwrap();
    assert_eq!(link["type"], "symlink");
    assert_eq!(link["link"], "/etc/shadow");
    assert!(link.get("digest").is_none());

    let report = env.run_dirs()[0].join("run_report.json");
    let o = env
        .cmd()
        .args(["report", "verify"])
        .arg(&report)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    assert!(out(&o).contains("PASS  mount:/work"), "{}", out(&o));

    // Read-only mounts too, when the operator asks.
    env.configure(json!({"mountDigests": {"readOnly": true}}));
    let o = env.run(&p, &[]);
    assert!(o.status.success(), "{}", err(&o));
    let dir = env
        .run_dirs()
        .into_iter()
        .find(|d| d.join("run_report.json") != report)
        .unwrap();
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run_report.json")).unwrap())
            .unwrap();
    let manifests = r["mounts"]["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2, "{:#}", r["mounts"]);
    assert_eq!(manifests[0]["target"], "/in");
    assert_eq!(manifests[0]["taken"], "start");
    assert_eq!(
        manifests[0]["entries"][0]["digest"],
        format!("sha256:{}", sha256_hex(b"input data\n"))
    );
}

/// The bounds hold and the report says when one was reached.
#[test]
fn the_digest_bounds_are_reported() {
    if !require_root("the_digest_bounds_are_reported") {
        return;
    }
    let env = Env::new();
    env.configure(json!({"mountDigests": {"maxFiles": 3}}));
    let work = writable_work(&env);
    let mut p = sh("for i in 1 2 3 4 5 6; do echo $i > /work/f$i; done");
    merge(
        &mut p,
        json!({"mounts": [{"source": work, "target": "/work", "readOnly": false}]}),
    );
    let p = env.policy("bounds", &p);
    let o = env.run(&p, &[]);
    assert!(o.status.success(), "{}", err(&o));
    let r = env.report();
    let m = &r["mounts"]["manifests"][0];
    assert_eq!(r["mounts"]["maxFiles"], 3);
    assert_eq!(m["files"], 3);
    assert_eq!(m["complete"], false);
    assert_eq!(m["limitReached"], "maxFiles");
    let o = env
        .cmd()
        .args(["report", "verify"])
        .arg(env.run_dirs()[0].join("run_report.json"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    assert!(
        out(&o).contains("incomplete: maxFiles reached"),
        "{}",
        out(&o)
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    sr_evidence::canonical::sha256_hex(bytes)
}
