//! Snapshots of an agent-ready Firecracker VM (docs/microvm.md, "Firecracker: snapshots"):
//! what a snapshot must match to be restored ([`FirecrackerShape`]), its manifest
//! ([`FirecrackerManifest`]), finding one ([`lookup`]), and moving its two files between a
//! jail and the snapshot directory while hashing them ([`take_out`], [`place`]).
//!
//! The layout and the manifest's format are QEMU's (`<dir>/<shape key>/`, `snapshot.json`,
//! `vmstate.bin`, super::super::snapshot) plus Firecracker's memory file; the manifest names
//! its VMM (`"vmm": "firecracker"`), which a QEMU manifest does not, so neither driver takes
//! the other's. Unlike QEMU, Firecracker snapshots its vsock device, so nothing is plugged in
//! after a restore: the restored device listens on the socket path it had (in the new jail).
//!
//! Pure except [`lookup`], [`host_cpu`], [`take_out`] and [`place`].

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::super::host::sha256_file;
pub use super::super::snapshot::{MANIFEST_FILE, SNAPSHOT_FORMAT, VMSTATE_FILE};
use super::super::snapshot::{SnapshotError, copy_and_hash, key_of};

/// The guest memory's file in a snapshot's directory, and in the jail.
pub const MEMORY_FILE: &str = "memory.bin";
/// The manifest's `vmm`.
pub const VMM: &str = "firecracker";
/// Most bytes of a microVM state file taken out of a jail (Firecracker's are kilobytes).
const MAX_VMSTATE: u64 = 64 << 20;

/// Everything that shapes a restorable Firecracker VM: a VM of another shape cannot load it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FirecrackerShape {
    /// `firecracker --version`'s first line (a Firecracker loads only the snapshot format of
    /// its own version).
    pub firecracker_version: String,
    /// The host CPU's model: Firecracker snapshots do not move across CPU models.
    pub host_cpu: String,
    /// The plan's VM configuration (machine-config, boot-source, drives, vsock): what the
    /// guest was booted with and what Firecracker restores (devices, paths, context id).
    pub vm_config: Value,
    /// role -> `sha256:<hex>` of each artifact as placed in the jail.
    pub artifacts: BTreeMap<String, String>,
}

impl FirecrackerShape {
    /// The shape's name, also its directory's.
    pub fn key(&self) -> String {
        key_of(self)
    }
}

/// A Firecracker snapshot's manifest (`snapshot.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FirecrackerManifest {
    /// `SNAPSHOT_FORMAT`.
    pub format: String,
    /// [`VMM`].
    pub vmm: String,
    /// [`FirecrackerShape::key`] of `shape`.
    pub key: String,
    /// What a VM must match to restore it.
    pub shape: FirecrackerShape,
    /// `sha256:<hex>` of [`VMSTATE_FILE`] (Firecracker's microVM state).
    pub vmstate_sha256: String,
    /// Its size in bytes.
    pub vmstate_bytes: u64,
    /// `sha256:<hex>` of [`MEMORY_FILE`].
    pub memory_sha256: String,
    /// Its size in bytes.
    pub memory_bytes: u64,
    /// From `InstanceStart` to the agent listening, when the snapshot was made.
    pub boot_ms: u64,
    /// The pause and the snapshot's creation.
    pub save_ms: u64,
    /// The safe-run that made it.
    pub made_by: String,
}

/// Why a VM of `vm_config` cannot come from a snapshot (it boots cold, and the report says
/// this): a NIC's TAP is per run.
pub fn not_restorable(vm_config: &Value) -> Option<String> {
    vm_config
        .get("network-interfaces")
        .and_then(Value::as_array)
        .is_some_and(|n| !n.is_empty())
        .then(|| "the guest has a NIC (network allowlist), whose TAP is per run".to_owned())
}

/// The host CPU's model name (`/proc/cpuinfo`), or nothing where it has none.
pub fn host_cpu() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpu_model(&info)
}

fn cpu_model(cpuinfo: &str) -> String {
    cpuinfo
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim().to_owned())
        })
        .unwrap_or_default()
}

/// The snapshot of `shape` under `dir`, if one is there with a well-formed manifest of that
/// shape.
pub fn lookup(dir: &Path, shape: &FirecrackerShape) -> Option<(PathBuf, FirecrackerManifest)> {
    let key = shape.key();
    let at = dir.join(&key);
    let text = std::fs::read(at.join(MANIFEST_FILE)).ok()?;
    let m: FirecrackerManifest = serde_json::from_slice(&text).ok()?;
    (m.format == SNAPSHOT_FORMAT && m.vmm == VMM && m.key == key && &m.shape == shape)
        .then_some((at, m))
}

