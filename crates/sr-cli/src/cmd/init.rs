//! The sandbox's init process: which binary the runner starts ([`init_exe`]), and
//! `safe-run __init` (hidden), the fallback when `safe-run-init` is not installed beside
//! `safe-run`. Either way the sandbox starts from a fresh single-threaded process and no fork
//! ever happens inside a multi-threaded one. The work is in `sr_runner::sandbox::init`.

use std::path::PathBuf;

use clap::Args;
use sr_common::{Diagnostic, ErrorCode};

/// The file name of the small init binary, beside `safe-run`.
pub const INIT_BINARY: &str = "safe-run-init";

/// The init the runner starts: `safe-run-init` beside this binary when it is there (it loads
/// in a fraction of the time), else this binary itself (`__init`). Both take `__init`.
pub fn init_exe() -> Result<PathBuf, Diagnostic> {
    let me = std::env::current_exe().map_err(|e| {
        Diagnostic::new(
            ErrorCode::RunPreflight,
            "preflight.init",
            format!("cannot locate the safe-run binary: {e}"),
            "run safe-run from a path that exists",
        )
    })?;
    let small = me.with_file_name(INIT_BINARY);
    Ok(if small.is_file() { small } else { me })
}

/// No arguments: the init reads its plan from the runner over the control socket on stdin.
#[derive(Args)]
pub struct InitArgs {}

/// Runs the sandbox init; returns its exit code. Called before clap parsing and before any
/// thread exists.
pub fn execute_early() -> u8 {
    let code = sr_runner::sandbox::init::main();
    u8::try_from(code).unwrap_or(1)
}
