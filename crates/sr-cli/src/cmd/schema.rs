//! `safe-run schema`.

use clap::Args;

/// Arguments of `safe-run schema`.
#[derive(Args)]
pub struct SchemaArgs {}

/// Runs the subcommand; returns the process exit code.
pub fn execute(_args: SchemaArgs) -> u8 {
    eprintln!("safe-run schema: not built yet");
    2
}
