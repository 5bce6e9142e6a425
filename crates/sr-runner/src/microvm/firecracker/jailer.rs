//! The jailer's side of a Firecracker run: its whole command line ([`argv`]), where it builds
//! the jail ([`JailLayout`]: `<chroot base>/<exec file name>/<id>/root`, docs/jailer.md in
//! Firecracker), the cgroup arguments for the host's cgroup version ([`cgroup_args`]), and the
//! artifacts placed in the jail's root before it starts ([`place_artifacts`]).
//!
//! Cgroups: the jailer creates `<hierarchy>/<parent>/<id>` and writes the `--cgroup` values
//! there. The parent is the run's own cgroup, so the VMM is inside it (the run's cleanup kills
//! it) with the run's VMM limits (`cgroupPlan`: the guest's memory plus the VMM's overhead,
//! the VMM's threads). The jailer is not attached to the run's cgroup itself: on cgroup v2 a
//! cgroup with processes cannot hand controllers to a child.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sr_bundle::CgroupPlan;

/// The host's cgroup version, as the jailer's `--cgroup-version` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Per-controller hierarchies.
    V1,
    /// The unified hierarchy.
    V2,
}

/// Where the jailer builds a VM's jail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailLayout {
    /// `--chroot-base-dir`.
    pub chroot_base: PathBuf,
    /// `<chroot base>/<exec file name>/<id>`: removed at stop.
    pub jail_dir: PathBuf,
    /// `<jail dir>/root`: `/` for the jailed Firecracker.
    pub root: PathBuf,
    /// `--exec-file`.
    pub exec_file: PathBuf,
    /// `--id`.
    pub id: String,
}

fn arg_after<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// Whether `id` is one the jailer accepts (letters, digits and `-`, at most 64).
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl JailLayout {
    /// The jail the (run-id-substituted) `jailer_args` ask for; it must lie inside `run_dir`,
    /// so that the run owns it.
    pub fn of(jailer_args: &[String], run_dir: &Path) -> Result<JailLayout, String> {
        let need = |flag: &str| {
            arg_after(jailer_args, flag).ok_or_else(|| format!("the jailer arguments lack {flag}"))
        };
        let id = need("--id")?.to_owned();
        if !valid_id(&id) {
            return Err(format!("{id:?} is not an id the jailer accepts"));
        }
        let exec_file = PathBuf::from(need("--exec-file")?);
        let exec_name = exec_file
            .file_name()
            .ok_or_else(|| format!("--exec-file {} has no file name", exec_file.display()))?;
        let chroot_base = PathBuf::from(need("--chroot-base-dir")?);
        let plain = chroot_base.components().all(|c| {
            matches!(
                c,
                std::path::Component::RootDir | std::path::Component::Normal(_)
            )
        });
        if !plain || !chroot_base.starts_with(run_dir) || chroot_base == run_dir {
            return Err(format!(
                "--chroot-base-dir {} is not a directory inside the run directory {}",
                chroot_base.display(),
                run_dir.display()
            ));
        }
        let jail_dir = chroot_base.join(exec_name).join(&id);
        Ok(JailLayout {
            root: jail_dir.join("root"),
            jail_dir,
            chroot_base,
            exec_file,
            id,
        })
    }
}

/// The jailer's cgroup arguments: `--cgroup-version`, `--parent-cgroup` (the run's cgroup,
/// relative to the hierarchy) and the VMM's limits from `plan`, in the files each version
/// spells them. Without a run cgroup (`parent` is `None`) the jailer is asked for v2 with no
/// values, which makes it create and join no cgroup.
pub fn cgroup_args(version: CgroupVersion, plan: &CgroupPlan, parent: Option<&str>) -> Vec<String> {
    let Some(parent) = parent else {
        return no_cgroup_args();
    };
    let mut out = vec![
        "--cgroup-version".to_owned(),
        match version {
            CgroupVersion::V1 => "1",
            CgroupVersion::V2 => "2",
        }
        .to_owned(),
        "--parent-cgroup".to_owned(),
        parent.to_owned(),
    ];
    let mut values = Vec::new();
    match version {
        CgroupVersion::V2 => {
            values.push(format!("memory.max={}", plan.memory_max_bytes));
            values.push(format!("pids.max={}", plan.pids_max));
            if plan.cpu_quota_us > 0 {
                values.push(format!(
                    "cpu.max={} {}",
                    plan.cpu_quota_us, plan.cpu_period_us
                ));
            }
        }
        CgroupVersion::V1 => {
            values.push(format!("memory.limit_in_bytes={}", plan.memory_max_bytes));
            values.push(format!("pids.max={}", plan.pids_max));
            if plan.cpu_quota_us > 0 {
                values.push(format!("cpu.cfs_period_us={}", plan.cpu_period_us));
                values.push(format!("cpu.cfs_quota_us={}", plan.cpu_quota_us));
            }
        }
    }
    for v in values {
        out.push("--cgroup".into());
        out.push(v);
    }
    out
}

/// The jailer's cgroup arguments for a VMM in no cgroup of the run's: v2 with no values, which
/// makes the jailer create and join no cgroup.
pub fn no_cgroup_args() -> Vec<String> {
    vec!["--cgroup-version".into(), "2".into()]
}

/// The jailer's whole argument list: the plan's own arguments, the cgroup arguments, the
/// network namespace to join (when networked), then `--` and Firecracker's API socket.
pub fn argv(
    jailer_args: &[String],
    cgroup: Vec<String>,
    netns: Option<&Path>,
    api_socket: &str,
) -> Vec<String> {
    let mut out = jailer_args.to_vec();
    out.extend(cgroup);
    if let Some(ns) = netns {
        out.push("--netns".into());
        out.push(ns.display().to_string());
    }
    out.push("--".into());
    out.push("--api-sock".into());
    out.push(format!("/{api_socket}"));
    out
}

