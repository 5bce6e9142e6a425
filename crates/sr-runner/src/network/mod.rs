//! Network allowlist lifecycle: veth, addresses, forwarding, the per-run nftables table, the
//! run's DNS resolver, counters and release. docs/network.md is the long form.
//!
//! [`AllowlistNetwork`] implements [`NetworkHook`] for `network.mode: allowlist`. The order of
//! [`NetworkHook::prepare`] (step 1, the start of step 3 and, for a process sandbox, of step
//! 2, before the boundary starts; done by attach when the launcher did not call it) and
//! [`NetworkHook::attach`] is the order of dependencies:
//!
//! 1. pick the run's /30 (needs the host's addresses, read with `getifaddrs`; claimed in the
//!    subnet ledger under the state lock, see [`ledger`]) and render the whole ruleset (pure; a
//!    plan the runner cannot render faithfully fails here, before any host change);
//! 2. create the link ([`link`]): for a sandbox ([`Boundary::Namespace`]) the veth pair, over
//!    an in-process netlink socket with its sandbox end put straight into the sandbox's
//!    namespace ([`rtnl`]), which prepare makes for a process sandbox
//!    ([`NamespaceSource::Hook`]) on a thread of its own (`sr-link`) while the init starts, the
//!    init joining it on Go; for a microVM ([`Boundary::Tap`]) a TAP device (root's), to
//!    which the VMM backend attaches and passes QEMU the descriptor. Then the host side: IPv6
//!    off and its own forwarding flag (both vanish with the link), address and link-up
//!    (netlink, in-process).
//!    A veth's sandbox end is configured over netlink from inside the sandbox's namespace
//!    (loopback, address, default route via the host side), by a thread made for that alone
//!    ([`rtnl::configure_in`]; no other thread of the runner changes namespace). No child
//!    process makes the link. A guest configures its side itself: attach returns its address
//!    and gateway ([`AttachedNetwork::guest`]) for the backend to put on its kernel command
//!    line;
//! 3. apply the table in one transaction (all or nothing; what `nft -j -f -` does, through
//!    libnftables in this process, [`libnft`]), then read it back and hash it: the digest
//!    covers what the kernel holds, not what we meant to send. Its rules
//!    name the link, never its index, so this runs on a thread of its own (`sr-nft`), started
//!    by prepare while the boundary starts. Attach waits, after step 2, only until the apply
//!    is done; the read-back goes on while the workload starts (the digest covers the table's
//!    structure, which nothing changes after the apply), and the samples collect its digest,
//!    the final one waiting for it. Release waits for that thread before it touches the table;
//! 4. start the resolver on `<host side>:53` (bound to the run's host interface, answering
//!    only the sandbox's address) and resolve every allowed name once, so the host sets are
//!    filled before the workload starts;
//! 5. enable forwarding on the uplinks that reach the destinations (routes asked over netlink,
//!    [`route`]; shared, given back; see [`forwarding`]), and write the sandbox's resolv.conf.
//!
//! Any failure releases what was created so far and returns SR-RUN-201. [`NetworkHook::release`]
//! is idempotent and attempts every step even when one fails (SR-RUN-202 lists them all); in
//! `safe-run run` a process sandbox's objects go after the report, see [`release`].

pub mod addressing;
pub mod audit;
mod background;
pub mod counters;
pub mod dns;
pub mod error;
pub mod exec;
pub mod forwarding;
pub mod gc;
pub mod ledger;
pub mod libnft;
mod link;
pub mod netlink;
pub mod release;
pub mod route;
pub mod rtnl;
pub mod ruleset;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use hickory_proto::rr::RecordType;
use ipnet::{IpNet, Ipv4Net};
use serde_json::Value;
use sr_bundle::NetworkPlan;
use sr_common::Diagnostic;
use sr_evidence::events;
use sr_policy::operator::{BlockedVerdict, NetworkConfig};

use crate::network_facts::{
    AllowlistFacts, BlockedVerdictFacts, Boundary, ConnectionLimit, Link, NetworkAudit,
    NetworkFacts, ResolverAccess as ResolverAccessFacts,
};
use crate::network_hook::{
    AttachedNetwork, GuestAddressing, NamespaceSource, NetworkHook, NetworkSample,
    PreparedNamespace,
};
use audit::{Counters, DnsTally};
use background::Background;
use dns::{DnsServer, NameTargets, Resolver, ResolverAccess, UdpUpstream, Upstream};
pub use error::NetworkError;
use exec::{NetCommand, NetCommandExecutor, Netns, SystemExecutor};
use ruleset::RunBinding;

