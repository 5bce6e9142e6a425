//! How pid 1 serves file requests: each runs in a worker process forked for it, which takes
//! the workload's host uid/gid before it touches a path ([`files`] has the rules), and talks to
//! pid 1 over pipes: content one way, one JSON line of result (a get: a first line with the
//! size and mode) the other.
//!
//! A put lives across turns of the agent's loop (its data frames come between other frames):
//! pid 1 writes each chunk into the worker's content pipe as it arrives and, at `putEnd`, hands
//! it the announced digest; the worker renames the file into place only if it matches. A get,
//! list, stat or remove runs to its end within one turn (a get streams the file as data frames
//! meanwhile); execs' output waits in their pipes for that time.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;

use nix::fcntl::OFlag;
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Gid, Pid, Uid, pipe2};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sr_agent_proto::message::{DirEntry, ErrorReply, FileInfo, FileKind, TransferFormat};

use super::super::sys;
use super::files::{self, FileError, FileRoots, Moved};
use super::tarball;

/// What a worker answers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WorkerResult {
    /// A put or get moved this.
    Moved(Moved),
    /// A get is about to send this much.
    Begin {
        /// Bytes (`None` for a tar stream, known only at its end).
        size: Option<u64>,
        /// The file's mode.
        mode: u32,
    },
    /// A stat.
    Info(FileInfo),
    /// A listing.
    Entries(Vec<DirEntry>),
    /// A remove.
    Removed,
    /// It failed.
    Failed(FileError),
}

/// The identity workers take.
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    /// Host uid (never 0).
    pub uid: u32,
    /// Host gid (never 0).
    pub gid: u32,
}

fn become_workload(who: Identity) -> Result<(), FileError> {
    let fail = |e: nix::Error| FileError::internal_sys("taking the workload's identity", e);
    if who.uid == 0 || who.gid == 0 {
        return Err(FileError::internal(
            "the workload's host uid/gid must not be 0",
        ));
    }
    nix::unistd::setgroups(&[]).map_err(fail)?;
    let (g, u) = (Gid::from_raw(who.gid), Uid::from_raw(who.uid));
    nix::unistd::setresgid(g, g, g).map_err(fail)?;
    nix::unistd::setresuid(u, u, u).map_err(fail)?;
    Ok(())
}

fn write_result(to: &mut File, r: &WorkerResult) {
    if let Ok(mut line) = serde_json::to_vec(r) {
        line.push(b'\n');
        let _ = to.write_all(&line);
    }
}

/// The result pipe and `fds`, and nothing else of pid 1's (see [`sys::keep_only_fds`]).
fn keep_only(result: OwnedFd, fds: Vec<OwnedFd>) -> Result<(File, Vec<OwnedFd>), FileError> {
    let mut all = vec![result];
    all.extend(fds);
    let mut kept = sys::keep_only_fds(all)
        .map_err(|e| FileError::internal_io("preparing the file worker", &e))?
        .into_iter();
    let result = kept
        .next()
        .ok_or_else(|| FileError::internal("the result pipe is missing"))?;
    Ok((File::from(result), kept.collect()))
}

/// Forks a worker that runs `body` as the workload; `body` gets the result pipe and its own
/// fds (`child_fds`); `parent_fds` are closed in the worker. Returns its pid and the read end
/// of the result pipe.
fn fork_worker(
    who: Identity,
    child_fds: Vec<OwnedFd>,
    body: impl FnOnce(&mut File, Vec<OwnedFd>) -> WorkerResult,
) -> Result<(Pid, BufReader<File>), FileError> {
    let io = |e: nix::Error| FileError::internal_sys("starting a file worker", e);
    let (rd, wr) = pipe2(OFlag::O_CLOEXEC).map_err(io)?;
    match sys::fork().map_err(|e| FileError::internal_io("starting a file worker", &e))? {
        ForkResult::Child => {
            drop(rd);
            let result = match keep_only(wr, child_fds) {
                Ok((mut out, fds)) => {
                    let r = match become_workload(who) {
                        Ok(()) => body(&mut out, fds),
                        Err(e) => WorkerResult::Failed(e),
                    };
                    write_result(&mut out, &r);
                    0
                }
                Err(_) => 1,
            };
            sys::exit_now(result)
        }
        ForkResult::Parent { child } => {
            drop(wr);
            drop(child_fds);
            Ok((child, BufReader::new(File::from(rd))))
        }
    }
}

