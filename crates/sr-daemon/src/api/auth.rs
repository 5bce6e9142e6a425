//! Who is asking: the bearer token, read against the operator's token file (re-read on each
//! request) or a sandbox's own token, and what it may reach.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};

use super::AppState;
use crate::problem::Problem;
use crate::sandboxes::Live;
use crate::tokens::{Scope, TokenFile, TokenHash};

/// The presented token's hash (of the empty string when there is none): never the token.
fn presented(headers: &HeaderMap) -> TokenHash {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    TokenHash::of(token.trim())
}

/// The presented token's hash, hex.
pub(super) fn bearer_hash(headers: &HeaderMap) -> String {
    presented(headers).to_hex()
}

/// Who is asking.
pub(crate) enum Caller {
    /// An operator token (its scopes, its hash).
    Operator(Vec<Scope>, TokenHash),
    /// Some sandbox's own token (checked against the sandbox asked for).
    Sandbox(TokenHash),
}

impl Caller {
    /// The presented token's hash (what limits are counted by).
    pub(super) fn hash(&self) -> TokenHash {
        match self {
            Caller::Operator(_, h) | Caller::Sandbox(h) => *h,
        }
    }

    /// The operator token's hash, the owner of what it makes (a sandbox's own token makes
    /// nothing).
    pub(super) fn operator(&self) -> Option<TokenHash> {
        match self {
            Caller::Operator(_, h) => Some(*h),
            Caller::Sandbox(_) => None,
        }
    }
}

pub(super) fn unauthorized(detail: &str) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, detail)
        .hint("send Authorization: Bearer <token> (safe-run token create --scopes ...)")
}

pub(crate) fn caller(state: &AppState, headers: &HeaderMap) -> Result<Caller, Problem> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unauthorized("no bearer token"))?;
    let token = value
        .strip_prefix("Bearer ")
        .ok_or_else(|| unauthorized("the Authorization header is not a bearer token"))?;
    let hash = TokenHash::of(token.trim());
    let file = TokenFile::load(&state.tokens_path).map_err(|e| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the token file: {e}"),
        )
    })?;
    Ok(match file.scopes_of(&hash) {
        Some(scopes) => Caller::Operator(scopes, hash),
        None => Caller::Sandbox(hash),
    })
}

/// Counts the request against the rate limits of its token and of the daemon: a middleware,
/// so a caller past its rate gets 429 before any work is done.
pub(super) async fn rate_limit(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if req.uri().path() != "/healthz" {
        let who = presented(req.headers());
        if let Err(l) = state
            .daemon
            .limiter
            .request(&who, std::time::Instant::now())
        {
            return Problem::limited(&l).into_response();
        }
    }
    next.run(req).await
}

pub(super) fn forbidden() -> Problem {
    Problem::new(StatusCode::FORBIDDEN, "this token may not do that")
}

/// An operator token with `scope` (or admin).
pub(crate) fn require(c: &Caller, scope: Scope) -> Result<(), Problem> {
    match c {
        Caller::Operator(s, _) if s.contains(&Scope::Admin) || s.contains(&scope) => Ok(()),
        Caller::Operator(..) => Err(forbidden()),
        Caller::Sandbox(_) => Err(unauthorized("the token is not valid")),
    }
}

/// The sandbox `id`, if `c` may reach it: admin, `scope`, or its own token. An unknown id
/// and a token that does not reach it answer alike (404), so ids cannot be probed.
pub(super) fn reach(
    state: &AppState,
    c: &Caller,
    id: &str,
    scope: Scope,
) -> Result<Arc<Live>, Problem> {
    let not_found = || Problem::new(StatusCode::NOT_FOUND, format!("no sandbox {id}"));
    let live = state.daemon.get(id);
    let allowed = match (c, &live) {
        (Caller::Operator(s, _), _) => s.contains(&Scope::Admin) || s.contains(&scope),
        (Caller::Sandbox(h), Some(l)) => l.is_own_token(h),
        (Caller::Sandbox(_), None) => false,
    };
    match (allowed, live) {
        (true, Some(l)) => {
            l.touch();
            Ok(l)
        }
        (false, _) if matches!(c, Caller::Operator(..)) => Err(forbidden()),
        _ => Err(not_found()),
    }
}
