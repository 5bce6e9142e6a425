//! `safe-run compile`.

use clap::Args;

/// Arguments of `safe-run compile`.
#[derive(Args)]
pub struct CompileArgs {}

/// Runs the subcommand; returns the process exit code.
pub fn execute(_args: CompileArgs) -> u8 {
    eprintln!("safe-run compile: not built yet");
    2
}
