//! The run's DNS resolver: answers only the plan's allowed names, and keeps the host sets current.
//!
//! A UDP server bound to the host side of the run's veth, port 53, on a thread of the safe-run
//! parent (never a fork). It answers only its own sandbox: the socket is bound to the run's
//! host interface (`SO_BINDTODEVICE`, so datagrams arriving on any other link, another run's
//! included, never reach it) and every datagram whose source is not the sandbox's address is
//! dropped unanswered and unrecorded (counted as `ignored`), so nobody else can spend the run's
//! event budget or learn its answers. The run's nftables rules already keep other runs out
//! (ruleset.rs); this is the resolver's own check. For each query:
//!
//! * the name is normalized (lowercase, no trailing dot) and must equal one of
//!   `dns.allowedNames` exactly: subdomains are not allowed implicitly, so a query cannot carry
//!   data to a name the policy did not list (`<secret>.allowed.example` is refused);
//! * anything else (other names, other opcodes, several questions, malformed packets) gets
//!   REFUSED with no records, and the upstream is never asked, so the sandbox can neither
//!   exfiltrate through DNS nor learn whether a blocked name exists;
//! * A queries for allowed names are forwarded to the operator's upstream; the answer keeps its
//!   CNAME chain and those A records that are not loopback, link-local, unspecified, multicast,
//!   broadcast or inside the operator's subnet pool (anti-rebinding: a name cannot be pointed at
//!   the host itself or at another run's veth). Private (RFC 1918) addresses are allowed, since
//!   internal services are a legitimate target; the policy author chose the name. The kept
//!   addresses are added to the rule's nftables set with a timeout of the TTL (at least
//!   [`MIN_TTL_SECS`], plus [`GRACE_SECS`]), so the rule follows the name;
//! * AAAA queries are forwarded the same way only when a policy rule has an IPv6 set for the
//!   name; otherwise, and for every other type, the answer is empty (NOERROR, no records):
//!   IPv6 is not routed into the sandbox, and other types are never forwarded.
//!
//! Answers are reused until their smallest TTL runs out (empty ones for
//! [`NEGATIVE_CACHE_SECS`]), with TTLs lowered by their age, so repeated queries cost neither
//! the upstream nor nftables anything.
//!
//! Refresh: each resolved name is asked again when its TTL (at least [`MIN_TTL_SECS`]) runs out,
//! so long-running workloads keep reaching a name whose addresses change (CDNs). Addresses
//! accumulate in the set until their own timeout; re-adding an address renews its timeout.
//!
//! DNS messages are decoded and built with `hickory-proto`; no wire format is hand-written.
//! Queries to the upstream use a fresh socket connected to it, a message id from the clock,
//! and the answer must echo the question; the upstream is the operator's trusted resolver.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use ipnet::Ipv4Net;
use serde_json::{Value, json};

use super::audit::DnsTally;
use super::exec::{NetCommand, NetCommandExecutor};
use super::ruleset::{RunBinding, add_elements};

/// Lowest TTL honoured for set timeouts and refresh (bounds the refresh rate).
pub const MIN_TTL_SECS: u64 = 30;
/// Highest TTL honoured.
pub const MAX_TTL_SECS: u64 = 86_400;
/// Added to a set element's timeout beyond the TTL, so a client that uses its answer at the
/// end of the TTL still gets through.
pub const GRACE_SECS: u64 = 15;
/// How long an answer without usable addresses is reused.
pub const NEGATIVE_CACHE_SECS: u64 = 5;
/// Most `network.dns.query` events recorded per run (the tallies keep counting).
pub const MAX_DNS_EVENTS: usize = 1000;

/// Normalizes a DNS name for comparison: lowercase ASCII, no trailing dot.
pub fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The first `nameserver` of a resolv.conf, port 53.
pub fn upstream_from_resolv_conf(text: &str) -> Option<SocketAddr> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some("nameserver"))
            .then(|| words.next()?.parse::<IpAddr>().ok())
            .flatten()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

