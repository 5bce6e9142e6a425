//! File operations inside the sandbox, for the agent's `putBegin`, `get`, `list`, `stat` and
//! `remove`. They run in a worker process pid 1 forks per request, which first takes the
//! workload's host uid/gid (so file permissions apply as they do to the workload, and what a put
//! creates belongs to it), and only where the policy's mounts and tmpfs are ([`FileRoots`]):
//! never the read-only root, /proc or /dev.
//!
//! Resolution never leaves the root a path falls under: the root is opened, the rest is
//! resolved with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)`, so a
//! symlink planted inside that points out (absolute, or `..` past the root), a magic link in
//! /proc, or a mount crossed on the way is refused by the kernel itself (`outsideRoot`), with no
//! window between a check and a use. The last component of a put is a fresh temporary file
//! (`O_CREAT|O_EXCL|O_NOFOLLOW`) renamed over the name, so a link there is replaced, not
//! followed; remove unlinks through the parent's fd.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2, readlinkat, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use nix::unistd::UnlinkatFlags;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sr_agent_proto::message::{DirEntry, ErrorCode, FileInfo, FileKind};
use sr_bundle::MountStep;

/// The largest file a put or get moves.
pub const MAX_FILE_BYTES: u64 = 1 << 30;
/// The most entries a listing returns.
pub const MAX_LIST_ENTRIES: usize = 10_000;

/// Where transfers may go: the policy's bind and tmpfs targets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileRoots(Vec<(PathBuf, bool)>);

impl FileRoots {
    /// The roots of a sandbox plan: every policy bind (writable unless read-only) and tmpfs.
    pub fn from_plan(mounts: &[MountStep]) -> Self {
        let mut roots: Vec<(PathBuf, bool)> = mounts
            .iter()
            .filter_map(|m| match m {
                MountStep::Bind {
                    target,
                    read_only,
                    origin,
                    ..
                } if origin == "policy" => Some((PathBuf::from(target), !read_only)),
                MountStep::Tmpfs { target, .. } => Some((PathBuf::from(target), true)),
                _ => None,
            })
            .collect();
        roots.sort();
        FileRoots(roots)
    }

