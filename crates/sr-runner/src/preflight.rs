//! Preflight (SR-RUN-001): every host precondition of the process sandbox, checked before
//! anything is created, each failure naming what is missing and what to do.
//!
//! The checks read the host through [`HostProbes`], so their logic is unit-tested with fake
//! probes; [`RealProbes`] reads the real host.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cgroup::{self, Layout};
use crate::error::RunnerError;
use crate::sandbox::sys;

/// What preflight reads from the host.
pub trait HostProbes {
    /// Effective uid of the runner.
    fn euid(&self) -> u32;
    /// `/proc/sys/user/max_user_namespaces`, if readable.
    fn max_user_namespaces(&self) -> Option<u64>;
    /// `/proc/sys/kernel/unprivileged_userns_clone` (Debian/Ubuntu knob), if present.
    fn unprivileged_userns_clone(&self) -> Option<u64>;
    /// Landlock ABI, or the errno of the probe.
    fn landlock_abi(&self) -> Result<i32, i32>;
    /// The cgroup layout.
    fn cgroup_layout(&self) -> Result<Layout, String>;
    /// Whether the init binary can be executed.
    fn init_exe(&self) -> Result<(), String>;
    /// Whether the run directory base can be created and written.
    fn run_base(&self) -> Result<(), String>;
}

/// Probes of the real host.
#[derive(Debug, Clone)]
pub struct RealProbes {
    /// cgroup root (normally /sys/fs/cgroup).
    pub cgroup_root: PathBuf,
    /// The binary re-executed as the init.
    pub init_exe: PathBuf,
    /// The run directory base.
    pub run_base: PathBuf,
}

impl RealProbes {
    /// Probes of this host: its cgroup root ([`default_cgroup_root`]), `init_exe` as the init,
    /// runs under `run_base`.
    pub fn of_host(init_exe: PathBuf, run_base: PathBuf) -> RealProbes {
        RealProbes {
            cgroup_root: default_cgroup_root().to_path_buf(),
            init_exe,
            run_base,
        }
    }
}

fn read_u64(p: &str) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

impl HostProbes for RealProbes {
    fn euid(&self) -> u32 {
        nix::unistd::geteuid().as_raw()
    }
    fn max_user_namespaces(&self) -> Option<u64> {
        read_u64("/proc/sys/user/max_user_namespaces")
    }
    fn unprivileged_userns_clone(&self) -> Option<u64> {
        read_u64("/proc/sys/kernel/unprivileged_userns_clone")
    }
    fn landlock_abi(&self) -> Result<i32, i32> {
        sys::landlock_abi()
    }
    fn cgroup_layout(&self) -> Result<Layout, String> {
        cgroup::detect(&cgroup::HostFs, &self.cgroup_root).map_err(|e| e.0)
    }
    fn init_exe(&self) -> Result<(), String> {
        nix::unistd::access(&self.init_exe, nix::unistd::AccessFlags::X_OK)
            .map_err(|e| format!("{}: {}", self.init_exe.display(), e.desc()))
    }
    fn run_base(&self) -> Result<(), String> {
        std::fs::create_dir_all(&self.run_base)
            .map_err(|e| format!("{}: {e}", self.run_base.display()))?;
        nix::unistd::access(&self.run_base, nix::unistd::AccessFlags::W_OK)
            .map_err(|e| format!("{}: {}", self.run_base.display(), e.desc()))
    }
}

/// What the policy needs from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// Landlock must be present.
    pub landlock_required: bool,
    /// Minimum Landlock ABI.
    pub landlock_min_abi: u32,
}

/// What preflight found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostFacts {
    /// Landlock ABI (0: none).
    pub landlock_abi: i32,
    /// The cgroup layout.
    pub cgroup: Layout,
}

