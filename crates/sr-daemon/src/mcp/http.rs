//! `/mcp`: MCP over Streamable HTTP, mounted in API v1's router. A request needs an operator
//! token with the `create` or `admin` scope (checked as every route checks tokens); the
//! router's refusal of requests that carry `Origin` holds here too.
//!
//! The service is stateless (no MCP sessions kept between requests) and answers plain JSON:
//! the state is the daemon's sandboxes, which outlive any one connection. rmcp's own `Host`
//! check is off: over the Unix socket a client's `Host` is anything, and what it guards
//! against (a browser's page reaching a loopback server) is refused by the `Origin` check and
//! the bearer token, which no page has.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use super::McpServer;
use crate::api::AppState;
use crate::api::auth::{caller, require};
use crate::tokens::Scope;

/// The `/mcp` service over `state`'s daemon, behind its token check.
pub fn service(state: Arc<AppState>) -> Router {
    let max_body =
        usize::try_from(state.daemon.host.config.serve.max_body.bytes()).unwrap_or(usize::MAX);
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .disable_allowed_hosts()
        .with_max_request_body_bytes(max_body);
    let daemon = state.daemon.clone();
    let mcp = StreamableHttpService::new(
        move || Ok(McpServer::new(daemon.clone())),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    Router::new()
        .fallback_service(mcp)
        .layer(axum::middleware::from_fn_with_state(state, authorize))
}

/// A `create` or `admin` token, or 401/403 as API v1 answers them.
async fn authorize(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let allowed = caller(&state, req.headers()).and_then(|c| require(&c, Scope::Create));
    match allowed {
        Ok(()) => next.run(req).await,
        Err(p) => p.into_response(),
    }
}
