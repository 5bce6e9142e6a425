//! `safe-run run`: validate, compile, preflight, run in the process sandbox, write the report.
//!
//! Exit status: the workload's own exit code when it exited; 128+N when signal N killed it
//! (137 for an OOM kill, reported as such); 6 on timeout (SR-RUN-003); 5 when the sandbox
//! could not start (SR-RUN-001 preflight, SR-RUN-002 launch, SR-RUN-201 network); 3 for an
//! invalid policy; 4 for a compile failure; 7 for an evidence failure; 8 when an output stream
//! passed its limit under `runtime.output.onLimit: kill` (SR-RUN-004); 130/143/129 when safe-run
//! was interrupted by SIGINT/SIGTERM/SIGHUP (the sandbox is killed and cleaned up first). See
//! docs/run.md.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use sr_common::{Diagnostic, ErrorCode};
use sr_policy::OperatorConfig;
use sr_runner::preflight::{self, Needs, RealProbes};
use sr_runner::recording::{Finished, PolicySource, Recording, Started};
use sr_runner::{RunDir, RunOptions, RunOutcome, RunStatus, Runner};

use super::result::{PolicyRef, RunResult};
use crate::output::{Format, exit_code, fail};

/// Arguments of `safe-run run`.
#[derive(Args)]
#[command(after_help = "Examples:
  safe-run run -- /bin/echo hello          # the built-in strict policy (no network, read-only root)
  safe-run run examples/m1_network_none.yaml
  safe-run run --policy examples/readonly_root.yaml -- /bin/sh -c 'touch /x; touch /tmp/y && echo ok'
  safe-run run policy.yaml --result result.json -- /usr/bin/python3 job.py
  safe-run run policy.yaml --backend microvm    # the same policy behind a guest kernel
  safe-run run --pool small -- /bin/echo hi     # a ready sandbox of a running serve's pool

