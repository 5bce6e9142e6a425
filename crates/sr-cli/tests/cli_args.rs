//! The command line without a sandbox run: argument styles, `init`, precise errors for a
//! missing policy or a relative command, `--result` and `--format json` on early failures,
//! validation warnings and hints, and usage errors of `report verify`. No root needed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod run_support;

use std::os::unix::fs::PermissionsExt;

use run_support::*;
use serde_json::{Value, json};

#[test]
fn a_missing_or_unreadable_policy_file_is_sr_pol_004_with_path_and_os_error() {
    let env = Env::new();
    let missing = env.dir.path().join("nope.yaml");
    for args in [
        vec!["validate".to_owned(), missing.display().to_string()],
        vec![
            "run".to_owned(),
            "--policy".to_owned(),
            missing.display().to_string(),
        ],
        vec![
            "compile".to_owned(),
            "--dry-run".to_owned(),
            missing.display().to_string(),
        ],
    ] {
        let o = env.cmd().args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(3), "{args:?}: {}", err(&o));
        assert!(err(&o).contains("SR-POL-004"), "{args:?}: {}", err(&o));
        assert!(!err(&o).contains("SR-POL-002"), "{}", err(&o));
        assert!(
            err(&o).contains(&missing.display().to_string()),
            "{}",
            err(&o)
        );
        assert!(err(&o).contains("No such file or directory"), "{}", err(&o));
    }
    // A directory is not a policy file either.
    let o = env
        .cmd()
        .arg("validate")
        .arg(env.dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    assert!(err(&o).contains("SR-POL-004"), "{}", err(&o));
    assert!(env.run_dirs().is_empty());
}

#[test]
fn a_relative_command_is_refused_before_any_run_dir_exists() {
    let env = Env::new();
    let p = env.policy("rel", &policy("/bin/true", &[], json!({})));
    let result = env.dir.path().join("result.json");
    let o = env
        .run_cmd(&p)
        .arg("--result")
        .arg(&result)
        .args(["--", "python3", "-c", "print(1)"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    assert!(
        err(&o).contains("SR-POL-002 at runtime.command"),
        "{}",
        err(&o)
    );
    assert!(err(&o).contains("/usr/bin/python3"), "{}", err(&o));
    assert!(!env.base.exists() || env.run_dirs().is_empty());
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&result).unwrap()).unwrap();
    assert_eq!(r["status"], "invalidPolicy");
    assert_eq!(r["exitCode"], 3);
    assert_eq!(r["runId"], Value::Null);
}

#[test]
fn validate_and_compile_take_the_policy_positionally_or_with_policy() {
    let env = Env::new();
    let p = env.policy("both", &policy("/bin/true", &[], json!({})));
    let ok = |args: &[&str]| {
        let o = env.cmd().args(args).arg(&p).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", err(&o));
        o
    };
    ok(&["validate"]);
    ok(&["validate", "--policy"]);
    let a = ok(&["compile", "--dry-run"]);
    let b = ok(&["compile", "--dry-run", "--policy"]);
    assert_eq!(a.stdout, b.stdout);
    // Two different policies are a usage error.
    let o = env
        .cmd()
        .arg("validate")
        .arg(&p)
        .arg("--policy")
        .arg(env.dir.path().join("other.yaml"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
}

#[test]
fn run_accepts_a_positional_policy_only_when_it_is_a_policy_file() {
    let env = Env::new();
    let o = env.cmd().args(["run", "python3"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("after `--`"), "{}", err(&o));
    let o = env.cmd().arg("run").output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(env.run_dirs().is_empty());
}

#[test]
fn init_writes_a_starter_policy_that_validates_and_never_clobbers() {
    let env = Env::new();
    let f = env.dir.path().join("starter.yaml");
    let o = env.cmd().arg("init").arg(&f).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let text = std::fs::read_to_string(&f).unwrap();
    assert!(text.starts_with('#'), "commented: {text}");
    let o = env.cmd().arg("validate").arg(&f).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    std::fs::write(&f, "mine").unwrap();
    let o = env.cmd().arg("init").arg(&f).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("--force"), "{}", err(&o));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "mine");
    let o = env
        .cmd()
        .arg("init")
        .arg(&f)
        .arg("--force")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), text);
}

#[test]
fn run_results_and_json_messages_never_go_to_stdout() {
    let env = Env::new();
    let bad = env.policy("bad", &json!({"version": 1, "name": "x"}));
    let result = env.dir.path().join("r.json");
    let o = env
        .run_cmd(&bad)
        .args(["--format", "json", "--result"])
        .arg(&result)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    assert!(o.stdout.is_empty(), "stdout: {}", out(&o));
    let line: Value = serde_json::from_str(err(&o).trim()).unwrap();
    assert_eq!(line["status"], "invalidPolicy");
    assert_eq!(line["diagnostics"][0]["code"], "SR-POL-001");
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&result).unwrap()).unwrap();
    assert_eq!(file, line);
    assert_eq!(file["schema"], "safe-run.run-result/v1");
}

