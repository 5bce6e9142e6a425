//! IPv4 forwarding for allowlist runs, changed as little as possible and given back.
//!
//! Linux forwards an IPv4 packet only if the interface it *arrived on* has
//! `net.ipv4.conf.<if>.forwarding = 1`. Egress arrives on the run's host veth: that flag is set
//! per run and vanishes with the link. Replies arrive on the host's uplink (the interface the
//! route to the destination uses): if its flag is 0, it is set to 1. That is a host change
//! outside the run, so it is shared among runs and given back:
//!
//! * a state file (`<state dir>/forwarding.json`: interface -> original value) records every
//!   flag safe-run turned on; a flag already 1 that safe-run did not turn on is never touched;
//! * attach (after its table exists) and release take an exclusive `flock` on
//!   `<state dir>/network.lock`; release, after deleting its own table, restores the recorded
//!   flags only when no other `safe_run_*` table is left, i.e. no allowlist run is active.
//!
//! The global `net.ipv4.ip_forward` is never written.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::exec::{NetCommand, NetCommandExecutor};

/// Default directory of the shared lock and state file.
pub const DEFAULT_STATE_DIR: &str = "/run/safe-run/network";

/// An exclusive lock over the shared forwarding state.
pub struct StateLock {
    _lock: Flock<File>,
    state: PathBuf,
}

impl StateLock {
    /// Takes the lock (blocking), creating the directory.
    pub fn acquire(dir: &Path) -> Result<Self, String> {
        fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let path = dir.join("network.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| format!("locking {}: {e}", path.display()))?;
        Ok(StateLock {
            _lock: lock,
            state: dir.join("forwarding.json"),
        })
    }

    /// Interfaces safe-run turned forwarding on for, with their original values.
    pub fn read(&self) -> BTreeMap<String, String> {
        fs::read(&self.state)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Replaces the record (an empty record removes the file).
    pub fn write(&self, record: &BTreeMap<String, String>) -> Result<(), String> {
        let r = if record.is_empty() {
            match fs::remove_file(&self.state) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        } else {
            let text = serde_json::to_vec_pretty(record).unwrap_or_default();
            fs::write(&self.state, text)
        };
        r.map_err(|e| format!("writing {}: {e}", self.state.display()))
    }
}

fn key(dev: &str) -> String {
    format!("net.ipv4.conf.{dev}.forwarding")
}

/// Ensures forwarding on each of `devs`; returns those it turned on now. Call under the lock.
pub fn ensure(
    exec: &dyn NetCommandExecutor,
    lock: &StateLock,
    devs: &[String],
) -> Result<Vec<String>, String> {
    let mut record = lock.read();
    let mut changed = Vec::new();
    for dev in devs {
        let current = exec
            .run(&NetCommand::SysctlRead { key: key(dev) })
            .map_err(|e| e.to_string())?;
        if current.trim() == "1" {
            continue;
        }
        exec.run(&NetCommand::SysctlWrite {
            key: key(dev),
            value: "1".into(),
        })
        .map_err(|e| e.to_string())?;
        record
            .entry(dev.clone())
            .or_insert_with(|| current.trim().to_owned());
        changed.push(dev.clone());
    }
    lock.write(&record)?;
    Ok(changed)
}

/// Restores every recorded flag when `others_active()` says no other allowlist run exists
/// (asked only when something is recorded). Call under the lock.
pub fn restore_if_idle(
    exec: &dyn NetCommandExecutor,
    lock: &StateLock,
    others_active: &dyn Fn() -> Result<bool, String>,
) -> Result<Vec<String>, String> {
    if lock.read().is_empty() || others_active()? {
        return Ok(Vec::new());
    }
    let record = lock.read();
    let mut restored = Vec::new();
    let mut errors = Vec::new();
    for (dev, original) in &record {
        match exec.run(&NetCommand::SysctlWrite {
            key: key(dev),
            value: original.clone(),
        }) {
            Ok(_) => restored.push(dev.clone()),
            // The interface is gone: nothing left to restore.
            Err(e) if e.is_not_found() => {}
            Err(e) => errors.push(e.to_string()),
        }
    }
    lock.write(&BTreeMap::new())?;
    if errors.is_empty() {
        Ok(restored)
    } else {
        Err(errors.join("; "))
    }
}
