//! A hostile length prefix must cost nothing: the decoder refuses 4 GiB before allocating for it.
//! A counting allocator measures the peak heap while the decoder sees the prefix. Only this test
//! runs in this binary, so no other thread allocates meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// A global allocator can only be written with `unsafe`; this test binary is its one user.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use sr_agent_proto::{Decoder, ProtoError, Role};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`, which upholds GlobalAlloc's contract;
// the counters are only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        PEAK.fetch_max(now, Ordering::SeqCst);
        // SAFETY: same layout, forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn four_gib_length_prefix_does_not_allocate() {
    let mut d = Decoder::new(Role::Agent);
    let before = CURRENT.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    for prefix in [[0xff, 0xff, 0xff, 0xff], [0x00, 0x10, 0x00, 0x01]] {
        let mut d2 = Decoder::new(Role::Agent);
        d2.feed(&prefix);
        d2.feed(&[0x02]);
        let err = d2.next_frame().unwrap_err();
        assert!(matches!(err, ProtoError::FrameTooLarge { .. }), "{err:?}");
    }
    // Also one byte at a time, through an otherwise unused decoder.
    for b in [0xff, 0xff, 0xff, 0xff] {
        d.feed(&[b]);
        let _ = d.next_frame();
    }
    assert!(matches!(d.next_frame(), Err(ProtoError::Poisoned)));
    let peak = PEAK.load(Ordering::SeqCst) - before;
    assert!(peak < 64 * 1024, "peak heap growth {peak} bytes");
}
