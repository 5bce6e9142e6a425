//! A client of a running `safe-run serve` on its Unix socket, for `safe-run run --pool`
//! ([`pool_run`]): hyper's HTTP/1.1 client over a tokio Unix stream. One [`Connection`] carries
//! one request at a time; a caller that needs two at once (a stream and stdin) opens two.
//! Answers are read into this module's own types; a refusal keeps the problem's SR code, path
//! and hint, so the caller's error says what the daemon said.

pub mod pool_run;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, Response, header};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sr_common::{Diagnostic, ErrorCode};

/// The largest JSON answer read (a sandbox's view, a problem); a stream is read as it comes.
const MAX_ANSWER_BYTES: usize = 4 << 20;

/// Why a request to the daemon did not give an answer the caller can use.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers on the socket.
    #[error("cannot reach safe-run serve at {}: {reason}", socket.display())]
    Unreachable {
        /// The socket.
        socket: PathBuf,
        /// The connect error.
        reason: String,
    },
    /// The connection broke mid-request.
    #[error("the connection to safe-run serve broke during {what}: {reason}")]
    Broken {
        /// Which request.
        what: String,
        /// Why.
        reason: String,
    },
    /// The daemon refused (its problem document, read).
    #[error("safe-run serve refused {what} ({status}): {detail}")]
    Refused {
        /// Which request.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The problem's SR code.
        code: Option<ErrorCode>,
        /// The policy path or phase it names.
        path: Option<String>,
        /// What happened.
        detail: String,
        /// What to do.
        hint: Option<String>,
    },
    /// An answer that does not have the shape this client reads.
    #[error("safe-run serve answered {what} with something this client cannot read: {reason}")]
    Unreadable {
        /// Which request.
        what: String,
        /// Why.
        reason: String,
    },
}

impl ClientError {
    /// The error as a diagnostic: a refusal keeps the daemon's code (a policy error stays
    /// SR-POL-..., a full daemon SR-SRV-002); not reaching the daemon is a preflight failure
    /// (SR-RUN-001), as a host that cannot run a sandbox is for a cold run.
    pub fn to_diagnostic(&self) -> Diagnostic {
        let message = self.to_string();
        match self {
            ClientError::Unreachable { .. } => Diagnostic::new(
                ErrorCode::RunPreflight,
                "run.pool",
                message,
                "start `safe-run serve` (or give its socket with --socket or $SAFE_RUN_SOCKET), or run without --pool",
            ),
            ClientError::Broken { .. } | ClientError::Unreadable { .. } => Diagnostic::new(
                ErrorCode::ServeInternal,
                "run.pool",
                message,
                "check that safe-run serve is running and of the same version as this client",
            ),
            ClientError::Refused {
                status,
                code,
                path,
                hint,
                ..
            } => {
                // The daemon's hints speak HTTP; a refused token is the caller's environment.
                let hint = match status {
                    401 | 403 => "give an operator token with the create scope in $SAFE_RUN_TOKEN (safe-run token create --scopes create)".to_owned(),
                    _ => hint.clone().unwrap_or_else(|| "see the daemon's answer above".into()),
                };
                Diagnostic::new(
                    code.unwrap_or(ErrorCode::ServeRequest),
                    path.clone().unwrap_or_else(|| "run.pool".into()),
                    message,
                    hint,
                )
            }
        }
    }
}

/// A problem document as the daemon sends it (the fields read here).
#[derive(serde::Deserialize)]
struct ProblemBody {
    detail: String,
    code: Option<String>,
    path: Option<String>,
    hint: Option<String>,
}

