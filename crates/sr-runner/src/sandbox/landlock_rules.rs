//! Landlock: a second fence over the same paths as the mount plan.
//!
//! Mounts decide what exists in the sandbox; Landlock decides what the workload may do beneath
//! each path even if a mount were wrong (a writable bind the plan did not mean, a path reachable
//! through /proc/<pid>/root). Rules come from the bundle's [`LandlockPlan`]; `ro` grants read
//! and execute, `rw` everything the kernel's ABI handles. The device nodes need write access
//! (`/dev/null`), so `/dev` gets read + write_file when the plan has no rule for it, and `/`
//! gets read_dir (so `ls /` works) when the plan has none.
//!
//! Degradation is a decision: when `required` is true and the kernel has no Landlock, or an ABI
//! below `min_abi`, the launch fails; otherwise the absence is recorded in the facts. Scopes
//! (ABI 6: signals and abstract unix sockets to the outside of the domain) are added best-effort.

use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope,
};
use serde::{Deserialize, Serialize};
use sr_bundle::LandlockPlan;

/// What Landlock enforcement achieved, for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LandlockFacts {
    /// Kernel ABI (0: none).
    pub abi: i32,
    /// `fully_enforced`, `partially_enforced`, `not_enforced` or `unavailable`.
    pub status: String,
    /// Rules added: `path:access`.
    pub rules: Vec<String>,
    /// Rule paths that do not exist in the sandbox and were skipped.
    pub skipped: Vec<String>,
    /// Scopes enforced (ABI >= 6).
    pub scopes: Vec<String>,
}

/// Landlock could not be enforced as required.
#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    /// Required but the kernel ABI is too old or absent.
    #[error("Landlock is required (ABI >= {required}) but the kernel provides ABI {host}")]
    Unavailable {
        /// Needed.
        required: u32,
        /// Present (0: none).
        host: i32,
    },
    /// A rule has an unknown access keyword.
    #[error("unknown Landlock access {0:?} (expected ro or rw)")]
    BadAccess(String),
    /// The kernel refused the ruleset.
    #[error("Landlock ruleset failed: {0}")]
    Ruleset(String),
}

/// Builds the ruleset from `plan` and restricts the calling process. `host_abi` is the probed
/// kernel ABI (`Err(errno)` when absent).
pub fn enforce(
    plan: &LandlockPlan,
    host_abi: Result<i32, i32>,
) -> Result<LandlockFacts, LandlockError> {
    let abi_num = host_abi.unwrap_or(0);
    if abi_num < 1 || (abi_num as u32) < plan.min_abi {
        if plan.required {
            return Err(LandlockError::Unavailable {
                required: plan.min_abi.max(1),
                host: abi_num,
            });
        }
        return Ok(LandlockFacts {
            abi: abi_num,
            status: "unavailable".into(),
            ..LandlockFacts::default()
        });
    }
    let abi = ABI::from(abi_num);
    let rerr = |e: landlock::RulesetError| LandlockError::Ruleset(e.to_string());
    let level = if plan.required {
        CompatLevel::HardRequirement
    } else {
        CompatLevel::BestEffort
    };
    let mut ruleset = Ruleset::default()
        .set_compatibility(level)
        .handle_access(AccessFs::from_all(abi))
        .map_err(rerr)?;
    let mut scopes = Vec::new();
    if abi_num >= 6 {
        ruleset = ruleset
            .set_compatibility(CompatLevel::BestEffort)
            .scope(Scope::AbstractUnixSocket | Scope::Signal)
            .map_err(rerr)?
            // Back to the plan's level for the path rules.
            .set_compatibility(level);
        scopes = vec!["abstract_unix_socket".to_owned(), "signal".to_owned()];
    }
    let mut created = ruleset.create().map_err(rerr)?;
    let mut facts = LandlockFacts {
        abi: abi_num,
        scopes,
        ..LandlockFacts::default()
    };
    let mut rules: Vec<(String, String)> = plan
        .rules
        .iter()
        .map(|r| (r.path.clone(), r.access.clone()))
        .collect();
    if !rules.iter().any(|(p, _)| p == "/dev") {
        rules.push(("/dev".into(), "dev".into()));
    }
    // Listing `/` itself (a tmpfs of mount points for a host rootfs) must work; reading files
    // still needs a rule for their own subtree.
    if !rules.iter().any(|(p, _)| p == "/") {
        rules.push(("/".into(), "readdir".into()));
    }
    for (path, access) in rules {
        let access_bits = match access.as_str() {
            "ro" => AccessFs::from_read(abi),
            "rw" => AccessFs::from_all(abi),
            "dev" => AccessFs::from_read(abi) | AccessFs::WriteFile,
            "readdir" => AccessFs::ReadDir.into(),
            other => return Err(LandlockError::BadAccess(other.to_owned())),
        };
        let fd = match PathFd::new(&path) {
            Ok(fd) => fd,
            Err(_) => {
                facts.skipped.push(path);
                continue;
            }
        };
        created = created
            .add_rule(PathBeneath::new(fd, access_bits))
            .map_err(rerr)?;
        facts.rules.push(format!("{path}:{access}"));
    }
    let status = created.restrict_self().map_err(rerr)?;
    facts.status = match status.ruleset {
        RulesetStatus::FullyEnforced => "fully_enforced",
        RulesetStatus::PartiallyEnforced => "partially_enforced",
        RulesetStatus::NotEnforced => "not_enforced",
    }
    .into();
    if plan.required && status.ruleset == RulesetStatus::NotEnforced {
        return Err(LandlockError::Unavailable {
            required: plan.min_abi.max(1),
            host: abi_num,
        });
    }
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use sr_bundle::LandlockRule;

    use super::*;

    fn plan(required: bool, min_abi: u32) -> LandlockPlan {
        LandlockPlan {
            required,
            min_abi,
            rules: vec![LandlockRule {
                path: "/usr".into(),
                access: "ro".into(),
            }],
        }
    }

    // These paths never reach the kernel: the decision is made before any ruleset exists.
    #[test]
    fn required_landlock_fails_closed_without_kernel_support() {
        let e = enforce(&plan(true, 1), Err(libc::ENOSYS)).unwrap_err();
        assert!(matches!(
            e,
            LandlockError::Unavailable {
                required: 1,
                host: 0
            }
        ));
        let e = enforce(&plan(true, 4), Ok(3)).unwrap_err();
        assert!(e.to_string().contains("ABI >= 4"), "{e}");
    }

    #[test]
    fn optional_landlock_records_its_absence() {
        let f = enforce(&plan(false, 3), Err(libc::EOPNOTSUPP)).unwrap();
        assert_eq!(f.status, "unavailable");
        assert_eq!(f.abi, 0);
        assert!(f.rules.is_empty());
    }
}
