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
#[derive(Debug, Deserialize)]
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

/// A terminal's size.
#[derive(Debug, Clone, Copy, Deserialize)]
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
        let started = blocking(move || -> Result<serde_json::Value, Problem> {
            let log = live.exec_streamed_as(&req, Some(&who))?;
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

/// `GET .../execs/{eid}/events`: Server-Sent Events whose ids are stream offsets; resumes after
/// `Last-Event-ID`; ends after `exit`.
pub(super) async fn exec_events(
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
        (log, rx, crate::streams::Cursor::after(resume), false),
        |(log, mut rx, mut cursor, done)| async move {
            if done {
                return None;
            }
            loop {
                let (events, ended) = match log.next_batch(&mut cursor) {
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
                    }
                    let stream = futures_util::stream::iter(out);
                    return Some((stream, (log, rx, cursor, finished)));
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
pub(super) struct StdinQuery {
    #[serde(default)]
    close: bool,
}

/// `POST .../execs/{eid}/stdin?close=true` (raw body).
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SignalBody {
    signal: i32,
}

/// `POST .../execs/{eid}/signal` `{"signal": 15}`.
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
