//! `safe-run run` as a sandbox's life: create, one exec, destroy. The exec's output streams
//! into the run directory's `stdout.log`/`stderr.log` and to the terminal; its stdin is the
//! caller's when given. Outputs, exit codes and the report are those of a one-shot run.

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use sr_bundle::{CompileBundle, OutputAction};
use sr_common::{Diagnostic, ErrorCode};
use sr_evidence::events;
use sr_evidence::sink::EventSink;

use super::exec::{ExecEnd, ExecEvent, ExecRequest, ExecResult};
use super::sandbox::{Canceller, Ending, Primary, Sandbox, SandboxSpec};
use crate::cgroup::Layout;
use crate::network_hook::NetworkHook;
use crate::outcome::{RunOutcome, RunStatus, StreamFacts};
use crate::output::cut_notice;
use crate::rundir::RunDir;

/// Where the output goes besides the run dir.
pub type Terminal = Box<dyn Write + Send>;

/// Inputs of a run besides the bundle.
pub struct RunOptions {
    /// The binary to execute as `<init_exe> __init` (the safe-run binary).
    pub init_exe: PathBuf,
    /// The cgroup layout (from preflight).
    pub cgroup_layout: Layout,
    /// Operator-allowed mount prefixes (re-checked through each source's fd).
    pub allowed_mount_prefixes: Vec<String>,
    /// The unprivileged uid and gid a microVM's VMM runs as.
    pub vmm_identity: (u32, u32),
    /// Where a QEMU microVM looks for a snapshot to restore instead of booting.
    pub snapshots: Option<PathBuf>,
    /// Where the workload's stdout is streamed (the terminal, or a sink in tests).
    pub stdout: Terminal,
    /// Where the workload's stderr is streamed.
    pub stderr: Terminal,
    /// The workload's stdin (`None`: /dev/null).
    pub stdin: Option<Box<dyn Read + Send>>,
    /// A terminal for the workload (a pty inside the sandbox): its stdout carries both
    /// streams and `stdin` is what is typed.
    pub tty: Option<TtyOptions>,
}

/// The workload's terminal.
pub struct TtyOptions {
    /// Its size at the start: (rows, cols).
    pub size: (u16, u16),
    /// Later sizes, as the host terminal changes (the channel closing ends the watch).
    pub resizes: std::sync::mpsc::Receiver<(u16, u16)>,
}

/// One run.
pub struct Runner {
    ending: Arc<Ending>,
}

impl Default for Runner {
    fn default() -> Self {
        Self::new()
    }
}

/// One stream's saved copy and terminal.
struct Saved {
    path: PathBuf,
    file: Option<File>,
    terminal: Terminal,
    error: Option<String>,
}

impl Saved {
    fn new(path: PathBuf, terminal: Terminal) -> Self {
        let (file, error) = match File::create(&path) {
            Ok(f) => (Some(f), None),
            Err(e) => (None, Some(format!("{}: {e}", path.display()))),
        };
        Saved {
            path,
            file,
            terminal,
            error,
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        // A closed terminal must not stop the saved copy.
        let _ = self
            .terminal
            .write_all(bytes)
            .and_then(|()| self.terminal.flush());
        if let Some(f) = self.file.as_mut()
            && let Err(e) = f.write_all(bytes)
        {
            self.error = Some(format!("{}: {e}", self.path.display()));
            self.file = None;
        }
    }

    /// A notice for the terminal only (not the saved copy).
    fn terminal_notice(&mut self, text: &str) {
        let _ = self
            .terminal
            .write_all(text.as_bytes())
            .and_then(|()| self.terminal.flush());
    }

    /// `facts` with the saved copy's path.
    fn with_path(&self, facts: StreamFacts) -> StreamFacts {
        StreamFacts {
            path: self.path.clone(),
            ..facts
        }
    }

    /// The stream's facts with the saved copy's path; a failed copy is recorded.
    fn facts(&self, facts: StreamFacts, warn: &mut Vec<Diagnostic>) -> StreamFacts {
        let facts = self.with_path(facts);
        if let Some(e) = &self.error {
            warn.push(Diagnostic::new(
                ErrorCode::EvidenceEventWrite,
                "monitor.output",
                e.clone(),
                "check that the run directory is writable and not full",
            ));
        }
        facts
    }
}

/// A run whose end was not observed (SR-RUN-002).
fn lost(message: &str) -> RunStatus {
    RunStatus::Lost {
        diagnostic: Diagnostic::new(
            ErrorCode::RunLaunch,
            "monitor.exit",
            message,
            "the workload's exit status was not observed; the sandbox was killed and cleaned up; check whether something on the host kills processes (OOM killer of the host, an operator)",
        ),
    }
}

fn stdin_pump(mut from: Box<dyn Read + Send>, mut to: super::exec::StdinWriter) {
    let _ = std::thread::Builder::new()
        .name("sr-stdin".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            let _ = to.close();
        });
}

