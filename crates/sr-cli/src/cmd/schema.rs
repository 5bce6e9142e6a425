//! `safe-run schema`: print the JSON Schema of PolicySpec v1.

use clap::Args;

/// Arguments of `safe-run schema`.
#[derive(Args)]
#[command(after_help = "Examples:
  safe-run schema > policy.schema.json
  # editors: add `# yaml-language-server: $schema=policy.schema.json` to a policy

The schema is generated from the same model the validator uses, so it never drifts from
`safe-run validate` (which also applies semantic rules the schema cannot express: see
docs/policy.md).")]
pub struct SchemaArgs {}

/// Runs the subcommand; returns the process exit code.
pub fn execute(_args: SchemaArgs) -> u8 {
    match serde_json::to_string_pretty(sr_policy::policy_schema()) {
        Ok(mut text) => {
            text.push('\n');
            crate::output::print_stdout(&text)
        }
        Err(e) => {
            eprintln!("error: cannot print the schema: {e}");
            1
        }
    }
}
