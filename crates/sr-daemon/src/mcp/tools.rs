//! The MCP tools' logic as plain functions over a [`Daemon`]: typed arguments in
//! ([`super::shapes`]), a typed answer or a [`ToolError`] with its stable SR code out. Nothing
//! here knows MCP or rmcp, so it is tested without either. Every function blocks (processes,
//! pipes): the adapter runs them on blocking threads.
//!
//! Output is capped so one answer stays small enough for a model's context: an exec's stdout
//! and stderr at [`OUTPUT_CAP`] each, a streamed exec's output at [`OUTPUT_CAP`] per answer
//! (the cursor resumes the rest), a file read at [`OUTPUT_CAP`] per call, a listing at
//! [`MAX_ENTRIES`]; each says so with `truncated`.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use base64::Engine;
use sr_common::{Diagnostic, ErrorCode};
use sr_runner::life::{ExecRequest, SandboxError};

use super::shapes::*;
use crate::limits::Limited;
use crate::sandboxes::{CreateError, Daemon, ExecError, Live, SandboxView, State};
use crate::streams::Sent;
use crate::waiting::{WaitError, run_waiting};

/// The most stdout (and, apart, stderr) one answer carries.
pub const OUTPUT_CAP: usize = 64 << 10;
/// The most entries a listing carries.
pub const MAX_ENTRIES: usize = 1000;
/// The longest `sandbox_exec_output` waits for something new.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// The template a one-shot exec uses when the call names no policy and no template.
pub const DEFAULT_TEMPLATE: &str = "default";

impl ToolError {
    /// From a diagnostic (the first of several; the rest join its message).
    pub fn from_diagnostics(ds: &[Diagnostic]) -> ToolError {
        let Some(first) = ds.first() else {
            return ToolError::launch("sandbox", "failed", "see the run directory's events");
        };
        let mut message = first.message.clone();
        for d in &ds[1..] {
            message.push_str(&format!("; {}: {}", d.path, d.message));
        }
        ToolError {
            code: first.code.to_string(),
            path: first.path.clone(),
            message,
            hint: first.hint.clone(),
        }
    }

    /// Arguments that cannot be carried out as given (SR-CMP-002, an illegal request).
    pub fn arguments(path: &str, message: impl Into<String>, hint: &str) -> ToolError {
        ToolError::of(ErrorCode::CompileIllegalRequest, path, message, hint)
    }

    /// The sandbox refused or could not do it (SR-RUN-002, as its own refusals are).
    fn launch(path: &str, message: impl Into<String>, hint: &str) -> ToolError {
        ToolError::of(ErrorCode::RunLaunch, path, message, hint)
    }

    fn of(code: ErrorCode, path: &str, message: impl Into<String>, hint: &str) -> ToolError {
        ToolError {
            code: code.to_string(),
            path: path.to_owned(),
            message: message.into(),
            hint: hint.to_owned(),
        }
    }

    /// One line for a model to read: code, path, message, hint.
    pub fn line(&self) -> String {
        format!(
            "{} at {}: {} (hint: {})",
            self.code, self.path, self.message, self.hint
        )
    }
}

impl From<SandboxError> for ToolError {
    fn from(e: SandboxError) -> ToolError {
        ToolError::from_diagnostics(&[e.to_diagnostic()])
    }
}

impl From<CreateError> for ToolError {
    fn from(e: CreateError) -> ToolError {
        match e {
            CreateError::Policy(ds) | CreateError::Start(ds) => ToolError::from_diagnostics(&ds),
            CreateError::Full(l) => limited(&l),
        }
    }
}

/// A full limit, as the tools answer it (SR-SRV-002).
fn limited(l: &Limited) -> ToolError {
    ToolError::of(
        ErrorCode::ServeLimit,
        l.limit,
        format!("{} is full ({})", l.limit, l.max),
        "retry in a moment, end a sandbox with sandbox_kill, or ask the operator to raise the limit",
    )
}

