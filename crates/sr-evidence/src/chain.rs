//! The hash-chained event log (`<run dir>/events.jsonl`): writing it as a run happens, and
//! checking it afterwards.
//!
//! # Format
//!
//! One JSON object per line, `{hash, payload, prev, seq, time, type}`:
//!
//! * `seq`: 0, 1, 2, ... without gaps;
//! * `time`: RFC 3339 in UTC, from the injected [`Clock`];
//! * `type`: one of [`crate::events`];
//! * `payload`: any JSON whose integers lie within ±(2^53-1);
//! * `prev`: the `hash` of the previous line, or [`GENESIS`] for the first;
//! * `hash`: `sha256:<hex>` of the RFC 8785 canonical bytes (JCS) of the object without `hash`.
//!
//! Each line is itself the JCS of the whole object (`hash` sorts first, so the line is
//! `{"hash":"…",` followed by the hashed bytes without their opening brace). A verifier can
//! therefore demand byte equality: not one byte of the file can change, even whitespace, without
//! failing verification.
//!
//! # Gating
//!
//! [`ChainWriter`] writes only the types the policy's evidence plan lists; any other type
//! (unlisted or unknown) is dropped and counted in [`ChainSummary::dropped`].
//!
//! # Durability
//!
//! Each event is one `write(2)` of a whole line, made before `emit` returns. No `fsync` per
//! event: the threat is a crash of safe-run, not of the host, and the kernel keeps what a dead
//! process wrote, so a crash leaves a valid prefix of complete lines. [`ChainWriter::finish`]
//! syncs once at the end, before the report that names the head is written.
//!
//! # Failure
//!
//! A write failure, or a payload that cannot be recorded exactly, is SR-EVD-001. The writer is
//! then poisoned: every later emit fails too, because a log with a silent hole would be worse
//! than a run stopped on the spot.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::activity::{Activity, Ledger, LedgerError};
use crate::canonical::{check_numbers, jcs, jcs_value_into, sha256_tagged};
use crate::error::EvidenceError;
use crate::events::{self, EventType};
use crate::sink::{EmitError, EventSink};

/// The `prev` of the first event: `sha256:` and 64 zeros.
pub const GENESIS: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// The file name of the event log inside a run directory.
pub const EVENTS_FILE: &str = "events.jsonl";

/// Where event times come from; injected so that tests are deterministic.
pub trait Clock: Send {
    /// The current time.
    fn now(&self) -> OffsetDateTime;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that starts at a fixed instant and advances by a fixed step on every reading.
#[derive(Debug)]
pub struct SteppingClock {
    next: std::sync::Mutex<OffsetDateTime>,
    step: time::Duration,
}

impl SteppingClock {
    /// Starts at `start`, advancing `step` per reading.
    pub fn new(start: OffsetDateTime, step: time::Duration) -> Self {
        SteppingClock {
            next: std::sync::Mutex::new(start),
            step,
        }
    }
}

impl Clock for SteppingClock {
    fn now(&self) -> OffsetDateTime {
        let mut next = match self.next.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = *next;
        *next = now.saturating_add(self.step);
        now
    }
}

/// RFC 3339 in UTC (`2026-11-23T11:20:00.123Z`), the format of every time in the evidence.
pub fn format_time(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// The hashed part of an event, in the field order JCS sorts them into.
#[derive(Serialize)]
struct Body<'a> {
    payload: &'a Value,
    prev: &'a str,
    seq: u64,
    time: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
}

/// Computes an event's hash and its canonical line (with the trailing newline).
///
/// The payload must already have passed [`check_numbers`].
pub fn encode_event(
    seq: u64,
    time: &str,
    event_type: &str,
    payload: &Value,
    prev: &str,
) -> Result<(String, Vec<u8>), String> {
    let body = jcs(&Body {
        payload,
        prev,
        seq,
        time,
        event_type,
    })?;
    let hash = sha256_tagged(&body);
    Ok((hash.clone(), canonical_line(&hash, &body)))
}

/// `{"hash":"<hash>",` + the hashed bytes without their `{` + newline.
fn canonical_line(hash: &str, body: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(body.len() + hash.len() + 12);
    line.extend_from_slice(b"{\"hash\":\"");
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(b"\",");
    line.extend_from_slice(body.get(1..).unwrap_or_default());
    line.push(b'\n');
    line
}

/// Whether `line` is exactly [`canonical_line`]`(hash, body)`, compared piecewise.
fn is_canonical_line(line: &[u8], hash: &str, body: &[u8]) -> bool {
    let Some(rest) = line.strip_prefix(b"{\"hash\":\"".as_slice()) else {
        return false;
    };
    let Some(rest) = rest.strip_prefix(hash.as_bytes()) else {
        return false;
    };
    let Some(rest) = rest.strip_prefix(b"\",".as_slice()) else {
        return false;
    };
    rest.strip_suffix(b"\n".as_slice()) == body.get(1..)
}

/// Head, count and dropped events of a chain, as the report's timeline records them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    /// Hash of the last event written, or [`GENESIS`] when none was.
    pub head: String,
    /// Events written.
    pub count: u64,
    /// Events not written because the evidence plan does not list their type.
    pub dropped: u64,
}

