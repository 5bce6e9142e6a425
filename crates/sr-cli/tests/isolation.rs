//! Isolation claims, each tested by trying to break it from inside the sandbox.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod run_support;

use std::net::TcpListener;

use run_support::*;
use serde_json::json;

/// Runs python `code` in a fresh environment; returns (exit code, stdout, stderr).
fn inside_py(name: &str, code: &str) -> (Option<i32>, String, String) {
    let env = Env::new();
    let p = env.policy(name, &py(code));
    let o = env.run(&p, &[]);
    (o.status.code(), out(&o), err(&o))
}

/// A python prelude: `sc(nr, *args)` returns (ret, errno) of a raw syscall.
const SYSCALL: &str = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\ndef sc(nr, *a):\n    r = libc.syscall(nr, *[ctypes.c_long(x) for x in a])\n    return r, ctypes.get_errno()\n";

fn assert_denied(name: &str, call: &str) {
    if !require_root(name) {
        return;
    }
    let code = format!("{SYSCALL}r, e = {call}\nprint('ret', r, 'errno', e)\n");
    let (rc, stdout, stderr) = inside_py(name, &code);
    assert_eq!(rc, Some(0), "{stderr}");
    assert!(
        stdout.starts_with("ret -1 errno 1\n"),
        "expected EPERM, got {stdout}{stderr}"
    );
}

#[test]
fn shadow_is_unreadable() {
    if !require_root("shadow_is_unreadable") {
        return;
    }
    let env = Env::new();
    let p = env.policy("shadow", &sh("cat /etc/shadow && echo READ-SHADOW; id -u"));
    let o = env.run(&p, &[]);
    assert!(!out(&o).contains("READ-SHADOW"), "{}", out(&o));
    assert!(!out(&o).contains("root:"), "{}", out(&o));
    assert!(out(&o).contains("1000"));
}

#[test]
fn writes_outside_writable_places_fail() {
    if !require_root("writes_outside_writable_places_fail") {
        return;
    }
    let env = Env::new();
    std::fs::create_dir_all(env.share().join("rw")).unwrap();
    std::fs::create_dir_all(env.share().join("ro")).unwrap();
    std::fs::write(env.share().join("ro/file"), "x").unwrap();
    // The workload's host uid must be able to write the rw mount.
    std::process::Command::new("chown")
        .arg("65534:65534")
        .arg(env.share().join("rw"))
        .status()
        .unwrap();
    let mut p = sh(
        "for f in /x /usr/x /etc/x /bin/x /ro/new /ro/file /dev/x /proc/x; do (echo y > $f) 2>/dev/null && echo WROTE $f; done; echo ok > /tmp/t && echo TMP; echo ok > /rw/t && echo RW",
    );
    merge(
        &mut p,
        json!({"mounts": [
            {"source": env.share().join("rw"), "target": "/rw", "readOnly": false},
            {"source": env.share().join("ro"), "target": "/ro"}
        ]}),
    );
    let p = env.policy("writes", &p);
    let o = env.run(&p, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(!out(&o).contains("WROTE"), "{}", out(&o));
    assert!(
        out(&o).contains("TMP") && out(&o).contains("RW"),
        "{}{}",
        out(&o),
        err(&o)
    );
    assert_eq!(
        std::fs::read_to_string(env.share().join("rw/t")).unwrap(),
        "ok\n"
    );
    assert_eq!(
        std::fs::read_to_string(env.share().join("ro/file")).unwrap(),
        "x"
    );
}

#[test]
fn mount_is_denied() {
    assert_denied("mount_is_denied", "sc(165, 0, 0, 0, 0, 0)");
}

#[test]
fn ptrace_is_denied() {
    // PTRACE_TRACEME
    assert_denied("ptrace_is_denied", "sc(101, 0, 0, 0, 0)");
}

#[test]
fn module_loading_is_denied() {
    // finit_module(fd 0, "", 0)
    assert_denied("module_loading_is_denied", "sc(313, 0, 0, 0)");
}

#[test]
fn bpf_is_denied() {
    assert_denied("bpf_is_denied", "sc(321, 0, 0, 0)");
}

#[test]
fn keyctl_is_denied() {
    assert_denied("keyctl_is_denied", "sc(250, 0, 0, 0, 0, 0)");
}

#[test]
fn new_namespaces_are_denied() {
    // unshare(CLONE_NEWUSER), then clone with CLONE_NEWNS via os.unshare-like raw clone.
    assert_denied("new_namespaces_are_denied", "sc(272, 0x10000000)");
}

#[test]
fn capabilities_and_privileges_are_gone() {
    if !require_root("capabilities_and_privileges_are_gone") {
        return;
    }
    let env = Env::new();
    let p = env.policy(
        "caps",
        &sh("grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/self/status; cat /proc/self/uid_map"),
    );
    let o = env.run(&p, &[]);
    let s = out(&o);
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert!(
            s.contains(&format!("{cap}:\t0000000000000000")),
            "{cap}: {s}"
        );
    }
    assert!(s.contains("NoNewPrivs:\t1"), "{s}");
    assert!(s.contains("Seccomp:\t2"), "{s}");
    assert!(s.contains("1000      65534          1"), "{s}");
}

