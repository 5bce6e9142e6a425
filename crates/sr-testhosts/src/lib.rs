//! Test hosts for safe-run's network tests: network namespaces this test process creates
//! itself, each joined to the host by a veth pair and running TCP and UDP echo servers on
//! port 7. The network tests of the runner and of the `safe-run` binary both send traffic
//! only to these hosts and to loopback.
//!
//! Everything a [`TestHosts`] creates (namespaces, links, processes) is removed when it is
//! dropped, also when the test fails.
#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// TCP and UDP echo servers on port 7 (python3: present wherever the tests run).
pub const ECHO_SERVER: &str = r#"
import socket, threading
def tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 7)); s.listen(16)
    while True:
        c, _ = s.accept(); c.sendall(c.recv(100)); c.close()
threading.Thread(target=tcp, daemon=True).start()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 7))
while True:
    d, a = u.recvfrom(100); u.sendto(d, a)
"#;

/// Python probes of the echo servers, to put in front of a test's client script:
/// `tcp(host, port)` and `udp(host, port)` each send "ping" and return whether it came back.
pub const ECHO_PROBES: &str = r#"
import socket
def tcp(host, port):
    try:
        c = socket.create_connection((host, port), timeout=0.8); c.sendall(b"ping"); ok = c.recv(10) == b"ping"; c.close(); return ok
    except OSError:
        return False
def udp(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.8)
    s.sendto(b"ping", (host, port))
    try:
        return s.recv(10) == b"ping"
    except OSError:
        return False
"#;

/// Python: opens `n` UDP flows to `host` port 7 (argv: host, n), waits up to 2 s for the
/// echoes, and prints `{"sent": n, "echoed": m}`.
pub const MANY_UDP_FLOWS: &str = r#"
import json, select, socket, sys, time
host, n = sys.argv[1], int(sys.argv[2])
socks = []
for _ in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.setblocking(False)
    s.sendto(b"ping", (host, 7)); socks.append(s)
got, end = set(), time.time() + 2.0
while len(got) < n and time.time() < end:
    ready, _, _ = select.select([s for s in socks if s not in got], [], [], max(0.0, end - time.time()))
    for s in ready:
        try:
            if s.recv(10) == b"ping": got.add(s)
        except OSError:
            pass
print(json.dumps({"sent": n, "echoed": len(got)}))
"#;