/// Writes the hash-chained event log; the [`EventSink`] the runner emits into.
pub struct ChainWriter<W: Write + Send = File> {
    out: W,
    path: Option<PathBuf>,
    allowed: BTreeSet<EventType>,
    clock: Box<dyn Clock>,
    count: u64,
    head: String,
    dropped: u64,
    poisoned: Option<String>,
    ledger: Ledger,
}

impl<W: Write + Send> std::fmt::Debug for ChainWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainWriter")
            .field("path", &self.path)
            .field("count", &self.count)
            .field("head", &self.head)
            .field("dropped", &self.dropped)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl ChainWriter<File> {
    /// Creates `<run_dir>/events.jsonl` (it must not exist; mode 0600) and writes into it the
    /// event types in `plan_events` (the evidence plan's list) and the activity types, always.
    pub fn create(
        run_dir: &Path,
        plan_events: &[String],
        clock: Box<dyn Clock>,
    ) -> Result<Self, EvidenceError> {
        let path = run_dir.join(EVENTS_FILE);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path);
        Self::on(path, file, plan_events, clock)
    }

    /// Like [`ChainWriter::create`], into an `events.jsonl` made ahead of time (a run
    /// directory claimed from a spare, which made it 0600): it must be an empty regular file,
    /// opened without following a symlink, so the chain starts as in a created one.
    pub fn adopt(
        run_dir: &Path,
        plan_events: &[String],
        clock: Box<dyn Clock>,
    ) -> Result<Self, EvidenceError> {
        let path = run_dir.join(EVENTS_FILE);
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .and_then(|f| {
                let m = f.metadata()?;
                if m.is_file() && m.len() == 0 {
                    Ok(f)
                } else {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "not an empty file",
                    ))
                }
            });
        Self::on(path, file, plan_events, clock)
    }

    fn on(
        path: PathBuf,
        file: std::io::Result<File>,
        plan_events: &[String],
        clock: Box<dyn Clock>,
    ) -> Result<Self, EvidenceError> {
        let file = file.map_err(|source| EvidenceError::CreateLog {
            path: path.clone(),
            source,
        })?;
        let mut writer = ChainWriter::from_writer(file, plan_events, clock);
        writer.path = Some(path);
        Ok(writer)
    }

    /// Syncs the log to disk and returns its summary. Call once, after the last event and
    /// before the report is sealed.
    pub fn finish(self) -> Result<ChainSummary, EvidenceError> {
        let summary = self.summary();
        if let Some(first) = &self.poisoned {
            return Err(EvidenceError::Poisoned {
                event_type: "(finish)".into(),
                first: first.clone(),
            });
        }
        self.out
            .sync_all()
            .map_err(|source| EvidenceError::WriteEvent {
                event_type: "(finish)".into(),
                source,
            })?;
        Ok(summary)
    }
}

impl<W: Write + Send> ChainWriter<W> {
    /// A writer into any byte sink (tests use a Vec or a failing writer).
    pub fn from_writer(out: W, plan_events: &[String], clock: Box<dyn Clock>) -> Self {
        ChainWriter {
            out,
            path: None,
            // Names the catalogue does not know are never written; the activity types always are.
            allowed: plan_events
                .iter()
                .filter_map(|name| EventType::parse(name))
                .chain(events::ACTIVITY)
                .collect(),
            clock,
            count: 0,
            head: GENESIS.to_owned(),
            dropped: 0,
            poisoned: None,
            ledger: Ledger::default(),
        }
    }

    /// The current summary (head, count, dropped).
    pub fn summary(&self) -> ChainSummary {
        ChainSummary {
            head: self.head.clone(),
            count: self.count,
            dropped: self.dropped,
        }
    }

    /// The report's `execs`, `transfers` and `pool`: what the events written so far say (each
    /// written event was fed to a [`Ledger`] at its own position), leaving an empty ledger
    /// behind.
    pub fn take_activity(&mut self) -> Result<Activity, LedgerError> {
        std::mem::take(&mut self.ledger).finish()
    }

