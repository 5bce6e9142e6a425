//! The host's end of the agent protocol: one writer shared by every exec, one reader thread
//! that routes each frame to the exec (or request) it belongs to.
//!
//! The reader never waits on the agent's behalf: it decodes, routes into a bounded channel
//! per exec and goes on; an exec whose events are not consumed eventually stops the reader
//! (its channel is full), which stops the agent's writes: back-pressure, never unbounded
//! memory. Output is cut at the exec's limit and hashed here, so every consumer sees the same
//! bytes the evidence describes.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};
use sr_agent_proto::message::{ErrorReply, Exit, Started};
use sr_agent_proto::{Data, Decoder, Encoder, Frame, Message, Role, Stream};

use crate::output::StreamCut;

/// How many undelivered events an exec may have before the reader waits for its consumer.
const EXEC_QUEUE: usize = 64;

/// What the reader delivers for one exec.
#[derive(Debug)]
pub enum Routed {
    /// The exec runs.
    Started(Started),
    /// Output, already cut at the limit (`crossed`: this chunk passed it).
    Output {
        /// stdout or stderr.
        stream: Stream,
        /// The kept bytes (may be empty when everything was past the limit).
        bytes: Vec<u8>,
        /// The stream passed its limit with this chunk.
        crossed: bool,
    },
    /// The exec ended; the tallies of both streams.
    Exit(Exit, [Tally; 2]),
    /// The agent refused or failed the request.
    Failed(ErrorReply),
    /// The connection ended before the exec did; the tallies of what arrived.
    Lost([Tally; 2]),
}

/// One output stream's size and digest, as kept.
#[derive(Debug, Clone)]
pub struct Tally {
    cut: StreamCut,
    hasher: Sha256,
}

impl Tally {
    /// Nothing seen yet, under `limit`.
    pub fn empty(limit: u64) -> Self {
        Tally {
            cut: StreamCut::new(limit),
            hasher: Sha256::new(),
        }
    }
    /// Bytes kept.
    pub fn kept(&self) -> u64 {
        self.cut.kept()
    }
    /// Bytes seen.
    pub fn seen(&self) -> u64 {
        self.cut.seen()
    }
    /// Whether bytes were dropped at the limit.
    pub fn truncated(&self) -> bool {
        self.cut.truncated()
    }
    /// `sha256:<hex>` of the kept bytes.
    pub fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.clone().finalize()))
    }
}

/// Stdin credit of one exec: bytes the agent will still accept.
#[derive(Debug, Default)]
pub struct Credit {
    state: Mutex<(u64, bool)>,
    changed: Condvar,
}

