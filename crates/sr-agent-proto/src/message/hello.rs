//! Opening the conversation: the host's `hello`, the agent's `helloAck` or `versionMismatch`,
//! then the agent's `ready`.

use serde::{Deserialize, Serialize};

use crate::version::ProtocolVersion;

/// Which end of the connection a peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// The runner (safe-run, or the daemon) outside the boundary.
    Host,
    /// What runs inside the boundary: the sandbox's pid 1, or the microVM's guest agent.
    Agent,
}

impl Role {
    /// The other end.
    pub fn peer(self) -> Role {
        match self {
            Role::Host => Role::Agent,
            Role::Agent => Role::Host,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Host => "host",
            Role::Agent => "agent",
        })
    }
}

/// The host's first frame. Its shape never changes across versions (see [`crate::version`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hello {
    /// The newest version the host speaks.
    pub version: ProtocolVersion,
    /// Always [`Role::Host`]; an agent refuses anything else (two agents wired to each other).
    pub role: Role,
    /// The host software, e.g. `safe-run`.
    pub name: String,
    /// Its version, e.g. `0.1.0`.
    pub software_version: String,
    /// Optional capabilities the host can use (`tty`, `tar`, ...), sorted, no duplicates.
    pub features: Vec<String>,
}

/// The agent accepts: the version both speak and the features both know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HelloAck {
    /// The negotiated version: the host's major, the smaller minor.
    pub version: ProtocolVersion,
    /// The agent software, e.g. `safe-run-init` or `safe-run-agent`.
    pub name: String,
    /// Its version.
    pub software_version: String,
    /// The features both sides have, sorted; nothing else may be used.
    pub features: Vec<String>,
}

/// The agent refuses the host's hello; it closes the connection after sending this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VersionMismatch {
    /// What the agent speaks.
    pub supported: ProtocolVersion,
    /// What the host offered.
    pub received: ProtocolVersion,
    /// Why, for a person.
    pub message: String,
}

/// The boundary is isolated and waiting for requests; it knows no command yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ready {
    /// `uname -r` inside the boundary (a guest kernel differs from the host's).
    pub kernel_release: Option<String>,
    /// Mount points the agent set up, as seen inside.
    pub mounts: Vec<MountFact>,
}

/// One mount inside the boundary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MountFact {
    /// Absolute path inside.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
    /// Where it comes from on the host, for a bind the policy asked for (absent: a system
    /// mount, or a boundary whose host paths mean nothing to the host, as in a microVM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// A private read-only overlay, so that file locks taken on it stay inside.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lock_isolated: bool,
}

/// Who the agent says it is, to answer a [`Hello`] with.
#[derive(Debug, Clone, Copy)]
pub struct AgentIdentity<'a> {
    /// The version the agent speaks.
    pub version: ProtocolVersion,
    /// The agent software's name.
    pub name: &'a str,
    /// Its version.
    pub software_version: &'a str,
    /// Its optional capabilities.
    pub features: &'a [&'a str],
}

impl Hello {
    /// The agent's answer: a [`HelloAck`] with the negotiated version and the common features, or
    /// the [`VersionMismatch`] to send before closing.
    pub fn answer(&self, agent: &AgentIdentity<'_>) -> Result<HelloAck, VersionMismatch> {
        let refuse = |message: String| VersionMismatch {
            supported: agent.version,
            received: self.version,
            message,
        };
        if self.role != Role::Host {
            return Err(refuse(format!(
                "the peer says it is the {}, but only a host may say hello to an agent",
                self.role
            )));
        }
        let Some(version) = agent.version.negotiate(self.version) else {
            return Err(refuse(format!(
                "protocol {} is not compatible with {} (the major versions differ)",
                self.version, agent.version
            )));
        };
        let mut features: Vec<String> = self
            .features
            .iter()
            .filter(|f| agent.features.contains(&f.as_str()))
            .cloned()
            .collect();
        features.sort();
        features.dedup();
        Ok(HelloAck {
            version,
            name: agent.name.to_owned(),
            software_version: agent.software_version.to_owned(),
            features,
        })
    }
}
