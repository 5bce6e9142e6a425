//! Event types: the stable names of everything a run can record.
//!
//! A policy's `evidence.events` lists which of these are written; the names are part of the
//! report format and never change meaning.

/// The run directory was created and the run id assigned.
pub const RUN_PREPARE: &str = "run.prepare";
/// An input (policy, bundle, command binary, rootfs/kernel) was hashed.
pub const ARTIFACT_HASHED: &str = "artifact.hashed";
/// The policy was compiled into a bundle.
pub const POLICY_COMPILED: &str = "policy.compiled";
/// The network plan was generated (payload: mode).
pub const NETWORK_PLAN_GENERATED: &str = "network.plan.generated";
/// The network plan was applied on the host.
pub const NETWORK_APPLIED: &str = "network.applied";
/// Isolation was enforced (payload: the enforcement facts).
pub const SANDBOX_ENFORCED: &str = "sandbox.enforced";
/// The workload process started.
pub const PROCESS_STARTED: &str = "process.started";
/// A periodic resource sample from the cgroup.
pub const RESOURCE_SAMPLE: &str = "resource.sample";
/// An nftables rule was hit (payload: rule id, allowed and blocked hits).
pub const NETWORK_RULE_HIT: &str = "network.rule.hit";
/// A DNS query was answered or refused by the run's resolver.
pub const NETWORK_DNS_QUERY: &str = "network.dns.query";
/// The workload exceeded its timeout.
pub const RUN_TIMEOUT: &str = "run.timeout";
/// The workload was killed by the OOM killer.
pub const RUN_OOM: &str = "run.oom";
/// An output stream passed its limit: the saved copy stops growing from here (payload:
/// `stream`, `limitBytes`, `onLimit`).
pub const OUTPUT_TRUNCATED: &str = "output.truncated";
/// The workload exited (payload: exit status).
pub const PROCESS_EXITED: &str = "process.exited";
/// Network resources were released.
pub const NETWORK_RELEASED: &str = "network.released";
/// Cleanup finished (payload: what was removed, any cleanup error).
pub const CLEANUP_DONE: &str = "cleanup.done";

/// An exec started in the sandbox (payload: `execId`, `argv`, `argvDigest`, `cwd`, `tty`,
/// `stdin`, `pid`).
pub const EXEC_STARTED: &str = "exec.started";
/// An exec ended (payload: `execId`, `status`, `durationMs`, the `stdout`/`stderr` sizes and
/// digests, `stdin` when it had one).
pub const EXEC_EXITED: &str = "exec.exited";
/// A file or tar stream moved in or out (payload: `transferId`, `direction`, `path`, `kind`,
/// `bytes`, `sha256`).
pub const FILE_TRANSFERRED: &str = "file.transferred";
/// A path was removed inside the sandbox (payload: `path`).
pub const FILE_REMOVED: &str = "file.removed";

/// Every event type, sorted.
pub const ALL: [&str; 20] = [
    ARTIFACT_HASHED,
    CLEANUP_DONE,
    EXEC_EXITED,
    EXEC_STARTED,
    FILE_REMOVED,
    FILE_TRANSFERRED,
    NETWORK_APPLIED,
    NETWORK_DNS_QUERY,
    NETWORK_PLAN_GENERATED,
    NETWORK_RELEASED,
    NETWORK_RULE_HIT,
    OUTPUT_TRUNCATED,
    POLICY_COMPILED,
    PROCESS_EXITED,
    PROCESS_STARTED,
    RESOURCE_SAMPLE,
    RUN_OOM,
    RUN_PREPARE,
    RUN_TIMEOUT,
    SANDBOX_ENFORCED,
];

/// Whether `name` is a known event type.
pub fn is_known(name: &str) -> bool {
    ALL.contains(&name)
}

#[cfg(test)]
mod tests {
    #[test]
    fn all_is_sorted_and_unique() {
        let mut sorted = super::ALL.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, super::ALL.to_vec());
    }
}
