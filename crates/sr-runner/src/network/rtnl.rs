//! Changes to links, addresses and routes over an in-process rtnetlink socket, instead of
//! `ip` and `nsenter` children (each costs 1.4-1.9 ms here, on the path of every allowlist
//! run):
//!
//! * the run's veth pair, its sandbox end put straight into the sandbox's namespace
//!   ([`create_veth`]: `RTM_NEWLINK`, the request `ip link add <host> type veth peer name
//!   <guest> netns <pid>` sends), or into a namespace made ahead of the sandbox
//!   ([`new_namespace`], by a thread that `unshare`s it and ends) and held open by the runner
//!   until the sandbox's init has joined it;
//! * a host-side link's address and link-up ([`address_and_up`]: `RTM_NEWADDR`, then
//!   `RTM_NEWLINK` with `IFF_UP`, what `ip addr add` and `ip link set up` send);
//! * the sandbox's end, from inside the sandbox's namespace ([`configure_in`]: loopback up,
//!   address, link up, default route), by one thread made for it alone that enters the
//!   namespace and ends; no other thread of the runner ever changes namespace.
//!
//! The messages are built and the kernel's acknowledgements parsed by pure functions
//! ([`veth_request`], [`address_request`], [`link_up_request`], [`link_up_by_name_request`],
//! [`default_route_request`], [`parse_ack`]); the functions above do the I/O.

use std::fs::File;
use std::net::Ipv4Addr;

use super::exec::Netns;
use super::netlink;

const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;
const IFF_UP: u32 = 0x1;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_PID: u16 = 19;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;
#[cfg(test)]
const IFINFOMSG_LEN: usize = 16;
/// The kernel's limit on an interface name, its NUL included (`IFNAMSIZ`).
const IFNAMSIZ: usize = 16;

/// A netlink message under construction: header, fixed part, attributes (nested ones by
/// [`Msg::nest`] / [`Msg::end`]).
struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    fn new(kind: u16, flags: u16, seq: u32) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish()
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        Msg {
            buf,
            nests: Vec::new(),
        }
    }

    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }

    /// `ifinfomsg`: family, type, index, flags, change.
    fn ifinfo(&mut self, index: u32, flags: u32, change: u32) -> &mut Self {
        self.bytes(&[AF_UNSPEC, 0, 0, 0])
            .bytes(&index.to_ne_bytes())
            .bytes(&flags.to_ne_bytes())
            .bytes(&change.to_ne_bytes())
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    fn attr(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let len = u16::try_from(4 + value.len()).unwrap_or(u16::MAX);
        self.bytes(&len.to_ne_bytes()).bytes(&kind.to_ne_bytes());
        self.bytes(value);
        self.pad();
        self
    }

    fn attr_str(&mut self, kind: u16, value: &str) -> &mut Self {
        let mut v = value.as_bytes().to_vec();
        v.push(0);
        self.attr(kind, &v)
    }

    fn nest(&mut self, kind: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.bytes(&0u16.to_ne_bytes()).bytes(&kind.to_ne_bytes())
    }

    fn end(&mut self) -> &mut Self {
        if let Some(start) = self.nests.pop() {
            let len = u16::try_from(self.buf.len() - start).unwrap_or(u16::MAX);
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// An interface name the kernel accepts: 1 to 15 bytes, no `/`, no NUL, no whitespace.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() >= IFNAMSIZ
        || name
            .bytes()
            .any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace())
    {
        return Err(format!("{name:?} is not an interface name"));
    }
    Ok(())
}

/// `RTM_NEWLINK` (create, exclusive) of a veth pair: `host` in this namespace, its peer
/// `peer` created in `peer_ns` (by a process in it, or by a descriptor this process holds).
pub fn veth_request(host: &str, peer: &str, peer_ns: Netns, seq: u32) -> Result<Vec<u8>, String> {
    check_name(host)?;
    check_name(peer)?;
    let (ns_kind, ns_id) = match peer_ns {
        Netns::Pid(pid) => (IFLA_NET_NS_PID, pid.to_ne_bytes()),
        Netns::Held(fd) => (IFLA_NET_NS_FD, fd.to_ne_bytes()),
    };
    let mut m = Msg::new(
        RTM_NEWLINK,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        seq,
    );
    m.ifinfo(0, 0, 0)
        .attr_str(IFLA_IFNAME, host)
        .nest(IFLA_LINKINFO)
        .attr_str(IFLA_INFO_KIND, "veth")
        .nest(IFLA_INFO_DATA)
        .nest(VETH_INFO_PEER)
        .ifinfo(0, 0, 0)
        .attr_str(IFLA_IFNAME, peer)
        .attr(ns_kind, &ns_id)
        .end()
        .end()
        .end();
    Ok(m.finish())
}

/// `RTM_NEWADDR` (create, exclusive) of `addr/prefix` on the link with `index`: local and
/// peer address both `addr`, scope global, no broadcast, as `ip addr add <addr>/<prefix> dev
/// <link>` asks.
pub fn address_request(index: u32, addr: Ipv4Addr, prefix: u8, seq: u32) -> Vec<u8> {
    let mut m = Msg::new(
        RTM_NEWADDR,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        seq,
    );
    // ifaddrmsg: family, prefixlen, flags, scope, index.
    m.bytes(&[AF_INET, prefix, 0, 0])
        .bytes(&index.to_ne_bytes())
        .attr(IFA_LOCAL, &addr.octets())
        .attr(IFA_ADDRESS, &addr.octets());
    m.finish()
}

/// `RTM_NEWLINK` setting `IFF_UP` on the link with `index`, as `ip link set <link> up` asks.
pub fn link_up_request(index: u32, seq: u32) -> Vec<u8> {
    let mut m = Msg::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq);
    m.ifinfo(index, IFF_UP, IFF_UP);
    m.finish()
}

