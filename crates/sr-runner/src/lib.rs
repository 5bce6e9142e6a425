//! The runner: prepare, launch, monitor and clean up a run of a [`sr_bundle::CompileBundle`].
//!
//! * [`preflight`]: host preconditions (SR-RUN-001), behind probes.
//! * [`rundir`]: the run directory, its id and its lock.
//! * [`digest_cache`]: input digests reused for a host file in the state it was hashed in.
//! * [`cgroup`]: limits, samples, OOM detection, removal (v1 and v2).
//! * [`life`]: a sandbox's life (create, exec, destroy) over a [`life::Backend`].
//! * [`sandbox`]: the process-sandbox backend (launch on the runner side, init and agent inside).
//! * [`gc`]: recovery of what a killed runner left behind.
//! * [`outcome`]: the [`RunOutcome`] a run returns.
//! * [`output`]: the output tees and their limit.
//! * [`network`] / [`network_hook`] / [`network_facts`]: the network lifecycle, its seam and
//!   what it enforced.
//! * [`recording`]: a run's evidence from its run directory to its signed report;
//!   [`report`]: the report's assembly.
//!
//! Unsafe code is confined to [`sandbox::sys`], each block with a `// SAFETY:` comment.

pub mod cgroup;
pub mod digest_cache;
pub mod error;
pub mod gc;
pub mod life;
pub mod microvm;
pub mod network;
pub mod network_facts;
pub mod network_hook;
pub mod outcome;
pub mod output;
pub mod preflight;
pub mod recording;
pub mod report;
pub mod rundir;
pub mod sandbox;
pub mod signals;
pub mod spare;

pub use error::RunnerError;
pub use life::{Canceller, RunOptions, Runner};
pub use network_hook::{AttachedNetwork, NetworkHook, NetworkSample, NoNetwork};
pub use outcome::{RunOutcome, RunStatus};
pub use rundir::RunDir;
pub use signals::forward_signals;