impl From<ExecError> for ToolError {
    fn from(e: ExecError) -> ToolError {
        match e {
            ExecError::Sandbox(e) => e.into(),
            ExecError::Limited(l) => limited(&l),
        }
    }
}

impl From<WaitError> for ToolError {
    fn from(e: WaitError) -> ToolError {
        match e {
            WaitError::Sandbox(e) => e.into(),
            WaitError::Limited(l) => limited(&l),
            WaitError::Failed(d) => ToolError::from_diagnostics(&[d]),
            WaitError::Ended => ToolError::launch(
                "exec",
                "the sandbox ended during the exec (its timeout, or it was killed)",
                "sandbox_report tells how it ended; create a new sandbox",
            ),
        }
    }
}

/// A sandbox's view as the tools answer it.
pub fn sandbox_out(v: SandboxView) -> SandboxOut {
    SandboxOut {
        id: v.id,
        state: match v.state {
            State::Running => "running",
            State::Ended => "ended",
        }
        .into(),
        created_at_ms: v.created_at_ms,
        ended: v.ended,
        report_path: v.report_path.map(|p| p.display().to_string()),
        template: v.template,
        from_pool: v.from_pool,
    }
}

fn live(d: &Daemon, id: &str) -> Result<Arc<Live>, ToolError> {
    d.get(id).ok_or_else(|| {
        ToolError::of(
            ErrorCode::ServeRequest,
            "id",
            format!("no sandbox {id:?}"),
            "sandbox_create makes one and answers its id",
        )
    })
}

/// A sandbox of `policy` or of `template` (exactly one).
fn make(d: &Daemon, policy: Option<&str>, template: Option<&str>) -> Result<Arc<Live>, ToolError> {
    let made = match (policy, template) {
        (Some(p), None) => d.create(p),
        (None, Some(t)) => d.create_from_template(t),
        _ => {
            return Err(ToolError::arguments(
                "policy",
                "give exactly one of policy and template",
                "policy is a PolicySpec v1 as YAML or JSON text; template names one of serve.templates",
            ));
        }
    };
    Ok(made?.0)
}

/// `sandbox_create`.
pub fn create(d: &Daemon, a: CreateIn) -> Result<SandboxOut, ToolError> {
    let live = make(d, a.policy.as_deref(), a.template.as_deref())?;
    Ok(sandbox_out(live.view()))
}

fn request(
    argv: Vec<String>,
    env: std::collections::BTreeMap<String, String>,
    cwd: Option<String>,
    timeout_ms: Option<u64>,
    stdin: bool,
) -> ExecRequest {
    ExecRequest {
        argv,
        env,
        cwd,
        timeout: timeout_ms.map(Duration::from_millis),
        stdin,
        tty: None,
    }
}

/// `s` cut to at most `max` bytes on a character boundary; whether it was cut.
pub fn cap(mut s: String, max: usize) -> (String, bool) {
    if s.len() <= max {
        return (s, false);
    }
    let mut at = max;
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    s.truncate(at);
    (s, true)
}

/// `sandbox_exec`: in sandbox `id`, or in a throwaway one destroyed (with its report) after.
pub fn exec(d: &Daemon, mut a: ExecIn) -> Result<ExecOut, ToolError> {
    let Some(id) = a.id.take() else {
        return exec_once(d, a);
    };
    if a.policy.is_some() || a.template.is_some() {
        return Err(ToolError::arguments(
            "policy",
            "policy and template make a throwaway sandbox; with id the exec runs in that one",
            "give id, or policy/template, not both",
        ));
    }
    let live = live(d, &id)?;
    run(d, &live, a)
}

