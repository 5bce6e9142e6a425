//! The API's answers that need no sandbox, through the router itself (no socket): auth,
//! scopes, unknown sandboxes, bad bodies and bad policies, all as problem+json.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use sr_daemon::tokens::{Scope, TokenFile};
use sr_daemon::{AppState, Daemon, Host, app};
use tower::ServiceExt;

struct Fixture {
    _dir: tempfile::TempDir,
    state: Arc<AppState>,
    admin: String,
    reader: String,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let tokens_path = dir.path().join("tokens.json");
    let (admin, _) = TokenFile::create(&tokens_path, vec![Scope::Admin]).unwrap();
    let (reader, _) = TokenFile::create(&tokens_path, vec![Scope::Read]).unwrap();
    let mut config = sr_policy::OperatorConfig {
        run_dir: dir.path().join("runs").display().to_string(),
        ..Default::default()
    };
    config.serve.max_body = sr_common::ByteSize::parse("4Ki").unwrap();
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
        admin,
        reader,
    }
}

async fn call(
    f: &Fixture,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, String, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if !body.is_empty() {
        req = req.header("content-type", "application/json");
    }
    let resp = app(f.state.clone())
        .oneshot(req.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, ctype, json)
}

#[tokio::test]
async fn health_needs_no_token_and_everything_else_does() {
    let f = fixture();
    let (s, _, body) = call(&f, "GET", "/healthz", None, "").await;
    assert_eq!((s, body["ok"].as_bool()), (StatusCode::OK, Some(true)));
    for (method, uri) in [
        ("GET", "/v1/sandboxes"),
        ("POST", "/v1/sandboxes"),
        ("GET", "/v1/sandboxes/abc"),
        ("DELETE", "/v1/sandboxes/abc"),
        ("GET", "/v1/sandboxes/abc/report"),
    ] {
        let (s, ctype, body) = call(&f, method, uri, None, "").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {uri}");
        assert_eq!(ctype, "application/problem+json");
        assert_eq!(body["status"], 401);
        // A token that is no operator's may be some sandbox's: on a sandbox's routes it gets
        // what an unknown sandbox gets, so neither ids nor tokens can be probed.
        let (s, _, _) = call(&f, method, uri, Some("srt_not-a-token"), "").await;
        let want = if uri.starts_with("/v1/sandboxes/") {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(s, want, "{method} {uri} with a wrong token");
    }
}

#[tokio::test]
async fn scopes_hold_and_unknown_sandboxes_are_not_found() {
    let f = fixture();
    let (s, _, body) = call(&f, "GET", "/v1/sandboxes", Some(&f.reader), "").await;
    assert_eq!((s, body), (StatusCode::OK, serde_json::json!([])));
    let policy = r#"{"policy": "version: 1\nname: t\nruntime: {command: /bin/true, args: []}\nmounts: []\n"}"#;
    let (s, _, _) = call(&f, "POST", "/v1/sandboxes", Some(&f.reader), policy).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a read token cannot create");
    let (s, _, body) = call(&f, "GET", "/v1/sandboxes/nope", Some(&f.admin), "").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    let (s, _, _) = call(
        &f,
        "POST",
        "/v1/sandboxes/nope/execs?wait=true",
        Some(&f.admin),
        r#"{"argv": ["/bin/true"]}"#,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_bodies_and_bad_policies_get_precise_problems() {
    let f = fixture();
    let admin = Some(f.admin.as_str());
    let (s, _, _) = call(&f, "POST", "/v1/sandboxes", admin, "{not json").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _, _) = call(
        &f,
        "POST",
        "/v1/sandboxes",
        admin,
        r#"{"policy": "x", "extra": 1}"#,
    )
    .await;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown fields are refused"
    );
    let big = format!(r#"{{"policy": "{}"}}"#, "a".repeat(8192));
    let (s, _, _) = call(&f, "POST", "/v1/sandboxes", admin, &big).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let invalid = r#"{"policy": "version: 1\nname: t\nruntime: {command: relative/path, args: []}\nmounts: []\n"}"#;
    let (s, ctype, body) = call(&f, "POST", "/v1/sandboxes", admin, invalid).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(ctype, "application/problem+json");
    assert!(
        body["code"].as_str().unwrap().starts_with("SR-POL-"),
        "{body}"
    );
    assert_eq!(body["path"], "runtime.command", "{body}");
}

#[tokio::test]
async fn browsers_are_refused_and_capabilities_and_metrics_answer() {
    let f = fixture();
    let resp = app(f.state.clone())
        .oneshot(
            Request::builder()
                .uri("/healthz")
                .header("origin", "https://evil.example")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let (s, _, caps) = call(&f, "GET", "/v1/capabilities", Some(&f.reader), "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(caps["features"]["execStream"], true);
    let (s, _, _) = call(&f, "GET", "/metrics", None, "").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let resp = app(f.state.clone())
        .oneshot(
            Request::builder()
                .uri("/metrics")
                .header("authorization", format!("Bearer {}", f.reader))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(text.contains("safe_run_sandboxes_running 0"), "{text}");
}

#[tokio::test]
async fn a_token_past_its_rate_gets_429_with_retry_after_and_a_code() {
    let mut f = fixture();
    let mut config = f.state.daemon.host.config.clone();
    config.serve.per_token.requests_per_second = 3;
    let tokens_path = f._dir.path().join("tokens.json");
    f.state = Arc::new(AppState::new(
        Arc::new(Daemon::new(Host {
            config,
            layout: sr_runner::cgroup::Layout::V2 {
                root: PathBuf::from("/nonexistent"),
            },
            init_exe: PathBuf::from("/nonexistent/safe-run"),
            signer: None,
        })),
        tokens_path,
    ));
    for _ in 0..3 {
        let (s, _, _) = call(&f, "GET", "/v1/sandboxes", Some(&f.reader), "").await;
        assert_eq!(s, StatusCode::OK);
    }
    let req = Request::builder()
        .uri("/v1/sandboxes")
        .header("authorization", format!("Bearer {}", f.reader))
        .body(Body::empty())
        .unwrap();
    let resp = app(f.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1, "{retry}");
    let body: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["code"], "SR-SRV-002", "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("serve.perToken.requestsPerSecond")
    );
    // Another token has its own bucket; /healthz is never limited.
    let (s, _, _) = call(&f, "GET", "/v1/sandboxes", Some(&f.admin), "").await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = call(&f, "GET", "/healthz", None, "").await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn list_filters_are_checked_and_create_options_are_validated_before_anything_is_made() {
    let f = fixture();
    let (s, _, v) = call(
        &f,
        "GET",
        "/v1/sandboxes?state=sleeping",
        Some(&f.reader),
        "",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["code"], "SR-SRV-003");
    let (s, _, v) = call(&f, "GET", "/v1/sandboxes?owner=me", Some(&f.reader), "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, _, v) = call(
        &f,
        "GET",
        "/v1/sandboxes?state=running&metadata.team=a",
        Some(&f.reader),
        "",
    )
    .await;
    assert_eq!((s, v), (StatusCode::OK, serde_json::json!([])));
    let policy = "version: 1\nname: t\nruntime: {command: /bin/true, args: []}\nmounts: []\n";
    for (metadata, why) in [
        (serde_json::json!({"": "x"}), "metadata key"),
        (serde_json::json!({"a b": "x"}), "metadata key"),
        (serde_json::json!({"k": "v".repeat(513)}), "at most 512"),
    ] {
        let body = serde_json::json!({"policy": policy, "metadata": metadata}).to_string();
        let (s, _, v) = call(&f, "POST", "/v1/sandboxes", Some(&f.admin), &body).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert!(v["detail"].as_str().unwrap().contains(why), "{v}");
    }
    let many: serde_json::Map<String, Value> = (0..33)
        .map(|i| (format!("k{i}"), Value::from("v")))
        .collect();
    let body = serde_json::json!({"policy": policy, "metadata": many}).to_string();
    let (s, _, _) = call(&f, "POST", "/v1/sandboxes", Some(&f.admin), &body).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        std::fs::read_dir(f._dir.path().join("runs"))
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );
    let (s, _, v) = call(
        &f,
        "POST",
        "/v1/sandboxes/nope/timeout",
        Some(&f.admin),
        r#"{"timeoutMs": 1000}"#,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["code"], "SR-SRV-003");
}
