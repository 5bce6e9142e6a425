//! The microVM backend's host side (docs/microvm.md, in progress): what both VMMs share.
//!
//! * [`hybrid_vsock`]: the `CONNECT <port>` / `OK <port>` handshake to a guest's vsock through
//!   the VMM's Unix socket (Firecracker's own, or vhost-device-vsock's for QEMU).
//! * [`guest_setup`]: the line each way before the agent protocol (confinement, entropy, facts).

pub mod guest_setup;
pub mod hybrid_vsock;
