//! One exec in a live sandbox: the request, the handle (events, stdin, signal, resize, wait)
//! and its evidence (`exec.started` with the argv digest, `exec.exited` with the status and
//! the digests of what went in and came out).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use sr_agent_proto::message::{
    EnvVar, Exec, ExecUser, ExitStatus, IdOnly, Resize, Signal, StdinMode, TtySize,
};
use sr_agent_proto::{Message, Stream};
use sr_common::Diagnostic;
use sr_evidence::activity::{
    ExecExited, ExecStarted, ExecStatus, StdinMode as StdinSource, StreamDigest, argv_digest,
};
use sr_evidence::events;

use super::conn::{AgentConn, Credit, ExecRoute, Routed, Tally};
use super::error::{Kind, SandboxError};
use super::evidence::Emit;
use crate::outcome::StreamFacts;

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    /// Program (absolute path inside the sandbox) and arguments.
    pub argv: Vec<String>,
    /// Variables added to (or replacing) the policy's environment.
    pub env: BTreeMap<String, String>,
    /// Working directory (default: the policy's `runtime.cwd`).
    pub cwd: Option<String>,
    /// Kills this exec's process tree when it passes (the sandbox's own timeout still holds).
    pub timeout: Option<Duration>,
    /// Whether the exec reads a stdin the caller writes ([`ExecHandle::stdin`]); otherwise
    /// /dev/null.
    pub stdin: bool,
    /// A terminal of this size (rows, cols) instead of pipes: stdout carries both streams.
    pub tty: Option<(u16, u16)>,
}

impl ExecRequest {
    /// Whether the exec reads what the caller writes (asked for, or typed on its terminal).
    pub fn reads_stdin(&self) -> bool {
        self.stdin || self.tty.is_some()
    }
}

/// How an exec ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecEnd {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled(i32),
    /// Its own timeout passed and its tree was killed.
    TimedOut,
    /// It never started (no such program, bad cwd, refused request).
    Failed(Diagnostic),
    /// The sandbox went away before the exec's end was reported.
    Lost,
}

/// An ended exec.
#[derive(Debug, Clone)]
pub struct ExecResult {
    /// The exec's id in the sandbox.
    pub id: u64,
    /// How it ended.
    pub end: ExecEnd,
    /// How long it ran (agent's clock).
    pub duration_ms: u64,
    /// Its stdout as kept (path empty: the consumer decides where bytes go).
    pub stdout: StreamFacts,
    /// Its stderr as kept.
    pub stderr: StreamFacts,
    /// Bytes and digest of what its stdin was given, when it had one.
    pub stdin: Option<(u64, String)>,
}

/// One event of an exec, in order.
#[derive(Debug)]
pub enum ExecEvent {
    /// The exec runs (first event, unless it failed to start): its pid and confinement.
    Started(sr_agent_proto::message::Started),
    /// Output on stdout (with a terminal: everything the terminal shows).
    Stdout(Vec<u8>),
    /// Output on stderr.
    Stderr(Vec<u8>),
    /// The stream passed the output limit: the rest of it is dropped.
    Cut(&'static str),
    /// The exec ended (last event).
    Exit(Box<ExecResult>),
}

#[derive(Default)]
struct StdinTally {
    bytes: u64,
    hasher: Sha256,
}

/// A handle to a running exec. Events must be consumed ([`ExecHandle::next_event`] or
/// [`ExecHandle::wait`]): an exec whose events pile up eventually pauses the sandbox's
/// connection.
pub struct ExecHandle {
    id: u64,
    route: ExecRoute,
    conn: Arc<AgentConn>,
    evidence: Arc<dyn Emit>,
    limit: u64,
    stdin: Option<Arc<Mutex<StdinTally>>>,
    ended: bool,
    /// The `exec.started` payload, completed with the pid when the agent says it started.
    announce: ExecStarted,
    /// An event to return before reading the next one.
    queued: Option<ExecEvent>,
}

fn facts(t: &Tally, limit: u64) -> StreamFacts {
    StreamFacts {
        path: Default::default(),
        size: t.kept(),
        sha256: t.digest(),
        seen: t.seen(),
        truncated: t.truncated(),
        limit_bytes: limit,
    }
}

/// A typed payload as the sink takes it.
pub(crate) fn to_payload<T: serde::Serialize>(p: &T) -> serde_json::Value {
    serde_json::to_value(p).unwrap_or(serde_json::Value::Null)
}

impl ExecHandle {
    /// Sends `req` as exec `id` (the route was registered first, so no frame is missed).
    pub(crate) fn start(
        id: u64,
        req: &ExecRequest,
        conn: Arc<AgentConn>,
        evidence: Arc<dyn Emit>,
        limit: u64,
    ) -> Result<Self, SandboxError> {
        let lost = |why: String| SandboxError::new(Kind::Gone, "exec.start", why);
        let route = conn
            .route(id, limit)
            .ok_or_else(|| lost("the sandbox's agent connection is closed".into()))?;
        let msg = Message::Exec(Exec {
            id,
            argv: req.argv.clone(),
            env: req
                .env
                .iter()
                .map(|(name, value)| EnvVar {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            cwd: req.cwd.clone(),
            timeout_ms: req
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            stdin: if req.reads_stdin() {
                StdinMode::Pipe
            } else {
                StdinMode::None
            },
            tty: req.tty.map(|(rows, cols)| TtySize { rows, cols }),
            user: ExecUser::default(),
        });
        conn.send(&msg).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidInput => SandboxError::new(
                crate::life::SandboxErrorKind::Invalid,
                "exec.start",
                e.to_string(),
            ),
            _ => lost(format!("sending the exec: {e}")),
        })?;
        let announce = ExecStarted {
            exec_id: id,
            argv: req.argv.clone(),
            argv_digest: argv_digest(&req.argv),
            cwd: req.cwd.clone(),
            tty: req.tty.is_some(),
            stdin: if req.reads_stdin() {
                StdinSource::Pipe
            } else {
                StdinSource::None
            },
            pid: 0,
        };
        Ok(ExecHandle {
            id,
            route,
            conn,
            evidence,
            limit,
            stdin: req
                .reads_stdin()
                .then(|| Arc::new(Mutex::new(StdinTally::default()))),
            ended: false,
            announce,
            queued: None,
        })
    }

