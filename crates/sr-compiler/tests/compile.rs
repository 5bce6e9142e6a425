//! Integration tests of the compiler: snapshots of the bundles for both backends and both
//! network modes (inputs in tests/compile_snapshot/), the plan's structural promises, and a
//! property test that compiling is deterministic.

// Helpers panic on broken fixtures: in a test, that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use sr_common::ErrorCode;
use sr_compiler::bundle::MountStep;
use sr_compiler::{compile, policy_digest, to_canonical_json};
use sr_policy::model::Backend;
use sr_policy::rules::RealFs;
use sr_policy::{
    OperatorConfig, PolicyOverrides, SourceFormat, ValidatedPolicy, load_policy_file, validate_str,
    validate_with_overrides,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn snapshot_dir() -> PathBuf {
    repo().join("tests/compile_snapshot")
}

/// The built-in defaults, with mounts allowed only under the snapshot fixtures. Everything that
/// reaches a bundle is fixed here, so snapshots do not depend on the machine.
fn config() -> OperatorConfig {
    OperatorConfig {
        allowed_mount_prefixes: vec![snapshot_dir().join("fixtures").display().to_string()],
        ..OperatorConfig::default()
    }
}

fn load(name: &str) -> ValidatedPolicy {
    let path = snapshot_dir().join(name);
    match load_policy_file(&path, &config()) {
        Ok(p) => p,
        Err(report) => panic!("{name}: {}", serde_json::to_string_pretty(&report).unwrap()),
    }
}

fn bundle_text(name: &str) -> String {
    let text = to_canonical_json(&compile(&load(name), &config()).unwrap());
    // The only machine-dependent part: where the repository is checked out.
    text.replace(
        &snapshot_dir().join("fixtures").display().to_string(),
        "[FIXTURES]",
    )
}

fn assert_bundle_snapshot(name: &str) {
    let text = bundle_text(name);
    let snapshot_name = name.trim_end_matches(".yaml").to_owned();
    insta::with_settings!({
        snapshot_path => "../../../tests/compile_snapshot/snapshots",
        prepend_module_to_snapshot => false,
        omit_expression => true,
        description => format!("safe-run compile --dry-run --policy tests/compile_snapshot/{name}"),
    }, {
        insta::assert_snapshot!(snapshot_name, text);
    });
}

#[test]
fn snapshot_sandbox_none() {
    assert_bundle_snapshot("sandbox_none.yaml");
}

#[test]
fn snapshot_sandbox_allowlist() {
    assert_bundle_snapshot("sandbox_allowlist.yaml");
}

#[test]
fn snapshot_sandbox_mounts() {
    assert_bundle_snapshot("sandbox_mounts.yaml");
}

#[test]
fn snapshot_firecracker_none() {
    assert_bundle_snapshot("firecracker_none.yaml");
}

#[test]
fn snapshot_firecracker_allowlist() {
    assert_bundle_snapshot("firecracker_allowlist.yaml");
}

#[test]
fn snapshot_minimal_policy() {
    assert_bundle_snapshot("minimal_policy.yaml");
}

#[test]
fn every_snapshot_input_has_a_snapshot_test() {
    let mut inputs: Vec<String> = std::fs::read_dir(snapshot_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    inputs.sort();
    let mut snaps: Vec<String> = std::fs::read_dir(snapshot_dir().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".snap"))
        .map(|n| n.replace(".snap", ".yaml"))
        .collect();
    snaps.sort();
    assert_eq!(inputs, snaps);
}

#[test]
fn network_none_means_null_plan_and_allowlist_means_full_plan() {
    let none =
        serde_json::from_str::<serde_json::Value>(&bundle_text("sandbox_none.yaml")).unwrap();
    assert!(none["networkPlan"].is_null());
    let b = compile(&load("sandbox_allowlist.yaml"), &config()).unwrap();
    let net = b.network_plan.unwrap();
    assert_eq!(net.host_interface, "sr<runId>h");
    assert_eq!(net.nft.table, "safe_run_<runId>");
    let ids: Vec<&str> = net.nft.rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "egress-0",
            "egress-1",
            "egress-2",
            "egress-3",
            "egress-4",
            "dns",
            "host-drop",
            "default-drop",
            "masquerade"
        ]
    );
    assert!(net.nft.rules.iter().all(|r| r.counter));
    assert_eq!(net.nft.rules[1].dports, [80, 443], "ports sorted");
    assert_eq!(net.nft.rules[0].daddr.as_deref(), Some("@egress_0_v4"));
    assert_eq!(net.nft.rules[2].daddr.as_deref(), Some("203.0.113.0/24"));
    assert!(net.nft.rules[3].dports.is_empty(), "icmp has no ports");
    let sets: Vec<&str> = net.nft.sets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(sets, ["egress_0_v4", "egress_1_v4", "egress_4_v4"]);
    assert_eq!(
        net.dns.allowed_names,
        ["files.pythonhosted.org", "pypi.org"]
    );
    let fc = compile(&load("firecracker_allowlist.yaml"), &config()).unwrap();
    assert_eq!(fc.network_plan.unwrap().host_interface, "srt<runId>");
}

