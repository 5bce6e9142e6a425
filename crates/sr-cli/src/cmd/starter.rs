//! `safe-run init [FILE]`: writes a commented starter policy that validates, and never
//! overwrites a file unless `--force` is given.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

/// Arguments of `safe-run init`.
#[derive(Args)]
#[command(after_help = "Examples:
  safe-run init                 # writes ./policy.yaml
  safe-run init job.yaml && safe-run validate job.yaml && safe-run run job.yaml

Exit status: 0 written; 2 the file exists (use --force) or cannot be written.")]
pub struct StarterArgs {
    /// Where to write the policy.
    #[arg(value_name = "FILE", default_value = "policy.yaml")]
    pub file: PathBuf,
    /// Replace an existing file.
    #[arg(long)]
    pub force: bool,
}

/// The starter policy: every commonly changed field, commented, and valid as written.
pub const STARTER_POLICY: &str = r#"# A safe-run policy (PolicySpec v1). Every field: docs/policy.md.
# Check it:   safe-run validate policy.yaml
# Run it:     safe-run run policy.yaml        (or: safe-run run policy.yaml -- /bin/ls /)
version: 1
name: my-job                     # shown in reports: letters, digits, '.', '_', '-'
runtime:
  command: /usr/bin/python3      # absolute path inside the sandbox; there is no PATH lookup
  args: ["-c", "print('hello from the sandbox')"]
  env:                           # the whole environment: nothing leaks in from the host
    PATH: /usr/local/bin:/usr/bin:/bin
    LANG: C.UTF-8
  timeout: 60s                   # the whole process tree is killed after this
rootfs: { source: host }         # the host's system directories, read-only
mounts: []                       # host directories to show inside, e.g.
#  - { source: /srv/inputs, target: /inputs }                   # read-only (the default)
#  - { source: /srv/results, target: /results, readOnly: false } # writable: chown 65534 first
network: { mode: none }          # no network; or mode: allowlist with egress rules:
#  mode: allowlist
#  egress:
#    - { host: pypi.org, protocol: tcp, ports: [443] }
resources: { cpus: 1, memory: 256Mi, pids: 64 }
"#;

/// Runs the subcommand; returns the process exit code.
pub fn execute(args: StarterArgs) -> u8 {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if args.force {
        options.create(true).truncate(true);
    } else {
        // create_new: the check and the creation are one step, so nothing is ever clobbered.
        options.create_new(true);
    }
    let written = options
        .open(&args.file)
        .and_then(|mut f| f.write_all(STARTER_POLICY.as_bytes()));
    match written {
        Ok(()) => {
            eprintln!("wrote {}; next: safe-run validate {0}", args.file.display());
            0
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            eprintln!(
                "error: {} already exists\n  hint: choose another FILE, or add --force to replace it",
                args.file.display()
            );
            2
        }
        Err(e) => {
            eprintln!(
                "error: cannot write {}: {e}\n  hint: choose a writable path",
                args.file.display()
            );
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_starter_policy_validates() {
        let dir = tempfile::tempdir().unwrap();
        let config = sr_policy::OperatorConfig::default();
        let v = sr_policy::validate_str(
            STARTER_POLICY,
            sr_policy::SourceFormat::Yaml,
            dir.path(),
            &config,
        );
        assert!(v.is_ok(), "{v:#?}");
    }
}