/// Asks an upstream resolver.
pub trait Upstream: Send + Sync {
    /// One question; returns the upstream's answer.
    fn query(&self, name: &Name, qtype: RecordType) -> Result<Message, String>;
}

/// The real upstream: plain DNS over UDP.
#[derive(Debug, Clone)]
pub struct UdpUpstream {
    /// `ip:port`.
    pub server: SocketAddr,
    /// Per-attempt timeout (two attempts).
    pub timeout: Duration,
}

impl Upstream for UdpUpstream {
    fn query(&self, name: &Name, qtype: RecordType) -> Result<Message, String> {
        let bind: SocketAddr = if self.server.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let socket = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
        socket.connect(self.server).map_err(|e| e.to_string())?;
        socket
            .set_read_timeout(Some(self.timeout))
            .map_err(|e| e.to_string())?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let id = (nanos ^ std::process::id()) as u16;
        let mut msg = Message::query();
        msg.metadata.id = id;
        msg.metadata.recursion_desired = true;
        msg.add_query(Query::query(name.clone(), qtype));
        let bytes = msg.to_vec().map_err(|e| e.to_string())?;
        let mut last = String::from("no answer");
        for _ in 0..2 {
            socket.send(&bytes).map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4096];
            match socket.recv(&mut buf) {
                Ok(n) => {
                    let Ok(answer) = Message::from_vec(&buf[..n]) else {
                        last = "malformed answer".into();
                        continue;
                    };
                    let echoes = answer.queries.first().is_some_and(|q| {
                        q.query_type == qtype
                            && normalize(&q.name.to_ascii()) == normalize(&name.to_ascii())
                    });
                    if answer.metadata.id == id && echoes {
                        return Ok(answer);
                    }
                    last = "answer does not match the question".into();
                }
                Err(e) => last = format!("upstream {}: {e}", self.server),
            }
        }
        Err(last)
    }
}

/// Whether an answer address may be installed and returned (anti-rebinding).
pub fn acceptable_address(addr: IpAddr, pool: &Ipv4Net) -> bool {
    match addr {
        IpAddr::V4(a) => {
            !(a.is_loopback()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_multicast()
                || a.is_broadcast()
                || a.octets()[0] == 0
                || pool.contains(&a))
        }
        IpAddr::V6(a) => {
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (a.segments()[0] & 0xffc0) == 0xfe80
                || a.to_ipv4_mapped().is_some())
        }
    }
}

/// Which sets a name fills.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameTargets {
    /// IPv4 sets.
    pub v4: Vec<String>,
    /// IPv6 sets.
    pub v6: Vec<String>,
}

#[derive(Debug, Default)]
struct Shared {
    events: Vec<Value>,
    suppressed: u64,
    tally: DnsTally,
    errors: Vec<String>,
    due: BTreeMap<String, Instant>,
    /// (set, address) -> when our element expires at the latest (recorded before the add, so
    /// never later than the kernel's own expiry).
    installed: BTreeMap<(String, IpAddr), Instant>,
    /// (name, type) -> the last answer, when it was fetched, and until when it is fresh (its
    /// smallest TTL, which is never longer than the set elements it installed live).
    cache: BTreeMap<(String, RecordType), (Resolved, Instant, Instant)>,
}

/// The resolver's logic (no sockets of its own except through [`Upstream`]).
pub struct Resolver {
    names: BTreeMap<String, NameTargets>,
    upstream: Arc<dyn Upstream>,
    exec: Arc<dyn NetCommandExecutor>,
    binding: RunBinding,
    pool: Ipv4Net,
    shared: Mutex<Shared>,
}

/// Outcome of resolving one name for the sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Records to return (CNAMEs and acceptable addresses).
    pub records: Vec<Record>,
    /// Addresses installed.
    pub addresses: Vec<IpAddr>,
}

