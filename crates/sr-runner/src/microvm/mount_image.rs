//! A policy mount on a QEMU microVM: an ext4 image of the host source directory, built at
//! start in the run directory and passed to QEMU as a descriptor (docs/microvm.md, "Mounts").
//!
//! The source is opened with `O_PATH | O_NOFOLLOW | O_DIRECTORY` and the path the kernel
//! reports for that descriptor must be the canonical source the policy named (as the process
//! sandbox checks its binds). `mkfs.ext4 -d /proc/self/fd/N` then copies the tree through that
//! descriptor, **as the workload's unprivileged host identity** (the VMM's): mke2fs copies
//! symlinks as symlinks (lstat, readlink), and should the tree change under it (a directory
//! swapped for a link to `/etc`), it can read only what that identity can read, which is what
//! the process sandbox's workload could read through a bind. The image file is made by the
//! runner (0600, owned by that identity) and handed to mkfs as a descriptor too.
//!
//! Images are built per run, in `<run dir>/mounts/` (root's, 0700), and removed with the run:
//! a cache shared between runs would have to trust images an earlier run left (and a writable
//! mount's source changes with every run). The report records each image's digest.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use command_fds::{CommandFdExt, FdMapping};
use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;
use sr_bundle::VmMount;

/// ext4's block size here.
const BLOCK: u64 = 4096;
/// Space mke2fs needs beyond the data (superblock copies, bitmaps, inode tables' slack).
const FS_OVERHEAD: u64 = 16 << 20;
/// Bytes each inode takes in the inode table.
const INODE_BYTES: u64 = 256;
/// The descriptors mkfs gets: the source tree and the image file.
const TREE_FD: i32 = 3;
const IMAGE_FD: i32 = 4;
/// mke2fs' timestamps (reproducible images of the same tree; 0 would mean "now").
const FAKE_TIME: u64 = 1;

/// How big an image must be for a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TreeSize {
    /// Bytes of data, each file rounded up to whole blocks (directories and long links a block).
    pub bytes: u64,
    /// Entries (files, directories, links, others).
    pub entries: u64,
}

/// The image's size in KiB and its inode count for `tree`, plus `headroom` bytes free.
pub fn image_plan(tree: TreeSize, headroom: u64) -> (u64, u64) {
    let inodes = (tree.entries + 64).max(128) + headroom / (64 << 10);
    let bytes = tree.bytes + tree.bytes / 10 + inodes * INODE_BYTES + FS_OVERHEAD + headroom;
    (bytes.div_ceil(BLOCK) * (BLOCK / 1024), inodes)
}

