//! The microVM's own bootstrap: one JSON line each way on a fresh vsock connection, before the
//! agent protocol starts (the process sandbox has its own, docs/run.md). The host tells the
//! guest agent how to confine execs and hands it fresh entropy; the agent answers with the
//! guest's facts, or why it cannot. Then both speak sr-agent-proto from its first frame.
//!
//! Shared by the host (`microvm::qemu`) and the guest agent (`safe-run-agent`), so both read
//! and write the same types.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sr_bundle::{ProcessPlan, SandboxPlan};
use sr_common::{Diagnostic, ErrorCode};

use crate::outcome::RunStatus;

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
    /// Set for a VM restored from a snapshot: its clock stopped when the snapshot was saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored: Option<Restored>,
}

/// What a guest restored from a snapshot adopts before any exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Restored {
    /// The host's wall clock, milliseconds since the Unix epoch, when it sent the setup.
    pub unix_time_ms: u64,
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
        /// The vsock context id the guest kernel has (read by the agent from its connection):
        /// a restored VM's must be the fresh one its new vsock device gave it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        guest_cid: Option<u32>,
        /// Whether the agent reseeded the guest kernel's random number generator from the
        /// host's entropy before answering (pid 1 only; `RNDRESEEDCRNG`).
        #[serde(default)]
        crng_reseeded: bool,
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

/// Sends the setup line on `stream` and reads the agent's one-line answer (a byte at a time,
/// so nothing of the agent protocol after it is consumed).
pub fn exchange(
    stream: &UnixStream,
    setup: &GuestSetup,
    deadline: Instant,
) -> Result<GuestSetupReply, String> {
    let mut line = serde_json::to_vec(setup).map_err(|e| e.to_string())?;
    line.push(b'\n');
    let mut w = stream;
    w.write_all(&line)
        .map_err(|e| format!("the guest setup: {e}"))?;
    stream
        .set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .map_err(|e| e.to_string())?;
    let mut reply = Vec::new();
    let mut r = stream;
    let mut byte = [0u8; 1];
    loop {
        match r.read(&mut byte) {
            Ok(0) => return Err("the guest agent closed the connection during setup".into()),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if reply.len() >= MAX_SETUP_LINE => {
                return Err("the guest agent's setup answer is too long".into());
            }
            Ok(_) => reply.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading the guest setup answer: {e}")),
        }
    }
    let _ = stream.set_read_timeout(None);
    serde_json::from_slice(&reply)
        .map_err(|e| format!("an unreadable setup answer from the guest agent: {e}"))
}

/// The launch failure for an agent that refused the setup at `phase`.
pub fn refused(phase: &str, message: &str) -> RunStatus {
    RunStatus::LaunchFailed {
        diagnostic: Diagnostic::new(
            ErrorCode::RunLaunch,
            phase,
            format!("the guest agent: {message}"),
            "see docs/microvm.md (what the guest kernel must provide)",
        ),
    }
}
