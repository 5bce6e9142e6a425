//! The rules beyond JSON shape. Each broken message is refused by the encoder (nothing
//! written) and, sent by hand, by the decoder, with the same field and problem.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use sr_agent_proto::message::*;
use sr_agent_proto::{Decoder, Encoder, Limits, Problem, ProtoError};

fn frame_by_hand(m: &Message) -> Vec<u8> {
    let body = serde_json::to_vec(m).unwrap();
    let mut v = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    v.push(0x01);
    v.extend_from_slice(&body);
    v
}

#[track_caller]
fn refused(m: Message, limits: Limits, field: &str, problem: Problem) {
    let from = match m.direction() {
        Direction::ToHost => Role::Agent,
        _ => Role::Host,
    };
    let mut out = Vec::new();
    let enc = Encoder::with_limits(from, limits).message(&m, &mut out);
    let check = |err: ProtoError, side: &str| match err {
        ProtoError::Invalid {
            message,
            field: f,
            problem: p,
        } => {
            assert_eq!(message, m.type_name(), "{side}");
            assert_eq!((f.as_str(), &p), (field, &problem), "{side}");
        }
        other => panic!("{side}: {other:?}"),
    };
    check(enc.unwrap_err(), "encoder");
    assert!(out.is_empty());
    let mut d = Decoder::with_limits(from.peer(), limits);
    d.feed(&frame_by_hand(&m));
    check(d.next_frame().unwrap_err(), "decoder");
}

fn exec_with(f: impl FnOnce(&mut Exec)) -> Message {
    let mut e = common::exec();
    f(&mut e);
    Message::Exec(e)
}

fn d() -> Limits {
    Limits::default()
}

#[test]
fn argv_rules() {
    refused(exec_with(|e| e.argv.clear()), d(), "argv", Problem::Empty);
    refused(
        exec_with(|e| e.argv[0].clear()),
        d(),
        "argv[0]",
        Problem::Empty,
    );
    refused(
        exec_with(|e| e.argv[2] = "a\0b".into()),
        d(),
        "argv[2]",
        Problem::ContainsNul,
    );
    let small = Limits {
        max_argv: 2,
        max_arg_len: 4,
        ..d()
    };
    refused(
        exec_with(|_| {}),
        small,
        "argv",
        Problem::TooMany { count: 3, max: 2 },
    );
    refused(
        exec_with(|e| e.argv.truncate(1)),
        small,
        "argv[0]",
        Problem::TooLong { len: 7, max: 4 },
    );
}

#[test]
fn env_rules() {
    let var = |name: &str, value: &str| EnvVar {
        name: name.into(),
        value: value.into(),
    };
    refused(
        exec_with(|e| e.env.push(var("", "x"))),
        d(),
        "env[2].name",
        Problem::Empty,
    );
    refused(
        exec_with(|e| e.env.push(var("A=B", "x"))),
        d(),
        "env[2].name",
        Problem::BadChar('='),
    );
    refused(
        exec_with(|e| e.env.push(var("A", "x\0"))),
        d(),
        "env[2].value",
        Problem::ContainsNul,
    );
    refused(
        exec_with(|e| e.env.push(var("PATH", "/x"))),
        d(),
        "env[2].name",
        Problem::Duplicate("PATH".into()),
    );
    let small = Limits {
        max_env: 1,
        max_env_len: 8,
        ..d()
    };
    refused(
        exec_with(|_| {}),
        small,
        "env",
        Problem::TooMany { count: 2, max: 1 },
    );
    refused(
        exec_with(|e| e.env.truncate(1)),
        small,
        "env[0]",
        Problem::TooLong { len: 17, max: 8 },
    );
}

