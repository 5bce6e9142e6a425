//! The microVM backend for real: `safe-run run` boots the guest that `safe-run artifact build`
//! made (QEMU, software emulation on these hosts) and runs the workload behind the guest's own
//! kernel. As root, with QEMU, vhost-device-vsock and the artifacts present (scripts/test.sh
//! builds them); under CI=true a missing piece is a failure, elsewhere a visible skip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod run_support;
mod serve_support;

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use run_support::vm::*;
use run_support::*;
use serde_json::{Value, json};

/// A microVM policy running `command args`.
fn vm_policy(command: &str, args: &[&str], extra: Value) -> Value {
    let mut p = as_microvm(policy(command, args, json!({})));
    merge(&mut p, extra);
    p
}

#[test]
fn uname_prints_the_guest_kernel_and_the_report_says_how_the_vm_ran() {
    if !vm_ready(
        "uname_prints_the_guest_kernel_and_the_report_says_how_the_vm_ran",
        &[],
    ) {
        return;
    }
    let env = vm_env();
    let p = env.policy("uname", &vm_policy("/bin/uname", &["-r"], json!({})));
    let o = env.run(&p, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let guest = out(&o).trim().to_owned();
    let m = manifest();
    assert_eq!(guest, m["kernelRelease"].as_str().unwrap());
    let host = nix_uname();
    assert_ne!(guest, host, "the workload saw the host's kernel");

    let dir = &env.run_dirs()[0];
    verify(&env, dir);
    let report = env.report();
    let vm = &report["enforcement"]["backend"]["microvm"];
    assert_eq!(vm["vmm"], "qemu");
    assert!(["tcg", "kvm"].contains(&vm["accelerator"].as_str().unwrap()));
    assert_eq!(vm["guestKernel"], guest.as_str());
    assert_eq!(vm["vcpus"], 1);
    assert_eq!(vm["memoryMib"], 256);
    for role in ["kernel", "initramfs", "rootfs"] {
        assert_eq!(
            vm["artifacts"][role].as_str().unwrap(),
            format!("sha256:{}", m["outputs"][role]["sha256"].as_str().unwrap()),
            "{role}"
        );
    }
    let conf = &vm["confinement"];
    assert_ne!(conf["uid"], 0);
    assert_eq!(conf["noNewPrivs"], true);
    assert!(
        conf["namespaces"]
            .as_array()
            .unwrap()
            .contains(&json!("net"))
    );
    assert_eq!(report["enforcement"]["noNewPrivs"], true);
    // QEMU's own filter, and the host filter under both VMM processes.
    assert!(
        conf["seccomp"]
            .as_str()
            .unwrap()
            .starts_with("qemu -sandbox on"),
        "{conf}"
    );
    for process in ["qemu", "vhost-device-vsock"] {
        let f = &conf["hostSeccomp"][process];
        assert_eq!(f["profile"], "sr-vmm-host-v1", "{conf}");
        assert_eq!(f["action"], "errno:EPERM", "{conf}");
        assert!(f["deniedSyscalls"].as_u64().unwrap() >= 40, "{conf}");
        assert_eq!(f["socketFamilies"], json!(["AF_UNIX"]), "{conf}");
        assert!(
            f["digest"].as_str().unwrap().starts_with("sha256:"),
            "{conf}"
        );
    }
    assert_nothing_left(&run_id(dir));
}

fn nix_uname() -> String {
    let o = std::process::Command::new("uname")
        .arg("-r")
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

#[test]
fn exit_code_stdin_and_both_streams_come_back_from_the_guest() {
    if !vm_ready(
        "exit_code_stdin_and_both_streams_come_back_from_the_guest",
        &[],
    ) {
        return;
    }
    let env = vm_env();
    let p = env.policy(
        "streams",
        &vm_policy(
            "/bin/sh",
            &["-c", "cat; id -u; echo oops >&2; exit 7"],
            json!({}),
        ),
    );
    let mut child = env
        .run_cmd(&p)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from the host\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(7), "{}", err(&o));
    // The policy's unprivileged user inside the guest, never root.
    assert_eq!(out(&o), "from the host\n1000\n");
    assert!(err(&o).starts_with("oops\n"), "{}", err(&o));
    let dir = &env.run_dirs()[0];
    let exited = events_of(dir, "exec.exited");
    assert_eq!(
        exited[0]["payload"]["stdin"]["sha256"],
        sha256_of(b"from the host\n").as_str()
    );
    verify(&env, dir);
}

#[test]
fn the_guest_has_no_network_and_none_of_the_hosts_files() {
    if !vm_ready("the_guest_has_no_network_and_none_of_the_hosts_files", &[]) {
        return;
    }
    let env = vm_env();
    // A marker only the host has: the guest must not see it anywhere it can look.
    let marker = marker("host-only");
    std::fs::write(env.share().join("secret"), &marker).unwrap();
    let script = format!(
        "ls /sys/class/net; cat /etc/hostname; grep -rs {marker} /tmp /etc /home /root /run; echo scanned"
    );
    let p = env.policy(
        "isolated",
        &vm_policy("/bin/sh", &["-c", &script], json!({})),
    );
    let o = env.run(&p, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    // No NIC: only loopback. The rootfs's own hostname file, not the host's.
    assert_eq!(out(&o), "lo\nsafe-run\nscanned\n", "{}", err(&o));
}

#[test]
fn the_timeout_stops_the_vm_and_leaves_nothing() {
    if !vm_ready("the_timeout_stops_the_vm_and_leaves_nothing", &[]) {
        return;
    }
    let env = vm_env();
    let p = env.policy(
        "sleepy",
        &vm_policy(
            "/bin/sleep",
            &["600"],
            json!({"runtime": {"timeout": "20s"}}),
        ),
    );
    let o = env.run(&p, &[]);
    assert_eq!(o.status.code(), Some(6), "{}", err(&o));
    let dir = &env.run_dirs()[0];
    assert!(has_event(dir, "run.timeout"));
    verify(&env, dir);
    assert_nothing_left(&run_id(dir));
}

/// Starts `safe-run run` of a long sleep in a guest and waits until the exec has started.
fn start_sleeping_vm(env: &Env) -> (std::process::Child, PathBuf) {
    let p = env.policy("sleeper", &vm_policy("/bin/sleep", &["600"], json!({})));
    let mut child = env
        .run_cmd(&p)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut dir = None;
    let mut ended = false;
    let started = wait_for(120, || {
        dir = env.run_dirs().into_iter().next();
        ended = child.try_wait().unwrap().is_some();
        ended || dir.as_ref().is_some_and(|d| has_event(d, "exec.started"))
    });
    if ended || !started {
        let _ = child.kill();
        let o = child.wait_with_output().unwrap();
        panic!(
            "the guest never started the exec (safe-run {}): {}",
            o.status,
            err(&o)
        );
    }
    (child, dir.unwrap())
}

#[test]
fn sigint_of_safe_run_stops_the_vm_in_order() {
    if !vm_ready("sigint_of_safe_run_stops_the_vm_in_order", &[]) {
        return;
    }
    let env = vm_env();
    let (child, dir) = start_sleeping_vm(&env);
    signal(child.id(), "INT");
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130));
    verify(&env, &dir);
    assert_nothing_left(&run_id(&dir));
}

