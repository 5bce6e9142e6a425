//! API v1's routes: sandboxes (create, list, get, delete), execs that answer when they end
//! (`?wait=true`), reports, and `/healthz`. Every route but `/healthz` needs a bearer token:
//! an operator token with a scope, or the sandbox's own token for that sandbox.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use sr_runner::life::ExecRequest;

use crate::problem::Problem;
use crate::sandboxes::{CreateError, Daemon, Live, SandboxView};
use crate::tokens::{Scope, TokenFile, TokenHash};
use crate::waiting::{WaitError, run_waiting};

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

/// The presented token's hash, hex (never the token itself).
fn bearer_hash(headers: &HeaderMap) -> String {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    TokenHash::of(token.trim()).to_hex()
}

/// The router of API v1 over `state`.
pub fn app(state: Arc<AppState>) -> Router {
    let max_body =
        usize::try_from(state.daemon.host.config.serve.max_body.bytes()).unwrap_or(usize::MAX);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/capabilities", get(capabilities))
        .route("/v1/sandboxes", post(create).get(list))
        .route("/v1/pools", get(list_pools))
        .route("/v1/pools/{template}", axum::routing::put(set_pool))
        .route("/v1/sandboxes/{id}", get(show).delete(destroy))
        .route("/v1/sandboxes/{id}/execs", post(exec))
        .route("/v1/sandboxes/{id}/execs/{eid}/events", get(exec_events))
        .route("/v1/sandboxes/{id}/execs/{eid}/stdin", post(exec_stdin))
        .route("/v1/sandboxes/{id}/execs/{eid}/signal", post(exec_signal))
        .route("/v1/sandboxes/{id}/report", get(report))
        .route(
            "/v1/sandboxes/{id}/files/{*path}",
            get(get_file).put(put_file).delete(remove_file),
        )
        .nest_service("/mcp", crate::mcp::http::service(state.clone()))
        .layer(DefaultBodyLimit::max(max_body))
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

/// `GET /v1/capabilities`: what this daemon serves.
async fn capabilities(
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
            "tar": false, "pty": false, "pool": false, "mcp": true,
        },
        "limits": {"maxSandboxes": serve.max_sandboxes, "maxBodyBytes": serve.max_body.bytes()},
    })))
}

/// `GET /metrics`: Prometheus text.
async fn metrics(
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

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"ok": true}))
}

/// Who is asking.
pub(crate) enum Caller {
    /// An operator token.
    Operator(Vec<Scope>),
    /// Some sandbox's own token (checked against the sandbox asked for).
    Sandbox(TokenHash),
}

fn unauthorized(detail: &str) -> Problem {
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
        Some(scopes) => Caller::Operator(scopes),
        None => Caller::Sandbox(hash),
    })
}

fn forbidden() -> Problem {
    Problem::new(StatusCode::FORBIDDEN, "this token may not do that")
}

/// An operator token with `scope` (or admin).
pub(crate) fn require(c: &Caller, scope: Scope) -> Result<(), Problem> {
    match c {
        Caller::Operator(s) if s.contains(&Scope::Admin) || s.contains(&scope) => Ok(()),
        Caller::Operator(_) => Err(forbidden()),
        Caller::Sandbox(_) => Err(unauthorized("the token is not valid")),
    }
}

/// The sandbox `id`, if `c` may reach it: admin, `scope`, or its own token. An unknown id
/// and a token that does not reach it answer alike (404), so ids cannot be probed.
fn reach(state: &AppState, c: &Caller, id: &str, scope: Scope) -> Result<Arc<Live>, Problem> {
    let not_found = || Problem::new(StatusCode::NOT_FOUND, format!("no sandbox {id}"));
    let live = state.daemon.get(id);
    let allowed = match (c, &live) {
        (Caller::Operator(s), _) => s.contains(&Scope::Admin) || s.contains(&scope),
        (Caller::Sandbox(h), Some(l)) => l.is_own_token(h),
        (Caller::Sandbox(_), None) => false,
    };
    match (allowed, live) {
        (true, Some(l)) => Ok(l),
        (false, _) if matches!(c, Caller::Operator(_)) => Err(forbidden()),
        _ => Err(not_found()),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Problem> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("a worker failed: {e}"),
        )
    })
}

/// `POST /v1/sandboxes`: a policy, or a template's name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    /// The policy, as YAML or JSON text.
    policy: Option<String>,
    /// A template of the operator config (served from its warm pool when one is ready).
    template: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    #[serde(flatten)]
    sandbox: SandboxView,
    /// The sandbox's own token, shown once.
    token: String,
}

