//! The runner: prepare, launch, monitor and clean up a run of a [`sr_compiler::CompileBundle`].
//!
//! Unsafe code is confined to the sandbox launch module (clone, pre_exec, pivot_root), each block
//! with a `// SAFETY:` comment.

pub mod network;
pub mod network_hook;

pub use network_hook::{AttachedNetwork, NetworkHook, NetworkSample, NoNetwork};