/// Where the sandbox's resolv.conf and the applied ruleset are written, under the run dir.
pub const NET_DIR: &str = "net";

/// How the ruleset digest is computed (recorded next to it in the facts).
pub const DIGEST_METHOD: &str = "sha256 over RFC 8785 JSON of `nft -j -p list table <family> \
    <table>` (layer 4 protocols as numbers) read back after apply, without metainfo, handles, \
    counter values and set elements";

/// Knobs a test or the integrator may change; defaults are the production values.
#[derive(Clone)]
pub struct Options {
    /// Runs the host commands.
    pub exec: Arc<dyn NetCommandExecutor>,
    /// The upstream resolver; `None`: UDP to `NetworkConfig.upstream_dns`, else resolv.conf.
    pub upstream: Option<Arc<dyn Upstream>>,
    /// Port the run's resolver listens on (53; the sandbox's resolv.conf cannot name a port).
    pub dns_port: u16,
    /// Directory of the shared forwarding lock and record.
    pub state_dir: PathBuf,
    /// Bind the resolver here instead of the host-side address, without binding it to the
    /// run's interface, and answer queries from this same address instead of the sandbox's
    /// (unit tests, where the recorded host has no such address or link). The sandbox's
    /// resolv.conf still names the host side.
    pub resolver_bind: Option<std::net::Ipv4Addr>,
    /// Releases a finished process sandbox's objects off the waited-for path (see
    /// [`release`]); `None`: release removes them itself. Default: what
    /// [`release::defer_to`] chose for this process.
    pub detacher: Option<Arc<dyn release::Detacher>>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("dns_port", &self.dns_port)
            .field("state_dir", &self.state_dir)
            .field("deferred_release", &self.detacher.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            exec: Arc::new(SystemExecutor),
            upstream: None,
            dns_port: 53,
            state_dir: PathBuf::from(forwarding::DEFAULT_STATE_DIR),
            resolver_bind: None,
            detacher: release::default_detacher(),
        }
    }
}

/// The run's link, from the boundary.
#[derive(Debug, Clone, Copy)]
enum LinkKind {
    /// A veth pair, its peer in the namespace of `pid`.
    Veth { pid: u32 },
    /// A TAP device (root's; the runner hands the VMM an open descriptor).
    Tap,
}

/// Step 3: the table in one transaction, then read back (the digest covers what the kernel
/// holds, not what was sent), hashed, and its canonical form written to `net/ruleset.json`
/// of `run_dir`: all of it on the table's thread, beside the boundary's start rather than on
/// attach's path. Sends on `applied` once the apply is done (attach waits for no more) and
/// returns the listing's digest.
fn apply_table(
    exec: &dyn NetCommandExecutor,
    doc: Value,
    table: &(String, String),
    run_dir: Option<&Path>,
    applied: mpsc::Sender<()>,
) -> Result<String, NetworkError> {
    link::run_step(
        exec,
        "applying the nftables table",
        NetCommand::NftApply { doc },
    )?;
    // Attach goes on from here; it learns of a failed apply from this thread's result.
    let _ = applied.send(());
    let listing = link::run_step(
        exec,
        "reading the applied table",
        NetCommand::nft(&["list", "table", &table.0, &table.1]),
    )?;
    let listing: Value = serde_json::from_str(&listing)
        .map_err(|e| NetworkError::Plan(format!("nft listing is not JSON: {e}")))?;
    if let Some(run_dir) = run_dir {
        let canonical = serde_json_canonicalizer::to_vec(&audit::canonical_ruleset(&listing))
            .unwrap_or_default();
        write_net_file(run_dir, "ruleset.json", canonical)?;
    }
    Ok(audit::ruleset_digest(&listing))
}

/// Writes `<run_dir>/net/<name>` (creating `net/`), returning its path.
fn write_net_file(run_dir: &Path, name: &str, bytes: Vec<u8>) -> Result<PathBuf, NetworkError> {
    let net_dir = run_dir.join(NET_DIR);
    let path = net_dir.join(name);
    std::fs::create_dir_all(&net_dir)
        .and_then(|()| std::fs::write(&path, bytes))
        .map(|()| path.clone())
        .map_err(|source| NetworkError::RunDir {
            path: path.display().to_string(),
            source,
        })
}

