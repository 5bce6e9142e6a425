//! `/healthz`, `/metrics` and `/v1/capabilities`: what the daemon is and how it is doing.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::auth::{caller, require};
use crate::problem::Problem;
use crate::tokens::Scope;

/// `GET /v1/capabilities`: what this daemon serves.
#[utoipa::path(
    get,
    path = "/v1/capabilities",
    tag = "meta",
    summary = "What this daemon serves and its limits",
    responses(
        (status = 200, description = "Version, backends, features, limits", body = Object),
        (status = "4XX", description = "Refused: the problem says why (SR code, hint); 429 carries Retry-After", body = crate::problem::Body, content_type = "application/problem+json"),
        (status = "5XX", description = "The daemon or the sandbox failed", body = crate::problem::Body, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn capabilities(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, Problem> {
    let c = caller(&state, &headers)?;
    require(&c, Scope::Read).or_else(|_| require(&c, Scope::Create))?;
    let serve = &state.daemon.host.config.serve;
    Ok(Json(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "backends": ["sandbox"],
        "features": {
            "execWait": true, "execStream": true, "stdin": true, "signal": true, "files": true,
            "tar": true, "pty": true, "pool": true, "mcp": true,
            "timeout": true, "metadata": true,
        },
        "limits": {
            "maxSandboxes": serve.max_sandboxes, "maxExecs": serve.max_execs,
            "maxBodyBytes": serve.max_body.bytes(), "requestsPerSecond": serve.requests_per_second,
            "perToken": {
                "maxSandboxes": serve.per_token.max_sandboxes,
                "maxExecs": serve.per_token.max_execs,
                "requestsPerSecond": serve.per_token.requests_per_second,
            },
            "idleTimeoutMs": serve.idle_timeout.map(|d| d.as_millis()),
        },
    })))
}

/// `GET /metrics`: Prometheus text.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    summary = "Prometheus text (scope read)",
    responses(
        (status = 200, description = "Counters and gauges", body = String, content_type = "text/plain"),
        (status = "4XX", description = "Refused: the problem says why (SR code, hint); 429 carries Retry-After", body = crate::problem::Body, content_type = "application/problem+json"),
        (status = "5XX", description = "The daemon or the sandbox failed", body = crate::problem::Body, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn metrics(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    use std::sync::atomic::Ordering::Relaxed;
    let c = caller(&state, &headers)?;
    require(&c, Scope::Read)?;
    let d = &state.daemon;
    let text = format!(
        "# HELP safe_run_sandboxes_running Sandboxes alive now.\n# TYPE safe_run_sandboxes_running gauge\nsafe_run_sandboxes_running {}\n\
         # HELP safe_run_sandboxes_created_total Sandboxes made.\n# TYPE safe_run_sandboxes_created_total counter\nsafe_run_sandboxes_created_total {}\n\
         # HELP safe_run_sandbox_start_failures_total Sandboxes whose start failed.\n# TYPE safe_run_sandbox_start_failures_total counter\nsafe_run_sandbox_start_failures_total {}\n\
         # HELP safe_run_execs_total Execs started.\n# TYPE safe_run_execs_total counter\nsafe_run_execs_total {}\n",
        d.running(),
        d.counters.created.load(Relaxed),
        d.counters.failed_starts.load(Relaxed),
        d.counters.execs.load(Relaxed),
    );
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "meta",
    summary = "Liveness; needs no token",
    responses(
        (status = 200, description = "Alive", body = Object),
        (status = "4XX", description = "Refused: the problem says why (SR code, hint); 429 carries Retry-After", body = crate::problem::Body, content_type = "application/problem+json"),
        (status = "5XX", description = "The daemon or the sandbox failed", body = crate::problem::Body, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"ok": true}))
}
