//! `safe-run run` with `network.mode: allowlist`, end to end through the binary, as root.
//!
//! Test hosts live in network namespaces this test creates ("allowed" and "blocked", each with
//! TCP and UDP echo servers on port 7, behind a veth to the host), and a DNS stub on 127.0.0.1
//! (started by the test) maps `allowed.test` and `blocked.test` to them; the operator config's
//! `network.upstreamDns` points at that stub, so no real resolver is ever asked and traffic goes
//! only to those namespaces and loopback. Checks: the workload reaches the allowed host (by
//! address and by name through the run's resolver), not the blocked one; the report's
//! `networkAudit` counts what it sent; and no table or link is left after a normal exit, a
//! timeout and a SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod run_support;

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Duration;

use run_support::*;
use serde_json::{Value, json};
use sr_testhosts::{TestHosts, must, probe_script, sh};

fn privileged(test: &str) -> bool {
    if !require_root(test) {
        return false;
    }
    let nft = Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !nft {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "{test} needs nft (CI=true)"
        );
        eprintln!("SKIPPED: {test} needs nft");
    }
    nft
}

/// A DNS stub on 127.0.0.1: prints its port, answers A for the two test names, NXDOMAIN else.
const STUB: &str = r#"
import socket, struct, sys
names = {"allowed.test": sys.argv[1], "blocked.test": sys.argv[2]}
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
while True:
    q, peer = s.recvfrom(1500)
    i, labels = 12, []
    while q[i]:
        labels.append(q[i+1:i+1+q[i]].decode().lower()); i += q[i] + 1
    qtype = struct.unpack(">H", q[i+1:i+3])[0]
    question = q[12:i+5]
    ip = names.get(".".join(labels))
    if ip is None:
        s.sendto(q[:2] + struct.pack(">HHHHH", 0x8183, 1, 0, 0, 0) + question, peer); continue
    answers = b""
    if qtype == 1:
        answers = struct.pack(">HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(ip)
    s.sendto(q[:2] + struct.pack(">HHHHH", 0x8180, 1, 1 if answers else 0, 0, 0) + question + answers, peer)
"#;

/// The test hosts plus a DNS stub that names them; removed on drop.
struct Topology {
    /// Kept for its `Drop`: removes the hosts and the stub.
    _hosts: TestHosts,
    allowed: Ipv4Addr,
    blocked: Ipv4Addr,
    stub_port: u16,
}

impl Topology {
    fn new() -> Topology {
        let mut hosts = TestHosts::new("c", 200 + (std::process::id() % 12) * 4);
        let (allowed, blocked) = (hosts.allowed, hosts.blocked);
        let mut stub = Command::new("/usr/bin/python3")
            .args(["-c", STUB, &allowed.to_string(), &blocked.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(stub.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        hosts.adopt(stub);
        Topology {
            _hosts: hosts,
            allowed,
            blocked,
            stub_port: line.trim().parse().unwrap(),
        }
    }

    /// An Env whose operator config sends DNS to this topology's stub.
    fn env(&self) -> Env {
        self.env_with(json!({}))
    }

    /// [`Topology::env`] with further `network` operator settings.
    fn env_with(&self, network: Value) -> Env {
        let env = Env::new();
        let mut cfg: Value = serde_json::from_slice(&std::fs::read(&env.config).unwrap()).unwrap();
        cfg["network"] = json!({"upstreamDns": format!("127.0.0.1:{}", self.stub_port)});
        merge(&mut cfg["network"], network);
        std::fs::write(&env.config, cfg.to_string()).unwrap();
        env
    }

    fn policy(&self, command: &str, args: &[&str], timeout: &str) -> Value {
        let mut p = policy(command, args, json!({}));
        merge(
            &mut p,
            json!({
                "runtime": {"timeout": timeout},
                "network": {"mode": "allowlist", "egress": [
                    {"cidr": format!("{}/32", self.allowed), "protocol": "tcp", "ports": [7]},
                    {"host": "allowed.test", "protocol": "udp", "ports": [7]},
                ]},
            }),
        );
        p
    }
}

/// The runs' network objects that still exist once their deferred releases are done: waits
/// (at most 30 s) until no run dir has `release.pending` (the releaser removes it when every
/// object is gone, and leaves it when a step failed), then checks the releaser's record and
/// the kernel's tables and links.
fn leftovers(env: &Env) -> Vec<String> {
    let settled = wait_for(30, || {
        env.run_dirs()
            .iter()
            .all(|d| !d.join("release.pending").exists())
    });
    let mut left = Vec::new();
    if !settled {
        left.push("a deferred release still pending after 30 s".to_owned());
    }
    for dir in env.run_dirs() {
        let id = dir.file_name().unwrap().to_string_lossy().into_owned();
        if let Ok(text) = std::fs::read_to_string(dir.join("net/release.json")) {
            let record: Value = serde_json::from_str(&text).unwrap();
            if record["errors"] != json!([]) {
                left.push(format!("release errors of {id}: {}", record["errors"]));
            }
        }
        if sh(&["nft", "list", "table", "inet", &format!("safe_run_{id}")])
            .status
            .success()
        {
            left.push(format!("table safe_run_{id}"));
        }
        if sh(&["ip", "link", "show", &format!("sr{id}h")])
            .status
            .success()
        {
            left.push(format!("link sr{id}h"));
        }
    }
    left
}

const CLIENT: &str = r#"
import json, socket, sys
allowed, blocked = sys.argv[1], sys.argv[2]
def resolve(name):
    try:
        return socket.gethostbyname(name)
    except OSError as e:
        return None
out = {"allowedName": resolve("allowed.test"), "blockedName": resolve("blocked.test")}
name = out["allowedName"] or allowed
out["tcpAllowed"] = [tcp(allowed, 7), tcp(allowed, 7)]
out["udpAllowedByName"] = [udp(name, 7), udp(name, 7), udp(name, 7)]
out["tcpBlocked"] = tcp(blocked, 7)
out["udpBlocked"] = [udp(blocked, 7), udp(blocked, 7)]
print(json.dumps(out))
"#;

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

/// The first object anywhere in `v` that has `key`.
fn facts_with(v: &Value, key: &str) -> Option<Value> {
    match v {
        Value::Object(m) if m.contains_key(key) => Some(v.clone()),
        Value::Object(m) => m.values().find_map(|x| facts_with(x, key)),
        Value::Array(a) => a.iter().find_map(|x| facts_with(x, key)),
        _ => None,
    }
}

fn rule<'a>(audit: &'a Value, id: &str) -> &'a Value {
    audit["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ruleId"] == id)
        .unwrap_or(&Value::Null)
}

#[test]
fn allowlist_run_enforces_and_audits() {
    if !privileged("allowlist_run_enforces_and_audits") {
        return;
    }
    let topo = Topology::new();
    let env = topo.env();
    let (a, b) = (topo.allowed.to_string(), topo.blocked.to_string());
    let p = env.policy(
        "net",
        &topo.policy(
            "/usr/bin/python3",
            &["-c", &probe_script(CLIENT), &a, &b],
            "30s",
        ),
    );
    let o = env.run(&p, &[]);
    let report = env.report();
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout {} stderr {} report {report:#}",
        out(&o),
        err(&o)
    );
    let r: Value = serde_json::from_str(out(&o).lines().last().unwrap()).unwrap();
    assert_eq!(r["allowedName"], a.as_str(), "{r}");
    assert_eq!(
        r["blockedName"],
        Value::Null,
        "a blocked name must not resolve: {r}"
    );
    assert_eq!(r["tcpAllowed"], json!([true, true]), "{r}");
    assert_eq!(r["udpAllowedByName"], json!([true, true, true]), "{r}");
    assert_eq!(r["tcpBlocked"], false);
    assert_eq!(r["udpBlocked"], json!([false, false]));

    // The report's networkAudit: per egress rule, the default drop's total, and the network
    // module's further data under `details`.
    let audit = &report["networkAudit"];
    assert_eq!(rule(audit, "egress-0")["allowedHits"], 2, "{audit:#}");
    assert_eq!(rule(audit, "egress-1")["allowedHits"], 3, "{audit:#}");
    // One SYN and two datagrams to the blocked host.
    assert_eq!(audit["blocked"]["packets"], 3, "{audit:#}");
    assert!(audit["blocked"]["bytes"].as_u64().unwrap() > 0, "{audit:#}");
    let details = &audit["details"];
    let dests: Vec<String> = details["blockedDestinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            format!(
                "{} {} {} {}",
                d["address"].as_str().unwrap(),
                d["protocol"].as_str().unwrap(),
                d["port"],
                d["packets"]
            )
        })
        .collect();
    assert!(dests.contains(&format!("{b} udp 7 2")), "{dests:?}");
    assert!(dests.contains(&format!("{b} tcp 7 1")), "{dests:?}");
    // blocked.test was refused (glibc asks twice when the first answer is REFUSED).
    assert!(
        details["dns"]["refused"].as_u64().unwrap() >= 1,
        "{audit:#}"
    );
    assert!(
        details["dns"]["answered"].as_u64().unwrap() >= 1,
        "{audit:#}"
    );
    let digest = find_key(&report, "nftRulesetDigest");
    assert!(
        digest
            .as_ref()
            .and_then(Value::as_str)
            .is_some_and(|d| d.starts_with("sha256:")),
        "facts lack the ruleset digest: {report:#}"
    );

    let events = std::fs::read_to_string(env.run_dirs()[0].join("events.jsonl")).unwrap();
    // The read-back's digest is recorded once, after the table was applied, and it is the
    // report's.
    let parsed: Vec<Value> = events
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .collect();
    let rulesets: Vec<&Value> = parsed
        .iter()
        .filter(|e| e["type"] == "network.ruleset")
        .collect();
    assert_eq!(rulesets.len(), 1, "{events}");
    assert_eq!(
        Some(&rulesets[0]["payload"]["nftRulesetDigest"]),
        digest.as_ref()
    );
    let position = |ty: &str| parsed.iter().position(|e| e["type"] == ty).unwrap();
    assert!(position("network.applied") < position("network.ruleset"));
    let hits: Vec<Value> = events
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["type"] == "network.rule.hit")
        .collect();
    assert!(!hits.is_empty(), "no network.rule.hit events");
    for h in &hits {
        let p = &h["payload"];
        assert!(p["allowedHits"].as_u64().unwrap() + p["blockedHits"].as_u64().unwrap() > 0);
    }
    assert!(events.contains("network.dns.query"));
    assert_eq!(leftovers(&env), Vec::<String>::new());
}

