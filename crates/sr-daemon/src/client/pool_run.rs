//! One run in a sandbox of a running daemon's warm pool (`safe-run run --pool TEMPLATE`): take
//! a ready sandbox of the template (the daemon makes one when none is ready), run one streamed
//! exec in it with this process's stdin and output, then destroy it, which writes its signed
//! report. The sandbox is never used again. Every path after the take destroys it: the exec's
//! end, a broken stream, an error, and an interrupt (which [`run`] is given as a future).

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use hyper::Method;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{Body, ClientError, Connection};

/// What to run, and where. Not `Debug`: it holds the token, which is never printed.
#[derive(Clone)]
pub struct PoolRunRequest {
    /// The daemon's socket.
    pub socket: PathBuf,
    /// An operator token with the create scope.
    pub token: String,
    /// The template whose pool to take from.
    pub template: String,
    /// Program (absolute) and arguments.
    pub argv: Vec<String>,
}

/// How the exec ended, as the daemon's stream said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEnd {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled(i32),
    /// It could not start (the daemon's reason).
    Failed(String),
    /// It ended with its sandbox (the sandbox's own timeout, a kill), or the stream ended
    /// without an end.
    Lost,
    /// This process was interrupted by this signal; the sandbox was destroyed.
    Interrupted(i32),
}

/// What one pool run did.
#[derive(Debug, Clone)]
pub struct PoolRunOutcome {
    /// The sandbox (and run) id.
    pub sandbox_id: String,
    /// Whether it came ready from the pool (else the daemon made it for this request).
    pub from_pool: bool,
    /// How the exec ended.
    pub end: ExecEnd,
    /// How long the exec ran, by the daemon's clock.
    pub duration_ms: u64,
    /// Output streams that passed the policy's limit (`stdout`, `stderr`).
    pub cut: Vec<String>,
    /// How the sandbox ended (`destroyed`, `timeout`, ...).
    pub sandbox_ended: Option<String>,
    /// The signed report, when the daemon wrote it.
    pub report_path: Option<PathBuf>,
    /// Why destroying the sandbox failed, when it did (the run's own end is still known).
    pub destroy_error: Option<ClientError>,
    /// Where the time went, by this process's clock: `pool.take` (connect and take the
    /// sandbox), `pool.exec` (start the exec, stream it to its end), `pool.destroy` (destroy
    /// it; the daemon writes the report before it answers).
    pub phases: Vec<(&'static str, std::time::Duration)>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody<'a> {
    template: &'a str,
    /// A client killed before its exec starts leaves the sandbox to the daemon for this long
    /// at most (after the exec starts, the events stream's `destroyOnDisconnect` covers it).
    unused_timeout_ms: u64,
}

/// How long a taken sandbox may wait for the exec that this client starts right away.
const UNUSED_TIMEOUT_MS: u64 = 15_000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    id: String,
    token: String,
    #[serde(default)]
    from_pool: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExecBody<'a> {
    argv: &'a [String],
    /// `Some("")` gives the exec a stdin pipe, kept open for the copy.
    #[serde(skip_serializing_if = "Option::is_none")]
    stdin: Option<&'a str>,
    keep_stdin_open: bool,
}

#[derive(Deserialize)]
struct ExecStarted {
    id: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExitEvent {
    status: String,
    exit_code: Option<i32>,
    signal: Option<i32>,
    error: Option<String>,
    #[serde(default)]
    duration_ms: u64,
}

#[derive(Deserialize)]
struct OutputEvent {
    base64: String,
}

#[derive(Deserialize)]
struct CutEvent {
    stream: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ended {
    ended: Option<String>,
    report_path: Option<PathBuf>,
}

/// Where the exec's output goes.
pub struct Output<'a> {
    /// Its stdout.
    pub stdout: &'a mut (dyn Write + Send),
    /// Its stderr.
    pub stderr: &'a mut (dyn Write + Send),
}

/// Runs `req` once. `stdin` (when given) is copied into the exec until it ends; `interrupt`
/// resolves to a signal number when this process is asked to stop. Errors before the sandbox
/// exists are returned as they are; after, the sandbox is destroyed first.
pub async fn run<R, I>(
    req: &PoolRunRequest,
    out: Output<'_>,
    stdin: Option<R>,
    interrupt: I,
) -> Result<PoolRunOutcome, ClientError>
where
    R: AsyncRead + Unpin + Send + 'static,
    I: Future<Output = i32>,
{
    let mut clock = std::time::Instant::now();
    let mut phases = Vec::new();
    let mut lap = |name: &'static str| {
        let now = std::time::Instant::now();
        phases.push((name, now - clock));
        clock = now;
    };
    let mut conn = Connection::open(&req.socket).await?;
    let created: Created = conn
        .json(
            Method::POST,
            "/v1/sandboxes",
            &req.token,
            Body::json(&CreateBody {
                template: &req.template,
                unused_timeout_ms: UNUSED_TIMEOUT_MS,
            }),
        )
        .await?;
    let sandbox = Sandbox {
        socket: &req.socket,
        id: &created.id,
        token: &created.token,
    };
    lap("pool.take");
    let driven = drive(&mut conn, &sandbox, &req.argv, out, stdin, interrupt).await;
    lap("pool.exec");
    // The stream's connection is reusable only when its answer was read to the end.
    let reusable = matches!(&driven, Ok(d) if d.stream_finished);
    let destroyed = sandbox
        .destroy(if reusable { Some(&mut conn) } else { None })
        .await;
    lap("pool.destroy");
    let driven = driven?;
    let (sandbox_ended, report_path, destroy_error) = match destroyed {
        Ok(e) => (e.ended, e.report_path, None),
        Err(e) => (None, None, Some(e)),
    };
    Ok(PoolRunOutcome {
        sandbox_id: created.id,
        from_pool: created.from_pool,
        end: driven.end,
        duration_ms: driven.duration_ms,
        cut: driven.cut,
        sandbox_ended,
        report_path,
        destroy_error,
        phases,
    })
}

/// The sandbox a run took, and how to reach it.
struct Sandbox<'a> {
    socket: &'a Path,
    id: &'a str,
    token: &'a str,
}

