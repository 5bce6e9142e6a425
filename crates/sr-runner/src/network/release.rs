//! Removing a finished run's host objects: the steps (shared by the inline release, the
//! deferred releaser and nothing else), and the deferred releaser that runs them off the path
//! the user waits for.
//!
//! Deleting an nftables table and letting a veth go with its namespace wait for kernel RCU
//! grace periods (about 7 ms and 5-15 ms here), which is most of what an allowlist run cost more
//! than `mode: none` at its end. A binary that can host the releaser (`safe-run`, through its
//! hidden [`SUBCOMMAND`]) calls [`defer_to`] once; from then on an [`super::AllowlistNetwork`]
//! of a process sandbox releases like this once the sandbox's processes are gone:
//!
//! 1. it stops the resolver and keeps the counters it read last (the report's audit is taken
//!    before any object goes);
//! 2. it writes `<run dir>/release.pending` ([`Pending`]: exactly this run's table, link and
//!    shared-state holds) and takes an exclusive `flock` on it;
//! 3. it starts `safe-run __release-network detach <pending>` with a duplicate of that lock's
//!    descriptor (no close-on-exec, so the lock is inherited), stdio on /dev/null. That
//!    process (a fresh exec, single-threaded: the multi-threaded runner is never forked) calls
//!    `setsid`, forks the worker and exits at once; [`reap_detached`] collects it. The worker
//!    belongs to no safe-run process, holds the lock for as long as it lives, names itself
//!    `sr-release`, and runs [`release_objects`] with the system executor;
//! 4. the worker writes `<run dir>/net/release.json` ([`Record`]: what it removed, what
//!    failed), removes `release.pending` when every step succeeded, then the run's unfinished
//!    marker if the report is already there ([`crate::rundir::RunDir::mark_finished`] keeps the
//!    marker while `release.pending` exists).
//!
//! A worker killed at any point leaves `release.pending` unlocked: gc ([`crate::gc::collect`],
//! the quick pass before every `safe-run run` included) treats such a run as unfinished,
//! removes its objects by run id ([`super::gc::release_run`]) and clears the file. While the
//! worker lives, gc leaves the run alone. Every step names the run's own table, link and
//! ledger entry only, so a release can never touch another run's.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::exec::{NetCommand, NetCommandExecutor, SystemExecutor};
use super::forwarding::StateLock;
use super::{gc, ledger};
use crate::rundir;

/// The hidden subcommand of the `safe-run` binary that runs the deferred releaser.
pub const SUBCOMMAND: &str = "__release-network";
/// What the worker writes when it is done, under the run dir.
pub const RECORD_FILE: &str = "net/release.json";
/// The worker's process name (`comm`), so that it can be told from any other child.
pub const WORKER_COMM: &std::ffi::CStr = c"sr-release";
/// The name of the process that forks the worker and exits at once (re-parented, or a zombie
/// until reaped, when safe-run has exited first), so that it can be told from the worker.
pub const DETACH_COMM: &std::ffi::CStr = c"sr-detach";

/// How long release waits for a veth to go with the sandbox's network namespace before it
/// deletes the link itself (a bound for a namespace something still holds, not an expectation:
/// it goes in under a millisecond).
pub const VETH_GONE_WITHIN_MS: u64 = 1000;

/// The objects of one run still to be removed: what `release.pending` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pending {
    /// The run.
    pub run_id: String,
    /// The shared state's directory (forwarding record, subnet ledger).
    pub state_dir: PathBuf,
    /// `(family, name)` of the run's table, if it exists.
    pub table: Option<(String, String)>,
    /// The run's host link, if it exists.
    pub link: Option<String>,
    /// The link is a veth whose peer lived in the sandbox's namespace (it goes with it).
    pub veth: bool,
    /// The run holds forwarding flags or a subnet ledger entry.
    pub shared: bool,
}

impl Pending {
    /// Whether nothing is left to remove.
    pub fn is_empty(&self) -> bool {
        self.table.is_none() && self.link.is_none() && !self.shared
    }

    /// The objects, as the report's cleanup record names them.
    pub fn objects(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some((family, name)) = &self.table {
            v.push(format!("table {family} {name}"));
        }
        if let Some(link) = &self.link {
            v.push(format!("link {link}"));
        }
        if self.shared {
            v.push("forwarding holds and subnet ledger entry".to_owned());
        }
        v
    }
}

