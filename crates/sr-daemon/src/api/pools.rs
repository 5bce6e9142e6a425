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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct PoolBody {
    min_ready: u32,
}

/// `PUT /v1/pools/{template}` `{"minReady": N}` (admin).
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
pub(super) async fn list_pools(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<crate::pool::PoolView>>, Problem> {
    let c = caller(&state, &headers)?;
    require(&c, Scope::Read)?;
    Ok(Json(state.daemon.pools()))
}
