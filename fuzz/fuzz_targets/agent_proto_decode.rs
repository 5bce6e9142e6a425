//! Fuzz target: arbitrary bytes through the agent protocol's decoder, as either side, in
//! chunkings the input chooses. Nothing may panic or allocate beyond the frame limit; whatever
//! decodes must re-encode and decode to itself; a fatal error must stop the decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sr_agent_proto::{Decoder, Encoder, Limits, ProtoError, Role};

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let local = if control & 1 == 0 {
        Role::Agent
    } else {
        Role::Host
    };
    // Small limits half of the time, so limit checks are reached with short inputs.
    let limits = if control & 2 == 0 {
        Limits::default()
    } else {
        Limits {
            max_frame: 256,
            max_control_body: 200,
            max_argv: 4,
            max_env: 4,
            max_path: 32,
            max_list_entries: 4,
            max_items: 4,
            ..Limits::default()
        }
    };
    let chunk = 1 + usize::from(control >> 2); // 1 ..= 64
    let mut decoder = Decoder::with_limits(local, limits);
    let encoder = Encoder::with_limits(local.peer(), limits);
    for part in input.chunks(chunk) {
        decoder.feed(part);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    let mut wire = Vec::new();
                    encoder
                        .frame(&frame, &mut wire)
                        .expect("a decoded frame re-encodes");
                    let mut again = Decoder::with_limits(local, limits);
                    again.feed(&wire);
                    assert_eq!(
                        again.next_frame().expect("re-encoded frame decodes"),
                        Some(frame)
                    );
                }
                Ok(None) => break,
                Err(e) if e.is_fatal() => {
                    assert!(matches!(decoder.next_frame(), Err(ProtoError::Poisoned)));
                    return;
                }
                Err(_) => {}
            }
        }
        assert!(decoder.buffered() <= limits.max_frame as usize + 4 + chunk);
    }
    let _ = decoder.finish();
});
