//! Event types: re-exported from [`sr_common::events`], the one catalogue.

pub use sr_common::events::*;