impl Sandbox<'_> {
    fn path(&self, rest: &str) -> String {
        format!("/v1/sandboxes/{}{rest}", self.id)
    }

    /// Destroys it (its report is written before the answer), on `conn` or a new connection.
    async fn destroy(&self, conn: Option<&mut Connection>) -> Result<Ended, ClientError> {
        let mut fresh;
        let conn = match conn {
            Some(c) => c,
            None => {
                fresh = Connection::open(self.socket).await?;
                &mut fresh
            }
        };
        conn.json(Method::DELETE, &self.path(""), self.token, Body::Empty)
            .await
    }
}

struct Driven {
    end: ExecEnd,
    duration_ms: u64,
    cut: Vec<String>,
    stream_finished: bool,
}

async fn drive<R, I>(
    conn: &mut Connection,
    sandbox: &Sandbox<'_>,
    argv: &[String],
    out: Output<'_>,
    stdin: Option<R>,
    interrupt: I,
) -> Result<Driven, ClientError>
where
    R: AsyncRead + Unpin + Send + 'static,
    I: Future<Output = i32>,
{
    let started: ExecStarted = conn
        .json(
            Method::POST,
            &sandbox.path("/execs"),
            sandbox.token,
            Body::json(&ExecBody {
                argv,
                stdin: stdin.is_some().then_some(""),
                keep_stdin_open: stdin.is_some(),
            }),
        )
        .await?;
    let exec_path = sandbox.path(&format!("/execs/{}", started.id));
    // Stopped on every way out of here (the exec's end, an error, an interrupt).
    let _pump = stdin.map(|input| {
        AbortOnDrop(tokio::spawn(copy_stdin(
            sandbox.socket.to_owned(),
            sandbox.token.to_owned(),
            format!("{exec_path}/stdin"),
            input,
        )))
    });
    let body = conn
        .stream(
            // Killed without a chance to destroy the sandbox (SIGKILL), this process leaves it
            // to the daemon, which destroys it when this stream closes before `exit`.
            &format!("{exec_path}/events?encoding=base64&destroyOnDisconnect=true"),
            sandbox.token,
        )
        .await?;
    let mut events = sse_stream::SseStream::new(body);
    let mut driven = Driven {
        end: ExecEnd::Lost,
        duration_ms: 0,
        cut: Vec::new(),
        stream_finished: false,
    };
    tokio::pin!(interrupt);
    let what = || format!("GET {exec_path}/events");
    loop {
        let event = tokio::select! {
            signal = &mut interrupt => {
                driven.end = ExecEnd::Interrupted(signal);
                break;
            }
            e = events.next() => e,
        };
        let Some(event) = event else {
            driven.stream_finished = true;
            break;
        };
        let event = event.map_err(|e| ClientError::Broken {
            what: what(),
            reason: e.to_string(),
        })?;
        let data = event.data.unwrap_or_default();
        let unreadable = |e: &dyn std::fmt::Display| ClientError::Unreadable {
            what: what(),
            reason: e.to_string(),
        };
        match event.event.as_deref() {
            Some(stream @ ("stdout" | "stderr")) => {
                let chunk: OutputEvent = serde_json::from_str(&data).map_err(|e| unreadable(&e))?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(chunk.base64)
                    .map_err(|e| unreadable(&e))?;
                let sink = match stream {
                    "stdout" => &mut *out.stdout,
                    _ => &mut *out.stderr,
                };
                // A closed stdout (a pipe's reader gone) only stops the copy, as for a cold run.
                let _ = sink.write_all(&bytes).and_then(|()| sink.flush());
            }
            Some("cut") => {
                let cut: CutEvent = serde_json::from_str(&data).map_err(|e| unreadable(&e))?;
                driven.cut.push(cut.stream);
            }
            Some("exit") => {
                let exit: ExitEvent = serde_json::from_str(&data).map_err(|e| unreadable(&e))?;
                driven.duration_ms = exit.duration_ms;
                driven.end = exec_end(exit);
            }
            _ => {}
        }
    }
    Ok(driven)
}

