//! The frame: what one length prefix delimits. A control frame carries a [`Message`]; a data
//! frame carries raw bytes of one stream of one exec or transfer.
//!
//! ```text
//! offset  size  field
//! 0       4     length L, u32 big-endian: bytes after this field (kind + body), 1 ..= max_frame
//! 4       1     kind: 0x01 control, 0x02 data
//! 5       L-1   body
//!
//! control body: one JSON object (UTF-8), at most max_control_body bytes
//! data body:    offset 5: stream (u8: 0 stdin, 1 stdout, 2 stderr, 3 file)
//!               offset 6: id (u64 big-endian: the exec id or the transfer id)
//!               offset 14: payload, L-10 bytes, at least 1
//! ```

use crate::message::{Direction, Message};

/// Bytes of the length prefix.
pub const LENGTH_LEN: usize = 4;
/// Bytes of the length prefix plus the kind byte.
pub const HEADER_LEN: usize = LENGTH_LEN + 1;

/// The kind byte of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// A JSON control message.
    Control = 0x01,
    /// A binary data chunk.
    Data = 0x02,
}

impl FrameKind {
    /// The kind for a byte, if it is one.
    pub fn from_byte(b: u8) -> Option<FrameKind> {
        match b {
            0x01 => Some(FrameKind::Control),
            0x02 => Some(FrameKind::Data),
            _ => None,
        }
    }
}

/// Which byte stream a data frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Stream {
    /// An exec's stdin (host to agent).
    Stdin = 0,
    /// An exec's stdout, or its terminal output (agent to host).
    Stdout = 1,
    /// An exec's stderr (agent to host).
    Stderr = 2,
    /// File content of a put (host to agent) or a get (agent to host).
    File = 3,
}

impl Stream {
    /// The stream for a byte, if it is one.
    pub fn from_byte(b: u8) -> Option<Stream> {
        match b {
            0 => Some(Stream::Stdin),
            1 => Some(Stream::Stdout),
            2 => Some(Stream::Stderr),
            3 => Some(Stream::File),
            _ => None,
        }
    }

    /// Which way data of this stream travels.
    pub fn direction(self) -> Direction {
        match self {
            Stream::Stdin => Direction::ToAgent,
            Stream::Stdout | Stream::Stderr => Direction::ToHost,
            Stream::File => Direction::Both,
        }
    }

    /// A name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdin => "stdin",
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::File => "file",
        }
    }
}

/// One chunk of a byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    /// The stream.
    pub stream: Stream,
    /// The exec id (stdin, stdout, stderr) or the transfer id (file).
    pub id: u64,
    /// The payload; never empty (the end of a stream is a control message).
    pub bytes: Vec<u8>,
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A control message.
    Control(Message),
    /// A data chunk.
    Data(Data),
}

impl Frame {
    /// Which way this frame may travel.
    pub fn direction(&self) -> Direction {
        match self {
            Frame::Control(m) => m.direction(),
            Frame::Data(d) => d.stream.direction(),
        }
    }

    /// A name for messages: the message type, or `data:<stream>`.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Control(m) => m.type_name(),
            Frame::Data(d) => Frame::data_name(d.stream),
        }
    }

    /// The name of a data frame of `stream`.
    pub fn data_name(stream: Stream) -> &'static str {
        match stream {
            Stream::Stdin => "data:stdin",
            Stream::Stdout => "data:stdout",
            Stream::Stderr => "data:stderr",
            Stream::File => "data:file",
        }
    }
}

impl From<Message> for Frame {
    fn from(m: Message) -> Self {
        Frame::Control(m)
    }
}

impl From<Data> for Frame {
    fn from(d: Data) -> Self {
        Frame::Data(d)
    }
}
