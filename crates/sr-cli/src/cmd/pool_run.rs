//! `safe-run run --pool TEMPLATE -- CMD`: the run in a sandbox that a running `safe-run serve`
//! made ahead for its warm pool of TEMPLATE (docs/run.md, "From a warm pool"). This owns the
//! command line's side: the socket and the token, the runtime, the signals, and turning the
//! daemon's answer into the exit status, the result document and the summary line. The run
//! itself is sr-daemon's [`sr_daemon::client::pool_run`].

use std::io::{IsTerminal, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::time::Instant;

use sr_common::{Diagnostic, ErrorCode};
use sr_daemon::client::pool_run::{self, ExecEnd, Output, PoolRunOutcome, PoolRunRequest};

use super::result::{PolicyRef, PoolUse, RunResult};
use super::run::RunArgs;
use crate::output::Format;

/// The operator token (`create` scope) a pool run presents.
pub const TOKEN_ENV: &str = "SAFE_RUN_TOKEN";
/// The daemon's socket, when not given with --socket.
pub const SOCKET_ENV: &str = "SAFE_RUN_SOCKET";

/// Runs `args.command` in a sandbox of `template`'s pool; returns the exit code.
pub fn run(args: &RunArgs, template: &str, result: &mut RunResult) -> u8 {
    let started = Instant::now();
    let format = args.format;
    let fail = |result: &mut RunResult, d: Diagnostic| super::run::fail_with(result, format, &[d]);
    let Some(token) = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()) else {
        return fail(
            result,
            Diagnostic::new(
                ErrorCode::ServeAuth,
                "run.pool",
                format!("--pool needs an operator token in ${TOKEN_ENV}"),
                "make one with `safe-run token create --scopes create` and export SAFE_RUN_TOKEN",
            ),
        );
    };
    let socket = match socket(args) {
        Ok(s) => s,
        Err(d) => return fail(result, d),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            return fail(
                result,
                Diagnostic::new(
                    ErrorCode::RunPreflight,
                    "run.pool",
                    format!("cannot start the client's runtime: {e}"),
                    "this is a bug",
                ),
            );
        }
    };
    let req = PoolRunRequest {
        socket,
        token,
        template: template.to_owned(),
        argv: args.command.clone(),
    };
    let pass_stdin = (args.interactive || !std::io::stdin().is_terminal()) && !stdin_is_dev_null();
    let ran = runtime.block_on(async {
        let interrupt = catch_interrupts();
        let stdin = pass_stdin.then(tokio::io::stdin);
        let mut stdout = std::io::stdout();
        let mut stderr = std::io::stderr();
        let out = Output {
            stdout: &mut stdout,
            stderr: &mut stderr,
        };
        pool_run::run(&req, out, stdin, interrupt).await
    });
    // A read of stdin still pending must not hold the exit.
    runtime.shutdown_background();
    let outcome = match ran {
        Ok(o) => o,
        Err(e) => return fail(result, e.to_diagnostic()),
    };
    let code = record(result, template, &outcome);
    if format == Format::Text {
        summarize(args, template, &outcome, started);
    }
    match evidence_problem(&outcome).or_else(|| end_problem(&outcome)) {
        Some(d) => fail(result, d),
        None => code,
    }
}

/// --socket, else $SAFE_RUN_SOCKET, else serve.socket of the operator config.
fn socket(args: &RunArgs) -> Result<PathBuf, Diagnostic> {
    if let Some(s) = &args.socket {
        return Ok(s.clone());
    }
    if let Some(s) = std::env::var_os(SOCKET_ENV).filter(|s| !s.is_empty()) {
        return Ok(PathBuf::from(s));
    }
    Ok(PathBuf::from(
        sr_policy::OperatorConfig::load()?.serve.socket,
    ))
}

/// Whether stdin is /dev/null: the exec gets /dev/null anyway, so there is nothing to copy.
fn stdin_is_dev_null() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata("/proc/self/fd/0") else {
        return false;
    };
    let null = std::fs::metadata("/dev/null");
    meta.file_type().is_char_device() && null.is_ok_and(|n| n.rdev() == meta.rdev())
}

/// SIGINT, SIGTERM and SIGHUP, caught from now on: the future resolves to the first one's
/// number. Registered before the sandbox is taken, so no signal can kill this process with a
/// sandbox left alive.
fn catch_interrupts() -> impl std::future::Future<Output = i32> {
    use tokio::signal::unix::{SignalKind, signal};
    let caught = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    );
    async move {
        let (Ok(mut int), Ok(mut term), Ok(mut hup)) = caught else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => libc::SIGINT,
            _ = term.recv() => libc::SIGTERM,
            _ = hup.recv() => libc::SIGHUP,
        }
    }
}