/// `ECHO_PROBES` followed by `client`: a script for `python3 -c`.
pub fn probe_script(client: &str) -> String {
    format!("{ECHO_PROBES}{client}")
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Runs a command and returns its output (panics only when it cannot be started).
pub fn sh(args: &[&str]) -> Output {
    match Command::new(args[0]).args(&args[1..]).output() {
        Ok(o) => o,
        Err(e) => panic!("cannot run {args:?}: {e}"),
    }
}

/// Runs a command that must succeed.
pub fn must(args: &[&str]) {
    let out = sh(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An "allowed" and a "blocked" test host, plus any stand-in sandboxes; removed on drop.
pub struct TestHosts {
    tag: String,
    namespaces: Vec<String>,
    links: Vec<String>,
    children: Vec<Child>,
    /// Address of the host the tests allow.
    pub allowed: Ipv4Addr,
    /// Address of the host the tests block.
    pub blocked: Ipv4Addr,
    /// The host's own address on the link to `allowed` (a host address the test owns).
    pub allowed_gateway: Ipv4Addr,
    /// The host's own address on the link to `blocked`.
    pub blocked_gateway: Ipv4Addr,
}

impl TestHosts {
    /// Creates both hosts and waits until their echo servers answer. `prefix` keeps the
    /// names of different test binaries apart (namespaces `srt<prefix>…`, links
    /// `st<prefix>…`); `first_block` is the third octet of the first host's 10.214.x.0/30, so
    /// test binaries running at once use different addresses.
    pub fn new(prefix: &str, first_block: u32) -> TestHosts {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let mut t = TestHosts {
            tag: format!("{prefix}{}{n}", std::process::id() % 100_000),
            namespaces: vec![],
            links: vec![],
            children: vec![],
            allowed: Ipv4Addr::UNSPECIFIED,
            blocked: Ipv4Addr::UNSPECIFIED,
            allowed_gateway: Ipv4Addr::UNSPECIFIED,
            blocked_gateway: Ipv4Addr::UNSPECIFIED,
        };
        // Wrapped so that a high first block and many hosts in one binary stay in 10.214.0-255
        // (the pair is block, block + 1); hosts of one binary never share a block.
        let block = (first_block + n * 2) % 254;
        (t.allowed, t.allowed_gateway) = t.add_host("a", block);
        (t.blocked, t.blocked_gateway) = t.add_host("b", block + 1);
        wait_for_echo_servers(&[t.allowed, t.blocked]);
        t
    }

    /// Returns (the host's address, the host-side address of its link).
    fn add_host(&mut self, role: &str, third: u32) -> (Ipv4Addr, Ipv4Addr) {
        let ns = format!("srt{}{role}", self.tag);
        let link = format!("st{}{role}", self.tag);
        must(&["ip", "netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        must(&[
            "ip", "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        self.links.push(link.clone());
        let third = u8::try_from(third).unwrap_or_else(|_| panic!("address block {third} > 255"));
        let gateway_addr = Ipv4Addr::new(10, 214, third, 1);
        let gateway = gateway_addr.to_string();
        let peer = Ipv4Addr::new(10, 214, third, 2);
        must(&["ip", "addr", "add", &format!("{gateway}/30"), "dev", &link]);
        must(&["ip", "link", "set", &link, "up"]);
        let addr = format!("{peer}/30");
        must(&["ip", "-n", &ns, "addr", "add", &addr, "dev", "eth0"]);
        must(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        must(&["ip", "-n", &ns, "route", "add", "default", "via", &gateway]);
        self.spawn(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "/usr/bin/python3",
            "-c",
            ECHO_SERVER,
        ]);
        (peer, gateway_addr)
    }

    /// A stand-in sandbox: a fresh namespace with a process in it; returns (namespace, pid).
    pub fn sandbox(&mut self, name: &str) -> (String, u32) {
        let ns = format!("srt{}{name}", self.tag);
        must(&["ip", "netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        let pid = self.spawn(&["ip", "netns", "exec", &ns, "sleep", "300"]);
        // `ip netns exec` enters the namespace, then execs sleep: wait until it has.
        for _ in 0..100 {
            let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
            let ours = std::fs::read_link("/proc/self/ns/net").ok();
            if theirs.is_some() && theirs != ours {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        (ns, pid)
    }

    /// Starts [`ECHO_SERVER`] in namespace `ns` (one of ours, e.g. a stand-in sandbox).
    pub fn echo_server_in(&mut self, ns: &str) -> u32 {
        self.spawn(&[
            "ip",
            "netns",
            "exec",
            ns,
            "/usr/bin/python3",
            "-c",
            ECHO_SERVER,
        ])
    }

    /// Starts a process that is killed when the hosts are dropped; returns its pid.
    pub fn spawn(&mut self, args: &[&str]) -> u32 {
        let child = match Command::new(args[0]).args(&args[1..]).spawn() {
            Ok(c) => c,
            Err(e) => panic!("cannot start {args:?}: {e}"),
        };
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// The namespaces created so far.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// Kills and reaps the process `pid` (as a SIGKILLed sandbox would die). Returns whether
    /// it was one of ours.
    pub fn kill(&mut self, pid: u32) -> bool {
        let Some(pos) = self.children.iter().position(|c| c.id() == pid) else {
            return false;
        };
        let mut child = self.children.remove(pos);
        let _ = child.kill();
        let _ = child.wait();
        true
    }

    /// Hands a process to the hosts, to be killed when they are dropped.
    pub fn adopt(&mut self, child: Child) {
        self.children.push(child);
    }
}

impl Drop for TestHosts {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for l in &self.links {
            let _ = sh(&["ip", "link", "del", l]);
        }
        for ns in &self.namespaces {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
    }
}

/// Waits until each host's echo server accepts (from the host, which sits on their veths), so
/// a "blocked" result can never come from a server that was not up yet.
pub fn wait_for_echo_servers(hosts: &[Ipv4Addr]) {
    for host in hosts {
        let addr = SocketAddr::from((*host, 7));
        let up = (0..100).any(|_| {
            let ok =
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok();
            if !ok {
                std::thread::sleep(Duration::from_millis(50));
            }
            ok
        });
        assert!(up, "echo server on {addr} did not come up");
    }
}
