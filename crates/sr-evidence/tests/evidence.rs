//! Integration tests of the evidence chain: round trip, tamper corpus, crash prefix, gating,
//! write failures, keys, export, schema drift and a report snapshot.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde_json::{Value, json};
use sr_common::ErrorCode;
use sr_evidence::chain::{GENESIS, check_chain};
use sr_evidence::report::{self, *};
use sr_evidence::verify::{self, Status, Verification};
use sr_evidence::{
    ChainWriter, Clock, EventSink, EvidenceError, SigningKey, SteppingClock, events, export, keys,
};

fn clock() -> Box<dyn Clock> {
    Box::new(SteppingClock::new(
        time::macros::datetime!(2026-11-23 11:20:00 UTC),
        time::Duration::milliseconds(125),
    ))
}

fn all_events() -> Vec<String> {
    events::all_names()
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[1u8; 32])
}

fn other_key() -> SigningKey {
    SigningKey::from_bytes(&[2u8; 32])
}

/// A report with every optional member filled, so the tamper corpus reaches every leaf.
fn sample_report() -> RunReport {
    RunReport {
        schema_version: SCHEMA_VERSION.into(),
        run: RunInfo {
            id: "r-20261123-0001".into(),
            backend: "sandbox".into(),
            started_at: "2026-11-23T11:20:00Z".into(),
            ended_at: "2026-11-23T11:20:01.5Z".into(),
            duration_ms: 1500,
            host: HostInfo {
                kernel: "6.18.0".into(),
                arch: "x86_64".into(),
            },
            safe_run_version: "0.1.0".into(),
        },
        policy: PolicyInfo {
            name: "demo".into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            path: Some("examples/demo.yaml".into()),
            overrides: None,
        },
        inputs: vec![
            Input {
                role: InputRole::Policy,
                name: "policy".into(),
                path: None,
                digest: format!("sha256:{}", "a".repeat(64)),
            },
            Input {
                role: InputRole::Command,
                name: "python3".into(),
                path: None,
                digest: format!("sha256:{}", "c".repeat(64)),
            },
        ],
        enforcement: Enforcement {
            namespaces: ["cgroup", "ipc", "mnt", "net", "pid", "user", "uts"]
                .map(String::from)
                .to_vec(),
            landlock: Some(Landlock {
                abi: 7,
                status: "fully_enforced".into(),
                rules: vec![
                    LandlockRule::parse("/usr:ro"),
                    LandlockRule::parse("/tmp:rw"),
                ],
                skipped: vec!["/lib32".into()],
                scopes: vec!["abstract_unix_socket".into(), "signal".into()],
            }),
            seccomp: Some(Seccomp {
                profile_id: "default-v1".into(),
                filter_digest: format!("sha256:{}", "b".repeat(64)),
                denied_syscalls: 42,
                instructions: Some(187),
                sockets: Some(SocketRules {
                    families: vec!["AF_INET".into(), "AF_UNIX".into()],
                    netlink_protocols: vec![],
                    inet_socket_types: vec!["SOCK_STREAM".into()],
                    ip_protocols: vec!["IPPROTO_IP".into()],
                }),
            }),
            cgroup: Some(Cgroup {
                version: "v1".into(),
                limits: BTreeMap::from([("memory.limit_in_bytes".into(), "268435456".into())]),
            }),
            rlimits: BTreeMap::from([("RLIMIT_NOFILE".into(), 1024)]),
            no_new_privs: true,
            capabilities: vec![],
            user: Some(UserMapping {
                uid: 1000,
                gid: 1000,
                host_uid: 65534,
                host_gid: 65534,
            }),
            network: NetworkFacts {
                mode: "allowlist".into(),
                nft_ruleset_digest: Some(format!("sha256:{}", "d".repeat(64))),
                details: BTreeMap::from([("hostVeth".into(), json!("sr-abc0"))]),
            },
            absent: vec![AbsentFeature {
                feature: "cgroup.cpu".into(),
                reason: "operator allows".into(),
            }],
            backend: BTreeMap::from([("note".into(), json!({"x": 1}))]),
        },
        timeline: Timeline {
            head: GENESIS.into(),
            count: 0,
            dropped: 0,
            complete: true,
        },
        resources: Resources {
            memory_peak_bytes: Some(1 << 20),
            cpu_usage_us: Some(12345),
            pids_peak: Some(3),
            samples: 2,
        },
        network_audit: Some(NetworkAudit {
            rules: vec![RuleAudit {
                rule_id: "egress-0".into(),
                egress_index: 0,
                allowed_hits: 5,
                blocked_hits: 1,
            }],
            blocked: BlockedSummary {
                packets: 3,
                bytes: 180,
            },
            details: BTreeMap::new(),
        }),
        exit: ExitInfo {
            status: ExitStatus::Exited,
            code: Some(0),
            signal: None,
            reason: None,
        },
        outputs: vec![],
        cleanup: Cleanup {
            ok: true,
            removed: vec!["cgroup:/sys/fs/cgroup/memory/safe-run/r1".into()],
            errors: vec![],
        },
        mounts: None,
        execs: Vec::new(),
        transfers: Vec::new(),
        pool: None,
        warnings: vec![],
        integrity: None,
    }
}

