//! Every way a byte stream can be wrong gives its own precise error; none panics, and only the
//! ones that lose the framing stop the decoder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use sr_agent_proto::message::{AgentIdentity, Hello, IdOnly};
use sr_agent_proto::{
    Decoder, Encoder, Frame, Limits, Message, PROTOCOL_VERSION, ProtoError, ProtocolVersion, Role,
};

/// A frame by hand: length prefix, kind, body.
fn raw(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    v.push(kind);
    v.extend_from_slice(body);
    v
}

fn control(json: &str) -> Vec<u8> {
    raw(0x01, json.as_bytes())
}

fn stats_request(id: u64) -> Vec<u8> {
    let mut v = Vec::new();
    Encoder::new(Role::Host)
        .message(&Message::StatsRequest(IdOnly { id }), &mut v)
        .unwrap();
    v
}

/// Decode `bytes` at the agent; return the first result.
fn agent_decode(bytes: &[u8]) -> Result<Option<Frame>, ProtoError> {
    let mut d = Decoder::new(Role::Agent);
    d.feed(bytes);
    d.next_frame()
}

#[test]
fn truncated_length_prefix() {
    let mut d = Decoder::new(Role::Agent);
    d.feed(&[0, 0]);
    assert!(d.next_frame().unwrap().is_none());
    let err = d.finish().unwrap_err();
    assert!(
        matches!(
            err,
            ProtoError::Truncated {
                buffered: 2,
                needed: 4
            }
        ),
        "{err:?}"
    );
    assert!(err.is_fatal());
}

#[test]
fn truncated_body() {
    let wire = stats_request(1);
    let mut d = Decoder::new(Role::Agent);
    d.feed(&wire[..wire.len() - 1]);
    assert!(d.next_frame().unwrap().is_none());
    let err = d.finish().unwrap_err();
    let (b, n) = (wire.len() - 1, wire.len() as u64);
    assert!(
        matches!(err, ProtoError::Truncated { buffered, needed } if buffered == b && needed == n),
        "{err:?}"
    );
    // The last byte completes it.
    d.feed(&wire[wire.len() - 1..]);
    assert!(d.next_frame().unwrap().is_some());
    d.finish().unwrap();
}

#[test]
fn oversized_frame_is_fatal_and_poisons() {
    let limits = Limits::default();
    let len = limits.max_frame + 1;
    let mut d = Decoder::new(Role::Agent);
    d.feed(&len.to_be_bytes());
    let err = d.next_frame().unwrap_err();
    assert!(
        matches!(err, ProtoError::FrameTooLarge { len: l, max } if l == u64::from(len) && max == limits.max_frame),
        "{err:?}"
    );
    assert!(err.is_fatal());
    assert!(d.is_poisoned());
    assert_eq!(d.buffered(), 0);
    // Whatever follows is dropped; the decoder stays stopped.
    d.feed(&stats_request(1));
    assert_eq!(d.buffered(), 0);
    assert!(matches!(d.next_frame(), Err(ProtoError::Poisoned)));
    assert!(matches!(d.finish(), Err(ProtoError::Poisoned)));
}

#[test]
fn max_frame_is_configurable() {
    let wire = stats_request(1);
    let len = (wire.len() - 4) as u32;
    let at = |max_frame| Limits {
        max_frame,
        ..Limits::default()
    };
    let mut exact = Decoder::with_limits(Role::Agent, at(len));
    exact.feed(&wire);
    assert!(exact.next_frame().unwrap().is_some());
    let mut small = Decoder::with_limits(Role::Agent, at(len - 1));
    small.feed(&wire);
    let err = small.next_frame().unwrap_err();
    assert!(
        matches!(err, ProtoError::FrameTooLarge { len: l, max } if l == u64::from(len) && max == len - 1),
        "{err:?}"
    );
}

