//! proptest strategies for valid messages and frames (every rule in validate.rs kept).

use proptest::collection::{btree_map, btree_set, vec};
use proptest::prelude::*;
use proptest::strategy::Union;
use sr_agent_proto::message::*;
use sr_agent_proto::{Data, Frame, ProtocolVersion, Sha256Digest, Stream};

/// Short, non-empty, no NUL; any other character (quotes, backslashes, control characters,
/// non-ASCII) so that JSON escaping is exercised.
pub fn short() -> impl Strategy<Value = String> {
    "[^\u{0}]{1,12}"
}

/// A C string: possibly empty, no NUL.
pub fn c_string() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,16}"
}

/// Free text: anything, NUL included.
pub fn text() -> impl Strategy<Value = String> {
    "(?s).{0,40}"
}

/// A normalized absolute path.
pub fn path() -> impl Strategy<Value = String> {
    vec("[^/\u{0}]{1,8}", 0..4)
        .prop_filter("no . or .. components", |cs| {
            cs.iter().all(|c| c != "." && c != "..")
        })
        .prop_map(|cs| {
            if cs.is_empty() {
                "/".to_string()
            } else {
                cs.iter().map(|c| format!("/{c}")).collect()
            }
        })
}

fn sorted_names() -> impl Strategy<Value = Vec<String>> {
    btree_set(short(), 0..4).prop_map(|s| s.into_iter().collect())
}

fn version() -> impl Strategy<Value = ProtocolVersion> {
    (any::<u16>(), any::<u16>()).prop_map(|(major, minor)| ProtocolVersion { major, minor })
}

fn digest() -> impl Strategy<Value = Sha256Digest> {
    any::<[u8; 32]>().prop_map(Sha256Digest)
}

fn signal() -> impl Strategy<Value = i32> {
    1..=64i32
}

fn mode() -> impl Strategy<Value = u32> {
    0..=0o7777u32
}

fn format() -> impl Strategy<Value = TransferFormat> {
    prop_oneof![Just(TransferFormat::File), Just(TransferFormat::Tar)]
}

fn tty() -> impl Strategy<Value = TtySize> {
    (1..=u16::MAX, 1..=u16::MAX).prop_map(|(rows, cols)| TtySize { rows, cols })
}

fn exec() -> impl Strategy<Value = Exec> {
    (
        any::<u64>(),
        (short(), vec(c_string(), 0..4)),
        btree_map("[A-Za-z_][A-Za-z0-9_]{0,6}", c_string(), 0..4),
        proptest::option::of(path()),
        proptest::option::of(1..=u64::MAX),
        prop_oneof![Just(StdinMode::None), Just(StdinMode::Pipe)],
        proptest::option::of(tty()),
        (
            proptest::option::of(0..u32::MAX),
            proptest::option::of(0..u32::MAX),
        ),
    )
        .prop_map(
            |(id, (arg0, rest), env, cwd, timeout_ms, stdin, tty, (uid, gid))| Exec {
                id,
                argv: std::iter::once(arg0).chain(rest).collect(),
                // Reversed so that the order on the wire is not always sorted.
                env: env
                    .into_iter()
                    .rev()
                    .map(|(name, value)| EnvVar { name, value })
                    .collect(),
                cwd,
                timeout_ms,
                stdin,
                tty,
                user: ExecUser { uid, gid },
            },
        )
}

fn confinement() -> impl Strategy<Value = Confinement> {
    let landlock = (
        any::<u32>(),
        prop_oneof![
            Just(LandlockStatus::FullyEnforced),
            Just(LandlockStatus::PartiallyEnforced),
            Just(LandlockStatus::NotEnforced),
            Just(LandlockStatus::Unavailable),
        ],
        vec(c_string(), 0..3),
        vec(c_string(), 0..2),
        vec(c_string(), 0..2),
    )
        .prop_map(|(abi, status, rules, skipped, scopes)| LandlockFacts {
            abi,
            status,
            rules,
            skipped,
            scopes,
        });
    let seccomp =
        (short(), short(), any::<u64>()).prop_map(|(profile, digest, instructions)| SeccompFacts {
            profile,
            digest,
            instructions,
            sockets: None,
        });
    (
        any::<bool>(),
        any::<u64>(),
        c_string(),
        c_string(),
        proptest::option::of(landlock),
        proptest::option::of(seccomp),
        vec(
            (short(), any::<u64>()).prop_map(|(name, value)| Rlimit { name, value }),
            0..3,
        ),
    )
        .prop_map(
            |(no_new_privs, capabilities_dropped, uid_map, gid_map, landlock, seccomp, rlimits)| {
                Confinement {
                    no_new_privs,
                    capabilities_dropped,
                    uid_map,
                    gid_map,
                    landlock,
                    seccomp,
                    rlimits,
                }
            },
        )
}