#[test]
fn host_pids_are_invisible() {
    if !require_root("host_pids_are_invisible") {
        return;
    }
    let me = std::process::id();
    let env = Env::new();
    let p = env.policy(
        "pids",
        &sh(&format!(
            "ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' '; test -e /proc/{me} && echo SEES-HOST"
        )),
    );
    let o = env.run(&p, &[]);
    let s = out(&o);
    assert!(!s.contains("SEES-HOST"), "{s}");
    let pids: Vec<u32> = s
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // Only the sandbox's own few processes, numbered from 1 in its pid namespace.
    assert!(
        pids.contains(&1) && pids.len() <= 8 && pids.iter().all(|p| *p < 64),
        "{s}"
    );
}

#[test]
fn host_loopback_is_unreachable() {
    if !require_root("host_loopback_is_unreachable") {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let code = format!(
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    print('CONNECTED')\nexcept OSError as e:\n    print('refused', e)\n"
    );
    let (rc, s, e) = inside_py("loopback", &code);
    assert_eq!(rc, Some(0), "{e}");
    assert!(s.starts_with("refused"), "{s}");
    listener.set_nonblocking(true).unwrap();
    assert!(
        listener.accept().is_err(),
        "a connection reached the host listener"
    );
}

/// `network.mode: none`: the sandbox has a network namespace of its own whose loopback is up
/// and which has no other interface.
#[test]
fn own_loopback_works_and_is_the_only_interface() {
    if !require_root("own_loopback_works_and_is_the_only_interface") {
        return;
    }
    let code = "import socket\n\
        s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)\n\
        c = socket.create_connection(s.getsockname(), timeout=2); a, _ = s.accept()\n\
        c.sendall(b'x')\n\
        print(a.recv(1).decode(), sorted(n for _, n in socket.if_nameindex()))\n";
    let (rc, s, e) = inside_py("own-loopback", code);
    assert_eq!(rc, Some(0), "{e}");
    assert_eq!(s.trim(), "x ['lo']", "{e}");
}

#[test]
fn host_environment_does_not_leak() {
    if !require_root("host_environment_does_not_leak") {
        return;
    }
    let env = Env::new();
    let p = env.policy("env", &sh("env"));
    let o = env
        .run_cmd(&p)
        .env("SR_HOST_SECRET", "leaked")
        .output()
        .unwrap();
    let s = out(&o);
    assert!(!s.contains("SR_HOST_SECRET"), "{s}");
    assert!(s.contains("PATH=/usr/bin:/bin"), "{s}");
}

#[test]
fn dev_is_minimal() {
    if !require_root("dev_is_minimal") {
        return;
    }
    let env = Env::new();
    let p = env.policy("dev", &sh("ls /dev | tr '\\n' ' '; echo; echo x > /dev/null && echo NULL-OK; ls /sys 2>&1 | head -1"));
    let o = env.run(&p, &[]);
    let s = out(&o);
    let first = s.lines().next().unwrap_or_default();
    for bad in ["kvm", "vda", "sda", "mem", "kmsg", "loop"] {
        assert!(
            !first
                .split_whitespace()
                .any(|d| d == bad || d.starts_with("vd") || d.starts_with("sd")),
            "{bad}: {first}"
        );
    }
    assert!(
        first.contains("null") && first.contains("urandom"),
        "{first}"
    );
    assert!(s.contains("NULL-OK"), "{s}");
}

#[test]
fn symlinked_mount_source_is_refused() {
    if !require_root("symlinked_mount_source_is_refused") {
        return;
    }
    let env = Env::new();
    std::os::unix::fs::symlink("/etc", env.share().join("link")).unwrap();
    let mut p = sh("cat /data/passwd && echo ESCAPED");
    merge(
        &mut p,
        json!({"mounts": [{"source": env.share().join("link"), "target": "/data"}]}),
    );
    let p = env.policy("symlink", &p);
    let o = env.run(&p, &[]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        !out(&o).contains("ESCAPED") && !out(&o).contains("root:"),
        "{}",
        out(&o)
    );
    assert!(
        err(&o).contains("SR-POL") || err(&o).contains("SR-RUN-002"),
        "{}",
        err(&o)
    );
}

#[test]
fn symlink_swap_between_validation_and_mount_is_caught() {
    if !require_root("symlink_swap_between_validation_and_mount_is_caught") {
        return;
    }
    // Race the mount: keep swapping a directory and a symlink to /etc under the same name
    // while runs mount it. Every run must either see the real directory or fail; none may
    // ever see /etc's files.
    let env = Env::new();
    let real = env.share().join("real");
    std::fs::create_dir_all(&real).unwrap();
    std::fs::write(real.join("marker"), "inside").unwrap();
    let target = env.share().join("data");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("marker"), "inside").unwrap();
    let mut p = sh("cat /data/marker; test -e /data/passwd && echo ESCAPED");
    merge(
        &mut p,
        json!({"mounts": [{"source": target, "target": "/data"}]}),
    );
    let p = env.policy("swap", &p);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let stop = stop.clone();
        let target = target.clone();
        let parked = env.share().join("parked");
        let link = env.share().join("tmp-link");
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = std::fs::rename(&target, &parked);
                let _ = std::os::unix::fs::symlink("/etc", &link);
                let _ = std::fs::rename(&link, &target);
                std::thread::yield_now();
                let _ = std::fs::remove_file(&target);
                let _ = std::fs::rename(&parked, &target);
            }
        })
    };
    for _ in 0..15 {
        let o = env.run(&p, &[]);
        assert!(
            !out(&o).contains("ESCAPED"),
            "mounted /etc through a swapped symlink: {}",
            out(&o)
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    swapper.join().unwrap();
}

#[test]
fn no_process_outlives_the_run() {
    if !require_root("no_process_outlives_the_run") {
        return;
    }
    let env = Env::new();
    let m = marker("daemon");
    let code = format!(
        "import subprocess\nsubprocess.Popen(['/bin/sleep', '{m}'], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\nprint('daemonized')\n"
    );
    let p = env.policy("daemon", &py(&code));
    let o = env.run(&p, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(out(&o).contains("daemonized"));
    assert!(
        pids_with_cmdline(&format!("sleep {m}")).is_empty(),
        "the daemon survived the run"
    );
}

#[test]
fn only_stdio_is_inherited() {
    if !require_root("only_stdio_is_inherited") {
        return;
    }
    // No control socket, mount fd, lock file or pipe of the runner reaches the workload.
    let env = Env::new();
    let p = env.policy(
        "fds",
        &py("import os\nprint(sorted(os.listdir('/proc/self/fd')))"),
    );
    let o = env.run(&p, &[]);
    assert_eq!(out(&o), "['0', '1', '2', '3']\n", "{}", err(&o));
}

#[test]
fn clone_with_namespace_flags_is_denied() {
    // clone(CLONE_NEWUSER | SIGCHLD): refused on the flags argument.
    assert_denied(
        "clone_with_namespace_flags_is_denied",
        "sc(56, 0x10000000 | 17, 0, 0, 0, 0)",
    );
}

#[test]
fn clone3_reports_enosys_so_libc_falls_back_to_clone() {
    if !require_root("clone3_reports_enosys_so_libc_falls_back_to_clone") {
        return;
    }
    let code = format!(
        "{SYSCALL}r, e = sc(435, 0, 0)\nprint('ret', r, 'errno', e)\nimport subprocess\nprint(subprocess.run(['/bin/true']).returncode)\n"
    );
    let (rc, stdout, stderr) = inside_py("clone3", &code);
    assert_eq!(rc, Some(0), "{stderr}");
    // ENOSYS (38), and ordinary process creation still works.
    assert_eq!(stdout, "ret -1 errno 38\n0\n", "{stderr}");
}

/// `socket(family, type, protocol)` through libc for each case; prints `name errno` (0: made).
const SOCKETS: &str = r#"
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
cases = [
    ("unix", 1, 1, 0), ("unixpair", 1, 1, 0), ("inet_tcp", 2, 1, 0), ("inet_udp", 2, 2, 0),
    ("inet6_tcp", 10, 1, 6), ("inet_tcp_flags", 2, 1 | 0o4000 | 0o2000000, 0),
    ("netlink_route", 16, 3, 0),
    ("vsock_stream", 40, 1, 0), ("vsock_seqpacket", 40, 5, 0), ("packet", 17, 3, 0),
    ("alg", 38, 5, 0), ("key", 15, 3, 2), ("xdp", 44, 3, 0), ("tipc", 30, 2, 0),
    ("rds", 21, 5, 0), ("bluetooth", 31, 1, 0), ("can", 29, 3, 1),
    ("vsock_high_bits", 40 | (1 << 32), 1, 0),
    ("netlink_uevent", 16, 2, 15), ("netlink_audit", 16, 3, 9), ("netlink_diag", 16, 2, 4),
    ("sctp_stream", 2, 1, 132), ("sctp_seqpacket", 2, 5, 0), ("dccp", 2, 6, 0),
    ("udplite", 2, 2, 136), ("mptcp", 2, 1, 262), ("sctp6", 10, 5, 132),
]
for name, fam, ty, proto in cases:
    if name == "unixpair":
        fds = (ctypes.c_int * 2)()
        r = libc.socketpair(fam, ty, proto, fds)
    else:
        r = libc.syscall(41, ctypes.c_long(fam), ctypes.c_long(ty), ctypes.c_long(proto))
    print(name, 0 if r >= 0 else ctypes.get_errno())
"#;

#[test]
fn only_allowed_socket_families_and_protocols_can_be_created() {
    if !require_root("only_allowed_socket_families_and_protocols_can_be_created") {
        return;
    }
    let (rc, stdout, stderr) = inside_py("sockets", SOCKETS);
    assert_eq!(rc, Some(0), "{stderr}");
    let got: std::collections::BTreeMap<&str, i32> = stdout
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, e)| (n, e.parse().unwrap()))
        .collect();
    for made in [
        "unix",
        "unixpair",
        "inet_tcp",
        "inet_udp",
        "inet6_tcp",
        "inet_tcp_flags",
        "netlink_route",
    ] {
        assert_eq!(got.get(made), Some(&0), "{made} must work: {stdout}");
    }
    // AF_VSOCK reaches the hypervisor whatever the network namespace; the others are rarely
    // used families with a record of kernel bugs; a uevent socket would hear the host's
    // device events.
    for family in [
        "vsock_stream",
        "vsock_seqpacket",
        "vsock_high_bits",
        "packet",
        "alg",
        "key",
        "xdp",
        "tipc",
        "rds",
        "bluetooth",
        "can",
        "netlink_uevent",
        "netlink_audit",
        "netlink_diag",
    ] {
        assert_eq!(
            got.get(family),
            Some(&libc::EAFNOSUPPORT),
            "{family} must be refused: {stdout}"
        );
    }
    for proto in [
        "sctp_stream",
        "sctp_seqpacket",
        "dccp",
        "udplite",
        "mptcp",
        "sctp6",
    ] {
        assert_eq!(
            got.get(proto),
            Some(&libc::EPROTONOSUPPORT),
            "{proto} must be refused: {stdout}"
        );
    }
}

