//! The one seam through which the network module touches the host.
//!
//! Every side effect is a [`NetCommand`] value handed to a [`NetCommandExecutor`]:
//! [`SystemExecutor`] runs it (iproute2, /proc/sys, in-process netlink, and nftables through
//! libnftables in-process, [`super::libnft`]), and
//! [`RecordingExecutor`] records it and answers from a script, so unit tests see the exact
//! sequence of host changes without root. Commands are data so that a test can compare them.
//!
//! The sandbox's namespace is entered only by one thread made for that alone, which ends after
//! configuring the sandbox's end ([`NetCommand::ConfigureIn`]); `setns` moves just the calling
//! thread, so the runner's other threads never leave its namespace. A namespace made ahead of
//! the sandbox ([`NetCommandExecutor::new_namespace`]) is likewise made by a thread of its own.

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use serde::Serialize;
use serde_json::Value;
use thiserror::Error;

/// A network namespace other than the runner's, which a command acts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Netns {
    /// That of a process: one in the sandbox, which made it.
    Pid(u32),
    /// One this process holds open, made ahead of the sandbox
    /// ([`NetCommandExecutor::new_namespace`]): the descriptor of the file that holds it.
    Held(i32),
}

impl fmt::Display for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Netns::Pid(pid) => write!(f, "{pid}"),
            Netns::Held(fd) => write!(f, "fd {fd}"),
        }
    }
}

/// One host operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum NetCommand {
    /// `ip <args>` in the host's network namespace.
    Ip {
        /// Arguments.
        args: Vec<String>,
    },
    /// `ip -batch -` in the host's network namespace: several iproute2 commands, one process
    /// (ip stops at the first that fails).
    IpBatch {
        /// One `ip` command line (without `ip`) per entry.
        batch: Vec<String>,
    },
    /// What `nft -j -p -f -` does with this document on stdin, in-process ([`super::libnft`]):
    /// one atomic transaction.
    NftApply {
        /// The `{"nftables": [...]}` document.
        doc: Value,
    },
    /// What `nft -j -p <args>` does (list, delete), in-process ([`super::libnft`]); its output is
    /// returned. Every argument must be a plain word (letters, digits, `_`, `-`, `.`).
    Nft {
        /// Arguments after `-j`.
        args: Vec<String>,
    },
    /// The counters of a table's rules and of its set `set`'s elements, read over an
    /// in-process nf_tables netlink socket ([`super::counters`]), returned in the shape of
    /// `nft -j list table` that [`super::audit::parse_counters`] reads.
    NftCounters {
        /// The table's family.
        family: String,
        /// The table.
        table: String,
        /// The set whose elements carry counters (`blocked_v4`).
        set: String,
    },
    /// Read `/proc/sys/<key with dots as slashes>`.
    SysctlRead {
        /// e.g. `net.ipv4.conf.eth0.forwarding`.
        key: String,
    },
    /// Write `/proc/sys/<key>`.
    SysctlWrite {
        /// e.g. `net.ipv4.conf.eth0.forwarding`.
        key: String,
        /// The value.
        value: String,
    },
    /// The host's IPv4 addresses, as `ip -j -4 addr show` prints them (`[{"ifname",
    /// "addr_info": [{"local", "prefixlen"}]}]`), read in-process with `getifaddrs(3)`: one
    /// process fewer on the path of every allowlist run.
    HostAddresses,
    /// The host's route to an IPv4 address, as `ip -j route get <dst>` prints it (`[{"dst",
    /// "dev"}]`), asked over an in-process netlink socket ([`super::route`]).
    RouteGet {
        /// The destination.
        dst: String,
    },
    /// Create a veth pair over an in-process netlink socket ([`super::rtnl`]): `host` in this
    /// process's network namespace, its peer `peer` in `peer_ns`.
    VethCreate {
        /// The host end.
        host: String,
        /// The sandbox end.
        peer: String,
        /// The sandbox's namespace.
        peer_ns: Netns,
    },
    /// Give `link` the address `cidr` and raise it, over an in-process netlink socket
    /// ([`super::rtnl`]): what `ip addr add <cidr> dev <link>; ip link set <link> up` does.
    AddressUp {
        /// The link, in this process's network namespace.
        link: String,
        /// `a.b.c.d/len`.
        cidr: String,
    },
    /// Configure the sandbox's end of the link inside `ns`, over netlink from a thread that
    /// enters it ([`super::rtnl::configure_in`]): loopback up, `cidr` on `link`, `link` up,
    /// default route via `gateway`.
    ConfigureIn {
        /// The sandbox's namespace.
        ns: Netns,
        /// The sandbox end.
        link: String,
        /// Its `a.b.c.d/len`.
        cidr: String,
        /// The host side's address.
        gateway: std::net::Ipv4Addr,
    },
    /// A new network namespace: only recorded; [`NetCommandExecutor::new_namespace`] makes it,
    /// and `run` refuses it (it has no text to answer with).
    NewNamespace,
    /// Wait, at most `within_ms`, until the host has no link named `name` (it fails with status
    /// `timeout` when the link is still there).
    AwaitLinkGone {
        /// The interface name.
        name: String,
        /// The bound.
        within_ms: u64,
    },
}

