//! The mount plan: from the bundle's [`MountStep`]s to an ordered list of primitive operations,
//! and the [`Mounter`] that performs them.
//!
//! [`plan_ops`] is pure, so the order and flags of every mount are unit-tested against a
//! [`RecordingMounter`]; [`HostMounter`] performs them for real inside the sandbox init's private
//! mount namespace, where nothing is visible to the host.
//!
//! How a policy mount is made safe against symlink games (M2): its source is opened with
//! `O_PATH|O_NOFOLLOW`, the path the kernel reports for that fd (`/proc/self/fd/N`) must equal
//! the canonical source the compiler recorded and lie under an operator-allowed prefix, and the
//! bind is then made *from the fd* (`/proc/self/fd/N` as mount source resolves to the opened
//! object, not to a path lookup). A symlink swapped in after the check cannot redirect the
//! mount: the check and the mount concern the same open file.
//!
//! File locks (M8): a bind shares the host's inodes, and locks live on inodes, so a `flock`
//! or POSIX lock taken inside on a read-only host file would be seen by host processes (and
//! by other runs) locking the same file. With [`FileLocks::Isolated`] a read-only system
//! directory (`/usr`, `/etc`, ...) is therefore not bound but mounted as a private read-only
//! overlayfs whose lower layers are the source (through its fd, like a bind) and an empty
//! directory: the files are the same bytes, but the inodes, and so the locks, belong to this
//! overlay alone. Policy mounts, single files and device nodes stay binds: overlayfs leaves
//! undefined what a change to a lower layer looks like while it is mounted (a file the host
//! adds may never appear), and a policy's input directory is exactly what the host may change
//! during a run (see docs/sandbox.md).
//!
//! Mount targets are created inside the new root only; a target whose path inside the root
//! crosses a symlink is refused (a rootfs directory could otherwise point a mount point at a
//! host path).

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{OFlag, open};
use nix::mount::{MsFlags, mount};
use nix::sys::stat::Mode;
use sr_bundle::{FileLocks, MountStep};

/// Size of the /dev tmpfs (it holds only nodes and symlinks).
const DEV_TMPFS_BYTES: u64 = 64 * 1024;
/// Size of /dev/shm.
const DEV_SHM_BYTES: u64 = 16 * 1024 * 1024;
/// Options of the sandbox's devpts: a private instance (`newinstance`), so the workload sees
/// and can open only the terminals allocated inside this sandbox, never the host's; its `ptmx`
/// opens for anyone (the workload is unprivileged); new slaves are `0620` like a login's.
pub const DEVPTS_OPTIONS: &str = "newinstance,ptmxmode=0666,mode=0620";

/// A primitive mount-namespace operation. Paths are absolute host paths (the new root is the
/// run base's shared mount point until pivot_root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOp {
    /// Mount a tmpfs.
    Tmpfs {
        /// Where.
        target: PathBuf,
        /// size= in bytes.
        size_bytes: u64,
        /// mode= (octal in mount options).
        mode: u32,
        /// Also noexec.
        noexec: bool,
    },
    /// Create a directory (and parents) inside the new root.
    Mkdir {
        /// Path.
        path: PathBuf,
    },
    /// Bind a host path (trusted system path, or a verified policy source).
    Bind {
        /// Host source.
        source: PathBuf,
        /// Target (created as a dir or file to match the source).
        target: PathBuf,
        /// Remount read-only.
        read_only: bool,
        /// Keep device nodes usable (only for the /dev nodes).
        allow_dev: bool,
        /// `Some(prefixes)`: a policy source to verify through its fd against these prefixes;
        /// `None`: a system path (rootfs dir or device node).
        verify: Option<Vec<String>>,
        /// A missing source is skipped (rootfs dirs like /lib32 that a host may lack).
        optional: bool,
    },
    /// Create a symlink.
    Symlink {
        /// The link.
        path: PathBuf,
        /// What it points to.
        points_to: String,
    },
    /// Mount a private devpts instance ([`DEVPTS_OPTIONS`], `nosuid,noexec`) on an existing
    /// directory.
    Devpts {
        /// Mount point.
        target: PathBuf,
    },
    /// Remount an existing mount read-only (per-mount flags only).
    RemountReadOnly {
        /// Mount point.
        target: PathBuf,
        /// Also noexec.
        noexec: bool,
    },
}

