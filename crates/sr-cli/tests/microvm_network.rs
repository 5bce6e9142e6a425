//! `safe-run run` with `runtime.backend: microvm` and `network.mode: allowlist`, end to end
//! through the binary, as root, with a real QEMU guest (issue 11 item 6).
//!
//! Test hosts live in network namespaces this test creates ("allowed" and "blocked", each with
//! TCP and UDP echo servers on port 7 behind a veth to the host; crates/sr-testhosts). The guest
//! reaches them through its TAP `srt<run id>` and the run's nftables table, exactly as a
//! sandbox does through its veth. Traffic goes only to those namespaces and to the run's own
//! resolver on the host side of the TAP; the resolver's upstream is a closed port on loopback
//! and is never asked (the policy names no host, and the refused name is refused without
//! asking). Checks: busybox `nc` in the guest gets an echo from the allowed host:port and is
//! refused by the blocked one, the guest's resolver refuses a name the policy does not list,
//! the report's `networkAudit` counts both, and after the run no TAP, table or subnet ledger
//! entry is left: after a normal end, after SIGINT (safe-run's own cleanup) and after SIGKILL
//! (`safe-run gc`).
//!
//! Skipped (with a visible SKIPPED line) when not root or QEMU, vhost-device-vsock, nft or the
//! guest artifacts are missing; under CI=true each of those is a failure instead.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod run_support;

use std::path::Path;
use std::process::Command;

use run_support::*;
use serde_json::{Value, json};
use sr_testhosts::{TestHosts, sh};

/// Where the operator config's defaults look (docs/microvm.md).
const QEMU: &str = "/usr/bin/qemu-system-x86_64";
/// The guest artifacts: `SAFE_RUN_TEST_ARTIFACTS` (a directory `safe-run artifact build --out`
/// wrote), else the operator default. They must hold an agent that configures `sr.net`.
fn artifacts() -> String {
    run_support::vm::artifacts_dir().display().to_string()
}
/// The subnet ledger (docs/network.md).
const LEDGER: &str = "/run/safe-run/network/subnets.json";

fn vhost_bin() -> Option<String> {
    [
        "/usr/local/bin/vhost-device-vsock",
        "/root/.cargo/bin/vhost-device-vsock",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .map(str::to_owned)
}

/// Whether this test can run; not being able to is a failure under CI=true.
fn can_run(test: &str) -> Option<String> {
    if !require_root(test) {
        return None;
    }
    let mut missing = Vec::new();
    if !Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        missing.push("nft".to_owned());
    }
    if !Path::new(QEMU).exists() {
        missing.push(QEMU.to_owned());
    }
    let vhost = vhost_bin();
    if vhost.is_none() {
        missing.push("vhost-device-vsock".to_owned());
    }
    let dir = artifacts();
    for a in ["vmlinuz", "initramfs.img", "rootfs.ext4"] {
        if !Path::new(&dir).join(a).exists() {
            missing.push(format!("{dir}/{a} (safe-run artifact build)"));
        }
    }
    if !Path::new("/dev/net/tun").exists() {
        missing.push("/dev/net/tun".to_owned());
    }
    if missing.is_empty() {
        return vhost;
    }
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "{test} needs {} (CI=true, so this is a failure, not a skip)",
        missing.join(", ")
    );
    eprintln!("SKIPPED: {test} needs {}", missing.join(", "));
    None
}

/// The guest's script: the allowed host's echo, the blocked one's, and a name the policy does
/// not list, asked of the resolver /etc/resolv.conf names (the run's, on the gateway).
const GUEST: &str = r#"
out=$(echo ping | nc -w 3 "$1" 7); echo "allowed=$out rc=$?"
out=$(echo ping | nc -w 3 "$2" 7); echo "blocked=$out rc=$?"
gw=$(sed -n 's/.*sr\.net=[^,]*,\([0-9.]*\).*/\1/p' /proc/cmdline)
echo "gateway=$gw"
echo "resolv=$(cat /etc/resolv.conf)"
nslookup blocked.test >/dev/null 2>&1; echo "dns rc=$?"
"#;