fn exec_once(d: &Daemon, a: ExecIn) -> Result<ExecOut, ToolError> {
    let (policy, template) = match (a.policy.as_deref(), a.template.as_deref()) {
        (None, None) if d.host.config.serve.templates.contains_key(DEFAULT_TEMPLATE) => {
            (None, Some(DEFAULT_TEMPLATE))
        }
        (None, None) => {
            return Err(ToolError::arguments(
                "id",
                "no sandbox to run in: no id, no policy, no template, and the operator has no template named \"default\"",
                "give the id of a sandbox (sandbox_create), or a policy or template for a throwaway one",
            ));
        }
        other => other,
    };
    let live = make(d, policy, template)?;
    let ran = run(d, &live, a);
    // Destroyed whatever the exec did: its report is written now.
    let view = live.destroy(d.host.signer.as_ref());
    let mut out = ran?;
    out.report_path = view.report_path.map(|p| p.display().to_string());
    Ok(out)
}

fn run(d: &Daemon, live: &Live, a: ExecIn) -> Result<ExecOut, ToolError> {
    let req = request(a.argv, a.env, a.cwd, a.timeout_ms, a.stdin.is_some());
    d.counters.execs.fetch_add(1, Relaxed);
    let done = run_waiting(live, &req, a.stdin)?;
    let (stdout, cut_out) = cap(done.stdout, OUTPUT_CAP);
    let (stderr, cut_err) = cap(done.stderr, OUTPUT_CAP);
    Ok(ExecOut {
        sandbox_id: live.id.clone(),
        exec_id: done.id,
        status: done.status.into(),
        exit_code: done.exit_code,
        signal: done.signal,
        stdout,
        stderr,
        truncated: done.truncated || cut_out || cut_err,
        duration_ms: done.duration_ms,
        report_path: None,
    })
}

/// `sandbox_exec_start`.
pub fn exec_start(d: &Daemon, a: ExecStartIn) -> Result<ExecStartOut, ToolError> {
    let live = live(d, &a.id)?;
    let req = request(a.argv, a.env, a.cwd, a.timeout_ms, a.stdin.is_some());
    d.counters.execs.fetch_add(1, Relaxed);
    let log = live.exec_streamed(&req)?;
    if let Some(text) = a.stdin {
        let log = log.clone();
        // Written from its own thread: it waits for the agent's credit.
        std::thread::spawn(move || {
            let _ = log.write_stdin(text.as_bytes(), true);
        });
    }
    Ok(ExecStartOut {
        sandbox_id: live.id.clone(),
        exec_id: log.id,
    })
}

