//! What the microVM end-to-end tests share: where the guest artifacts are, whether a guest can
//! boot here (a failure under CI=true, a visible skip elsewhere), an environment whose operator
//! config boots them, and the checks every such test makes afterwards.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::{Env, cgroups_of, err, out, pids_with_cmdline, pids_with_cwd, require_root, wait_for};

/// Where the artifacts are: $SAFE_RUN_TEST_ARTIFACTS, else the operator default.
pub fn artifacts_dir() -> PathBuf {
    std::env::var_os("SAFE_RUN_TEST_ARTIFACTS").map_or_else(
        || PathBuf::from("/var/lib/safe-run/artifacts"),
        PathBuf::from,
    )
}

/// True when a guest can boot here (root, QEMU, vhost-device-vsock, the artifacts and
/// `also`); otherwise fails under CI=true, or prints SKIPPED.
pub fn vm_ready(test: &str, also: &[&str]) -> bool {
    if !require_root(test) {
        return false;
    }
    let dir = artifacts_dir();
    let mut needed = vec![
        PathBuf::from("/usr/bin/qemu-system-x86_64"),
        PathBuf::from("/usr/local/bin/vhost-device-vsock"),
        dir.join("vmlinuz"),
        dir.join("initramfs.img"),
        dir.join("rootfs.ext4"),
        dir.join("manifest.json"),
    ];
    needed.extend(also.iter().map(PathBuf::from));
    all_present(
        test,
        &needed,
        "scripts/setup.sh installs QEMU and vhost-device-vsock; scripts/build-guest.sh builds the artifacts",
    )
}

/// True when every path in `needed` exists; otherwise fails under CI=true (a test that cannot
/// run there is a failure, not a skip), or prints SKIPPED naming what is missing and `hint`.
pub fn all_present(test: &str, needed: &[PathBuf], hint: &str) -> bool {
    let missing: Vec<String> = needed
        .iter()
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!("{test} needs {} ({hint})", missing.join(", "));
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why} (CI=true, so this is a failure, not a skip)");
    }
    eprintln!("SKIPPED: {why}");
    false
}

/// An environment whose operator config boots the test artifacts.
pub fn vm_env() -> Env {
    let env = Env::new();
    let dir = artifacts_dir();
    env.configure(json!({"microvm": {
        "kernel": dir.join("vmlinuz"),
        "initramfs": dir.join("initramfs.img"),
        "rootfs": dir.join("rootfs.ext4"),
    }}));
    env
}

/// `base` made a microVM policy: one vCPU, 256 MiB, a 90 s timeout (software emulation).
pub fn as_microvm(mut base: Value) -> Value {
    super::merge(
        &mut base,
        json!({
            "runtime": {"backend": "microvm", "timeout": "90s"},
            "resources": {"cpus": 1, "memory": "256Mi"},
        }),
    );
    base
}

/// The artifacts' manifest.
pub fn manifest() -> Value {
    serde_json::from_str(&std::fs::read_to_string(artifacts_dir().join("manifest.json")).unwrap())
        .unwrap()
}

/// `safe-run report verify DIR` passes.
pub fn verify(env: &Env, dir: &Path) {
    let o = env
        .cmd()
        .args(["report", "verify"])
        .arg(dir)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
}

/// The run's VMM processes: those that started in its `vm/` directory (QEMU, vhost-device-vsock
/// and the `unshare` above each), or whose command line names the run (QEMU's does).
pub fn vmm_pids(run_id: &str) -> Vec<i32> {
    let mut pids = pids_with_cmdline(run_id);
    pids.extend(pids_with_cwd(&format!("/{run_id}/vm")));
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Nothing of the run is left: no VMM process, no cgroup.
pub fn assert_nothing_left(run_id: &str) {
    let gone = wait_for(15, || vmm_pids(run_id).is_empty());
    assert!(
        gone,
        "processes of run {run_id} are left: {:?}",
        vmm_pids(run_id)
    );
    assert!(
        cgroups_of(&[run_id.to_owned()]).is_empty(),
        "cgroups of run {run_id} are left"
    );
}