#[test]
fn timeout_and_sigterm_leave_no_network_objects() {
    if !privileged("timeout_and_sigterm_leave_no_network_objects") {
        return;
    }
    let topo = Topology::new();
    let env = topo.env();
    let p = env.policy("sleepy", &topo.policy("/bin/sleep", &["30"], "1s"));
    let o = env.run(&p, &[]);
    assert_eq!(
        o.status.code(),
        Some(6),
        "timeout exit code; stderr {}",
        err(&o)
    );
    assert_eq!(leftovers(&env), Vec::<String>::new(), "after timeout");

    let env2 = topo.env();
    let p = env2.policy("sleepy", &topo.policy("/bin/sleep", &["30"], "30s"));
    let mut child = env2
        .run_cmd(&p)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the run's table exists, then SIGTERM safe-run.
    let mut seen = false;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(dir) = env2.run_dirs().first() {
            let id = dir.file_name().unwrap().to_string_lossy().into_owned();
            if sh(&["nft", "list", "table", "inet", &format!("safe_run_{id}")])
                .status
                .success()
            {
                seen = true;
                break;
            }
        }
    }
    assert!(seen, "the run never applied its table");
    must(&["kill", "-TERM", &child.id().to_string()]);
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert_eq!(leftovers(&env2), Vec::<String>::new(), "after SIGTERM");
}

