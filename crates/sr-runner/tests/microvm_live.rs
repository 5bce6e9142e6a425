//! A microVM's life through the library, for real as root: QEMU boots the guest that
//! `safe-run artifact build` made, and one VM takes many execs (sequential and concurrent),
//! files in and out through the guest agent, an exec timeout that spares the VM, and a
//! planted symlink that points out of the guest's /tmp. Under CI=true a missing QEMU,
//! vhost-device-vsock or artifact is a failure; elsewhere a visible skip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sr_bundle::CompileBundle;
use sr_evidence::RecordingSink;
use sr_runner::life::backend::{BackendInputs, for_bundle};
use sr_runner::life::{ExecEnd, ExecEvent, ExecRequest, Sandbox, SandboxSpec};
use sr_runner::{NoNetwork, RunDir, RunStatus};

mod support;

fn artifacts_dir() -> PathBuf {
    std::env::var_os("SAFE_RUN_TEST_ARTIFACTS").map_or_else(
        || PathBuf::from("/var/lib/safe-run/artifacts"),
        PathBuf::from,
    )
}

fn ready(test: &str) -> bool {
    let dir = artifacts_dir();
    let root = nix::unistd::geteuid().is_root();
    let missing: Vec<String> = [
        PathBuf::from("/usr/bin/qemu-system-x86_64"),
        PathBuf::from("/usr/local/bin/vhost-device-vsock"),
        dir.join("vmlinuz"),
        dir.join("initramfs.img"),
        dir.join("rootfs.ext4"),
    ]
    .iter()
    .filter(|p| !p.exists())
    .map(|p| p.display().to_string())
    .collect();
    if root && missing.is_empty() {
        return true;
    }
    let why = format!("{test} needs root and {missing:?}");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why} (CI=true, so this is a failure, not a skip)");
    }
    eprintln!("SKIPPED: {why}");
    false
}

/// A microVM bundle compiled from a policy, booting the test artifacts.
fn vm_bundle(base: &std::path::Path) -> CompileBundle {
    let dir = artifacts_dir();
    let mut config = sr_policy::OperatorConfig {
        run_dir: base.display().to_string(),
        ..Default::default()
    };
    config.microvm.kernel = dir.join("vmlinuz").display().to_string();
    config.microvm.initramfs = dir.join("initramfs.img").display().to_string();
    config.microvm.rootfs = dir.join("rootfs.ext4").display().to_string();
    let policy = r#"{"version": 1, "name": "vm-live",
        "runtime": {"backend": "microvm", "command": "/bin/true", "args": [], "timeout": "300s"},
        "resources": {"cpus": 1, "memory": "256Mi"}, "mounts": [], "evidence": {"sign": false}}"#;
    let v = sr_policy::validate_str(
        policy,
        sr_policy::SourceFormat::Json,
        std::path::Path::new("/"),
        &config,
    )
    .unwrap();
    sr_compiler::compile(&v, &config).unwrap()
}

fn boot(base: &std::path::Path) -> (RunDir, Sandbox<RecordingSink>) {
    let layout = support::preflight_layout(base);
    let dir = RunDir::create(base).unwrap();
    let bundle = vm_bundle(base);
    let backend = for_bundle(
        &bundle,
        BackendInputs {
            init_exe: PathBuf::from("/nonexistent"),
            allowed_mount_prefixes: Vec::new(),
            vmm_identity: (65534, 65534),
            snapshots: None,
        },
    );
    let sb = Sandbox::create(
        &dir,
        SandboxSpec {
            bundle,
            network: Box::new(NoNetwork),
            sink: RecordingSink::default(),
            cgroup_layout: layout,
        },
        backend,
        Arc::default(),
    );
    assert!(sb.start_failure().is_none(), "{:?}", sb.start_failure());
    (dir, sb)
}

fn sh(script: &str) -> ExecRequest {
    ExecRequest {
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        ..ExecRequest::default()
    }
}

