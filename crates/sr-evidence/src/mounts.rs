//! Digests of the files in a run's mounts: the report's `mounts` section.
//!
//! A manifest lists every entry under a mount's host source (files with size and `sha256:`,
//! symlinks with their target, directories, anything else by type), sorted by path, and
//! closes with `manifestDigest` = `sha256:` of JCS of the entry list, so any verifier can
//! recompute it from the report alone ([`manifest_digest`]).
//!
//! * The walk never follows a symlink: entries are read with `lstat`, files are opened with
//!   `O_NOFOLLOW | O_NONBLOCK` and checked to be regular files after opening, so a tree the
//!   workload wrote cannot point the hasher elsewhere or block it on a FIFO.
//! * It is bounded per run ([`Budget`]: entries and bytes, shared by every mount). When a
//!   bound is reached the walk stops, the manifest says `complete: false` and which bound
//!   (`limitReached`), and the later mounts are not walked at all.
//! * When it runs is the caller's choice: writable mounts after the workload ended (what it
//!   wrote), read-only ones before it started (what was there to read); `taken` says which.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::canonical::{SHA256_PREFIX, jcs, sha256_tagged};

/// Default bound on the entries listed per run.
pub const DEFAULT_MAX_FILES: u64 = 10_000;
/// Default bound on the bytes hashed per run (1 GiB).
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// The report's `mounts` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MountEvidence {
    /// The bound on entries listed, for the whole run.
    pub max_files: u64,
    /// The bound on bytes hashed, for the whole run.
    pub max_bytes: u64,
    /// One manifest per mount digested, in policy order.
    pub manifests: Vec<MountManifest>,
}

/// When a manifest was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Taken {
    /// Before the workload started (read-only mounts: what was there to read).
    Start,
    /// After the workload ended (writable mounts: what it left there).
    End,
}

/// Which bound stopped a walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Limit {
    /// `maxFiles` entries were listed.
    MaxFiles,
    /// Hashing the next file would have passed `maxBytes`.
    MaxBytes,
}

/// The files of one mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MountManifest {
    /// The mount's target inside the sandbox.
    pub target: String,
    /// Its host source.
    pub source: String,
    /// Whether the mount was read-only.
    pub read_only: bool,
    /// Before the run (`start`) or after it (`end`).
    pub taken: Taken,
    /// Entries listed (`entries.len()`).
    pub files: u64,
    /// Bytes hashed.
    pub bytes: u64,
    /// Whether every entry is listed (false when a bound was reached or an entry was
    /// unreadable).
    pub complete: bool,
    /// The bound that stopped the walk, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_reached: Option<Limit>,
    /// Entries that could not be read, each `path: error`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// The entries, sorted by path.
    pub entries: Vec<ManifestEntry>,
    /// `sha256:` of JCS of `entries`.
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub manifest_digest: String,
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum EntryKind {
    /// A regular file (`bytes`, `digest`).
    File,
    /// A directory.
    Dir,
    /// A symlink (`link`: its target, never followed).
    Symlink,
    /// A FIFO, socket or device: listed, not read.
    Other,
}

/// One entry of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManifestEntry {
    /// Path relative to the mount's source, `/`-separated; `.` when the source is a file.
    /// Names that are not UTF-8 are shown lossily (and listed in `errors`).
    pub path: String,
    /// What it is.
    #[serde(rename = "type")]
    pub kind: EntryKind,
    /// Size of a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// `sha256:` of a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub digest: Option<String>,
    /// Target of a symlink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// What is left to spend on the run's mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Entries still to list.
    pub files: u64,
    /// Bytes still to hash.
    pub bytes: u64,
}

impl Budget {
    /// A fresh budget.
    pub fn new(max_files: u64, max_bytes: u64) -> Budget {
        Budget {
            files: max_files,
            bytes: max_bytes,
        }
    }
}

/// `sha256:` of JCS of the entries: what `manifestDigest` must be.
pub fn manifest_digest(entries: &[ManifestEntry]) -> Result<String, String> {
    Ok(sha256_tagged(&jcs(&entries)?))
}

