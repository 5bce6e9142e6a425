//! Killing what is left in a run's cgroups and removing them (for a run and for gc), and
//! finding a run's directories by its id.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{CgroupFs, Layout, PARENT};

/// Kills what is left in `dirs` and removes them (used for runs and by gc), then removes
/// their shared `safe-run` parents when they are empty, so that no trace stays once the last
/// run is gone. The kernel refuses to remove a cgroup that still has children (EBUSY), so a
/// concurrent run's parent is never taken from under it.
pub fn kill_and_remove(fs: &dyn CgroupFs, dirs: &[PathBuf]) -> (Vec<PathBuf>, Vec<String>) {
    let (removed, errors) = kill_and_remove_runs(fs, dirs);
    let mut parents: Vec<&Path> = removed
        .iter()
        .filter_map(|d| d.parent())
        .filter(|p| p.file_name().is_some_and(|n| n == PARENT))
        .collect();
    parents.dedup();
    for parent in parents {
        let _ = fs.rmdir(parent);
    }
    (removed, errors)
}

fn kill_and_remove_runs(fs: &dyn CgroupFs, dirs: &[PathBuf]) -> (Vec<PathBuf>, Vec<String>) {
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    for dir in dirs {
        if !fs.exists(dir) {
            continue;
        }
        let kill = dir.join("cgroup.kill");
        if fs.exists(&kill) {
            let _ = fs.write(&kill, "1");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut delay = Duration::from_micros(200);
        loop {
            let procs = fs.read(&dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                fs.kill(pid);
            }
            match fs.rmdir(dir) {
                Ok(()) => {
                    removed.push(dir.clone());
                    break;
                }
                Err(e) if Instant::now() >= deadline => {
                    errors.push(format!("removing {}: {e}", dir.display()));
                    break;
                }
                // EBUSY while the killed tasks are still exiting.
                Err(_) => {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_millis(50));
                }
            }
        }
    }
    (removed, errors)
}

/// Every run cgroup directory named `safe-run-<runId>` under the layout's safe-run parents.
pub fn run_dirs(fs: &dyn CgroupFs, layout: &Layout, run_id: &str) -> Vec<PathBuf> {
    let name = format!("safe-run-{run_id}");
    let bases: Vec<PathBuf> = match layout {
        Layout::V2 { root } => vec![root.clone()],
        Layout::V1 {
            memory,
            pids,
            cpu,
            cpuacct,
        } => {
            let mut v = vec![memory.clone(), pids.clone(), cpu.clone()];
            if let Some(a) = cpuacct {
                if !v.contains(a) {
                    v.push(a.clone());
                }
            }
            v
        }
    };
    bases
        .into_iter()
        .map(|b| b.join(PARENT).join(&name))
        .filter(|p| fs.exists(p))
        .collect()
}
