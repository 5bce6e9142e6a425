//! Runner-level end-to-end tests: real namespaces, mounts, cgroups, as root.
//!
//! This test binary is its own sandbox init: it runs with `harness = false`, and when the
//! runner re-executes it as `<this binary> __init` it dispatches to
//! `sr_runner::sandbox::init::main()` before anything else (the seam the runner's `init_exe`
//! option provides). Bundles are built by hand here, so these tests do not depend on the
//! compiler. Without root they FAIL under CI=true and print SKIPPED otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::ExitCode;

use sr_bundle::*;

mod support;
use sr_evidence::RecordingSink;
use sr_runner::{NoNetwork, RunDir, RunOptions, RunStatus, Runner};
use support::{Captured, bundle};

struct Ran {
    outcome: sr_runner::RunOutcome,
    stdout: String,
    stderr: String,
    sink: RecordingSink,
    _base: tempfile::TempDir,
}

/// Records events like [`RecordingSink`], but fails every emit from the first event of type
/// `fail_on` onwards, as a full disk would.
struct FailingSink {
    inner: RecordingSink,
    fail_on: Option<&'static str>,
    failed: bool,
}

impl sr_evidence::EventSink for FailingSink {
    fn emit(
        &mut self,
        event_type: sr_evidence::events::EventType,
        payload: serde_json::Value,
    ) -> Result<(), sr_evidence::EmitError> {
        if self.failed || self.fail_on == Some(event_type.as_str()) {
            self.failed = true;
            return Err(sr_evidence::EmitError {
                event_type,
                reason: "No space left on device (test)".into(),
            });
        }
        self.inner.emit(event_type, payload)
    }
}

fn run(b: &CompileBundle) -> Ran {
    run_failing_on(b, None)
}

fn run_failing_on(b: &CompileBundle, fail_on: Option<&'static str>) -> Ran {
    let base = tempfile::tempdir().unwrap();
    let layout = support::preflight_layout(base.path());
    let dir = RunDir::create(base.path()).unwrap();
    let out = Captured::default();
    let err = Captured::default();
    let sink = FailingSink {
        inner: RecordingSink::default(),
        fail_on,
        failed: false,
    };
    let (outcome, sink) = Runner::new().run(
        &dir,
        b,
        Box::new(NoNetwork),
        sink,
        RunOptions {
            init_exe: std::env::current_exe().unwrap(),
            cgroup_layout: layout,
            allowed_mount_prefixes: vec!["/tmp".into(), "/srv".into()],
            vmm_identity: (65534, 65534),
            snapshots: None,
            stdout: Box::new(out.clone()),
            stderr: Box::new(err.clone()),
            stdin: None,
            tty: None,
        },
    );
    let sink = sink.expect("the sink comes back");
    Ran {
        outcome,
        stdout: out.text(),
        stderr: err.text(),
        sink: sink.inner,
        _base: base,
    }
}

fn sh(script: &str) -> CompileBundle {
    bundle("/bin/sh", &["-c", script])
}

// ---------------------------------------------------------------- tests

fn echo_and_exit_code() {
    let r = run(&sh("echo hello; echo oops >&2; exit 3"));
    assert_eq!(
        r.outcome.status,
        RunStatus::Exited { code: 3 },
        "{:?} {}",
        r.outcome.status,
        r.stderr
    );
    assert_eq!(r.stdout, "hello\n");
    assert_eq!(r.stderr, "oops\n");
    assert_eq!(r.outcome.stdout.size, 6);
    assert!(r.outcome.stdout.sha256.starts_with("sha256:"));
    assert_eq!(
        std::fs::read_to_string(&r.outcome.stdout.path).unwrap(),
        "hello\n"
    );
    let w = r.outcome.enforcement.workload.clone().expect("facts");
    assert_eq!(w.uid_map, "1000 65534 1");
    assert!(w.no_new_privs);
    assert_eq!(w.landlock.status, "fully_enforced");
    assert!(w.seccomp_digest.starts_with("sha256:"));
    let types = r.sink.types();
    for t in [
        "run.prepare",
        "sandbox.enforced",
        "process.started",
        "process.exited",
        "cleanup.done",
    ] {
        assert!(types.contains(&t), "missing {t} in {types:?}");
    }
    assert!(
        r.outcome.cleanup.errors.is_empty(),
        "{:?}",
        r.outcome.cleanup.errors
    );
}

fn identity_inside() {
    let r = run(&sh("id -u; id -g; hostname; cat /proc/self/uid_map"));
    assert!(
        r.stdout.starts_with("1000\n1000\nsafe-run\n"),
        "{}{}",
        r.stdout,
        r.stderr
    );
}

fn missing_binary_is_a_launch_error() {
    let r = run(&bundle("/usr/bin/definitely-not-here", &[]));
    match &r.outcome.status {
        RunStatus::LaunchFailed { diagnostic } => {
            assert_eq!(diagnostic.path, "launch.exec");
            assert_eq!(diagnostic.code, sr_common::ErrorCode::RunLaunch);
        }
        s => panic!("{s:?}"),
    }
    assert_eq!(r.outcome.exit_code(), 5);
}

