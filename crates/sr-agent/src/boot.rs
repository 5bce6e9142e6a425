//! Booting the guest as pid 1: the kernel's filesystems, the console, the modules, the root
//! image, and the mounts execs need. Nothing here runs in the test mode (it would remount the
//! host).
//!
//! From the initramfs: devtmpfs, proc and sysfs; /dev/console on fds 0-2 (the initramfs has no
//! /dev/console, so pid 1 starts without them); the modules; /dev/vda (ext4) read-only on
//! /newroot; /dev, /proc and /sys moved into it; then the classic switch_root (chdir, move the
//! new root over `/`, chroot), because the initramfs is rootfs, which pivot_root cannot leave.
//! The initramfs' files stay in memory, unreachable (they are small).

use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::mount::{MsFlags, mount};
use nix::sys::stat::Mode;
use nix::sys::statfs::{FsType, TMPFS_MAGIC};
use nix::unistd::{chdir, chroot};
use sr_bundle::MountStep;

use crate::error::AgentError;

/// The root image's block device.
pub const ROOT_DEVICE: &str = "/dev/vda";
/// How long the root device may take to appear after virtio_blk is loaded.
pub const ROOT_DEVICE_WAIT: Duration = Duration::from_secs(5);
/// The initramfs' mount point for the root image.
const NEW_ROOT: &str = "/newroot";
/// `statfs` magic of ramfs (the initramfs when the kernel has no tmpfs for it).
const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);

fn mnt(
    phase: &'static str,
    source: &str,
    target: &str,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), AgentError> {
    mount(Some(source), target, fstype, flags, data).map_err(|e| {
        AgentError::sys(
            phase,
            format!("mounting {} on {target}", fstype.unwrap_or(source)),
            e,
        )
    })
}

/// Whether `/` is the initramfs (rootfs: tmpfs or ramfs).
pub fn in_initramfs() -> bool {
    nix::sys::statfs::statfs("/").is_ok_and(|s| {
        let t = s.filesystem_type();
        t == TMPFS_MAGIC || t == RAMFS_MAGIC
    })
}

/// Mounts devtmpfs, proc and sysfs where the kernel left none (EBUSY: already mounted).
pub fn kernel_filesystems() -> Result<(), AgentError> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    for (fs, target, flags) in [
        ("devtmpfs", "/dev", MsFlags::MS_NOSUID),
        ("proc", "/proc", nosuid | MsFlags::MS_NODEV),
        ("sysfs", "/sys", nosuid | MsFlags::MS_NODEV),
    ] {
        match mount(Some(fs), target, Some(fs), flags, None::<&str>) {
            Ok(()) | Err(Errno::EBUSY) => {}
            Err(e) => {
                return Err(AgentError::sys(
                    "boot.mount",
                    format!("mounting {fs} on {target}"),
                    e,
                ));
            }
        }
    }
    Ok(())
}

/// Opens /dev/console as stdin, stdout and stderr, so every failure line reaches the serial
/// console (and QEMU's console log).
pub fn console() -> Result<(), AgentError> {
    let fd = open(
        "/dev/console",
        OFlag::O_RDWR | OFlag::O_NOCTTY,
        Mode::empty(),
    )
    .map_err(|e| AgentError::sys("boot.console", "opening /dev/console", e))?;
    let dup = |r: nix::Result<()>| r.map_err(|e| AgentError::sys("boot.console", "dup2", e));
    dup(nix::unistd::dup2_stdin(&fd))?;
    dup(nix::unistd::dup2_stdout(&fd))?;
    dup(nix::unistd::dup2_stderr(&fd))?;
    Ok(())
}

