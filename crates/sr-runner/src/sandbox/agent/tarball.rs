//! Directories as tar streams, for `putBegin`/`get` with `format: tar`. Like every file
//! operation they run in the per-request worker, as the workload's host uid/gid, only where
//! [`files::FileRoots`] allow; the `tar` crate reads and writes the format, and this module owns
//! where each entry may come from and go to.
//!
//! **Pack** (get) walks the directory by file descriptors, never by path: each entry is opened
//! relative to its parent's fd with `O_NOFOLLOW`, so a symlink is archived as a symlink (its
//! target text), never followed; a mount inside the directory is not crossed (its mount point is
//! archived as an empty directory); devices, fifos and sockets are left out. Entries are sorted
//! by name, owners are 0 (host uids are not the reader's business), and content is exactly the
//! size `fstat` gave at open (a file that shrinks while read is padded with zeros, one that grows
//! is cut), so the stream is always well formed.
//!
//! **Unpack** (put) first spools the whole stream into an unnamed `O_TMPFILE` inside the
//! destination and checks its digest against the one the host announces at `putEnd`: nothing is
//! unpacked from a stream that arrived damaged. Then each entry's name must be relative and plain
//! (no `..`, no absolute path, no NUL); its parent directories are opened one component at a
//! time with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV` (created when missing), so
//! a symlink, whether already in the destination or unpacked a moment earlier, is never
//! followed, and nothing lands outside the destination or on another mount. Files and symlinks
//! are created under a fresh temporary name and renamed over the entry's name (a link there is
//! replaced, not written through). Only regular files, directories and symlinks are unpacked;
//! a hard link, a device or a fifo is refused. Permission bits keep `0o777` (never set-id);
//! directories get their modes last, so a read-only directory in the stream still gets its
//! content. An unpack that fails midway leaves what it had unpacked so far (docs/sandbox.md).

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2, readlinkat, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, symlinkat, unlinkat};
use sr_agent_proto::message::ErrorCode;

use super::files::{self, FileError, FileRoots, MAX_FILE_BYTES, Moved};

/// The most entries a tar stream packs or unpacks.
pub const MAX_TAR_ENTRIES: usize = 100_000;

fn refuse(code: ErrorCode, message: String) -> FileError {
    FileError {
        code,
        errno: None,
        message,
    }
}

fn sys(what: &str, shown: &str) -> impl Fn(Errno) -> FileError {
    files::sys_error(what, shown)
}

fn kind_of(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

/// Writes a tar stream of directory `path` into `out`; returns the directory's mode.
pub fn pack(roots: &FileRoots, path: &str, out: &mut dyn Write) -> Result<u32, FileError> {
    let dir = files::open_dir(roots, path, OFlag::O_RDONLY)?;
    let st = fstat(&dir).map_err(sys("reading the metadata of", path))?;
    let mut packer = Packer {
        tar: tar::Builder::new(out),
        dev: st.st_dev,
        entries: 0,
        bytes: 0,
        shown: path,
    };
    packer.walk(&dir, Path::new(""))?;
    packer
        .tar
        .finish()
        .map_err(|e| files::io_error("sending the tar stream of", path, &e))?;
    Ok(st.st_mode & 0o7777)
}

struct Packer<'a, W: Write> {
    tar: tar::Builder<W>,
    dev: u64,
    entries: usize,
    bytes: u64,
    shown: &'a str,
}

