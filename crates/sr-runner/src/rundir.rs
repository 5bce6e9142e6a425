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

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::error::RunnerError;

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
        mk(&staging, 0o700, false)?;
        let lock_path = staging.join(LOCK_FILE);
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
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
            RunnerError::RunDir {
                action: "lock",
                path: lock_path.clone(),
                source: e.into(),
            }
        })?;
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
        Ok(RunDir { run_id, path, lock })
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