    /// Whether an earlier failure stopped the log.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// Flushes and returns the summary and the inner writer.
    pub fn into_inner(mut self) -> Result<(ChainSummary, W), EvidenceError> {
        self.out
            .flush()
            .map_err(|source| EvidenceError::WriteEvent {
                event_type: "(finish)".into(),
                source,
            })?;
        Ok((self.summary(), self.out))
    }

    /// Records one event. Returns its `seq`, or `None` when the plan gates it out.
    pub fn record(
        &mut self,
        event_type: EventType,
        payload: &Value,
    ) -> Result<Option<u64>, EvidenceError> {
        if let Some(first) = &self.poisoned {
            return Err(EvidenceError::Poisoned {
                event_type: event_type.to_string(),
                first: first.clone(),
            });
        }
        if !self.allowed.contains(&event_type) {
            self.dropped += 1;
            return Ok(None);
        }
        let result = self.write_event(event_type.as_str(), payload);
        if let Err(e) = &result {
            self.poisoned = Some(e.to_diagnostic().message);
        }
        result.map(Some)
    }

    fn write_event(&mut self, event_type: &str, payload: &Value) -> Result<u64, EvidenceError> {
        let payload_error = |reason: String| EvidenceError::Payload {
            event_type: event_type.to_owned(),
            reason,
        };
        check_numbers(payload).map_err(payload_error)?;
        let seq = self.count;
        let time = format_time(self.clock.now());
        let (hash, line) =
            encode_event(seq, &time, event_type, payload, &self.head).map_err(payload_error)?;
        let io = |source| EvidenceError::WriteEvent {
            event_type: event_type.to_owned(),
            source,
        };
        self.out.write_all(&line).map_err(io)?;
        self.out.flush().map_err(io)?;
        self.head = hash;
        self.count += 1;
        self.ledger.feed(seq, event_type, payload);
        Ok(seq)
    }
}

impl<W: Write + Send> EventSink for ChainWriter<W> {
    fn emit(&mut self, event_type: EventType, payload: Value) -> Result<(), EmitError> {
        self.record(event_type, &payload)
            .map(|_| ())
            .map_err(|e| EmitError {
                event_type,
                reason: e.to_diagnostic().message,
            })
    }
}

/// A chain that checked out: every line parsed, linked and hashed correctly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedChain {
    /// Number of events.
    pub count: u64,
    /// Hash of the last event ([`GENESIS`] for an empty log).
    pub head: String,
    /// Type of the last event.
    pub last_type: Option<String>,
}

impl CheckedChain {
    /// Whether the log ends with the terminal event ([`events::CLEANUP_DONE`]). A valid chain
    /// without it is an incomplete prefix: the run stopped (or is still running) before cleanup.
    pub fn ends_with_cleanup(&self) -> bool {
        self.last_type.as_deref() == Some(events::CLEANUP_DONE.as_str())
    }
}

/// Where and why a chain failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ChainError {
    /// 1-based line number.
    pub line: u64,
    /// Why.
    pub reason: String,
}

/// Checks a whole event log: each line is one canonical event, `seq` counts from 0, `prev`
/// links to the previous hash (or [`GENESIS`]), each `hash` is recomputed, and the file ends
/// with a newline (no torn tail).
///
/// Lines are parsed and hashed on all cores (each line's check needs only the line itself);
/// the links are then followed in order, so the first error reported is the first in the file.
pub fn check_chain(bytes: &[u8]) -> Result<CheckedChain, ChainError> {
    let lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .clamp(1, 8);
    let chunk = lines.len().div_ceil(threads).max(4096);
    let checked: Vec<Result<LineFacts, String>> = if lines.len() <= chunk {
        lines.iter().map(|l| check_line(l)).collect()
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = lines
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        let mut out = Vec::with_capacity(part.len());
                        for line in part {
                            let r = check_line(line);
                            let stop = r.is_err();
                            out.push(r);
                            if stop {
                                break; // later lines of this chunk are never looked at
                            }
                        }
                        out
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| {
                    h.join().unwrap_or_else(|_| {
                        vec![Err("internal error: a checker thread panicked".into())]
                    })
                })
                .collect()
        })
    };

    let mut head = GENESIS.to_owned();
    let mut last_type = None;
    let mut count: u64 = 0;
    for facts in checked {
        let err = |reason: String| ChainError {
            line: count + 1,
            reason,
        };
        let facts = facts.map_err(err)?;
        if facts.seq != count {
            return Err(err(format!(
                "seq is {}, expected {count} (removed, reordered or duplicated event)",
                facts.seq
            )));
        }
        if facts.prev != head {
            return Err(err(format!(
                "prev {} does not link to the previous event's hash {head}",
                facts.prev
            )));
        }
        head = facts.hash;
        last_type = Some(facts.event_type);
        count += 1;
    }
    Ok(CheckedChain {
        count,
        head,
        last_type,
    })
}