#[test]
fn interface_names_fit_the_kernel_limit() {
    // Run ids are 12 hex characters; IFNAMSIZ leaves 15 for a name.
    for name in ["sandbox_allowlist.yaml", "firecracker_allowlist.yaml"] {
        let net = compile(&load(name), &config())
            .unwrap()
            .network_plan
            .unwrap();
        for iface in [&net.host_interface, &net.guest_interface] {
            let real = iface.replace("<runId>", "0123456789ab");
            assert!(real.len() <= 15, "{real}");
        }
    }
}

#[test]
fn sandbox_plan_orders_mounts_and_mirrors_them_in_landlock() {
    let b = compile(&load("sandbox_mounts.yaml"), &config()).unwrap();
    let plan = b.backend.sandbox().cloned().unwrap();
    assert_eq!(
        plan.namespaces,
        ["cgroup", "ipc", "mount", "net", "pid", "user", "uts"]
    );
    assert!(matches!(&plan.mounts[0], MountStep::Root { source } if source == "host"));
    let policy_targets: Vec<&str> = plan
        .mounts
        .iter()
        .filter_map(|m| match m {
            MountStep::Bind { target, origin, .. } if origin == "policy" => Some(target.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        policy_targets,
        ["/data", "/data/cache"],
        "parents before children"
    );
    let kinds: Vec<&str> = plan
        .mounts
        .iter()
        .rev()
        .take(3)
        .map(|m| match m {
            MountStep::Tmpfs { .. } => "tmpfs",
            MountStep::Proc { .. } => "proc",
            MountStep::Dev { .. } => "dev",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["dev", "proc", "tmpfs"]);
    let paths: Vec<&str> = plan
        .landlock
        .rules
        .iter()
        .map(|r| r.path.as_str())
        .collect();
    let mut sorted = paths.clone();
    sorted.sort_unstable();
    assert_eq!(paths, sorted);
    let access = |p: &str| {
        plan.landlock
            .rules
            .iter()
            .find(|r| r.path == p)
            .unwrap()
            .access
            .as_str()
    };
    assert_eq!(access("/data"), "ro");
    assert_eq!(access("/data/cache"), "rw");
    assert_eq!(access("/tmp"), "rw");
    assert_eq!(access("/usr"), "ro");
    assert!(plan.no_new_privs && plan.capabilities.is_empty());
    assert!(!plan.rlimits.contains_key("RLIMIT_NPROC"));
    let mut syscalls = plan.seccomp.denied_syscalls.clone();
    syscalls.sort();
    assert_eq!(syscalls, plan.seccomp.denied_syscalls);
    for s in [
        "mount",
        "ptrace",
        "bpf",
        "keyctl",
        "perf_event_open",
        "unshare",
        "setns",
        "kexec_load",
    ] {
        assert!(plan.seccomp.denied_syscalls.iter().any(|d| d == s), "{s}");
    }
}

#[test]
fn defaults_come_from_the_operator_config() {
    let b = compile(&load("minimal_policy.yaml"), &config()).unwrap();
    let d = &config().default_limits;
    assert_eq!(b.cgroup_plan.memory_max_bytes, d.memory.bytes());
    assert_eq!(b.cgroup_plan.pids_max, d.pids);
    assert_eq!(b.cgroup_plan.cpu_quota_us, 100_000);
    assert_eq!(b.process.timeout_ms, d.timeout.as_millis());
    assert_eq!(
        (b.process.uid, b.process.gid, b.process.cwd.as_str()),
        (1000, 1000, "/")
    );
    assert_eq!(
        b.evidence_plan.events.len(),
        sr_common::events::EventType::ALL.len()
    );
    assert!(b.evidence_plan.sign);
    assert_eq!(
        b.backend.sandbox().cloned().unwrap().rlimits["RLIMIT_NOFILE"],
        d.open_files
    );
}

#[test]
fn firecracker_plan_uses_firecrackers_own_config_format() {
    let b = compile(&load("firecracker_none.yaml"), &config()).unwrap();
    assert!(b.backend.sandbox().is_none());
    let fc = b.backend.firecracker().cloned().unwrap();
    let vm = &fc.vm_config;
    assert_eq!(vm["machine-config"]["vcpu_count"], 2);
    assert_eq!(vm["machine-config"]["mem_size_mib"], 512);
    assert_eq!(vm["drives"][0]["is_root_device"], true);
    assert_eq!(vm["drives"][0]["is_read_only"], true);
    assert!(vm["boot-source"]["kernel_image_path"].is_string());
    assert!(
        vm.get("network-interfaces").is_none(),
        "no NIC without an allowlist"
    );
    assert_eq!(fc.jailer_args[0..2], ["--id", "<runId>"]);
    // The jail is in the run directory; cgroup arguments are the runner's (host-dependent).
    let base = fc.jailer_args.iter().position(|a| a == "--chroot-base-dir");
    assert_eq!(
        base.map(|i| fc.jailer_args[i + 1].as_str()),
        Some("/tmp/safe-run/runs/<runId>/jail")
    );
    assert!(!fc.jailer_args.iter().any(|a| a.starts_with("--cgroup")));
    assert_eq!(fc.api_socket, "api.socket");
    assert_eq!(fc.agent_port, 1024);
    assert!(fc.guest.namespaces.is_empty(), "the VM is the boundary");
    assert_eq!(
        fc.artifacts[0].expected_sha256.as_deref(),
        Some("sha256:3f786850e387550fdab836ed7e6dc881de23001b3f786850e387550fdab836ed")
    );
    let allow = compile(&load("firecracker_allowlist.yaml"), &config())
        .unwrap()
        .backend
        .firecracker()
        .cloned()
        .unwrap();
    assert_eq!(
        allow.vm_config["network-interfaces"][0]["host_dev_name"],
        "srt<runId>"
    );
}

#[test]
fn too_many_vcpus_is_a_template_mapping_error() {
    let mut config = config();
    config.max_limits.cpus = 64.0;
    let text = "version: 1\nname: big\nruntime: { backend: firecracker, command: /bin/true, args: [] }\nmounts: []\nresources: { cpus: 40 }\nartifacts: { kernel: { path: /k }, rootfs: { path: /r } }\n";
    let policy = validate_str(text, SourceFormat::Yaml, Path::new("/"), &config).unwrap();
    let d = compile(&policy, &config).unwrap_err();
    assert_eq!(d.code, ErrorCode::CompileTemplateMapping);
    assert_eq!(d.path, "resources.cpus");
}

fn overridden(text: &str, backend: Backend, config: &OperatorConfig) -> ValidatedPolicy {
    validate_with_overrides(
        text,
        SourceFormat::Yaml,
        Path::new("/"),
        config,
        &RealFs,
        &PolicyOverrides::backend(backend, "--backend"),
    )
    .unwrap()
}

#[test]
fn a_backend_override_compiles_that_backends_plan_and_the_bundle_records_it() {
    let text = std::fs::read_to_string(snapshot_dir().join("minimal_policy.yaml")).unwrap();
    let as_written = compile(&load("minimal_policy.yaml"), &config()).unwrap();
    let by_flag = compile(&overridden(&text, Backend::Microvm, &config()), &config()).unwrap();
    let by_file = validate_str(
        &text.replace("  command:", "  backend: microvm\n  command:"),
        SourceFormat::Yaml,
        Path::new("/"),
        &config(),
    )
    .unwrap();
    let by_file = compile(&by_file, &config()).unwrap();
    // The plan is exactly the one the file would get by saying `backend: microvm` ...
    assert_eq!(by_flag.backend, by_file.backend);
    assert_eq!(by_flag.cgroup_plan, by_file.cgroup_plan);
    assert_eq!(by_flag.process, by_file.process);
    // ... while the digest still names the file as written, and the override is recorded.
    assert_eq!(by_flag.policy_digest, as_written.policy_digest);
    assert_ne!(by_flag.policy_digest, by_file.policy_digest);
    assert_eq!(
        by_flag.policy_overrides.runtime_backend.as_deref(),
        Some("microvm")
    );
    assert!(by_file.policy_overrides.is_empty());
    let json: serde_json::Value = serde_json::from_str(&to_canonical_json(&by_flag)).unwrap();
    assert_eq!(
        json["policyOverrides"],
        serde_json::json!({"runtime.backend": "microvm"})
    );
    let plain: serde_json::Value = serde_json::from_str(&to_canonical_json(&as_written)).unwrap();
    assert!(plain.get("policyOverrides").is_none(), "left out when none");
    let back: sr_compiler::CompileBundle =
        serde_json::from_str(&to_canonical_json(&by_flag)).unwrap();
    assert_eq!(back, by_flag);
}

#[test]
fn a_vcpu_limit_of_an_overriding_backend_names_the_override() {
    let mut config = config();
    config.max_limits.cpus = 64.0;
    let text = "version: 1\nname: big\nruntime: { command: /bin/true, args: [] }\nmounts: []\nresources: { cpus: 40 }\nartifacts: { kernel: { path: /k }, rootfs: { path: /r } }\n";
    let text = text.replace("args: [] }", "args: [], backend: microvm }");
    let d = compile(&overridden(&text, Backend::Firecracker, &config), &config).unwrap_err();
    assert_eq!(d.code, ErrorCode::CompileTemplateMapping);
    assert_eq!(d.path, "resources.cpus");
    assert!(
        d.message
            .ends_with("(runtime.backend is firecracker from `--backend firecracker`)"),
        "{d}"
    );
    assert!(
        d.hint.ends_with("or run without `--backend firecracker`"),
        "{d}"
    );
}

#[test]
fn digest_is_sha256_of_jcs() {
    let value = serde_json::json!({"b": 1, "a": [1, "x"]});
    // sha256 of the JCS bytes {"a":[1,"x"],"b":1}
    let expected = {
        use sha2::Digest;
        format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(br#"{"a":[1,"x"],"b":1}"#))
        )
    };
    assert_eq!(policy_digest(&value), expected);
    // Key order in the document does not matter; content does.
    let p1 = validate_str(
        "version: 1\nname: a\nruntime: {command: /bin/true, args: []}\nmounts: []\n",
        SourceFormat::Yaml,
        Path::new("/"),
        &config(),
    )
    .unwrap();
    let p2 = validate_str("{\"mounts\": [], \"runtime\": {\"args\": [], \"command\": \"/bin/true\"}, \"name\": \"a\", \"version\": 1}", SourceFormat::Json, Path::new("/"), &config()).unwrap();
    assert_eq!(policy_digest(&p1.canonical), policy_digest(&p2.canonical));
}

#[test]
fn canonical_json_has_sorted_keys_and_a_trailing_newline() {
    let text = bundle_text("sandbox_allowlist.yaml");
    assert!(text.ends_with("}\n"));
    fn check(v: &serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                let keys: Vec<&String> = m.keys().collect();
                let mut sorted = keys.clone();
                sorted.sort();
                assert_eq!(keys, sorted);
                m.values().for_each(check);
            }
            serde_json::Value::Array(a) => a.iter().for_each(check),
            _ => {}
        }
    }
    check(&serde_json::from_str(&text).unwrap());
}

/// A random but valid policy, as JSON text.
fn policy_strategy() -> impl Strategy<Value = String> {
    let egress = prop::collection::vec(
        (
            prop_oneof![
                "[a-z]{1,10}\\.(org|com|net)".prop_map(|h| serde_json::json!({ "host": h })),
                (1u8..=223, 0u8..=255, 16u8..=32)
                    .prop_filter("not internal", |(a, _, _)| *a != 127
                        && *a != 10
                        && *a != 0
                        && *a != 169)
                    .prop_map(|(a, b, len)| {
                        let net: ipnet::Ipv4Net = format!("{a}.{b}.0.0/{len}").parse().unwrap();
                        serde_json::json!({ "cidr": net.trunc().to_string() })
                    }),
            ],
            prop_oneof![Just("tcp"), Just("udp"), Just("icmp")],
            prop::collection::btree_set(1i64..=65535, 1..4),
        ),
        1..6,
    );
    (
        "[a-z][a-z0-9-]{0,20}",
        prop::collection::vec("[ -~]{0,12}", 0..4),
        prop::collection::btree_map("[A-Z][A-Z0-9_]{0,8}", "[ -~]{0,12}", 0..4),
        any::<bool>(),
        prop::option::of(1u64..8),
        prop::option::of(1u64..4096),
        prop::option::of(egress),
        prop::option::of(prop::sample::subsequence(
            sr_common::events::EventType::ALL
                .iter()
                .map(|e| e.as_str())
                .collect::<Vec<_>>(),
            0..6,
        )),
    )
        .prop_map(|(name, args, env, firecracker, cpus, mem_mib, egress, events)| {
            let mut policy = serde_json::json!({
                "version": 1,
                "name": name,
                "runtime": { "command": "/usr/bin/env", "args": args, "env": env },
                "mounts": [],
                "resources": {},
            });
            if let Some(c) = cpus {
                policy["resources"]["cpus"] = c.into();
            }
            if let Some(m) = mem_mib {
                policy["resources"]["memory"] = format!("{m}Mi").into();
            }
            if firecracker {
                policy["runtime"]["backend"] = "firecracker".into();
                policy["artifacts"] = serde_json::json!({ "kernel": { "path": "/k" }, "rootfs": { "path": "/r" } });
            }
            if let Some(rules) = egress {
                let rules: Vec<serde_json::Value> = rules
                    .into_iter()
                    .enumerate()
                    .map(|(i, (mut dest, proto, ports))| {
                        // Distinct destinations, so no rule duplicates another.
                        if let Some(h) = dest.get("host").and_then(|h| h.as_str()).map(str::to_owned) {
                            dest["host"] = format!("r{i}.{h}").into();
                        }
                        dest["protocol"] = proto.into();
                        if proto != "icmp" {
                            dest["ports"] = ports.into_iter().collect::<Vec<_>>().into();
                        }
                        dest
                    })
                    .collect();
                policy["network"] = serde_json::json!({ "mode": "allowlist", "egress": rules });
            }
            if let Some(ev) = events {
                policy["evidence"] = serde_json::json!({ "events": ev });
            }
            policy.to_string()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn compile_is_deterministic(text in policy_strategy()) {
        let config = config();
        let a = validate_str(&text, SourceFormat::Json, Path::new("/"), &config);
        let a = match a {
            Ok(a) => a,
            Err(report) => return Err(TestCaseError::fail(format!("generated policy invalid: {}\n{text}", serde_json::to_string(&report).unwrap()))),
        };
        let b = validate_str(&text, SourceFormat::Json, Path::new("/"), &config).unwrap();
        let first = to_canonical_json(&compile(&a, &config).unwrap());
        let second = to_canonical_json(&compile(&b, &config).unwrap());
        prop_assert_eq!(&first, &second);
        // The bundle round-trips through its own JSON form unchanged.
        let parsed: sr_compiler::CompileBundle = serde_json::from_str(&first).unwrap();
        prop_assert_eq!(to_canonical_json(&parsed), first);
    }
}
