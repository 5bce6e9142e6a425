//! Firecracker snapshots against the fake jailer and API: making one of an agent-ready VM
//! (pause, create, the files copied out with a manifest), a run restoring it (load first, no
//! configuration, resume, then the agent with the host's clock), a refusal at each new step,
//! a snapshot file whose digest differs (refused before the jailer starts), a run without a
//! snapshot of its shape (a cold boot that says why), and the fake's own ordering rules. Each
//! leaves no process and no jail behind.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sr_bundle::FirecrackerPlan;
use sr_runner::microvm::firecracker::SnapshotRequest;
use sr_runner::microvm::firecracker::snapshot::{
    FirecrackerManifest, MANIFEST_FILE, MEMORY_FILE, VMSTATE_FILE,
};
use sr_runner::microvm::host::sha256_file;

use super::fake_api::{AGENT_LINE, FAKE_MEMORY};
use super::*;

fn plan(e: &Env) -> &FirecrackerPlan {
    let BackendPlan::Firecracker(plan) = &e.bundle.backend else {
        unreachable!()
    };
    plan
}

fn jail_root(e: &Env) -> PathBuf {
    e.run_dir.join("jail/firecracker").join(RUN_ID).join("root")
}

/// A fake whose guest plays the agent and prints its line on the console.
fn agent_fake(e: &Env, refuse: Option<&str>) -> FakeFirecracker {
    FakeFirecracker::new(&jail_root(e), refuse, Guest::Agent)
        .with_console(&e.run_dir.join("vm/console.log"))
}

/// Makes a snapshot of `e`'s VM shape into `out` against `fake`.
fn make(
    e: &Env,
    out: &Path,
    fake: &FakeFirecracker,
) -> (
    FirecrackerVm,
    Result<(FirecrackerManifest, PathBuf), RunStatus>,
) {
    let player = play_firecracker(e, None, Some(fake.clone()));
    let mut vm = vm();
    let mut steps = Vec::new();
    let made = vm.make_snapshot(SnapshotRequest {
        plan: plan(e),
        run_id: RUN_ID,
        run_dir: &e.run_dir,
        out_dir: out,
        progress: &mut |s: &str| steps.push(s.to_owned()),
    });
    player.join().unwrap();
    assert!(!steps.is_empty(), "progress is told");
    (vm, made)
}

