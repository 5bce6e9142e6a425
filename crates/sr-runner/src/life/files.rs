//! Moving files in and out of a live sandbox: put, get (of a file, or of a directory as a tar
//! stream), list, stat, remove over the agent protocol, each transfer in the chain (`file.transferred` with path, size, sha256 and
//! direction; `file.removed`).

use std::io::{Read, Write};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sr_agent_proto::message::{
    DirEntry, FileInfo, Get, PathRequest, PutBegin, PutEnd, Remove, TransferFormat,
};
use sr_agent_proto::{Data, Frame, Message, Stream};
use sr_evidence::activity::{Direction, FileRemoved, FileTransferred, TransferKind};
use sr_evidence::events;
use sr_evidence::sink::EventSink;

use super::error::{Kind, SandboxError};
use super::exec::to_payload;
use super::sandbox::Sandbox;

/// How long a file request may wait for its next answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// What a put or get moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transferred {
    /// Bytes.
    pub size: u64,
    /// `sha256:<hex>`, computed on this side and confirmed by the agent.
    pub sha256: String,
}

fn target(path: &str) -> String {
    format!("files:{path}")
}

fn gone(path: &str, message: impl Into<String>) -> SandboxError {
    SandboxError::new(Kind::Gone, target(path), message)
}

fn local_io(path: &str, what: &str, e: &std::io::Error) -> SandboxError {
    SandboxError::new(Kind::LocalIo, target(path), format!("{what}: {e}"))
}

/// An answer the protocol does not allow here: a bug on one side.
fn unexpected(path: &str, what: &str, frame: &Frame) -> SandboxError {
    SandboxError::new(
        Kind::Protocol,
        target(path),
        format!("an unexpected {what}: {frame:?}"),
    )
}

fn agent_refusal(path: &str, e: &sr_agent_proto::message::ErrorReply) -> SandboxError {
    SandboxError::refused(target(path), e.code, &e.message)
}