impl NetCommand {
    /// `ip` with string-ish arguments.
    pub fn ip<S: AsRef<str>>(args: &[S]) -> Self {
        NetCommand::Ip {
            args: args.iter().map(|a| a.as_ref().to_owned()).collect(),
        }
    }
    /// `ip -batch -` with these command lines.
    pub fn ip_batch<S: AsRef<str>>(batch: &[S]) -> Self {
        NetCommand::IpBatch {
            batch: batch.iter().map(|a| a.as_ref().to_owned()).collect(),
        }
    }
    /// `nft -j ...`.
    pub fn nft<S: AsRef<str>>(args: &[S]) -> Self {
        NetCommand::Nft {
            args: args.iter().map(|a| a.as_ref().to_owned()).collect(),
        }
    }
}

impl fmt::Display for NetCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetCommand::Ip { args } => write!(f, "ip {}", args.join(" ")),
            NetCommand::IpBatch { batch } => {
                write!(f, "ip -batch - <<< '{}'", batch.join("; "))
            }
            NetCommand::NftApply { .. } => f.write_str("nft -j -f -"),
            NetCommand::Nft { args } => write!(f, "nft -j {}", args.join(" ")),
            NetCommand::SysctlRead { key } => write!(f, "sysctl {key}"),
            NetCommand::NftCounters { family, table, set } => {
                write!(
                    f,
                    "counters of table {family} {table} and set {set} (netlink)"
                )
            }
            NetCommand::HostAddresses => f.write_str("getifaddrs ipv4"),
            NetCommand::RouteGet { dst } => write!(f, "route get {dst} (netlink)"),
            NetCommand::SysctlWrite { key, value } => write!(f, "sysctl -w {key}={value}"),
            NetCommand::AwaitLinkGone { name, within_ms } => {
                write!(f, "await link {name} gone within {within_ms} ms")
            }
            NetCommand::VethCreate {
                host,
                peer,
                peer_ns,
            } => write!(
                f,
                "link add {host} type veth peer name {peer} netns {peer_ns} (netlink)"
            ),
            NetCommand::NewNamespace => f.write_str("netns add (unshare)"),
            NetCommand::AddressUp { link, cidr } => {
                write!(
                    f,
                    "addr add {cidr} dev {link}; link set {link} up (netlink)"
                )
            }
            NetCommand::ConfigureIn {
                ns,
                link,
                cidr,
                gateway,
            } => write!(
                f,
                "in the netns of {ns}: link set lo up; addr add {cidr} dev {link}; link set \
                 {link} up; route add default via {gateway} (netlink)"
            ),
        }
    }
}

/// A host operation that failed.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("`{command}` failed ({status}): {stderr}")]
pub struct CommandError {
    /// The command, as text.
    pub command: String,
    /// Exit status, or `spawn` / `io` when it did not run.
    pub status: String,
    /// Its stderr (trimmed).
    pub stderr: String,
}

impl CommandError {
    /// Whether the failure says the object does not exist (release treats that as success).
    pub fn is_not_found(&self) -> bool {
        let s = self.stderr.to_ascii_lowercase();
        s.contains("no such file or directory")
            || s.contains("cannot find device")
            || s.contains("does not exist")
            || s.contains("no such device")
    }
}

/// Runs [`NetCommand`]s. Shared with the resolver thread, hence `Send + Sync`.
pub trait NetCommandExecutor: Send + Sync + fmt::Debug {
    /// Runs `cmd`, returning its stdout (for sysctl reads: the value, trimmed).
    fn run(&self, cmd: &NetCommand) -> Result<String, CommandError>;

