//! Firecracker's VM-state and snapshot requests, as its published API (swagger
//! `firecracker.yaml`) has them: `PATCH /vm` (`Vm`), `PUT /snapshot/create`
//! (`SnapshotCreateParams`) and `PUT /snapshot/load` (`SnapshotLoadParams`).
//!
//! The spec's rules, which the driver keeps and the test fake enforces:
//!
//! * `PATCH /vm` (`state`: `Paused` | `Resumed`, required) only once the VM runs, booted or
//!   loaded; a repeated state is accepted and changes nothing.
//! * `PUT /snapshot/create` only while the VM is `Paused`. `snapshot_path` and `mem_file_path`
//!   are required; `snapshot_type` (`Full` | `Diff`) defaults to `Full`, and `Diff` needs dirty
//!   page tracking. Firecracker creates (or truncates) both files; the VM stays paused.
//! * `PUT /snapshot/load` only on a fresh Firecracker: nothing but the logger and the metrics
//!   may be configured before it, and the VM must not have started. `snapshot_path` is
//!   required, and exactly one of `mem_backend` (`backend_type` `File` | `Uffd` and
//!   `backend_path`, both required) and the deprecated `mem_file_path`. A load that fails
//!   leaves that Firecracker unusable: it exits.
//!
//! The field set is Firecracker v1.10's (the release docs/microvm.md installs): a load has no
//! `track_dirty_pages` (1.13), `network_overrides` (1.12) or `vsock_override` (1.16), so the
//! vsock's socket after a restore is the path it had when the snapshot was made, relative to
//! the jail's root: every jail has the same layout.

use serde_json::json;

use super::ApiRequest;

/// A state `PATCH /vm` sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmState {
    /// The vCPUs stop; a snapshot may be created.
    Paused,
    /// The vCPUs run again (after a pause, or after a load without `resume_vm`).
    Resumed,
}

impl VmState {
    /// The spec's enum value.
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Paused => "Paused",
            VmState::Resumed => "Resumed",
        }
    }

    /// The step a refusal is reported at.
    fn step(self) -> &'static str {
        match self {
            VmState::Paused => "launch.api.pause",
            VmState::Resumed => "launch.api.resume",
        }
    }
}

/// A snapshot's two files as Firecracker names them: paths in its jail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotFiles<'a> {
    /// The microVM state (devices, vCPUs, KVM): `snapshot_path`.
    pub vmstate: &'a str,
    /// The guest memory: `mem_file_path` at creation, the `File` backend's path at load.
    pub memory: &'a str,
}

/// `PATCH /vm` to `state`.
pub fn set_vm_state(state: VmState) -> ApiRequest {
    ApiRequest {
        step: state.step().to_owned(),
        method: "PATCH",
        path: "/vm".into(),
        body: json!({"state": state.as_str()}),
    }
}

/// `PUT /snapshot/create` of a full snapshot into `files` (the VM must be paused).
pub fn snapshot_create(files: SnapshotFiles<'_>) -> ApiRequest {
    ApiRequest {
        step: "launch.api.snapshot-create".into(),
        method: "PUT",
        path: "/snapshot/create".into(),
        body: json!({
            "snapshot_type": "Full",
            "snapshot_path": files.vmstate,
            "mem_file_path": files.memory,
        }),
    }
}

/// `PUT /snapshot/load` of `files`, the memory through the `File` backend (Firecracker maps
/// it privately and reads pages as the guest touches them), without dirty page tracking;
/// `resume_vm` lets the guest run at once.
pub fn snapshot_load(files: SnapshotFiles<'_>, resume_vm: bool) -> ApiRequest {
    ApiRequest {
        step: "launch.api.snapshot-load".into(),
        method: "PUT",
        path: "/snapshot/load".into(),
        body: json!({
            "snapshot_path": files.vmstate,
            "mem_backend": {"backend_type": "File", "backend_path": files.memory},
            "enable_diff_snapshots": false,
            "resume_vm": resume_vm,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILES: SnapshotFiles<'static> = SnapshotFiles {
        vmstate: "/vmstate.bin",
        memory: "/memory.bin",
    };

    #[test]
    fn pause_and_resume_patch_the_vm() {
        let p = set_vm_state(VmState::Paused);
        assert_eq!((p.method, p.path.as_str()), ("PATCH", "/vm"));
        assert_eq!(p.body, json!({"state": "Paused"}));
        assert_eq!(p.step, "launch.api.pause");
        let r = set_vm_state(VmState::Resumed);
        assert_eq!(r.body, json!({"state": "Resumed"}));
        assert_eq!(r.step, "launch.api.resume");
    }

    #[test]
    fn a_full_snapshot_is_created_into_both_files() {
        let c = snapshot_create(FILES);
        assert_eq!((c.method, c.path.as_str()), ("PUT", "/snapshot/create"));
        assert_eq!(
            c.body,
            json!({"snapshot_type": "Full", "snapshot_path": "/vmstate.bin", "mem_file_path": "/memory.bin"})
        );
        assert_eq!(c.step, "launch.api.snapshot-create");
    }

    #[test]
    fn a_load_names_the_memory_through_the_file_backend_only() {
        let l = snapshot_load(FILES, false);
        assert_eq!((l.method, l.path.as_str()), ("PUT", "/snapshot/load"));
        assert_eq!(
            l.body,
            json!({
                "snapshot_path": "/vmstate.bin",
                "mem_backend": {"backend_type": "File", "backend_path": "/memory.bin"},
                "enable_diff_snapshots": false,
                "resume_vm": false,
            })
        );
        // The deprecated field is never sent beside mem_backend (Firecracker refuses both).
        assert!(l.body.get("mem_file_path").is_none());
        assert_eq!(snapshot_load(FILES, true).body["resume_vm"], true);
        assert_eq!(l.step, "launch.api.snapshot-load");
    }
}