fn timeout_kills_the_tree() {
    let mut b = sh("sleep 1000 & sleep 1000");
    b.process.timeout_ms = 300;
    let t = std::time::Instant::now();
    let r = run(&b);
    assert!(
        matches!(r.outcome.status, RunStatus::Timeout { .. }),
        "{:?}",
        r.outcome.status
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(r.outcome.exit_code(), 6);
    assert!(r.sink.types().contains(&"run.timeout"));
}

/// An event that cannot be written before the workload starts means it never starts.
fn evidence_failure_before_start_prevents_the_run() {
    let r = run_failing_on(&sh("echo SHOULD-NOT-RUN"), Some("run.prepare"));
    match &r.outcome.status {
        RunStatus::LaunchFailed { diagnostic } => {
            assert_eq!(diagnostic.code.as_str(), "SR-EVD-001", "{diagnostic}")
        }
        other => panic!("expected a launch failure, got {other:?}"),
    }
    assert!(!r.stdout.contains("SHOULD-NOT-RUN"), "{}", r.stdout);
    assert_eq!(r.outcome.exit_code(), 7);
}

/// An event that cannot be written while the workload runs stops it (the whole tree), long
/// before its own end.
fn evidence_failure_while_running_stops_the_run() {
    let t = std::time::Instant::now();
    let r = run_failing_on(&sh("sleep 1000 & sleep 1000"), Some("resource.sample"));
    match &r.outcome.status {
        RunStatus::Stopped { diagnostic } => {
            assert_eq!(diagnostic.code.as_str(), "SR-EVD-001", "{diagnostic}")
        }
        other => panic!("expected the run to be stopped, got {other:?}"),
    }
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(r.outcome.exit_code(), 7);
    assert!(r.sink.types().contains(&"process.started"));
}

/// The runner re-checks mount sources through the fd itself, whatever the validator said: a
/// symlink source, a source whose path crosses a symlink, and a source outside the allowed
/// prefixes are all refused at mount time.
fn runner_refuses_unsafe_mount_sources() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink("/etc", dir.path().join("link")).unwrap();
    std::os::unix::fs::symlink(&real, dir.path().join("dirlink")).unwrap();
    let cases = [
        (dir.path().join("link"), "symlink"),
        (dir.path().join("dirlink").join("."), "resolves to"),
        (PathBuf::from("/etc"), "not under an allowed prefix"),
    ];
    for (source, why) in cases {
        let mut b = sh("cat /data/passwd && echo ESCAPED");
        if let BackendPlan::Sandbox(sp) = &mut b.backend {
            sp.mounts.push(MountStep::Bind {
                source: source.display().to_string(),
                target: "/data".into(),
                read_only: true,
                origin: "policy".into(),
            });
        }
        let r = run(&b);
        assert!(!r.stdout.contains("ESCAPED"), "{source:?}: {}", r.stdout);
        match &r.outcome.status {
            RunStatus::LaunchFailed { diagnostic } => {
                assert_eq!(diagnostic.path, "launch.mounts", "{source:?}");
                assert!(
                    diagnostic.message.contains(why),
                    "{source:?}: {}",
                    diagnostic.message
                );
            }
            s => panic!("{source:?}: {s:?}"),
        }
    }
}

/// x32 aliases of denied syscalls (nr | 0x40000000) are refused too.
fn x32_aliases_are_refused() {
    let r = run(&bundle(
        "/usr/bin/python3",
        &[
            "-c",
            "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nr = libc.syscall(0x40000000 | 165, 0, 0, 0, 0, 0)\nprint(r, ctypes.get_errno())",
        ],
    ));
    assert_eq!(r.stdout.trim(), "-1 38", "{} {}", r.stdout, r.stderr);
}

fn isolation_basics() {
    let r = run(&sh(
        "cat /etc/shadow && echo SHADOW-READ; touch /usr/x && echo USR-WRITE; touch /tmp/ok && echo TMP-OK; ls /proc | grep -c '^[0-9]'",
    ));
    assert!(!r.stdout.contains("SHADOW-READ"), "{}", r.stdout);
    assert!(!r.stdout.contains("USR-WRITE"), "{}", r.stdout);
    assert!(r.stdout.contains("TMP-OK"), "{}", r.stderr);
}

fn main() -> ExitCode {
    let tests: &[(&str, fn())] = &[
        ("echo_and_exit_code", echo_and_exit_code),
        ("identity_inside", identity_inside),
        (
            "missing_binary_is_a_launch_error",
            missing_binary_is_a_launch_error,
        ),
        ("timeout_kills_the_tree", timeout_kills_the_tree),
        ("isolation_basics", isolation_basics),
        (
            "runner_refuses_unsafe_mount_sources",
            runner_refuses_unsafe_mount_sources,
        ),
        ("x32_aliases_are_refused", x32_aliases_are_refused),
        (
            "evidence_failure_before_start_prevents_the_run",
            evidence_failure_before_start_prevents_the_run,
        ),
        (
            "evidence_failure_while_running_stops_the_run",
            evidence_failure_while_running_stops_the_run,
        ),
    ];
    support::main(tests)
}
