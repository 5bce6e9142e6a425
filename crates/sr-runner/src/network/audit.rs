//! Counters read back from nftables, the report's `networkAudit`, `network.rule.hit` events, and
//! the digest of the applied ruleset.
//!
//! Semantics (docs/network.md has the long form):
//! * `allowedHits` of an accept rule = new flows it accepted (its counter; accept rules match
//!   `ct state new`). A TCP connection is one hit; a UDP flow (same 5-tuple within conntrack's
//!   timeout) is one hit.
//! * `blockedHits` of an egress rule = packets sent to that rule's destination that no accept
//!   rule allowed (the `<id>/blocked` counter). Dropped packets never become flows, so each
//!   retransmission counts.
//! * `blockedHits` of a drop rule (`default-drop`, `host-drop`) = packets it dropped.
//! * `defaultDrop` / `hostDrop`: packets and bytes of the plan's two drop rules; `poolDrop`:
//!   of the runner's drop of traffic towards other runs' links.
//! * `connectionLimit`: the run's bound on conntrack entries and the packets of new flows the
//!   bound dropped (`conn-limit`). The runner's drop rules `pool-drop` and `conn-limit` follow
//!   the plan's rules in `rules` and in `network.rule.hit` events (egress index null).
//! * `blockedDestinations`: the dropped tcp/udp (address, protocol, port) from the
//!   `blocked_v4` set, most packets first, at most [`MAX_BLOCKED_DESTINATIONS`].

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sr_bundle::NetworkPlan;

use crate::network_facts::{
    Blocked, ConnectionLimitAudit, DnsAudit, NetworkAudit, RuleHits, Totals,
};

use super::ruleset::{BLOCKED_SET, BLOCKED_SUFFIX, CONNLIMIT_ID, POOL_DROP_ID};

/// Rule id of the plan's forward default drop.
pub const DEFAULT_DROP_ID: &str = "default-drop";
/// Rule id of the plan's drop of traffic to the host itself.
pub const HOST_DROP_ID: &str = "host-drop";

/// Most blocked destinations listed in the audit (the total is reported too).
pub const MAX_BLOCKED_DESTINATIONS: usize = 32;

/// A counter's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// One dropped destination.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BlockedDestination {
    /// IPv4 address.
    pub address: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Destination port.
    pub port: u64,
    /// Packets dropped.
    pub packets: u64,
}

/// Everything counted in the run's table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Rule comment -> counter.
    pub rules: BTreeMap<String, Counter>,
    /// Dropped destinations.
    pub blocked: Vec<BlockedDestination>,
}

fn counter_of(v: &Value) -> Option<Counter> {
    let c = v.get("counter")?;
    Some(Counter {
        packets: c.get("packets").and_then(Value::as_u64).unwrap_or(0),
        bytes: c.get("bytes").and_then(Value::as_u64).unwrap_or(0),
    })
}

/// Parses `nft -j list table inet <table>` output. Unknown objects are ignored; a malformed
/// document yields empty counters rather than a panic.
pub fn parse_counters(listing: &Value) -> Counters {
    let mut out = Counters::default();
    for obj in listing
        .get("nftables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(rule) = obj.get("rule") {
            let comment = rule.get("comment").and_then(Value::as_str);
            let counter = rule
                .get("expr")
                .and_then(Value::as_array)
                .and_then(|e| e.iter().find_map(counter_of));
            if let (Some(comment), Some(counter)) = (comment, counter) {
                let entry = out.rules.entry(comment.to_owned()).or_default();
                entry.packets += counter.packets;
                entry.bytes += counter.bytes;
            }
        } else if let Some(set) = obj.get("set") {
            if set.get("name").and_then(Value::as_str) != Some(BLOCKED_SET) {
                continue;
            }
            for elem in set
                .get("elem")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(e) = elem.get("elem") else { continue };
                let parts = e
                    .get("val")
                    .and_then(|v| v.get("concat"))
                    .and_then(Value::as_array);
                let (Some([addr, proto, port]), Some(c)) =
                    (parts.map(Vec::as_slice), counter_of(e))
                else {
                    continue;
                };
                out.blocked.push(BlockedDestination {
                    address: addr.as_str().unwrap_or_default().to_owned(),
                    protocol: proto
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| proto.to_string()),
                    port: port.as_u64().unwrap_or(0),
                    packets: c.packets,
                });
            }
        }
    }
    out.blocked
        .sort_by(|a, b| b.packets.cmp(&a.packets).then_with(|| a.cmp(b)));
    out
}

