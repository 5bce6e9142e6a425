//! A third party verifies a real report with only the public key (issue 14 item 2): the run
//! directory is copied elsewhere (no host files), then checked by `safe-run report verify`
//! and by tests/independent_verifier/verify_report.py, which shares no code with the Rust
//! verifier. Real sandbox, as root; the Python side runs from the repo's `.venv/`
//! (scripts/setup.sh creates it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod run_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use run_support::*;
use serde_json::{Value, json};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `.venv/bin/python` of the repo, with `cryptography` importable. Missing: a failure under
/// CI=true, else a visible skip.
fn venv_python(test: &str) -> Option<PathBuf> {
    let python = repo_root().join(".venv/bin/python");
    let usable = Command::new(&python)
        .args(["-c", "import cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    if usable {
        return Some(python);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "{test}: {} cannot import cryptography (CI=true, so this is a failure; run scripts/setup.sh)",
            python.display()
        );
    }
    eprintln!(
        "SKIPPED: {test} needs {} with cryptography (run scripts/setup.sh)",
        python.display()
    );
    None
}

fn python_verify(python: &Path, report: &Path, key: &Path) -> std::process::Output {
    Command::new(python)
        .arg(repo_root().join("tests/independent_verifier/verify_report.py"))
        .arg(report)
        .arg("--key")
        .arg(key)
        .output()
        .unwrap()
}

#[test]
fn a_copied_report_verifies_with_only_the_public_key_in_rust_and_python() {
    let test = "a_copied_report_verifies_with_only_the_public_key_in_rust_and_python";
    if !require_root(test) {
        return;
    }
    let Some(python) = venv_python(test) else {
        return;
    };
    let env = Env::new();
    let key = env.dir.path().join("keys/signing.key");
    // A workload that writes to a writable mount, so the report has every section.
    let work = env.share().join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::set_permissions(&work, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let mut p = sh("echo out; echo err >&2; echo result > /work/result.txt");
    merge(
        &mut p,
        json!({
            "evidence": {"sign": true},
            "mounts": [{"source": work, "target": "/work", "readOnly": false}],
        }),
    );
    let p = env.policy("signed", &p);
    let o = env.run_cmd(&p).env("SAFE_RUN_KEY", &key).output().unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let run_dir = env.run_dirs()[0].clone();

    let public = env.dir.path().join("signer.pub");
    let o = env
        .cmd()
        .args(["key", "export-public", "--out"])
        .arg(&public)
        .env("SAFE_RUN_KEY", &key)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));

    // What a third party receives: the run directory's evidence, nothing of the host.
    let elsewhere = env.dir.path().join("received");
    std::fs::create_dir_all(&elsewhere).unwrap();
    for f in [
        "run_report.json",
        "events.jsonl",
        "stdout.log",
        "stderr.log",
    ] {
        std::fs::copy(run_dir.join(f), elsewhere.join(f)).unwrap();
    }
    let report = elsewhere.join("run_report.json");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert!(
        r["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["role"] == "binary"),
        "{r:#}"
    );

    let o = env
        .cmd()
        .args(["report", "verify", "--format", "json", "--key"])
        .arg(&public)
        .arg(&report)
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(o.status.success(), "{doc:#}");
    let checks = doc["checks"].as_array().unwrap();
    for c in checks {
        let name = c["name"].as_str().unwrap();
        if name.starts_with("input:") {
            assert_eq!(c["status"], "not_requested", "{c}");
        }
    }

    let o = python_verify(&python, &report, &public);
    assert!(o.status.success(), "{}\n{}", out(&o), err(&o));
    let text = out(&o);
    assert!(text.contains("PASS  signature"), "{text}");
    assert!(text.contains("PASS  events.head"), "{text}");
    assert!(text.contains("PASS  output:stdout"), "{text}");
    assert!(
        text.contains("PASS  activity  1 execs, 0 transfers"),
        "{text}"
    );
    // The writable mount's manifest (what the workload wrote), recomputed independently.
    assert!(text.contains("PASS  mount:/work"), "{text}");
    assert_eq!(
        r["mounts"]["manifests"][0]["entries"][0]["path"],
        "result.txt"
    );
    assert!(text.trim_end().ends_with("VERIFIED"), "{text}");

    // The independent verifier can fail: another key, and one changed byte of the log.
    let other = env.dir.path().join("other.pub");
    let other_key = env.dir.path().join("keys/other.key");
    let o = env
        .cmd()
        .args(["key", "export-public", "--key"])
        .arg(&other_key)
        .arg("--out")
        .arg(&other)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        python_verify(&python, &report, &other).status.code(),
        Some(1)
    );
    let events = elsewhere.join("events.jsonl");
    let mut bytes = std::fs::read(&events).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&events, &bytes).unwrap();
    assert_eq!(
        python_verify(&python, &report, &public).status.code(),
        Some(1)
    );
}

/// The Python verifier's own unit tests (tests/independent_verifier/test_*.py).
#[test]
fn the_python_verifiers_unit_tests_pass() {
    let Some(python) = venv_python("the_python_verifiers_unit_tests_pass") else {
        return;
    };
    let o = Command::new(python)
        .args(["-m", "unittest", "discover", "-s"])
        .arg(repo_root().join("tests/independent_verifier"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