/// What one line says about its place in the chain.
struct LineFacts {
    hash: String,
    prev: String,
    seq: u64,
    event_type: String,
}

/// Checks one line on its own (with its newline): shape, canonical form, hash.
fn check_line(line: &[u8]) -> Result<LineFacts, String> {
    if line.last() != Some(&b'\n') {
        return Err(format!(
            "{} bytes after the last newline are not a complete event (torn write)",
            line.len()
        ));
    }
    let mut value: serde_json::Map<String, Value> =
        serde_json::from_slice(line).map_err(|e| format!("not a JSON object: {e}"))?;
    if value.len() != 6 {
        return Err(format!(
            "an event has exactly the fields hash, payload, prev, seq, time, type; found {}",
            value.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    // shift_remove keeps the other members in file order, which for a canonical line is
    // already the JCS order (so the canonicalizer need not sort).
    let Some(Value::String(hash)) = value.shift_remove("hash") else {
        return Err("no string field 'hash'".into());
    };
    let Some(Value::String(event_type)) = value.get("type").cloned() else {
        return Err("no string field 'type'".into());
    };
    let Some(seq) = value.get("seq").and_then(Value::as_u64) else {
        return Err("no integer field 'seq'".into());
    };
    let Some(Value::String(prev)) = value.get("prev").cloned() else {
        return Err("no string field 'prev'".into());
    };
    match value.get("time") {
        Some(Value::String(t)) if OffsetDateTime::parse(t, &Rfc3339).is_ok() => {}
        _ => return Err("no RFC 3339 field 'time'".into()),
    }
    let Some(payload) = value.get("payload") else {
        return Err("no field 'payload'".into());
    };
    check_numbers(payload)?;
    let mut body = Vec::with_capacity(line.len());
    jcs_value_into(&Value::Object(value), &mut body)?;
    let computed = sha256_tagged(&body);
    if computed != hash {
        return Err(format!(
            "hash {hash} does not match the content ({computed})"
        ));
    }
    if !is_canonical_line(line, &hash, &body) {
        return Err(
            "the line is not in canonical form (RFC 8785) although its content hashes right".into(),
        );
    }
    Ok(LineFacts {
        hash,
        prev,
        seq,
        event_type,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn clock() -> Box<dyn Clock> {
        Box::new(SteppingClock::new(
            time::macros::datetime!(2026-01-02 03:04:05 UTC),
            time::Duration::milliseconds(10),
        ))
    }

    fn all() -> Vec<String> {
        events::all_names()
    }

    #[test]
    fn first_event_links_to_genesis_and_lines_are_canonical() {
        let mut w = ChainWriter::from_writer(Vec::new(), &all(), clock());
        w.record(events::RUN_PREPARE, &json!({"runId": "r1"}))
            .unwrap();
        let (summary, out) = w.into_inner().unwrap();
        let text = String::from_utf8(out).unwrap();
        let expected_body = r#"{"payload":{"runId":"r1"},"prev":"sha256:0000000000000000000000000000000000000000000000000000000000000000","seq":0,"time":"2026-01-02T03:04:05Z","type":"run.prepare"}"#;
        let hash = sha256_tagged(expected_body.as_bytes());
        assert_eq!(
            text,
            format!("{{\"hash\":\"{hash}\",{}\n", &expected_body[1..])
        );
        assert_eq!(summary.head, hash);
        assert_eq!(summary.count, 1);
        let checked = check_chain(text.as_bytes()).unwrap();
        assert_eq!(checked.head, hash);
        assert!(!checked.ends_with_cleanup());
    }

    #[test]
    fn empty_log_is_a_valid_empty_chain() {
        let checked = check_chain(b"").unwrap();
        assert_eq!(checked.count, 0);
        assert_eq!(checked.head, GENESIS);
    }

    #[test]
    fn torn_tail_is_rejected() {
        let mut w = ChainWriter::from_writer(Vec::new(), &all(), clock());
        w.record(events::RUN_PREPARE, &json!({})).unwrap();
        let (_, mut out) = w.into_inner().unwrap();
        out.extend_from_slice(b"{\"hash\"");
        let err = check_chain(&out).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.reason.contains("torn"), "{err}");
    }
}
