//! Event types: the one catalogue of everything a run can record.
//!
//! A policy's `evidence.events` lists which of these are written (the activity types in
//! [`ACTIVITY`] are always written); the names are part of the report format and never change
//! meaning. It lives here, at the bottom of the crate graph, because the policy validator, the
//! runner and the evidence writer all name events, and none of them should need another for it.

use std::fmt;

macro_rules! catalogue {
    ($( $(#[$doc:meta])* $konst:ident = $variant:ident => $name:literal, )*) => {
        /// One event type.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum EventType {
            $( $(#[$doc])* $variant, )*
        }

        $( $(#[$doc])* pub const $konst: EventType = EventType::$variant; )*

        impl EventType {
            /// Every event type, sorted by name (the catalogue is written in that order).
            pub const ALL: &'static [EventType] = &[$( EventType::$variant, )*];

            /// Its stable name, as events.jsonl spells it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( EventType::$variant => $name, )*
                }
            }

            /// The type named `name`, if there is one.
            pub fn parse(name: &str) -> Option<EventType> {
                match name {
                    $( $name => Some(EventType::$variant), )*
                    _ => None,
                }
            }
        }
    };
}

catalogue! {
    /// An input (policy, bundle, command binary, rootfs/kernel) was hashed.
    ARTIFACT_HASHED = ArtifactHashed => "artifact.hashed",
    /// Cleanup finished (payload: what was removed, any cleanup error).
    CLEANUP_DONE = CleanupDone => "cleanup.done",
    /// An exec ended (payload: `execId`, `status`, `durationMs`, the `stdout`/`stderr` sizes and
    /// digests, `stdin` when it had one; `argv` when it never started).
    EXEC_EXITED = ExecExited => "exec.exited",
    /// An exec started in the sandbox (payload: `execId`, `argv`, `argvDigest`, `cwd`, `tty`,
    /// `stdin`, `pid`).
    EXEC_STARTED = ExecStarted => "exec.started",
    /// A path was removed inside the sandbox (payload: `transferId`, `path`).
    FILE_REMOVED = FileRemoved => "file.removed",
    /// A file or tar stream moved in or out (payload: `transferId`, `direction`, `path`, `kind`,
    /// `bytes`, `sha256`).
    FILE_TRANSFERRED = FileTransferred => "file.transferred",
    /// The network plan was applied on the host.
    NETWORK_APPLIED = NetworkApplied => "network.applied",
    /// A DNS query was answered or refused by the run's resolver.
    NETWORK_DNS_QUERY = NetworkDnsQuery => "network.dns.query",
    /// The network plan was generated (payload: mode).
    NETWORK_PLAN_GENERATED = NetworkPlanGenerated => "network.plan.generated",
    /// Network resources were released.
    NETWORK_RELEASED = NetworkReleased => "network.released",
    /// An nftables rule was hit (payload: rule id, allowed and blocked hits).
    NETWORK_RULE_HIT = NetworkRuleHit => "network.rule.hit",
    /// The applied table was read back and hashed (payload: `nftRulesetDigest`,
    /// `nftRulesetDigestMethod`); its structure is what `network.applied` put in place.
    NETWORK_RULESET = NetworkRuleset => "network.ruleset",
    /// An output stream passed its limit: the saved copy stops growing from here (payload:
    /// `stream`, `limitBytes`, `onLimit`).
    OUTPUT_TRUNCATED = OutputTruncated => "output.truncated",
    /// The policy was compiled into a bundle.
    POLICY_COMPILED = PolicyCompiled => "policy.compiled",
    /// The workload exited (payload: exit status).
    PROCESS_EXITED = ProcessExited => "process.exited",
    /// The workload process started.
    PROCESS_STARTED = ProcessStarted => "process.started",
    /// A periodic resource sample from the cgroup.
    RESOURCE_SAMPLE = ResourceSample => "resource.sample",
    /// The workload was killed by the OOM killer.
    RUN_OOM = RunOom => "run.oom",
    /// The run directory was created and the run id assigned.
    RUN_PREPARE = RunPrepare => "run.prepare",
    /// The workload exceeded its timeout.
    RUN_TIMEOUT = RunTimeout => "run.timeout",
    /// A sandbox made ahead for a warm pool was handed out (payload: `template`, `waitedMs`:
    /// how long it had been ready in the pool). Recorded before its first exec.
    SANDBOX_CLAIMED = SandboxClaimed => "sandbox.claimed",
    /// Isolation was enforced (payload: the enforcement facts).
    SANDBOX_ENFORCED = SandboxEnforced => "sandbox.enforced",
}

/// The types written whatever the policy's `evidence.events` says: the report's `execs`,
/// `transfers` and `pool` are built from them, so a run without them could not say what ran in
/// it, or that its sandbox was made before it was asked for.
pub const ACTIVITY: [EventType; 5] = [
    EXEC_EXITED,
    EXEC_STARTED,
    FILE_REMOVED,
    FILE_TRANSFERRED,
    SANDBOX_CLAIMED,
];

/// Whether `name` is a known event type.
pub fn is_known(name: &str) -> bool {
    EventType::parse(name).is_some()
}

/// Every event type's name, sorted: the evidence plan that records everything.
pub fn all_names() -> Vec<String> {
    EventType::ALL
        .iter()
        .map(|e| e.as_str().to_owned())
        .collect()
}

/// Every event type's name, sorted, joined with `, ` (for hints).
pub fn names() -> String {
    all_names().join(", ")
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for EventType {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_sorted_unique_and_round_trips() {
        let names: Vec<&str> = EventType::ALL.iter().map(|e| e.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, names);
        assert_eq!(names.len(), 22);
        for e in EventType::ALL {
            assert_eq!(EventType::parse(e.as_str()), Some(*e));
        }
        assert_eq!(EventType::parse("exec.Started"), None);
        assert!(ACTIVITY.iter().all(|a| EventType::ALL.contains(a)));
    }
}
