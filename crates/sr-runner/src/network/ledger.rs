//! The subnet ledger: which run holds which /30, so runs attaching at the same instant never
//! pick the same block.
//!
//! `<state dir>/subnets.json` maps a subnet to its holder (run id, pid and start time of the
//! safe-run process). It is read and written only under the state lock
//! ([`super::forwarding::StateLock`], an exclusive `flock` on `<state dir>/network.lock`), and a
//! run claims its block in the same critical section in which it picks it, so a second run
//! sees the first one's claim even before its address exists on the host. Entries whose process
//! is gone (a SIGKILLed runner; the pid is compared with its start time, so a reused pid does
//! not keep a block) are reclaimed by the next claim; release and gc remove a run's entry.

use std::collections::BTreeMap;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::addressing;
use super::error::NetworkError;
use super::forwarding::StateLock;

/// The ledger's file name under the state dir.
pub const LEDGER_FILE: &str = "subnets.json";

/// Who holds a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Holder {
    /// The run.
    pub run_id: String,
    /// The safe-run process that attached it.
    pub pid: u32,
    /// That process's start time (`/proc/<pid>/stat` field 22), 0 when unknown.
    pub start: u64,
}

impl Holder {
    /// This process as the holder of `run_id`.
    pub fn this_process(run_id: &str) -> Self {
        let pid = std::process::id();
        Holder {
            run_id: run_id.to_owned(),
            pid,
            start: start_time(pid).unwrap_or(0),
        }
    }
}

/// subnet (CIDR text) -> holder.
pub type Ledger = BTreeMap<String, Holder>;

/// A process's start time in clock ticks since boot, from `/proc/<pid>/stat`.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `h`'s process still runs (same pid, same start time).
pub fn holder_alive(h: &Holder) -> bool {
    match start_time(h.pid) {
        Some(start) => h.start == 0 || start == h.start,
        None => false,
    }
}

/// Drops the entries whose holder is dead; returns their subnets.
pub fn reclaim(ledger: &mut Ledger, alive: &dyn Fn(&Holder) -> bool) -> Vec<String> {
    let dead: Vec<String> = ledger
        .iter()
        .filter(|(_, h)| !alive(h))
        .map(|(s, _)| s.clone())
        .collect();
    for s in &dead {
        ledger.remove(s);
    }
    dead
}

/// Picks the first free block for `holder` (skipping `host_in_use` and every block in the
/// ledger) and records it. Call under the lock.
pub fn claim(
    lock: &StateLock,
    pool: &Ipv4Net,
    host_in_use: &[Ipv4Net],
    holder: Holder,
    alive: &dyn Fn(&Holder) -> bool,
) -> Result<Ipv4Net, NetworkError> {
    let mut ledger: Ledger = lock.read_file(LEDGER_FILE);
    reclaim(&mut ledger, alive);
    ledger.retain(|_, h| h.run_id != holder.run_id);
    let mut in_use = host_in_use.to_vec();
    in_use.extend(ledger.keys().filter_map(|s| s.parse::<Ipv4Net>().ok()));
    let subnet = addressing::pick_subnet(pool, &holder.run_id, &in_use)?;
    ledger.insert(subnet.to_string(), holder);
    lock.write_file(LEDGER_FILE, &ledger)
        .map_err(NetworkError::Config)?;
    Ok(subnet)
}

/// Makes `holder` the holder of its run's entries (the deferred releaser takes over from the
/// safe-run that claimed them); returns whether the run held one. Call under the lock.
pub fn transfer(lock: &StateLock, holder: Holder) -> Result<bool, String> {
    let mut ledger: Ledger = lock.read_file(LEDGER_FILE);
    let mut held = false;
    for h in ledger.values_mut().filter(|h| h.run_id == holder.run_id) {
        *h = holder.clone();
        held = true;
    }
    if held {
        lock.write_file(LEDGER_FILE, &ledger)?;
    }
    Ok(held)
}

/// Removes `run_id`'s entries (dead holders too); returns whether it held one. Call under the
/// lock.
pub fn release(lock: &StateLock, run_id: &str) -> Result<bool, String> {
    let mut ledger: Ledger = lock.read_file(LEDGER_FILE);
    let before = ledger.len();
    ledger.retain(|_, h| h.run_id != run_id);
    let held = ledger.len() != before;
    if held {
        lock.write_file(LEDGER_FILE, &ledger)?;
    }
    Ok(held)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn holder(id: &str, pid: u32) -> Holder {
        Holder {
            run_id: id.into(),
            pid,
            start: 1,
        }
    }

    #[test]
    fn claims_skip_held_blocks_and_reclaim_dead_holders() {
        let dir = tempfile::tempdir().unwrap();
        let lock = StateLock::acquire(dir.path()).unwrap();
        let pool: Ipv4Net = "10.213.0.0/29".parse().unwrap();
        let alive = |h: &Holder| h.pid != 2;
        let a = claim(&lock, &pool, &[], holder("aaaaaaaaaaaa", 1), &alive).unwrap();
        let b = claim(&lock, &pool, &[], holder("bbbbbbbbbbbb", 2), &alive).unwrap();
        assert_ne!(a, b);
        // Both blocks are held; b's holder is dead, so c gets b's block back.
        let c = claim(&lock, &pool, &[], holder("cccccccccccc", 3), &alive).unwrap();
        assert_eq!(c, b);
        let ledger: Ledger = lock.read_file(LEDGER_FILE);
        assert_eq!(ledger.len(), 2);
        // Nothing free while a and c live.
        assert!(matches!(
            claim(&lock, &pool, &[], holder("dddddddddddd", 4), &alive),
            Err(NetworkError::PoolExhausted(_))
        ));
        // A releaser takes a's block over: a's claiming process no longer keeps it.
        assert!(transfer(&lock, holder("aaaaaaaaaaaa", 5)).unwrap());
        assert!(!transfer(&lock, holder("eeeeeeeeeeee", 5)).unwrap());
        let ledger: Ledger = lock.read_file(LEDGER_FILE);
        assert_eq!(ledger[&a.to_string()].pid, 5);
        assert!(release(&lock, "aaaaaaaaaaaa").unwrap());
        assert!(!release(&lock, "aaaaaaaaaaaa").unwrap());
        assert!(release(&lock, "cccccccccccc").unwrap());
        assert!(!dir.path().join(LEDGER_FILE).exists());
    }

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not() {
        let me = Holder::this_process("aaaaaaaaaaaa");
        assert!(me.start > 0);
        assert!(holder_alive(&me));
        let reused = Holder {
            start: me.start + 1,
            ..me.clone()
        };
        assert!(!holder_alive(&reused));
    }
}