#[test]
fn oversized_control_body_is_refused_both_ways() {
    let limits = Limits {
        max_control_body: 30,
        ..Limits::default()
    };
    let m = Message::StatsRequest(IdOnly { id: 12345 });
    let json_len = serde_json::to_vec(&m).unwrap().len() as u64;
    assert_eq!(json_len, 34);
    let mut out = b"keep".to_vec();
    let err = Encoder::with_limits(Role::Host, limits)
        .message(&m, &mut out)
        .unwrap_err();
    assert!(
        matches!(err, ProtoError::ControlTooLarge { len, max: 30 } if len == json_len),
        "{err:?}"
    );
    assert_eq!(out, b"keep", "nothing written on error");

    let mut d = Decoder::with_limits(Role::Agent, limits);
    d.feed(&stats_request(12345));
    d.feed(&control(r#"{"type":"shutdown","id":1}"#));
    let err = d.next_frame().unwrap_err();
    assert!(
        matches!(err, ProtoError::ControlTooLarge { len, max: 30 } if len == json_len),
        "{err:?}"
    );
    assert!(!err.is_fatal());
    assert!(matches!(
        d.next_frame().unwrap(),
        Some(Frame::Control(Message::Shutdown(IdOnly { id: 1 })))
    ));
}

#[test]
fn unknown_kind_skips_that_frame_only() {
    for kind in [0x00, 0x03, 0x7f, 0xff] {
        let mut d = Decoder::new(Role::Agent);
        d.feed(&raw(kind, b"whatever"));
        d.feed(&stats_request(2));
        let err = d.next_frame().unwrap_err();
        assert!(
            matches!(err, ProtoError::UnknownKind { kind: k } if k == kind),
            "{err:?}"
        );
        assert!(!err.is_fatal());
        assert!(d.next_frame().unwrap().is_some());
    }
}

#[test]
fn empty_frame() {
    let mut d = Decoder::new(Role::Agent);
    d.feed(&[0, 0, 0, 0]);
    d.feed(&stats_request(3));
    assert!(matches!(d.next_frame(), Err(ProtoError::EmptyFrame)));
    assert!(d.next_frame().unwrap().is_some());
}

#[test]
fn data_frame_header_errors() {
    let mut body = vec![0u8; 8];
    let err = agent_decode(&raw(0x02, &body)).unwrap_err();
    assert!(
        matches!(err, ProtoError::ShortDataHeader { len: 8 }),
        "{err:?}"
    );
    body.push(0);
    let err = agent_decode(&raw(0x02, &body)).unwrap_err();
    assert!(
        matches!(
            err,
            ProtoError::EmptyData {
                stream: "stdin",
                id: 0
            }
        ),
        "{err:?}"
    );
    let mut bad_stream = vec![4u8];
    bad_stream.extend_from_slice(&7u64.to_be_bytes());
    bad_stream.push(b'x');
    let err = agent_decode(&raw(0x02, &bad_stream)).unwrap_err();
    assert!(
        matches!(err, ProtoError::UnknownStream { stream: 4 }),
        "{err:?}"
    );
}

#[test]
fn malformed_json() {
    for (body, what) in [
        (&br#"{"type":"statsRequest","id":"#[..], "EOF"),
        (&b"not json"[..], "expected"),
        (
            &b"{\"type\":\"hello\",\"name\":\"\xff\"}"[..],
            "invalid unicode",
        ),
        (&b""[..], "empty body"),
    ] {
        let err = agent_decode(&raw(0x01, body)).unwrap_err();
        match &err {
            ProtoError::MalformedJson { detail, .. } => {
                assert!(detail.contains(what), "{detail} should mention {what}")
            }
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(body)),
        }
        assert!(!err.is_fatal());
    }
}

#[test]
fn json_that_is_not_a_message() {
    for (json, what) in [
        (
            r#"{"type":"launchMissiles","id":1}"#,
            "unknown variant `launchMissiles`",
        ),
        (
            r#"{"type":"statsRequest","id":1,"extra":true}"#,
            "unknown field `extra`",
        ),
        (r#"{"type":"statsRequest"}"#, "missing field `id`"),
        (r#"{"type":"statsRequest","id":-1}"#, "invalid value"),
        (
            r#"{"type":"statsRequest","id":18446744073709551616}"#,
            "invalid type",
        ),
        (r#"{"id":1}"#, "missing field `type`"),
        (r#"[1,2]"#, "invalid type"),
        (
            r#"{"type":"exec","id":1,"argv":["/bin/true"],"env":[],"cwd":null,"timeoutMs":null,"stdin":"none","tty":null,"user":{"uid":null,"gid":null,"root":true}}"#,
            "unknown field `root`",
        ),
        (
            r#"{"type":"putEnd","id":1,"sha256":"sha256:ABCD"}"#,
            "sha256",
        ),
    ] {
        let err = agent_decode(&control(json)).unwrap_err();
        match &err {
            ProtoError::BadMessage { detail, .. } => {
                assert!(
                    detail.contains(what),
                    "{json}: {detail} should mention {what}"
                )
            }
            other => panic!("{json}: {other:?}"),
        }
    }
}

#[test]
fn trailing_garbage_in_a_control_body() {
    let ok = r#"{"type":"statsRequest","id":1}"#;
    for (tail, extra) in [
        ("x", 1),
        ("\n", 1),
        (" {}", 3),
        ("{\"type\":\"shutdown\",\"id\":2}", 26),
    ] {
        let err = agent_decode(&control(&format!("{ok}{tail}"))).unwrap_err();
        assert!(
            matches!(err, ProtoError::TrailingBytes { offset, extra: e } if offset == ok.len() && e == extra),
            "{tail:?}: {err:?}"
        );
    }
}

#[test]
fn trailing_garbage_after_the_last_frame() {
    let mut d = Decoder::new(Role::Agent);
    d.feed(&stats_request(1));
    d.feed(b"\x00\x00");
    assert!(d.next_frame().unwrap().is_some());
    assert!(d.next_frame().unwrap().is_none());
    assert!(matches!(
        d.finish(),
        Err(ProtoError::Truncated {
            buffered: 2,
            needed: 4
        })
    ));
}

#[test]
fn a_bad_frame_between_good_ones_costs_only_itself() {
    let mut d = Decoder::new(Role::Agent);
    d.feed(&stats_request(1));
    d.feed(&control(r#"{"type":"exec","id":2}"#));
    d.feed(&stats_request(3));
    assert_eq!(
        d.next_frame().unwrap().unwrap(),
        Frame::Control(Message::StatsRequest(IdOnly { id: 1 }))
    );
    assert!(matches!(d.next_frame(), Err(ProtoError::BadMessage { .. })));
    assert_eq!(
        d.next_frame().unwrap().unwrap(),
        Frame::Control(Message::StatsRequest(IdOnly { id: 3 }))
    );
    d.finish().unwrap();
}

fn hello(version: ProtocolVersion, role: Role, features: &[&str]) -> Hello {
    Hello {
        version,
        role,
        name: "safe-run".into(),
        software_version: "0.1.0".into(),
        features: features.iter().map(|f| f.to_string()).collect(),
    }
}

const AGENT: AgentIdentity<'static> = AgentIdentity {
    version: ProtocolVersion { major: 1, minor: 2 },
    name: "safe-run-agent",
    software_version: "0.1.0",
    features: &["tar", "tty"],
};

#[test]
fn wrong_major_version_is_refused() {
    let v2 = ProtocolVersion { major: 2, minor: 0 };
    let refused = hello(v2, Role::Host, &[]).answer(&AGENT).unwrap_err();
    assert_eq!(refused.supported, AGENT.version);
    assert_eq!(refused.received, v2);
    assert!(refused.message.contains("2.0"), "{}", refused.message);
    // And the refusal itself is a valid message the host can decode.
    let mut wire = Vec::new();
    Encoder::new(Role::Agent)
        .message(&Message::VersionMismatch(refused.clone()), &mut wire)
        .unwrap();
    let mut d = Decoder::new(Role::Host);
    d.feed(&wire);
    assert_eq!(
        d.next_frame().unwrap(),
        Some(Frame::Control(Message::VersionMismatch(refused)))
    );
}

#[test]
fn a_hello_from_an_agent_is_refused() {
    let refused = hello(PROTOCOL_VERSION, Role::Agent, &[])
        .answer(&AGENT)
        .unwrap_err();
    assert!(refused.message.contains("agent"), "{}", refused.message);
}

#[test]
fn same_major_negotiates_the_smaller_minor_and_common_features() {
    let ack = hello(
        ProtocolVersion { major: 1, minor: 7 },
        Role::Host,
        &["exotic", "tty"],
    )
    .answer(&AGENT)
    .unwrap();
    assert_eq!(ack.version, ProtocolVersion { major: 1, minor: 2 });
    assert_eq!(ack.features, vec!["tty".to_string()]);
    let ack = hello(
        ProtocolVersion { major: 1, minor: 0 },
        Role::Host,
        &["tar", "tty"],
    )
    .answer(&AGENT)
    .unwrap();
    assert_eq!(ack.version, ProtocolVersion { major: 1, minor: 0 });
    assert_eq!(ack.features, vec!["tar".to_string(), "tty".to_string()]);
}

#[test]
fn io_error_is_fatal_and_maps_to_internal() {
    let err = ProtoError::from(std::io::Error::other("boom"));
    assert!(err.is_fatal());
    assert_eq!(err.reply_code(), sr_agent_proto::ErrorCode::Internal);
}