impl<W: Write> Packer<'_, W> {
    fn walk(&mut self, dir: &OwnedFd, rel: &Path) -> Result<(), FileError> {
        for name in files::names_in(dir, self.shown)? {
            let Ok(st) = fstatat(dir, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
                continue; // removed while packing
            };
            let entry = rel.join(&name);
            match kind_of(&st) {
                SFlag::S_IFDIR => {
                    self.header(&entry, &st, tar::EntryType::Directory, 0, None)?;
                    if st.st_dev != self.dev {
                        continue; // a mount point: not crossed
                    }
                    let sub = openat(
                        dir,
                        name.as_str(),
                        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(sys("packing", self.shown))?;
                    self.walk(&sub, &entry)?;
                }
                SFlag::S_IFREG => {
                    let fd = openat(
                        dir,
                        name.as_str(),
                        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(sys("packing", self.shown))?;
                    let st = fstat(&fd).map_err(sys("packing", self.shown))?;
                    if kind_of(&st) != SFlag::S_IFREG {
                        continue; // replaced while packing
                    }
                    let size = u64::try_from(st.st_size).unwrap_or(0);
                    self.bytes = self.bytes.saturating_add(size);
                    if self.bytes > MAX_FILE_BYTES {
                        return Err(refuse(
                            ErrorCode::TooLarge,
                            format!(
                                "{} holds more than a tar stream moves ({MAX_FILE_BYTES} bytes)",
                                self.shown
                            ),
                        ));
                    }
                    let content = ExactSize::new(File::from(fd), size);
                    self.header(&entry, &st, tar::EntryType::Regular, size, Some(content))?;
                }
                SFlag::S_IFLNK => {
                    let target =
                        readlinkat(dir, name.as_str()).map_err(sys("packing", self.shown))?;
                    self.count()?;
                    let mut h = header(&st, tar::EntryType::Symlink, 0);
                    self.tar
                        .append_link(&mut h, &entry, Path::new(&target))
                        .map_err(|e| files::io_error("packing", self.shown, &e))?;
                }
                _ => {} // devices, fifos, sockets: not content
            }
        }
        Ok(())
    }

    fn count(&mut self) -> Result<(), FileError> {
        self.entries += 1;
        if self.entries > MAX_TAR_ENTRIES {
            return Err(refuse(
                ErrorCode::TooLarge,
                format!("{} has more than {MAX_TAR_ENTRIES} entries", self.shown),
            ));
        }
        Ok(())
    }

    fn header(
        &mut self,
        entry: &Path,
        st: &FileStat,
        kind: tar::EntryType,
        size: u64,
        content: Option<ExactSize<File>>,
    ) -> Result<(), FileError> {
        self.count()?;
        let mut h = header(st, kind, size);
        let r = match content {
            Some(c) => self.tar.append_data(&mut h, entry, c),
            None => self.tar.append_data(&mut h, entry, std::io::empty()),
        };
        r.map_err(|e| files::io_error("packing", self.shown, &e))
    }
}

fn header(st: &FileStat, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(st.st_mode & 0o7777);
    h.set_mtime(u64::try_from(st.st_mtime).unwrap_or(0));
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// Exactly `size` bytes of `inner`: cut when it grew, zeros after its end when it shrank.
struct ExactSize<R> {
    inner: std::io::Take<R>,
    left: u64,
}

impl<R: Read> ExactSize<R> {
    fn new(inner: R, size: u64) -> Self {
        ExactSize {
            inner: inner.take(size),
            left: size,
        }
    }
}

impl<R: Read> Read for ExactSize<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = match self.inner.read(&mut buf[..want])? {
            0 => {
                buf[..want].fill(0);
                want
            }
            n => n,
        };
        self.left -= n as u64;
        Ok(n)
    }
}