async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<CreateBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Problem> {
    let c = caller(&state, &headers)?;
    require(&c, Scope::Create)?;
    let Json(body) = body.map_err(|e| Problem::new(e.status(), e.body_text()))?;
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
struct ListQuery {
    /// Only sandboxes in this state.
    state: Option<crate::sandboxes::State>,
}

async fn list(
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

async fn show(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<SandboxView>, Problem> {
    let c = caller(&state, &headers)?;
    Ok(Json(reach(&state, &c, &id, Scope::Read)?.view()))
}

async fn destroy(
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

async fn report(
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

#[derive(Debug, Deserialize)]
struct FileQuery {
    /// Permission bits of a put (default 0644).
    mode: Option<String>,
    /// A GET of a directory: its listing instead of its content.
    #[serde(default)]
    list: bool,
    /// A DELETE of a non-empty directory.
    #[serde(default)]
    recursive: bool,
}

fn absolute(path: &str) -> String {
    format!("/{path}")
}

/// `GET .../files/{path}`: the file's bytes, or with `?list=true` a directory's entries.
async fn get_file(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, path)): Path<(String, String)>,
    Query(q): Query<FileQuery>,
) -> Result<Response, Problem> {
    let c = caller(&state, &headers)?;
    let live = reach(&state, &c, &id, Scope::Read)?;
    let path = absolute(&path);
    if q.list {
        let entries = blocking(move || live.with_sandbox(|sb| sb.list(&path))).await??;
        return Ok(Json(crate::sandboxes::listing(&entries)).into_response());
    }
    let bytes = blocking(move || {
        live.with_sandbox(|sb| {
            let mut out = Vec::new();
            sb.get_file(&path, &mut out).map(|_| out)
        })
    })
    .await??;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

/// `PUT .../files/{path}`: the body becomes the file (`?mode=0600`).
async fn put_file(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, path)): Path<(String, String)>,
    Query(q): Query<FileQuery>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, Problem> {
    let c = caller(&state, &headers)?;
    let live = reach(&state, &c, &id, Scope::Create)?;
    let mode = match q.mode.as_deref() {
        None => 0o644,
        Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    format!("mode {m:?} is not octal permission bits"),
                )
                .hint("e.g. ?mode=0644")
            })?,
    };
    let path = absolute(&path);
    let moved = blocking(move || {
        live.with_sandbox(|sb| sb.put_file(&path, mode, body.len() as u64, &mut body.as_ref()))
    })
    .await??;
    Ok(Json(
        serde_json::json!({"size": moved.size, "sha256": moved.sha256}),
    ))
}

