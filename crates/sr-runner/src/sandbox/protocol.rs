//! The runner ↔ init protocol: JSON lines over one Unix stream socket (the init's stdin).
//!
//! ```text
//! runner                                   init (host pid X)            pid 1 (C)      workload (W)
//!   ── InitPlan ─────────────────────────▶  unshare(ns), Ready
//!   ◀─ Ready ───────────────────────────── builds the root
//!   cgroup attach X, network attach X
//!   ── Go {resolvConf} ──────────────────▶  cgroupns, fork ────────────▶ proc, pivot_root, fork ─▶ setup, exec
//!   ◀─ Enforced / Failed ───────────────────────────────────────────── (facts from W over a CLOEXEC pipe)
//!   ◀─ Started ─────────────────────────────────────────────────────── (pipe closed by exec)
//!   ◀─ Exited {code|signal} ───────────────────────────────────────── (W reaped)
//! ```
//!
//! One socket (not a set of inherited fds) because `std::process::Command` passes only stdio
//! without `pre_exec`, and a socket is bidirectional.

use serde::{Deserialize, Serialize};
use sr_compiler::bundle::{ProcessPlan, SandboxPlan};

use super::landlock_rules::LandlockFacts;

/// Everything the init needs, sent as the first line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitPlan {
    /// The run id.
    pub run_id: String,
    /// The runner's pid: the init exits if its parent is already gone.
    pub parent_pid: u32,
    /// Empty directory in the run dir where the new root is built.
    pub new_root: String,
    /// The workload.
    pub process: ProcessPlan,
    /// The sandbox plan.
    pub sandbox: SandboxPlan,
    /// Operator-allowed mount prefixes, re-checked through each source's fd.
    pub allowed_mount_prefixes: Vec<String>,
    /// cgroup v1 `tasks` files the init writes `0` to, moving itself into the run's cgroups
    /// before anything else (empty: the runner attaches it).
    #[serde(default)]
    pub cgroup_self_attach: Vec<String>,
}

/// The second line: proceed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Go {
    /// A resolv.conf to bind read-only over /etc/resolv.conf.
    pub resolv_conf: Option<String>,
}

/// What the workload reports just before exec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadFacts {
    /// Landlock.
    pub landlock: LandlockFacts,
    /// Seccomp profile id.
    pub seccomp_profile: String,
    /// sha256 of the installed BPF programs.
    pub seccomp_digest: String,
    /// Total BPF instructions.
    pub seccomp_instructions: usize,
    /// The socket allow lists the installed filter enforces.
    pub seccomp_sockets: sr_evidence::report::SocketRules,
    /// `/proc/self/uid_map` as written: `inside outside count`.
    pub uid_map: String,
    /// `/proc/self/gid_map` as written.
    pub gid_map: String,
    /// PR_SET_NO_NEW_PRIVS was set.
    pub no_new_privs: bool,
    /// Bounding-set entries dropped (all of them).
    pub capabilities_dropped: u64,
    /// rlimits applied: (name, value).
    pub rlimits: Vec<(String, u64)>,
    /// Binds made for the policy: (host source, target, read_only).
    pub policy_mounts: Vec<(String, String, bool)>,
    /// Mount targets given as private read-only overlays, so file locks taken on them stay
    /// inside the sandbox.
    #[serde(default)]
    pub lock_isolated_mounts: Vec<String>,
}

/// Messages from the init side to the runner.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "camelCase")]
pub enum InitMsg {
    /// Namespaces exist; the runner may attach cgroups and the network to the init's pid.
    Ready,
    /// Setup failed before the workload ran.
    #[serde(rename_all = "camelCase")]
    Failed {
        /// Run phase, e.g. `launch.mounts`, `launch.exec`.
        phase: String,
        /// errno when the failure is a syscall's.
        errno: Option<i32>,
        /// What failed.
        message: String,
    },
    /// Isolation is in place; exec is next.
    Enforced {
        /// Facts.
        facts: Box<WorkloadFacts>,
    },
    /// The workload exec'd.
    Started {
        /// Its pid inside the sandbox.
        pid: i32,
    },
    /// The workload ended.
    Exited {
        /// Exit code, when it exited.
        code: Option<i32>,
        /// Signal, when one killed it.
        signal: Option<i32>,
    },
}
