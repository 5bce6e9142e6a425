//! `safe-run report ...`.

use clap::Subcommand;

/// Subcommands of `safe-run report`.
#[derive(Subcommand)]
pub enum ReportCommand {
    /// Not built yet.
    Placeholder,
}

/// Runs the subcommand; returns the process exit code.
pub fn execute(_command: ReportCommand) -> u8 {
    eprintln!("safe-run report: not built yet");
    2
}
