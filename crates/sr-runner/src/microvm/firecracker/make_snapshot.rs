//! A snapshot of an agent-ready Firecracker VM: boot a VM of a plan's shape through the jailer
//! as a run would (in no run's cgroup), wait for its agent to listen (its console line: no
//! vsock connection exists when the state is saved), pause it, have Firecracker write the
//! snapshot into its jail, and copy both files out, hashing as they are copied, into
//! `<dir>/<shape key>/` with a manifest. The VM is stopped and its jail removed on every path.
//!
//! Unlike QEMU's, the snapshot is not checked by a trial restore here: the first run of that
//! shape is the check, and a load that fails stops that run at `launch.api.snapshot-load`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sr_bundle::FirecrackerPlan;

use super::api::{self, VmState};
use super::restore::JAIL_FILES;
use super::snapshot::{
    self, FirecrackerManifest, MANIFEST_FILE, MEMORY_FILE, SNAPSHOT_FORMAT, VMSTATE_FILE,
};
use super::{CONSOLE_LOG, FirecrackerVm, substitute};
use crate::life::backend::{Backend, Phases};
use crate::microvm::host::failed;
use crate::microvm::snapshot::{AGENT_LISTENING, Staging};
use crate::outcome::{CleanupReport, RunStatus};

/// What to snapshot, and where.
pub struct SnapshotRequest<'a> {
    /// The compiled plan (with its run id placeholder).
    pub plan: &'a FirecrackerPlan,
    /// The id the snapshot's VM runs under (the jailer's `--id`).
    pub run_id: &'a str,
    /// The directory the plan's jail is built in for that id (the plan's chroot base lies
    /// inside it); its `vm/` keeps the console and Firecracker's log. Removed by the caller.
    pub run_dir: &'a Path,
    /// The snapshot directory (the operator config's `microvm.snapshots`).
    pub out_dir: &'a Path,
    /// Told each step as it starts.
    pub progress: &'a mut dyn FnMut(&str),
}

/// The poll interval while waiting for the agent's console line.
const CONSOLE_POLL: Duration = Duration::from_millis(20);

impl FirecrackerVm {
    /// Makes and publishes a snapshot of `req.plan`'s VM shape; its manifest and directory.
    /// Firecracker is killed and the jail removed whatever happens; a removal that fails
    /// fails the snapshot.
    pub fn make_snapshot(
        &mut self,
        req: SnapshotRequest<'_>,
    ) -> Result<(FirecrackerManifest, PathBuf), RunStatus> {
        let result = self.make_snapshot_inner(req);
        let mut cleanup = CleanupReport::default();
        self.stop(&mut cleanup);
        match (result, cleanup.errors.into_iter().next()) {
            (Ok(_), Some(diagnostic)) => Err(RunStatus::LaunchFailed { diagnostic }),
            (result, _) => result,
        }
    }

    fn make_snapshot_inner(
        &mut self,
        req: SnapshotRequest<'_>,
    ) -> Result<(FirecrackerManifest, PathBuf), RunStatus> {
        let SnapshotRequest {
            plan,
            run_id,
            run_dir,
            out_dir,
            progress,
        } = req;
        let plan =
            substitute(plan, run_id).map_err(|e| failed("launch.vmm", e, "this is a bug"))?;
        if let Some(why) = snapshot::not_restorable(&plan.vm_config) {
            return Err(failed(
                "snapshot.shape",
                format!("this policy's VM cannot be snapshotted: {why}"),
                "a snapshot holds no per-run device: snapshot a policy with `network: {mode: none}` (docs/microvm.md, Firecracker: snapshots)",
            ));
        }
        // The snapshot's own VM always boots.
        self.snapshots = None;
        progress("starting Firecracker through its jailer");
        self.launch(&plan, run_dir, run_id, None, &mut Phases::new())?;
        let jail = self
            .jail
            .clone()
            .ok_or_else(|| failed("launch.jail", "no jail after the launch", "this is a bug"))?;

        progress("booting the guest");
        let reqs = api::requests(&plan.vm_config)
            .map_err(|e| failed("launch.api", e, "recompile the policy with this safe-run"))?;
        self.drive(&jail, &plan, &reqs)?;
        let t_boot = Instant::now();
        self.started = Some(t_boot);
        self.await_agent_listening(t_boot + self.timeouts.boot)?;
        let boot_ms = t_boot.elapsed().as_millis() as u64;

        progress("pausing the VM and creating the snapshot in its jail");
        let t_save = Instant::now();
        self.drive(
            &jail,
            &plan,
            &[
                api::set_vm_state(VmState::Paused),
                api::snapshot_create(JAIL_FILES),
            ],
        )?;
        let save_ms = t_save.elapsed().as_millis() as u64;

        progress("copying the snapshot out of the jail");
        let shape = self.shape(&plan);
        let key = shape.key();
        let out = |e: String| {
            failed(
                "snapshot.out",
                e,
                "the snapshot directory must be writable by root, with room for the guest's memory (docs/microvm.md, Firecracker: snapshots)",
            )
        };
        let staged = Staging::create(out_dir, &key)
            .map_err(|e| out(format!("{}: {e}", out_dir.display())))?;
        let take = |name: &str, limit: u64| {
            snapshot::take_out(&jail.root, name, &staged.path().join(name), limit)
                .map_err(|e| out(format!("{name}: {e}")))
        };
        let (vmstate_sha256, vmstate_bytes) = take(VMSTATE_FILE, snapshot::vmstate_limit())?;
        let (memory_sha256, memory_bytes) =
            take(MEMORY_FILE, snapshot::memory_limit(self.facts.memory_mib))?;
        let manifest = FirecrackerManifest {
            format: SNAPSHOT_FORMAT.into(),
            vmm: snapshot::VMM.into(),
            key,
            shape,
            vmstate_sha256,
            vmstate_bytes,
            memory_sha256,
            memory_bytes,
            boot_ms,
            save_ms,
            made_by: format!("safe-run {}", env!("CARGO_PKG_VERSION")),
        };
        let text = serde_json::to_vec_pretty(&manifest).map_err(|e| out(e.to_string()))?;
        std::fs::write(staged.path().join(MANIFEST_FILE), text)
            .map_err(|e| out(format!("{MANIFEST_FILE}: {e}")))?;
        let dest = staged
            .publish()
            .map_err(|e| out(format!("publishing into {}: {e}", out_dir.display())))?;
        Ok((manifest, dest))
    }

    /// Waits for the agent's console line (Firecracker's stdout is the guest's serial
    /// console) while Firecracker lives.
    fn await_agent_listening(&self, deadline: Instant) -> Result<(), RunStatus> {
        let console = self.vm_dir.join(CONSOLE_LOG);
        loop {
            let text = std::fs::read(&console).unwrap_or_default();
            if String::from_utf8_lossy(&text).contains(AGENT_LISTENING) {
                return Ok(());
            }
            if let Some(status) = self.exited() {
                return Err(self.boot_failure(format!(
                    "Firecracker exited ({status}) before the guest agent listened"
                )));
            }
            if Instant::now() >= deadline {
                return Err(self.boot_failure(format!(
                    "the guest agent did not print {AGENT_LISTENING:?} within {} ms",
                    self.timeouts.boot.as_millis()
                )));
            }
            std::thread::sleep(CONSOLE_POLL);
        }
    }
}
