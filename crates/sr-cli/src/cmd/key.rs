//! `safe-run key ...`.

use clap::Subcommand;

/// Subcommands of `safe-run key`.
#[derive(Subcommand)]
pub enum KeyCommand {
    /// Not built yet.
    Placeholder,
}

/// Runs the subcommand; returns the process exit code.
pub fn execute(_command: KeyCommand) -> u8 {
    eprintln!("safe-run key: not built yet");
    2
}
