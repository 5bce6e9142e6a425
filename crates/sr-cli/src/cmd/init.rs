//! `safe-run __init`: the sandbox's init process (hidden). The runner re-executes the
//! `safe-run` binary with this subcommand, so the sandbox starts from a fresh single-threaded
//! process and no fork ever happens inside a multi-threaded one.

use clap::Args;

/// No arguments: the init reads its plan from the runner over an inherited pipe.
#[derive(Args)]
pub struct InitArgs {}

/// Runs the sandbox init; returns its exit code. Called before clap parsing and before any
/// thread exists.
pub fn execute_early() -> u8 {
    eprintln!("safe-run __init: not built yet");
    2
}
