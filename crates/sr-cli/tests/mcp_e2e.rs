//! MCP for real, as root, with rmcp's own client: over stdio against a spawned `safe-run mcp`
//! and over Streamable HTTP against `safe-run serve --listen 127.0.0.1:PORT` with a token of
//! `safe-run token create`. The tools are listed with their schemas and annotations; a sandbox
//! is created, runs execs (waited for, and started then read by cursor), has files written,
//! read and listed, is killed and its report read; a one-shot exec needs no sandbox; an
//! unknown sandbox is a tool error with an SR code; /mcp without a token is 401. Afterwards
//! every sandbox has its report and no cgroup of theirs is left.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod run_support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceExt};
use run_support::*;
use serde_json::{Value, json};

type Client = RunningService<RoleClient, ()>;

/// Every wait of these tests.
const BOUND: Duration = Duration::from_secs(60);

const POLICY: &str = "version: 1\nname: mcp\nruntime:\n  command: /bin/true\n  args: []\n  timeout: 120s\nmounts: []\n";

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, f)
        .await
        .unwrap_or_else(|_| panic!("{what} took over {BOUND:?}"))
}

async fn call(c: &Client, tool: &str, args: Value) -> CallToolResult {
    let args = args.as_object().cloned().unwrap();
    let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(args);
    bounded(tool, c.call_tool(params)).await.unwrap()
}

/// A call that must succeed: its structured content.
async fn ok(c: &Client, tool: &str, args: Value) -> Value {
    let r = call(c, tool, args).await;
    assert_eq!(r.is_error, Some(false), "{tool}: {r:?}");
    r.structured_content.unwrap()
}

/// The tools are listed with input and output schemas and the annotations that say which
/// only read and which destroy.
async fn check_tools(c: &Client) {
    let tools = bounded("tools/list", c.list_all_tools()).await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(
        names,
        [
            "sandbox_create",
            "sandbox_exec",
            "sandbox_exec_start",
            "sandbox_exec_output",
            "sandbox_read_file",
            "sandbox_write_file",
            "sandbox_list_files",
            "sandbox_kill",
            "sandbox_report"
        ]
    );
    for t in &tools {
        let out = t.output_schema.as_ref().unwrap();
        assert_eq!(out.get("type"), Some(&json!("object")), "{}", t.name);
        assert_eq!(
            t.input_schema.get("type"),
            Some(&json!("object")),
            "{}",
            t.name
        );
        let a = t.annotations.as_ref().unwrap();
        let reads = [
            "sandbox_exec_output",
            "sandbox_read_file",
            "sandbox_list_files",
            "sandbox_report",
        ];
        assert_eq!(
            a.read_only_hint,
            Some(reads.contains(&t.name.as_ref())),
            "{}",
            t.name
        );
        if ["sandbox_kill", "sandbox_write_file"].contains(&t.name.as_ref()) {
            assert_eq!(a.destructive_hint, Some(true), "{}", t.name);
        }
    }
}

