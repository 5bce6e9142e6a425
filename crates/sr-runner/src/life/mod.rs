//! A sandbox's life, whatever isolates it: create (ready), exec (many), destroy (outcome and
//! report inputs).
//!
//! * [`sandbox`]: [`Sandbox`], the life itself, and its monitor.
//! * [`exec`]: one exec's request, handle, stdin and evidence.
//! * [`files`]: put, get, list, stat, remove.
//! * [`conn`]: the host's end of the agent protocol.
//! * [`backend`]: the seam to the isolation boundary.
//! * [`evidence`]: the sandbox's shared event sink.
//! * [`run`]: `safe-run run` as create + one exec + destroy.

pub mod backend;
pub mod conn;
pub mod error;
pub mod evidence;
pub mod exec;
pub mod files;
pub mod run;
pub mod sandbox;

pub use backend::Backend;
pub use error::{Kind as SandboxErrorKind, SandboxError};
pub use exec::{ExecControl, ExecEnd, ExecEvent, ExecHandle, ExecRequest, ExecResult, StdinWriter};
pub use files::Transferred;
pub use run::{RunOptions, Runner, Terminal, TtyOptions};
pub use sandbox::{Canceller, Ending, Primary, Sandbox, SandboxSpec};