/// What attach created, so release removes exactly that.
#[derive(Debug, Default)]
struct Created {
    link: Option<String>,
    /// The link is a veth pair whose peer lives in the sandbox's network namespace.
    veth: bool,
    table: Option<(String, String)>,
    forwarding_touched: bool,
    subnet_claimed: bool,
}

/// `network.mode: allowlist` for one run.
pub struct AllowlistNetwork {
    plan: NetworkPlan,
    run_id: String,
    pool: Ipv4Net,
    max_connections: u32,
    blocked: BlockedVerdict,
    upstream_addr: Option<SocketAddr>,
    opts: Options,
    binding: Option<RunBinding>,
    /// The table's apply and read-back ([`apply_table`]), from `prepare` (or attach) until a
    /// sample after attach takes its result (the read-back's digest) into `digest`.
    table_apply: Option<Background<String>>,
    /// Receives once the table's thread has applied the table: what attach waits for.
    table_applied: Option<mpsc::Receiver<()>>,
    /// The read-back's digest, or why there is none, once taken from the table's thread.
    digest: Option<Result<String, Diagnostic>>,
    /// Attach succeeded: the samples may take the digest (before, attach still needs the
    /// table's thread).
    attached: bool,
    /// The link into a namespace made ahead of the sandbox ([`link::start_in_new_namespace`]),
    /// from `prepare` until attach takes its result.
    link_apply: Option<Background<()>>,
    created: Created,
    dns: Option<DnsServer>,
    last_hits: BTreeMap<String, (u64, u64)>,
    pending: Vec<(sr_common::events::EventType, Value)>,
    last_counters: Counters,
    tally: DnsTally,
    dns_errors: Vec<String>,
    released: bool,
    final_sampled: bool,
    released_objects: Vec<String>,
    run_dir: Option<PathBuf>,
    /// What a deferred release took over: the releaser's pid and the objects.
    deferred: Option<(u32, Vec<String>)>,
    /// Why a deferred release could not be started (release then ran inline).
    deferral_failed: Option<String>,
}

impl std::fmt::Debug for AllowlistNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AllowlistNetwork")
            .field("run_id", &self.run_id)
            .field("binding", &self.binding)
            .finish_non_exhaustive()
    }
}

fn upstream_default(config: &NetworkConfig) -> Result<Option<SocketAddr>, NetworkError> {
    match &config.upstream_dns {
        Some(text) => text
            .parse::<SocketAddr>()
            .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
            .map(Some)
            .map_err(|_| NetworkError::Config(format!("upstreamDns {text:?} is not ip:port"))),
        None => Ok(std::fs::read_to_string("/etc/resolv.conf")
            .ok()
            .as_deref()
            .and_then(dns::upstream_from_resolv_conf)),
    }
}

impl AllowlistNetwork {
    /// Checks the plan, run id and operator settings; touches nothing on the host.
    pub fn new(
        plan: &NetworkPlan,
        run_id: &str,
        config: &NetworkConfig,
    ) -> Result<Self, Diagnostic> {
        Self::with_options(plan, run_id, config, Options::default())
    }

    /// [`AllowlistNetwork::new`] with explicit [`Options`].
    pub fn with_options(
        plan: &NetworkPlan,
        run_id: &str,
        config: &NetworkConfig,
        opts: Options,
    ) -> Result<Self, Diagnostic> {
        let pool = addressing::parse_pool(&config.subnet_pool)?;
        // Render once against a placeholder /30 so a plan we cannot apply fails before any change.
        let mut probe = RunBinding::new(
            plan,
            run_id,
            Ipv4Net::new(pool.network(), 30).map_err(|e| NetworkError::Config(e.to_string()))?,
            pool,
            config.max_connections,
        )?;
        probe.reject_blocked = config.blocked == BlockedVerdict::Reject;
        ruleset::render(plan, &probe)?;
        let upstream_addr = if opts.upstream.is_some() {
            None
        } else {
            upstream_default(config)?
        };
        Ok(AllowlistNetwork {
            plan: plan.clone(),
            run_id: run_id.to_owned(),
            pool,
            max_connections: config.max_connections,
            blocked: config.blocked,
            upstream_addr,
            opts,
            binding: None,
            table_apply: None,
            table_applied: None,
            digest: None,
            attached: false,
            link_apply: None,
            created: Created::default(),
            dns: None,
            last_hits: BTreeMap::new(),
            pending: Vec::new(),
            last_counters: Counters::default(),
            tally: DnsTally::default(),
            dns_errors: Vec::new(),
            released: false,
            final_sampled: false,
            released_objects: Vec::new(),
            run_dir: None,
            deferred: None,
            deferral_failed: None,
        })
    }

