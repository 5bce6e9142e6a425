//! IPv4 forwarding for allowlist runs, changed as little as possible and given back.
//!
//! Linux forwards an IPv4 packet only if the interface it *arrived on* has
//! `net.ipv4.conf.<if>.forwarding = 1`. Egress arrives on the run's host veth: that flag is set
//! per run and vanishes with the link. Replies arrive on the host's uplink (the interface the
//! route to the destination uses): if its flag is 0, it is set to 1. That is a host change
//! outside the run, so it is shared among runs and given back:
//!
//! * a state file (`<state dir>/forwarding.json`: interface -> original value and the run ids
//!   that need it) records every flag safe-run turned on; a flag already 1 that safe-run did
//!   not turn on is never touched;
//! * attach (after its table exists) and release take an exclusive `flock` on
//!   `<state dir>/network.lock`; release, after deleting its own table, drops its run id and
//!   restores each flag that no live run holds any more (a holder is live while its
//!   `safe_run_<id>` table exists);
//! * gc does the same for a run killed with SIGKILL ([`super::gc::release_run`]), so the flag
//!   comes back without waiting for another allowlist run.
//!
//! The global `net.ipv4.ip_forward` is never written.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::exec::{NetCommand, NetCommandExecutor};

/// Default directory of the shared lock and state file.
pub const DEFAULT_STATE_DIR: &str = "/run/safe-run/network";

/// An exclusive lock over the shared network state (forwarding record, subnet ledger).
pub struct StateLock {
    _lock: Flock<File>,
    dir: PathBuf,
}

/// The forwarding record's file name under the state dir.
pub const FORWARDING_FILE: &str = "forwarding.json";

/// One uplink whose flag safe-run turned on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Turned {
    /// Its value before the first run turned it on.
    pub original: String,
    /// The runs that need it on (sorted run ids).
    pub runs: BTreeSet<String>,
}

/// interface -> what safe-run changed.
pub type Record = BTreeMap<String, Turned>;

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
            dir: dir.to_path_buf(),
        })
    }

    /// A JSON state file under the lock's directory; missing or unreadable: the default.
    pub fn read_file<T: DeserializeOwned + Default>(&self, name: &str) -> T {
        fs::read(self.dir.join(name))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Replaces a JSON state file (written to a temporary name and renamed, so a reader
    /// never sees half of it); an empty map removes the file.
    pub fn write_file<K: Serialize, V: Serialize>(
        &self,
        name: &str,
        map: &BTreeMap<K, V>,
    ) -> Result<(), String> {
        let path = self.dir.join(name);
        let r = if map.is_empty() {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        } else {
            let tmp = self.dir.join(format!(".{name}.tmp"));
            let text = serde_json::to_vec_pretty(map).unwrap_or_default();
            fs::write(&tmp, text).and_then(|()| fs::rename(&tmp, &path))
        };
        r.map_err(|e| format!("writing {}: {e}", path.display()))
    }

    /// The forwarding record. A record of an older safe-run (interface -> original value,
    /// no runs) reads as flags no run holds, so the next release gives them back.
    pub fn read(&self) -> Record {
        let record: Record = self.read_file(FORWARDING_FILE);
        if record.is_empty() {
            let old: BTreeMap<String, String> = self.read_file(FORWARDING_FILE);
            return old
                .into_iter()
                .map(|(dev, original)| {
                    (
                        dev,
                        Turned {
                            original,
                            runs: BTreeSet::new(),
                        },
                    )
                })
                .collect();
        }
        record
    }

    /// Replaces the forwarding record (an empty record removes the file).
    pub fn write(&self, record: &Record) -> Result<(), String> {
        self.write_file(FORWARDING_FILE, record)
    }
}

fn key(dev: &str) -> String {
    format!("net.ipv4.conf.{dev}.forwarding")
}

/// Ensures forwarding on each of `devs` for `run_id`; returns those it turned on now. A flag
/// safe-run turned on earlier gains `run_id` as a holder; a flag that was already 1 and is not
/// in the record is someone else's and is left alone. Call under the lock.
pub fn ensure(
    exec: &dyn NetCommandExecutor,
    lock: &StateLock,
    run_id: &str,
    devs: &[String],
) -> Result<Vec<String>, String> {
    let mut record = lock.read();
    let mut changed = Vec::new();
    for dev in devs {
        let current = exec
            .run(&NetCommand::SysctlRead { key: key(dev) })
            .map_err(|e| e.to_string())?;
        let current = current.trim();
        if current == "1" && !record.contains_key(dev) {
            continue;
        }
        if current != "1" {
            exec.run(&NetCommand::SysctlWrite {
                key: key(dev),
                value: "1".into(),
            })
            .map_err(|e| e.to_string())?;
            changed.push(dev.clone());
        }
        record
            .entry(dev.clone())
            .or_insert_with(|| Turned {
                original: current.to_owned(),
                runs: BTreeSet::new(),
            })
            .runs
            .insert(run_id.to_owned());
    }
    lock.write(&record)?;
    Ok(changed)
}

/// Drops `run_id` (and every holder `is_live` denies) from the record and restores each flag
/// no live run holds any more; returns the interfaces restored. Call under the lock.
///
/// `is_live(other)` is asked about the other holders only; the normal release and gc both
/// pass "its nftables table still exists" (a run holds forwarding only after its table exists,
/// and a dead run's table is gone once gc has run for it).
pub fn release(
    exec: &dyn NetCommandExecutor,
    lock: &StateLock,
    run_id: &str,
    is_live: &dyn Fn(&str) -> Result<bool, String>,
) -> Result<Vec<String>, String> {
    let mut record = lock.read();
    if record.is_empty() {
        return Ok(Vec::new());
    }
    let mut restored = Vec::new();
    let mut errors = Vec::new();
    let mut keep = Record::new();
    for (dev, mut turned) in std::mem::take(&mut record) {
        turned.runs.remove(run_id);
        let mut live = BTreeSet::new();
        for other in &turned.runs {
            match is_live(other) {
                Ok(false) => {}
                Ok(true) => {
                    live.insert(other.clone());
                }
                // Unsure: keep it on.
                Err(e) => {
                    errors.push(e);
                    live.insert(other.clone());
                }
            }
        }
        turned.runs = live;
        if !turned.runs.is_empty() {
            keep.insert(dev, turned);
            continue;
        }
        match exec.run(&NetCommand::SysctlWrite {
            key: key(&dev),
            value: turned.original.clone(),
        }) {
            Ok(_) => restored.push(dev),
            // The interface is gone: nothing left to restore.
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                errors.push(e.to_string());
                keep.insert(dev, turned);
            }
        }
    }
    lock.write(&keep)?;
    if errors.is_empty() {
        Ok(restored)
    } else {
        Err(errors.join("; "))
    }
}
