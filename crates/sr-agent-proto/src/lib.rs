//! The agent protocol: the frames the host (safe-run) and the agent inside a boundary (the
//! sandbox's pid 1 over its control socket, the microVM's guest agent over vsock) exchange.
//!
//! This crate owns the wire format and nothing else: frames ([`frame`]), typed control messages
//! ([`message`]), their rules and limits ([`validate`], [`Limits`]), the version rule
//! ([`version`]), and a codec ([`Encoder`] into a `Vec<u8>`, the incremental [`Decoder`]) that does
//! no I/O. [`io`] is the one module that touches `std::io`, as thin blocking adapters.
//! docs/agent-protocol.md describes the protocol byte by byte.
//!
//! ```
//! use sr_agent_proto::{Decoder, Encoder, Frame, Message, Role, message::IdOnly};
//!
//! let mut wire = Vec::new();
//! Encoder::new(Role::Host)
//!     .message(&Message::StatsRequest(IdOnly { id: 7 }), &mut wire)
//!     .unwrap();
//! let mut agent = Decoder::new(Role::Agent);
//! for byte in &wire {
//!     agent.feed(std::slice::from_ref(byte));
//! }
//! let frame = agent.next_frame().unwrap();
//! assert_eq!(frame, Some(Frame::Control(Message::StatsRequest(IdOnly { id: 7 }))));
//! ```
#![forbid(unsafe_code)]

mod decode;
pub mod digest;
mod encode;
mod error;
pub mod frame;
pub mod io;
mod limits;
pub mod message;
pub mod validate;
pub mod version;

pub use decode::Decoder;
pub use digest::Sha256Digest;
pub use encode::{Encoder, encode_frame, encode_message};
pub use error::{Problem, ProtoError};
pub use frame::{Data, Frame, FrameKind, Stream};
pub use limits::{DATA_HEADER_LEN, Limits};
pub use message::{ErrorCode, Message, Role};
pub use version::{PROTOCOL_VERSION, ProtocolVersion};
