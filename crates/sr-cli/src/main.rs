//! `safe-run`: run untrusted programs under a declarative policy and prove what was enforced.
//!
//! Exit codes: 0 success (or the workload's own exit code for `run`), 2 usage, 3 policy invalid,
//! 4 compile failure, 5 run failure, 6 timeout, 7 evidence failure, 8 archive or log failure,
//! 11 artifact build failure.
//! See docs/errors.md.

mod cmd;
mod output;
mod terminal;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Run untrusted Linux programs under a declarative policy, and prove afterwards what ran and
/// what was enforced.
#[derive(Parser)]
#[command(name = "safe-run", version, about, long_about = None, propagate_version = true)]
#[command(
    after_help = "Start with `safe-run run -- /bin/echo hello` (the built-in strict policy), or \
`safe-run init policy.yaml`, `safe-run validate policy.yaml`, `safe-run run policy.yaml`.\nDocs: docs/policy.md, docs/run.md, docs/evidence.md, docs/errors.md."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a commented starter policy that validates.
    Init(cmd::starter::StarterArgs),
    /// Check a policy and report every problem at once.
    Validate(cmd::validate::ValidateArgs),
    /// Show the plan a policy compiles to (only with --dry-run).
    Compile(cmd::compile::CompileArgs),
    /// Run a command under a policy and write a signed run report.
    Run(cmd::run::RunArgs),
    /// Verify, export, list, show and prove run reports (the archive of runs).
    #[command(subcommand)]
    Report(cmd::report::ReportCommand),
    /// The transparency log of run reports: checkpoints and consistency.
    #[command(subcommand)]
    Log(cmd::log::LogCommand),
    /// Show the report-signing key.
    #[command(subcommand)]
    Key(cmd::key::KeyCommand),
    /// Serve live sandboxes over an HTTP API (Unix socket, loopback): docs/serve.md.
    Serve(cmd::serve::ServeArgs),
    /// Serve live sandboxes as MCP tools on stdin/stdout, for an MCP client: docs/serve.md.
    Mcp(cmd::mcp::McpArgs),
    /// Bearer tokens for `safe-run serve`.
    #[command(subcommand)]
    Token(cmd::token::TokenCommand),
    /// Print the JSON Schema of PolicySpec v1.
    Schema(cmd::schema::SchemaArgs),
    /// Build the microVM's kernel, initramfs and root filesystem, reproducibly.
    #[command(subcommand)]
    Artifact(cmd::artifact::ArtifactCommand),
    /// Remove what SIGKILLed runs left behind; with --keep / --older-than, prune finished run dirs.
    Gc(cmd::gc::GcArgs),
    /// Internal: the sandbox's init process. Not for direct use.
    #[command(name = "__init", hide = true)]
    SandboxInit(cmd::init::InitArgs),
}

fn main() -> ExitCode {
    // The sandbox init must start before anything could spawn a thread: it forks.
    if std::env::args_os().nth(1).is_some_and(|a| a == "__init") {
        return ExitCode::from(cmd::init::execute_early());
    }
    // The deferred network releaser (detached from the run that started it), and the copier
    // of a restored microVM's memory (started by a run, in its cgroup).
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == sr_runner::network::release::SUBCOMMAND)
    {
        return ExitCode::from(sr_runner::network::release::main(
            std::env::args_os().skip(2),
        ));
    }
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == sr_runner::microvm::ram_copier::SUBCOMMAND)
    {
        return ExitCode::from(sr_runner::microvm::ram_copier::main(
            std::env::args_os().skip(2),
        ));
    }
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Run(_) | Command::Serve(_) | Command::Mcp(_) | Command::Artifact(_)
    ) && let Ok(me) = std::env::current_exe()
    {
        // This binary hosts the copier of restored microVMs' memory: its pages are then
        // charged to the run's cgroup (docs/microvm.md, "Snapshots").
        sr_runner::microvm::ram_copier::copy_with(me);
    }
    let code = match cli.command {
        Command::Init(args) => cmd::starter::execute(args),
        Command::Validate(args) => cmd::validate::execute(args),
        Command::Compile(args) => cmd::compile::execute(args),
        Command::Run(args) => {
            // This binary hosts the releaser: an allowlist run's network objects go after the
            // report, off the path the user waits for (docs/network.md, "Release").
            if let Ok(me) = std::env::current_exe() {
                sr_runner::network::release::defer_to(me);
            }
            let code = cmd::run::execute(args);
            sr_runner::network::release::reap_detached();
            code
        }
        Command::Report(c) => cmd::report::execute(c),
        Command::Log(c) => cmd::log::execute(c),
        Command::Key(c) => cmd::key::execute(c),
        Command::Schema(args) => cmd::schema::execute(args),
        Command::Serve(args) => cmd::serve::execute(args),
        Command::Mcp(args) => cmd::mcp::execute(args),
        Command::Token(c) => cmd::token::execute(c),
        Command::Gc(args) => cmd::gc::execute(args),
        Command::Artifact(c) => cmd::artifact::execute(c),
        Command::SandboxInit(_) => cmd::init::execute_early(),
    };
    ExitCode::from(code)
}
