//! Renders a [`NetworkPlan`] into the nftables JSON document applied in one transaction.
//!
//! Pure: plan + the run's names and addresses in, `{"nftables": [...]}` out. The runner applies
//! the plan; it never invents an allow rule. What it adds is derived from the plan's structure
//! and from the run's own addresses, and is listed here and in docs/network.md:
//!
//! * every rule in a `filter` chain is confined to the run's interface (`iifname <host if>`), so
//!   the base chains (policy accept) never touch the host's other traffic;
//! * `antispoof`, first in the forward and input chains: `iifname <host if> ip saddr !=
//!   <sandbox address> drop`;
//! * `pool-drop`, next in the forward chain: `iifname <host if> ip daddr <subnet pool> drop`,
//!   so no run's sandbox reaches another run's link (host side or sandbox side), whatever the
//!   policy allows;
//! * accept rules of the `input` chain (the plan's `dns`) also match `ip daddr <host side>`:
//!   the sandbox reaches its own resolver's address, not port 53 of the host's other addresses
//!   (a plan input accept rule with its own destination is refused);
//! * the per-run bound on conntrack entries: right before each accept rule of the forward
//!   and input chains, `<id>/bound` (the same matches, `ct state new`, `jump connlimit`); the
//!   regular chain `connlimit` holds one rule, `conn-limit`: `ct count over <maxConnections>
//!   counter drop`. One rule, so one count for forwarded flows and flows to the host (the
//!   resolver) together, and only flows an accept rule is about to let through are counted:
//!   a flow that is dropped is never confirmed, but the kernel removes such entries from a
//!   `ct count` list only lazily, so counting blocked attempts would let a burst of them use
//!   up the bound. Under the bound, `connlimit` returns and the accept rule counts the flow;
//! * accept rules in the `forward` chain match only `ct state new`: their counters count new
//!   flows, and a rule `established` (first in the chain) lets the rest of an accepted flow and
//!   its ICMP errors through. An allowed flow keeps going when a host's set element expires;
//!   new flows follow the name;
//! * `ingress-drop`: `oifname <host if> ct state != established,related drop`, so no host on a
//!   network that reaches this one can open a connection into the sandbox (egress only);
//! * before the plan's default drop: one counter-only rule `<id>/blocked` per egress rule
//!   (same destination, no protocol or port match, no verdict) to count what was sent to an
//!   allowed destination but not allowed, and `blocked-summary`, which records each dropped
//!   tcp/udp destination in the dynamic set `blocked_v4` with a per-element counter;
//! * the plan's default drops (`default-drop` in forward, `host-drop` in input) refuse unless
//!   the operator set `network.blocked: drop`: the rule keeps its id and counter without a
//!   verdict, then `<id>/reset` (`meta l4proto tcp reject with tcp reset`) and `<id>/reject`
//!   (`reject with icmpx admin-prohibited`) follow, so a blocked client fails at once instead
//!   of waiting for its own timeout, and the audit counts exactly what it counted before;
//! * host-name sets get `flags timeout` (elements expire with their DNS TTL);
//! * a `nat` chain on hook `postrouting` gets `ip saddr <run /30> oifname != <host if>
//!   masquerade` (the plan cannot know the run's subnet).
//!
//! The JSON is built with `serde_json` rather than the `nftables` crate: the runner emits a
//! small fixed vocabulary (match, counter, accept/drop, masquerade, set update), the snapshot
//! tests then pin exactly the bytes `nft -j -f -` receives, and there is no second schema
//! model to keep in step with the installed nft. The read-back listing is parsed generically
//! (audit.rs) for the same reason.
//!
//! Plan `daddr` values are a CIDR (`10.0.0.0/8`, `2001:db8::/32`), an address, or the name of
//! one of the plan's sets (with or without a leading `@`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use serde_json::{Value, json};
use sr_bundle::{NetworkPlan, NftRule, RUN_ID_PLACEHOLDER};

use super::error::NetworkError;

