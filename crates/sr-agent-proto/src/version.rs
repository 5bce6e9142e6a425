//! The protocol version and its compatibility rule.
//!
//! A version is `major.minor`. Two peers are compatible when their majors are equal; they then
//! speak the smaller of the two minors. A minor release only adds things (message types, optional
//! fields, enum values) and a peer never sends what the negotiated minor, or the peer's feature
//! list, does not include. That is what lets every message keep `deny_unknown_fields`: an unknown
//! field is always a bug or an attack, never a newer peer. A major release may change anything
//! except the `hello`, `helloAck` and `versionMismatch` messages, whose shape is frozen so that any
//! two versions can at least tell each other that they differ.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtocolVersion {
    /// Incompatible changes.
    pub major: u16,
    /// Additions only.
    pub minor: u16,
}

/// The version this crate speaks.
pub const PROTOCOL_VERSION: ProtocolVersion = ProtocolVersion { major: 1, minor: 0 };

impl ProtocolVersion {
    /// Whether a peer at `other` can talk to a peer at `self`.
    pub fn is_compatible(self, other: ProtocolVersion) -> bool {
        self.major == other.major
    }

    /// The version both speak, or `None` when the majors differ.
    pub fn negotiate(self, other: ProtocolVersion) -> Option<ProtocolVersion> {
        self.is_compatible(other).then_some(ProtocolVersion {
            major: self.major,
            minor: self.minor.min(other.minor),
        })
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn v(major: u16, minor: u16) -> ProtocolVersion {
        ProtocolVersion { major, minor }
    }

    #[test]
    fn same_major_speaks_the_smaller_minor() {
        assert_eq!(v(1, 3).negotiate(v(1, 1)), Some(v(1, 1)));
        assert_eq!(v(1, 1).negotiate(v(1, 3)), Some(v(1, 1)));
        assert_eq!(v(1, 0).negotiate(v(1, 0)), Some(v(1, 0)));
    }

    #[test]
    fn different_majors_do_not_talk() {
        assert_eq!(v(1, 0).negotiate(v(2, 0)), None);
        assert!(!v(2, 5).is_compatible(v(1, 5)));
    }

    #[test]
    fn displays_as_major_dot_minor() {
        assert_eq!(PROTOCOL_VERSION.to_string(), "1.0");
    }
}
