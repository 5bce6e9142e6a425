//! The netlink framing the network module's in-process requests share ([`super::route`],
//! [`super::rtnl`], [`super::counters`]): opening a socket, and walking a received buffer's
//! messages and a message's attributes with every length checked. Each user builds its own
//! messages and reads its own payloads; only the framing is here.
//!
//! Written by hand rather than with the `netlink-packet-*` crates: the three users need a
//! handful of fixed messages (a route lookup, a veth, addresses, a route, two nftables dumps),
//! and this framing is the part they would share; the crates' typed models of every message
//! would add more code to the build than this module holds.

use std::os::fd::OwnedFd;

/// Length of `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;
/// `NLMSG_ERROR`: an error, or with errno 0 an acknowledgement.
pub const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`: the end of a dump.
pub const NLMSG_DONE: u16 = 3;

/// The native-endian u16 at `at`.
pub fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// The native-endian u32 at `at`.
pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// One message of a received buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// `nlmsg_type`.
    pub kind: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// What follows the header.
    pub body: &'a [u8],
}

impl Message<'_> {
    /// The errno of an `NLMSG_ERROR` message, positive (0: an acknowledgement); None for
    /// another kind or a body too short to hold one.
    pub fn errno(&self) -> Option<i32> {
        (self.kind == NLMSG_ERROR)
            .then(|| u32_at(self.body, 0))
            .flatten()
            .map(|e| (e as i32).wrapping_neg())
    }
}

/// The messages in `buf`, in order. `Err` when a header is cut short or a length points
/// outside the buffer.
pub fn messages(buf: &[u8]) -> Result<Vec<Message<'_>>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + NLMSG_HDRLEN <= buf.len() {
        let len = u32_at(buf, at).ok_or("short header")? as usize;
        let kind = u16_at(buf, at + 4).ok_or("short header")?;
        let seq = u32_at(buf, at + 8).ok_or("short header")?;
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            return Err(format!("netlink message length {len} out of bounds"));
        }
        out.push(Message {
            kind,
            seq,
            body: &buf[at + NLMSG_HDRLEN..at + len],
        });
        at += (len + 3) & !3;
    }
    Ok(out)
}

/// The attributes in `b`: (type, value), the type's top bits (`NLA_F_NESTED`,
/// `NLA_F_NET_BYTEORDER`) cleared. `Err` when an attribute's length points outside `b`.
pub fn attrs(b: &[u8]) -> Result<Vec<(u16, &[u8])>, String> {
    const NLA_TYPE_MASK: u16 = 0x3fff;
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= b.len() {
        let len = usize::from(u16_at(b, at).ok_or("short attribute")?);
        let kind = u16_at(b, at + 2).ok_or("short attribute")? & NLA_TYPE_MASK;
        if len < 4 || at + len > b.len() {
            return Err(format!("attribute length {len} out of bounds"));
        }
        out.push((kind, &b[at + 4..at + len]));
        at += (len + 3) & !3;
    }
    Ok(out)
}

/// A bound netlink socket of `protocol`, in the calling thread's network namespace.
pub fn open(protocol: nix::sys::socket::SockProtocol) -> Result<OwnedFd, String> {
    use nix::sys::socket::{AddressFamily, NetlinkAddr, SockFlag, SockType, bind, socket};
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        protocol,
    )
    .map_err(|e| format!("netlink socket: {e}"))?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(|e| format!("netlink bind: {e}"))?;
    Ok(fd)
}

/// Netlink messages and attributes as the kernel frames them, for the parsers' tests.
#[cfg(test)]
pub mod build {
    use super::NLMSG_HDRLEN;

    /// One message (`nlmsg_flags` as given, pid 0), padded to 4 bytes.
    pub fn message(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + body.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        pad(&mut m);
        m
    }

    /// One attribute, padded to 4 bytes.
    pub fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        pad(&mut a);
        a
    }

    fn pad(v: &mut Vec<u8>) {
        while v.len() % 4 != 0 {
            v.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn msg(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        build::message(kind, 0, seq, body)
    }

    #[test]
    fn messages_are_walked_in_order_with_their_padding() {
        let mut buf = msg(16, 7, b"abc");
        buf.extend(msg(NLMSG_ERROR, 8, &(-17i32).to_ne_bytes()));
        buf.extend(msg(NLMSG_DONE, 8, &[]));
        let m = messages(&buf).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!((m[0].kind, m[0].seq, m[0].body), (16, 7, &b"abc"[..]));
        assert_eq!(m[0].errno(), None);
        assert_eq!(m[1].errno(), Some(17));
        assert_eq!(m[2].kind, NLMSG_DONE);
    }

    #[test]
    fn lengths_outside_the_buffer_are_errors_never_panics() {
        let mut buf = msg(16, 7, b"abcd");
        buf[0] = 200;
        assert!(messages(&buf).is_err());
        buf[0] = 3;
        assert!(messages(&buf).is_err());
        assert_eq!(messages(&buf[..10]).unwrap(), vec![]);
        assert!(attrs(&[9, 0, 1, 0, 0]).is_err());
        assert!(attrs(&[2, 0, 1, 0]).is_err());
        assert_eq!(
            attrs(&[5, 0, 1, 0x80, 9, 0, 0, 0]).unwrap(),
            vec![(1, &[9u8][..])]
        );
    }
}
