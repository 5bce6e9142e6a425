//! Shared helpers of the sandbox end-to-end tests (run_smoke, run_failure_paths, isolation,
//! leftovers). Each test gets its own run-directory base and operator config in a tempdir, so
//! tests run concurrently without seeing each other's runs.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

pub mod vm;

/// The safe-run binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_safe-run")
}

/// True when the test can run (root). Not root: panics under CI=true, else prints SKIPPED.
pub fn require_root(test: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the effective uid.
    if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} needs root (CI=true, so this is a failure, not a skip)");
    }
    eprintln!("SKIPPED: {test} needs root");
    false
}

/// A test's private environment.
pub struct Env {
    /// Holds everything.
    pub dir: tempfile::TempDir,
    /// SAFE_RUN_WORKDIR_BASE.
    pub base: PathBuf,
    /// SAFE_RUN_CONFIG.
    pub config: PathBuf,
}

impl Env {
    /// A fresh environment whose operator config allows mounts from its own tempdir.
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("sr-test-")
            .tempdir_in("/tmp")
            .unwrap();
        let base = dir.path().join("runs");
        let config = dir.path().join("config.json");
        let cfg = json!({
            "allowedMountPrefixes": [dir.path().join("share")],
            "allowWritableMounts": true,
        });
        std::fs::create_dir_all(dir.path().join("share")).unwrap();
        std::fs::write(&config, cfg.to_string()).unwrap();
        Env { dir, base, config }
    }

    /// Merges `extra` into the operator config.
    pub fn configure(&self, extra: Value) {
        let mut cfg: Value =
            serde_json::from_str(&std::fs::read_to_string(&self.config).unwrap()).unwrap();
        merge(&mut cfg, extra);
        std::fs::write(&self.config, cfg.to_string()).unwrap();
    }

    /// Directory under the allowed mount prefix.
    pub fn share(&self) -> PathBuf {
        self.dir.path().join("share")
    }

    /// Writes a policy (JSON, which is also YAML) and returns its path.
    pub fn policy(&self, name: &str, policy: &Value) -> PathBuf {
        let p = self.dir.path().join(format!("{name}.json"));
        std::fs::write(&p, serde_json::to_string_pretty(policy).unwrap()).unwrap();
        p
    }

    /// A `safe-run` command with this environment.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        c.env("SAFE_RUN_WORKDIR_BASE", &self.base)
            .env("SAFE_RUN_CONFIG", &self.config)
            .env("SAFE_RUN_ARCHIVE", self.dir.path().join("archive.db"))
            .env_remove("RUST_LOG");
        c
    }

    /// The command `safe-run run --policy <policy>`, to add to and start.
    pub fn run_cmd(&self, policy: &Path) -> Command {
        let mut c = self.cmd();
        c.arg("run").arg("--policy").arg(policy);
        c
    }

    /// `safe-run run --policy <policy> [-- extra]`.
    pub fn run(&self, policy: &Path, extra: &[&str]) -> Output {
        let mut c = self.run_cmd(policy);
        if !extra.is_empty() {
            c.arg("--").args(extra);
        }
        c.output().unwrap()
    }

    /// Run dirs created so far (not the hidden `.unfinished` index).
    pub fn run_dirs(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&self.base)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The report of the only run so far.
    pub fn report(&self) -> Value {
        let dirs = self.run_dirs();
        assert_eq!(dirs.len(), 1, "expected one run dir: {dirs:?}");
        let text = std::fs::read_to_string(dirs[0].join("run_report.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }
}

/// A sandbox policy running `command args` with a short timeout and optional extra fields.
pub fn policy(command: &str, args: &[&str], extra: Value) -> Value {
    let mut p = json!({
        "version": 1,
        "name": "test",
        "runtime": {
            "command": command,
            "args": args,
            "env": {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            "timeout": "30s"
        },
        "mounts": [],
        "evidence": {"sign": false}
    });
    merge(&mut p, extra);
    p
}

/// `/bin/sh -c script`.
pub fn sh(script: &str) -> Value {
    policy("/bin/sh", &["-c", script], json!({}))
}

/// Python that forks (children sleep 3 s) until a fork is refused, at most 200 times, and
/// prints `forked N`: for the pids limit.
pub const FORK_UNTIL_REFUSED: &str = "import os, time\nn = 0\nfor i in range(200):\n    try:\n        pid = os.fork()\n    except OSError:\n        break\n    if pid == 0:\n        time.sleep(3)\n        os._exit(0)\n    n += 1\nprint('forked', n)\n";

/// `/usr/bin/python3 -c code`.
pub fn py(code: &str) -> Value {
    policy("/usr/bin/python3", &["-c", code], json!({}))
}

/// Deep-merges `extra` into `base` (objects merge, everything else replaces).
pub fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

/// stdout as text.
pub fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as text.
pub fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every cgroup directory of safe-run runs currently on the host (v1 and v2 layouts).
pub fn safe_run_cgroups() -> Vec<PathBuf> {
    let mut found = Vec::new();
    for parent in [
        "/sys/fs/cgroup/safe-run",
        "/sys/fs/cgroup/memory/safe-run",
        "/sys/fs/cgroup/pids/safe-run",
        "/sys/fs/cgroup/cpu/safe-run",
        "/sys/fs/cgroup/cpuacct/safe-run",
    ] {
        if let Ok(rd) = std::fs::read_dir(parent) {
            for e in rd.flatten() {
                if e.path().is_dir() {
                    found.push(e.path());
                }
            }
        }
    }
    found.sort();
    found
}

/// cgroup dirs belonging to the given run ids.
pub fn cgroups_of(run_ids: &[String]) -> Vec<PathBuf> {
    safe_run_cgroups()
        .into_iter()
        .filter(|p| {
            run_ids
                .iter()
                .any(|id| p.to_string_lossy().ends_with(&format!("safe-run-{id}")))
        })
        .collect()
}

/// Pids whose command line contains `needle`.
pub fn pids_with_cmdline(needle: &str) -> Vec<i32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            if c.contains(needle) {
                v.push(pid);
            }
        }
    }
    v
}

