//! Unit tests of the network module: rendered nft JSON per rule shape (snapshots), counter
//! parsing, the digest, the resolver's answers, and the lifecycle's command sequence and
//! failure codes against a recording executor. No root needed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use serde_json::{Value, json};
use sr_bundle::{DnsPlan, NetworkPlan, NftChain, NftPlan, NftRule, NftSet};
use sr_common::ErrorCode;
use sr_evidence::events;

use crate::network_facts::{Boundary, Link, NetworkFacts, ResolverAccess as ResolverAccessFacts};
use sr_policy::operator::NetworkConfig;

use super::audit::{self, DnsTally};
use super::dns::{self, NameTargets, Resolver, Upstream};
use super::exec::{NetCommand, NetCommandExecutor, RecordingExecutor};
use super::ruleset::{self, RunBinding};
use super::{AllowlistNetwork, DIGEST_METHOD, Options};
use super::{forwarding, ledger, release};
use crate::network_hook::{NamespaceSource, NetworkHook};

const RUN: &str = "0123456789ab";

fn chain(name: &str, t: &str, hook: &str, prio: i32) -> NftChain {
    NftChain {
        name: name.into(),
        chain_type: t.into(),
        hook: hook.into(),
        priority: prio,
        policy: "accept".into(),
    }
}

fn rule(
    id: &str,
    chain: &str,
    idx: Option<usize>,
    daddr: Option<&str>,
    proto: Option<&str>,
    ports: &[u16],
    verdict: &str,
) -> NftRule {
    NftRule {
        id: id.into(),
        chain: chain.into(),
        egress_index: idx,
        daddr: daddr.map(Into::into),
        protocol: proto.map(Into::into),
        dports: ports.to_vec(),
        verdict: verdict.into(),
        counter: true,
    }
}

/// The plan shape the compiler emits, with the egress rules given.
pub(crate) fn plan_with(egress: Vec<NftRule>, sets: Vec<NftSet>, names: &[&str]) -> NetworkPlan {
    let mut rules = egress;
    rules.push(rule(
        "default-drop",
        "forward",
        None,
        None,
        None,
        &[],
        "drop",
    ));
    rules.push(rule(
        "dns",
        "input",
        None,
        None,
        Some("udp"),
        &[53],
        "accept",
    ));
    rules.push(rule("host-drop", "input", None, None, None, &[], "drop"));
    NetworkPlan {
        mode: "allowlist".into(),
        host_interface: "sr<runId>h".into(),
        guest_interface: "sr<runId>g".into(),
        nft: NftPlan {
            family: "inet".into(),
            table: "safe_run_<runId>".into(),
            chains: vec![
                chain("forward", "filter", "forward", 0),
                chain("input", "filter", "input", 0),
                chain("postrouting", "nat", "postrouting", 100),
            ],
            sets,
            rules,
        },
        dns: DnsPlan {
            allowed_names: names.iter().map(|n| (*n).to_owned()).collect(),
        },
    }
}

fn pool() -> ipnet::Ipv4Net {
    "10.213.0.0/16".parse().unwrap()
}

fn binding(plan: &NetworkPlan) -> RunBinding {
    RunBinding::new(plan, RUN, "10.213.4.8/30".parse().unwrap(), pool(), 4096).unwrap()
}

