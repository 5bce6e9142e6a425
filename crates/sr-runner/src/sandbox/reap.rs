//! Reaping the sandbox's pid 1 when the init dies before it could.
//!
//! The tree is runner -> init (`safe-run __init`, the runner's child) -> the sandbox's pid 1
//! (a fork of the init, in the run's pid namespace) -> the workload. Cleanup SIGKILLs the
//! init; when it dies before it has reaped pid 1 (on a normal end pid 1 is still exiting after
//! it reported), pid 1 is re-parented and stays a zombie under whoever adopts it: the host's
//! pid 1, which in a container often never reaps (issue 14 item 6). So the runner makes itself
//! a child subreaper (`PR_SET_CHILD_SUBREAPER`, [`become_subreaper`]) before it spawns the
//! init: the orphan comes to the runner, and cleanup reaps it.
//!
//! pid 1 is held by a pidfd ([`NsProcess`]) from the moment the init reports it (`Forked`), while
//! it is certainly alive and the init's child: every later signal and wait names that process
//! and no other, even if its pid is reused (by another sandbox's init, an `ip`, an `nft` of
//! this same process), and cleanup sleeps in `poll` until it has exited instead of polling.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use rustix::process::{PidfdFlags, Signal, WaitIdOptions, pidfd_open, pidfd_send_signal, waitid};

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

/// A process of a deeper pid namespace than ours (a sandbox's pid 1, a VMM under `unshare`),
/// by pidfd.
#[derive(Debug)]
pub struct NsProcess {
    pid: u32,
    fd: Option<OwnedFd>,
}

impl NsProcess {
    /// Opens `pid` (a host pid, e.g. the one the init reported). No fd when it is already gone
    /// (then its parent reaped it: there is nothing of ours to wait for) or when it is not in
    /// a deeper pid namespace than this process (then it is never touched).
    pub fn open(pid: u32) -> Self {
        let fd = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .and_then(|p| pidfd_open(p, PidfdFlags::empty()).ok())
            .filter(|_| match (depth(&pid.to_string()), depth("self")) {
                (Some(theirs), Some(ours)) => theirs > ours,
                _ => false,
            });
        NsProcess { pid, fd }
    }

    /// Its host pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// SIGKILLs it, which kills its whole pid namespace (a no-op once it has exited).
    pub fn kill(&self) {
        if let Some(fd) = &self.fd {
            let _ = pidfd_send_signal(fd, Signal::KILL);
        }
    }

    /// Waits, at most `bound`, for it to exit, then reaps it if it became this process's
    /// child. Ok when it was reaped or is not ours to reap; Err when it still runs.
    pub fn reap(&self, bound: Duration) -> Result<(), String> {
        let Some(fd) = &self.fd else {
            return Ok(());
        };
        let timeout = PollTimeout::try_from(bound).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        loop {
            match poll(&mut fds, timeout) {
                Ok(0) => return Err("still running".into()),
                Ok(_) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(format!("waiting for it: {e}")),
            }
        }
        // ECHILD: the init reaped it first, or it is not our child.
        let _ = waitid(
            rustix::process::WaitId::PidFd(fd.as_fd()),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
        );
        Ok(())
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
    fn a_process_of_our_own_namespace_is_never_touched() {
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let pid1 = NsProcess::open(child.id());
        pid1.kill();
        assert_eq!(pid1.reap(Duration::from_millis(50)), Ok(()));
        // Neither killed nor reaped: still running, and still ours to wait for.
        assert_eq!(child.try_wait().unwrap(), None);
        child.kill().unwrap();
        assert!(child.wait().is_ok());
    }
}