/// Pids whose working directory's path contains `needle` (a VMM starts in its run's `vm/`
/// directory, and vhost-device-vsock's command line does not name the run).
pub fn pids_with_cwd(needle: &str) -> Vec<i32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cwd) = std::fs::read_link(e.path().join("cwd"))
            && cwd.to_string_lossy().contains(needle)
        {
            v.push(pid);
        }
    }
    v
}

/// A marker unique to this test process and call site.
pub fn marker(tag: &str) -> String {
    format!(
        "{}{}",
        std::process::id(),
        tag.len() * 7919 + tag.bytes().map(usize::from).sum::<usize>()
    )
}

/// The run id from a run dir path.
pub fn run_id(dir: &Path) -> String {
    dir.file_name().unwrap().to_string_lossy().into_owned()
}

/// Sends `signal` (e.g. "TERM") to `pid` with kill(1).
pub fn signal(pid: u32, signal: &str) {
    let st = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(st.success());
}

/// Waits until `cond` holds, up to `secs` seconds.
pub fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    cond()
}

/// Whether the events log of `dir` has an event of type `ty`.
pub fn has_event(dir: &Path, ty: &str) -> bool {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .is_ok_and(|t| t.contains(&format!("\"type\":\"{ty}\"")))
}

/// `sha256:<hex>` of a file, by coreutils (an independent implementation).
pub fn sha256_file(path: &Path) -> String {
    let o = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(o.status.success());
    let hex = out(&o).split_whitespace().next().unwrap().to_owned();
    format!("sha256:{hex}")
}

/// `sha256:<hex>` of `bytes`, by coreutils.
pub fn sha256_of(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut c = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(bytes).unwrap();
    let o = c.wait_with_output().unwrap();
    let hex = out(&o).split_whitespace().next().unwrap().to_owned();
    format!("sha256:{hex}")
}

/// The events of type `ty` in a run dir's chain, in order.
pub fn events_of(dir: &Path, ty: &str) -> Vec<Value> {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["type"] == ty)
        .collect()
}
