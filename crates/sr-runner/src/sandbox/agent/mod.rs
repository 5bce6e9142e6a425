//! The sandbox's pid 1 as the agent: after the root is built it stays up, speaks the agent
//! protocol (sr-agent-proto) over the control socket and runs each exec with the policy's
//! confinement ([`spawn`]).
//!
//! One thread, one `poll` loop (pid 1 forks, so it must stay single-threaded): the socket,
//! a signalfd for SIGCHLD, each exec's output fds and, while stdin is pending, its stdin fd.
//! Writes to the socket block: the host's reader always drains it. Writes to an exec's stdin
//! never block: each exec has a bounded buffer (its stdin window), and the host may send only
//! what the agent credited. When an exec's process is reaped, what it left in its pipes is
//! drained and its `exit` is sent; processes it left behind keep running (a later exec may use
//! them) but lose their output pipes. When the socket closes, or on `shutdown`, every exec is
//! killed and pid 1 returns, which ends the pid namespace.
//!
//! The loop is the same for both boundaries: the process sandbox's pid 1 serves its Unix
//! control socket, the microVM's guest agent (`safe-run-agent`) a vsock connection. [`serve`]
//! takes any connected stream that can be polled ([`Connection`]).

pub mod files;
pub mod spawn;
pub mod tarball;
pub mod transfer;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use sr_agent_proto::message::{
    AgentIdentity, ErrorCode, ErrorReply, Exec, Exit, ExitStatus, IdOnly, Ready, Started,
    StdinCredit,
};
use sr_agent_proto::{Data, Decoder, Encoder, Frame, Message, PROTOCOL_VERSION, Role, Stream};

use spawn::{ExecContext, Spawned};
use transfer::{Put, WorkerResult};

/// The bytes of stdin an exec may have in flight: the host's credit window.
pub const STDIN_WINDOW: u32 = 256 * 1024;

/// Read size for output fds and the socket.
const READ_CHUNK: usize = 64 * 1024;

/// A setup failure: run phase, errno, message.
#[derive(Debug)]
pub struct Failure {
    /// Run phase, e.g. `launch.mounts`.
    pub phase: &'static str,
    /// errno when the failure is a syscall's.
    pub errno: Option<i32>,
    /// What failed.
    pub message: String,
}

impl Failure {
    /// A failed system call.
    pub fn errno(phase: &'static str, e: Errno) -> Self {
        Failure {
            phase,
            errno: Some(e as i32),
            message: e.desc().to_owned(),
        }
    }
    /// A failure with a message only.
    pub fn msg(phase: &'static str, message: impl std::fmt::Display) -> Self {
        Failure {
            phase,
            errno: None,
            message: message.to_string(),
        }
    }
    /// A failed I/O call.
    pub fn io(phase: &'static str, e: &std::io::Error) -> Self {
        Failure {
            phase,
            errno: e.raw_os_error(),
            message: e.to_string(),
        }
    }

    fn reply(&self, id: Option<u64>) -> Message {
        let code = match self.errno {
            Some(libc::ENOENT) => ErrorCode::NotFound,
            Some(libc::EACCES | libc::EPERM) => ErrorCode::PermissionDenied,
            _ if self.phase == "exec.tty" => ErrorCode::Unsupported,
            _ => ErrorCode::Internal,
        };
        Message::Error(ErrorReply {
            id,
            code,
            message: truncate(&self.message, 1024),
            phase: Some(self.phase.to_owned()),
            errno: self.errno,
        })
    }
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

const FEATURES: &[&str] = &["exec", "files", "signal", "stdin", "tty"];

/// A connected, reliable, ordered byte stream the loop can poll: a Unix stream socket, a vsock
/// connection. Reads may block only after `poll` said the fd is readable; writes block.
pub trait Connection: Read + Write + AsFd {}

impl<T: Read + Write + AsFd> Connection for T {}

/// What the agent calls itself in `helloAck`.
pub const SANDBOX_AGENT_NAME: &str = "safe-run sandbox pid 1";

/// An exec pid 1 is running.
struct Running {
    pid: Pid,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    stdin: Option<OwnedFd>,
    /// Stdin bytes received and not yet written into the exec.
    pending: Vec<u8>,
    /// The host closed stdin: close it once `pending` is written.
    stdin_closing: bool,
    tty: Option<OwnedFd>,
    started: Instant,
    deadline: Option<Instant>,
    timed_out: bool,
    status: Option<ExitStatus>,
    bytes: [u64; 3],
}

/// The agent's state: the connection and the execs.
struct Agent<'a, S: Connection> {
    sock: S,
    name: &'static str,
    decoder: Decoder,
    encoder: Encoder,
    ctx: ExecContext<'a>,
    ready: Ready,
    hello_done: bool,
    execs: BTreeMap<u64, Running>,
    puts: BTreeMap<u64, Put>,
    roots: files::FileRoots,
    who: transfer::Identity,
    started: Instant,
    out: Vec<u8>,
}

