//! `/v1/sandboxes` and `/v1/sandboxes/{id}`: create (a policy or a template, with a timeout,
//! env and metadata), list (by state and metadata), show, timeout, destroy, and the signed
//! report.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::auth::{bearer_hash, caller, reach, require};
use super::{AppState, bad_json, blocking};
use crate::problem::Problem;
use crate::sandboxes::{
    CreateError, CreateOptions, Live, OptionsError, SandboxView, State as Life,
};
use crate::tokens::Scope;

/// `POST /v1/sandboxes`: a policy, or a template's name.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct CreateBody {
    /// The policy, as YAML or JSON text.
    policy: Option<String>,
    /// A template of the operator config (served from its warm pool when one is ready).
    template: Option<String>,
    /// End it this long from now (at most the policy's `limits.timeout`).
    timeout_ms: Option<u64>,
    /// End it this long from now unless an exec has started in it by then (its report then
    /// says `idle`): a client that dies between making a sandbox and using it leaves nothing
    /// running for long. `safe-run run --pool` asks for 15 s.
    unused_timeout_ms: Option<u64>,
    /// Variables every exec gets, under the exec's own.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Labels to find it by (`GET /v1/sandboxes?metadata.KEY=VALUE`).
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

fn options_problem(e: &OptionsError) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()).hint(match e {
        OptionsError::PastPolicyEnd(_) => {
            "ask for a shorter timeout, or raise limits.timeout in the policy"
        }
        OptionsError::Metadata(_) => "label keys are short names; values are text",
    })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Created {
    #[serde(flatten)]
    sandbox: SandboxView,
    /// The sandbox's own token, shown once.
    token: String,
}

#[utoipa::path(
    post,
    path = "/v1/sandboxes",
    tag = "sandboxes",
    summary = "Make a sandbox from a policy or a template (scope create)",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key from the same token gets the first answer"),
    ),
    request_body = CreateBody,
    responses(
        (status = 201, description = "Made; the token is shown once", body = Created),
        (status = 200, description = "The first answer of an idempotent retry", body = Created),
        (status = "4XX", description = "Refused: the problem says why (SR code, hint); 429 carries Retry-After", body = crate::problem::Body, content_type = "application/problem+json"),
        (status = "5XX", description = "The daemon or the sandbox failed", body = crate::problem::Body, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<CreateBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Problem> {
    let c = caller(&state, &headers)?;
    require(&c, Scope::Create)?;
    let Json(body) = body.map_err(bad_json)?;
    // A retried create with the same key (from the same token) gets the first answer.
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 200)
                .ok_or_else(|| {
                    Problem::new(
                        StatusCode::BAD_REQUEST,
                        "Idempotency-Key must be 1 to 200 visible characters",
                    )
                })?;
            Some(format!("{}:{k}", bearer_hash(&headers)))
        }
    };
    if let Some(k) = &key
        && let Some(first) = state.idempotent(k)
    {
        return Ok((StatusCode::OK, Json(first)).into_response());
    }
    let opts = CreateOptions {
        timeout: body.timeout_ms.map(Duration::from_millis),
        unused_timeout: body.unused_timeout_ms.map(Duration::from_millis),
        env: body.env,
        metadata: body.metadata,
    };
    crate::sandboxes::check_metadata(&opts.metadata).map_err(|e| options_problem(&e))?;
    let daemon = state.daemon.clone();
    let owner = c.operator();
    let made = match (body.policy, body.template) {
        (Some(policy), None) => blocking(move || daemon.create_for(&policy, owner)).await?,
        (None, Some(template)) => {
            blocking(move || daemon.create_from_template_for(&template, owner)).await?
        }
        _ => {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "give exactly one of policy and template",
            ));
        }
    };
    match made {
        Ok((live, token)) => {
            if let Err(e) = live.apply(&opts) {
                // Refused after it was made (the policy's timeout was only known then): it
                // ends at once, with its report.
                let daemon = state.daemon.clone();
                blocking(move || live.destroy(daemon.host.signer.as_ref())).await?;
                return Err(options_problem(&e));
            }
            let created = serde_json::to_value(Created {
                sandbox: live.view(),
                token,
            })
            .unwrap_or_default();
            if let Some(k) = key {
                state.remember(k, created.clone());
            }
            Ok((StatusCode::CREATED, Json(created)).into_response())
        }
        Err(CreateError::Policy(ds)) => Err(Problem::from_diagnostics(
            StatusCode::UNPROCESSABLE_ENTITY,
            &ds,
        )),
        Err(CreateError::Full(l)) => Err(Problem::limited(&l)),
        Err(CreateError::Start(ds)) => Err(Problem::from_diagnostics(
            StatusCode::INTERNAL_SERVER_ERROR,
            &ds,
        )),
    }
}

