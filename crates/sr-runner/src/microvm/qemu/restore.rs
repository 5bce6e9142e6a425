//! Restoring a QEMU snapshot into a run's VM (docs/microvm.md, "Snapshots"): QEMU's command
//! line for it (the RAM a descriptor the runner made, no vsock device, `-incoming defer`); the
//! memory image copied into that RAM on a thread while QEMU starts; then the devices' state,
//! the run's vsock device and `cont`.

use std::fs::File;
use std::path::Path;
use std::time::Instant;

use command_fds::FdMapping;

use super::super::host::failed;
use super::super::memory_image;
use super::super::qmp::Qmp;
use super::super::ram_copier::{self, Copying};
use super::super::snapshot::{self, SnapshotManifest};
use super::{QemuVm, VHOST_SOCKET, guest_setup};
use crate::cgroup::RunCgroup;
use crate::outcome::RunStatus;

/// The copy of a snapshot's memory image into a restored VM's RAM, under way.
pub(super) type RamFill = Copying;

fn restore_failure(dir: &Path, e: impl std::fmt::Display) -> RunStatus {
    failed(
        "launch.snapshot",
        format!("restoring the snapshot {}: {e}", dir.display()),
        "remove it or make it again with `safe-run artifact snapshot` (docs/microvm.md, Snapshots); QEMU's messages are in <run dir>/vm/qemu.log",
    )
}

impl QemuVm {
    /// QEMU's arguments to restore the snapshot in `dir` into a VM of `plan_args`: without
    /// the vsock device (plugged in after the load), waiting for the state (`-incoming
    /// defer`), its RAM the descriptor [`snapshot::RAM_FD`], which is added to `fds`. Starts
    /// copying the snapshot's memory image into that RAM, from a process in `cgroup` (the
    /// run's, which the pages are then charged to: [`ram_copier`]); [`Self::restore_snapshot`]
    /// waits for the copy before QEMU loads anything.
    pub(super) fn restore_args(
        &mut self,
        plan_args: &[String],
        dir: &Path,
        fds: &mut Vec<FdMapping>,
        cgroup: Option<&RunCgroup>,
    ) -> Result<Vec<String>, RunStatus> {
        let (mut args, size) = snapshot::file_backed_ram(&snapshot::without_vsock(plan_args))
            .ok_or_else(|| {
                failed(
                    "launch.snapshot",
                    "the plan's QEMU command line has no memory-backend-memfd of a size in MiB",
                    "recompile the policy with this safe-run",
                )
            })?;
        args.extend(["-incoming".to_owned(), "defer".to_owned()]);
        let fail = |e: std::io::Error| restore_failure(dir, e);
        let ram = memory_image::guest_ram(size).map_err(fail)?;
        fds.push(FdMapping {
            parent_fd: ram.try_clone().map_err(fail)?.into(),
            child_fd: snapshot::RAM_FD,
        });
        let image = dir.join(snapshot::MEMORY_FILE);
        self.ram_fill = Some(ram_copier::start(&image, ram, size, cgroup).map_err(fail)?);
        Ok(args)
    }

    /// Waits for the memory image's copy, loads the devices' state into the paused QEMU, plugs
    /// the run's vsock device in and lets the guest run; the setup line then carries the
    /// host's clock. Both files' digests must be the manifest's.
    pub(super) fn restore_snapshot(
        &mut self,
        dir: &Path,
        manifest: &SnapshotManifest,
        deadline: Instant,
    ) -> Result<(), RunStatus> {
        let t = Instant::now();
        let fail = |e: String| restore_failure(dir, e);
        let memory = self
            .ram_fill
            .take()
            .ok_or_else(|| fail("its memory image was not being copied (a bug)".into()))?
            .join()
            .map_err(|_| fail("the thread copying its memory image panicked".into()))?
            .map_err(|e| fail(format!("copying its memory image: {e}")))?;
        if memory.sha256 != manifest.memory_sha256 {
            return Err(fail(format!(
                "the {}'s digest is {}, its manifest says {}",
                snapshot::MEMORY_FILE,
                memory.sha256,
                manifest.memory_sha256
            )));
        }
        let vmstate =
            File::open(dir.join(snapshot::VMSTATE_FILE)).map_err(|e| fail(e.to_string()))?;
        let mut qmp = Qmp::connect(&self.vm_dir.join("qmp.sock"), deadline)
            .map_err(|e| fail(e.to_string()))?;
        let digest = snapshot::load(&mut qmp, vmstate, &manifest.vmstate_sha256)
            .map_err(|e| fail(e.to_string()))?;
        let load_ms = t.elapsed().as_millis() as u64;
        snapshot::plug_vsock(&mut qmp, VHOST_SOCKET)
            .and_then(|()| snapshot::resume(&mut qmp))
            .and_then(|()| snapshot::await_vsock_ready(&mut qmp, deadline))
            .map_err(|e| fail(e.to_string()))?;
        self.facts.start = "snapshot".into();
        self.facts.snapshot = Some(super::super::facts::SnapshotFact {
            key: manifest.key.clone(),
            vmstate_sha256: digest,
            memory_sha256: Some(memory.sha256),
            load_ms,
        });
        if let Some(setup) = self.setup.as_mut() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            setup.restored = Some(guest_setup::Restored { unix_time_ms: now });
        }
        Ok(())
    }
}
