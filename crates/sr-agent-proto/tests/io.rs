//! The std::io adapters: clean end, end inside a frame, short reads, EINTR, whole writes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Cursor, ErrorKind, Read};

use sr_agent_proto::io::{FrameReader, FrameWriter, read_frame, write_frame};
use sr_agent_proto::{Data, Decoder, Encoder, Frame, ProtoError, Role, Stream};

/// Returns one byte per read, and `Interrupted` before every other byte.
struct Trickle {
    bytes: Vec<u8>,
    pos: usize,
    interrupt: bool,
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.interrupt = !self.interrupt;
        if self.interrupt {
            return Err(ErrorKind::Interrupted.into());
        }
        match self.bytes.get(self.pos) {
            Some(&b) if !buf.is_empty() => {
                buf[0] = b;
                self.pos += 1;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

fn host_frames() -> Vec<Frame> {
    let mut frames: Vec<Frame> = common::samples()
        .into_iter()
        .filter(|m| m.direction() != sr_agent_proto::message::Direction::ToHost)
        .map(Frame::Control)
        .collect();
    frames.push(Frame::Data(Data::new(
        Stream::Stdin,
        3,
        b"stdin bytes".to_vec(),
    )));
    frames.push(Frame::Data(Data::new(Stream::File, 4, vec![0; 100_000])));
    frames
}

#[test]
fn writer_then_reader_with_short_reads_and_eintr() {
    let frames = host_frames();
    let mut w = FrameWriter::new(Vec::new(), Encoder::new(Role::Host));
    for f in &frames {
        w.write_frame(f).unwrap();
    }
    w.flush().unwrap();
    let bytes = w.into_inner();
    let mut r = FrameReader::new(
        Trickle {
            bytes,
            pos: 0,
            interrupt: false,
        },
        Decoder::new(Role::Agent),
    );
    let mut got = Vec::new();
    while let Some(f) = r.read_frame().unwrap() {
        got.push(f);
    }
    assert_eq!(got, frames);
}

#[test]
fn end_inside_a_frame_is_truncated() {
    let mut bytes = Vec::new();
    write_frame(&mut bytes, &Encoder::new(Role::Host), &host_frames()[0]).unwrap();
    bytes.pop();
    let mut d = Decoder::new(Role::Agent);
    let err = read_frame(&mut Cursor::new(bytes), &mut d).unwrap_err();
    assert!(matches!(err, ProtoError::Truncated { .. }), "{err:?}");
}

#[test]
fn empty_stream_is_a_clean_end() {
    let mut d = Decoder::new(Role::Agent);
    assert!(
        read_frame(&mut Cursor::new(Vec::new()), &mut d)
            .unwrap()
            .is_none()
    );
}

#[test]
fn read_errors_pass_through() {
    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::new(ErrorKind::ConnectionReset, "reset"))
        }
    }
    let err = read_frame(&mut Broken, &mut Decoder::new(Role::Agent)).unwrap_err();
    assert!(
        matches!(&err, ProtoError::Io(e) if e.kind() == ErrorKind::ConnectionReset),
        "{err:?}"
    );
}

#[test]
fn nothing_is_written_when_encoding_fails() {
    let mut out = Vec::new();
    let bad = Frame::Data(Data::new(Stream::Stdout, 1, b"x".to_vec()));
    let err = write_frame(&mut out, &Encoder::new(Role::Host), &bad).unwrap_err();
    assert!(matches!(err, ProtoError::WrongDirection { .. }), "{err:?}");
    assert!(out.is_empty());
}
