//! The crate's one error type. Every way a frame can be wrong has its own variant, so a peer
//! can answer precisely and a test can check the exact cause.

use std::fmt;

use crate::message::{ErrorCode, Role};

/// What went wrong while encoding, decoding, or (in [`crate::io`] only) moving frames.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The length prefix is over `max_frame`. Checked before any byte of the body is kept;
    /// fatal, since skipping the frame would mean reading up to 4 GiB.
    #[error("frame length {len} is over the limit of {max} bytes")]
    FrameTooLarge {
        /// The claimed length.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// A control frame's body is over `max_control_body`.
    #[error("control body of {len} bytes is over the limit of {max} bytes")]
    ControlTooLarge {
        /// The body's length.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// A length prefix of 0: there is not even a kind byte.
    #[error("empty frame: the length prefix is 0")]
    EmptyFrame,
    /// The kind byte is not one this version knows.
    #[error("unknown frame kind 0x{kind:02x}")]
    UnknownKind {
        /// The byte.
        kind: u8,
    },
    /// A data frame's stream byte is not one this version knows.
    #[error("unknown data stream {stream}")]
    UnknownStream {
        /// The byte.
        stream: u8,
    },
    /// A data frame too short for its 9-byte header.
    #[error("data frame body of {len} bytes is shorter than its 9-byte header")]
    ShortDataHeader {
        /// Body length.
        len: usize,
    },
    /// A data frame with no payload (the end of a stream is a control message).
    #[error("data frame for {stream} of id {id} carries no bytes")]
    EmptyData {
        /// The stream's name.
        stream: &'static str,
        /// The id.
        id: u64,
    },
    /// A control body that is not JSON (syntax error, or it ends early).
    #[error("control body is not JSON: {detail} (line {line}, column {column})")]
    MalformedJson {
        /// serde_json's description.
        detail: String,
        /// 1-based line in the body.
        line: usize,
        /// 1-based column in the body.
        column: usize,
    },
    /// JSON, but not a message: unknown `type`, unknown or missing field, wrong type.
    #[error("control body is not a valid message: {detail} (line {line}, column {column})")]
    BadMessage {
        /// serde_json's description.
        detail: String,
        /// 1-based line in the body.
        line: usize,
        /// 1-based column in the body.
        column: usize,
    },
    /// Bytes after the JSON object in a control body.
    #[error("control body has {extra} bytes after the message, from offset {offset}")]
    TrailingBytes {
        /// Offset of the first extra byte in the body.
        offset: usize,
        /// How many extra bytes.
        extra: usize,
    },
    /// A message that parses but breaks a rule or a limit.
    #[error("{message}.{field}: {problem}")]
    Invalid {
        /// The message type.
        message: &'static str,
        /// The field, e.g. `argv[3]`.
        field: String,
        /// What is wrong.
        problem: Problem,
    },
    /// A frame that this side must never receive (or send), e.g. `exec` arriving at the host.
    #[error("{frame} may not be sent to the {receiver}")]
    WrongDirection {
        /// The frame's name.
        frame: &'static str,
        /// The side that would receive it.
        receiver: Role,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame: {buffered} bytes buffered, {needed} needed")]
    Truncated {
        /// Bytes of the partial frame.
        buffered: usize,
        /// Bytes the frame needs in all (length prefix included; 4 when even that is incomplete).
        needed: u64,
    },
    /// A previous fatal error left the stream unframed; nothing more can be decoded.
    #[error("the decoder stopped at an earlier framing error")]
    Poisoned,
    /// Reading or writing failed ([`crate::io`] only).
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Why a field is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Must not be empty.
    Empty,
    /// More items than allowed.
    TooMany {
        /// Items present.
        count: usize,
        /// Allowed.
        max: usize,
    },
    /// Longer than allowed, in bytes.
    TooLong {
        /// Length.
        len: usize,
        /// Allowed.
        max: usize,
    },
    /// Contains a NUL byte.
    ContainsNul,
    /// Contains a character it may not (`=` in an env name, `/` in a file name).
    BadChar(char),
    /// A path that does not start with `/`.
    NotAbsolute,
    /// A path with an empty, `.` or `..` component, or a trailing `/`.
    NotNormalized,
    /// A number outside its range.
    OutOfRange {
        /// The value.
        value: i64,
        /// Smallest allowed.
        min: i64,
        /// Largest allowed.
        max: i64,
    },
    /// A name given twice.
    Duplicate(String),
    /// A list that must be sorted is not.
    NotSorted,
    /// Breaks a rule that ties fields together.
    Rule(&'static str),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Empty => f.write_str("must not be empty"),
            Problem::TooMany { count, max } => write!(f, "{count} items, at most {max} allowed"),
            Problem::TooLong { len, max } => write!(f, "{len} bytes, at most {max} allowed"),
            Problem::ContainsNul => f.write_str("contains a NUL byte"),
            Problem::BadChar(c) => write!(f, "contains {c:?}"),
            Problem::NotAbsolute => f.write_str("must be an absolute path"),
            Problem::NotNormalized => {
                f.write_str("must be normalized (no empty, `.` or `..` component, no trailing `/`)")
            }
            Problem::OutOfRange { value, min, max } => {
                write!(f, "{value} is outside {min} ..= {max}")
            }
            Problem::Duplicate(name) => write!(f, "{name:?} appears more than once"),
            Problem::NotSorted => f.write_str("must be sorted"),
            Problem::Rule(rule) => f.write_str(rule),
        }
    }
}

impl ProtoError {
    /// Whether the byte stream has lost its framing: the connection must end, and the decoder
    /// refuses to go on. Other errors consumed exactly one frame; the caller may answer with
    /// `error` and read on.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            ProtoError::FrameTooLarge { .. }
                | ProtoError::Truncated { .. }
                | ProtoError::Poisoned
                | ProtoError::Io(_)
        )
    }

    /// The code to answer the peer with when this error is about its frame.
    pub fn reply_code(&self) -> ErrorCode {
        match self {
            ProtoError::FrameTooLarge { .. } | ProtoError::ControlTooLarge { .. } => {
                ErrorCode::TooLarge
            }
            ProtoError::Invalid { problem, .. } => match problem {
                Problem::TooMany { .. } | Problem::TooLong { .. } => ErrorCode::TooLarge,
                _ => ErrorCode::Invalid,
            },
            ProtoError::Io(_) => ErrorCode::Internal,
            _ => ErrorCode::Protocol,
        }
    }
}
