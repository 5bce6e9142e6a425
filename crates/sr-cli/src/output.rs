//! How failures reach the terminal: text for people, JSON for programs.

// One output format and one failure printer for both binaries (`safe-run` and the evidence
// tools' `safe-run-verify`), so `--format json` means the same everywhere. For `run`, JSON goes
// to stderr instead: stdout is the workload's (see cmd/run.rs).
pub use sr_archive::tool::{Format, fail};

/// Converts an exit code to the u8 `ExitCode` takes, saturating.
pub fn exit_code(code: i32) -> u8 {
    u8::try_from(code).unwrap_or(1)
}

/// Writes `text` to stdout. A closed pipe (`safe-run schema | head`) is not an error: the
/// reader has what it wanted. Returns the exit code.
pub fn print_stdout(text: &str) -> u8 {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            1
        }
    }
}