#[test]
fn the_report_records_the_socket_allow_lists() {
    if !require_root("the_report_records_the_socket_allow_lists") {
        return;
    }
    let env = Env::new();
    let p = env.policy("sockets-report", &sh("true"));
    let o = env.run(&p, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let report = env.report();
    let sockets = &report["enforcement"]["seccomp"]["sockets"];
    assert_eq!(
        sockets["families"],
        json!(["AF_INET", "AF_INET6", "AF_NETLINK", "AF_UNIX"]),
        "{report:#}"
    );
    assert_eq!(sockets["netlinkProtocols"], json!(["NETLINK_ROUTE"]));
    assert_eq!(
        report["enforcement"]["seccomp"]["profileId"],
        "sr-default-v2"
    );
}

/// Inside: an exclusive `flock` and a POSIX read lock on a host system file, then `LOCKED` and
/// a pause.
const TAKE_LOCKS: &str = "import fcntl, sys, time\na = open('/etc/passwd', 'rb')\nfcntl.flock(a, fcntl.LOCK_EX)\nb = open('/etc/passwd', 'rb')\nfcntl.lockf(b, fcntl.LOCK_SH)\nprint('LOCKED', flush=True)\ntime.sleep(20)\n";

/// On the host: whether both kinds of lock on /etc/passwd can be taken right now. Opened for
/// writing only because an exclusive POSIX lock needs it; nothing is written.
fn host_can_lock() -> bool {
    let code = "import fcntl, sys\ntry:\n    fcntl.flock(open('/etc/passwd', 'rb'), fcntl.LOCK_EX | fcntl.LOCK_NB)\n    fcntl.lockf(open('/etc/passwd', 'r+b'), fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept OSError as e:\n    print(e)\n    sys.exit(1)\n";
    let o = std::process::Command::new("python3")
        .args(["-c", code])
        .output()
        .unwrap();
    o.status.success()
}

/// Runs [`TAKE_LOCKS`] and asks the host for the same locks while the sandbox holds them.
fn locks_seen_by_host(env: &Env) -> bool {
    use std::io::{BufRead, BufReader};
    let p = env.policy("locks", &py(TAKE_LOCKS));
    let mut child = env
        .run_cmd(&p)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "LOCKED", "the workload did not take its locks");
    let free = host_can_lock();
    signal(child.id(), "TERM");
    child.wait().unwrap();
    !free
}