struct Run {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    report: PathBuf,
    events: PathBuf,
}

/// Writes a whole run: `n` events ending in cleanup.done, stdout/stderr, a sealed report.
fn make_run(n: usize, signer: Option<&SigningKey>) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let mut chain = ChainWriter::create(&dir, &all_events(), clock()).unwrap();
    chain
        .emit(events::RUN_PREPARE, json!({"runId": "r1"}))
        .unwrap();
    for i in 0..n.saturating_sub(2) {
        chain
            .emit(
                events::RESOURCE_SAMPLE,
                json!({"i": i, "memoryBytes": 4096 * i}),
            )
            .unwrap();
    }
    chain
        .emit(events::CLEANUP_DONE, json!({"ok": true}))
        .unwrap();
    let summary = chain.finish().unwrap();

    fs::write(dir.join("stdout"), b"hello\n").unwrap();
    fs::write(dir.join("stderr"), b"").unwrap();
    let mut r = sample_report();
    for name in ["stdout", "stderr"] {
        let (digest, bytes) = verify::digest_file(&dir.join(name)).unwrap();
        r.outputs.push(Output {
            name: name.into(),
            path: name.into(),
            bytes,
            digest,
            bytes_seen: Some(bytes),
            truncated: false,
            limit_bytes: Some(64 << 20),
            on_limit: Some("truncate".into()),
        });
    }
    let bin = dir.join("tool.bin");
    fs::write(&bin, b"\x7fELF pretend").unwrap();
    let (digest, _) = verify::digest_file(&bin).unwrap();
    r.inputs.push(Input {
        role: InputRole::Binary,
        name: "tool.bin".into(),
        path: Some(bin.display().to_string()),
        digest,
    });
    r.timeline.count = summary.count;
    r.timeline.dropped = summary.dropped;
    let sealed = report::seal(r, &summary.head, signer).unwrap();
    let report_path = dir.join(REPORT_FILE);
    report::write_report(&report_path, &sealed).unwrap();
    Run {
        report: report_path,
        events: dir.join("events.jsonl"),
        dir,
        _dir: tmp,
    }
}

fn verify_run(run: &Run, key: Option<&SigningKey>) -> Verification {
    let vk = key.map(|k| k.verifying_key());
    let options = verify::VerifyOptions {
        check_host_files: true,
    };
    verify::verify_with(&run.report, Some(&run.events), vk.as_ref(), options)
}

fn status_of(v: &Verification, name: &str) -> Status {
    v.checks
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.status)
        .unwrap_or_else(|| panic!("no check {name}: {}", v.render_text()))
}

#[test]
fn round_trip_verifies_every_check() {
    let run = make_run(10, Some(&key()));
    let v = verify_run(&run, Some(&key()));
    assert!(v.ok(), "{}", v.render_text());
    assert!(v.complete);
    for name in [
        "report.read",
        "report.layout",
        "report.schema",
        "integrity.digest",
        "signature",
        "events.chain",
        "events.head",
        "timeline.complete",
        "output:stdout",
        "output:stderr",
        "input:binary:tool.bin",
    ] {
        assert_eq!(
            status_of(&v, name),
            Status::Pass,
            "{name}\n{}",
            v.render_text()
        );
    }
    // Without --key, the embedded key is used and the output says it is self-asserted.
    let v = verify_run(&run, None);
    assert!(v.ok());
    let sig = v.checks.iter().find(|c| c.name == "signature").unwrap();
    assert!(sig.detail.contains("self-asserted"), "{}", sig.detail);
}

