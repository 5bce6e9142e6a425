//! Evidence: event types, the hash-chained event log, run_report.json v1, signing, verification
//! and export. The format is specified in docs/evidence.md.
//!
//! # How a run uses this crate
//!
//! ```no_run
//! # use sr_evidence::{ChainWriter, SystemClock, EventSink, events, report, keys};
//! # fn demo(run_dir: &std::path::Path, plan: &[String], mut r: report::RunReport) -> Result<(), sr_evidence::EvidenceError> {
//! // 1. Before anything happens: open the chain with the evidence plan's event list.
//! let mut chain = ChainWriter::create(run_dir, plan, Box::new(SystemClock))?;
//! // 2. While it runs: emit events (the runner only sees `dyn EventSink`).
//! chain.emit(events::RUN_PREPARE, serde_json::json!({"runId": "r1"})).ok();
//! // 3. At the end: sync the chain, fill the report's facts, seal and write it.
//! let summary = chain.finish()?;
//! r.timeline.count = summary.count;
//! r.timeline.dropped = summary.dropped;
//! let (key, _created) = keys::load_or_create(std::path::Path::new("/var/lib/safe-run/keys/k"))?;
//! let sealed = report::seal(r, &summary.head, Some(&key))?;
//! report::write_report(&run_dir.join(report::REPORT_FILE), &sealed)?;
//! # Ok(()) }
//! ```
//!
//! Filling the report: [`report::Input::from_file`] / [`report::Input::from_json`] for the
//! inputs, [`report::Output::from_file`] for stdout/stderr, [`report::Timeline::from_summary`],
//! [`report::rfc3339_from_unix_ms`] for times; every field is documented in docs/evidence.md.
//! An event the plan does not list is dropped and counted; any emit error is SR-EVD-001 and
//! the writer refuses everything after it, so the runner must stop the run on it.
//!
//! Afterwards, [`verify::verify`] checks everything offline and [`export::export_intoto`]
//! produces a DSSE envelope. Modules:
//!
//! * [`events`]: the stable event type names;
//! * [`sink`]: the [`EventSink`] seam the runner emits into ([`RecordingSink`] for tests);
//! * [`chain`]: [`ChainWriter`] and [`chain::check_chain`];
//! * [`canonical`]: RFC 8785 canonical JSON and `sha256:` digests;
//! * [`report`]: the v1 report types, [`report::seal`], [`report::write_report`];
//! * [`keys`]: the Ed25519 signing key file;
//! * [`mounts`]: bounded digests of the files in the run's mounts (the report's `mounts`);
//! * [`verify`]: offline verification;
//! * [`export`]: in-toto Statement v1 in a DSSE envelope.
#![forbid(unsafe_code)]

pub mod activity;
pub mod canonical;
pub mod chain;
mod error;
pub mod events;
pub mod export;
pub mod keys;
pub mod mounts;
pub mod report;
pub mod sink;
pub mod verify;

pub use chain::{ChainSummary, ChainWriter, Clock, SteppingClock, SystemClock};
/// The Ed25519 key types used for signing and verifying (re-exported so callers need no
/// direct dependency on ed25519-dalek).
pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use error::EvidenceError;
pub use sink::{EmitError, EventSink, RecordingSink};
