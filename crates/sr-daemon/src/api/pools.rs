//! `/v1/pools`: the warm pools of templates.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::auth::{caller, require};
use super::{AppState, bad_json};
use crate::problem::Problem;
use crate::sandboxes::CreateError;
use crate::tokens::Scope;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct PoolBody {
    min_ready: u32,
}

/// `PUT /v1/pools/{template}` `{"minReady": N}` (admin).
#[utoipa::path(
    put,
    path = "/v1/pools/{template}",
    tag = "pools",
    summary = "Keep minReady sandboxes of a template ready (scope admin)",
    params(
        ("template" = String, Path, description = "A template of the operator config"),
    ),
    request_body = PoolBody,
    responses(
        (status = 200, description = "The pool", body = crate::pool::PoolView),
        (status = "4XX", description = "Refused: the problem says why (SR code, hint); 429 carries Retry-After", body = crate::problem::Body, content_type = "application/problem+json"),
        (status = "5XX", description = "The daemon or the sandbox failed", body = crate::problem::Body, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn set_pool(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(template): Path<String>,
    body: Result<Json<PoolBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<crate::pool::PoolView>, Problem> {
    let c = caller(&state, &headers)?;
    require(&c, Scope::Admin)?;
    let Json(body) = body.map_err(bad_json)?;
    let max = state.daemon.host.config.serve.max_sandboxes;
    if body.min_ready > max {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "minReady {} is more than serve.maxSandboxes ({max})",
                body.min_ready
            ),
        ));
    }
    match state.daemon.set_pool(&template, body.min_ready) {
        Ok(v) => Ok(Json(v)),
        Err(CreateError::Policy(ds)) => Err(Problem::from_diagnostics(StatusCode::NOT_FOUND, &ds)),
        Err(_) => Err(Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the pool could not be set",
        )),
    }
}

/// `GET /v1/pools`.
#[utoipa::path(
    get,
    path = "/v1/pools",
    tag = "pools",
    summary = "Every warm pool",
    responses(
        (status = 200, description = "The pools", body = Vec<crate::pool::PoolView>),
        (status = "4XX", description = "Refused: the problem says why (SR code, hint); 429 carries Retry-After", body = crate::problem::Body, content_type = "application/problem+json"),
        (status = "5XX", description = "The daemon or the sandbox failed", body = crate::problem::Body, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn list_pools(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<crate::pool::PoolView>>, Problem> {
    let c = caller(&state, &headers)?;
    require(&c, Scope::Read)?;
    Ok(Json(state.daemon.pools()))
}
