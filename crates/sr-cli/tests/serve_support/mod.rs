//! What the tests of `safe-run serve` share: a daemon started on a private socket (stopped with
//! SIGTERM when dropped, so it ends its sandboxes), tokens made by `safe-run token create`, one
//! HTTP/1.1 request at a time over the socket, server-sent events read whole, and the cgroups
//! of a run.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::run_support::Env;

/// One HTTP/1.1 request over the socket; returns (status, body as JSON).
pub fn http(
    socket: &Path,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let (status, raw) = http_raw(socket, method, path, token, body.as_bytes());
    (status, serde_json::from_slice(&raw).unwrap_or(Value::Null))
}

/// Ends sandbox `id` (`DELETE`, which must succeed) and returns its report.
pub fn end_and_report(socket: &Path, id: &str, token: &str) -> Value {
    let (s, _) = http(
        socket,
        "DELETE",
        &format!("/v1/sandboxes/{id}"),
        token,
        None,
    );
    assert!(s == 200 || s == 204, "{s}");
    let (s, report) = http(
        socket,
        "GET",
        &format!("/v1/sandboxes/{id}/report"),
        token,
        None,
    );
    assert_eq!(s, 200, "{report}");
    report
}

/// One HTTP/1.1 request with a raw body; returns (status, raw body).
pub fn http_raw(
    socket: &Path,
    method: &str,
    path: &str,
    token: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: safe-run\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, raw[split + 4..].to_vec())
}

pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
}

impl Drop for Daemon {
    /// SIGTERM, as an operator stops it: the daemon ends its sandboxes (their cgroups
    /// included) before it exits. A SIGKILL here left them for a recovery that never came, the
    /// test's run directory being gone. SIGKILL only if the drain does not finish.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(0));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(env: &Env, tokens: &Path) -> Daemon {
    let socket = env.dir.path().join("serve/serve.sock");
    let child = env
        .cmd()
        .arg("serve")
        .arg("--socket")
        .arg(&socket)
        .arg("--tokens")
        .arg(tokens)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "safe-run serve did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Daemon { child, socket }
}

/// A token with `scopes` made by `safe-run token create`, printed once.
pub fn token(env: &Env, tokens: &Path, scopes: &str) -> String {
    let made = env
        .cmd()
        .args(["token", "create", "--scopes", scopes, "--tokens"])
        .arg(tokens)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    String::from_utf8(made.stdout).unwrap().trim().to_owned()
}

pub fn sandbox_cgroups(id: &str) -> Vec<PathBuf> {
    ["memory", "pids", "cpu", "cpuacct", "unified", ""]
        .iter()
        .map(|c| {
            Path::new("/sys/fs/cgroup")
                .join(c)
                .join("safe-run")
                .join(format!("safe-run-{id}"))
        })
        .filter(|p| p.exists())
        .collect()
}

/// A chunked HTTP body, de-chunked (SSE answers are chunked).
pub fn dechunk(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&rest[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
        rest = &rest[eol + 2 + size + 2..];
    }
    out
}

/// GET the events (with `Last-Event-ID` when given) until the stream ends: (id, name, data).
pub fn events(
    socket: &Path,
    path: &str,
    token: &str,
    last: Option<u64>,
) -> Vec<(u64, String, Value)> {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let resume = last
        .map(|l| format!("Last-Event-ID: {l}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: safe-run\r\nAuthorization: Bearer {token}\r\n{resume}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    assert!(head.contains("text/event-stream"), "{head}");
    let body = String::from_utf8(dechunk(&raw[split + 4..])).unwrap();
    let mut out = Vec::new();
    for block in body.split("\n\n") {
        let (mut id, mut name, mut data) = (None, String::new(), Value::Null);
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = v.parse().ok();
            } else if let Some(v) = line.strip_prefix("event: ") {
                name = v.to_owned();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = serde_json::from_str(v).unwrap();
            }
        }
        if let Some(id) = id {
            out.push((id, name, data));
        }
    }
    out
}
