//! Runner-level end-to-end tests: real namespaces, mounts, cgroups, as root.
//!
//! This test binary is its own sandbox init: it runs with `harness = false`, and when the
//! runner re-executes it as `<this binary> __init` it dispatches to
//! `sr_runner::sandbox::init::main()` before anything else (the seam the runner's `init_exe`
//! option provides). Bundles are built by hand here, so these tests do not depend on the
//! compiler. Without root they FAIL under CI=true and print SKIPPED otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use sr_compiler::bundle::*;
use sr_evidence::RecordingSink;
use sr_runner::{NoNetwork, RunDir, RunOptions, RunStatus, Runner};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn bundle(cmd: &str, args: &[&str]) -> CompileBundle {
    let mut mounts = vec![MountStep::Root {
        source: "host".into(),
    }];
    for d in [
        "/bin", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/sbin", "/usr",
    ] {
        mounts.push(MountStep::Bind {
            source: d.into(),
            target: d.into(),
            read_only: true,
            origin: "rootfs".into(),
        });
    }
    mounts.push(MountStep::Tmpfs {
        target: "/tmp".into(),
        size_bytes: 16 << 20,
        mode: 0o1777,
    });
    mounts.push(MountStep::Proc {
        target: "/proc".into(),
    });
    mounts.push(MountStep::Dev {
        target: "/dev".into(),
        devices: ["full", "null", "random", "tty", "urandom", "zero"]
            .map(String::from)
            .to_vec(),
    });
    let rules = ["/bin", "/etc", "/lib", "/lib64", "/proc", "/sbin", "/usr"]
        .iter()
        .map(|p| LandlockRule {
            path: (*p).into(),
            access: "ro".into(),
        })
        .chain([LandlockRule {
            path: "/tmp".into(),
            access: "rw".into(),
        }])
        .collect();
    CompileBundle {
        bundle_version: 1,
        policy_digest: "sha256:00".into(),
        policy_name: "runner-test".into(),
        backend: "sandbox".into(),
        process: ProcessPlan {
            command: cmd.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::from([("PATH".into(), "/usr/bin:/bin".into())]),
            cwd: "/".into(),
            uid: 1000,
            gid: 1000,
            timeout_ms: 20_000,
            output: OutputPlan {
                max_bytes: 64 << 20,
                on_limit: OutputAction::Truncate,
            },
        },
        sandbox_plan: Some(SandboxPlan {
            namespaces: ["cgroup", "ipc", "mount", "net", "pid", "user", "uts"]
                .map(String::from)
                .to_vec(),
            host_uid: 65534,
            host_gid: 65534,
            hostname: "safe-run".into(),
            mounts,
            landlock: LandlockPlan {
                required: true,
                min_abi: 1,
                rules,
            },
            seccomp: SeccompPlan {
                profile_id: "sr-default-v2".into(),
                deny_action: "errno:EPERM".into(),
                denied_syscalls: ["bpf", "keyctl", "mount", "ptrace", "setns", "unshare"]
                    .map(String::from)
                    .to_vec(),
                denied_clone_flags: ["CLONE_NEWNS", "CLONE_NEWUSER"].map(String::from).to_vec(),
                enosys_syscalls: vec!["clone3".into()],
                allowed_socket_families: owned(&sr_compiler::seccomp::ALLOWED_SOCKET_FAMILIES),
                allowed_netlink_protocols: owned(&sr_compiler::seccomp::ALLOWED_NETLINK_PROTOCOLS),
                allowed_inet_socket_types: owned(&sr_compiler::seccomp::ALLOWED_INET_SOCKET_TYPES),
                allowed_ip_protocols: owned(&sr_compiler::seccomp::ALLOWED_IP_PROTOCOLS),
            },
            file_locks: Default::default(),
            rlimits: BTreeMap::from([("nofile".into(), 256)]),
            no_new_privs: true,
            capabilities: vec![],
        }),
        firecracker_plan: None,
        cgroup_plan: CgroupPlan {
            name: "safe-run-<runId>".into(),
            memory_max_bytes: 256 << 20,
            pids_max: 64,
            cpu_quota_us: 100_000,
            cpu_period_us: 100_000,
        },
        network_plan: None,
        evidence_plan: EvidencePlan {
            events: vec![],
            sign: false,
            sample_interval_ms: 100,
        },
    }
}

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
        event_type: &str,
        payload: serde_json::Value,
    ) -> Result<(), sr_evidence::EmitError> {
        if self.failed || self.fail_on == Some(event_type) {
            self.failed = true;
            return Err(sr_evidence::EmitError {
                event_type: event_type.to_owned(),
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
    let probes = sr_runner::preflight::RealProbes {
        cgroup_root: PathBuf::from("/sys/fs/cgroup"),
        init_exe: std::env::current_exe().unwrap(),
        run_base: base.path().to_path_buf(),
    };
    let facts = sr_runner::preflight::check(
        &probes,
        sr_runner::preflight::Needs {
            landlock_required: true,
            landlock_min_abi: 1,
        },
    )
    .map_err(|e| e.iter().map(|e| e.to_string()).collect::<Vec<_>>())
    .unwrap();
    let dir = RunDir::create(base.path()).unwrap();
    let out = Captured::default();
    let err = Captured::default();
    let mut sink = FailingSink {
        inner: RecordingSink::default(),
        fail_on,
        failed: false,
    };
    let outcome = Runner::new().run(
        &dir,
        b,
        &mut NoNetwork,
        &mut sink,
        RunOptions {
            init_exe: std::env::current_exe().unwrap(),
            cgroup_layout: facts.cgroup,
            allowed_mount_prefixes: vec!["/tmp".into(), "/srv".into()],
            stdout: Box::new(out.clone()),
            stderr: Box::new(err.clone()),
        },
    );
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
        if let Some(sp) = b.sandbox_plan.as_mut() {
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
    if std::env::args().nth(1).as_deref() == Some("__init") {
        return ExitCode::from(u8::try_from(sr_runner::sandbox::init::main()).unwrap_or(1));
    }
    if !nix::unistd::geteuid().is_root() {
        if std::env::var("CI").as_deref() == Ok("true") {
            eprintln!("FAILED: the sandbox runner tests need root (CI=true)");
            return ExitCode::FAILURE;
        }
        eprintln!("SKIPPED: the sandbox runner tests need root");
        return ExitCode::SUCCESS;
    }
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
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut failed = 0;
    for (name, f) in tests {
        if !filters.is_empty() && !filters.iter().any(|x| name.contains(x.as_str())) {
            continue;
        }
        let ok = std::panic::catch_unwind(f).is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        failed += usize::from(!ok);
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn owned(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}