/// An environment whose operator config boots the test artifacts with `vhost` and sends the
/// run's resolver upstream to a loopback port where nothing answers (no real DNS).
fn net_env(vhost: &str) -> Env {
    let env = Env::new();
    let dir = artifacts();
    env.configure(json!({
        "network": {"upstreamDns": "127.0.0.1:9"},
        "microvm": {
            "vhostDeviceVsockBin": vhost,
            "kernel": format!("{dir}/vmlinuz"),
            "initramfs": format!("{dir}/initramfs.img"),
            "rootfs": format!("{dir}/rootfs.ext4"),
        },
    }));
    env
}

fn rule<'a>(audit: &'a Value, id: &str) -> &'a Value {
    audit["rules"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["ruleId"] == id))
        .unwrap_or(&Value::Null)
}

/// The first value under `key` anywhere in `v`.
fn find_key(v: &Value, key: &str) -> Option<Value> {
    match v {
        Value::Object(m) => m
            .get(key)
            .cloned()
            .or_else(|| m.values().find_map(|x| find_key(x, key))),
        Value::Array(a) => a.iter().find_map(|x| find_key(x, key)),
        _ => None,
    }
}

#[test]
fn a_microvm_reaches_only_the_allowed_host_through_its_tap() {
    let test = "a_microvm_reaches_only_the_allowed_host_through_its_tap";
    let Some(vhost) = can_run(test) else {
        return;
    };
    let hosts = TestHosts::new("v", 140 + (std::process::id() % 12) * 4);
    let (a, b) = (hosts.allowed.to_string(), hosts.blocked.to_string());
    let env = net_env(&vhost);
    let p = env.policy(
        "vmnet",
        &json!({
            "version": 1,
            "name": "microvm-net",
            "runtime": {
                "backend": "microvm",
                "command": "/bin/sh",
                "args": ["-c", GUEST, "guest", &a, &b],
                "timeout": "90s",
            },
            "mounts": [],
            "network": {"mode": "allowlist", "egress": [
                {"cidr": format!("{a}/32"), "protocol": "tcp", "ports": [7]},
            ]},
            "resources": {"cpus": 1, "memory": "256Mi"},
        }),
    );
    let o = env.run(&p, &[]);
    let report = env.report();
    let stdout = out(&o);
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout {stdout} stderr {} report {report:#}",
        err(&o)
    );
    assert!(stdout.contains("allowed=ping rc=0"), "{stdout}");
    assert!(stdout.contains("blocked= rc="), "{stdout}");
    assert!(!stdout.contains("blocked=ping"), "{stdout}");
    // REFUSED by the run's resolver: busybox nslookup fails.
    assert!(!stdout.contains("dns rc=0"), "{stdout}");

    let dirs = env.run_dirs();
    let id = dirs[0].file_name().unwrap().to_string_lossy().into_owned();
    let tap = format!("srt{id}");
    // The facts name the TAP; the guest's kernel command line got the run's addresses.
    assert_eq!(
        find_key(&report, "tapInterface"),
        Some(json!(tap)),
        "{report:#}"
    );
    let gateway = find_key(&report, "hostAddress").unwrap();
    assert!(
        stdout.contains(&format!("gateway={}", gateway.as_str().unwrap())),
        "{stdout} {report:#}"
    );
    // The guest's resolver is the run's, on the gateway: /etc/resolv.conf says so.
    assert!(
        stdout.contains(&format!("resolv=nameserver {}", gateway.as_str().unwrap())),
        "{stdout}"
    );

    let audit = &report["networkAudit"];
    assert_eq!(rule(audit, "egress-0")["allowedHits"], 1, "{audit:#}");
    assert!(
        audit["blocked"]["packets"].as_u64().unwrap_or(0) >= 1,
        "{audit:#}"
    );
    let dests: Vec<String> = audit["details"]["blockedDestinations"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|d| format!("{} {} {}", d["address"], d["protocol"], d["port"]))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        dests.contains(&format!("\"{b}\" \"tcp\" 7")),
        "{dests:?} {audit:#}"
    );
    assert!(
        audit["details"]["dns"]["refused"].as_u64().unwrap_or(0) >= 1,
        "{audit:#}"
    );

    // Nothing left: no TAP, no table, no ledger entry.
    assert!(
        !sh(&["ip", "link", "show", &tap]).status.success(),
        "{tap} is left"
    );
    assert!(
        !sh(&["nft", "list", "table", "inet", &format!("safe_run_{id}")])
            .status
            .success(),
        "table safe_run_{id} is left"
    );
    let ledger = std::fs::read_to_string(LEDGER).unwrap_or_default();
    assert!(!ledger.contains(&id), "ledger still holds {id}: {ledger}");
}

