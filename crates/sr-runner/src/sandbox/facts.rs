//! What confines an exec, as the process sandbox's report records it ([`WorkloadFacts`]), and
//! its translation to and from the agent protocol (`started.confinement` for the per-exec part,
//! `ready.mounts` for the mounts, which are the sandbox's and the same for every exec).

use serde::{Deserialize, Serialize};
use sr_agent_proto::message::{
    Confinement, LandlockFacts as ProtoLandlock, LandlockStatus, MountFact, Rlimit, SeccompFacts,
    SocketAllowList,
};

use super::landlock_rules::LandlockFacts;
use super::mounts::MountFacts;

/// What the exec's process reported just before its `execve`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadFacts {
    /// Landlock.
    pub landlock: LandlockFacts,
    /// Seccomp profile id.
    pub seccomp_profile: String,
    /// sha256 of the installed BPF programs.
    pub seccomp_digest: String,
    /// Total BPF instructions.
    pub seccomp_instructions: usize,
    /// The socket allow lists the installed filter enforces.
    pub seccomp_sockets: sr_evidence::report::SocketRules,
    /// `/proc/self/uid_map` as written: `inside outside count`.
    pub uid_map: String,
    /// `/proc/self/gid_map` as written.
    pub gid_map: String,
    /// PR_SET_NO_NEW_PRIVS was set.
    pub no_new_privs: bool,
    /// Bounding-set entries dropped (all of them).
    pub capabilities_dropped: u64,
    /// rlimits applied: (name, value).
    pub rlimits: Vec<(String, u64)>,
    /// Binds made for the policy: (host source, target, read_only).
    pub policy_mounts: Vec<(String, String, bool)>,
    /// Mount targets given as private read-only overlays, so file locks taken on them stay
    /// inside the sandbox.
    #[serde(default)]
    pub lock_isolated_mounts: Vec<String>,
}

fn landlock_status(s: &str) -> LandlockStatus {
    match s {
        "fully_enforced" => LandlockStatus::FullyEnforced,
        "partially_enforced" => LandlockStatus::PartiallyEnforced,
        "not_enforced" => LandlockStatus::NotEnforced,
        _ => LandlockStatus::Unavailable,
    }
}

fn landlock_status_name(s: LandlockStatus) -> &'static str {
    match s {
        LandlockStatus::FullyEnforced => "fully_enforced",
        LandlockStatus::PartiallyEnforced => "partially_enforced",
        LandlockStatus::NotEnforced => "not_enforced",
        LandlockStatus::Unavailable => "unavailable",
    }
}

impl WorkloadFacts {
    /// The per-exec part, for `started.confinement`.
    pub fn confinement(&self) -> Confinement {
        let s = &self.seccomp_sockets;
        Confinement {
            no_new_privs: self.no_new_privs,
            capabilities_dropped: self.capabilities_dropped,
            uid_map: self.uid_map.clone(),
            gid_map: self.gid_map.clone(),
            landlock: Some(ProtoLandlock {
                abi: u32::try_from(self.landlock.abi).unwrap_or(0),
                status: landlock_status(&self.landlock.status),
                rules: self.landlock.rules.clone(),
                skipped: self.landlock.skipped.clone(),
                scopes: self.landlock.scopes.clone(),
            }),
            seccomp: Some(SeccompFacts {
                profile: self.seccomp_profile.clone(),
                digest: self.seccomp_digest.clone(),
                instructions: self.seccomp_instructions as u64,
                sockets: Some(SocketAllowList {
                    families: s.families.clone(),
                    netlink_protocols: s.netlink_protocols.clone(),
                    inet_socket_types: s.inet_socket_types.clone(),
                    ip_protocols: s.ip_protocols.clone(),
                }),
            }),
            rlimits: self
                .rlimits
                .iter()
                .map(|(name, value)| Rlimit {
                    name: name.clone(),
                    value: *value,
                })
                .collect(),
        }
    }

