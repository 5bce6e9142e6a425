//! A writable mount's changes, back from the guest: the agent's `get` of the target as a tar
//! stream (symlinks as symlinks, devices and fifos left out), applied to the host directory
//! strictly beneath it, as a **mirror**: what the guest removed is removed on the host.
//!
//! 1. The host directory is opened with `O_NOFOLLOW` and must still be the canonical source.
//! 2. Each tar entry's name must be relative and plain (no `..`, no absolute path, no NUL:
//!    [`tarball::entry_components`]); the stream's kinds are read first.
//! 3. The host tree is walked by descriptors (`O_NOFOLLOW`, never crossing a mount): every
//!    regular file, symlink or directory the stream does not have, or has as another kind, is
//!    removed (a directory with its content). Devices, fifos and sockets on the host are left
//!    alone (the stream never carries them).
//! 4. The stream is unpacked by the sandbox's own code ([`tarball::unpack`]): parents opened
//!    with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV`, files and links created
//!    under a temporary name and renamed over the entry, only files, directories and symlinks.
//!    So a symlink the guest planted (`link -> /etc/passwd`) arrives as a symlink and is never
//!    written through, and nothing lands outside the directory.
//! 5. Every entry is given to the workload's host identity (`fchownat` with
//!    `AT_SYMLINK_NOFOLLOW` from its parent's descriptor), as a bind mount's writes are.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::dir::{Dir, Type};
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, open, openat, openat2};
use nix::sys::stat::{Mode, fstat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, unlinkat};

use crate::sandbox::agent::tarball;

/// What an entry is, as far as the mirror cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Link,
}

/// The entries of a tar stream by relative path (`a/b`), refusing unsafe names and kinds.
pub fn stream_kinds(stream: &mut File) -> Result<BTreeMap<String, Kind>, String> {
    stream.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    let mut archive = tar::Archive::new(&mut *stream);
    let mut out = BTreeMap::new();
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        let kind = match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Symlink => Kind::Link,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
            other => return Err(format!("the stream has an entry of kind {other:?}")),
        };
        let names =
            tarball::entry_components(&entry.path_bytes(), "the mount").map_err(|e| e.message)?;
        if !names.is_empty() {
            out.insert(names.join("/"), kind);
        }
    }
    stream.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    Ok(out)
}

fn kind_of(t: Option<Type>) -> Option<Kind> {
    match t {
        Some(Type::File) => Some(Kind::File),
        Some(Type::Directory) => Some(Kind::Dir),
        Some(Type::Symlink) => Some(Kind::Link),
        _ => None,
    }
}

fn open_subdir(parent: &OwnedFd, name: &str) -> nix::Result<OwnedFd> {
    openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

fn entries(dir: &OwnedFd) -> nix::Result<Vec<(String, Option<Kind>)>> {
    let fd = dir.try_clone().map_err(|_| nix::errno::Errno::EBADF)?;
    let mut d = Dir::from_fd(fd)?;
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "." || name == ".." {
            continue;
        }
        out.push((name, kind_of(e.file_type())));
    }
    Ok(out)
}

/// Removes `name` in `parent` (a directory with its content, on the same device only).
fn remove(parent: &OwnedFd, name: &str, kind: Kind, dev: u64) -> Result<(), String> {
    let err = |e: nix::errno::Errno| format!("removing {name}: {e}");
    if kind == Kind::Dir {
        let sub = open_subdir(parent, name).map_err(err)?;
        if fstat(&sub).map_err(err)?.st_dev != dev {
            return Ok(()); // a mount point: never reach into another file system
        }
        for (child, k) in entries(&sub).map_err(err)? {
            if let Some(k) = k {
                remove(&sub, &child, k, dev)?;
            }
        }
        unlinkat(parent, name, UnlinkatFlags::RemoveDir).map_err(err)
    } else {
        unlinkat(parent, name, UnlinkatFlags::NoRemoveDir).map_err(err)
    }
}

/// Removes what the stream does not have (or has as another kind) beneath `dir`.
fn prune(
    dir: &OwnedFd,
    prefix: &str,
    keep: &BTreeMap<String, Kind>,
    dev: u64,
    removed: &mut Vec<String>,
) -> Result<(), String> {
    let listed = entries(dir).map_err(|e| format!("listing {prefix:?}: {e}"))?;
    for (name, kind) in listed {
        let Some(kind) = kind else { continue };
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        match keep.get(&rel) {
            Some(k) if *k == kind => {
                if kind == Kind::Dir {
                    let sub = open_subdir(dir, &name).map_err(|e| format!("{rel}: {e}"))?;
                    if fstat(&sub).map_err(|e| format!("{rel}: {e}"))?.st_dev == dev {
                        prune(&sub, &rel, keep, dev, removed)?;
                    }
                }
            }
            _ => {
                remove(dir, &name, kind, dev)?;
                removed.push(rel);
            }
        }
    }
    Ok(())
}

