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
    let sc = root.join("cgroup.subtree_control");
    fs.write(&sc, "+memory +pids +cpu")
        .map_err(|e| root_controllers_err(root, &sc, e))?;
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

/// The error of enabling the controllers at `root`, explained when it is EBUSY.
///
/// Why: cgroup v2 enables controllers for a cgroup's children only while that cgroup holds
/// no processes itself ("no internal processes"); only the hierarchy's real root is exempt.
/// A `root` that is some other cgroup with processes in it (the usual case inside a container
/// with its own cgroup namespace, whose `/sys/fs/cgroup` is the container's cgroup) refuses
/// with EBUSY, which alone reads like a transient or a permission problem. safe-run does not
/// move processes it does not own; the operator has to (docs/sandbox.md, "cgroups").
fn root_controllers_err(root: &Path, sc: &Path, e: io::Error) -> io::Error {
    if e.kind() != io::ErrorKind::ResourceBusy {
        return err(sc, e);
    }
    io::Error::new(
        e.kind(),
        format!(
            "{}: {e}: {} holds processes itself and is not the hierarchy's root (a container's \
             cgroup namespace?), and cgroup v2 gives the children of such a cgroup no \
             controllers; move its processes into a child cgroup first (docs/sandbox.md, \
             \"cgroups\")",
            sc.display(),
            root.display()
        ),
    )
}