/// The rules the document adds with comment exactly `id`.
fn rules_for_exact(doc: &Value, id: &str) -> Vec<Value> {
    doc["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("add")?.get("rule"))
        .filter(|r| r["comment"] == id)
        .cloned()
        .collect()
}

/// The rules the document adds for `id` (the plan rule and its runner companion).
fn rules_for(doc: &Value, id: &str) -> Vec<Value> {
    doc["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("add")?.get("rule"))
        .filter(|r| {
            r["comment"]
                .as_str()
                .is_some_and(|c| c == id || c == format!("{id}/blocked"))
        })
        .cloned()
        .collect()
}

#[test]
fn snapshot_cidr_tcp_with_ports() {
    let plan = plan_with(
        vec![rule(
            "egress-0",
            "forward",
            Some(0),
            Some("203.0.113.0/24"),
            Some("tcp"),
            &[80, 443],
            "accept",
        )],
        vec![],
        &[],
    );
    let doc = ruleset::render(&plan, &binding(&plan)).unwrap();
    insta::assert_json_snapshot!("cidr_tcp_ports", rules_for(&doc, "egress-0"));
}

#[test]
fn snapshot_cidr_udp_single_address() {
    let plan = plan_with(
        vec![rule(
            "egress-0",
            "forward",
            Some(0),
            Some("198.51.100.7/32"),
            Some("udp"),
            &[53],
            "accept",
        )],
        vec![],
        &[],
    );
    let doc = ruleset::render(&plan, &binding(&plan)).unwrap();
    insta::assert_json_snapshot!("cidr_udp", rules_for(&doc, "egress-0"));
}

#[test]
fn snapshot_icmp_echo() {
    let plan = plan_with(
        vec![rule(
            "egress-0",
            "forward",
            Some(0),
            Some("192.0.2.0/24"),
            Some("icmp"),
            &[],
            "accept",
        )],
        vec![],
        &[],
    );
    let doc = ruleset::render(&plan, &binding(&plan)).unwrap();
    insta::assert_json_snapshot!("icmp_echo", rules_for(&doc, "egress-0"));
}

#[test]
fn snapshot_host_set_rule() {
    let sets = vec![NftSet {
        name: "egress_0_v4".into(),
        set_type: "ipv4_addr".into(),
        host: "pypi.org".into(),
    }];
    let plan = plan_with(
        vec![rule(
            "egress-0",
            "forward",
            Some(0),
            Some("egress_0_v4"),
            Some("tcp"),
            &[443],
            "accept",
        )],
        sets,
        &["pypi.org"],
    );
    let doc = ruleset::render(&plan, &binding(&plan)).unwrap();
    insta::assert_json_snapshot!("host_set", rules_for(&doc, "egress-0"));
}

#[test]
fn snapshot_v6_cidr() {
    let plan = plan_with(
        vec![rule(
            "egress-0",
            "forward",
            Some(0),
            Some("2001:db8::/32"),
            Some("tcp"),
            &[443],
            "accept",
        )],
        vec![],
        &[],
    );
    let doc = ruleset::render(&plan, &binding(&plan)).unwrap();
    insta::assert_json_snapshot!("v6_cidr", rules_for(&doc, "egress-0"));
}

#[test]
fn snapshot_whole_table() {
    let sets = vec![NftSet {
        name: "egress_1_v4".into(),
        set_type: "ipv4_addr".into(),
        host: "allowed.test".into(),
    }];
    let plan = plan_with(
        vec![
            rule(
                "egress-0",
                "forward",
                Some(0),
                Some("10.214.0.0/30"),
                Some("tcp"),
                &[7],
                "accept",
            ),
            rule(
                "egress-1",
                "forward",
                Some(1),
                Some("@egress_1_v4"),
                Some("udp"),
                &[7],
                "accept",
            ),
        ],
        sets,
        &["allowed.test"],
    );
    let doc = ruleset::render(&plan, &binding(&plan)).unwrap();
    insta::assert_json_snapshot!("whole_table", doc);
    // Order inside the forward chain: runner preamble, allows, blocked probes, summary, drop.
    let order: Vec<&str> = doc["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("add")?.get("rule"))
        .filter(|r| r["chain"] == "forward")
        .map(|r| r["comment"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        [
            "antispoof",
            "pool-drop",
            "established",
            "ingress-drop",
            "egress-0/bound",
            "egress-0",
            "egress-1/bound",
            "egress-1",
            "egress-0/blocked",
            "egress-1/blocked",
            "blocked-summary",
            "default-drop",
            "default-drop/reset",
            "default-drop/reject"
        ]
    );
    // Issue 14 item 16: the default drop keeps its counter and refuses; the operator's
    // `blocked: drop` renders today's silent drop.
    let drop_rule = rules_for_exact(&doc, "default-drop")[0]["expr"].clone();
    assert_eq!(
        drop_rule.as_array().unwrap().last().unwrap(),
        &json!({"counter": null})
    );
    assert_eq!(
        rules_for_exact(&doc, "default-drop/reset")[0]["expr"][2],
        json!({"reject": {"type": "tcp reset"}})
    );
    let mut silent_binding = binding(&plan);
    silent_binding.reject_blocked = false;
    let silent = ruleset::render(&plan, &silent_binding).unwrap();
    assert!(rules_for_exact(&silent, "default-drop/reset").is_empty());
    assert!(rules_for_exact(&silent, "host-drop/reject").is_empty());
    let silent_drop = rules_for_exact(&silent, "default-drop")[0]["expr"].clone();
    assert_eq!(
        silent_drop.as_array().unwrap().last().unwrap(),
        &json!({"drop": null})
    );
    // Issue 8 item 5: the DNS accept names the run's own host-side address.
    let b = binding(&plan);
    let dns = rules_for(&doc, "dns");
    assert_eq!(
        dns[0]["expr"][1],
        json!({"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
            "right": b.host_addr.to_string()}})
    );
    // Issue 8 item 7: the bound, in the runner's regular chain.
    let limit = rules_for(&doc, "conn-limit");
    assert_eq!(limit[0]["chain"], ruleset::CONNLIMIT_CHAIN);
    assert_eq!(
        limit[0]["expr"][0],
        json!({"ct count": {"val": 4096, "inv": true}})
    );
    // Reached right before each accept, with its matches: only flows about to be accepted
    // are counted.
    let input: Vec<&str> = doc["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("add")?.get("rule"))
        .filter(|r| r["chain"] == "input")
        .map(|r| r["comment"].as_str().unwrap())
        .collect();
    assert_eq!(
        input,
        [
            "antispoof",
            "dns/bound",
            "dns",
            "host-drop",
            "host-drop/reset",
            "host-drop/reject"
        ]
    );
    let jump = rules_for_exact(&doc, "egress-1/bound")[0]["expr"].clone();
    let accept = rules_for_exact(&doc, "egress-1")[0]["expr"].clone();
    let (jump, accept) = (jump.as_array().unwrap(), accept.as_array().unwrap());
    let n = accept.len();
    // The same matches and ct state new, then the jump instead of counter and accept.
    assert_eq!(jump[..n - 2], accept[..n - 2]);
    assert_eq!(jump[n - 2], json!({"jump": {"target": "connlimit"}}));
}

#[test]
fn plans_the_runner_cannot_render_are_sr_run_201() {
    let mut no_drop = plan_with(vec![], vec![], &[]);
    no_drop.nft.rules.retain(|r| r.id != "default-drop");
    let bad_daddr = plan_with(
        vec![rule(
            "egress-0",
            "forward",
            Some(0),
            Some("nosuchset"),
            Some("tcp"),
            &[1],
            "accept",
        )],
        vec![],
        &[],
    );
    let icmp_ports = plan_with(
        vec![rule(
            "egress-0",
            "forward",
            Some(0),
            Some("192.0.2.1"),
            Some("icmp"),
            &[1],
            "accept",
        )],
        vec![],
        &[],
    );
    let mut family = plan_with(vec![], vec![], &[]);
    family.nft.family = "ip".into();
    // An input accept with its own destination could open another host address.
    let mut input_daddr = plan_with(vec![], vec![], &[]);
    for r in &mut input_daddr.nft.rules {
        if r.id == "dns" {
            r.daddr = Some("0.0.0.0/0".into());
        }
    }
    // The runner's own chain name and rule id suffix.
    let mut chain_clash = plan_with(vec![], vec![], &[]);
    chain_clash.nft.chains[2].name = ruleset::CONNLIMIT_CHAIN.into();
    let mut bound_id = plan_with(vec![], vec![], &[]);
    bound_id.nft.rules[0].id = "x/bound".into();
    for plan in [
        no_drop,
        bad_daddr,
        icmp_ports,
        family,
        input_daddr,
        chain_clash,
        bound_id,
    ] {
        let err = AllowlistNetwork::new(
            &plan,
            RUN,
            &NetworkConfig {
                upstream_dns: Some("127.0.0.1:53".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::RunNetworkApply, "{err}");
        assert_eq!(err.path, "launch.network");
    }
    let plan = plan_with(vec![], vec![], &[]);
    let outside = "10.9.0.0/30".parse().unwrap();
    assert!(RunBinding::new(&plan, RUN, outside, pool(), 1).is_err());
    assert!(RunBinding::new(&plan, RUN, "10.213.0.0/30".parse().unwrap(), pool(), 0).is_err());
    for bad_id in ["", "XYZ", "0123456789abc"] {
        assert!(
            RunBinding::new(&plan, bad_id, "10.213.0.0/30".parse().unwrap(), pool(), 1).is_err()
        );
    }
}

const LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
 {"table": {"family": "inet", "name": "safe_run_0123456789ab", "handle": 1}},
 {"set": {"family": "inet", "name": "egress_1_v4", "table": "safe_run_0123456789ab", "type": "ipv4_addr", "handle": 3, "flags": ["timeout"], "elem": [{"elem": {"val": "10.214.1.2", "timeout": 60, "expires": 59}}]}},
 {"set": {"family": "inet", "name": "blocked_v4", "table": "safe_run_0123456789ab", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 4, "size": 4096, "flags": ["timeout"], "timeout": 86400, "elem": [
   {"elem": {"val": {"concat": ["10.214.2.2", "udp", 7]}, "expires": 3599, "counter": {"packets": 2, "bytes": 58}}},
   {"elem": {"val": {"concat": ["10.214.2.2", "tcp", 7]}, "expires": 3599, "counter": {"packets": 5, "bytes": 300}}}], "stmt": [{"counter": null}]}},
 {"chain": {"family": "inet", "table": "safe_run_0123456789ab", "name": "forward", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
 {"rule": {"family": "inet", "table": "safe_run_0123456789ab", "chain": "forward", "handle": 6, "comment": "egress-0", "expr": [{"counter": {"packets": 3, "bytes": 180}}, {"accept": null}]}},
 {"rule": {"family": "inet", "table": "safe_run_0123456789ab", "chain": "forward", "handle": 7, "comment": "egress-1", "expr": [{"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}},
 {"rule": {"family": "inet", "table": "safe_run_0123456789ab", "chain": "forward", "handle": 8, "comment": "egress-0/blocked", "expr": [{"counter": {"packets": 1, "bytes": 60}}]}},
 {"rule": {"family": "inet", "table": "safe_run_0123456789ab", "chain": "forward", "handle": 9, "comment": "default-drop", "expr": [{"counter": {"packets": 7, "bytes": 358}}, {"drop": null}]}},
 {"rule": {"family": "inet", "table": "safe_run_0123456789ab", "chain": "input", "handle": 10, "comment": "dns", "expr": [{"counter": {"packets": 4, "bytes": 200}}, {"accept": null}]}},
 {"rule": {"family": "inet", "table": "safe_run_0123456789ab", "chain": "forward", "handle": 11, "comment": "pool-drop", "expr": [{"counter": {"packets": 2, "bytes": 120}}, {"drop": null}]}},
 {"rule": {"family": "inet", "table": "safe_run_0123456789ab", "chain": "connlimit", "handle": 12, "comment": "conn-limit", "expr": [{"ct count": {"val": 4096, "inv": true}}, {"counter": {"packets": 9, "bytes": 261}}, {"drop": null}]}}
]}"#;

fn two_rule_plan() -> NetworkPlan {
    let sets = vec![NftSet {
        name: "egress_1_v4".into(),
        set_type: "ipv4_addr".into(),
        host: "allowed.test".into(),
    }];
    plan_with(
        vec![
            rule(
                "egress-0",
                "forward",
                Some(0),
                Some("10.214.1.0/30"),
                Some("tcp"),
                &[7],
                "accept",
            ),
            rule(
                "egress-1",
                "forward",
                Some(1),
                Some("egress_1_v4"),
                Some("udp"),
                &[7],
                "accept",
            ),
        ],
        sets,
        &["allowed.test"],
    )
}

#[test]
fn counters_parse_from_nft_listing() {
    let listing: Value = serde_json::from_str(LISTING).unwrap();
    let c = audit::parse_counters(&listing);
    assert_eq!(c.rules["egress-0"].packets, 3);
    assert_eq!(c.rules["egress-0/blocked"].packets, 1);
    assert_eq!(c.rules["default-drop"].bytes, 358);
    assert_eq!(c.blocked.len(), 2);
    assert_eq!(
        (c.blocked[0].protocol.as_str(), c.blocked[0].packets),
        ("tcp", 5)
    );
    let audit = audit::audit_block(
        &two_rule_plan(),
        &c,
        DnsTally {
            answered: 2,
            refused: 1,
            failed: 0,
            ignored: 3,
        },
        4096,
    );
    insta::assert_json_snapshot!("audit_block", audit);
    // Malformed input gives empty counters, not a panic.
    assert_eq!(
        audit::parse_counters(&json!({"nftables": [{"rule": 5}, 7]})),
        audit::Counters::default()
    );
    assert_eq!(
        audit::parse_counters(&json!("x")),
        audit::Counters::default()
    );
}

#[test]
fn hit_events_only_when_positive_and_changed() {
    let listing: Value = serde_json::from_str(LISTING).unwrap();
    let c = audit::parse_counters(&listing);
    let plan = two_rule_plan();
    let mut last = BTreeMap::new();
    let first = audit::hit_events(&plan, &c, &mut last, false);
    let ids: Vec<&str> = first
        .iter()
        .map(|e| e["ruleId"].as_str().unwrap())
        .collect();
    // egress-1 has no hits: no event. host-drop has none either. The runner's drop rules
    // follow the plan's.
    assert_eq!(
        ids,
        ["egress-0", "default-drop", "dns", "pool-drop", "conn-limit"]
    );
    assert_eq!(first[0]["allowedHits"], 3);
    assert_eq!(first[0]["blockedHits"], 1);
    assert_eq!(first[4]["blockedHits"], 9);
    assert_eq!(first[4]["egressIndex"], Value::Null);
    assert!(
        audit::hit_events(&plan, &c, &mut last, true).is_empty(),
        "unchanged counters emit nothing"
    );
}

#[test]
fn digest_ignores_counters_handles_and_elements() {
    let a: Value = serde_json::from_str(LISTING).unwrap();
    let mut b = a.clone();
    b["nftables"][5]["rule"]["expr"][0]["counter"]["packets"] = json!(999);
    b["nftables"][5]["rule"]["handle"] = json!(77);
    b["nftables"][2]["set"]["elem"] = json!([]);
    b["nftables"][0]["metainfo"]["version"] = json!("9");
    assert_eq!(audit::ruleset_digest(&a), audit::ruleset_digest(&b));
    let mut c = a.clone();
    c["nftables"][5]["rule"]["expr"][1] = json!({"drop": null});
    assert_ne!(audit::ruleset_digest(&a), audit::ruleset_digest(&c));
    assert!(audit::ruleset_digest(&a).starts_with("sha256:"));
}

/// An upstream that answers from a table and records what it was asked.
struct FakeUpstream {
    answers: BTreeMap<String, Vec<Ipv4Addr>>,
    asked: Arc<Mutex<Vec<String>>>,
}

impl Upstream for FakeUpstream {
    fn query(&self, name: &Name, qtype: RecordType) -> Result<Message, String> {
        self.asked.lock().unwrap().push(format!("{qtype} {name}"));
        let key = dns::normalize(&name.to_ascii());
        let addrs = self.answers.get(&key).ok_or("no such name")?;
        let mut m = Message::response(1, OpCode::Query);
        m.add_query(Query::query(name.clone(), qtype));
        m.add_answer(Record::from_rdata(
            name.clone(),
            300,
            RData::CNAME(CNAME(Name::from_ascii("edge.cdn.test.").unwrap())),
        ));
        for a in addrs {
            m.add_answer(Record::from_rdata(
                Name::from_ascii("edge.cdn.test.").unwrap(),
                120,
                RData::A(A(*a)),
            ));
        }
        Ok(m)
    }
}

fn query_bytes(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 4242;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m.to_vec().unwrap()
}

fn test_resolver(exec: Arc<RecordingExecutor>) -> (Resolver, Arc<Mutex<Vec<String>>>) {
    let plan = two_rule_plan();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let upstream = FakeUpstream {
        answers: BTreeMap::from([(
            "allowed.test".to_owned(),
            vec![
                Ipv4Addr::new(10, 214, 1, 2),
                Ipv4Addr::new(127, 0, 0, 1),
                Ipv4Addr::new(169, 254, 1, 1),
                Ipv4Addr::new(10, 213, 9, 9),
            ],
        )]),
        asked: asked.clone(),
    };
    let names = BTreeMap::from([(
        "allowed.test".to_owned(),
        NameTargets {
            v4: vec!["egress_1_v4".into()],
            v6: vec![],
        },
    )]);
    let r = Resolver::new(
        names,
        Arc::new(upstream),
        exec,
        binding(&plan),
        "10.213.0.0/16".parse().unwrap(),
    );
    (r, asked)
}

#[test]
fn resolver_answers_allowed_names_and_fills_sets_without_rebinding_targets() {
    let exec = Arc::new(RecordingExecutor::new(|_| Ok(String::new())));
    let (r, asked) = test_resolver(exec.clone());
    let reply = Message::from_vec(
        &r.answer(&query_bytes("Allowed.TEST.", RecordType::A))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(reply.metadata.id, 4242);
    assert_eq!(reply.metadata.message_type, MessageType::Response);
    let addrs: Vec<String> = reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    // Loopback, link-local and the run pool are never answered nor installed.
    assert_eq!(addrs, ["10.214.1.2"]);
    let cmds = exec.commands();
    let [NetCommand::NftApply { doc }] = cmds.as_slice() else {
        panic!("{cmds:?}")
    };
    insta::assert_json_snapshot!("set_install", doc);
    assert_eq!(asked.lock().unwrap().as_slice(), ["A allowed.test."]);
    // A second query within the TTL is answered from the cache: no upstream, no nft.
    let again = Message::from_vec(
        &r.answer(&query_bytes("allowed.test.", RecordType::A))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(again.answers.len(), reply.answers.len());
    assert_eq!(asked.lock().unwrap().len(), 1);
    assert_eq!(exec.commands().len(), 1);
    let (evs, tally, _) = r.drain();
    assert_eq!(
        tally,
        DnsTally {
            answered: 2,
            refused: 0,
            failed: 0,
            ignored: 0,
        }
    );
    assert_eq!(evs[0]["verdict"], "answered");
}

#[test]
fn resolver_refuses_other_names_without_asking_upstream() {
    let exec = Arc::new(RecordingExecutor::new(|_| Ok(String::new())));
    let (r, asked) = test_resolver(exec.clone());
    for name in [
        "blocked.test.",
        "sub.allowed.test.",
        "c2VjcmV0.evil.example.",
    ] {
        let reply =
            Message::from_vec(&r.answer(&query_bytes(name, RecordType::A)).unwrap()).unwrap();
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::Refused,
            "{name}"
        );
        assert!(reply.answers.is_empty());
    }
    // TXT for an allowed name: empty, not forwarded.
    let reply = Message::from_vec(
        &r.answer(&query_bytes("allowed.test.", RecordType::TXT))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.answers.is_empty());
    assert!(asked.lock().unwrap().is_empty());
    assert!(exec.commands().is_empty());
    // Garbage never panics.
    assert!(r.answer(&[1, 2, 3]).is_none());
    assert!(r.answer(&[0u8; 40]).is_some());
    let (_, tally, _) = r.drain();
    assert_eq!(tally.refused, 4);
}

#[test]
fn resolv_conf_upstream_parsing() {
    let text = "# comment\nsearch x\nnameserver 10.255.255.53\nnameserver 1.1.1.1\n";
    assert_eq!(
        dns::upstream_from_resolv_conf(text),
        Some("10.255.255.53:53".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(dns::upstream_from_resolv_conf("nameserver nope\n"), None);
}

/// A scripted host for the lifecycle: every command succeeds unless `fail` matches its text.
fn scripted(fail: Option<&'static str>) -> Arc<RecordingExecutor> {
    Arc::new(RecordingExecutor::new(move |cmd| {
        let text = cmd.to_string();
        if fail.is_some_and(|f| text.contains(f)) {
            return Err(RecordingExecutor::failure(cmd, "Operation not permitted"));
        }
        Ok(match cmd {
            NetCommand::HostAddresses => "[]".into(),
            NetCommand::Ip { args } if args.starts_with(&["-j".to_string(), "-4".to_string()]) => {
                "[]".into()
            }
            NetCommand::RouteGet { .. } => r#"[{"dev":"eth0"}]"#.into(),
            NetCommand::Ip { args } if args.get(1).map(String::as_str) == Some("route") => {
                r#"[{"dev":"eth0"}]"#.into()
            }
            NetCommand::Nft { args } if args[0] == "list" && args[1] == "tables" => {
                r#"{"nftables":[]}"#.into()
            }
            NetCommand::Nft { args } if args[0] == "list" => LISTING.into(),
            NetCommand::NftCounters { .. } => LISTING.into(),
            NetCommand::SysctlRead { .. } => "0".into(),
            _ => String::new(),
        })
    }))
}

fn network(exec: Arc<RecordingExecutor>, state: &std::path::Path) -> AllowlistNetwork {
    network_with_id(exec, state, RUN)
}

fn network_with_id(
    exec: Arc<RecordingExecutor>,
    state: &std::path::Path,
    run_id: &str,
) -> AllowlistNetwork {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let upstream = FakeUpstream {
        answers: BTreeMap::from([(
            "allowed.test".to_owned(),
            vec![Ipv4Addr::new(10, 214, 1, 2)],
        )]),
        asked,
    };
    let opts = Options {
        exec,
        upstream: Some(Arc::new(upstream)),
        dns_port: 0,
        state_dir: state.to_path_buf(),
        resolver_bind: Some(Ipv4Addr::LOCALHOST),
        detacher: None,
    };
    AllowlistNetwork::with_options(&two_rule_plan(), run_id, &NetworkConfig::default(), opts)
        .unwrap()
}

/// A microVM's plan: the host link is the TAP `srt<runId>`, the guest's `eth0`.
fn tap_plan() -> NetworkPlan {
    let mut plan = two_rule_plan();
    plan.host_interface = "srt<runId>".into();
    plan.guest_interface = "eth0".into();
    plan
}

fn tap_network(exec: Arc<RecordingExecutor>, state: &std::path::Path) -> AllowlistNetwork {
    // Same options, the microVM's plan.
    let opts = network(exec, state).opts.clone();
    AllowlistNetwork::with_options(&tap_plan(), RUN, &NetworkConfig::default(), opts).unwrap()
}

fn tap(name: &str) -> Boundary {
    Boundary::Tap {
        name: name.to_owned(),
    }
}

/// A TAP the plan's rules do not name is refused before anything is made: the table would
/// filter another interface.
#[test]
fn a_tap_the_plan_does_not_name_is_refused_before_anything_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let exec = scripted(None);
    let mut net = tap_network(exec.clone(), dir.path());
    let err = net.attach(&tap("srtap0"), dir.path()).unwrap_err();
    assert_eq!(err.code, ErrorCode::RunNetworkApply);
    assert!(err.message.contains("srtap0"), "{err:?}");
    assert!(exec.commands().is_empty(), "{:?}", exec.commands());
    assert!(!dir.path().join(ledger::LEDGER_FILE).exists());
}

/// issue 11 item 6: a microVM's TAP gets the same subnet ledger, table, resolver, forwarding
/// and release as a sandbox's veth; only the link differs (a root-owned TAP, no
/// guest-side commands: the guest configures itself from `sr.net`).
#[test]
fn tap_lifecycle_command_sequence_and_release() {
    let dir = tempfile::tempdir().unwrap();
    let exec = scripted(None);
    let mut net = tap_network(exec.clone(), dir.path());
    let attached = net.attach(&tap(&format!("srt{RUN}")), dir.path()).unwrap();
    let b = net.binding().unwrap().clone();
    let cmds = without_table_thread(&exec);
    let expected = [
        "getifaddrs ipv4".to_string(),
        "ip tuntap add dev srtRUN mode tap".into(),
        "sysctl -w net.ipv6.conf.srtRUN.disable_ipv6=1".into(),
        format!(
            "addr add {}/30 dev srtRUN; link set srtRUN up (netlink)",
            b.host_addr
        ),
        "sysctl -w net.ipv4.conf.srtRUN.forwarding=1".into(),
        "nft -j -f -".into(),
        "route get 10.214.1.1 (netlink)".into(),
        "route get 10.214.1.2 (netlink)".into(),
        "sysctl net.ipv4.conf.eth0.forwarding".into(),
        "sysctl -w net.ipv4.conf.eth0.forwarding=1".into(),
    ]
    .map(|c| c.replace("RUN", RUN));
    assert_eq!(cmds, expected);
    // The rules name the TAP: every iifname/oifname in the applied table is srt<id>.
    let applied = exec
        .commands()
        .into_iter()
        .find_map(|c| match c {
            NetCommand::NftApply { doc } => Some(doc),
            _ => None,
        })
        .unwrap();
    assert_eq!(applied, ruleset::render(&tap_plan(), &b).unwrap());
    let text = applied.to_string();
    assert!(text.contains(&format!("\"srt{RUN}\"")));
    assert!(!text.contains(&format!("sr{RUN}h")));
    let NetworkFacts::Allowlist(facts) = &attached.facts else {
        panic!("{:?}", attached.facts);
    };
    assert_eq!(
        facts.link,
        Link::Tap {
            tap_interface: format!("srt{RUN}")
        }
    );
    let payload = serde_json::to_value(&attached.facts).unwrap();
    assert_eq!(payload["tapInterface"], format!("srt{RUN}"));
    // What the guest's kernel command line gets.
    let guest = attached.guest.unwrap();
    assert_eq!(
        (guest.address, guest.prefix, guest.gateway),
        (b.guest_addr, 30, b.host_addr)
    );
    assert_eq!(
        guest.kernel_param(),
        format!("sr.net={}/30,{}", b.guest_addr, b.host_addr)
    );
    assert!(dir.path().join(ledger::LEDGER_FILE).exists());

    let before = exec.commands().len();
    net.release().unwrap();
    let released: Vec<String> = exec.commands()[before..]
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        released,
        [
            format!("counters of table inet safe_run_{RUN} and set blocked_v4 (netlink)"),
            format!("nft -j delete table inet safe_run_{RUN}"),
            format!("ip link del srt{RUN}"),
            "sysctl -w net.ipv4.conf.eth0.forwarding=0".to_string(),
        ]
    );
    assert!(!dir.path().join(ledger::LEDGER_FILE).exists());
    let count = exec.commands().len();
    net.release().unwrap();
    assert_eq!(exec.commands().len(), count);
}

/// A TAP that cannot be created (not root, no /dev/net/tun) is SR-RUN-201 at launch.network,
/// and the rollback gives the subnet back.
#[test]
fn a_tap_creation_failure_is_sr_run_201_and_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let exec = scripted(Some("tuntap add"));
    let mut net = tap_network(exec.clone(), dir.path());
    let err = net
        .attach(&tap(&format!("srt{RUN}")), dir.path())
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::RunNetworkApply);
    assert_eq!(err.path, "launch.network");
    assert!(err.message.contains("creating the TAP device"), "{err:?}");
    let cmds: Vec<String> = exec.commands().iter().map(ToString::to_string).collect();
    assert!(cmds.contains(&format!("ip link del srt{RUN}")), "{cmds:?}");
    assert!(!dir.path().join(ledger::LEDGER_FILE).exists());
}

/// The commands run, without the table thread's two (checked here: its apply is the first nft
/// command, before any set update, and its read-back follows it, interleaved in any order with
/// the link's and attach's commands, which run meanwhile). Waits (bounded) for the read-back,
/// which goes on after attach.
fn without_table_thread(exec: &RecordingExecutor) -> Vec<String> {
    let is_read_back = |c: &String| c.starts_with("nft -j list table inet safe_run_");
    let wait = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut cmds: Vec<String> = Vec::new();
    while std::time::Instant::now() < wait {
        cmds = exec.commands().iter().map(ToString::to_string).collect();
        if cmds.iter().any(is_read_back) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let apply = cmds.iter().position(|c| c.starts_with("nft")).unwrap();
    assert_eq!(cmds[apply], "nft -j -f -");
    let read_back = cmds.iter().position(is_read_back).unwrap();
    assert!(apply < read_back, "{cmds:?}");
    cmds.iter()
        .enumerate()
        .filter(|(i, _)| *i != apply && *i != read_back)
        .map(|(_, c)| c.clone())
        .collect()
}

#[test]
fn lifecycle_command_sequence_and_release() {
    let dir = tempfile::tempdir().unwrap();
    let exec = scripted(None);
    let mut net = network(exec.clone(), dir.path());
    let attached = net
        .attach(&Boundary::Namespace { pid: 4242 }, dir.path())
        .unwrap();
    let b = net.binding().unwrap().clone();
    let cmds = without_table_thread(&exec);
    let expected = [
        "getifaddrs ipv4".to_string(),
        // The pair is created in-process, its sandbox end put into the sandbox's namespace;
        // the host end is made ready, IPv6 off before it goes up; then the sandbox side, from
        // a thread in the sandbox's namespace. No child process.
        "link add srRUNh type veth peer name srRUNg netns 4242 (netlink)".to_string(),
        "sysctl -w net.ipv6.conf.srRUNh.disable_ipv6=1".into(),
        "sysctl -w net.ipv4.conf.srRUNh.forwarding=1".into(),
        format!(
            "addr add {}/30 dev srRUNh; link set srRUNh up (netlink)",
            b.host_addr
        ),
        format!(
            "in the netns of 4242: link set lo up; addr add {}/30 dev srRUNg; link set srRUNg \
             up; route add default via {} (netlink)",
            b.guest_addr, b.host_addr
        ),
        // First resolution of allowed.test fills egress_1_v4.
        "nft -j -f -".into(),
        // Uplinks towards 10.214.1.2 (from DNS) and 10.214.1.1 (first host of the CIDR).
        "route get 10.214.1.1 (netlink)".into(),
        "route get 10.214.1.2 (netlink)".into(),
        "sysctl net.ipv4.conf.eth0.forwarding".into(),
        "sysctl -w net.ipv4.conf.eth0.forwarding=1".into(),
    ]
    .map(|c| c.replace("RUN", RUN));
    assert_eq!(cmds, expected);
    // The applied document is exactly the rendering of the plan.
    let applied = exec.commands().into_iter().find_map(|c| match c {
        NetCommand::NftApply { doc } => Some(doc),
        _ => None,
    });
    assert_eq!(
        applied.unwrap(),
        ruleset::render(&two_rule_plan(), &b).unwrap()
    );
    let NetworkFacts::Allowlist(facts) = &attached.facts else {
        panic!("{:?}", attached.facts);
    };
    assert_eq!(
        facts.link,
        Link::Veth {
            host_interface: format!("sr{RUN}h"),
            guest_interface: format!("sr{RUN}g"),
        }
    );
    assert_eq!(facts.ipv4_forwarding_enabled, ["eth0"]);
    // `--timings` shows attach's steps, in order.
    let steps: Vec<&str> = attached.steps.iter().map(|(name, _)| *name).collect();
    assert_eq!(steps, ["link", "table", "resolver", "forwarding"]);
    assert_eq!(facts.connection_limit.max_connections, 4096);
    assert_eq!(facts.pool_drop, "10.213.0.0/16");
    // The test override: loopback, no device; in production the run's link and sandbox.
    assert_eq!(
        facts.resolver_access,
        ResolverAccessFacts {
            device: None,
            source: "127.0.0.1".into()
        }
    );
    // Attach waits for the apply only: the digest comes with a sample.
    assert_eq!(facts.nft_ruleset_digest, None);
    // The event's payload keeps the report's names.
    let payload = serde_json::to_value(&attached.facts).unwrap();
    assert_eq!(payload["mode"], "allowlist");
    assert_eq!(payload["hostInterface"], format!("sr{RUN}h"));
    assert!(payload.get("nftRulesetDigest").is_none(), "{payload}");
    let resolv = std::fs::read_to_string(attached.resolv_conf.unwrap()).unwrap();
    assert!(resolv.starts_with(&format!("nameserver {}\n", b.host_addr)));
    // The forwarding change is recorded for restoring.
    let record = std::fs::read_to_string(dir.path().join("forwarding.json")).unwrap();
    assert!(record.contains("eth0"));

    let sample = net.sample(false).unwrap();
    assert!(
        sample
            .events
            .iter()
            .any(|(t, _)| *t == events::NETWORK_RULE_HIT)
    );
    assert!(sample.audit.is_some());
    // The read-back's digest, recorded once in `network.ruleset`.
    let digest = audit::ruleset_digest(&serde_json::from_str(LISTING).unwrap());
    assert_eq!(sample.ruleset_digest, Some(Ok(digest.clone())));
    let recorded: Vec<&Value> = sample
        .events
        .iter()
        .filter(|(t, _)| *t == events::NETWORK_RULESET)
        .map(|(_, p)| p)
        .collect();
    assert_eq!(
        recorded,
        [&json!({"nftRulesetDigest": digest, "nftRulesetDigestMethod": DIGEST_METHOD})]
    );
    let again = net.sample(false).unwrap();
    assert_eq!(again.ruleset_digest, Some(Ok(digest)));
    assert!(
        !again
            .events
            .iter()
            .any(|(t, _)| *t == events::NETWORK_RULESET)
    );
    // The table's thread wrote the canonical form of what it read back.
    assert_eq!(
        std::fs::read(dir.path().join("net/ruleset.json")).unwrap(),
        serde_json_canonicalizer::to_vec(&audit::canonical_ruleset(
            &serde_json::from_str(LISTING).unwrap()
        ))
        .unwrap()
    );

    let before = exec.commands().len();
    net.release().unwrap();
    let released: Vec<String> = exec.commands()[before..]
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        released,
        [
            format!("counters of table inet safe_run_{RUN} and set blocked_v4 (netlink)"),
            format!("nft -j delete table inet safe_run_{RUN}"),
            // The veth goes with the sandbox's namespace: awaited, not deleted.
            format!("await link sr{RUN}h gone within 1000 ms"),
            // No other run holds eth0: no need to ask which runs are live.
            "sysctl -w net.ipv4.conf.eth0.forwarding=0".to_string(),
        ]
    );
    assert!(!dir.path().join(ledger::LEDGER_FILE).exists());
    assert!(!dir.path().join("forwarding.json").exists());
    // Idempotent.
    let count = exec.commands().len();
    net.release().unwrap();
    assert_eq!(exec.commands().len(), count);
    assert_eq!(
        net.released_objects(),
        [
            "resolver".to_owned(),
            format!("table inet safe_run_{RUN}"),
            format!("link sr{RUN}h"),
            "forwarding on eth0 (restored)".to_owned(),
            "subnet ledger entry".to_owned(),
        ]
    );
}

#[test]
fn resolver_start_failure_is_sr_run_201_and_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let exec = scripted(None);
    let mut net = network(exec.clone(), dir.path());
    // Occupy the port the resolver wants.
    let busy = UdpSocket::bind("127.0.0.1:0").unwrap();
    net.opts.dns_port = busy.local_addr().unwrap().port();
    let err = net
        .attach(&Boundary::Namespace { pid: 4242 }, dir.path())
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::RunNetworkApply);
    assert!(err.message.contains("DNS resolver"), "{err}");
    let cmds: Vec<String> = exec.commands().iter().map(ToString::to_string).collect();
    assert!(cmds.ends_with(&[
        format!("counters of table inet safe_run_{RUN} and set blocked_v4 (netlink)"),
        format!("nft -j delete table inet safe_run_{RUN}"),
        format!("ip link del sr{RUN}h"),
    ]));
}

#[test]
fn apply_failure_is_sr_run_201_and_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let exec = scripted(Some("nft -j -f -"));
    let mut net = network(exec.clone(), dir.path());
    let err = net
        .attach(&Boundary::Namespace { pid: 4242 }, dir.path())
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::RunNetworkApply);
    assert_eq!(err.path, "launch.network");
    assert!(err.message.contains("applying the nftables table"), "{err}");
    let cmds: Vec<String> = exec.commands().iter().map(ToString::to_string).collect();
    assert!(cmds.contains(&format!("ip link del sr{RUN}h")));
}

/// The read-back goes on after attach: when it fails, attach has succeeded (the table is in
/// place), no `network.ruleset` is recorded, and every sample carries the failure, for the
/// final one to put into the run's cleanup errors (SR-RUN-201 at `monitor.network`).
#[test]
fn a_failed_read_back_reaches_the_samples_not_attach() {
    let dir = tempfile::tempdir().unwrap();
    let exec = scripted(Some("nft -j list table inet safe_run_"));
    let mut net = network(exec.clone(), dir.path());
    net.attach(&Boundary::Namespace { pid: 4242 }, dir.path())
        .unwrap();
    for final_sample in [false, true] {
        let sample = net.sample(final_sample).unwrap();
        let Some(Err(d)) = sample.ruleset_digest else {
            panic!("{:?}", sample.ruleset_digest);
        };
        assert_eq!(d.code, ErrorCode::RunNetworkApply);
        assert_eq!(d.path, "monitor.network");
        assert!(d.message.contains("reading the applied table"), "{d:?}");
        assert!(sample.audit.is_some());
        assert!(
            !sample
                .events
                .iter()
                .any(|(t, _)| *t == events::NETWORK_RULESET)
        );
    }
    assert!(!dir.path().join("net/ruleset.json").exists());
    net.release().unwrap();
}

/// `prepare` (before the boundary starts) claims the /30 and starts the table's thread; attach
/// then makes only the link and the rest, and takes the table's listing.
#[test]
fn prepare_starts_the_table_before_the_boundary_exists() {
    let dir = tempfile::tempdir().unwrap();
    let exec = scripted(None);
    let mut net = network(exec.clone(), dir.path());
    net.prepare(dir.path(), NamespaceSource::Boundary).unwrap();
    assert!(dir.path().join(ledger::LEDGER_FILE).exists());
    let b = net.binding().unwrap().clone();
    // No link yet: only the addresses, and the table's commands (its thread may still run).
    let wait = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while exec.commands().len() < 3 && std::time::Instant::now() < wait {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let cmds: Vec<String> = exec.commands().iter().map(ToString::to_string).collect();
    assert_eq!(
        cmds,
        [
            "getifaddrs ipv4".to_string(),
            "nft -j -f -".into(),
            format!("nft -j list table inet safe_run_{RUN}"),
        ]
    );
    let attached = net
        .attach(&Boundary::Namespace { pid: 4242 }, dir.path())
        .unwrap();
    // The same /30 (claimed once), and no second apply of the table.
    assert_eq!(net.binding().unwrap().subnet, b.subnet);
    let cmds: Vec<String> = exec.commands()[3..]
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        cmds[0],
        format!("link add sr{RUN}h type veth peer name sr{RUN}g netns 4242 (netlink)")
    );
    assert!(!cmds.iter().any(|c| c.contains("getifaddrs")), "{cmds:?}");
    assert!(
        !cmds.iter().any(|c| c.starts_with("nft -j list")),
        "{cmds:?}"
    );
    let NetworkFacts::Allowlist(facts) = &attached.facts else {
        panic!("{:?}", attached.facts);
    };
    assert_eq!(facts.subnet, b.subnet.to_string());
    assert_eq!(
        net.sample(false).unwrap().ruleset_digest,
        Some(Ok(audit::ruleset_digest(
            &serde_json::from_str(LISTING).unwrap()
        )))
    );
    net.release().unwrap();
    assert!(!dir.path().join(ledger::LEDGER_FILE).exists());
}

/// A process sandbox joins a namespace the hook makes: prepare makes it, hands it to the
/// boundary, and puts the veth into it (named by the held descriptor, never by a pid) on the
/// link's thread; attach makes no second link and waits for that one.
#[test]
fn prepare_makes_the_namespace_and_its_link_before_the_boundary_starts() {
    let dir = tempfile::tempdir().unwrap();
    let exec = scripted(None);
    let mut net = network(exec.clone(), dir.path());
    let prepared = net
        .prepare(dir.path(), NamespaceSource::Hook)
        .unwrap()
        .expect("a namespace for the boundary");
    // The recorder answers with this process's own namespace.
    prepared.wait().unwrap();
    let attached = net
        .attach(&Boundary::Namespace { pid: 4242 }, dir.path())
        .unwrap();
    let cmds: Vec<String> = exec.commands().iter().map(ToString::to_string).collect();
    let position = |prefix: &str| {
        let found: Vec<usize> = (0..cmds.len())
            .filter(|&i| cmds[i].starts_with(prefix))
            .collect();
        assert_eq!(found.len(), 1, "{prefix:?} in {cmds:?}");
        found[0]
    };
    let made = position("netns add (unshare)");
    let veth = position(&format!(
        "link add sr{RUN}h type veth peer name sr{RUN}g netns fd "
    ));
    let configured = position("in the netns of fd ");
    assert!(made < veth && veth < configured, "{cmds:?}");
    assert!(!cmds.iter().any(|c| c.contains("4242")), "{cmds:?}");
    let steps: Vec<&str> = attached.steps.iter().map(|(name, _)| *name).collect();
    assert_eq!(steps, ["link", "table", "resolver", "forwarding"]);
    net.release().unwrap();
    assert!(!dir.path().join(ledger::LEDGER_FILE).exists());
}

/// A namespace that cannot be made fails the boundary's wait with the cause, and attach with
/// SR-RUN-201; release still gives everything back.
#[test]
fn a_namespace_that_cannot_be_made_fails_the_launch() {
    let dir = tempfile::tempdir().unwrap();
    let exec = scripted(Some("netns add"));
    let mut net = network(exec.clone(), dir.path());
    let prepared = net
        .prepare(dir.path(), NamespaceSource::Hook)
        .unwrap()
        .expect("a namespace for the boundary");
    let refused = prepared.wait().unwrap_err();
    assert!(refused.contains("Operation not permitted"), "{refused}");
    let err = net
        .attach(&Boundary::Namespace { pid: 4242 }, dir.path())
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::RunNetworkApply);
    assert!(
        err.message
            .contains("making the sandbox's network namespace"),
        "{err}"
    );
    let cmds: Vec<String> = exec.commands().iter().map(ToString::to_string).collect();
    assert!(!cmds.iter().any(|c| c.starts_with("link add")), "{cmds:?}");
    assert!(!dir.path().join(ledger::LEDGER_FILE).exists());
}

/// A boundary that fails to start after `prepare`: release removes the table (once its
/// apply is over, never racing it) and the /30, and touches no link.
#[test]
fn release_after_prepare_alone_waits_for_the_table_and_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let applied = Arc::new(Mutex::new(false));
    let raced = Arc::new(Mutex::new(false));
    let (a, r) = (applied.clone(), raced.clone());
    let exec = Arc::new(RecordingExecutor::new(move |cmd| {
        Ok(match cmd {
            NetCommand::HostAddresses => "[]".into(),
            NetCommand::NftApply { .. } => {
                std::thread::sleep(std::time::Duration::from_millis(50));
                *a.lock().unwrap() = true;
                String::new()
            }
            NetCommand::Nft { args } if args[0] == "list" => LISTING.into(),
            NetCommand::Nft { args } if args[0] == "delete" => {
                if !*a.lock().unwrap() {
                    *r.lock().unwrap() = true;
                }
                String::new()
            }
            _ => String::new(),
        })
    }));
    let mut net = network(exec.clone(), dir.path());
    net.prepare(dir.path(), NamespaceSource::Boundary).unwrap();
    net.release().unwrap();
    assert!(*applied.lock().unwrap());
    assert!(
        !*raced.lock().unwrap(),
        "the table was deleted before it was applied"
    );
    let cmds: Vec<String> = exec.commands().iter().map(ToString::to_string).collect();
    assert!(
        cmds.contains(&format!("nft -j delete table inet safe_run_{RUN}")),
        "{cmds:?}"
    );
    assert!(
        !cmds
            .iter()
            .any(|c| c.contains("link del") || c.contains("await link")),
        "{cmds:?}"
    );
    assert!(!dir.path().join(ledger::LEDGER_FILE).exists());
    assert_eq!(
        net.released_objects(),
        [
            format!("table inet safe_run_{RUN}"),
            "subnet ledger entry".to_owned()
        ]
    );
}

/// A table the kernel refuses at `prepare`'s apply fails attach (SR-RUN-201) after the link
/// was made, and the rollback removes both.
#[test]
fn a_prepared_table_that_failed_fails_attach() {
    let dir = tempfile::tempdir().unwrap();
    let exec = scripted(Some("nft -j -f -"));
    let mut net = network(exec.clone(), dir.path());
    net.prepare(dir.path(), NamespaceSource::Boundary).unwrap();
    let err = net
        .attach(&Boundary::Namespace { pid: 4242 }, dir.path())
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::RunNetworkApply);
    assert!(err.message.contains("applying the nftables table"), "{err}");
    let cmds: Vec<String> = exec.commands().iter().map(ToString::to_string).collect();
    assert!(cmds.contains(&format!("ip link del sr{RUN}h")), "{cmds:?}");
    assert!(!dir.path().join(ledger::LEDGER_FILE).exists());
}

#[test]
fn a_veth_that_outlives_its_namespace_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    // Something still holds the namespace: the link is there after the bound.
    let exec = scripted(Some("await link"));
    let mut net = network(exec.clone(), dir.path());
    net.attach(&Boundary::Namespace { pid: 4242 }, dir.path())
        .unwrap();
    let before = exec.commands().len();
    net.release().unwrap();
    let released: Vec<String> = exec.commands()[before..]
        .iter()
        .map(ToString::to_string)
        .collect();
    let awaited = released
        .iter()
        .position(|c| c.starts_with(&format!("await link sr{RUN}h gone")));
    let deleted = released
        .iter()
        .position(|c| *c == format!("ip link del sr{RUN}h"));
    assert!(
        matches!((awaited, deleted), (Some(a), Some(d)) if a < d),
        "{released:?}"
    );
    assert!(net.released_objects().contains(&format!("link sr{RUN}h")));
}

#[test]
fn release_failure_is_sr_run_202_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    // Attach succeeds; deleting the table fails at release.
    let exec = scripted(Some("delete table"));
    let mut net = network(exec.clone(), dir.path());
    net.attach(&Boundary::Namespace { pid: 4242 }, dir.path())
        .unwrap();
    let err = net.release().unwrap_err();
    assert_eq!(err.code, ErrorCode::RunNetworkRelease);
    // The link was still seen to go: every step is attempted.
    assert!(
        exec.commands()
            .iter()
            .any(|c| c.to_string() == format!("await link sr{RUN}h gone within 1000 ms"))
    );
    // A retry tries again what is left, and says so again.
    let err = net.release().unwrap_err();
    assert_eq!(err.code, ErrorCode::RunNetworkRelease);
    assert_eq!(err.path, "cleanup.network");
    assert!(err.message.contains("delete table"), "{err}");
    // The final sample still answers from the counters read before the failed delete.
    assert!(net.sample(true).unwrap().audit.is_some());
}