fn read_result(from: &mut BufReader<File>) -> WorkerResult {
    let mut line = String::new();
    match from.read_line(&mut line) {
        Ok(n) if n > 0 => serde_json::from_str(&line).unwrap_or_else(|e| {
            WorkerResult::Failed(FileError::internal(format!(
                "an unreadable answer from the file worker: {e}"
            )))
        }),
        _ => WorkerResult::Failed(FileError::internal(
            "the file worker ended without an answer",
        )),
    }
}

/// A put in progress.
pub struct Put {
    pid: Pid,
    content: Option<File>,
    commit: Option<File>,
    result: BufReader<File>,
}

/// Starts a put of `size` bytes to `path`: a file's content, or a tar stream to unpack into
/// directory `path`.
pub fn begin_put(
    roots: &FileRoots,
    who: Identity,
    id: u64,
    path: &str,
    mode: u32,
    size: u64,
    format: TransferFormat,
) -> Result<Put, FileError> {
    let io = |e: nix::Error| FileError::internal_sys("starting a put", e);
    let (content_r, content_w) = pipe2(OFlag::O_CLOEXEC).map_err(io)?;
    let (commit_r, commit_w) = pipe2(OFlag::O_CLOEXEC).map_err(io)?;
    let roots = roots.clone();
    let path = path.to_owned();
    let (pid, result) = fork_worker(who, vec![content_r, commit_r], move |_, mut fds| {
        let commit_r = fds.pop();
        let content_r = fds.pop();
        let (Some(content_r), Some(commit_r)) = (content_r, commit_r) else {
            return WorkerResult::Failed(FileError::internal("the put's pipes are missing"));
        };
        let mut content = File::from(content_r);
        let mut commit = BufReader::new(File::from(commit_r));
        let mut expected = || {
            let mut line = String::new();
            commit.read_line(&mut line).ok()?;
            let want = line.trim();
            (!want.is_empty()).then(|| want.to_owned())
        };
        let tmp = format!(".safe-run-put-{id}");
        let moved = match format {
            TransferFormat::File => {
                files::put(&roots, &path, mode, size, &mut content, &mut expected, &tmp)
            }
            TransferFormat::Tar => {
                tarball::put(&roots, &path, mode, size, &mut content, &mut expected)
            }
        };
        match moved {
            Ok(m) => WorkerResult::Moved(m),
            Err(e) => WorkerResult::Failed(e),
        }
    })?;
    Ok(Put {
        pid,
        content: Some(File::from(content_w)),
        commit: Some(File::from(commit_w)),
        result,
    })
}

impl Put {
    /// Passes content on (a worker that stopped reading, because it failed, drops it).
    pub fn data(&mut self, bytes: &[u8]) {
        if let Some(c) = self.content.as_mut()
            && c.write_all(bytes).is_err()
        {
            self.content = None;
        }
    }

    /// Ends the content, hands over the announced digest, and waits for the answer.
    pub fn end(mut self, sha256: &str) -> Result<Moved, FileError> {
        self.content = None;
        if let Some(mut c) = self.commit.take() {
            let _ = writeln!(c, "{sha256}");
        }
        let r = read_result(&mut self.result);
        let _ = waitpid(self.pid, None);
        match r {
            WorkerResult::Moved(m) => Ok(m),
            WorkerResult::Failed(e) => Err(e),
            other => Err(unexpected(&other)),
        }
    }
}

fn unexpected(r: &WorkerResult) -> FileError {
    FileError::internal(format!("the file worker answered {r:?}"))
}

