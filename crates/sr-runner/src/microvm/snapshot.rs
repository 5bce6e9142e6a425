//! Snapshots of a booted QEMU guest whose agent listens (docs/microvm.md, "Snapshots"): what a
//! snapshot must match to be restored (its [`Shape`]), its manifest on disk, and the QMP steps
//! that save and restore one.
//!
//! A snapshot holds no per-run device. QEMU cannot migrate `vhost-user-vsock` (it declares
//! itself unmigratable), so the VM is booted for the snapshot without a vsock device, its
//! agent listening on a socket that has no transport yet; after a restore the runner plugs a
//! fresh vsock device (its own vhost-device-vsock, a fresh context id) into the running guest
//! (ACPI PCI hot plug), and the agent's listener starts taking connections. Policies whose VM
//! needs other per-run devices at boot (a NIC, mount drives) boot cold and the report says why.
//!
//! A snapshot is two files. The guest's RAM is not in QEMU's migration stream: a
//! snapshot-shaped VM's RAM is a descriptor the runner made ([`file_backed_ram`]), which QEMU
//! migrates with `x-ignore-shared`, and its non-zero pages are copied to and from
//! [`MEMORY_FILE`] directly ([`super::memory_image`]), several times faster than QEMU's
//! page-by-page stream. The devices' state travels through a pipe that a thread fills or
//! drains while hashing, so the digest in the report is of the very bytes QEMU loaded.
//!
//! Pure except [`lookup`], [`save`], [`load`], [`plug_vsock`] and [`resume`].

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sr_bundle::QemuPlan;

use super::qmp::{Qmp, QmpError};

/// The manifest's `format`.
pub const SNAPSHOT_FORMAT: &str = "safe-run-snapshot/2";
/// The manifest's file name in a snapshot's directory.
pub const MANIFEST_FILE: &str = "snapshot.json";
/// The VM state's file name in a snapshot's directory (the devices and vCPUs).
pub const VMSTATE_FILE: &str = "vmstate.bin";
/// The guest memory image's file name in a snapshot's directory ([`super::memory_image`]).
pub const MEMORY_FILE: &str = "memory.bin";
/// The descriptor a snapshot-shaped QEMU maps its RAM from (`/proc/self/fd/N`): clear of the
/// artifacts (3 on) and of a plan's TAP and mount drives, which such a VM never has anyway.
pub const RAM_FD: i32 = 20;
/// The console line the guest agent prints once its vsock listener is bound.
pub const AGENT_LISTENING: &str = "listening on vsock port";
/// `-name` of every snapshot-shaped VM (the run's own name would make each run a new shape).
const SNAPSHOT_VM_NAME: &str = "safe-run-snapshot";
/// The chardev id the compiled plan gives the vsock device's vhost-user socket.
const VSOCK_CHARDEV: &str = "vhu";
/// The id the restored VM's vsock device gets.
const VSOCK_DEVICE: &str = "vsock";

/// Everything that shapes a restorable machine: two VMs of one shape can load each other's
/// state. A change to any of it is a different snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Shape {
    /// QEMU's version line (the migration format is QEMU's own).
    pub qemu_version: String,
    /// `tcg` or `kvm`.
    pub accelerator: String,
    /// QEMU's arguments without the per-run devices ([`shape_args`]).
    pub args: Vec<String>,
    /// role -> `sha256:<hex>` of each artifact booted.
    pub artifacts: BTreeMap<String, String>,
}

impl Shape {
    /// The shape's name ([`key_of`]).
    pub fn key(&self) -> String {
        key_of(self)
    }
}

/// A shape's name, whichever VMM's: hex of the sha256 of its canonical JSON (RFC 8785), cut to
/// 32 digits. Two VMMs' shapes never share a key: their JSON differs in its field names.
pub fn key_of(shape: &impl Serialize) -> String {
    let canonical = serde_json_canonicalizer::to_vec(shape).unwrap_or_default();
    let mut key = hex::encode(Sha256::digest(&canonical));
    key.truncate(32);
    key
}