#[test]
fn recorded_overrides_verify_when_the_run_ran_on_them_and_old_reports_need_none() {
    let run = make_run(5, Some(&key()));
    // A report without overrides (every report written before they existed) verifies with no
    // such check.
    let v = verify_run(&run, Some(&key()));
    assert!(v.ok(), "{}", v.render_text());
    assert!(v.checks.iter().all(|c| c.name != "policy.overrides"));
    let resealed = |backend: &str, boundary: &str| {
        let mut r = report::read_report(&run.report).unwrap();
        r.policy.overrides = Some(PolicyOverrides {
            runtime_backend: Some(backend.into()),
        });
        r.run.backend = boundary.into();
        let head = r.timeline.head.clone();
        let sealed = report::seal(r, &head, Some(&key())).unwrap();
        fs::remove_file(&run.report).unwrap();
        report::write_report(&run.report, &sealed).unwrap();
        verify_run(&run, Some(&key()))
    };
    for (backend, boundary) in [
        ("microvm", "qemu"),
        ("microvm", "firecracker"),
        ("sandbox", "sandbox"),
        ("firecracker", "firecracker"),
    ] {
        let v = resealed(backend, boundary);
        assert!(v.ok(), "{backend} on {boundary}: {}", v.render_text());
        assert_eq!(status_of(&v, "policy.overrides"), Status::Pass);
    }
    let text = fs::read_to_string(&run.report).unwrap();
    assert!(
        text.contains(
            r#""overrides": {
      "runtime.backend": "firecracker"
    }"#
        ),
        "keyed by the policy path: {text}"
    );
    for (backend, boundary) in [
        ("microvm", "sandbox"),
        ("sandbox", "qemu"),
        ("firecracker", "qemu"),
    ] {
        let v = resealed(backend, boundary);
        let failed: Vec<&str> = v.failures().map(|c| c.name.as_str()).collect();
        assert_eq!(failed, ["policy.overrides"], "{}", v.render_text());
    }
    // Only the policy's own backends are overrides the schema knows.
    let v = resealed("kvm", "qemu");
    assert_eq!(status_of(&v, "report.schema"), Status::Fail);
}

#[test]
fn wrong_key_fails() {
    let run = make_run(5, Some(&key()));
    let v = verify_run(&run, Some(&other_key()));
    assert!(!v.ok());
    assert_eq!(status_of(&v, "signature"), Status::Fail);
    // Re-sealing with another key and embedding it is caught when the verifier names its key.
    let r = report::read_report(&run.report).unwrap();
    let head = r.timeline.head.clone();
    let forged = report::seal(r, &head, Some(&other_key())).unwrap();
    fs::remove_file(&run.report).unwrap();
    report::write_report(&run.report, &forged).unwrap();
    assert!(verify_run(&run, None).ok(), "self-asserted: integrity only");
    assert!(!verify_run(&run, Some(&key())).ok());
}

#[test]
fn unsigned_report_skips_signature_and_fails_with_key() {
    let run = make_run(4, None);
    let v = verify_run(&run, None);
    assert!(v.ok(), "{}", v.render_text());
    assert_eq!(status_of(&v, "signature"), Status::Skip);
    assert!(!verify_run(&run, Some(&key())).ok());
}

/// Every leaf (and every object member) of the report, changed or removed one at a time and
/// re-rendered canonically (so only the digest/signature can catch it), must fail.
#[test]
fn tampering_any_field_of_the_report_fails() {
    let run = make_run(6, Some(&key()));
    let original: Value = serde_json::from_slice(&fs::read(&run.report).unwrap()).unwrap();
    let mut pointers = Vec::new();
    collect_pointers(&original, String::new(), &mut pointers);
    assert!(pointers.len() > 60, "corpus too small: {}", pointers.len());
    let mut tried = 0;
    for (pointer, is_leaf) in &pointers {
        let mut variants = Vec::new();
        if *is_leaf {
            let mut changed = original.clone();
            mutate_leaf(changed.pointer_mut(pointer).unwrap());
            variants.push(("changed", changed));
        }
        if let Some(removed) = remove_member(&original, pointer) {
            variants.push(("removed", removed));
        }
        for (how, value) in variants {
            tried += 1;
            let bytes = report::render_value(&value).unwrap();
            fs::write(&run.report, &bytes).unwrap();
            for k in [None, Some(&key())] {
                let v = verify_run(&run, k);
                assert!(
                    !v.ok(),
                    "{how} {pointer} verified (key: {})\n{}",
                    k.is_some(),
                    v.render_text()
                );
            }
        }
    }
    // Adding a member anywhere an object is also caught.
    for (pointer, _) in pointers.iter().filter(|(_, leaf)| !leaf) {
        let mut value = original.clone();
        if let Some(Value::Object(map)) = value.pointer_mut(pointer) {
            map.insert("extra".into(), json!(1));
            fs::write(&run.report, report::render_value(&value).unwrap()).unwrap();
            assert!(
                !verify_run(&run, None).ok(),
                "added member under {pointer} verified"
            );
        }
    }
    assert!(tried > 100);
}

