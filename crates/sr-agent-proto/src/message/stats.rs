//! Resource usage of the whole boundary, on request.

use serde::{Deserialize, Serialize};

/// The answer to `statsRequest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Stats {
    /// The request id.
    pub id: u64,
    /// Memory in use now.
    pub memory_current_bytes: u64,
    /// Highest memory use so far.
    pub memory_peak_bytes: u64,
    /// CPU time used, user plus system, in microseconds.
    pub cpu_usec: u64,
    /// Processes alive now.
    pub pids: u64,
    /// Since the agent started.
    pub uptime_ms: u64,
}