/// Lists and hashes the tree at `source` within `budget` (spent by what it lists), without
/// following any symlink.
pub fn digest_tree(
    source: &Path,
    target: &str,
    read_only: bool,
    taken: Taken,
    budget: &mut Budget,
) -> MountManifest {
    let mut walk = Walk {
        budget,
        entries: Vec::new(),
        errors: Vec::new(),
        bytes: 0,
        limit: None,
    };
    match std::fs::symlink_metadata(source) {
        Ok(meta) if meta.is_dir() => walk.dir(source, ""),
        Ok(meta) => {
            walk.entry(source, ".", &meta.file_type());
        }
        Err(e) => walk.errors.push(format!("{}: {e}", source.display())),
    }
    let Walk {
        mut entries,
        errors,
        bytes,
        limit,
        ..
    } = walk;
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let manifest_digest = manifest_digest(&entries).unwrap_or_else(|e| {
        // Entries are strings and integers below 2^53: JCS cannot fail on them.
        format!("{SHA256_PREFIX}unencodable: {e}")
    });
    MountManifest {
        target: target.to_owned(),
        source: source.display().to_string(),
        read_only,
        taken,
        files: entries.len() as u64,
        bytes,
        complete: limit.is_none() && errors.is_empty(),
        limit_reached: limit,
        errors,
        entries,
        manifest_digest,
    }
}

struct Walk<'a> {
    budget: &'a mut Budget,
    entries: Vec<ManifestEntry>,
    errors: Vec<String>,
    bytes: u64,
    limit: Option<Limit>,
}

impl Walk<'_> {
    /// Lists the children of directory `abs` (whose path in the manifest is `rel`), depth
    /// first; an explicit stack, so a deep tree cannot overflow ours.
    fn dir(&mut self, abs: &Path, rel: &str) {
        let mut stack = vec![(abs.to_owned(), rel.to_owned())];
        while let Some((dir, rel)) = stack.pop() {
            let mut children: Vec<_> = match std::fs::read_dir(&dir) {
                Ok(rd) => rd.filter_map(Result::ok).collect(),
                Err(e) => {
                    self.errors.push(format!("{}: {e}", display_rel(&rel)));
                    continue;
                }
            };
            children.sort_by_key(|c| c.file_name());
            let mut subdirs = Vec::new();
            for child in children {
                if self.limit.is_some() {
                    return;
                }
                let name = child.file_name();
                let name_s = name.to_string_lossy();
                if name.to_str().is_none() {
                    self.errors.push(format!(
                        "{}/{name_s}: name is not UTF-8 (shown lossily)",
                        display_rel(&rel)
                    ));
                }
                let child_rel = if rel.is_empty() {
                    name_s.into_owned()
                } else {
                    format!("{rel}/{name_s}")
                };
                let path = child.path();
                // DirEntry::file_type is lstat's: a symlink stays a symlink.
                let kind = match child.file_type() {
                    Ok(k) => k,
                    Err(e) => {
                        self.errors.push(format!("{child_rel}: {e}"));
                        continue;
                    }
                };
                if self.entry(&path, &child_rel, &kind) && kind.is_dir() {
                    subdirs.push((path, child_rel));
                }
            }
            // Reversed, so the stack pops them in name order.
            stack.extend(subdirs.into_iter().rev());
            if self.limit.is_some() {
                return;
            }
        }
    }

    /// Lists one entry; false when nothing was listed (a bound, or an error).
    fn entry(&mut self, abs: &Path, rel: &str, kind: &std::fs::FileType) -> bool {
        if self.budget.files == 0 {
            self.limit = Some(Limit::MaxFiles);
            return false;
        }
        let mut entry = ManifestEntry {
            path: rel.to_owned(),
            kind: EntryKind::Other,
            bytes: None,
            digest: None,
            link: None,
        };
        if kind.is_dir() {
            entry.kind = EntryKind::Dir;
        } else if kind.is_symlink() {
            entry.kind = EntryKind::Symlink;
            match std::fs::read_link(abs) {
                Ok(t) => entry.link = Some(t.to_string_lossy().into_owned()),
                Err(e) => {
                    self.errors.push(format!("{rel}: {e}"));
                    return false;
                }
            }
        } else if kind.is_file() {
            match self.hash_file(abs, rel) {
                Some((digest, bytes)) => {
                    entry.kind = EntryKind::File;
                    entry.bytes = Some(bytes);
                    entry.digest = Some(digest);
                }
                None => return false,
            }
        } else if !(kind.is_fifo()
            || kind.is_socket()
            || kind.is_block_device()
            || kind.is_char_device())
        {
            self.errors.push(format!("{rel}: unknown file type"));
        }
        self.budget.files -= 1;
        self.entries.push(entry);
        true
    }

    fn hash_file(&mut self, abs: &Path, rel: &str) -> Option<(String, u64)> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(abs);
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                self.errors.push(format!("{rel}: {e}"));
                return None;
            }
        };
        let size = match file.metadata() {
            Ok(m) if m.is_file() => m.len(),
            Ok(_) => {
                self.errors
                    .push(format!("{rel}: replaced by a non-file while listing"));
                return None;
            }
            Err(e) => {
                self.errors.push(format!("{rel}: {e}"));
                return None;
            }
        };
        if size > self.budget.bytes {
            self.limit = Some(Limit::MaxBytes);
            return None;
        }
        match hash_up_to(file, size) {
            Ok((digest, n)) => {
                self.budget.bytes -= n;
                self.bytes += n;
                Some((digest, n))
            }
            Err(e) => {
                self.errors.push(format!("{rel}: {e}"));
                None
            }
        }
    }
}

