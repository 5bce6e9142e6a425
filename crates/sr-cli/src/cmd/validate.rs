//! `safe-run validate`: check a policy against PolicySpec v1 and the operator config, and
//! report every problem at once.

use std::path::PathBuf;

use clap::Args;
use sr_policy::{OperatorConfig, ValidationReport};

use crate::output::Format;

/// Arguments of `safe-run validate`.
#[derive(Args)]
#[command(after_help = "Examples:
  safe-run validate tests/policy_valid_cases/minimal.yaml
  safe-run validate --policy tests/policy_valid_cases/minimal.yaml
  safe-run validate policy.yaml --format json | jq '.errors[].path'
  safe-run validate policy.yaml --backend firecracker    # would it hold on Firecracker?

Every problem is reported with its code (SR-POL-001 missing field, SR-POL-002 bad format,
SR-POL-003 semantic conflict or operator limit, SR-POL-004 file unreadable, SR-POL-201 network
rule), its path
(network.egress[1].ports[0]), line and column, cause and hint.
The operator config comes from $SAFE_RUN_CONFIG, else /etc/safe-run/config.yaml, else defaults.
Warnings (e.g. a writable mount the workload's host uid cannot write) do not make a policy
invalid. Exit status: 0 valid, 2 usage, 3 invalid. Fields: docs/policy.md; codes: docs/errors.md.")]
pub struct ValidateArgs {
    /// The policy file (.yaml, .yml or .json).
    #[arg(value_name = "POLICY", required_unless_present = "policy_flag")]
    pub policy: Option<PathBuf>,
    /// The policy file, as an option (the same as the positional POLICY).
    #[arg(long = "policy", value_name = "POLICY")]
    pub policy_flag: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: super::policy_arg::OverrideArgs,
    /// Output format: `text` (problems on stderr) or `json` (a ValidationResult on stdout).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Runs the subcommand; returns the process exit code.
pub fn execute(args: ValidateArgs) -> u8 {
    let path = match super::policy_arg::choose(args.policy, args.policy_flag, "validate") {
        Ok(Some(p)) => p,
        Ok(None) => {
            eprintln!("error: give the policy file\n  hint: safe-run validate POLICY");
            return 2;
        }
        Err(code) => return code,
    };
    let shown = path.display().to_string();
    let loaded = OperatorConfig::load().map_err(|d| ValidationReport {
        policy: Some(shown.clone()),
        diagnostics: vec![d],
        warnings: Vec::new(),
    });
    let overrides = args.overrides.overrides();
    let report = match loaded
        .and_then(|config| sr_policy::load_policy_file_with_overrides(&path, &config, &overrides))
    {
        Ok(policy) => {
            match args.format {
                Format::Json => print_json(&ValidationReport {
                    policy: Some(shown),
                    diagnostics: Vec::new(),
                    warnings: policy.warnings.clone(),
                }),
                Format::Text => {
                    for w in &policy.warnings {
                        eprintln!("warning: {w}");
                    }
                    crate::output::print_stdout(&format!(
                        "valid: {shown} (name {}, backend {}{}, network {})\n",
                        policy.spec.name,
                        backend_name(&policy.spec),
                        if policy.overrides.backend.is_some() {
                            " from --backend"
                        } else {
                            ""
                        },
                        match policy.spec.network_mode() {
                            sr_policy::model::NetworkMode::None => "none",
                            sr_policy::model::NetworkMode::Allowlist => "allowlist",
                        }
                    ));
                }
            }
            return 0;
        }
        Err(report) => report,
    };
    match args.format {
        Format::Json => print_json(&report),
        Format::Text => {
            for d in &report.diagnostics {
                eprintln!("error: {d}");
            }
            let n = report.diagnostics.len();
            eprintln!("{n} problem{} in {shown}", if n == 1 { "" } else { "s" });
        }
    }
    report
        .diagnostics
        .first()
        .map_or(3, |d| crate::output::exit_code(d.code.exit_code()))
}

fn backend_name(spec: &sr_policy::PolicySpec) -> &'static str {
    spec.backend().name()
}

fn print_json(report: &ValidationReport) {
    match serde_json::to_string_pretty(report) {
        Ok(text) => {
            crate::output::print_stdout(&format!("{text}\n"));
        }
        Err(e) => eprintln!("error: cannot serialize the result: {e}"),
    }
}
