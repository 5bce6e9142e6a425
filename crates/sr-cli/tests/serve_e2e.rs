//! `safe-run serve` for real, as root: a token made by `safe-run token create`, a sandbox made
//! over the Unix socket, an exec that answers when it ends, sandboxes that cannot reach each
//! other, a DELETE that writes the signed report (which `safe-run report verify` accepts), and
//! a SIGTERM that ends the sandboxes still alive with their reports and leaves no socket, no
//! process and no cgroup behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod run_support;
mod serve_support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use run_support::*;
use serde_json::{Value, json};
use serve_support::*;

const POLICY: &str = "version: 1\nname: served\nruntime:\n  command: /bin/true\n  args: []\n  timeout: 60s\nmounts: []\n";

#[test]
fn a_served_sandbox_runs_execs_and_ends_in_a_verified_report() {
    if !require_root("a_served_sandbox_runs_execs_and_ends_in_a_verified_report") {
        return;
    }
    let env = Env::new();
    let tokens = env.dir.path().join("state/tokens.json");
    let admin = token(&env, &tokens, "admin");
    let d = start(&env, &tokens);

    let (s, a) = http(
        &d.socket,
        "POST",
        "/v1/sandboxes",
        &admin,
        Some(&json!({"policy": POLICY})),
    );
    assert_eq!(s, 201, "{a}");
    let (s, b) = http(
        &d.socket,
        "POST",
        "/v1/sandboxes",
        &admin,
        Some(&json!({"policy": POLICY})),
    );
    assert_eq!(s, 201, "{b}");
    let (a_id, a_token) = (a["id"].as_str().unwrap(), a["token"].as_str().unwrap());
    let b_id = b["id"].as_str().unwrap();
    assert_ne!(a_token, b["token"].as_str().unwrap());

    // The sandbox's own token runs execs in it; state persists between them.
    let exec = |token: &str, id: &str, argv: Value, stdin: Option<&str>| {
        http(
            &d.socket,
            "POST",
            &format!("/v1/sandboxes/{id}/execs?wait=true"),
            token,
            Some(&json!({"argv": argv, "stdin": stdin})),
        )
    };
    let (s, r) = exec(
        a_token,
        a_id,
        json!(["/bin/sh", "-c", "echo hi > /tmp/kept; cat; exit 3"]),
        Some("from stdin\n"),
    );
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        (r["exitCode"].as_i64(), r["stdout"].as_str()),
        (Some(3), Some("from stdin\n")),
        "{r}"
    );
    let (_, r) = exec(a_token, a_id, json!(["/bin/cat", "/tmp/kept"]), None);
    assert_eq!(r["stdout"], "hi\n", "{r}");
    // A's token does not reach B (as if B did not exist), nor does a made-up one.
    let (s, _) = exec(a_token, b_id, json!(["/bin/true"]), None);
    assert_eq!(s, 404);
    let (s, _) = exec("srt_made-up", a_id, json!(["/bin/true"]), None);
    assert_eq!(s, 404);
    // B's /tmp is its own.
    let (_, r) = exec(
        &admin,
        b_id,
        json!(["/bin/sh", "-c", "cat /tmp/kept || echo none"]),
        None,
    );
    assert!(r["stdout"].as_str().unwrap().contains("none"), "{r}");

    // Files: put, read back, seen by an exec, listed, removed; never outside the mounts.
    let files = format!("/v1/sandboxes/{a_id}/files");
    let (s, put) = http_raw(
        &d.socket,
        "PUT",
        &format!("{files}/tmp/up.bin?mode=0600"),
        a_token,
        b"\x00bytes\xff",
    );
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&put));
    let (s, got) = http_raw(
        &d.socket,
        "GET",
        &format!("{files}/tmp/up.bin"),
        a_token,
        b"",
    );
    assert_eq!((s, got.as_slice()), (200, &b"\x00bytes\xff"[..]));
    let (_, r) = exec(
        a_token,
        a_id,
        json!(["/bin/sh", "-c", "stat -c %a /tmp/up.bin"]),
        None,
    );
    assert_eq!(r["stdout"], "600\n", "{r}");
    let (s, listing) = http(
        &d.socket,
        "GET",
        &format!("{files}/tmp?list=true"),
        a_token,
        None,
    );
    assert_eq!(s, 200);
    assert!(
        listing
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "up.bin"),
        "{listing}"
    );
    let (s, _) = http_raw(
        &d.socket,
        "PUT",
        &format!("{files}/etc/evil"),
        a_token,
        b"x",
    );
    assert_eq!(s, 403, "outside the policy's mounts");
    let (s, _) = http_raw(
        &d.socket,
        "DELETE",
        &format!("{files}/tmp/up.bin"),
        a_token,
        b"",
    );
    assert_eq!(s, 204);
    let (s, _) = http_raw(
        &d.socket,
        "GET",
        &format!("{files}/tmp/up.bin"),
        a_token,
        b"",
    );
    assert_eq!(s, 404);

    // DELETE writes the report; it verifies and lists A's execs and transfers.
    let (s, ended) = http(
        &d.socket,
        "DELETE",
        &format!("/v1/sandboxes/{a_id}"),
        a_token,
        None,
    );
    assert_eq!(
        (s, ended["state"].as_str()),
        (200, Some("ended")),
        "{ended}"
    );
    let (s, report) = http(
        &d.socket,
        "GET",
        &format!("/v1/sandboxes/{a_id}/report"),
        a_token,
        None,
    );
    assert_eq!(s, 200);
    assert_eq!(report["execs"].as_array().unwrap().len(), 3, "{report}");
    assert_eq!(report["transfers"].as_array().unwrap().len(), 2, "{report}");
    let report_path = PathBuf::from(ended["reportPath"].as_str().unwrap());
    let verified = env
        .cmd()
        .args(["report", "verify"])
        .arg(&report_path)
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
    assert!(sandbox_cgroups(a_id).is_empty());
    // No token in any evidence.
    let events = std::fs::read_to_string(report_path.with_file_name("events.jsonl")).unwrap();
    for secret in [admin.as_str(), a_token] {
        assert!(!events.contains(secret) && !report.to_string().contains(secret));
    }

    // Only B is still running.
    let (_, running) = http(
        &d.socket,
        "GET",
        "/v1/sandboxes?state=running",
        &admin,
        None,
    );
    let ids: Vec<&str> = running
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [b_id], "{running}");

    // SIGTERM: B, still alive, is ended with its report; nothing stays behind.
    let b_dir = PathBuf::from(report_path.parent().unwrap().parent().unwrap()).join(b_id);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(d.child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut d = d;
    let status = d.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        b_dir.join("run_report.json").exists(),
        "B's report after the drain"
    );
    assert!(!d.socket.exists(), "the socket is removed");
    assert!(
        sandbox_cgroups(b_id).is_empty(),
        "{:?}",
        sandbox_cgroups(b_id)
    );
}