/// mkfs.ext4's arguments for an image of `size_kib` KiB with `inodes` inodes.
pub fn mkfs_args(size_kib: u64, inodes: u64) -> Vec<String> {
    [
        "-q",
        "-F",
        "-t",
        "ext4",
        "-b",
        &BLOCK.to_string(),
        "-m",
        "0",
        "-N",
        &inodes.to_string(),
        "-O",
        "^has_journal",
        "-L",
        "safe-run-mount",
        "-U",
        "00000000-0000-4000-8000-000000000000",
        "-E",
        "hash_seed=00000000-0000-4000-8000-000000000001,root_owner=0:0,lazy_itable_init=0,nodiscard",
        "-d",
        &format!("/proc/self/fd/{TREE_FD}"),
        &format!("/proc/self/fd/{IMAGE_FD}"),
        &format!("{size_kib}k"),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// Measures the tree under `dir` without following symlinks (an estimate: mkfs does the
/// copying, so a tree that changes meanwhile can only make the image too small, an error).
fn measure(dir: &Path, size: &mut TreeSize, depth: u32) -> std::io::Result<()> {
    if depth > 256 {
        return Err(std::io::Error::other(
            "the tree is more than 256 levels deep",
        ));
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let ft = entry.file_type()?;
        size.entries += 1;
        if ft.is_dir() {
            size.bytes += BLOCK;
            measure(&entry.path(), size, depth + 1)?;
        } else if ft.is_file() {
            let len = entry.metadata()?.len();
            size.bytes += len.div_ceil(BLOCK) * BLOCK;
        } else if ft.is_symlink() {
            size.bytes += BLOCK;
        }
    }
    Ok(())
}

/// A built image: the open file QEMU gets and its digest.
pub struct Image {
    /// The image, open read-write (QEMU opens it again through `/proc/self/fd/N`).
    pub file: File,
    /// `sha256:<hex>` of the image as built.
    pub digest: String,
    /// Where it is.
    pub path: PathBuf,
}

/// Builds the image of `m` in `dir` (root's, 0700); mkfs runs as `uid`/`gid`.
pub fn build(m: &VmMount, index: usize, dir: &Path, uid: u32, gid: u32) -> Result<Image, String> {
    let src = open(
        m.source.as_str(),
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("opening {} without following links: {e}", m.source))?;
    let seen = std::fs::read_link(format!("/proc/self/fd/{}", src.as_raw_fd()))
        .map_err(|e| format!("reading where {} is: {e}", m.source))?;
    if seen != Path::new(&m.source) {
        return Err(format!(
            "{} is now {}: it changed since the policy was validated",
            m.source,
            seen.display()
        ));
    }
    let mut size = TreeSize::default();
    measure(
        Path::new(&format!("/proc/self/fd/{}", src.as_raw_fd())),
        &mut size,
        0,
    )
    .map_err(|e| format!("measuring {}: {e}", m.source))?;
    let (size_kib, inodes) = image_plan(size, m.headroom_bytes);
    let path = dir.join(format!("{index}.ext4"));
    let _ = std::fs::remove_file(&path);
    let image = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(&path)
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    std::os::unix::fs::fchown(&image, Some(uid), Some(gid))
        .map_err(|e| format!("handing {} to uid {uid}: {e}", path.display()))?;
    let reopened = image
        .try_clone()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut cmd = Command::new("mkfs.ext4");
    cmd.args(mkfs_args(size_kib, inodes))
        .env_clear()
        .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
        .env("E2FSPROGS_FAKE_TIME", FAKE_TIME.to_string())
        .stdin(Stdio::null());
    std::os::unix::process::CommandExt::uid(&mut cmd, uid);
    std::os::unix::process::CommandExt::gid(&mut cmd, gid);
    cmd.fd_mappings(vec![
        FdMapping {
            parent_fd: src,
            child_fd: TREE_FD,
        },
        FdMapping {
            parent_fd: reopened.into(),
            child_fd: IMAGE_FD,
        },
    ])
    .map_err(|e| format!("passing descriptors to mkfs.ext4: {e}"))?;
    let out = cmd
        .output()
        .map_err(|e| format!("running mkfs.ext4 (e2fsprogs): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mkfs.ext4 -d {} failed ({}): {}",
            m.source,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let digest =
        super::host::sha256_of(&image).map_err(|e| format!("hashing {}: {e}", path.display()))?;
    Ok(Image {
        file: image,
        digest,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_holds_its_tree_and_a_writable_one_its_headroom() {
        let (kib, inodes) = image_plan(
            TreeSize {
                bytes: 10 << 20,
                entries: 100,
            },
            0,
        );
        assert!(kib * 1024 >= (10 << 20) + FS_OVERHEAD);
        assert_eq!(inodes, 164);
        let (rw_kib, rw_inodes) = image_plan(
            TreeSize {
                bytes: 10 << 20,
                entries: 100,
            },
            64 << 20,
        );
        assert!(rw_kib * 1024 >= kib * 1024 + (64 << 20));
        assert!(rw_inodes > inodes);
        assert_eq!(image_plan(TreeSize::default(), 0).1, 128);
    }

    #[test]
    fn mkfs_reads_the_tree_and_writes_the_image_through_descriptors() {
        let args = mkfs_args(1024, 128).join(" ");
        assert!(args.contains("-d /proc/self/fd/3 /proc/self/fd/4 1024k"));
        assert!(args.contains("-O ^has_journal"));
        assert!(args.contains("-N 128"));
    }
}