    /// The root `path` falls under (the deepest one) and the rest of it, relative.
    fn locate(&self, path: &str) -> Result<(&Path, bool, PathBuf), FileError> {
        let clean = normalize(path)?;
        self.0
            .iter()
            .filter(|(root, _)| clean.starts_with(root))
            .max_by_key(|(root, _)| root.components().count())
            .map(|(root, writable)| {
                let rest = clean
                    .strip_prefix(root)
                    .map(Path::to_path_buf)
                    .unwrap_or_default();
                (root.as_path(), *writable, rest)
            })
            .ok_or_else(|| FileError {
                code: ErrorCode::OutsideRoot,
                errno: None,
                message: format!(
                    "{path} is not under a mount or tmpfs of the policy ({})",
                    self.0
                        .iter()
                        .map(|(r, _)| r.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    }
}

/// An absolute path without `.`, `..`, empty components or NUL.
fn normalize(path: &str) -> Result<PathBuf, FileError> {
    let bad = |why: &str| FileError {
        code: ErrorCode::Invalid,
        errno: None,
        message: format!("{path:?}: {why}"),
    };
    if !path.starts_with('/') {
        return Err(bad("the path must be absolute"));
    }
    if path.contains('\0') {
        return Err(bad("the path contains a NUL byte"));
    }
    if path.len() > 4096 {
        return Err(bad("the path is longer than 4096 bytes"));
    }
    // Checked on the text: `Path::components` would quietly drop `.` and empty segments.
    let mut out = PathBuf::from("/");
    for seg in path[1..].split('/') {
        match seg {
            "" if path.len() == 1 => {}
            "" | "." | ".." => return Err(bad("the path must be normalized (no ., .. or //)")),
            name => out.push(name),
        }
    }
    Ok(out)
}

/// Why an operation failed, as the agent answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileError {
    /// The protocol's code.
    pub code: ErrorCode,
    /// errno of the failed call, when there was one.
    pub errno: Option<i32>,
    /// What failed.
    pub message: String,
}

impl FileError {
    /// A failure of the agent itself, not of the request.
    pub fn internal(message: impl Into<String>) -> Self {
        FileError {
            code: ErrorCode::Internal,
            errno: None,
            message: message.into(),
        }
    }

    /// A tar stream asked of something that is not a directory.
    pub fn not_a_directory(path: &str) -> Self {
        FileError {
            code: ErrorCode::Invalid,
            errno: None,
            message: format!("{path} is not a directory (a tar stream is of a directory)"),
        }
    }

    /// A failed system call of the agent's own (pipes, fork, identity).
    pub fn internal_sys(what: &str, e: Errno) -> Self {
        FileError {
            code: ErrorCode::Internal,
            errno: Some(e as i32),
            message: format!("{what}: {}", e.desc()),
        }
    }

    /// A failed I/O call of the agent's own.
    pub fn internal_io(what: impl std::fmt::Display, e: &std::io::Error) -> Self {
        FileError {
            code: ErrorCode::Internal,
            errno: e.raw_os_error(),
            message: format!("{what}: {e}"),
        }
    }
}

/// Maps a failed call on `path` to the protocol's code and a message naming it.
pub(super) fn sys_error(what: &str, path: &str) -> impl Fn(Errno) -> FileError {
    let what = what.to_owned();
    let path = path.to_owned();
    move |e| FileError {
        code: match e {
            Errno::ENOENT | Errno::ENOTDIR => ErrorCode::NotFound,
            Errno::EACCES | Errno::EPERM | Errno::EROFS => ErrorCode::PermissionDenied,
            // RESOLVE_BENEATH / NO_XDEV / NO_MAGICLINKS refusals.
            Errno::EXDEV | Errno::ELOOP => ErrorCode::OutsideRoot,
            Errno::EFBIG | Errno::ENOSPC | Errno::EDQUOT => ErrorCode::TooLarge,
            Errno::EISDIR | Errno::ENOTEMPTY | Errno::EEXIST => ErrorCode::Invalid,
            _ => ErrorCode::Internal,
        },
        errno: Some(e as i32),
        message: match e {
            Errno::EXDEV | Errno::ELOOP => format!(
                "{what} {path}: it resolves outside the mount it lies in (a symlink that points out, or a mount on the way)"
            ),
            _ => format!("{what} {path}: {}", e.desc()),
        },
    }
}

fn how(flags: OFlag) -> OpenHow {
    // openat2 refuses flags O_PATH does not take (O_NOCTTY among them) with EINVAL.
    let extra = if flags.contains(OFlag::O_PATH) {
        OFlag::O_CLOEXEC
    } else {
        OFlag::O_CLOEXEC | OFlag::O_NOCTTY
    };
    OpenHow::new().flags(flags | extra).resolve(
        ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_MAGICLINKS
            | ResolveFlag::RESOLVE_NO_XDEV,
    )
}

/// Opens `rest` beneath `root` with `flags` (`rest` empty: the root itself).
fn open_beneath(root: &Path, rest: &Path, flags: OFlag, shown: &str) -> Result<OwnedFd, FileError> {
    let root_fd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys_error("opening the mount of", shown))?;
    let rel: &Path = if rest.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rest
    };
    openat2(&root_fd, rel, how(flags)).map_err(sys_error("opening", shown))
}

/// The parent directory's fd and the last component, for a path that names an entry.
fn parent_of(roots: &FileRoots, path: &str, write: bool) -> Result<(OwnedFd, String), FileError> {
    let (root, writable, rest) = roots.locate(path)?;
    if write && !writable {
        return Err(FileError {
            code: ErrorCode::PermissionDenied,
            errno: None,
            message: format!("{path} lies on a read-only mount of the policy"),
        });
    }
    let name = rest
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .ok_or_else(|| FileError {
            code: ErrorCode::Invalid,
            errno: None,
            message: format!("{path} is the mount point itself, not an entry in it"),
        })?;
    let parent = rest.parent().unwrap_or(Path::new(""));
    let fd = open_beneath(root, parent, OFlag::O_PATH | OFlag::O_DIRECTORY, path)?;
    Ok((fd, name))
}

/// What a transfer moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moved {
    /// Bytes.
    pub size: u64,
    /// `sha256:<hex>`.
    pub sha256: String,
    /// The file's mode (a get).
    pub mode: u32,
}

