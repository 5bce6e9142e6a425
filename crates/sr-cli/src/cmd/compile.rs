//! `safe-run compile --dry-run`: print the CompileBundle a policy compiles to.
//!
//! Compiling for real is `safe-run run`'s job; `compile` only shows the plan, so without
//! `--dry-run` it refuses with SR-CMP-002 rather than guess what the caller meant.

use std::path::PathBuf;

use clap::Args;
use sr_common::{Diagnostic, ErrorCode};
use sr_policy::OperatorConfig;

use crate::output::{Format, fail};

/// Arguments of `safe-run compile`.
#[derive(Args)]
#[command(after_help = "Examples:
  safe-run compile --dry-run tests/policy_valid_cases/minimal.yaml
  safe-run compile --dry-run --policy tests/policy_valid_cases/minimal.yaml
  safe-run compile --dry-run --policy policy.yaml --out bundle.json
  safe-run compile --dry-run policy.yaml --backend microvm   # the plan a run with --backend gets

The output is canonical JSON (sorted keys, no time, no randomness): the same policy and operator
config give the same bytes on every run and machine. Per-run names carry the placeholder <runId>.
With --backend the plan is the overriding backend's; policyDigest stays the file's and
policyOverrides records the override.
Without --dry-run the command fails with SR-CMP-002; to execute a policy use `safe-run run`.")]
pub struct CompileArgs {
    /// Only print the plan (required: `compile` never executes anything).
    #[arg(long)]
    pub dry_run: bool,
    /// The policy file (.yaml, .yml or .json).
    #[arg(value_name = "POLICY")]
    pub policy_file: Option<PathBuf>,
    /// The policy file, as an option (the same as the positional POLICY).
    #[arg(long, value_name = "POLICY")]
    pub policy: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: super::policy_arg::OverrideArgs,
    /// Write the bundle to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Format of error output.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Runs the subcommand; returns the process exit code.
pub fn execute(args: CompileArgs) -> u8 {
    if !args.dry_run {
        let d = Diagnostic::new(
            ErrorCode::CompileIllegalRequest,
            "compile",
            "compile only shows the plan and needs --dry-run",
            "add --dry-run; to execute a policy use `safe-run run`",
        );
        return fail(&[d], args.format);
    }
    let policy_path =
        match super::policy_arg::choose(args.policy_file, args.policy, "compile --dry-run") {
            Ok(Some(p)) => p,
            Ok(None) => {
                eprintln!("error: give the policy file\n  hint: safe-run compile --dry-run POLICY");
                return 2;
            }
            Err(code) => return code,
        };
    let policy_path = &policy_path;
    let config = match OperatorConfig::load() {
        Ok(c) => c,
        Err(d) => return fail(&[d], args.format),
    };
    let overrides = args.overrides.overrides();
    let policy = match sr_policy::load_policy_file_with_overrides(policy_path, &config, &overrides)
    {
        Ok(p) => p,
        Err(report) => return fail(&report.diagnostics, args.format),
    };
    let bundle = match sr_compiler::compile(&policy, &config) {
        Ok(b) => b,
        Err(d) => return fail(&[d], args.format),
    };
    let text = sr_compiler::to_canonical_json(&bundle);
    match &args.out {
        None => crate::output::print_stdout(&text),
        Some(path) => match std::fs::write(path, text) {
            Ok(()) => 0,
            Err(e) => {
                let d = Diagnostic::new(
                    ErrorCode::CompileIllegalRequest,
                    "compile.out",
                    format!("cannot write {}: {e}", path.display()),
                    "choose a writable path for --out, or leave it out to print to stdout",
                );
                fail(&[d], args.format)
            }
        },
    }
}