/// Why the loop ended.
enum End {
    /// The host closed the connection (or it broke).
    Closed,
    /// The host asked for a shutdown.
    Shutdown(u64),
}

/// Serves the agent protocol on `sock` until the host closes it or asks for a shutdown, as
/// `name` (the `helloAck` name). Returns pid 1's exit code.
pub fn serve<S: Connection>(
    sock: S,
    name: &'static str,
    ctx: ExecContext<'_>,
    ready: Ready,
) -> Result<i32, Failure> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .map_err(|e| Failure::errno("agent.signals", e))?;
    let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| Failure::errno("agent.signals", e))?;
    let roots = files::FileRoots::from_plan(&ctx.plan.sandbox.mounts);
    let who = transfer::Identity {
        uid: ctx.plan.sandbox.host_uid,
        gid: ctx.plan.sandbox.host_gid,
    };
    let mut agent = Agent {
        sock,
        name,
        decoder: Decoder::new(Role::Agent),
        encoder: Encoder::new(Role::Agent),
        ctx,
        puts: BTreeMap::new(),
        roots,
        who,
        ready,
        hello_done: false,
        execs: BTreeMap::new(),
        started: Instant::now(),
        out: Vec::new(),
    };
    let end = agent.run(&sigfd);
    agent.kill_all();
    if let End::Shutdown(id) = end {
        agent.reap_all_blocking();
        agent.send(&Message::ShutdownAck(IdOnly { id }));
    }
    Ok(0)
}

/// What one poll entry stands for.
#[derive(Clone, Copy)]
enum Slot {
    Socket,
    Signals,
    Out(u64, Stream),
    In(u64),
}