    /// Makes a new network namespace ([`NetCommand::NewNamespace`]) that no thread of this
    /// process stays in, held by the returned file: it lives as long as that file, or a
    /// process that joins it, does.
    fn new_namespace(&self) -> Result<File, CommandError>;
}

/// Runs commands on this host: `ip` children, libnftables and netlink in-process, /proc/sys.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemExecutor;

fn sysctl_path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

impl NetCommandExecutor for SystemExecutor {
    fn run(&self, cmd: &NetCommand) -> Result<String, CommandError> {
        let fail = |status: String, stderr: String| CommandError {
            command: cmd.to_string(),
            status,
            stderr: stderr.trim().to_owned(),
        };
        let (mut command, stdin) = match cmd {
            NetCommand::Ip { args } => {
                let mut c = Command::new("ip");
                c.args(args);
                (c, None)
            }
            NetCommand::IpBatch { batch } => {
                let mut c = Command::new("ip");
                c.args(["-batch", "-"]);
                (c, Some(batch.join("\n") + "\n"))
            }
            NetCommand::NftApply { doc } => {
                return super::libnft::run(&doc.to_string()).map_err(|e| nft_failure(cmd, e));
            }
            NetCommand::Nft { args } => {
                return super::libnft::run_words(args).map_err(|e| nft_failure(cmd, e));
            }
            NetCommand::NftCounters { family, table, set } => {
                return super::counters::read(family, table, set)
                    .map(|doc| doc.to_string())
                    .map_err(|e| fail("netlink".into(), e));
            }
            NetCommand::SysctlRead { key } => {
                return std::fs::read_to_string(sysctl_path(key))
                    .map(|v| v.trim().to_owned())
                    .map_err(|e| fail("io".into(), e.to_string()));
            }
            NetCommand::SysctlWrite { key, value } => {
                return std::fs::write(sysctl_path(key), value)
                    .map(|()| String::new())
                    .map_err(|e| fail("io".into(), e.to_string()));
            }
            NetCommand::HostAddresses => {
                return host_addresses().map_err(|e| fail("io".into(), e));
            }
            NetCommand::RouteGet { dst } => {
                let addr: std::net::Ipv4Addr = dst
                    .parse()
                    .map_err(|_| fail("io".into(), format!("{dst:?} is not an IPv4 address")))?;
                return super::route::lookup(addr)
                    .map(|dev| serde_json::json!([{"dst": dst, "dev": dev}]).to_string())
                    .map_err(|e| fail("netlink".into(), e));
            }
            NetCommand::VethCreate {
                host,
                peer,
                peer_ns,
            } => {
                return super::rtnl::create_veth(host, peer, *peer_ns)
                    .map(|()| String::new())
                    .map_err(|e| fail("netlink".into(), e));
            }
            NetCommand::AddressUp { link, cidr } => {
                return super::rtnl::address_and_up(link, cidr)
                    .map(|()| String::new())
                    .map_err(|e| fail("netlink".into(), e));
            }
            NetCommand::ConfigureIn {
                ns,
                link,
                cidr,
                gateway,
            } => {
                return super::rtnl::configure_in(*ns, link, cidr, *gateway)
                    .map(|()| String::new())
                    .map_err(|e| fail("netlink".into(), e));
            }
            NetCommand::NewNamespace => {
                return Err(fail(
                    "refused".into(),
                    "a namespace is made by new_namespace, which returns its file".into(),
                ));
            }
            NetCommand::AwaitLinkGone { name, within_ms } => {
                return await_link_gone(name, *within_ms)
                    .map(|()| String::new())
                    .map_err(|stderr| fail("timeout".into(), stderr));
            }
        };
        command
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|e| fail("spawn".into(), e.to_string()))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // ip stops at the first command of a batch that fails, so a write error here means
            // it has exited; its status and stderr below say why.
            let _ = pipe.write_all(input.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| fail("io".into(), e.to_string()))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(fail(
                out.status.to_string(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ))
        }
    }

    fn new_namespace(&self) -> Result<File, CommandError> {
        super::rtnl::new_namespace().map_err(|stderr| CommandError {
            command: NetCommand::NewNamespace.to_string(),
            status: "unshare".into(),
            stderr,
        })
    }
}

