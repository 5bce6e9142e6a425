//! A QMP client: QEMU's JSON control protocol over the `-qmp unix:qmp.sock` socket of a run's
//! `vm/` directory, for what the command line cannot do: save a VM's state (`migrate` to a
//! descriptor), restore one (`migrate-incoming`), and plug the per-run vsock device into a
//! restored VM (`chardev-add`, `device_add`).
//!
//! Written here rather than taken from a crate: the QMP crates generate QEMU's whole schema for
//! one QEMU version, while this needs seven commands, one descriptor passed with
//! `SCM_RIGHTS`, and deadlines on every read. Events are read and dropped (the state that
//! matters is polled with `query-migrate`).

use std::io::{BufRead, BufReader, IoSlice, Read};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use serde_json::{Value, json};

/// Longest line QEMU may send (answers here are small; `query-migrate` is the largest).
const MAX_LINE: usize = 1 << 20;
/// The pause between polls of `query-migrate`.
const MIGRATE_POLL: Duration = Duration::from_millis(5);

/// Why a QMP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket failed, or QEMU closed it (it exited).
    #[error("QMP {step}: {source}")]
    Io {
        /// What was being done.
        step: String,
        /// The cause.
        source: std::io::Error,
    },
    /// QEMU answered something that is not QMP.
    #[error("QMP {step}: unexpected answer: {text}")]
    Protocol {
        /// What was being done.
        step: String,
        /// What came back (cut short).
        text: String,
    },
    /// QEMU refused a command (its error class and description).
    #[error("QMP {command} failed: {desc} ({class})")]
    Command {
        /// The command.
        command: String,
        /// QEMU's error class.
        class: String,
        /// QEMU's words.
        desc: String,
    },
    /// A migration ended in a state other than `completed`.
    #[error("QMP migration {status}: {detail}")]
    Migration {
        /// `failed` or `cancelled`.
        status: String,
        /// QEMU's error description, when it gave one.
        detail: String,
    },
    /// Nothing came in time.
    #[error("QMP {step}: no answer within {waited_ms} ms")]
    Timeout {
        /// What was being done.
        step: String,
        /// How long it waited.
        waited_ms: u64,
    },
}

/// A connected, negotiated QMP session.
pub struct Qmp {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    deadline: Instant,
}

impl Qmp {
    /// Connects to `socket` (retrying until QEMU has created it or `deadline`), reads the
    /// greeting and leaves capability negotiation. Every later read is bounded by `deadline`
    /// too, unless [`Qmp::set_deadline`] moves it.
    pub fn connect(socket: &Path, deadline: Instant) -> Result<Qmp, QmpError> {
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(QmpError::Io {
                        step: format!("connecting to {}", socket.display()),
                        source: e,
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        let reader = stream
            .try_clone()
            .map(BufReader::new)
            .map_err(|e| QmpError::Io {
                step: "cloning the socket".into(),
                source: e,
            })?;
        let mut qmp = Qmp {
            stream,
            reader,
            deadline,
        };
        let greeting = qmp.read_message("greeting")?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol {
                step: "greeting".into(),
                text: short(&greeting.to_string()),
            });
        }
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    /// Bounds every later read by `deadline`.
    pub fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }

    /// Runs `command` with `arguments`; its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        self.send(command, arguments, None)
    }

    /// Runs `command` with `fd` passed alongside (`getfd`, `add-fd`): QEMU takes the
    /// descriptor from the message that carries the command.
    pub fn execute_with_fd(
        &mut self,
        command: &str,
        arguments: Value,
        fd: BorrowedFd<'_>,
    ) -> Result<Value, QmpError> {
        self.send(command, arguments, Some(fd))
    }

    /// Polls `query-migrate` until the migration (either way) completed; fails on `failed` or
    /// `cancelled`, or at the deadline.
    pub fn await_migration(&mut self) -> Result<(), QmpError> {
        loop {
            let state = self.execute("query-migrate", json!({}))?;
            match state.get("status").and_then(Value::as_str) {
                Some("completed") => return Ok(()),
                Some(status @ ("failed" | "cancelled")) => {
                    return Err(QmpError::Migration {
                        status: status.to_owned(),
                        detail: state
                            .get("error-desc")
                            .and_then(Value::as_str)
                            .unwrap_or("QEMU gave no reason")
                            .to_owned(),
                    });
                }
                _ => {}
            }
            if Instant::now() + MIGRATE_POLL >= self.deadline {
                return Err(QmpError::Timeout {
                    step: "migration".into(),
                    waited_ms: 0,
                });
            }
            std::thread::sleep(MIGRATE_POLL);
        }
    }

    fn send(
        &mut self,
        command: &str,
        arguments: Value,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<Value, QmpError> {
        let mut line = json!({"execute": command, "arguments": arguments}).to_string();
        line.push('\n');
        let io = |e: std::io::Error| QmpError::Io {
            step: format!("sending {command}"),
            source: e,
        };
        let raw = fd.map(|f| [f.as_raw_fd()]);
        let cmsgs: Vec<ControlMessage<'_>> = raw
            .as_ref()
            .map(|r| vec![ControlMessage::ScmRights(r)])
            .unwrap_or_default();
        let mut sent = 0;
        while sent < line.len() {
            // The descriptor rides on the first piece only.
            let control: &[ControlMessage<'_>] = if sent == 0 { &cmsgs } else { &[] };
            let n = sendmsg::<()>(
                self.stream.as_raw_fd(),
                &[IoSlice::new(&line.as_bytes()[sent..])],
                control,
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(|e| io(std::io::Error::from(e)))?;
            sent += n;
        }
        loop {
            let answer = self.read_message(command)?;
            if answer.get("event").is_some() {
                continue;
            }
            if let Some(value) = answer.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = answer.get("error") {
                let field = |k: &str| {
                    error
                        .get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                return Err(QmpError::Command {
                    command: command.to_owned(),
                    class: field("class"),
                    desc: field("desc"),
                });
            }
            return Err(QmpError::Protocol {
                step: command.to_owned(),
                text: short(&answer.to_string()),
            });
        }
    }

    fn read_message(&mut self, step: &str) -> Result<Value, QmpError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(QmpError::Timeout {
                step: step.to_owned(),
                waited_ms: 0,
            });
        }
        let started = Instant::now();
        self.stream
            .set_read_timeout(Some(left))
            .map_err(|e| QmpError::Io {
                step: step.to_owned(),
                source: e,
            })?;
        let mut line = Vec::new();
        let read = (&mut self.reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line);
        match read {
            Ok(0) => Err(QmpError::Io {
                step: step.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "QEMU closed the socket",
                ),
            }),
            Ok(_) => serde_json::from_slice(&line).map_err(|_| QmpError::Protocol {
                step: step.to_owned(),
                text: short(&String::from_utf8_lossy(&line)),
            }),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(QmpError::Timeout {
                    step: step.to_owned(),
                    waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                })
            }
            Err(e) => Err(QmpError::Io {
                step: step.to_owned(),
                source: e,
            }),
        }
    }
}

