//! The host side of a guest's virtio-vsock, as both VMMs present it: Firecracker's "hybrid
//! vsock" Unix socket, which vhost-device-vsock also serves for QEMU. A client connects to the
//! socket, writes `CONNECT <port>\n` and reads `OK <host port>\n`; the connection is then a
//! byte stream to the guest's AF_VSOCK listener on that port. No crate does this handshake; it
//! is a dozen lines, written here once for both VMMs.
//!
//! The answer is read a byte at a time so that nothing the guest sends right after it is
//! consumed with it. Before the guest listens, the VMM closes the connection (or refuses it):
//! [`connect_when_ready`] retries such attempts until a deadline, which is how the runner waits
//! for a booting guest's agent.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The longest answer line accepted (`OK 4294967295\n` is 14 bytes).
const MAX_ANSWER: usize = 64;

/// How long one attempt waits for the answer to its `CONNECT` before it is abandoned and a new
/// one made. Longer than the guest agent's wait for a setup line (10 s), after which the agent
/// drops a connection that never spoke and accepts the next: an abandoned attempt the agent did
/// accept never holds it when the next one arrives. Once, under heavy load, a `CONNECT` stayed
/// unanswered for a whole 56 s boot wait while the agent listened.
pub const ANSWER_WAIT: Duration = Duration::from_secs(15);

/// Why the handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// The Unix socket could not be reached (the VMM is not up, or gone).
    #[error("connecting to {path}: {source}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing the request or reading the answer failed.
    #[error("the vsock handshake on {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The VMM closed the connection without answering: nothing in the guest listens on the
    /// port (yet).
    #[error("{path}: nothing in the guest listens on vsock port {port}")]
    NotListening {
        /// The socket.
        path: PathBuf,
        /// The guest port.
        port: u32,
    },
    /// The answer was not `OK <port>`.
    #[error("{path}: the VMM answered {answer:?} to CONNECT {port}")]
    Refused {
        /// The socket.
        path: PathBuf,
        /// The guest port.
        port: u32,
        /// What it answered (lossy, at most 64 bytes).
        answer: String,
    },
    /// No answer within the time allowed.
    #[error("{path}: no answer to CONNECT {port} within {after:?}")]
    Timeout {
        /// The socket.
        path: PathBuf,
        /// The guest port.
        port: u32,
        /// The time allowed.
        after: Duration,
    },
}

impl VsockError {
    /// Whether a later attempt may succeed (the guest is still booting, or its VMM starting,
    /// or an answer got lost).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            VsockError::Connect { .. }
                | VsockError::NotListening { .. }
                | VsockError::Timeout { .. }
        )
    }
}

