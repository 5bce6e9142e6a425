//! How a Firecracker VM starts from a snapshot instead of booting: the choice (a snapshot of
//! this VM's shape in the operator's snapshot directory), its files placed in the new jail and
//! checked against the manifest before Firecracker starts, and the API steps after it does.
//!
//! Firecracker starts as for a boot (no configuration file): the logger and the metrics, which
//! a snapshot does not hold and the spec allows before a load, then `PUT /snapshot/load` as the
//! first configuration of that process, then `PATCH /vm` `Resumed`. The vsock device comes
//! back from the snapshot with its context id and its socket path, which the new jail makes
//! reachable again (the same name in the jail's root, not there yet, so Firecracker can bind
//! it). The guest's established vsock connections are reset at the snapshot's creation
//! (`VIRTIO_VSOCK_EVENT_TRANSPORT_RESET`, Firecracker's own doing); the agent's listener
//! survives, and the runner connects afresh as after a boot.

use std::path::Path;
use std::time::Instant;

use sr_bundle::FirecrackerPlan;

use super::FirecrackerVm;
use super::api::{self, SnapshotFiles, VmState};
use super::jailer::JailLayout;
use super::snapshot::{self, FirecrackerManifest, FirecrackerShape, MEMORY_FILE, VMSTATE_FILE};
use crate::microvm::facts::SnapshotFact;
use crate::microvm::host::failed;
use crate::outcome::RunStatus;

/// The snapshot's files as Firecracker opens them: in its jail's root.
pub(super) const JAIL_FILES: SnapshotFiles<'static> = SnapshotFiles {
    vmstate: "/vmstate.bin",
    memory: "/memory.bin",
};

/// The host's wall clock in milliseconds since the Unix epoch.
pub(super) fn unix_time_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl FirecrackerVm {
    /// The shape of the VM `plan` describes, on this host, with the artifacts as placed.
    pub(super) fn shape(&self, plan: &FirecrackerPlan) -> FirecrackerShape {
        FirecrackerShape {
            firecracker_version: self.facts.vmm_version.clone(),
            host_cpu: snapshot::host_cpu(),
            vm_config: plan.vm_config.clone(),
            artifacts: self.facts.artifacts.clone(),
        }
    }

    /// How this VM starts: from a snapshot of its shape when the operator keeps snapshots and
    /// one is there (its files are placed in `jail` and checked now, before Firecracker
    /// starts), else a cold boot; the facts say which, and why a snapshot was not used.
    pub(super) fn choose_start(
        &mut self,
        plan: &FirecrackerPlan,
        jail: &JailLayout,
    ) -> Result<(), RunStatus> {
        self.facts.start = "boot".into();
        let Some(dir) = self.snapshots.clone() else {
            return Ok(());
        };
        if let Some(why) = snapshot::not_restorable(&plan.vm_config) {
            self.facts.start_note = Some(why);
            return Ok(());
        }
        let shape = self.shape(plan);
        let Some((at, manifest)) = snapshot::lookup(&dir, &shape) else {
            self.facts.start_note = Some(format!(
                "no snapshot of this VM's shape ({}) in {}",
                shape.key(),
                dir.display()
            ));
            return Ok(());
        };
        place_files(&at, &manifest, &jail.root)?;
        self.restore = Some(manifest);
        Ok(())
    }

    /// Loads the placed snapshot of `manifest` into the fresh Firecracker and lets the guest run; the
    /// instant the load began (the guest's start, for `bootMs`).
    pub(super) fn load_snapshot(
        &mut self,
        jail: &JailLayout,
        plan: &FirecrackerPlan,
        manifest: &FirecrackerManifest,
    ) -> Result<Instant, RunStatus> {
        self.drive(jail, plan, &api::logging_requests())?;
        let t = Instant::now();
        // Loaded paused, so that loadMs is the load's alone and a refused resume is its own
        // step.
        self.drive(jail, plan, &[api::snapshot_load(JAIL_FILES, false)])?;
        let load_ms = t.elapsed().as_millis() as u64;
        self.drive(jail, plan, &[api::set_vm_state(VmState::Resumed)])?;
        self.facts.start = "snapshot".into();
        self.facts.snapshot = Some(SnapshotFact {
            key: manifest.key.clone(),
            vmstate_sha256: manifest.vmstate_sha256.clone(),
            memory_sha256: Some(manifest.memory_sha256.clone()),
            load_ms,
        });
        Ok(t)
    }
}

/// Places the snapshot's two files of `dir` in the jail's `root`, each refused unless its
/// digest is the manifest's: a torn or swapped file stops the run before Firecracker starts.
fn place_files(dir: &Path, m: &FirecrackerManifest, root: &Path) -> Result<(), RunStatus> {
    for (name, expected) in [
        (VMSTATE_FILE, &m.vmstate_sha256),
        (MEMORY_FILE, &m.memory_sha256),
    ] {
        snapshot::place(dir, name, root, expected).map_err(|e| {
            failed(
                "launch.snapshot",
                format!("the snapshot {}: {name}: {e}", dir.display()),
                "remove it or make it again (docs/microvm.md, Firecracker: snapshots); the snapshot directory must be root's alone",
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firecracker_opens_the_snapshot_files_at_its_jails_root() {
        assert_eq!(JAIL_FILES.vmstate, format!("/{VMSTATE_FILE}"));
        assert_eq!(JAIL_FILES.memory, format!("/{MEMORY_FILE}"));
    }
}