/// The sandbox's own timeout ends it with no client asking: the daemon writes its report, and
/// says it timed out.
#[test]
fn a_served_sandbox_that_times_out_is_ended_with_its_report_without_a_client() {
    if !require_root("a_served_sandbox_that_times_out_is_ended_with_its_report_without_a_client") {
        return;
    }
    let env = Env::new();
    let tokens = env.dir.path().join("state/tokens.json");
    let token = token(&env, &tokens, "create,read");
    let d = start(&env, &tokens);
    let short = POLICY.replace("timeout: 60s", "timeout: 1s");
    let (s, a) = http(
        &d.socket,
        "POST",
        "/v1/sandboxes",
        &token,
        Some(&json!({"policy": short})),
    );
    assert_eq!(s, 201, "{a}");
    let id = a["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let view = loop {
        let (_, v) = http(
            &d.socket,
            "GET",
            &format!("/v1/sandboxes/{id}"),
            &token,
            None,
        );
        if v["state"] == "ended" {
            break v;
        }
        assert!(Instant::now() < deadline, "still {v}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(view["ended"], "timeout", "{view}");
    assert!(PathBuf::from(view["reportPath"].as_str().unwrap()).exists());
    assert!(sandbox_cgroups(id).is_empty());
    // An exec on it now: the sandbox is gone (409), not an internal error.
    let (s, p) = http(
        &d.socket,
        "POST",
        &format!("/v1/sandboxes/{id}/execs?wait=true"),
        a["token"].as_str().unwrap(),
        Some(&json!({"argv": ["/bin/true"]})),
    );
    assert_eq!(s, 409, "{p}");
}

/// SIGKILL of the daemon: its sandboxes' processes die with their init (nothing of theirs keeps
/// running), and the next start recovers their cgroups before it listens.
#[test]
fn a_killed_daemons_sandboxes_die_and_the_next_start_recovers_them() {
    if !require_root("a_killed_daemons_sandboxes_die_and_the_next_start_recovers_them") {
        return;
    }
    let env = Env::new();
    let tokens = env.dir.path().join("state/tokens.json");
    let admin = token(&env, &tokens, "admin");
    let mut d = start(&env, &tokens);
    let (s, a) = http(
        &d.socket,
        "POST",
        "/v1/sandboxes",
        &admin,
        Some(&json!({"policy": POLICY})),
    );
    assert_eq!(s, 201, "{a}");
    let id = a["id"].as_str().unwrap().to_owned();
    let (_, r) = http(
        &d.socket,
        "POST",
        &format!("/v1/sandboxes/{id}/execs?wait=true"),
        &admin,
        Some(&json!({"argv": ["/bin/sh", "-c", "echo $PPID"]})),
    );
    assert_eq!(r["exitCode"], 0, "{r}");
    assert!(!sandbox_cgroups(&id).is_empty());
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    // The sandbox's processes are gone once their init follows the daemon.
    let deadline = Instant::now() + Duration::from_secs(10);
    let procs = |dirs: &[PathBuf]| -> usize {
        dirs.iter()
            .map(|c| {
                std::fs::read_to_string(c.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .count()
            })
            .sum()
    };
    while procs(&sandbox_cgroups(&id)) > 0 {
        assert!(Instant::now() < deadline, "processes outlive the daemon");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(d);
    let again = start(&env, &tokens);
    assert!(
        sandbox_cgroups(&id).is_empty(),
        "{:?}",
        sandbox_cgroups(&id)
    );
    drop(again);
}

/// An exec started without `?wait=true`: stdin written later, its output as Server-Sent Events
/// with stream offsets as ids, a resume that sends only what came after, and a signal.
#[test]
fn a_streamed_exec_takes_stdin_sends_events_resumes_and_takes_signals() {
    if !require_root("a_streamed_exec_takes_stdin_sends_events_resumes_and_takes_signals") {
        return;
    }
    let env = Env::new();
    let tokens = env.dir.path().join("state/tokens.json");
    let admin = token(&env, &tokens, "admin");
    let d = start(&env, &tokens);
    let (_, a) = http(
        &d.socket,
        "POST",
        "/v1/sandboxes",
        &admin,
        Some(&json!({"policy": POLICY})),
    );
    let id = a["id"].as_str().unwrap().to_owned();
    let execs = format!("/v1/sandboxes/{id}/execs");
    let (s, e) = http(
        &d.socket,
        "POST",
        &execs,
        &admin,
        Some(
            &json!({"argv": ["/bin/sh", "-c", "read l; echo got $l; echo err >&2; exit 5"], "stdin": "", "keepStdinOpen": true}),
        ),
    );
    assert_eq!(s, 202, "{e}");
    let eid = e["id"].as_u64().unwrap();
    let (s, _) = http_raw(
        &d.socket,
        "POST",
        &format!("{execs}/{eid}/stdin?close=true"),
        &admin,
        b"hello\n",
    );
    assert_eq!(s, 204);
    let all = events(&d.socket, &format!("{execs}/{eid}/events"), &admin, None);
    let names: Vec<&str> = all.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(names.last(), Some(&"exit"), "{all:?}");
    let out: String = all
        .iter()
        .filter(|e| e.1 == "stdout")
        .map(|e| e.2["text"].as_str().unwrap())
        .collect();
    assert_eq!(out, "got hello\n");
    assert!(
        all.iter()
            .any(|e| e.1 == "stderr" && e.2["text"] == "err\n"),
        "{all:?}"
    );
    let exit = &all.last().unwrap().2;
    assert_eq!(
        (exit["status"].as_str(), exit["exitCode"].as_i64()),
        (Some("exited"), Some(5))
    );
    // Ids are stream offsets: the exit's is the bytes of both streams.
    assert_eq!(
        all.last().unwrap().0,
        ("got hello\n".len() + "err\n".len()) as u64
    );
    // A resume after the first event sends only the rest, the exit included.
    let first = all[0].0;
    let rest = events(
        &d.socket,
        &format!("{execs}/{eid}/events"),
        &admin,
        Some(first),
    );
    assert_eq!(rest.len(), all.len() - 1, "{rest:?}");
    assert_eq!(rest.last().unwrap().1, "exit");

    let (_, e) = http(
        &d.socket,
        "POST",
        &execs,
        &admin,
        Some(&json!({"argv": ["/bin/sleep", "30"]})),
    );
    let eid = e["id"].as_u64().unwrap();
    let (s, _) = http(
        &d.socket,
        "POST",
        &format!("{execs}/{eid}/signal"),
        &admin,
        Some(&json!({"signal": 15})),
    );
    assert_eq!(s, 204);
    let ended = events(&d.socket, &format!("{execs}/{eid}/events"), &admin, None);
    let exit = &ended.last().unwrap().2;
    assert_eq!(
        (exit["status"].as_str(), exit["signal"].as_i64()),
        (Some("signaled"), Some(15)),
        "{ended:?}"
    );
    let (s, _) = http(
        &d.socket,
        "GET",
        &format!("{execs}/999/events"),
        &admin,
        None,
    );
    assert_eq!(s, 404);
}

/// A create retried with the same `Idempotency-Key` gets the first answer, not a second sandbox.
#[test]
fn a_retried_create_with_an_idempotency_key_makes_one_sandbox() {
    if !require_root("a_retried_create_with_an_idempotency_key_makes_one_sandbox") {
        return;
    }
    let env = Env::new();
    let tokens = env.dir.path().join("state/tokens.json");
    let admin = token(&env, &tokens, "admin");
    let d = start(&env, &tokens);
    let body = json!({"policy": POLICY}).to_string();
    let create = || {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        write!(
            s,
            "POST /v1/sandboxes HTTP/1.1\r\nHost: safe-run\r\nAuthorization: Bearer {admin}\r\n\
             Idempotency-Key: job-42\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let (head, rest) = raw.split_once("\r\n\r\n").unwrap();
        let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, serde_json::from_str::<Value>(rest).unwrap())
    };
    let (s1, first) = create();
    let (s2, again) = create();
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(first["id"], again["id"]);
    let (_, all) = http(&d.socket, "GET", "/v1/sandboxes", &admin, None);
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
}

/// `serve --stdio`: the same operations as JSON-RPC lines; closing stdin ends every sandbox
/// with its report and the process exits 0.
#[test]
fn serve_stdio_speaks_json_rpc_and_ends_its_sandboxes_on_eof() {
    use std::io::BufRead;
    if !require_root("serve_stdio_speaks_json_rpc_and_ends_its_sandboxes_on_eof") {
        return;
    }
    let env = Env::new();
    let mut child = env
        .cmd()
        .args(["serve", "--stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut n = 0;
    let mut call = |method: &str, params: Value| -> Value {
        n += 1;
        writeln!(
            stdin,
            "{}",
            json!({"jsonrpc": "2.0", "id": n, "method": method, "params": params})
        )
        .unwrap();
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["id"], n, "{v}");
        v
    };
    let made = call("sandbox.create", json!({"policy": POLICY}));
    let id = made["result"]["id"].as_str().unwrap().to_owned();
    let r = call(
        "sandbox.exec",
        json!({"id": id, "argv": ["/bin/sh", "-c", "cat; exit 2"], "stdin": "in"}),
    );
    assert_eq!(
        (
            r["result"]["exitCode"].as_i64(),
            r["result"]["stdout"].as_str()
        ),
        (Some(2), Some("in")),
        "{r}"
    );
    let w = call(
        "sandbox.writeFile",
        json!({"id": id, "path": "/tmp/f", "text": "hello"}),
    );
    assert_eq!(w["result"]["size"], 5, "{w}");
    let f = call("sandbox.readFile", json!({"id": id, "path": "/tmp/f"}));
    assert_eq!(f["result"]["text"], "hello");
    let e = call("sandbox.readFile", json!({"id": id, "path": "/etc/passwd"}));
    assert!(
        e["error"]["data"][0]["message"]
            .as_str()
            .unwrap()
            .contains("OutsideRoot"),
        "{e}"
    );
    let second = call("sandbox.create", json!({"policy": POLICY}));
    let second_id = second["result"]["id"].as_str().unwrap().to_owned();
    let k = call("sandbox.kill", json!({"id": id}));
    assert_eq!(k["result"]["state"], "ended");
    let report = call("sandbox.report", json!({"id": id}));
    assert_eq!(report["result"]["execs"].as_array().unwrap().len(), 1);
    drop(stdin);
    assert!(child.wait().unwrap().success());
    let dir = PathBuf::from(k["result"]["reportPath"].as_str().unwrap());
    let second_report = dir
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join(&second_id)
        .join("run_report.json");
    assert!(
        second_report.exists(),
        "the sandbox left alive is ended at EOF with its report"
    );
    assert!(sandbox_cgroups(&second_id).is_empty());
}

/// A warm pool: PUT keeps N ready sandboxes of a template; a create naming it is served from the
/// pool (`fromPool`), the pool refills, and a sandbox handed out is never handed out again.
#[test]
fn a_warm_pool_serves_ready_sandboxes_once_each_and_refills() {
    if !require_root("a_warm_pool_serves_ready_sandboxes_once_each_and_refills") {
        return;
    }
    let env = Env::new();
    let template = env.dir.path().join("template.yaml");
    std::fs::write(&template, POLICY).unwrap();
    env.configure(json!({"serve": {"templates": {"small": template}}}));
    let tokens = env.dir.path().join("state/tokens.json");
    let admin = token(&env, &tokens, "admin");
    let d = start(&env, &tokens);
    let (s, p) = http(
        &d.socket,
        "PUT",
        "/v1/pools/nope",
        &admin,
        Some(&json!({"minReady": 1})),
    );
    assert_eq!(s, 404, "{p}");
    let (s, p) = http(
        &d.socket,
        "PUT",
        "/v1/pools/small",
        &admin,
        Some(&json!({"minReady": 2})),
    );
    assert_eq!((s, p["minReady"].as_u64()), (200, Some(2)), "{p}");
    let ready = |want: u64| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, pools) = http(&d.socket, "GET", "/v1/pools", &admin, None);
            if pools[0]["ready"].as_u64() == Some(want) {
                return;
            }
            assert!(Instant::now() < deadline, "{pools}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    ready(2);
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..3 {
        let (s, a) = http(
            &d.socket,
            "POST",
            "/v1/sandboxes",
            &admin,
            Some(&json!({"template": "small"})),
        );
        assert_eq!(s, 201, "{a}");
        assert!(
            ids.insert(a["id"].as_str().unwrap().to_owned()),
            "a sandbox handed out twice"
        );
        let (_, r) = http(
            &d.socket,
            "POST",
            &format!(
                "/v1/sandboxes/{}/execs?wait=true",
                a["id"].as_str().unwrap()
            ),
            a["token"].as_str().unwrap(),
            Some(&json!({"argv": ["/bin/true"]})),
        );
        assert_eq!(r["exitCode"], 0, "{r}");
    }
    // The first came from the pool; the pool refills to 2.
    let (_, all) = http(&d.socket, "GET", "/v1/sandboxes", &admin, None);
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|v| v["fromPool"] == true),
        "{all}"
    );
    ready(2);
}

/// Waits for `id` to end, by the listing (a GET of the sandbox itself is a use of it, which
/// would keep it from being idle).
fn wait_ended(d: &Daemon, token: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, all) = http(&d.socket, "GET", "/v1/sandboxes?state=ended", token, None);
        if let Some(v) = all.as_array().unwrap().iter().find(|v| v["id"] == id) {
            return v.clone();
        }
        assert!(Instant::now() < deadline, "{id} still running");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn report_exit(view: &Value) -> Value {
    let report: Value =
        serde_json::from_slice(&std::fs::read(view["reportPath"].as_str().unwrap()).unwrap())
            .unwrap();
    report["exit"].clone()
}

/// A create's timeout, env and metadata; a later `timeout` request; the idle timeout; the
/// per-token sandbox limit; and each end's reason in the signed report.
#[test]
fn deadlines_idleness_labels_and_per_token_limits_hold_and_reports_say_why_it_ended() {
    if !require_root(
        "deadlines_idleness_labels_and_per_token_limits_hold_and_reports_say_why_it_ended",
    ) {
        return;
    }
    let env = Env::new();
    env.configure(json!({"serve": {"idleTimeout": "2s", "perToken": {"maxSandboxes": 2}}}));
    let tokens = env.dir.path().join("state/tokens.json");
    let token = token(&env, &tokens, "create,read");
    let other = self::token(&env, &tokens, "create,read");
    let d = start(&env, &tokens);
    let create = |token: &str, body: Value| {
        let mut body = body;
        body["policy"] = json!(POLICY);
        http(&d.socket, "POST", "/v1/sandboxes", token, Some(&body))
    };
    // A timeout past the policy's 60 s is refused, and nothing stays alive of it.
    let (s, p) = create(&token, json!({"timeoutMs": 61_000}));
    assert_eq!(s, 422, "{p}");
    assert!(
        p["detail"].as_str().unwrap().contains("limits.timeout"),
        "{p}"
    );
    let (s, a) = create(
        &token,
        json!({"env": {"GREETING": "hi"}, "metadata": {"team": "a", "job": "1"}}),
    );
    assert_eq!(s, 201, "{a}");
    let a_id = a["id"].as_str().unwrap().to_owned();
    assert_eq!(a["metadata"]["team"], "a", "{a}");
    let (s, b) = create(&token, json!({"metadata": {"team": "b"}}));
    assert_eq!(s, 201, "{b}");
    let b_id = b["id"].as_str().unwrap().to_owned();
    // Two alive for this token: a third is refused with 429; another token is not held back.
    let (s, p) = create(&token, json!({}));
    assert_eq!(s, 429, "{p}");
    assert_eq!(p["code"], "SR-SRV-002", "{p}");
    let (s, c) = create(&other, json!({}));
    assert_eq!(s, 201, "{c}");
    let c_id = c["id"].as_str().unwrap().to_owned();
    // The create's env reaches every exec, under the exec's own.
    let (s, r) = http(
        &d.socket,
        "POST",
        &format!("/v1/sandboxes/{a_id}/execs?wait=true"),
        &token,
        Some(&json!({"argv": ["/bin/sh", "-c", "echo $GREETING $OWN"], "env": {"OWN": "x"}})),
    );
    assert_eq!((s, r["stdout"].as_str()), (200, Some("hi x\n")), "{r}");
    // Labels filter the listing.
    let (_, listed) = http(
        &d.socket,
        "GET",
        "/v1/sandboxes?metadata.team=a",
        &token,
        None,
    );
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [a_id.as_str()], "{listed}");
    // A timeout request ends b soon, whatever the idle timeout; its report says so.
    let (s, v) = http(
        &d.socket,
        "POST",
        &format!("/v1/sandboxes/{b_id}/timeout"),
        &token,
        Some(&json!({"timeoutMs": 300})),
    );
    assert_eq!(s, 200, "{v}");
    assert!(v["endsAtMs"].as_u64().unwrap() <= v["createdAtMs"].as_u64().unwrap() + 60_000);
    let b_end = wait_ended(&d, &token, &b_id);
    assert_eq!(b_end["ended"], "destroyed", "{b_end}");
    assert_eq!(report_exit(&b_end)["reason"], "deadline", "{b_end}");
    // a and c are left alone: after 2 s with no request they end as idle.
    let a_end = wait_ended(&d, &token, &a_id);
    assert_eq!(report_exit(&a_end)["reason"], "idle", "{a_end}");
    let c_end = wait_ended(&d, &other, &c_id);
    assert_eq!(report_exit(&c_end)["reason"], "idle", "{c_end}");
    // A DELETE's report says request; the token may make sandboxes again.
    let (s, e) = create(&token, json!({}));
    assert_eq!(s, 201, "{e}");
    let e_id = e["id"].as_str().unwrap();
    let (s, e_end) = http(
        &d.socket,
        "DELETE",
        &format!("/v1/sandboxes/{e_id}"),
        &token,
        None,
    );
    assert_eq!(s, 200, "{e_end}");
    assert_eq!(report_exit(&e_end)["reason"], "request", "{e_end}");
    for id in [&a_id, &b_id, &c_id] {
        assert!(sandbox_cgroups(id).is_empty(), "{id}");
    }
}

/// A WebSocket to an exec with a PTY: keystrokes in, the terminal's bytes out, a resize the
/// program sees, the exit as the last message. And directories over HTTP as tar streams.
#[test]
fn a_pty_exec_over_a_websocket_and_directories_as_tar_streams() {
    use tungstenite::Message;
    use tungstenite::client::IntoClientRequest;
    if !require_root("a_pty_exec_over_a_websocket_and_directories_as_tar_streams") {
        return;
    }
    let env = Env::new();
    let tokens = env.dir.path().join("state/tokens.json");
    let token = token(&env, &tokens, "create,read");
    let d = start(&env, &tokens);
    let (s, a) = http(
        &d.socket,
        "POST",
        "/v1/sandboxes",
        &token,
        Some(&json!({"policy": POLICY})),
    );
    assert_eq!(s, 201, "{a}");
    let id = a["id"].as_str().unwrap().to_owned();
    let own = a["token"].as_str().unwrap().to_owned();
    // A pty is streamed, never waited for; a size out of range is refused.
    let (s, p) = http(
        &d.socket,
        "POST",
        &format!("/v1/sandboxes/{id}/execs?wait=true"),
        &own,
        Some(&json!({"argv": ["/bin/sh"], "pty": {"rows": 24, "cols": 80}})),
    );
    assert_eq!(s, 400, "{p}");
    let (s, p) = http(
        &d.socket,
        "POST",
        &format!("/v1/sandboxes/{id}/execs"),
        &own,
        Some(&json!({"argv": ["/bin/sh"], "pty": {"rows": 0, "cols": 80}})),
    );
    assert_eq!(s, 400, "{p}");
    let (s, started) = http(
        &d.socket,
        "POST",
        &format!("/v1/sandboxes/{id}/execs"),
        &own,
        Some(&json!({"argv": ["/bin/sh"], "pty": {"rows": 24, "cols": 80}})),
    );
    assert_eq!(s, 202, "{started}");
    let eid = started["id"].as_u64().unwrap();
    let mut req = format!("ws://safe-run/v1/sandboxes/{id}/execs/{eid}/pty")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {own}").parse().unwrap());
    let stream = UnixStream::connect(&d.socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (mut ws, _) = tungstenite::client(req, stream).unwrap();
    let mut screen = String::new();
    /// Reads until the screen shows `want` (returns Null) or the exit comes (returns it).
    fn read_until(
        ws: &mut tungstenite::WebSocket<UnixStream>,
        screen: &mut String,
        want: &str,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !screen.contains(want) {
            assert!(Instant::now() < deadline, "no {want:?} in {screen:?}");
            let m = ws.read();
            match m.unwrap_or_else(|e| panic!("{e}; screen so far: {screen:?}")) {
                Message::Binary(b) => screen.push_str(&String::from_utf8_lossy(&b)),
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    if v["event"] == "exit" {
                        return v;
                    }
                    assert!(v.get("error").is_none(), "{v}");
                }
                _ => {}
            }
        }
        Value::Null
    }
    ws.send(Message::Binary(b"tty; stty size\n".to_vec().into()))
        .unwrap();
    read_until(&mut ws, &mut screen, "24 80");
    assert!(screen.contains("/dev/pts/"), "{screen:?}");
    ws.send(Message::Text(
        r#"{"resize": {"rows": 30, "cols": 100}}"#.into(),
    ))
    .unwrap();
    ws.send(Message::Binary(b"stty size\n".to_vec().into()))
        .unwrap();
    read_until(&mut ws, &mut screen, "30 100");
    // The HTTP resize does the same.
    let (s, p) = http(
        &d.socket,
        "POST",
        &format!("/v1/sandboxes/{id}/execs/{eid}/resize"),
        &own,
        Some(&json!({"rows": 40, "cols": 120})),
    );
    assert_eq!(s, 204, "{p}");
    ws.send(Message::Binary(b"stty size; exit 3\n".to_vec().into()))
        .unwrap();
    read_until(&mut ws, &mut screen, "40 120");
    let exit = read_until(&mut ws, &mut screen, "\u{0}never");
    assert_eq!(exit["exitCode"], 3, "{exit} {screen:?}");

    // Directories as tar streams: up, then down again.
    let src = env.dir.path().join("tree");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), "alpha").unwrap();
    std::fs::write(src.join("sub/b.txt"), "beta").unwrap();
    let tar = std::process::Command::new("tar")
        .arg("-C")
        .arg(&src)
        .args(["-cf", "-", "."])
        .output()
        .unwrap();
    assert!(tar.status.success());
    let (s, raw) = http_raw(
        &d.socket,
        "PUT",
        &format!("/v1/sandboxes/{id}/files/tmp/tree?format=tar"),
        &own,
        &tar.stdout,
    );
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&raw));
    let (s, r) = http(
        &d.socket,
        "POST",
        &format!("/v1/sandboxes/{id}/execs?wait=true"),
        &own,
        Some(&json!({"argv": ["/bin/cat", "/tmp/tree/a.txt", "/tmp/tree/sub/b.txt"]})),
    );
    assert_eq!((s, r["stdout"].as_str()), (200, Some("alphabeta")), "{r}");
    let (s, down) = http_raw(
        &d.socket,
        "GET",
        &format!("/v1/sandboxes/{id}/files/tmp/tree?format=tar"),
        &own,
        b"",
    );
    assert_eq!(s, 200);
    let mut list = std::process::Command::new("tar")
        .args(["-tf", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    list.stdin.take().unwrap().write_all(&down).unwrap();
    let names = String::from_utf8(list.wait_with_output().unwrap().stdout).unwrap();
    assert!(
        names.contains("a.txt") && names.contains("sub/b.txt"),
        "{names}"
    );
    // A stream with a name that climbs out is refused, and nothing of it lands.
    let (s, raw) = http_raw(
        &d.socket,
        "PUT",
        &format!("/v1/sandboxes/{id}/files/tmp/tree?format=tar"),
        &own,
        b"not a tar stream at all",
    );
    assert!(
        (400..500).contains(&s),
        "{s} {}",
        String::from_utf8_lossy(&raw)
    );
    let (s, _) = http(
        &d.socket,
        "DELETE",
        &format!("/v1/sandboxes/{id}"),
        &own,
        None,
    );
    assert_eq!(s, 200);
    assert!(sandbox_cgroups(&id).is_empty());
}

/// TLS on the TCP listener: a client that trusts the certificate gets answers over HTTPS, a
/// plain-HTTP client gets none, and a non-loopback address without TLS is refused at start.
#[test]
fn tls_on_the_tcp_listener_and_no_plain_tcp_off_loopback() {
    if !require_root("tls_on_the_tcp_listener_and_no_plain_tcp_off_loopback") {
        return;
    }
    let env = Env::new();
    let tokens = env.dir.path().join("state/tokens.json");
    let token = token(&env, &tokens, "read");
    let (cert, key) = (
        env.dir.path().join("cert.pem"),
        env.dir.path().join("key.pem"),
    );
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args([
            "-days",
            "1",
            "-subj",
            "/CN=safe-run-test",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    // Off loopback without TLS: refused before anything listens.
    let refused = env
        .cmd()
        .args(["serve", "--listen", "192.0.2.1:8470", "--tokens"])
        .arg(&tokens)
        .arg("--socket")
        .arg(env.dir.path().join("refused.sock"))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        err(&refused).contains("not a loopback address"),
        "{}",
        err(&refused)
    );
    // A key that does not go with the certificate, or a missing file: refused at start.
    let bad = env
        .cmd()
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&cert)
        .arg("--tokens")
        .arg(&tokens)
        .arg("--socket")
        .arg(env.dir.path().join("bad.sock"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(err(&bad).contains("TLS"), "{}", err(&bad));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let socket = env.dir.path().join("serve/serve.sock");
    let child = env
        .cmd()
        .arg("serve")
        .arg("--socket")
        .arg(&socket)
        .arg("--tokens")
        .arg(&tokens)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let d = Daemon { child, socket };
    assert!(wait_for(20, || std::net::TcpStream::connect((
        "127.0.0.1",
        port
    ))
    .is_ok()));
    let curl = |extra: &[&str], url: &str| {
        std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "-H"])
            .arg(format!("Authorization: Bearer {token}"))
            .args(extra)
            .arg(url)
            .output()
            .unwrap()
    };
    let ok = curl(
        &["--cacert", cert.to_str().unwrap()],
        &format!("https://127.0.0.1:{port}/v1/sandboxes"),
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "[]");
    // Not trusted: the handshake fails. Plain HTTP: no answer.
    let untrusted = curl(&[], &format!("https://127.0.0.1:{port}/healthz"));
    assert!(!untrusted.status.success());
    let plain = curl(&[], &format!("http://127.0.0.1:{port}/healthz"));
    assert!(
        !plain.status.success() || !String::from_utf8_lossy(&plain.stdout).contains("ok"),
        "{}",
        String::from_utf8_lossy(&plain.stdout)
    );
    // The daemon still answers after the bad clients.
    let again = curl(
        &["--cacert", cert.to_str().unwrap()],
        &format!("https://127.0.0.1:{port}/healthz"),
    );
    assert_eq!(String::from_utf8_lossy(&again.stdout), r#"{"ok":true}"#);
    drop(d);
}

/// File routes refuse paths that climb (`..`, raw or percent-encoded) and paths through a
/// symlink the workload planted, whatever the link points at; a sandbox's token reaches no
/// other sandbox's files.
#[test]
fn file_paths_that_climb_or_go_through_symlinks_are_refused() {
    if !require_root("file_paths_that_climb_or_go_through_symlinks_are_refused") {
        return;
    }
    let env = Env::new();
    let tokens = env.dir.path().join("state/tokens.json");
    let token = token(&env, &tokens, "create,read");
    let d = start(&env, &tokens);
    let make = || {
        let (s, a) = http(
            &d.socket,
            "POST",
            "/v1/sandboxes",
            &token,
            Some(&json!({"policy": POLICY})),
        );
        assert_eq!(s, 201, "{a}");
        (
            a["id"].as_str().unwrap().to_owned(),
            a["token"].as_str().unwrap().to_owned(),
        )
    };
    let (id, own) = make();
    let (other_id, other_own) = make();
    let (s, r) = http(
        &d.socket,
        "POST",
        &format!("/v1/sandboxes/{id}/execs?wait=true"),
        &own,
        Some(
            &json!({"argv": ["/bin/sh", "-c", "ln -s /etc /tmp/etc-link && ln -s .. /tmp/up && echo ok > /tmp/plain"]}),
        ),
    );
    assert_eq!((s, r["exitCode"].as_i64()), (200, Some(0)), "{r}");
    let files = format!("/v1/sandboxes/{id}/files");
    for (method, path) in [
        ("GET", "tmp/../etc/passwd"),
        ("GET", "tmp/%2e%2e/etc/passwd"),
        ("PUT", "tmp/../etc/evil"),
        ("GET", "tmp/etc-link/passwd"),
        ("PUT", "tmp/etc-link/evil"),
        ("PUT", "tmp/up/etc/evil"),
        ("DELETE", "tmp/etc-link/hostname"),
        ("GET", "tmp/etc-link?format=tar"),
    ] {
        let (s, raw) = http_raw(&d.socket, method, &format!("{files}/{path}"), &own, b"x");
        let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        assert!(
            (400..=404).contains(&s) && body["code"].as_str().is_some(),
            "{method} {path}: {s} {body}"
        );
    }
    // An exec's cwd that climbs is the request's mistake (400), not a sandbox that is gone.
    let (s, p) = http(
        &d.socket,
        "POST",
        &format!("/v1/sandboxes/{id}/execs?wait=true"),
        &own,
        Some(&json!({"argv": ["/bin/true"], "cwd": "/tmp/../etc"})),
    );
    assert_eq!(s, 400, "{p}");
    // The plain file is readable, through no link; the other sandbox's token does not reach it.
    let (s, raw) = http_raw(&d.socket, "GET", &format!("{files}/tmp/plain"), &own, b"");
    assert_eq!((s, raw.as_slice()), (200, b"ok\n".as_slice()));
    let (s, _) = http_raw(
        &d.socket,
        "GET",
        &format!("{files}/tmp/plain"),
        &other_own,
        b"",
    );
    assert_eq!(s, 404, "another sandbox's token");
    // Nothing was written outside: the host's /etc has no evil, nor the sandbox's view of it.
    assert!(!Path::new("/etc/evil").exists());
    for sid in [&id, &other_id] {
        let (s, _) = http(
            &d.socket,
            "DELETE",
            &format!("/v1/sandboxes/{sid}"),
            &token,
            None,
        );
        assert_eq!(s, 200);
    }
}
