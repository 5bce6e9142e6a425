//! The Firecracker driver's whole lifecycle against a fake jailer (a shell script that records
//! its arguments and becomes a long-lived process, as the jailer becomes Firecracker) and a
//! fake Firecracker API (`firecracker_fake/fake_api.rs`, checked against Firecracker's
//! published API shapes). Every failure path must leave no process and no jail behind.
//! Snapshots (making one, restoring one) are in `firecracker_fake/snapshots.rs`.
//! Plus the opt-in real run (`SAFE_RUN_FIRECRACKER_E2E=1`, ignored otherwise): a boot, a
//! snapshot of that VM's shape, and a run restored from it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "firecracker_fake/fake_api.rs"]
mod fake_api;
#[path = "firecracker_fake/snapshots.rs"]
mod snapshots;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fake_api::{FakeFirecracker, Guest};
use sr_bundle::{BackendPlan, CompileBundle};
use sr_runner::AttachedNetwork;
use sr_runner::cgroup::{Layout, RunCgroup};
use sr_runner::life::backend::{Backend, StartContext};
use sr_runner::microvm::firecracker::api::{self, Api, ApiRequest};
use sr_runner::microvm::firecracker::{FirecrackerVm, Timeouts};
use sr_runner::network_facts::NetworkFacts;
use sr_runner::outcome::{CleanupReport, EnforcementFacts, RunStatus};

const RUN_ID: &str = "0123456789ab";

struct Env {
    _tmp: tempfile::TempDir,
    run_dir: PathBuf,
    bundle: CompileBundle,
    argv_file: PathBuf,
    pid_file: PathBuf,
    cgroup_root: PathBuf,
}

/// How the fake jailer behaves.
#[derive(Clone, Copy, PartialEq)]
enum Jailer {
    /// Records, then lives on (as Firecracker would).
    Runs,
    /// Complains and exits 1.
    Fails,
}

fn env(jailer: Jailer) -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let run_dir = runs.join(RUN_ID);
    std::fs::create_dir_all(&run_dir).unwrap();
    let art = tmp.path().join("artifacts");
    std::fs::create_dir_all(&art).unwrap();
    std::fs::write(art.join("vmlinux"), b"fake kernel").unwrap();
    std::fs::write(art.join("rootfs.ext4"), b"fake rootfs").unwrap();
    let argv_file = tmp.path().join("jailer.argv");
    let pid_file = tmp.path().join("jailer.pid");
    let script = tmp.path().join("jailer");
    let body = match jailer {
        Jailer::Runs => "exec sleep 1000".to_owned(),
        Jailer::Fails => "echo 'jailer: Failed to open /dev/kvm' >&2; exit 1".to_owned(),
    };
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho $$ > {pid}\nprintf '%s\\n' \"$@\" > {argv}.tmp\nmv {argv}.tmp {argv}\n{body}\n",
            pid = pid_file.display(),
            argv = argv_file.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut config = sr_policy::OperatorConfig {
        run_dir: runs.display().to_string(),
        ..sr_policy::OperatorConfig::default()
    };
    config.firecracker.jailer_bin = script.display().to_string();
    let policy_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/compile_snapshot/firecracker_none.yaml");
    let policy = sr_policy::load_policy_file(&policy_path, &config).unwrap();
    let mut bundle = sr_compiler::compile(&policy, &config).unwrap();
    let BackendPlan::Firecracker(plan) = &mut bundle.backend else {
        panic!("not a firecracker bundle")
    };
    for a in &mut plan.artifacts {
        a.path = art.join(&a.jail_path).display().to_string();
        a.expected_sha256 = None;
    }
    Env {
        cgroup_root: tmp.path().join("cgroup"),
        _tmp: tmp,
        run_dir,
        bundle,
        argv_file,
        pid_file,
    }
}

fn vm() -> FirecrackerVm {
    FirecrackerVm::new(
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    )
    .with_timeouts(Timeouts {
        api_socket: Duration::from_secs(3),
        api_request: Duration::from_secs(3),
        boot: Duration::from_millis(800),
    })
}

