//! cgroups: per-run memory, cpu and pids limits, samples, OOM detection and removal, on cgroup
//! v2 and on v1. This module owns a run's cgroup from creation to removal; [`detect`] finds the
//! layout, `v1`/`v2` write the limits each spells its own way, [`sample`] reads usage, [`removal`]
//! kills and removes.
//!
//! **v2** (one unified hierarchy, most hosts): the run's cgroup is
//! `<root>/safe-run/safe-run-<runId>`; the controllers are enabled in `cgroup.subtree_control`
//! of the root and of `safe-run/`; limits go to `memory.max`, `memory.swap.max` (0: no swap, so
//! the memory limit means what it says), `pids.max`, `cpu.max`; OOM kills are counted in
//! `memory.events`; removal writes `cgroup.kill`. The root must be the hierarchy's real root or
//! a cgroup holding no processes itself (v2 gives no controllers to the children of a cgroup with
//! processes; inside a container's cgroup namespace the operator has to move them first).
//!
//! **v1** (per-controller hierarchies, older and hybrid hosts such as this one): one directory
//! per controller, `<root>/<ctrl>/safe-run/safe-run-<runId>` for memory, pids, cpu and cpuacct;
//! `memory.limit_in_bytes` and `memory.memsw.limit_in_bytes` (equal: no swap) when swap
//! accounting exists, `pids.max`, `cpu.cfs_period_us` + `cpu.cfs_quota_us`; OOM kills in
//! `memory.oom_control` (`oom_kill`); CPU time from `cpuacct.usage`. v1 has no `cgroup.kill`:
//! removal SIGKILLs each pid in `cgroup.procs` until it is empty.
//!
//! The root is a parameter and file access goes through [`CgroupFs`], so the unit tests run
//! against an in-memory fake that records every write.

mod detect;
mod fs;
mod removal;
mod sample;
mod v1;
mod v2;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sr_bundle::CgroupPlan;

pub use detect::{DetectError, Layout, detect};
pub use fs::{CgroupFs, HostFs};
pub use removal::{kill_and_remove, run_dirs};
pub use sample::{Sample, Totals};

/// Name of the parent cgroup that holds every run's cgroup.
pub const PARENT: &str = "safe-run";

/// One run's cgroup(s).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunCgroup {
    /// The layout.
    pub layout: Layout,
    /// The run's directories (one for v2; one per controller for v1), in creation order.
    pub paths: Vec<PathBuf>,
    /// Limits actually written: file name -> value.
    pub limits_written: BTreeMap<String, String>,
}

pub(super) fn err(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

impl RunCgroup {
    /// Creates the run's cgroup(s) named `plan.name` with `<runId>` replaced, and writes the
    /// limits. On error, whatever was created is removed again.
    pub fn create(
        fs: &dyn CgroupFs,
        layout: &Layout,
        plan: &CgroupPlan,
        run_id: &str,
    ) -> io::Result<RunCgroup> {
        let name = plan.name.replace(sr_bundle::RUN_ID_PLACEHOLDER, run_id);
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad cgroup name {name:?}"),
            ));
        }
        let mut cg = RunCgroup {
            layout: layout.clone(),
            paths: Vec::new(),
            limits_written: BTreeMap::new(),
        };
        match cg.setup(fs, plan, &name) {
            Ok(()) => Ok(cg),
            Err(e) => {
                let _ = cg.remove(fs);
                Err(e)
            }
        }
    }

    pub(super) fn put(
        &mut self,
        fs: &dyn CgroupFs,
        dir: &Path,
        file: &str,
        value: String,
    ) -> io::Result<()> {
        let p = dir.join(file);
        fs.write(&p, &value).map_err(|e| err(&p, e))?;
        self.limits_written.insert(file.to_owned(), value);
        Ok(())
    }

    fn setup(&mut self, fs: &dyn CgroupFs, plan: &CgroupPlan, name: &str) -> io::Result<()> {
        let quota = if plan.cpu_quota_us == 0 {
            None
        } else {
            Some(plan.cpu_quota_us)
        };
        match self.layout.clone() {
            Layout::V2 { root } => v2::setup(self, fs, &root, plan, name, quota),
            Layout::V1 {
                memory,
                pids,
                cpu,
                cpuacct,
            } => {
                let h = v1::Hierarchies {
                    memory: &memory,
                    pids: &pids,
                    cpu: &cpu,
                    cpuacct: cpuacct.as_deref(),
                };
                v1::setup(self, fs, &h, plan, name, quota)
            }
        }
    }

    /// Moves process `pid` (and its future children) into every directory of the run.
    pub fn attach(&self, fs: &dyn CgroupFs, pid: u32) -> io::Result<()> {
        for dir in &self.paths {
            let p = dir.join("cgroup.procs");
            fs.write(&p, &pid.to_string()).map_err(|e| err(&p, e))?;
        }
        Ok(())
    }

    /// On cgroup v1, the `tasks` files through which the init moves *itself* (writing `0`)
    /// into the run's cgroups; `None` on v2.
    ///
    /// Why: moving another process (`cgroup.procs`, or a pid) takes the kernel's global
    /// `cgroup_threadgroup_rwsem` for writing, which waits for an RCU grace period: 5 to 15 ms,
    /// the slowest step of a launch. A single thread moving itself through `tasks` skips that
    /// lock (`cgroup_procs_write_start`: "if the thread is `current` ... we can skip the global
    /// lock"). The init is single-threaded, so moving its thread moves the process, and
    /// everything it forks later is born inside.
    pub fn self_attach_files(&self) -> Option<Vec<PathBuf>> {
        match self.layout {
            Layout::V1 { .. } => Some(self.paths.iter().map(|d| d.join("tasks")).collect()),
            Layout::V2 { .. } => None,
        }
    }

    /// Kills every process left in the run's cgroups and removes the directories. Returns
    /// the paths removed; errors are collected, not short-circuited, so one failure does not
    /// leave the others behind.
    pub fn remove(&self, fs: &dyn CgroupFs) -> (Vec<PathBuf>, Vec<String>) {
        kill_and_remove(fs, &self.paths)
    }
}

/// Creates `dir` inside the shared `parent` (creating the parent first, then `init_parent`).
///
/// The last run to finish removes the empty parent (see [`kill_and_remove`]), so the parent
/// can vanish at any point before the child exists: between its mkdir and `init_parent` (on v2,
/// enabling the controllers in its `cgroup.subtree_control` then fails with ENOENT) or between
/// `init_parent` and the child's mkdir (ENOENT too). Either ENOENT means exactly that, and the
/// whole step is retried. Once the child exists the kernel refuses to remove the parent.
pub(super) fn mkdir_in_parent(
    fs: &dyn CgroupFs,
    parent: &Path,
    dir: &Path,
    init_parent: impl Fn(&dyn CgroupFs) -> io::Result<()>,
) -> io::Result<()> {
    let mut attempts = 0;
    loop {
        fs.mkdir(parent).map_err(|e| err(parent, e))?;
        let made = init_parent(fs).and_then(|()| fs.mkdir(dir).map_err(|e| err(dir, e)));
        match made {
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 5 => attempts += 1,
            r => return r,
        }
    }
}
