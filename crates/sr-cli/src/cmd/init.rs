//! `safe-run __init`: the sandbox's init process (hidden). The runner re-executes the
//! `safe-run` binary with this subcommand, so the sandbox starts from a fresh single-threaded
//! process and no fork ever happens inside a multi-threaded one. The work is in
//! `sr_runner::sandbox::init`.

use clap::Args;

/// No arguments: the init reads its plan from the runner over the control socket on stdin.
#[derive(Args)]
pub struct InitArgs {}

/// Runs the sandbox init; returns its exit code. Called before clap parsing and before any
/// thread exists.
pub fn execute_early() -> u8 {
    let code = sr_runner::sandbox::init::main();
    u8::try_from(code).unwrap_or(1)
}
