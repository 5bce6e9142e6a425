//! The sandbox's evidence while it lives: one event sink shared by the sandbox, its monitor
//! and its execs, the warnings gathered on the way, and the first event that could not be
//! written (a sandbox whose evidence cannot be recorded is stopped, SR-EVD-001).

use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use sr_common::events::EventType;
use sr_common::{Diagnostic, ErrorCode};
use sr_evidence::sink::EventSink;

/// What the sandbox records besides the sink's own events.
pub struct Recorded<S> {
    /// The sink (the hash chain in production); taken once, when the sandbox is destroyed
    /// (an exec handle that outlives it then records nothing more).
    pub sink: Option<S>,
    /// Warnings for the report.
    pub warnings: Vec<Diagnostic>,
    /// The first event that could not be written.
    pub failure: Option<Diagnostic>,
}

/// Emits events from any thread.
pub trait Emit: Send + Sync {
    /// Records one event; a failure is kept (see [`Recorded::failure`]).
    fn emit(&self, ty: EventType, payload: Value);
    /// Adds a warning for the report.
    fn warn(&self, d: Diagnostic);
    /// Whether an event could not be written (and takes that failure).
    fn take_failure(&self) -> Option<Diagnostic>;
}

/// The shared evidence of one sandbox.
pub struct Evidence<S>(Mutex<Recorded<S>>);

impl<S: EventSink> Evidence<S> {
    /// Wraps `sink`.
    pub fn new(sink: S) -> Arc<Self> {
        Arc::new(Evidence(Mutex::new(Recorded {
            sink: Some(sink),
            warnings: Vec::new(),
            failure: None,
        })))
    }

    /// Locks it.
    pub fn lock(&self) -> MutexGuard<'_, Recorded<S>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes the sink and the warnings out (the sandbox is being destroyed).
    pub fn take(&self) -> (Option<S>, Vec<Diagnostic>) {
        let mut r = self.lock();
        (r.sink.take(), std::mem::take(&mut r.warnings))
    }
}

impl<S: EventSink> Emit for Evidence<S> {
    fn emit(&self, ty: EventType, payload: Value) {
        let mut r = self.lock();
        let Some(sink) = r.sink.as_mut() else {
            return;
        };
        if let Err(e) = sink.emit(ty, payload) {
            let d = Diagnostic::new(
                ErrorCode::EvidenceEventWrite,
                format!("evidence.{ty}"),
                e.to_string(),
                "check that the run directory is writable and not full; the run was stopped \
                 because its evidence could not be recorded",
            );
            if r.failure.is_none() {
                r.failure = Some(d.clone());
            }
            r.warnings.push(d);
        }
    }

    fn warn(&self, d: Diagnostic) {
        self.lock().warnings.push(d);
    }

    fn take_failure(&self) -> Option<Diagnostic> {
        self.lock().failure.take()
    }
}