fn collect_pointers(value: &Value, at: String, out: &mut Vec<(String, bool)>) {
    match value {
        Value::Object(map) => {
            if !at.is_empty() {
                out.push((at.clone(), false));
            }
            for (k, v) in map {
                collect_pointers(
                    v,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(items) if !items.is_empty() => {
            out.push((at.clone(), false));
            for (i, v) in items.iter().enumerate() {
                collect_pointers(v, format!("{at}/{i}"), out);
            }
        }
        _ => out.push((at, true)),
    }
}

fn mutate_leaf(v: &mut Value) {
    *v = match v.take() {
        Value::String(s) if s.is_empty() => json!("x"),
        Value::String(s) => {
            let mut b = s.into_bytes();
            let last = b.len() - 1;
            b[last] = if b[last] == b'0' { b'1' } else { b'0' };
            Value::String(String::from_utf8(b).unwrap())
        }
        Value::Number(n) => json!(n.as_u64().map(|x| x + 1).unwrap_or(0)),
        Value::Bool(b) => json!(!b),
        Value::Null => json!(0),
        Value::Array(_) => json!([1]),
        Value::Object(_) => json!({"x": 1}),
    }
}

fn remove_member(root: &Value, pointer: &str) -> Option<Value> {
    let (parent, key) = pointer.rsplit_once('/')?;
    let mut value = root.clone();
    match value.pointer_mut(parent)? {
        Value::Object(map) => {
            map.remove(&key.replace("~1", "/").replace("~0", "~"))?;
        }
        Value::Array(items) => {
            items.remove(key.parse().ok()?);
        }
        _ => return None,
    }
    Some(value)
}

#[test]
fn whitespace_only_change_to_the_report_fails() {
    let run = make_run(3, Some(&key()));
    let mut bytes = fs::read(&run.report).unwrap();
    let pos = bytes.iter().position(|&b| b == b' ').unwrap();
    bytes[pos] = b'\t';
    fs::write(&run.report, &bytes).unwrap();
    let v = verify_run(&run, Some(&key()));
    assert_eq!(status_of(&v, "report.layout"), Status::Fail);
    assert_eq!(status_of(&v, "integrity.digest"), Status::Pass);
}

fn lines(path: &Path) -> Vec<Vec<u8>> {
    fs::read(path)
        .unwrap()
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

fn write_lines(path: &Path, lines: &[Vec<u8>]) {
    fs::write(path, lines.concat()).unwrap();
}

#[test]
fn removing_reordering_duplicating_or_appending_events_fails() {
    let run = make_run(8, Some(&key()));
    let original = lines(&run.events);
    assert_eq!(original.len(), 8);
    let mut cases: Vec<(&str, Vec<Vec<u8>>)> = Vec::new();
    for i in 0..original.len() {
        let mut l = original.clone();
        l.remove(i);
        cases.push(("remove", l));
        let mut l = original.clone();
        l.insert(i, original[i].clone());
        cases.push(("duplicate", l));
    }
    for i in 0..original.len() - 1 {
        let mut l = original.clone();
        l.swap(i, i + 1);
        cases.push(("swap", l));
    }
    // A correctly chained extra event: only the report's head/count can catch it.
    let checked = check_chain(&original.concat()).unwrap();
    let (_, extra) = sr_evidence::chain::encode_event(
        checked.count,
        "2026-11-23T11:30:00Z",
        events::PROCESS_STARTED.as_str(),
        &json!({}),
        &checked.head,
    )
    .unwrap();
    let mut appended = original.clone();
    appended.push(extra);
    assert!(check_chain(&appended.concat()).is_ok());
    cases.push(("append", appended));
    cases.push(("truncate-all", vec![]));
    for (how, l) in cases {
        write_lines(&run.events, &l);
        let v = verify_run(&run, Some(&key()));
        assert!(!v.ok(), "{how} verified\n{}", v.render_text());
    }
}

#[test]
fn missing_event_log_fails_and_missing_output_is_skipped_not_passed() {
    let run = make_run(3, Some(&key()));
    fs::remove_file(run.dir.join("stdout")).unwrap();
    let v = verify_run(&run, Some(&key()));
    assert!(v.ok());
    assert_eq!(status_of(&v, "output:stdout"), Status::Skip);
    fs::write(run.dir.join("stdout"), b"hellO\n").unwrap();
    assert_eq!(
        status_of(&verify_run(&run, None), "output:stdout"),
        Status::Fail
    );
    fs::remove_file(&run.events).unwrap();
    let v = verify_run(&run, Some(&key()));
    assert_eq!(status_of(&v, "events.chain"), Status::Fail);
}

/// Issue 14 item 2: by default the verifier's own files are not re-hashed, so a report from
/// another host (whose binary path names a different file here) verifies; the check is listed
/// as not requested, never as a pass.
#[test]
fn host_files_are_checked_only_on_request() {
    let run = make_run(3, Some(&key()));
    fs::write(run.dir.join("tool.bin"), b"\x7fELF another host's build").unwrap();
    let vk = key().verifying_key();
    let v = verify::verify(&run.report, Some(&run.events), Some(&vk));
    assert!(v.ok(), "{}", v.render_text());
    assert_eq!(status_of(&v, "input:binary:tool.bin"), Status::NotRequested);
    assert!(v.render_text().contains("not requested"));
    let json = serde_json::to_value(&v.checks).unwrap();
    assert!(
        json.as_array()
            .unwrap()
            .iter()
            .any(|c| c["status"] == "not_requested")
    );
    fs::remove_file(run.dir.join("tool.bin")).unwrap();
    let v = verify::verify(&run.report, Some(&run.events), Some(&vk));
    assert_eq!(status_of(&v, "input:binary:tool.bin"), Status::NotRequested);
}

#[test]
fn changed_input_file_fails() {
    let run = make_run(3, Some(&key()));
    fs::write(run.dir.join("tool.bin"), b"\x7fELF other").unwrap();
    let v = verify_run(&run, Some(&key()));
    assert_eq!(status_of(&v, "input:binary:tool.bin"), Status::Fail);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_single_byte_change_of_the_report_fails(pos in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let run = make_run(4, Some(&key()));
        let mut bytes = fs::read(&run.report).unwrap();
        let i = pos.index(bytes.len());
        bytes[i] ^= xor;
        fs::write(&run.report, &bytes).unwrap();
        prop_assert!(!verify_run(&run, None).ok());
        prop_assert!(!verify_run(&run, Some(&key())).ok());
    }

    #[test]
    fn any_single_byte_change_of_the_events_fails(pos in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let run = make_run(6, Some(&key()));
        let mut bytes = fs::read(&run.events).unwrap();
        let i = pos.index(bytes.len());
        bytes[i] ^= xor;
        fs::write(&run.events, &bytes).unwrap();
        prop_assert!(!verify_run(&run, None).ok());
        prop_assert!(verify::verify_events(&run.events).checks.iter().any(|c| c.status == Status::Fail));
    }
}

#[test]
fn gating_writes_planned_and_activity_events_and_counts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let plan = vec![
        events::CLEANUP_DONE.to_string(),
        events::RUN_PREPARE.to_string(),
        "not.a.known.type".to_owned(),
    ];
    let mut chain = ChainWriter::create(dir.path(), &plan, clock()).unwrap();
    chain.emit(events::RUN_PREPARE, json!({})).unwrap();
    chain
        .emit(events::RESOURCE_SAMPLE, json!({"x": 1}))
        .unwrap();
    // Not in the plan, but what ran and what moved is always recorded.
    chain
        .emit(
            events::FILE_REMOVED,
            json!({"transferId": 1, "path": "/tmp/x"}),
        )
        .unwrap();
    chain.emit(events::CLEANUP_DONE, json!({})).unwrap();
    let summary = chain.finish().unwrap();
    assert_eq!((summary.count, summary.dropped), (3, 1));
    let text = fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
    let types: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(types, ["run.prepare", "file.removed", "cleanup.done"]);
    let v = verify::verify_events(&dir.path().join("events.jsonl"));
    assert!(v.ok() && v.complete, "{}", v.render_text());
}

#[test]
fn write_failure_is_sr_evd_001_and_poisons_the_writer() {
    let full = fs::OpenOptions::new().write(true).open("/dev/full");
    let Ok(full) = full else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "/dev/full is required in CI"
        );
        eprintln!("SKIPPED: /dev/full is not available");
        return;
    };
    let mut chain = ChainWriter::from_writer(full, &all_events(), clock());
    let err = chain.record(events::RUN_PREPARE, &json!({})).unwrap_err();
    assert!(matches!(err, EvidenceError::WriteEvent { .. }), "{err:?}");
    assert_eq!(err.code(), ErrorCode::EvidenceEventWrite);
    assert!(chain.is_poisoned());
    let later = chain.emit(events::CLEANUP_DONE, json!({})).unwrap_err();
    assert!(later.reason.contains("earlier failure"), "{later}");
    // A gated-out event is refused too once poisoned: nothing more is accepted.
    assert!(chain.record(events::RUN_OOM, &json!({})).is_err());
}

#[test]
fn unrepresentable_payload_is_sr_evd_001() {
    let mut chain = ChainWriter::from_writer(Vec::new(), &all_events(), clock());
    let err = chain
        .record(events::RESOURCE_SAMPLE, &json!({"bytes": u64::MAX}))
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::EvidenceEventWrite);
    assert!(err.to_diagnostic().message.contains("/bytes"));
    assert!(chain.is_poisoned());
    let (summary, out) = chain.into_inner().unwrap();
    assert_eq!(summary.count, 0);
    assert!(out.is_empty());
}

