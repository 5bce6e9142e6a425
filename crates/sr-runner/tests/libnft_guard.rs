//! libnftables ends the process when a new context cannot open its netlink socket. With no
//! descriptor left, a call must come back as an error and this process must live on. Its own
//! test binary: it takes every descriptor of the process for a moment. Needs no root (the
//! socket fails before any privilege matters); skipped, visibly, where libnftables is absent,
//! except under CI=true.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use sr_runner::network::libnft::{self, NftFailure};

#[test]
fn no_descriptor_left_is_an_error_not_an_exit() {
    // Loads the library while descriptors are there (loading needs one).
    if let Err(NftFailure::Unavailable(why)) = libnft::run("list tables") {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("libnftables cannot be loaded under CI: {why}");
        }
        eprintln!("SKIPPED: libnftables is not installed: {why}");
        return;
    }
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, 256, hard).unwrap();
    let mut fillers = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        fillers.push(f);
    }
    let starved = libnft::run("list tables");
    drop(fillers);
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
    match starved {
        Err(NftFailure::Failed(why)) => {
            assert!(why.contains("netfilter netlink socket"), "{why}");
        }
        other => panic!("expected the socket to fail first: {other:?}"),
    }
    // Descriptors back: the library answers again (an error without root is an answer too).
    let again = libnft::run("list tables");
    assert!(
        !matches!(&again, Err(NftFailure::Failed(why)) if why.contains("netlink socket")),
        "{again:?}"
    );
}