/// Runs a get: `begin(size, mode)` before the content (no size for a tar stream), `chunk` for
/// each piece of it.
pub fn get(
    roots: &FileRoots,
    who: Identity,
    path: &str,
    format: TransferFormat,
    begin: &mut dyn FnMut(Option<u64>, u32) -> bool,
    chunk: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<Moved, FileError> {
    let io = |e: nix::Error| FileError::internal_sys("starting a get", e);
    let (content_r, content_w) = pipe2(OFlag::O_CLOEXEC).map_err(io)?;
    let roots = roots.clone();
    let p = path.to_owned();
    let (pid, mut result) = fork_worker(who, vec![content_w], move |out, mut fds| {
        let Some(content_w) = fds.pop() else {
            return WorkerResult::Failed(FileError::internal("the get's pipe is missing"));
        };
        let mut to = Counted {
            inner: File::from(content_w),
            n: 0,
        };
        let sent = match format {
            TransferFormat::File => {
                let (mut file, size, mode) = match files::open_for_get(&roots, &p) {
                    Ok(f) => f,
                    Err(e) => return WorkerResult::Failed(e),
                };
                write_result(
                    out,
                    &WorkerResult::Begin {
                        size: Some(size),
                        mode,
                    },
                );
                std::io::copy(&mut (&mut file).take(size), &mut to)
                    .map(|_| mode)
                    .map_err(|e| FileError::internal_io(format!("reading {p}"), &e))
            }
            TransferFormat::Tar => {
                // The directory is checked before anything is announced.
                let mode = match files::stat(&roots, &p) {
                    Ok(i) if i.kind == FileKind::Dir => i.mode,
                    Ok(_) => return WorkerResult::Failed(FileError::not_a_directory(&p)),
                    Err(e) => return WorkerResult::Failed(e),
                };
                write_result(out, &WorkerResult::Begin { size: None, mode });
                tarball::pack(&roots, &p, &mut to)
            }
        };
        match sent {
            Ok(mode) => WorkerResult::Moved(Moved {
                size: to.n,
                sha256: String::new(),
                mode,
            }),
            Err(e) => WorkerResult::Failed(e),
        }
    })?;
    let outcome = (|| {
        let (size, mode) = match read_result(&mut result) {
            WorkerResult::Begin { size, mode } => (size, mode),
            WorkerResult::Failed(e) => return Err(e),
            other => return Err(unexpected(&other)),
        };
        if !begin(size, mode) {
            return Err(broken());
        }
        let mut content = File::from(content_r);
        let mut buf = vec![0u8; 256 * 1024];
        let mut h = Sha256::new();
        let mut n = 0u64;
        loop {
            let r = match content.read(&mut buf) {
                Ok(0) => break,
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            h.update(&buf[..r]);
            n += r as u64;
            if !chunk(&buf[..r]) {
                return Err(broken());
            }
        }
        match read_result(&mut result) {
            WorkerResult::Moved(m) if m.size == n => Ok(Moved {
                size: n,
                sha256: format!("sha256:{}", hex::encode(h.finalize())),
                mode: m.mode,
            }),
            WorkerResult::Failed(e) => Err(e),
            other => Err(unexpected(&other)),
        }
    })();
    let _ = waitpid(pid, None);
    outcome
}

/// A writer that counts what went through.
struct Counted<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn broken() -> FileError {
    FileError::internal("the connection to the host broke during the transfer")
}

/// Runs a stat, list or remove in a worker.
pub fn meta(
    roots: &FileRoots,
    who: Identity,
    op: impl FnOnce(&FileRoots) -> WorkerResult,
) -> WorkerResult {
    let roots = roots.clone();
    match fork_worker(who, Vec::new(), move |_, _| op(&roots)) {
        Ok((pid, mut result)) => {
            let r = read_result(&mut result);
            let _ = waitpid(pid, None);
            r
        }
        Err(e) => WorkerResult::Failed(e),
    }
}

/// The protocol's answer for a failed request.
pub fn error_reply(id: u64, e: FileError) -> ErrorReply {
    ErrorReply {
        id: Some(id),
        code: e.code,
        message: e.message.chars().take(1024).collect(),
        phase: Some("files".into()),
        errno: e.errno,
    }
}

/// A stat's, list's or remove's answer, or the error.
pub fn stat_result(r: WorkerResult) -> Result<FileInfo, FileError> {
    match r {
        WorkerResult::Info(i) => Ok(i),
        WorkerResult::Failed(e) => Err(e),
        other => Err(unexpected(&other)),
    }
}

/// A listing's entries, or the error.
pub fn list_result(r: WorkerResult) -> Result<Vec<DirEntry>, FileError> {
    match r {
        WorkerResult::Entries(e) => Ok(e),
        WorkerResult::Failed(e) => Err(e),
        other => Err(unexpected(&other)),
    }
}

/// A remove's answer.
pub fn removed_result(r: WorkerResult) -> Result<(), FileError> {
    match r {
        WorkerResult::Removed => Ok(()),
        WorkerResult::Failed(e) => Err(e),
        other => Err(unexpected(&other)),
    }
}