#[test]
fn creating_the_log_twice_or_in_a_missing_dir_is_sr_evd_001() {
    let dir = tempfile::tempdir().unwrap();
    let _first = ChainWriter::create(dir.path(), &all_events(), clock()).unwrap();
    let err = ChainWriter::create(dir.path(), &all_events(), clock()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::EvidenceEventWrite);
    let err = ChainWriter::create(&dir.path().join("missing"), &all_events(), clock()).unwrap_err();
    assert!(matches!(err, EvidenceError::CreateLog { .. }));
}

/// Child half of `a_crash_leaves_a_verifiable_incomplete_prefix`: writes events until killed.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os("SR_EVIDENCE_CRASH_DIR") else {
        return;
    };
    let mut chain = ChainWriter::create(
        Path::new(&dir),
        &all_events(),
        Box::new(sr_evidence::SystemClock),
    )
    .unwrap();
    chain
        .emit(events::RUN_PREPARE, json!({"runId": "crash"}))
        .unwrap();
    for i in 0u64.. {
        chain
            .emit(events::RESOURCE_SAMPLE, json!({"i": i}))
            .unwrap();
        if i == 20 {
            fs::write(Path::new(&dir).join("ready"), b"").unwrap();
        }
    }
}

#[test]
fn a_crash_leaves_a_verifiable_incomplete_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env("SR_EVIDENCE_CRASH_DIR", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !dir.path().join("ready").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "child never got going"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL, mid-stream
    child.wait().unwrap();
    let events = dir.path().join("events.jsonl");
    let v = verify::verify_events(&events);
    assert!(v.ok(), "{}", v.render_text());
    assert!(!v.complete);
    assert_eq!(status_of(&v, "events.complete"), Status::Skip);
    assert!(check_chain(&fs::read(&events).unwrap()).unwrap().count > 20);
}

