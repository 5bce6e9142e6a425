//! Control messages: the typed bodies of control frames, one JSON object each, tagged by
//! `type`. Every struct denies unknown fields (see [`crate::version`] for why that is safe).

mod exec;
mod files;
mod hello;
mod reply;
mod stats;

use serde::{Deserialize, Serialize};

pub use exec::{
    Confinement, EnvVar, Exec, ExecUser, Exit, ExitStatus, IdOnly, LandlockFacts, LandlockStatus,
    Resize, Rlimit, SeccompFacts, Signal, SocketAllowList, Started, StdinCredit, StdinMode,
    TtySize,
};
pub use files::{
    DirEntry, FileInfo, FileKind, Get, GetBegin, GetEnd, Listing, PathRequest, PutBegin, PutDone,
    PutEnd, Remove, StatResult, TransferFormat,
};
pub use hello::{AgentIdentity, Hello, HelloAck, MountFact, Ready, Role, VersionMismatch};
pub use reply::{ErrorCode, ErrorReply};
pub use stats::Stats;

/// A control message. The variant name in camelCase is the JSON `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum Message {
    // --- opening ---
    /// Host: the first frame.
    Hello(Hello),
    /// Agent: hello accepted.
    HelloAck(HelloAck),
    /// Agent: hello refused; the connection ends.
    VersionMismatch(VersionMismatch),
    /// Agent: isolated and waiting.
    Ready(Ready),

    // --- exec ---
    /// Host: run a command.
    Exec(Exec),
    /// Agent: the command runs.
    Started(Started),
    /// Agent: more stdin may be sent.
    StdinCredit(StdinCredit),
    /// Host: no more stdin for this exec.
    StdinClose(IdOnly),
    /// Host: signal the exec's process.
    Signal(Signal),
    /// Host: the exec's terminal changed size.
    Resize(Resize),
    /// Agent: the command ended.
    Exit(Exit),

    // --- files ---
    /// Host: write a file (or unpack a tar stream).
    PutBegin(PutBegin),
    /// Host: end of the put's content.
    PutEnd(PutEnd),
    /// Agent: the put is stored.
    PutDone(PutDone),
    /// Host: read a file (or pack a directory).
    Get(Get),
    /// Agent: the get's content follows.
    GetBegin(GetBegin),
    /// Agent: end of the get's content.
    GetEnd(GetEnd),
    /// Host: list a directory.
    List(PathRequest),
    /// Agent: part of a listing.
    Listing(Listing),
    /// Host: metadata of a path.
    Stat(PathRequest),
    /// Agent: the metadata.
    StatResult(StatResult),
    /// Host: remove a path.
    Remove(Remove),
    /// Agent: removed.
    Removed(IdOnly),

    // --- whole boundary ---
    /// Host: resource usage, please.
    StatsRequest(IdOnly),
    /// Agent: resource usage.
    Stats(Stats),
    /// Host: end every exec and transfer, then stop.
    Shutdown(IdOnly),
    /// Agent: everything ended; the agent closes the connection next.
    ShutdownAck(IdOnly),

    // --- failures ---
    /// Either side: a request failed, or the protocol was broken.
    Error(ErrorReply),
}

/// Which way a frame may travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Only from the host to the agent.
    ToAgent,
    /// Only from the agent to the host.
    ToHost,
    /// Either way.
    Both,
}

impl Direction {
    /// Whether a peer in `local` role may receive this.
    pub fn allows_receiver(self, local: Role) -> bool {
        matches!(
            (self, local),
            (Direction::Both, _)
                | (Direction::ToAgent, Role::Agent)
                | (Direction::ToHost, Role::Host)
        )
    }
}

impl Message {
    /// The JSON `type` of this message.
    pub fn type_name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "hello",
            Message::HelloAck(_) => "helloAck",
            Message::VersionMismatch(_) => "versionMismatch",
            Message::Ready(_) => "ready",
            Message::Exec(_) => "exec",
            Message::Started(_) => "started",
            Message::StdinCredit(_) => "stdinCredit",
            Message::StdinClose(_) => "stdinClose",
            Message::Signal(_) => "signal",
            Message::Resize(_) => "resize",
            Message::Exit(_) => "exit",
            Message::PutBegin(_) => "putBegin",
            Message::PutEnd(_) => "putEnd",
            Message::PutDone(_) => "putDone",
            Message::Get(_) => "get",
            Message::GetBegin(_) => "getBegin",
            Message::GetEnd(_) => "getEnd",
            Message::List(_) => "list",
            Message::Listing(_) => "listing",
            Message::Stat(_) => "stat",
            Message::StatResult(_) => "statResult",
            Message::Remove(_) => "remove",
            Message::Removed(_) => "removed",
            Message::StatsRequest(_) => "statsRequest",
            Message::Stats(_) => "stats",
            Message::Shutdown(_) => "shutdown",
            Message::ShutdownAck(_) => "shutdownAck",
            Message::Error(_) => "error",
        }
    }

    /// Which way this message travels.
    pub fn direction(&self) -> Direction {
        match self {
            Message::Hello(_)
            | Message::Exec(_)
            | Message::StdinClose(_)
            | Message::Signal(_)
            | Message::Resize(_)
            | Message::PutBegin(_)
            | Message::PutEnd(_)
            | Message::Get(_)
            | Message::List(_)
            | Message::Stat(_)
            | Message::Remove(_)
            | Message::StatsRequest(_)
            | Message::Shutdown(_) => Direction::ToAgent,
            Message::HelloAck(_)
            | Message::VersionMismatch(_)
            | Message::Ready(_)
            | Message::Started(_)
            | Message::StdinCredit(_)
            | Message::Exit(_)
            | Message::PutDone(_)
            | Message::GetBegin(_)
            | Message::GetEnd(_)
            | Message::Listing(_)
            | Message::StatResult(_)
            | Message::Removed(_)
            | Message::Stats(_)
            | Message::ShutdownAck(_) => Direction::ToHost,
            Message::Error(_) => Direction::Both,
        }
    }

    /// The request (or exec, or transfer) id the message belongs to, if any.
    pub fn id(&self) -> Option<u64> {
        match self {
            Message::Hello(_)
            | Message::HelloAck(_)
            | Message::VersionMismatch(_)
            | Message::Ready(_) => None,
            Message::Exec(m) => Some(m.id),
            Message::Started(m) => Some(m.id),
            Message::StdinCredit(m) => Some(m.id),
            Message::Signal(m) => Some(m.id),
            Message::Resize(m) => Some(m.id),
            Message::Exit(m) => Some(m.id),
            Message::PutBegin(m) => Some(m.id),
            Message::PutEnd(m) => Some(m.id),
            Message::PutDone(m) => Some(m.id),
            Message::Get(m) => Some(m.id),
            Message::GetBegin(m) => Some(m.id),
            Message::GetEnd(m) => Some(m.id),
            Message::List(m) | Message::Stat(m) => Some(m.id),
            Message::Listing(m) => Some(m.id),
            Message::StatResult(m) => Some(m.id),
            Message::Remove(m) => Some(m.id),
            Message::Stats(m) => Some(m.id),
            Message::StdinClose(m)
            | Message::Removed(m)
            | Message::StatsRequest(m)
            | Message::Shutdown(m)
            | Message::ShutdownAck(m) => Some(m.id),
            Message::Error(m) => m.id,
        }
    }
}