/// The events so far (none while the run has not created its chain yet: callers poll).
fn events_of(dir: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .collect()
}

/// Issue 8 item 7 through the binary: `network.maxConnections` bounds the flows one run holds,
/// and the report and events say so.
#[test]
fn allowlist_run_is_bounded_in_connections() {
    if !privileged("allowlist_run_is_bounded_in_connections") {
        return;
    }
    const BOUND: u64 = 16;
    let topo = Topology::new();
    let env = topo.env_with(json!({"maxConnections": BOUND}));
    let a = topo.allowed.to_string();
    let flows = (3 * BOUND).to_string();
    let p = env.policy(
        "flows",
        &topo.policy(
            "/usr/bin/python3",
            &["-c", sr_testhosts::MANY_UDP_FLOWS, &a, &flows],
            "30s",
        ),
    );
    let o = env.run(&p, &[]);
    let report = env.report();
    assert_eq!(
        o.status.code(),
        Some(0),
        "stderr {} report {report:#}",
        err(&o)
    );
    let r: Value = serde_json::from_str(out(&o).lines().last().unwrap()).unwrap();
    assert!(r["echoed"].as_u64().unwrap() <= BOUND, "{r}");
    let audit = &report["networkAudit"];
    let limit = &audit["details"]["connectionLimit"];
    assert_eq!(limit["maxConnections"], BOUND, "{audit:#}");
    let dropped = limit["dropped"]["packets"].as_u64().unwrap();
    let accepted = rule(audit, "egress-1")["allowedHits"].as_u64().unwrap();
    assert!((1..=BOUND).contains(&accepted), "{audit:#}");
    assert_eq!(accepted + dropped, 3 * BOUND, "{audit:#}");
    // The bound is an enforced fact of the run.
    assert_eq!(
        find_key(&report["enforcement"], "connectionLimit").map(|l| l["maxConnections"].clone()),
        Some(json!(BOUND)),
        "{report:#}"
    );
    let hit = events_of(&env.run_dirs()[0])
        .into_iter()
        .rfind(|e| e["type"] == "network.rule.hit" && e["payload"]["ruleId"] == "conn-limit");
    assert_eq!(
        hit.map(|e| e["payload"]["blockedHits"].clone()),
        Some(json!(dropped))
    );
    assert_eq!(leftovers(&env), Vec::<String>::new());
}

