//! One valid sample of every message, shared by the test files.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod strategies;

use sr_agent_proto::message::*;
use sr_agent_proto::{PROTOCOL_VERSION, Sha256Digest};

pub fn digest(byte: u8) -> Sha256Digest {
    Sha256Digest([byte; 32])
}

pub fn file_info() -> FileInfo {
    FileInfo {
        kind: FileKind::File,
        size: 12,
        mode: 0o644,
        mtime_sec: 1_780_000_000,
        mtime_nsec: 5,
        link_target: None,
    }
}

pub fn exec() -> Exec {
    Exec {
        id: 3,
        argv: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
        env: vec![
            EnvVar {
                name: "PATH".into(),
                value: "/usr/bin:/bin".into(),
            },
            EnvVar {
                name: "LANG".into(),
                value: "C.UTF-8".into(),
            },
        ],
        cwd: Some("/work".into()),
        timeout_ms: Some(30_000),
        stdin: StdinMode::Pipe,
        tty: Some(TtySize { rows: 24, cols: 80 }),
        user: ExecUser {
            uid: Some(1000),
            gid: None,
        },
    }
}

/// Every message type once, host-to-agent ones first.
pub fn samples() -> Vec<Message> {
    vec![
        Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            role: Role::Host,
            name: "safe-run".into(),
            software_version: "0.1.0".into(),
            features: vec!["tar".into(), "tty".into()],
        }),
        Message::Exec(exec()),
        Message::StdinClose(IdOnly { id: 3 }),
        Message::Signal(Signal { id: 3, signal: 15 }),
        Message::Resize(Resize {
            id: 3,
            rows: 50,
            cols: 132,
        }),
        Message::PutBegin(PutBegin {
            id: 4,
            path: "/work/in.txt".into(),
            mode: 0o600,
            size: 12,
            format: TransferFormat::File,
        }),
        Message::PutEnd(PutEnd {
            id: 4,
            sha256: digest(0x11),
        }),
        Message::Get(Get {
            id: 5,
            path: "/work/out".into(),
            format: TransferFormat::Tar,
        }),
        Message::List(PathRequest {
            id: 6,
            path: "/work".into(),
        }),
        Message::Stat(PathRequest {
            id: 7,
            path: "/".into(),
        }),
        Message::Remove(Remove {
            id: 8,
            path: "/work/tmp".into(),
            recursive: true,
        }),
        Message::StatsRequest(IdOnly { id: 9 }),
        Message::Shutdown(IdOnly { id: 10 }),
        Message::HelloAck(HelloAck {
            version: PROTOCOL_VERSION,
            name: "safe-run-agent".into(),
            software_version: "0.1.0".into(),
            features: vec!["tty".into()],
        }),
        Message::VersionMismatch(VersionMismatch {
            supported: PROTOCOL_VERSION,
            received: sr_agent_proto::ProtocolVersion { major: 2, minor: 0 },
            message: "protocol 2.0 is not compatible with 1.0".into(),
        }),
        Message::Ready(Ready {
            kernel_release: Some("6.1.0-cloud-amd64".into()),
            mounts: vec![MountFact {
                target: "/work".into(),
                read_only: false,
                source: Some("/srv/work".into()),
                lock_isolated: false,
            }],
        }),
        Message::Started(Started {
            id: 3,
            pid: 2,
            stdin_window: 262_144,
            confinement: Some(Box::new(Confinement {
                no_new_privs: true,
                capabilities_dropped: 41,
                uid_map: "1000 100000 1".into(),
                gid_map: "1000 100000 1".into(),
                landlock: Some(LandlockFacts {
                    abi: 4,
                    status: LandlockStatus::FullyEnforced,
                    rules: vec!["/usr:ro".into(), "/work:rw".into()],
                    skipped: vec![],
                    scopes: vec![],
                }),
                seccomp: Some(SeccompFacts {
                    profile: "default".into(),
                    digest: "sha256:00".into(),
                    instructions: 120,
                    sockets: Some(SocketAllowList {
                        families: vec!["AF_UNIX".into()],
                        ..SocketAllowList::default()
                    }),
                }),
                rlimits: vec![Rlimit {
                    name: "RLIMIT_NOFILE".into(),
                    value: 1024,
                }],
            })),
        }),
        Message::StdinCredit(StdinCredit {
            id: 3,
            bytes: 65_536,
        }),
        Message::Exit(Exit {
            id: 3,
            status: ExitStatus::Code(0),
            timed_out: false,
            duration_ms: 12,
            stdout_bytes: 3,
            stderr_bytes: 0,
            stdin_bytes: 0,
        }),
        Message::PutDone(PutDone {
            id: 4,
            size: 12,
            sha256: digest(0x11),
        }),
        Message::GetBegin(GetBegin {
            id: 5,
            size: None,
            mode: 0o755,
            format: TransferFormat::Tar,
        }),
        Message::GetEnd(GetEnd {
            id: 5,
            size: 10_240,
            sha256: digest(0x22),
        }),
        Message::Listing(Listing {
            id: 6,
            entries: vec![
                DirEntry {
                    name: "in.txt".into(),
                    info: file_info(),
                },
                DirEntry {
                    name: "link".into(),
                    info: FileInfo {
                        kind: FileKind::Symlink,
                        size: 6,
                        mode: 0o777,
                        mtime_sec: -1,
                        mtime_nsec: 0,
                        link_target: Some("in.txt".into()),
                    },
                },
            ],
            done: true,
        }),
        Message::StatResult(StatResult {
            id: 7,
            info: FileInfo {
                kind: FileKind::Dir,
                size: 4096,
                mode: 0o755,
                mtime_sec: 0,
                mtime_nsec: 0,
                link_target: None,
            },
        }),
        Message::Removed(IdOnly { id: 8 }),
        Message::Stats(Stats {
            id: 9,
            memory_current_bytes: 1 << 20,
            memory_peak_bytes: 2 << 20,
            cpu_usec: 1500,
            pids: 2,
            uptime_ms: 900,
        }),
        Message::ShutdownAck(IdOnly { id: 10 }),
        Message::Error(ErrorReply {
            id: Some(5),
            code: ErrorCode::OutsideRoot,
            message: "/work/out resolves outside the root".into(),
            phase: Some("files.put".into()),
            errno: Some(18),
        }),
    ]
}
