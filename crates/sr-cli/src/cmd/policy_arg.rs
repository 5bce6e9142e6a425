//! Where a command's policy comes from: a file named positionally (`validate POLICY`) or with
//! `--policy POLICY` (both spellings work on `validate`, `compile` and `run`), or, for `run`
//! only, the built-in strict default policy; and what the command line overrides in it
//! (`--backend`, on the same three commands, so that `validate` and `compile` show what a run
//! with the override would get).

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use sr_policy::model::Backend;
use sr_policy::{OperatorConfig, PolicyOverrides, SourceFormat, ValidatedPolicy, ValidationReport};

/// What the report shows as the built-in policy's path (`policy.path`); never a real file.
pub const BUILTIN_PATH: &str = "builtin:strict";

/// The built-in strict default of `safe-run run -- CMD ARGS` without a policy: no network, the
/// host's system directories read-only, a private /tmp, no mounts, the operator's default
/// limits, signed evidence. `runtime.command` is replaced by the command after `--`.
pub const BUILTIN_POLICY: &str = "\
# safe-run's built-in strict default (safe-run run -- CMD ARGS without a policy).
version: 1
name: builtin-strict
runtime:
  command: /bin/true
  args: []
  env: { PATH: /usr/local/bin:/usr/bin:/bin, LANG: C.UTF-8 }
rootfs: { source: host }
mounts: []
network: { mode: none }
";

/// How diagnostics name the flag an overriding backend came from.
pub const BACKEND_FLAG: &str = "--backend";

/// The backends `--backend` accepts: the policy's own spellings of `runtime.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// The process sandbox.
    Sandbox,
    /// A microVM on the operator config's VMM (`microvm.vmm`).
    Microvm,
    /// A Firecracker microVM.
    Firecracker,
}

impl From<BackendChoice> for Backend {
    fn from(choice: BackendChoice) -> Backend {
        match choice {
            BackendChoice::Sandbox => Backend::Sandbox,
            BackendChoice::Microvm => Backend::Microvm,
            BackendChoice::Firecracker => Backend::Firecracker,
        }
    }
}

/// The policy overrides `validate`, `compile` and `run` share.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct OverrideArgs {
    /// Replace the policy's runtime.backend for this command: validation and the plan follow
    /// it as if the file said it, and a run's report records it (policy.overrides) beside the
    /// digest of the file as written.
    #[arg(long, value_enum, value_name = "BACKEND")]
    pub backend: Option<BackendChoice>,
}

impl OverrideArgs {
    /// The overrides to validate the policy with.
    pub fn overrides(self) -> PolicyOverrides {
        match self.backend {
            Some(choice) => PolicyOverrides::backend(choice.into(), BACKEND_FLAG),
            None => PolicyOverrides::none(),
        }
    }
}

/// Picks the policy path from the positional and the `--policy` spelling. Both given and
/// different is a usage error (exit 2), printed here.
pub fn choose(
    positional: Option<PathBuf>,
    flag: Option<PathBuf>,
    command: &str,
) -> Result<Option<PathBuf>, u8> {
    match (positional, flag) {
        (Some(a), Some(b)) if a != b => {
            eprintln!(
                "error: two policies given ({} and --policy {})\n  hint: safe-run {command} POLICY, or safe-run {command} --policy POLICY",
                a.display(),
                b.display()
            );
            Err(2)
        }
        (Some(a), _) => Ok(Some(a)),
        (None, b) => Ok(b),
    }
}

/// Whether `path` names a policy file by its extension (`.yaml`, `.yml`, `.json`). `run`
/// accepts a positional policy only then, so `safe-run run python3` (a forgotten `--`) is
/// never read as a policy file name.
pub fn looks_like_policy(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Validates the built-in policy under `config`, with `overrides`.
pub fn load_builtin(
    config: &OperatorConfig,
    overrides: &PolicyOverrides,
) -> Result<ValidatedPolicy, ValidationReport> {
    let mut policy = sr_policy::validate_with_overrides(
        BUILTIN_POLICY,
        SourceFormat::Yaml,
        Path::new("/"),
        config,
        &sr_policy::rules::RealFs,
        overrides,
    )?;
    policy.source_path = Some(PathBuf::from(BUILTIN_PATH));
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_policy_validates_under_the_default_operator_config() {
        let p = load_builtin(&OperatorConfig::default(), &PolicyOverrides::none()).unwrap();
        assert_eq!(p.spec.name, "builtin-strict");
        assert_eq!(p.spec.network_mode(), sr_policy::model::NetworkMode::None);
    }

    #[test]
    fn backend_choices_are_the_policys_own_spellings() {
        for choice in BackendChoice::value_variants() {
            let name = choice.to_possible_value().unwrap();
            assert_eq!(name.get_name(), Backend::from(*choice).name());
        }
        assert!(OverrideArgs::default().overrides().is_empty());
        let given = OverrideArgs {
            backend: Some(BackendChoice::Microvm),
        }
        .overrides()
        .backend
        .unwrap();
        assert_eq!((given.value, given.origin), (Backend::Microvm, "--backend"));
    }

    #[test]
    fn a_positional_policy_needs_a_policy_extension() {
        assert!(looks_like_policy(Path::new("p.yaml")));
        assert!(looks_like_policy(Path::new("dir/p.json")));
        assert!(!looks_like_policy(Path::new("python3")));
        assert!(!looks_like_policy(Path::new("/usr/bin/python3")));
    }

    #[test]
    fn both_spellings_must_agree() {
        let a = PathBuf::from("a.yaml");
        assert_eq!(
            choose(Some(a.clone()), None, "validate"),
            Ok(Some(a.clone()))
        );
        assert_eq!(
            choose(None, Some(a.clone()), "validate"),
            Ok(Some(a.clone()))
        );
        assert_eq!(
            choose(Some(a.clone()), Some(a.clone()), "validate"),
            Ok(Some(a.clone()))
        );
        assert_eq!(
            choose(Some(a), Some(PathBuf::from("b.yaml")), "validate"),
            Err(2)
        );
    }
}