impl Resolver {
    /// A resolver for `names` (normalized name -> sets).
    pub fn new(
        names: BTreeMap<String, NameTargets>,
        upstream: Arc<dyn Upstream>,
        exec: Arc<dyn NetCommandExecutor>,
        binding: RunBinding,
        pool: Ipv4Net,
    ) -> Self {
        Resolver {
            names,
            upstream,
            exec,
            binding,
            pool,
            shared: Mutex::new(Shared::default()),
        }
    }

    fn with_shared<T>(&self, f: impl FnOnce(&mut Shared) -> T) -> T {
        let mut guard = match self.shared.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// Asks the upstream for `name` (`qtype` A or AAAA), keeps acceptable records, installs the
    /// addresses in the name's sets and schedules the refresh.
    pub fn resolve(&self, name: &str, qtype: RecordType) -> Result<Resolved, String> {
        let targets = self.names.get(name).cloned().unwrap_or_default();
        let qname = Name::from_ascii(format!("{name}.")).map_err(|e| e.to_string())?;
        let answer = self.upstream.query(&qname, qtype)?;
        if answer.metadata.response_code != ResponseCode::NoError {
            return Err(format!(
                "upstream answered {}",
                answer.metadata.response_code
            ));
        }
        let mut records = Vec::new();
        let mut addresses = Vec::new();
        let mut min_ttl = u64::MAX;
        for record in &answer.answers {
            let addr = match &record.data {
                RData::A(a) if qtype == RecordType::A => IpAddr::V4(a.0),
                RData::AAAA(a) if qtype == RecordType::AAAA => IpAddr::V6(a.0),
                RData::CNAME(_) => {
                    records.push(record.clone());
                    continue;
                }
                _ => continue,
            };
            if acceptable_address(addr, &self.pool) {
                min_ttl = min_ttl.min(u64::from(record.ttl));
                records.push(record.clone());
                addresses.push(addr);
            }
        }
        let ttl = if addresses.is_empty() {
            MIN_TTL_SECS
        } else {
            min_ttl.clamp(MIN_TTL_SECS, MAX_TTL_SECS)
        };
        let sets = if qtype == RecordType::A {
            &targets.v4
        } else {
            &targets.v6
        };
        if !addresses.is_empty() {
            let elems: Vec<(IpAddr, u64)> =
                addresses.iter().map(|a| (*a, ttl + GRACE_SECS)).collect();
            for set in sets {
                self.install(set, &elems)?;
            }
        }
        let now = Instant::now();
        if !sets.is_empty() {
            let when = now + Duration::from_secs(ttl);
            self.with_shared(|s| s.due.insert(format!("{qtype}:{name}"), when));
        }
        let resolved = Resolved { records, addresses };
        let fresh_for = if resolved.addresses.is_empty() {
            NEGATIVE_CACHE_SECS
        } else {
            min_ttl.min(MAX_TTL_SECS)
        };
        self.with_shared(|s| {
            s.cache.insert(
                (name.to_owned(), qtype),
                (resolved.clone(), now, now + Duration::from_secs(fresh_for)),
            )
        });
        Ok(resolved)
    }

    /// Adds (or renews) elements in one transaction. A new element is added; one that may
    /// still exist is renewed by add, delete, add (a plain add would keep its old timeout), so
    /// there is no moment without it. Deleting costs the kernel an RCU grace period, which is
    /// why new elements skip it.
    fn install(&self, set: &str, elems: &[(IpAddr, u64)]) -> Result<(), String> {
        let now = Instant::now();
        let existing: Vec<String> = self.with_shared(|s| {
            elems
                .iter()
                .filter(|(a, _)| {
                    s.installed
                        .get(&(set.to_owned(), *a))
                        .is_some_and(|t| *t > now)
                })
                .map(|(a, _)| a.to_string())
                .collect()
        });
        let add = add_elements(&self.binding, set, elems);
        let mut ops = add
            .get("nftables")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if !existing.is_empty() {
            ops.push(json!({"delete": {"element": {
                "family": self.binding.family, "table": self.binding.table, "name": set,
                "elem": existing,
            }}}));
            ops.extend(ops.first().cloned());
        }
        self.exec
            .run(&NetCommand::NftApply {
                doc: json!({"nftables": ops}),
            })
            .map_err(|e| e.to_string())?;
        self.with_shared(|s| {
            for (a, timeout) in elems {
                s.installed
                    .insert((set.to_owned(), *a), now + Duration::from_secs(*timeout));
            }
        });
        Ok(())
    }

    /// Re-resolves every name whose TTL has run out.
    pub fn refresh_due(&self) {
        self.refresh_due_at(Instant::now());
    }

    /// [`Resolver::refresh_due`] as of `now` (tests pass a later instant).
    pub fn refresh_due_at(&self, now: Instant) {
        let due: Vec<String> = self.with_shared(|s| {
            s.due
                .iter()
                .filter(|(_, t)| **t <= now)
                .map(|(k, _)| k.clone())
                .collect()
        });
        for key in due {
            let (qtype, name) = match key.split_once(':') {
                Some(("AAAA", n)) => (RecordType::AAAA, n.to_owned()),
                Some((_, n)) => (RecordType::A, n.to_owned()),
                None => continue,
            };
            if let Err(e) = self.resolve(&name, qtype) {
                // Keep the old elements (they expire on their own) and try again later.
                let retry = now + Duration::from_secs(MIN_TTL_SECS);
                self.with_shared(|s| {
                    s.due.insert(key.clone(), retry);
                    s.errors.push(format!("refresh {name}: {e}"));
                });
            }
        }
    }

    fn record(&self, name: &str, qtype: RecordType, verdict: &str, addresses: usize) {
        self.with_shared(|s| {
            match verdict {
                "answered" => s.tally.answered += 1,
                "failed" => s.tally.failed += 1,
                _ => s.tally.refused += 1,
            }
            if s.events.len() < MAX_DNS_EVENTS {
                let shown: String = name.chars().take(253).collect();
                s.events.push(json!({
                    "name": shown, "qtype": qtype.to_string(), "verdict": verdict, "addresses": addresses,
                }));
            } else {
                s.suppressed += 1;
            }
        });
    }

    /// Counts a datagram from a source other than the run's sandbox (never answered).
    pub fn ignored(&self) {
        self.with_shared(|s| s.tally.ignored += 1);
    }

    /// Answers one request datagram; `None` when it is not even a DNS header.
    pub fn answer(&self, request: &[u8]) -> Option<Vec<u8>> {
        let req = match Message::from_vec(request) {
            Ok(m) => m,
            Err(_) => {
                if request.len() < 12 {
                    return None;
                }
                let id = u16::from_be_bytes([request[0], request[1]]);
                self.record("", RecordType::Unknown(0), "refused", 0);
                return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
                    .to_vec()
                    .ok();
            }
        };
        let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
        resp.metadata.message_type = MessageType::Response;
        resp.metadata.recursion_desired = req.metadata.recursion_desired;
        resp.metadata.recursion_available = true;
        resp.add_queries(req.queries.iter().cloned());
        let single = match req.queries.as_slice() {
            [q] if req.metadata.message_type == MessageType::Query
                && req.metadata.op_code == OpCode::Query
                && q.query_class == DNSClass::IN =>
            {
                Some(q)
            }
            _ => None,
        };
        let Some(q) = single else {
            self.record("", RecordType::Unknown(0), "refused", 0);
            resp.metadata.response_code = ResponseCode::Refused;
            return resp.to_vec().ok();
        };
        let name = normalize(&q.name.to_ascii());
        let qtype = q.query_type;
        let Some(targets) = self.names.get(&name) else {
            self.record(&name, qtype, "refused", 0);
            resp.metadata.response_code = ResponseCode::Refused;
            return resp.to_vec().ok();
        };
        let forward =
            qtype == RecordType::A || (qtype == RecordType::AAAA && !targets.v6.is_empty());
        if !forward {
            self.record(&name, qtype, "answered", 0);
            return resp.to_vec().ok();
        }
        match self
            .cached(&name, qtype)
            .map_or_else(|| self.resolve(&name, qtype), Ok)
        {
            Ok(resolved) => {
                self.record(&name, qtype, "answered", resolved.addresses.len());
                for mut record in resolved.records {
                    // Answer for the name exactly as the client spelled it.
                    if normalize(&record.name.to_ascii()) == name {
                        record.name = q.name.clone();
                    }
                    resp.add_answer(record);
                }
            }
            Err(e) => {
                self.record(&name, qtype, "failed", 0);
                self.with_shared(|s| s.errors.push(format!("resolve {name}: {e}")));
                resp.metadata.response_code = ResponseCode::ServFail;
            }
        }
        resp.to_vec().ok()
    }

    /// A fresh cached answer, its TTLs lowered by its age: repeated queries within the TTL
    /// reach neither the upstream nor nftables, so a busy or hostile workload cannot turn its
    /// queries into load on either.
    fn cached(&self, name: &str, qtype: RecordType) -> Option<Resolved> {
        let now = Instant::now();
        let (mut resolved, fetched, fresh_until) =
            self.with_shared(|s| s.cache.get(&(name.to_owned(), qtype)).cloned())?;
        if now >= fresh_until {
            return None;
        }
        let age = u32::try_from(now.duration_since(fetched).as_secs()).unwrap_or(u32::MAX);
        for record in &mut resolved.records {
            record.ttl = record.ttl.saturating_sub(age);
        }
        Some(resolved)
    }

    /// Takes the recorded query events, the tallies and the errors seen so far.
    pub fn drain(&self) -> (Vec<Value>, DnsTally, Vec<String>) {
        self.with_shared(|s| {
            (
                std::mem::take(&mut s.events),
                s.tally,
                std::mem::take(&mut s.errors),
            )
        })
    }
}

/// Who may reach the resolver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverAccess {
    /// Interface the socket is bound to (`SO_BINDTODEVICE`): the run's host side. `None` only
    /// for tests on loopback.
    pub device: Option<String>,
    /// The only source address answered: the run's sandbox address.
    pub client: Ipv4Addr,
}

