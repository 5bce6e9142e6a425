//! The connection as a byte stream: [`FdStream`] wraps a connected socket's fd (vsock in the
//! guest, a Unix socket in the test mode) so the shared serve loop can read, write and poll it;
//! [`read_line`] and [`write_line`] speak the setup's JSON lines on it.
//!
//! The setup line is read without consuming a byte past its newline (peek, then take exactly
//! the line), so a host that sends its first agent-protocol frame right behind it loses
//! nothing: the serve loop's decoder starts at the socket's next byte.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, recv};

/// A connected stream socket.
#[derive(Debug)]
pub struct FdStream(OwnedFd);

impl FdStream {
    /// Wraps a connected stream socket.
    pub fn new(fd: OwnedFd) -> Self {
        FdStream(fd)
    }
}

impl From<std::os::unix::net::UnixStream> for FdStream {
    fn from(s: std::os::unix::net::UnixStream) -> Self {
        FdStream(OwnedFd::from(s))
    }
}

impl AsFd for FdStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Read for FdStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match nix::unistd::read(&self.0, buf) {
                Err(Errno::EINTR) => continue,
                r => return r.map_err(io::Error::from),
            }
        }
    }
}

impl Write for FdStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match nix::unistd::write(&self.0, buf) {
                Err(Errno::EINTR) => continue,
                r => return r.map_err(io::Error::from),
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Why no line was read.
#[derive(Debug, PartialEq, Eq)]
pub enum LineError {
    /// The peer closed the connection; `bytes` arrived before (without a newline).
    Closed {
        /// How many bytes came first.
        bytes: usize,
    },
    /// No newline within `max` bytes.
    TooLong {
        /// The limit.
        max: usize,
    },
    /// The socket failed.
    Io(Errno),
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineError::Closed { bytes: 0 } => write!(f, "the host closed the connection"),
            LineError::Closed { bytes } => write!(
                f,
                "the host closed the connection after {bytes} bytes without a newline"
            ),
            LineError::TooLong { max } => write!(f, "no newline within {max} bytes"),
            LineError::Io(e) => write!(f, "reading the connection: {}", e.desc()),
        }
    }
}

fn recv_retry(fd: &impl AsFd, buf: &mut [u8], flags: MsgFlags) -> Result<usize, LineError> {
    loop {
        match recv(fd.as_fd().as_raw_fd(), buf, flags) {
            Err(Errno::EINTR) => continue,
            r => return r.map_err(LineError::Io),
        }
    }
}

/// Reads one line (without its newline), at most `max` bytes before the newline, consuming
/// nothing after it.
pub fn read_line(sock: &impl AsFd, max: usize) -> Result<Vec<u8>, LineError> {
    let mut line = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let room = (max + 1 - line.len()).min(buf.len());
        let peeked = recv_retry(sock, &mut buf[..room], MsgFlags::MSG_PEEK)?;
        if peeked == 0 {
            return Err(LineError::Closed { bytes: line.len() });
        }
        let (take, done) = match buf[..peeked].iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (peeked, false),
        };
        // The bytes were peeked, so this read returns them (one reader; it may still return
        // fewer, hence the loop).
        let mut got = 0;
        while got < take {
            let n = recv_retry(sock, &mut buf[got..take], MsgFlags::empty())?;
            if n == 0 {
                return Err(LineError::Closed {
                    bytes: line.len() + got,
                });
            }
            got += n;
        }
        line.extend_from_slice(&buf[..take]);
        if done {
            line.pop();
            return Ok(line);
        }
        if line.len() > max {
            return Err(LineError::TooLong { max });
        }
    }
}

/// Writes `value` as one JSON line.
pub fn write_line(sock: &mut impl Write, value: &impl serde::Serialize) -> io::Result<()> {
    let mut bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    bytes.push(b'\n');
    sock.write_all(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_line_leaves_what_follows_it_on_the_socket() -> io::Result<()> {
        let (mut a, b) = UnixStream::pair()?;
        a.write_all(b"{\"x\":1}\n\x00\x00\x00\x01")?;
        assert_eq!(read_line(&b, 100), Ok(b"{\"x\":1}".to_vec()));
        let mut rest = [0u8; 4];
        let mut b = FdStream::from(b);
        b.read_exact(&mut rest)?;
        assert_eq!(rest, [0, 0, 0, 1]);
        Ok(())
    }

    #[test]
    fn a_long_or_cut_line_is_refused() -> io::Result<()> {
        let (mut a, b) = UnixStream::pair()?;
        a.write_all(&[b'x'; 300])?;
        assert_eq!(read_line(&b, 100), Err(LineError::TooLong { max: 100 }));
        let (mut a, b) = UnixStream::pair()?;
        a.write_all(b"abc")?;
        drop(a);
        assert_eq!(read_line(&b, 100), Err(LineError::Closed { bytes: 3 }));
        Ok(())
    }
}