/// `(executable name, Seccomp mode, Seccomp_filters)` of each process of the run's VMM chains,
/// from /proc (the kernel's own account of the filters a process runs under).
fn seccomp_of_vmm_processes(id: &str) -> Vec<(String, String, u64)> {
    let mut seen = Vec::new();
    for pid in vmm_pids(id) {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"));
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"));
        let (Ok(exe), Ok(status)) = (exe, status) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        let name = exe.file_name().unwrap().to_string_lossy().into_owned();
        let filters = field("Seccomp_filters:").parse().unwrap_or(0);
        seen.push((name, field("Seccomp:"), filters));
    }
    seen.sort();
    seen
}

#[test]
fn both_vmm_processes_and_their_chains_run_under_the_host_seccomp_filter() {
    if !vm_ready(
        "both_vmm_processes_and_their_chains_run_under_the_host_seccomp_filter",
        &[],
    ) {
        return;
    }
    let env = vm_env();
    // The guest booted and started the exec under the filter.
    let (child, dir) = start_sleeping_vm(&env);
    let id = run_id(&dir);
    let live = seccomp_of_vmm_processes(&id);
    signal(child.id(), "INT");
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", err(&o));
    let report = env.report();
    let host = &report["enforcement"]["backend"]["microvm"]["confinement"]["hostSeccomp"];
    let programs = |p: &str| host[p]["programs"].as_u64().unwrap();
    // `unshare` (which the outer setpriv exec'd) above each VMM, and the two VMMs. QEMU's own
    // -sandbox filter is stacked on the host filter's programs.
    let expected: Vec<(String, String, u64)> = [
        ("qemu-system-x86_64", programs("qemu") + 1),
        ("unshare", programs("qemu")),
        ("unshare", programs("vhost-device-vsock")),
        ("vhost-device-vsock", programs("vhost-device-vsock")),
    ]
    .into_iter()
    .map(|(name, n)| (name.to_owned(), "2".to_owned(), n))
    .collect();
    assert_eq!(live, expected, "{host}");
    verify(&env, &dir);
    assert_nothing_left(&id);
}