#[test]
fn signing_key_is_created_0600_in_a_0700_dir_and_reused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys/sub/report.key");
    let (k1, created) = keys::load_or_create(&path).unwrap();
    assert!(created);
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir.path().join("keys")), 0o700);
    assert_eq!(mode(&dir.path().join("keys/sub")), 0o700);
    assert!(
        fs::read_to_string(&path)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    let (k2, created) = keys::load_or_create(&path).unwrap();
    assert!(!created);
    assert_eq!(k1.to_bytes(), k2.to_bytes());
}

#[test]
fn insecure_key_files_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    keys::load_or_create(&path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    let err = keys::load_or_create(&path).unwrap_err();
    assert!(matches!(err, EvidenceError::KeyInsecure { .. }), "{err:?}");
    assert_eq!(err.code(), ErrorCode::EvidenceReport);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    assert!(matches!(
        keys::load(&link).unwrap_err(),
        EvidenceError::KeyInsecure { .. }
    ));
}

#[test]
fn intoto_export_verifies_and_tampering_fails() {
    let run = make_run(5, Some(&key()));
    let r = report::read_report(&run.report).unwrap();
    let env = export::export_intoto(&r, &key(), None).unwrap();
    assert_eq!(env.payload_type, export::PAYLOAD_TYPE);
    let verified = export::verify_envelope(&env, &key().verifying_key(), None).unwrap();
    let statement = verified.statement;
    let own_id = keys::keyid(&key().verifying_key());
    assert_eq!(env.signatures[0].keyid, own_id);
    assert_eq!(verified.report_keyid, own_id);
    assert_eq!(
        statement["predicate"]["runDetails"]["byproducts"][0]["annotations"]["sealedBy"]["keyid"],
        own_id
    );
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(statement["subject"][0]["name"], "stdout");
    assert_eq!(
        format!(
            "sha256:{}",
            statement["subject"][0]["digest"]["sha256"]
                .as_str()
                .unwrap()
        ),
        r.outputs[0].digest
    );
    let predicate = &statement["predicate"];
    assert_eq!(
        predicate["buildDefinition"]["buildType"],
        "https://safe-run.dev/backend/sandbox@v1"
    );
    assert_eq!(
        predicate["runDetails"]["metadata"]["invocationId"],
        r.run.id
    );
    assert_eq!(
        predicate["buildDefinition"]["resolvedDependencies"]
            .as_array()
            .unwrap()
            .len(),
        r.inputs.len()
    );

    assert!(export::verify_envelope(&env, &other_key().verifying_key(), None).is_err());
    let mut tampered = env.clone();
    let mut payload = base64_decode(&tampered.payload);
    payload[10] ^= 1;
    tampered.payload = base64_encode(&payload);
    assert!(export::verify_envelope(&tampered, &key().verifying_key(), None).is_err());
    let mut tampered = env.clone();
    tampered.payload_type = "application/json".into();
    assert!(export::verify_envelope(&tampered, &key().verifying_key(), None).is_err());
}