/// How an artifact got into the jail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// A hard link (same filesystem; the inode the artifact is).
    Linked,
    /// A copy (another filesystem).
    Copied,
}

/// Puts `source` into the jail's root as `name`: a hard link where the filesystems allow,
/// a copy otherwise. The VMM's user must be able to read it: a link keeps the artifact's own
/// mode (artifacts are 0644), a copy is made 0444. Never chowned (a link is the original).
pub fn place(source: &Path, root: &Path, name: &str) -> std::io::Result<(PathBuf, Placed)> {
    let plain = Path::new(name).components().count() == 1
        && matches!(
            Path::new(name).components().next(),
            Some(std::path::Component::Normal(_))
        );
    if !plain {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain file name in the jail"),
        ));
    }
    let dest = root.join(name);
    match std::fs::hard_link(source, &dest) {
        Ok(()) => Ok((dest, Placed::Linked)),
        Err(e)
            if e.raw_os_error() == Some(libc::EXDEV) || e.raw_os_error() == Some(libc::EPERM) =>
        {
            std::fs::copy(source, &dest)?;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o444))?;
            Ok((dest, Placed::Copied))
        }
        Err(e) => Err(e),
    }
}

/// The run's cgroup, relative to its hierarchy: `safe-run/<plan name>`.
pub fn parent_cgroup(plan: &CgroupPlan, run_id: &str) -> String {
    format!(
        "{}/{}",
        crate::cgroup::PARENT,
        plan.name.replace(sr_bundle::RUN_ID_PLACEHOLDER, run_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> CgroupPlan {
        CgroupPlan {
            name: "safe-run-<runId>".into(),
            memory_max_bytes: 939_524_096,
            pids_max: 256,
            cpu_quota_us: 200_000,
            cpu_period_us: 100_000,
        }
    }

    fn args(base: &str) -> Vec<String> {
        [
            "--id",
            "0123456789ab",
            "--exec-file",
            "/usr/local/bin/firecracker",
            "--uid",
            "65534",
            "--gid",
            "65534",
            "--chroot-base-dir",
            base,
        ]
        .map(String::from)
        .to_vec()
    }

    #[test]
    fn the_jail_is_where_the_jailer_builds_it() {
        let l = JailLayout::of(
            &args("/runs/0123456789ab/jail"),
            Path::new("/runs/0123456789ab"),
        )
        .unwrap();
        assert_eq!(
            l.root,
            Path::new("/runs/0123456789ab/jail/firecracker/0123456789ab/root")
        );
        assert_eq!(l.id, "0123456789ab");
        // Outside the run directory, or climbing out of it: refused.
        for base in [
            "/srv/jailer",
            "/runs/0123456789ab/../x",
            "/runs/0123456789ab",
        ] {
            assert!(JailLayout::of(&args(base), Path::new("/runs/0123456789ab")).is_err());
        }
        let mut bad = args("/runs/x/jail");
        bad[1] = "a/b".into();
        assert!(JailLayout::of(&bad, Path::new("/runs/x")).is_err());
    }

    #[test]
    fn cgroup_v2_arguments() {
        let a = cgroup_args(CgroupVersion::V2, &plan(), Some("safe-run/safe-run-abc"));
        assert_eq!(
            a,
            [
                "--cgroup-version",
                "2",
                "--parent-cgroup",
                "safe-run/safe-run-abc",
                "--cgroup",
                "memory.max=939524096",
                "--cgroup",
                "pids.max=256",
                "--cgroup",
                "cpu.max=200000 100000"
            ]
        );
    }

    #[test]
    fn cgroup_v1_arguments() {
        let a = cgroup_args(CgroupVersion::V1, &plan(), Some("safe-run/safe-run-abc"));
        assert_eq!(
            a,
            [
                "--cgroup-version",
                "1",
                "--parent-cgroup",
                "safe-run/safe-run-abc",
                "--cgroup",
                "memory.limit_in_bytes=939524096",
                "--cgroup",
                "pids.max=256",
                "--cgroup",
                "cpu.cfs_period_us=100000",
                "--cgroup",
                "cpu.cfs_quota_us=200000"
            ]
        );
        let unlimited = CgroupPlan {
            cpu_quota_us: 0,
            ..plan()
        };
        assert!(
            !cgroup_args(CgroupVersion::V1, &unlimited, Some("p"))
                .iter()
                .any(|a| a.starts_with("cpu."))
        );
        assert_eq!(
            cgroup_args(CgroupVersion::V1, &plan(), None),
            ["--cgroup-version", "2"]
        );
        assert_eq!(parent_cgroup(&plan(), "abc"), "safe-run/safe-run-abc");
    }

    #[test]
    fn the_whole_command_line() {
        let a = argv(
            &args("/r/jail"),
            vec!["--cgroup-version".into(), "2".into()],
            Some(Path::new("/run/netns/x")),
            "api.socket",
        );
        let tail: Vec<_> = a[10..].iter().map(String::as_str).collect();
        assert_eq!(
            tail,
            [
                "--cgroup-version",
                "2",
                "--netns",
                "/run/netns/x",
                "--",
                "--api-sock",
                "/api.socket"
            ]
        );
    }

    #[test]
    fn artifacts_are_linked_into_the_jail() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("vmlinux.src");
        std::fs::write(&src, b"kernel").unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let (dest, how) = place(&src, &root, "vmlinux").unwrap();
        assert_eq!(how, Placed::Linked);
        assert_eq!(std::fs::read(dest).unwrap(), b"kernel");
        assert!(place(&src, &root, "../escape").is_err());
        assert!(place(&src, &root, "/abs").is_err());
    }
}