    /// The run's names and addresses, once attached.
    pub fn binding(&self) -> Option<&RunBinding> {
        self.binding.as_ref()
    }

    fn run(&self, step: &str, cmd: NetCommand) -> Result<String, NetworkError> {
        link::run_step(self.opts.exec.as_ref(), step, cmd)
    }

    fn name_targets(&self) -> BTreeMap<String, NameTargets> {
        let mut names: BTreeMap<String, NameTargets> = self
            .plan
            .dns
            .allowed_names
            .iter()
            .map(|n| (dns::normalize(n), NameTargets::default()))
            .collect();
        for set in &self.plan.nft.sets {
            let t = names.entry(dns::normalize(&set.host)).or_default();
            if set.set_type == "ipv6_addr" {
                t.v6.push(set.name.clone())
            } else {
                t.v4.push(set.name.clone())
            }
        }
        names
    }

    fn attach_inner(
        &mut self,
        boundary: &Boundary,
        run_dir: &Path,
    ) -> Result<AttachedNetwork, NetworkError> {
        // The link's kind; a TAP must be the interface the plan's rules name.
        let kind = match boundary {
            Boundary::Namespace { pid } => LinkKind::Veth { pid: *pid },
            Boundary::Tap { name } => {
                let expected = self
                    .plan
                    .host_interface
                    .replace(sr_bundle::RUN_ID_PLACEHOLDER, &self.run_id);
                if *name != expected {
                    return Err(NetworkError::Plan(format!(
                        "the VMM's TAP device is {name:?} but the plan's rules name {expected:?}"
                    )));
                }
                LinkKind::Tap
            }
        };
        self.run_dir = Some(run_dir.to_path_buf());
        // 1 and 3 (started): the /30, the rendering, and the table's apply and read-back on a
        // thread of its own, unless `prepare` started them while the boundary started.
        if self.table_apply.is_none() {
            self.prepare_inner()?;
        }
        let Some(b) = self.binding.clone() else {
            return Err(NetworkError::Config("attach without a binding".into()));
        };
        let subnet = b.subnet;
        let (h, g) = (b.host_if.clone(), b.guest_if.clone());

        // 2. The link: a veth pair, or a TAP device (down-carrier until the backend attaches
        //    to it; addresses and routes do not need the carrier). The table's rules name the
        //    link (`iifname`/`oifname`), never its index, so its thread runs meanwhile.
        let mut steps = Vec::new();
        let mut t = std::time::Instant::now();
        let mut step_done = |name: &'static str| {
            steps.push((name, t.elapsed()));
            t = std::time::Instant::now();
        };
        self.created.link = Some(h.clone());
        self.created.veth = matches!(kind, LinkKind::Veth { .. });
        let exec = self.opts.exec.as_ref();
        let link = match (kind, self.link_apply.take()) {
            // Made with the namespace, while the boundary started.
            (LinkKind::Veth { .. }, Some(made)) => made.take(),
            (LinkKind::Veth { pid }, None) => link::veth_link(exec, Netns::Pid(pid), &b),
            (LinkKind::Tap, _) => link::tap_link(exec, &b),
        };
        step_done("link");
        // 3. The table: applied, whether or not the link failed, so that a rollback never
        //    races its creation. Its read-back goes on meanwhile.
        let table = self.wait_table_applied();
        step_done("table");
        link?;
        // A guest configures its own side from its kernel command line (`AttachedNetwork.guest`).
        table?;