/// A snapshot's manifest (`snapshot.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotManifest {
    /// [`SNAPSHOT_FORMAT`].
    pub format: String,
    /// [`Shape::key`] of `shape`; also the directory's name.
    pub key: String,
    /// What a VM must match to restore it.
    pub shape: Shape,
    /// `sha256:<hex>` of [`VMSTATE_FILE`].
    pub vmstate_sha256: String,
    /// Its size in bytes.
    pub vmstate_bytes: u64,
    /// The digest of [`MEMORY_FILE`]'s non-zero pages ([`super::memory_image`]).
    pub memory_sha256: String,
    /// How many bytes of non-zero pages it holds.
    pub memory_bytes: u64,
    /// From QEMU's start to the agent listening, when the snapshot was made.
    pub boot_ms: u64,
    /// The save itself.
    pub save_ms: u64,
    /// The check restore: QEMU's start to the agent answering on a fresh vsock device.
    pub restore_ms: u64,
    /// The safe-run that made it.
    pub made_by: String,
}

/// Why a plan's VM cannot come from a snapshot (it boots cold and the report says this).
pub fn not_restorable(plan: &QemuPlan) -> Option<String> {
    per_run_devices(&plan.args, plan.mounts.len())
}

fn per_run_devices(args: &[String], mounts: usize) -> Option<String> {
    if mounts > 0 {
        return Some("the policy has mounts, whose drives are per run".into());
    }
    if args.iter().any(|a| a == "-netdev") {
        return Some("the guest has a NIC (network allowlist), which is per run".into());
    }
    None
}

/// QEMU's arguments for a snapshot-shaped VM: the plan's without the vsock chardev and device
/// (plugged in after a restore) and with one fixed `-name`.
pub fn shape_args(args: &[String]) -> Vec<String> {
    let mut out = without_vsock(args);
    if let Some(i) = out.iter().position(|a| a == "-name")
        && let Some(name) = out.get_mut(i + 1)
    {
        SNAPSHOT_VM_NAME.clone_into(name);
    }
    out
}

/// The plan's QEMU arguments without the vsock chardev and device: what a restored VM starts
/// with (its `-name` stays the run's).
pub fn without_vsock(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        let is_vsock = |v: &String| match a.as_str() {
            "-chardev" => v.split(',').any(|kv| kv == format!("id={VSOCK_CHARDEV}")),
            "-device" => v.starts_with("vhost-user-vsock-pci,"),
            _ => false,
        };
        if it.peek().is_some_and(|v| is_vsock(v)) {
            it.next();
            continue;
        }
        out.push(a.clone());
    }
    out
}

/// `args` with the guest's RAM mapped from the descriptor [`RAM_FD`] instead of a memfd QEMU
/// makes itself (still shared: the vsock backend maps it too), and the RAM's size in bytes;
/// None when `args` has no `memory-backend-memfd` of a size in MiB.
pub fn file_backed_ram(args: &[String]) -> Option<(Vec<String>, u64)> {
    let mut out = args.to_vec();
    let backend = out
        .iter_mut()
        .find(|a| a.starts_with("memory-backend-memfd,"))?;
    let rest = backend.strip_prefix("memory-backend-memfd,")?.to_owned();
    let mib: u64 = rest
        .split(',')
        .find_map(|kv| kv.strip_prefix("size="))?
        .strip_suffix('M')?
        .parse()
        .ok()?;
    *backend = format!("memory-backend-file,{rest},mem-path=/proc/self/fd/{RAM_FD}");
    Some((out, mib.checked_mul(1 << 20)?))
}

/// The snapshot of `key` under `dir`, if one is there and its manifest is well formed and
/// names that shape.
pub fn lookup(dir: &Path, shape: &Shape) -> Option<(PathBuf, SnapshotManifest)> {
    let key = shape.key();
    let at = dir.join(&key);
    let text = std::fs::read(at.join(MANIFEST_FILE)).ok()?;
    let manifest: SnapshotManifest = serde_json::from_slice(&text).ok()?;
    (manifest.format == SNAPSHOT_FORMAT && manifest.key == key && &manifest.shape == shape)
        .then_some((at, manifest))
}

/// The format of a snapshot of `shape` under `dir` that [`lookup`] cannot take because an
/// older (or newer) safe-run wrote it; None when there is none or its format is this one's.
pub fn other_format(dir: &Path, shape: &Shape) -> Option<String> {
    #[derive(Deserialize)]
    struct FormatOnly {
        format: String,
    }
    let text = std::fs::read(dir.join(shape.key()).join(MANIFEST_FILE)).ok()?;
    let found: FormatOnly = serde_json::from_slice(&text).ok()?;
    (found.format != SNAPSHOT_FORMAT).then_some(found.format)
}