/// A UDP socket bound to `device` (before the address, so no datagram from another link is
/// ever queued on it) and then to `addr:port`.
fn bind_socket(addr: Ipv4Addr, port: u16, device: Option<&str>) -> std::io::Result<UdpSocket> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, bind, setsockopt, socket, sockopt,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    if let Some(dev) = device {
        setsockopt(&fd, sockopt::BindToDevice, &std::ffi::OsString::from(dev))?;
    }
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(std::net::SocketAddrV4::new(addr, port)),
    )?;
    Ok(UdpSocket::from(fd))
}

/// The running server thread.
pub struct DnsServer {
    stop: Arc<AtomicBool>,
    /// Write end of the thread's wake-up pipe; closing or writing it ends the thread's poll.
    waker: Option<std::os::fd::OwnedFd>,
    thread: Option<JoinHandle<()>>,
    resolver: Arc<Resolver>,
    /// The address it listens on.
    pub local: SocketAddr,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

/// How long the thread waits for a datagram before it looks at due refreshes.
const POLL_MS: u16 = 200;

/// What one wake-up of the server thread found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// A datagram of this length from this IPv4 peer.
    Datagram(usize, std::net::SocketAddrV4),
    /// Nothing arrived within the poll timeout (or the poll was interrupted).
    Nothing,
    /// The socket woke the poll but gave nothing usable: an empty read (as after shutdown), a
    /// datagram without a source address, or a receive error. Never a panic; the caller
    /// pauses briefly, so a socket stuck in that state cannot spin the thread.
    Unusable,
    /// The stop pipe fired.
    Stop,
}

