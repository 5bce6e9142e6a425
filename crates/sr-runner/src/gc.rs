//! gc: removes what runs killed with SIGKILL left behind, without touching live runs.
//!
//! A run is live while its runner holds the `run.lock` flock; the kernel drops the lock however
//! the runner dies, so an unlocked run dir without a report is a dead run. For each unlocked
//! run dir gc removes the run's cgroups (killing anything left in them), asks the network
//! module to remove the run's links and nftables table, and writes `recovered.json` next to the
//! evidence (which it never deletes). Mounts need no gc: they lived in the sandbox's private
//! mount namespace, which died with its last process.
//!
//! A run whose report is written but whose deferred network release is pending
//! (`<run dir>/release.pending`, see [`crate::network::release`]) counts as unfinished: gc
//! leaves it alone while its releaser holds the file's lock, and takes the release over when
//! nobody does (the releaser was killed).
//!
//! `safe-run run` calls [`collect`] before every run (the quick pass: only the runs listed as
//! unfinished, see [`rundir::UNFINISHED_DIR`]), `safe-run gc` on demand (every run dir). Both
//! also remove the spare run dirs ([`crate::spare`]) whose builder died before completing them.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cgroup::{self, CgroupFs, Layout};
use crate::network::release::{self, PendingState};
use crate::rundir::{self, RECOVERED_FILE};

/// The network module's leftover cleanup (links, nftables tables of a dead run).
pub trait LeftoverCleaner {
    /// Removes what run `run_id` left; returns what was removed.
    fn release_leftovers(&self, run_id: &str) -> Result<Vec<String>, String>;
}

/// For runs without network objects (and until the network module provides its cleaner).
#[derive(Debug, Default)]
pub struct NoLeftovers;

impl LeftoverCleaner for NoLeftovers {
    fn release_leftovers(&self, _run_id: &str) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
}

/// What gc did for one run.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Recovered {
    /// Run id.
    pub run_id: String,
    /// Run dir.
    pub run_dir: PathBuf,
    /// What was removed.
    pub removed: Vec<String>,
    /// What could not be removed.
    pub errors: Vec<String>,
}

/// Recovers every dead run under `base`. `layout` is None when cgroups are unavailable.
///
/// `thorough`: also re-check runs that finished (wrote a report); the quick pass before each
/// run skips them, since a finished run cleaned up after itself and says so in its report.
pub fn collect(
    base: &Path,
    layout: Option<&Layout>,
    fs: &dyn CgroupFs,
    net: &dyn LeftoverCleaner,
    thorough: bool,
) -> Vec<Recovered> {
    // Spares whose refill was killed half way (never claimable: see crate::spare).
    crate::spare::remove_dead(base);
    let mut ids = if thorough {
        run_dirs(base)
    } else {
        unfinished_runs(base)
    };
    ids.sort();
    let mut out = Vec::new();
    for (run_id, dir) in ids {
        let marker = rundir::unfinished_marker(base, &run_id);
        // Staging first: a run dir being created is renamed from it into place.
        let staging = base.join(format!(".{run_id}.new"));
        if rundir::is_locked(&staging) || rundir::is_locked(&dir) {
            continue;
        }
        if !dir.is_dir() {
            let _ = std::fs::remove_file(&marker);
            continue;
        }
        // A deferred release: its releaser is still on it, or it was killed (orphaned).
        let pending = match release::pending_state(&dir) {
            PendingState::Working => continue,
            PendingState::Orphaned => true,
            PendingState::None => false,
        };
        let finished = dir.join("run_report.json").exists();
        if !pending && ((finished && !thorough) || dir.join(RECOVERED_FILE).exists()) {
            let _ = std::fs::remove_file(&marker);
            continue;
        }
        let mut removed = Vec::new();
        let mut errors = Vec::new();
        if let Some(layout) = layout {
            let dirs = cgroup::run_dirs(fs, layout, &run_id);
            let (r, e) = cgroup::kill_and_remove(fs, &dirs);
            removed.extend(r.iter().map(|p| format!("cgroup:{}", p.display())));
            errors.extend(e);
        }
        let net_released = match net.release_leftovers(&run_id) {
            Ok(r) => {
                removed.extend(r);
                true
            }
            Err(e) => {
                errors.push(e);
                false
            }
        };
        if pending && net_released {
            release::clear_pending(&dir);
            removed.push(format!(
                "{} (deferred release taken over)",
                rundir::RELEASE_PENDING_FILE
            ));
        }
        if std::fs::remove_dir(dir.join("root")).is_ok() {
            removed.push("root mount point".into());
        }
        if finished && !pending && removed.is_empty() && errors.is_empty() {
            let _ = std::fs::remove_file(&marker);
            continue;
        }
        let rec = Recovered {
            run_id,
            run_dir: dir.clone(),
            removed,
            errors,
        };
        if !finished || pending {
            if let Ok(text) = serde_json::to_string_pretty(&rec) {
                let _ = std::fs::write(dir.join(RECOVERED_FILE), text);
            }
        }
        // A release gc could not finish either stays listed, for the next gc.
        if !pending || net_released {
            let _ = std::fs::remove_file(&marker);
        }
        out.push(rec);
    }
    out
}