fn digest(h: Sha256) -> String {
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Writes `content` (exactly `size` bytes) to `path` with `mode`.
/// `expected` gives the digest the host announced once the content has ended: the file is
/// renamed into place only when it matches.
pub fn put(
    roots: &FileRoots,
    path: &str,
    mode: u32,
    size: u64,
    content: &mut dyn Read,
    expected: &mut dyn FnMut() -> Option<String>,
    tmp_name: &str,
) -> Result<Moved, FileError> {
    if size > MAX_FILE_BYTES {
        return Err(FileError {
            code: ErrorCode::TooLarge,
            errno: None,
            message: format!("{size} bytes is more than a put takes ({MAX_FILE_BYTES})"),
        });
    }
    let (dir, name) = parent_of(roots, path, true)?;
    let tmp = nix::fcntl::openat(
        &dir,
        tmp_name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode & 0o777),
    )
    .map_err(sys_error("creating a temporary file beside", path))?;
    let mut file = std::fs::File::from(tmp);
    let done = receive(content, &mut file, size, path).and_then(|(n, sha256)| {
        check_digest(path, &sha256, expected)?;
        Ok((n, sha256))
    });
    let done = done.and_then(|moved| {
        renameat(&dir, tmp_name, &dir, name.as_str())
            .map_err(sys_error("renaming into", path))
            .map(|()| moved)
    });
    match done {
        Ok((size, sha256)) => Ok(Moved {
            size,
            sha256,
            mode: mode & 0o7777,
        }),
        Err(e) => {
            let _ = nix::unistd::unlinkat(&dir, tmp_name, UnlinkatFlags::NoRemoveDir);
            Err(e)
        }
    }
}

/// Copies exactly `size` bytes from `content` into `to`; returns their count and digest.
pub(super) fn receive(
    content: &mut dyn Read,
    to: &mut std::fs::File,
    size: u64,
    path: &str,
) -> Result<(u64, String), FileError> {
    let mut h = Sha256::new();
    let mut n = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let r = match content.read(&mut buf) {
            Ok(0) => break,
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error("receiving", path, &e)),
        };
        n += r as u64;
        if n > size {
            return Err(FileError {
                code: ErrorCode::Invalid,
                errno: None,
                message: format!("more bytes than the {size} announced for {path}"),
            });
        }
        h.update(&buf[..r]);
        to.write_all(&buf[..r])
            .map_err(|e| io_error("writing", path, &e))?;
    }
    if n != size {
        return Err(FileError {
            code: ErrorCode::Invalid,
            errno: None,
            message: format!("{n} bytes arrived for {path}, {size} were announced"),
        });
    }
    Ok((n, digest(h)))
}

/// Whether the digest the host announced (`expected`, asked once the content has ended) is
/// `sha256`, the content's.
pub(super) fn check_digest(
    path: &str,
    sha256: &str,
    expected: &mut dyn FnMut() -> Option<String>,
) -> Result<(), FileError> {
    let want = expected();
    if want.as_deref() == Some(sha256) {
        return Ok(());
    }
    Err(FileError {
        code: ErrorCode::DigestMismatch,
        errno: None,
        message: format!(
            "{path}: the content's digest {sha256} is not the announced {}",
            want.unwrap_or_else(|| "(none)".into())
        ),
    })
}

/// Opens directory `path` (a root or an entry under one) with `flags`.
pub(super) fn open_dir(roots: &FileRoots, path: &str, flags: OFlag) -> Result<OwnedFd, FileError> {
    let (root, _, rest) = roots.locate(path)?;
    open_beneath(root, &rest, flags | OFlag::O_DIRECTORY, path)
}