#[test]
fn a_writable_mount_the_workload_cannot_write_gets_a_precise_warning() {
    let env = Env::new();
    let results = env.share().join("results");
    std::fs::create_dir(&results).unwrap();
    std::fs::set_permissions(&results, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut p = policy("/bin/true", &[], json!({}));
    merge(
        &mut p,
        json!({"mounts": [{"source": results, "target": "/results", "readOnly": false}]}),
    );
    let p = env.policy("rw", &p);
    let o = env.cmd().arg("validate").arg(&p).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let e = err(&o);
    assert!(e.contains("warning: SR-POL-003 at mounts[0].source"), "{e}");
    assert!(
        e.contains("not writable by the workload's host uid 65534"),
        "{e}"
    );
    assert!(e.contains("chown 65534:65534"), "{e}");
    let o = env
        .cmd()
        .args(["validate", "--format", "json"])
        .arg(&p)
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["valid"], true);
    assert_eq!(doc["warnings"][0]["path"], "mounts[0].source");
    // World-writable (or owned by 65534): no warning.
    std::fs::set_permissions(&results, std::fs::Permissions::from_mode(0o777)).unwrap();
    let o = env.cmd().arg("validate").arg(&p).output().unwrap();
    assert!(!err(&o).contains("warning"), "{}", err(&o));
}

#[test]
fn etc_and_home_sources_get_hints_that_say_what_to_do() {
    let env = Env::new();
    let mut p = policy("/bin/true", &[], json!({}));
    merge(
        &mut p,
        json!({"mounts": [
            {"source": "/etc", "target": "/cfg"},
            {"source": "/root", "target": "/home"}
        ]}),
    );
    let p = env.policy("hints", &p);
    let o = env.cmd().arg("validate").arg(&p).output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    let e = err(&o);
    assert!(e.contains("already visible read-only"), "{e}");
    assert!(
        e.contains("home directories are not mountable by default"),
        "{e}"
    );
    assert!(e.contains("allowedMountPrefixes"), "{e}");
}

#[test]
fn report_verify_usage_errors_exit_2_and_do_not_read_as_tampering() {
    let env = Env::new();
    let notes = env.dir.path().join("notes.txt");
    std::fs::write(&notes, "hello").unwrap();
    let empty = env.dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let missing = env.dir.path().join("missing/run_report.json");
    for target in [&notes, &empty, &missing] {
        let o = env
            .cmd()
            .args(["report", "verify"])
            .arg(target)
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(2),
            "{}: {}",
            target.display(),
            err(&o)
        );
        let all = format!("{}{}", out(&o), err(&o));
        assert!(!all.contains("verification failed"), "{all}");
        assert!(!all.contains("was changed"), "{all}");
        assert!(all.contains("usage error"), "{all}");
    }
    // A run id that does not exist under the run directory base.
    let o = env
        .cmd()
        .args(["report", "verify", "0123456789ab"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("no run with that id"), "{}", err(&o));
    // A --key that is not a key.
    std::fs::create_dir_all(empty.join("r")).unwrap();
    std::fs::write(
        empty.join("r/run_report.json"),
        r#"{"schemaVersion":"1","run":{}}"#,
    )
    .unwrap();
    let o = env
        .cmd()
        .args(["report", "verify"])
        .arg(empty.join("r"))
        .arg("--key")
        .arg(&notes)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
}