fn run<S: sr_evidence::EventSink + 'static>(
    sb: &Sandbox<S>,
    req: &ExecRequest,
) -> (ExecEnd, String) {
    let mut h = sb.exec(req).unwrap();
    let mut out = Vec::new();
    loop {
        match h.next_event() {
            Some(ExecEvent::Stdout(b)) => out.extend(b),
            Some(ExecEvent::Exit(r)) => return (r.end, String::from_utf8_lossy(&out).into_owned()),
            Some(_) => {}
            None => panic!("no exit"),
        }
    }
}

fn exit_code(end: &ExecEnd) -> Option<i32> {
    match end {
        ExecEnd::Exited(code) => Some(*code),
        _ => None,
    }
}

#[test]
fn one_vm_takes_many_execs_files_and_an_exec_timeout() {
    if !ready("one_vm_takes_many_execs_files_and_an_exec_timeout") {
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let (_dir, sb) = boot(base.path());

    // State survives between execs: the guest's /tmp is the VM's, not the exec's.
    let t = Instant::now();
    for i in 0..20 {
        let (end, out) = run(
            &sb,
            &sh(&format!("echo {i} >> /tmp/count; wc -l < /tmp/count")),
        );
        assert_eq!(exit_code(&end), Some(0));
        assert_eq!(out.trim(), (i + 1).to_string());
    }
    eprintln!("20 sequential execs in a VM: {:?}", t.elapsed());

    // Concurrent execs, each its own process and output.
    let handles: Vec<_> = (0..5)
        .map(|i| sb.exec(&sh(&format!("sleep 0.2; echo c{i}"))).unwrap())
        .collect();
    for (i, mut h) in handles.into_iter().enumerate() {
        let mut out = Vec::new();
        loop {
            match h.next_event() {
                Some(ExecEvent::Stdout(b)) => out.extend(b),
                Some(ExecEvent::Exit(r)) => {
                    assert_eq!(exit_code(&r.end), Some(0));
                    break;
                }
                Some(_) => {}
                None => panic!("no exit"),
            }
        }
        assert_eq!(String::from_utf8_lossy(&out), format!("c{i}\n"));
    }

    // Files in and out through the guest agent, 2 MiB (several frames).
    let data: Vec<u8> = (0..2u32 << 20).map(|i| (i % 251) as u8).collect();
    let put = sb
        .put_file(
            "/tmp/in.bin",
            0o640,
            data.len() as u64,
            &mut data.as_slice(),
        )
        .unwrap();
    let (_, sum) = run(&sb, &sh("sha256sum /tmp/in.bin | cut -d' ' -f1"));
    assert_eq!(format!("sha256:{}", sum.trim()), put.sha256);
    run(&sb, &sh("echo made in the guest > /tmp/out.txt"));
    let mut back = Vec::new();
    sb.get_file("/tmp/out.txt", &mut back).unwrap();
    assert_eq!(back, b"made in the guest\n");
    // The guest's root is read-only, and /etc/passwd is outside what files may reach.
    assert!(sb.put_file("/etc/x", 0o644, 1, &mut &b"x"[..]).is_err());
    // A symlink planted in /tmp that points out is not followed.
    run(&sb, &sh("ln -s /etc/passwd /tmp/link"));
    let mut leaked = Vec::new();
    assert!(sb.get_file("/tmp/link", &mut leaked).is_err());
    assert!(leaked.is_empty());

    // An exec timeout kills that exec, not the VM.
    let timed = ExecRequest {
        timeout: Some(Duration::from_millis(1500)),
        ..sh("sleep 60")
    };
    let t = Instant::now();
    let (end, _) = run(&sb, &timed);
    assert!(matches!(end, ExecEnd::TimedOut), "{end:?}");
    assert!(t.elapsed() < Duration::from_secs(30));
    let (end, out) = run(&sb, &sh("echo still here"));
    assert_eq!((exit_code(&end), out.as_str()), (Some(0), "still here\n"));

    let (outcome, _) = sb.destroy(RunStatus::Exited { code: 0 }, None);
    assert!(
        outcome.cleanup.errors.is_empty(),
        "{:?}",
        outcome.cleanup.errors
    );
}