/// A libnftables failure as the `nft` binary would have reported it: its error text is what
/// `nft` prints on stderr, so [`CommandError::is_not_found`] reads both alike.
fn nft_failure(cmd: &NetCommand, failure: super::libnft::NftFailure) -> CommandError {
    use super::libnft::NftFailure;
    let (status, stderr) = match failure {
        NftFailure::Unavailable(e) => ("unavailable", e),
        NftFailure::Refused(e) => ("refused", e),
        NftFailure::Failed(e) => ("libnftables", e),
    };
    CommandError {
        command: cmd.to_string(),
        status: status.into(),
        stderr: stderr.trim().to_owned(),
    }
}

/// The host's IPv4 addresses in `ip -j -4 addr show`'s shape (only the fields
/// [`super::addressing::networks_in_use`] reads).
fn host_addresses() -> Result<String, String> {
    let mut links: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    for ifa in nix::ifaddrs::getifaddrs().map_err(|e| format!("getifaddrs: {e}"))? {
        let (Some(addr), Some(mask)) = (
            ifa.address.as_ref().and_then(|a| a.as_sockaddr_in()),
            ifa.netmask.as_ref().and_then(|m| m.as_sockaddr_in()),
        ) else {
            continue;
        };
        let prefixlen = mask.ip().to_bits().leading_ones();
        links
            .entry(ifa.interface_name.clone())
            .or_default()
            .push(serde_json::json!({"local": addr.ip().to_string(), "prefixlen": prefixlen}));
    }
    let doc: Vec<Value> = links
        .into_iter()
        .map(|(ifname, addr_info)| serde_json::json!({"ifname": ifname, "addr_info": addr_info}))
        .collect();
    Ok(Value::Array(doc).to_string())
}

/// Polls `/sys/class/net/<name>` (starting at 100 µs, doubling to 5 ms between looks) until it
/// is gone or `within_ms` has passed.
fn await_link_gone(name: &str, within_ms: u64) -> Result<(), String> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(format!("{name:?} is not an interface name"));
    }
    let path = std::path::Path::new("/sys/class/net").join(name);
    let end = std::time::Instant::now() + std::time::Duration::from_millis(within_ms);
    let mut pause = std::time::Duration::from_micros(100);
    while path.exists() {
        if std::time::Instant::now() >= end {
            return Err(format!("the link is still there after {within_ms} ms"));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(5));
    }
    Ok(())
}

/// A scripted answer for [`RecordingExecutor`].
pub type Responder = dyn Fn(&NetCommand) -> Result<String, CommandError> + Send + Sync;

/// Records every command and answers from a script: for unit tests.
pub struct RecordingExecutor {
    log: Mutex<Vec<NetCommand>>,
    responder: Box<Responder>,
}

impl fmt::Debug for RecordingExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordingExecutor").finish_non_exhaustive()
    }
}

impl RecordingExecutor {
    /// Answers every command with `responder`.
    pub fn new(
        responder: impl Fn(&NetCommand) -> Result<String, CommandError> + Send + Sync + 'static,
    ) -> Self {
        RecordingExecutor {
            log: Mutex::new(Vec::new()),
            responder: Box::new(responder),
        }
    }

    /// The commands run so far, in order.
    pub fn commands(&self) -> Vec<NetCommand> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// A failure with the given stderr, for scripts.
    pub fn failure(cmd: &NetCommand, stderr: &str) -> CommandError {
        CommandError {
            command: cmd.to_string(),
            status: "exit status: 1".into(),
            stderr: stderr.into(),
        }
    }
}

impl NetCommandExecutor for RecordingExecutor {
    fn run(&self, cmd: &NetCommand) -> Result<String, CommandError> {
        if let Ok(mut log) = self.log.lock() {
            log.push(cmd.clone());
        }
        (self.responder)(cmd)
    }

    /// Records [`NetCommand::NewNamespace`] and, unless the script fails it, answers with this
    /// process's own namespace: nothing is made.
    fn new_namespace(&self) -> Result<File, CommandError> {
        self.run(&NetCommand::NewNamespace)?;
        File::open("/proc/thread-self/ns/net").map_err(|e| CommandError {
            command: NetCommand::NewNamespace.to_string(),
            status: "io".into(),
            stderr: e.to_string(),
        })
    }
}