/// Receives a tar stream of exactly `size` bytes from `content` and, when its digest is the one
/// `expected` gives at the end, unpacks it into directory `path` (created with `mode` when
/// missing).
pub fn put(
    roots: &FileRoots,
    path: &str,
    mode: u32,
    size: u64,
    content: &mut dyn Read,
    expected: &mut dyn FnMut() -> Option<String>,
) -> Result<Moved, FileError> {
    if size > MAX_FILE_BYTES {
        return Err(refuse(
            ErrorCode::TooLarge,
            format!("{size} bytes is more than a tar stream moves ({MAX_FILE_BYTES})"),
        ));
    }
    let dest = files::dir_for_put(roots, path, mode)?;
    let spool = openat(
        &dest,
        ".",
        OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(sys("making room for the tar stream in", path))?;
    let mut spool = File::from(spool);
    let (n, sha256) = files::receive(content, &mut spool, size, path)?;
    files::check_digest(path, &sha256, expected)?;
    spool
        .rewind()
        .map_err(|e| files::io_error("reading back the tar stream for", path, &e))?;
    unpack(&dest, &mut spool, path)?;
    Ok(Moved {
        size: n,
        sha256,
        mode: mode & 0o7777,
    })
}

/// The name of a tar entry as components to create, or why it is refused.
pub(crate) fn entry_components(raw: &[u8], shown: &str) -> Result<Vec<String>, FileError> {
    let bad = |why: &str| {
        refuse(
            ErrorCode::Invalid,
            format!(
                "{shown}: the tar entry {:?} {why}",
                String::from_utf8_lossy(raw)
            ),
        )
    };
    if raw.contains(&0) {
        return Err(bad("contains a NUL byte"));
    }
    let text = std::str::from_utf8(raw).map_err(|_| bad("is not UTF-8"))?;
    if text.len() > 4096 {
        return Err(bad("is longer than 4096 bytes"));
    }
    let mut out = Vec::new();
    for c in Path::new(text).components() {
        match c {
            Component::Normal(n) => out.push(n.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => return Err(bad("climbs out with ..")),
            Component::RootDir | Component::Prefix(_) => return Err(bad("is absolute")),
        }
    }
    Ok(out)
}

fn beneath_no_links() -> OpenHow {
    OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        )
}

/// Opens (creating when missing) directory `name` in `dir`, never through a symlink.
fn subdir(dir: &OwnedFd, name: &str, shown: &str) -> Result<OwnedFd, FileError> {
    match openat2(dir, name, beneath_no_links()) {
        Err(Errno::ENOENT) => {
            match mkdirat(dir, name, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(sys("creating a directory in", shown)(e)),
            }
            openat2(dir, name, beneath_no_links()).map_err(sys("unpacking into", shown))
        }
        r => r.map_err(sys("unpacking into", shown)),
    }
}

pub(crate) fn unpack(dest: &OwnedFd, stream: &mut File, shown: &str) -> Result<(), FileError> {
    let mut archive = tar::Archive::new(stream);
    let entries = archive.entries().map_err(|e| tar_error(shown, &e))?;
    let mut dir_modes: Vec<(Vec<String>, u32)> = Vec::new();
    let mut count = 0usize;
    let mut bytes = 0u64;
    for (n, entry) in entries.enumerate() {
        let mut entry = entry.map_err(|e| tar_error(shown, &e))?;
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            continue;
        }
        count += 1;
        if count > MAX_TAR_ENTRIES {
            return Err(refuse(
                ErrorCode::TooLarge,
                format!("{shown}: the tar stream has more than {MAX_TAR_ENTRIES} entries"),
            ));
        }
        let names = entry_components(&entry.path_bytes(), shown)?;
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        let Some((last, parents)) = names.split_last() else {
            // `.` itself: the destination's own mode.
            if kind == tar::EntryType::Directory {
                dir_modes.push((Vec::new(), mode));
            }
            continue;
        };
        let mut parent = dest
            .try_clone()
            .map_err(|e| files::io_error("unpacking into", shown, &e))?;
        for p in parents {
            parent = subdir(&parent, p, shown)?;
        }
        let tmp = format!(".safe-run-tar-{n}");
        match kind {
            tar::EntryType::Directory => {
                drop(subdir(&parent, last, shown)?);
                dir_modes.push((names.clone(), mode));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                bytes = bytes.saturating_add(entry.size());
                if bytes > MAX_FILE_BYTES {
                    return Err(refuse(
                        ErrorCode::TooLarge,
                        format!(
                            "{shown}: the tar stream unpacks to more than {MAX_FILE_BYTES} bytes"
                        ),
                    ));
                }
                let fd = openat(
                    &parent,
                    tmp.as_str(),
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(mode),
                )
                .map_err(sys("unpacking a file into", shown))?;
                let mut file = File::from(fd);
                let copied = std::io::copy(&mut entry, &mut file)
                    .map_err(|e| files::io_error("unpacking a file into", shown, &e));
                // The umask may have taken bits the stream asked for.
                let chmod = fchmod(&file, Mode::from_bits_truncate(mode))
                    .map_err(sys("unpacking a file into", shown));
                drop(file);
                place(&parent, &tmp, last, copied.and(chmod).map(|_| ()), shown)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let target = std::ffi::OsStr::from_bytes(&target);
                let made = symlinkat(target, &parent, tmp.as_str())
                    .map_err(sys("unpacking a symlink into", shown));
                place(&parent, &tmp, last, made, shown)?;
            }
            other => {
                return Err(refuse(
                    ErrorCode::Unsupported,
                    format!(
                        "{shown}: the tar entry {} is a {other:?}; only files, directories and symlinks are unpacked",
                        names.join("/")
                    ),
                ));
            }
        }
    }
    // Deepest first, so a directory made read-only does not stop its parent's change.
    dir_modes.sort_by_key(|d| std::cmp::Reverse(d.0.len()));
    for (names, mode) in dir_modes {
        let mut d = dest
            .try_clone()
            .map_err(|e| files::io_error("unpacking into", shown, &e))?;
        for p in &names {
            d = subdir(&d, p, shown)?;
        }
        let opened = openat(
            &d,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(sys("setting the mode of a directory in", shown))?;
        fchmod(&opened, Mode::from_bits_truncate(mode))
            .map_err(sys("setting the mode of a directory in", shown))?;
    }
    Ok(())
}

/// Renames the temporary `tmp` over `name` when `made` succeeded; removes it otherwise.
fn place(
    parent: &OwnedFd,
    tmp: &str,
    name: &str,
    made: Result<(), FileError>,
    shown: &str,
) -> Result<(), FileError> {
    let done = made
        .and_then(|()| renameat(parent, tmp, parent, name).map_err(sys("unpacking into", shown)));
    if done.is_err() {
        let _ = unlinkat(parent, tmp, UnlinkatFlags::NoRemoveDir);
    }
    done
}

fn tar_error(shown: &str, e: &std::io::Error) -> FileError {
    match e.raw_os_error() {
        Some(_) => files::io_error("unpacking into", shown, e),
        None => refuse(
            ErrorCode::Invalid,
            format!("{shown}: not a well-formed tar stream: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_are_plain_and_relative() {
        assert_eq!(entry_components(b"a/b/c", "/d").unwrap(), ["a", "b", "c"]);
        assert_eq!(entry_components(b"./a/./b/", "/d").unwrap(), ["a", "b"]);
        assert!(entry_components(b".", "/d").unwrap().is_empty());
        for bad in [&b"../x"[..], b"a/../../x", b"/etc/passwd", b"a\0b", b"\xff"] {
            assert!(entry_components(bad, "/d").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn exact_size_pads_a_short_file_and_cuts_a_long_one() {
        let mut out = Vec::new();
        ExactSize::new(&b"abc"[..], 5)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"abc\0\0");
        out.clear();
        ExactSize::new(&b"abcdef"[..], 2)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"ab");
    }
}