fn short(text: &str) -> String {
    text.chars().take(300).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixListener;

    /// A scripted QEMU: answers each command line with the next canned line(s), records the
    /// commands and whether a descriptor came with each.
    pub(crate) fn fake_qemu(
        dir: &Path,
        answers: Vec<&'static str>,
    ) -> std::thread::JoinHandle<Vec<(Value, bool)>> {
        let listener = UnixListener::bind(dir.join("qmp.sock")).expect("bind");
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            conn.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                .expect("greet");
            let mut seen = Vec::new();
            let mut answers = answers.into_iter();
            loop {
                let mut buf = vec![0u8; 4096];
                let mut fds = nix::cmsg_space!([std::os::fd::RawFd; 1]);
                let mut iov = [std::io::IoSliceMut::new(&mut buf)];
                let msg = nix::sys::socket::recvmsg::<()>(
                    conn.as_raw_fd(),
                    &mut iov,
                    Some(&mut fds),
                    MsgFlags::empty(),
                )
                .expect("recvmsg");
                let n = msg.bytes;
                let got_fd = msg.cmsgs().expect("cmsgs").next().is_some();
                if n == 0 {
                    return seen;
                }
                let text = String::from_utf8_lossy(&iov[0][..n]).into_owned();
                for line in text.lines() {
                    seen.push((serde_json::from_str(line).expect("json"), got_fd));
                    let Some(answer) = answers.next() else {
                        return seen;
                    };
                    conn.write_all(answer.as_bytes()).expect("answer");
                }
            }
        })
    }

    #[test]
    fn commands_events_errors_and_a_passed_descriptor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = fake_qemu(
            dir.path(),
            vec![
                "{\"return\": {}}\n",
                "{\"event\": \"STOP\"}\n{\"return\": {}}\n",
                "{\"return\": {}}\n",
                "{\"error\": {\"class\": \"GenericError\", \"desc\": \"State blocked by non-migratable device\"}}\n",
                "{\"return\": {\"status\": \"active\"}}\n",
                "{\"return\": {\"status\": \"completed\"}}\n",
            ],
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut qmp = Qmp::connect(&dir.path().join("qmp.sock"), deadline).expect("connect");
        assert_eq!(qmp.execute("stop", json!({})).expect("stop"), json!({}));
        let file = tempfile::tempfile().expect("file");
        qmp.execute_with_fd(
            "getfd",
            json!({"fdname": "vmstate"}),
            std::os::fd::AsFd::as_fd(&file),
        )
        .expect("getfd");
        let err = qmp
            .execute("migrate", json!({"uri": "fd:vmstate"}))
            .expect_err("refused");
        assert!(
            matches!(&err, QmpError::Command { class, desc, .. }
                if class == "GenericError" && desc.contains("non-migratable")),
            "{err}"
        );
        qmp.await_migration().expect("completed");
        drop(qmp);
        let seen = server.join().expect("server");
        let names: Vec<(&str, bool)> = seen
            .iter()
            .map(|(v, fd)| (v["execute"].as_str().unwrap_or_default(), *fd))
            .collect();
        assert_eq!(
            names,
            [
                ("qmp_capabilities", false),
                ("stop", false),
                ("getfd", true),
                ("migrate", false),
                ("query-migrate", false),
                ("query-migrate", false)
            ]
        );
        assert_eq!(seen[2].0["arguments"]["fdname"], "vmstate");
    }

    #[test]
    fn a_failed_migration_carries_qemus_words_and_silence_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _server = fake_qemu(
            dir.path(),
            vec![
                "{\"return\": {}}\n",
                "{\"return\": {\"status\": \"failed\", \"error-desc\": \"load of migration failed: Input/output error\"}}\n",
            ],
        );
        let mut qmp = Qmp::connect(
            &dir.path().join("qmp.sock"),
            Instant::now() + Duration::from_secs(10),
        )
        .expect("connect");
        let err = qmp.await_migration().expect_err("failed");
        assert!(
            matches!(&err, QmpError::Migration { status, detail }
                if status == "failed" && detail.contains("Input/output")),
            "{err}"
        );
        // The fake has no more answers: the next command meets the deadline, not a hang.
        qmp.set_deadline(Instant::now() + Duration::from_millis(200));
        let err = qmp.execute("cont", json!({})).expect_err("silence");
        assert!(
            matches!(err, QmpError::Timeout { .. } | QmpError::Io { .. }),
            "{err}"
        );
    }
}
