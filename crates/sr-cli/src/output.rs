//! How failures reach the terminal: text for people, JSON for programs.

use clap::ValueEnum;
use sr_common::Diagnostic;

/// Output format of diagnostics and results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Format {
    /// Human-readable text.
    #[default]
    Text,
    /// JSON (on stdout; for `run`, on stderr: stdout is the workload's).
    Json,
}

/// Prints diagnostics to stderr (text) or as a JSON array on stdout, and returns the exit code
/// of the first one's family.
pub fn fail(diagnostics: &[Diagnostic], format: Format) -> u8 {
    match format {
        Format::Text => {
            use std::io::Write;
            // A closed stderr must not turn a clean failure into a panic.
            let mut err = std::io::stderr().lock();
            for d in diagnostics {
                let _ = writeln!(err, "error: {d}");
            }
        }
        Format::Json => {
            let doc = serde_json::json!({ "ok": false, "errors": diagnostics });
            print_stdout(&format!("{doc:#}\n"));
        }
    }
    diagnostics
        .first()
        .map(|d| exit_code(d.code.exit_code()))
        .unwrap_or(1)
}

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
