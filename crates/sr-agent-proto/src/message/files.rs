//! Moving files: put (host to agent), get (agent to host), list, stat and remove. Contents
//! travel in `file` data frames named by the request id; the control messages here open and
//! close a transfer. Paths are absolute and normalized; the agent resolves them inside its root
//! without following symlinks out of it.

use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;

/// What a transfer's bytes are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TransferFormat {
    /// The content of one regular file.
    #[default]
    File,
    /// A tar stream of a directory (producing and unpacking it is the agent's job).
    Tar,
}

/// Start writing `path`; `size` bytes of `file` data frames follow, then [`PutEnd`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutBegin {
    /// Request id, also the transfer id of the data frames.
    pub id: u64,
    /// Destination: the file, or for a tar stream the directory to unpack into.
    pub path: String,
    /// Permission bits of the file (or directory), at most `0o7777`.
    pub mode: u32,
    /// Exact number of content bytes that follow.
    pub size: u64,
    /// File content or tar stream.
    pub format: TransferFormat,
}

/// All content sent; the digest of what the host sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutEnd {
    /// The put's id.
    pub id: u64,
    /// sha256 of the content bytes.
    pub sha256: Sha256Digest,
}

/// The agent stored the content; `sha256` is what it computed (equal to the host's, or it would
/// have answered `error` with `digestMismatch` and kept nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutDone {
    /// The put's id.
    pub id: u64,
    /// Bytes received.
    pub size: u64,
    /// sha256 of the bytes received.
    pub sha256: Sha256Digest,
}

/// Read `path`: the agent answers [`GetBegin`], `file` data frames, [`GetEnd`] (or `error`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Get {
    /// Request id, also the transfer id.
    pub id: u64,
    /// The file, or for a tar stream the directory.
    pub path: String,
    /// File content or tar stream.
    pub format: TransferFormat,
}

/// What is about to be sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetBegin {
    /// The get's id.
    pub id: u64,
    /// Content bytes that follow; `None` for a tar stream, whose length is known only at the end.
    pub size: Option<u64>,
    /// Permission bits of the file or directory.
    pub mode: u32,
    /// File content or tar stream.
    pub format: TransferFormat,
}

/// All content sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetEnd {
    /// The get's id.
    pub id: u64,
    /// Bytes sent.
    pub size: u64,
    /// sha256 of the bytes sent.
    pub sha256: Sha256Digest,
}

/// A request about one path: `list` and `stat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathRequest {
    /// Request id.
    pub id: u64,
    /// Absolute path inside the boundary.
    pub path: String,
}

/// Remove a path; a non-empty directory needs `recursive`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remove {
    /// Request id.
    pub id: u64,
    /// Absolute path inside the boundary.
    pub path: String,
    /// Remove a directory's content too (never following symlinks).
    pub recursive: bool,
}

/// Part of a directory's entries; the last part has `done`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listing {
    /// The list's id.
    pub id: u64,
    /// Entries, in the order the agent chose (sorted by name is recommended).
    pub entries: Vec<DirEntry>,
    /// No more `listing` messages follow for this id.
    pub done: bool,
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirEntry {
    /// File name: not empty, no `/`, no NUL, not `.` or `..`.
    pub name: String,
    /// Its metadata (of the entry itself, not a symlink's target).
    pub info: FileInfo,
}

/// The answer to `stat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatResult {
    /// The stat's id.
    pub id: u64,
    /// Metadata of the path itself (`lstat`).
    pub info: FileInfo,
}

/// Metadata of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileInfo {
    /// What it is.
    pub kind: FileKind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits, at most `0o7777`.
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime_sec: i64,
    /// Nanoseconds within that second, below 1e9.
    pub mtime_nsec: u32,
    /// A symlink's target as stored (never followed); only for symlinks.
    pub link_target: Option<String>,
}

/// The kind of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A device, fifo or socket.
    Other,
}