    /// The exec's id in its sandbox.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// A writer into the exec's stdin (`None` when it was not asked for). Writes wait for the
    /// agent's credit, so memory stays bounded whatever the size of the input.
    pub fn stdin(&self) -> Option<StdinWriter> {
        let tally = self.stdin.clone()?;
        Some(StdinWriter {
            id: self.id,
            conn: self.conn.clone(),
            credit: self.route.credit.clone(),
            tally,
            closed: false,
        })
    }

    /// A handle that signals and resizes the exec from another thread.
    pub fn control(&self) -> ExecControl {
        ExecControl {
            id: self.id,
            conn: self.conn.clone(),
        }
    }

    /// Sends `signal` to the exec's process group.
    pub fn signal(&self, signal: i32) -> std::io::Result<()> {
        self.control().signal(signal)
    }

    /// Tells the exec's terminal its new size.
    pub fn resize(&self, rows: u16, cols: u16) -> std::io::Result<()> {
        self.control().resize(rows, cols)
    }

    /// The next event, waiting for it; `None` once the exit was returned.
    pub fn next_event(&mut self) -> Option<ExecEvent> {
        if let Some(e) = self.queued.take() {
            return Some(e);
        }
        if self.ended {
            return None;
        }
        let routed =
            self.route.events.recv().unwrap_or_else(|_| {
                Routed::Lost([Tally::empty(self.limit), Tally::empty(self.limit)])
            });
        let event = match routed {
            Routed::Started(s) => {
                self.announce.pid = s.pid;
                self.evidence
                    .emit(events::EXEC_STARTED, to_payload(&self.announce));
                ExecEvent::Started(s)
            }
            Routed::Output {
                stream,
                bytes,
                crossed,
            } => {
                let name = if stream == Stream::Stderr {
                    "stderr"
                } else {
                    "stdout"
                };
                match (crossed, bytes.is_empty()) {
                    (false, _) => self.output(stream, bytes),
                    (true, true) => ExecEvent::Cut(name),
                    // The chunk's kept part first, then the cut.
                    (true, false) => {
                        self.queued = Some(ExecEvent::Cut(name));
                        self.output(stream, bytes)
                    }
                }
            }
            Routed::Exit(exit, tallies) => {
                let end = match (exit.timed_out, exit.status) {
                    (true, _) => ExecEnd::TimedOut,
                    (false, ExitStatus::Code(c)) => ExecEnd::Exited(c),
                    (false, ExitStatus::Signal(s)) => ExecEnd::Signaled(s),
                };
                ExecEvent::Exit(Box::new(self.finish(end, exit.duration_ms, &tallies)))
            }
            Routed::Failed(err) => {
                let phase = err.phase.clone().unwrap_or_else(|| "exec.start".into());
                let d = crate::sandbox::launch::launch_diag(&phase, err.errno, &err.message);
                let empty = [Tally::empty(self.limit), Tally::empty(self.limit)];
                ExecEvent::Exit(Box::new(self.finish(ExecEnd::Failed(d), 0, &empty)))
            }
            Routed::Lost(tallies) => {
                ExecEvent::Exit(Box::new(self.finish(ExecEnd::Lost, 0, &tallies)))
            }
        };
        Some(event)
    }