/// What the deferred worker did: `<run dir>/net/release.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The run.
    pub run_id: String,
    /// The worker's pid.
    pub pid: u32,
    /// What it removed.
    pub removed: Vec<String>,
    /// What failed (gc retries these: `release.pending` stays).
    pub errors: Vec<String>,
    /// When it finished (Unix ms).
    pub finished_at_unix_ms: u64,
}

/// Removes what `pending` names, in order: the table, then the link (a veth whose sandbox has
/// ended is awaited, not deleted: the kernel removes it with the namespace without `ip link
/// del`'s wait under the rtnl lock; anything else is deleted), then the shared state's holds.
/// Every step is attempted; "not found" is done. Returns what was removed and what failed;
/// `pending` keeps what is still there.
pub fn release_objects(
    exec: &dyn NetCommandExecutor,
    pending: &mut Pending,
    sandbox_ended: bool,
) -> (Vec<String>, Vec<String>) {
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    if let Some((family, table)) = pending.table.clone() {
        match exec.run(&NetCommand::nft(&["delete", "table", &family, &table])) {
            Ok(_) => {
                removed.push(format!("table {family} {table}"));
                pending.table = None;
            }
            Err(e) if e.is_not_found() => pending.table = None,
            Err(e) => errors.push(e.to_string()),
        }
    }
    if let Some(link) = pending.link.clone() {
        if pending.veth
            && sandbox_ended
            && exec
                .run(&NetCommand::AwaitLinkGone {
                    name: link.clone(),
                    within_ms: VETH_GONE_WITHIN_MS,
                })
                .is_ok()
        {
            removed.push(format!("link {link}"));
            pending.link = None;
        }
    }
    if let Some(link) = pending.link.clone() {
        match exec.run(&NetCommand::ip(&["link", "del", &link])) {
            Ok(_) => {
                removed.push(format!("link {link}"));
                pending.link = None;
            }
            Err(e) if e.is_not_found() => pending.link = None,
            Err(e) => errors.push(e.to_string()),
        }
    }
    if pending.shared {
        match gc::release_shared(exec, &pending.state_dir, &pending.run_id) {
            Ok(given_back) => {
                removed.extend(given_back);
                pending.shared = false;
            }
            Err(e) => errors.push(e),
        }
    }
    (removed, errors)
}

/// Starts the releaser for a pending file whose lock is `lock` (held by the caller).
pub trait Detacher: Send + Sync + std::fmt::Debug {
    /// Starts a process that removes what `pending` names and lives on after the caller; it
    /// must inherit `lock`'s open file description, so that the lock stays held while it
    /// works. Returns its pid.
    fn detach(&self, pending: &Path, lock: &File) -> Result<u32, String>;
}

/// [`Detacher`] through `<program> __release-network detach <pending>`.
#[derive(Debug, Clone)]
pub struct SpawnReleaser {
    /// The binary hosting [`SUBCOMMAND`] (`safe-run`).
    pub program: PathBuf,
}

/// The intermediate processes started by [`SpawnReleaser`], reaped by [`reap_detached`].
static DETACHING: Mutex<Vec<Child>> = Mutex::new(Vec::new());

impl Detacher for SpawnReleaser {
    fn detach(&self, pending: &Path, lock: &File) -> Result<u32, String> {
        // std opens every descriptor close-on-exec; a duplicate is not, so the child inherits
        // the lock's open file description (and with it the lock). Dropped right after the
        // spawn: closing one descriptor of the description does not unlock it.
        let inherited = nix::unistd::dup(lock).map_err(|e| format!("dup: {e}"))?;
        let child = Command::new(&self.program)
            .arg(SUBCOMMAND)
            .arg("detach")
            .arg(pending)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.program.display()));
        drop(inherited);
        let child = child?;
        let pid = child.id();
        if let Ok(mut v) = DETACHING.lock() {
            v.push(child);
        }
        Ok(pid)
    }
}

/// Reaps the intermediate processes [`SpawnReleaser`] started that have exited (each exits
/// right after starting its worker), without waiting for the others: `safe-run run` calls it
/// last, and its exit must not wait for an exec of itself. One still running then is
/// re-parented (to the nearest subreaper, else the host's pid 1) like its worker; it names
/// itself [`DETACH_COMM`].
pub fn reap_detached() {
    if let Ok(mut v) = DETACHING.lock() {
        v.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_)) | Err(_)));
    }
}

static DEFER_TO: OnceLock<PathBuf> = OnceLock::new();

/// Makes the allowlist networks created from now on in this process release a finished
/// process sandbox's objects through `program`'s [`SUBCOMMAND`] (see the module docs). Only a
/// binary that dispatches [`SUBCOMMAND`] to [`main`] may call this. The first call wins.
pub fn defer_to(program: PathBuf) {
    let _ = DEFER_TO.set(program);
}