/// Directory `path` to unpack into, created with `mode` when missing; it must be writable.
pub(super) fn dir_for_put(roots: &FileRoots, path: &str, mode: u32) -> Result<OwnedFd, FileError> {
    let (_, writable, rest) = roots.locate(path)?;
    if !writable {
        return Err(FileError {
            code: ErrorCode::PermissionDenied,
            errno: None,
            message: format!("{path} lies on a read-only mount of the policy"),
        });
    }
    if !rest.as_os_str().is_empty() {
        let (parent, name) = parent_of(roots, path, true)?;
        match nix::sys::stat::mkdirat(
            &parent,
            name.as_str(),
            Mode::from_bits_truncate(mode & 0o777),
        ) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(sys_error("creating", path)(e)),
        }
    }
    open_dir(roots, path, OFlag::O_RDONLY)
}

/// The names in `dir` (not `.` and `..`), sorted.
pub(super) fn names_in(dir: &OwnedFd, shown: &str) -> Result<Vec<String>, FileError> {
    let dup = dir
        .try_clone()
        .map_err(|e| io_error("listing", shown, &e))?;
    let mut d = nix::dir::Dir::from_fd(dup).map_err(sys_error("listing", shown))?;
    let mut names: Vec<String> = d
        .iter()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "." && n != "..")
        .collect();
    names.sort();
    Ok(names)
}

/// [`sys_error`] for an I/O error.
pub(super) fn io_error(what: &str, path: &str, e: &std::io::Error) -> FileError {
    match e.raw_os_error() {
        Some(n) => sys_error(what, path)(Errno::from_raw(n)),
        None => FileError::internal(format!("{what} {path}: {e}")),
    }
}

/// Opens a regular file `path` for a get; returns it with its size and mode.
pub fn open_for_get(roots: &FileRoots, path: &str) -> Result<(std::fs::File, u64, u32), FileError> {
    let (root, _, rest) = roots.locate(path)?;
    let fd = open_beneath(root, &rest, OFlag::O_RDONLY | OFlag::O_NOFOLLOW, path)?;
    let st = fstat(&fd).map_err(sys_error("reading the metadata of", path))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(FileError {
            code: ErrorCode::Invalid,
            errno: None,
            message: format!("{path} is not a regular file"),
        });
    }
    let size = u64::try_from(st.st_size).unwrap_or(0);
    if size > MAX_FILE_BYTES {
        return Err(FileError {
            code: ErrorCode::TooLarge,
            errno: None,
            message: format!("{path} is {size} bytes, more than a get moves ({MAX_FILE_BYTES})"),
        });
    }
    Ok((std::fs::File::from(fd), size, st.st_mode & 0o7777))
}

fn info_of(st: &FileStat, link: Option<String>) -> FileInfo {
    let kind = match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFREG => FileKind::File,
        SFlag::S_IFDIR => FileKind::Dir,
        SFlag::S_IFLNK => FileKind::Symlink,
        _ => FileKind::Other,
    };
    FileInfo {
        link_target: if kind == FileKind::Symlink {
            Some(link.unwrap_or_default())
        } else {
            None
        },
        kind,
        size: u64::try_from(st.st_size).unwrap_or(0),
        mode: st.st_mode & 0o7777,
        mtime_sec: st.st_mtime,
        mtime_nsec: u32::try_from(st.st_mtime_nsec)
            .unwrap_or(0)
            .min(999_999_999),
    }
}

fn link_text<Fd: AsFd>(dir: Fd, name: &str) -> Option<String> {
    readlinkat(dir, name)
        .ok()
        .map(|t| t.to_string_lossy().chars().take(4096).collect())
}

