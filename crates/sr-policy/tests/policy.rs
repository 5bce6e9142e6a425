//! Integration tests of policy validation: the committed valid and invalid cases, generated
//! cases (oversized input, symlinked sources), and property tests that malformed input never
//! panics.

// Helpers panic on broken fixtures: in a test, that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use sr_common::{ErrorCode, Location};
use sr_policy::{OperatorConfig, SourceFormat, ValidationReport, load_policy_file, validate_str};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn fixtures() -> PathBuf {
    repo().join("tests/policy_valid_cases/fixtures")
}

/// The tests' operator config: mounts only under the fixtures, run dir and key dir inside them
/// (so C2/C3 can be exercised), everything else default.
fn test_config() -> OperatorConfig {
    let f = fixtures();
    OperatorConfig {
        allowed_mount_prefixes: vec![f.display().to_string()],
        run_dir: f.join("runs").display().to_string(),
        key_path: f.join("keys/report-signing.key").display().to_string(),
        ..OperatorConfig::default()
    }
}

fn case_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            )
        })
        .collect();
    files.sort();
    files
}

fn expectations(path: &Path) -> Vec<(String, String)> {
    let text = if path.extension().is_some_and(|e| e == "json") {
        std::fs::read_to_string(format!("{}.expect", path.display())).unwrap()
    } else {
        std::fs::read_to_string(path).unwrap()
    };
    text.lines()
        .filter_map(|l| l.trim_start_matches('#').trim().strip_prefix("expect:"))
        .map(|rest| {
            let (code, path) = rest.trim().split_once(' ').unwrap();
            (code.to_owned(), path.trim().to_owned())
        })
        .collect()
}

fn found(report: &ValidationReport) -> Vec<(String, String)> {
    report
        .diagnostics
        .iter()
        .map(|d| (d.code.to_string(), d.path.clone()))
        .collect()
}

#[test]
fn valid_cases_validate() {
    let config = test_config();
    let files = case_files("tests/policy_valid_cases");
    assert!(files.iter().any(|f| f.ends_with("minimal.yaml")));
    assert!(
        files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "json"))
    );
    for file in files {
        if let Err(report) = load_policy_file(&file, &config) {
            panic!(
                "{} should be valid:\n{}",
                file.display(),
                serde_json::to_string_pretty(&report).unwrap()
            );
        }
    }
}

#[test]
fn minimal_validates_under_the_default_operator_config() {
    let file = repo().join("tests/policy_valid_cases/minimal.yaml");
    let v = load_policy_file(&file, &OperatorConfig::default()).unwrap();
    assert_eq!(v.spec.name, "minimal");
    assert_eq!(v.source_path.as_deref(), Some(file.as_path()));
}