/// `DELETE .../files/{path}` (`?recursive=true` for a non-empty directory).
async fn remove_file(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, path)): Path<(String, String)>,
    Query(q): Query<FileQuery>,
) -> Result<StatusCode, Problem> {
    let c = caller(&state, &headers)?;
    let live = reach(&state, &c, &id, Scope::Create)?;
    let path = absolute(&path);
    blocking(move || live.with_sandbox(|sb| sb.remove(&path, q.recursive))).await??;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/sandboxes/{id}/execs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ExecBody {
    /// Program (absolute) and arguments.
    argv: Vec<String>,
    /// Variables added to the policy's.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Working directory.
    cwd: Option<String>,
    /// Text given on stdin (none: /dev/null).
    stdin: Option<String>,
    /// The exec's own timeout.
    timeout_ms: Option<u64>,
    /// A streamed exec's stdin stays open after `stdin` for `.../stdin` writes.
    #[serde(default)]
    keep_stdin_open: bool,
}

#[derive(Debug, Deserialize)]
struct ExecQuery {
    #[serde(default)]
    wait: bool,
}

async fn exec(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<ExecQuery>,
    body: Result<Json<ExecBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Problem> {
    let c = caller(&state, &headers)?;
    let live = reach(&state, &c, &id, Scope::Create)?;
    let Json(body) = body.map_err(|e| Problem::new(e.status(), e.body_text()))?;
    let req = ExecRequest {
        argv: body.argv,
        env: body.env,
        cwd: body.cwd,
        timeout: body.timeout_ms.map(Duration::from_millis),
        stdin: body.stdin.is_some(),
        tty: None,
    };
    let stdin = body.stdin;
    state
        .daemon
        .counters
        .execs
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if !q.wait {
        let keep_open = body.keep_stdin_open;
        let started = blocking(move || -> Result<serde_json::Value, Problem> {
            let log = live.exec_streamed(&req)?;
            if let Some(text) = stdin {
                let log = log.clone();
                // Written from its own thread: it waits for the agent's credit.
                std::thread::spawn(move || {
                    let _ = log.write_stdin(text.as_bytes(), !keep_open);
                });
            }
            Ok(serde_json::json!({"id": log.id}))
        })
        .await??;
        return Ok((StatusCode::ACCEPTED, Json(started)).into_response());
    }
    let done = blocking(move || run_waiting(&live, &req, stdin))
        .await?
        .map_err(|e| match e {
            WaitError::Sandbox(e) => Problem::from(e),
            WaitError::Failed(d) => Problem::from_diagnostics(
                StatusCode::UNPROCESSABLE_ENTITY,
                std::slice::from_ref(&d),
            ),
            WaitError::Ended => {
                Problem::new(StatusCode::CONFLICT, "the sandbox ended during the exec")
            }
        })?;
    Ok(Json(done).into_response())
}

fn streamed(live: &Live, eid: u64) -> Result<Arc<crate::streams::ExecLog>, Problem> {
    live.streamed(eid).ok_or_else(|| {
        Problem::new(StatusCode::NOT_FOUND, format!("no streamed exec {eid}"))
            .hint("start it with POST .../execs (without ?wait=true)")
    })
}

/// `GET .../execs/{eid}/events`: Server-Sent Events whose ids are stream offsets; resumes after
/// `Last-Event-ID`; ends after `exit`.
async fn exec_events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, eid)): Path<(String, u64)>,
) -> Result<Response, Problem> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let c = caller(&state, &headers)?;
    let live = reach(&state, &c, &id, Scope::Read)?;
    let log = streamed(&live, eid)?;
    let resume = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    Problem::new(
                        StatusCode::BAD_REQUEST,
                        "Last-Event-ID is not a stream offset",
                    )
                })?,
        ),
    };
    if let Err(g) = log.after(resume) {
        return Err(Problem::new(
            StatusCode::GONE,
            format!("output before offset {} is no longer kept", g.first_kept),
        )
        .hint("resume from a later offset, or read the exec's digest in the report"));
    }
    let rx = log.subscribe();
    let stream = futures_util::stream::unfold(
        (log, rx, resume, false),
        |(log, mut rx, mut at, done)| async move {
            if done {
                return None;
            }
            loop {
                let (events, ended) = match log.after(at) {
                    Ok(x) => x,
                    Err(_) => return None,
                };
                if !events.is_empty() {
                    let mut out = Vec::new();
                    let mut finished = false;
                    for (off, e) in events {
                        finished |= matches!(e, crate::streams::Sent::Exit { .. });
                        let data = serde_json::to_string(&e).unwrap_or_default();
                        out.push(Ok::<_, std::convert::Infallible>(
                            Event::default()
                                .id(off.to_string())
                                .event(e.name())
                                .data(data),
                        ));
                        at = Some(off);
                    }
                    let stream = futures_util::stream::iter(out);
                    return Some((stream, (log, rx, at, finished)));
                }
                if ended || rx.changed().await.is_err() {
                    return None;
                }
            }
        },
    );
    use futures_util::StreamExt;
    Ok(Sse::new(stream.flatten())
        .keep_alive(KeepAlive::default())
        .into_response())
}

#[derive(Debug, Deserialize)]
struct StdinQuery {
    #[serde(default)]
    close: bool,
}

/// `POST .../execs/{eid}/stdin?close=true` (raw body).
async fn exec_stdin(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, eid)): Path<(String, u64)>,
    Query(q): Query<StdinQuery>,
    body: axum::body::Bytes,
) -> Result<StatusCode, Problem> {
    let c = caller(&state, &headers)?;
    let live = reach(&state, &c, &id, Scope::Create)?;
    let log = streamed(&live, eid)?;
    blocking(move || log.write_stdin(&body, q.close))
        .await?
        .map_err(|e| Problem::new(StatusCode::CONFLICT, format!("stdin: {e}")))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignalBody {
    signal: i32,
}

/// `POST .../execs/{eid}/signal` `{"signal": 15}`.
async fn exec_signal(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, eid)): Path<(String, u64)>,
    body: Result<Json<SignalBody>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, Problem> {
    let c = caller(&state, &headers)?;
    let live = reach(&state, &c, &id, Scope::Create)?;
    let Json(body) = body.map_err(|e| Problem::new(e.status(), e.body_text()))?;
    if !(1..=64).contains(&body.signal) {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            format!("{} is not a signal number", body.signal),
        ));
    }
    let log = streamed(&live, eid)?;
    log.signal(body.signal)
        .map_err(|e| Problem::new(StatusCode::CONFLICT, format!("signal: {e}")))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PoolBody {
    min_ready: u32,
}

/// `PUT /v1/pools/{template}` `{"minReady": N}` (admin).
async fn set_pool(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(template): Path<String>,
    body: Result<Json<PoolBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<crate::pool::PoolView>, Problem> {
    let c = caller(&state, &headers)?;
    require(&c, Scope::Admin)?;
    let Json(body) = body.map_err(|e| Problem::new(e.status(), e.body_text()))?;
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
async fn list_pools(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<crate::pool::PoolView>>, Problem> {
    let c = caller(&state, &headers)?;
    require(&c, Scope::Read)?;
    Ok(Json(state.daemon.pools()))
}
