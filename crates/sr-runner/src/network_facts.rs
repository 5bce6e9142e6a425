//! What the network module enforced and counted, as types: the `network.applied` payload and
//! the report's `enforcement.network` ([`NetworkFacts`]), the report's `networkAudit`
//! ([`NetworkAudit`]), and where a boundary's network lives ([`Boundary`]: a namespace reached
//! by a veth pair, or a TAP device a VMM opens). The CLI maps these onto the report's format;
//! nothing reads them back by key.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// Where a boundary's network lives, for the network module to connect it to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boundary {
    /// A network namespace (the process sandbox): a veth pair whose peer goes into the
    /// namespace of `pid`, configured from inside it.
    Namespace {
        /// A process in the namespace (the sandbox's init).
        pid: u32,
    },
    /// A TAP device on the host for a VMM (a microVM): created by the network module as
    /// `name` (owned by root: no unprivileged process can attach to it) before the VMM starts;
    /// the runner attaches to it and hands QEMU the open descriptor, so the VMM needs neither
    /// `/dev/net/tun` nor the host's network namespace. The guest configures its side itself
    /// (from its kernel command line, see [`crate::network_hook::GuestAddressing`]).
    Tap {
        /// The device's name on the host (the plan's host interface).
        name: String,
    },
}

/// The host's end of a run's link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Link {
    /// A veth pair.
    #[serde(rename_all = "camelCase")]
    Veth {
        /// The host side's name.
        host_interface: String,
        /// The sandbox side's name (inside its namespace).
        guest_interface: String,
    },
    /// A TAP device.
    #[serde(rename_all = "camelCase")]
    Tap {
        /// The device's name on the host.
        tap_interface: String,
    },
}

/// How the run's resolver tells its client apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolverAccess {
    /// The link its socket is bound to (`SO_BINDTODEVICE`), when it is.
    pub device: Option<String>,
    /// The only source address it answers.
    pub source: String,
}

/// The run's bound on tracked connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionLimit {
    /// The bound.
    pub max_connections: u32,
    /// How the table enforces it.
    pub rule: String,
}

/// What happens to blocked traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockedVerdictFacts {
    /// `drop` or `reject`.
    pub verdict: String,
    /// The rules that do it.
    pub rule: String,
}

/// An allowlist's enforcement, as applied on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AllowlistFacts {
    /// `inet safe_run_<id>`.
    pub table: String,
    /// The run's link.
    #[serde(flatten)]
    pub link: Link,
    /// The run's /30.
    pub subnet: String,
    /// The host side's address (the default route and resolver of the boundary).
    pub host_address: String,
    /// The boundary's address.
    pub guest_address: String,
    /// Where the resolver listens.
    pub resolver: String,
    /// Whom it answers.
    pub resolver_access: ResolverAccess,
    /// The connection bound.
    pub connection_limit: ConnectionLimit,
    /// The subnet pool no run may reach another run in.
    pub pool_drop: String,
    /// Blocked traffic's fate.
    pub blocked: BlockedVerdictFacts,
    /// The resolver's upstream.
    pub upstream_dns: Option<String>,
    /// `sha256:` of the applied table (see `nft_ruleset_digest_method`): read back while the
    /// workload starts, so `None` in `network.applied` and filled in from `network.ruleset`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nft_ruleset_digest: Option<String>,
    /// What the digest covers.
    pub nft_ruleset_digest_method: String,
    /// Host interfaces whose forwarding the run needs.
    pub uplinks: Vec<String>,
    /// Destinations with no route (their rules stay inert).
    pub unroutable: Vec<String>,
    /// Uplinks whose IPv4 forwarding this run turned on.
    pub ipv4_forwarding_enabled: Vec<String>,
    /// How IPv6 is handled.
    pub ipv6: String,
    /// Each allowed name's first resolution.
    pub initial_resolution: BTreeMap<String, Vec<String>>,
}

impl AllowlistFacts {
    /// Everything but the digest, which the report states on its own, as the report's
    /// `enforcement.network.details` (sorted by key).
    pub fn details(&self) -> BTreeMap<String, Value> {
        let mut map: BTreeMap<String, Value> = match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m.into_iter().collect(),
            _ => BTreeMap::new(),
        };
        map.remove("nftRulesetDigest");
        map
    }
}

/// The network a run had.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "camelCase")]
pub enum NetworkFacts {
    /// Loopback only.
    #[default]
    None,
    /// An egress allowlist.
    Allowlist(Box<AllowlistFacts>),
}

/// Packets and bytes of one counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// One egress rule's hits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleHits {
    /// The rule id from the network plan.
    pub rule_id: String,
    /// Index in `network.egress` (`None` for the plan's own rules).
    pub egress_index: Option<u32>,
    /// Packets it allowed.
    pub allowed_hits: u64,
    /// Packets to its destination that were blocked.
    pub blocked_hits: u64,
}

/// One blocked destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocked {
    /// Address.
    pub address: String,
    /// `tcp`, `udp`, `icmp`, ...
    pub protocol: String,
    /// Destination port (0 without one).
    pub port: u64,
    /// Packets.
    pub packets: u64,
}

/// The connection bound's audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionLimitAudit {
    /// The bound.
    pub max_connections: u32,
    /// New connections dropped over it.
    pub dropped: Totals,
}

/// What the run's resolver did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DnsAudit {
    /// Queries answered.
    pub answered: u64,
    /// Names outside the allowlist, refused.
    pub refused: u64,
    /// Upstream failures.
    pub failed: u64,
    /// Datagrams not from the run's address, dropped unanswered.
    pub ignored: u64,
}

/// An allowlist's counters, as of a sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkAudit {
    /// One entry per egress rule, in policy order.
    pub rules: Vec<RuleHits>,
    /// The final default drop.
    pub default_drop: Totals,
    /// Traffic to the host itself, dropped.
    pub host_drop: Totals,
    /// Traffic to other runs' subnets, dropped.
    pub pool_drop: Totals,
    /// The connection bound.
    pub connection_limit: ConnectionLimitAudit,
    /// The first blocked destinations.
    pub blocked_destinations: Vec<Blocked>,
    /// How many distinct destinations were blocked.
    pub blocked_destinations_total: usize,
    /// The resolver's tally.
    pub dns: DnsAudit,
    /// Resolver errors (at most 20).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_errors: Vec<String>,
}

impl NetworkAudit {
    /// Everything but the rules and the default drop, which the report states on their own, as
    /// the report's `networkAudit.details` (sorted by key).
    pub fn details(&self) -> BTreeMap<String, Value> {
        let mut map: BTreeMap<String, Value> = match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m.into_iter().collect(),
            _ => BTreeMap::new(),
        };
        map.remove("rules");
        map.remove("defaultDrop");
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_veth_link_flattens_into_the_facts_and_a_tap_names_itself() {
        let veth = serde_json::to_value(Link::Veth {
            host_interface: "srh1".into(),
            guest_interface: "srg1".into(),
        })
        .unwrap();
        assert_eq!(
            veth,
            serde_json::json!({"hostInterface": "srh1", "guestInterface": "srg1"})
        );
        let tap = serde_json::to_value(Link::Tap {
            tap_interface: "srt1".into(),
        })
        .unwrap();
        assert_eq!(tap, serde_json::json!({"tapInterface": "srt1"}));
        assert_eq!(
            serde_json::to_value(NetworkFacts::None).unwrap(),
            serde_json::json!({"mode": "none"})
        );
    }
}
