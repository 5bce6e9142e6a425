//! Shared vocabulary of the safe-run crates.
//!
//! This crate owns what every stage of the pipeline must agree on:
//!
//! * [`ErrorCode`]: the stable, documented error codes (`SR-POL-001`, ...). They are part of the
//!   command-line interface; scripts match on them, so a code never changes meaning.
//! * [`Diagnostic`]: the one shape in which every failure is shown to a person or emitted as JSON:
//!   code, where (policy path or run phase), cause, hint.
//! * [`ByteSize`] and [`DurationSpec`]: the human-friendly units a policy is written in
//!   (`256Mi`, `30s`), parsed strictly and without overflow.
#![forbid(unsafe_code)]

mod code;
mod diagnostic;
mod duration;
pub mod events;
mod size;

pub use code::ErrorCode;
pub use diagnostic::{Diagnostic, Location, error_chain};
pub use duration::DurationSpec;
pub use size::ByteSize;

/// Errors from parsing the unit types of this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// The text is not a number followed by a known unit.
    #[error("'{text}' is not a valid {kind}: {why}")]
    Invalid {
        /// What was being parsed ("byte size", "duration").
        kind: &'static str,
        /// The offending text (truncated to 64 characters).
        text: String,
        /// Why it was rejected.
        why: &'static str,
    },
}

impl UnitError {
    pub(crate) fn invalid(kind: &'static str, text: &str, why: &'static str) -> Self {
        let text: String = text.chars().take(64).collect();
        UnitError::Invalid { kind, text, why }
    }
}