/// Waits for a datagram on `socket` (non-blocking) or a wake-up on `stop`.
///
/// The receive is `recvfrom(2)` through nix, whose peer address is an `Option`: a receive
/// that returns no address (after `shutdown`, or when the link is gone) is `Nothing`. std's
/// `UdpSocket::recv_from` asserts on that case instead (issue 14 item 7).
pub(crate) fn receive(
    socket: &UdpSocket,
    stop: std::os::fd::BorrowedFd<'_>,
    buf: &mut [u8],
) -> Received {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::socket::{SockaddrIn, recvfrom};
    use std::os::fd::AsFd;
    let mut fds = [
        PollFd::new(socket.as_fd(), PollFlags::POLLIN),
        PollFd::new(stop, PollFlags::POLLIN),
    ];
    if poll(&mut fds, PollTimeout::from(POLL_MS)).is_err() {
        return Received::Nothing;
    }
    if fds[1].any().unwrap_or(false) {
        return Received::Stop;
    }
    if !fds[0].any().unwrap_or(false) {
        return Received::Nothing;
    }
    match recvfrom::<SockaddrIn>(socket.as_raw_fd(), buf) {
        Ok((n, Some(peer))) if n > 0 => {
            Received::Datagram(n, std::net::SocketAddrV4::new(peer.ip(), peer.port()))
        }
        // Another wake-up raced us to the datagram.
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => Received::Nothing,
        _ => Received::Unusable,
    }
}

