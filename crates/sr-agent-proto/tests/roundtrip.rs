//! Property: any sequence of valid frames, encoded by one side and fed to the other side's
//! decoder in any chunking, comes out equal and leaves nothing buffered.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::strategies;
use proptest::collection::vec;
use proptest::prelude::*;
use sr_agent_proto::{Decoder, Encoder, Frame, Role};

fn sendable(frames: Vec<Frame>, from: Role) -> Vec<Frame> {
    frames
        .into_iter()
        .filter(|f| f.direction().allows_receiver(from.peer()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn encode_then_decode_in_random_chunks_is_identity(
        host_sends in any::<bool>(),
        frames in vec(strategies::frame(), 1..12),
        cuts in vec(1usize..200, 1..50),
    ) {
        let from = if host_sends { Role::Host } else { Role::Agent };
        let frames = sendable(frames, from);
        let enc = Encoder::new(from);
        let mut wire = Vec::new();
        for f in &frames {
            enc.frame(f, &mut wire).unwrap();
        }
        let mut d = Decoder::new(from.peer());
        let mut got = Vec::new();
        let mut rest = &wire[..];
        let mut cut = cuts.iter().cycle();
        while !rest.is_empty() {
            let n = (*cut.next().unwrap()).min(rest.len());
            d.feed(&rest[..n]);
            rest = &rest[n..];
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        prop_assert_eq!(got, frames);
        prop_assert_eq!(d.buffered(), 0);
        d.finish().unwrap();
    }

    #[test]
    fn one_byte_at_a_time(message in strategies::message()) {
        let from = if message.direction().allows_receiver(Role::Agent) { Role::Host } else { Role::Agent };
        let mut wire = Vec::new();
        Encoder::new(from).message(&message, &mut wire).unwrap();
        let mut d = Decoder::new(from.peer());
        for (i, b) in wire.iter().enumerate() {
            d.feed(std::slice::from_ref(b));
            let out = d.next_frame().unwrap();
            prop_assert_eq!(out.is_some(), i + 1 == wire.len());
            if let Some(f) = out {
                prop_assert_eq!(f, Frame::Control(message.clone()));
            }
        }
    }
}
