//! An exec started without `?wait=true`: a thread pulls its events into an [`ExecLog`] that
//! clients read as Server-Sent Events and can resume. Each output event's id is the stream
//! offset after it (bytes of stdout and stderr so far), so `Last-Event-ID` says exactly what a
//! client has; the log keeps the last [`REPLAY_BYTES`] of output for such resumes, and the
//! exit for as long as the sandbox lives. The exec's stdin and signals go through the handles
//! kept beside the log.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::sandboxes::Running;
use serde::Serialize;
use sr_runner::life::{ExecControl, ExecEnd, ExecEvent, ExecHandle, StdinWriter};
use tokio::sync::watch;

/// Output kept for resumes, per exec.
pub const REPLAY_BYTES: u64 = 4 << 20;

/// One event of an exec as it is sent.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum Sent {
    /// A chunk of stdout (a terminal's output, for an exec with a PTY).
    Stdout {
        /// The bytes as read; sent as `text`, lossy UTF-8 (a WebSocket gets them as they are).
        #[serde(rename = "text", serialize_with = "lossy")]
        #[schema(value_type = String)]
        bytes: Vec<u8>,
    },
    /// A chunk of stderr.
    Stderr {
        /// The bytes as read; sent as `text`, lossy UTF-8.
        #[serde(rename = "text", serialize_with = "lossy")]
        #[schema(value_type = String)]
        bytes: Vec<u8>,
    },
    /// A stream passed the policy's output limit: the rest is dropped.
    Cut {
        /// `stdout` or `stderr`.
        #[schema(value_type = String)]
        stream: &'static str,
    },
    /// The end.
    #[serde(rename_all = "camelCase")]
    Exit {
        /// `exited`, `signaled`, `timedOut`, `failed`, `lost`.
        #[schema(value_type = String)]
        status: &'static str,
        /// Its exit code.
        exit_code: Option<i32>,
        /// The signal that killed it.
        signal: Option<i32>,
        /// Why it could not start.
        error: Option<String>,
        /// How long it ran.
        duration_ms: u64,
    },
}

fn lossy<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(bytes))
}

impl Sent {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            Sent::Stdout { .. } => "stdout",
            Sent::Stderr { .. } => "stderr",
            Sent::Cut { .. } => "cut",
            Sent::Exit { .. } => "exit",
        }
    }
}

#[derive(Default)]
struct Log {
    /// (offset after the event, the event), oldest first.
    events: VecDeque<(u64, Sent)>,
    /// Output bytes so far.
    offset: u64,
    /// Output bytes dropped from the front of `events`.
    dropped_before: u64,
    ended: bool,
}

/// A streamed exec: its events, stdin and control.
pub struct ExecLog {
    /// The exec's id.
    pub id: u64,
    log: Mutex<Log>,
    changed: watch::Sender<u64>,
    stdin: Mutex<Option<StdinWriter>>,
    control: ExecControl,
}

/// Where a reader is in an exec's events ([`ExecLog::next_batch`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Cursor {
    at: Option<u64>,
    passed_at_offset: usize,
}

impl Cursor {
    /// From the start (`None`) or after stream offset `at`.
    pub fn after(at: Option<u64>) -> Cursor {
        Cursor {
            at,
            passed_at_offset: 0,
        }
    }

    /// Of `events` (what [`ExecLog::after`] gave for this cursor's offset), those not yet
    /// read through it; moves past them.
    fn take(&mut self, events: Vec<(u64, Sent)>) -> Vec<(u64, Sent)> {
        let mut skip = self.passed_at_offset;
        let fresh: Vec<(u64, Sent)> = events
            .into_iter()
            .filter(|(off, _)| {
                if Some(*off) == self.at && skip > 0 {
                    skip -= 1;
                    return false;
                }
                true
            })
            .collect();
        for (off, e) in &fresh {
            let zero_bytes = matches!(e, Sent::Cut { .. } | Sent::Exit { .. });
            match (zero_bytes, Some(*off) == self.at) {
                // Output moves the cursor; `after` never returns it again at its own offset.
                (false, _) => {
                    self.at = Some(*off);
                    self.passed_at_offset = 0;
                }
                (true, true) => self.passed_at_offset += 1,
                (true, false) => {
                    self.at = Some(*off);
                    self.passed_at_offset = 1;
                }
            }
        }
        fresh
    }
}

