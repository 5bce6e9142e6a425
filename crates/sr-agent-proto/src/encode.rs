//! Writing frames into a `Vec<u8>`. The encoder applies the same rules and limits as the
//! decoder, so whatever it writes, a decoder with the same limits accepts.

use crate::error::ProtoError;
use crate::frame::{Data, Frame, FrameKind, HEADER_LEN, Stream};
use crate::limits::Limits;
use crate::message::{Message, Role};
use crate::validate::validate;

/// Writes frames for one side of a connection.
#[derive(Debug, Clone)]
pub struct Encoder {
    local: Role,
    limits: Limits,
}

impl Encoder {
    /// An encoder for the side `local` (the sender) with the default limits.
    pub fn new(local: Role) -> Self {
        Self::with_limits(local, Limits::default())
    }

    /// An encoder with explicit limits.
    pub fn with_limits(local: Role, limits: Limits) -> Self {
        Encoder { local, limits }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Append one frame. On error `out` is left as it was.
    pub fn frame(&self, frame: &Frame, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        match frame {
            Frame::Control(m) => self.message(m, out),
            Frame::Data(d) => self.data(d.stream, d.id, &d.bytes, out),
        }
    }

    /// Append a control frame. On error `out` is left as it was.
    pub fn message(&self, message: &Message, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        self.check_direction(message.type_name(), message.direction())?;
        validate(message, &self.limits)?;
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        out.push(FrameKind::Control as u8);
        if let Err(e) = serde_json::to_writer(&mut *out, message) {
            // Serializing these types into memory cannot fail; kept as an error, not a panic.
            out.truncate(start);
            return Err(ProtoError::BadMessage {
                detail: e.to_string(),
                line: 0,
                column: 0,
            });
        }
        let body = out.len() - start - HEADER_LEN;
        let max = self.limits.effective_control_body();
        if body > max as usize {
            out.truncate(start);
            return Err(ProtoError::ControlTooLarge {
                len: body as u64,
                max,
            });
        }
        // body <= max_control_body <= u32::MAX - 1, so the length fits.
        let len = (body + 1) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    /// Append one data frame carrying all of `bytes`, which must fit
    /// ([`Limits::max_data_chunk`]) and must not be empty. On error `out` is left as it was.
    pub fn data(
        &self,
        stream: Stream,
        id: u64,
        bytes: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), ProtoError> {
        self.check_direction(Frame::data_name(stream), stream.direction())?;
        if bytes.is_empty() {
            return Err(ProtoError::EmptyData {
                stream: stream.name(),
                id,
            });
        }
        let max = self.limits.max_data_chunk();
        if bytes.len() > max {
            return Err(ProtoError::FrameTooLarge {
                len: (bytes.len() + 1 + crate::limits::DATA_HEADER_LEN) as u64,
                max: self.limits.max_frame,
            });
        }
        let len = (1 + crate::limits::DATA_HEADER_LEN + bytes.len()) as u32;
        out.reserve(4 + len as usize);
        out.extend_from_slice(&len.to_be_bytes());
        out.push(FrameKind::Data as u8);
        out.push(stream as u8);
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(bytes);
        Ok(())
    }

    /// Append `bytes` as as many data frames as the frame limit needs (none for empty input).
    /// Returns the number of frames written. On error `out` is left as it was.
    pub fn data_chunks(
        &self,
        stream: Stream,
        id: u64,
        bytes: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<usize, ProtoError> {
        let start = out.len();
        let chunk = self.limits.max_data_chunk().max(1);
        let mut frames = 0;
        for part in bytes.chunks(chunk) {
            if let Err(e) = self.data(stream, id, part, out) {
                out.truncate(start);
                return Err(e);
            }
            frames += 1;
        }
        Ok(frames)
    }

    fn check_direction(
        &self,
        frame: &'static str,
        direction: crate::message::Direction,
    ) -> Result<(), ProtoError> {
        let receiver = self.local.peer();
        if direction.allows_receiver(receiver) {
            Ok(())
        } else {
            Err(ProtoError::WrongDirection { frame, receiver })
        }
    }
}

/// Append `frame` as the `local` side with the default limits.
pub fn encode_frame(local: Role, frame: &Frame, out: &mut Vec<u8>) -> Result<(), ProtoError> {
    Encoder::new(local).frame(frame, out)
}

/// Append `message` as the `local` side with the default limits.
pub fn encode_message(local: Role, message: &Message, out: &mut Vec<u8>) -> Result<(), ProtoError> {
    Encoder::new(local).message(message, out)
}

impl Data {
    /// A data chunk.
    pub fn new(stream: Stream, id: u64, bytes: impl Into<Vec<u8>>) -> Self {
        Data {
            stream,
            id,
            bytes: bytes.into(),
        }
    }
}