/// A task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn exec_end(exit: ExitEvent) -> ExecEnd {
    match (exit.status.as_str(), exit.exit_code, exit.signal) {
        ("exited", Some(code), _) => ExecEnd::Exited(code),
        ("signaled", _, Some(signal)) => ExecEnd::Signaled(signal),
        ("failed", _, _) => ExecEnd::Failed(exit.error.unwrap_or_default()),
        _ => ExecEnd::Lost,
    }
}

/// The chunk size of stdin writes.
const STDIN_CHUNK: usize = 64 << 10;

/// Copies `input` into the exec's stdin on a connection of its own, then closes it. It stops
/// quietly when the exec has ended (its stdin refuses writes).
async fn copy_stdin<R: AsyncRead + Unpin>(
    socket: PathBuf,
    token: String,
    path: String,
    mut input: R,
) {
    let Ok(mut conn) = Connection::open(&socket).await else {
        return;
    };
    let mut buf = vec![0u8; STDIN_CHUNK];
    loop {
        let n = input.read(&mut buf).await.unwrap_or(0);
        let (target, body) = match n {
            0 => (format!("{path}?close=true"), Bytes::new()),
            n => (path.clone(), Bytes::copy_from_slice(&buf[..n])),
        };
        if conn
            .call(Method::POST, &target, &token, Body::Raw(body))
            .await
            .is_err()
            || n == 0
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(status: &str, code: Option<i32>, signal: Option<i32>) -> ExitEvent {
        ExitEvent {
            status: status.into(),
            exit_code: code,
            signal,
            error: Some("no such program".into()),
            duration_ms: 1,
        }
    }

    #[test]
    fn the_streams_exit_names_how_the_exec_ended() {
        assert_eq!(exec_end(exit("exited", Some(3), None)), ExecEnd::Exited(3));
        assert_eq!(
            exec_end(exit("signaled", None, Some(9))),
            ExecEnd::Signaled(9)
        );
        assert_eq!(
            exec_end(exit("failed", None, None)),
            ExecEnd::Failed("no such program".into())
        );
        assert_eq!(exec_end(exit("lost", None, None)), ExecEnd::Lost);
        // A shape the client does not know is not taken for success.
        assert_eq!(exec_end(exit("exited", None, None)), ExecEnd::Lost);
    }
}
