//! Evidence: event types, the hash-chained event log, run_report.json v1, signing, verification
//! and export.
#![forbid(unsafe_code)]

pub mod events;
pub mod sink;

pub use sink::{EmitError, EventSink, RecordingSink};
