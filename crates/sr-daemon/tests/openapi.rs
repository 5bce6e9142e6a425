//! The OpenAPI document: docs/openapi.json is what the code generates (UPDATE_OPENAPI=1
//! rewrites it), `/v1/openapi.json` serves the same, and every operation it names is routed
//! (answered by a handler, never by the router's bare 404 or 405).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use sr_daemon::{AppState, Daemon, Host, app, openapi};
use tower::ServiceExt;

fn state(dir: &Path) -> Arc<AppState> {
    let config = sr_policy::OperatorConfig {
        run_dir: dir.join("runs").display().to_string(),
        ..Default::default()
    };
    Arc::new(AppState::new(
        Arc::new(Daemon::new(Host {
            config,
            layout: sr_runner::cgroup::Layout::V2 {
                root: PathBuf::from("/nonexistent"),
            },
            init_exe: PathBuf::from("/nonexistent/safe-run"),
            signer: None,
        })),
        dir.join("tokens.json"),
    ))
}

#[test]
fn docs_openapi_json_is_what_the_code_generates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let generated = openapi().to_pretty_json().unwrap() + "\n";
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "docs/openapi.json drifted from the routes' annotations; run the test with UPDATE_OPENAPI=1"
    );
    let doc: Value = serde_json::from_str(&generated).unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
}

#[tokio::test]
async fn the_served_document_is_the_same_and_every_operation_in_it_is_routed() {
    let dir = tempfile::tempdir().unwrap();
    let router = app(state(dir.path()));
    let resp = router
        .clone()
        .oneshot(
            Request::get("/v1/openapi.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let served: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let doc = serde_json::to_value(openapi()).unwrap();
    assert_eq!(served, doc);
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{id}", "abc")
            .replace("{eid}", "1")
            .replace("{path}", "tmp/x")
            .replace("{template}", "t");
        for method in item.as_object().unwrap().keys() {
            operations += 1;
            let req = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&concrete)
                .body(Body::empty())
                .unwrap();
            let resp = router.clone().oneshot(req).await.unwrap();
            let status = resp.status();
            let body: Value =
                serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes())
                    .unwrap_or(Value::Null);
            // No token: every route but /healthz refuses with a problem of its own; one the
            // router does not route answers its fallback's.
            let detail = body["detail"].as_str().unwrap_or_default();
            assert!(
                status.is_success()
                    || (!detail.is_empty()
                        && detail != sr_daemon::api::NO_ROUTE
                        && detail != sr_daemon::api::NO_METHOD),
                "{method} {path}: {status} {body}: not routed"
            );
        }
    }
    assert!(operations >= 20, "{operations}");
}

#[tokio::test]
async fn the_routers_own_refusals_are_problems_too() {
    let dir = tempfile::tempdir().unwrap();
    let router = app(state(dir.path()));
    for (method, uri, status) in [
        ("GET", "/v1/nothing", StatusCode::NOT_FOUND),
        ("PATCH", "/v1/sandboxes", StatusCode::METHOD_NOT_ALLOWED),
        (
            "GET",
            "/v1/sandboxes/x/execs/-1/events",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let resp = router
            .clone()
            .oneshot(
                Request::builder()
                    .method(method)
                    .uri(uri)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{method} {uri}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let body: Value =
            serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert!(
            body["code"].as_str().unwrap().starts_with("SR-SRV-"),
            "{body}"
        );
    }
}
