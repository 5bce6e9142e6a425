//! Which cgroup layout the host has: v2 when its root lists the controllers a run needs,
//! otherwise the v1 hierarchies.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::CgroupFs;

/// Which cgroup layout the host has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "version", rename_all = "camelCase")]
pub enum Layout {
    /// Unified hierarchy at `root`.
    V2 {
        /// Mount point of cgroup2 with the controllers.
        root: PathBuf,
    },
    /// Per-controller hierarchies.
    V1 {
        /// memory controller mount.
        memory: PathBuf,
        /// pids controller mount.
        pids: PathBuf,
        /// cpu controller mount.
        cpu: PathBuf,
        /// cpuacct controller mount (maybe the same as cpu).
        cpuacct: Option<PathBuf>,
    },
}

/// Why the cgroup layout cannot host a run.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DetectError(pub String);

/// Detects the layout under `root` (normally `/sys/fs/cgroup`). v2 is used when its
/// `cgroup.controllers` lists memory, pids and cpu; otherwise the v1 hierarchies must exist.
pub fn detect(fs: &dyn CgroupFs, root: &Path) -> Result<Layout, DetectError> {
    let controllers = root.join("cgroup.controllers");
    if fs.exists(&controllers) {
        let have = fs.read(&controllers).unwrap_or_default();
        let have: Vec<&str> = have.split_whitespace().collect();
        let missing: Vec<&str> = ["memory", "pids", "cpu"]
            .into_iter()
            .filter(|c| !have.contains(c))
            .collect();
        if missing.is_empty() {
            return Ok(Layout::V2 {
                root: root.to_path_buf(),
            });
        }
        return Err(DetectError(format!(
            "cgroup v2 at {} lacks the controllers: {}",
            root.display(),
            missing.join(", ")
        )));
    }
    let memory = root.join("memory");
    let pids = root.join("pids");
    let cpu = root.join("cpu");
    let mut missing = Vec::new();
    if !fs.exists(&memory.join("memory.limit_in_bytes")) {
        missing.push("memory");
    }
    if !fs.exists(&pids.join("pids.max")) && !fs.exists(&pids.join("cgroup.procs")) {
        missing.push("pids");
    }
    if !fs.exists(&cpu.join("cpu.cfs_quota_us")) {
        missing.push("cpu");
    }
    if !missing.is_empty() {
        return Err(DetectError(format!(
            "no cgroup v2 controllers at {} and the cgroup v1 hierarchies lack: {}",
            root.display(),
            missing.join(", ")
        )));
    }
    let cpuacct = if fs.exists(&cpu.join("cpuacct.usage")) {
        Some(cpu.clone())
    } else if fs.exists(&root.join("cpuacct").join("cpuacct.usage")) {
        Some(root.join("cpuacct"))
    } else {
        None
    };
    Ok(Layout::V1 {
        memory,
        pids,
        cpu,
        cpuacct,
    })
}