#[test]
fn invalid_cases_report_exactly_what_they_expect() {
    let config = test_config();
    let files = case_files("tests/policy_invalid_cases");
    assert!(
        files.len() >= 40,
        "expected the committed invalid cases, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for file in files {
        let expected = expectations(&file);
        assert!(
            !expected.is_empty(),
            "{} states no `expect:` line",
            file.display()
        );
        let report = match load_policy_file(&file, &config) {
            Ok(_) => {
                failures.push(format!(
                    "{}: validated, expected {expected:?}",
                    file.display()
                ));
                continue;
            }
            Err(r) => r,
        };
        for d in &report.diagnostics {
            assert!(
                d.location.is_some(),
                "{}: {} has no line/column",
                file.display(),
                d
            );
            assert!(
                !d.message.is_empty() && !d.hint.is_empty(),
                "{}: {d} lacks cause or hint",
                file.display()
            );
        }
        let got: BTreeSet<_> = found(&report).into_iter().collect();
        let want: BTreeSet<_> = expected.into_iter().collect();
        if got != want {
            failures.push(format!(
                "{}:\n  missing:    {:?}\n  unexpected: {:?}\n  all: {}",
                file.display(),
                want.difference(&got).collect::<Vec<_>>(),
                got.difference(&want).collect::<Vec<_>>(),
                report
                    .diagnostics
                    .iter()
                    .map(|d| format!("\n    {d}"))
                    .collect::<String>()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn five_mistakes_are_all_reported_at_once() {
    let file = repo().join("tests/policy_invalid_cases/five_mistakes.yaml");
    let report = load_policy_file(&file, &test_config()).unwrap_err();
    assert_eq!(report.diagnostics.len(), 5, "{report:#?}");
    let codes: BTreeSet<_> = report.diagnostics.iter().map(|d| d.code).collect();
    assert_eq!(codes.len(), 4, "four different codes among the five");
    // Sorted by location.
    let locs: Vec<Location> = report
        .diagnostics
        .iter()
        .map(|d| d.location.unwrap())
        .collect();
    let mut sorted = locs.clone();
    sorted.sort();
    assert_eq!(locs, sorted);
}

#[test]
fn locations_point_at_the_offending_value() {
    let text = "version: 1\nname: t\nruntime:\n  command: /bin/true\n  args: []\nmounts: []\nnetwork:\n  mode: allowlist\n  egress:\n    - { host: example.org, protocol: tcp, ports: [443] }\n    - { host: example.net, protocol: tcp, ports: [80, 70000] }\n";
    let report = validate_str(text, SourceFormat::Yaml, &fixtures(), &test_config()).unwrap_err();
    assert_eq!(report.diagnostics.len(), 1);
    let d = &report.diagnostics[0];
    assert_eq!(d.code, ErrorCode::PolicyInvalidNetworkRule);
    assert_eq!(d.path, "network.egress[1].ports[1]");
    assert_eq!(
        d.location,
        Some(Location {
            line: 11,
            column: 55
        })
    );
    assert_eq!(
        d.to_string(),
        "SR-POL-201 at network.egress[1].ports[1] (line 11, column 55): port 70000 is out of range\n  hint: use a port from 1 to 65535"
    );
}

#[test]
fn validation_result_json_shape() {
    let file = repo().join("tests/policy_invalid_cases/missing_args.yaml");
    let report = load_policy_file(&file, &test_config()).unwrap_err();
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["valid"], false);
    assert_eq!(json["policy"], file.display().to_string());
    assert_eq!(json["errors"][0]["code"], "SR-POL-001");
    assert_eq!(json["errors"][0]["path"], "runtime.args");
    assert!(json["errors"][0]["location"]["line"].is_u64());
    assert!(json["errors"][0]["hint"].is_string());
}

#[test]
fn oversized_input_is_refused_without_parsing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.yaml");
    let mut text = String::from("version: 1\nname: big\n# ");
    text.push_str(&"x".repeat(sr_policy::MAX_INPUT_BYTES));
    std::fs::write(&file, &text).unwrap();
    let report = load_policy_file(&file, &test_config()).unwrap_err();
    assert_eq!(found(&report), [("SR-POL-002".to_owned(), "$".to_owned())]);
    assert!(report.diagnostics[0].message.contains("1 MiB"));
    // The same limit applies to text handed over directly.
    let report = validate_str(&text, SourceFormat::Yaml, dir.path(), &test_config()).unwrap_err();
    assert_eq!(found(&report), [("SR-POL-002".to_owned(), "$".to_owned())]);
}

fn tmp_config(dir: &Path) -> OperatorConfig {
    OperatorConfig {
        allowed_mount_prefixes: vec![dir.canonicalize().unwrap().display().to_string()],
        ..OperatorConfig::default()
    }
}

#[test]
fn symlinked_mount_source_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("real")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("link")).unwrap();
    let text = "version: 1\nname: t\nruntime: { command: /bin/true, args: [] }\nmounts:\n  - { source: ./link, target: /data }\n  - { source: ./real, target: /real }\n";
    let report = validate_str(
        text,
        SourceFormat::Yaml,
        dir.path(),
        &tmp_config(dir.path()),
    )
    .unwrap_err();
    assert_eq!(
        found(&report),
        [("SR-POL-003".to_owned(), "mounts[0].source".to_owned())]
    );
    assert!(report.diagnostics[0].message.contains("symlink"));
}

#[test]
fn symlink_out_of_the_prefix_in_a_parent_is_caught_after_canonicalization() {
    let dir = tempfile::tempdir().unwrap();
    // allowed/escape -> /etc ; a source "allowed/escape/ssl" is not itself a symlink, but its
    // canonical path is outside the allowed prefix.
    std::fs::create_dir(dir.path().join("allowed")).unwrap();
    std::os::unix::fs::symlink("/etc", dir.path().join("allowed/escape")).unwrap();
    let config = tmp_config(&dir.path().join("allowed"));
    let text = "version: 1\nname: t\nruntime: { command: /bin/true, args: [] }\nmounts:\n  - { source: ./allowed/escape/., target: /data }\n";
    let report = validate_str(text, SourceFormat::Yaml, dir.path(), &config).unwrap_err();
    assert_eq!(
        found(&report),
        [("SR-POL-003".to_owned(), "mounts[0].source".to_owned())]
    );
    assert!(
        report.diagnostics[0].message.contains("outside"),
        "{report:#?}"
    );
}

#[test]
fn sources_resolve_to_canonical_absolute_paths() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
    std::fs::create_dir_all(dir.path().join("rootfs")).unwrap();
    let root = dir.path().canonicalize().unwrap();
    let text = format!(
        "version: 1\nname: t\nruntime: {{ command: /bin/true, args: [] }}\nrootfs: {{ source: {} }}\nmounts:\n  - {{ source: ./a/../a/b, target: /b }}\n",
        root.join("rootfs").display()
    );
    let v = validate_str(
        &text,
        SourceFormat::Yaml,
        dir.path(),
        &tmp_config(dir.path()),
    )
    .unwrap();
    assert_eq!(v.mount_sources, vec![root.join("a/b")]);
    assert_eq!(v.rootfs_dir, Some(root.join("rootfs")));
}

