//! The side effects the build has on the host, behind one narrow trait: running a program.
//!
//! Every external tool (`apt-cache`, `apt-get download`, `dpkg-deb -x`, `depmod`, `mkfs.ext4`,
//! `xz`, `zstd`, `chroot`) is a [`Cmd`] handed to a [`Host`]. Tests record the commands (and
//! play a tool's part by writing what it would have written); [`RealHost`] runs them.
//! Plain file reads and writes stay on `std::fs`: they happen only in the work, cache and
//! output directories, which tests point at temporary directories.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::ArtifactError;

/// One command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    /// The program (looked up on PATH).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// The working directory, if not the current one.
    pub cwd: Option<PathBuf>,
}

impl Cmd {
    /// A command with arguments.
    pub fn new<I, S>(program: &str, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Cmd {
            program: program.to_owned(),
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            cwd: None,
        }
    }

    /// The same command with an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Cmd {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The same command run in `dir`.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Cmd {
        self.cwd = Some(dir.into());
        self
    }

    /// The command line as a person would type it (for messages and progress).
    pub fn display(&self) -> String {
        let mut s = self.program.clone();
        for a in &self.args {
            s.push(' ');
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'') {
                s.push('\'');
                s.push_str(&a.replace('\'', "'\\''"));
                s.push('\'');
            } else {
                s.push_str(a);
            }
        }
        s
    }
}

/// Runs commands for the build.
pub trait Host {
    /// Runs `cmd` to completion and returns its stdout. A command that cannot start or exits
    /// non-zero is an [`ArtifactError::Tool`] for `step`.
    fn run(&self, step: &'static str, cmd: &Cmd) -> Result<Vec<u8>, ArtifactError>;
}

/// The real host: `std::process::Command`, stdin closed, stderr captured for the error.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealHost;

impl Host for RealHost {
    fn run(&self, step: &'static str, cmd: &Cmd) -> Result<Vec<u8>, ArtifactError> {
        let mut c = Command::new(&cmd.program);
        c.args(&cmd.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &cmd.env {
            c.env(k, v);
        }
        if let Some(dir) = &cmd.cwd {
            c.current_dir(dir);
        }
        let out = c.output().map_err(|e| ArtifactError::Tool {
            step,
            command: cmd.display(),
            reason: format!("cannot start {}: {e}", cmd.program),
        })?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(6).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(ArtifactError::Tool {
            step,
            command: cmd.display(),
            reason: format!("{} ({})", out.status, tail.join(" | ")),
        })
    }
}