/// `RTM_NEWLINK` setting `IFF_UP` on the link named `name` (index 0: the kernel finds it by
/// name), as `ip link set <name> up` asks.
pub fn link_up_by_name_request(name: &str, seq: u32) -> Result<Vec<u8>, String> {
    check_name(name)?;
    let mut m = Msg::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq);
    m.ifinfo(0, IFF_UP, IFF_UP).attr_str(IFLA_IFNAME, name);
    Ok(m.finish())
}

/// `RTM_NEWROUTE` (create, exclusive) of the IPv4 default route via `gateway` in the main
/// table, as `ip route add default via <gateway>` asks (protocol boot, scope universe,
/// unicast; the kernel picks the link that reaches the gateway).
pub fn default_route_request(gateway: Ipv4Addr, seq: u32) -> Vec<u8> {
    let mut m = Msg::new(
        RTM_NEWROUTE,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        seq,
    );
    // rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    m.bytes(&[
        AF_INET,
        0,
        0,
        0,
        RT_TABLE_MAIN,
        RTPROT_BOOT,
        RT_SCOPE_UNIVERSE,
        RTN_UNICAST,
    ])
    .bytes(&0u32.to_ne_bytes())
    .attr(RTA_GATEWAY, &gateway.octets());
    m.finish()
}

/// The kernel's answer to the request with `seq`: `Ok` for an acknowledgement (error 0),
/// [`AckError::Refused`] with the errno of a refusal, [`AckError::NoAnswer`] when `reply`
/// holds no answer to it (a notification), [`AckError::Malformed`] when it is not netlink.
pub fn parse_ack(reply: &[u8], seq: u32) -> Result<(), AckError> {
    let messages = netlink::messages(reply).map_err(|_| AckError::Malformed)?;
    let Some(answer) = messages
        .iter()
        .find(|m| m.seq == seq && m.kind == netlink::NLMSG_ERROR)
    else {
        return Err(AckError::NoAnswer);
    };
    match answer.errno().ok_or(AckError::Malformed)? {
        0 => Ok(()),
        errno => Err(AckError::Refused(errno)),
    }
}

/// Why a request was not acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckError {
    /// The kernel refused it with this errno (or the socket failed with it).
    Refused(i32),
    /// The reply is not a netlink message.
    Malformed,
    /// The reply holds no answer to the request.
    NoAnswer,
}

impl std::fmt::Display for AckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AckError::Refused(errno) => {
                write!(f, "{}", std::io::Error::from_raw_os_error(*errno))
            }
            AckError::Malformed => f.write_str("malformed netlink reply"),
            AckError::NoAnswer => f.write_str("no answer to the netlink request"),
        }
    }
}

/// A `NETLINK_ROUTE` socket of this thread's network namespace.
struct Socket {
    fd: std::os::fd::OwnedFd,
    seq: u32,
}