#[test]
fn writable_mounts_forbidden_by_the_operator() {
    let config = OperatorConfig {
        allow_writable_mounts: false,
        ..test_config()
    };
    let text = "version: 1\nname: t\nruntime: { command: /bin/true, args: [] }\nmounts:\n  - { source: ./cache, target: /cache, readOnly: false }\n";
    let report = validate_str(text, SourceFormat::Yaml, &fixtures(), &config).unwrap_err();
    assert_eq!(
        found(&report),
        [("SR-POL-003".to_owned(), "mounts[0].readOnly".to_owned())]
    );
}

#[test]
fn root_allowed_by_the_operator_still_refuses_writable_mounts() {
    let config = OperatorConfig {
        allow_root_in_sandbox: true,
        ..test_config()
    };
    let text = "version: 1\nname: t\nruntime: { command: /bin/true, args: [], user: { uid: 0, gid: 0 } }\nmounts:\n  - { source: ./data, target: /data }\n  - { source: ./cache, target: /cache, readOnly: false }\n";
    let report = validate_str(text, SourceFormat::Yaml, &fixtures(), &config).unwrap_err();
    assert_eq!(
        found(&report),
        [("SR-POL-003".to_owned(), "mounts[1].readOnly".to_owned())]
    );
    assert!(report.diagnostics[0].message.contains("C1"));
}

#[test]
fn canonical_policy_json_is_the_spec() {
    let v = load_policy_file(
        &repo().join("tests/policy_valid_cases/full_sandbox.yaml"),
        &test_config(),
    )
    .unwrap();
    assert_eq!(v.canonical, serde_json::to_value(&v.spec).unwrap());
    assert_eq!(v.canonical["resources"]["memory"], 256 << 20);
    let again = load_policy_file(
        &repo().join("tests/policy_valid_cases/full_sandbox.yaml"),
        &test_config(),
    )
    .unwrap();
    assert_eq!(v, again);
}