/// A stream to the guest's listener on `port`, through the hybrid-vsock socket at `uds`; the
/// handshake must finish within `timeout`. Returns the stream and the host-side port the VMM
/// assigned.
pub fn connect(uds: &Path, port: u32, timeout: Duration) -> Result<(UnixStream, u32), VsockError> {
    let path = uds.to_path_buf();
    let io = |source| VsockError::Io {
        path: path.clone(),
        source,
    };
    let mut s = UnixStream::connect(uds).map_err(|source| VsockError::Connect {
        path: path.clone(),
        source,
    })?;
    s.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
        .map_err(io)?;
    s.set_write_timeout(Some(timeout.max(Duration::from_millis(1))))
        .map_err(io)?;
    // vhost-device-vsock closes a connection at once while the guest's vsock device is not
    // up yet (early boot): the request then meets a closed socket, as for no listener.
    s.write_all(format!("CONNECT {port}\n").as_bytes())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                VsockError::NotListening {
                    path: path.clone(),
                    port,
                }
            }
            _ => io(e),
        })?;
    let mut line = Vec::with_capacity(16);
    let mut byte = [0u8; 1];
    loop {
        match s.read(&mut byte) {
            Ok(0) if line.is_empty() => {
                return Err(VsockError::NotListening { path, port });
            }
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => {
                line.push(byte[0]);
                if line.len() > MAX_ANSWER {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(VsockError::Timeout {
                    path,
                    port,
                    after: timeout,
                });
            }
            // A reset before any answer: the VMM dropped it, as for no listener.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && line.is_empty() => {
                return Err(VsockError::NotListening { path, port });
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    let host_port = parse_ok(&line).ok_or_else(|| VsockError::Refused {
        path: path.clone(),
        port,
        answer: String::from_utf8_lossy(&line[..line.len().min(MAX_ANSWER)]).into_owned(),
    })?;
    s.set_read_timeout(None).map_err(io)?;
    s.set_write_timeout(None).map_err(io)?;
    Ok((s, host_port))
}

/// `OK <decimal port>`, exactly.
fn parse_ok(line: &[u8]) -> Option<u32> {
    let digits = line.strip_prefix(b"OK ")?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// [`connect`], each attempt waiting at most `answer_wait` ([`ANSWER_WAIT`]) for its answer,
/// retried every `every` while the failure is transient, until `deadline`; the last failure
/// when it passes.
pub fn connect_when_ready(
    uds: &Path,
    port: u32,
    deadline: Instant,
    every: Duration,
    answer_wait: Duration,
) -> Result<(UnixStream, u32), VsockError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match connect(uds, port, left.min(answer_wait)) {
            Err(e) if e.is_transient() && Instant::now() + every < deadline => {
                std::thread::sleep(every);
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::os::unix::net::UnixListener;

    /// A fake VMM socket: each accepted connection gets `answer(request line)` written back,
    /// then `after` (what the guest would send at once), then an echo of what comes.
    fn fake(
        dir: &Path,
        answers: Vec<Option<&'static [u8]>>,
    ) -> (PathBuf, std::thread::JoinHandle<Vec<String>>) {
        let path = dir.join("vsock.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let h = std::thread::spawn(move || {
            let mut requests = Vec::new();
            for answer in answers {
                let (s, _) = listener.accept().unwrap();
                let mut r = std::io::BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                requests.push(line);
                let mut w = s;
                match answer {
                    None => drop(w),
                    Some(a) if a == b"SILENT" => std::thread::sleep(Duration::from_millis(400)),
                    // The client may hang up as soon as it has read the answer (a refusal, or
                    // a test that only wanted the port): writes after it may meet EPIPE.
                    Some(a) => {
                        let _ = w.write_all(a);
                        let _ = w.write_all(b"hello from the guest");
                        let mut buf = [0u8; 5];
                        if r.read_exact(&mut buf).is_ok() {
                            let _ = w.write_all(&buf);
                        }
                    }
                }
            }
            requests
        });
        (path, h)
    }

    #[test]
    fn ok_gives_a_stream_that_loses_nothing_the_guest_sent_right_after() {
        let dir = tempfile::tempdir().unwrap();
        let (path, h) = fake(dir.path(), vec![Some(b"OK 1073741824\n")]);
        let (mut s, host_port) = connect(&path, 1024, Duration::from_secs(5)).unwrap();
        assert_eq!(host_port, 1_073_741_824);
        let mut hello = [0u8; 20];
        s.read_exact(&mut hello).unwrap();
        assert_eq!(&hello, b"hello from the guest");
        s.write_all(b"ping!").unwrap();
        let mut back = [0u8; 5];
        s.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"ping!");
        assert_eq!(h.join().unwrap(), ["CONNECT 1024\n"]);
    }

    #[test]
    fn no_listener_garbage_and_silence_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let (path, h) = fake(
            dir.path(),
            vec![
                None,
                Some(b"NO 1024\n"),
                Some(b"OK \n"),
                Some(b"OK 12x\n"),
                Some(&[b'O'; 100]),
                Some(b"SILENT"),
            ],
        );
        let t = Duration::from_secs(5);
        assert!(matches!(
            connect(&path, 7, t),
            Err(VsockError::NotListening { port: 7, .. })
        ));
        for _ in 0..4 {
            let e = connect(&path, 7, t).unwrap_err();
            assert!(matches!(e, VsockError::Refused { .. }), "{e}");
            assert!(!e.is_transient());
        }
        let e = connect(&path, 7, Duration::from_millis(100)).unwrap_err();
        assert!(matches!(e, VsockError::Timeout { .. }), "{e}");
        h.join().unwrap();
        let gone = dir.path().join("nothing.sock");
        let e = connect(&gone, 7, t).unwrap_err();
        assert!(
            matches!(e, VsockError::Connect { .. }) && e.is_transient(),
            "{e}"
        );
    }

    #[test]
    fn a_booting_guest_is_waited_for_until_it_listens_or_the_deadline_passes() {
        let dir = tempfile::tempdir().unwrap();
        let (path, h) = fake(dir.path(), vec![None, None, Some(b"OK 5\n")]);
        let deadline = Instant::now() + Duration::from_secs(10);
        let (_, port) =
            connect_when_ready(&path, 52, deadline, Duration::from_millis(10), ANSWER_WAIT)
                .unwrap();
        assert_eq!(port, 5);
        assert_eq!(h.join().unwrap().len(), 3);
        // Nothing ever listens: the last transient failure, once the deadline has passed.
        let never = dir.path().join("never.sock");
        let t0 = Instant::now();
        let e = connect_when_ready(
            &never,
            52,
            Instant::now() + Duration::from_millis(200),
            Duration::from_millis(20),
            ANSWER_WAIT,
        )
        .unwrap_err();
        assert!(matches!(e, VsockError::Connect { .. }), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn an_unanswered_connect_is_abandoned_and_made_again() {
        // A VMM that serves connections at once: the first CONNECT is never answered (held
        // open), the second is.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vsock.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let h = std::thread::spawn(move || {
            let (silent, _) = listener.accept().unwrap();
            let (answered, _) = listener.accept().unwrap();
            let mut line = String::new();
            std::io::BufReader::new(answered.try_clone().unwrap())
                .read_line(&mut line)
                .unwrap();
            (&answered).write_all(b"OK 9\n").unwrap();
            drop(silent);
            line
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let (_, port) = connect_when_ready(
            &path,
            52,
            deadline,
            Duration::from_millis(10),
            Duration::from_millis(100),
        )
        .unwrap();
        assert_eq!(port, 9);
        assert_eq!(h.join().unwrap(), "CONNECT 52\n");
    }

    #[test]
    fn a_vmm_that_drops_the_connection_before_reading_means_nothing_listens_yet() {
        // vhost-device-vsock before the guest's device is up: accept, close at once. The
        // request then meets a closed socket (EPIPE) or its answer is EOF; both are transient.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vsock.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let h = std::thread::spawn(move || {
            for _ in 0..20 {
                let (s, _) = listener.accept().unwrap();
                s.shutdown(std::net::Shutdown::Both).unwrap();
                drop(s);
            }
        });
        for _ in 0..20 {
            let e = connect(&path, 1024, Duration::from_secs(5)).unwrap_err();
            assert!(
                matches!(e, VsockError::NotListening { port: 1024, .. }),
                "{e}"
            );
            assert!(e.is_transient());
        }
        h.join().unwrap();
    }
}