#[test]
fn exec_field_rules() {
    refused(
        exec_with(|e| e.cwd = Some("work".into())),
        d(),
        "cwd",
        Problem::NotAbsolute,
    );
    refused(
        exec_with(|e| e.timeout_ms = Some(0)),
        d(),
        "timeoutMs",
        Problem::OutOfRange {
            value: 0,
            min: 1,
            max: i64::MAX,
        },
    );
    refused(
        exec_with(|e| e.tty = Some(TtySize { rows: 0, cols: 80 })),
        d(),
        "tty.rows",
        Problem::OutOfRange {
            value: 0,
            min: 1,
            max: 65535,
        },
    );
    refused(
        exec_with(|e| e.user.gid = Some(u32::MAX)),
        d(),
        "user.gid",
        Problem::OutOfRange {
            value: u32::MAX.into(),
            min: 0,
            max: i64::from(u32::MAX) - 1,
        },
    );
}

#[test]
fn path_rules() {
    let get = |path: &str| {
        Message::Get(Get {
            id: 1,
            path: path.into(),
            format: TransferFormat::File,
        })
    };
    for (path, problem) in [
        ("relative/x", Problem::NotAbsolute),
        ("", Problem::NotAbsolute),
        ("/a//b", Problem::NotNormalized),
        ("/a/", Problem::NotNormalized),
        ("/a/./b", Problem::NotNormalized),
        ("/a/../../etc/shadow", Problem::NotNormalized),
        ("/..", Problem::NotNormalized),
        ("/a\0", Problem::ContainsNul),
    ] {
        refused(get(path), d(), "path", problem);
    }
    let long = format!("/{}", "a".repeat(4096));
    refused(
        get(&long),
        d(),
        "path",
        Problem::TooLong {
            len: 4097,
            max: 4096,
        },
    );
    // The root and ordinary names with dots are fine.
    for ok in ["/", "/a", "/a/b.c", "/..a/...", "/a b/ü"] {
        Encoder::new(Role::Host)
            .message(&get(ok), &mut Vec::new())
            .unwrap();
    }
    refused(
        Message::Remove(Remove {
            id: 1,
            path: "/x/..".into(),
            recursive: true,
        }),
        d(),
        "path",
        Problem::NotNormalized,
    );
    refused(
        Message::List(PathRequest {
            id: 1,
            path: "x".into(),
        }),
        d(),
        "path",
        Problem::NotAbsolute,
    );
}

#[test]
fn number_ranges() {
    let range = |value, min, max| Problem::OutOfRange { value, min, max };
    refused(
        Message::Signal(Signal { id: 1, signal: 0 }),
        d(),
        "signal",
        range(0, 1, 64),
    );
    refused(
        Message::Signal(Signal { id: 1, signal: 65 }),
        d(),
        "signal",
        range(65, 1, 64),
    );
    refused(
        Message::Resize(Resize {
            id: 1,
            rows: 1,
            cols: 0,
        }),
        d(),
        "cols",
        range(0, 1, 65535),
    );
    refused(
        Message::StdinCredit(StdinCredit { id: 1, bytes: 0 }),
        d(),
        "bytes",
        range(0, 1, u32::MAX.into()),
    );
    refused(
        Message::PutBegin(PutBegin {
            id: 1,
            path: "/f".into(),
            mode: 0o10000,
            size: 0,
            format: TransferFormat::File,
        }),
        d(),
        "mode",
        range(0o10000, 0, 0o7777),
    );
    let exit = |status| {
        Message::Exit(Exit {
            id: 1,
            status,
            timed_out: false,
            duration_ms: 0,
            stdout_bytes: 0,
            stderr_bytes: 0,
            stdin_bytes: 0,
        })
    };
    refused(
        exit(ExitStatus::Code(256)),
        d(),
        "status.code",
        range(256, 0, 255),
    );
    refused(
        exit(ExitStatus::Code(-1)),
        d(),
        "status.code",
        range(-1, 0, 255),
    );
    refused(
        exit(ExitStatus::Signal(0)),
        d(),
        "status.signal",
        range(0, 1, 64),
    );
    refused(
        Message::Started(Started {
            id: 1,
            pid: 0,
            stdin_window: 0,
            confinement: None,
        }),
        d(),
        "pid",
        range(0, 1, i32::MAX.into()),
    );
}