        // 4. The resolver, and the first resolution of every allowed name.
        let upstream: Arc<dyn Upstream> = match (&self.opts.upstream, self.upstream_addr) {
            (Some(u), _) => u.clone(),
            (None, Some(server)) => Arc::new(UdpUpstream {
                server,
                timeout: Duration::from_secs(2),
            }),
            (None, None) => {
                return Err(NetworkError::Config(
                    "no upstreamDns set and no nameserver in /etc/resolv.conf".into(),
                ));
            }
        };
        let names = self.name_targets();
        let resolver = Arc::new(Resolver::new(
            names.clone(),
            upstream,
            self.opts.exec.clone(),
            b.clone(),
            self.pool,
        ));
        let (bind, access) = match self.opts.resolver_bind {
            Some(addr) => (
                addr,
                ResolverAccess {
                    device: None,
                    client: addr,
                },
            ),
            None => (
                b.host_addr,
                ResolverAccess {
                    device: Some(h.clone()),
                    client: b.guest_addr,
                },
            ),
        };
        let resolver_access = ResolverAccessFacts {
            device: access.device.clone(),
            source: access.client.to_string(),
        };
        let server = DnsServer::start(resolver.clone(), bind, self.opts.dns_port, access).map_err(
            |source| NetworkError::Resolver {
                addr: format!("{bind}:{}", self.opts.dns_port),
                source,
            },
        )?;
        let resolver_addr = server.local;
        self.dns = Some(server);
        let mut initial = BTreeMap::new();
        let mut destinations: BTreeSet<IpAddr> = BTreeSet::new();
        for (name, targets) in &names {
            let mut kinds = vec![RecordType::A];
            if !targets.v6.is_empty() {
                kinds.push(RecordType::AAAA);
            }
            let mut found = Vec::new();
            for qtype in kinds {
                match resolver.resolve(name, qtype) {
                    Ok(r) => found.extend(r.addresses),
                    Err(e) => self.dns_errors.push(format!("{name} {qtype}: {e}")),
                }
            }
            destinations.extend(found.iter().copied());
            initial.insert(
                name.clone(),
                found.iter().map(ToString::to_string).collect::<Vec<_>>(),
            );
        }

        step_done("resolver");
        // 5. Forwarding on the uplinks towards the destinations, and resolv.conf.
        for rule in &self.plan.nft.rules {
            if let Some(net) = rule.daddr.as_deref().and_then(|d| d.parse::<IpNet>().ok()) {
                let probe = net.hosts().next().unwrap_or(net.addr());
                destinations.insert(probe);
            }
        }
        let mut uplinks = BTreeSet::new();
        let mut unroutable = Vec::new();
        for dest in destinations.iter().filter(|d| d.is_ipv4()) {
            // No route means no reply path to enable: record it; the rule stays inert.
            let Ok(out) = self.opts.exec.run(&NetCommand::RouteGet {
                dst: dest.to_string(),
            }) else {
                unroutable.push(dest.to_string());
                continue;
            };
            let dev = serde_json::from_str::<Value>(&out)
                .ok()
                .and_then(|v| v.get(0)?.get("dev")?.as_str().map(str::to_owned));
            if let Some(dev) = dev.filter(|d| d != "lo" && *d != h) {
                uplinks.insert(dev);
            }
        }
        let uplinks: Vec<String> = uplinks.into_iter().collect();
        self.created.forwarding_touched = true;
        let lock =
            forwarding::StateLock::acquire(&self.opts.state_dir).map_err(NetworkError::Config)?;
        let enabled = forwarding::ensure(self.opts.exec.as_ref(), &lock, &self.run_id, &uplinks)
            .map_err(NetworkError::Config)?;
        drop(lock);
        let resolv = write_net_file(
            run_dir,
            "resolv.conf",
            format!("nameserver {}\noptions timeout:2 attempts:2\n", b.host_addr).into_bytes(),
        )?;