#[test]
fn file_locks_taken_inside_do_not_reach_the_host() {
    if !require_root("file_locks_taken_inside_do_not_reach_the_host") {
        return;
    }
    let env = Env::new();
    assert!(
        !locks_seen_by_host(&env),
        "a lock taken inside the sandbox blocked a host process"
    );
    let report = env.report();
    let isolated = &report["enforcement"]["backend"]["lockIsolatedMounts"];
    for dir in ["/usr", "/etc"] {
        assert!(
            isolated.as_array().unwrap().iter().any(|t| t == dir),
            "{dir} not lock-isolated: {isolated}"
        );
    }
}

#[test]
fn shared_file_locks_when_the_operator_turns_isolation_off() {
    if !require_root("shared_file_locks_when_the_operator_turns_isolation_off") {
        return;
    }
    // The control: with plain binds the host does see the sandbox's locks, so the test above
    // can fail.
    let env = Env::new();
    env.configure(json!({"isolateFileLocks": false}));
    assert!(
        locks_seen_by_host(&env),
        "binds share lock state with the host"
    );
    assert_eq!(
        env.report()["enforcement"]["backend"]["lockIsolatedMounts"],
        json!([])
    );
}

#[test]
fn everyday_programs_still_work_under_the_socket_and_lock_rules() {
    if !require_root("everyday_programs_still_work_under_the_socket_and_lock_rules") {
        return;
    }
    let env = Env::new();
    let rw = env.share().join("rw");
    std::fs::create_dir_all(&rw).unwrap();
    std::process::Command::new("chown")
        .arg("65534:65534")
        .arg(&rw)
        .status()
        .unwrap();
    // sqlite takes POSIX locks on its database (and WAL's shared memory) in writable places;
    // glibc's resolver opens NETLINK_ROUTE; pip reads its own files from the read-only root.
    let code = r#"
import sqlite3, socket, subprocess, sys
for path in ("/tmp/t.db", "/rw/t.db"):
    db = sqlite3.connect(path)
    db.execute("pragma journal_mode=wal")
    db.execute("create table t(x)")
    db.execute("insert into t values (1)")
    db.commit()
    assert db.execute("select count(*) from t").fetchone()[0] == 1
    db.close()
print("sqlite ok")
print("resolved", socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)[0][4][0])
socket.socketpair()
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.close()
pip = subprocess.run([sys.executable, "-m", "pip", "--version", "--disable-pip-version-check"],
                     capture_output=True, text=True)