impl Runner {
    /// A runner for one run.
    pub fn new() -> Self {
        Runner {
            ending: Arc::new(Ending::default()),
        }
    }

    /// A handle that stops the run.
    pub fn canceller(&self) -> Canceller {
        Canceller(self.ending.clone())
    }

    /// Runs `bundle` in the prepared run directory. Never returns early: every path ends with
    /// cleanup and an outcome (a launch failure is [`RunStatus::LaunchFailed`]). Gives the
    /// sink back (for the chain's finish).
    pub fn run<S: EventSink + 'static>(
        self,
        dir: &RunDir,
        bundle: &CompileBundle,
        network: Box<dyn NetworkHook + Send>,
        sink: S,
        opts: RunOptions,
    ) -> (RunOutcome, Option<S>) {
        let RunOptions {
            init_exe,
            cgroup_layout,
            allowed_mount_prefixes,
            vmm_identity,
            snapshots,
            stdout,
            stderr,
            stdin,
            tty,
        } = opts;
        let mut command = vec![bundle.process.command.clone()];
        command.extend(bundle.process.args.iter().cloned());
        let mut out = Saved::new(dir.path.join("stdout.log"), stdout);
        let mut err = Saved::new(dir.path.join("stderr.log"), stderr);
        let mut sb = Sandbox::create(
            dir,
            SandboxSpec {
                bundle: bundle.clone(),
                network,
                sink,
                cgroup_layout,
            },
            super::backend::for_bundle(
                bundle,
                super::backend::BackendInputs {
                    init_exe,
                    allowed_mount_prefixes,
                    vmm_identity,
                    snapshots,
                },
            ),
            self.ending.clone(),
        );
        let (status, result, started) = match sb.start_failure().cloned() {
            Some(st) => (st, None, false),
            None => self.one_exec(&mut sb, bundle, &command, (stdin, tty), &mut out, &mut err),
        };
        let mut warnings = Vec::new();
        let (stdout, stderr) = match &result {
            Some(r) => (
                out.facts(r.stdout.clone(), &mut warnings),
                err.facts(r.stderr.clone(), &mut warnings),
            ),
            None => {
                let empty = |s: &Saved| {
                    s.with_path(StreamFacts {
                        sha256: super::conn::Tally::empty(bundle.process.output.max_bytes).digest(),
                        limit_bytes: bundle.process.output.max_bytes,
                        ..StreamFacts::default()
                    })
                };
                (empty(&out), empty(&err))
            }
        };
        let evidence = sb.evidence();
        for w in warnings {
            evidence.warn(w);
        }
        drop(evidence);
        sb.destroy(
            status,
            Some(Primary {
                command,
                started,
                stdout,
                stderr,
            }),
        )
    }

    fn one_exec<S: EventSink + 'static>(
        &self,
        sb: &mut Sandbox<S>,
        bundle: &CompileBundle,
        command: &[String],
        (stdin, tty): (Option<Box<dyn Read + Send>>, Option<TtyOptions>),
        out: &mut Saved,
        err: &mut Saved,
    ) -> (RunStatus, Option<ExecResult>, bool) {
        let t_go = Instant::now();
        let req = ExecRequest {
            argv: command.to_vec(),
            stdin: stdin.is_some(),
            tty: tty.as_ref().map(|t| t.size),
            ..ExecRequest::default()
        };
        let mut exec = match sb.exec(&req) {
            Ok(h) => h,
            Err(e) => {
                return (
                    RunStatus::LaunchFailed {
                        diagnostic: e.to_diagnostic(),
                    },
                    None,
                    false,
                );
            }
        };
        if let Some(from) = stdin
            && let Some(to) = exec.stdin()
        {
            stdin_pump(from, to);
        }
        if let Some(t) = tty {
            let control = exec.control();
            let _ = std::thread::Builder::new()
                .name("sr-resize".into())
                .spawn(move || {
                    for (rows, cols) in t.resizes {
                        if control.resize(rows, cols).is_err() {
                            return;
                        }
                    }
                });
        }
        let evidence = sb.evidence();
        let plan = bundle.process.output;
        let mut started = false;
        let mut t_work = Instant::now();
        let mut cut_kill = None;
        let result = loop {
            match exec.next_event() {
                Some(ExecEvent::Started(s)) => {
                    sb.record_phase("go_to_exec", t_go.elapsed());
                    t_work = Instant::now();
                    if !sb.record_confinement(&s) {
                        // A run is never reported as started without what confines it.
                        let _ = exec.signal(libc::SIGKILL);
                        let d = Diagnostic::new(
                            ErrorCode::RunLaunch,
                            "launch.facts",
                            "the workload started but its enforcement facts (Landlock, seccomp, identity) never arrived",
                            "this is a bug in the sandbox init; the workload was killed",
                        );
                        sb.ending().end(RunStatus::LaunchFailed { diagnostic: d });
                        continue;
                    }
                    started = true;
                    evidence.emit(
                        events::PROCESS_STARTED,
                        json!({"pid": s.pid, "command": bundle.process.command, "args": bundle.process.args}),
                    );
                }
                Some(ExecEvent::Stdout(b)) => out.write(&b),
                Some(ExecEvent::Stderr(b)) => err.write(&b),
                Some(ExecEvent::Cut(stream)) => {
                    err.terminal_notice(&cut_notice(stream, &plan));
                    evidence.emit(
                        events::OUTPUT_TRUNCATED,
                        json!({"stream": stream, "limitBytes": plan.max_bytes, "onLimit": plan.on_limit.as_str()}),
                    );
                    if plan.on_limit == OutputAction::Kill {
                        let st = RunStatus::OutputLimit {
                            stream: stream.to_owned(),
                            limit_bytes: plan.max_bytes,
                        };
                        cut_kill.get_or_insert(st.clone());
                        sb.ending().end(st);
                    }
                }
                Some(ExecEvent::Exit(r)) => break *r,
                None => {
                    break ExecResult {
                        id: exec.id(),
                        end: ExecEnd::Lost,
                        duration_ms: 0,
                        stdout: StreamFacts::default(),
                        stderr: StreamFacts::default(),
                        stdin: None,
                    };
                }
            }
        };
        if started {
            sb.record_phase("workload", t_work.elapsed());
        }
        let mut status = match &result.end {
            ExecEnd::Exited(code) => RunStatus::Exited { code: *code },
            ExecEnd::Signaled(signal) => RunStatus::Signaled { signal: *signal },
            ExecEnd::TimedOut => RunStatus::Timeout {
                limit_ms: bundle.process.timeout_ms,
            },
            ExecEnd::Failed(d) => RunStatus::LaunchFailed {
                diagnostic: d.clone(),
            },
            ExecEnd::Lost => lost(
                "the sandbox init exited without reporting how the workload ended (killed from outside?)",
            ),
        };
        // onLimit: kill, and the workload ended before the sandbox could be killed: the run
        // still ends by its output limit, whatever the race.
        if let Some(st) = cut_kill
            && matches!(
                status,
                RunStatus::Exited { .. } | RunStatus::Signaled { .. }
            )
        {
            status = st;
        }
        (status, Some(result), started)
    }
}