/// Every run dir under `base`.
fn run_dirs(base: &Path) -> Vec<(String, PathBuf)> {
    runs_named_in(base, base)
}

/// The runs under `base` that have an unfinished marker.
fn unfinished_runs(base: &Path) -> Vec<(String, PathBuf)> {
    runs_named_in(&base.join(rundir::UNFINISHED_DIR), base)
}

/// The run ids among the names in `listing`, each with its run dir under `base`.
fn runs_named_in(listing: &Path, base: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(listing) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            rundir::is_run_id(&name).then(|| (name.clone(), base.join(name)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::HostFs;
    use crate::rundir::RunDir;

    struct Net(std::cell::RefCell<Vec<String>>);

    impl LeftoverCleaner for Net {
        fn release_leftovers(&self, run_id: &str) -> Result<Vec<String>, String> {
            self.0.borrow_mut().push(run_id.to_owned());
            Ok(vec![format!("net:{run_id}")])
        }
    }

    /// A run dir as a killed runner leaves it: unlocked, no report, a cgroup directory.
    fn dead_run(base: &Path, cg_root: &Path) -> String {
        let dir = RunDir::create(base).unwrap();
        let id = dir.run_id.clone();
        std::fs::create_dir_all(cg_root.join("safe-run").join(format!("safe-run-{id}"))).unwrap();
        drop(dir); // the lock goes with the runner
        id
    }

    /// A temporary run base and a fake cgroup v2 root beside it.
    fn fixture() -> (tempfile::TempDir, PathBuf, PathBuf, Layout) {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("runs");
        let cg_root = tmp.path().join("cgroup");
        let layout = Layout::V2 {
            root: cg_root.clone(),
        };
        (tmp, base, cg_root, layout)
    }

    #[test]
    fn recovers_dead_runs_and_leaves_live_and_finished_ones() {
        let (_tmp, base, cg_root, layout) = fixture();
        let dead = dead_run(&base, &cg_root);
        let live = RunDir::create(&base).unwrap();
        std::fs::create_dir_all(
            cg_root
                .join("safe-run")
                .join(format!("safe-run-{}", live.run_id)),
        )
        .unwrap();
        let finished = RunDir::create(&base).unwrap();
        std::fs::write(finished.path.join("run_report.json"), "{}").unwrap();
        let finished_id = finished.run_id.clone();
        drop(finished);

        let net = Net(Default::default());
        let got = collect(&base, Some(&layout), &HostFs, &net, false);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].run_id, dead);
        assert!(got[0].removed.iter().any(|r| r.starts_with("cgroup:")));
        assert!(got[0].removed.contains(&format!("net:{dead}")));
        assert!(base.join(&dead).join(RECOVERED_FILE).exists());
        assert!(
            !cg_root
                .join("safe-run")
                .join(format!("safe-run-{dead}"))
                .exists()
        );
        // The live run's cgroup is untouched, the finished run was not even looked at.
        assert!(
            cg_root
                .join("safe-run")
                .join(format!("safe-run-{}", live.run_id))
                .exists()
        );
        assert_eq!(*net.0.borrow(), vec![dead.clone()]);
        // Only the live run is still listed as unfinished.
        let listed: Vec<String> = std::fs::read_dir(base.join(rundir::UNFINISHED_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(listed, vec![live.run_id.clone()]);
        // A second pass has nothing to do; a thorough one looks at the finished run too.
        assert!(collect(&base, Some(&layout), &HostFs, &net, false).is_empty());
        let thorough = collect(&base, Some(&layout), &HostFs, &net, true);
        assert_eq!(thorough.len(), 1);
        assert_eq!(thorough[0].run_id, finished_id);
        assert!(!base.join(&finished_id).join(RECOVERED_FILE).exists());
    }

    #[test]
    fn the_quick_pass_sees_only_runs_listed_as_unfinished() {
        let (_tmp, base, cg_root, layout) = fixture();
        let dead = dead_run(&base, &cg_root);
        // Its report written, a run is no longer listed, even if it died afterwards.
        let done = RunDir::create(&base).unwrap();
        std::fs::write(done.path.join("run_report.json"), "{}").unwrap();
        done.mark_finished();
        drop(done);
        std::fs::remove_file(rundir::unfinished_marker(&base, &dead)).unwrap();
        // A marker whose run dir never appeared (a crash in between) is dropped.
        std::fs::write(rundir::unfinished_marker(&base, "0123456789ab"), "").unwrap();
        let net = Net(Default::default());
        assert!(collect(&base, Some(&layout), &HostFs, &net, false).is_empty());
        assert!(!rundir::unfinished_marker(&base, "0123456789ab").exists());
        // The thorough pass still finds the unlisted dead run.
        let got = collect(&base, Some(&layout), &HostFs, &net, true);
        assert!(got.iter().any(|r| r.run_id == dead), "{got:?}");
    }

    /// A run whose report is written but whose deferred network release is pending stays
    /// listed: left alone while its releaser holds `release.pending`, taken over by the quick
    /// pass once the releaser is gone (killed), and then no longer listed.
    #[test]
    fn a_pending_release_is_left_to_its_releaser_and_taken_over_when_it_died() {
        let (_tmp, base, _cg_root, layout) = fixture();
        let dir = RunDir::create(&base).unwrap();
        let id = dir.run_id.clone();
        let pending = crate::network::release::Pending {
            run_id: id.clone(),
            ..Default::default()
        };
        let releaser = crate::network::release::write_pending(&dir.path, &pending).unwrap();
        std::fs::write(dir.path.join("run_report.json"), "{}").unwrap();
        dir.mark_finished();
        drop(dir);
        assert!(rundir::unfinished_marker(&base, &id).exists());
        let net = Net(Default::default());
        // The releaser works: nothing is done, the run stays listed.
        assert!(collect(&base, Some(&layout), &HostFs, &net, false).is_empty());
        assert!(net.0.borrow().is_empty());
        // The releaser dies: the quick pass releases by run id and clears the pending state.
        drop(releaser);
        let got = collect(&base, Some(&layout), &HostFs, &net, false);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(*net.0.borrow(), vec![id.clone()]);
        assert!(!base.join(&id).join(rundir::RELEASE_PENDING_FILE).exists());
        assert!(!rundir::unfinished_marker(&base, &id).exists());
        assert!(base.join(&id).join(RECOVERED_FILE).exists());
        assert!(collect(&base, Some(&layout), &HostFs, &net, false).is_empty());
    }
}
