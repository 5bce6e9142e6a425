//! The only `unsafe` of the agent: taking ownership of the fd `accept(2)` returns (nix gives
//! it as a `RawFd`), and the `RNDRESEEDCRNG` ioctl (nix's ioctl macros make unsafe functions).
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::sys::socket::{SockFlag, accept4};

/// Accepts one connection on the listening socket `listener`, close-on-exec.
pub fn accept(listener: &OwnedFd) -> nix::Result<OwnedFd> {
    let fd = accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC)?;
    // SAFETY: accept4 just returned this fd, open and owned by nothing else in the process.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

nix::ioctl_none!(rnd_reseed_crng, b'R', 0x07);

/// Makes the kernel's random number generator reseed now from its input pool (what was just
/// written to `urandom` included), instead of at its next scheduled reseed. Needs root.
pub fn reseed_crng(urandom: &std::fs::File) -> nix::Result<()> {
    // SAFETY: RNDRESEEDCRNG takes no argument and `urandom` is an open descriptor.
    unsafe { rnd_reseed_crng(urandom.as_raw_fd()) }.map(|_| ())
}
