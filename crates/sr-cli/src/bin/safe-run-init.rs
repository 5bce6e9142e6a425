//! `safe-run-init`: the process sandbox's init, as a binary of its own.
//!
//! The runner starts the init with fork + exec for every sandbox, so its start-up is on the
//! path of every `safe-run run`: this binary links only the init (a few MiB), where the
//! `safe-run` binary it would otherwise re-execute is all of the CLI, the daemon and the
//! archive, and costs about a millisecond more to load and relocate. `safe-run` uses it when
//! it lies beside it (`cargo install` and the release build put it there) and falls back to
//! `safe-run __init` otherwise; both run the same `sr_runner::sandbox::init::main`.

fn main() {
    std::process::exit(sr_runner::sandbox::init::main());
}
