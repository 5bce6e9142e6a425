//! An exec run to its end, for the answers that wait (`?wait=true`, the stdio mode): stdin
//! given up front is written from its own thread (the exec's output keeps flowing meanwhile),
//! output is gathered up to the policy's limit, and the end comes back as one value.

use serde::Serialize;
use sr_common::Diagnostic;
use sr_runner::life::{ExecEnd, ExecEvent, ExecRequest, SandboxError};

use crate::limits::Limited;
use crate::sandboxes::{ExecError, Live};
use crate::tokens::TokenHash;

/// How a waited-for exec ended and what it printed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecDone {
    /// The exec's id.
    pub id: u64,
    /// `exited`, `signaled`, `timedOut`, `lost`.
    #[schema(value_type = String)]
    pub status: &'static str,
    /// Its exit code.
    pub exit_code: Option<i32>,
    /// The signal that killed it.
    pub signal: Option<i32>,
    /// Its stdout (lossy UTF-8).
    pub stdout: String,
    /// Its stderr (lossy UTF-8).
    pub stderr: String,
    /// Whether output passed the policy's limit (the rest was dropped).
    pub truncated: bool,
    /// How long it ran.
    pub duration_ms: u64,
}

/// Why a waited-for exec has no end to tell.
#[derive(Debug)]
pub enum WaitError {
    /// The sandbox refused it (it has ended, a bad request).
    Sandbox(SandboxError),
    /// A limit is full.
    Limited(Limited),
    /// The program could not start (a missing program, a bad cwd).
    Failed(Diagnostic),
    /// The sandbox ended while it ran.
    Ended,
}

impl From<SandboxError> for WaitError {
    fn from(e: SandboxError) -> Self {
        WaitError::Sandbox(e)
    }
}

impl From<ExecError> for WaitError {
    fn from(e: ExecError) -> Self {
        match e {
            ExecError::Sandbox(e) => WaitError::Sandbox(e),
            ExecError::Limited(l) => WaitError::Limited(l),
        }
    }
}

/// Runs `req` in `live` to its end, with `stdin` as its input when given.
pub fn run_waiting(
    live: &Live,
    req: &ExecRequest,
    stdin: Option<String>,
) -> Result<ExecDone, WaitError> {
    run_waiting_as(live, req, stdin, None)
}

/// [`run_waiting`] for `who` (counted against its exec limit).
pub fn run_waiting_as(
    live: &Live,
    req: &ExecRequest,
    stdin: Option<String>,
    who: Option<&TokenHash>,
) -> Result<ExecDone, WaitError> {
    let (mut handle, _running) = live.exec_as(req, who)?;
    if let (Some(text), Some(mut w)) = (stdin, handle.stdin()) {
        std::thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut w, text.as_bytes());
            let _ = w.close();
        });
    }
    let (mut out, mut err, mut truncated) = (Vec::new(), Vec::new(), false);
    loop {
        match handle.next_event() {
            Some(ExecEvent::Stdout(b)) => out.extend(b),
            Some(ExecEvent::Stderr(b)) => err.extend(b),
            Some(ExecEvent::Cut(_)) => truncated = true,
            Some(ExecEvent::Started(_)) => {}
            Some(ExecEvent::Exit(r)) => {
                let (status, exit_code, signal) = match r.end {
                    ExecEnd::Exited(c) => ("exited", Some(c), None),
                    ExecEnd::Signaled(s) => ("signaled", None, Some(s)),
                    ExecEnd::TimedOut => ("timedOut", None, None),
                    ExecEnd::Failed(d) => return Err(WaitError::Failed(d)),
                    ExecEnd::Lost => ("lost", None, None),
                };
                return Ok(ExecDone {
                    id: r.id,
                    status,
                    exit_code,
                    signal,
                    stdout: String::from_utf8_lossy(&out).into_owned(),
                    stderr: String::from_utf8_lossy(&err).into_owned(),
                    truncated,
                    duration_ms: r.duration_ms,
                });
            }
            None => return Err(WaitError::Ended),
        }
    }
}
