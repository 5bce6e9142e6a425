//! `safe-run serve` under load, as root, bounded in count and time: a soak of 2000 execs whose
//! clients often vanish mid-request leaks no sandbox, fd or thread and loses no exec's evidence;
//! a SIGKILL of the daemon under load leaves nothing running, the next start recovers what is
//! left, and every exec that was answered is in its sandbox's event chain, which verifies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod run_support;
mod serve_support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use run_support::*;
use serde_json::{Value, json};
use serve_support::*;

const POLICY: &str = "version: 1\nname: soak\nruntime:\n  command: /bin/true\n  args: []\n  timeout: 300s\nmounts: []\n";

fn proc_count(pid: u32, what: &str) -> usize {
    match what {
        "fd" => std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0),
        _ => std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| d.count())
            .unwrap_or(0),
    }
}

fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .map(|n| n.trim().to_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Sends one request and closes the connection without reading the answer.
fn send_and_vanish(socket: &Path, method: &str, path: &str, token: &str, body: &str) {
    let mut s = UnixStream::connect(socket).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: safe-run\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
}

/// Starts reading a stream and drops it after the first bytes.
fn read_a_little(socket: &Path, path: &str, token: &str) {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: safe-run\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let mut buf = [0u8; 64];
    let _ = s.read(&mut buf);
}

fn events_of(run_dir: &Path, ty: &str) -> Vec<Value> {
    std::fs::read_to_string(run_dir.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["type"] == ty)
        .collect()
}

fn run_dir_of(env: &Env, id: &str) -> PathBuf {
    env.run_dirs()
        .into_iter()
        .find(|d| run_id(d) == id)
        .unwrap_or_else(|| panic!("no run dir for {id}"))
}

#[test]
fn a_soak_of_execs_with_clients_that_vanish_leaks_no_sandbox_fd_or_thread() {
    if !require_root("a_soak_of_execs_with_clients_that_vanish_leaks_no_sandbox_fd_or_thread") {
        return;
    }
    let env = Env::new();
    env.configure(json!({"serve": {"idleTimeout": null, "maxExecs": 64,
        "perToken": {"maxExecs": 64, "requestsPerSecond": 100000}, "requestsPerSecond": 100000}}));
    let tokens = env.dir.path().join("state/tokens.json");
    let token = token(&env, &tokens, "admin");
    let d = start(&env, &tokens);
    let pid = d.child.id();
    let ids: Vec<String> = (0..4)
        .map(|_| {
            let (s, a) = http(
                &d.socket,
                "POST",
                "/v1/sandboxes",
                &token,
                Some(&json!({"policy": POLICY})),
            );
            assert_eq!(s, 201, "{a}");
            a["id"].as_str().unwrap().to_owned()
        })
        .collect();
    let round = |n: usize, clients: usize| {
        // Per client: requests sent, and execs surely started (answered 200 or 202; a client
        // that vanished may have been dropped before its exec began).
        let issued: Vec<(u64, u64)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..clients)
                .map(|c| {
                    let (socket, token, id) = (&d.socket, &token, &ids[c % ids.len()]);
                    scope.spawn(move || {
                        let mut seed = 0x9e37_79b9_u64 ^ c as u64;
                        let deadline = Instant::now() + Duration::from_secs(120);
                        let (mut issued, mut started) = (0u64, 0u64);
                        for _ in 0..n {
                            assert!(Instant::now() < deadline, "the soak ran past its time");
                            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                            let wait = format!("/v1/sandboxes/{id}/execs?wait=true");
                            let body = r#"{"argv": ["/bin/true"]}"#;
                            match (seed >> 33) % 4 {
                                0 | 1 => {
                                    let (s, r) = http(
                                        socket,
                                        "POST",
                                        &wait,
                                        token,
                                        Some(&json!({"argv": ["/bin/true"]})),
                                    );
                                    assert_eq!(s, 200, "{r}");
                                    started += 1;
                                }
                                2 => send_and_vanish(socket, "POST", &wait, token, body),
                                _ => {
                                    let (s, r) = http(
                                        socket,
                                        "POST",
                                        &format!("/v1/sandboxes/{id}/execs"),
                                        token,
                                        Some(&json!({"argv": ["/bin/echo", "x"]})),
                                    );
                                    assert_eq!(s, 202, "{r}");
                                    started += 1;
                                    if seed % 2 == 0 {
                                        let eid = r["id"].as_u64().unwrap();
                                        read_a_little(
                                            socket,
                                            &format!("/v1/sandboxes/{id}/execs/{eid}/events"),
                                            token,
                                        );
                                    }
                                }
                            }
                            issued += 1;
                        }
                        (issued, started)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        issued
    };
    // Warm-up at the same concurrency, so the runtime's threads exist before the baseline.
    let warm = round(25, 4);
    let settle = |fds: usize, threads: usize| {
        wait_for(30, || {
            proc_count(pid, "fd") <= fds && proc_count(pid, "task") <= threads
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let (fds0, threads0) = (proc_count(pid, "fd"), proc_count(pid, "task"));
    let soak = round(500, 4);
    assert_eq!(soak.iter().map(|s| s.0).sum::<u64>(), 2000);
    // Abandoned execs finish on their own; then the daemon is back where it was.
    assert!(
        settle(fds0, threads0),
        "fds {} (was {fds0}), threads {} (was {threads0}): {:?}",
        proc_count(pid, "fd"),
        proc_count(pid, "task"),
        thread_names(pid)
    );
    let (_, running) = http(
        &d.socket,
        "GET",
        "/v1/sandboxes?state=running",
        &token,
        None,
    );
    assert_eq!(running.as_array().unwrap().len(), 4, "{running}");
    // Every exec that started, answered or abandoned, ended in its sandbox's evidence, and
    // the reports verify.
    let mut per_sandbox = [(0u64, 0u64); 4];
    for (c, (w, s)) in warm.iter().zip(&soak).enumerate() {
        per_sandbox[c % 4].0 += w.0 + s.0;
        per_sandbox[c % 4].1 += w.1 + s.1;
    }
    for (i, id) in ids.iter().enumerate() {
        let (s, v) = http(
            &d.socket,
            "DELETE",
            &format!("/v1/sandboxes/{id}"),
            &token,
            None,
        );
        assert_eq!(s, 200, "{v}");
        let dir = run_dir_of(&env, id);
        let (started, exited) = (
            events_of(&dir, "exec.started").len() as u64,
            events_of(&dir, "exec.exited").len() as u64,
        );
        let (sent, sure) = per_sandbox[i];
        assert_eq!(started, exited, "{id}: an exec without its end");
        assert!(
            (sure..=sent).contains(&exited),
            "{id}: {exited} ended of {sure}..={sent}"
        );
        let verified = env
            .cmd()
            .args(["report", "verify"])
            .arg(dir.join("run_report.json"))
            .output()
            .unwrap();
        assert!(verified.status.success(), "{}", out(&verified));
        assert!(sandbox_cgroups(id).is_empty(), "{id}");
    }
    drop(d);
}

#[test]
fn a_sigkill_under_load_leaves_nothing_and_every_answered_exec_is_in_a_chain_that_verifies() {
    if !require_root(
        "a_sigkill_under_load_leaves_nothing_and_every_answered_exec_is_in_a_chain_that_verifies",
    ) {
        return;
    }
    let env = Env::new();
    let tokens = env.dir.path().join("state/tokens.json");
    let token = token(&env, &tokens, "admin");
    let mut d = start(&env, &tokens);
    let ids: Vec<String> = (0..3)
        .map(|_| {
            let (s, a) = http(
                &d.socket,
                "POST",
                "/v1/sandboxes",
                &token,
                Some(&json!({"policy": POLICY})),
            );
            assert_eq!(s, 201, "{a}");
            a["id"].as_str().unwrap().to_owned()
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let answered: Vec<Arc<AtomicU64>> = ids.iter().map(|_| Arc::new(AtomicU64::new(0))).collect();
    let clients: Vec<_> = ids
        .iter()
        .zip(&answered)
        .map(|(id, n)| {
            let (socket, token, id, n, stop) = (
                d.socket.clone(),
                token.clone(),
                id.clone(),
                n.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(30);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    // A request cut by the kill is no answer (the connection just fails).
                    let done = std::panic::catch_unwind(|| {
                        http(
                            &socket,
                            "POST",
                            &format!("/v1/sandboxes/{id}/execs?wait=true"),
                            &token,
                            Some(&json!({"argv": ["/bin/true"]})),
                        )
                    });
                    match done {
                        Ok((200, _)) => {
                            n.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => return,
                    }
                }
            })
        })
        .collect();
    assert!(wait_for(20, || answered
        .iter()
        .all(|n| n.load(Ordering::Relaxed) >= 20)));
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    // Nothing of the sandboxes keeps running once their inits follow the daemon.
    let procs = |id: &str| -> usize {
        sandbox_cgroups(id)
            .iter()
            .map(|c| {
                std::fs::read_to_string(c.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .count()
            })
            .sum()
    };
    assert!(
        wait_for(10, || ids.iter().all(|id| procs(id) == 0)),
        "processes outlive the daemon"
    );
    drop(d);
    let again = start(&env, &tokens);
    for (id, n) in ids.iter().zip(&answered) {
        assert!(
            sandbox_cgroups(id).is_empty(),
            "{id}: {:?}",
            sandbox_cgroups(id)
        );
        let dir = run_dir_of(&env, id);
        assert!(dir.join("recovered.json").exists(), "{id}: not recovered");
        let chain = env
            .cmd()
            .args(["report", "verify", "--events"])
            .arg(dir.join("events.jsonl"))
            .output()
            .unwrap();
        assert!(chain.status.success(), "{id}: {}", out(&chain));
        assert!(out(&chain).contains("INCOMPLETE"), "{}", out(&chain));
        let exits = events_of(&dir, "exec.exited").len() as u64;
        let answered = n.load(Ordering::Relaxed);
        assert!(
            exits >= answered,
            "{id}: {exits} exec.exited in the chain, {answered} answered"
        );
    }
    // The new daemon reports nothing as alive that is not.
    let (_, running) = http(&again.socket, "GET", "/v1/sandboxes", &token, None);
    assert_eq!(running, json!([]));
    drop(again);
}
