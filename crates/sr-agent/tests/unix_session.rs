//! The agent in its test mode (`--listen-unix`), driven as the host drives it over vsock: the
//! setup line, then the agent protocol. Runs as root (execs take the plan's uid 65534).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sr_agent_proto::message::{Exec, ExecUser, ExitStatus, Hello, IdOnly, PathRequest, StdinMode};
use sr_agent_proto::{Decoder, Encoder, Frame, Message, PROTOCOL_VERSION, Role, Stream};
use sr_bundle::*;
use sr_runner::microvm::guest_setup::{GuestSetup, GuestSetupReply};

fn owned(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// The guest plan as the compiler makes it for a microVM: no namespaces, the guest identity,
/// only the agent's own tmpfs (here a host directory standing in for the guest's /tmp).
fn setup(tmp: &Path) -> GuestSetup {
    let tmp = tmp.display().to_string();
    GuestSetup {
        run_id: "run-agent-test".into(),
        process: ProcessPlan {
            command: "/bin/true".into(),
            args: vec![],
            env: BTreeMap::from([("PATH".into(), "/usr/bin:/bin".into())]),
            cwd: "/".into(),
            uid: 65534,
            gid: 65534,
            timeout_ms: 20_000,
            output: OutputPlan {
                max_bytes: 1 << 20,
                on_limit: OutputAction::Truncate,
            },
        },
        guest: SandboxPlan {
            namespaces: vec![],
            host_uid: 65534,
            host_gid: 65534,
            hostname: "safe-run".into(),
            mounts: vec![MountStep::Tmpfs {
                target: tmp.clone(),
                size_bytes: 16 << 20,
                mode: 0o1777,
            }],
            landlock: LandlockPlan {
                required: true,
                min_abi: 1,
                rules: vec![
                    LandlockRule {
                        path: "/".into(),
                        access: "ro".into(),
                    },
                    LandlockRule {
                        path: tmp,
                        access: "rw".into(),
                    },
                ],
            },
            seccomp: SeccompPlan {
                profile_id: "sr-default-v2".into(),
                deny_action: "errno:EPERM".into(),
                denied_syscalls: owned(&["bpf", "keyctl", "mount", "ptrace", "setns", "unshare"]),
                denied_clone_flags: owned(&["CLONE_NEWNS", "CLONE_NEWUSER"]),
                enosys_syscalls: vec!["clone3".into()],
                allowed_socket_families: owned(&sr_compiler::seccomp::ALLOWED_SOCKET_FAMILIES),
                allowed_netlink_protocols: owned(&sr_compiler::seccomp::ALLOWED_NETLINK_PROTOCOLS),
                allowed_inet_socket_types: owned(&sr_compiler::seccomp::ALLOWED_INET_SOCKET_TYPES),
                allowed_ip_protocols: owned(&sr_compiler::seccomp::ALLOWED_IP_PROTOCOLS),
            },
            file_locks: Default::default(),
            rlimits: BTreeMap::from([("nofile".into(), 256)]),
            no_new_privs: true,
            capabilities: vec![],
        },
        entropy: "ab".repeat(64),
        restored: None,
    }
}

struct Agent {
    child: Child,
    _dir: tempfile::TempDir,
    tmp: PathBuf,
    sock: UnixStream,
}

fn start() -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    // The exec identity (65534) must reach it, as the guest's /tmp (1777).
    for p in [dir.path(), tmp.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o1777)).unwrap();
    }
    let path = dir.path().join("agent.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_safe-run-agent"))
        .arg("--listen-unix")
        .arg(&path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    let sock = loop {
        match UnixStream::connect(&path) {
            Ok(s) => break s,
            Err(_) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("the agent does not listen on {}: {e}", path.display()),
        }
    };
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    Agent {
        child,
        _dir: dir,
        tmp,
        sock,
    }
}

impl Agent {
    /// Sends `line` and a newline; returns the agent's reply line.
    fn setup_line(&mut self, line: &[u8]) -> GuestSetupReply {
        let mut bytes = line.to_vec();
        bytes.push(b'\n');
        self.sock.write_all(&bytes).unwrap();
        // One byte at a time: nothing after the reply's newline may be consumed.
        let mut reply = Vec::new();
        let mut b = [0u8; 1];
        loop {
            self.sock.read_exact(&mut b).unwrap();
            if b[0] == b'\n' {
                break;
            }
            reply.push(b[0]);
        }
        serde_json::from_slice(&reply)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&reply)))
    }

    /// Waits for the agent to exit; its status and stderr.
    fn finish(mut self) -> (i32, String) {
        drop(self.sock);
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            BufReader::new(&mut e).read_to_string(&mut err).unwrap();
        }
        let status = self.child.wait().unwrap();
        (status.code().unwrap_or(-1), err)
    }
}