/// `sandbox_exec_output`: waits (up to `waitMs`, at most [`MAX_WAIT`]) while there is nothing
/// new, then answers what came after the cursor.
pub fn exec_output(d: &Daemon, a: ExecOutputIn) -> Result<ExecOutputOut, ToolError> {
    let live = live(d, &a.id)?;
    let log = live.streamed(a.exec_id).ok_or_else(|| {
        ToolError::launch(
            "execId",
            format!("no started exec {} in sandbox {}", a.exec_id, a.id),
            "sandbox_exec_start answers the execId",
        )
    })?;
    let wait = Duration::from_millis(a.wait_ms.unwrap_or(0)).min(MAX_WAIT);
    let deadline = Instant::now() + wait;
    loop {
        let (events, ended) = log.after(a.cursor).map_err(|g| {
            ToolError::launch(
                "cursor",
                format!("output before offset {} is no longer kept", g.first_kept),
                "resume from a later cursor; the report keeps every exec's digest",
            )
        })?;
        if !events.is_empty() || ended || Instant::now() >= deadline {
            return Ok(collect(a.cursor, events));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The answer of `sandbox_exec_output` from the events after `cursor`, at most
/// [`OUTPUT_CAP`] of output.
pub fn collect(cursor: Option<u64>, events: Vec<(u64, Sent)>) -> ExecOutputOut {
    let mut out = ExecOutputOut {
        stdout: String::new(),
        stderr: String::new(),
        cursor: cursor.unwrap_or(0),
        more: false,
        truncated: false,
        exited: false,
        status: None,
        exit_code: None,
        signal: None,
        error: None,
        duration_ms: None,
    };
    let mut used = 0;
    for (offset, event) in events {
        let (stdout, text) = match event {
            Sent::Stdout { bytes } => (true, String::from_utf8_lossy(&bytes).into_owned()),
            Sent::Stderr { bytes } => (false, String::from_utf8_lossy(&bytes).into_owned()),
            Sent::Cut { .. } => {
                out.truncated = true;
                out.cursor = offset;
                continue;
            }
            Sent::Exit {
                status,
                exit_code,
                signal,
                error,
                duration_ms,
            } => {
                out.exited = true;
                out.status = Some(status.into());
                out.exit_code = exit_code;
                out.signal = signal;
                out.error = error;
                out.duration_ms = Some(duration_ms);
                out.cursor = offset;
                continue;
            }
        };
        let text = if used + text.len() <= OUTPUT_CAP {
            text
        } else if used == 0 {
            // One chunk larger than an answer: its head, flagged, and the cursor past it.
            out.truncated = true;
            cap(text, OUTPUT_CAP).0
        } else {
            out.more = true;
            break;
        };
        used += text.len();
        if stdout {
            out.stdout.push_str(&text);
        } else {
            out.stderr.push_str(&text);
        }
        out.cursor = offset;
    }
    out
}

/// `sandbox_read_file`: at most [`OUTPUT_CAP`] from `offset`.
pub fn read_file(d: &Daemon, a: ReadFileIn) -> Result<ReadFileOut, ToolError> {
    let live = live(d, &a.id)?;
    let mut bytes = Vec::new();
    let moved = live.with_sandbox(|sb| sb.get_file(&a.path, &mut bytes))?;
    let length = a.length.map_or(OUTPUT_CAP, |l| {
        usize::try_from(l).unwrap_or(usize::MAX).min(OUTPUT_CAP)
    });
    Ok(file_part(
        a.path,
        &bytes,
        a.offset.unwrap_or(0),
        length,
        moved.sha256,
    ))
}

/// The part of `bytes` from `offset`, at most `length`: as text when it is UTF-8 (a
/// character cut by the end of the part goes to the next part), else as base64.
pub fn file_part(
    path: String,
    bytes: &[u8],
    offset: u64,
    length: usize,
    sha256: String,
) -> ReadFileOut {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let mut part = &bytes[start..start.saturating_add(length).min(bytes.len())];
    let cut_here = start + part.len() < bytes.len();
    let text = match std::str::from_utf8(part) {
        Ok(t) => Some(t.to_owned()),
        // Only the last character is incomplete, and the rest of it is in the next part.
        Err(e) if cut_here && e.error_len().is_none() && e.valid_up_to() > 0 => {
            part = &part[..e.valid_up_to()];
            std::str::from_utf8(part).ok().map(str::to_owned)
        }
        Err(_) => None,
    };
    let base64 = text
        .is_none()
        .then(|| base64::engine::general_purpose::STANDARD.encode(part));
    ReadFileOut {
        path,
        text,
        base64,
        size: bytes.len() as u64,
        offset: start as u64,
        truncated: start + part.len() < bytes.len(),
        sha256,
    }
}

/// Octal permission bits (`"0644"`, `"755"`, `"0o600"`); 0644 when none.
pub fn parse_mode(mode: Option<&str>) -> Result<u32, ToolError> {
    let Some(m) = mode else { return Ok(0o644) };
    u32::from_str_radix(m.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| {
            ToolError::arguments(
                "mode",
                format!("mode {m:?} is not octal permission bits"),
                "e.g. \"0644\" or \"0755\"",
            )
        })
}

/// `sandbox_write_file`.
pub fn write_file(d: &Daemon, a: WriteFileIn) -> Result<WriteFileOut, ToolError> {
    let bytes = match (a.text, a.base64) {
        (Some(t), None) => t.into_bytes(),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .map_err(|e| {
                ToolError::arguments(
                    "base64",
                    format!("not base64: {e}"),
                    "standard alphabet, padded",
                )
            })?,
        _ => {
            return Err(ToolError::arguments(
                "text",
                "give exactly one of text and base64",
                "text for UTF-8 content, base64 for bytes",
            ));
        }
    };
    let mode = parse_mode(a.mode.as_deref())?;
    let live = live(d, &a.id)?;
    let moved = live
        .with_sandbox(|sb| sb.put_file(&a.path, mode, bytes.len() as u64, &mut bytes.as_slice()))?;
    Ok(WriteFileOut {
        path: a.path,
        size: moved.size,
        sha256: moved.sha256,
    })
}

/// `sandbox_list_files`: at most [`MAX_ENTRIES`].
pub fn list_files(d: &Daemon, a: ListFilesIn) -> Result<ListFilesOut, ToolError> {
    let live = live(d, &a.id)?;
    let entries = live.with_sandbox(|sb| sb.list(&a.path))?;
    let listed = crate::sandboxes::listing(&entries);
    let truncated = listed.len() > MAX_ENTRIES;
    let entries = listed
        .into_iter()
        .take(MAX_ENTRIES)
        .filter_map(|v| serde_json::from_value::<FileEntry>(v).ok())
        .collect();
    Ok(ListFilesOut {
        path: a.path,
        entries,
        truncated,
    })
}

/// `sandbox_kill`: destroys it and writes its report.
pub fn kill(d: &Daemon, a: IdIn) -> Result<SandboxOut, ToolError> {
    let live = live(d, &a.id)?;
    Ok(sandbox_out(live.destroy(d.host.signer.as_ref())))
}

/// `sandbox_report`: the signed report of an ended sandbox.
pub fn report(d: &Daemon, a: IdIn) -> Result<ReportOut, ToolError> {
    let live = live(d, &a.id)?;
    let Some(path) = live.report_path() else {
        let errors = live.evidence_errors();
        if !errors.is_empty() {
            return Err(ToolError::from_diagnostics(&errors));
        }
        return Err(ToolError::launch(
            "id",
            format!(
                "sandbox {} is still running: its report is written when it ends",
                a.id
            ),
            "sandbox_kill ends it and writes its report",
        ));
    };
    let unreadable = |e: String| {
        ToolError::of(
            ErrorCode::EvidenceReport,
            "report",
            format!("{}: {e}", path.display()),
            "the report on the daemon's host is unreadable; see safe-run report verify",
        )
    };
    let bytes = std::fs::read(&path).map_err(|e| unreadable(e.to_string()))?;
    let report = serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))?;
    Ok(ReportOut {
        id: a.id,
        report_path: path.display().to_string(),
        report,
    })
}

fn typed<I: serde::de::DeserializeOwned, O: serde::Serialize>(
    args: serde_json::Value,
    f: impl FnOnce(I) -> Result<O, ToolError>,
) -> Result<serde_json::Value, ToolError> {
    let a = serde_json::from_value(args).map_err(|e| {
        ToolError::arguments(
            "arguments",
            format!("the arguments do not fit the tool: {e}"),
            "see the tool's input schema (tools/list)",
        )
    })?;
    serde_json::to_value(f(a)?).map_err(|e| {
        ToolError::launch(
            "answer",
            format!("the answer did not serialize: {e}"),
            "this is a bug",
        )
    })
}

/// Calls tool `name` with `args` (a JSON object); `None` when there is no such tool.
pub fn call(
    d: &Daemon,
    name: &str,
    args: serde_json::Value,
) -> Option<Result<serde_json::Value, ToolError>> {
    Some(match name {
        "sandbox_create" => typed(args, |a| create(d, a)),
        "sandbox_exec" => typed(args, |a| exec(d, a)),
        "sandbox_exec_start" => typed(args, |a| exec_start(d, a)),
        "sandbox_exec_output" => typed(args, |a| exec_output(d, a)),
        "sandbox_read_file" => typed(args, |a| read_file(d, a)),
        "sandbox_write_file" => typed(args, |a| write_file(d, a)),
        "sandbox_list_files" => typed(args, |a| list_files(d, a)),
        "sandbox_kill" => typed(args, |a| kill(d, a)),
        "sandbox_report" => typed(args, |a| report(d, a)),
        _ => return None,
    })
}
