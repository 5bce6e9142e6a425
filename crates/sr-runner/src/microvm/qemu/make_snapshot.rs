//! `safe-run artifact snapshot`: boots a VM of a plan's shape without a vsock device (which
//! QEMU cannot migrate), waits for its agent to listen, saves it, and checks the snapshot by
//! restoring it once into a VM whose freshly plugged vsock device reaches the agent. Only a
//! snapshot that passed that check is published, under `<dir>/<shape key>/`.
//!
//! The VMM runs confined as in a run (its own user, namespaces, the host seccomp filter and
//! QEMU's `-sandbox`); it is in no run's cgroup, and the guest runs nothing but the agent.

use std::path::{Path, PathBuf};
use std::time::Instant;

use sr_bundle::QemuPlan;

use command_fds::FdMapping;

use super::super::accel;
use super::super::host::{failed, version_line};
use super::super::memory_image;
use super::super::qmp::Qmp;
use super::super::snapshot::{
    self, AGENT_LISTENING, MANIFEST_FILE, MEMORY_FILE, SNAPSHOT_FORMAT, Shape, SnapshotManifest,
    Staging, VMSTATE_FILE,
};
use super::{
    BOOT_TIMEOUT, QemuVm, RESTORED_ANSWER_WAIT, VHOST_WORKER_GONE, fresh_cid, set_guest_cid,
    vmm_dir, vmm_tail,
};
use crate::outcome::{CleanupReport, RunStatus};

/// How many times the check restores a fresh snapshot before giving up on a failed vsock
/// backend (see `QemuVm::vhost_worker_gone`).
const CHECK_ATTEMPTS: u32 = 2;

/// What to snapshot, and where.
pub struct SnapshotRequest<'a> {
    /// The compiled plan, its run id placeholder replaced.
    pub plan: &'a QemuPlan,
    /// A fresh directory for the VMs' sockets and logs (removed by the caller).
    pub work_dir: &'a Path,
    /// The snapshot directory (the operator config's `microvm.snapshots`).
    pub out_dir: &'a Path,
    /// Told each step as it starts.
    pub progress: &'a mut dyn FnMut(&str),
}

impl QemuVm {
    /// Makes, checks and publishes a snapshot of `req.plan`'s VM shape; its manifest and
    /// directory.
    pub fn make_snapshot(
        &mut self,
        req: SnapshotRequest<'_>,
    ) -> Result<(SnapshotManifest, PathBuf), RunStatus> {
        let result = self.make_snapshot_inner(req);
        let mut cleanup = CleanupReport::default();
        crate::life::backend::Backend::stop(self, &mut cleanup);
        result
    }

    fn make_snapshot_inner(
        &mut self,
        req: SnapshotRequest<'_>,
    ) -> Result<(SnapshotManifest, PathBuf), RunStatus> {
        let SnapshotRequest {
            plan,
            work_dir,
            out_dir,
            progress,
        } = req;
        if let Some(why) = snapshot::not_restorable(plan) {
            return Err(failed(
                "snapshot.shape",
                format!("this policy's VM cannot be snapshotted: {why}"),
                "a snapshot holds no per-run device: snapshot a policy with `network: {mode: none}` and no mounts (docs/microvm.md, Snapshots)",
            ));
        }
        let io = |step: &'static str| {
            move |e: std::io::Error| failed(step, e.to_string(), "see docs/microvm.md, Snapshots")
        };
        self.vm_dir = work_dir.join("boot").join("vm");
        vmm_dir(&self.vm_dir, self.vmm_uid, self.vmm_gid).map_err(io("snapshot.vmm"))?;
        progress("checking the artifacts");
        let fds = self.check_artifacts(plan)?;
        let accel = accel::host_accel();
        let shape = Shape {
            qemu_version: version_line(Path::new(&plan.qemu_bin)),
            accelerator: accel.name.to_owned(),
            args: snapshot::shape_args(&plan.args),
            artifacts: self.facts.artifacts.clone(),
        };
        let key = shape.key();
        let confinement = self.vmm_confinement()?;
        let (mut args, ram_size) = snapshot::file_backed_ram(&shape.args).ok_or_else(|| {
            failed(
                "snapshot.shape",
                "the plan's QEMU command line has no memory-backend-memfd of a size in MiB",
                "recompile the policy with this safe-run",
            )
        })?;
        args.extend(vmm_tail(accel.name));
        // The guest's RAM: ours to copy from once the VM is stopped and its devices saved.
        let ram = memory_image::guest_ram(ram_size).map_err(io("snapshot.vmm"))?;
        let mut fds = fds;
        fds.push(FdMapping {
            parent_fd: ram.try_clone().map_err(io("snapshot.vmm"))?.into(),
            child_fd: snapshot::RAM_FD,
        });

        progress(&format!(
            "booting the guest ({}, no vsock device yet)",
            accel.name
        ));
        let t_boot = Instant::now();
        let qemu = self.spawn(
            &plan.qemu_bin,
            &args,
            (&confinement, fds),
            &self.vm_dir.join("qemu.log"),
            None,
        )?;
        self.procs().qemu = Some(qemu);
        self.plan = Some(plan.clone());
        if !self.await_agent_listening(t_boot + BOOT_TIMEOUT)? {
            return Err(self.boot_failure(format!(
                "the guest agent did not print {AGENT_LISTENING:?} within {} s",
                BOOT_TIMEOUT.as_secs()
            )));
        }
        let boot_ms = t_boot.elapsed().as_millis() as u64;

