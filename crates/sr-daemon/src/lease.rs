//! A live sandbox's lease: the deadline a create or a `timeout` request set, the policy's own
//! end (its `limits.timeout`, which the sandbox's monitor enforces and no request may pass),
//! and when it was last used, for the idle timeout. Pure logic over instants, so the reaper's
//! decisions are tested without sandboxes; [`Busy`] marks an exec running for as long as it
//! lives.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Why the reaper ends a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Its deadline passed.
    Deadline,
    /// Nothing ran in it and nobody asked for it for the idle timeout, or no exec started in
    /// it before its create's `unusedTimeoutMs` passed.
    Idle,
}

/// A deadline that would pass the policy's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PastPolicyEnd {
    /// The longest timeout that could be given now.
    pub max: Duration,
}

/// The lease of one sandbox.
#[derive(Debug)]
pub struct Lease {
    policy_end: Instant,
    deadline: Option<Instant>,
    last_active: Instant,
    busy: usize,
    /// A pooled sandbox no one has taken yet is never idle.
    waiting_in_pool: bool,
    /// Ended at this instant unless an exec has started by then (a create's
    /// `unusedTimeoutMs`: a client that dies between making a sandbox and using it leaves
    /// nothing running for long).
    unused_until: Option<Instant>,
}

impl Lease {
    /// A lease from `now` for a policy whose timeout is `policy_timeout`.
    pub fn new(now: Instant, policy_timeout: Duration) -> Lease {
        Lease {
            policy_end: now + policy_timeout,
            deadline: None,
            last_active: now,
            busy: 0,
            waiting_in_pool: false,
            unused_until: None,
        }
    }

    /// Ends the sandbox `timeout` from `now` unless an exec starts in it before.
    pub fn set_unused_timeout(&mut self, now: Instant, timeout: Duration) {
        self.unused_until = Some(now + timeout);
    }

    /// Ends the sandbox `timeout` from `now` (sooner or later than before), within the policy's
    /// end.
    pub fn set_timeout(&mut self, now: Instant, timeout: Duration) -> Result<(), PastPolicyEnd> {
        let at = now + timeout;
        if at > self.policy_end {
            return Err(PastPolicyEnd {
                max: self.policy_end.saturating_duration_since(now),
            });
        }
        self.deadline = Some(at);
        Ok(())
    }

    /// How long it has left: until its deadline, or the policy's end.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.deadline
            .unwrap_or(self.policy_end)
            .min(self.policy_end)
            .saturating_duration_since(now)
    }

    /// A request reached it.
    pub fn touch(&mut self, now: Instant) {
        self.last_active = now;
    }

    /// Marks it as waiting in a warm pool (`true`) or handed out (`false`, which counts as use).
    pub fn set_waiting_in_pool(&mut self, waiting: bool, now: Instant) {
        self.waiting_in_pool = waiting;
        self.last_active = now;
    }

    /// Whether the reaper should end it at `now`, and why.
    pub fn expired(&self, now: Instant, idle_timeout: Option<Duration>) -> Option<Expiry> {
        if self.deadline.is_some_and(|d| now >= d) {
            return Some(Expiry::Deadline);
        }
        if self.unused_until.is_some_and(|u| now >= u) {
            return Some(Expiry::Idle);
        }
        let idle = idle_timeout?;
        (self.busy == 0 && !self.waiting_in_pool && now >= self.last_active + idle)
            .then_some(Expiry::Idle)
    }
}

/// A lease shared by a sandbox and the execs running in it.
pub type SharedLease = Arc<Mutex<Lease>>;

fn lock(lease: &SharedLease) -> MutexGuard<'_, Lease> {
    lease
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `f` on the lease.
pub fn with<T>(lease: &SharedLease, f: impl FnOnce(&mut Lease) -> T) -> T {
    f(&mut lock(lease))
}

/// An exec running: the sandbox is not idle while one lives; its end counts as use.
pub struct Busy(SharedLease);

impl Busy {
    /// Marks one more exec running in `lease`.
    pub fn start(lease: &SharedLease) -> Busy {
        let mut l = lock(lease);
        l.busy += 1;
        // Used: a create's unused timeout no longer applies.
        l.unused_until = None;
        drop(l);
        Busy(lease.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut l = lock(&self.0);
        l.busy = l.busy.saturating_sub(1);
        l.last_active = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Option<Duration> = Some(Duration::from_secs(10));

    #[test]
    fn a_deadline_cannot_pass_the_policy_end_and_is_reported_then() {
        let t0 = Instant::now();
        let mut l = Lease::new(t0, Duration::from_secs(60));
        assert_eq!(
            l.set_timeout(t0 + Duration::from_secs(30), Duration::from_secs(31)),
            Err(PastPolicyEnd {
                max: Duration::from_secs(30)
            })
        );
        assert_eq!(l.remaining(t0), Duration::from_secs(60));
        l.set_timeout(t0, Duration::from_secs(5)).unwrap();
        assert_eq!(l.remaining(t0), Duration::from_secs(5));
        assert_eq!(l.expired(t0 + Duration::from_secs(4), None), None);
        assert_eq!(
            l.expired(t0 + Duration::from_secs(5), None),
            Some(Expiry::Deadline)
        );
        // A later request may move it out again, up to the policy's end.
        l.set_timeout(t0 + Duration::from_secs(5), Duration::from_secs(55))
            .unwrap();
        assert_eq!(l.expired(t0 + Duration::from_secs(6), None), None);
    }

    #[test]
    fn idle_counts_from_the_last_use_and_never_while_an_exec_runs_or_in_the_pool() {
        let t0 = Instant::now();
        let lease: SharedLease = Arc::new(Mutex::new(Lease::new(t0, Duration::from_secs(3600))));
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(with(&lease, |l| l.expired(at(9), IDLE)), None);
        assert_eq!(
            with(&lease, |l| l.expired(at(10), IDLE)),
            Some(Expiry::Idle)
        );
        assert_eq!(with(&lease, |l| l.expired(at(10), None)), None);
        with(&lease, |l| l.touch(at(8)));
        assert_eq!(with(&lease, |l| l.expired(at(17), IDLE)), None);
        let busy = Busy::start(&lease);
        assert_eq!(with(&lease, |l| l.expired(at(100), IDLE)), None);
        drop(busy);
        // The exec's end was just now: not idle yet.
        assert_eq!(
            with(&lease, |l| l
                .expired(Instant::now() + Duration::from_secs(9), IDLE)),
            None
        );
        with(&lease, |l| l.set_waiting_in_pool(true, t0));
        assert_eq!(
            with(&lease, |l| l.expired(at(10_000), IDLE)),
            None,
            "a pooled sandbox waits without being idle"
        );
    }

    #[test]
    fn an_unused_timeout_ends_a_sandbox_no_exec_started_in_and_only_that() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let lease: SharedLease = Arc::new(Mutex::new(Lease::new(t0, Duration::from_secs(3600))));
        with(&lease, |l| {
            l.set_unused_timeout(t0, Duration::from_secs(15))
        });
        // Without an idle timeout, and however recently it was asked about.
        with(&lease, |l| l.touch(at(14)));
        assert_eq!(with(&lease, |l| l.expired(at(14), None)), None);
        assert_eq!(
            with(&lease, |l| l.expired(at(15), None)),
            Some(Expiry::Idle)
        );
        // An exec started: used, whatever happens after.
        drop(Busy::start(&lease));
        assert_eq!(with(&lease, |l| l.expired(at(1000), None)), None);
    }
}