/// Fills the result; returns the exit code of the exec's end.
fn record(result: &mut RunResult, template: &str, o: &PoolRunOutcome) -> u8 {
    result.run_id = Some(o.sandbox_id.clone());
    result.report_path = o.report_path.clone();
    result.run_dir = o
        .report_path
        .as_ref()
        .and_then(|p| p.parent().map(PathBuf::from));
    result.policy = o.report_path.as_deref().and_then(policy_of_report);
    result.pool = Some(PoolUse {
        template: template.to_owned(),
        from_pool: o.from_pool,
    });
    result.limits_hit = o.cut.iter().map(|s| format!("output.{s}")).collect();
    let (status, code) = match &o.end {
        ExecEnd::Exited(code) => {
            result.workload_exit_code = Some(*code);
            ("exited", *code)
        }
        ExecEnd::Signaled(signal) => {
            result.signal = Some(*signal);
            ("signaled", 128 + signal)
        }
        ExecEnd::Interrupted(signal) => {
            result.signal = Some(*signal);
            ("interrupted", 128 + signal)
        }
        ExecEnd::Failed(_) => ("launchFailed", 5),
        ExecEnd::Lost if o.sandbox_ended.as_deref() == Some("timeout") => {
            result.limits_hit.push("timeout".into());
            ("timeout", 6)
        }
        ExecEnd::Lost => ("lost", 5),
    };
    result.status = status.to_owned();
    crate::output::exit_code(code)
}

/// The policy the daemon held the run to, as its report names it (the client never had the
/// template's text); `None` when the report cannot be read from here.
fn policy_of_report(path: &std::path::Path) -> Option<PolicyRef> {
    let text = std::fs::read(path).ok()?;
    let report: sr_evidence::report::RunReport = serde_json::from_slice(&text).ok()?;
    Some(PolicyRef {
        path: report.policy.path.unwrap_or_default(),
        name: report.policy.name,
        digest: report.policy.digest,
        overrides: Default::default(),
    })
}

/// The sandbox's report not confirmed written: the run's evidence failed (exit 7).
fn evidence_problem(o: &PoolRunOutcome) -> Option<Diagnostic> {
    let why = match (&o.destroy_error, &o.report_path) {
        (Some(e), _) => e.to_string(),
        (None, None) => "the daemon destroyed the sandbox but wrote no report".to_owned(),
        (None, Some(_)) => return None,
    };
    Some(Diagnostic::new(
        ErrorCode::EvidenceReport,
        "run.pool.report",
        why,
        "see the daemon's log and the run directory's events.jsonl",
    ))
}

/// An exec that never ran, or a sandbox that ended under it.
fn end_problem(o: &PoolRunOutcome) -> Option<Diagnostic> {
    match &o.end {
        ExecEnd::Failed(reason) => Some(Diagnostic::new(
            ErrorCode::RunLaunch,
            "runtime.command",
            format!("the command could not start in the sandbox: {reason}"),
            "give an absolute path that exists inside the sandbox",
        )),
        ExecEnd::Lost if o.sandbox_ended.as_deref() == Some("timeout") => Some(Diagnostic::new(
            ErrorCode::RunTimeout,
            "runtime.timeout",
            "the sandbox's lifetime (the template's runtime.timeout, counted from when it was made) ended during the run",
            "raise the template's runtime.timeout; a pooled sandbox's lifetime starts when it is made",
        )),
        ExecEnd::Lost => Some(Diagnostic::new(
            ErrorCode::RunLaunch,
            "run.pool",
            format!(
                "the sandbox ended before the command did ({})",
                o.sandbox_ended.as_deref().unwrap_or("unknown")
            ),
            "see the report's exit and the run directory's events.jsonl",
        )),
        _ => None,
    }
}

fn summarize(args: &RunArgs, template: &str, o: &PoolRunOutcome, started: Instant) {
    let mut err = std::io::stderr().lock();
    if !args.quiet {
        let what = match &o.end {
            ExecEnd::Exited(code) => format!("exited with code {code}"),
            ExecEnd::Signaled(signal) => format!("killed by signal {signal}"),
            ExecEnd::Interrupted(signal) => {
                format!("interrupted by signal {signal}; the sandbox was destroyed")
            }
            ExecEnd::Failed(_) => "could not start (SR-RUN-002)".to_owned(),
            ExecEnd::Lost => format!(
                "ended with its sandbox ({})",
                o.sandbox_ended.as_deref().unwrap_or("unknown")
            ),
        };
        let origin = match o.from_pool {
            true => format!("from the warm pool of {template:?}"),
            false => format!("of {template:?}, made on request: its pool had none ready"),
        };
        let _ = writeln!(
            err,
            "safe-run: run {} ({origin}) {what}; report: {}",
            o.sandbox_id,
            o.report_path
                .as_ref()
                .map_or_else(|| "(not written)".to_owned(), |p| p.display().to_string())
        );
    }
    if args.timings {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        let phases = o.phases.iter().map(|(phase, took)| (*phase, ms(*took)));
        let run = [
            ("cli.run", ms(started.elapsed())),
            // Whole milliseconds: the daemon's clock for the exec itself.
            ("daemon.exec", o.duration_ms as f64),
        ];
        super::run::print_timings(&mut err, phases.chain(run));
    }
}