/// Errors from planning or performing mounts.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A target path is not absolute or contains `..`.
    #[error("mount target {0:?} must be absolute without '..'")]
    BadTarget(String),
    /// A policy mount source failed verification.
    #[error("mount source {source_path:?} refused: {reason}")]
    SourceRefused {
        /// The source.
        source_path: String,
        /// Why.
        reason: String,
    },
    /// A syscall failed.
    #[error("{op} {path:?} failed: {source}")]
    Sys {
        /// Which operation.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn inside(root: &Path, target: &str) -> Result<PathBuf, MountError> {
    let p = Path::new(target);
    if !p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(MountError::BadTarget(target.to_owned()));
    }
    let rel: PathBuf = p
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    Ok(root.join(rel))
}

/// What the plan needs done after pivot_root, by pid 1 of the new pid namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LateMounts {
    /// Mount a fresh procfs at this path inside the sandbox.
    pub proc_target: Option<String>,
}

/// Turns the bundle's mount steps into primitive operations under `root`.
///
/// `allowed_prefixes` are the operator's mount prefixes, re-checked through the fd at mount
/// time. Returns the operations and what must wait for the new pid namespace (procfs).
pub fn plan_ops(
    steps: &[MountStep],
    root: &Path,
    allowed_prefixes: &[String],
) -> Result<(Vec<MountOp>, LateMounts), MountError> {
    let mut ops = Vec::new();
    let mut late = LateMounts::default();
    for step in steps {
        match step {
            MountStep::Root { source } => {
                if source == "host" {
                    ops.push(MountOp::Tmpfs {
                        target: root.to_path_buf(),
                        size_bytes: 1024 * 1024,
                        mode: 0o755,
                        noexec: false,
                    });
                } else {
                    ops.push(MountOp::Bind {
                        source: PathBuf::from(source),
                        target: root.to_path_buf(),
                        read_only: true,
                        allow_dev: false,
                        verify: None,
                        optional: false,
                    });
                }
            }
            MountStep::Bind {
                source,
                target,
                read_only,
                origin,
            } => {
                let policy = origin != "rootfs";
                ops.push(MountOp::Bind {
                    source: PathBuf::from(source),
                    target: inside(root, target)?,
                    read_only: *read_only,
                    allow_dev: false,
                    verify: policy.then(|| allowed_prefixes.to_vec()),
                    optional: !policy,
                });
            }
            MountStep::Symlink { target, link } => ops.push(MountOp::Symlink {
                path: inside(root, target)?,
                points_to: link.clone(),
            }),
            MountStep::Tmpfs {
                target,
                size_bytes,
                mode,
            } => ops.push(MountOp::Tmpfs {
                target: inside(root, target)?,
                size_bytes: *size_bytes,
                mode: *mode,
                noexec: false,
            }),
            MountStep::Proc { target } => {
                ops.push(MountOp::Mkdir {
                    path: inside(root, target)?,
                });
                late.proc_target = Some(target.clone());
            }
            MountStep::Dev { target, devices } => {
                let dev = inside(root, target)?;
                ops.push(MountOp::Tmpfs {
                    target: dev.clone(),
                    size_bytes: DEV_TMPFS_BYTES,
                    mode: 0o755,
                    noexec: true,
                });
                for name in devices {
                    if name.contains('/') || name == ".." || name == "." || name.is_empty() {
                        return Err(MountError::BadTarget(format!("{target}/{name}")));
                    }
                    ops.push(MountOp::Bind {
                        source: Path::new("/dev").join(name),
                        target: dev.join(name),
                        read_only: false,
                        allow_dev: true,
                        verify: None,
                        optional: false,
                    });
                }
                for (link, to) in [
                    ("fd", "/proc/self/fd"),
                    ("stdin", "/proc/self/fd/0"),
                    ("stdout", "/proc/self/fd/1"),
                    ("stderr", "/proc/self/fd/2"),
                ] {
                    ops.push(MountOp::Symlink {
                        path: dev.join(link),
                        points_to: to.into(),
                    });
                }
                ops.push(MountOp::Tmpfs {
                    target: dev.join("shm"),
                    size_bytes: DEV_SHM_BYTES,
                    mode: 0o1777,
                    noexec: true,
                });
                // The terminals of execs with a tty come from this instance (see pty.rs); it
                // must exist before /dev turns read-only, and `ptmx` is the path programs open.
                let pts = dev.join("pts");
                ops.push(MountOp::Mkdir { path: pts.clone() });
                ops.push(MountOp::Devpts { target: pts });
                ops.push(MountOp::Symlink {
                    path: dev.join("ptmx"),
                    points_to: "pts/ptmx".into(),
                });
                ops.push(MountOp::RemountReadOnly {
                    target: dev,
                    noexec: true,
                });
            }
        }
    }
    Ok((ops, late))
}