/// The metadata of `path` itself (a symlink is described, not followed).
pub fn stat(roots: &FileRoots, path: &str) -> Result<FileInfo, FileError> {
    let (root, _, rest) = roots.locate(path)?;
    if rest.as_os_str().is_empty() {
        let fd = open_beneath(root, &rest, OFlag::O_PATH | OFlag::O_DIRECTORY, path)?;
        let st = fstat(&fd).map_err(sys_error("reading the metadata of", path))?;
        return Ok(info_of(&st, None));
    }
    let (dir, name) = parent_of(roots, path, false)?;
    let st = fstatat(
        &dir,
        name.as_str(),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(sys_error("reading the metadata of", path))?;
    Ok(info_of(&st, link_text(&dir, &name)))
}

/// The entries of directory `path`, sorted by name (at most [`MAX_LIST_ENTRIES`]).
pub fn list(roots: &FileRoots, path: &str) -> Result<Vec<DirEntry>, FileError> {
    let (root, _, rest) = roots.locate(path)?;
    let fd = open_beneath(root, &rest, OFlag::O_RDONLY | OFlag::O_DIRECTORY, path)?;
    let dup = fd.try_clone().map_err(|e| io_error("listing", path, &e))?;
    let mut dir = nix::dir::Dir::from_fd(dup).map_err(sys_error("listing", path))?;
    let mut out = Vec::new();
    for entry in dir.iter() {
        let entry = entry.map_err(sys_error("listing", path))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "." || name == ".." {
            continue;
        }
        if out.len() >= MAX_LIST_ENTRIES {
            return Err(FileError {
                code: ErrorCode::TooLarge,
                errno: None,
                message: format!("{path} has more than {MAX_LIST_ENTRIES} entries"),
            });
        }
        let Ok(st) = fstatat(&fd, name.as_str(), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) else {
            continue; // removed while listing
        };
        let info = info_of(&st, link_text(&fd, &name));
        out.push(DirEntry { name, info });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Removes `path` (a directory only when empty, unless `recursive`).
pub fn remove(roots: &FileRoots, path: &str, recursive: bool) -> Result<(), FileError> {
    let (dir, name) = parent_of(roots, path, true)?;
    remove_at(&dir, &name, recursive, path)
}

fn remove_at(dir: &OwnedFd, name: &str, recursive: bool, shown: &str) -> Result<(), FileError> {
    let st = fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(sys_error("removing", shown))?;
    let is_dir = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
    if !is_dir {
        return nix::unistd::unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)
            .map_err(sys_error("removing", shown));
    }
    if recursive {
        let sub = nix::fcntl::openat(
            dir,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(sys_error("removing", shown))?;
        for n in names_in(&sub, shown)? {
            remove_at(&sub, &n, true, shown)?;
        }
    }
    nix::unistd::unlinkat(dir, name, UnlinkatFlags::RemoveDir).map_err(sys_error("removing", shown))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots() -> FileRoots {
        FileRoots(vec![
            (PathBuf::from("/in"), false),
            (PathBuf::from("/tmp"), true),
            (PathBuf::from("/tmp/deep"), false),
        ])
    }

    #[test]
    fn paths_are_located_under_the_deepest_root() {
        let r = roots();
        assert_eq!(
            r.locate("/tmp/a/b").unwrap(),
            (Path::new("/tmp"), true, PathBuf::from("a/b"))
        );
        assert_eq!(r.locate("/tmp/deep/x").unwrap().0, Path::new("/tmp/deep"));
        assert_eq!(r.locate("/tmp").unwrap().2, PathBuf::new());
        // A sibling that shares a prefix is not under the root.
        assert_eq!(
            r.locate("/tmpx/a").unwrap_err().code,
            ErrorCode::OutsideRoot
        );
        for bad in ["/etc/passwd", "/", "/proc/1/root"] {
            assert_eq!(
                r.locate(bad).unwrap_err().code,
                ErrorCode::OutsideRoot,
                "{bad}"
            );
        }
        for bad in [
            "tmp/a",
            "/tmp/../etc",
            "/tmp/./a",
            "/tmp//a",
            "/tmp/a/",
            "/tmp/a\0b",
        ] {
            assert_eq!(r.locate(bad).unwrap_err().code, ErrorCode::Invalid, "{bad}");
        }
    }

    proptest::proptest! {
        /// Whatever the input, a located path is under its root and never escapes it.
        #[test]
        fn located_paths_stay_under_their_root(s in "(/[a-z.]{0,3}){0,5}") {
            if let Ok((root, _, rest)) = roots().locate(&s) {
                proptest::prop_assert!(root.join(&rest).starts_with(root));
                proptest::prop_assert!(rest.components().all(|c| matches!(c, std::path::Component::Normal(_))));
            }
        }
    }
}