fn file_info() -> impl Strategy<Value = FileInfo> {
    (
        prop_oneof![
            Just(FileKind::File),
            Just(FileKind::Dir),
            Just(FileKind::Symlink),
            Just(FileKind::Other),
        ],
        any::<u64>(),
        mode(),
        any::<i64>(),
        0..1_000_000_000u32,
        "[^\u{0}]{1,16}",
    )
        .prop_map(
            |(kind, size, mode, mtime_sec, mtime_nsec, target)| FileInfo {
                kind,
                size,
                mode,
                mtime_sec,
                mtime_nsec,
                link_target: (kind == FileKind::Symlink).then_some(target),
            },
        )
}

fn dir_entry() -> impl Strategy<Value = DirEntry> {
    ("[^/\u{0}]{1,12}", file_info())
        .prop_filter("not . or ..", |(n, _)| n != "." && n != "..")
        .prop_map(|(name, info)| DirEntry { name, info })
}

fn exit_status() -> impl Strategy<Value = ExitStatus> {
    prop_oneof![
        (0..=255i32).prop_map(ExitStatus::Code),
        signal().prop_map(ExitStatus::Signal),
    ]
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        Just(ErrorCode::NotFound),
        Just(ErrorCode::PermissionDenied),
        Just(ErrorCode::OutsideRoot),
        Just(ErrorCode::TooLarge),
        Just(ErrorCode::Invalid),
        Just(ErrorCode::Busy),
        Just(ErrorCode::Unsupported),
        Just(ErrorCode::DigestMismatch),
        Just(ErrorCode::Protocol),
        Just(ErrorCode::Internal),
    ]
}

fn id_only() -> impl Strategy<Value = IdOnly> {
    any::<u64>().prop_map(|id| IdOnly { id })
}

fn path_request() -> impl Strategy<Value = PathRequest> {
    (any::<u64>(), path()).prop_map(|(id, path)| PathRequest { id, path })
}

