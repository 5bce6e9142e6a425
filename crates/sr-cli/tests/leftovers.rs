//! Nothing is left behind: after normal, failing, timeout, OOM and SIGTERM runs there is no
//! cgroup, mount, namespace or process of the run; after a SIGKILL of safe-run the sandbox
//! dies with it and `safe-run gc` removes the cgroups.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod run_support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;

use run_support::*;
use serde_json::json;

/// The tests of this file observe host-wide state (namespaces, mounts): one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Namespace inode -> command lines of the processes holding it, for every process.
fn namespaces() -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if e.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        let cmd = std::fs::read(e.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        for ns in ["mnt", "net", "pid", "ipc", "uts", "user", "cgroup"] {
            if let Ok(l) = std::fs::read_link(e.path().join("ns").join(ns)) {
                map.entry(l.to_string_lossy().into_owned())
                    .or_default()
                    .push(cmd.clone());
            }
        }
    }
    map
}

fn mount_count() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count()
}

#[test]
fn every_kind_of_run_leaves_nothing() {
    if !require_root("every_kind_of_run_leaves_nothing") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::new();
    let m = marker("leftover");
    let mounts_before = mount_count();
    let ns_before = namespaces();

    let normal = env.policy("normal", &sh(&format!("(setsid sleep {m} &); echo hi")));
    let failing = env.policy("failing", &sh("exit 3"));
    let missing = env.policy("missing", &policy("/nope", &[], json!({})));
    let timeout = env.policy(
        "timeout",
        &policy(
            "/bin/sh",
            &["-c", &format!("sleep {m}")],
            json!({"runtime": {"timeout": "300ms"}}),
        ),
    );
    let mut oom = py("b = bytearray(256 << 20)");
    merge(&mut oom, json!({"resources": {"memory": "32Mi"}}));
    let oom = env.policy("oom", &oom);
    assert_eq!(env.run(&normal, &[]).status.code(), Some(0));
    assert_eq!(env.run(&failing, &[]).status.code(), Some(3));
    assert_eq!(env.run(&missing, &[]).status.code(), Some(5));
    assert_eq!(env.run(&timeout, &[]).status.code(), Some(6));
    assert_eq!(env.run(&oom, &[]).status.code(), Some(137));

    // SIGTERM to safe-run mid-run, then SIGHUP (the terminal went away): the same orderly stop.
    let term = env.policy("term", &sh(&format!("sleep {m}")));
    let interrupt = |sig: &str| {
        let child = env
            .run_cmd(&term)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(wait_for(10, || env.run_dirs().iter().any(|d| has_event(
            d,
            "process.started"
        ) && !d
            .join("run_report.json")
            .exists())));
        signal(pid, sig);
        child.wait_with_output().unwrap()
    };
    let o = interrupt("TERM");
    assert_eq!(o.status.code(), Some(143), "{}", err(&o));
    let o = interrupt("HUP");
    assert_eq!(o.status.code(), Some(129), "{}", err(&o));

    let dirs = env.run_dirs();
    assert_eq!(dirs.len(), 7);
    let ids: Vec<String> = dirs.iter().map(|d| run_id(d)).collect();
    let statuses: BTreeSet<String> = dirs
        .iter()
        .map(|d| {
            let r: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(d.join("run_report.json")).unwrap())
                    .unwrap();
            r["exit"]["status"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        statuses,
        ["exited", "interrupted", "launchFailed", "oom", "timeout"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    assert!(cgroups_of(&ids).is_empty(), "{:?}", cgroups_of(&ids));
    assert!(pids_with_cmdline(&format!("sleep {m}")).is_empty());
    assert_eq!(mount_count(), mounts_before);
    // Namespaces that appeared meanwhile and are held by anything of ours. (Other activity on
    // the host may create namespaces too; those are not held by safe-run or our marker.)
    let ns_after = namespaces();
    let ours: Vec<(&String, &Vec<String>)> = ns_after
        .iter()
        .filter(|(ns, _)| !ns_before.contains_key(*ns))
        .filter(|(_, holders)| {
            holders
                .iter()
                .any(|c| c.contains("safe-run") || c.contains(&m))
        })
        .collect();
    assert!(ours.is_empty(), "namespaces left: {ours:?}");
    for d in &dirs {
        assert!(!sr_is_locked(d), "{} still locked", d.display());
        assert!(
            !d.join("root").exists(),
            "root mount point left in {}",
            d.display()
        );
    }
}

/// Whether the run's lock is held (flock(1) -n fails with 1 when it is).
fn sr_is_locked(dir: &std::path::Path) -> bool {
    let st = std::process::Command::new("flock")
        .arg("-n")
        .arg(dir.join("run.lock"))
        .arg("true")
        .status()
        .unwrap();
    !st.success()
}

#[test]
fn sigkill_of_safe_run_takes_the_sandbox_down_and_gc_recovers() {
    if !require_root("sigkill_of_safe_run_takes_the_sandbox_down_and_gc_recovers") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::new();
    let m = marker("sigkill");
    let p = env.policy("k", &sh(&format!("sleep {m}")));
    let mut child = env
        .run_cmd(&p)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_for(10, || env
        .run_dirs()
        .iter()
        .any(|d| has_event(d, "process.started"))));
    assert!(!pids_with_cmdline(&format!("sleep {m}")).is_empty());
    child.kill().unwrap();
    child.wait().unwrap();
    // PDEATHSIG: the init, pid 1 and the workload die with safe-run.
    assert!(
        wait_for(5, || pids_with_cmdline(&format!("sleep {m}")).is_empty()),
        "the sandbox outlived safe-run"
    );
    let dir = env.run_dirs()[0].clone();
    let id = run_id(&dir);
    assert!(!dir.join("run_report.json").exists());
    let o = env.cmd().arg("gc").output().unwrap();
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    assert!(
        cgroups_of(std::slice::from_ref(&id)).is_empty(),
        "{:?}",
        cgroups_of(std::slice::from_ref(&id))
    );
    assert!(dir.join("recovered.json").exists());
    assert!(out(&o).contains(&id), "{}", out(&o));
    // A second gc has nothing left to do for this run.
    let o = env.cmd().arg("gc").output().unwrap();
    assert!(!out(&o).contains(&id), "{}", out(&o));
}

#[test]
fn concurrent_runs_do_not_interfere() {
    if !require_root("concurrent_runs_do_not_interfere") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = Env::new();
    let p = env.policy("c", &sh("sleep 0.3; echo done"));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let mut c = env.run_cmd(&p);
            std::thread::spawn(move || c.output().unwrap())
        })
        .collect();
    for h in handles {
        let o = h.join().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", err(&o));
        assert_eq!(out(&o), "done\n");
    }
    let ids: Vec<String> = env.run_dirs().iter().map(|d| run_id(d)).collect();
    assert_eq!(ids.len(), 4);
    assert!(cgroups_of(&ids).is_empty());
}

#[test]
fn ctrl_c_to_the_process_group_interrupts_cleanly() {
    if !require_root("ctrl_c_to_the_process_group_interrupts_cleanly") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    use std::os::unix::process::CommandExt;
    let env = Env::new();
    let m = marker("ctrl-c");
    let p = env.policy("int", &sh(&format!("sleep {m}")));
    // A terminal sends SIGINT to the whole foreground process group.
    let child = env
        .run_cmd(&p)
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    assert!(wait_for(10, || env
        .run_dirs()
        .iter()
        .any(|d| has_event(d, "process.started"))));
    let st = std::process::Command::new("kill")
        .args(["-INT", "--", &format!("-{pid}")])
        .status()
        .unwrap();
    assert!(st.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", err(&o));
    assert_eq!(env.report()["exit"]["status"], "interrupted");
    assert!(pids_with_cmdline(&format!("sleep {m}")).is_empty());
    let ids: Vec<String> = env.run_dirs().iter().map(|d| run_id(d)).collect();
    assert!(cgroups_of(&ids).is_empty());
}
