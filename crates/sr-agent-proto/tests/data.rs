//! Data frames: the binary header, each stream's direction, chunking at the frame limit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sr_agent_proto::{
    DATA_HEADER_LEN, Data, Decoder, Encoder, Frame, Limits, ProtoError, Role, Stream,
};

#[test]
fn header_layout_is_stream_then_big_endian_id() {
    let mut wire = Vec::new();
    Encoder::new(Role::Host)
        .data(Stream::Stdin, 0x0102_0304_0506_0708, b"hi", &mut wire)
        .unwrap();
    assert_eq!(
        wire,
        [0, 0, 0, 12, 0x02, 0, 1, 2, 3, 4, 5, 6, 7, 8, b'h', b'i'],
        "length 12 = kind + 9-byte header + 2"
    );
}

#[test]
fn each_stream_round_trips_its_own_way() {
    for (stream, from, byte) in [
        (Stream::Stdin, Role::Host, 0),
        (Stream::Stdout, Role::Agent, 1),
        (Stream::Stderr, Role::Agent, 2),
        (Stream::File, Role::Host, 3),
        (Stream::File, Role::Agent, 3),
    ] {
        let payload: Vec<u8> = (0..=255).collect();
        let mut wire = Vec::new();
        Encoder::new(from)
            .data(stream, 9, &payload, &mut wire)
            .unwrap();
        assert_eq!(wire[5], byte);
        let mut d = Decoder::new(from.peer());
        d.feed(&wire);
        assert_eq!(
            d.next_frame().unwrap(),
            Some(Frame::Data(Data::new(stream, 9, payload)))
        );
    }
}

#[test]
fn output_may_not_go_to_the_agent_nor_stdin_to_the_host() {
    let mut out = Vec::new();
    for (stream, from) in [
        (Stream::Stdout, Role::Host),
        (Stream::Stderr, Role::Host),
        (Stream::Stdin, Role::Agent),
    ] {
        let err = Encoder::new(from)
            .data(stream, 1, b"x", &mut out)
            .unwrap_err();
        assert!(
            matches!(err, ProtoError::WrongDirection { receiver, .. } if receiver == from.peer()),
            "{err:?}"
        );
        // By hand, to the decoder of the wrong side.
        let mut wire = vec![0, 0, 0, 11, 0x02, stream as u8];
        wire.extend_from_slice(&1u64.to_be_bytes());
        wire.push(b'x');
        let mut d = Decoder::new(from.peer());
        d.feed(&wire);
        assert!(matches!(
            d.next_frame(),
            Err(ProtoError::WrongDirection { .. })
        ));
    }
    assert!(out.is_empty());
}

#[test]
fn empty_payload_is_refused() {
    let err = Encoder::new(Role::Host)
        .data(Stream::Stdin, 4, b"", &mut Vec::new())
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProtoError::EmptyData {
                stream: "stdin",
                id: 4
            }
        ),
        "{err:?}"
    );
}

#[test]
fn one_frame_carries_at_most_max_data_chunk() {
    let limits = Limits::default();
    let max = limits.max_data_chunk();
    assert_eq!(max, 1024 * 1024 - 1 - DATA_HEADER_LEN);
    let enc = Encoder::new(Role::Host);
    let mut wire = Vec::new();
    enc.data(Stream::Stdin, 1, &vec![7; max], &mut wire)
        .unwrap();
    assert_eq!(wire.len(), 4 + limits.max_frame as usize);
    let mut d = Decoder::new(Role::Agent);
    d.feed(&wire);
    assert!(matches!(d.next_frame().unwrap(), Some(Frame::Data(ref x)) if x.bytes.len() == max));
    let err = enc
        .data(Stream::Stdin, 1, &vec![7; max + 1], &mut Vec::new())
        .unwrap_err();
    assert!(matches!(err, ProtoError::FrameTooLarge { .. }), "{err:?}");
}

#[test]
fn data_chunks_splits_at_the_limit() {
    let limits = Limits {
        max_frame: 1 + DATA_HEADER_LEN as u32 + 100,
        ..Limits::default()
    };
    let enc = Encoder::with_limits(Role::Host, limits);
    let payload: Vec<u8> = (0..250u32).map(|i| i as u8).collect();
    let mut wire = Vec::new();
    assert_eq!(
        enc.data_chunks(Stream::Stdin, 5, &payload, &mut wire)
            .unwrap(),
        3
    );
    assert_eq!(
        enc.data_chunks(Stream::Stdin, 5, &[], &mut wire).unwrap(),
        0
    );
    let mut d = Decoder::with_limits(Role::Agent, limits);
    d.feed(&wire);
    let mut got = Vec::new();
    let mut sizes = Vec::new();
    while let Some(Frame::Data(x)) = d.next_frame().unwrap() {
        sizes.push(x.bytes.len());
        got.extend(x.bytes);
    }
    assert_eq!(sizes, [100, 100, 50]);
    assert_eq!(got, payload);
}

#[test]
fn mixed_stream_fed_one_byte_at_a_time() {
    let enc = Encoder::new(Role::Agent);
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    for i in 0..20u64 {
        let f = Frame::Data(Data::new(
            if i % 2 == 0 {
                Stream::Stdout
            } else {
                Stream::Stderr
            },
            i,
            vec![i as u8; (i as usize) + 1],
        ));
        enc.frame(&f, &mut wire).unwrap();
        expected.push(f);
    }
    let mut d = Decoder::new(Role::Host);
    let mut got = Vec::new();
    for b in &wire {
        d.feed(std::slice::from_ref(b));
        while let Some(f) = d.next_frame().unwrap() {
            got.push(f);
        }
    }
    assert_eq!(got, expected);
    assert_eq!(d.buffered(), 0);
    d.finish().unwrap();
}