impl Socket {
    fn open() -> Result<Self, String> {
        Ok(Socket {
            fd: netlink::open(nix::sys::socket::SockProtocol::NetlinkRoute)?,
            seq: std::process::id(),
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `msg` (built with sequence number `seq`) and waits for its acknowledgement.
    fn request(&self, msg: &[u8], seq: u32) -> Result<(), AckError> {
        use nix::sys::socket::{MsgFlags, recv, send};
        use std::os::fd::AsRawFd;
        let io = |e: nix::Error| AckError::Refused(e as i32);
        send(self.fd.as_raw_fd(), msg, MsgFlags::empty()).map_err(io)?;
        let mut buf = vec![0u8; 8192];
        loop {
            let n = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(io)?;
            match parse_ack(&buf[..n], seq) {
                // Another message (a notification) before ours: read on.
                Err(AckError::NoAnswer) if n > 0 => continue,
                other => return other,
            }
        }
    }
}

/// Creates the veth pair `host` (here) / `peer` (in `peer_ns`).
/// `Err`: the refusal, as an `ip`-style message (`File exists`, `No such process`, ...).
pub fn create_veth(host: &str, peer: &str, peer_ns: Netns) -> Result<(), String> {
    let mut sock = Socket::open()?;
    let seq = sock.next_seq();
    sock.request(&veth_request(host, peer, peer_ns, seq)?, seq)
        .map_err(|e| format!("RTM_NEWLINK veth {host}/{peer}: {e}"))
}

/// `a.b.c.d/len` as an address and a prefix length.
fn parse_cidr(cidr: &str) -> Result<(Ipv4Addr, u8), String> {
    cidr.split_once('/')
        .and_then(|(a, p)| Some((a.parse::<Ipv4Addr>().ok()?, p.parse::<u8>().ok()?)))
        .filter(|(_, p)| *p <= 32)
        .ok_or_else(|| format!("{cidr:?} is not an IPv4 address with a prefix length"))
}

/// `addr add <cidr> dev <link>; link set <link> up` over `sock`, in its namespace.
fn address_and_up_on(sock: &mut Socket, link: &str, cidr: &str) -> Result<(), String> {
    check_name(link)?;
    let (addr, prefix) = parse_cidr(cidr)?;
    let index = nix::net::if_::if_nametoindex(link)
        .map_err(|e| format!("Cannot find device {link:?}: {e}"))?;
    let seq = sock.next_seq();
    sock.request(&address_request(index, addr, prefix, seq), seq)
        .map_err(|e| format!("RTM_NEWADDR {cidr} dev {link}: {e}"))?;
    let seq = sock.next_seq();
    sock.request(&link_up_request(index, seq), seq)
        .map_err(|e| format!("RTM_NEWLINK {link} up: {e}"))
}

/// Gives `link` the address `cidr` (`a.b.c.d/len`) and raises it, over one socket.
pub fn address_and_up(link: &str, cidr: &str) -> Result<(), String> {
    check_name(link)?;
    parse_cidr(cidr)?;
    address_and_up_on(&mut Socket::open()?, link, cidr)
}

/// The path that opens `ns` (a descriptor this process holds is reopened through /proc).
fn netns_path(ns: Netns) -> String {
    match ns {
        Netns::Pid(pid) => format!("/proc/{pid}/ns/net"),
        Netns::Held(fd) => format!("/proc/self/fd/{fd}"),
    }
}

/// A new network namespace, held by the returned file and by nothing else: made by a thread
/// made for this alone, which `unshare`s its own network namespace, opens it and ends, so no
/// other thread of the runner ever leaves the runner's namespace. Its loopback is down until
/// [`configure_in`] raises it.
pub fn new_namespace() -> Result<File, String> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("sr-netns-new".into())
            .spawn_scoped(scope, || -> Result<File, String> {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("unshare(CLONE_NEWNET): {e}"))?;
                File::open("/proc/thread-self/ns/net")
                    .map_err(|e| format!("opening the new network namespace: {e}"))
            })
            .map_err(|e| format!("starting the namespace thread: {e}"))?
            .join()
            .unwrap_or_else(|_| Err("the namespace thread panicked".to_owned()))
    })
}

