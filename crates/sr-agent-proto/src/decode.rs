//! The incremental decoder: bytes in, in any split (one at a time works), complete frames out.
//!
//! The length prefix is checked against `max_frame` as soon as its 4 bytes are there, before any
//! byte of the body is kept, so a hostile prefix (say 4 GiB) costs nothing. The decoder never
//! reserves memory for a claimed length; its buffer only holds bytes the caller fed.

use crate::error::ProtoError;
use crate::frame::{Data, Frame, FrameKind, HEADER_LEN, LENGTH_LEN, Stream};
use crate::limits::{DATA_HEADER_LEN, Limits};
use crate::message::{Message, Role};
use crate::validate::validate;

/// Decodes the frames one side of a connection receives.
#[derive(Debug, Clone)]
pub struct Decoder {
    local: Role,
    limits: Limits,
    buf: Vec<u8>,
    start: usize,
    poisoned: bool,
}

impl Decoder {
    /// A decoder for the side `local` (the receiver) with the default limits.
    pub fn new(local: Role) -> Self {
        Self::with_limits(local, Limits::default())
    }

    /// A decoder with explicit limits (e.g. a smaller `max_frame`).
    pub fn with_limits(local: Role, limits: Limits) -> Self {
        Decoder {
            local,
            limits,
            buf: Vec::new(),
            start: 0,
            poisoned: false,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Add received bytes. After a fatal error they are dropped.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.poisoned {
            return;
        }
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes fed but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Whether a fatal error stopped the decoder.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed.
    ///
    /// A non-fatal error ([`ProtoError::is_fatal`]) consumed its frame and the next call goes on
    /// with the following one; after a fatal error every call returns [`ProtoError::Poisoned`].
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ProtoError> {
        if self.poisoned {
            return Err(ProtoError::Poisoned);
        }
        let avail = &self.buf[self.start..];
        let Some(prefix) = avail.first_chunk::<LENGTH_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix);
        if len > self.limits.max_frame {
            self.poison();
            return Err(ProtoError::FrameTooLarge {
                len: len.into(),
                max: self.limits.max_frame,
            });
        }
        let total = LENGTH_LEN + len as usize;
        if avail.len() < total {
            return Ok(None);
        }
        let frame = &avail[LENGTH_LEN..total];
        let result = decode_frame(frame, self.local, &self.limits);
        self.start += total;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        result.map(Some)
    }

    /// Call at the end of the stream: an error when it ended inside a frame.
    pub fn finish(&self) -> Result<(), ProtoError> {
        if self.poisoned {
            return Err(ProtoError::Poisoned);
        }
        let avail = &self.buf[self.start..];
        if avail.is_empty() {
            return Ok(());
        }
        let needed = match avail.first_chunk::<LENGTH_LEN>() {
            Some(prefix) => LENGTH_LEN as u64 + u64::from(u32::from_be_bytes(*prefix)),
            None => LENGTH_LEN as u64,
        };
        Err(ProtoError::Truncated {
            buffered: avail.len(),
            needed,
        })
    }

    fn poison(&mut self) {
        self.poisoned = true;
        self.buf = Vec::new();
        self.start = 0;
    }
}

/// Decode one frame without its length prefix (`frame` is the kind byte and the body).
fn decode_frame(frame: &[u8], local: Role, limits: &Limits) -> Result<Frame, ProtoError> {
    let Some((&kind, body)) = frame.split_first() else {
        return Err(ProtoError::EmptyFrame);
    };
    let frame = match FrameKind::from_byte(kind) {
        Some(FrameKind::Control) => Frame::Control(decode_control(body, limits)?),
        Some(FrameKind::Data) => Frame::Data(decode_data(body)?),
        None => return Err(ProtoError::UnknownKind { kind }),
    };
    if !frame.direction().allows_receiver(local) {
        return Err(ProtoError::WrongDirection {
            frame: frame.name(),
            receiver: local,
        });
    }
    Ok(frame)
}

fn decode_control(body: &[u8], limits: &Limits) -> Result<Message, ProtoError> {
    let max = limits.effective_control_body();
    if body.len() > max as usize {
        return Err(ProtoError::ControlTooLarge {
            len: body.len() as u64,
            max,
        });
    }
    let mut stream = serde_json::Deserializer::from_slice(body).into_iter::<Message>();
    let message = match stream.next() {
        Some(Ok(m)) => m,
        Some(Err(e)) => return Err(json_error(&e)),
        None => {
            return Err(ProtoError::MalformedJson {
                detail: "empty body".into(),
                line: 1,
                column: 0,
            });
        }
    };
    // One spelling: not even whitespace may follow the object.
    let end = stream.byte_offset();
    if end < body.len() {
        return Err(ProtoError::TrailingBytes {
            offset: end,
            extra: body.len() - end,
        });
    }
    validate(&message, limits)?;
    Ok(message)
}

fn json_error(e: &serde_json::Error) -> ProtoError {
    let (detail, line, column) = (e.to_string(), e.line(), e.column());
    match e.classify() {
        serde_json::error::Category::Data => ProtoError::BadMessage {
            detail,
            line,
            column,
        },
        _ => ProtoError::MalformedJson {
            detail,
            line,
            column,
        },
    }
}

fn decode_data(body: &[u8]) -> Result<Data, ProtoError> {
    let Some((header, payload)) = body.split_first_chunk::<DATA_HEADER_LEN>() else {
        return Err(ProtoError::ShortDataHeader { len: body.len() });
    };
    let stream =
        Stream::from_byte(header[0]).ok_or(ProtoError::UnknownStream { stream: header[0] })?;
    let mut id = [0u8; 8];
    id.copy_from_slice(&header[1..]);
    let id = u64::from_be_bytes(id);
    if payload.is_empty() {
        return Err(ProtoError::EmptyData {
            stream: stream.name(),
            id,
        });
    }
    Ok(Data {
        stream,
        id,
        bytes: payload.to_vec(),
    })
}

// HEADER_LEN documents the layout for readers of frame.rs; the decoder reads the two parts.
const _: () = assert!(HEADER_LEN == LENGTH_LEN + 1);
