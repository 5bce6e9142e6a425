//! The seam through which the runner records evidence.
//!
//! The runner only ever calls [`EventSink::emit`]; whether the event is written (the policy's
//! evidence plan gates it), how it is chained and where it goes belong to the sink. Unit tests
//! use [`RecordingSink`].

use serde_json::Value;
use sr_common::events::EventType;

/// Error from recording an event. Carries SR-EVD-001 when shown.
#[derive(Debug, thiserror::Error)]
#[error("cannot write event {event_type}: {reason}")]
pub struct EmitError {
    /// The event type that could not be written.
    pub event_type: EventType,
    /// Why.
    pub reason: String,
}

/// Something that records run events.
pub trait EventSink: Send {
    /// Records one event of `event_type`  with `payload`.
    /// An event type the evidence plan does not list is accepted and dropped.
    fn emit(&mut self, event_type: EventType, payload: Value) -> Result<(), EmitError>;
}

/// A sink that keeps every event in memory, for tests.
#[derive(Debug, Default, Clone)]
pub struct RecordingSink {
    /// Events in order: (type, payload).
    pub events: Vec<(EventType, Value)>,
}

impl EventSink for RecordingSink {
    fn emit(&mut self, event_type: EventType, payload: Value) -> Result<(), EmitError> {
        self.events.push((event_type, payload));
        Ok(())
    }
}

impl RecordingSink {
    /// The types recorded, in order.
    pub fn types(&self) -> Vec<&'static str> {
        self.events.iter().map(|(t, _)| t.as_str()).collect()
    }
}
