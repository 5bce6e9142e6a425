//! `safe-run-verify`: the evidence tools alone. Verifies reports, inclusion proofs and log
//! consistency, and queries an archive, with no privilege and no sandbox code: a third party
//! installs only this binary (`cargo install --path crates/sr-archive`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sr_archive::tool;

/// Verify safe-run evidence offline: run reports, inclusion proofs, log consistency, and
/// query a copy of an archive. Needs no privilege and never runs anything.
#[derive(Parser)]
#[command(name = "safe-run-verify", version, long_about = None, propagate_version = true)]
#[command(after_help = "Examples:
  safe-run-verify report verify run_report.json --proof proof.json --key signing.pub
  safe-run-verify log consistency old.json new.json --proof consistency.json --key signing.pub
  safe-run-verify report list --archive archive.db --status timeout
  safe-run-verify report show 3f9c0a1b2c4d --archive archive.db
Docs: docs/evidence.md (sections 9-11).")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run reports: verify (with an inclusion proof), list and show archived runs.
    #[command(subcommand)]
    Report(ReportCommand),
    /// The transparency log: check two checkpoints for consistency.
    #[command(subcommand)]
    Log(LogCommand),
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Verify a run report, its event chain and (with --proof) its inclusion in the log.
    Verify(tool::VerifyArgs),
    /// List archived runs, newest first, with filters.
    List(tool::ListArgs),
    /// A human summary of one archived run.
    Show(tool::ShowArgs),
}

#[derive(Subcommand)]
enum LogCommand {
    /// Prove that NEW's log extends OLD's (RFC 6962 consistency), or name the inconsistency.
    Consistency(tool::ConsistencyArgs),
}

fn main() -> ExitCode {
    let code = match Cli::parse().command {
        Command::Report(ReportCommand::Verify(a)) => tool::verify(a),
        Command::Report(ReportCommand::List(a)) => tool::list(a),
        Command::Report(ReportCommand::Show(a)) => tool::show(a),
        Command::Log(LogCommand::Consistency(a)) => tool::consistency(a),
    };
    ExitCode::from(code)
}