/// Performs primitive mount operations.
pub trait Mounter {
    /// Performs one operation.
    fn apply(&mut self, op: &MountOp) -> Result<(), MountError>;
}

/// Records operations instead of performing them (unit tests).
#[derive(Debug, Default)]
pub struct RecordingMounter {
    /// Operations in order.
    pub ops: Vec<MountOp>,
}

impl Mounter for RecordingMounter {
    fn apply(&mut self, op: &MountOp) -> Result<(), MountError> {
        self.ops.push(op.clone());
        Ok(())
    }
}

/// Performs every operation in order, stopping at the first error.
pub fn execute(ops: &[MountOp], mounter: &mut dyn Mounter) -> Result<(), MountError> {
    ops.iter().try_for_each(|op| mounter.apply(op))
}

/// What a [`HostMounter`] made that the report records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountFacts {
    /// Policy binds (and the root): (host source, target inside, read_only).
    pub policy_mounts: Vec<(String, String, bool)>,
    /// Targets inside that are private read-only overlays (file locks isolated).
    pub lock_isolated: Vec<String>,
}

/// Performs operations with real syscalls. Only used inside the sandbox init's private mount
/// namespace.
#[derive(Debug)]
pub struct HostMounter {
    /// The new root; targets must stay beneath it without crossing symlinks.
    pub root: PathBuf,
    /// Binds made, for the enforcement facts: (source, target inside, read_only).
    pub made: Vec<(String, String, bool)>,
    /// Whether read-only directories become private overlays (see the module docs).
    file_locks: FileLocks,
    /// The empty lower layer of those overlays, made on first use.
    empty_lower: Option<OwnedFd>,
    /// Targets inside the root that were mounted as private overlays, for the facts.
    pub lock_isolated: Vec<String>,
}

fn sys<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(nix::Error) -> MountError + 'a {
    move |e| MountError::Sys {
        op,
        path: path.to_path_buf(),
        source: io::Error::from(e),
    }
}