/// A run cgroup of `layout`'s shape under a plain directory (the driver only reads its
/// layout and paths, and removes what the jailer made inside).
fn cgroup(e: &Env, v1: bool) -> RunCgroup {
    let r = &e.cgroup_root;
    let (layout, paths) = if v1 {
        let ctrl = |c: &str| r.join(c);
        (
            Layout::V1 {
                memory: ctrl("memory"),
                pids: ctrl("pids"),
                cpu: ctrl("cpu,cpuacct"),
                cpuacct: Some(ctrl("cpu,cpuacct")),
            },
            ["memory", "pids", "cpu,cpuacct"]
                .iter()
                .map(|c| ctrl(c).join("safe-run").join(format!("safe-run-{RUN_ID}")))
                .collect(),
        )
    } else {
        (
            Layout::V2 { root: r.clone() },
            vec![r.join("safe-run").join(format!("safe-run-{RUN_ID}"))],
        )
    };
    for p in &paths {
        std::fs::create_dir_all(p).unwrap();
    }
    RunCgroup {
        layout,
        paths,
        limits_written: Default::default(),
    }
}

/// Plays the jailer's part the script cannot: once it has run, make the cgroup it would make
/// and (unless `api` is false) let "Firecracker" listen on its API socket.
fn play_firecracker(
    e: &Env,
    cg: Option<&RunCgroup>,
    fake: Option<FakeFirecracker>,
) -> std::thread::JoinHandle<()> {
    let argv_file = e.argv_file.clone();
    let root = e.run_dir.join("jail/firecracker").join(RUN_ID).join("root");
    let cg_dirs: Vec<PathBuf> = cg
        .map(|c| c.paths.iter().map(|p| p.join(RUN_ID)).collect())
        .unwrap_or_default();
    std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(5);
        while !argv_file.exists() {
            if Instant::now() > until {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        for d in cg_dirs {
            std::fs::create_dir_all(d).unwrap();
        }
        if let Some(f) = fake {
            f.serve(&root.join("api.socket"));
        }
    })
}

fn ctx<'a>(
    e: &'a Env,
    cg: Option<&'a RunCgroup>,
    enforcement: &'a mut EnforcementFacts,
    phases: &'a mut std::collections::BTreeMap<String, f64>,
) -> StartContext<'a> {
    StartContext {
        run_id: RUN_ID,
        run_dir: &e.run_dir,
        bundle: &e.bundle,
        cgroup: cg,
        deadline: Instant::now() + Duration::from_secs(30),
        enforcement,
        phases,
        network_namespace: None,
    }
}

fn no_network() -> AttachedNetwork {
    AttachedNetwork {
        resolv_conf: None,
        facts: NetworkFacts::None,
        guest: None,
        steps: Vec::new(),
    }
}

/// Starts and connects; returns the outcome.
fn run(e: &Env, vm: &mut FirecrackerVm, cg: Option<&RunCgroup>) -> Result<(), RunStatus> {
    let mut enf = EnforcementFacts::default();
    let mut phases = Default::default();
    vm.start(ctx(e, cg, &mut enf, &mut phases))?;
    let stream = vm.connect(
        &no_network(),
        Instant::now() + Duration::from_secs(30),
        &mut enf,
    )?;
    assert!(enf.microvm.is_some());
    drop(stream);
    Ok(())
}

/// Stops and checks that nothing is left: no process, no jail, no jailer cgroup.
fn stop_and_check(e: &Env, vm: &mut FirecrackerVm, cg: Option<&RunCgroup>) -> CleanupReport {
    let mut cleanup = CleanupReport::default();
    vm.stop(&mut cleanup);
    vm.remove_files(&e.run_dir, &mut cleanup);
    assert!(cleanup.errors.is_empty(), "{:?}", cleanup.errors);
    assert!(!e.run_dir.join("jail").exists(), "the jail is left behind");
    if let Ok(pid) = std::fs::read_to_string(&e.pid_file) {
        let pid = pid.trim();
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "the jailer/Firecracker process {pid} is left behind"
        );
    }
    for p in cg.map(|c| c.paths.clone()).unwrap_or_default() {
        assert!(p.exists(), "the run's own cgroup is the run's to remove");
        assert!(
            !p.join(RUN_ID).exists(),
            "the jailer's cgroup is left behind"
        );
    }
    cleanup
}