/// The host side of the agent protocol, minimal.
struct Host<'a> {
    sock: &'a mut UnixStream,
    enc: Encoder,
    dec: Decoder,
}

impl<'a> Host<'a> {
    fn new(sock: &'a mut UnixStream) -> Self {
        Host {
            sock,
            enc: Encoder::new(Role::Host),
            dec: Decoder::new(Role::Host),
        }
    }
    fn send(&mut self, m: &Message) {
        let mut out = Vec::new();
        self.enc.message(m, &mut out).unwrap();
        self.sock.write_all(&out).unwrap();
    }
    fn next(&mut self) -> Frame {
        let mut buf = [0u8; 65536];
        loop {
            if let Some(f) = self.dec.next_frame().unwrap() {
                return f;
            }
            let n = self.sock.read(&mut buf).unwrap();
            assert!(n > 0, "the agent closed the connection");
            self.dec.feed(&buf[..n]);
        }
    }
    fn hello(&mut self) {
        self.send(&Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            role: Role::Host,
            name: "sr-agent-test".into(),
            software_version: "0".into(),
            features: vec![],
        }));
        match self.next() {
            Frame::Control(Message::HelloAck(ack)) => assert_eq!(ack.name, "safe-run-agent"),
            other => panic!("expected helloAck, got {other:?}"),
        }
        match self.next() {
            Frame::Control(Message::Ready(r)) => {
                assert!(r.kernel_release.is_some());
                assert!(r.mounts.iter().any(|m| m.target == "/" && m.read_only));
            }
            other => panic!("expected ready, got {other:?}"),
        }
    }
    /// Runs argv; its stdout and exit status.
    fn run(&mut self, id: u64, argv: &[&str]) -> (Vec<u8>, ExitStatus) {
        self.send(&Message::Exec(Exec {
            id,
            argv: owned(argv),
            env: vec![],
            cwd: None,
            timeout_ms: Some(10_000),
            stdin: StdinMode::None,
            tty: None,
            user: ExecUser::default(),
        }));
        let mut out = Vec::new();
        loop {
            match self.next() {
                Frame::Control(Message::Started(s)) => {
                    assert_eq!(s.id, id);
                    let c = s.confinement.expect("started carries its confinement");
                    assert!(c.no_new_privs);
                }
                Frame::Data(d) if d.stream == Stream::Stdout => out.extend_from_slice(&d.bytes),
                Frame::Data(_) => {}
                Frame::Control(Message::Exit(e)) => return (out, e.status),
                other => panic!("exec {id}: unexpected {other:?}"),
            }
        }
    }
}

#[test]
fn setup_hello_and_an_exec_of_echo() {
    let mut agent = start();
    let tmp = agent.tmp.clone();
    let line = serde_json::to_vec(&setup(&tmp)).unwrap();
    match agent.setup_line(&line) {
        GuestSetupReply::Ok {
            kernel_release,
            modules,
            landlock_abi,
            seccomp,
            guest_cid,
            crng_reseeded,
        } => {
            assert_eq!(guest_cid, None, "a Unix socket has no vsock context id");
            assert!(!crng_reseeded, "only pid 1 reseeds the kernel's generator");
            assert!(!kernel_release.is_empty());
            assert!(modules.is_empty(), "the test mode loads no modules");
            assert!(landlock_abi >= 1, "this host has Landlock");
            assert!(seccomp);
        }
        GuestSetupReply::Failed { phase, message } => panic!("{phase}: {message}"),
    }
    let mut host = Host::new(&mut agent.sock);
    host.hello();
    let (out, status) = host.run(1, &["/bin/echo", "hello from the guest"]);
    assert_eq!(String::from_utf8_lossy(&out), "hello from the guest\n");
    assert_eq!(status, ExitStatus::Code(0));
    // Its identity is the plan's, and a non-zero exit comes back as it is.
    let (out, status) = host.run(2, &["/bin/sh", "-c", "id -u; exit 3"]);
    assert_eq!(String::from_utf8_lossy(&out), "65534\n");
    assert_eq!(status, ExitStatus::Code(3));
    // A missing binary is an exact error, not exit 127.
    host.send(&Message::Exec(Exec {
        id: 3,
        argv: owned(&["/nonexistent"]),
        env: vec![],
        cwd: None,
        timeout_ms: None,
        stdin: StdinMode::None,
        tty: None,
        user: ExecUser::default(),
    }));
    match host.next() {
        Frame::Control(Message::Error(e)) => {
            assert_eq!(e.id, Some(3));
            assert_eq!(e.phase.as_deref(), Some("launch.exec"));
        }
        other => panic!("expected an error, got {other:?}"),
    }
    // File requests resolve under the plan's tmpfs, and nowhere else.
    host.send(&Message::Stat(PathRequest {
        id: 4,
        path: tmp.display().to_string(),
    }));
    assert!(matches!(
        host.next(),
        Frame::Control(Message::StatResult(_))
    ));
    host.send(&Message::Stat(PathRequest {
        id: 5,
        path: "/etc/passwd".into(),
    }));
    match host.next() {
        Frame::Control(Message::Error(e)) => {
            assert_eq!(e.code, sr_agent_proto::ErrorCode::OutsideRoot)
        }
        other => panic!("expected outsideRoot, got {other:?}"),
    }
    host.send(&Message::Shutdown(IdOnly { id: 6 }));
    assert!(matches!(
        host.next(),
        Frame::Control(Message::ShutdownAck(IdOnly { id: 6 }))
    ));
    let (code, err) = agent.finish();
    assert_eq!(code, 0, "{err}");
}

