//! API v1 (docs/serve.md): the router and what its routes share. Every route but `/healthz`
//! needs a bearer token: an operator token with a scope, or the sandbox's own token for that
//! sandbox ([`auth`]). Each resource's routes have their own module.

mod auth;
mod execs;
mod files;
mod meta;
mod pools;
mod pty;
mod sandboxes;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

use crate::problem::Problem;
use crate::sandboxes::Daemon;

/// What the routes share.
pub struct AppState {
    /// The sandboxes.
    pub daemon: Arc<Daemon>,
    /// The operator's tokens (re-read on each request, so `safe-run token create` takes
    /// effect at once).
    pub tokens_path: std::path::PathBuf,
    /// Answers of creates that carried an `Idempotency-Key`, by token and key.
    pub idempotency: std::sync::Mutex<BTreeMap<String, serde_json::Value>>,
}

impl AppState {
    /// State over `daemon` with operator tokens in `tokens_path`.
    pub fn new(daemon: Arc<Daemon>, tokens_path: std::path::PathBuf) -> AppState {
        AppState {
            daemon,
            tokens_path,
            idempotency: std::sync::Mutex::new(BTreeMap::new()),
        }
    }

    fn idempotent(&self, key: &str) -> Option<serde_json::Value> {
        self.idempotency
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    fn remember(&self, key: String, answer: serde_json::Value) {
        let mut m = self
            .idempotency
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Bounded: past 10 000 keys the smallest key goes (not the oldest; this only caps memory).
        if m.len() >= 10_000
            && let Some(first) = m.keys().next().cloned()
        {
            m.remove(&first);
        }
        m.insert(key, answer);
    }
}

/// The router of API v1 over `state`.
pub fn app(state: Arc<AppState>) -> Router {
    let max_body =
        usize::try_from(state.daemon.host.config.serve.max_body.bytes()).unwrap_or(usize::MAX);
    Router::new()
        .route("/healthz", get(meta::healthz))
        .route("/metrics", get(meta::metrics))
        .route("/v1/capabilities", get(meta::capabilities))
        .route(
            "/v1/sandboxes",
            post(sandboxes::create).get(sandboxes::list),
        )
        .route("/v1/pools", get(pools::list_pools))
        .route("/v1/pools/{template}", put(pools::set_pool))
        .route(
            "/v1/sandboxes/{id}",
            get(sandboxes::show).delete(sandboxes::destroy),
        )
        .route("/v1/sandboxes/{id}/report", get(sandboxes::report))
        .route("/v1/sandboxes/{id}/timeout", post(sandboxes::set_timeout))
        .route("/v1/sandboxes/{id}/execs", post(execs::exec))
        .route(
            "/v1/sandboxes/{id}/execs/{eid}/events",
            get(execs::exec_events),
        )
        .route(
            "/v1/sandboxes/{id}/execs/{eid}/stdin",
            post(execs::exec_stdin),
        )
        .route(
            "/v1/sandboxes/{id}/execs/{eid}/signal",
            post(execs::exec_signal),
        )
        .route(
            "/v1/sandboxes/{id}/execs/{eid}/resize",
            post(execs::exec_resize),
        )
        .route("/v1/sandboxes/{id}/execs/{eid}/pty", get(pty::attach))
        .route(
            "/v1/sandboxes/{id}/files/{*path}",
            get(files::get_file)
                .put(files::put_file)
                .delete(files::remove_file),
        )
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::rate_limit,
        ))
        .layer(axum::middleware::from_fn(no_browsers))
        .with_state(state)
}

/// A request a browser sent (it carries `Origin`) is refused: the API is for programs, and a
/// web page must not reach a loopback daemon through its visitor's browser.
async fn no_browsers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if req.headers().contains_key(header::ORIGIN) {
        return Problem::new(
            StatusCode::FORBIDDEN,
            "requests from browsers (with an Origin header) are refused",
        )
        .hint("call the API from a program, not a web page")
        .into_response();
    }
    next.run(req).await
}

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Problem> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("a worker failed: {e}"),
        )
    })
}

/// A JSON body's rejection (malformed, wrong type, too large) as a problem.
pub(super) fn bad_json(e: axum::extract::rejection::JsonRejection) -> Problem {
    Problem::new(e.status(), e.body_text())
}