/// Issue 14 item 1: a report sealed by one key is not exported under another key unless the
/// exporter names the report's signer, and the envelope then says who sealed the report.
#[test]
fn intoto_export_refuses_a_report_sealed_by_another_key() {
    let run = make_run(2, Some(&key()));
    let r = report::read_report(&run.report).unwrap();
    let err = export::export_intoto(&r, &other_key(), None).unwrap_err();
    assert!(
        matches!(err, EvidenceError::ExportRefused { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains(&keys::keyid(&key().verifying_key())),
        "{err}"
    );
    // The wrong key named for the report: refused too.
    let wrong = other_key().verifying_key();
    assert!(export::export_intoto(&r, &other_key(), Some(&wrong)).is_err());
    // An unsigned report cannot be exported at all.
    let unsigned = make_run(2, None);
    let ur = report::read_report(&unsigned.report).unwrap();
    assert!(export::export_intoto(&ur, &key(), None).is_err());

    // Named explicitly: exported, and the envelope carries the report's signer.
    let sealer = key().verifying_key();
    let env = export::export_intoto(&r, &other_key(), Some(&sealer)).unwrap();
    assert_eq!(
        env.signatures[0].keyid,
        keys::keyid(&other_key().verifying_key())
    );
    // The exporter's key alone does not accept it: it says which key sealed the report.
    let e = export::verify_envelope(&env, &other_key().verifying_key(), None).unwrap_err();
    assert!(e.contains(&keys::keyid(&sealer)), "{e}");
    let ok = export::verify_envelope(&env, &other_key().verifying_key(), Some(&sealer)).unwrap();
    assert_eq!(ok.report_keyid, keys::keyid(&sealer));
    assert_ne!(ok.envelope_keyid, ok.report_keyid);
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn report_schema_in_docs_is_in_sync() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/run_report.schema.json");
    let generated = report::report_schema_text();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        fs::write(&path, &generated).unwrap();
    }
    let on_disk = fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "docs/run_report.schema.json drifted from the RunReport types; run with UPDATE_SCHEMA=1"
    );
}

