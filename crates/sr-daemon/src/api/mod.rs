//! API v1 (docs/serve.md): the router and what its routes share. Every route but `/healthz`
//! needs a bearer token: an operator token with a scope, or the sandbox's own token for that
//! sandbox ([`auth`]). Each resource's routes have their own module.

pub(crate) mod auth;
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
use axum::routing::get;

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

/// The OpenAPI document's frame: what the annotated routes do not say themselves.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "safe-run serve",
        description = "The control plane for live sandboxes: every exec runs under a policy and every sandbox ends in a signed report (docs/serve.md).",
        license(name = "Apache-2.0")
    ),
    paths(files::get_file, files::put_file, files::remove_file),
    modifiers(&BearerAuth),
    tags(
        (name = "meta", description = "The daemon itself"),
        (name = "sandboxes", description = "Live sandboxes"),
        (name = "execs", description = "Programs run in a sandbox"),
        (name = "files", description = "Files in a sandbox, within its policy's mounts"),
        (name = "pools", description = "Warm pools of ready sandboxes")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An operator token (safe-run token create) or a sandbox's own token",
                    ))
                    .build(),
            ),
        );
    }
}

/// The routes, and the OpenAPI document they are described by (one source: each route's
/// `#[utoipa::path]`). The files routes take a wildcard path, which OpenAPI writes `{path}` and
/// axum `{*path}`: they are routed by hand and described through [`ApiDoc`].
fn routes() -> (Router<Arc<AppState>>, utoipa::openapi::OpenApi) {
    use utoipa::OpenApi;
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(meta::healthz))
        .routes(routes!(meta::metrics))
        .routes(routes!(meta::capabilities))
        .routes(routes!(sandboxes::create, sandboxes::list))
        .routes(routes!(sandboxes::show, sandboxes::destroy))
        .routes(routes!(sandboxes::report))
        .routes(routes!(sandboxes::set_timeout))
        .routes(routes!(execs::exec))
        .routes(routes!(execs::exec_events))
        .routes(routes!(execs::exec_stdin))
        .routes(routes!(execs::exec_signal))
        .routes(routes!(execs::exec_resize))
        .routes(routes!(pty::attach))
        .routes(routes!(pools::list_pools))
        .routes(routes!(pools::set_pool))
        .split_for_parts();
    let router = router.route(
        "/v1/sandboxes/{id}/files/{*path}",
        get(files::get_file)
            .put(files::put_file)
            .delete(files::remove_file),
    );
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    (router, doc)
}

/// The OpenAPI 3.1 document of API v1, as served at `/v1/openapi.json` and checked in as
/// docs/openapi.json.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().1
}

/// The router of API v1 over `state`.
pub fn app(state: Arc<AppState>) -> Router {
    let max_body =
        usize::try_from(state.daemon.host.config.serve.max_body.bytes()).unwrap_or(usize::MAX);
    let (router, doc) = routes();
    let doc = Arc::new(doc.to_pretty_json().unwrap_or_default());
    router
        // MCP (Streamable HTTP) beside API v1: not part of its OpenAPI document.
        .nest_service("/mcp", crate::mcp::http::service(state.clone()))
        .route(
            "/v1/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], (*doc).clone()) }
            }),
        )
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, NO_ROUTE) })
        .method_not_allowed_fallback(|| async {
            Problem::new(StatusCode::METHOD_NOT_ALLOWED, NO_METHOD)
                .hint("see /v1/openapi.json for the methods of each route")
        })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::map_response(as_problem))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::rate_limit,
        ))
        .layer(axum::middleware::from_fn(no_browsers))
        .with_state(state)
}

/// What the router answers for a path it does not route, and a method a route does not take.
pub const NO_ROUTE: &str = "no such route in API v1";
/// See [`NO_ROUTE`].
pub const NO_METHOD: &str = "this route does not take that method";

/// Every refusal as problem+json: axum's own (a malformed path or query parameter, a body of
/// the wrong type or size) come as text, and become problems carrying the same status and text.
async fn as_problem(resp: Response) -> Response {
    let status = resp.status();
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let detail = if text.is_empty() {
        status.canonical_reason().unwrap_or("refused").to_owned()
    } else {
        text
    };
    let mut problem = Problem::new(status, detail).into_response();
    // Keep what the refusal said beside its body (Allow of a 405, for one).
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            problem.headers_mut().insert(name.clone(), value.clone());
        }
    }
    problem
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
