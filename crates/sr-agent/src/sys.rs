//! The only `unsafe` of the agent: taking ownership of the fd `accept(2)` returns (nix gives
//! it as a `RawFd`).
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::sys::socket::{SockFlag, accept4};

/// Accepts one connection on the listening socket `listener`, close-on-exec.
pub fn accept(listener: &OwnedFd) -> nix::Result<OwnedFd> {
    let fd = accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC)?;
    // SAFETY: accept4 just returned this fd, open and owned by nothing else in the process.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
