//! The only module that touches an I/O trait: thin adapters from [`Decoder`] and [`Encoder`] to
//! `std::io::Read` and `std::io::Write`. They are blocking and keep no state beyond the decoder;
//! an async runtime or a poll loop should feed the codec directly instead.

use std::io::{ErrorKind, Read, Write};

use crate::decode::Decoder;
use crate::encode::Encoder;
use crate::error::ProtoError;
use crate::frame::Frame;

/// Bytes read per `read` call; frames larger than this arrive over several reads.
const READ_CHUNK: usize = 64 * 1024;

/// Read the next frame. `Ok(None)` at a clean end of the stream (between frames); an end inside
/// a frame is [`ProtoError::Truncated`]. Bytes read past the frame stay in `decoder` for the
/// next call, so always pass the same decoder for one stream.
pub fn read_frame<R: Read + ?Sized>(
    reader: &mut R,
    decoder: &mut Decoder,
) -> Result<Option<Frame>, ProtoError> {
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        if let Some(frame) = decoder.next_frame()? {
            return Ok(Some(frame));
        }
        let n = match reader.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            decoder.finish()?;
            return Ok(None);
        }
        decoder.feed(&chunk[..n]);
    }
}

/// Encode `frame` and write it whole. Nothing is written when encoding fails.
pub fn write_frame<W: Write + ?Sized>(
    writer: &mut W,
    encoder: &Encoder,
    frame: &Frame,
) -> Result<(), ProtoError> {
    let mut out = Vec::new();
    encoder.frame(frame, &mut out)?;
    writer.write_all(&out)?;
    Ok(())
}

/// A reader of frames: a `Read` and its decoder together.
#[derive(Debug)]
pub struct FrameReader<R> {
    reader: R,
    decoder: Decoder,
}

impl<R: Read> FrameReader<R> {
    /// Frames from `reader`, decoded by `decoder`.
    pub fn new(reader: R, decoder: Decoder) -> Self {
        FrameReader { reader, decoder }
    }

    /// The next frame; see [`read_frame`].
    pub fn read_frame(&mut self) -> Result<Option<Frame>, ProtoError> {
        read_frame(&mut self.reader, &mut self.decoder)
    }

    /// The reader back.
    pub fn into_inner(self) -> R {
        self.reader
    }
}

/// A writer of frames: a `Write` and its encoder together.
#[derive(Debug)]
pub struct FrameWriter<W> {
    writer: W,
    encoder: Encoder,
    buf: Vec<u8>,
}

impl<W: Write> FrameWriter<W> {
    /// Frames to `writer`, encoded by `encoder`.
    pub fn new(writer: W, encoder: Encoder) -> Self {
        FrameWriter {
            writer,
            encoder,
            buf: Vec::new(),
        }
    }

    /// Write one frame whole; the encoding buffer is reused between calls.
    pub fn write_frame(&mut self, frame: &Frame) -> Result<(), ProtoError> {
        self.buf.clear();
        self.encoder.frame(frame, &mut self.buf)?;
        self.writer.write_all(&self.buf)?;
        Ok(())
    }

    /// Flush the writer.
    pub fn flush(&mut self) -> Result<(), ProtoError> {
        self.writer.flush()?;
        Ok(())
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.writer
    }
}
