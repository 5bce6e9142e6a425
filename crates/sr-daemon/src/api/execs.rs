//! `/v1/sandboxes/{id}/execs`: an exec that answers when it ends (`?wait=true`), or a streamed
//! one read as Server-Sent Events, with stdin and signals.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sr_runner::life::ExecRequest;

use super::auth::{caller, reach};
use super::{AppState, bad_json, blocking};
use crate::problem::Problem;
use crate::sandboxes::Live;
use crate::tokens::Scope;
use crate::waiting::{WaitError, run_waiting_as};

/// `POST /v1/sandboxes/{id}/execs`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct ExecBody {
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
    /// A terminal of this size instead of pipes (stdout then carries both streams; stdin stays
    /// open for `.../stdin` or the WebSocket at `.../pty`).
    pty: Option<TermSize>,
}

/// A streamed exec, started.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct ExecStarted {
    /// Its id, for `.../execs/{eid}/...`.
    id: u64,
}

/// A terminal's size.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TermSize {
    /// Rows, 1 to 1000.
    pub(super) rows: u16,
    /// Columns, 1 to 1000.
    pub(super) cols: u16,
}

impl TermSize {
    pub(super) fn checked(self) -> Result<(u16, u16), Problem> {
        let ok = |n: u16| (1..=1000).contains(&n);
        if ok(self.rows) && ok(self.cols) {
            Ok((self.rows, self.cols))
        } else {
            Err(Problem::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "a terminal of {}x{} (rows, cols: 1 to 1000)",
                    self.rows, self.cols
                ),
            ))
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct ExecQuery {
    #[serde(default)]
    wait: bool,
}

#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/execs",
    tag = "execs",
    summary = "Run a program: answered when it ends (wait=true) or streamed",
    params(
        ("id" = String, Path, description = "The sandbox id"),
        ("wait" = Option<bool>, Query, description = "Answer when it ends"),
    ),
    request_body = ExecBody,
    responses(
        (status = 200, description = "It ended (wait=true)", body = crate::waiting::ExecDone),
        (status = 202, description = "It runs; read it at .../events", body = ExecStarted),
        (status = "4XX", description = "Refused: the problem says why (SR code, hint); 429 carries Retry-After", body = crate::problem::Body, content_type = "application/problem+json"),
        (status = "5XX", description = "The daemon or the sandbox failed", body = crate::problem::Body, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn exec(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<ExecQuery>,
    body: Result<Json<ExecBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Problem> {
    let c = caller(&state, &headers)?;
    let live = reach(&state, &c, &id, Scope::Create)?;
    let Json(body) = body.map_err(bad_json)?;
    let tty = body.pty.map(TermSize::checked).transpose()?;
    if tty.is_some() && q.wait {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "an exec with a pty is streamed, not waited for",
        )
        .hint("drop ?wait=true and attach to GET .../execs/{eid}/pty (WebSocket)"));
    }
    let req = ExecRequest {
        argv: body.argv,
        env: body.env,
        cwd: body.cwd,
        timeout: body.timeout_ms.map(Duration::from_millis),
        stdin: body.stdin.is_some(),
        tty,
    };
    let stdin = body.stdin;
    let who = c.hash();
    state
        .daemon
        .counters
        .execs
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if !q.wait {
        let keep_open = body.keep_stdin_open || tty.is_some();
        let started = blocking(move || -> Result<ExecStarted, Problem> {
            let log = live.exec_streamed_as(&req, Some(&who))?;
            if let Some(text) = stdin {
                let log = log.clone();
                // Written from its own thread: it waits for the agent's credit.
                std::thread::spawn(move || {
                    let _ = log.write_stdin(text.as_bytes(), !keep_open);
                });
            }
            Ok(ExecStarted { id: log.id })
        })
        .await??;
        return Ok((StatusCode::ACCEPTED, Json(started)).into_response());
    }
    let done = blocking(move || run_waiting_as(&live, &req, stdin, Some(&who)))
        .await?
        .map_err(|e| match e {
            WaitError::Sandbox(e) => Problem::from(e),
            WaitError::Limited(l) => Problem::limited(&l),
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

pub(super) fn streamed(live: &Live, eid: u64) -> Result<Arc<crate::streams::ExecLog>, Problem> {
    live.streamed(eid).ok_or_else(|| {
        Problem::new(StatusCode::NOT_FOUND, format!("no streamed exec {eid}"))
            .hint("start it with POST .../execs (without ?wait=true)")
    })
}

/// How output events carry their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum OutputEncoding {
    /// `{"text": ...}`: lossy UTF-8, for people and simple clients.
    #[default]
    Text,
    /// `{"base64": ...}`: the bytes exactly as the program wrote them.
    Base64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct EventsQuery {
    #[serde(default)]
    encoding: OutputEncoding,
    /// Destroy the sandbox when this stream is dropped before the exec's `exit` was sent.
    #[serde(default)]
    destroy_on_disconnect: bool,
}

/// Destroys a sandbox when the event stream holding it is dropped before its exec ended: the
/// client that asked for it with `destroyOnDisconnect=true` is gone (a `safe-run run --pool`
/// killed by SIGKILL), and the sandbox would otherwise wait for its idle timeout.
struct DestroyIfAbandoned {
    armed: Option<(Arc<Live>, Arc<crate::sandboxes::Daemon>)>,
}

impl DestroyIfAbandoned {
    /// The stream reached its end: nothing to do on drop.
    fn disarm(&mut self) {
        self.armed = None;
    }
}

impl Drop for DestroyIfAbandoned {
    fn drop(&mut self) {
        let Some((live, daemon)) = self.armed.take() else {
            return;
        };
        // Destroying waits for the sandbox's end and writes its report: off the runtime's
        // threads, as DELETE does.
        let destroy = move || {
            live.destroy(daemon.host.signer.as_ref());
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(destroy)),
            Err(_) => destroy(),
        }
    }
}

/// One event's `data`: an output chunk in `encoding`; anything else as the API names it.
fn event_data(e: &crate::streams::Sent, encoding: OutputEncoding) -> String {
    use crate::streams::Sent;
    use base64::Engine;
    match (e, encoding) {
        (Sent::Stdout { bytes } | Sent::Stderr { bytes }, OutputEncoding::Base64) => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
            serde_json::json!({ "base64": encoded }).to_string()
        }
        _ => serde_json::to_string(e).unwrap_or_default(),
    }
}

/// `GET .../execs/{eid}/events`: Server-Sent Events whose ids are stream offsets; resumes after
/// `Last-Event-ID`; ends after `exit`.
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/execs/{eid}/events",
    tag = "execs",
    summary = "Server-Sent Events of a streamed exec; ids are stream offsets",
    params(
        ("id" = String, Path, description = "The sandbox id"),
        ("eid" = u64, Path, description = "The streamed exec id"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this offset"),
        ("encoding" = Option<OutputEncoding>, Query, description = "How stdout and stderr events carry their bytes: `text` (lossy UTF-8, the default) or `base64` (exact)"),
        ("destroyOnDisconnect" = Option<bool>, Query, description = "Destroy the sandbox (with its report) when this stream is closed before `exit` was sent: for a client that uses the sandbox once (needs the right to destroy it)"),
    ),
    responses(
        (status = 200, description = "stdout, stderr, cut and exit events", body = crate::streams::Sent, content_type = "text/event-stream"),
        (status = "4XX", description = "Refused: the problem says why (SR code, hint); 429 carries Retry-After", body = crate::problem::Body, content_type = "application/problem+json"),
        (status = "5XX", description = "The daemon or the sandbox failed", body = crate::problem::Body, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn exec_events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, eid)): Path<(String, u64)>,
    Query(q): Query<EventsQuery>,
) -> Result<Response, Problem> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let encoding = q.encoding;
    let c = caller(&state, &headers)?;
    let scope = if q.destroy_on_disconnect {
        Scope::Create
    } else {
        Scope::Read
    };
    let live = reach(&state, &c, &id, scope)?;
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
    let abandoned = DestroyIfAbandoned {
        armed: q
            .destroy_on_disconnect
            .then(|| (live.clone(), state.daemon.clone())),
    };
    // The guard lives in the stream's state: dropped with the stream, it fires unless the
    // stream got to `exit` (or to the end of the exec's log) first.
    let stream = futures_util::stream::unfold(
        (
            log,
            rx,
            crate::streams::Cursor::after(resume),
            false,
            abandoned,
        ),
        move |(log, mut rx, mut cursor, done, mut abandoned)| async move {
            if done {
                return None;
            }
            loop {
                let (events, ended) = match log.next_batch(&mut cursor) {
                    Ok(x) => x,
                    Err(_) => {
                        abandoned.disarm();
                        return None;
                    }
                };
                if !events.is_empty() {
                    let mut out = Vec::new();
                    let mut finished = false;
                    for (off, e) in events {
                        finished |= matches!(e, crate::streams::Sent::Exit { .. });
                        let data = event_data(&e, encoding);
                        out.push(Ok::<_, std::convert::Infallible>(
                            Event::default()
                                .id(off.to_string())
                                .event(e.name())
                                .data(data),
                        ));
                    }
                    if finished {
                        abandoned.disarm();
                    }
                    let stream = futures_util::stream::iter(out);
                    return Some((stream, (log, rx, cursor, finished, abandoned)));
                }
                if ended || rx.changed().await.is_err() {
                    abandoned.disarm();
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
pub(super) struct StdinQuery {
    #[serde(default)]
    close: bool,
}

/// `POST .../execs/{eid}/stdin?close=true` (raw body).
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/execs/{eid}/stdin",
    tag = "execs",
    summary = "Write to the stdin of a streamed exec",
    params(
        ("id" = String, Path, description = "The sandbox id"),
        ("eid" = u64, Path, description = "The streamed exec id"),
        ("close" = Option<bool>, Query, description = "Then close it"),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 204, description = "Written"),
        (status = "4XX", description = "Refused: the problem says why (SR code, hint); 429 carries Retry-After", body = crate::problem::Body, content_type = "application/problem+json"),
        (status = "5XX", description = "The daemon or the sandbox failed", body = crate::problem::Body, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn exec_stdin(
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SignalBody {
    signal: i32,
}

/// `POST .../execs/{eid}/signal` `{"signal": 15}`.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/execs/{eid}/signal",
    tag = "execs",
    summary = "Signal the process group of a streamed exec",
    params(
        ("id" = String, Path, description = "The sandbox id"),
        ("eid" = u64, Path, description = "The streamed exec id"),
    ),
    request_body = SignalBody,
    responses(
        (status = 204, description = "Sent"),
        (status = "4XX", description = "Refused: the problem says why (SR code, hint); 429 carries Retry-After", body = crate::problem::Body, content_type = "application/problem+json"),
        (status = "5XX", description = "The daemon or the sandbox failed", body = crate::problem::Body, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn exec_signal(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, eid)): Path<(String, u64)>,
    body: Result<Json<SignalBody>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, Problem> {
    let c = caller(&state, &headers)?;
    let live = reach(&state, &c, &id, Scope::Create)?;
    let Json(body) = body.map_err(bad_json)?;
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

/// `POST .../execs/{eid}/resize` `{"rows": R, "cols": C}`: an exec with a PTY.
#[utoipa::path(
    post,
    path = "/v1/sandboxes/{id}/execs/{eid}/resize",
    tag = "execs",
    summary = "Resize the terminal of an exec with a pty",
    params(
        ("id" = String, Path, description = "The sandbox id"),
        ("eid" = u64, Path, description = "The streamed exec id"),
    ),
    request_body = TermSize,
    responses(
        (status = 204, description = "Resized"),
        (status = "4XX", description = "Refused: the problem says why (SR code, hint); 429 carries Retry-After", body = crate::problem::Body, content_type = "application/problem+json"),
        (status = "5XX", description = "The daemon or the sandbox failed", body = crate::problem::Body, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn exec_resize(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, eid)): Path<(String, u64)>,
    body: Result<Json<TermSize>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, Problem> {
    let c = caller(&state, &headers)?;
    let live = reach(&state, &c, &id, Scope::Create)?;
    let Json(body) = body.map_err(bad_json)?;
    let (rows, cols) = body.checked()?;
    let log = streamed(&live, eid)?;
    log.resize(rows, cols)
        .map_err(|e| Problem::new(StatusCode::CONFLICT, format!("resize: {e}")))?;
    Ok(StatusCode::NO_CONTENT)
}