/// Per plan rule: (rule id, egress index, allowed hits, blocked hits), in plan order; then the
/// runner's drop rules ([`POOL_DROP_ID`], [`CONNLIMIT_ID`]).
pub fn rule_hits(
    plan: &NetworkPlan,
    counters: &Counters,
) -> Vec<(String, Option<usize>, u64, u64)> {
    let packets = |id: &str| counters.rules.get(id).map(|c| c.packets).unwrap_or(0);
    let mut out: Vec<_> = plan
        .nft
        .rules
        .iter()
        .filter(|r| r.verdict == "accept" || r.verdict == "drop")
        .map(|r| {
            let own = packets(&r.id);
            let (allowed, blocked) = if r.verdict == "accept" {
                (own, packets(&format!("{}{BLOCKED_SUFFIX}", r.id)))
            } else {
                (0, own)
            };
            (r.id.clone(), r.egress_index, allowed, blocked)
        })
        .collect();
    for id in [POOL_DROP_ID, CONNLIMIT_ID] {
        out.push((id.to_owned(), None, 0, packets(id)));
    }
    out
}

/// DNS tallies for the audit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsTally {
    /// Queries for allowed names that were answered.
    pub answered: u64,
    /// Queries refused (name not allowed, unsupported type, malformed).
    pub refused: u64,
    /// Queries for allowed names the upstream failed to answer (SERVFAIL).
    pub failed: u64,
    /// Datagrams not from the run's sandbox address, dropped unanswered and unrecorded.
    pub ignored: u64,
}

/// The report's `networkAudit` block; `max_connections` is the run's connection bound.
pub fn audit_block(
    plan: &NetworkPlan,
    counters: &Counters,
    dns: DnsTally,
    max_connections: u32,
) -> NetworkAudit {
    let rules = rule_hits(plan, counters)
        .into_iter()
        .map(
            |(rule_id, egress_index, allowed_hits, blocked_hits)| RuleHits {
                rule_id,
                egress_index: egress_index.map(|i| u32::try_from(i).unwrap_or(u32::MAX)),
                allowed_hits,
                blocked_hits,
            },
        )
        .collect();
    let blocked_destinations = counters
        .blocked
        .iter()
        .take(MAX_BLOCKED_DESTINATIONS)
        .map(|b| Blocked {
            address: b.address.clone(),
            protocol: b.protocol.clone(),
            port: b.port,
            packets: b.packets,
        })
        .collect();
    // Totals of the plan's drop rules by chain role, with bytes (the report's `blocked`
    // summary is the default drop).
    let totals = |hook_rule: &str| {
        let c = counters.rules.get(hook_rule).copied().unwrap_or_default();
        Totals {
            packets: c.packets,
            bytes: c.bytes,
        }
    };
    NetworkAudit {
        rules,
        default_drop: totals(DEFAULT_DROP_ID),
        host_drop: totals(HOST_DROP_ID),
        pool_drop: totals(POOL_DROP_ID),
        connection_limit: ConnectionLimitAudit {
            max_connections,
            dropped: totals(CONNLIMIT_ID),
        },
        blocked_destinations,
        blocked_destinations_total: counters.blocked.len(),
        dns: DnsAudit {
            answered: dns.answered,
            refused: dns.refused,
            failed: dns.failed,
            ignored: dns.ignored,
        },
        dns_errors: Vec::new(),
    }
}

/// `network.rule.hit` payloads for rules whose (allowed, blocked) changed since `last` and whose
/// sum is positive; `last` is updated.
pub fn hit_events(
    plan: &NetworkPlan,
    counters: &Counters,
    last: &mut BTreeMap<String, (u64, u64)>,
    final_sample: bool,
) -> Vec<Value> {
    let mut out = Vec::new();
    for (id, idx, allowed, blocked) in rule_hits(plan, counters) {
        if allowed + blocked == 0 || last.get(&id) == Some(&(allowed, blocked)) {
            continue;
        }
        last.insert(id.clone(), (allowed, blocked));
        out.push(json!({
            "ruleId": id, "egressIndex": idx, "allowedHits": allowed, "blockedHits": blocked,
            "final": final_sample,
        }));
    }
    out
}

/// Strips what changes while a run goes on (handles, counters, set elements, nft's metainfo), so
/// the digest covers exactly the structure of the table: chains, their hooks and policies, sets
/// and their types, and every rule's expressions in order.
pub fn canonical_ruleset(listing: &Value) -> Value {
    fn strip(v: &Value) -> Value {
        match v {
            Value::Object(map) => {
                let mut out = serde_json::Map::new();
                for (k, val) in map {
                    match k.as_str() {
                        "handle" | "elem" | "expires" => {}
                        "counter" if val.is_object() => {
                            out.insert(k.clone(), Value::Null);
                        }
                        _ => {
                            out.insert(k.clone(), strip(val));
                        }
                    }
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(strip).collect()),
            other => other.clone(),
        }
    }
    let items: Vec<Value> = listing
        .get("nftables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|o| o.get("metainfo").is_none())
        .map(strip)
        .collect();
    json!({"nftables": items})
}

/// `sha256:<hex>` of the RFC 8785 canonical JSON of [`canonical_ruleset`].
pub fn ruleset_digest(listing: &Value) -> String {
    let canonical = serde_json_canonicalizer::to_string(&canonical_ruleset(listing))
        .unwrap_or_else(|_| canonical_ruleset(listing).to_string());
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    )
}