fn argv(e: &Env) -> Vec<String> {
    std::fs::read_to_string(&e.argv_file)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn launch_phase(st: &RunStatus) -> (String, String) {
    match st {
        RunStatus::LaunchFailed { diagnostic } => {
            let text = format!("{} {}", diagnostic.message, diagnostic.hint);
            (diagnostic.path.clone(), text)
        }
        other => panic!("not a launch failure: {other:?}"),
    }
}

#[test]
fn a_whole_life_on_cgroup_v2() {
    let e = env(Jailer::Runs);
    let cg = cgroup(&e, false);
    let root = e.run_dir.join("jail/firecracker").join(RUN_ID).join("root");
    let fake = FakeFirecracker::new(&root, None, Guest::Agent);
    let player = play_firecracker(&e, Some(&cg), Some(fake.clone()));
    let mut vm = vm();
    run(&e, &mut vm, Some(&cg)).unwrap();
    player.join().unwrap();
    let a = argv(&e);
    let chroot = e.run_dir.join("jail").display().to_string();
    let expected: Vec<String> = [
        "--id",
        RUN_ID,
        "--exec-file",
        "/usr/local/bin/firecracker",
        "--uid",
        "65534",
        "--gid",
        "65534",
        "--chroot-base-dir",
        &chroot,
        "--cgroup-version",
        "2",
        "--parent-cgroup",
        &format!("safe-run/safe-run-{RUN_ID}"),
        "--cgroup",
        &format!("memory.max={}", e.bundle.cgroup_plan.memory_max_bytes),
        "--cgroup",
        &format!("pids.max={}", e.bundle.cgroup_plan.pids_max),
        "--cgroup",
        &format!("cpu.max={} 100000", e.bundle.cgroup_plan.cpu_quota_us),
        "--",
        "--api-sock",
        "/api.socket",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(a, expected);
    assert_eq!(
        fake.paths(),
        [
            "/logger",
            "/metrics",
            "/machine-config",
            "/boot-source",
            "/drives/rootfs",
            "/vsock",
            "/actions"
        ]
    );
    assert!(fake.seen.lock().unwrap().iter().all(|s| s.status == 204));
    let facts = vm.facts().clone();
    assert_eq!(facts.vmm, "firecracker");
    assert_eq!(facts.guest_kernel, "6.1.0-fake");
    assert_eq!(facts.vcpus, 2);
    assert!(facts.artifacts["kernel"].starts_with("sha256:"));
    // The artifacts were linked into the jail, and Firecracker's log files made for it.
    assert!(root.join("vmlinux").is_file() && root.join("rootfs.ext4").is_file());
    let cleanup = stop_and_check(&e, &mut vm, Some(&cg));
    assert!(cleanup.removed.iter().any(|r| r.starts_with("jail:")));
    assert!(
        e.run_dir.join("vm/firecracker.log").exists(),
        "Firecracker's log is kept"
    );
    assert!(e.run_dir.join("vm/console.log").exists());
}

#[test]
fn jailer_arguments_on_cgroup_v1() {
    let e = env(Jailer::Runs);
    let cg = cgroup(&e, true);
    let root = e.run_dir.join("jail/firecracker").join(RUN_ID).join("root");
    let fake = FakeFirecracker::new(&root, None, Guest::Agent);
    let player = play_firecracker(&e, Some(&cg), Some(fake));
    let mut vm = vm();
    run(&e, &mut vm, Some(&cg)).unwrap();
    player.join().unwrap();
    let a = argv(&e);
    let p = &e.bundle.cgroup_plan;
    let tail: Vec<String> = a[10..].to_vec();
    assert_eq!(
        tail,
        [
            "--cgroup-version".to_owned(),
            "1".into(),
            "--parent-cgroup".into(),
            format!("safe-run/safe-run-{RUN_ID}"),
            "--cgroup".into(),
            format!("memory.limit_in_bytes={}", p.memory_max_bytes),
            "--cgroup".into(),
            format!("pids.max={}", p.pids_max),
            "--cgroup".into(),
            "cpu.cfs_period_us=100000".into(),
            "--cgroup".into(),
            format!("cpu.cfs_quota_us={}", p.cpu_quota_us),
            "--".into(),
            "--api-sock".into(),
            "/api.socket".into(),
        ]
    );
    stop_and_check(&e, &mut vm, Some(&cg));
}

#[test]
fn a_jailer_that_fails_leaves_nothing() {
    let e = env(Jailer::Fails);
    let mut vm = vm();
    let err = run(&e, &mut vm, None).unwrap_err();
    let (phase, text) = launch_phase(&err);
    assert_eq!(phase, "launch.vmm");
    assert!(text.contains("Failed to open /dev/kvm"), "{text}");
    stop_and_check(&e, &mut vm, None);
}

#[test]
fn a_missing_jailer_leaves_nothing() {
    let mut e = env(Jailer::Runs);
    let BackendPlan::Firecracker(plan) = &mut e.bundle.backend else {
        unreachable!()
    };
    plan.jailer_bin = "/nonexistent/jailer".into();
    let mut vm = vm();
    let (phase, text) = launch_phase(&run(&e, &mut vm, None).unwrap_err());
    assert_eq!(phase, "launch.vmm");
    assert!(text.contains("/nonexistent/jailer"), "{text}");
    stop_and_check(&e, &mut vm, None);
}

#[test]
fn an_api_socket_that_never_appears_leaves_nothing() {
    let e = env(Jailer::Runs);
    let cg = cgroup(&e, false);
    let player = play_firecracker(&e, Some(&cg), None);
    let mut vm = vm();
    let t = Instant::now();
    let (phase, text) = launch_phase(&run(&e, &mut vm, Some(&cg)).unwrap_err());
    player.join().unwrap();
    assert_eq!(phase, "launch.api");
    assert!(text.contains("did not appear"), "{text}");
    assert!(t.elapsed() < Duration::from_secs(10));
    stop_and_check(&e, &mut vm, Some(&cg));
}

#[test]
fn a_refusal_at_each_step_is_named_and_leaves_nothing() {
    let steps = [
        ("/logger", "launch.api.logger"),
        ("/metrics", "launch.api.metrics"),
        ("/machine-config", "launch.api.machine-config"),
        ("/boot-source", "launch.api.boot-source"),
        ("/drives/rootfs", "launch.api.drives.rootfs"),
        ("/vsock", "launch.api.vsock"),
        ("/actions", "launch.api.instance-start"),
    ];
    for (path, step) in steps {
        let e = env(Jailer::Runs);
        let root = e.run_dir.join("jail/firecracker").join(RUN_ID).join("root");
        let fake = FakeFirecracker::new(&root, Some(path), Guest::Agent);
        let player = play_firecracker(&e, None, Some(fake.clone()));
        let mut vm = vm();
        let (phase, text) = launch_phase(&run(&e, &mut vm, None).unwrap_err());
        player.join().unwrap();
        assert_eq!(phase, step);
        assert!(
            text.contains(&format!("refused by the test at {path}")),
            "{text}"
        );
        assert!(text.contains("(400)"), "{text}");
        assert_eq!(
            fake.paths().last().map(String::as_str),
            Some(path),
            "stops at the refusal"
        );
        stop_and_check(&e, &mut vm, None);
    }
}

#[test]
fn a_guest_that_never_answers_is_a_boot_timeout_and_leaves_nothing() {
    let e = env(Jailer::Runs);
    let root = e.run_dir.join("jail/firecracker").join(RUN_ID).join("root");
    let fake = FakeFirecracker::new(&root, None, Guest::Silent);
    let player = play_firecracker(&e, None, Some(fake));
    let mut vm = vm();
    let t = Instant::now();
    let (phase, text) = launch_phase(&run(&e, &mut vm, None).unwrap_err());
    player.join().unwrap();
    assert_eq!(phase, "launch.boot");
    assert!(
        text.contains("the guest agent did not answer within"),
        "{text}"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    stop_and_check(&e, &mut vm, None);
}

#[test]
fn the_fake_answers_bad_bodies_as_firecracker_does() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = FakeFirecracker::new(tmp.path(), None, Guest::Silent);
    let sock = tmp.path().join("api.socket");
    fake.serve(&sock);
    let mut client = api::UnixApi::new(&sock, Duration::from_secs(3));
    let send = |c: &mut api::UnixApi, path: &str, body: serde_json::Value| {
        c.send(&ApiRequest {
            step: "t".into(),
            method: "PUT",
            path: path.into(),
            body,
        })
        .unwrap()
    };
    let r = send(
        &mut client,
        "/machine-config",
        serde_json::json!({"vcpu_count": 2, "mem_size_mib": 128, "bogus": 1}),
    );
    assert_eq!(r.status, 400);
    assert!(api::fault_message(&r.body).contains("unknown field `bogus`"));
    let r = send(&mut client, "/vsock", serde_json::json!({"guest_cid": 3}));
    assert_eq!(r.status, 400);
    assert!(api::fault_message(&r.body).contains("missing field `uds_path`"));
    let r = send(
        &mut client,
        "/actions",
        serde_json::json!({"action_type": "InstanceStart"}),
    );
    assert_eq!(r.status, 400, "no kernel configured yet");
    let r = send(
        &mut client,
        "/machine-config",
        serde_json::json!({"vcpu_count": 2, "mem_size_mib": 128}),
    );
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
}

/// A real Firecracker run: only on a KVM host with Firecracker, its jailer and a Firecracker
/// guest kernel and rootfs (docs/microvm.md, "Firecracker on KVM hosts").
#[test]
#[ignore = "needs SAFE_RUN_FIRECRACKER_E2E=1 on a KVM host with firecracker and jailer (docs/microvm.md)"]
fn real_firecracker_e2e() {
    if std::env::var("SAFE_RUN_FIRECRACKER_E2E").as_deref() != Ok("1") {
        println!(
            "NOT RUN: set SAFE_RUN_FIRECRACKER_E2E=1 on a KVM host with firecracker, jailer and the artifacts"
        );
        return;
    }
    let bins = ["/usr/local/bin/firecracker", "/usr/local/bin/jailer"];
    let missing: Vec<_> = bins.iter().filter(|b| !Path::new(b).exists()).collect();
    assert!(missing.is_empty(), "NOT RUN: missing {missing:?}");
    let kernel = std::env::var("SAFE_RUN_FC_KERNEL")
        .expect("SAFE_RUN_FC_KERNEL: a vmlinux with VIRTIO_MMIO_CMDLINE_DEVICES");
    let rootfs = std::env::var("SAFE_RUN_FC_ROOTFS")
        .expect("SAFE_RUN_FC_ROOTFS: an ext4 rootfs with the agent as init");
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let run_dir = runs.join(RUN_ID);
    std::fs::create_dir_all(&run_dir).unwrap();
    let config = sr_policy::OperatorConfig {
        run_dir: runs.display().to_string(),
        ..sr_policy::OperatorConfig::default()
    };
    let policy_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/compile_snapshot/firecracker_none.yaml");
    let policy = sr_policy::load_policy_file(&policy_path, &config).unwrap();
    let mut bundle = sr_compiler::compile(&policy, &config).unwrap();
    let BackendPlan::Firecracker(plan) = &mut bundle.backend else {
        unreachable!()
    };
    for a in &mut plan.artifacts {
        a.path = if a.role == "kernel" {
            kernel.clone()
        } else {
            rootfs.clone()
        };
        a.expected_sha256 = None;
    }
    let e = Env {
        cgroup_root: tmp.path().join("cg"),
        run_dir,
        bundle,
        argv_file: tmp.path().join("none"),
        pid_file: tmp.path().join("none.pid"),
        _tmp: tmp,
    };
    let mut vm = FirecrackerVm::new(65534, 65534);
    run(&e, &mut vm, None).unwrap();
    assert!(!vm.facts().guest_kernel.is_empty());
    stop_and_check(&e, &mut vm, None);

    // A snapshot of that VM's shape, then a run restored from it.
    let snapshots = runs.join("snapshots");
    let maker_id = "fcsnapshot01";
    let maker_dir = runs.join(maker_id);
    std::fs::create_dir_all(&maker_dir).unwrap();
    let BackendPlan::Firecracker(plan) = &e.bundle.backend else {
        unreachable!()
    };
    let (manifest, _) = FirecrackerVm::new(65534, 65534)
        .make_snapshot(sr_runner::microvm::firecracker::SnapshotRequest {
            plan,
            run_id: maker_id,
            run_dir: &maker_dir,
            out_dir: &snapshots,
            progress: &mut |step: &str| println!("snapshot: {step}"),
        })
        .unwrap();
    assert!(
        !maker_dir.join("jail").exists(),
        "the snapshot VM's jail is left"
    );
    let mut vm = FirecrackerVm::new(65534, 65534).with_snapshots(Some(snapshots));
    run(&e, &mut vm, None).unwrap();
    let facts = vm.facts().clone();
    assert_eq!(facts.start, "snapshot", "{:?}", facts.start_note);
    assert_eq!(facts.snapshot.map(|s| s.key), Some(manifest.key));
    assert!(facts.guest_crng_reseeded);
    stop_and_check(&e, &mut vm, None);
}