/// A sandbox's whole life through the tools; returns the ids of the sandboxes it made.
async fn sandbox_life(c: &Client) -> Vec<String> {
    let made = ok(c, "sandbox_create", json!({"policy": POLICY})).await;
    assert_eq!(made["state"], "running", "{made}");
    let id = made["id"].as_str().unwrap().to_owned();

    let done = ok(
        c,
        "sandbox_exec",
        json!({"id": id, "argv": ["/bin/echo", "hi"]}),
    )
    .await;
    assert_eq!(
        (done["stdout"].as_str(), done["exitCode"].as_i64()),
        (Some("hi\n"), Some(0)),
        "{done}"
    );
    assert_eq!(done["truncated"], false);
    let fed = ok(
        c,
        "sandbox_exec",
        json!({"id": id, "argv": ["/bin/cat"], "stdin": "fed\n"}),
    )
    .await;
    assert_eq!(fed["stdout"], "fed\n", "{fed}");

    let put = ok(
        c,
        "sandbox_write_file",
        json!({"id": id, "path": "/tmp/note.txt", "text": "kept\n", "mode": "0600"}),
    )
    .await;
    assert_eq!(put["size"], 5, "{put}");
    assert!(put["sha256"].as_str().unwrap().starts_with("sha256:"));
    let got = ok(
        c,
        "sandbox_read_file",
        json!({"id": id, "path": "/tmp/note.txt"}),
    )
    .await;
    assert_eq!(
        (got["text"].as_str(), got["truncated"].as_bool()),
        (Some("kept\n"), Some(false)),
        "{got}"
    );
    assert_eq!(got["sha256"], put["sha256"]);
    let seen = ok(
        c,
        "sandbox_exec",
        json!({"id": id, "argv": ["/bin/sh", "-c", "stat -c %a /tmp/note.txt"]}),
    )
    .await;
    assert_eq!(seen["stdout"], "600\n", "{seen}");
    let listed = ok(c, "sandbox_list_files", json!({"id": id, "path": "/tmp"})).await;
    let entries = listed["entries"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["name"] == "note.txt" && e["kind"] == "file"),
        "{listed}"
    );
    let outside = call(
        c,
        "sandbox_write_file",
        json!({"id": id, "path": "/etc/evil", "text": "x"}),
    )
    .await;
    assert_eq!(
        outside.is_error,
        Some(true),
        "outside the policy's mounts: {outside:?}"
    );

    // Started, then read by cursor until it ends: every byte once, in order.
    let started = ok(
        c,
        "sandbox_exec_start",
        json!({"id": id, "argv": ["/bin/sh", "-c", "echo one; sleep 0.3; echo two >&2; sleep 0.3; echo three; exit 4"]}),
    )
    .await;
    let exec_id = started["execId"].as_u64().unwrap();
    let (mut stdout, mut stderr, mut cursor) = (String::new(), String::new(), None::<u64>);
    let deadline = Instant::now() + BOUND;
    let end = loop {
        assert!(Instant::now() < deadline, "the started exec did not end");
        let mut args = json!({"id": id, "execId": exec_id, "waitMs": 2000});
        if let Some(at) = cursor {
            args["cursor"] = json!(at);
        }
        let part = ok(c, "sandbox_exec_output", args).await;
        stdout.push_str(part["stdout"].as_str().unwrap());
        stderr.push_str(part["stderr"].as_str().unwrap());
        cursor = part["cursor"].as_u64();
        if part["exited"] == true {
            break part;
        }
    };
    assert_eq!(
        (stdout.as_str(), stderr.as_str()),
        ("one\nthree\n", "two\n")
    );
    assert_eq!(
        (end["status"].as_str(), end["exitCode"].as_i64()),
        (Some("exited"), Some(4)),
        "{end}"
    );
    assert_eq!(
        cursor,
        Some(14),
        "the cursor counts stdout and stderr bytes"
    );

    let running = call(c, "sandbox_report", json!({"id": id})).await;
    assert_eq!(running.is_error, Some(true), "no report while it runs");
    let killed = ok(c, "sandbox_kill", json!({"id": id})).await;
    assert_eq!(killed["state"], "ended", "{killed}");
    let report = ok(c, "sandbox_report", json!({"id": id})).await;
    assert!(Path::new(report["reportPath"].as_str().unwrap()).exists());
    let r = &report["report"];
    assert_eq!(r["execs"].as_array().map(Vec::len), Some(4), "{r}");
    assert_eq!(r["transfers"].as_array().map(Vec::len), Some(2), "{r}");

    // Unknown sandboxes are tool errors carrying the SR code and a hint.
    let e = call(
        c,
        "sandbox_exec",
        json!({"id": "no-such-sandbox", "argv": ["/bin/true"]}),
    )
    .await;
    assert_eq!(e.is_error, Some(true));
    let err = &e.structured_content.unwrap()["error"];
    assert_eq!(err["code"], "SR-SRV-003", "{err}");
    assert!(!err["hint"].as_str().unwrap().is_empty());

    // One-shot: a throwaway sandbox, destroyed with its report after.
    let once = ok(
        c,
        "sandbox_exec",
        json!({"policy": POLICY, "argv": ["/bin/echo", "once"]}),
    )
    .await;
    assert_eq!(once["stdout"], "once\n", "{once}");
    assert!(
        Path::new(once["reportPath"].as_str().unwrap()).exists(),
        "{once}"
    );
    vec![id, once["sandboxId"].as_str().unwrap().to_owned()]
}

/// Every run of the test has its report and none of their cgroups is left.
fn nothing_left(env: &Env, ids: &[String]) {
    let dirs = env.run_dirs();
    assert!(dirs.len() >= ids.len(), "{dirs:?}");
    for d in &dirs {
        assert!(
            d.join("run_report.json").exists(),
            "{} has no report",
            d.display()
        );
    }
    assert!(cgroups_of(ids).is_empty(), "{:?}", cgroups_of(ids));
}

