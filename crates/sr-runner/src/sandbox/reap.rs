//! Reaping the sandbox's pid 1 when the init dies before it could.
//!
//! The tree is runner -> init (`safe-run __init`, the runner's child) -> the sandbox's pid 1
//! (a fork of the init, in the run's pid namespace, so also named `safe-run`) -> the workload.
//! Cleanup SIGKILLs the init; when it dies before it has reaped pid 1 (on a normal end pid 1
//! is still exiting after it reported), pid 1 is re-parented and, once its PDEATHSIG kills it,
//! stays a zombie under whoever adopts it: the host's pid 1, which in a container often never
//! reaps (issue 14 item 6). So the runner makes itself a child subreaper
//! (`PR_SET_CHILD_SUBREAPER`, [`become_subreaper`]) before it spawns the init: the orphan
//! comes to the runner, and cleanup reaps it.
//!
//! The init reports pid 1's host pid (`Forked`), so cleanup waits for that one pid
//! ([`reap_pid`]), not for every child: another sandbox's init, alive in the same process, is
//! never touched. Before each wait the pid is checked to be in a deeper pid namespace than the
//! runner's, so a pid the init already reaped and the kernel gave to one of the runner's own
//! children (another init, an `ip`, an `nft`) is never waited for.

use std::time::{Duration, Instant};

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Makes this process the reaper of its descendants' orphans; false when the kernel refuses.
pub fn become_subreaper() -> bool {
    nix::sys::prctl::set_child_subreaper(true).is_ok()
}

/// How many pid namespaces deep a process is, from its `/proc/<pid>/status` (`NSpid:` has one
/// pid per level).
pub fn nspid_depth(status: &str) -> Option<usize> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|pids| pids.split_whitespace().count())
}

fn depth(pid: &str) -> Option<usize> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .as_deref()
        .and_then(nspid_depth)
}

/// Waits, at most `bound`, for the sandbox process `pid` (dying: PDEATHSIG) if it became this
/// process's child. Ok when it was reaped or is not ours to reap; Err when it still runs.
pub fn reap_pid(pid: u32, bound: Duration) -> Result<(), String> {
    let Ok(raw) = i32::try_from(pid) else {
        return Ok(());
    };
    let Some(my_depth) = depth("self") else {
        return Ok(());
    };
    let end = Instant::now() + bound;
    loop {
        if depth(&pid.to_string()).is_none_or(|d| d <= my_depth) {
            return Ok(());
        }
        match waitpid(Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            // Reaped, or not (or no longer) our child.
            Ok(_) | Err(_) => return Ok(()),
        }
        if Instant::now() >= end {
            return Err("still running".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status() {
        assert_eq!(nspid_depth("Name:\tx\nNSpid:\t4242\t1\n"), Some(2));
        assert_eq!(nspid_depth("NSpid:\t4242\n"), Some(1));
        assert_eq!(nspid_depth("Name:\tx\n"), None);
    }

    #[test]
    fn a_process_of_our_own_namespace_is_never_waited_for() {
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert_eq!(reap_pid(child.id(), Duration::from_millis(50)), Ok(()));
        // Still ours to wait for: reap_pid did not steal its status.
        child.kill().unwrap();
        assert!(child.wait().is_ok());
    }
}