/// Configures the sandbox's end of the link inside `ns`, as `ip -batch` did there: loopback
/// up, `cidr` on `link`, `link` up, default route via `gateway`.
///
/// The namespace is entered by one thread made for this alone, which ends right after:
/// `setns(2)` of a network namespace moves only the calling thread, so no other thread of the
/// runner ever leaves the runner's namespace, and nothing created here (the netlink socket) is
/// used outside the thread.
pub fn configure_in(ns: Netns, link: &str, cidr: &str, gateway: Ipv4Addr) -> Result<(), String> {
    check_name(link)?;
    parse_cidr(cidr)?;
    let which = ns;
    let ns =
        File::open(netns_path(ns)).map_err(|e| format!("the network namespace of {which}: {e}"))?;
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("sr-netns".into())
            .spawn_scoped(scope, move || -> Result<(), String> {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("entering the network namespace of {which}: {e}"))?;
                let mut sock = Socket::open()?;
                let seq = sock.next_seq();
                sock.request(&link_up_by_name_request("lo", seq)?, seq)
                    .map_err(|e| format!("RTM_NEWLINK lo up: {e}"))?;
                address_and_up_on(&mut sock, link, cidr)?;
                let seq = sock.next_seq();
                sock.request(&default_route_request(gateway, seq), seq)
                    .map_err(|e| format!("RTM_NEWROUTE default via {gateway}: {e}"))
            })
            .map_err(|e| format!("starting the namespace thread: {e}"))?;
        worker
            .join()
            .unwrap_or_else(|_| Err("the namespace thread panicked".to_owned()))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::network::netlink::{NLMSG_ERROR, NLMSG_HDRLEN, u16_at, u32_at};

    /// The attributes of a message body: (kind, value), in order.
    fn attrs(body: &[u8]) -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        let mut a = 0;
        while a + 4 <= body.len() {
            let len = usize::from(u16_at(body, a).unwrap());
            let kind = u16_at(body, a + 2).unwrap();
            out.push((kind, body[a + 4..a + len].to_vec()));
            a += (len + 3) & !3;
        }
        out
    }

    #[test]
    fn the_veth_request_names_both_ends_and_the_peers_namespace() {
        let m = veth_request("srabch", "srabcg", Netns::Pid(4242), 7).unwrap();
        assert_eq!(u32_at(&m, 0), Some(m.len() as u32));
        assert_eq!(u16_at(&m, 4), Some(RTM_NEWLINK));
        assert_eq!(
            u16_at(&m, 6),
            Some(NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
        );
        assert_eq!(u32_at(&m, 8), Some(7));
        let top = attrs(&m[NLMSG_HDRLEN + IFINFOMSG_LEN..]);
        assert_eq!(top[0], (IFLA_IFNAME, b"srabch\0".to_vec()));
        assert_eq!(top[1].0, IFLA_LINKINFO);
        let info = attrs(&top[1].1);
        assert_eq!(info[0], (IFLA_INFO_KIND, b"veth\0".to_vec()));
        assert_eq!(info[1].0, IFLA_INFO_DATA);
        let data = attrs(&info[1].1);
        assert_eq!(data.len(), 1);
        assert_eq!(data[0].0, VETH_INFO_PEER);
        // The peer: its own ifinfomsg, then its name and its namespace.
        let peer = attrs(&data[0].1[IFINFOMSG_LEN..]);
        assert_eq!(
            peer,
            [
                (IFLA_IFNAME, b"srabcg\0".to_vec()),
                (IFLA_NET_NS_PID, 4242u32.to_ne_bytes().to_vec())
            ]
        );
        // Every nest's length covers exactly its contents.
        assert_eq!(
            usize::from(u16_at(&m, NLMSG_HDRLEN + IFINFOMSG_LEN + 12).unwrap()) + 12,
            m.len() - NLMSG_HDRLEN - IFINFOMSG_LEN
        );
    }

    #[test]
    fn a_namespace_the_runner_holds_is_named_by_its_descriptor() {
        let m = veth_request("srabch", "srabcg", Netns::Held(17), 7).unwrap();
        let top = attrs(&m[NLMSG_HDRLEN + IFINFOMSG_LEN..]);
        let data = attrs(&attrs(&top[1].1)[1].1);
        let peer = attrs(&data[0].1[IFINFOMSG_LEN..]);
        assert_eq!(peer[1], (IFLA_NET_NS_FD, 17i32.to_ne_bytes().to_vec()));
    }

    #[test]
    fn names_the_kernel_would_refuse_are_refused_here() {
        for bad in ["", "sixteen-bytes-xx", "a/b", "a b", "a\0b"] {
            assert!(
                veth_request(bad, "ok", Netns::Pid(1), 1).is_err(),
                "{bad:?}"
            );
            assert!(
                veth_request("ok", bad, Netns::Pid(1), 1).is_err(),
                "{bad:?}"
            );
        }
        assert!(veth_request("fifteen-bytes-x", "ok", Netns::Pid(1), 1).is_ok());
        assert!(address_and_up("a/b", "10.0.0.1/30").is_err());
        assert!(address_and_up("lo", "10.0.0.1").is_err());
        assert!(address_and_up("lo", "10.0.0.1/33").is_err());
    }

    #[test]
    fn the_address_and_link_up_requests() {
        let m = address_request(3, Ipv4Addr::new(10, 213, 0, 1), 30, 9);
        assert_eq!(u16_at(&m, 4), Some(RTM_NEWADDR));
        assert_eq!(u32_at(&m, 8), Some(9));
        assert_eq!(&m[NLMSG_HDRLEN..NLMSG_HDRLEN + 4], &[AF_INET, 30, 0, 0]);
        assert_eq!(u32_at(&m, NLMSG_HDRLEN + 4), Some(3));
        assert_eq!(
            attrs(&m[NLMSG_HDRLEN + 8..]),
            [
                (IFA_LOCAL, vec![10, 213, 0, 1]),
                (IFA_ADDRESS, vec![10, 213, 0, 1])
            ]
        );
        let up = link_up_request(3, 10);
        assert_eq!(up.len(), NLMSG_HDRLEN + IFINFOMSG_LEN);
        assert_eq!(u16_at(&up, 6), Some(NLM_F_REQUEST | NLM_F_ACK));
        assert_eq!(u32_at(&up, NLMSG_HDRLEN + 4), Some(3));
        assert_eq!(u32_at(&up, NLMSG_HDRLEN + 8), Some(IFF_UP));
        assert_eq!(u32_at(&up, NLMSG_HDRLEN + 12), Some(IFF_UP));
    }

    #[test]
    fn the_loopback_and_default_route_requests() {
        let lo = link_up_by_name_request("lo", 3).unwrap();
        assert_eq!(u32_at(&lo, NLMSG_HDRLEN + 4), Some(0));
        assert_eq!(u32_at(&lo, NLMSG_HDRLEN + 8), Some(IFF_UP));
        assert_eq!(
            attrs(&lo[NLMSG_HDRLEN + IFINFOMSG_LEN..]),
            [(IFLA_IFNAME, b"lo\0".to_vec())]
        );
        let r = default_route_request(Ipv4Addr::new(10, 213, 0, 1), 4);
        assert_eq!(u16_at(&r, 4), Some(RTM_NEWROUTE));
        assert_eq!(
            u16_at(&r, 6),
            Some(NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
        );
        // Default (dst_len 0), main table, protocol boot, scope universe, unicast.
        assert_eq!(
            &r[NLMSG_HDRLEN..NLMSG_HDRLEN + 8],
            &[AF_INET, 0, 0, 0, 254, 3, 0, 1]
        );
        assert_eq!(
            attrs(&r[NLMSG_HDRLEN + 12..]),
            [(RTA_GATEWAY, vec![10, 213, 0, 1])]
        );
        assert!(configure_in(Netns::Pid(1), "a/b", "10.0.0.2/30", Ipv4Addr::LOCALHOST).is_err());
    }

    fn ack(seq: u32, errno: i32) -> Vec<u8> {
        let mut m = Msg::new(NLMSG_ERROR, 0, seq);
        m.bytes(&errno.to_ne_bytes()).bytes(&[0u8; 16]);
        m.finish()
    }

    #[test]
    fn acknowledgements_and_refusals() {
        assert_eq!(parse_ack(&ack(5, 0), 5), Ok(()));
        assert_eq!(parse_ack(&ack(5, -17), 5), Err(AckError::Refused(17)));
        assert_eq!(parse_ack(&ack(4, 0), 5), Err(AckError::NoAnswer));
        let mut two = ack(4, 0);
        two.extend(ack(5, -1));
        assert_eq!(parse_ack(&two, 5), Err(AckError::Refused(1)));
        let whole = ack(5, 0);
        for cut in 0..whole.len() {
            assert!(parse_ack(&whole[..cut], 5).is_err());
        }
        let mut lying = whole.clone();
        lying[0] = 200;
        assert_eq!(parse_ack(&lying, 5), Err(AckError::Malformed));
        assert!(AckError::Refused(17).to_string().contains("File exists"));
    }
}
