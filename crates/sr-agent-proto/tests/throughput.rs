//! Measurements, not assertions on time: `cargo test --release -p sr-agent-proto --test
//! throughput -- --ignored --nocapture` prints how fast 100 MiB of stdin and a stream of small
//! control messages go through encoder and decoder. The only checks are on content and on the
//! decoder's buffer staying within one frame plus one read.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Instant;

use sr_agent_proto::{Decoder, Encoder, Frame, Limits, Message, Role, Stream};

#[test]
#[ignore = "measurement; run with --release -- --ignored --nocapture"]
fn hundred_mib_of_stdin() {
    const TOTAL: usize = 100 * 1024 * 1024;
    const READ: usize = 64 * 1024;
    let enc = Encoder::new(Role::Host);
    let chunk: Vec<u8> = (0..Limits::default().max_data_chunk())
        .map(|i| i as u8)
        .collect();
    let mut d = Decoder::new(Role::Agent);
    let mut wire = Vec::new();
    let (mut sent, mut received, mut max_buffered) = (0usize, 0usize, 0usize);
    let start = Instant::now();
    while sent < TOTAL {
        let n = chunk.len().min(TOTAL - sent);
        wire.clear();
        enc.data(Stream::Stdin, 1, &chunk[..n], &mut wire).unwrap();
        sent += n;
        for part in wire.chunks(READ) {
            d.feed(part);
            max_buffered = max_buffered.max(d.buffered());
            while let Some(Frame::Data(data)) = d.next_frame().unwrap() {
                received += data.bytes.len();
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(received, TOTAL);
    assert!(max_buffered <= Limits::default().max_frame as usize + 4);
    eprintln!(
        "100 MiB stdin: {:.0} MiB/s encode+decode, decoder buffer peak {} bytes",
        100.0 / secs,
        max_buffered
    );
}

#[test]
#[ignore = "measurement; run with --release -- --ignored --nocapture"]
fn small_control_messages() {
    const N: usize = 100_000;
    let exec = Message::Exec(common::exec());
    let enc = Encoder::new(Role::Host);
    let mut wire = Vec::new();
    let mut d = Decoder::new(Role::Agent);
    let start = Instant::now();
    for _ in 0..N {
        wire.clear();
        enc.message(&exec, &mut wire).unwrap();
        d.feed(&wire);
        assert!(d.next_frame().unwrap().is_some());
    }
    let per = start.elapsed().as_secs_f64() / N as f64;
    eprintln!(
        "exec message ({} bytes): {:.1} µs encode+decode each",
        wire.len(),
        per * 1e6
    );
}
