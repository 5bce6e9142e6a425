//! The host's route to an IPv4 address, asked of the kernel over a netlink socket in-process
//! (`RTM_GETROUTE`, the request `ip route get` sends), instead of an `ip -j route get` child:
//! each child costs 1.4-1.9 ms here, on the path of every allowlist run.
//!
//! The message is built and the reply parsed by pure functions ([`request`], [`parse_reply`]);
//! [`lookup`] does the I/O. The kernel answers with the route the host's routing (rules and
//! tables included) would use, and the executor maps its output interface to its name.

use std::net::Ipv4Addr;

use super::netlink::{self, NLMSG_HDRLEN};

const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const NLM_F_REQUEST: u16 = 1;
const AF_INET: u8 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTMSG_LEN: usize = 12;

/// An `RTM_GETROUTE` request for `dst` with sequence number `seq`.
pub fn request(dst: Ipv4Addr, seq: u32) -> Vec<u8> {
    let len = NLMSG_HDRLEN + RTMSG_LEN + 8;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
    m.extend_from_slice(&RTM_GETROUTE.to_ne_bytes());
    m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    // rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    m.extend_from_slice(&[AF_INET, 32, 0, 0, 0, 0, 0, 0]);
    m.extend_from_slice(&0u32.to_ne_bytes());
    // RTA_DST.
    m.extend_from_slice(&8u16.to_ne_bytes());
    m.extend_from_slice(&RTA_DST.to_ne_bytes());
    m.extend_from_slice(&dst.octets());
    m
}

/// The output interface index of the route in a reply to the request with `seq`. `Err`: the
/// kernel's error (no route: `ENETUNREACH`...), or a reply that is not one.
pub fn parse_reply(reply: &[u8], seq: u32) -> Result<u32, String> {
    for m in netlink::messages(reply)?
        .into_iter()
        .filter(|m| m.seq == seq)
    {
        if let Some(errno) = m.errno() {
            return Err(format!(
                "no route: {}",
                std::io::Error::from_raw_os_error(errno)
            ));
        }
        if m.kind == RTM_NEWROUTE {
            let attrs = netlink::attrs(m.body.get(RTMSG_LEN..).ok_or("short rtmsg")?)
                .map_err(|e| format!("route {e}"))?;
            let (_, oif) = attrs
                .iter()
                .find(|(kind, _)| *kind == RTA_OIF)
                .ok_or("the route has no output interface")?;
            return netlink::u32_at(oif, 0).ok_or_else(|| "short RTA_OIF".to_owned());
        }
    }
    Err("no answer to the route request".to_owned())
}

/// The name of the interface the host routes `dst` through.
pub fn lookup(dst: Ipv4Addr) -> Result<String, String> {
    use nix::sys::socket::{MsgFlags, SockProtocol, recv, send};
    use std::os::fd::AsRawFd;
    let fd = netlink::open(SockProtocol::NetlinkRoute)?;
    let seq = std::process::id();
    send(fd.as_raw_fd(), &request(dst, seq), MsgFlags::empty())
        .map_err(|e| format!("netlink send: {e}"))?;
    let mut buf = vec![0u8; 8192];
    let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())
        .map_err(|e| format!("netlink recv: {e}"))?;
    let index = parse_reply(&buf[..n], seq)?;
    nix::net::if_::if_indextoname(index)
        .map_err(|e| format!("interface {index}: {e}"))
        .map(|n| n.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::network::netlink::build::{self, attr};
    use crate::network::netlink::{NLMSG_ERROR, u16_at, u32_at};

    fn reply(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        build::message(kind, 0, seq, body)
    }

    #[test]
    fn the_request_is_an_rtm_getroute_for_one_address() {
        let m = request(Ipv4Addr::new(192, 0, 2, 1), 7);
        assert_eq!(m.len(), 36);
        assert_eq!(u32_at(&m, 0), Some(36));
        assert_eq!(u16_at(&m, 4), Some(RTM_GETROUTE));
        assert_eq!(u32_at(&m, 8), Some(7));
        assert_eq!(m[16], AF_INET);
        assert_eq!(m[17], 32);
        assert_eq!(&m[32..36], &[192, 0, 2, 1]);
    }

    #[test]
    fn replies_give_the_output_interface_or_the_error() {
        let mut body = vec![0u8; RTMSG_LEN];
        body.extend(attr(RTA_DST, &[192, 0, 2, 1]));
        body.extend(attr(15, &[0, 0, 0, 0, 0]));
        body.extend(attr(RTA_OIF, &3u32.to_ne_bytes()));
        assert_eq!(parse_reply(&reply(RTM_NEWROUTE, 9, &body), 9), Ok(3));
        // Another sequence number is not our answer.
        assert!(parse_reply(&reply(RTM_NEWROUTE, 8, &body), 9).is_err());
        let unreachable = reply(NLMSG_ERROR, 9, &(-101i32).to_ne_bytes());
        let err = parse_reply(&unreachable, 9).unwrap_err();
        assert!(err.contains("unreachable"), "{err}");
        // Truncated or lying lengths are errors, never panics.
        let r = reply(RTM_NEWROUTE, 9, &body);
        for cut in 0..r.len() {
            let _ = parse_reply(&r[..cut], 9);
        }
        let mut bad = r.clone();
        bad[NLMSG_HDRLEN + RTMSG_LEN] = 200;
        assert!(parse_reply(&bad, 9).is_err());
        let no_oif = reply(RTM_NEWROUTE, 9, &[0u8; RTMSG_LEN]);
        assert!(parse_reply(&no_oif, 9).is_err());
    }

    /// The kernel's answer for loopback is `lo`, as `ip route get 127.0.0.1` says.
    #[test]
    fn loopback_routes_through_lo() {
        assert_eq!(lookup(Ipv4Addr::LOCALHOST).as_deref(), Ok("lo"));
    }
}