impl DnsServer {
    /// Binds `addr:port` (on `access.device`) and serves `access.client` on a new thread.
    pub fn start(
        resolver: Arc<Resolver>,
        addr: Ipv4Addr,
        port: u16,
        access: ResolverAccess,
    ) -> std::io::Result<Self> {
        let socket = bind_socket(addr, port, access.device.as_deref())?;
        socket.set_nonblocking(true)?;
        let client = access.client;
        let local = socket.local_addr()?;
        let (wake_rx, wake_tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, resolver2) = (stop.clone(), resolver.clone());
        let thread = std::thread::Builder::new()
            .name("sr-dns".into())
            .spawn(move || {
                use std::os::fd::AsFd;
                let mut buf = [0u8; 4096];
                while !stop2.load(Ordering::Relaxed) {
                    match receive(&socket, wake_rx.as_fd(), &mut buf) {
                        Received::Stop => break,
                        Received::Nothing => {}
                        Received::Unusable => std::thread::sleep(Duration::from_millis(5)),
                        Received::Datagram(n, peer) => {
                            if stop2.load(Ordering::Relaxed) {
                                break;
                            }
                            if *peer.ip() != client {
                                resolver2.ignored();
                            } else if let Some(reply) = resolver2.answer(&buf[..n]) {
                                let _ = socket.send_to(&reply, peer);
                            }
                        }
                    }
                    resolver2.refresh_due();
                }
            })?;
        Ok(DnsServer {
            stop,
            waker: Some(wake_tx),
            thread: Some(thread),
            resolver,
            local,
        })
    }

    /// The resolver it serves.
    pub fn resolver(&self) -> &Arc<Resolver> {
        &self.resolver
    }

    /// Stops the thread and waits for it: closing the pipe's write end wakes its poll at once
    /// (POLLHUP), whatever state the socket or the run's link is in.
    ///
    /// Returns an error when the thread had panicked (the run records it as a resolver error).
    pub fn stop(&mut self) -> Result<(), String> {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.waker.take());
        match self.thread.take().map(JoinHandle::join) {
            Some(Err(panic)) => {
                let text = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Err(format!("resolver thread panicked: {text}"))
            }
            _ => Ok(()),
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