fn io_sys<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> MountError + 'a {
    move |source| MountError::Sys {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl HostMounter {
    /// A mounter for the new root `root`.
    pub fn new(root: PathBuf, file_locks: FileLocks) -> Self {
        HostMounter {
            root,
            made: Vec::new(),
            file_locks,
            empty_lower: None,
            lock_isolated: Vec::new(),
        }
    }

    /// Where the overlays' empty lower layer lives: in the run directories' base, beside every
    /// run dir (`<base>/.overlay-lower`), outside every sandbox's view. One directory serves
    /// all runs and stays: an overlay never writes its lower layers, and creating and removing
    /// one per run cost an inode allocation each time.
    pub fn empty_lower_path(root: &Path) -> PathBuf {
        root.with_file_name(".overlay-lower")
    }

    /// The empty lower layer, created 0555 on first use, opened without following links, and
    /// checked to be an empty directory (whatever it holds would show in every overlay).
    fn empty_lower(&mut self) -> Result<i32, MountError> {
        if let Some(fd) = &self.empty_lower {
            return Ok(fd.as_raw_fd());
        }
        let path = Self::empty_lower_path(&self.root);
        match fs::DirBuilder::new().mode(0o555).create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_sys("mkdir", &path)(e)),
        }
        let fd = open(
            &path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(sys("open", &path))?;
        let mut dir = nix::dir::Dir::from_fd(fd.try_clone().map_err(io_sys("dup", &path))?)
            .map_err(sys("read", &path))?;
        let occupied = dir.iter().any(|e| {
            e.map_or(true, |e| {
                let name = e.file_name().to_bytes();
                name != b"." && name != b".."
            })
        });
        if occupied {
            return Err(sys("check that it is empty", &path)(
                nix::errno::Errno::ENOTEMPTY,
            ));
        }
        let raw = fd.as_raw_fd();
        self.empty_lower = Some(fd);
        Ok(raw)
    }

    /// A private read-only overlay of the directory open as `fd` on `target`.
    fn overlay(&mut self, fd: i32, target: &Path) -> Result<(), MountError> {
        let empty = self.empty_lower()?;
        // Both layers by fd: no path is looked up again and none needs escaping.
        let data = format!("lowerdir=/proc/self/fd/{fd}:/proc/self/fd/{empty}");
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(data.as_str()),
        )
        .map_err(sys("mount overlay", target))?;
        let inside = self.inside(target);
        self.lock_isolated.push(inside);
        Ok(())
    }

    /// `target` as the sandbox will see it.
    fn inside(&self, target: &Path) -> String {
        target
            .strip_prefix(&self.root)
            .map(|p| format!("/{}", p.display()))
            .unwrap_or_else(|_| "/".into())
    }

    /// What was mounted, for the enforcement facts (leaves the lists empty).
    pub fn take_facts(&mut self) -> MountFacts {
        MountFacts {
            policy_mounts: std::mem::take(&mut self.made),
            lock_isolated: std::mem::take(&mut self.lock_isolated),
        }
    }

    /// Refuses a target below the root whose existing components include a symlink.
    fn check_no_symlink(&self, target: &Path) -> Result<(), MountError> {
        let Ok(rel) = target.strip_prefix(&self.root) else {
            return Ok(()); // the root itself
        };
        let mut cur = self.root.clone();
        for c in rel.components() {
            cur.push(c);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(MountError::BadTarget(format!(
                        "{} crosses a symlink",
                        target.display()
                    )));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        Ok(())
    }

    fn mkdirs(&self, path: &Path) -> Result<(), MountError> {
        self.check_no_symlink(path)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path)
            .map_err(io_sys("mkdir", path))
    }

    fn bind(
        &mut self,
        source: &Path,
        target: &Path,
        read_only: bool,
        allow_dev: bool,
        verify: Option<&[String]>,
        optional: bool,
    ) -> Result<(), MountError> {
        let fd: OwnedFd = match open(
            source,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(nix::Error::ENOENT) if optional => return Ok(()),
            Err(e) => return Err(sys("open", source)(e)),
        };
        let meta = fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .map_err(io_sys("fstat", source))?;
        let link_meta = fs::symlink_metadata(source).ok();
        if let Some(prefixes) = verify {
            let real = fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .map_err(io_sys("readlink", source))?;
            let refuse = |reason: String| MountError::SourceRefused {
                source_path: source.display().to_string(),
                reason,
            };
            if link_meta
                .as_ref()
                .is_some_and(|m| m.file_type().is_symlink())
            {
                return Err(refuse("it is a symlink".into()));
            }
            if real != source {
                return Err(refuse(format!(
                    "it resolves to {} (a path component is a symlink or was swapped)",
                    real.display()
                )));
            }
            if !prefixes.iter().any(|p| real.starts_with(p)) {
                return Err(refuse(format!(
                    "{} is not under an allowed prefix ({})",
                    real.display(),
                    prefixes.join(", ")
                )));
            }
            if !(meta.is_dir() || meta.is_file()) {
                return Err(refuse(
                    "it is neither a directory nor a regular file".into(),
                ));
            }
        } else if optional
            && link_meta
                .as_ref()
                .is_some_and(|m| m.file_type().is_symlink())
        {
            // A rootfs entry that is a symlink on the host (merged /usr): recreate the link.
            let to = fs::read_link(source).map_err(io_sys("readlink", source))?;
            self.check_no_symlink(target)?;
            if let Some(parent) = target.parent() {
                self.mkdirs(parent)?;
            }
            return std::os::unix::fs::symlink(&to, target).map_err(io_sys("symlink", target));
        }
        if target != self.root {
            if meta.is_dir() {
                self.mkdirs(target)?;
            } else {
                if let Some(parent) = target.parent() {
                    self.mkdirs(parent)?;
                }
                self.check_no_symlink(target)?;
                if fs::symlink_metadata(target).is_err() {
                    fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o644)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(target)
                        .map_err(io_sys("create mount point", target))?;
                }
            }
        }
        // System directories only: a policy mount stays a live bind, because overlayfs leaves
        // undefined what a lower layer's changes during the mount look like, and input
        // directories are changed by the host while runs read them (see the module docs).
        if read_only
            && meta.is_dir()
            && !allow_dev
            && verify.is_none()
            && target != self.root
            && self.file_locks == FileLocks::Isolated
        {
            self.overlay(fd.as_raw_fd(), target)?;
            self.record(source, target, read_only, verify.is_some());
            return Ok(());
        }
        let via = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        mount(
            Some(&via),
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(sys("bind", target))?;
        let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID;
        if !allow_dev {
            flags |= MsFlags::MS_NODEV;
        } else {
            flags |= MsFlags::MS_NOEXEC;
        }
        if read_only {
            flags |= MsFlags::MS_RDONLY;
        }
        mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
            .map_err(sys("remount", target))?;
        self.record(source, target, read_only, verify.is_some());
        Ok(())
    }

    /// Records a policy mount (or the root) for the enforcement facts.
    fn record(&mut self, source: &Path, target: &Path, read_only: bool, policy: bool) {
        if policy || target == self.root {
            let inside = self.inside(target);
            self.made
                .push((source.display().to_string(), inside, read_only));
        }
    }
}