/// A spawned `safe-run mcp`. Should the test fail before stdin closes, SIGTERM ends its
/// sandboxes with their reports (SIGKILL would leave their cgroups to a recovery that never
/// comes, the test's run directory being gone); SIGKILL only if that does not finish.
struct McpChild(tokio::process::Child);

impl Drop for McpChild {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(Some(_))) {
            return;
        }
        if let Some(pid) = self.0.id() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(0));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.start_kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_over_stdio_runs_sandboxes_and_ends_them_when_stdin_closes() {
    if !require_root("mcp_over_stdio_runs_sandboxes_and_ends_them_when_stdin_closes") {
        return;
    }
    let env = Env::new();
    let mut cmd = tokio::process::Command::from(env.cmd());
    cmd.arg("mcp")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = McpChild(cmd.spawn().unwrap());
    let (stdin, stdout) = (
        child.0.stdin.take().unwrap(),
        child.0.stdout.take().unwrap(),
    );
    let client: Client = bounded("initialize", ().serve((stdout, stdin)))
        .await
        .unwrap();
    check_tools(&client).await;
    let mut ids = sandbox_life(&client).await;
    // Left running: closing stdin ends it with its report.
    let left = ok(&client, "sandbox_create", json!({"policy": POLICY})).await;
    ids.push(left["id"].as_str().unwrap().to_owned());

    bounded("closing the client", client.cancel())
        .await
        .unwrap();
    let status = bounded("safe-run mcp to exit", child.0.wait())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    nothing_left(&env, &ids);
}

/// `safe-run serve` on a socket and a loopback port, stopped with SIGTERM when dropped.
struct Serve {
    child: std::process::Child,
    port: u16,
}

impl Drop for Serve {
    fn drop(&mut self) {
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

fn serve(env: &Env, tokens: &Path) -> Serve {
    // A free loopback port (another process could take it before serve binds: then it fails
    // to listen and the test says so).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = env
        .cmd()
        .arg("serve")
        .arg("--socket")
        .arg(env.dir.path().join("serve/serve.sock"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--tokens")
        .arg(tokens)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "safe-run serve did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Serve { child, port }
}

fn token(env: &Env, tokens: &Path, scopes: &str) -> String {
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

/// The status of a POST /mcp carrying `auth` (a whole header line, or none).
fn post_status(port: u16, auth: &str) -> u16 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    write!(
        s,
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    raw.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_over_http_needs_a_token_and_serves_the_same_tools() {
    if !require_root("mcp_over_http_needs_a_token_and_serves_the_same_tools") {
        return;
    }
    let env = Env::new();
    // The operator's template named "default" serves one-shot execs that name none.
    let default = env.dir.path().join("default.yaml");
    std::fs::write(&default, POLICY).unwrap();
    env.configure(json!({"serve": {"templates": {"default": default}}}));
    let tokens: PathBuf = env.dir.path().join("state/tokens.json");
    let create = token(&env, &tokens, "create");
    let read = token(&env, &tokens, "read");
    let d = serve(&env, &tokens);

    assert_eq!(post_status(d.port, ""), 401, "no token");
    assert_eq!(
        post_status(d.port, "Authorization: Bearer srt_made-up\r\n"),
        401
    );
    assert_eq!(
        post_status(d.port, &format!("Authorization: Bearer {read}\r\n")),
        403
    );

    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let config =
        StreamableHttpClientTransportConfig::with_uri(format!("http://127.0.0.1:{}/mcp", d.port))
            .auth_header(create);
    let transport = StreamableHttpClientTransport::from_config(config);
    let client: Client = bounded("initialize", ().serve(transport)).await.unwrap();
    check_tools(&client).await;
    let mut ids = sandbox_life(&client).await;
    let once = ok(
        &client,
        "sandbox_exec",
        json!({"argv": ["/bin/echo", "by default"]}),
    )
    .await;
    assert_eq!(once["stdout"], "by default\n", "{once}");
    ids.push(once["sandboxId"].as_str().unwrap().to_owned());
    let left = ok(&client, "sandbox_create", json!({"template": "default"})).await;
    ids.push(left["id"].as_str().unwrap().to_owned());
    bounded("closing the client", client.cancel())
        .await
        .unwrap();

    // SIGTERM: the daemon ends the sandbox still alive with its report.
    drop(d);
    nothing_left(&env, &ids);
}