/// Name of the runner's set of dropped (address, protocol, port) with counters.
pub const BLOCKED_SET: &str = "blocked_v4";
/// Comment of the runner's established/related accept rule.
pub const ESTABLISHED_ID: &str = "established";
/// Comment of the runner's anti-spoofing rule (first in the forward and input chains).
pub const ANTISPOOF_ID: &str = "antispoof";
/// Comment of the runner's ingress drop rule.
pub const INGRESS_DROP_ID: &str = "ingress-drop";
/// Comment of the rule feeding [`BLOCKED_SET`].
pub const BLOCKED_SUMMARY_ID: &str = "blocked-summary";
/// Comment of the runner's masquerade rule.
pub const MASQUERADE_ID: &str = "masquerade";
/// Suffix of the per-egress-rule blocked counter's comment (`egress-0/blocked`).
pub const BLOCKED_SUFFIX: &str = "/blocked";
/// Most entries the blocked summary set holds (the kernel stops adding beyond it).
pub const BLOCKED_SET_SIZE: u32 = 4096;
/// Comment of the runner's drop of traffic towards the subnet pool (other runs' links).
pub const POOL_DROP_ID: &str = "pool-drop";
/// The runner's regular chain holding the connection bound.
pub const CONNLIMIT_CHAIN: &str = "connlimit";
/// Comment of the connection-bound rule.
pub const CONNLIMIT_ID: &str = "conn-limit";
/// Suffix of the jump to [`CONNLIMIT_CHAIN`] before an accept rule (`egress-0/bound`).
pub const BOUND_SUFFIX: &str = "/bound";
/// Suffix of a default drop's TCP reset rule (`default-drop/reset`).
pub const RESET_SUFFIX: &str = "/reset";
/// Suffix of a default drop's ICMP administratively-prohibited rule (`default-drop/reject`).
pub const REJECT_SUFFIX: &str = "/reject";

/// The run-time values the plan's placeholders and the runner-derived rules need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunBinding {
    /// Run id (12 lowercase hex).
    pub run_id: String,
    /// nftables family (`inet`).
    pub family: String,
    /// Table name with the run id substituted.
    pub table: String,
    /// Host-side interface.
    pub host_if: String,
    /// Sandbox-side interface.
    pub guest_if: String,
    /// The run's /30.
    pub subnet: Ipv4Net,
    /// Host-side address (the sandbox's gateway and resolver).
    pub host_addr: Ipv4Addr,
    /// Sandbox-side address.
    pub guest_addr: Ipv4Addr,
    /// The operator's subnet pool (every run's /30 lies in it).
    pub pool: Ipv4Net,
    /// Most conntrack entries the run's sandbox may hold (`network.maxConnections`).
    pub max_connections: u32,
    /// Whether the plan's default drops refuse (TCP reset / ICMP administratively prohibited)
    /// instead of dropping silently (`network.blocked`; true unless the operator chose `drop`).
    pub reject_blocked: bool,
}

impl RunBinding {
    /// Substitutes `run_id` into the plan's templates and checks the results.
    pub fn new(
        plan: &NetworkPlan,
        run_id: &str,
        subnet: Ipv4Net,
        pool: Ipv4Net,
        max_connections: u32,
    ) -> Result<Self, NetworkError> {
        if run_id.is_empty()
            || run_id.len() > 12
            || !run_id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(NetworkError::Plan(format!(
                "run id {run_id:?} is not 1-12 lowercase hex characters"
            )));
        }
        let sub = |t: &str| t.replace(RUN_ID_PLACEHOLDER, run_id);
        let (table, host_if, guest_if) = (
            sub(&plan.nft.table),
            sub(&plan.host_interface),
            sub(&plan.guest_interface),
        );
        for name in [&host_if, &guest_if] {
            if name.is_empty()
                || name.len() > 15
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(NetworkError::Plan(format!(
                    "interface name {name:?} is not a valid 1-15 character name"
                )));
            }
        }
        if table.is_empty()
            || !table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(NetworkError::Plan(format!(
                "table name {table:?} is not alphanumeric"
            )));
        }
        if !pool.contains(&subnet) {
            return Err(NetworkError::Config(format!(
                "{subnet} is not inside the pool {pool}"
            )));
        }
        if max_connections == 0 {
            return Err(NetworkError::Config("maxConnections is 0".into()));
        }
        let mut hosts = subnet.hosts();
        let (Some(host_addr), Some(guest_addr)) = (hosts.next(), hosts.next()) else {
            return Err(NetworkError::Config(format!(
                "{subnet} has fewer than two host addresses"
            )));
        };
        Ok(RunBinding {
            run_id: run_id.to_owned(),
            family: plan.nft.family.clone(),
            table,
            host_if,
            guest_if,
            subnet,
            host_addr,
            guest_addr,
            pool,
            max_connections,
            reject_blocked: true,
        })
    }
}

