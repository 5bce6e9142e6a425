//! The microVM backend's host side (docs/microvm.md, in progress): what both VMMs share.
//!
//! * [`hybrid_vsock`]: the `CONNECT <port>` / `OK <port>` handshake to a guest's vsock through
//!   the VMM's Unix socket (Firecracker's own, or vhost-device-vsock's for QEMU).
//! * [`qemu`]: QEMU as a backend (artifacts checked, VMM confined, the agent reached).
//! * [`firecracker`]: Firecracker behind its jailer as a backend (KVM hosts), driven over its
//!   API socket.
//! * [`confine`]: how a VMM process runs on the host (unprivileged, its own namespaces).
//! * [`host_seccomp`]: the seccomp filter the VMM processes run under on the host.
//! * [`accel`]: KVM where it runs a normal guest, software emulation otherwise.
//! * [`mount_image`]: a policy mount as an ext4 image on its own drive.
//! * [`memory_image`]: a QEMU snapshot's guest memory as a sparse file of its non-zero pages.
//! * [`ram_copier`]: who copies it into a restored VM's RAM (a process in the run's cgroup).
//! * [`facts`]: what the report says a microVM enforced.
//! * [`guest_setup`]: the line each way before the agent protocol (confinement, entropy, facts).

pub mod accel;
pub mod confine;
pub mod facts;
pub mod firecracker;
pub mod guest_setup;
pub mod host;
pub mod host_seccomp;
pub mod hybrid_vsock;
pub mod memory_image;
pub mod mount_image;
pub mod mount_sync;
pub mod qemu;
pub mod qmp;
pub mod ram_copier;
pub mod snapshot;