#[test]
fn sigkill_of_safe_run_takes_the_vm_with_it_and_gc_recovers_the_rest() {
    if !vm_ready(
        "sigkill_of_safe_run_takes_the_vm_with_it_and_gc_recovers_the_rest",
        &[],
    ) {
        return;
    }
    let env = vm_env();
    let (mut child, dir) = start_sleeping_vm(&env);
    let id = run_id(&dir);
    assert!(!vmm_pids(&id).is_empty(), "no VMM process of the run");
    child.kill().unwrap();
    child.wait().unwrap();
    // The VMM chain dies by its parent-death signal.
    assert!(
        wait_for(15, || vmm_pids(&id).is_empty()),
        "the VMM outlived safe-run: {:?}",
        vmm_pids(&id)
    );
    let o = env.cmd().arg("gc").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_nothing_left(&id);
    std::thread::sleep(Duration::from_millis(10));
}

#[test]
fn one_policy_runs_on_both_backends_and_both_reports_verify() {
    if !vm_ready(
        "one_policy_runs_on_both_backends_and_both_reports_verify",
        &[],
    ) {
        return;
    }
    let env = vm_env();
    env.configure(json!({"keyPath": env.dir.path().join("keys/signing.key")}));
    // One file, written once, that names no backend: `--backend` picks one per run. It holds
    // for both (whole vCPUs, memory in MiB, no rootfs).
    let script = "echo $((6*7)); cat /proc/sys/kernel/osrelease >/dev/null; exit 3";
    let mut p = policy(
        "/bin/sh",
        &["-c", script],
        json!({"evidence": {"sign": true}}),
    );
    merge(
        &mut p,
        json!({"runtime": {"timeout": "90s"}, "resources": {"cpus": 1, "memory": "256Mi"}}),
    );
    let path = env.policy("both", &p);
    let mut digests = Vec::new();
    for (backend, boundary) in [("sandbox", "sandbox"), ("microvm", "qemu")] {
        let before = env.run_dirs();
        let o = env
            .run_cmd(&path)
            .args(["--backend", backend])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(3), "{backend}: {}", err(&o));
        assert_eq!(out(&o), "42\n", "{backend}");
        let dir = env
            .run_dirs()
            .into_iter()
            .find(|d| !before.contains(d))
            .unwrap();
        let v = env
            .cmd()
            .args(["report", "verify"])
            .arg(&dir)
            .output()
            .unwrap();
        assert_eq!(
            v.status.code(),
            Some(0),
            "{backend}: {}{}",
            out(&v),
            err(&v)
        );
        assert!(
            out(&v).contains("PASS  policy.overrides") && !out(&v).contains("SKIP  signature"),
            "{backend}: signed, and the override checked against the boundary: {}",
            out(&v)
        );
        let report: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("run_report.json")).unwrap())
                .unwrap();
        assert_eq!(
            report["policy"]["overrides"],
            json!({"runtime.backend": backend}),
            "{backend}"
        );
        assert_eq!(report["run"]["backend"], boundary);
        digests.push(report["policy"]["digest"].clone());
        let compiled = events_of(&dir, "policy.compiled");
        assert_eq!(
            compiled[0]["payload"]["policyOverrides"],
            json!({"runtime.backend": backend}),
            "the chain names the override too"
        );
        let shown = env
            .cmd()
            .args(["report", "show"])
            .arg(run_id(&dir))
            .output()
            .unwrap();
        assert!(
            out(&shown).contains(&format!("(overrides: runtime.backend={backend})")),
            "{}{}",
            out(&shown),
            err(&shown)
        );
        assert_nothing_left(&run_id(&dir));
    }
    assert_eq!(digests[0], digests[1], "both reports name the same file");
    assert_eq!(env.run_dirs().len(), 2);
}