fn refused(line: &[u8]) -> (String, String, String) {
    let mut agent = start();
    let reply = agent.setup_line(line);
    let (code, err) = agent.finish();
    assert_eq!(code, 1, "a refused setup ends the agent with 1: {err}");
    match reply {
        GuestSetupReply::Failed { phase, message } => (phase, message, err),
        ok => panic!("accepted: {ok:?}"),
    }
}

#[test]
fn a_line_that_is_not_a_setup_is_refused_precisely() {
    let (phase, message, err) = refused(br#"{"runId": 7}"#);
    assert_eq!(phase, "guest.setup");
    assert!(
        message.starts_with("the setup line is not a GuestSetup: "),
        "{message}"
    );
    assert!(message.contains("line 1 column"), "{message}");
    assert!(err.contains("SR-RUN-002 guest.setup"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let (phase, message, _) = refused(b"\xff not json");
    assert_eq!(phase, "guest.setup");
    assert!(message.contains("not a GuestSetup"), "{message}");
}

#[test]
fn entropy_that_is_not_hex_is_refused() {
    let mut s = setup(Path::new("/tmp"));
    s.entropy = "not hex".into();
    let (phase, message, _) = refused(&serde_json::to_vec(&s).unwrap());
    assert_eq!(phase, "guest.entropy");
    assert!(message.contains("not hex"), "{message}");
}

#[test]
fn a_required_landlock_the_kernel_lacks_is_refused() {
    let mut s = setup(Path::new("/tmp"));
    s.guest.landlock.min_abi = 99;
    let (phase, message, _) = refused(&serde_json::to_vec(&s).unwrap());
    assert_eq!(phase, "guest.landlock");
    assert!(message.contains("requires Landlock ABI >= 99"), "{message}");
}

#[test]
fn a_root_identity_is_refused() {
    let mut s = setup(Path::new("/tmp"));
    s.guest.host_uid = 0;
    let (phase, _, _) = refused(&serde_json::to_vec(&s).unwrap());
    assert_eq!(phase, "guest.identity");
}

#[test]
fn a_probe_connection_is_not_the_session() {
    let mut agent = start();
    // The host's readiness probe connects and closes without a byte; the agent accepts again.
    let path = agent._dir.path().join("agent.sock");
    drop(std::mem::replace(
        &mut agent.sock,
        UnixStream::connect(&path).unwrap(),
    ));
    let line = serde_json::to_vec(&setup(&agent.tmp.clone())).unwrap();
    assert!(matches!(
        agent.setup_line(&line),
        GuestSetupReply::Ok { .. }
    ));
    let (code, err) = agent.finish();
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_connection_that_never_sends_its_setup_line_does_not_hold_the_agent() {
    let mut agent = start();
    // A host that connected and gave up without closing: the agent must not wait on it for
    // ever. The next connection is served once the setup wait (10 s) has passed.
    let path = agent._dir.path().join("agent.sock");
    let silent = std::mem::replace(&mut agent.sock, UnixStream::connect(&path).unwrap());
    let t = std::time::Instant::now();
    let line = serde_json::to_vec(&setup(&agent.tmp.clone())).unwrap();
    assert!(matches!(
        agent.setup_line(&line),
        GuestSetupReply::Ok { .. }
    ));
    assert!(
        t.elapsed() >= std::time::Duration::from_secs(9),
        "{:?}",
        t.elapsed()
    );
    drop(silent);
    let (code, err) = agent.finish();
    assert_eq!(code, 0, "{err}");
}