/// The guest of the SIGKILL test: tries a service the host offers on every address (through the
/// gateway, the host's side of its TAP), says so, then waits to be killed.
const GUEST_THEN_WAIT: &str = r#"
gw=$(sed -n 's/.*sr\.net=[^,]*,\([0-9.]*\).*/\1/p' /proc/cmdline)
out=$(echo hello | nc -w 3 "$gw" "$1"); echo "hostsvc=$out rc=$?"
echo ready
sleep 600
"#;

#[test]
fn the_host_is_unreachable_from_the_guest_and_a_sigkilled_run_leaves_no_tap_after_gc() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let test = "the_host_is_unreachable_from_the_guest_and_a_sigkilled_run_leaves_no_tap_after_gc";
    let Some(vhost) = can_run(test) else {
        return;
    };
    // A service of the host's, on every address: the guest must not reach it through its link.
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let hosts = TestHosts::new("k", 188 + (std::process::id() % 12) * 4);
    let a = hosts.allowed.to_string();
    let env = net_env(&vhost);
    let p = env.policy(
        "vmkill",
        &json!({
            "version": 1,
            "name": "microvm-kill",
            "runtime": {
                "backend": "microvm",
                "command": "/bin/sh",
                "args": ["-c", GUEST_THEN_WAIT, "guest", &port],
                "timeout": "300s",
            },
            "mounts": [],
            "network": {"mode": "allowlist", "egress": [
                {"cidr": format!("{a}/32"), "protocol": "tcp", "ports": [7]},
            ]},
            "resources": {"cpus": 1, "memory": "256Mi"},
        }),
    );
    let mut child = env
        .run_cmd(&p)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut said = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line == "ready";
        said.push(line);
        if done {
            break;
        }
    }
    let dirs = env.run_dirs();
    let id = dirs[0].file_name().unwrap().to_string_lossy().into_owned();
    let tap = format!("srt{id}");
    assert!(
        said.iter().any(|l| l == "ready"),
        "the guest never got ready: {said:?}"
    );
    assert!(
        said.iter()
            .any(|l| l.starts_with("hostsvc= rc=") && l != "hostsvc= rc=0"),
        "the guest reached the host's service: {said:?}"
    );
    assert!(
        listener.accept().is_err(),
        "a connection from the guest reached the host"
    );
    assert!(
        sh(&["ip", "link", "show", &tap]).status.success(),
        "no {tap} while it runs"
    );

    // SIGKILL: the VMM dies with safe-run; the TAP, the table and the ledger entry stay for gc.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        wait_for(15, || run_support::vm::vmm_pids(&id).is_empty()),
        "the VMM outlived safe-run: {:?}",
        run_support::vm::vmm_pids(&id)
    );
    let o = env.cmd().arg("gc").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(
        !sh(&["ip", "link", "show", &tap]).status.success(),
        "{tap} is left after gc"
    );
    assert!(
        !sh(&["nft", "list", "table", "inet", &format!("safe_run_{id}")])
            .status
            .success(),
        "table safe_run_{id} is left after gc"
    );
    let ledger = std::fs::read_to_string(LEDGER).unwrap_or_default();
    assert!(!ledger.contains(&id), "ledger still holds {id}: {ledger}");
    assert!(
        cgroups_of(std::slice::from_ref(&id)).is_empty(),
        "cgroups of {id} are left"
    );
}