/// A snapshot of the test policy's shape in a fresh directory (the tempdir keeps it).
fn a_snapshot() -> (tempfile::TempDir, FirecrackerManifest) {
    let out = tempfile::tempdir().unwrap();
    let e = env(Jailer::Runs);
    let (mut vm, made) = make(&e, out.path(), &agent_fake(&e, None));
    let (manifest, _) = made.unwrap();
    stop_and_check(&e, &mut vm, None);
    (out, manifest)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

const COLD: [&str; 7] = [
    "PUT /logger",
    "PUT /metrics",
    "PUT /machine-config",
    "PUT /boot-source",
    "PUT /drives/rootfs",
    "PUT /vsock",
    "PUT /actions",
];

#[test]
fn a_snapshot_is_made_of_an_agent_ready_vm_and_leaves_nothing() {
    let out = tempfile::tempdir().unwrap();
    let e = env(Jailer::Runs);
    let fake = agent_fake(&e, None);
    let (mut vm, made) = make(&e, out.path(), &fake);
    let (manifest, dir) = made.unwrap();
    let mut expected: Vec<&str> = COLD.to_vec();
    expected.extend(["PATCH /vm", "PUT /snapshot/create"]);
    assert_eq!(fake.calls(), expected, "booted, paused, then saved");
    let seen = fake.seen.lock().unwrap().clone();
    assert!(seen.iter().all(|s| s.status == 204));
    assert_eq!(seen[7].body, json!({"state": "Paused"}));
    assert_eq!(
        seen[8].body,
        json!({"snapshot_type": "Full", "snapshot_path": "/vmstate.bin", "mem_file_path": "/memory.bin"})
    );
    // Published whole under its key, nothing staged left beside it.
    assert_eq!(dir, out.path().join(&manifest.key));
    assert_eq!(entries(out.path()), std::slice::from_ref(&manifest.key));
    assert_eq!(
        entries(&dir),
        [MEMORY_FILE, MANIFEST_FILE, VMSTATE_FILE].map(String::from)
    );
    assert_eq!(
        manifest.vmstate_sha256,
        sha256_file(&dir.join(VMSTATE_FILE)).unwrap()
    );
    assert_eq!(
        manifest.memory_sha256,
        sha256_file(&dir.join(MEMORY_FILE)).unwrap()
    );
    assert_eq!(manifest.memory_bytes, FAKE_MEMORY as u64);
    assert_eq!(manifest.vmm, "firecracker");
    assert_eq!(manifest.shape.vm_config, plan(&e).vm_config);
    assert_eq!(
        manifest.shape.artifacts.keys().collect::<Vec<_>>(),
        ["kernel", "rootfs"]
    );
    let on_disk: FirecrackerManifest =
        serde_json::from_slice(&std::fs::read(dir.join(MANIFEST_FILE)).unwrap()).unwrap();
    assert_eq!(on_disk, manifest);
    stop_and_check(&e, &mut vm, None);
}

#[test]
fn a_guest_that_never_listens_is_not_snapshotted() {
    let out = tempfile::tempdir().unwrap();
    let e = env(Jailer::Runs);
    let fake = FakeFirecracker::new(&jail_root(&e), None, Guest::Silent);
    let (mut vm, made) = make(&e, out.path(), &fake);
    let (phase, text) = launch_phase(&made.unwrap_err());
    assert_eq!(phase, "launch.boot");
    assert!(text.contains("listening on vsock port"), "{text}");
    assert_eq!(fake.calls(), COLD, "never paused");
    assert!(entries(out.path()).is_empty());
    stop_and_check(&e, &mut vm, None);
}

#[test]
fn a_refusal_while_snapshotting_is_named_and_publishes_nothing() {
    for (path, step) in [
        ("/vm", "launch.api.pause"),
        ("/snapshot/create", "launch.api.snapshot-create"),
    ] {
        let out = tempfile::tempdir().unwrap();
        let e = env(Jailer::Runs);
        let fake = agent_fake(&e, Some(path));
        let (mut vm, made) = make(&e, out.path(), &fake);
        let (phase, text) = launch_phase(&made.unwrap_err());
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
        assert!(entries(out.path()).is_empty(), "{step}: nothing published");
        stop_and_check(&e, &mut vm, None);
    }
}

#[test]
fn a_run_restores_the_snapshot_of_its_shape_without_configuring_it() {
    let (out, manifest) = a_snapshot();
    let e = env(Jailer::Runs);
    let fake = FakeFirecracker::new(&jail_root(&e), None, Guest::Agent);
    let player = play_firecracker(&e, None, Some(fake.clone()));
    let mut vm = vm().with_snapshots(Some(out.path().to_path_buf()));
    run(&e, &mut vm, None).unwrap();
    player.join().unwrap();
    assert_eq!(
        fake.calls(),
        [
            "PUT /logger",
            "PUT /metrics",
            "PUT /snapshot/load",
            "PATCH /vm"
        ],
        "the load comes before any configuration, and replaces all of it"
    );
    let seen = fake.seen.lock().unwrap().clone();
    assert!(seen.iter().all(|s| s.status == 204));
    assert_eq!(
        seen[2].body,
        json!({
            "snapshot_path": "/vmstate.bin",
            "mem_backend": {"backend_type": "File", "backend_path": "/memory.bin"},
            "enable_diff_snapshots": false,
            "resume_vm": false
        })
    );
    assert_eq!(seen[3].body, json!({"state": "Resumed"}));
    // The files Firecracker loaded were in its jail.
    let root = jail_root(&e);
    assert_eq!(
        sha256_file(&root.join(MEMORY_FILE)).unwrap(),
        manifest.memory_sha256
    );
    let facts = vm.facts().clone();
    assert_eq!(facts.start, "snapshot");
    assert_eq!(facts.start_note, None);
    let snap = facts.snapshot.clone().unwrap();
    assert_eq!(snap.key, manifest.key);
    assert_eq!(snap.vmstate_sha256, manifest.vmstate_sha256);
    assert_eq!(snap.memory_sha256, Some(manifest.memory_sha256.clone()));
    assert_eq!(facts.guest_kernel, "6.1.0-fake");
    // The agent got the host's clock, to set the guest's stopped one.
    let setups = fake.setups.lock().unwrap().clone();
    assert_eq!(setups.len(), 1);
    let sent = setups[0]["restored"]["unixTimeMs"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(now >= sent && now - sent < 30_000, "{sent} vs {now}");
    stop_and_check(&e, &mut vm, None);
    // The snapshot itself is untouched by the run.
    assert_eq!(
        sha256_file(&out.path().join(&manifest.key).join(MEMORY_FILE)).unwrap(),
        manifest.memory_sha256
    );
}

#[test]
fn a_refusal_while_restoring_is_named_and_leaves_nothing() {
    let (out, _) = a_snapshot();
    for (path, step, calls) in [
        ("/snapshot/load", "launch.api.snapshot-load", 3),
        ("/vm", "launch.api.resume", 4),
    ] {
        let e = env(Jailer::Runs);
        let fake = FakeFirecracker::new(&jail_root(&e), Some(path), Guest::Agent);
        let player = play_firecracker(&e, None, Some(fake.clone()));
        let mut vm = vm().with_snapshots(Some(out.path().to_path_buf()));
        let (phase, text) = launch_phase(&run(&e, &mut vm, None).unwrap_err());
        player.join().unwrap();
        assert_eq!(phase, step);
        assert!(
            text.contains(&format!("refused by the test at {path}")),
            "{text}"
        );
        assert_eq!(fake.calls().len(), calls, "{step}: stops at the refusal");
        stop_and_check(&e, &mut vm, None);
    }
}

#[test]
fn a_snapshot_file_whose_digest_differs_is_refused_before_firecracker_starts() {
    for name in [MEMORY_FILE, VMSTATE_FILE] {
        let (out, manifest) = a_snapshot();
        let file = out.path().join(&manifest.key).join(name);
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[0] ^= 1;
        std::fs::write(&file, bytes).unwrap();
        let e = env(Jailer::Runs);
        let fake = FakeFirecracker::new(&jail_root(&e), None, Guest::Agent);
        let mut vm = vm().with_snapshots(Some(out.path().to_path_buf()));
        let (phase, text) = launch_phase(&run(&e, &mut vm, None).unwrap_err());
        assert_eq!(phase, "launch.snapshot");
        assert!(text.contains(name) && text.contains("digest"), "{text}");
        assert!(!e.argv_file.exists(), "the jailer never ran");
        assert!(fake.calls().is_empty());
        stop_and_check(&e, &mut vm, None);
    }
}

#[test]
fn without_a_snapshot_of_its_shape_a_run_boots_cold_and_says_why() {
    let empty = tempfile::tempdir().unwrap();
    let e = env(Jailer::Runs);
    let fake = FakeFirecracker::new(&jail_root(&e), None, Guest::Agent);
    let player = play_firecracker(&e, None, Some(fake.clone()));
    let mut vm = vm().with_snapshots(Some(empty.path().to_path_buf()));
    run(&e, &mut vm, None).unwrap();
    player.join().unwrap();
    assert_eq!(fake.calls(), COLD);
    let facts = vm.facts().clone();
    assert_eq!(facts.start, "boot");
    assert!(
        facts
            .start_note
            .as_deref()
            .is_some_and(|n| n.contains("no snapshot of this VM's shape")),
        "{:?}",
        facts.start_note
    );
    assert!(facts.snapshot.is_none());
    assert!(fake.setups.lock().unwrap()[0].get("restored").is_none());
    stop_and_check(&e, &mut vm, None);
}

fn send(c: &mut api::UnixApi, method: &'static str, path: &str, body: Value) -> (u16, String) {
    let r = c
        .send(&ApiRequest {
            step: "t".into(),
            method,
            path: path.into(),
            body,
        })
        .unwrap();
    (r.status, api::fault_message(&r.body))
}

#[test]
fn the_fake_keeps_firecrackers_snapshot_rules() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("vmlinux"), b"k").unwrap();
    let console = tmp.path().join("console.log");
    let fake = FakeFirecracker::new(tmp.path(), None, Guest::Silent).with_console(&console);
    let sock = tmp.path().join("api.socket");
    fake.serve(&sock);
    let mut c = api::UnixApi::new(&sock, Duration::from_secs(3));
    let files = json!({"snapshot_path": "/s", "mem_file_path": "/m"});
    let (st, why) = send(&mut c, "PATCH", "/vm", json!({"state": "Paused"}));
    assert_eq!((st, why.contains("before starting")), (400, true), "{why}");
    let (st, why) = send(&mut c, "PUT", "/snapshot/create", files.clone());
    assert_eq!((st, why.contains("before starting")), (400, true), "{why}");
    let (_, why) = send(&mut c, "PATCH", "/vm", json!({"state": "Running"}));
    assert!(why.contains("unknown variant `Running`"), "{why}");
    let (_, why) = send(&mut c, "PUT", "/vm", json!({"state": "Paused"}));
    assert!(
        why.contains("Invalid request method and/or path: PUT vm"),
        "{why}"
    );
    let backend = json!({"backend_type": "File", "backend_path": "/m"});
    let (_, why) = send(
        &mut c,
        "PUT",
        "/snapshot/load",
        json!({"snapshot_path": "/s", "mem_file_path": "/m", "mem_backend": backend}),
    );
    assert!(why.contains("too many fields"), "{why}");
    let (_, why) = send(
        &mut c,
        "PUT",
        "/snapshot/load",
        json!({"snapshot_path": "/s"}),
    );
    assert!(why.contains("missing field: either"), "{why}");
    let (_, why) = send(
        &mut c,
        "PUT",
        "/snapshot/load",
        json!({"snapshot_path": "/s", "mem_backend": backend, "vsock_override": {"uds_path": "v"}}),
    );
    assert!(
        why.contains("unknown field `vsock_override`"),
        "v1.10 has none: {why}"
    );
    let (_, why) = send(
        &mut c,
        "PUT",
        "/snapshot/load",
        json!({"snapshot_path": "/s", "mem_backend": {"backend_type": "Disk", "backend_path": "/m"}}),
    );
    assert!(why.contains("unknown variant `Disk`"), "{why}");
    // Configured once, a process can no longer load a snapshot.
    let (st, _) = send(
        &mut c,
        "PUT",
        "/boot-source",
        json!({"kernel_image_path": "vmlinux"}),
    );
    assert_eq!(st, 204);
    let (_, why) = send(
        &mut c,
        "PUT",
        "/snapshot/load",
        json!({"snapshot_path": "/s", "mem_backend": backend}),
    );
    assert!(
        why.contains("not allowed after configuring boot-specific resources"),
        "{why}"
    );
    let (st, _) = send(
        &mut c,
        "PUT",
        "/actions",
        json!({"action_type": "InstanceStart"}),
    );
    assert_eq!(st, 204);
    let (_, why) = send(&mut c, "PUT", "/snapshot/create", files.clone());
    assert!(why.contains("unavailable while running"), "{why}");
    assert_eq!(
        send(&mut c, "PATCH", "/vm", json!({"state": "Paused"})).0,
        204
    );
    let (_, why) = send(
        &mut c,
        "PUT",
        "/snapshot/create",
        json!({"snapshot_type": "Diff", "snapshot_path": "/s", "mem_file_path": "/m"}),
    );
    assert!(why.contains("Diff snapshots are not allowed"), "{why}");
    assert_eq!(send(&mut c, "PUT", "/snapshot/create", files).0, 204);
    assert!(tmp.path().join("s").is_file() && tmp.path().join("m").is_file());
    let (_, why) = send(
        &mut c,
        "PUT",
        "/snapshot/load",
        json!({"snapshot_path": "/s", "mem_backend": backend}),
    );
    assert!(why.contains("after starting"), "{why}");
    // A silent guest prints nothing.
    assert!(
        !std::fs::read_to_string(&console)
            .unwrap_or_default()
            .contains(AGENT_LINE)
    );

    // A load that fails ends that Firecracker: nothing answers afterwards.
    let tmp = tempfile::tempdir().unwrap();
    let fake = FakeFirecracker::new(tmp.path(), None, Guest::Silent);
    let sock = tmp.path().join("api.socket");
    fake.serve(&sock);
    let mut c = api::UnixApi::new(&sock, Duration::from_secs(3));
    let (st, why) = send(
        &mut c,
        "PUT",
        "/snapshot/load",
        json!({"snapshot_path": "/none", "mem_backend": backend}),
    );
    assert_eq!(st, 400);
    assert!(why.contains("Failed to open snapshot file"), "{why}");
    let t = Instant::now();
    assert!(
        c.send(&ApiRequest {
            step: "t".into(),
            method: "PUT",
            path: "/metrics".into(),
            body: json!({"metrics_path": "/x"}),
        })
        .is_err()
    );
    assert!(t.elapsed() < Duration::from_secs(3));
}