#[test]
fn hello_rules() {
    let hello = |name: &str, features: &[&str]| {
        Message::Hello(Hello {
            version: sr_agent_proto::PROTOCOL_VERSION,
            role: Role::Host,
            name: name.into(),
            software_version: "1".into(),
            features: features.iter().map(|f| f.to_string()).collect(),
        })
    };
    refused(hello("", &[]), d(), "name", Problem::Empty);
    refused(
        hello("x", &["tty", "tar"]),
        d(),
        "features[1]",
        Problem::NotSorted,
    );
    refused(
        hello("x", &["tar", "tar"]),
        d(),
        "features[1]",
        Problem::Duplicate("tar".into()),
    );
    refused(hello("x", &["a", ""]), d(), "features[1]", Problem::Empty);
    let long = "n".repeat(257);
    refused(
        hello(&long, &[]),
        d(),
        "name",
        Problem::TooLong { len: 257, max: 256 },
    );
}

#[test]
fn listing_rules() {
    let listing = |name: &str, info: FileInfo| {
        Message::Listing(Listing {
            id: 1,
            entries: vec![DirEntry {
                name: name.into(),
                info,
            }],
            done: false,
        })
    };
    let f = common::file_info;
    refused(listing("", f()), d(), "entries[0].name", Problem::Empty);
    refused(
        listing("a/b", f()),
        d(),
        "entries[0].name",
        Problem::BadChar('/'),
    );
    refused(
        listing("..", f()),
        d(),
        "entries[0].name",
        Problem::Rule("`.` and `..` are not entries"),
    );
    refused(
        listing(&"n".repeat(256), f()),
        d(),
        "entries[0].name",
        Problem::TooLong { len: 256, max: 255 },
    );
    let mut with_target = f();
    with_target.link_target = Some("/x".into());
    refused(
        listing("a", with_target),
        d(),
        "entries[0].info.linkTarget",
        Problem::Rule("only a symlink has a link target"),
    );
    let mut symlink = f();
    symlink.kind = FileKind::Symlink;
    refused(
        listing("a", symlink),
        d(),
        "entries[0].info.linkTarget",
        Problem::Rule("a symlink has a link target"),
    );
    let mut nsec = f();
    nsec.mtime_nsec = 1_000_000_000;
    refused(
        listing("a", nsec),
        d(),
        "entries[0].info.mtimeNsec",
        Problem::OutOfRange {
            value: 1_000_000_000,
            min: 0,
            max: 999_999_999,
        },
    );
    let many = Message::Listing(Listing {
        id: 1,
        entries: (0..3)
            .map(|i| DirEntry {
                name: format!("f{i}"),
                info: f(),
            })
            .collect(),
        done: true,
    });
    let small = Limits {
        max_list_entries: 2,
        ..d()
    };
    refused(
        many,
        small,
        "entries",
        Problem::TooMany { count: 3, max: 2 },
    );
}

#[test]
fn free_text_is_bounded() {
    let m = Message::Error(ErrorReply {
        id: None,
        code: ErrorCode::Internal,
        message: "x".repeat(4097),
        phase: None,
        errno: None,
    });
    refused(
        m,
        d(),
        "message",
        Problem::TooLong {
            len: 4097,
            max: 4096,
        },
    );
}

#[test]
fn too_large_fields_map_to_too_large_replies() {
    let mut out = Vec::new();
    let small = Limits { max_argv: 1, ..d() };
    let err = Encoder::with_limits(Role::Host, small)
        .message(&exec_with(|_| {}), &mut out)
        .unwrap_err();
    assert_eq!(err.reply_code(), ErrorCode::TooLarge);
    let err = Encoder::new(Role::Host)
        .message(&exec_with(|e| e.argv.clear()), &mut out)
        .unwrap_err();
    assert_eq!(err.reply_code(), ErrorCode::Invalid);
    assert!(
        err.to_string().starts_with("exec.argv: must not be empty"),
        "{err}"
    );
}
