//! Every message: encodes, decodes to the same value, travels only its own way, and has the
//! JSON spelling pinned by a snapshot.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use sr_agent_proto::message::Direction;
use sr_agent_proto::{Decoder, Encoder, Frame, FrameKind, Message, ProtoError, Role};

fn sender(m: &Message) -> Role {
    match m.direction() {
        Direction::ToAgent | Direction::Both => Role::Host,
        Direction::ToHost => Role::Agent,
    }
}

#[test]
fn samples_cover_every_message_type() {
    let names: BTreeSet<_> = common::samples().iter().map(Message::type_name).collect();
    // 28 variants in `Message`; a new one must get a sample (and a snapshot line).
    assert_eq!(names.len(), 28, "{names:?}");
}

#[test]
fn every_message_round_trips() {
    for m in common::samples() {
        let from = sender(&m);
        let mut wire = Vec::new();
        Encoder::new(from).message(&m, &mut wire).unwrap();
        assert_eq!(wire[4], FrameKind::Control as u8);
        let len = u32::from_be_bytes(wire[..4].try_into().unwrap()) as usize;
        assert_eq!(len, wire.len() - 4, "{}", m.type_name());
        let mut d = Decoder::new(from.peer());
        d.feed(&wire);
        assert_eq!(d.next_frame().unwrap(), Some(Frame::Control(m.clone())));
        assert_eq!(d.next_frame().unwrap(), None);
        d.finish().unwrap();
    }
}

#[test]
fn every_message_is_refused_the_wrong_way() {
    for m in common::samples() {
        if m.direction() == Direction::Both {
            continue;
        }
        let from = sender(&m);
        // The encoder refuses to send it as the other side...
        let mut wire = Vec::new();
        let err = Encoder::new(from.peer())
            .message(&m, &mut wire)
            .unwrap_err();
        assert!(
            matches!(err, ProtoError::WrongDirection { frame, receiver } if frame == m.type_name() && receiver == from),
            "{err:?}"
        );
        assert!(wire.is_empty(), "nothing written on error");
        // ...and a decoder on the sending side refuses to receive it.
        Encoder::new(from).message(&m, &mut wire).unwrap();
        let mut d = Decoder::new(from);
        d.feed(&wire);
        let err = d.next_frame().unwrap_err();
        assert!(
            matches!(err, ProtoError::WrongDirection { receiver, .. } if receiver == from),
            "{err:?}"
        );
        assert!(!err.is_fatal());
    }
}

#[test]
fn error_travels_both_ways() {
    let m = common::samples().pop().unwrap();
    assert_eq!(m.type_name(), "error");
    for from in [Role::Host, Role::Agent] {
        let mut wire = Vec::new();
        Encoder::new(from).message(&m, &mut wire).unwrap();
        let mut d = Decoder::new(from.peer());
        d.feed(&wire);
        assert_eq!(d.next_frame().unwrap(), Some(Frame::Control(m.clone())));
    }
}

#[test]
fn ids_name_the_request() {
    for m in common::samples() {
        let expected = match m.type_name() {
            "hello" | "helloAck" | "versionMismatch" | "ready" => None,
            _ => Some(
                serde_json::to_value(&m).unwrap()["id"]
                    .as_u64()
                    .expect("an id field"),
            ),
        };
        assert_eq!(m.id(), expected, "{}", m.type_name());
    }
}

/// The wire spelling of every message: a change here is a protocol change (see the version
/// rule in docs/agent-protocol.md).
#[test]
fn wire_json_snapshot() {
    let mut text = String::new();
    for m in common::samples() {
        let mut wire = Vec::new();
        Encoder::new(sender(&m)).message(&m, &mut wire).unwrap();
        text.push_str(&format!(
            "{:02x?} {}\n",
            &wire[..5],
            std::str::from_utf8(&wire[5..]).unwrap()
        ));
    }
    insta::assert_snapshot!(text);
}

/// docs/agent-protocol.md: a nullable field may also be left out.
#[test]
fn nullable_fields_may_be_missing() {
    let json = r#"{"type":"exec","id":1,"argv":["/bin/true"],"env":[],"stdin":"none","user":{}}"#;
    let mut wire = ((json.len() + 1) as u32).to_be_bytes().to_vec();
    wire.push(0x01);
    wire.extend_from_slice(json.as_bytes());
    let mut d = Decoder::new(Role::Agent);
    d.feed(&wire);
    let Some(Frame::Control(Message::Exec(e))) = d.next_frame().unwrap() else {
        panic!("not an exec");
    };
    assert_eq!((e.cwd, e.timeout_ms, e.tty), (None, None, None));
    assert_eq!((e.user.uid, e.user.gid), (None, None));
}