/// `GET /v1/sandboxes?state=running&metadata.KEY=VALUE...`: every filter must match.
#[utoipa::path(
    get,
    path = "/v1/sandboxes",
    tag = "sandboxes",
    summary = "Every sandbox, filtered by state and by metadata (metadata.KEY=VALUE, any number)",
    params(
        ("state" = Option<String>, Query, description = "running or ended"),
    ),
    responses(
        (status = 200, description = "The sandboxes", body = Vec<SandboxView>),
        (status = "4XX", description = "Refused: the problem says why (SR code, hint); 429 carries Retry-After", body = crate::problem::Body, content_type = "application/problem+json"),
        (status = "5XX", description = "The daemon or the sandbox failed", body = crate::problem::Body, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<Vec<SandboxView>>, Problem> {
    let c = caller(&state, &headers)?;
    require(&c, Scope::Read)?;
    let mut want_state = None;
    let mut labels = BTreeMap::new();
    for (k, v) in q {
        if k == "state" {
            want_state = Some(match v.as_str() {
                "running" => Life::Running,
                "ended" => Life::Ended,
                _ => {
                    return Err(Problem::new(
                        StatusCode::BAD_REQUEST,
                        format!("state {v:?} is not running or ended"),
                    ));
                }
            });
        } else if let Some(label) = k.strip_prefix("metadata.") {
            labels.insert(label.to_owned(), v);
        } else {
            return Err(
                Problem::new(StatusCode::BAD_REQUEST, format!("unknown filter {k:?}"))
                    .hint("filter by state=running|ended and metadata.KEY=VALUE"),
            );
        }
    }
    let matches = |l: &Live| labels.iter().all(|(k, v)| l.metadata().get(k) == Some(v));
    Ok(Json(
        state
            .daemon
            .list()
            .iter()
            .filter(|l| matches(l))
            .map(|l| l.view())
            .filter(|v| want_state.is_none_or(|s| v.state == s))
            .collect(),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}",
    tag = "sandboxes",
    summary = "One sandbox (a use of it, for the idle timeout)",
    params(
        ("id" = String, Path, description = "The sandbox id"),
    ),
    responses(
        (status = 200, description = "Its view", body = SandboxView),
        (status = "4XX", description = "Refused: the problem says why (SR code, hint); 429 carries Retry-After", body = crate::problem::Body, content_type = "application/problem+json"),
        (status = "5XX", description = "The daemon or the sandbox failed", body = crate::problem::Body, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn show(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<SandboxView>, Problem> {
    let c = caller(&state, &headers)?;
    Ok(Json(reach(&state, &c, &id, Scope::Read)?.view()))
}

#[utoipa::path(
    delete,
    path = "/v1/sandboxes/{id}",
    tag = "sandboxes",
    summary = "End it and write its signed report",
    params(
        ("id" = String, Path, description = "The sandbox id"),
    ),
    responses(
        (status = 200, description = "Its view, ended", body = SandboxView),
        (status = "4XX", description = "Refused: the problem says why (SR code, hint); 429 carries Retry-After", body = crate::problem::Body, content_type = "application/problem+json"),
        (status = "5XX", description = "The daemon or the sandbox failed", body = crate::problem::Body, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn destroy(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<SandboxView>, Problem> {
    let c = caller(&state, &headers)?;
    let live = reach(&state, &c, &id, Scope::Create)?;
    let daemon = state.daemon.clone();
    let view = blocking(move || live.destroy(daemon.host.signer.as_ref())).await?;
    Ok(Json(view))
}

/// `POST /v1/sandboxes/{id}/timeout` `{"timeoutMs": N}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct TimeoutBody {
    /// End it this long from now (sooner or later than before, within the policy's end).
    timeout_ms: u64,
}

#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/timeout",
    tag = "sandboxes",
    summary = "End it timeoutMs from now, at most at the end its policy sets",
    params(
        ("id" = String, Path, description = "The sandbox id"),
    ),
    request_body = TimeoutBody,
    responses(
        (status = 200, description = "Its view", body = SandboxView),
        (status = "4XX", description = "Refused: the problem says why (SR code, hint); 429 carries Retry-After", body = crate::problem::Body, content_type = "application/problem+json"),
        (status = "5XX", description = "The daemon or the sandbox failed", body = crate::problem::Body, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn set_timeout(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<TimeoutBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<SandboxView>, Problem> {
    let c = caller(&state, &headers)?;
    let live = reach(&state, &c, &id, Scope::Create)?;
    let Json(body) = body.map_err(bad_json)?;
    if live.view().state != Life::Running {
        return Err(Problem::new(StatusCode::CONFLICT, "the sandbox has ended"));
    }
    live.set_timeout(Duration::from_millis(body.timeout_ms))
        .map_err(|e| options_problem(&e))?;
    Ok(Json(live.view()))
}

#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/report",
    tag = "sandboxes",
    summary = "The signed run report (once it has ended)",
    params(
        ("id" = String, Path, description = "The sandbox id"),
    ),
    responses(
        (status = 200, description = "The report (docs/run_report.schema.json)", body = Object),
        (status = "4XX", description = "Refused: the problem says why (SR code, hint); 429 carries Retry-After", body = crate::problem::Body, content_type = "application/problem+json"),
        (status = "5XX", description = "The daemon or the sandbox failed", body = crate::problem::Body, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn report(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let c = caller(&state, &headers)?;
    let live = reach(&state, &c, &id, Scope::Read)?;
    let Some(path) = live.report_path() else {
        let errors = live.evidence_errors();
        if !errors.is_empty() {
            return Err(Problem::from_diagnostics(
                StatusCode::INTERNAL_SERVER_ERROR,
                &errors,
            ));
        }
        return Err(
            Problem::new(StatusCode::CONFLICT, "the sandbox is still running")
                .hint("DELETE /v1/sandboxes/{id} ends it and writes its report"),
        );
    };
    let bytes = tokio::fs::read(&path).await.map_err(|e| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading the report: {e}"),
        )
    })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}