/// One HTTP/1.1 connection to the daemon.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    /// Connects to the daemon's Unix socket; the connection's driver runs as a task of the
    /// current runtime.
    pub async fn open(socket: &Path) -> Result<Connection, ClientError> {
        let unreachable = |reason: String| ClientError::Unreachable {
            socket: socket.to_owned(),
            reason,
        };
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Connection { sender })
    }

    /// Sends one request; `body` goes as JSON, `raw` as bytes.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        token: &str,
        body: Body,
    ) -> Result<Response<Incoming>, ClientError> {
        let broken = |reason: String| ClientError::Broken {
            what: format!("{method} {path}"),
            reason,
        };
        let (content_type, bytes) = match body {
            Body::Empty => (None, Bytes::new()),
            Body::Json(b) => (Some("application/json"), b),
            Body::Raw(b) => (Some("application/octet-stream"), b),
        };
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, "localhost")
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let req = req
            .body(Full::new(bytes))
            .map_err(|e| broken(e.to_string()))?;
        self.sender
            .ready()
            .await
            .map_err(|e| broken(e.to_string()))?;
        self.sender
            .send_request(req)
            .await
            .map_err(|e| broken(e.to_string()))
    }

    /// Sends a request and reads a JSON answer into `T`; a status that is not 2xx is read as
    /// the daemon's problem.
    pub async fn json<T: DeserializeOwned>(
        &mut self,
        method: Method,
        path: &str,
        token: &str,
        body: Body,
    ) -> Result<T, ClientError> {
        let (what, bytes) = self.answer(method, path, token, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Unreadable {
            what,
            reason: e.to_string(),
        })
    }

    /// Sends a request whose answer has no body the caller needs (204).
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        token: &str,
        body: Body,
    ) -> Result<(), ClientError> {
        self.answer(method, path, token, body).await.map(|_| ())
    }

    /// Sends a request and reads its whole answer: (what was asked, the body) when the status
    /// is 2xx, else the daemon's problem.
    async fn answer(
        &mut self,
        method: Method,
        path: &str,
        token: &str,
        body: Body,
    ) -> Result<(String, Bytes), ClientError> {
        let (what, answer) = self.accepted(method, path, token, body).await?;
        let bytes = read_limited(answer, &what).await?;
        Ok((what, bytes))
    }

    /// Opens a streamed answer (Server-Sent Events): its body, once the status is 2xx.
    pub async fn stream(&mut self, path: &str, token: &str) -> Result<Incoming, ClientError> {
        let (_, answer) = self.accepted(Method::GET, path, token, Body::Empty).await?;
        Ok(answer.into_body())
    }

    /// Sends a request: (what was asked, the answer) when its status is 2xx, else the
    /// daemon's problem, read.
    async fn accepted(
        &mut self,
        method: Method,
        path: &str,
        token: &str,
        body: Body,
    ) -> Result<(String, Response<Incoming>), ClientError> {
        let what = format!("{method} {path}");
        let answer = self.send(method, path, token, body).await?;
        let status = answer.status();
        if status.is_success() {
            return Ok((what, answer));
        }
        let bytes = read_limited(answer, &what).await?;
        Err(refusal(&what, status.as_u16(), &bytes))
    }
}

/// A request's body.
pub enum Body {
    /// None.
    Empty,
    /// JSON (already encoded).
    Json(Bytes),
    /// Bytes as they are.
    Raw(Bytes),
}

impl Body {
    /// `value` as JSON.
    pub fn json(value: &impl Serialize) -> Body {
        // The request types here always encode; an empty body would be refused as malformed.
        Body::Json(serde_json::to_vec(value).unwrap_or_default().into())
    }
}

async fn read_limited(answer: Response<Incoming>, what: &str) -> Result<Bytes, ClientError> {
    Limited::new(answer.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| ClientError::Broken {
            what: what.to_owned(),
            reason: e.to_string(),
        })
}

fn refusal(what: &str, status: u16, bytes: &[u8]) -> ClientError {
    match serde_json::from_slice::<ProblemBody>(bytes) {
        Ok(p) => ClientError::Refused {
            what: what.to_owned(),
            status,
            code: p.code.as_deref().and_then(ErrorCode::parse),
            path: p.path,
            detail: p.detail,
            hint: p.hint,
        },
        Err(_) => ClientError::Refused {
            what: what.to_owned(),
            status,
            code: None,
            path: None,
            detail: String::from_utf8_lossy(bytes).chars().take(200).collect(),
            hint: None,
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_refusal_keeps_the_daemons_code_path_and_hint() {
        let body = br#"{"type":"about:blank","title":"Not Found","status":404,"detail":"no template \"x\"","code":"SR-POL-004","path":"template","hint":"name one of serve.templates"}"#;
        let d = refusal("POST /v1/sandboxes", 404, body).to_diagnostic();
        assert_eq!(d.code, ErrorCode::PolicyUnreadable);
        assert_eq!(d.path, "template");
        assert_eq!(d.hint, "name one of serve.templates");
        assert!(d.message.contains("no template"), "{}", d.message);
    }

    #[test]
    fn an_answer_that_is_not_a_problem_is_still_a_refusal_with_a_hint() {
        let d = refusal("GET /x", 401, b"<html>nope</html>").to_diagnostic();
        assert_eq!(d.code, ErrorCode::ServeRequest);
        assert!(d.hint.contains("SAFE_RUN_TOKEN"), "{}", d.hint);
        let far = ClientError::Unreachable {
            socket: "/nowhere.sock".into(),
            reason: "No such file or directory".into(),
        }
        .to_diagnostic();
        assert_eq!(far.code, ErrorCode::RunPreflight);
        assert!(far.message.contains("/nowhere.sock"));
    }
}
