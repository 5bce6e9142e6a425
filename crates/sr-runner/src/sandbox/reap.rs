//! Reaping the sandbox's pid 1 when the init dies before it could.
//!
//! The tree is runner -> init (`safe-run __init`, the runner's child) -> the sandbox's pid 1
//! (a fork of the init, in the run's pid namespace, so also named `safe-run`) -> the workload.
//! Cleanup SIGKILLs the init; when it dies before it has reaped pid 1 (on a normal end pid 1
//! is still exiting after it reported), pid 1 is re-parented and, once its PDEATHSIG kills it,
//! stays a zombie under whoever adopts it: the host's pid 1, which in a container often never
//! reaps (issue 14 item 6). So the runner makes itself a child subreaper
//! (`PR_SET_CHILD_SUBREAPER`, [`become_subreaper`]) before it spawns the init: the orphan
//! comes to the runner, and cleanup reaps it ([`reap_orphans`]).
//!
//! Only children in a deeper pid namespace than the runner's are waited for, by pid: those
//! are sandbox processes, never one of the runner's own `Command`s (ip, nft) that another
//! thread waits for, so no exit status is ever stolen. An unreaped child's pid cannot be
//! reused, so the wait never hits another process.

use std::time::{Duration, Instant};

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Makes this process the reaper of its descendants' orphans; false when the kernel refuses.
pub fn become_subreaper() -> bool {
    nix::sys::prctl::set_child_subreaper(true).is_ok()
}

/// The parent pid in a `/proc/<pid>/stat` line.
pub fn ppid_of_stat(stat: &str) -> Option<u32> {
    // The command name may hold spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// How many pid namespaces deep a process is, from its `/proc/<pid>/status` (`NSpid:` has one
/// pid per level).
pub fn nspid_depth(status: &str) -> Option<usize> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|pids| pids.split_whitespace().count())
}

/// This process's children that live in a deeper pid namespace than this process.
pub fn sandbox_orphans() -> Vec<u32> {
    let me = std::process::id();
    let Some(my_depth) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .as_deref()
        .and_then(nspid_depth)
    else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<u32> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok();
            stat.as_deref().and_then(ppid_of_stat) == Some(me)
                && status
                    .as_deref()
                    .and_then(nspid_depth)
                    .is_some_and(|d| d > my_depth)
        })
        .collect();
    out.sort_unstable();
    out
}

/// Waits for every [`sandbox_orphans`] process to end (they are dying: PDEATHSIG), at most
/// `bound` in all; returns the pids reaped and those still running at the bound.
pub fn reap_orphans(bound: Duration) -> (Vec<u32>, Vec<u32>) {
    let end = Instant::now() + bound;
    let mut pending = sandbox_orphans();
    let mut reaped = Vec::new();
    while !pending.is_empty() {
        pending.retain(|pid| {
            let Ok(raw) = i32::try_from(*pid) else {
                return false;
            };
            match waitpid(Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => true,
                Ok(_) => {
                    reaped.push(*pid);
                    false
                }
                // Not (or no longer) our child.
                Err(_) => false,
            }
        });
        if pending.is_empty() || Instant::now() >= end {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    (reaped, pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_status() {
        assert_eq!(ppid_of_stat("42 (safe-run) Z 1 42 42 0"), Some(1));
        assert_eq!(ppid_of_stat("42 (a) b) (c) S 77 42 42 0"), Some(77));
        assert_eq!(ppid_of_stat("garbage"), None);
        assert_eq!(nspid_depth("Name:\tx\nNSpid:\t4242\t1\n"), Some(2));
        assert_eq!(nspid_depth("NSpid:\t4242\n"), Some(1));
        assert_eq!(nspid_depth("Name:\tx\n"), None);
    }

    #[test]
    fn this_process_has_no_sandbox_orphans() {
        // The test process's children are all in its own pid namespace.
        assert!(sandbox_orphans().is_empty());
    }
}
