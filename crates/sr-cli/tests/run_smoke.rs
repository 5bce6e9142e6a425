//! `safe-run run` end to end: output capture, exit codes, the report. Real sandbox, as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod run_support;

use run_support::*;
use serde_json::json;

#[test]
fn echo_stdout_stderr_and_exit_code() {
    if !require_root("echo_stdout_stderr_and_exit_code") {
        return;
    }
    let env = Env::new();
    let p = env.policy("echo", &sh("echo out-line; echo err-line >&2; exit 7"));
    let o = env.run(&p, &[]);
    assert_eq!(o.status.code(), Some(7), "{}", err(&o));
    assert_eq!(out(&o), "out-line\n");
    assert!(err(&o).contains("err-line\n"));
    let dir = &env.run_dirs()[0];
    assert_eq!(
        std::fs::read_to_string(dir.join("stdout.log")).unwrap(),
        "out-line\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("stderr.log")).unwrap(),
        "err-line\n"
    );
}

#[test]
fn true_false_and_command_override() {
    if !require_root("true_false_and_command_override") {
        return;
    }
    let env = Env::new();
    let p = env.policy("t", &policy("/bin/true", &[], json!({})));
    assert_eq!(env.run(&p, &[]).status.code(), Some(0));
    assert_eq!(env.run(&p, &["/bin/false"]).status.code(), Some(1));
    let o = env.run(&p, &["/bin/echo", "hi", "there"]);
    assert_eq!(out(&o), "hi there\n");
    // A relative command is an invalid policy, refused before any run dir exists.
    let o = env.run(&p, &["echo", "relative"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(err(&o).contains("not an absolute"), "{}", err(&o));
}

#[test]
fn report_is_written_with_the_run_facts() {
    if !require_root("report_is_written_with_the_run_facts") {
        return;
    }
    let env = Env::new();
    let p = env.policy("rep", &sh("echo hello"));
    let o = env.run(&p, &[]);
    assert!(o.status.success(), "{}", err(&o));
    let r = env.report();
    let dir = &env.run_dirs()[0];
    // The signed run report v1 (docs/evidence.md).
    assert_eq!(r["run"]["id"], run_id(dir));
    assert_eq!(r["run"]["backend"], "sandbox");
    assert!(r["run"]["durationMs"].as_u64().is_some());
    assert!(
        r["policy"]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(r["exit"]["status"], "exited");
    assert_eq!(r["exit"]["code"], 0);
    // Limits actually written (v1 or v2 names).
    let e = &r["enforcement"];
    let limits = e["cgroup"]["limits"].as_object().unwrap();
    assert!(limits.contains_key("pids.max"), "{limits:?}");
    assert!(limits.contains_key("memory.max") || limits.contains_key("memory.limit_in_bytes"));
    assert_eq!(e["user"]["uid"], 1000);
    assert_eq!(e["user"]["hostUid"], 65534);
    assert_eq!(e["noNewPrivs"], true);
    assert_eq!(e["capabilities"], json!([]));
    assert_eq!(e["namespaces"].as_array().unwrap().len(), 7);
    assert!(
        e["seccomp"]["filterDigest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(e["landlock"]["status"], "fully_enforced");
    let stdout = r["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "stdout")
        .unwrap();
    assert_eq!(stdout["bytes"], 6);
    assert_eq!(r["cleanup"]["errors"], json!([]));
    for ty in [
        "run.prepare",
        "policy.compiled",
        "sandbox.enforced",
        "process.started",
        "process.exited",
        "cleanup.done",
    ] {
        assert!(has_event(dir, ty), "no {ty} event");
    }
    assert!(dir.join("bundle.json").exists());
}

#[test]
fn a_rootfs_directory_becomes_the_read_only_root() {
    if !require_root("a_rootfs_directory_becomes_the_read_only_root") {
        return;
    }
    let env = Env::new();
    // A minimal root: /bin/sh and /bin/cat with their libraries, and the mount points.
    let root = env.share().join("rootfs");
    for d in ["bin", "tmp", "proc", "dev", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("etc/marker"), "from the rootfs\n").unwrap();
    let ldd = std::process::Command::new("ldd")
        .args(["/bin/sh", "/bin/cat"])
        .output()
        .unwrap();
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/') && !w.ends_with(':'))
    {
        let to = root.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(lib, &to).unwrap();
    }
    for b in ["sh", "cat"] {
        std::fs::copy(format!("/bin/{b}"), root.join("bin").join(b)).unwrap();
    }
    let mut p = policy(
        "/bin/sh",
        &[
            "-c",
            "cat /etc/marker; test -e /usr/bin/python3 && echo HOST-VISIBLE; (echo x > /etc/y) 2>/dev/null && echo WROTE; echo ok > /tmp/t && cat /tmp/t",
        ],
        json!({}),
    );
    merge(&mut p, json!({"rootfs": {"source": root}}));
    let p = env.policy("rootfs", &p);
    let o = env.run(&p, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(out(&o), "from the rootfs\nok\n", "{}", err(&o));
}

#[test]
fn workload_starts_with_default_signal_dispositions() {
    if !require_root("workload_starts_with_default_signal_dispositions") {
        return;
    }
    // The init is a Rust program (SIGPIPE ignored); ignored signals survive exec, so the
    // workload must get them reset or `producer | head` never ends by SIGPIPE.
    let env = Env::new();
    let p = env.policy(
        "sig",
        &policy(
            "/bin/grep",
            &["-E", "^Sig(Ign|Blk)", "/proc/self/status"],
            json!({}),
        ),
    );
    let o = env.run(&p, &[]);
    assert_eq!(
        out(&o),
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n",
        "{}",
        err(&o)
    );
}

/// The children of host process `pid`, from every one of its threads (the spawner thread
/// forks the init).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
    {
        let path = task.unwrap().path().join("children");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        out.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    out
}

#[test]
fn the_small_init_binary_beside_safe_run_is_the_init() {
    if !require_root("the_small_init_binary_beside_safe_run_is_the_init") {
        return;
    }
    let init = std::path::Path::new(bin()).with_file_name("safe-run-init");
    assert!(
        init.is_file(),
        "cargo builds {} with safe-run",
        init.display()
    );
    let env = Env::new();
    let p = env.policy("init", &sh("sleep 30"));
    let mut child = env
        .run_cmd(&p)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut exe = None;
    assert!(wait_for(20, || {
        exe = children(child.id())
            .into_iter()
            .find_map(|c| std::fs::read_link(format!("/proc/{c}/exe")).ok());
        exe.is_some()
    }));
    signal(child.id(), "TERM");
    let _ = child.wait();
    assert_eq!(exe.unwrap(), init.canonicalize().unwrap());
}

#[test]
fn the_binary_digest_is_reused_for_an_unchanged_file_and_stays_verifiable() {
    if !require_root("the_binary_digest_is_reused_for_an_unchanged_file_and_stays_verifiable") {
        return;
    }
    let env = Env::new();
    // /bin/true has not changed for far longer than the cache's settle time.
    let p = env.policy("cache", &policy("/bin/true", &[], json!({})));
    let binary_event = |dir: &std::path::Path| {
        events_of(dir, "artifact.hashed")
            .into_iter()
            .find(|e| e["payload"]["role"] == "binary")
            .unwrap()
    };
    assert!(env.run(&p, &[]).status.success());
    let first = env.run_dirs();
    assert!(env.run(&p, &[]).status.success());
    let second: Vec<_> = env
        .run_dirs()
        .into_iter()
        .filter(|d| !first.contains(d))
        .collect();
    let (a, b) = (binary_event(&first[0]), binary_event(&second[0]));
    assert_eq!(a["payload"].get("fromCache"), None, "{a}");
    assert_eq!(b["payload"]["fromCache"], true, "{b}");
    let host = b["payload"]["path"].as_str().unwrap();
    assert_eq!(a["payload"]["digest"], b["payload"]["digest"]);
    assert_eq!(
        b["payload"]["digest"],
        sha256_file(std::path::Path::new(host))
    );
    // The report of the run served from the cache verifies, host file re-hashed included.
    let o = env
        .cmd()
        .args(["report", "verify", "--check-host-files"])
        .arg(&second[0])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    assert!(out(&o).contains("PASS  input:binary:"), "{}", out(&o));
}