impl<S: EventSink + 'static> Sandbox<S> {
    fn record(
        &self,
        id: u64,
        direction: Direction,
        format: TransferFormat,
        path: &str,
        got: &Transferred,
    ) {
        let t = FileTransferred {
            transfer_id: id,
            direction,
            path: path.to_owned(),
            kind: match format {
                TransferFormat::File => TransferKind::File,
                TransferFormat::Tar => TransferKind::Tar,
            },
            bytes: got.size,
            sha256: got.sha256.clone(),
        };
        self.evidence()
            .emit(events::FILE_TRANSFERRED, to_payload(&t));
    }

    /// The agent connection, or why a file request cannot be made now.
    fn running(&self, path: &str) -> Result<std::sync::Arc<super::conn::AgentConn>, SandboxError> {
        self.agent()
            .ok_or_else(|| gone(path, "the sandbox is not running"))
    }

    fn file_request(&self, path: &str) -> Result<(u64, Receiver<Frame>), SandboxError> {
        let conn = self.running(path)?;
        let id = self.next_request_id();
        let rx = conn
            .request(id)
            .ok_or_else(|| gone(path, "the sandbox's agent connection is closed"))?;
        Ok((id, rx))
    }

    fn answer(&self, rx: &Receiver<Frame>, path: &str) -> Result<Frame, SandboxError> {
        match rx.recv_timeout(ANSWER_TIMEOUT) {
            Ok(Frame::Control(Message::Error(e))) => Err(agent_refusal(path, &e)),
            Ok(f) => Ok(f),
            Err(_) => Err(gone(
                path,
                "the sandbox's agent did not answer (it may have ended: timeout, kill)",
            )),
        }
    }

    fn send(&self, path: &str, m: &Message) -> Result<(), SandboxError> {
        let conn = self.running(path)?;
        conn.send(m).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidInput => {
                SandboxError::new(Kind::Invalid, target(path), e.to_string())
            }
            _ => gone(path, format!("sending the request: {e}")),
        })
    }

    /// Writes `size` bytes from `content` to `path` inside the sandbox, with `mode`.
    pub fn put_file(
        &self,
        path: &str,
        mode: u32,
        size: u64,
        content: &mut dyn Read,
    ) -> Result<Transferred, SandboxError> {
        self.put(path, mode, size, content, TransferFormat::File)
    }

    /// Unpacks a tar stream of `size` bytes from `content` into directory `path` inside the
    /// sandbox (created with `mode` when missing). Only regular files, directories and symlinks
    /// are unpacked, never through a symlink, and nothing is unpacked from a stream whose digest
    /// is not the one sent.
    pub fn put_tar(
        &self,
        path: &str,
        mode: u32,
        size: u64,
        content: &mut dyn Read,
    ) -> Result<Transferred, SandboxError> {
        self.put(path, mode, size, content, TransferFormat::Tar)
    }

    /// Writes directory `path` inside the sandbox into `out` as a tar stream (symlinks as
    /// symlinks, mounts inside it not crossed, devices and fifos left out).
    pub fn get_tar(&self, path: &str, out: &mut dyn Write) -> Result<Transferred, SandboxError> {
        self.get(path, out, TransferFormat::Tar)
    }

    /// Reads `path` inside the sandbox into `out`.
    pub fn get_file(&self, path: &str, out: &mut dyn Write) -> Result<Transferred, SandboxError> {
        self.get(path, out, TransferFormat::File)
    }

    fn put(
        &self,
        path: &str,
        mode: u32,
        size: u64,
        content: &mut dyn Read,
        format: TransferFormat,
    ) -> Result<Transferred, SandboxError> {
        let (id, rx) = self.file_request(path)?;
        self.send(
            path,
            &Message::PutBegin(PutBegin {
                id,
                path: path.to_owned(),
                mode,
                size,
                format,
            }),
        )?;
        let conn = self.running(path)?;
        let mut h = Sha256::new();
        let mut n = 0u64;
        let mut buf = vec![0u8; conn.max_chunk().clamp(1, 256 * 1024)];
        loop {
            // An early refusal (outside the root, read-only) stops the upload.
            if let Ok(Frame::Control(Message::Error(e))) = rx.try_recv() {
                return Err(agent_refusal(path, &e));
            }
            let r = match content.read(&mut buf) {
                Ok(0) => break,
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(local_io(path, "reading the content", &e)),
            };
            h.update(&buf[..r]);
            n += r as u64;
            conn.send_file_data(id, &buf[..r])
                .map_err(|e| gone(path, format!("sending the content: {e}")))?;
        }
        let sha256 = format!("sha256:{}", hex::encode(h.finalize()));
        let digest = sha256.parse().map_err(|_| {
            SandboxError::new(
                Kind::Protocol,
                target(path),
                "a malformed digest of our own",
            )
        })?;
        self.send(path, &Message::PutEnd(PutEnd { id, sha256: digest }))?;
        match self.answer(&rx, path)? {
            Frame::Control(Message::PutDone(d))
                if d.size == n && d.sha256.to_string() == sha256 =>
            {
                let got = Transferred { size: n, sha256 };
                self.record(id, Direction::In, format, path, &got);
                Ok(got)
            }
            other => Err(unexpected(path, "answer to a put", &other)),
        }
    }

    fn get(
        &self,
        path: &str,
        out: &mut dyn Write,
        format: TransferFormat,
    ) -> Result<Transferred, SandboxError> {
        let (id, rx) = self.file_request(path)?;
        self.send(
            path,
            &Message::Get(Get {
                id,
                path: path.to_owned(),
                format,
            }),
        )?;
        match self.answer(&rx, path)? {
            Frame::Control(Message::GetBegin(_)) => {}
            other => {
                return Err(unexpected(path, "answer to a get", &other));
            }
        }
        let mut h = Sha256::new();
        let mut n = 0u64;
        loop {
            match self.answer(&rx, path)? {
                Frame::Data(Data {
                    stream: Stream::File,
                    bytes,
                    ..
                }) => {
                    h.update(&bytes);
                    n += bytes.len() as u64;
                    out.write_all(&bytes)
                        .map_err(|e| local_io(path, "writing the content", &e))?;
                }
                Frame::Control(Message::GetEnd(end)) => {
                    let sha256 = format!("sha256:{}", hex::encode(h.finalize()));
                    if end.size != n || end.sha256.to_string() != sha256 {
                        return Err(SandboxError::new(
                            Kind::Damaged,
                            target(path),
                            format!(
                                "the content ({n} bytes, {sha256}) is not what the agent sent ({} bytes, {})",
                                end.size, end.sha256
                            ),
                        ));
                    }
                    let got = Transferred { size: n, sha256 };
                    self.record(id, Direction::Out, format, path, &got);
                    return Ok(got);
                }
                other => {
                    return Err(unexpected(path, "frame in a get", &other));
                }
            }
        }
    }

    /// The entries of directory `path`, sorted by name.
    pub fn list(&self, path: &str) -> Result<Vec<DirEntry>, SandboxError> {
        let (id, rx) = self.file_request(path)?;
        self.send(
            path,
            &Message::List(PathRequest {
                id,
                path: path.to_owned(),
            }),
        )?;
        let mut entries = Vec::new();
        loop {
            match self.answer(&rx, path)? {
                Frame::Control(Message::Listing(l)) => {
                    entries.extend(l.entries);
                    if l.done {
                        return Ok(entries);
                    }
                }
                other => {
                    return Err(unexpected(path, "answer to a list", &other));
                }
            }
        }
    }

    /// The metadata of `path` itself.
    pub fn stat(&self, path: &str) -> Result<FileInfo, SandboxError> {
        let (id, rx) = self.file_request(path)?;
        self.send(
            path,
            &Message::Stat(PathRequest {
                id,
                path: path.to_owned(),
            }),
        )?;
        match self.answer(&rx, path)? {
            Frame::Control(Message::StatResult(r)) => Ok(r.info),
            other => Err(unexpected(path, "answer to a stat", &other)),
        }
    }

    /// Removes `path` (a non-empty directory only with `recursive`).
    pub fn remove(&self, path: &str, recursive: bool) -> Result<(), SandboxError> {
        let (id, rx) = self.file_request(path)?;
        self.send(
            path,
            &Message::Remove(Remove {
                id,
                path: path.to_owned(),
                recursive,
            }),
        )?;
        match self.answer(&rx, path)? {
            Frame::Control(Message::Removed(_)) => {
                let removed = FileRemoved {
                    transfer_id: id,
                    path: path.to_owned(),
                };
                self.evidence()
                    .emit(events::FILE_REMOVED, to_payload(&removed));
                Ok(())
            }
            other => Err(unexpected(path, "answer to a remove", &other)),
        }
    }
}
