//! Policy mounts on the QEMU microVM, for real: a read-only mount reaches the guest as a
//! read-only image; a writable one's new, changed and removed files come back to the host
//! directory when the run ends, and a symlink the guest plants never makes the host write
//! outside it. As root, with QEMU, vhost-device-vsock and the artifacts present
//! ($SAFE_RUN_TEST_ARTIFACTS, else /var/lib/safe-run/artifacts); under CI=true a missing piece
//! is a failure, elsewhere a visible skip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod run_support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use run_support::vm::*;
use run_support::*;
use serde_json::{Value, json};

fn vm_policy(script: &str, mounts: Value) -> Value {
    as_microvm(policy(
        "/bin/sh",
        &["-c", script],
        json!({"mounts": mounts}),
    ))
}

/// A directory under the env's share, readable (and with `writable`, owned) by the workload's
/// host identity (65534), holding `files`.
fn source(env: &Env, name: &str, files: &[(&str, &str)], writable: bool) -> PathBuf {
    let dir = env.share().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(env.share(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (f, content) in files {
        std::fs::write(dir.join(f), content).unwrap();
    }
    if writable {
        for p in std::iter::once(dir.clone()).chain(files.iter().map(|(f, _)| dir.join(f))) {
            std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
        }
    }
    dir
}

fn run(env: &Env, p: &Value) -> (std::process::Output, Value) {
    let path = env.policy("p.yaml", p);
    let o = env.run(&path, &[]);
    (o, env.report())
}

fn is_symlink(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

#[test]
fn a_read_only_mount_is_readable_and_not_writable_in_the_guest() {
    if !vm_ready(
        "a_read_only_mount_is_readable_and_not_writable_in_the_guest",
        &["/usr/sbin/mkfs.ext4"],
    ) {
        return;
    }
    let env = vm_env();
    let src = source(&env, "in", &[("greeting", "hello from the host\n")], false);
    std::os::unix::fs::symlink("/etc/passwd", src.join("escape")).unwrap();
    let p = vm_policy(
        "cat /home/greeting; \
         if echo x > /home/new 2>/dev/null; then echo WROTE; else echo REFUSED; fi; \
         if echo x >> /home/greeting 2>/dev/null; then echo CHANGED; else echo KEPT; fi; \
         ls -l /home/escape; grep -c . /proc/mounts >/dev/null; grep ' /home ' /proc/mounts",
        json!([{"source": src, "target": "/home", "readOnly": true}]),
    );
    let (o, report) = run(&env, &p);
    let stdout = out(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}{}", err(&o));
    assert!(stdout.contains("hello from the host"), "{stdout}");
    assert!(
        stdout.contains("REFUSED") && stdout.contains("KEPT"),
        "{stdout}"
    );
    assert!(stdout.contains("escape -> /etc/passwd"), "{stdout}");
    let line = stdout.lines().find(|l| l.contains(" /home ")).unwrap();
    assert!(
        line.contains("ro,") && line.contains("nosuid") && line.contains("nodev"),
        "{line}"
    );
    assert!(!src.join("new").exists());
    let digest = report["enforcement"]["backend"]["microvm"]["mountImages"]["/home"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(digest.starts_with("sha256:"), "{report:#}");
}

#[test]
fn a_writable_mounts_new_changed_and_removed_files_come_back_to_the_host() {
    if !vm_ready(
        "a_writable_mounts_new_changed_and_removed_files_come_back_to_the_host",
        &["/usr/sbin/mkfs.ext4"],
    ) {
        return;
    }
    let env = vm_env();
    let src = source(
        &env,
        "out",
        &[("keep", "before\n"), ("gone", "remove me\n")],
        true,
    );
    let p = vm_policy(
        "echo after > /run/keep && rm /run/gone && echo fresh > /run/new && \
         mkdir /run/d && echo deep > /run/d/f && id -u",
        json!([{"source": src, "target": "/run", "readOnly": false}]),
    );
    let (o, report) = run(&env, &p);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    assert_eq!(
        std::fs::read_to_string(src.join("keep")).unwrap(),
        "after\n"
    );
    assert_eq!(std::fs::read_to_string(src.join("new")).unwrap(), "fresh\n");
    assert_eq!(std::fs::read_to_string(src.join("d/f")).unwrap(), "deep\n");
    assert!(!src.join("gone").exists());
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(src.join("new")).unwrap());
    assert_eq!(
        owner, 65534,
        "the workload's host identity owns what it wrote"
    );
    assert!(
        report["cleanup"]["errors"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{report:#}"
    );
}

#[test]
fn a_symlink_planted_in_the_guest_does_not_make_the_host_write_outside_the_mount() {
    if !vm_ready(
        "a_symlink_planted_in_the_guest_does_not_make_the_host_write_outside_the_mount",
        &["/usr/sbin/mkfs.ext4"],
    ) {
        return;
    }
    let env = vm_env();
    let passwd = sha256_file(Path::new("/etc/passwd"));
    let src = source(&env, "out", &[("victim", "host file\n")], true);
    // The guest replaces a file by a link to /etc/passwd, and adds a directory link too.
    let p = vm_policy(
        "rm /run/victim && ln -s /etc/passwd /run/victim && ln -s /etc /run/etc && \
         echo pwned > /run/etc-not-followed",
        json!([{"source": src, "target": "/run", "readOnly": false}]),
    );
    let (o, _report) = run(&env, &p);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    assert!(is_symlink(&src.join("victim")), "arrives as a link");
    assert_eq!(
        std::fs::read_link(src.join("victim")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert!(is_symlink(&src.join("etc")));
    assert_eq!(
        sha256_file(Path::new("/etc/passwd")),
        passwd,
        "never written through"
    );
    assert!(!Path::new("/etc/etc-not-followed").exists());
}
