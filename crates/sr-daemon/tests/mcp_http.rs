//! `/mcp` through the router itself (no socket, no sandbox): its token check and Origin
//! refusal, and MCP's own exchange (initialize, tools/list, a tools/call whose failure is a
//! tool error with an SR code) as plain JSON-RPC over POST.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sr_daemon::tokens::{Scope, TokenFile};
use sr_daemon::{AppState, Daemon, Host, app};
use tower::ServiceExt;

struct Fixture {
    _dir: tempfile::TempDir,
    state: Arc<AppState>,
    tokens: std::collections::BTreeMap<&'static str, String>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let tokens_path = dir.path().join("tokens.json");
    let mut tokens = std::collections::BTreeMap::new();
    for (name, scope) in [
        ("admin", Scope::Admin),
        ("create", Scope::Create),
        ("read", Scope::Read),
    ] {
        tokens.insert(
            name,
            TokenFile::create(&tokens_path, vec![scope]).unwrap().0,
        );
    }
    let config = sr_policy::OperatorConfig {
        run_dir: dir.path().join("runs").display().to_string(),
        ..Default::default()
    };
    let daemon = Arc::new(Daemon::new(Host {
        config,
        layout: sr_runner::cgroup::Layout::V2 {
            root: PathBuf::from("/nonexistent"),
        },
        init_exe: PathBuf::from("/nonexistent/safe-run"),
        signer: None,
    }));
    Fixture {
        _dir: dir,
        state: Arc::new(AppState::new(daemon, tokens_path)),
        tokens,
    }
}

/// One JSON-RPC message POSTed to `/mcp`; (status, body as JSON).
async fn post(
    f: &Fixture,
    token: Option<&str>,
    origin: bool,
    message: &Value,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method("POST")
        .uri("/mcp")
        // Any Host: over the Unix socket it is whatever the client says.
        .header("host", "safe-run")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if origin {
        req = req.header("origin", "https://evil.example");
    }
    let resp = app(f.state.clone())
        .oneshot(req.body(Body::from(message.to_string())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"}}})
}

#[tokio::test]
async fn mcp_needs_a_create_or_admin_token_and_refuses_browsers() {
    let f = fixture();
    let (s, body) = post(&f, None, false, &initialize()).await;
    assert_eq!(
        (s, body["status"].as_u64()),
        (StatusCode::UNAUTHORIZED, Some(401)),
        "{body}"
    );
    let (s, _) = post(&f, Some("srt_not-a-token"), false, &initialize()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = post(&f, Some(&f.tokens["read"]), false, &initialize()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a read token cannot run tools");
    let (s, _) = post(&f, Some(&f.tokens["admin"]), true, &initialize()).await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "a request with Origin is a browser's"
    );
    for scope in ["create", "admin"] {
        let (s, body) = post(&f, Some(&f.tokens[scope]), false, &initialize()).await;
        assert_eq!(s, StatusCode::OK, "{scope}: {body}");
        assert_eq!(body["result"]["serverInfo"]["name"], "safe-run", "{body}");
    }
}

#[tokio::test]
async fn tools_are_listed_and_a_failed_call_is_a_tool_error_with_an_sr_code() {
    let f = fixture();
    let admin = Some(f.tokens["admin"].as_str());
    let (_, init) = post(&f, admin, false, &initialize()).await;
    assert!(
        init["result"]["capabilities"]["tools"].is_object(),
        "{init}"
    );
    let (s, listed) = post(
        &f,
        admin,
        false,
        &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{listed}");
    let tools = listed["result"]["tools"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(tools.len(), 9, "{listed}");
    assert!(
        tools
            .iter()
            .all(|t| t["outputSchema"]["type"] == "object" && t["annotations"].is_object())
    );

    let (s, called) = post(
        &f,
        admin,
        false,
        &json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                "params": {"name": "sandbox_kill", "arguments": {"id": "nope"}}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{called}");
    let r = &called["result"];
    assert_eq!(r["isError"], true, "{called}");
    assert_eq!(
        r["structuredContent"]["error"]["code"], "SR-SRV-003",
        "{called}"
    );
    // An unknown tool is a protocol error, not a tool's.
    let (_, unknown) = post(
        &f,
        admin,
        false,
        &json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
                "params": {"name": "nope", "arguments": {}}}),
    )
    .await;
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");
}