impl Mounter for HostMounter {
    fn apply(&mut self, op: &MountOp) -> Result<(), MountError> {
        match op {
            MountOp::Tmpfs {
                target,
                size_bytes,
                mode,
                noexec,
            } => {
                if *target != self.root {
                    self.mkdirs(target)?;
                }
                let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
                if *noexec {
                    flags |= MsFlags::MS_NOEXEC;
                }
                let data = format!("size={size_bytes},mode={mode:o}");
                mount(
                    Some("tmpfs"),
                    target,
                    Some("tmpfs"),
                    flags,
                    Some(data.as_str()),
                )
                .map_err(sys("mount tmpfs", target))?;
                // Mode again: tmpfs applies mode= but umask-free chmod makes it explicit.
                fs::set_permissions(target, fs::Permissions::from_mode(*mode))
                    .map_err(io_sys("chmod", target))
            }
            MountOp::Mkdir { path } => self.mkdirs(path),
            MountOp::Bind {
                source,
                target,
                read_only,
                allow_dev,
                verify,
                optional,
            } => self.bind(
                source,
                target,
                *read_only,
                *allow_dev,
                verify.as_deref(),
                *optional,
            ),
            MountOp::Symlink { path, points_to } => {
                if let Some(parent) = path.parent() {
                    self.mkdirs(parent)?;
                }
                std::os::unix::fs::symlink(points_to, path).map_err(io_sys("symlink", path))
            }
            MountOp::Devpts { target } => {
                self.check_no_symlink(target)?;
                mount(
                    Some("devpts"),
                    target,
                    Some("devpts"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
                    Some(DEVPTS_OPTIONS),
                )
                .map_err(sys("mount devpts", target))
            }
            MountOp::RemountReadOnly { target, noexec } => {
                let mut flags = MsFlags::MS_REMOUNT
                    | MsFlags::MS_BIND
                    | MsFlags::MS_RDONLY
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV;
                if *noexec {
                    flags |= MsFlags::MS_NOEXEC;
                }
                mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
                    .map_err(sys("remount read-only", target))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps() -> Vec<MountStep> {
        vec![
            MountStep::Root {
                source: "host".into(),
            },
            MountStep::Bind {
                source: "/usr".into(),
                target: "/usr".into(),
                read_only: true,
                origin: "rootfs".into(),
            },
            MountStep::Symlink {
                target: "/bin".into(),
                link: "usr/bin".into(),
            },
            MountStep::Tmpfs {
                target: "/tmp".into(),
                size_bytes: 1 << 20,
                mode: 0o1777,
            },
            MountStep::Proc {
                target: "/proc".into(),
            },
            MountStep::Dev {
                target: "/dev".into(),
                devices: vec!["null".into(), "zero".into()],
            },
            MountStep::Bind {
                source: "/srv/data".into(),
                target: "/data".into(),
                read_only: false,
                origin: "policy".into(),
            },
        ]
    }

    #[test]
    fn plan_maps_steps_to_ops_in_order() {
        let root = Path::new("/run/x/root");
        let prefixes = vec!["/srv".to_owned()];
        let (ops, late) = plan_ops(&steps(), root, &prefixes).unwrap();
        let mut rec = RecordingMounter::default();
        execute(&ops, &mut rec).unwrap();
        assert_eq!(late.proc_target.as_deref(), Some("/proc"));
        assert_eq!(
            rec.ops[0],
            MountOp::Tmpfs {
                target: root.into(),
                size_bytes: 1 << 20,
                mode: 0o755,
                noexec: false
            }
        );
        assert!(
            matches!(&rec.ops[1], MountOp::Bind { target, verify: None, optional: true, read_only: true, .. } if target == Path::new("/run/x/root/usr"))
        );
        assert!(
            matches!(&rec.ops[2], MountOp::Symlink { path, points_to } if path == Path::new("/run/x/root/bin") && points_to == "usr/bin")
        );
        assert!(
            matches!(&rec.ops[4], MountOp::Mkdir { path } if path == Path::new("/run/x/root/proc"))
        );
        // /dev: tmpfs, two device binds, 4 symlinks, shm, pts (mkdir, devpts, ptmx link),
        // read-only remount.
        assert!(matches!(&rec.ops[5], MountOp::Tmpfs { noexec: true, .. }));
        assert!(
            matches!(&rec.ops[6], MountOp::Bind { source, allow_dev: true, .. } if source == Path::new("/dev/null"))
        );
        assert!(
            matches!(&rec.ops[12], MountOp::Tmpfs { target, .. } if target == Path::new("/run/x/root/dev/shm"))
        );
        assert!(
            matches!(&rec.ops[13], MountOp::Mkdir { path } if path == Path::new("/run/x/root/dev/pts"))
        );
        assert_eq!(
            rec.ops[14],
            MountOp::Devpts {
                target: "/run/x/root/dev/pts".into()
            }
        );
        assert!(
            matches!(&rec.ops[15], MountOp::Symlink { path, points_to } if path == Path::new("/run/x/root/dev/ptmx") && points_to == "pts/ptmx")
        );
        assert!(
            matches!(&rec.ops[16], MountOp::RemountReadOnly { target, .. } if target == Path::new("/run/x/root/dev"))
        );
        let last = rec.ops.last().unwrap();
        assert!(
            matches!(last, MountOp::Bind { verify: Some(p), read_only: false, optional: false, .. } if p == &prefixes)
        );
    }

    #[test]
    fn targets_with_dotdot_or_relative_are_refused() {
        for bad in ["../etc", "/data/../../etc", "data"] {
            let s = vec![MountStep::Tmpfs {
                target: bad.into(),
                size_bytes: 1,
                mode: 0o700,
            }];
            assert!(matches!(
                plan_ops(&s, Path::new("/r"), &[]),
                Err(MountError::BadTarget(_))
            ));
        }
        let s = vec![MountStep::Dev {
            target: "/dev".into(),
            devices: vec!["../sda".into()],
        }];
        assert!(plan_ops(&s, Path::new("/r"), &[]).is_err());
    }

    #[test]
    fn the_shared_empty_lower_layer_is_made_once_and_refused_when_not_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join(crate::rundir::ROOT_MOUNT_POINT);
        std::fs::create_dir_all(&root).unwrap();
        let lower = HostMounter::empty_lower_path(&root);
        assert_eq!(lower, tmp.path().join(".overlay-lower"));
        let mut m = HostMounter::new(root.clone(), FileLocks::Isolated);
        assert!(m.empty_lower().is_ok());
        assert!(lower.is_dir());
        // Whatever it held would show in every overlay.
        std::fs::set_permissions(&lower, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(lower.join("planted"), "x").unwrap();
        let mut m = HostMounter::new(root, FileLocks::Isolated);
        let err = m.empty_lower().unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
    }
}