/// Any valid message, every type equally likely.
pub fn message() -> impl Strategy<Value = Message> {
    let id = any::<u64>;
    let arms: Vec<BoxedStrategy<Message>> = vec![
        (
            version(),
            prop_oneof![Just(Role::Host), Just(Role::Agent)],
            short(),
            short(),
            sorted_names(),
        )
            .prop_map(|(version, role, name, software_version, features)| {
                Message::Hello(Hello {
                    version,
                    role,
                    name,
                    software_version,
                    features,
                })
            })
            .boxed(),
        (version(), short(), short(), sorted_names())
            .prop_map(|(version, name, software_version, features)| {
                Message::HelloAck(HelloAck {
                    version,
                    name,
                    software_version,
                    features,
                })
            })
            .boxed(),
        (version(), version(), text())
            .prop_map(|(supported, received, message)| {
                Message::VersionMismatch(VersionMismatch {
                    supported,
                    received,
                    message,
                })
            })
            .boxed(),
        (
            proptest::option::of(short()),
            vec(
                (path(), any::<bool>(), proptest::option::of(path())).prop_map(
                    |(target, read_only, source)| MountFact {
                        target,
                        read_only,
                        lock_isolated: source.is_none(),
                        source,
                    },
                ),
                0..3,
            ),
        )
            .prop_map(|(kernel_release, mounts)| {
                Message::Ready(Ready {
                    kernel_release,
                    mounts,
                })
            })
            .boxed(),
        exec().prop_map(Message::Exec).boxed(),
        (
            id(),
            1..=i32::MAX as u32,
            any::<u32>(),
            proptest::option::of(confinement().prop_map(Box::new)),
        )
            .prop_map(|(id, pid, stdin_window, confinement)| {
                Message::Started(Started {
                    id,
                    pid,
                    stdin_window,
                    confinement,
                })
            })
            .boxed(),
        (id(), 1..=u32::MAX)
            .prop_map(|(id, bytes)| Message::StdinCredit(StdinCredit { id, bytes }))
            .boxed(),
        id_only().prop_map(Message::StdinClose).boxed(),
        (id(), signal())
            .prop_map(|(id, signal)| Message::Signal(Signal { id, signal }))
            .boxed(),
        (id(), tty())
            .prop_map(|(id, t)| {
                Message::Resize(Resize {
                    id,
                    rows: t.rows,
                    cols: t.cols,
                })
            })
            .boxed(),
        (
            id(),
            exit_status(),
            any::<bool>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(
                |(id, status, timed_out, duration_ms, stdout_bytes, stderr_bytes, stdin_bytes)| {
                    Message::Exit(Exit {
                        id,
                        status,
                        timed_out,
                        duration_ms,
                        stdout_bytes,
                        stderr_bytes,
                        stdin_bytes,
                    })
                },
            )
            .boxed(),
        (id(), path(), mode(), any::<u64>(), format())
            .prop_map(|(id, path, mode, size, format)| {
                Message::PutBegin(PutBegin {
                    id,
                    path,
                    mode,
                    size,
                    format,
                })
            })
            .boxed(),
        (id(), digest())
            .prop_map(|(id, sha256)| Message::PutEnd(PutEnd { id, sha256 }))
            .boxed(),
        (id(), any::<u64>(), digest())
            .prop_map(|(id, size, sha256)| Message::PutDone(PutDone { id, size, sha256 }))
            .boxed(),
        (id(), path(), format())
            .prop_map(|(id, path, format)| Message::Get(Get { id, path, format }))
            .boxed(),
        (id(), proptest::option::of(any::<u64>()), mode(), format())
            .prop_map(|(id, size, mode, format)| {
                Message::GetBegin(GetBegin {
                    id,
                    size,
                    mode,
                    format,
                })
            })
            .boxed(),
        (id(), any::<u64>(), digest())
            .prop_map(|(id, size, sha256)| Message::GetEnd(GetEnd { id, size, sha256 }))
            .boxed(),
        path_request().prop_map(Message::List).boxed(),
        (id(), vec(dir_entry(), 0..4), any::<bool>())
            .prop_map(|(id, entries, done)| Message::Listing(Listing { id, entries, done }))
            .boxed(),
        path_request().prop_map(Message::Stat).boxed(),
        (id(), file_info())
            .prop_map(|(id, info)| Message::StatResult(StatResult { id, info }))
            .boxed(),
        (id(), path(), any::<bool>())
            .prop_map(|(id, path, recursive)| {
                Message::Remove(Remove {
                    id,
                    path,
                    recursive,
                })
            })
            .boxed(),
        id_only().prop_map(Message::Removed).boxed(),
        id_only().prop_map(Message::StatsRequest).boxed(),
        (
            id(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(
                |(id, memory_current_bytes, memory_peak_bytes, cpu_usec, pids, uptime_ms)| {
                    Message::Stats(Stats {
                        id,
                        memory_current_bytes,
                        memory_peak_bytes,
                        cpu_usec,
                        pids,
                        uptime_ms,
                    })
                },
            )
            .boxed(),
        id_only().prop_map(Message::Shutdown).boxed(),
        id_only().prop_map(Message::ShutdownAck).boxed(),
        (proptest::option::of(any::<u64>()), error_code(), text())
            .prop_map(|(id, code, message)| {
                Message::Error(ErrorReply {
                    id,
                    code,
                    message,
                    phase: None,
                    errno: None,
                })
            })
            .boxed(),
    ];
    Union::new(arms)
}

/// Any valid data frame (any stream; the caller keeps the ones of its direction).
pub fn data() -> impl Strategy<Value = Data> {
    (
        prop_oneof![
            Just(Stream::Stdin),
            Just(Stream::Stdout),
            Just(Stream::Stderr),
            Just(Stream::File),
        ],
        any::<u64>(),
        vec(any::<u8>(), 1..300),
    )
        .prop_map(|(stream, id, bytes)| Data { stream, id, bytes })
}

/// Any valid frame.
pub fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![3 => message().prop_map(Frame::Control), 1 => data().prop_map(Frame::Data)]
}