/// The [`Detacher`] [`defer_to`] chose, if any.
pub fn default_detacher() -> Option<std::sync::Arc<dyn Detacher>> {
    DEFER_TO.get().map(|p| {
        std::sync::Arc::new(SpawnReleaser { program: p.clone() }) as std::sync::Arc<dyn Detacher>
    })
}

/// The pending file of a run dir.
pub fn pending_path(run_dir: &Path) -> PathBuf {
    run_dir.join(rundir::RELEASE_PENDING_FILE)
}

/// Writes `pending` to `<run dir>/release.pending` and locks it; the returned lock must stay
/// held (or be handed to a worker) until the objects are gone.
pub fn write_pending(run_dir: &Path, pending: &Pending) -> Result<Flock<File>, String> {
    let path = pending_path(run_dir);
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    let mut lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| format!("locking {}: {e}", path.display()))?;
    let text = serde_json::to_vec_pretty(pending).map_err(|e| e.to_string())?;
    lock.write_all(&text)
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(lock)
}

/// The state of a run's deferred release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingState {
    /// No release is pending.
    None,
    /// A worker holds the lock: it is releasing.
    Working,
    /// The file is there and nobody holds it: the worker died (or never started).
    Orphaned,
}

/// Whether `run_dir` has a pending release, and whether a worker is on it.
pub fn pending_state(run_dir: &Path) -> PendingState {
    let path = pending_path(run_dir);
    let Ok(file) = OpenOptions::new().write(true).open(&path) else {
        return PendingState::None;
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(_unlocked_on_drop) => PendingState::Orphaned,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => PendingState::Working,
        Err(_) => PendingState::Orphaned,
    }
}