#[test]
fn schema_describes_every_field_and_accepts_the_valid_cases() {
    let schema = sr_policy::policy_schema();
    fn walk(v: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
        if let Some(props) = v.get("properties").and_then(|p| p.as_object()) {
            for (k, sub) in props {
                if sub.get("description").is_none() {
                    missing.push(format!("{path}.{k}"));
                }
                walk(sub, &format!("{path}.{k}"), missing);
            }
        }
        if let Some(items) = v.get("items") {
            walk(items, &format!("{path}[]"), missing);
        }
    }
    let mut missing = Vec::new();
    walk(schema, "", &mut missing);
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:?}"
    );
    assert_eq!(schema["additionalProperties"], false);
}

#[test]
fn diagnostics_are_deterministic() {
    let file = repo().join("tests/policy_invalid_cases/odd_paths.yaml");
    let a = load_policy_file(&file, &test_config()).unwrap_err();
    let b = load_policy_file(&file, &test_config()).unwrap_err();
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
}

fn valid_texts() -> Vec<String> {
    case_files("tests/policy_valid_cases")
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}", json in any::<bool>()) {
        let format = if json { SourceFormat::Json } else { SourceFormat::Yaml };
        let result = validate_str(&text, format, &fixtures(), &test_config());
        if let Err(report) = result {
            prop_assert!(!report.diagnostics.is_empty());
        }
    }

    #[test]
    fn mutated_valid_policies_never_panic(
        which in 0usize..64,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), prop::sample::select(vec![
            "", "\n", " ", ":", "- ", "[", "]", "{", "}", ",", "\"", "'", "&a ", "*a", "!!str ", "-1", "0",
            "70000", "1e400", ".nan", "..", "/", "\\0", "~", "? ", "|", ">", "#", "\t", "é", "\u{202e}",
        ])), 1..6),
    ) {
        let texts = valid_texts();
        let mut text = texts[which % texts.len()].clone();
        for (at, insert) in edits {
            let mut pos = at.index(text.len() + 1);
            while !text.is_char_boundary(pos) {
                pos -= 1;
            }
            text.insert_str(pos, insert);
        }
        for format in [SourceFormat::Yaml, SourceFormat::Json] {
            if let Err(report) = validate_str(&text, format, &fixtures(), &test_config()) {
                prop_assert!(report.diagnostics.iter().all(|d| d.location.is_some()));
            }
        }
    }
}

#[test]
fn hostile_documents_stay_fast_and_bounded() {
    // Many keys (each one unknown and reported), a huge list, too many mounts: near the 1 MiB
    // limit, each must be answered quickly (no quadratic step).
    let many_keys: String = (0..60_000).map(|i| format!("k{i}: 1\n")).collect();
    let huge_list = format!(
        "version: 1\nname: t\nruntime: {{ command: /bin/true, args: [{}] }}\nmounts: []\n",
        vec!["a"; 200_000].join(",")
    );
    let many_mounts = format!(
        "version: 1\nname: t\nruntime: {{ command: /bin/true, args: [] }}\nmounts:\n{}",
        (0..300)
            .map(|i| format!("  - {{ source: ./data, target: /m{i} }}\n"))
            .collect::<String>()
    );
    for (name, text, expect) in [
        ("many keys", many_keys, "SR-POL-002"),
        ("huge list", huge_list, ""),
        ("many mounts", many_mounts, "SR-POL-002"),
    ] {
        assert!(
            text.len() <= sr_policy::MAX_INPUT_BYTES,
            "{name}: {} bytes",
            text.len()
        );
        let start = std::time::Instant::now();
        let result = validate_str(&text, SourceFormat::Yaml, &fixtures(), &test_config());
        let elapsed = start.elapsed();
        assert!(elapsed.as_secs() < 20, "{name} took {elapsed:?}");
        match result {
            Ok(_) => assert!(expect.is_empty(), "{name} should be invalid"),
            Err(r) => assert!(
                r.diagnostics.iter().any(|d| d.code.as_str() == expect),
                "{name}: {:?}",
                r.diagnostics.first()
            ),
        }
        eprintln!("{name}: {} bytes in {elapsed:?}", text.len());
    }
}