        progress("saving the VM state");
        let staged = Staging::create(out_dir, &key).map_err(io("snapshot.out"))?;
        let staging = staged.path().to_path_buf();
        let vmstate =
            std::fs::File::create(staging.join(VMSTATE_FILE)).map_err(io("snapshot.save"))?;
        let t_save = Instant::now();
        let mut qmp = Qmp::connect(&self.vm_dir.join("qmp.sock"), t_save + BOOT_TIMEOUT)
            .map_err(|e| failed("snapshot.save", e.to_string(), "see QEMU's log"))?;
        let (vmstate_sha256, vmstate_bytes) = snapshot::save(&mut qmp, vmstate)
            .map_err(|e| failed("snapshot.save", e.to_string(), "see QEMU's log"))?;
        let memory = std::fs::File::create_new(staging.join(MEMORY_FILE))
            .and_then(|image| {
                image.set_len(ram_size)?;
                memory_image::copy_pages(&ram, &image, ram_size)
            })
            .map_err(io("snapshot.save"))?;
        drop(ram);
        let save_ms = t_save.elapsed().as_millis() as u64;
        drop(qmp);
        let mut cleanup = CleanupReport::default();
        crate::life::backend::Backend::stop(self, &mut cleanup);

        let mut manifest = SnapshotManifest {
            format: SNAPSHOT_FORMAT.into(),
            key: key.clone(),
            shape,
            vmstate_sha256,
            vmstate_bytes,
            memory_sha256: memory.sha256,
            memory_bytes: memory.bytes,
            boot_ms,
            save_ms,
            restore_ms: 0,
            made_by: format!("safe-run {}", env!("CARGO_PKG_VERSION")),
        };
        progress("checking it: restoring it once, with a fresh vsock device");
        let mut restored = None;
        for attempt in 1..=CHECK_ATTEMPTS {
            let check_dir = work_dir.join(format!("check-{attempt}"));
            restored = self.check_restore(plan, &check_dir, &staging, &manifest)?;
            if restored.is_some() {
                break;
            }
            crate::life::backend::Backend::stop(self, &mut CleanupReport::default());
            progress(&format!("{VHOST_WORKER_GONE}: checking again"));
        }
        manifest.restore_ms = restored.ok_or_else(|| {
            failed(
                "snapshot.check",
                format!("{CHECK_ATTEMPTS} restores of the snapshot failed: {VHOST_WORKER_GONE}"),
                "run `safe-run artifact snapshot` again; see docs/microvm.md, Snapshots",
            )
        })?;

        let text = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| io("snapshot.out")(std::io::Error::other(e)))?;
        std::fs::write(staging.join(MANIFEST_FILE), text).map_err(io("snapshot.out"))?;
        let dest = staged.publish().map_err(io("snapshot.out"))?;
        Ok((manifest, dest))
    }

    /// Restores the staged snapshot as a run would (fresh context id, vsock plugged in after
    /// the load), in `check_dir`, and waits for the agent to take a connection; the
    /// milliseconds from QEMU's start to that, or None when the vsock backend failed.
    fn check_restore(
        &mut self,
        plan: &QemuPlan,
        check_dir: &Path,
        staging: &Path,
        manifest: &SnapshotManifest,
    ) -> Result<Option<u64>, RunStatus> {
        self.vm_dir = check_dir.join("vm");
        vmm_dir(&self.vm_dir, self.vmm_uid, self.vmm_gid)
            .map_err(|e| failed("snapshot.check", e.to_string(), "see docs/microvm.md"))?;
        let fds = self.check_artifacts(plan)?;
        let confinement = self.vmm_confinement()?;
        let mut vhost_args = plan.vhost_vsock_args.clone();
        let cid = fresh_cid()
            .map_err(|e| failed("snapshot.check", e.to_string(), "see docs/microvm.md"))?;
        set_guest_cid(&mut vhost_args, cid);
        self.spawn_vhost(plan, &vhost_args, &confinement, None)?;
        let mut fds = fds;
        let mut args = self.restore_args(&plan.args, staging, &mut fds, None)?;
        args.extend(vmm_tail(accel::host_accel().name));
        let t = Instant::now();
        let qemu = self.spawn(
            &plan.qemu_bin,
            &args,
            (&confinement, fds),
            &self.vm_dir.join("qemu.log"),
            None,
        )?;
        self.procs().qemu = Some(qemu);
        let deadline = t + BOOT_TIMEOUT;
        self.restore_snapshot(staging, manifest, deadline)?;
        let socket = self.vm_dir.join(&plan.vsock_socket);
        // The whole check is bounded by the boot's deadline (no run deadline applies).
        let reached = self.reach_agent(
            &socket,
            plan.agent_port,
            deadline + BOOT_TIMEOUT,
            deadline,
            RESTORED_ANSWER_WAIT,
        )?;
        // Closed without a byte: the agent counts it as a probe and listens on.
        Ok(reached.map(|_| t.elapsed().as_millis() as u64))
    }
}