fn display_rel(rel: &str) -> &str {
    if rel.is_empty() { "." } else { rel }
}

/// Hashes at most `limit` bytes (the size when opened: a file still growing is cut there).
fn hash_up_to(file: File, limit: u64) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    let mut reader = file.take(limit);
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(buf.get(..n).unwrap_or_default());
        total += n as u64;
    }
    Ok((
        format!("{SHA256_PREFIX}{}", hex::encode(hasher.finalize())),
        total,
    ))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("b/c")).unwrap();
        std::fs::write(t.path().join("a.txt"), b"hello").unwrap();
        std::fs::write(t.path().join("b/c/d.bin"), vec![7u8; 1000]).unwrap();
        symlink("/etc/shadow", t.path().join("b/evil")).unwrap();
        nix_mkfifo(&t.path().join("fifo"));
        t
    }

    fn nix_mkfifo(p: &Path) {
        let status = std::process::Command::new("mkfifo")
            .arg(p)
            .status()
            .unwrap();
        assert!(status.success());
    }

    #[test]
    fn lists_without_following_symlinks_and_digest_recomputes() {
        let t = tree();
        let mut budget = Budget::new(DEFAULT_MAX_FILES, DEFAULT_MAX_BYTES);
        let m = digest_tree(t.path(), "/work", false, Taken::End, &mut budget);
        assert!(m.complete, "{m:#?}");
        let paths: Vec<&str> = m.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["a.txt", "b", "b/c", "b/c/d.bin", "b/evil", "fifo"]);
        let evil = &m.entries[4];
        assert_eq!(evil.kind, EntryKind::Symlink);
        assert_eq!(evil.link.as_deref(), Some("/etc/shadow"));
        assert_eq!(evil.digest, None);
        assert_eq!(m.entries[5].kind, EntryKind::Other);
        assert_eq!(m.bytes, 1005);
        assert_eq!(
            m.entries[0].digest.as_deref(),
            Some(sha256_tagged(b"hello").as_str())
        );
        assert_eq!(m.manifest_digest, manifest_digest(&m.entries).unwrap());
        assert_eq!(budget.files, DEFAULT_MAX_FILES - 6);
        // Deterministic: the same tree gives the same manifest.
        let again = digest_tree(t.path(), "/work", false, Taken::End, &mut budget);
        assert_eq!(again.manifest_digest, m.manifest_digest);
    }

    #[test]
    fn bounds_stop_the_walk_and_say_so() {
        let t = tree();
        let mut budget = Budget::new(3, DEFAULT_MAX_BYTES);
        let m = digest_tree(t.path(), "/w", false, Taken::End, &mut budget);
        assert_eq!(m.files, 3);
        assert!(!m.complete);
        assert_eq!(m.limit_reached, Some(Limit::MaxFiles));
        assert_eq!(budget.files, 0);
        // The budget is the run's: the next mount gets nothing.
        let next = digest_tree(t.path(), "/x", true, Taken::Start, &mut budget);
        assert_eq!(next.files, 0);
        assert_eq!(next.limit_reached, Some(Limit::MaxFiles));

        let mut budget = Budget::new(100, 500);
        let m = digest_tree(t.path(), "/w", false, Taken::End, &mut budget);
        assert_eq!(m.limit_reached, Some(Limit::MaxBytes));
        assert_eq!(m.bytes, 5);
        assert!(!m.entries.iter().any(|e| e.path == "b/c/d.bin"));
    }

    #[test]
    fn a_file_source_is_one_entry_and_a_missing_one_an_error() {
        let t = tree();
        let mut budget = Budget::new(10, 10);
        let m = digest_tree(
            &t.path().join("a.txt"),
            "/a",
            true,
            Taken::Start,
            &mut budget,
        );
        assert_eq!(m.entries.len(), 1);
        assert_eq!(m.entries[0].path, ".");
        assert!(m.complete);
        let gone = digest_tree(
            &t.path().join("nope"),
            "/n",
            true,
            Taken::Start,
            &mut budget,
        );
        assert!(!gone.complete);
        assert_eq!(gone.errors.len(), 1);
    }
}
