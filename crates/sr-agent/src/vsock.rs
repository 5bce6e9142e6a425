//! The agent's listening socket in the guest: AF_VSOCK on the port the kernel command line
//! names, any CID (the host reaches it through the VMM's hybrid-vsock socket).

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, VsockAddr, bind, listen, socket,
};

use crate::error::AgentError;
use crate::stream::FdStream;
use crate::sys;

const PHASE: &str = "boot.vsock";

/// A listening vsock socket.
#[derive(Debug)]
pub struct Listener(OwnedFd);

impl Listener {
    /// Listens on `port` (any CID).
    pub fn bind(port: u32) -> Result<Self, AgentError> {
        let fd = socket(
            AddressFamily::Vsock,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| AgentError::sys(PHASE, "creating an AF_VSOCK socket (is vsock loaded?)", e))?;
        bind(fd.as_raw_fd(), &VsockAddr::new(libc::VMADDR_CID_ANY, port))
            .map_err(|e| AgentError::sys(PHASE, format!("binding vsock port {port}"), e))?;
        let backlog = Backlog::new(4).unwrap_or(Backlog::MAXCONN);
        listen(&fd, backlog)
            .map_err(|e| AgentError::sys(PHASE, format!("listening on vsock port {port}"), e))?;
        Ok(Listener(fd))
    }

    /// Waits for the host's next connection.
    pub fn accept(&self) -> Result<FdStream, AgentError> {
        loop {
            match sys::accept(&self.0) {
                Ok(fd) => return Ok(FdStream::new(fd)),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(AgentError::sys(PHASE, "accepting a connection", e)),
            }
        }
    }
}
