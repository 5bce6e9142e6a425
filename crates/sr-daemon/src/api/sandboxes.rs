//! `/v1/sandboxes` and `/v1/sandboxes/{id}`: create (a policy or a template), list, show,
//! destroy, and the signed report.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::auth::{bearer_hash, caller, reach, require};
use super::{AppState, bad_json, blocking};
use crate::problem::Problem;
use crate::sandboxes::{CreateError, SandboxView};
use crate::tokens::Scope;

/// `POST /v1/sandboxes`: a policy, or a template's name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    /// The policy, as YAML or JSON text.
    policy: Option<String>,
    /// A template of the operator config (served from its warm pool when one is ready).
    template: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Created {
    #[serde(flatten)]
    sandbox: SandboxView,
    /// The sandbox's own token, shown once.
    token: String,
}

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
    let daemon = state.daemon.clone();
    let made = match (body.policy, body.template) {
        (Some(policy), None) => blocking(move || daemon.create(&policy)).await?,
        (None, Some(template)) => blocking(move || daemon.create_from_template(&template)).await?,
        _ => {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "give exactly one of policy and template",
            ));
        }
    };
    match made {
        Ok((live, token)) => {
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
        Err(CreateError::Full(max)) => Err(Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{max} sandboxes are alive, the most serve.maxSandboxes allows"),
        )
        .hint("delete a sandbox, or raise serve.maxSandboxes in the operator config")),
        Err(CreateError::Start(ds)) => Err(Problem::from_diagnostics(
            StatusCode::INTERNAL_SERVER_ERROR,
            &ds,
        )),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    /// Only sandboxes in this state.
    state: Option<crate::sandboxes::State>,
}

pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<SandboxView>>, Problem> {
    let c = caller(&state, &headers)?;
    require(&c, Scope::Read)?;
    Ok(Json(
        state
            .daemon
            .list()
            .iter()
            .map(|l| l.view())
            .filter(|v| q.state.is_none_or(|s| v.state == s))
            .collect(),
    ))
}

pub(super) async fn show(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<SandboxView>, Problem> {
    let c = caller(&state, &headers)?;
    Ok(Json(reach(&state, &c, &id, Scope::Read)?.view()))
}

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