/// How a rule's destination is matched.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Daddr {
    Net(IpNet),
    Set { name: String, v6: bool },
}

fn parse_daddr(plan: &NetworkPlan, rule: &NftRule, text: &str) -> Result<Daddr, NetworkError> {
    let bare = text.strip_prefix('@').unwrap_or(text);
    if let Some(set) = plan.nft.sets.iter().find(|s| s.name == bare) {
        let v6 = match set.set_type.as_str() {
            "ipv4_addr" => false,
            "ipv6_addr" => true,
            other => {
                return Err(NetworkError::Plan(format!(
                    "set {bare} has unsupported type {other:?}"
                )));
            }
        };
        return Ok(Daddr::Set {
            name: bare.to_owned(),
            v6,
        });
    }
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(Daddr::Net(net.trunc()));
    }
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Ok(Daddr::Net(IpNet::from(addr)));
    }
    Err(NetworkError::Plan(format!(
        "rule {}: daddr {text:?} is neither a CIDR nor one of the plan's sets",
        rule.id
    )))
}

fn matches(op: &str, left: Value, right: Value) -> Value {
    json!({"match": {"op": op, "left": left, "right": right}})
}
fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}
fn payload(protocol: &str, field: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": field}})
}
fn net_value(net: &IpNet) -> Value {
    if net.prefix_len() == net.max_prefix_len() {
        json!(net.addr().to_string())
    } else {
        json!({"prefix": {"addr": net.network().to_string(), "len": net.prefix_len()}})
    }
}
fn ports_value(ports: &[u16]) -> Value {
    match ports {
        [one] => json!(one),
        many => json!({"set": many}),
    }
}

fn daddr_match(d: &Daddr) -> Value {
    match d {
        Daddr::Net(net) => {
            let proto = if net.addr().is_ipv4() { "ip" } else { "ip6" };
            matches("==", payload(proto, "daddr"), net_value(net))
        }
        Daddr::Set { name, v6 } => matches(
            "==",
            payload(if *v6 { "ip6" } else { "ip" }, "daddr"),
            json!(format!("@{name}")),
        ),
    }
}

fn is_v6(d: Option<&Daddr>) -> bool {
    match d {
        Some(Daddr::Net(net)) => net.addr().is_ipv6(),
        Some(Daddr::Set { v6, .. }) => *v6,
        None => false,
    }
}

/// Protocol and port matches of a plan rule.
fn l4_matches(rule: &NftRule, daddr: Option<&Daddr>) -> Result<Vec<Value>, NetworkError> {
    let mut out = Vec::new();
    match (rule.protocol.as_deref(), rule.dports.as_slice()) {
        (None, []) => {}
        (None, ports) => {
            out.push(matches(
                "==",
                meta("l4proto"),
                json!({"set": ["tcp", "udp"]}),
            ));
            out.push(matches("==", payload("th", "dport"), ports_value(ports)));
        }
        (Some(p @ ("tcp" | "udp")), []) => out.push(matches("==", meta("l4proto"), json!(p))),
        (Some(p @ ("tcp" | "udp")), ports) => {
            out.push(matches("==", payload(p, "dport"), ports_value(ports)));
        }
        (Some("icmp"), []) => {
            // ICMP echo only: the policy's `icmp` means ping, not every ICMP type.
            if is_v6(daddr) {
                out.push(matches(
                    "==",
                    payload("icmpv6", "type"),
                    json!("echo-request"),
                ));
            } else {
                out.push(matches(
                    "==",
                    payload("icmp", "type"),
                    json!("echo-request"),
                ));
            }
        }
        (Some("icmp"), _) => {
            return Err(NetworkError::Plan(format!(
                "rule {}: icmp with ports",
                rule.id
            )));
        }
        (Some(other), _) => {
            return Err(NetworkError::Plan(format!(
                "rule {}: unsupported protocol {other:?}",
                rule.id
            )));
        }
    }
    Ok(out)
}