        step_done("forwarding");
        let facts = AllowlistFacts {
            table: format!("{} {}", b.family, b.table),
            link: if matches!(kind, LinkKind::Tap) {
                Link::Tap { tap_interface: h }
            } else {
                Link::Veth {
                    host_interface: h,
                    guest_interface: g,
                }
            },
            subnet: subnet.to_string(),
            host_address: b.host_addr.to_string(),
            guest_address: b.guest_addr.to_string(),
            resolver: resolver_addr.to_string(),
            resolver_access,
            connection_limit: ConnectionLimit {
                max_connections: b.max_connections,
                rule: format!(
                    "before each accept of chains forward and input: <its matches> ct state \
                     new jump {}; there: ct count over {} counter drop (rule {})",
                    ruleset::CONNLIMIT_CHAIN,
                    b.max_connections,
                    ruleset::CONNLIMIT_ID
                ),
            },
            pool_drop: self.pool.to_string(),
            blocked: BlockedVerdictFacts {
                verdict: self.blocked.as_str().to_owned(),
                rule: if b.reject_blocked {
                    "default-drop and host-drop count, then reject: tcp reset for tcp, \
                     icmpx admin-prohibited for the rest"
                } else {
                    "default-drop and host-drop count and drop silently"
                }
                .to_owned(),
            },
            upstream_dns: self.upstream_addr.map(|a| a.to_string()),
            nft_ruleset_digest: None,
            nft_ruleset_digest_method: DIGEST_METHOD.to_owned(),
            uplinks,
            unroutable,
            ipv4_forwarding_enabled: enabled,
            ipv6: "not routed (host side disable_ipv6=1; IPv6 from the sandbox is dropped)"
                .to_owned(),
            initial_resolution: initial,
        };
        self.attached = true;
        Ok(AttachedNetwork {
            resolv_conf: Some(resolv),
            facts: NetworkFacts::Allowlist(Box::new(facts)),
            guest: Some(GuestAddressing {
                address: b.guest_addr,
                prefix: subnet.prefix_len(),
                gateway: b.host_addr,
            }),
            steps,
        })
    }

    fn read_counters(&self) -> Result<Counters, NetworkError> {
        let Some(b) = &self.binding else {
            return Ok(Counters::default());
        };
        let out = self
            .opts
            .exec
            .run(&NetCommand::NftCounters {
                family: b.family.clone(),
                table: b.table.clone(),
                set: ruleset::BLOCKED_SET.to_owned(),
            })
            .map_err(NetworkError::Sample)?;
        let listing: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        Ok(audit::parse_counters(&listing))
    }

    fn drain_dns(&mut self) -> Vec<(sr_common::events::EventType, Value)> {
        let Some(server) = &self.dns else {
            return Vec::new();
        };
        let (evs, tally, errors) = server.resolver().drain();
        self.tally = tally;
        self.dns_errors.extend(errors);
        evs.into_iter()
            .map(|e| (events::NETWORK_DNS_QUERY, e))
            .collect()
    }

    fn audit(&self) -> NetworkAudit {
        let mut block = audit::audit_block(
            &self.plan,
            &self.last_counters,
            self.tally,
            self.max_connections,
        );
        block.dns_errors = self.dns_errors.iter().take(20).cloned().collect();
        block
    }

    /// Removes what attach made. `sandbox_ended`: the sandbox's processes are gone, so its
    /// network namespace is going too (not so when attach itself rolls back).
    fn release_inner(&mut self, sandbox_ended: bool) -> Result<(), NetworkError> {
        // A table or link still being made is waited for: removing it first would race its
        // creation.
        self.settle_table();
        if let Some(link) = &mut self.link_apply {
            link.settle();
        }
        let mut removed = Vec::new();
        let mut errors = Vec::new();
        if let Some(mut server) = self.dns.take() {
            if let Err(e) = server.stop() {
                self.dns_errors.push(e);
            }
            let (evs, tally, errs) = server.resolver().drain();
            self.tally = tally;
            self.dns_errors.extend(errs);
            self.pending
                .extend(evs.into_iter().map(|e| (events::NETWORK_DNS_QUERY, e)));
            removed.push("resolver".to_owned());
        }
        // Keep the final counters for a sample after release, unless the final sample has
        // just read them: the audit is always taken before any object goes.
        if self.created.table.is_some() && !self.final_sampled {
            if let Ok(c) = self.read_counters() {
                self.last_counters = c;
            }
        }
        let mut pending = release::Pending {
            run_id: self.run_id.clone(),
            state_dir: self.opts.state_dir.clone(),
            table: self.created.table.clone(),
            link: self.created.link.clone(),
            veth: self.created.veth,
            shared: self.created.forwarding_touched || self.created.subnet_claimed,
        };
        if sandbox_ended && self.created.veth && !pending.is_empty() {
            match self.defer(&pending) {
                Ok(Some(pid)) => {
                    self.deferred = Some((pid, pending.objects()));
                    self.created = Created::default();
                    self.released_objects.extend(removed);
                    return Ok(());
                }
                Ok(None) => {}
                // Released here instead; the report says why it was not deferred.
                Err(e) => self.deferral_failed = Some(e),
            }
        }
        let (gone, failed) =
            release::release_objects(self.opts.exec.as_ref(), &mut pending, sandbox_ended);
        removed.extend(gone);
        errors.extend(failed);
        self.created.table = pending.table;
        self.created.link = pending.link;
        if !pending.shared {
            self.created.forwarding_touched = false;
            self.created.subnet_claimed = false;
        }
        self.released_objects.extend(removed);
        if !errors.is_empty() {
            return Err(NetworkError::Release(errors.join("; ")));
        }
        Ok(())
    }

    /// Step 1 and the start of step 3: the host's addresses, the run's /30 (claimed in the
    /// ledger), the rendering, then the table's apply and read-back on a thread of its own
    /// ([`Self::take_table`] joins it). Needs nothing of the boundary.
    fn prepare_inner(&mut self) -> Result<(), NetworkError> {
        let addrs = self.run("listing host addresses", NetCommand::HostAddresses)?;
        // Picked and recorded under the state lock: a run attaching at the same instant sees
        // this claim before the address exists on the host.
        let subnet = {
            let lock = forwarding::StateLock::acquire(&self.opts.state_dir)
                .map_err(NetworkError::Config)?;
            self.created.subnet_claimed = true;
            ledger::claim(
                &lock,
                &self.pool,
                &addressing::networks_in_use(&addrs),
                ledger::Holder::this_process(&self.run_id),
                &ledger::holder_alive,
            )?
        };
        let mut b = RunBinding::new(
            &self.plan,
            &self.run_id,
            subnet,
            self.pool,
            self.max_connections,
        )?;
        b.reject_blocked = self.blocked == BlockedVerdict::Reject;
        let doc = ruleset::render(&self.plan, &b)?;
        let table = (b.family.clone(), b.table.clone());
        self.binding = Some(b);
        // Before the thread starts: a rollback removes what may exist ("not found" is done),
        // after joining it.
        self.created.table = Some(table.clone());
        let exec = self.opts.exec.clone();
        let run_dir = self.run_dir.clone();
        let (applied, table_applied) = mpsc::channel();
        let applying = Background::start("sr-nft", move || {
            apply_table(exec.as_ref(), doc, &table, run_dir.as_deref(), applied)
        })
        .map_err(|e| NetworkError::Config(format!("starting the nftables thread: {e}")))?;
        self.table_apply = Some(applying);
        self.table_applied = Some(table_applied);
        Ok(())
    }

    /// For a boundary that joins a namespace made for it: the namespace and the veth into it,
    /// on a thread of their own ([`link::start_in_new_namespace`]).
    fn prepare_namespace(&mut self) -> Result<PreparedNamespace, NetworkError> {
        let Some(b) = self.binding.clone() else {
            return Err(NetworkError::Config("prepare without a binding".into()));
        };
        // Before the thread starts, as for the table: a rollback removes what may exist.
        self.created.link = Some(b.host_if.clone());
        self.created.veth = true;
        let (prepared, linking) = link::start_in_new_namespace(self.opts.exec.clone(), b)?;
        self.link_apply = Some(linking);
        Ok(prepared)
    }

    /// Waits until the table's thread has applied the table; when it ended without, its
    /// result says why.
    fn wait_table_applied(&mut self) -> Result<(), NetworkError> {
        if let Some(Ok(())) = self.table_applied.take().map(|applied| applied.recv()) {
            return Ok(());
        }
        match self.table_apply.take() {
            Some(thread) => thread.take().map(drop),
            None => Err(NetworkError::Config(
                "the nftables table was not applied".into(),
            )),
        }
    }

    /// After attach: the read-back's digest into `digest`, waiting for the table's thread.
    /// The sample that takes it from the thread records `network.ruleset` in `events`, once.
    fn collect_digest(&mut self, events: &mut Vec<(sr_common::events::EventType, Value)>) {
        if !self.attached {
            return;
        }
        let Some(thread) = self.table_apply.take() else {
            return;
        };
        let digest = thread.take().map_err(|e| {
            let mut d = e.to_diagnostic();
            d.path = error::PHASE_MONITOR.into();
            d
        });
        if let Ok(digest) = &digest {
            events.push((
                events::NETWORK_RULESET,
                serde_json::json!({
                    "nftRulesetDigest": digest,
                    "nftRulesetDigestMethod": DIGEST_METHOD,
                }),
            ));
        }
        self.digest = Some(digest);
    }

    /// Waits for the table's thread, if one runs; its result stays for attach (a failed apply)
    /// or, after attach, for the samples (the read-back's digest).
    fn settle_table(&mut self) {
        if let Some(table) = &mut self.table_apply {
            table.settle();
        }
    }

    /// Hands `pending` to a deferred releaser, when this process has one: writes and locks
    /// `<run dir>/release.pending`, starts the releaser with the lock. `Ok(None)`: no releaser
    /// (release inline).
    fn defer(&self, pending: &release::Pending) -> Result<Option<u32>, String> {
        let (Some(detacher), Some(run_dir)) = (&self.opts.detacher, &self.run_dir) else {
            return Ok(None);
        };
        let lock = release::write_pending(run_dir, pending)?;
        match detacher.detach(&release::pending_path(run_dir), &lock) {
            Ok(pid) => {
                // The releaser holds the lock through its inherited descriptor. Dropping the
                // Flock here would unlock the shared open file description (flock(LOCK_UN)),
                // so this descriptor stays open until this process exits instead.
                std::mem::forget(lock);
                Ok(Some(pid))
            }
            Err(e) => {
                drop(lock);
                let _ = std::fs::remove_file(release::pending_path(run_dir));
                Err(e)
            }
        }
    }

    /// The release handed to a deferred releaser, if any: the pid of the process that started
    /// it and the objects it removes.
    pub fn deferred_release(&self) -> Option<(u32, &[String])> {
        self.deferred.as_ref().map(|(pid, o)| (*pid, o.as_slice()))
    }

    /// What release has removed so far (`resolver`, `table inet safe_run_<id>`, `link ...`,
    /// `forwarding on <if> (restored)`), for the run's cleanup record.
    pub fn released_objects(&self) -> &[String] {
        &self.released_objects
    }
}

