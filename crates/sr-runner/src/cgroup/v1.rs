//! cgroup v1: one directory per controller (memory, pids, cpu, cpuacct) under each
//! hierarchy's `safe-run/`, and the limits v1 spells its own way.

use std::io;
use std::path::{Path, PathBuf};

use sr_bundle::CgroupPlan;

use super::{CgroupFs, PARENT, RunCgroup, mkdir_in_parent};

/// The controllers' mount points.
pub(super) struct Hierarchies<'a> {
    pub memory: &'a Path,
    pub pids: &'a Path,
    pub cpu: &'a Path,
    pub cpuacct: Option<&'a Path>,
}

/// Creates the run's directory in each hierarchy and writes `memory.limit_in_bytes` (and
/// `memory.memsw.limit_in_bytes` with swap accounting), `pids.max`, `cpu.cfs_period_us` and
/// `cpu.cfs_quota_us`.
pub(super) fn setup(
    cg: &mut RunCgroup,
    fs: &dyn CgroupFs,
    h: &Hierarchies<'_>,
    plan: &CgroupPlan,
    name: &str,
    quota: Option<u64>,
) -> io::Result<()> {
    let Hierarchies {
        memory,
        pids,
        cpu,
        cpuacct,
    } = *h;
    let mk = |base: &Path, me: &mut RunCgroup| -> io::Result<PathBuf> {
        let parent = base.join(PARENT);
        let dir = parent.join(name);
        mkdir_in_parent(fs, &parent, &dir, |_| Ok(()))?;
        if !me.paths.contains(&dir) {
            me.paths.push(dir.clone());
        }
        Ok(dir)
    };
    let m = mk(memory, cg)?;
    cg.put(
        fs,
        &m,
        "memory.limit_in_bytes",
        plan.memory_max_bytes.to_string(),
    )?;
    if fs.exists(&m.join("memory.memsw.limit_in_bytes")) {
        cg.put(
            fs,
            &m,
            "memory.memsw.limit_in_bytes",
            plan.memory_max_bytes.to_string(),
        )?;
    }
    let p = mk(pids, cg)?;
    cg.put(fs, &p, "pids.max", plan.pids_max.to_string())?;
    let c = mk(cpu, cg)?;
    cg.put(fs, &c, "cpu.cfs_period_us", plan.cpu_period_us.to_string())?;
    cg.put(
        fs,
        &c,
        "cpu.cfs_quota_us",
        quota.map(|q| q.to_string()).unwrap_or_else(|| "-1".into()),
    )?;
    if let Some(acct) = cpuacct {
        mk(acct, cg)?;
    }
    Ok(())
}