/// What a reader asked for is no longer kept.
#[derive(Debug)]
pub struct Gone {
    /// The first offset still kept.
    pub first_kept: u64,
}

impl ExecLog {
    fn lock(&self) -> MutexGuard<'_, Log> {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts pulling `handle`'s events on a thread of its own, which keeps `running` (what
    /// the exec holds while it runs) until the exec ends.
    pub fn start(mut handle: ExecHandle, running: Running) -> Arc<ExecLog> {
        let (changed, _) = watch::channel(0);
        let log = Arc::new(ExecLog {
            id: handle.id(),
            log: Mutex::new(Log::default()),
            changed,
            stdin: Mutex::new(handle.stdin()),
            control: handle.control(),
        });
        let pump = log.clone();
        std::thread::spawn(move || {
            let _running = running;
            while let Some(e) = handle.next_event() {
                let (sent, bytes) = match e {
                    ExecEvent::Stdout(b) => {
                        let n = b.len() as u64;
                        (Sent::Stdout { bytes: b }, n)
                    }
                    ExecEvent::Stderr(b) => {
                        let n = b.len() as u64;
                        (Sent::Stderr { bytes: b }, n)
                    }
                    ExecEvent::Cut(stream) => (Sent::Cut { stream }, 0),
                    ExecEvent::Started(_) => continue,
                    ExecEvent::Exit(r) => {
                        let (status, exit_code, signal, error) = match &r.end {
                            ExecEnd::Exited(c) => ("exited", Some(*c), None, None),
                            ExecEnd::Signaled(s) => ("signaled", None, Some(*s), None),
                            ExecEnd::TimedOut => ("timedOut", None, None, None),
                            ExecEnd::Failed(d) => ("failed", None, None, Some(d.message.clone())),
                            ExecEnd::Lost => ("lost", None, None, None),
                        };
                        let exit = Sent::Exit {
                            status,
                            exit_code,
                            signal,
                            error,
                            duration_ms: r.duration_ms,
                        };
                        pump.push(exit, 0, true);
                        break;
                    }
                };
                pump.push(sent, bytes, false);
            }
            if !pump.lock().ended {
                let lost = Sent::Exit {
                    status: "lost",
                    exit_code: None,
                    signal: None,
                    error: None,
                    duration_ms: 0,
                };
                pump.push(lost, 0, true);
            }
        });
        log
    }

    fn push(&self, sent: Sent, bytes: u64, last: bool) {
        let count = {
            let mut l = self.lock();
            l.offset += bytes;
            let at = l.offset;
            l.events.push_back((at, sent));
            l.ended |= last;
            // Output beyond the replay window goes; the exit always stays.
            while l.offset - l.dropped_before > REPLAY_BYTES && l.events.len() > 1 {
                if let Some((off, _)) = l.events.pop_front() {
                    l.dropped_before = off;
                }
            }
            l.events.len() as u64 + l.dropped_before
        };
        self.changed.send_replace(count);
    }

    /// The events after offset `after` (all with `None`), whether the exec has ended, or
    /// [`Gone`] when they are no longer kept.
    pub fn after(&self, after: Option<u64>) -> Result<(Vec<(u64, Sent)>, bool), Gone> {
        let l = self.lock();
        if let Some(a) = after
            && a < l.dropped_before
        {
            return Err(Gone {
                first_kept: l.dropped_before,
            });
        }
        let events = l
            .events
            .iter()
            .filter(|(off, e)| match after {
                None => true,
                // A cut and the exit carry no bytes, so they share the offset of the output
                // before them: a resume at that offset sends them (again, at worst).
                Some(a) => {
                    *off > a || (matches!(e, Sent::Cut { .. } | Sent::Exit { .. }) && *off == a)
                }
            })
            .cloned()
            .collect();
        Ok((events, l.ended))
    }

    /// The events after `cursor` not yet read through it, and whether the exec has ended; the
    /// cursor moves past them. A cut and the exit carry no bytes and share the offset of the
    /// output before them: the cursor counts those it has passed, so a reader never gets one
    /// twice (a resume from a bare offset may, once).
    pub fn next_batch(&self, cursor: &mut Cursor) -> Result<(Vec<(u64, Sent)>, bool), Gone> {
        let (events, ended) = self.after(cursor.at)?;
        Ok((cursor.take(events), ended))
    }

    /// Whether its exit (or loss) has been recorded.
    pub fn has_ended(&self) -> bool {
        self.lock().ended
    }

    /// Waits for a change after `seen` (a value of [`ExecLog::subscribe`]).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Writes to its stdin (`close`: then ends it).
    pub fn write_stdin(&self, bytes: &[u8], close: bool) -> std::io::Result<()> {
        let mut slot = self
            .stdin
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(w) = slot.as_mut() else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the exec has no stdin (start it with \"stdin\": \"\") or it was closed",
            ));
        };
        std::io::Write::write_all(w, bytes)?;
        if close && let Some(w) = slot.take() {
            w.close()?;
        }
        Ok(())
    }

    /// Sends `signal` to its process group.
    pub fn signal(&self, signal: i32) -> std::io::Result<()> {
        self.control.signal(signal)
    }

    /// Resizes its terminal (an exec started with a PTY).
    pub fn resize(&self, rows: u16, cols: u16) -> std::io::Result<()> {
        self.control.resize(rows, cols)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(n: usize) -> Sent {
        Sent::Stdout {
            bytes: vec![b'x'; n],
        }
    }

    fn exit() -> Sent {
        Sent::Exit {
            status: "exited",
            exit_code: Some(0),
            signal: None,
            error: None,
            duration_ms: 1,
        }
    }

    /// What `ExecLog::after` answers for `at` over `log`.
    fn after(log: &[(u64, Sent)], at: Option<u64>) -> Vec<(u64, Sent)> {
        log.iter()
            .filter(|(off, e)| match at {
                None => true,
                Some(a) => {
                    *off > a || (matches!(e, Sent::Cut { .. } | Sent::Exit { .. }) && *off == a)
                }
            })
            .cloned()
            .collect()
    }

    #[test]
    fn a_cursor_reads_each_event_once_including_the_cut_and_exit_at_the_last_offset() {
        let cut = Sent::Cut { stream: "stdout" };
        let mut log = vec![(3, out(3))];
        let mut c = Cursor::after(None);
        assert_eq!(c.take(after(&log, c.at)).len(), 1);
        assert!(c.take(after(&log, c.at)).is_empty());
        log.push((3, cut));
        let got = c.take(after(&log, c.at));
        assert_eq!(got.len(), 1, "the cut, once");
        assert!(c.take(after(&log, c.at)).is_empty(), "not the cut again");
        log.push((3, exit()));
        let got = c.take(after(&log, c.at));
        assert!(matches!(got[..], [(3, Sent::Exit { .. })]), "{got:?}");
        assert!(c.take(after(&log, c.at)).is_empty());
        // Output then its exit at the same offset, read in one go and then apart.
        let log = vec![(5, out(5)), (5, exit())];
        let mut c = Cursor::after(None);
        assert_eq!(c.take(after(&log, c.at)).len(), 2);
        assert!(c.take(after(&log, c.at)).is_empty());
        let mut c = Cursor::after(None);
        assert_eq!(c.take(after(&log[..1], c.at)).len(), 1);
        let got = c.take(after(&log, c.at));
        assert!(
            matches!(got[..], [(5, Sent::Exit { .. })]),
            "the exit after its output: {got:?}"
        );
    }
}
