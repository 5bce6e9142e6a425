//! `safe-run run --pool TEMPLATE` against a real `safe-run serve`: the command runs in a
//! sandbox the daemon made ahead for its warm pool, its stdin, stdout and stderr pass byte for
//! byte, its exit status is the run's, and the sandbox's signed report (which `report verify`
//! accepts) says it came from the pool. A run when the pool is empty still works (the daemon
//! makes one) and says so; SIGINT destroys the sandbox; refusals are precise and exit with
//! their family's code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod run_support;
mod serve_support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use run_support::*;
use serde_json::{Value, json};
use serve_support::*;

const TEMPLATE: &str = "version: 1\nname: pooled\nruntime:\n  command: /bin/true\n  args: []\n  timeout: 60s\nmounts: []\n";

struct Served {
    env: Env,
    daemon: Daemon,
    admin: String,
    runner: String,
}

fn serve(min_ready: u32) -> Served {
    let env = Env::new();
    let template = env.dir.path().join("template.yaml");
    std::fs::write(&template, TEMPLATE).unwrap();
    env.configure(json!({"serve": {"templates": {"small": template}}}));
    let tokens = env.dir.path().join("state/tokens.json");
    let admin = token(&env, &tokens, "admin");
    let runner = token(&env, &tokens, "create");
    let daemon = start(&env, &tokens);
    let served = Served {
        env,
        daemon,
        admin,
        runner,
    };
    if min_ready > 0 {
        let (s, p) = http(
            &served.daemon.socket,
            "PUT",
            "/v1/pools/small",
            &served.admin,
            Some(&json!({"minReady": min_ready})),
        );
        assert_eq!(s, 200, "{p}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, pools) = http(
                &served.daemon.socket,
                "GET",
                "/v1/pools",
                &served.admin,
                None,
            );
            if pools[0]["ready"].as_u64() == Some(u64::from(min_ready)) {
                break;
            }
            assert!(Instant::now() < deadline, "the pool did not fill: {pools}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    served
}

impl Served {
    fn pool_run(&self, result: &Path, argv: &[&str]) -> Command {
        let mut c = self.env.cmd();
        c.env("SAFE_RUN_TOKEN", &self.runner)
            .env_remove("SAFE_RUN_SOCKET")
            .args(["run", "--pool", "small", "--socket"])
            .arg(&self.daemon.socket)
            .arg("--result")
            .arg(result)
            .arg("--")
            .args(argv);
        c
    }

    /// A pool run of a shell that says `ready` and sleeps, once it has said it (its stdout
    /// taken; stderr piped).
    fn sleeping_pool_run(&self, result: &Path) -> std::process::Child {
        let mut child = self
            .pool_run(result, &["/bin/sh", "-c", "echo ready; exec sleep 300"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "ready\n");
        child
    }

    fn sandbox(&self, id: &str) -> Value {
        let (s, v) = http(
            &self.daemon.socket,
            "GET",
            &format!("/v1/sandboxes/{id}"),
            &self.admin,
            None,
        );
        assert_eq!(s, 200, "{v}");
        v
    }
}

fn with_stdin(mut c: Command, input: &[u8]) -> Output {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn verify(env: &Env, report: &str) {
    let v = env
        .cmd()
        .args(["report", "verify", report])
        .output()
        .unwrap();
    assert!(
        v.status.success(),
        "{}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
}

#[test]
fn a_run_from_the_warm_pool_passes_bytes_and_status_and_its_report_says_so() {
    if !require_root("a_run_from_the_warm_pool_passes_bytes_and_status_and_its_report_says_so") {
        return;
    }
    let s = serve(1);
    let result = s.env.dir.path().join("result.json");
    // Bytes that are not UTF-8 on stdout, stdin copied through, stderr apart, a code of its own.
    let out = with_stdin(
        s.pool_run(
            &result,
            &[
                "/bin/sh",
                "-c",
                "cat; printf '\\377\\000x'; echo err >&2; exit 3",
            ],
        ),
        b"from stdin\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert_eq!(out.stdout, b"from stdin\n\xff\x00x", "{stderr}");
    assert!(stderr.starts_with("err\n"), "{stderr}");
    assert!(
        stderr.contains("from the warm pool of \"small\""),
        "{stderr}"
    );

    let r = read_json(&result);
    assert_eq!(r["status"], "exited", "{r}");
    assert_eq!(r["workloadExitCode"], 3, "{r}");
    assert_eq!(
        r["pool"],
        json!({"template": "small", "fromPool": true}),
        "{r}"
    );
    // The policy is the template's, as the daemon's report names it.
    assert_eq!(r["policy"]["name"], "pooled", "{r}");
    assert!(
        r["policy"]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "{r}"
    );
    let report_path = r["reportPath"].as_str().unwrap().to_owned();
    let report = read_json(Path::new(&report_path));
    assert_eq!(report["pool"]["template"], "small", "{report}");
    assert!(report["pool"]["waitedMs"].is_u64(), "{report}");
    assert_eq!(
        report["execs"][0]["status"],
        json!({"kind": "exited", "code": 3})
    );
    assert_eq!(report["execs"][0]["stdout"]["bytes"], 14, "{report}");
    assert!(report["execs"][0]["stdin"].is_object(), "{report}");
    verify(&s.env, &report_path);

    // Used once: ended, with nothing of it left; the pool makes another.
    let id = r["runId"].as_str().unwrap();
    assert_eq!(s.sandbox(id)["state"], "ended");
    assert!(sandbox_cgroups(id).is_empty());
}

#[test]
fn an_empty_pool_still_runs_and_says_the_sandbox_was_made_on_request() {
    if !require_root("an_empty_pool_still_runs_and_says_the_sandbox_was_made_on_request") {
        return;
    }
    let s = serve(0);
    let result = s.env.dir.path().join("result.json");
    let out = s
        .pool_run(&result, &["/bin/echo", "made"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(out.stdout, b"made\n");
    assert!(stderr.contains("made on request"), "{stderr}");
    let r = read_json(&result);
    assert_eq!(r["pool"]["fromPool"], false, "{r}");
    let report_path = r["reportPath"].as_str().unwrap();
    assert!(read_json(Path::new(report_path)).get("pool").is_none());
    verify(&s.env, report_path);

    // A program that is not there: the launch family (5), and the sandbox still ends.
    let out = s
        .pool_run(&result, &["/no/such/program"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("SR-RUN-002"), "{stderr}");
    let r = read_json(&result);
    assert_eq!(r["status"], "launchFailed", "{r}");
    assert_eq!(s.sandbox(r["runId"].as_str().unwrap())["state"], "ended");
}

#[test]
fn sigint_destroys_the_pooled_sandbox_with_its_report() {
    if !require_root("sigint_destroys_the_pooled_sandbox_with_its_report") {
        return;
    }
    let s = serve(1);
    let result = s.env.dir.path().join("result.json");
    let child = s.sleeping_pool_run(&result);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    let r = read_json(&result);
    assert_eq!(r["status"], "interrupted", "{r}");
    let id = r["runId"].as_str().unwrap();
    let view = s.sandbox(id);
    assert_eq!(view["state"], "ended", "{view}");
    let report = read_json(Path::new(r["reportPath"].as_str().unwrap()));
    assert_eq!(report["exit"]["status"], "destroyed", "{report}");
    assert!(sandbox_cgroups(id).is_empty());
}

/// A client killed by SIGKILL cannot destroy its sandbox: the daemon does, when the exec's
/// event stream closes before `exit` (it notices on its next write, the keep-alive at the
/// latest), instead of waiting for the idle timeout.
#[test]
fn a_sigkilled_client_leaves_its_pooled_sandbox_to_be_destroyed_by_the_daemon() {
    if !require_root("a_sigkilled_client_leaves_its_pooled_sandbox_to_be_destroyed_by_the_daemon") {
        return;
    }
    let s = serve(1);
    let result = s.env.dir.path().join("result.json");
    let mut child = s.sleeping_pool_run(&result);
    child.kill().unwrap();
    child.wait().unwrap();
    let (s_code, list) = http(&s.daemon.socket, "GET", "/v1/sandboxes", &s.admin, None);
    assert_eq!(s_code, 200, "{list}");
    let taken: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["state"] == "running" && v["fromPool"] == true)
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(40);
    let ended = loop {
        let ended: Vec<Value> = taken
            .iter()
            .map(|id| s.sandbox(id))
            .filter(|v| v["state"] == "ended")
            .collect();
        if !ended.is_empty() {
            break ended;
        }
        assert!(
            Instant::now() < deadline,
            "no sandbox of the killed client ended: {taken:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0]["ended"], "destroyed", "{}", ended[0]);
    let id = ended[0]["id"].as_str().unwrap();
    assert!(sandbox_cgroups(id).is_empty());
    verify(&s.env, ended[0]["reportPath"].as_str().unwrap());
    // Asking for that needs the right to destroy: a read-only token is refused.
    let reader = token(&s.env, &s.env.dir.path().join("state/tokens.json"), "read");
    let (code, problem) = http(
        &s.daemon.socket,
        "GET",
        &format!("/v1/sandboxes/{id}/execs/1/events?destroyOnDisconnect=true"),
        &reader,
        None,
    );
    assert_eq!(code, 403, "{problem}");
}

/// A client killed after taking a sandbox but before its exec started (what `--pool` asks
/// for at the take: `unusedTimeoutMs`): the daemon ends the sandbox once that passes, with a
/// report that says `idle`, and nothing of it is left. A sandbox whose exec started is not
/// ended by it.
#[test]
fn a_taken_sandbox_nothing_ran_in_is_ended_after_its_unused_timeout() {
    if !require_root("a_taken_sandbox_nothing_ran_in_is_ended_after_its_unused_timeout") {
        return;
    }
    let s = serve(0);
    let take = |unused_ms: u64| {
        let (code, made) = http(
            &s.daemon.socket,
            "POST",
            "/v1/sandboxes",
            &s.runner,
            Some(&json!({"template": "small", "unusedTimeoutMs": unused_ms})),
        );
        assert_eq!(code, 201, "{made}");
        made["id"].as_str().unwrap().to_owned()
    };
    let unused = take(300);
    let used = take(300);
    let (code, started) = http(
        &s.daemon.socket,
        "POST",
        &format!("/v1/sandboxes/{used}/execs"),
        &s.admin,
        Some(&json!({"argv": ["/bin/true"]})),
    );
    assert!(code == 200 || code == 202, "{started}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let ended = loop {
        let view = s.sandbox(&unused);
        if view["state"] == "ended" {
            break view;
        }
        assert!(Instant::now() < deadline, "not ended: {view}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let report: Value =
        serde_json::from_slice(&std::fs::read(ended["reportPath"].as_str().unwrap()).unwrap())
            .unwrap();
    assert_eq!(report["exit"]["reason"], "idle", "{report:#}");
    verify(&s.env, ended["reportPath"].as_str().unwrap());
    assert!(sandbox_cgroups(&unused).is_empty());
    // Well past its unused timeout, the one an exec ran in still runs.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(s.sandbox(&used)["state"], "running");
}

#[test]
fn refusals_are_precise_and_exit_with_their_family() {
    if !require_root("refusals_are_precise_and_exit_with_their_family") {
        return;
    }
    let s = serve(0);
    let result = s.env.dir.path().join("result.json");
    let code_and_text = |mut c: Command| {
        let out = c.stdin(Stdio::null()).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // No token; a token that is not one; a token that may only read.
    let mut c = s.pool_run(&result, &["/bin/true"]);
    c.env_remove("SAFE_RUN_TOKEN");
    let (code, text) = code_and_text(c);
    assert_eq!(code, Some(10), "{text}");
    assert!(text.contains("SAFE_RUN_TOKEN"), "{text}");
    let mut c = s.pool_run(&result, &["/bin/true"]);
    c.env("SAFE_RUN_TOKEN", "srt_made-up");
    let (code, text) = code_and_text(c);
    assert_eq!(code, Some(10), "{text}");
    assert!(text.contains("SR-SRV-001"), "{text}");
    // A template the daemon does not have: the policy family.
    let mut c = s.env.cmd();
    c.env("SAFE_RUN_TOKEN", &s.runner)
        .args(["run", "--pool", "nope", "--socket"])
        .arg(&s.daemon.socket)
        .args(["--", "/bin/true"]);
    let (code, text) = code_and_text(c);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("no template \"nope\""), "{text}");
    // No daemon there: the preflight family.
    let mut c = s.env.cmd();
    c.env("SAFE_RUN_TOKEN", &s.runner)
        .args(["run", "--pool", "small", "--socket"])
        .arg(s.env.dir.path().join("absent.sock"))
        .args(["--", "/bin/true"]);
    let (code, text) = code_and_text(c);
    assert_eq!(code, Some(5), "{text}");
    assert!(
        text.contains("SR-RUN-001") && text.contains("absent.sock"),
        "{text}"
    );
    // Usage: a policy beside --pool, no command, a relative command.
    for args in [
        &["run", "--pool", "small", "p.yaml", "--", "/bin/true"][..],
        &["run", "--pool", "small"][..],
    ] {
        let mut c = s.env.cmd();
        c.env("SAFE_RUN_TOKEN", &s.runner).args(args);
        let (code, text) = code_and_text(c);
        assert_eq!(code, Some(2), "{args:?}: {text}");
    }
    let mut c = s.env.cmd();
    c.env("SAFE_RUN_TOKEN", &s.runner)
        .args(["run", "--pool", "small", "--", "true"]);
    let (code, text) = code_and_text(c);
    assert_eq!(code, Some(3), "{text}");
}

#[test]
fn concurrent_pool_runs_never_share_a_sandbox() {
    if !require_root("concurrent_pool_runs_never_share_a_sandbox") {
        return;
    }
    let s = serve(2);
    // Three at once against a pool of two: each gets a sandbox of its own (the third one made
    // on request), and a file one writes is not there for another.
    let children: Vec<_> = (0..3)
        .map(|i| {
            let result = s.env.dir.path().join(format!("result-{i}.json"));
            let script = format!("ls /tmp; touch /tmp/mine-{i}");
            let child = s
                .pool_run(&result, &["/bin/sh", "-c", &script])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (result, child)
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    let mut from_pool = 0;
    for (result, child) in children {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert!(
            out.stdout.is_empty(),
            "another run's file: {:?}",
            out.stdout
        );
        let r = read_json(&result);
        assert!(ids.insert(r["runId"].as_str().unwrap().to_owned()), "{r}");
        from_pool += usize::from(r["pool"]["fromPool"] == true);
    }
    assert!(from_pool >= 1, "none came from the pool");
}

/// The daemon forgets an ended sandbox once retention passes (here: asked as if 11 minutes
/// had gone by), and keeps a running one and a freshly ended one; the report stays on disk.
#[test]
fn ended_sandboxes_are_forgotten_after_their_retention_and_their_reports_stay() {
    if !require_root("ended_sandboxes_are_forgotten_after_their_retention_and_their_reports_stay") {
        return;
    }
    let env = Env::new();
    let base = env.dir.path().join("runs");
    let init_exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_safe-run-init"));
    let probes = sr_runner::preflight::RealProbes::of_host(init_exe.clone(), base.clone());
    let host = sr_runner::preflight::check(
        &probes,
        sr_runner::preflight::Needs {
            landlock_required: false,
            landlock_min_abi: 1,
        },
    )
    .unwrap();
    let config = sr_policy::OperatorConfig {
        run_dir: base.display().to_string(),
        ..Default::default()
    };
    let daemon = sr_daemon::Daemon::new(sr_daemon::Host {
        config,
        layout: host.cgroup,
        init_exe,
        signer: None,
    });
    let (ended, _) = daemon.create(TEMPLATE).unwrap();
    let (running, _) = daemon.create(TEMPLATE).unwrap();
    let report = ended.destroy(None).report_path.unwrap();
    let now = Instant::now();
    assert_eq!(daemon.forget_ended(now), 0, "ended just now: kept");
    assert_eq!(
        daemon.forget_ended(now + Duration::from_secs(11 * 60)),
        1,
        "ended 11 minutes ago: forgotten"
    );
    assert!(daemon.get(&ended.id).is_none());
    assert!(
        daemon.get(&running.id).is_some(),
        "a running one is never forgotten"
    );
    assert!(report.is_file(), "the report stays");
    daemon.shutdown();
    assert!(sandbox_cgroups(&running.id).is_empty());
}