/// Marks a pending release done: removes `release.pending`, then the run's unfinished marker
/// when the report is there (a report written after this keeps no marker either:
/// `mark_finished` sees no pending file).
pub fn clear_pending(run_dir: &Path) {
    let _ = std::fs::remove_file(pending_path(run_dir));
    if run_dir.join("run_report.json").exists()
        && let (Some(base), Some(id)) = (run_dir.parent(), run_dir.file_name())
    {
        let _ = std::fs::remove_file(rundir::unfinished_marker(base, &id.to_string_lossy()));
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The worker: removes what `pending_file` names with `exec`, writes the record, clears the
/// pending file when everything went. Returns the record.
pub fn work_with(exec: &dyn NetCommandExecutor, pending_file: &Path) -> Result<Record, String> {
    let run_dir = pending_file
        .parent()
        .ok_or_else(|| format!("{} has no run dir", pending_file.display()))?;
    let text = std::fs::read(pending_file)
        .map_err(|e| format!("reading {}: {e}", pending_file.display()))?;
    let mut pending: Pending = serde_json::from_slice(&text)
        .map_err(|e| format!("{} is not a pending release: {e}", pending_file.display()))?;
    if !rundir::is_run_id(&pending.run_id) {
        return Err(format!("{:?} is not a run id", pending.run_id));
    }
    // The run's /30 stays held while its link may still exist: the safe-run that claimed it
    // has gone (or is about to), so the entry names this process from now on.
    if pending.shared
        && let Ok(lock) = StateLock::acquire(&pending.state_dir)
    {
        let _ = ledger::transfer(&lock, ledger::Holder::this_process(&pending.run_id));
    }
    let (removed, errors) = release_objects(exec, &mut pending, true);
    let record = Record {
        run_id: pending.run_id.clone(),
        pid: std::process::id(),
        removed,
        errors,
        finished_at_unix_ms: unix_ms(),
    };
    let record_path = run_dir.join(RECORD_FILE);
    if let Some(dir) = record_path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(
        &record_path,
        serde_json::to_vec_pretty(&record).unwrap_or_default(),
    );
    if record.errors.is_empty() {
        clear_pending(run_dir);
    }
    Ok(record)
}

/// Entry point of [`SUBCOMMAND`]: `detach <pending>` (start the worker in a session of its
/// own, exit) or `work <pending>` (release). Exit status 0, or 5 on failure (the pending file
/// stays for gc).
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> u8 {
    let args: Vec<std::ffi::OsString> = args.into_iter().collect();
    let (Some(stage), Some(pending), 2) = (args.first(), args.get(1), args.len()) else {
        return 2;
    };
    let pending = PathBuf::from(pending);
    if stage != "detach" {
        return 2;
    }
    // A session of its own: no terminal, no signal sent to safe-run's process group reaches
    // the worker. This process is a fresh exec that dispatched here before anything could
    // start a thread, so it forks the worker itself (a second exec of the whole binary cost
    // ~2 ms of CPU, taken from the next run when runs follow each other) and exits at once:
    // the worker is nobody's child but the reaper's, and holds the inherited lock.
    let _ = nix::sys::prctl::set_name(DETACH_COMM);
    let _ = nix::unistd::setsid();
    match crate::sandbox::sys::fork() {
        Ok(nix::unistd::ForkResult::Parent { .. }) => 0,
        Ok(nix::unistd::ForkResult::Child) => {
            let _ = nix::sys::prctl::set_name(WORKER_COMM);
            match work_with(&SystemExecutor, &pending) {
                Ok(r) if r.errors.is_empty() => 0,
                _ => 5,
            }
        }
        Err(_) => 5,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::network::exec::RecordingExecutor;

    fn pending(state: &Path) -> Pending {
        Pending {
            run_id: "aaaaaaaaaaaa".into(),
            state_dir: state.to_path_buf(),
            table: Some(("inet".into(), "safe_run_aaaaaaaaaaaa".into())),
            link: Some("sraaaaaaaaaaaah".into()),
            veth: true,
            shared: true,
        }
    }

    #[test]
    fn pending_file_lock_and_worker() {
        let state = tempfile::tempdir().unwrap();
        let base = tempfile::tempdir().unwrap();
        let run_dir = base.path().join("aaaaaaaaaaaa");
        std::fs::create_dir_all(&run_dir).unwrap();
        assert_eq!(pending_state(&run_dir), PendingState::None);
        let lock = write_pending(&run_dir, &pending(state.path())).unwrap();
        assert_eq!(pending_state(&run_dir), PendingState::Working);
        drop(lock);
        // The holder is gone: gc's case.
        assert_eq!(pending_state(&run_dir), PendingState::Orphaned);
        // A report and a marker: the worker removes the marker once it is done.
        std::fs::write(run_dir.join("run_report.json"), "{}").unwrap();
        let marker = rundir::unfinished_marker(base.path(), "aaaaaaaaaaaa");
        std::fs::create_dir_all(marker.parent().unwrap()).unwrap();
        std::fs::write(&marker, "").unwrap();
        let exec = RecordingExecutor::new(|_| Ok(String::new()));
        let record = work_with(&exec, &pending_path(&run_dir)).unwrap();
        let cmds: Vec<String> = exec.commands().iter().map(ToString::to_string).collect();
        assert_eq!(
            cmds,
            [
                "nft -j delete table inet safe_run_aaaaaaaaaaaa",
                "await link sraaaaaaaaaaaah gone within 1000 ms",
            ]
        );
        assert_eq!(
            record.removed,
            ["table inet safe_run_aaaaaaaaaaaa", "link sraaaaaaaaaaaah"]
        );
        assert!(record.errors.is_empty());
        assert_eq!(pending_state(&run_dir), PendingState::None);
        assert!(!marker.exists());
        let written: Record =
            serde_json::from_slice(&std::fs::read(run_dir.join(RECORD_FILE)).unwrap()).unwrap();
        assert_eq!(written, record);
    }

    #[test]
    fn a_failed_step_keeps_the_pending_file_for_gc() {
        let state = tempfile::tempdir().unwrap();
        let run_dir = tempfile::tempdir().unwrap();
        drop(write_pending(run_dir.path(), &pending(state.path())).unwrap());
        let exec = RecordingExecutor::new(|cmd| match cmd {
            NetCommand::Nft { .. } => {
                Err(RecordingExecutor::failure(cmd, "Operation not permitted"))
            }
            _ => Ok(String::new()),
        });
        let record = work_with(&exec, &pending_path(run_dir.path())).unwrap();
        assert_eq!(record.errors.len(), 1, "{record:?}");
        assert_eq!(pending_state(run_dir.path()), PendingState::Orphaned);
    }

    #[test]
    fn a_pending_file_naming_no_run_is_refused() {
        let run_dir = tempfile::tempdir().unwrap();
        let bad = Pending {
            run_id: "../etc".into(),
            ..Pending::default()
        };
        drop(write_pending(run_dir.path(), &bad).unwrap());
        let exec = RecordingExecutor::new(|_| Ok(String::new()));
        assert!(work_with(&exec, &pending_path(run_dir.path())).is_err());
        assert!(exec.commands().is_empty());
    }
}
