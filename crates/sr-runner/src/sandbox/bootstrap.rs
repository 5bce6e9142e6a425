//! The process sandbox's bootstrap: how the runner and `safe-run __init` set a sandbox up, as
//! JSON lines over one Unix stream socket (the init's stdin), before the agent protocol starts
//! on the same socket.
//!
//! ```text
//! runner                                   init (host pid X)            pid 1 (C, the agent)
//!   ── InitPlan ─────────────────────────▶  unshare(ns), Ready
//!   ◀─ Ready ───────────────────────────── builds the root
//!   cgroup attach X, network attach X
//!   ── Go {resolvConf, netNamespace} ────▶  [setns(net)], cgroupns, fork ─▶ proc, pivot_root,
//!   ◀─ Forked {pid1} ───────────────────── (then only waits for C)       waits for hello
//!   ══ agent protocol (sr-agent-proto frames): hello, helloAck, ready, exec ... ═══════════▶
//! ```
//!
//! The bootstrap is the process sandbox's own: a microVM's agent gets its plan from the kernel
//! command line and its root from the image, and speaks only the agent protocol. One socket
//! (not a set of inherited fds) because `std::process::Command` passes only stdio without
//! `pre_exec`, and a socket is bidirectional. The init writes `Forked` before pid 1 writes
//! anything: pid 1 speaks only after the runner's `hello`, which the runner sends only after
//! `Forked`, so the two writers never interleave.

use serde::{Deserialize, Serialize};
use sr_bundle::{ProcessPlan, SandboxPlan};

/// Everything the init needs, sent as the first line. An init from another build that does
/// not know a field refuses the plan rather than ignore it (e.g. a network namespace to join).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InitPlan {
    /// The run id.
    pub run_id: String,
    /// The runner's pid: the init exits if its parent is already gone.
    pub parent_pid: u32,
    /// The directory the new root is mounted on (the run base's shared mount point; the
    /// init's mounts there are private to its mount namespace).
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
    /// The runner makes the sandbox's network namespace (with the run's link in it) and names
    /// it in [`Go::net_namespace`]: the init does not make one, and joins that one on Go.
    #[serde(default)]
    pub joins_network_namespace: bool,
}

/// The second line: proceed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Go {
    /// A resolv.conf to bind read-only over /etc/resolv.conf.
    pub resolv_conf: Option<String>,
    /// The network namespace to join before pid 1 is forked, when the plan said the runner
    /// makes it: `/proc/<runner pid>/fd/<fd>`, held open by the runner until `Forked`.
    #[serde(default)]
    pub net_namespace: Option<String>,
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
    /// pid 1 exists (its pid as the host sees it); the agent protocol starts next.
    Forked {
        /// The host pid of the sandbox's pid 1, which the runner reaps if the init dies first.
        pid1: u32,
    },
}