/// A snapshot being written: `<out>/.<key>.<pid>/`, removed unless published. Publishing
/// renames it to `<out>/<key>/` only once it is complete, so a run never finds half of one.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    out_dir: PathBuf,
    key: String,
}

impl Staging {
    /// A fresh, empty staging directory for the snapshot `key` under `out_dir` (made if need
    /// be); a leftover of this process's id is replaced.
    pub fn create(out_dir: &Path, key: &str) -> std::io::Result<Staging> {
        std::fs::create_dir_all(out_dir)?;
        let dir = out_dir.join(format!(".{key}.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir)?;
        Ok(Staging {
            dir,
            out_dir: out_dir.to_path_buf(),
            key: key.to_owned(),
        })
    }

    /// Where the snapshot's files are written.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Replaces `<out>/<key>/` with the staged snapshot; its final directory.
    pub fn publish(self) -> std::io::Result<PathBuf> {
        let dest = self.out_dir.join(&self.key);
        if dest.exists() {
            // The old one goes only once the new one is complete; a run that opened its state
            // file keeps reading it.
            let old = self
                .out_dir
                .join(format!(".{}.old.{}", self.key, std::process::id()));
            std::fs::rename(&dest, &old)?;
            let _ = std::fs::remove_dir_all(&old);
        }
        std::fs::rename(&self.dir, &dest)?;
        // Renamed away: the drop finds nothing left to remove.
        Ok(dest)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Why a save or a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// QEMU refused or failed a step.
    #[error(transparent)]
    Qmp(#[from] QmpError),
    /// The state file or the pipe to QEMU.
    #[error("{step}: {source}")]
    Io {
        /// What was being done.
        step: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// The state loaded is not the one the manifest names.
    #[error("the {what}'s digest is {found}, its manifest says {expected}")]
    Digest {
        /// Which file.
        what: String,
        /// From the manifest.
        expected: String,
        /// Of the bytes QEMU read.
        found: String,
    },
}

fn io(step: &'static str) -> impl Fn(std::io::Error) -> SnapshotError {
    move |source| SnapshotError::Io { step, source }
}

/// Copies everything `from` reads into `to` while hashing it: the digest (`sha256:<hex>`) and
/// byte count of what passed, so a copy and its digest are of the same bytes in one pass.
pub fn copy_and_hash(from: &mut impl Read, to: &mut impl Write) -> std::io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
    to.flush()?;
    Ok((format!("sha256:{}", hex::encode(h.finalize())), total))
}

/// Copies `from` to `to` while hashing, on a thread; its digest and byte count.
fn copy_hashing(
    mut from: impl Read + Send + 'static,
    mut to: impl Write + Send + 'static,
) -> JoinHandle<std::io::Result<(String, u64)>> {
    std::thread::spawn(move || copy_and_hash(&mut from, &mut to))
}

/// The pipe a VM state passes through, 1 MiB (Linux's default `pipe-max-size`) instead of
/// 64 KiB: the copier and QEMU then wake each other sixteen times less often while tens of
/// megabytes pass. Left at the default if refused.
fn pipe() -> Result<(OwnedFd, OwnedFd), SnapshotError> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| io("creating a pipe for the VM state")(e.into()))?;
    let _ = nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    Ok((read, write))
}

/// The VM state pipe's size: Linux's default `pipe-max-size`.
const PIPE_SIZE: nix::libc::c_int = 1 << 20;

fn join(
    copier: JoinHandle<std::io::Result<(String, u64)>>,
) -> Result<(String, u64), SnapshotError> {
    copier
        .join()
        .map_err(|_| {
            io("copying the VM state")(std::io::Error::other("the copying thread panicked"))
        })?
        .map_err(io("copying the VM state"))
}

/// After a failed migration: QEMU lets go of the pipe if it still holds it, so the copying
/// thread (left to itself, not joined) ends; it also ends when the caller kills QEMU.
fn abandon(qmp: &mut Qmp) {
    let _ = qmp.execute("closefd", json!({"fdname": "vmstate"}));
}

/// Tells QEMU to leave shared RAM out of the migration stream: the memory image carries it
/// ([`file_backed_ram`]). Both ends of a migration must say so.
fn ram_apart(qmp: &mut Qmp) -> Result<(), QmpError> {
    qmp.execute(
        "migrate-set-capabilities",
        json!({"capabilities": [{"capability": "x-ignore-shared", "state": true}]}),
    )
    .map(drop)
}

/// Stops the VM and saves its devices' state into `dest` (its RAM, shared, stays where it is:
/// the caller copies it); the digest and size of what QEMU wrote.
pub fn save(qmp: &mut Qmp, dest: std::fs::File) -> Result<(String, u64), SnapshotError> {
    qmp.execute("stop", json!({}))?;
    ram_apart(qmp)?;
    let (read, write) = pipe()?;
    let copier = copy_hashing(std::fs::File::from(read), dest);
    qmp.execute_with_fd("getfd", json!({"fdname": "vmstate"}), write.as_fd())?;
    // QEMU holds its own copy now: ours must go, or the copier never sees the end.
    drop(write);
    let migrated = qmp
        .execute("migrate", json!({"uri": "fd:vmstate"}))
        .and_then(|_| qmp.await_migration());
    if let Err(e) = migrated {
        abandon(qmp);
        return Err(e.into());
    }
    join(copier)
}

/// Loads `vmstate` into a QEMU started with `-incoming defer` (the VM stays paused), whose
/// RAM already holds the snapshot's memory image; fails unless the bytes QEMU read have the
/// digest `expected`. Returns that digest.
pub fn load(
    qmp: &mut Qmp,
    vmstate: std::fs::File,
    expected: &str,
) -> Result<String, SnapshotError> {
    ram_apart(qmp)?;
    let (read, write) = pipe()?;
    let copier = copy_hashing(vmstate, std::fs::File::from(write));
    qmp.execute_with_fd("getfd", json!({"fdname": "vmstate"}), read.as_fd())?;
    drop(read);
    let migrated = qmp
        .execute("migrate-incoming", json!({"uri": "fd:vmstate"}))
        .and_then(|_| qmp.await_migration());
    if let Err(e) = migrated {
        abandon(qmp);
        return Err(e.into());
    }
    let (found, _) = join(copier)?;
    if found != expected {
        return Err(SnapshotError::Digest {
            what: VMSTATE_FILE.into(),
            expected: expected.to_owned(),
            found,
        });
    }
    Ok(found)
}

/// Plugs the run's vsock device into the restored, still paused VM: vhost-device-vsock's
/// socket (`vhost_socket`, relative to QEMU's directory) as the chardev the plan names.
pub fn plug_vsock(qmp: &mut Qmp, vhost_socket: &str) -> Result<(), SnapshotError> {
    qmp.execute(
        "chardev-add",
        json!({
            "id": VSOCK_CHARDEV,
            "backend": {"type": "socket", "data": {
                "addr": {"type": "unix", "data": {"path": vhost_socket}},
                "server": false
            }}
        }),
    )?;
    qmp.execute(
        "device_add",
        json!({"driver": "vhost-user-vsock-pci", "id": VSOCK_DEVICE, "chardev": VSOCK_CHARDEV}),
    )?;
    Ok(())
}

/// Waits until the plugged vsock device is ready for a first CONNECT: the guest's driver has
/// set it up (`DRIVER_OK`), QEMU has started its vhost-user backend, and the guest has
/// finished filling the receive ring (its `avail` index is non-zero and stopped moving).
/// A CONNECT sent earlier has been seen to end vhost-device-vsock's (0.3.0) ring worker
/// thread, after which no CONNECT is ever answered; the ring's index is read from guest
/// memory through QEMU's monitor. Returns false (having waited for nothing) when this QEMU
/// lacks the unstable `x-` commands, and false when `until` passes first: the caller's CONNECT
/// loop and its check of the backend ([`super::qemu`]) then decide.
pub fn await_vsock_ready(qmp: &mut Qmp, until: Instant) -> Result<bool, SnapshotError> {
    let path = format!("/machine/peripheral/{VSOCK_DEVICE}/virtio-backend");
    let mut last_avail: Option<u16> = None;
    loop {
        match vsock_rx_avail(qmp, &path) {
            Ok(Some(avail)) if avail > 0 && last_avail == Some(avail) => return Ok(true),
            Ok(avail) => last_avail = avail,
            Err(QmpError::Command { class, .. }) if class == "CommandNotFound" => {
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        }
        if Instant::now() >= until {
            return Ok(false);
        }
        std::thread::sleep(READY_POLL);
    }
}

/// How often [`await_vsock_ready`] asks QEMU.
const READY_POLL: Duration = Duration::from_millis(5);

/// The guest's receive-ring `avail` index once the device runs (driver ready, backend
/// started), else None.
fn vsock_rx_avail(qmp: &mut Qmp, path: &str) -> Result<Option<u16>, QmpError> {
    let status = qmp.execute("x-query-virtio-status", json!({"path": path}))?;
    if !driver_ok(&status) || status.get("vhost-started") != Some(&json!(true)) {
        return Ok(None);
    }
    let ring = qmp.execute(
        "x-query-virtio-vhost-queue-status",
        json!({"path": path, "queue": 0}),
    )?;
    let Some(avail_phys) = ring.get("avail-phys").and_then(Value::as_u64) else {
        return Ok(None);
    };
    // struct vring_avail { le16 flags; le16 idx; ... }
    let shown = qmp.execute(
        "human-monitor-command",
        json!({"command-line": format!("xp /1hx {}", avail_phys + 2)}),
    )?;
    Ok(shown.as_str().and_then(parse_xp_halfword))
}

fn driver_ok(status: &Value) -> bool {
    status
        .pointer("/status/statuses")
        .and_then(Value::as_array)
        .is_some_and(|s| {
            s.iter()
                .filter_map(Value::as_str)
                .any(|v| v.starts_with("VIRTIO_CONFIG_S_DRIVER_OK"))
        })
}

/// The value in the monitor's `xp /1hx` answer (`0000000002a8b002: 0x0080`).
fn parse_xp_halfword(shown: &str) -> Option<u16> {
    let (_, value) = shown.trim().rsplit_once(':')?;
    u16::from_str_radix(value.trim().strip_prefix("0x")?, 16).ok()
}

/// Lets the restored VM run.
pub fn resume(qmp: &mut Qmp) -> Result<(), SnapshotError> {
    qmp.execute("cont", json!({}))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_shape_drops_the_vsock_device_and_the_run_name_only() {
        let plan = args(&[
            "-name",
            "safe-run-0123456789ab",
            "-m",
            "256M",
            "-chardev",
            "socket,id=vhu,path=vhost-vsock.sock",
            "-device",
            "vhost-user-vsock-pci,chardev=vhu",
            "-device",
            "virtio-blk-pci,drive=rootfs",
            "-chardev",
            "socket,id=other,path=x",
            "-serial",
            "file:console.log",
        ]);
        assert_eq!(
            shape_args(&plan),
            args(&[
                "-name",
                "safe-run-snapshot",
                "-m",
                "256M",
                "-device",
                "virtio-blk-pci,drive=rootfs",
                "-chardev",
                "socket,id=other,path=x",
                "-serial",
                "file:console.log",
            ])
        );
        // Two runs of one policy have one shape.
        let other_run = plan
            .iter()
            .map(|a| a.replace("0123456789ab", "ba9876543210"))
            .collect::<Vec<_>>();
        assert_eq!(shape_args(&plan), shape_args(&other_run));
        // A trailing flag without its value is kept, not lost.
        assert_eq!(shape_args(&args(&["-device"])), args(&["-device"]));
    }

    fn shape() -> Shape {
        Shape {
            qemu_version: "QEMU emulator version 7.2.22".into(),
            accelerator: "tcg".into(),
            args: args(&["-m", "256M"]),
            artifacts: [("kernel".to_owned(), "sha256:aa".to_owned())].into(),
        }
    }

    #[test]
    fn the_key_names_every_part_of_the_shape() {
        let base = shape();
        assert_eq!(base.key().len(), 32);
        assert_eq!(base.key(), shape().key());
        let mut changed = vec![shape(), shape(), shape(), shape()];
        changed[0].qemu_version.push('1');
        changed[1].accelerator = "kvm".into();
        changed[2].args[1] = "512M".into();
        changed[3]
            .artifacts
            .insert("kernel".into(), "sha256:ab".into());
        for c in changed {
            assert_ne!(c.key(), base.key(), "{c:?}");
        }
    }

    #[test]
    fn lookup_takes_only_a_well_formed_manifest_of_that_shape() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = shape();
        assert!(lookup(dir.path(), &s).is_none());
        let at = dir.path().join(s.key());
        std::fs::create_dir_all(&at).expect("mkdir");
        let mut m = SnapshotManifest {
            format: SNAPSHOT_FORMAT.into(),
            key: s.key(),
            shape: s.clone(),
            vmstate_sha256: "sha256:00".into(),
            vmstate_bytes: 1,
            memory_sha256: "sha256:01".into(),
            memory_bytes: 4096,
            boot_ms: 1,
            save_ms: 1,
            restore_ms: 1,
            made_by: "test".into(),
        };
        let write = |m: &SnapshotManifest| {
            std::fs::write(at.join(MANIFEST_FILE), serde_json::to_vec(m).expect("json"))
                .expect("write")
        };
        write(&m);
        assert_eq!(lookup(dir.path(), &s).map(|(_, m)| m.key), Some(s.key()));
        m.shape.accelerator = "kvm".into();
        write(&m);
        assert!(
            lookup(dir.path(), &s).is_none(),
            "a manifest of another shape"
        );
        std::fs::write(at.join(MANIFEST_FILE), b"{not json").expect("write");
        assert!(lookup(dir.path(), &s).is_none());
        assert_eq!(other_format(dir.path(), &s), None);
    }

    #[test]
    fn a_snapshot_of_an_older_format_is_not_taken_and_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = shape();
        let at = dir.path().join(s.key());
        std::fs::create_dir_all(&at).expect("mkdir");
        // What safe-run-snapshot/1 wrote: the memory inside the VM state, no memory fields.
        let old = json!({"format": "safe-run-snapshot/1", "key": s.key(), "shape": s,
            "vmstateSha256": "sha256:00", "vmstateBytes": 1, "bootMs": 1, "saveMs": 1,
            "restoreMs": 1, "madeBy": "safe-run 0.1.0"});
        std::fs::write(at.join(MANIFEST_FILE), old.to_string()).expect("write");
        assert!(lookup(dir.path(), &s).is_none());
        assert_eq!(
            other_format(dir.path(), &s).as_deref(),
            Some("safe-run-snapshot/1")
        );
    }

    #[test]
    fn a_snapshot_shaped_vm_maps_its_ram_from_the_runners_descriptor() {
        let plan = args(&[
            "-m",
            "256M",
            "-object",
            "memory-backend-memfd,id=mem,size=256M,share=on",
            "-numa",
            "node,memdev=mem",
        ]);
        let (out, size) = file_backed_ram(&plan).expect("a memfd backend");
        assert_eq!(size, 256 << 20);
        assert_eq!(
            out[3],
            format!(
                "memory-backend-file,id=mem,size=256M,share=on,mem-path=/proc/self/fd/{RAM_FD}"
            )
        );
        assert_eq!((&out[..3], &out[4..]), (&plan[..3], &plan[4..]));
        assert_eq!(file_backed_ram(&args(&["-m", "256M"])), None);
        let odd = args(&["-object", "memory-backend-memfd,id=mem,size=1G,share=on"]);
        assert_eq!(file_backed_ram(&odd), None, "sizes are compiled in MiB");
    }

    #[test]
    fn a_plan_with_per_run_devices_boots_cold() {
        let mut plan = args(&["-m", "256M"]);
        assert_eq!(per_run_devices(&plan, 0), None);
        assert!(per_run_devices(&plan, 1).is_some_and(|r| r.contains("mounts")));
        plan.extend(args(&["-netdev", "tap,id=n0,fd=6"]));
        assert!(per_run_devices(&plan, 0).is_some_and(|r| r.contains("NIC")));
    }

    #[test]
    fn a_staged_snapshot_appears_whole_or_not_at_all() {
        let out = tempfile::tempdir().expect("tempdir");
        let out_dir = out.path().join("snapshots");
        let staged = Staging::create(&out_dir, "k1").expect("staging");
        std::fs::write(staged.path().join(VMSTATE_FILE), b"new").expect("write");
        assert!(!out_dir.join("k1").exists(), "not published yet");
        drop(staged);
        assert_eq!(
            std::fs::read_dir(&out_dir).expect("ls").count(),
            0,
            "an unpublished staging directory is removed"
        );
        std::fs::create_dir(out_dir.join("k1")).expect("mkdir");
        std::fs::write(out_dir.join("k1").join(VMSTATE_FILE), b"old").expect("write");
        let staged = Staging::create(&out_dir, "k1").expect("staging");
        std::fs::write(staged.path().join(VMSTATE_FILE), b"new").expect("write");
        let dest = staged.publish().expect("publish");
        assert_eq!(dest, out_dir.join("k1"));
        assert_eq!(
            std::fs::read(dest.join(VMSTATE_FILE)).expect("read"),
            b"new"
        );
        let names: Vec<_> = std::fs::read_dir(&out_dir)
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["k1"], "nothing but the published snapshot is left");
    }