fn io(step: &'static str) -> impl Fn(std::io::Error) -> SnapshotError {
    move |source| SnapshotError::Io { step, source }
}

/// Copies the file Firecracker wrote as `name` in the jail's `root` into `dest`, at most
/// `limit` bytes, hashing as it copies: its digest and size. The jail's root is the VMM's
/// user's, so the file is opened without following a link and must be a regular file. The
/// copy is 0444 whatever the umask: a later run's VMM user reads it through a hard link.
pub fn take_out(
    root: &Path,
    name: &str,
    dest: &Path,
    limit: u64,
) -> Result<(String, u64), SnapshotError> {
    let step = "taking the snapshot out of the jail";
    let from = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(root.join(name))
        .map_err(io(step))?;
    let meta = from.metadata().map_err(io(step))?;
    if !meta.is_file() || meta.len() > limit {
        return Err(SnapshotError::Io {
            step,
            source: std::io::Error::other(format!(
                "{name} in the jail is not a regular file of at most {limit} bytes"
            )),
        });
    }
    let mut to = File::create(dest).map_err(io(step))?;
    // One byte past the limit tells a file that grew while it was copied from one that fits.
    let (digest, bytes) =
        copy_and_hash(&mut from.take(limit.saturating_add(1)), &mut to).map_err(io(step))?;
    if bytes > limit {
        return Err(SnapshotError::Io {
            step,
            source: std::io::Error::other(format!("{name} grew past {limit} bytes")),
        });
    }
    to.sync_all().map_err(io(step))?;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o444)).map_err(io(step))?;
    Ok((digest, bytes))
}

/// The most bytes a memory file of a guest of `mem_size_mib` may have.
pub fn memory_limit(mem_size_mib: u64) -> u64 {
    mem_size_mib.saturating_mul(1 << 20)
}

/// The most bytes a microVM state file may have.
pub fn vmstate_limit() -> u64 {
    MAX_VMSTATE
}

