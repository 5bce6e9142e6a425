//! `safe-run validate`.

use clap::Args;

/// Arguments of `safe-run validate`.
#[derive(Args)]
pub struct ValidateArgs {}

/// Runs the subcommand; returns the process exit code.
pub fn execute(_args: ValidateArgs) -> u8 {
    eprintln!("safe-run validate: not built yet");
    2
}
