//! The compiler: a validated PolicySpec and the operator config in, a deterministic
//! [`CompileBundle`] out.
#![forbid(unsafe_code)]

pub mod bundle;

pub use bundle::CompileBundle;