/// Waits up to `limit` for `path` to exist (devtmpfs creates it when the driver probes).
pub fn wait_for(path: &str, limit: Duration) -> Result<(), AgentError> {
    let start = Instant::now();
    while !Path::new(path).exists() {
        if start.elapsed() >= limit {
            return Err(AgentError::new(
                "boot.rootfs",
                format!(
                    "{path} did not appear within {limit:?} (is virtio_blk in the module list, \
                     and the rootfs attached as a virtio-blk drive?)"
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Mounts the root image read-only and makes it `/`, taking /dev, /proc and /sys along.
pub fn switch_root() -> Result<(), AgentError> {
    wait_for(ROOT_DEVICE, ROOT_DEVICE_WAIT)?;
    mnt(
        "boot.rootfs",
        ROOT_DEVICE,
        NEW_ROOT,
        Some("ext4"),
        MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
        None,
    )?;
    for dir in ["/dev", "/proc", "/sys"] {
        let to = format!("{NEW_ROOT}{dir}");
        mnt("boot.switch_root", dir, &to, None, MsFlags::MS_MOVE, None)?;
    }
    let step = |what: &str, r: nix::Result<()>| {
        r.map_err(|e| AgentError::sys("boot.switch_root", what, e))
    };
    step("chdir /newroot", chdir(NEW_ROOT))?;
    mnt("boot.switch_root", ".", "/", None, MsFlags::MS_MOVE, None)?;
    step("chroot .", chroot("."))?;
    step("chdir /", chdir("/"))?;
    Ok(())
}

/// Lifts pid 1's open-file limit from the kernel's default for init (1024): the shared exec
/// and file-worker code moves descriptors above 1024 before it closes the rest, as the process
/// sandbox's pid 1 (which inherits safe-run's limit) can. Execs get the policy's own limit.
pub fn raise_fd_limit() -> Result<(), AgentError> {
    use nix::sys::resource::{Resource, setrlimit};
    setrlimit(Resource::RLIMIT_NOFILE, PID1_NOFILE, PID1_NOFILE)
        .map_err(|e| AgentError::sys("boot.rlimit", "raising RLIMIT_NOFILE", e))
}

/// pid 1's open-file limit.
const PID1_NOFILE: u64 = 65_536;

/// /dev/pts as a private devpts instance with /dev/ptmx pointing into it, and the /dev/fd
/// links shells expect: what execs with a terminal need.
pub fn terminals() -> Result<(), AgentError> {
    let phase = "boot.devpts";
    match std::fs::create_dir("/dev/pts") {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(AgentError::io(phase, "creating /dev/pts", &e)),
    }
    mnt(
        phase,
        "devpts",
        "/dev/pts",
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    // devtmpfs' own /dev/ptmx belongs to the initial instance; the link points at ours.
    let _ = std::fs::remove_file("/dev/ptmx");
    for (link, to) in [
        ("/dev/ptmx", "pts/ptmx"),
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        match std::os::unix::fs::symlink(to, link) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(AgentError::io(phase, format!("linking {link}"), &e)),
        }
    }
    Ok(())
}

/// The block device (`/dev/vdX`) whose virtio serial is `serial`.
fn device_with_serial(serial: &str) -> Result<String, AgentError> {
    let start = Instant::now();
    loop {
        if let Ok(dir) = std::fs::read_dir("/sys/block") {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let found = std::fs::read_to_string(e.path().join("serial"))
                    .is_ok_and(|s| s.trim() == serial);
                if found {
                    return Ok(format!("/dev/{name}"));
                }
            }
        }
        if start.elapsed() >= ROOT_DEVICE_WAIT {
            return Err(AgentError::new(
                "guest.mounts",
                format!("no block device has the serial {serial} (the mount's drive)"),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Gives every entry under `dir` (this file system only, links not followed) to `uid:gid`:
/// a writable mount's files become the exec identity's, as a bind's are the workload's host
/// identity's in the process sandbox. Runs before any exec, on a file system just mounted.
fn chown_tree(dir: &Path, uid: u32, gid: u32, depth: u32) -> Result<(), AgentError> {
    let io = |what: &str, e: std::io::Error| AgentError::io("guest.mounts", what.to_owned(), &e);
    if depth > 256 {
        return Err(AgentError::new(
            "guest.mounts",
            "a mount is more than 256 levels deep",
        ));
    }
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid)).map_err(|e| io("chown", e))?;
    for e in std::fs::read_dir(dir).map_err(|e| io("listing a mount", e))? {
        let e = e.map_err(|e| io("listing a mount", e))?;
        let ft = e.file_type().map_err(|e| io("stat", e))?;
        if ft.is_dir() {
            chown_tree(&e.path(), uid, gid, depth + 1)?;
        } else {
            std::os::unix::fs::lchown(e.path(), Some(uid), Some(gid))
                .map_err(|e| io("chown", e))?;
        }
    }
    Ok(())
}

/// The guest plan's mounts: tmpfs (`/tmp`: size and mode from the plan), nosuid and nodev;
/// each policy mount's image (a bind from `virtio-blk:<serial>`) at its target, which must
/// exist in the rootfs, nosuid and nodev, read-only unless writable (then its files are given
/// to `uid:gid`, the exec identity).
pub fn plan_mounts(steps: &[MountStep], uid: u32, gid: u32) -> Result<(), AgentError> {
    for step in steps {
        if let MountStep::Bind {
            source,
            target,
            read_only,
            ..
        } = step
        {
            let Some(serial) = source.strip_prefix("virtio-blk:") else {
                return Err(AgentError::new(
                    "guest.mounts",
                    format!("{target}: a guest cannot bind {source}; only virtio-blk:<serial>"),
                ));
            };
            if !std::fs::symlink_metadata(target).is_ok_and(|m| m.is_dir()) {
                return Err(AgentError::new(
                    "guest.mounts",
                    format!(
                        "{target} is not a directory in the guest rootfs (a microVM mount's target must exist there)"
                    ),
                ));
            }
            let dev = device_with_serial(serial)?;
            let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
            if *read_only {
                flags |= MsFlags::MS_RDONLY;
            }
            mnt("guest.mounts", &dev, target, Some("ext4"), flags, None)?;
            if !read_only {
                chown_tree(Path::new(target), uid, gid, 0)?;
            }
            continue;
        }
        if let MountStep::Tmpfs {
            target,
            size_bytes,
            mode,
        } = step
        {
            let data = format!("size={size_bytes},mode={:o}", mode & 0o7777);
            mnt(
                "guest.mounts",
                "tmpfs",
                target,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(&data),
            )?;
        }
    }
    Ok(())
}
