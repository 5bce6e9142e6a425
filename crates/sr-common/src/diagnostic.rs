//! The one shape every failure takes when it reaches a person or a program.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ErrorCode;

/// A line and column in the policy file, both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Location {
    /// 1-based line.
    pub line: u32,
    /// 1-based column (in characters).
    pub column: u32,
}

/// One reported problem: a stable code, where it is, why, and what to do about it.
///
/// `path` is a policy path (`network.egress[1].ports[0]`) for policy problems, or a run phase
/// (`launch.mounts`, `cleanup.cgroup`) for run problems.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// Stable error code.
    pub code: ErrorCode,
    /// Policy path or run phase the problem concerns.
    pub path: String,
    /// Where in the policy file, when known.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub location: Option<Location>,
    /// One-line cause.
    pub message: String,
    /// What to do about it.
    pub hint: String,
}

impl Diagnostic {
    /// A diagnostic without a location.
    pub fn new(
        code: ErrorCode,
        path: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Diagnostic {
            code,
            path: path.into(),
            location: None,
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// The same diagnostic with a location.
    pub fn at(mut self, location: Option<Location>) -> Self {
        self.location = location;
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.code, self.path)?;
        if let Some(loc) = self.location {
            write!(f, " (line {}, column {})", loc.line, loc.column)?;
        }
        write!(f, ": {}", self.message)?;
        if !self.hint.is_empty() {
            write!(f, "\n  hint: {}", self.hint)?;
        }
        Ok(())
    }
}

/// An error's message followed by each of its causes (`cannot open x: permission denied`), as a
/// diagnostic's message wants it.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}
