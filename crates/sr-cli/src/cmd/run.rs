//! `safe-run run`.

use clap::Args;

/// Arguments of `safe-run run`.
#[derive(Args)]
pub struct RunArgs {}

/// Runs the subcommand; returns the process exit code.
pub fn execute(_args: RunArgs) -> u8 {
    eprintln!("safe-run run: not built yet");
    2
}