    #[test]
    fn the_copier_hashes_what_it_passes_on() {
        let data = vec![7u8; 3 << 20];
        let (digest, n) =
            join(copy_hashing(std::io::Cursor::new(data.clone()), Vec::new())).expect("copy");
        assert_eq!(n, data.len() as u64);
        assert_eq!(
            digest,
            format!("sha256:{}", hex::encode(Sha256::digest(&data)))
        );
    }

    #[test]
    fn the_monitor_shows_a_halfword_in_hex() {
        assert_eq!(parse_xp_halfword("0000000002a8b002: 0x0080\r\n"), Some(128));
        assert_eq!(parse_xp_halfword("0000000002a8b002: 0x0000"), Some(0));
        assert_eq!(parse_xp_halfword("Cannot access memory"), None);
        assert_eq!(parse_xp_halfword("0000000002a8b002: 0x1ffff"), None);
    }

    #[test]
    fn the_vsock_is_ready_once_the_guest_stops_filling_its_receive_ring() {
        const NOT_YET: &str = "{\"return\": {\"status\": {\"statuses\": [\"VIRTIO_CONFIG_S_DRIVER: x\"]}, \"vhost-started\": false}}\n";
        const UP: &str = "{\"return\": {\"status\": {\"statuses\": [\"VIRTIO_CONFIG_S_DRIVER_OK: Driver setup and ready\"]}, \"vhost-started\": true}}\n";
        const RING: &str = "{\"return\": {\"avail-phys\": 4096}}\n";
        let shows = |n: u16| -> &'static str {
            Box::leak(
                format!("{{\"return\": \"0000000000001002: 0x{n:04x}\\r\\n\"}}\n").into_boxed_str(),
            )
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let server = super::super::qmp::tests::fake_qemu(
            dir.path(),
            vec![
                "{\"return\": {}}\n",
                NOT_YET,
                UP,
                RING,
                shows(0),
                UP,
                RING,
                shows(64),
                UP,
                RING,
                shows(128),
                UP,
                RING,
                shows(128),
            ],
        );
        let until = Instant::now() + Duration::from_secs(10);
        let mut qmp = Qmp::connect(&dir.path().join("qmp.sock"), until).expect("connect");
        assert!(await_vsock_ready(&mut qmp, until).expect("ready"));
        drop(qmp);
        let seen = server.join().expect("server");
        let read_at: Vec<&str> = seen
            .iter()
            .filter_map(|(v, _)| v.pointer("/arguments/command-line").and_then(Value::as_str))
            .collect();
        assert_eq!(read_at, ["xp /1hx 4098"; 4]);
        assert_eq!(seen.len(), 1 + 1 + 4 * 3);
    }

    #[test]
    fn a_qemu_without_the_status_commands_is_not_waited_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = super::super::qmp::tests::fake_qemu(
            dir.path(),
            vec![
                "{\"return\": {}}\n",
                "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"no\"}}\n",
            ],
        );
        let until = Instant::now() + Duration::from_secs(10);
        let mut qmp = Qmp::connect(&dir.path().join("qmp.sock"), until).expect("connect");
        assert!(!await_vsock_ready(&mut qmp, until).expect("not waited for"));
        drop(qmp);
        server.join().expect("server");
    }
}
