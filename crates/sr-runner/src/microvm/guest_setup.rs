//! The microVM's own bootstrap: one JSON line each way on a fresh vsock connection, before the
//! agent protocol starts (the process sandbox has its own, docs/run.md). The host tells the
//! guest agent how to confine execs and hands it fresh entropy; the agent answers with the
//! guest's facts, or why it cannot. Then both speak sr-agent-proto from its first frame.
//!
//! Shared by the host (`microvm::qemu`) and the guest agent (`safe-run-agent`), so both read
//! and write the same types.

use serde::{Deserialize, Serialize};
use sr_bundle::{ProcessPlan, SandboxPlan};

/// Most bytes of one setup line, either way.
pub const MAX_SETUP_LINE: usize = 256 * 1024;

/// What the host sends first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuestSetup {
    /// The run id (for the guest's logs).
    pub run_id: String,
    /// The workload's process plan (its environment, cwd, identity).
    pub process: ProcessPlan,
    /// The confinement of every exec (`QemuPlan::guest`).
    pub guest: SandboxPlan,
    /// Hex of 64 random bytes the agent credits to the guest's entropy pool before any exec
    /// (a VM restored from a snapshot must not replay its siblings' randomness).
    pub entropy: String,
}

/// The agent's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum GuestSetupReply {
    /// Set up; the agent protocol starts now.
    #[serde(rename_all = "camelCase")]
    Ok {
        /// `uname -r` of the guest kernel.
        kernel_release: String,
        /// The kernel modules the agent loaded, in order.
        modules: Vec<String>,
        /// Whether the guest kernel enforces Landlock (its ABI version, 0 when not).
        landlock_abi: u32,
        /// Whether seccomp filters are available in the guest.
        seccomp: bool,
    },
    /// The agent cannot run execs as asked.
    #[serde(rename_all = "camelCase")]
    Failed {
        /// The step, e.g. `guest.landlock`.
        phase: String,
        /// What failed.
        message: String,
    },
}
