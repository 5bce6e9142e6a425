//! The run directory `<base>/<runId>/`, its lock, and the index of unfinished runs.
//!
//! The runner holds an exclusive `flock` on `<run dir>/run.lock` for the run's whole life. gc
//! tells a live run from a dead one by trying that lock: robust to pid reuse, and released by the
//! kernel however the runner dies.
//!
//! `<base>/.unfinished/<runId>` (a hard link to the run's lock file) exists from before the run
//! dir appears until its report is written ([`RunDir::mark_finished`]), so the quick gc before
//! every run looks at the few unfinished runs instead of stat-ing every run dir ever kept (which
//! grew its cost by about 2 µs per kept run).
//!
//! [`RunDir::claim_or_create`] takes a spare directory made ahead of time ([`crate::spare`])
//! instead of creating one, when there is one: the same directory, lock protocol and files,
//! without their inode allocations on the path.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::error::RunnerError;
use crate::spare;

/// Name of the lock file.
pub const LOCK_FILE: &str = "run.lock";
/// Marker gc writes into a run dir it recovered.
pub const RECOVERED_FILE: &str = "recovered.json";
/// Present while a deferred release of the run's host objects (its network table and link)
/// has not finished: gc treats the run as unfinished until it is gone, and takes the release
/// over when nobody holds the file's lock (`crate::network::release`).
pub const RELEASE_PENDING_FILE: &str = "release.pending";
/// The directory under the run base holding one empty file per unfinished run.
pub const UNFINISHED_DIR: &str = ".unfinished";

/// The directory under the run base on which every process sandbox mounts its new root, each in
/// its own private mount namespace (so the mounts of concurrent runs never meet, and the host
/// never sees any): one directory for all runs instead of a `root/` made and removed per run.
pub const ROOT_MOUNT_POINT: &str = ".root";

/// The unfinished-run marker of `run_id` under `base`.
pub fn unfinished_marker(base: &Path, run_id: &str) -> PathBuf {
    base.join(UNFINISHED_DIR).join(run_id)
}

/// A fresh run id: 12 lowercase hex digits from /dev/urandom.
pub fn new_run_id() -> Result<String, RunnerError> {
    let mut buf = [0u8; 6];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|source| RunnerError::RunDir {
            action: "read",
            path: "/dev/urandom".into(),
            source,
        })?;
    Ok(hex::encode(buf))
}

/// Whether `s` looks like a run id.
pub fn is_run_id(s: &str) -> bool {
    s.len() == 12
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A created, locked run directory.
#[derive(Debug)]
pub struct RunDir {
    /// The run id.
    pub run_id: String,
    /// `<base>/<runId>`.
    pub path: PathBuf,
    lock: Flock<File>,
    /// The files a claimed spare brought that the run has not taken yet (see
    /// [`RunDir::take_file`]); empty for a created run dir.
    unwritten: Vec<&'static str>,
}

impl RunDir {
    /// Creates `<base>/<runId>/` (0700), takes the lock, and makes sure the base's shared
    /// [`ROOT_MOUNT_POINT`] exists.
    ///
    /// The directory is built under a hidden name (`.<runId>.new`) and renamed into place only
    /// once its lock is held, so gc (which only looks at run-id names) never sees a run dir
    /// whose lock is not yet taken. Its unfinished marker exists before the rename, so gc's
    /// quick pass can never miss a run dir that has no report.
    pub fn create(base: &Path) -> Result<RunDir, RunnerError> {
        Self::make(base, false).map(|(dir, _)| dir)
    }

    /// Like [`RunDir::create`], but claims a spare directory when there is one of this
    /// process's owner and umask (the directory and all its files but the report exist
    /// already). Returns whether the caller should refill a spare ([`crate::spare::refill`],
    /// off the waited-for path): none was left for the next run.
    pub fn claim_or_create(base: &Path) -> Result<(RunDir, bool), RunnerError> {
        Self::make(base, true)
    }

    fn make(base: &Path, use_spare: bool) -> Result<(RunDir, bool), RunnerError> {
        let mk = |p: &Path, mode: u32, recursive: bool| {
            fs::DirBuilder::new()
                .mode(mode)
                .recursive(recursive)
                .create(p)
                .map_err(|source| RunnerError::RunDir {
                    action: "create",
                    path: p.to_path_buf(),
                    source,
                })
        };
        mk(base, 0o755, true)?;
        mk(&base.join(UNFINISHED_DIR), 0o700, true)?;
        mk(&base.join(ROOT_MOUNT_POINT), 0o755, true)?;
        let run_id = new_run_id()?;
        let path = base.join(&run_id);
        let staging = base.join(format!(".{run_id}.new"));
        let lock_path = staging.join(LOCK_FILE);
        let (claimed, refill) = match use_spare.then(spare::Maker::this_process).flatten() {
            Some(maker) => {
                let claim = spare::claim(&spare::HostSpares::under(base), &maker, &staging);
                let lock = claim
                    .claimed
                    .is_some()
                    .then(|| lock_claimed(&staging))
                    .flatten();
                (lock, claim.others == 0)
            }
            None => (None, false),
        };
        let (lock, unwritten) = match claimed {
            Some(lock) => (lock, spare::SPARE_FILES.iter().map(|(n, _)| *n).collect()),
            None => {
                mk(&staging, 0o700, false)?;
                let file = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .mode(0o600)
                    .open(&lock_path)
                    .map_err(|source| RunnerError::RunDir {
                        action: "create",
                        path: lock_path.clone(),
                        source,
                    })?;
                let lock =
                    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
                        RunnerError::RunDir {
                            action: "lock",
                            path: lock_path.clone(),
                            source: e.into(),
                        }
                    })?;
                (lock, Vec::new())
            }
        };
        // A second name of the lock file, not a file of its own: a link allocates no inode
        // (on an ext4 without a journal, every allocation scans the recently deleted ones).
        let marker = unfinished_marker(base, &run_id);
        fs::hard_link(&lock_path, &marker).map_err(|source| RunnerError::RunDir {
            action: "link",
            path: marker.clone(),
            source,
        })?;
        std::fs::rename(&staging, &path).map_err(|source| RunnerError::RunDir {
            action: "rename into place",
            path: path.clone(),
            source,
        })?;
        let dir = RunDir {
            run_id,
            path,
            lock,
            unwritten,
        };
        Ok((dir, refill))
    }

    /// Takes file `name` of a claimed spare for the run to write (a file of the same name
    /// created as the run would have). A spare's `policy.yaml` becomes `policy.json` by a
    /// rename when the run's copy is called that. Returns whether the file exists (empty): an
    /// exclusive create must then open it instead.
    pub fn take_file(&mut self, name: &str) -> bool {
        if let Some(i) = self.unwritten.iter().position(|n| *n == name) {
            self.unwritten.swap_remove(i);
            return true;
        }
        if name.starts_with("policy.")
            && let Some(i) = self
                .unwritten
                .iter()
                .position(|n| *n == spare::SPARE_POLICY)
        {
            self.unwritten.swap_remove(i);
            let from = self.path.join(spare::SPARE_POLICY);
            if fs::rename(&from, self.path.join(name)).is_ok() {
                return true;
            }
            let _ = fs::remove_file(from);
        }
        false
    }

    /// Removes the files of a claimed spare the run never took (a run that stopped before
    /// writing them), so its directory holds what a created one would. `stdout.log` and
    /// `stderr.log` are the runner's: a caller that ran the runner does not call this.
    pub fn discard_unwritten(&mut self) {
        for name in self.unwritten.drain(..) {
            let _ = fs::remove_file(self.path.join(name));
        }
    }

    /// Says the run has its report: gc's quick pass no longer looks at it, unless a deferred
    /// release is still pending (its releaser removes the marker when it is done).
    pub fn mark_finished(&self) {
        if self.path.join(RELEASE_PENDING_FILE).exists() {
            return;
        }
        if let Some(base) = self.path.parent() {
            let _ = fs::remove_file(unfinished_marker(base, &self.run_id));
        }
    }

    /// The lock file (kept open for the run's life).
    pub fn lock_file(&self) -> &File {
        &self.lock
    }
}

