//! SIGINT, SIGTERM and SIGHUP of the whole process, turned into a cancel of one run (the
//! CLI's): the sandbox is killed and cleaned up, and the report written, before safe-run exits
//! (130, 143, 129). SIGHUP is the terminal going away, which must not leave a run behind.

use crate::life::Canceller;

/// Forwards SIGINT, SIGTERM and SIGHUP to `canceller` from a background thread (signal-hook's
/// self-pipe; nothing but a write happens in the handler).
pub fn forward_signals(canceller: Canceller) -> std::io::Result<signal_hook::iterator::Handle> {
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])?;
    let handle = signals.handle();
    std::thread::Builder::new()
        .name("sr-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                canceller.cancel(sig);
            }
        })?;
    Ok(handle)
}