    fn output(&self, stream: Stream, bytes: Vec<u8>) -> ExecEvent {
        if stream == Stream::Stderr {
            ExecEvent::Stderr(bytes)
        } else {
            ExecEvent::Stdout(bytes)
        }
    }

    fn finish(&mut self, end: ExecEnd, duration_ms: u64, tallies: &[Tally; 2]) -> ExecResult {
        self.ended = true;
        let stdin = self.stdin.as_ref().map(|t| {
            let t = t.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            (
                t.bytes,
                format!("sha256:{}", hex::encode(t.hasher.clone().finalize())),
            )
        });
        let result = ExecResult {
            id: self.id,
            end,
            duration_ms,
            stdout: facts(&tallies[0], self.limit),
            stderr: facts(&tallies[1], self.limit),
            stdin,
        };
        let status = match &result.end {
            ExecEnd::Exited(code) => ExecStatus::Exited { code: *code },
            ExecEnd::Signaled(signal) => ExecStatus::Signaled { signal: *signal },
            ExecEnd::TimedOut => ExecStatus::TimedOut,
            ExecEnd::Failed(d) => ExecStatus::Failed {
                code: d.code.to_string(),
                phase: d.path.clone(),
            },
            ExecEnd::Lost => ExecStatus::Lost,
        };
        let stream = |f: &StreamFacts| StreamDigest {
            bytes: f.size,
            sha256: f.sha256.clone(),
            truncated: f.truncated,
        };
        // An exec with no `exec.started` says its argv at its end, so the report still lists it.
        let announced = self.announce.pid != 0;
        let exited = ExecExited {
            exec_id: self.id,
            argv: (!announced).then(|| self.announce.argv.clone()),
            status,
            duration_ms,
            stdout: stream(&result.stdout),
            stderr: stream(&result.stderr),
            stdin: result.stdin.as_ref().map(|(bytes, sha256)| StreamDigest {
                bytes: *bytes,
                sha256: sha256.clone(),
                truncated: false,
            }),
        };
        self.evidence.emit(events::EXEC_EXITED, to_payload(&exited));
        result
    }

    /// Waits for the end, dropping output (its size and digest are still recorded).
    pub fn wait(mut self) -> ExecResult {
        loop {
            match self.next_event() {
                Some(ExecEvent::Exit(r)) => return *r,
                Some(_) => continue,
                None => {
                    let empty = [Tally::empty(self.limit), Tally::empty(self.limit)];
                    return self.finish(ExecEnd::Lost, 0, &empty);
                }
            }
        }
    }
}

/// Signals and resizes an exec from any thread.
#[derive(Clone)]
pub struct ExecControl {
    id: u64,
    conn: Arc<AgentConn>,
}

impl ExecControl {
    /// Sends `signal` to the exec's process group.
    pub fn signal(&self, signal: i32) -> std::io::Result<()> {
        self.conn.send(&Message::Signal(Signal {
            id: self.id,
            signal,
        }))
    }

    /// Tells the exec's terminal its new size.
    pub fn resize(&self, rows: u16, cols: u16) -> std::io::Result<()> {
        self.conn.send(&Message::Resize(Resize {
            id: self.id,
            rows,
            cols,
        }))
    }
}

/// Writes into an exec's stdin; [`StdinWriter::close`] (or drop) ends it.
pub struct StdinWriter {
    id: u64,
    conn: Arc<AgentConn>,
    credit: Arc<Credit>,
    tally: Arc<Mutex<StdinTally>>,
    closed: bool,
}

impl StdinWriter {
    /// Ends the exec's stdin (EOF inside).
    pub fn close(mut self) -> std::io::Result<()> {
        self.closed = true;
        self.conn.send(&Message::StdinClose(IdOnly { id: self.id }))
    }
}

impl Write for StdinWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(self.conn.max_chunk()) as u64;
        let n = self.credit.take(want) as usize;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the exec ended; its stdin is closed",
            ));
        }
        let chunk = &buf[..n];
        self.conn.send_stdin(self.id, chunk)?;
        let mut t = self
            .tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        t.bytes += n as u64;
        t.hasher.update(chunk);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for StdinWriter {
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.conn.send(&Message::StdinClose(IdOnly { id: self.id }));
        }
    }
}