/// Locks the `run.lock` of a spare just claimed into `staging`. Its builder holds the lock
/// until just after renaming it into place, so a claim right then waits a little; None (the
/// spare removed, the run dir created as before) if the lock stays held.
fn lock_claimed(staging: &Path) -> Option<Flock<File>> {
    if let Ok(mut file) = OpenOptions::new().write(true).open(staging.join(LOCK_FILE)) {
        for _ in 0..5 {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Some(lock),
                Err((f, _)) => {
                    file = f;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        }
    }
    let _ = fs::remove_dir_all(staging);
    None
}

/// Whether a run dir's lock is held by a live runner (a lock attempt would block).
pub fn is_locked(run_dir: &Path) -> bool {
    let Ok(file) = OpenOptions::new().write(true).open(run_dir.join(LOCK_FILE)) else {
        return false;
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(_unlocked_on_drop) => false,
        Err((_, e)) => e == nix::errno::Errno::EWOULDBLOCK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn claims_a_spare_once_and_creates_a_dir_without_one() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("runs");
        // No spare: created as before, and the caller is told to refill.
        let (created, refill) = RunDir::claim_or_create(&base).unwrap();
        assert!(refill);
        assert_eq!(names(&created.path), vec![LOCK_FILE]);
        spare::refill(&base).unwrap();
        let (mut claimed, refill) = RunDir::claim_or_create(&base).unwrap();
        assert!(refill, "the only spare was taken");
        assert!(is_locked(&claimed.path));
        assert!(unfinished_marker(&base, &claimed.run_id).exists());
        assert_eq!(names(&base.join(spare::SPARE_DIR)), Vec::<String>::new());
        // A JSON policy's copy is the spare's policy.yaml renamed; a file is taken once.
        assert!(claimed.take_file("policy.json"));
        assert!(claimed.take_file("events.jsonl"));
        assert!(!claimed.take_file("events.jsonl"));
        assert!(!claimed.take_file("run_report.json"));
        // A run that stops here keeps only what it took.
        claimed.discard_unwritten();
        assert_eq!(
            names(&claimed.path),
            vec!["events.jsonl", "policy.json", LOCK_FILE]
        );
        // The spare is gone: the next run creates its directory.
        let (next, _) = RunDir::claim_or_create(&base).unwrap();
        assert_eq!(names(&next.path), vec![LOCK_FILE]);
        assert_ne!(next.run_id, claimed.run_id);
    }
}