/// What a sync did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Synced {
    /// Entries the stream carried (written on the host).
    pub entries: usize,
    /// Host entries removed because the guest had removed them.
    pub removed: Vec<String>,
}

/// Mirrors the tar stream `stream` (the guest's view of the mount) into host directory
/// `source`, then gives every entry to `uid:gid`.
pub fn sync_back(source: &str, stream: &mut File, uid: u32, gid: u32) -> Result<Synced, String> {
    let root = open(
        source,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("opening {source} without following links: {e}"))?;
    let seen = std::fs::read_link(format!("/proc/self/fd/{}", root.as_raw_fd()))
        .map_err(|e| format!("reading where {source} is: {e}"))?;
    if seen != Path::new(source) {
        return Err(format!("{source} is now {}", seen.display()));
    }
    let dev = fstat(&root).map_err(|e| format!("{source}: {e}"))?.st_dev;
    let kinds = stream_kinds(stream)?;
    let mut synced = Synced {
        entries: kinds.len(),
        removed: Vec::new(),
    };
    prune(&root, "", &kinds, dev, &mut synced.removed)?;
    synced.removed.sort();
    tarball::unpack(&root, stream, source).map_err(|e| e.message)?;
    let beneath = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
    let owner = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
    fchownat(&root, ".", owner.0, owner.1, AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| format!("chown {source}: {e}"))?;
    for rel in kinds.keys() {
        let (parent, name) = match rel.rsplit_once('/') {
            Some((p, n)) => (
                openat2(&root, p, beneath).map_err(|e| format!("{rel}: {e}"))?,
                n,
            ),
            None => (
                root.try_clone().map_err(|e| format!("{rel}: {e}"))?,
                rel.as_str(),
            ),
        };
        fchownat(
            &parent,
            name,
            owner.0,
            owner.1,
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| format!("chown {rel}: {e}"))?;
    }
    Ok(synced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        {
            let mut b = tar::Builder::new(&mut f);
            for (name, kind, data, link) in entries {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(*kind);
                h.set_mode(if *kind == tar::EntryType::Directory {
                    0o755
                } else {
                    0o644
                });
                h.set_size(data.len() as u64);
                if !link.is_empty() {
                    h.set_link_name(link).unwrap();
                }
                // Raw names, so that `..` and absolute names reach the checks.
                let raw = name.as_bytes();
                h.as_old_mut().name[..raw.len()].copy_from_slice(raw);
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
            b.finish().unwrap();
        }
        f.flush().unwrap();
        f
    }

    #[test]
    fn names_that_climb_out_or_are_absolute_are_refused() {
        for bad in ["../x", "a/../../x", "/etc/passwd"] {
            let mut t = tar_of(&[(bad, tar::EntryType::Regular, b"x", "")]);
            assert!(stream_kinds(&mut t).is_err(), "{bad} accepted");
        }
        let mut dev = tar_of(&[("d", tar::EntryType::Char, b"", "")]);
        assert!(stream_kinds(&mut dev).is_err());
        let mut hard = tar_of(&[("h", tar::EntryType::Link, b"", "a")]);
        assert!(stream_kinds(&mut hard).is_err());
    }

    #[test]
    fn a_mirror_writes_new_and_changed_files_removes_the_rest_and_keeps_links_as_links() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("victim"), "host").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("old"), "gone soon").unwrap();
        std::fs::write(root.join("kept"), "before").unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/also-gone"), "x").unwrap();
        let victim = outside.path().join("victim");
        let mut t = tar_of(&[
            ("kept", tar::EntryType::Regular, b"after", ""),
            ("new", tar::EntryType::Regular, b"fresh", ""),
            ("sub", tar::EntryType::Directory, b"", ""),
            (
                "link",
                tar::EntryType::Symlink,
                b"",
                victim.to_str().unwrap(),
            ),
        ]);
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let s = sync_back(root.to_str().unwrap(), &mut t, uid, gid).unwrap();
        assert_eq!(s.entries, 4);
        assert_eq!(
            s.removed,
            vec!["old".to_owned(), "sub/also-gone".to_owned()]
        );
        assert_eq!(std::fs::read_to_string(root.join("kept")).unwrap(), "after");
        assert_eq!(std::fs::read_to_string(root.join("new")).unwrap(), "fresh");
        assert!(!root.join("old").exists());
        assert!(
            std::fs::symlink_metadata(root.join("link"))
                .unwrap()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "host");
    }
}