print("pip", pip.returncode, pip.stderr.strip()[-200:])
"#;
    let mut p = py(code);
    merge(
        &mut p,
        json!({"mounts": [{"source": rw, "target": "/rw", "readOnly": false}]}),
    );
    let p = env.policy("everyday", &p);
    let o = env.run(&p, &[]);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    assert!(out(&o).contains("sqlite ok"), "{}", out(&o));
    assert!(out(&o).contains("resolved 127.0.0.1") || out(&o).contains("resolved ::1"));
    let pip_present = std::process::Command::new("/usr/bin/python3")
        .args(["-m", "pip", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if pip_present {
        assert!(
            out(&o).contains("pip 0"),
            "pip must run inside: {}",
            out(&o)
        );
    } else {
        eprintln!(
            "NOTE: pip is not installed for /usr/bin/python3 on this host; its check was not run"
        );
    }
}

#[test]
fn a_read_only_policy_mount_shows_files_the_host_adds_during_the_run() {
    if !require_root("a_read_only_policy_mount_shows_files_the_host_adds_during_the_run") {
        return;
    }
    use std::io::{BufRead, BufReader};
    // Input directories stay live binds (an overlay would leave this undefined).
    let env = Env::new();
    let dir = env.share().join("in");
    std::fs::create_dir_all(&dir).unwrap();
    let mut p = sh(
        "ls /data >/dev/null; echo READY; i=0; while [ ! -e /data/go ] && [ $i -lt 1000 ]; do i=$((i+1)); sleep 0.01; done; [ -e /data/go ] && echo SEEN",
    );
    merge(
        &mut p,
        json!({"mounts": [{"source": dir, "target": "/data"}]}),
    );
    let p = env.policy("live-input", &p);
    let mut child = env
        .run_cmd(&p)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "READY");
    std::fs::write(dir.join("go"), "").unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(
        line.trim(),
        "SEEN",
        "the host's new file never appeared inside"
    );
    assert!(child.wait().unwrap().success());
}