impl Credit {
    /// Adds credit.
    pub fn add(&self, n: u64) {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.0 = s.0.saturating_add(n);
        self.changed.notify_all();
    }
    /// Closes: no more credit will come (the exec ended or the connection broke).
    pub fn close(&self) {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.1 = true;
        self.changed.notify_all();
    }
    /// Waits for credit and takes up to `want` bytes of it; 0 when closed.
    pub fn take(&self, want: u64) -> u64 {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while s.0 == 0 && !s.1 {
            s = self
                .changed
                .wait(s)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        if s.1 {
            return 0;
        }
        let n = s.0.min(want);
        s.0 -= n;
        n
    }
}

struct Route {
    tx: SyncSender<Routed>,
    /// The agent said `started`: an error for it now is not its end (a signal or resize
    /// that raced its exit); only `exit` or the connection's end is.
    started: bool,
    tallies: [Tally; 2],
    credit: Arc<Credit>,
}

/// Messages not tied to an exec (answers to hello, stats, shutdown; protocol errors).
pub type Control = Receiver<Message>;

#[derive(Default)]
struct Routes {
    execs: HashMap<u64, Route>,
    /// File requests: every frame for the id, raw, until its last answer.
    requests: HashMap<u64, Sender<Frame>>,
    closed: bool,
}

/// Whether `frame` is the last a file request gets.
fn ends_request(frame: &Frame) -> bool {
    matches!(
        frame,
        Frame::Control(
            Message::PutDone(_)
                | Message::GetEnd(_)
                | Message::StatResult(_)
                | Message::Removed(_)
                | Message::Error(_)
        )
    ) || matches!(frame, Frame::Control(Message::Listing(l)) if l.done)
}

fn frame_id(frame: &Frame) -> Option<u64> {
    match frame {
        Frame::Data(d) => Some(d.id),
        Frame::Control(m) => m.id(),
    }
}

/// The shared writer and the routes.
pub struct AgentConn {
    writer: Mutex<(UnixStream, Encoder, Vec<u8>)>,
    routes: Mutex<Routes>,
    max_chunk: usize,
}

/// The exec's end of its route.
pub struct ExecRoute {
    /// Its events.
    pub events: Receiver<Routed>,
    /// Its stdin credit.
    pub credit: Arc<Credit>,
}

impl AgentConn {
    /// Wraps `stream`; returns the connection, the control messages and the reader thread.
    pub fn start(stream: UnixStream) -> std::io::Result<(Arc<Self>, Control, JoinHandle<()>)> {
        let reader = stream.try_clone()?;
        let encoder = Encoder::new(Role::Host);
        let max_chunk = encoder.limits().max_data_chunk();
        let conn = Arc::new(AgentConn {
            writer: Mutex::new((stream, encoder, Vec::new())),
            routes: Mutex::new(Routes::default()),
            max_chunk,
        });
        let (ctl_tx, ctl_rx) = channel();
        let c = conn.clone();
        let handle = std::thread::Builder::new()
            .name("sr-agent-reader".into())
            .spawn(move || c.read_loop(reader, ctl_tx))?;
        Ok((conn, ctl_rx, handle))
    }

    /// The largest data chunk one frame carries.
    pub fn max_chunk(&self) -> usize {
        self.max_chunk
    }

    /// Sends a control message.
    pub fn send(&self, m: &Message) -> std::io::Result<()> {
        self.write(|enc, buf| enc.message(m, buf))
    }

    /// Sends stdin bytes for exec `id` (the caller holds the credit for them).
    pub fn send_stdin(&self, id: u64, bytes: &[u8]) -> std::io::Result<()> {
        self.write(|enc, buf| enc.data(Stream::Stdin, id, bytes, buf))
    }

    /// Sends file data for request `id`.
    pub fn send_file_data(&self, id: u64, bytes: &[u8]) -> std::io::Result<()> {
        self.write(|enc, buf| enc.data(Stream::File, id, bytes, buf))
    }