#[test]
fn serve_creates_a_microvm_sandbox_that_takes_execs_and_files_and_signs_its_report() {
    if !vm_ready(
        "serve_creates_a_microvm_sandbox_that_takes_execs_and_files_and_signs_its_report",
        &[],
    ) {
        return;
    }
    let env = vm_env();
    let tokens = env.dir.path().join("state/tokens.json");
    let token = serve_support::token(&env, &tokens, "create,read");
    let d = serve_support::start(&env, &tokens);
    let policy = vm_policy("/bin/true", &[], json!({}));
    let (s, created) = serve_support::http(
        &d.socket,
        "POST",
        "/v1/sandboxes",
        &token,
        Some(&json!({"policy": policy.to_string()})),
    );
    assert_eq!(s, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let (s, r) = serve_support::http(
        &d.socket,
        "POST",
        &format!("/v1/sandboxes/{id}/execs?wait=true"),
        &token,
        Some(&json!({"argv": ["/bin/uname", "-r"]})),
    );
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        r["stdout"].as_str().unwrap().trim(),
        manifest()["kernelRelease"].as_str().unwrap()
    );
    let (s, _) = serve_support::http_raw(
        &d.socket,
        "PUT",
        &format!("/v1/sandboxes/{id}/files/tmp/note.txt"),
        &token,
        b"over http into a guest\n",
    );
    assert!(s == 200 || s == 201 || s == 204, "{s}");
    let (s, r) = serve_support::http(
        &d.socket,
        "POST",
        &format!("/v1/sandboxes/{id}/execs?wait=true"),
        &token,
        Some(&json!({"argv": ["/bin/cat", "/tmp/note.txt"]})),
    );
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["stdout"], "over http into a guest\n");
    let report = serve_support::end_and_report(&d.socket, &id, &token);
    assert_eq!(
        report["enforcement"]["backend"]["microvm"]["vmm"], "qemu",
        "{report}"
    );
    assert_eq!(report["execs"].as_array().unwrap().len(), 2);
    drop(d);
    assert_nothing_left(&id);
}

#[test]
fn a_guest_oom_is_reported_as_oom() {
    if !vm_ready("a_guest_oom_is_reported_as_oom", &[]) {
        return;
    }
    let env = vm_env();
    // A string that doubles until it cannot fit in the guest's 256 MiB.
    let p = env.policy(
        "hog",
        &vm_policy(
            "/usr/bin/awk",
            &["BEGIN { s = \"xxxxxxxxxxxxxxxx\"; while (1) s = s s }"],
            json!({}),
        ),
    );
    let o = env.run(&p, &[]);
    assert_eq!(o.status.code(), Some(137), "{}", err(&o));
    let report = env.report();
    assert_eq!(report["exit"]["status"], "oom", "{report}");
    verify(&env, &env.run_dirs()[0]);
}

#[test]
fn a_guest_that_cannot_boot_fails_fast_with_its_console_in_the_hint() {
    if !vm_ready(
        "a_guest_that_cannot_boot_fails_fast_with_its_console_in_the_hint",
        &[],
    ) {
        return;
    }
    let env = vm_env();
    // Not an initramfs: the kernel finds no init and panics; QEMU (-no-reboot) exits.
    let junk = env.dir.path().join("junk-initramfs.img");
    std::fs::write(&junk, vec![0x5au8; 4096]).unwrap();
    env.configure(json!({"microvm": {"initramfs": junk}}));
    let p = env.policy("noboot", &vm_policy("/bin/true", &[], json!({})));
    let t = std::time::Instant::now();
    let o = env.run(&p, &[]);
    assert_eq!(o.status.code(), Some(5), "{}", err(&o));
    let e = err(&o);
    assert!(e.contains("SR-RUN-002") && e.contains("launch.boot"), "{e}");
    assert!(e.contains("QEMU exited"), "{e}");
    assert!(
        e.to_lowercase().contains("panic"),
        "the console tail is missing: {e}"
    );
    assert!(t.elapsed() < Duration::from_secs(50), "{:?}", t.elapsed());
    assert_nothing_left(&run_id(&env.run_dirs()[0]));
}