#[test]
fn sigint_of_an_allowlist_microvm_run_stops_the_vm_and_releases_its_network() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let test = "sigint_of_an_allowlist_microvm_run_stops_the_vm_and_releases_its_network";
    let Some(vhost) = can_run(test) else {
        return;
    };
    let env = net_env(&vhost);
    // The guest sends nothing: the rule (TEST-NET-1, never reached) only makes the run an
    // allowlist run, with its TAP, table, resolver and ledger entry.
    let p = env.policy(
        "vmint",
        &json!({
            "version": 1,
            "name": "microvm-sigint",
            "runtime": {
                "backend": "microvm",
                "command": "/bin/sh",
                "args": ["-c", "echo ready; exec sleep 600"],
                "timeout": "300s",
            },
            "mounts": [],
            "network": {"mode": "allowlist", "egress": [
                {"cidr": "192.0.2.1/32", "protocol": "tcp", "ports": [7]},
            ]},
            "resources": {"cpus": 1, "memory": "256Mi"},
        }),
    );
    let mut child = env
        .run_cmd(&p)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The guest is running the workload once it says so.
    let first = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .and_then(Result::ok);
    if first.as_deref() != Some("ready") {
        let _ = child.kill();
        let o = child.wait_with_output().unwrap();
        panic!(
            "the guest never got ready (safe-run {}, said {first:?}): {}",
            o.status,
            err(&o)
        );
    }
    let dir = env.run_dirs().remove(0);
    let id = run_id(&dir);
    let (tap, table) = (format!("srt{id}"), format!("safe_run_{id}"));
    // What must go: present while the run lives, so the checks below can fail.
    let table_exists = || {
        sh(&["nft", "list", "table", "inet", &table])
            .status
            .success()
    };
    let sockets = || -> Vec<String> {
        std::fs::read_dir(dir.join("vm"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".sock"))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        sh(&["ip", "link", "show", &tap]).status.success(),
        "no {tap}"
    );
    assert!(table_exists(), "no table {table}");
    assert!(
        std::fs::read_to_string(LEDGER)
            .unwrap_or_default()
            .contains(&id)
    );
    assert!(!sockets().is_empty(), "no VMM sockets in {}", dir.display());
    let vmms = run_support::vm::vmm_pids(&id);
    assert_eq!(vmms.len(), 4, "two VMMs, each under its unshare: {vmms:?}");

    signal(child.id(), "INT");
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", err(&o));
    let report = env.report();
    assert_eq!(report["exit"]["status"], "interrupted", "{report:#}");
    // The cleanup says it released the network and had nothing to complain about.
    assert_eq!(report["cleanup"]["errors"], json!([]), "{report:#}");
    assert!(
        report["cleanup"]["removed"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("network"))),
        "{report:#}"
    );
    run_support::vm::verify(&env, &dir);
    // No QEMU, vhost-device-vsock or chain process, no cgroup, TAP, table, socket or ledger
    // entry of the run.
    run_support::vm::assert_nothing_left(&id);
    assert!(
        !sh(&["ip", "link", "show", &tap]).status.success(),
        "{tap} is left"
    );
    assert!(!table_exists(), "table {table} is left");
    assert_eq!(sockets(), Vec::<String>::new(), "sockets are left");
    let ledger = std::fs::read_to_string(LEDGER).unwrap_or_default();
    assert!(!ledger.contains(&id), "ledger still holds {id}: {ledger}");
}
