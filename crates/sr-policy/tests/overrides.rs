//! Policy overrides (`--backend`) through the whole validation: every backend rule judges the
//! overridden policy as if the file said it, a problem only the override causes names
//! `runtime.backend` and the origin, the schema still checks the file as written, and the
//! policy's canonical form (its digest) stays the file's.

// Helpers panic on broken fixtures: in a test, that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use sr_common::ErrorCode;
use sr_policy::model::Backend;
use sr_policy::rules::RealFs;
use sr_policy::{
    OperatorConfig, PolicyOverrides, SourceFormat, ValidatedPolicy, ValidationReport,
    validate_with_overrides,
};

const SANDBOX: &str = "\
version: 1
name: both
runtime:
  command: /bin/true
  args: []
mounts: []
";

fn validate(text: &str, overrides: PolicyOverrides) -> Result<ValidatedPolicy, ValidationReport> {
    validate_with_overrides(
        text,
        SourceFormat::Yaml,
        Path::new("/"),
        &OperatorConfig::default(),
        &RealFs,
        &overrides,
    )
}

fn backend(b: Backend) -> PolicyOverrides {
    PolicyOverrides::backend(b, "--backend")
}

fn paths(report: &ValidationReport) -> Vec<(ErrorCode, &str)> {
    report
        .diagnostics
        .iter()
        .map(|d| (d.code, d.path.as_str()))
        .collect()
}

#[test]
fn an_override_changes_the_policy_in_force_but_not_its_digest_input() {
    let written = validate(SANDBOX, PolicyOverrides::none()).unwrap();
    let v = validate(SANDBOX, backend(Backend::Microvm)).unwrap();
    assert_eq!(v.spec.backend(), Backend::Microvm);
    assert_eq!(v.overrides, backend(Backend::Microvm));
    assert_eq!(v.canonical, written.canonical, "the digest names the file");
    assert_eq!(written.spec.backend(), Backend::Sandbox);
    assert!(written.overrides.is_empty());
}

#[test]
fn an_override_equal_to_the_file_is_still_recorded() {
    let text = SANDBOX.replace("  command:", "  backend: microvm\n  command:");
    let v = validate(&text, backend(Backend::Microvm)).unwrap();
    assert_eq!(v.overrides, backend(Backend::Microvm));
    assert_eq!(v.spec.backend(), Backend::Microvm);
}

#[test]
fn firecracker_rules_refuse_an_override_and_name_it() {
    // Valid for the sandbox; Firecracker needs artifacts and shares no host directory (C8),
    // and a microVM needs whole vCPUs.
    let text = "\
version: 1
name: fc
runtime:
  backend: sandbox
  command: /bin/true
  args: []
mounts: [{ source: /tmp, target: /data }]
resources: { cpus: 0.5 }
";
    validate(text, PolicyOverrides::none()).unwrap();
    let report = validate(text, backend(Backend::Firecracker)).unwrap_err();
    assert_eq!(
        paths(&report),
        [
            (ErrorCode::PolicyMissingField, "artifacts"),
            (ErrorCode::PolicySemanticConflict, "runtime.backend"),
            (ErrorCode::PolicySemanticConflict, "mounts"),
            (ErrorCode::PolicySemanticConflict, "resources.cpus"),
        ],
        "{report:#?}"
    );
    for d in &report.diagnostics {
        assert!(
            d.message.contains("--backend firecracker"),
            "every problem says the value came from --backend: {d}"
        );
        assert!(!d.hint.is_empty());
    }
    let summary = &report.diagnostics[1];
    assert!(
        summary.message.contains("the policy says sandbox"),
        "{summary}"
    );
    assert!(
        summary
            .message
            .ends_with("see artifacts, mounts, resources.cpus"),
        "{summary}"
    );
    assert_eq!(summary.location.map(|l| (l.line, l.column)), Some((4, 12)));
    assert!(summary.hint.contains("run without `--backend firecracker`"));
}

#[test]
fn an_override_can_make_a_policy_hold_that_its_own_backend_refuses() {
    let text = "\
version: 1
name: fc
runtime: { backend: firecracker, command: /bin/true, args: [] }
mounts: []
";
    // Without artifacts the file is invalid as written; for the QEMU microVM (operator
    // artifacts) and for the sandbox it holds.
    let report = validate(text, PolicyOverrides::none()).unwrap_err();
    assert_eq!(
        paths(&report),
        [(ErrorCode::PolicyMissingField, "artifacts")]
    );
    assert_eq!(
        validate(text, backend(Backend::Microvm))
            .unwrap()
            .spec
            .backend(),
        Backend::Microvm
    );
    validate(text, backend(Backend::Sandbox)).unwrap();
}

#[test]
fn a_problem_of_the_file_itself_is_not_blamed_on_the_override() {
    let text = "\
version: 1
name: fc
runtime: { command: /bin/true, args: [], cwd: relative }
mounts: []
rootfs: { source: host }
";
    let report = validate(text, backend(Backend::Microvm)).unwrap_err();
    let cwd = report
        .diagnostics
        .iter()
        .find(|d| d.path == "runtime.cwd")
        .unwrap();
    assert!(!cwd.message.contains("--backend"), "{cwd}");
    // C6: the host rootfs cannot be a microVM's disk: the override's doing.
    let rootfs = report
        .diagnostics
        .iter()
        .find(|d| d.path == "rootfs.source")
        .unwrap();
    assert!(rootfs.message.contains("--backend microvm"), "{rootfs}");
    let summary = report
        .diagnostics
        .iter()
        .find(|d| d.path == "runtime.backend")
        .unwrap();
    assert!(
        summary
            .message
            .contains("leaves it at its default, sandbox"),
        "{summary}"
    );
    assert!(
        summary.hint.starts_with("give another backend"),
        "{summary}"
    );
}

#[test]
fn the_schema_still_checks_the_file_as_written() {
    // An override replaces a value; it never makes a malformed file acceptable.
    let bad_backend = SANDBOX.replace("  command:", "  backend: kvm\n  command:");
    let report = validate(&bad_backend, backend(Backend::Microvm)).unwrap_err();
    assert_eq!(
        paths(&report),
        [(ErrorCode::PolicyBadFormat, "runtime.backend")]
    );
    let unknown = format!("{SANDBOX}colour: blue\n");
    let report = validate(&unknown, backend(Backend::Microvm)).unwrap_err();
    assert_eq!(paths(&report), [(ErrorCode::PolicyBadFormat, "colour")]);
}