    /// The facts back from what the agent said: its `ready.mounts` and an exec's confinement.
    pub fn from_agent(mounts: &[MountFact], c: &Confinement) -> Self {
        let landlock = c.landlock.as_ref().map_or_else(
            || LandlockFacts {
                status: "unavailable".into(),
                ..LandlockFacts::default()
            },
            |l| LandlockFacts {
                abi: i32::try_from(l.abi).unwrap_or(i32::MAX),
                status: landlock_status_name(l.status).to_owned(),
                rules: l.rules.clone(),
                skipped: l.skipped.clone(),
                scopes: l.scopes.clone(),
            },
        );
        let seccomp = c.seccomp.clone();
        let sockets = seccomp
            .as_ref()
            .and_then(|s| s.sockets.clone())
            .unwrap_or_default();
        WorkloadFacts {
            landlock,
            seccomp_profile: seccomp
                .as_ref()
                .map(|s| s.profile.clone())
                .unwrap_or_default(),
            seccomp_digest: seccomp
                .as_ref()
                .map(|s| s.digest.clone())
                .unwrap_or_default(),
            seccomp_instructions: seccomp
                .as_ref()
                .map_or(0, |s| usize::try_from(s.instructions).unwrap_or(usize::MAX)),
            seccomp_sockets: sr_evidence::report::SocketRules {
                families: sockets.families,
                netlink_protocols: sockets.netlink_protocols,
                inet_socket_types: sockets.inet_socket_types,
                ip_protocols: sockets.ip_protocols,
            },
            uid_map: c.uid_map.clone(),
            gid_map: c.gid_map.clone(),
            no_new_privs: c.no_new_privs,
            capabilities_dropped: c.capabilities_dropped,
            rlimits: c
                .rlimits
                .iter()
                .map(|r| (r.name.clone(), r.value))
                .collect(),
            policy_mounts: mounts
                .iter()
                .filter_map(|m| {
                    m.source
                        .as_ref()
                        .map(|s| (s.clone(), m.target.clone(), m.read_only))
                })
                .collect(),
            lock_isolated_mounts: mounts
                .iter()
                .filter(|m| m.lock_isolated)
                .map(|m| m.target.clone())
                .collect(),
        }
    }
}

/// The sandbox's mounts as `ready.mounts`: the policy's binds (with their source) and the
/// lock-isolated system directories.
pub fn mount_facts(made: &MountFacts) -> Vec<MountFact> {
    let mut out: Vec<MountFact> = made
        .policy_mounts
        .iter()
        .map(|(source, target, read_only)| MountFact {
            target: target.clone(),
            read_only: *read_only,
            source: Some(source.clone()),
            lock_isolated: false,
        })
        .collect();
    out.extend(made.lock_isolated.iter().map(|target| MountFact {
        target: target.clone(),
        read_only: true,
        source: None,
        lock_isolated: true,
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_survive_the_trip_through_the_protocol() {
        let facts = WorkloadFacts {
            landlock: LandlockFacts {
                abi: 6,
                status: "partially_enforced".into(),
                rules: vec!["/usr:ro".into()],
                skipped: vec!["/nope".into()],
                scopes: vec!["signal".into()],
            },
            seccomp_profile: "sr-default-v2".into(),
            seccomp_digest: "sha256:ab".into(),
            seccomp_instructions: 321,
            seccomp_sockets: sr_evidence::report::SocketRules {
                families: vec!["AF_UNIX".into()],
                netlink_protocols: vec!["NETLINK_ROUTE".into()],
                inet_socket_types: vec!["SOCK_STREAM".into()],
                ip_protocols: vec!["IPPROTO_TCP".into()],
            },
            uid_map: "1000 65534 1".into(),
            gid_map: "1000 65534 1".into(),
            no_new_privs: true,
            capabilities_dropped: 41,
            rlimits: vec![("nofile".into(), 64)],
            policy_mounts: vec![("/srv/in".into(), "/in".into(), true)],
            lock_isolated_mounts: vec!["/usr".into()],
        };
        let made = MountFacts {
            policy_mounts: facts.policy_mounts.clone(),
            lock_isolated: facts.lock_isolated_mounts.clone(),
        };
        let back = WorkloadFacts::from_agent(&mount_facts(&made), &facts.confinement());
        assert_eq!(back, facts);
    }
}
