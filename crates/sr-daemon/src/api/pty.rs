//! `GET /v1/sandboxes/{id}/execs/{eid}/pty`: a WebSocket attached to a streamed exec (one
//! started with `pty` is the usual case: a terminal). The daemon sends the exec's output as
//! binary messages, exactly the bytes read (from `?after=OFFSET` in the replay buffer, else
//! from the start), a cut as a text message `{"event": "cut", ...}`, and the exit as a text
//! message `{"event": "exit", ...}` before it closes. The client sends keystrokes (stdin) as
//! binary messages, and control as text: `{"resize": {"rows": R, "cols": C}}`,
//! `{"signal": N}`, `{"eof": true}` (closes stdin). A control message it cannot read is
//! answered with `{"error": "..."}` and the session goes on.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;

use super::AppState;
use super::auth::{caller, reach};
use super::execs::{TermSize, streamed};
use crate::problem::Problem;
use crate::streams::{Cursor, ExecLog, Sent};
use crate::tokens::Scope;

/// The largest message a client may send (a paste of keystrokes, a control message).
const MAX_CLIENT_MESSAGE: usize = 1 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AttachQuery {
    /// Only output after this stream offset (a reattach).
    after: Option<u64>,
}

/// A control message from the client.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
enum Control {
    Resize(TermSize),
    Signal(i32),
    Eof(bool),
}

#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/execs/{eid}/pty",
    tag = "execs",
    summary = "A WebSocket to a streamed exec (a terminal): output out, keystrokes and control in",
    params(
        ("id" = String, Path, description = "The sandbox id"),
        ("eid" = u64, Path, description = "The streamed exec id"),
        ("after" = Option<u64>, Query, description = "Only output after this offset"),
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = "4XX", description = "Refused: the problem says why (SR code, hint); 429 carries Retry-After", body = crate::problem::Body, content_type = "application/problem+json"),
        (status = "5XX", description = "The daemon or the sandbox failed", body = crate::problem::Body, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn attach(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, eid)): Path<(String, u64)>,
    Query(q): Query<AttachQuery>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, Problem> {
    let c = caller(&state, &headers)?;
    // It writes to the exec's stdin: the scope of an exec, not of a read.
    let live = reach(&state, &c, &id, Scope::Create)?;
    let log = streamed(&live, eid)?;
    if let Err(g) = log.after(q.after) {
        return Err(Problem::new(
            StatusCode::GONE,
            format!("output before offset {} is no longer kept", g.first_kept),
        ));
    }
    let upgrade = upgrade.map_err(|e| {
        Problem::new(
            e.status(),
            format!("not a WebSocket request: {}", e.body_text()),
        )
        .hint("connect with a WebSocket client (Connection: upgrade, Upgrade: websocket)")
    })?;
    Ok(upgrade
        .max_message_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| session(socket, log, Cursor::after(q.after))))
}

fn control_text(value: serde_json::Value) -> Message {
    Message::Text(value.to_string().into())
}

async fn session(socket: WebSocket, log: Arc<ExecLog>, mut cursor: Cursor) {
    let (mut tx, mut rx) = socket.split();
    let mut changed = log.subscribe();
    loop {
        let Ok((events, _)) = log.next_batch(&mut cursor) else {
            return;
        };
        for (_, e) in events {
            let m = match &e {
                Sent::Stdout { bytes } | Sent::Stderr { bytes } => {
                    Message::Binary(bytes.clone().into())
                }
                Sent::Cut { .. } | Sent::Exit { .. } => {
                    control_text(serde_json::to_value(&e).unwrap_or_default())
                }
            };
            if tx.send(m).await.is_err() {
                return;
            }
            if matches!(e, Sent::Exit { .. }) {
                let _ = tx.send(Message::Close(None)).await;
                return;
            }
        }
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            m = rx.next() => match m {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(Message::Binary(b))) => {
                    let log = log.clone();
                    let wrote = tokio::task::spawn_blocking(move || log.write_stdin(&b, false)).await;
                    if !matches!(wrote, Ok(Ok(()))) {
                        let _ = tx.send(control_text(serde_json::json!({"error": "stdin is closed"}))).await;
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    if let Err(e) = control(&log, t.as_str()).await {
                        let _ = tx.send(control_text(serde_json::json!({"error": e}))).await;
                    }
                }
                Some(Ok(_)) => {}
            },
        }
    }
}

async fn control(log: &Arc<ExecLog>, text: &str) -> Result<(), String> {
    let c: Control = serde_json::from_str(text)
        .map_err(|e| format!("not a control message ({e}); send resize, signal or eof"))?;
    match c {
        Control::Resize(size) => {
            let (rows, cols) = size.checked().map_err(|p| p.body().detail.clone())?;
            log.resize(rows, cols).map_err(|e| format!("resize: {e}"))
        }
        Control::Signal(n) if (1..=64).contains(&n) => {
            log.signal(n).map_err(|e| format!("signal: {e}"))
        }
        Control::Signal(n) => Err(format!("{n} is not a signal number")),
        Control::Eof(true) => {
            let log = log.clone();
            tokio::task::spawn_blocking(move || log.write_stdin(&[], true))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("stdin: {e}"))
        }
        Control::Eof(false) => Ok(()),
    }
}