#[test]
fn attach_failure_with_failing_rollback_reports_both() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Arc::new(RecordingExecutor::new(|cmd| {
        let text = cmd.to_string();
        if text.contains("eth0.forwarding=1") || text.contains("delete table") {
            return Err(RecordingExecutor::failure(cmd, "Operation not permitted"));
        }
        scripted(None).run(cmd)
    }));
    let mut net = network(exec, dir.path());
    let err = net
        .attach(&Boundary::Namespace { pid: 4242 }, dir.path())
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::RunNetworkApply);
    assert!(err.message.contains("eth0.forwarding"), "{err}");
    assert!(err.message.contains("rolling back also failed"), "{err}");
}

#[test]
fn the_compilers_plan_renders_as_is() {
    let policy = r#"
version: 1
name: net
runtime: { command: /bin/true, args: [] }
mounts: []
network:
  mode: allowlist
  egress:
    - { host: Allowed.Test, protocol: tcp, ports: [443, 80] }
    - { cidr: 203.0.113.0/24, protocol: udp, ports: [53] }
    - { cidr: 192.0.2.0/24, protocol: icmp }
"#;
    let config = sr_policy::OperatorConfig::default();
    let validated = sr_policy::validate_str(
        policy,
        sr_policy::SourceFormat::Yaml,
        std::path::Path::new("/"),
        &config,
    )
    .unwrap_or_else(|r| panic!("{:?}", r.diagnostics));
    let bundle = sr_compiler::compile(&validated, &config).unwrap();
    let plan = bundle.network_plan.unwrap();
    let doc = ruleset::render(&plan, &binding(&plan)).unwrap();
    insta::assert_json_snapshot!("compiler_plan", doc);
    // Every plan rule appears once, under its id, in its chain.
    let rendered: Vec<(String, String)> = doc["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("add")?.get("rule"))
        .map(|r| {
            (
                r["chain"].as_str().unwrap().to_owned(),
                r["comment"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for r in &plan.nft.rules {
        assert_eq!(
            rendered
                .iter()
                .filter(|(c, id)| *c == r.chain && *id == r.id)
                .count(),
            1,
            "{}",
            r.id
        );
    }
}

#[test]
fn names_are_refreshed_when_their_ttl_runs_out() {
    let exec = Arc::new(RecordingExecutor::new(|_| Ok(String::new())));
    let (r, asked) = test_resolver(exec.clone());
    r.resolve("allowed.test", RecordType::A).unwrap();
    let now = std::time::Instant::now();
    // Not due yet: the answer's TTL is 120 s.
    r.refresh_due_at(now + std::time::Duration::from_secs(60));
    assert_eq!(asked.lock().unwrap().len(), 1);
    r.refresh_due_at(now + std::time::Duration::from_secs(121));
    assert_eq!(asked.lock().unwrap().len(), 2);
    // Each resolution renewed the set element (add, delete, add; timeout = TTL + grace).
    let installs = exec.commands();
    assert_eq!(installs.len(), 2);
    let NetCommand::NftApply { doc } = &installs[1] else {
        panic!()
    };
    assert_eq!(
        doc["nftables"][0]["add"]["element"]["elem"][0]["elem"]["timeout"],
        120 + dns::GRACE_SECS
    );
}

/// Issue 8 item 6: the resolver answers its own sandbox's address only.
#[test]
fn resolver_ignores_datagrams_from_other_sources() {
    let exec = Arc::new(RecordingExecutor::new(|_| Ok(String::new())));
    let (r, _) = test_resolver(exec);
    let r = Arc::new(r);
    // The "sandbox" is 127.0.0.2; the server listens on 127.0.0.1.
    let access = dns::ResolverAccess {
        device: None,
        client: Ipv4Addr::new(127, 0, 0, 2),
    };
    let mut server = dns::DnsServer::start(r.clone(), Ipv4Addr::LOCALHOST, 0, access).unwrap();
    let ask = |from: Ipv4Addr| {
        let c = UdpSocket::bind((from, 0)).unwrap();
        c.set_read_timeout(Some(std::time::Duration::from_millis(500)))
            .unwrap();
        c.send_to(&query_bytes("blocked.test.", RecordType::A), server.local)
            .unwrap();
        let mut buf = [0u8; 512];
        c.recv(&mut buf).ok()
    };
    assert_eq!(ask(Ipv4Addr::LOCALHOST), None, "answered a stranger");
    assert!(ask(Ipv4Addr::new(127, 0, 0, 2)).is_some());
    server.stop().unwrap();
    let (evs, tally, _) = r.drain();
    assert_eq!(tally.ignored, 1);
    assert_eq!(tally.refused, 1);
    assert_eq!(evs.len(), 1, "{evs:?}");
}

#[test]
fn resolver_thread_stops_promptly() {
    let exec = Arc::new(RecordingExecutor::new(|_| Ok(String::new())));
    let (r, _) = test_resolver(exec);
    let access = dns::ResolverAccess {
        device: None,
        client: Ipv4Addr::LOCALHOST,
    };
    let mut server = dns::DnsServer::start(Arc::new(r), Ipv4Addr::LOCALHOST, 0, access).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let t = std::time::Instant::now();
    server.stop().unwrap();
    assert!(
        t.elapsed() < std::time::Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn unroutable_destinations_and_kernels_without_ipv6_do_not_fail_attach() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Arc::new(RecordingExecutor::new(|cmd| {
        let text = cmd.to_string();
        if text.contains("route get") {
            return Err(RecordingExecutor::failure(
                cmd,
                "RTNETLINK answers: Network is unreachable",
            ));
        }
        if text.contains("disable_ipv6") {
            return Err(RecordingExecutor::failure(
                cmd,
                "No such file or directory (os error 2)",
            ));
        }
        scripted(None).run(cmd)
    }));
    let mut net = network(exec.clone(), dir.path());
    let attached = net
        .attach(&Boundary::Namespace { pid: 4242 }, dir.path())
        .unwrap();
    assert_eq!(
        serde_json::to_value(&attached.facts).unwrap()["unroutable"],
        json!(["10.214.1.1", "10.214.1.2"])
    );
    assert_eq!(
        serde_json::to_value(&attached.facts).unwrap()["uplinks"],
        json!([])
    );
    net.release().unwrap();
    // Nothing recorded for forwarding: release does not even list the other runs' tables.
    assert!(
        !exec
            .commands()
            .iter()
            .any(|c| c.to_string() == "nft -j list tables")
    );
}

#[test]
fn a_failed_sample_is_sr_run_201_at_monitor_and_keeps_events() {
    let dir = tempfile::tempdir().unwrap();
    let broken = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = broken.clone();
    let exec = Arc::new(RecordingExecutor::new(move |cmd| {
        if flag.load(std::sync::atomic::Ordering::SeqCst)
            && cmd.to_string().starts_with("counters of table")
        {
            return Err(RecordingExecutor::failure(
                cmd,
                "Error: No such file or directory",
            ));
        }
        scripted(None).run(cmd)
    }));
    let mut net = network(exec, dir.path());
    let attached = net
        .attach(&Boundary::Namespace { pid: 4242 }, dir.path())
        .unwrap();
    // A query through the real resolver socket, so a DNS event is pending.
    let resolver: SocketAddr = serde_json::to_value(&attached.facts).unwrap()["resolver"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    client
        .send_to(&query_bytes("blocked.test.", RecordType::A), resolver)
        .unwrap();
    let mut buf = [0u8; 512];
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(
        Message::from_vec(&buf[..n]).unwrap().metadata.response_code,
        ResponseCode::Refused
    );
    broken.store(true, std::sync::atomic::Ordering::SeqCst);
    let err = net.sample(false).unwrap_err();
    assert_eq!(err.code, ErrorCode::RunNetworkApply);
    assert_eq!(err.path, "monitor.network");
    broken.store(false, std::sync::atomic::Ordering::SeqCst);
    let s = net.sample(true).unwrap();
    assert!(
        s.events
            .iter()
            .any(|(t, p)| *t == events::NETWORK_DNS_QUERY && p["verdict"] == "refused")
    );
    net.release().unwrap();
}

#[test]
fn forwarding_is_given_back_only_when_no_other_run_is_active() {
    let dir = tempfile::tempdir().unwrap();
    // The tables that exist: the second run's, while it is live.
    let second_live = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = second_live.clone();
    let eth0_on = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let exec = Arc::new(RecordingExecutor::new(move |cmd| match cmd {
        NetCommand::Nft { args } if args == &["list", "tables"] => {
            Ok(if flag.load(std::sync::atomic::Ordering::SeqCst) {
                r#"{"nftables":[{"table":{"family":"inet","name":"safe_run_ffffffffffff"}}]}"#
                    .into()
            } else {
                r#"{"nftables":[]}"#.into()
            })
        }
        // eth0 reads 0 until the first run turns it on.
        NetCommand::SysctlRead { key } if key.contains("eth0") => {
            Ok(if eth0_on.load(std::sync::atomic::Ordering::SeqCst) {
                "1".into()
            } else {
                "0".into()
            })
        }
        NetCommand::SysctlWrite { key, value } if key.contains("eth0") => {
            eth0_on.store(value == "1", std::sync::atomic::Ordering::SeqCst);
            Ok(String::new())
        }
        _ => scripted(None).run(cmd),
    }));
    let writes = |exec: &RecordingExecutor| {
        exec.commands()
            .iter()
            .filter(|c| c.to_string() == "sysctl -w net.ipv4.conf.eth0.forwarding=0")
            .count()
    };
    let mut first = network(exec.clone(), dir.path());
    first
        .attach(&Boundary::Namespace { pid: 4242 }, dir.path())
        .unwrap();
    let mut second = network_with_id(exec.clone(), dir.path(), "ffffffffffff");
    second
        .attach(&Boundary::Namespace { pid: 4243 }, dir.path())
        .unwrap();
    let record: forwarding::Record = forwarding::StateLock::acquire(dir.path()).unwrap().read();
    assert_eq!(record["eth0"].original, "0");
    assert_eq!(record["eth0"].runs.len(), 2, "{record:?}");
    // The second run still holds eth0: it stays on, and the record stays for it.
    first.release().unwrap();
    assert_eq!(writes(&exec), 0);
    assert!(dir.path().join("forwarding.json").exists());
    // The second run ends; its release gives eth0 back.
    second_live.store(false, std::sync::atomic::Ordering::SeqCst);
    second.release().unwrap();
    assert_eq!(writes(&exec), 1);
    assert!(!dir.path().join("forwarding.json").exists());
}

/// Issue 14 item 7: stopping the resolver while queries arrive never panics its thread (std's
/// `recv_from` asserted on the empty peer address a receive returns after shutdown).
#[test]
fn resolver_stops_without_panicking_while_queries_arrive() {
    let exec = Arc::new(RecordingExecutor::new(|_| Ok(String::new())));
    let (r, _) = test_resolver(exec);
    let r = Arc::new(r);
    for round in 0..100 {
        let access = dns::ResolverAccess {
            device: None,
            client: Ipv4Addr::LOCALHOST,
        };
        let mut server = dns::DnsServer::start(r.clone(), Ipv4Addr::LOCALHOST, 0, access).unwrap();
        let target = server.local;
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done2 = done.clone();
        let sender = std::thread::spawn(move || {
            let c = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            let q = query_bytes("allowed.test.", RecordType::A);
            // Bounded: at most 2000 datagrams per round.
            for _ in 0..2000 {
                if done2.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let _ = c.send_to(&q, target);
            }
        });
        std::thread::sleep(std::time::Duration::from_millis(2));
        let stopped = server.stop();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        sender.join().unwrap();
        assert!(stopped.is_ok(), "round {round}: {stopped:?}");
    }
}

/// Issue 14 item 7: a receive on a shut-down socket is "nothing", not a panic.
#[test]
fn a_receive_after_shutdown_is_nothing() {
    use std::os::fd::{AsFd, AsRawFd};
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    socket.set_nonblocking(true).unwrap();
    let (rx, _tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let _ = nix::sys::socket::shutdown(socket.as_raw_fd(), nix::sys::socket::Shutdown::Read);
    let mut buf = [0u8; 512];
    for _ in 0..3 {
        let got = dns::receive(&socket, rx.as_fd(), &mut buf);
        assert!(
            matches!(got, dns::Received::Nothing | dns::Received::Unusable),
            "{got:?}"
        );
    }
}

/// Issue 14 item 8: runs attaching at the same instant never share a /30. The pool holds four
/// blocks and four runs attach together (each thread waits on one barrier, then attaches), so
/// independent id-derived picks would collide in most rounds.
#[test]
fn concurrent_attaches_never_share_a_subnet() {
    let dir = tempfile::tempdir().unwrap();
    let config = NetworkConfig {
        subnet_pool: "10.213.0.0/28".into(),
        ..NetworkConfig::default()
    };
    for round in 0..20u32 {
        let barrier = Arc::new(std::sync::Barrier::new(4));
        let threads: Vec<_> = (0..4u32)
            .map(|i| {
                let (barrier, state, config) =
                    (barrier.clone(), dir.path().to_path_buf(), config.clone());
                std::thread::spawn(move || {
                    let run_id = format!("{:06x}{:06x}", round, i);
                    let opts = Options {
                        exec: scripted(None),
                        upstream: Some(Arc::new(FakeUpstream {
                            answers: BTreeMap::new(),
                            asked: Arc::default(),
                        })),
                        dns_port: 0,
                        state_dir: state.clone(),
                        resolver_bind: Some(Ipv4Addr::LOCALHOST),
                        detacher: None,
                    };
                    let mut net =
                        AllowlistNetwork::with_options(&two_rule_plan(), &run_id, &config, opts)
                            .unwrap();
                    barrier.wait();
                    net.attach(&Boundary::Namespace { pid: 4242 }, &state.join(&run_id))
                        .unwrap();
                    net
                })
            })
            .collect();
        let mut nets: Vec<AllowlistNetwork> =
            threads.into_iter().map(|t| t.join().unwrap()).collect();
        let subnets: BTreeSet<_> = nets.iter().map(|n| n.binding().unwrap().subnet).collect();
        assert_eq!(subnets.len(), 4, "round {round}: {subnets:?}");
        for net in &mut nets {
            net.release().unwrap();
        }
    }
    // Every finished run gave its block back.
    assert!(!dir.path().join("subnets.json").exists());
}

/// A detacher that starts nothing: it keeps the pending file's path (a test then plays the
/// releaser, or its death).
#[derive(Debug, Default)]
struct NoProcess(Mutex<Vec<std::path::PathBuf>>);

impl release::Detacher for NoProcess {
    fn detach(&self, pending: &std::path::Path, _lock: &std::fs::File) -> Result<u32, String> {
        self.0.lock().unwrap().push(pending.to_path_buf());
        Ok(4343)
    }
}

/// With a releaser, release on the waited-for path only stops the resolver: the counters were
/// read by the final sample, and the table, link and shared state go to `release.pending`
/// (locked, so gc leaves it to the releaser). The releaser's work is then exactly the inline
/// release's, and it leaves nothing pending.
#[test]
fn a_deferred_release_leaves_the_objects_to_the_releaser() {
    let dir = tempfile::tempdir().unwrap();
    let exec = scripted(None);
    let detacher = Arc::new(NoProcess::default());
    let mut net = network(exec.clone(), dir.path());
    net.opts.detacher = Some(detacher.clone());
    net.attach(&Boundary::Namespace { pid: 4242 }, dir.path())
        .unwrap();
    let sample = net.sample(true).unwrap();
    assert!(sample.audit.is_some());
    let before = exec.commands().len();
    net.release().unwrap();
    assert_eq!(
        exec.commands().len(),
        before,
        "{:?}",
        &exec.commands()[before..]
    );
    let pending_file = release::pending_path(dir.path());
    assert_eq!(
        *detacher.0.lock().unwrap(),
        std::slice::from_ref(&pending_file)
    );
    assert_eq!(
        release::pending_state(dir.path()),
        release::PendingState::Working
    );
    let (pid, objects) = net.deferred_release().unwrap();
    assert_eq!(pid, 4343);
    assert_eq!(
        objects,
        [
            format!("table inet safe_run_{RUN}"),
            format!("link sr{RUN}h"),
            "forwarding holds and subnet ledger entry".to_owned(),
        ]
    );
    let summary = net.release_summary();
    assert_eq!(summary["removed"], json!(["resolver"]));
    assert_eq!(summary["deferred"]["pending"], "release.pending");
    // Idempotent: nothing left for this process to do.
    net.release().unwrap();
    assert_eq!(exec.commands().len(), before);
    // The ledger still holds the run's block until the releaser is done.
    assert!(dir.path().join(ledger::LEDGER_FILE).exists());

    let record = release::work_with(exec.as_ref(), &pending_file).unwrap();
    let released: Vec<String> = exec.commands()[before..]
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        released,
        [
            format!("nft -j delete table inet safe_run_{RUN}"),
            format!("await link sr{RUN}h gone within 1000 ms"),
            "sysctl -w net.ipv4.conf.eth0.forwarding=0".to_string(),
        ]
    );
    assert!(record.errors.is_empty(), "{record:?}");
    assert!(!pending_file.exists());
    assert!(!dir.path().join(ledger::LEDGER_FILE).exists());
    assert!(!dir.path().join("forwarding.json").exists());
}

/// Attach's own rollback never defers: the sandbox still runs, and the caller gets the
/// failure only after everything is gone.
#[test]
fn a_failed_attach_rolls_back_inline_even_with_a_releaser() {
    let dir = tempfile::tempdir().unwrap();
    let exec = scripted(Some("nft -j -f -"));
    let detacher = Arc::new(NoProcess::default());
    let mut net = network(exec.clone(), dir.path());
    net.opts.detacher = Some(detacher.clone());
    assert!(
        net.attach(&Boundary::Namespace { pid: 4242 }, dir.path())
            .is_err()
    );
    assert!(detacher.0.lock().unwrap().is_empty());
    let cmds: Vec<String> = exec.commands().iter().map(ToString::to_string).collect();
    assert!(cmds.contains(&format!("ip link del sr{RUN}h")), "{cmds:?}");
    assert!(!release::pending_path(dir.path()).exists());
}

/// libnftables parses one command line: an argument that is not a plain word (a `;`, a space,
/// a newline, nothing) is refused before the library is even loaded, so no argument can smuggle
/// a second command in. No root needed: nothing reaches the kernel.
#[test]
fn nft_arguments_must_be_plain_words() {
    use super::exec::SystemExecutor;
    for odd in [
        "x; flush ruleset",
        "a b",
        "x\nflush ruleset",
        "",
        "{",
        "\"q\"",
    ] {
        let err = SystemExecutor
            .run(&NetCommand::nft(&["delete", "table", "inet", odd]))
            .unwrap_err();
        assert_eq!(err.status, "refused", "{odd:?}: {err}");
        assert!(!err.is_not_found(), "{odd:?}");
    }
    let nul = super::libnft::run("list\0tables").unwrap_err();
    assert!(
        matches!(nul, super::libnft::NftFailure::Refused(_)),
        "{nul:?}"
    );
}
