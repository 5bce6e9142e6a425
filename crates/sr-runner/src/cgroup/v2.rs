//! cgroup v2: the run's one directory under `<root>/safe-run/`, the controllers enabled in
//! `cgroup.subtree_control` of the root and of `safe-run/`, and its limits.

use std::io;
use std::path::Path;

use sr_bundle::CgroupPlan;

use super::{CgroupFs, PARENT, RunCgroup, err, mkdir_in_parent};

/// Creates the run's directory under `root` and writes `memory.max`, `memory.swap.max`,
/// `pids.max` and `cpu.max`.
pub(super) fn setup(
    cg: &mut RunCgroup,
    fs: &dyn CgroupFs,
    root: &Path,
    plan: &CgroupPlan,
    name: &str,
    quota: Option<u64>,
) -> io::Result<()> {
    let parent = root.join(PARENT);
    // Enabling controllers for the children of root and of safe-run/.
    fs.write(&root.join("cgroup.subtree_control"), "+memory +pids +cpu")
        .map_err(|e| err(&root.join("cgroup.subtree_control"), e))?;
    let dir = parent.join(name);
    mkdir_in_parent(fs, &parent, &dir, |fs| {
        let sc = parent.join("cgroup.subtree_control");
        fs.write(&sc, "+memory +pids +cpu").map_err(|e| err(&sc, e))
    })?;
    cg.paths.push(dir.clone());
    cg.put(fs, &dir, "memory.max", plan.memory_max_bytes.to_string())?;
    if fs.exists(&dir.join("memory.swap.max")) {
        cg.put(fs, &dir, "memory.swap.max", "0".into())?;
    }
    cg.put(fs, &dir, "pids.max", plan.pids_max.to_string())?;
    let cpu = match quota {
        Some(q) => format!("{q} {}", plan.cpu_period_us),
        None => format!("max {}", plan.cpu_period_us),
    };
    cg.put(fs, &dir, "cpu.max", cpu)?;
    Ok(())
}