/// Run B: echo servers on port 7777 (unprivileged) in its sandbox; says "ready" on stdout and
/// ends on a datagram "stop" or after 25 s.
const SERVE: &str = r#"
import select, socket, time
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 7777))
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("0.0.0.0", 7777)); t.listen(8)
print("ready", flush=True)
end = time.time() + 25
while time.time() < end:
    ready, _, _ = select.select([u, t], [], [], 0.5)
    if u in ready:
        d, a = u.recvfrom(100)
        if d == b"stop": break
        u.sendto(d, a)
    if t in ready:
        c, _ = t.accept(); c.sendall(c.recv(100)); c.close()
"#;

/// Run A: its own resolver, then B's resolver and B's addresses.
const REACH_B: &str = r#"
import json, socket, struct, sys
b_host, b_guest = sys.argv[1], sys.argv[2]
def dns(server, name):
    q = struct.pack(">HHHHHH", 0x4321, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
    s.sendto(q, (server, 53))
    try:
        return len(s.recv(1500)) > 0
    except OSError:
        return False
own = open("/etc/resolv.conf").read().split()[1]
print(json.dumps({
    "own": dns(own, "allowed.test"),
    "bResolver": dns(b_host, "allowed.test"),
    "bHostTcp53": tcp(b_host, 53),
    "bGuestUdp": udp(b_guest, 7777),
    "bGuestTcp": tcp(b_guest, 7777),
}))
"#;

/// A `safe-run` started by a test: SIGTERMed and reaped if the test fails before it ends.
struct Running(Option<std::process::Child>);

/// Starts a run of `p` in the background and waits until its workload has started (the
/// network is attached by then).
fn start_in_background(env: &Env, p: &std::path::Path) -> Running {
    let child = Running(Some(
        env.run_cmd(p)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let started = wait_for(20, || {
        env.run_dirs()
            .first()
            .is_some_and(|d| events_of(d).iter().any(|e| e["type"] == "process.started"))
    });
    assert!(started, "the run never started its workload");
    child
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            signal(child.id(), "TERM");
            let _ = child.wait();
        }
    }
}

/// Issue 8 item 6 through the binary: two runs alive at once; run A reaches neither B's
/// resolver nor B's addresses, though A's policy allows the whole subnet pool, and B's
/// evidence records nothing of A.
#[test]
fn concurrent_runs_cannot_reach_each_other() {
    if !privileged("concurrent_runs_cannot_reach_each_other") {
        return;
    }
    let topo = Topology::new();
    let pool_policy = |command: &str, args: &[&str]| {
        let mut p = policy(command, args, json!({}));
        merge(
            &mut p,
            json!({"network": {"mode": "allowlist", "egress": [
                {"host": "allowed.test", "protocol": "udp", "ports": [7]},
                {"cidr": "10.213.0.0/16", "protocol": "udp", "ports": [53, 7777]},
                {"cidr": "10.213.0.0/16", "protocol": "tcp", "ports": [53, 7777]},
            ]}}),
        );
        p
    };
    let env_b = topo.env();
    let p = env_b.policy("b", &pool_policy("/usr/bin/python3", &["-c", SERVE]));
    let mut b = Running(Some(
        env_b
            .run_cmd(&p)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let ready = wait_for(20, || {
        env_b.run_dirs().first().is_some_and(|d| {
            std::fs::read_to_string(d.join("stdout.log")).is_ok_and(|t| t.contains("ready"))
        })
    });
    assert!(ready, "run B never served");
    let dir_b = env_b.run_dirs()[0].clone();
    let resolv = std::fs::read_to_string(dir_b.join("net/resolv.conf")).unwrap();
    let b_host: Ipv4Addr = resolv.split_whitespace().nth(1).unwrap().parse().unwrap();
    let b_guest = Ipv4Addr::from(u32::from(b_host) + 1);

    let env_a = topo.env();
    let client = probe_script(REACH_B);
    let p = env_a.policy(
        "a",
        &pool_policy(
            "/usr/bin/python3",
            &["-c", &client, &b_host.to_string(), &b_guest.to_string()],
        ),
    );
    let o = env_a.run(&p, &[]);
    assert_eq!(o.status.code(), Some(0), "stderr {}", err(&o));
    let r: Value = serde_json::from_str(out(&o).lines().last().unwrap()).unwrap();
    assert_eq!(r["own"], true, "{r}");
    for key in ["bResolver", "bHostTcp53", "bGuestUdp", "bGuestTcp"] {
        assert_eq!(r[key], false, "{key}: {r}");
    }

    // B was alive throughout: stop it (the host may send to its sandbox) and read its evidence.
    let stop = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    stop.send_to(b"stop", (b_guest, 7777)).unwrap();
    let status = b.0.take().unwrap().wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let queries = events_of(&dir_b)
        .into_iter()
        .filter(|e| e["type"] == "network.dns.query")
        .count();
    assert_eq!(queries, 0, "B's evidence records A's queries");
    let report_b = env_b.report();
    let dns = &report_b["networkAudit"]["details"]["dns"];
    assert_eq!(dns["answered"], 0, "{report_b:#}");
    assert_eq!(dns["ignored"], 0, "{report_b:#}");
    assert_eq!(leftovers(&env_a), Vec::<String>::new());
    assert_eq!(leftovers(&env_b), Vec::<String>::new());
}

/// The uplink the host routes `dest` through, and its forwarding flag.
fn uplink_flag(dest: Ipv4Addr) -> (String, String) {
    let o = sh(&["ip", "-j", "route", "get", &dest.to_string()]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let dev = v[0]["dev"].as_str().unwrap().to_owned();
    let flag = std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{dev}/forwarding"))
        .unwrap()
        .trim()
        .to_owned();
    (dev, flag)
}

/// Issue 14 item 5: after SIGKILL of an allowlist run, `safe-run gc` gives the uplink's
/// forwarding flag back (the uplink is this test's own veth to its allowed host, so no other
/// run holds it), and removes the run's table, link and ledger entry.
#[test]
fn gc_after_sigkill_restores_the_uplink_forwarding_flag() {
    if !privileged("gc_after_sigkill_restores_the_uplink_forwarding_flag") {
        return;
    }
    let topo = Topology::new();
    let (uplink, _) = uplink_flag(topo.allowed);
    // The test's own link: start from a known 0.
    std::fs::write(format!("/proc/sys/net/ipv4/conf/{uplink}/forwarding"), "0").unwrap();
    let env = topo.env();
    let p = env.policy("killed", &topo.policy("/bin/sleep", &["30"], "30s"));
    // The run has attached once the workload started (forwarding is set before that).
    let mut child = start_in_background(&env, &p);
    assert_eq!(
        uplink_flag(topo.allowed).1,
        "1",
        "the run did not enable {uplink}"
    );
    let mut killed = child.0.take().unwrap();
    signal(killed.id(), "KILL");
    killed.wait().unwrap();
    let id = env.run_dirs()[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    // Without gc nothing gives the flag back.
    assert_eq!(uplink_flag(topo.allowed).1, "1");
    let o = env.cmd().arg("gc").output().unwrap();
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    assert_eq!(
        uplink_flag(topo.allowed).1,
        "0",
        "gc left forwarding on {uplink}: {}",
        out(&o)
    );
    assert!(
        out(&o).contains(&format!("forwarding on {uplink} (restored)")),
        "{}",
        out(&o)
    );
    assert_eq!(leftovers(&env), Vec::<String>::new());
    let ledger = std::fs::read_to_string("/run/safe-run/network/subnets.json").unwrap_or_default();
    assert!(!ledger.contains(&id), "ledger keeps the dead run: {ledger}");
}

/// A TCP connect to `argv[1]:7` with a timeout of `argv[2]` seconds: what happened.
const CONNECT: &str = r#"
import errno, json, socket, sys
try:
    socket.create_connection((sys.argv[1], 7), timeout=float(sys.argv[2])).close(); r = "connected"
except socket.timeout:
    r = "timeout"
except OSError as e:
    r = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps({"tcp": r}))
"#;

/// Issue 14 item 16: a blocked TCP connect is refused at once by default (ECONNREFUSED long
/// before the client's own 20 s timeout), and counted as a drop was; the operator's
/// `network.blocked: drop` keeps the silent drop (the client's 1 s timeout runs out).
#[test]
fn blocked_tcp_is_refused_by_default_and_dropped_when_configured() {
    if !privileged("blocked_tcp_is_refused_by_default_and_dropped_when_configured") {
        return;
    }
    let topo = Topology::new();
    let b = topo.blocked.to_string();
    for (network, timeout, expected, verdict) in [
        (json!({}), "20", "ECONNREFUSED", "reject"),
        (json!({"blocked": "drop"}), "1", "timeout", "drop"),
    ] {
        let env = topo.env_with(network);
        let p = env.policy(
            "refuse",
            &topo.policy("/usr/bin/python3", &["-c", CONNECT, &b, timeout], "60s"),
        );
        let o = env.run(&p, &[]);
        assert_eq!(o.status.code(), Some(0), "stderr {}", err(&o));
        let r: Value = serde_json::from_str(out(&o).lines().last().unwrap()).unwrap();
        assert_eq!(r["tcp"], expected, "{verdict}: {r}");
        let report = env.report();
        let audit = &report["networkAudit"];
        assert!(
            audit["blocked"]["packets"].as_u64().unwrap() >= 1,
            "{verdict}: {audit:#}"
        );
        let dests = audit["details"]["blockedDestinations"].as_array().unwrap();
        assert!(
            dests
                .iter()
                .any(|d| d["address"] == b.as_str() && d["protocol"] == "tcp" && d["port"] == 7),
            "{verdict}: {dests:?}"
        );
        let facts = facts_with(&report, "hostInterface").unwrap_or(Value::Null);
        assert_eq!(facts["blocked"]["verdict"], verdict, "{report:#}");
        assert_eq!(leftovers(&env), Vec::<String>::new());
    }
}

/// A child subreaper (so whatever a `safe-run` leaves behind is re-parented here, not to the
/// host's pid 1) that runs `argv[2:]` `argv[1]` times, then lists its children that remain
/// (zombies included) and reaps them.
const SUBREAPER: &str = r#"
import ctypes, json, os, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
codes = [subprocess.run(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode
         for _ in range(int(sys.argv[1]))]
left = []
for p in os.listdir("/proc"):
    if not p.isdigit():
        continue
    try:
        stat = open(f"/proc/{p}/stat").read()
    except OSError:
        continue
    comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
    if int(rest[1]) == os.getpid():
        try:
            argv = open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")
        except OSError:
            argv = []
        releaser = comm in ("sr-release", "sr-detach") or b"__release-network" in argv
        left.append({"pid": int(p), "comm": comm, "state": rest[0], "releaser": releaser})
for c in left:
    try:
        os.waitpid(c["pid"], 0)
    except OSError:
        pass
# A run's deferred network releaser (`safe-run __release-network`: the worker names itself
# sr-release, the process that forks it sr-detach, once they run; before that, it is told by
# its argv) outlives its safe-run by design and is re-parented here: waited for above, it is
# expected; anything else is a leftover.
releasers = sum(1 for c in left if c["releaser"])
left = [c for c in left if not c["releaser"]]
print(json.dumps({"codes": codes, "left": left, "releasers": releasers}))
"#;

/// Issue 14 item 6: after many allowlist runs no process of theirs is left un-reaped (the
/// sandbox's pid 1, a `safe-run` fork, was re-parented to the host's pid 1 as a zombie when
/// safe-run killed the init before the init had reaped it). The runs execute under a
/// subreaper, so a leftover is re-parented to it and counted.
#[test]
fn allowlist_runs_leave_no_unreaped_child() {
    if !privileged("allowlist_runs_leave_no_unreaped_child") {
        return;
    }
    let topo = Topology::new();
    let env = topo.env();
    let p = env.policy("reap", &topo.policy("/bin/true", &[], "20s"));
    let base = env.cmd();
    let mut c = Command::new("/usr/bin/python3");
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let o = c
        .args(["-c", SUBREAPER, "24"])
        .arg(base.get_program())
        .arg("run")
        .arg("--policy")
        .arg(&p)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let r: Value = serde_json::from_str(out(&o).trim()).unwrap();
    assert!(r["codes"].as_array().unwrap().iter().all(|c| c == 0), "{r}");
    assert_eq!(r["left"], json!([]), "children left un-reaped: {r}");
    assert_eq!(leftovers(&env), Vec::<String>::new());
}

/// The pid of the deferred releaser (comm `sr-release`) working on `run_dir`, if any.
fn releaser_of(run_dir: &std::path::Path) -> Option<u32> {
    let want = run_dir.join("release.pending");
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            // The process that forked the worker names itself sr-detach.
            (comm.trim() == "sr-release" && args.contains(&want.as_os_str().as_encoded_bytes()))
                .then_some(pid)
        })
}

/// An allowlist run's release happens after the report, in a detached releaser. Killed with
/// SIGKILL before it removed anything (it is held at the shared state lock, which this test
/// takes), the releaser leaves the table and `release.pending`; the next `safe-run run`'s
/// quick gc takes the release over, and nothing of either run is left.
#[test]
fn a_killed_releaser_is_recovered_by_the_next_runs_gc() {
    if !privileged("a_killed_releaser_is_recovered_by_the_next_runs_gc") {
        return;
    }
    let topo = Topology::new();
    let env = topo.env();
    let p = env.policy("slow", &topo.policy("/bin/sleep", &["1"], "20s"));
    let mut child = start_in_background(&env, &p);
    let dir = env.run_dirs()[0].clone();
    let id = run_id(&dir);
    // Hold the shared network state: the releaser's first step (taking the run's subnet over)
    // waits for it, so it cannot have removed anything when it is killed.
    std::fs::create_dir_all("/run/safe-run/network").unwrap();
    let state = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/run/safe-run/network/network.lock")
        .unwrap();
    let held = nix::fcntl::Flock::lock(state, nix::fcntl::FlockArg::LockExclusive).unwrap();
    let o = child.0.take().unwrap().wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    // The report is durable and says the release was deferred.
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run_report.json")).unwrap())
            .unwrap();
    let released = events_of(&dir)
        .into_iter()
        .find(|e| e["type"] == "network.released")
        .unwrap();
    assert_eq!(
        released["payload"]["deferred"]["pending"], "release.pending",
        "{released}"
    );
    assert!(report["networkAudit"].is_object(), "{report:#}");
    let mut pid = None;
    assert!(wait_for(20, || {
        pid = releaser_of(&dir);
        pid.is_some()
    }));
    signal(pid.unwrap(), "KILL");
    assert!(wait_for(20, || {
        std::fs::read_to_string(format!("/proc/{}/stat", pid.unwrap()))
            .map_or(true, |s| s.contains(") Z "))
    }));
    drop(held);
    // Killed before any step: the table and the pending release are still there.
    assert!(
        sh(&["nft", "list", "table", "inet", &format!("safe_run_{id}")])
            .status
            .success()
    );
    assert!(dir.join("release.pending").exists());
    assert!(!dir.join("net/release.json").exists());
    // The next run's quick gc takes the release over.
    let next = env.policy("next", &topo.policy("/bin/true", &[], "20s"));
    let o = env.run(&next, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(!dir.join("release.pending").exists());
    let recovered = std::fs::read_to_string(dir.join("recovered.json")).unwrap();
    assert!(
        recovered.contains(&format!("table inet safe_run_{id}")),
        "{recovered}"
    );
    assert_eq!(leftovers(&env), Vec::<String>::new());
    let ledger = std::fs::read_to_string("/run/safe-run/network/subnets.json").unwrap_or_default();
    assert!(
        !ledger.contains(&id),
        "ledger keeps the killed release's run: {ledger}"
    );
    assert!(
        !env.base.join(".unfinished").join(&id).exists(),
        "the recovered run is still listed as unfinished"
    );
}