/// Runs every check; returns all failures, not just the first.
pub fn check(p: &dyn HostProbes, needs: Needs) -> Result<HostFacts, Vec<RunnerError>> {
    let mut errs = Vec::new();
    let mut fail = |check: &str, cause: String, hint: &str| {
        errs.push(RunnerError::Preflight {
            check: check.to_owned(),
            cause,
            hint: hint.to_owned(),
        })
    };
    if p.euid() != 0 {
        fail(
            "preflight.root",
            format!("safe-run run needs root (euid is {})", p.euid()),
            "run it as root (sudo safe-run run ...); rootless mode is not supported yet",
        );
    }
    match p.max_user_namespaces() {
        Some(0) => fail(
            "preflight.userns",
            "user namespaces are disabled (user.max_user_namespaces = 0)".into(),
            "enable them: sysctl -w user.max_user_namespaces=15000",
        ),
        None => fail(
            "preflight.userns",
            "the kernel has no user namespaces (/proc/sys/user/max_user_namespaces missing)".into(),
            "use a kernel built with CONFIG_USER_NS=y",
        ),
        Some(_) => {}
    }
    if p.unprivileged_userns_clone() == Some(0) {
        fail(
            "preflight.userns",
            "unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0); \
             the workload creates its own as an unprivileged user"
                .into(),
            "enable them: sysctl -w kernel.unprivileged_userns_clone=1",
        );
    }
    let abi = p.landlock_abi();
    let abi_num = abi.unwrap_or(0);
    if needs.landlock_required && (abi_num < 1 || (abi_num as u32) < needs.landlock_min_abi) {
        let cause = match abi {
            Err(e) if e == libc::EOPNOTSUPP => {
                "Landlock is built into the kernel but not enabled".to_owned()
            }
            Err(_) => "the kernel has no Landlock".to_owned(),
            Ok(v) => format!(
                "the kernel's Landlock ABI is {v}, the policy needs {}",
                needs.landlock_min_abi
            ),
        };
        fail(
            "preflight.landlock",
            cause,
            "boot with lsm=...,landlock (Linux >= 5.13), or set requireLandlock: false in the \
             operator config to run without it (recorded in the report)",
        );
    }
    let layout = match p.cgroup_layout() {
        Ok(l) => Some(l),
        Err(e) => {
            fail(
                "preflight.cgroup",
                e,
                "mount cgroup2 with the memory, pids and cpu controllers at /sys/fs/cgroup \
                 (or the v1 memory, pids, cpu hierarchies)",
            );
            None
        }
    };
    if let Err(e) = p.init_exe() {
        fail(
            "preflight.init",
            format!("cannot execute the sandbox init: {e}"),
            "reinstall safe-run; the binary re-executes itself as the sandbox init",
        );
    }
    if let Err(e) = p.run_base() {
        fail(
            "preflight.run_dir",
            format!("the run directory base is not writable: {e}"),
            "set SAFE_RUN_WORKDIR_BASE (or runDir in the operator config) to a writable directory",
        );
    }
    match (errs.is_empty(), layout) {
        (true, Some(cgroup)) => Ok(HostFacts {
            landlock_abi: abi_num,
            cgroup,
        }),
        _ => Err(errs),
    }
}

/// The default cgroup root.
pub fn default_cgroup_root() -> &'static Path {
    Path::new("/sys/fs/cgroup")
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        euid: u32,
        userns: Option<u64>,
        clone: Option<u64>,
        landlock: Result<i32, i32>,
        cgroup: Result<Layout, String>,
    }

    impl HostProbes for Fake {
        fn euid(&self) -> u32 {
            self.euid
        }
        fn max_user_namespaces(&self) -> Option<u64> {
            self.userns
        }
        fn unprivileged_userns_clone(&self) -> Option<u64> {
            self.clone
        }
        fn landlock_abi(&self) -> Result<i32, i32> {
            self.landlock
        }
        fn cgroup_layout(&self) -> Result<Layout, String> {
            self.cgroup.clone()
        }
        fn init_exe(&self) -> Result<(), String> {
            Ok(())
        }
        fn run_base(&self) -> Result<(), String> {
            Ok(())
        }
    }

    fn good() -> Fake {
        Fake {
            euid: 0,
            userns: Some(1000),
            clone: None,
            landlock: Ok(7),
            cgroup: Ok(Layout::V2 { root: "/cg".into() }),
        }
    }

    const NEEDS: Needs = Needs {
        landlock_required: true,
        landlock_min_abi: 1,
    };

    fn checks(r: Result<HostFacts, Vec<RunnerError>>) -> Vec<String> {
        r.err()
            .unwrap_or_default()
            .iter()
            .map(|e| e.to_diagnostic().path)
            .collect()
    }

    #[test]
    fn a_good_host_passes() {
        let f = check(&good(), NEEDS).unwrap();
        assert_eq!(f.landlock_abi, 7);
    }

    #[test]
    fn every_missing_piece_is_named_at_once() {
        let host = Fake {
            euid: 1000,
            userns: Some(0),
            clone: Some(0),
            landlock: Err(libc::ENOSYS),
            cgroup: Err("no controllers".into()),
        };
        let got = checks(check(&host, NEEDS));
        assert_eq!(
            got,
            vec![
                "preflight.root",
                "preflight.userns",
                "preflight.userns",
                "preflight.landlock",
                "preflight.cgroup"
            ]
        );
        let d = check(&host, NEEDS).err().unwrap()[0].to_diagnostic();
        assert_eq!(d.code, sr_common::ErrorCode::RunPreflight);
        assert!(d.hint.contains("root"));
    }

    #[test]
    fn landlock_only_matters_when_required() {
        let mut host = good();
        host.landlock = Err(libc::EOPNOTSUPP);
        assert!(
            check(
                &host,
                Needs {
                    landlock_required: false,
                    landlock_min_abi: 1
                }
            )
            .is_ok()
        );
        let got = check(&host, NEEDS).err().unwrap();
        assert!(got[0].to_diagnostic().message.contains("not enabled"));
        host.landlock = Ok(3);
        assert!(
            check(
                &host,
                Needs {
                    landlock_required: true,
                    landlock_min_abi: 4
                }
            )
            .is_err()
        );
    }
}