    /// Encodes one frame and writes it whole, under the writer's lock (frames of concurrent
    /// execs never interleave).
    fn write(
        &self,
        encode: impl FnOnce(&Encoder, &mut Vec<u8>) -> Result<(), sr_agent_proto::ProtoError>,
    ) -> std::io::Result<()> {
        let mut w = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (stream, enc, buf) = &mut *w;
        buf.clear();
        // A message the codec refuses (a path that is not normalized, a field too long) is the
        // caller's mistake, not a broken connection: InvalidInput says so.
        encode(enc, buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        stream.write_all(buf)
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The routes, while the connection is open (a closed one takes no new route).
    fn open_routes(&self) -> Option<std::sync::MutexGuard<'_, Routes>> {
        Some(self.routes()).filter(|r| !r.closed)
    }

    /// Registers exec `id` before its request is sent; `limit` cuts each output stream.
    pub fn route(&self, id: u64, limit: u64) -> Option<ExecRoute> {
        let (tx, rx) = sync_channel(EXEC_QUEUE);
        let credit = Arc::new(Credit::default());
        self.open_routes()?.execs.insert(
            id,
            Route {
                tx,
                started: false,
                tallies: [Tally::empty(limit), Tally::empty(limit)],
                credit: credit.clone(),
            },
        );
        Some(ExecRoute { events: rx, credit })
    }

    /// Registers file request `id` before it is sent; every frame for it comes through.
    pub fn request(&self, id: u64) -> Option<Receiver<Frame>> {
        let (tx, rx) = channel();
        self.open_routes()?.requests.insert(id, tx);
        Some(rx)
    }

    /// Shuts the socket down both ways: the reader ends, the agent sees EOF.
    pub fn close(&self) {
        let w = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = w.0.shutdown(std::net::Shutdown::Both);
    }

    fn deliver(&self, id: u64, f: impl FnOnce(&mut Route) -> Option<Routed>, last: bool) {
        let (tx, msg) = {
            let mut routes = self.routes();
            let Some(route) = routes.execs.get_mut(&id) else {
                return;
            };
            let msg = f(route);
            let tx = route.tx.clone();
            if last && let Some(r) = routes.execs.remove(&id) {
                r.credit.close();
            }
            (tx, msg)
        };
        // Outside the lock: a full channel waits for its consumer, not for every exec.
        if let Some(m) = msg {
            let _ = tx.send(m);
        }
    }

    fn read_loop(&self, mut reader: UnixStream, control: Sender<Message>) {
        let mut decoder = Decoder::new(Role::Host);
        let mut buf = vec![0u8; 64 * 1024];
        'outer: loop {
            let n = match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            decoder.feed(&buf[..n]);
            loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => self.on_frame(frame, &control),
                    Ok(None) => break,
                    Err(e) => {
                        let _ = control.send(Message::Error(ErrorReply {
                            id: None,
                            code: sr_agent_proto::ErrorCode::Protocol,
                            message: e.to_string(),
                            phase: None,
                            errno: None,
                        }));
                        break 'outer;
                    }
                }
            }
        }
        let routes: Vec<Route> = {
            let mut r = self.routes();
            r.closed = true;
            // Waiting file requests see their channel close.
            r.requests.clear();
            r.execs.drain().map(|(_, v)| v).collect()
        };
        for r in routes {
            r.credit.close();
            let _ = r.tx.send(Routed::Lost(r.tallies));
        }
    }

    fn on_frame(&self, frame: Frame, control: &Sender<Message>) {
        if let Some(id) = frame_id(&frame) {
            let mut routes = self.routes();
            if let Some(tx) = routes.requests.get(&id) {
                let last = ends_request(&frame);
                let _ = tx.send(frame);
                if last {
                    routes.requests.remove(&id);
                }
                return;
            }
        }
        match frame {
            Frame::Data(Data { stream, id, bytes }) => {
                let idx = usize::from(stream == Stream::Stderr);
                self.deliver(
                    id,
                    |route| {
                        let tally = &mut route.tallies[idx];
                        let take = tally.cut.take(&bytes);
                        tally.hasher.update(take.keep);
                        let crossed = take.crossed;
                        let kept = take.keep.to_vec();
                        (!kept.is_empty() || crossed).then_some(Routed::Output {
                            stream,
                            bytes: kept,
                            crossed,
                        })
                    },
                    false,
                );
            }
            Frame::Control(Message::Started(s)) => {
                let id = s.id;
                self.deliver(
                    id,
                    |route| {
                        route.started = true;
                        route.credit.add(u64::from(s.stdin_window));
                        Some(Routed::Started(s))
                    },
                    false,
                );
            }
            Frame::Control(Message::StdinCredit(c)) => {
                self.deliver(
                    c.id,
                    |route| {
                        route.credit.add(u64::from(c.bytes));
                        None
                    },
                    false,
                );
            }
            Frame::Control(Message::Exit(e)) => {
                let id = e.id;
                self.deliver(
                    id,
                    |route| Some(Routed::Exit(e, route.tallies.clone())),
                    true,
                );
            }
            Frame::Control(Message::Error(err)) if err.id.is_some() => {
                let id = err.id.unwrap_or_default();
                let pending = self.routes().execs.get(&id).is_some_and(|r| !r.started);
                // An error for a started or ended exec (a signal that raced its exit) changes
                // nothing the host waits for: dropped.
                if pending {
                    self.deliver(id, |_| Some(Routed::Failed(err)), true);
                }
            }
            Frame::Control(m) => {
                let _ = control.send(m);
            }
        }
    }
}
