//! Hostile input: random and mutated byte streams through both sides' decoders. Nothing may
//! panic; every frame that decodes must re-encode and decode to itself; a fatal error stops the
//! decoder. The normal suite runs 20 000 inputs; `cargo test -p sr-agent-proto --test hostile
//! -- --ignored` runs 1 000 000 (the cargo-fuzz target `agent_proto_decode` does the same check
//! with coverage guidance).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use proptest::test_runner::{RngAlgorithm, TestRng};
use rand_core_shim::Rng;
use sr_agent_proto::{Decoder, Encoder, Limits, ProtoError, Role};

/// proptest's RNG behind a few helpers (proptest re-exports `rand`'s traits).
mod rand_core_shim {
    use proptest::prelude::RngCore;
    use proptest::test_runner::TestRng;

    pub trait Rng {
        fn below(&mut self, n: usize) -> usize;
        fn byte(&mut self) -> u8;
    }

    impl Rng for TestRng {
        fn below(&mut self, n: usize) -> usize {
            (self.next_u64() % n.max(1) as u64) as usize
        }
        fn byte(&mut self) -> u8 {
            self.next_u32() as u8
        }
    }
}

/// Feed `input` to a decoder of `local` in chunks drawn from `rng`; check the invariants.
fn check(input: &[u8], local: Role, limits: Limits, rng: &mut TestRng, tally: &mut Tally) {
    let mut d = Decoder::with_limits(local, limits);
    let enc = Encoder::with_limits(local.peer(), limits);
    let mut rest = input;
    while !rest.is_empty() {
        let n = (1 + rng.below(64)).min(rest.len());
        d.feed(&rest[..n]);
        rest = &rest[n..];
        loop {
            match d.next_frame() {
                Ok(Some(frame)) => {
                    let mut wire = Vec::new();
                    enc.frame(&frame, &mut wire).unwrap();
                    let mut again = Decoder::with_limits(local, limits);
                    again.feed(&wire);
                    assert_eq!(again.next_frame().unwrap(), Some(frame));
                    tally.frames += 1;
                }
                Ok(None) => break,
                Err(e) if e.is_fatal() => {
                    tally.fatal += 1;
                    assert!(matches!(d.next_frame(), Err(ProtoError::Poisoned)));
                    assert_eq!(d.buffered(), 0);
                    return;
                }
                Err(_) => tally.skipped += 1,
            }
        }
        assert!(d.buffered() <= limits.max_frame as usize + 4 + 64);
    }
    let _ = d.finish();
}

fn valid_stream(rng: &mut TestRng) -> Vec<u8> {
    let samples = common::samples();
    let mut wire = Vec::new();
    for _ in 0..1 + rng.below(4) {
        let m = &samples[rng.below(samples.len())];
        let from = if m.direction().allows_receiver(Role::Agent) {
            Role::Host
        } else {
            Role::Agent
        };
        Encoder::new(from).message(m, &mut wire).unwrap();
    }
    wire
}

fn mutate(wire: &mut Vec<u8>, rng: &mut TestRng) {
    for _ in 0..1 + rng.below(4) {
        if wire.is_empty() {
            wire.push(rng.byte());
        }
        let at = rng.below(wire.len());
        match rng.below(6) {
            0 => wire[at] ^= 1 << rng.below(8),
            1 => wire[at] = rng.byte(),
            2 => wire.truncate(at),
            3 => wire.insert(at, rng.byte()),
            4 => {
                // Splice a JSON token that shapes differently.
                let tokens: [&[u8]; 8] = [
                    b"null",
                    b"{}",
                    b"[]",
                    b"\"x\"",
                    b"-1",
                    b"1e999",
                    b"\\u0000",
                    b",\"a\":1",
                ];
                let t = tokens[rng.below(tokens.len())];
                wire.splice(at..at, t.iter().copied());
            }
            _ => {
                // A new length prefix for the first frame: tiny, huge, or off by one.
                if wire.len() >= 4 {
                    let len = u32::from_be_bytes([wire[0], wire[1], wire[2], wire[3]]);
                    let new = match rng.below(3) {
                        0 => len.wrapping_add(1),
                        1 => len.wrapping_sub(1),
                        _ => u32::MAX - rng.below(3) as u32,
                    };
                    wire[..4].copy_from_slice(&new.to_be_bytes());
                }
            }
        }
    }
}

fn random_input(rng: &mut TestRng) -> Vec<u8> {
    match rng.below(3) {
        0 => (0..rng.below(64)).map(|_| rng.byte()).collect(),
        1 => {
            // A plausible header, then random bytes.
            let body: Vec<u8> = (0..rng.below(48)).map(|_| rng.byte()).collect();
            let mut v = ((body.len() + 1) as u32).to_be_bytes().to_vec();
            v.push(1 + rng.below(2) as u8);
            v.extend(body);
            v
        }
        _ => {
            let mut w = valid_stream(rng);
            mutate(&mut w, rng);
            w
        }
    }
}

#[derive(Debug, Default)]
struct Tally {
    frames: u64,
    skipped: u64,
    fatal: u64,
}

fn run(count: usize) {
    let mut tally = Tally::default();
    let mut rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
    let small = Limits {
        max_frame: 512,
        max_control_body: 300,
        ..Limits::default()
    };
    for i in 0..count {
        let input = random_input(&mut rng);
        let limits = if i % 4 == 0 { small } else { Limits::default() };
        for local in [Role::Host, Role::Agent] {
            check(&input, local, limits, &mut rng, &mut tally);
        }
    }
    eprintln!("{count} inputs, each to both sides: {tally:?}");
    // The generator must reach all three outcomes, or it tests little.
    assert!(
        tally.frames > 0 && tally.skipped > 0 && tally.fatal > 0,
        "{tally:?}"
    );
}

#[test]
fn twenty_thousand_hostile_inputs() {
    run(20_000);
}

#[test]
#[ignore = "1e6 inputs, about 20 s in debug; run with --ignored"]
fn a_million_hostile_inputs() {
    run(1_000_000);
}