impl<S: Connection> Agent<'_, S> {
    fn send(&mut self, m: &Message) -> bool {
        self.out.clear();
        if self.encoder.message(m, &mut self.out).is_err() {
            return false;
        }
        self.sock.write_all(&self.out).is_ok()
    }

    fn send_data(&mut self, stream: Stream, id: u64, bytes: &[u8]) -> bool {
        self.out.clear();
        if self.encoder.data(stream, id, bytes, &mut self.out).is_err() {
            return false;
        }
        self.sock.write_all(&self.out).is_ok()
    }

    fn run(&mut self, sigfd: &SignalFd) -> End {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let mut slots = vec![Slot::Socket, Slot::Signals];
            for (id, r) in &self.execs {
                if r.stdout.is_some() {
                    slots.push(Slot::Out(*id, Stream::Stdout));
                }
                if r.stderr.is_some() {
                    slots.push(Slot::Out(*id, Stream::Stderr));
                }
                if r.stdin.is_some() && !r.pending.is_empty() {
                    slots.push(Slot::In(*id));
                }
            }
            let timeout = self.next_deadline().map_or(PollTimeout::NONE, |d| {
                let ms = d.saturating_duration_since(Instant::now()).as_millis() + 1;
                PollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(PollTimeout::MAX)
            });
            let revents: Vec<PollFlags> = {
                let mut fds: Vec<PollFd<'_>> = slots
                    .iter()
                    .map(|s| match s {
                        Slot::Socket => PollFd::new(self.sock.as_fd(), PollFlags::POLLIN),
                        Slot::Signals => PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
                        Slot::Out(id, stream) => {
                            let r = &self.execs[id];
                            let fd = match stream {
                                Stream::Stdout => r.stdout.as_ref(),
                                _ => r.stderr.as_ref(),
                            };
                            // Present: the slot was only added when it was.
                            PollFd::new(
                                fd.map_or(self.sock.as_fd(), |f| f.as_fd()),
                                PollFlags::POLLIN,
                            )
                        }
                        Slot::In(id) => PollFd::new(
                            self.execs[id]
                                .stdin
                                .as_ref()
                                .map_or(self.sock.as_fd(), |f| f.as_fd()),
                            PollFlags::POLLOUT,
                        ),
                    })
                    .collect();
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(_) => return End::Closed,
                }
                fds.iter()
                    .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                    .collect()
            };
            for (slot, ev) in slots.iter().zip(revents) {
                if ev.is_empty() {
                    continue;
                }
                match *slot {
                    Slot::Socket => {
                        let n = match self.sock.read(&mut buf) {
                            Ok(0) | Err(_) => return End::Closed,
                            Ok(n) => n,
                        };
                        self.decoder.feed(&buf[..n]);
                        loop {
                            match self.decoder.next_frame() {
                                Ok(Some(frame)) => {
                                    if let Some(end) = self.on_frame(frame) {
                                        return end;
                                    }
                                }
                                Ok(None) => break,
                                Err(e) => {
                                    let _ = self.send(&Message::Error(ErrorReply {
                                        id: None,
                                        code: ErrorCode::Protocol,
                                        message: truncate(&e.to_string(), 1024),
                                        phase: None,
                                        errno: None,
                                    }));
                                    return End::Closed;
                                }
                            }
                        }
                    }
                    Slot::Signals => {
                        while let Ok(Some(_)) = sigfd.read_signal() {}
                        self.reap();
                    }
                    Slot::Out(id, stream) => {
                        if !self.pump(id, stream, &mut buf, false) {
                            return End::Closed;
                        }
                    }
                    Slot::In(id) => {
                        if !self.feed_stdin(id) {
                            return End::Closed;
                        }
                    }
                }
            }
            self.enforce_deadlines();
            if !self.finish_exited(&mut buf) {
                return End::Closed;
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.execs
            .values()
            .filter(|r| r.status.is_none() && !r.timed_out)
            .filter_map(|r| r.deadline)
            .min()
    }

    fn enforce_deadlines(&mut self) {
        let now = Instant::now();
        for r in self.execs.values_mut() {
            if r.status.is_none() && !r.timed_out && r.deadline.is_some_and(|d| d <= now) {
                // Its session is its process group (setsid): the whole tree it did not move.
                let _ = kill(Pid::from_raw(-r.pid.as_raw()), Signal::SIGKILL);
                let _ = kill(r.pid, Signal::SIGKILL);
                r.timed_out = true;
            }
        }
    }

    /// Reads what one output fd has; at EOF (or EIO, a PTY whose slave is closed) drops it.
    /// With `drain`, reads until nothing is left. Returns false when the socket broke.
    fn pump(&mut self, id: u64, stream: Stream, buf: &mut [u8], drain: bool) -> bool {
        loop {
            let Some(r) = self.execs.get_mut(&id) else {
                return true;
            };
            let fd = match stream {
                Stream::Stdout => &mut r.stdout,
                _ => &mut r.stderr,
            };
            let Some(f) = fd.as_ref() else {
                return true;
            };
            match nix::unistd::read(f, buf) {
                Ok(0) | Err(Errno::EIO) => {
                    *fd = None;
                    return true;
                }
                Ok(n) => {
                    r.bytes[stream as usize] += n as u64;
                    if !self.send_data(stream, id, &buf[..n]) {
                        return false;
                    }
                    if !drain {
                        return true;
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return true,
                Err(_) => {
                    *fd = None;
                    return true;
                }
            }
        }
    }

    fn feed_stdin(&mut self, id: u64) -> bool {
        let Some(r) = self.execs.get_mut(&id) else {
            return true;
        };
        let Some(fd) = r.stdin.as_ref() else {
            r.pending.clear();
            return true;
        };
        let n = match nix::unistd::write(fd, &r.pending) {
            Ok(n) => n,
            Err(Errno::EAGAIN | Errno::EINTR) => return true,
            Err(_) => {
                // The exec closed its stdin (EPIPE): what is left is dropped, credit returned
                // so the host's writer does not wait forever.
                let n = r.pending.len();
                r.pending.clear();
                r.stdin = None;
                n
            }
        };
        r.pending.drain(..n.min(r.pending.len()));
        r.bytes[Stream::Stdin as usize] += n as u64;
        if r.pending.is_empty() && r.stdin_closing {
            r.stdin = None;
        }
        let credit = u32::try_from(n).unwrap_or(u32::MAX);
        credit == 0 || self.send(&Message::StdinCredit(StdinCredit { id, bytes: credit }))
    }

    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.exited(pid, ExitStatus::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    self.exited(pid, ExitStatus::Signal(sig as i32))
                }
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(_) => return,
            }
        }
    }

    fn exited(&mut self, pid: Pid, status: ExitStatus) {
        // Orphans re-parented to pid 1 are reaped too; only an exec's own process counts.
        if let Some(r) = self.execs.values_mut().find(|r| r.pid == pid) {
            r.status = Some(status);
        }
    }

    /// Sends `exit` for every exec whose process was reaped, after draining its output.
    fn finish_exited(&mut self, buf: &mut [u8]) -> bool {
        let done: Vec<u64> = self
            .execs
            .iter()
            .filter(|(_, r)| r.status.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            for stream in [Stream::Stdout, Stream::Stderr] {
                if !self.pump(id, stream, buf, true) {
                    return false;
                }
            }
            let Some(r) = self.execs.remove(&id) else {
                continue;
            };
            let Some(status) = r.status else { continue };
            let exit = Exit {
                id,
                status,
                timed_out: r.timed_out,
                duration_ms: u64::try_from(r.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                stdout_bytes: r.bytes[Stream::Stdout as usize],
                stderr_bytes: r.bytes[Stream::Stderr as usize],
                stdin_bytes: r.bytes[Stream::Stdin as usize],
            };
            if !self.send(&Message::Exit(exit)) {
                return false;
            }
        }
        true
    }

    fn kill_all(&mut self) {
        for r in self.execs.values() {
            if r.status.is_none() {
                let _ = kill(Pid::from_raw(-r.pid.as_raw()), Signal::SIGKILL);
                let _ = kill(r.pid, Signal::SIGKILL);
            }
        }
    }

    fn reap_all_blocking(&mut self) {
        let ids: Vec<u64> = self.execs.keys().copied().collect();
        for id in ids {
            if let Some(r) = self.execs.get(&id)
                && r.status.is_none()
            {
                let _ = waitpid(r.pid, None);
            }
        }
        self.execs.clear();
    }

    fn refuse(&mut self, id: Option<u64>, code: ErrorCode, message: &str) -> bool {
        self.send(&Message::Error(ErrorReply {
            id,
            code,
            message: message.to_owned(),
            phase: None,
            errno: None,
        }))
    }

    /// Handles one frame; `Some` ends the loop.
    fn on_frame(&mut self, frame: Frame) -> Option<End> {
        let ok = match frame {
            Frame::Control(Message::Hello(hello)) if !self.hello_done => {
                let me = AgentIdentity {
                    version: PROTOCOL_VERSION,
                    name: self.name,
                    software_version: env!("CARGO_PKG_VERSION"),
                    features: FEATURES,
                };
                match hello.answer(&me) {
                    Ok(ack) => {
                        self.hello_done = true;
                        let ready = self.ready.clone();
                        self.send(&Message::HelloAck(ack)) && self.send(&Message::Ready(ready))
                    }
                    Err(mismatch) => {
                        let _ = self.send(&Message::VersionMismatch(mismatch));
                        return Some(End::Closed);
                    }
                }
            }
            _ if !self.hello_done => {
                let _ = self.refuse(None, ErrorCode::Protocol, "the first frame must be hello");
                return Some(End::Closed);
            }
            Frame::Control(Message::Exec(req)) => self.exec(req),
            // For an exec that has ended these are a race the host tolerates: `notFound`.
            Frame::Control(Message::StdinClose(IdOnly { id })) => match self.execs.get_mut(&id) {
                Some(r) => {
                    r.stdin_closing = true;
                    if r.pending.is_empty() {
                        r.stdin = None;
                    }
                    true
                }
                None => self.refuse(Some(id), ErrorCode::NotFound, "no such exec"),
            },
            Frame::Control(Message::Signal(s)) => match self.execs.get(&s.id) {
                Some(r) => {
                    match Signal::try_from(s.signal) {
                        Ok(sig) if r.status.is_none() => {
                            // Its session is its process group (setsid).
                            let _ = kill(Pid::from_raw(-r.pid.as_raw()), sig);
                            true
                        }
                        Ok(_) => true,
                        Err(_) => self.refuse(Some(s.id), ErrorCode::Invalid, "no such signal"),
                    }
                }
                None => self.refuse(Some(s.id), ErrorCode::NotFound, "no such exec"),
            },
            Frame::Control(Message::Resize(rs)) => match self.execs.get(&rs.id) {
                Some(r) => {
                    if let Some(tty) = r.tty.as_ref() {
                        let _ = super::pty::set_window_size(tty, rs.rows, rs.cols);
                    }
                    true
                }
                None => self.refuse(Some(rs.id), ErrorCode::NotFound, "no such exec"),
            },
            Frame::Control(Message::StatsRequest(IdOnly { id })) => {
                let stats = sr_agent_proto::message::Stats {
                    id,
                    memory_current_bytes: 0,
                    memory_peak_bytes: 0,
                    cpu_usec: 0,
                    pids: self.execs.len() as u64,
                    uptime_ms: u64::try_from(self.started.elapsed().as_millis())
                        .unwrap_or(u64::MAX),
                };
                self.send(&Message::Stats(stats))
            }
            Frame::Control(Message::Shutdown(IdOnly { id })) => return Some(End::Shutdown(id)),
            Frame::Data(Data {
                stream: Stream::Stdin,
                id,
                bytes,
            }) => match self.execs.get_mut(&id) {
                Some(r) if r.stdin.is_some() && !r.stdin_closing => {
                    if r.pending.len() + bytes.len() > STDIN_WINDOW as usize {
                        // Past the credit: the exec's stdin is closed (documented).
                        r.pending.clear();
                        r.stdin = None;
                        return if self.refuse(
                            Some(id),
                            ErrorCode::TooLarge,
                            "stdin past the credited window; the exec's stdin was closed",
                        ) {
                            None
                        } else {
                            Some(End::Closed)
                        };
                    }
                    r.pending.extend_from_slice(&bytes);
                    true
                }
                // An exec that ended or closed its stdin: the bytes are dropped, credit
                // returned so the host's writer moves on.
                _ => self.send(&Message::StdinCredit(StdinCredit {
                    id,
                    bytes: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
                })),
            },
            Frame::Control(Message::PutBegin(m)) => self.put_begin(m),
            Frame::Data(Data {
                stream: Stream::File,
                id,
                bytes,
            }) => {
                // Data for a put that failed is ignored until its putEnd (documented).
                if let Some(p) = self.puts.get_mut(&id) {
                    p.data(&bytes);
                }
                true
            }
            Frame::Control(Message::PutEnd(m)) => self.put_end(m.id, &m.sha256.to_string()),
            Frame::Control(Message::Get(m)) => self.get(m),
            Frame::Control(Message::List(m)) => self.list(m.id, &m.path),
            Frame::Control(Message::Stat(m)) => {
                let r = transfer::meta(&self.roots, self.who, |roots| {
                    match files::stat(roots, &m.path) {
                        Ok(i) => WorkerResult::Info(i),
                        Err(e) => WorkerResult::Failed(e),
                    }
                });
                match transfer::stat_result(r) {
                    Ok(info) => {
                        self.send(&Message::StatResult(sr_agent_proto::message::StatResult {
                            id: m.id,
                            info,
                        }))
                    }
                    Err(e) => self.send(&Message::Error(transfer::error_reply(m.id, e))),
                }
            }
            Frame::Control(Message::Remove(m)) => {
                let r = transfer::meta(&self.roots, self.who, |roots| {
                    match files::remove(roots, &m.path, m.recursive) {
                        Ok(()) => WorkerResult::Removed,
                        Err(e) => WorkerResult::Failed(e),
                    }
                });
                match transfer::removed_result(r) {
                    Ok(()) => self.send(&Message::Removed(IdOnly { id: m.id })),
                    Err(e) => self.send(&Message::Error(transfer::error_reply(m.id, e))),
                }
            }
            Frame::Control(m) => self.refuse(
                m.id(),
                ErrorCode::Unsupported,
                &format!("{} is not supported by this agent", m.type_name()),
            ),
            Frame::Data(d) => self.refuse(
                Some(d.id),
                ErrorCode::Protocol,
                &format!("{} data is not accepted by this agent", d.stream.name()),
            ),
        };
        if ok { None } else { Some(End::Closed) }
    }

    fn put_begin(&mut self, m: sr_agent_proto::message::PutBegin) -> bool {
        if self.puts.contains_key(&m.id) {
            return self.refuse(Some(m.id), ErrorCode::Busy, "a put with this id runs");
        }
        match transfer::begin_put(
            &self.roots,
            self.who,
            m.id,
            &m.path,
            m.mode,
            m.size,
            m.format,
        ) {
            Ok(p) => {
                self.puts.insert(m.id, p);
                true
            }
            Err(e) => self.send(&Message::Error(transfer::error_reply(m.id, e))),
        }
    }

    fn put_end(&mut self, id: u64, sha256: &str) -> bool {
        let Some(p) = self.puts.remove(&id) else {
            return self.refuse(Some(id), ErrorCode::NotFound, "no such put");
        };
        match p.end(sha256) {
            Ok(moved) => match moved.sha256.parse() {
                Ok(sha256) => self.send(&Message::PutDone(sr_agent_proto::message::PutDone {
                    id,
                    size: moved.size,
                    sha256,
                })),
                Err(_) => self.refuse(Some(id), ErrorCode::Internal, "a malformed digest"),
            },
            Err(e) => self.send(&Message::Error(transfer::error_reply(id, e))),
        }
    }

    fn get(&mut self, m: sr_agent_proto::message::Get) -> bool {
        use sr_agent_proto::message::{GetBegin, GetEnd};
        let roots = self.roots.clone();
        let who = self.who;
        let id = m.id;
        let max = self.encoder.limits().max_data_chunk();
        let cell = std::cell::RefCell::new(&mut *self);
        let r = transfer::get(
            &roots,
            who,
            &m.path,
            m.format,
            &mut |size, mode| {
                cell.borrow_mut().send(&Message::GetBegin(GetBegin {
                    id,
                    size,
                    mode,
                    format: m.format,
                }))
            },
            &mut |bytes| {
                bytes
                    .chunks(max.max(1))
                    .all(|c| cell.borrow_mut().send_data(Stream::File, id, c))
            },
        );
        match r {
            Ok(moved) => match moved.sha256.parse() {
                Ok(sha256) => self.send(&Message::GetEnd(GetEnd {
                    id,
                    size: moved.size,
                    sha256,
                })),
                Err(_) => self.refuse(Some(id), ErrorCode::Internal, "a malformed digest"),
            },
            Err(e) => self.send(&Message::Error(transfer::error_reply(id, e))),
        }
    }

    fn list(&mut self, id: u64, path: &str) -> bool {
        use sr_agent_proto::message::Listing;
        let r = transfer::meta(&self.roots, self.who, |roots| {
            match files::list(roots, path) {
                Ok(e) => WorkerResult::Entries(e),
                Err(e) => WorkerResult::Failed(e),
            }
        });
        let entries = match transfer::list_result(r) {
            Ok(e) => e,
            Err(e) => return self.send(&Message::Error(transfer::error_reply(id, e))),
        };
        let per = self.encoder.limits().max_list_entries.max(1);
        let chunks: Vec<&[sr_agent_proto::message::DirEntry]> = entries.chunks(per).collect();
        if chunks.is_empty() {
            return self.send(&Message::Listing(Listing {
                id,
                entries: Vec::new(),
                done: true,
            }));
        }
        let last = chunks.len() - 1;
        chunks.iter().enumerate().all(|(i, c)| {
            self.send(&Message::Listing(Listing {
                id,
                entries: c.to_vec(),
                done: i == last,
            }))
        })
    }

    fn exec(&mut self, req: Exec) -> bool {
        if self.execs.contains_key(&req.id) {
            return self.refuse(Some(req.id), ErrorCode::Busy, "an exec with this id runs");
        }
        if req.user.uid.is_some() || req.user.gid.is_some() {
            return self.refuse(
                Some(req.id),
                ErrorCode::Unsupported,
                "the process sandbox runs every exec as the policy's user",
            );
        }
        match spawn::spawn(&self.ctx, &req) {
            Ok(Spawned {
                pid,
                stdout,
                stderr,
                stdin,
                tty,
                facts,
            }) => {
                let started = Message::Started(Started {
                    id: req.id,
                    pid: u32::try_from(pid.as_raw()).unwrap_or(0),
                    stdin_window: STDIN_WINDOW,
                    confinement: Some(Box::new(facts.confinement())),
                });
                let now = Instant::now();
                self.execs.insert(
                    req.id,
                    Running {
                        pid,
                        stdout: Some(stdout),
                        stderr,
                        stdin,
                        pending: Vec::new(),
                        stdin_closing: false,
                        tty,
                        started: now,
                        deadline: req.timeout_ms.map(|ms| now + Duration::from_millis(ms)),
                        timed_out: false,
                        status: None,
                        bytes: [0; 3],
                    },
                );
                self.send(&started)
            }
            Err(f) => self.send(&f.reply(Some(req.id))),
        }
    }
}