#[test]
fn report_snapshot_with_redacted_times() {
    let run = make_run(4, Some(&key()));
    let mut value: Value = serde_json::from_slice(&fs::read(&run.report).unwrap()).unwrap();
    value["run"]["startedAt"] = json!("[time]");
    value["run"]["endedAt"] = json!("[time]");
    // The binary's path lies in a temp dir, and the digest and signature cover it.
    value["inputs"][2]["path"] = json!("[tmp]/tool.bin");
    value["integrity"]["digest"] = json!("[covers tmp path]");
    value["integrity"]["signature"] = json!("[covers tmp path]");
    insta::assert_snapshot!(String::from_utf8(report::render_value(&value).unwrap()).unwrap());
}

#[test]
fn builder_helpers_fill_inputs_outputs_and_times() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("stdout.log"), b"abc").unwrap();
    let out = Output::from_file("stdout", dir.path(), "stdout.log").unwrap();
    assert_eq!(out.bytes, 3);
    assert_eq!(
        out.digest,
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let input = Input::from_json(InputRole::Command, "cmd", &json!(["/bin/echo", "hi"])).unwrap();
    assert_eq!(
        input.digest,
        sr_evidence::canonical::sha256_tagged(br#"["/bin/echo","hi"]"#)
    );
    let bin = Input::from_file(
        InputRole::Binary,
        "stdout.log",
        &dir.path().join("stdout.log"),
    )
    .unwrap();
    assert_eq!(bin.digest, out.digest);
    assert!(Output::from_file("x", dir.path(), "missing").is_err());
    assert_eq!(
        report::rfc3339_from_unix_ms(1_700_000_000_123),
        "2023-11-14T22:13:20.123Z"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Bad input never panics: arbitrary bytes as an event log or as a report.
    #[test]
    fn arbitrary_bytes_never_panic_and_never_verify_as_a_report(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = check_chain(&bytes);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(REPORT_FILE);
        fs::write(&path, &bytes).unwrap();
        fs::write(dir.path().join("events.jsonl"), &bytes).unwrap();
        prop_assert!(!verify::verify(&path, None, None).ok());
    }

    /// Arbitrary JSON lines are never accepted as a chain unless they are one.
    #[test]
    fn arbitrary_json_lines_are_not_a_chain(keys in prop::collection::vec("[a-z]{1,6}", 1..6), n in 0u64..1000) {
        let mut obj = serde_json::Map::new();
        for k in keys {
            obj.insert(k, json!(n));
        }
        let line = format!("{}\n", Value::Object(obj));
        prop_assert!(check_chain(line.as_bytes()).is_err());
    }
}

/// Long logs are checked on several threads; errors still name the first bad line.
#[test]
fn long_chains_report_the_first_bad_line() {
    let mut w = ChainWriter::from_writer(Vec::new(), &all_events(), clock());
    for i in 0..12_000u64 {
        w.record(events::RESOURCE_SAMPLE, &json!({ "i": i }))
            .unwrap();
    }
    let (summary, out) = w.into_inner().unwrap();
    let checked = check_chain(&out).unwrap();
    assert_eq!(
        (checked.count, checked.head.clone()),
        (12_000, summary.head)
    );

    let mut lines: Vec<&[u8]> = out.split_inclusive(|&b| b == b'\n').collect();
    lines.swap(9_000, 9_001);
    assert_eq!(check_chain(&lines.concat()).unwrap_err().line, 9_001);

    let mut bytes = out.clone();
    let start: usize = out
        .split_inclusive(|&b| b == b'\n')
        .take(5_000)
        .map(<[u8]>::len)
        .sum();
    bytes[start + 100] ^= 0x20;
    let mut bytes2 = bytes.clone();
    assert_eq!(check_chain(&bytes).unwrap_err().line, 5_001);
    bytes2[10] ^= 0x01; // an earlier error wins
    assert_eq!(check_chain(&bytes2).unwrap_err().line, 1);
}

#[test]
fn exit_status_names_match_the_json() {
    for s in [
        ExitStatus::Exited,
        ExitStatus::Signaled,
        ExitStatus::Timeout,
        ExitStatus::Oom,
        ExitStatus::LaunchFailed,
        ExitStatus::Stopped,
        ExitStatus::OutputLimit,
        ExitStatus::Interrupted,
        ExitStatus::Lost,
    ] {
        assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
    }
}
