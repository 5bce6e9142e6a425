//! The spare run directory (docs/run.md, "The run directory"): a run claims the spare an
//! earlier run left, by rename, and its directory is the same as a created one; concurrent
//! runs each get their own; gc removes a spare whose refill died half way. Real sandbox, as
//! root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod run_support;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use run_support::*;
use serde_json::json;

/// The complete spares under the base (not the ones being built).
fn spares(env: &Env) -> BTreeSet<String> {
    std::fs::read_dir(env.base.join(".spare"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

/// Each entry of a run dir with its mode, owner, group and (for the files whose content
/// does not vary between runs of the same policy) size.
fn listing(dir: &Path) -> BTreeSet<(String, u32, u32, u32)> {
    let mut v = BTreeSet::new();
    let m = std::fs::metadata(dir).unwrap();
    v.insert((".".to_owned(), m.mode(), m.uid(), m.gid()));
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        v.insert((
            e.file_name().to_string_lossy().into_owned(),
            m.mode(),
            m.uid(),
            m.gid(),
        ));
    }
    v
}

/// The run dir that is new since `before`.
fn new_dir(env: &Env, before: &[PathBuf]) -> PathBuf {
    let now = env.run_dirs();
    let new: Vec<_> = now.iter().filter(|d| !before.contains(d)).collect();
    assert_eq!(new.len(), 1, "{new:?}");
    new[0].clone()
}

#[test]
fn a_run_claims_the_spare_the_previous_one_left_and_it_is_the_same_dir() {
    if !require_root("a_run_claims_the_spare_the_previous_one_left_and_it_is_the_same_dir") {
        return;
    }
    let env = Env::new();
    let p = env.policy("t", &sh("echo out; echo err >&2"));
    // The first run finds no spare: it creates its directory, and leaves a spare.
    let o = env.run(&p, &[]);
    assert!(o.status.success(), "{}", err(&o));
    let created = new_dir(&env, &[]);
    let left = spares(&env);
    assert_eq!(left.len(), 1, "{left:?}");
    // The second run claims it (it is gone, another one is there) and gets the same files,
    // modes and owners.
    let o = env.run(&p, &[]);
    assert!(o.status.success(), "{}", err(&o));
    let claimed = new_dir(&env, std::slice::from_ref(&created));
    let now = spares(&env);
    assert_eq!(now.len(), 1, "{now:?}");
    assert!(now.is_disjoint(&left), "the spare was not claimed: {now:?}");
    assert_eq!(listing(&created), listing(&claimed));
    for f in ["stdout.log", "stderr.log"] {
        assert_eq!(
            std::fs::read(created.join(f)).unwrap(),
            std::fs::read(claimed.join(f)).unwrap()
        );
    }
    // Its report verifies like any other.
    let o = env
        .cmd()
        .args(["report", "verify"])
        .arg(claimed.join("run_report.json"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
}

#[test]
fn a_json_policy_copy_and_a_run_that_never_starts_look_as_without_a_spare() {
    if !require_root("a_json_policy_copy_and_a_run_that_never_starts_look_as_without_a_spare") {
        return;
    }
    // A run whose command does not exist stops before its sandbox: without a spare, then
    // with one claimed.
    let missing = policy("/nonexistent/cmd", &[], json!({}));
    let fresh = Env::new();
    let p = fresh.policy("missing", &missing);
    let o = fresh.run(&p, &[]);
    assert!(!o.status.success());
    let without = listing(&new_dir(&fresh, &[]));

    let env = Env::new();
    let ok = env.policy("ok", &sh("true"));
    assert!(env.run(&ok, &[]).status.success());
    let first = env.run_dirs();
    assert_eq!(spares(&env).len(), 1);
    let p = env.policy("missing", &missing);
    let o = env.run(&p, &[]);
    assert!(!o.status.success());
    let with = listing(&new_dir(&env, &first));
    assert_eq!(without, with);
    // The policies here are .json: the spare's policy.yaml became policy.json.
    assert!(with.iter().any(|(n, ..)| n == "policy.json"), "{with:?}");
    assert!(!with.iter().any(|(n, ..)| n == "policy.yaml"), "{with:?}");
}

#[test]
fn parallel_runs_each_get_their_own_dir_and_a_later_run_claims_a_refilled_spare() {
    if !require_root("parallel_runs_each_get_their_own_dir_and_a_later_run_claims_a_refilled_spare")
    {
        return;
    }
    let env = Env::new();
    let p = env.policy("t", &sh("echo $$"));
    assert!(env.run(&p, &[]).status.success());
    assert_eq!(spares(&env).len(), 1);
    // Four at once: at most one can claim the spare, the others create their directories.
    let children: Vec<_> = (0..4)
        .map(|_| {
            env.run_cmd(&p)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", err(&o));
    }
    let dirs = env.run_dirs();
    assert_eq!(dirs.len(), 5, "{dirs:?}");
    for d in &dirs {
        assert!(d.join("run_report.json").exists(), "{}", d.display());
        assert!(!d.join("recovered.json").exists(), "{}", d.display());
    }
    // Refilled (runs that saw no other spare each made one); the next run claims one.
    let before = spares(&env);
    assert!(!before.is_empty());
    assert!(env.run(&p, &[]).status.success());
    let after = spares(&env);
    assert!(
        !before.is_subset(&after),
        "no spare was claimed: {before:?} -> {after:?}"
    );
    assert_eq!(env.run_dirs().len(), 6);
}

#[test]
fn gc_removes_a_spare_whose_refill_died_and_keeps_complete_ones() {
    if !require_root("gc_removes_a_spare_whose_refill_died_and_keeps_complete_ones") {
        return;
    }
    let env = Env::new();
    let p = env.policy("t", &sh("true"));
    assert!(env.run(&p, &[]).status.success());
    let complete = spares(&env);
    assert_eq!(complete.len(), 1);
    // What a refill killed half way leaves: its build directory, unlocked, partly filled.
    let dead = env.base.join(".spare").join(".new-0123456789ab");
    std::fs::create_dir(&dead).unwrap();
    std::fs::write(dead.join("run.lock"), "").unwrap();
    std::fs::write(dead.join("bundle.json"), "").unwrap();
    let o = env.cmd().arg("gc").output().unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert!(!dead.exists());
    assert_eq!(spares(&env), complete);
    // The quick gc before a run does it too, and a half-built spare is never claimed.
    std::fs::create_dir(&dead).unwrap();
    std::fs::write(dead.join("run.lock"), "").unwrap();
    assert!(env.run(&p, &[]).status.success());
    assert!(!dead.exists());
}