/// `compile --dry-run` of `policy`, as JSON, with `extra` arguments.
fn compiled(env: &Env, policy: &std::path::Path, extra: &[&str]) -> Value {
    let o = env
        .cmd()
        .args(["compile", "--dry-run"])
        .arg(policy)
        .args(extra)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{extra:?}: {}", err(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The top-level members in which `a` and `b` differ, sorted.
fn differing(a: &Value, b: &Value) -> Vec<String> {
    let (a, b) = (a.as_object().unwrap(), b.as_object().unwrap());
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[test]
fn compile_with_backend_differs_only_in_the_plan_and_the_recorded_override() {
    let env = Env::new();
    let base = policy(
        "/bin/true",
        &[],
        json!({"resources": {"cpus": 1, "memory": "256Mi"}}),
    );
    let p = env.policy("both", &base);
    let as_written = compiled(&env, &p, &[]);
    let by_flag = compiled(&env, &p, &["--backend", "microvm"]);
    assert_eq!(
        differing(&as_written, &by_flag),
        ["backend", "cgroupPlan", "policyOverrides"],
        "only the boundary, the VMM's cgroup and the record of the override change"
    );
    assert_eq!(
        by_flag["policyOverrides"],
        json!({"runtime.backend": "microvm"})
    );
    assert_eq!(by_flag["backend"]["kind"], "qemu");
    assert_eq!(as_written["policyDigest"], by_flag["policyDigest"]);
    // Exactly the plan of a file that says `backend: microvm`; only the digest (of another
    // file) and the record of the override differ.
    let mut says_microvm = base.clone();
    merge(
        &mut says_microvm,
        json!({"runtime": {"backend": "microvm"}}),
    );
    let by_file = compiled(&env, &env.policy("microvm", &says_microvm), &[]);
    assert_eq!(
        differing(&by_file, &by_flag),
        ["policyDigest", "policyOverrides"]
    );
    // Overriding with the policy's own backend changes nothing but the record.
    let same = compiled(&env, &p, &["--backend", "sandbox"]);
    assert_eq!(differing(&as_written, &same), ["policyOverrides"]);
    // `validate` says where the backend came from.
    let o = env
        .cmd()
        .arg("validate")
        .arg(&p)
        .args(["--backend", "microvm"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(
        out(&o).contains("backend microvm from --backend"),
        "{}",
        out(&o)
    );
}

#[test]
fn an_override_the_policy_does_not_hold_for_is_an_error_naming_it_on_every_command() {
    let env = Env::new();
    // Valid for the sandbox; Firecracker refuses host directories (C8) and needs artifacts.
    let p = env.policy(
        "fc",
        &policy(
            "/bin/true",
            &[],
            json!({"mounts": [{"source": env.share(), "target": "/data"}]}),
        ),
    );
    let result = env.dir.path().join("result.json");
    for command in [
        vec!["validate"],
        vec!["compile", "--dry-run"],
        vec!["run", "--result", result.to_str().unwrap(), "--policy"],
    ] {
        let o = env
            .cmd()
            .args(&command)
            .arg(&p)
            .args(["--backend", "firecracker"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(3), "{command:?}: {}", err(&o));
        let e = err(&o);
        assert!(
            e.contains("SR-POL-003 at runtime.backend")
                && e.contains("`--backend firecracker` replaces runtime.backend"),
            "{command:?}: {e}"
        );
        assert!(
            e.contains("SR-POL-003 at mounts") && e.contains("combination C8"),
            "{e}"
        );
        assert!(e.contains("run without `--backend firecracker`"), "{e}");
    }
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&result).unwrap()).unwrap();
    assert_eq!(r["status"], "invalidPolicy");
    assert!(!env.base.exists() || env.run_dirs().is_empty(), "no run");
    // Without the override the same file is valid.
    let o = env.cmd().arg("validate").arg(&p).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
}

#[test]
fn backend_takes_only_the_policys_backends() {
    let env = Env::new();
    let p = env.policy("p", &policy("/bin/true", &[], json!({})));
    for command in [vec!["validate"], vec!["compile", "--dry-run"], vec!["run"]] {
        let o = env
            .cmd()
            .args(&command)
            .arg(&p)
            .args(["--backend", "kvm"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{command:?}: {}", err(&o));
        assert!(
            err(&o).contains("[possible values: sandbox, microvm, firecracker]"),
            "{}",
            err(&o)
        );
    }
    let o = env.cmd().args(["run", "--help"]).output().unwrap();
    assert!(
        out(&o).contains("--backend <BACKEND>") && out(&o).contains("policy.overrides"),
        "{}",
        out(&o)
    );
}

#[test]
fn the_memory_copier_writes_nothing_without_its_go_and_refuses_bad_arguments() {
    let env = Env::new();
    let image = env.dir.path().join("memory.bin");
    let size = 4 * 4096u64;
    let mut bytes = vec![0u8; size as usize];
    bytes[4096..8192].fill(7);
    std::fs::write(&image, &bytes).unwrap();
    let copier = |args: &[&str], stdin: &[u8]| {
        use std::io::Write;
        let mut child = env
            .cmd()
            .arg("__copy-guest-memory")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(stdin);
        child.wait_with_output().unwrap()
    };
    let path = image.display().to_string();
    let o = copier(&[&path], b"g");
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("usage"), "{}", err(&o));
    let o = copier(&[&path, "-1"], b"g");
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    // No go (the runner could not put it in the run's cgroup): nothing is touched.
    let o = copier(&[&path, &size.to_string()], b"");
    assert_eq!(o.status.code(), Some(3), "{}", err(&o));
    assert!(o.stdout.is_empty());
    // Its descriptor 3 is not there: refused, never a panic.
    let o = copier(&[&path, &size.to_string()], b"g");
    assert_eq!(o.status.code(), Some(4), "{}", err(&o));
    assert!(o.stdout.is_empty());
}