impl NetworkHook for AllowlistNetwork {
    fn prepare(
        &mut self,
        run_dir: &Path,
        source: NamespaceSource,
    ) -> Result<Option<PreparedNamespace>, Diagnostic> {
        self.run_dir = Some(run_dir.to_path_buf());
        let prepared = self.prepare_inner().and_then(|()| match source {
            NamespaceSource::Hook => self.prepare_namespace().map(Some),
            NamespaceSource::Boundary => Ok(None),
        });
        prepared.map_err(|e| {
            let mut d = e.to_diagnostic();
            if let Err(release) = self.release_inner(false) {
                d.message
                    .push_str(&format!("; rolling back also failed: {release}"));
            }
            self.released = true;
            d
        })
    }

    fn attach(
        &mut self,
        boundary: &Boundary,
        run_dir: &Path,
    ) -> Result<AttachedNetwork, Diagnostic> {
        self.released = false;
        match self.attach_inner(boundary, run_dir) {
            Ok(a) => Ok(a),
            Err(e) => {
                let mut d = e.to_diagnostic();
                if let Err(release) = self.release_inner(false) {
                    d.message
                        .push_str(&format!("; rolling back also failed: {release}"));
                }
                self.released = true;
                Err(d)
            }
        }
    }

    fn sample(&mut self, final_sample: bool) -> Result<NetworkSample, Diagnostic> {
        let mut out = std::mem::take(&mut self.pending);
        out.extend(self.drain_dns());
        // Counters only of a table that is there (a sample between prepare and attach).
        self.settle_table();
        self.collect_digest(&mut out);
        if self.created.table.is_some() {
            match self.read_counters() {
                Ok(c) => {
                    self.last_counters = c;
                    self.final_sampled = final_sample;
                }
                Err(e) => {
                    // Keep the drained events for the next sample.
                    self.pending = out;
                    return Err(e.to_diagnostic());
                }
            }
        }
        for payload in audit::hit_events(
            &self.plan,
            &self.last_counters,
            &mut self.last_hits,
            final_sample,
        ) {
            out.push((events::NETWORK_RULE_HIT, payload));
        }
        Ok(NetworkSample {
            events: out,
            audit: Some(self.audit()),
            ruleset_digest: self.digest.clone(),
        })
    }

    fn release(&mut self) -> Result<(), Diagnostic> {
        if self.released
            && self.created.link.is_none()
            && self.created.table.is_none()
            && !self.created.forwarding_touched
            && !self.created.subnet_claimed
        {
            return Ok(());
        }
        let result = self.release_inner(true);
        self.released = true;
        result.map_err(|e| e.to_diagnostic())
    }

    fn release_summary(&self) -> Value {
        let mut v = serde_json::json!({ "removed": self.released_objects });
        if let Some((pid, objects)) = &self.deferred {
            v["deferred"] = serde_json::json!({
                "objects": objects,
                "startedBy": pid,
                "pending": crate::rundir::RELEASE_PENDING_FILE,
                "record": release::RECORD_FILE,
            });
        }
        if let Some(e) = &self.deferral_failed {
            v["deferralFailed"] = Value::String(e.clone());
        }
        v
    }
}

impl Drop for AllowlistNetwork {
    fn drop(&mut self) {
        // Last line of defence when a caller forgot release(); errors have nowhere to go here.
        let _ = NetworkHook::release(self);
    }
}

#[cfg(test)]
mod tests;
