//! `safe-run token`: the operator's bearer tokens for `safe-run serve`, made once, shown once,
//! kept as hashes (sr_daemon::tokens).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use sr_common::{Diagnostic, ErrorCode};
use sr_daemon::tokens::{Scope, TokenFile};
use sr_policy::OperatorConfig;

use crate::output::{Format, fail};

/// `safe-run token ...`.
#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a token: printed once on stdout, only its hash is kept.
    Create(CreateArgs),
}

/// Arguments of `safe-run token create`.
#[derive(Args)]
#[command(after_help = "Examples:
  safe-run token create --scopes admin
  safe-run token create --scopes create,read --tokens /var/lib/safe-run/tokens.json

Scopes: admin (everything), create (make sandboxes; the token each answer carries reaches only
that sandbox), read (list sandboxes, read their state and reports).")]
pub struct CreateArgs {
    /// Comma-separated scopes: admin, create, read.
    #[arg(long, value_delimiter = ',', required = true)]
    scopes: Vec<String>,
    /// The token file (default: serve.tokensPath of the operator config).
    #[arg(long, value_name = "FILE")]
    tokens: Option<PathBuf>,
}

/// Runs the subcommand; returns the process exit code.
pub fn execute(command: TokenCommand) -> u8 {
    match command {
        TokenCommand::Create(args) => match create(args) {
            Ok(()) => 0,
            Err(d) => fail(&[d], Format::Text),
        },
    }
}

fn create(args: CreateArgs) -> Result<(), Diagnostic> {
    let mut scopes = Vec::new();
    for name in &args.scopes {
        let scope = Scope::parse(name.trim()).ok_or_else(|| {
            Diagnostic::new(
                ErrorCode::PolicyBadFormat,
                "token.scopes",
                format!("{name:?} is not a scope"),
                "use admin, create or read",
            )
        })?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    scopes.sort();
    let path = match args.tokens {
        Some(p) => p,
        None => PathBuf::from(OperatorConfig::load()?.serve.tokens_path),
    };
    let (token, stored) = TokenFile::create(&path, scopes).map_err(|e| {
        Diagnostic::new(
            ErrorCode::RunPreflight,
            "token.file",
            e.to_string(),
            "check that the token file's directory is writable by root",
        )
    })?;
    println!("{token}");
    eprintln!(
        "token {} made; it is shown only now (the file keeps its hash: {})",
        stored.id,
        path.display()
    );
    Ok(())
}