/// Puts the snapshot file `name` of `dir` into the jail's `root` as Firecracker will open it:
/// a hard link where the filesystems allow (the clones of one snapshot then share its page
/// cache), a 0444 copy otherwise, hashed as copied (or, linked, as the file the VMM opens).
/// Refuses it unless its digest is `expected`.
pub fn place(dir: &Path, name: &str, root: &Path, expected: &str) -> Result<(), SnapshotError> {
    let step = "placing the snapshot in the jail";
    let source = dir.join(name);
    let dest = root.join(name);
    let found = match std::fs::hard_link(&source, &dest) {
        Ok(()) => sha256_file(&dest).map_err(io(step))?,
        Err(e)
            if e.raw_os_error() == Some(libc::EXDEV) || e.raw_os_error() == Some(libc::EPERM) =>
        {
            let mut from = File::open(&source).map_err(io(step))?;
            let mut to = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o444)
                .open(&dest)
                .map_err(io(step))?;
            let (digest, _) = copy_and_hash(&mut from, &mut to).map_err(io(step))?;
            // The VMM's user must read it whatever the umask made of the mode.
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o444))
                .map_err(io(step))?;
            digest
        }
        Err(e) => return Err(io(step)(e)),
    };
    if found != expected {
        return Err(SnapshotError::Digest {
            what: name.to_owned(),
            expected: expected.to_owned(),
            found,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shape() -> FirecrackerShape {
        FirecrackerShape {
            firecracker_version: "Firecracker v1.10.1".into(),
            host_cpu: "Some CPU".into(),
            vm_config: json!({"machine-config": {"vcpu_count": 2, "mem_size_mib": 512}}),
            artifacts: [("kernel".to_owned(), "sha256:aa".to_owned())].into(),
        }
    }

    #[test]
    fn the_key_names_every_part_of_the_shape() {
        let base = shape();
        assert_eq!(base.key().len(), 32);
        assert_eq!(base.key(), shape().key());
        let mut changed = vec![shape(), shape(), shape(), shape()];
        changed[0].firecracker_version = "Firecracker v1.10.2".into();
        changed[1].host_cpu = "Another CPU".into();
        changed[2].vm_config["machine-config"]["mem_size_mib"] = json!(1024);
        changed[3]
            .artifacts
            .insert("rootfs".into(), "sha256:bb".into());
        for c in changed {
            assert_ne!(c.key(), base.key(), "{c:?}");
        }
    }

    fn manifest(s: &FirecrackerShape) -> FirecrackerManifest {
        FirecrackerManifest {
            format: SNAPSHOT_FORMAT.into(),
            vmm: VMM.into(),
            key: s.key(),
            shape: s.clone(),
            vmstate_sha256: "sha256:00".into(),
            vmstate_bytes: 1,
            memory_sha256: "sha256:11".into(),
            memory_bytes: 1,
            boot_ms: 1,
            save_ms: 1,
            made_by: "test".into(),
        }
    }

    #[test]
    fn lookup_takes_only_a_firecracker_manifest_of_that_shape() {
        let dir = tempfile::tempdir().unwrap();
        let s = shape();
        assert!(lookup(dir.path(), &s).is_none());
        let at = dir.path().join(s.key());
        std::fs::create_dir_all(&at).unwrap();
        let write = |m: &Value| {
            std::fs::write(at.join(MANIFEST_FILE), serde_json::to_vec(m).unwrap()).unwrap()
        };
        let good = serde_json::to_value(manifest(&s)).unwrap();
        write(&good);
        assert_eq!(lookup(dir.path(), &s).map(|(_, m)| m.key), Some(s.key()));
        let mut other = good.clone();
        other["vmm"] = json!("qemu");
        write(&other);
        assert!(lookup(dir.path(), &s).is_none(), "another VMM's");
        let mut qemu_like = good.clone();
        qemu_like.as_object_mut().unwrap().remove("vmm");
        write(&qemu_like);
        assert!(lookup(dir.path(), &s).is_none(), "no vmm: a QEMU manifest");
        let mut shifted = good;
        shifted["shape"]["hostCpu"] = json!("Another CPU");
        write(&shifted);
        assert!(lookup(dir.path(), &s).is_none(), "another shape");
    }

    #[test]
    fn a_nic_is_not_restorable() {
        assert_eq!(not_restorable(&json!({"vsock": {}})), None);
        assert_eq!(not_restorable(&json!({"network-interfaces": []})), None);
        assert!(
            not_restorable(&json!({"network-interfaces": [{"iface_id": "eth0"}]}))
                .is_some_and(|w| w.contains("NIC"))
        );
    }

    #[test]
    fn the_cpu_model_is_the_first_model_name() {
        let info = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU\n\nprocessor\t: 1\nmodel name\t: other\n";
        assert_eq!(cpu_model(info), "Intel(R) Xeon(R) CPU");
        assert_eq!(cpu_model("processor : 0\n"), "");
    }

    #[test]
    fn files_leave_the_jail_hashed_and_bounded_and_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join(MEMORY_FILE), vec![5u8; 4096]).unwrap();
        let dest = dir.path().join("out.bin");
        let (digest, n) = take_out(&root, MEMORY_FILE, &dest, 4096).unwrap();
        assert_eq!(n, 4096);
        assert_eq!(digest, sha256_file(&dest).unwrap());
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode, 0o444,
            "readable by a later VMM user whatever the umask"
        );
        let dest = dir.path().join("out2.bin");
        assert!(
            take_out(&root, MEMORY_FILE, &dest, 4095).is_err(),
            "too big"
        );
        std::os::unix::fs::symlink("/etc/hostname", root.join(VMSTATE_FILE)).unwrap();
        assert!(
            take_out(&root, VMSTATE_FILE, &dest, 1 << 20).is_err(),
            "a link planted by the VMM's user is not followed"
        );
        assert_eq!(memory_limit(2), 2 << 20);
    }

    #[test]
    fn a_file_is_placed_only_with_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let snap = dir.path().join("snap");
        let root = dir.path().join("root");
        std::fs::create_dir(&snap).unwrap();
        std::fs::create_dir(&root).unwrap();
        std::fs::write(snap.join(VMSTATE_FILE), b"state").unwrap();
        let digest = sha256_file(&snap.join(VMSTATE_FILE)).unwrap();
        place(&snap, VMSTATE_FILE, &root, &digest).unwrap();
        assert_eq!(std::fs::read(root.join(VMSTATE_FILE)).unwrap(), b"state");
        std::fs::write(snap.join(MEMORY_FILE), b"memory").unwrap();
        match place(&snap, MEMORY_FILE, &root, &digest) {
            Err(SnapshotError::Digest {
                expected, found, ..
            }) => {
                assert_eq!(expected, digest);
                assert_eq!(found, sha256_file(&snap.join(MEMORY_FILE)).unwrap());
            }
            other => panic!("not refused for its digest: {other:?}"),
        }
    }
}