A positional POLICY must end in .yaml, .yml or .json (so a command is never mistaken for one);
the command always comes after `--` and must be an absolute path inside the sandbox.
The run directory is <runDir>/<runId>/ (SAFE_RUN_WORKDIR_BASE, default /tmp/safe-run/runs):
events.jsonl, stdout.log, stderr.log, bundle.json, run_report.json.
--result FILE writes a JSON result on every path (never on stdout, which is the workload's).
Exit status: the workload's code; 128+N if killed by signal N (137: OOM); 6 timeout (SR-RUN-003);
5 the sandbox could not start (SR-RUN-001/002); 3 invalid policy; 2 usage; 8 output limit with
onLimit: kill (SR-RUN-004); 130/143/129 interrupted (SIGINT/SIGTERM/SIGHUP). See docs/run.md.")]
pub struct RunArgs {
    /// The policy file (.yaml, .yml or .json); without one, `-- CMD` runs under the built-in
    /// strict policy.
    #[arg(value_name = "POLICY")]
    pub policy_file: Option<PathBuf>,
    /// The policy file, as an option (the same as the positional POLICY).
    #[arg(long, value_name = "POLICY")]
    pub policy: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: super::policy_arg::OverrideArgs,
    /// Write a machine-readable JSON result (run id, report path, status, exit code, limits
    /// hit, diagnostics) to FILE, whatever happens.
    #[arg(long, value_name = "FILE")]
    pub result: Option<PathBuf>,
    /// Format of safe-run's own messages, always on stderr (`json`: the result document as one
    /// line instead of text). The workload's output always streams as is.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Print where the time went (per launch phase) on stderr after the run.
    #[arg(long)]
    pub timings: bool,
    /// Suppress safe-run's own summary line on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// Pass safe-run's stdin to the workload even when it is a terminal (without -i it is
    /// passed only when it is not: a pipe or a file).
    #[arg(long, short = 'i')]
    pub interactive: bool,
    /// Give the workload a terminal (a pty inside the sandbox, from its own devpts): this
    /// terminal goes into raw mode while the workload runs (every key, Ctrl-C included, is the
    /// workload's), window size changes follow, and it is restored however the run ends.
    /// Needs stdin to be a terminal; the workload's stdout and stderr arrive together.
    #[arg(long, short = 't')]
    pub tty: bool,
    /// Run in a sandbox from the warm pool of this template of a running `safe-run serve`
    /// (serve.templates): made, isolated and ready before the run asked for it, used once,
    /// then destroyed with its signed report. Needs an operator token with the create scope
    /// in $SAFE_RUN_TOKEN and a command after `--`; the policy is the template's.
    #[arg(long, value_name = "TEMPLATE")]
    pub pool: Option<String>,
    /// The daemon's socket for --pool (default: $SAFE_RUN_SOCKET, else serve.socket of the
    /// operator config).
    #[arg(long, value_name = "PATH", requires = "pool")]
    pub socket: Option<PathBuf>,
    /// Command and arguments replacing the policy's runtime.command and runtime.args
    /// (the command must be an absolute path inside the sandbox).
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// Runs the subcommand; returns the process exit code. Whatever happens, the result goes to
/// `--result FILE` (and, with `--format json`, to stderr).
pub fn execute(args: RunArgs) -> u8 {
    let mut result = RunResult::default();
    let code = run(&args, &mut result);
    result.exit_code = i32::from(code);
    result.ok = code == 0 && result.status == "exited";
    if args.format == Format::Json {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "{}",
            serde_json::to_string(&result).unwrap_or_default()
        );
    }
    if let Some(path) = &args.result
        && let Err(e) = result.write(path)
    {
        let _ = writeln!(
            std::io::stderr().lock(),
            "error: cannot write the result file {}: {e}\n  hint: choose a writable --result path",
            path.display()
        );
    }
    code
}

/// Prints diagnostics as text on stderr (unless the result is printed as JSON), records them in
/// the result, and returns the exit code of the first one's family.
pub(super) fn fail_with(result: &mut RunResult, format: Format, diagnostics: &[Diagnostic]) -> u8 {
    if format == Format::Text {
        fail(diagnostics, Format::Text);
    }
    result.failed(diagnostics);
    diagnostics
        .first()
        .map(|d| exit_code(d.code.exit_code()))
        .unwrap_or(1)
}

fn usage(result: &mut RunResult, message: &str, hint: &str) -> u8 {
    let _ = writeln!(std::io::stderr().lock(), "error: {message}\n  hint: {hint}");
    result.status = "usage".into();
    result.diagnostics.push(Diagnostic::new(
        ErrorCode::CompileIllegalRequest,
        "run",
        message,
        hint,
    ));
    2
}

fn run(args: &RunArgs, result: &mut RunResult) -> u8 {
    let format = args.format;
    let mut clock = PhaseClock::new();
    let chosen =
        match super::policy_arg::choose(args.policy_file.clone(), args.policy.clone(), "run") {
            Ok(p) => p,
            Err(code) => {
                result.status = "usage".into();
                return code;
            }
        };
    if let (Some(p), None) = (&args.policy_file, &args.policy)
        && !super::policy_arg::looks_like_policy(p)
    {
        return usage(
            result,
            &format!(
                "{} is not a policy file (.yaml, .yml or .json)",
                p.display()
            ),
            "put the command after `--`: safe-run run [POLICY] -- /absolute/path ARGS",
        );
    }
    if args.tty && !crate::terminal::stdin_is_terminal() {
        return usage(
            result,
            "-t needs stdin to be a terminal",
            "run it from an interactive terminal, or drop -t (a piped stdin reaches the workload without it)",
        );
    }
    if let Some(template) = &args.pool {
        if chosen.is_some() || !args.overrides.overrides().is_empty() || args.tty {
            return usage(
                result,
                "--pool runs the template's policy: it takes no policy file, no override and no -t",
                "give either a policy (a cold run) or --pool TEMPLATE (the daemon's policy)",
            );
        }
        if args.command.is_empty() {
            return usage(
                result,
                "--pool needs the command after `--`",
                "safe-run run --pool TEMPLATE -- /absolute/path ARGS",
            );
        }
        if let Some((message, hint)) = sr_policy::rules::command_problem(&args.command[0]) {
            let d = Diagnostic::new(ErrorCode::PolicyBadFormat, "runtime.command", message, hint);
            return fail_with(result, format, &[d]);
        }
        return super::pool_run::run(args, template, result);
    }
    if chosen.is_none() && args.command.is_empty() {
        return usage(
            result,
            "give a policy, a command, or both",
            "safe-run run POLICY, or safe-run run -- /usr/bin/python3 -c 'print(1)' (the built-in strict policy)",
        );
    }
    // A command given after `--` is checked like runtime.command, before anything exists.
    if let Some(cmd) = args.command.first()
        && let Some((message, hint)) = sr_policy::rules::command_problem(cmd)
    {
        let d = Diagnostic::new(ErrorCode::PolicyBadFormat, "runtime.command", message, hint);
        return fail_with(result, format, &[d]);
    }
    let config = match OperatorConfig::load() {
        Ok(c) => c,
        Err(d) => return fail_with(result, format, &[d]),
    };
    let overrides = args.overrides.overrides();
    let loaded = match &chosen {
        Some(path) => sr_policy::load_policy_file_with_overrides(path, &config, &overrides),
        None => super::policy_arg::load_builtin(&config, &overrides),
    };
    let policy = match loaded {
        Ok(p) => p,
        Err(report) => return fail_with(result, format, &report.diagnostics),
    };
    if format == Format::Text {
        for w in &policy.warnings {
            let _ = writeln!(std::io::stderr().lock(), "warning: {w}");
        }
    }
    result.diagnostics.extend(policy.warnings.iter().cloned());
    let mut bundle = match sr_compiler::compile(&policy, &config) {
        Ok(b) => b,
        Err(d) => return fail_with(result, format, &[d]),
    };
    result.policy = Some(PolicyRef {
        path: policy
            .source_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        name: bundle.policy_name.clone(),
        digest: bundle.policy_digest.clone(),
        overrides: bundle.policy_overrides.clone(),
    });
    if let Some((cmd, rest)) = args.command.split_first() {
        bundle.process.command = cmd.clone();
        bundle.process.args = rest.to_vec();
    }
    if bundle.backend.firecracker().is_some() {
        // The refusal names the override when the backend came from the command line.
        let (given, hint) = match policy.overrides.backend {
            Some(o) => (
                format!(
                    " (runtime.backend is {} from `{} {}`)",
                    o.value.name(),
                    o.origin,
                    o.value.name()
                ),
                "give --backend microvm with microvm.vmm: qemu in the operator config, or --backend sandbox",
            ),
            None => (
                String::new(),
                "use backend: microvm with microvm.vmm: qemu in the operator config, or backend: sandbox",
            ),
        };
        let d = Diagnostic::new(
            ErrorCode::RunLaunch,
            "runtime.backend",
            format!(
                "backend {} cannot run on this build yet{given}",
                bundle.backend.name()
            ),
            hint,
        );
        return fail_with(result, format, &[d]);
    }

    clock.lap("cli.policy");
    // Preflight: nothing is created before every host precondition holds.
    let base = PathBuf::from(&config.run_dir);
    let init_exe = match super::init::init_exe() {
        Ok(p) => p,
        Err(d) => return fail_with(result, format, &[d]),
    };
    let probes = RealProbes::of_host(init_exe.clone(), base.clone());
    let landlock = bundle.backend.sandbox().map(|s| &s.landlock);
    let needs = Needs {
        landlock_required: landlock.is_some_and(|l| l.required),
        landlock_min_abi: landlock.map_or(1, |l| l.min_abi),
    };
    let host = match preflight::check(&probes, needs) {
        Ok(h) => h,
        Err(errs) => {
            let ds: Vec<Diagnostic> = errs.iter().map(|e| e.to_diagnostic()).collect();
            return fail_with(result, format, &ds);
        }
    };

    clock.lap("cli.preflight");
    // Recover what earlier runs killed with SIGKILL left behind (never touches live runs).
    super::gc::collect_quietly(&base, &host.cgroup);
    clock.lap("cli.gc");

    // A spare run dir made by an earlier run is claimed by one rename (no inode allocations);
    // without one, the run dir is created as before.
    let (mut dir, refill) = match RunDir::claim_or_create(&base) {
        Ok(d) => d,
        Err(e) => return fail_with(result, format, &[e.to_diagnostic()]),
    };
    result.run_id = Some(dir.run_id.clone());
    result.run_dir = Some(dir.path.clone());
    // The signing key before anything runs, so that a run whose report could not be signed
    // never starts.
    let signer = if bundle.evidence_plan.sign {
        match super::key::load_signing_key(None) {
            Ok(k) => Some(k),
            Err(d) => {
                dir.discard_unwritten();
                return fail_with(result, format, &[d]);
            }
        }
    } else {
        None
    };
    let source = match &chosen {
        Some(path) => PolicySource::File(path),
        None => PolicySource::Text {
            name: "policy.yaml",
            text: super::policy_arg::BUILTIN_POLICY,
        },
    };
    let Started {
        mut recording,
        hook,
        sink,
    } = match Recording::start(dir, &policy, &bundle, source, &config) {
        Ok(s) => s,
        Err(d) => return fail_with(result, format, &[d]),
    };

    clock.lap("cli.prepare");
    // Opening the archive (its WAL and index files) overlaps the sandbox's run: once the report
    // is written, only the append is left on the path the user waits for.
    let archive = super::report::open_archive_in_background();
    let runner = Runner::new();
    let signals = sr_runner::forward_signals(runner.canceller()).ok();
    // Stdin goes to the workload when it is not a terminal (piped or redirected), or with -i
    // or -t.
    let stdin: Option<Box<dyn std::io::Read + Send>> =
        (args.interactive || args.tty || !std::io::stdin().is_terminal())
            .then(|| Box::new(std::io::stdin()) as Box<dyn std::io::Read + Send>);
    let mut tty_session = None;
    let tty = if args.tty {
        let size = crate::terminal::window_size(std::io::stdin()).unwrap_or((24, 80));
        let (tx, resizes) = std::sync::mpsc::channel();
        let watcher = crate::terminal::WindowWatcher::start(std::io::stdin(), move |r, c| {
            let _ = tx.send((r, c));
        })
        .ok();
        let raw = match crate::terminal::RawMode::enable(std::io::stdin()) {
            Ok(r) => r,
            Err(e) => {
                recording.dir.discard_unwritten();
                let d = Diagnostic::new(
                    ErrorCode::RunPreflight,
                    "run.tty",
                    format!("cannot put the terminal into raw mode: {e}"),
                    "run -t from an interactive terminal",
                );
                return fail_with(result, format, &[d]);
            }
        };
        tty_session = Some((raw, watcher));
        Some(sr_runner::life::TtyOptions { size, resizes })
    } else {
        None
    };
    let (outcome, sink) = runner.run(
        &recording.dir,
        &bundle,
        hook,
        sink,
        RunOptions {
            init_exe,
            cgroup_layout: host.cgroup,
            allowed_mount_prefixes: config.allowed_mount_prefixes.clone(),
            vmm_identity: (config.workload_host_uid, config.workload_host_gid),
            snapshots: config.microvm.snapshot_dir(),
            stdout: Box::new(std::io::stdout()),
            stderr: Box::new(std::io::stderr()),
            stdin,
            tty,
        },
    );
    // The terminal as it was, before anything of safe-run's own is printed.
    if let Some((raw, watcher)) = tty_session {
        if let Some(w) = watcher {
            w.close();
        }
        drop(raw);
    }
    if let Some(h) = signals {
        h.close();
    }
    clock.lap("cli.run");
    // The next run's spare is made while this run's evidence is synced (the event log, the
    // report and the archive commit wait on the disk): its inode allocations leave the path.
    // Made while the sandbox started instead, it slowed the start by more than it saved
    // (docs/run.md, "Third pass").
    let refill = refill.then(|| {
        let base = base.clone();
        std::thread::spawn(move || sr_runner::spare::refill(&base))
    });
    result.outcome(&outcome);
    let run_dir = recording.dir.path.clone();
    let Finished {
        report_path,
        errors: evidence_errors,
    } = recording.finish(&outcome, sink, signer.as_ref());
    result.report_path = report_path.clone();
    clock.lap("cli.report");
    let archive = super::report::opened_archive(archive);
    if report_path.is_some() {
        // The report is synced: index it and append its leaf (a failure only warns).
        super::report::archive_finished_run(&run_dir, archive, signer.as_ref(), args.quiet);
    }
    clock.lap("cli.archive");
    if let Some(t) = refill {
        // Done by now (measured: 0.001 ms to join); a failed refill only means the next run
        // creates its directory.
        let _ = t.join();
    }
    clock.lap("cli.refill");
    if format == Format::Text {
        summarize(args, &outcome, report_path.as_deref(), &clock);
    }
    if let RunStatus::LaunchFailed { diagnostic }
    | RunStatus::Stopped { diagnostic }
    | RunStatus::Lost { diagnostic } = &outcome.status
    {
        return fail_with(result, format, std::slice::from_ref(diagnostic));
    }
    if !evidence_errors.is_empty() {
        return fail_with(result, format, &evidence_errors);
    }
    exit_code(outcome.exit_code())
}

struct PhaseClock {
    last: Instant,
    laps: Vec<(&'static str, f64)>,
}

impl PhaseClock {
    fn new() -> Self {
        PhaseClock {
            last: Instant::now(),
            laps: Vec::new(),
        }
    }

    fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        self.laps
            .push((name, now.duration_since(self.last).as_secs_f64() * 1000.0));
        self.last = now;
    }
}

fn summarize(args: &RunArgs, o: &RunOutcome, report: Option<&Path>, clock: &PhaseClock) {
    let mut err = std::io::stderr().lock();
    if !args.quiet {
        let what = match &o.status {
            RunStatus::Exited { code } => format!("exited with code {code}"),
            RunStatus::Signaled { signal } => format!("killed by signal {signal}"),
            RunStatus::Timeout { limit_ms } => format!(
                "{}: timed out after {limit_ms} ms; the whole process tree was killed",
                ErrorCode::RunTimeout
            ),
            RunStatus::Oom {
                oom_kills,
                code: Some(code),
                ..
            } => format!(
                "exited with code {code}; the memory limit was reached and the OOM killer killed {oom_kills} process(es) in the sandbox"
            ),
            RunStatus::Oom { oom_kills, .. } => format!(
                "killed by the OOM killer ({oom_kills} kill(s)): the memory limit was reached"
            ),
            RunStatus::LaunchFailed { diagnostic } => {
                format!("could not start ({})", diagnostic.code)
            }
            RunStatus::Stopped { diagnostic } => format!(
                "stopped by safe-run: {} (the whole process tree was killed)",
                diagnostic.code
            ),
            RunStatus::OutputLimit {
                stream,
                limit_bytes,
            } => format!(
                "{}: {stream} passed its limit of {limit_bytes} bytes (runtime.output.onLimit: kill); the whole process tree was killed",
                ErrorCode::RunOutputLimit
            ),
            RunStatus::Interrupted { signal } => {
                format!("interrupted by signal {signal}; the sandbox was killed")
            }
            RunStatus::Destroyed { reason } => format!("destroyed ({reason:?})"),
            RunStatus::Lost { diagnostic } => format!(
                "ended in an unknown way ({}): {}",
                diagnostic.code, diagnostic.message
            ),
        };
        let _ = writeln!(
            err,
            "safe-run: run {} {what}; report: {}",
            o.run_id,
            report.map_or_else(|| "(not written)".to_owned(), |p| p.display().to_string())
        );
        for d in &o.cleanup.errors {
            let _ = writeln!(err, "safe-run: cleanup problem: {d}");
        }
    }
    if args.timings {
        let laps = clock.laps.iter().map(|(p, ms)| (*p, *ms));
        let phases = o.timings.phases_ms.iter().map(|(p, ms)| (p.as_str(), *ms));
        print_timings(&mut err, laps.chain(phases));
    }
}

/// `--timings`: one line per phase (ms), then this process's peak RSS (the init and the
/// workload are separate processes). The bench scripts read these lines.
pub(super) fn print_timings<'a>(
    err: &mut impl Write,
    phases: impl IntoIterator<Item = (&'a str, f64)>,
) {
    for (phase, ms) in phases {
        let _ = writeln!(err, "safe-run: timing {phase:<15} {ms:>9.3} ms");
    }
    if let Ok(usage) = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) {
        let _ = writeln!(err, "safe-run: peak RSS      {:>9} KiB", usage.max_rss());
    }
}
