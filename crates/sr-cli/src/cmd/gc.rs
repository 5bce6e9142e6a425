//! `safe-run gc`.

use clap::Args;

/// Arguments of `safe-run gc`.
#[derive(Args)]
pub struct GcArgs {}

/// Runs the subcommand; returns the process exit code.
pub fn execute(_args: GcArgs) -> u8 {
    eprintln!("safe-run gc: not built yet");
    2
}