/// The kind of a plan chain, by its hook and type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChainKind {
    Forward,
    Input,
    Nat,
    OtherFilter,
}

struct Renderer<'a> {
    run: &'a RunBinding,
    out: Vec<Value>,
}

impl Renderer<'_> {
    fn rule(&mut self, chain: &str, comment: &str, expr: Vec<Value>) {
        self.out.push(json!({"add": {"rule": {
            "family": self.run.family, "table": self.run.table, "chain": chain,
            "comment": comment, "expr": expr,
        }}}));
    }
    fn iif(&self) -> Value {
        matches("==", meta("iifname"), json!(self.run.host_if))
    }
    fn masquerade(&mut self, chain: &str, comment: &str) {
        let expr = vec![
            matches(
                "==",
                payload("ip", "saddr"),
                net_value(&IpNet::V4(self.run.subnet)),
            ),
            matches("!=", meta("oifname"), json!(self.run.host_if)),
            json!({"masquerade": null}),
        ];
        self.rule(chain, comment, expr);
    }
}

fn is_default_drop(rule: &NftRule) -> bool {
    rule.verdict == "drop"
        && rule.daddr.is_none()
        && rule.protocol.is_none()
        && rule.dports.is_empty()
}

/// Renders the whole table as one `nft -j -f -` document.
pub fn render(plan: &NetworkPlan, run: &RunBinding) -> Result<Value, NetworkError> {
    if plan.nft.family != "inet" {
        return Err(NetworkError::Plan(format!(
            "family {:?} (only inet is supported)",
            plan.nft.family
        )));
    }
    let mut kinds = BTreeMap::new();
    for chain in &plan.nft.chains {
        let kind = match (chain.chain_type.as_str(), chain.hook.as_str()) {
            ("filter", "forward") => ChainKind::Forward,
            ("filter", "input") => ChainKind::Input,
            ("filter", _) => ChainKind::OtherFilter,
            ("nat", "postrouting") => ChainKind::Nat,
            (t, h) => {
                return Err(NetworkError::Plan(format!(
                    "chain {}: unsupported type/hook {t}/{h}",
                    chain.name
                )));
            }
        };
        if !matches!(chain.policy.as_str(), "accept" | "drop") {
            return Err(NetworkError::Plan(format!(
                "chain {}: policy {:?}",
                chain.name, chain.policy
            )));
        }
        if chain.name == CONNLIMIT_CHAIN || kinds.insert(chain.name.clone(), kind).is_some() {
            return Err(NetworkError::Plan(format!(
                "chain {} appears twice or is the runner's",
                chain.name
            )));
        }
    }
    let forward: Vec<&String> = kinds
        .iter()
        .filter(|(_, k)| **k == ChainKind::Forward)
        .map(|(n, _)| n)
        .collect();
    let [forward] = forward.as_slice() else {
        return Err(NetworkError::Plan(
            "the plan needs exactly one filter chain on hook forward".into(),
        ));
    };
    let forward = (*forward).clone();
    let mut ids = BTreeSet::new();
    for rule in &plan.nft.rules {
        if !kinds.contains_key(&rule.chain) {
            return Err(NetworkError::Plan(format!(
                "rule {} names unknown chain {}",
                rule.id, rule.chain
            )));
        }
        if !ids.insert(rule.id.as_str())
            || rule.id.contains(BLOCKED_SUFFIX)
            || rule.id.contains(BOUND_SUFFIX)
            || rule.id.contains(RESET_SUFFIX)
            || rule.id.contains(REJECT_SUFFIX)
        {
            return Err(NetworkError::Plan(format!(
                "rule id {} is repeated or reserved",
                rule.id
            )));
        }
    }
    // Deny by default is the plan's job; refuse to apply a plan that would leave egress open.
    if !plan
        .nft
        .rules
        .iter()
        .any(|r| r.chain == forward && is_default_drop(r))
    {
        return Err(NetworkError::Plan(format!(
            "chain {forward} has no default drop rule; refusing to apply an open allowlist"
        )));
    }

    let mut r = Renderer {
        run,
        out: Vec::new(),
    };
    r.out
        .push(json!({"add": {"table": {"family": run.family, "name": run.table}}}));
    for chain in &plan.nft.chains {
        r.out.push(json!({"add": {"chain": {
            "family": run.family, "table": run.table, "name": chain.name,
            "type": chain.chain_type, "hook": chain.hook, "prio": chain.priority, "policy": chain.policy,
        }}}));
    }
    r.out.push(json!({"add": {"chain": {
        "family": run.family, "table": run.table, "name": CONNLIMIT_CHAIN,
    }}}));
    for set in &plan.nft.sets {
        r.out.push(json!({"add": {"set": {
            "family": run.family, "table": run.table, "name": set.name,
            "type": set.set_type, "flags": ["timeout"],
        }}}));
    }
    r.out.push(json!({"add": {"set": {
        "family": run.family, "table": run.table, "name": BLOCKED_SET,
        "type": ["ipv4_addr", "inet_proto", "inet_service"], "flags": ["timeout"],
        "size": BLOCKED_SET_SIZE, "timeout": 86_400, "stmt": [{"counter": null}],
    }}}));

    // Runner rules that open the filter chains. Anti-spoofing first: whatever enters from the
    // run's link must carry the sandbox's own IPv4 source (IPv6 meets the default drop).
    let iif = r.iif();
    let spoof = vec![
        iif.clone(),
        matches(
            "!=",
            payload("ip", "saddr"),
            json!(run.guest_addr.to_string()),
        ),
        json!({"counter": null}),
        json!({"drop": null}),
    ];
    for chain in plan.nft.chains.iter().filter(|c| {
        matches!(
            kinds.get(&c.name),
            Some(ChainKind::Forward | ChainKind::Input)
        )
    }) {
        r.rule(&chain.name, ANTISPOOF_ID, spoof.clone());
    }
    // One `ct count` rule, reached from before every accept: one count per run. A flow it
    // drops is never confirmed, so it never enters the host's table.
    r.rule(
        CONNLIMIT_CHAIN,
        CONNLIMIT_ID,
        vec![
            json!({"ct count": {"val": run.max_connections, "inv": true}}),
            json!({"counter": null}),
            json!({"drop": null}),
        ],
    );
    // Before `established`: no flow towards the pool is ever legitimate, so none may pass.
    r.rule(
        &forward,
        POOL_DROP_ID,
        vec![
            iif.clone(),
            matches(
                "==",
                payload("ip", "daddr"),
                net_value(&IpNet::V4(run.pool)),
            ),
            json!({"counter": null}),
            json!({"drop": null}),
        ],
    );
    r.rule(
        &forward,
        ESTABLISHED_ID,
        vec![
            iif.clone(),
            matches(
                "in",
                json!({"ct": {"key": "state"}}),
                json!(["established", "related"]),
            ),
            json!({"accept": null}),
        ],
    );
    r.rule(
        &forward,
        INGRESS_DROP_ID,
        vec![
            matches("==", meta("oifname"), json!(run.host_if)),
            matches(
                "!=",
                json!({"ct": {"key": "state"}}),
                json!({"set": ["established", "related"]}),
            ),
            json!({"counter": null}),
            json!({"drop": null}),
        ],
    );

    let mut probes_done = false;
    let mut nat_rules = false;
    for rule in &plan.nft.rules {
        let kind = kinds
            .get(&rule.chain)
            .copied()
            .unwrap_or(ChainKind::OtherFilter);
        let daddr = rule
            .daddr
            .as_deref()
            .map(|d| parse_daddr(plan, rule, d))
            .transpose()?;
        if kind == ChainKind::Nat {
            if rule.verdict != "masquerade" || daddr.is_some() || rule.protocol.is_some() {
                return Err(NetworkError::Plan(format!(
                    "nat rule {} must be a bare masquerade",
                    rule.id
                )));
            }
            nat_rules = true;
            r.masquerade(&rule.chain, &rule.id);
            continue;
        }
        if kind == ChainKind::Forward && is_default_drop(rule) && !probes_done {
            probes_done = true;
            for egress in plan
                .nft
                .rules
                .iter()
                .filter(|e| e.chain == forward && e.verdict == "accept")
            {
                let d = egress
                    .daddr
                    .as_deref()
                    .map(|d| parse_daddr(plan, egress, d))
                    .transpose()?;
                let mut expr = vec![iif.clone()];
                expr.extend(d.as_ref().map(daddr_match));
                expr.push(json!({"counter": null}));
                r.rule(&forward, &format!("{}{BLOCKED_SUFFIX}", egress.id), expr);
            }
            r.rule(&forward, BLOCKED_SUMMARY_ID, vec![
                iif.clone(),
                matches("==", meta("nfproto"), json!("ipv4")),
                matches("==", meta("l4proto"), json!({"set": ["tcp", "udp"]})),
                json!({"set": {"op": "update", "set": format!("@{BLOCKED_SET}"), "elem": {"concat": [
                    payload("ip", "daddr"), meta("l4proto"), payload("th", "dport"),
                ]}}}),
            ]);
        }
        let verdict = match rule.verdict.as_str() {
            "accept" => json!({"accept": null}),
            "drop" => json!({"drop": null}),
            other => {
                return Err(NetworkError::Plan(format!(
                    "rule {}: verdict {other:?}",
                    rule.id
                )));
            }
        };
        // What the input hook sees from the link is addressed to the host: an accept there
        // opens exactly the run's own host-side address (its resolver), never the host's
        // other addresses.
        let daddr = if kind == ChainKind::Input && rule.verdict == "accept" {
            if daddr.is_some() {
                return Err(NetworkError::Plan(format!(
                    "input rule {} names a destination; the runner confines input accepts to \
                     the run's host-side address",
                    rule.id
                )));
            }
            Some(Daddr::Net(IpNet::from(IpAddr::V4(run.host_addr))))
        } else {
            daddr
        };
        let mut expr = vec![iif.clone()];
        expr.extend(daddr.as_ref().map(daddr_match));
        expr.extend(l4_matches(rule, daddr.as_ref())?);
        let new_flow = matches("in", json!({"ct": {"key": "state"}}), json!("new"));
        if matches!(kind, ChainKind::Forward | ChainKind::Input) && rule.verdict == "accept" {
            let mut bound = expr.clone();
            bound.push(new_flow.clone());
            bound.push(json!({"jump": {"target": CONNLIMIT_CHAIN}}));
            r.rule(&rule.chain, &format!("{}{BOUND_SUFFIX}", rule.id), bound);
        }
        if kind == ChainKind::Forward && rule.verdict == "accept" {
            expr.push(new_flow);
        }
        if rule.counter {
            expr.push(json!({"counter": null}));
        }
        let refuse = run.reject_blocked
            && matches!(kind, ChainKind::Forward | ChainKind::Input)
            && is_default_drop(rule);
        if refuse {
            // The plan's rule keeps its id and counter (the audit reads it as before); the
            // refusal follows in two counter-less rules, so a client fails at once.
            let base = expr.clone();
            if rule.counter {
                r.rule(&rule.chain, &rule.id, expr);
            }
            let mut reset = base.clone();
            reset.retain(|e| e.get("counter").is_none());
            let mut other = reset.clone();
            reset.push(matches("==", meta("l4proto"), json!("tcp")));
            reset.push(json!({"reject": {"type": "tcp reset"}}));
            r.rule(&rule.chain, &format!("{}{RESET_SUFFIX}", rule.id), reset);
            other.push(json!({"reject": {"type": "icmpx", "expr": "admin-prohibited"}}));
            r.rule(&rule.chain, &format!("{}{REJECT_SUFFIX}", rule.id), other);
            continue;
        }
        expr.push(verdict);
        r.rule(&rule.chain, &rule.id, expr);
    }
    if !nat_rules {
        let nat_chain = plan
            .nft
            .chains
            .iter()
            .find(|c| kinds.get(&c.name) == Some(&ChainKind::Nat));
        if let Some(chain) = nat_chain {
            let name = chain.name.clone();
            r.masquerade(&name, MASQUERADE_ID);
        }
    }
    Ok(json!({"nftables": r.out}))
}

/// `add element` for a host set: each address with its timeout in seconds.
pub fn add_elements(run: &RunBinding, set: &str, elems: &[(IpAddr, u64)]) -> Value {
    let elem: Vec<Value> = elems
        .iter()
        .map(|(addr, timeout)| json!({"elem": {"val": addr.to_string(), "timeout": timeout}}))
        .collect();
    json!({"nftables": [{"add": {"element": {
        "family": run.family, "table": run.table, "name": set, "elem": elem,
    }}}]})
}
