//! The stable error codes. See DESIGN.md section 7 and docs/errors.md.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A stable error code. The string form (`SR-POL-001`) is the interface; the variant names are
/// for Rust readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ErrorCode {
    /// A required policy field is missing.
    #[serde(rename = "SR-POL-001")]
    PolicyMissingField,
    /// A policy field has a bad format or type, or the document is not valid YAML/JSON.
    #[serde(rename = "SR-POL-002")]
    PolicyBadFormat,
    /// Policy fields are individually valid but conflict, or the operator config forbids them.
    #[serde(rename = "SR-POL-003")]
    PolicySemanticConflict,
    /// The policy file cannot be read (missing, a directory, no permission).
    #[serde(rename = "SR-POL-004")]
    PolicyUnreadable,
    /// An invalid network egress rule.
    #[serde(rename = "SR-POL-201")]
    PolicyInvalidNetworkRule,
    /// Mapping the policy into a backend template failed.
    #[serde(rename = "SR-CMP-001")]
    CompileTemplateMapping,
    /// Incomplete output or an illegal request (e.g. `compile` without `--dry-run`).
    #[serde(rename = "SR-CMP-002")]
    CompileIllegalRequest,
    /// The network plan could not be built.
    #[serde(rename = "SR-CMP-201")]
    CompileNetworkPlan,
    /// The runner could not start: a host precondition is missing (preflight).
    #[serde(rename = "SR-RUN-001")]
    RunPreflight,
    /// Launching the workload failed.
    #[serde(rename = "SR-RUN-002")]
    RunLaunch,
    /// The workload exceeded its wall-clock timeout and was killed.
    #[serde(rename = "SR-RUN-003")]
    RunTimeout,
    /// An output stream passed its limit under `onLimit: kill`; the workload was killed.
    #[serde(rename = "SR-RUN-004")]
    RunOutputLimit,
    /// Applying the network plan failed.
    #[serde(rename = "SR-RUN-201")]
    RunNetworkApply,
    /// Releasing the network resources of a run failed.
    #[serde(rename = "SR-RUN-202")]
    RunNetworkRelease,
    /// Writing an evidence event failed.
    #[serde(rename = "SR-EVD-001")]
    EvidenceEventWrite,
    /// Generating, signing or verifying the report failed.
    #[serde(rename = "SR-EVD-002")]
    EvidenceReport,
    /// The archive (index and log database) cannot be opened, migrated, read or written.
    #[serde(rename = "SR-ARC-001")]
    ArchiveStore,
    /// The run asked for is not in the archive (or RUN names no run).
    #[serde(rename = "SR-ARC-002")]
    ArchiveNotFound,
    /// An archived report is missing or no longer matches the digest the archive recorded.
    #[serde(rename = "SR-ARC-003")]
    ArchiveTampered,
    /// An inclusion proof, consistency proof or checkpoint does not verify.
    #[serde(rename = "SR-ARC-004")]
    ArchiveProof,
    /// `safe-run serve`: no token, a token that is not valid, or one whose scope does not
    /// allow the request.
    #[serde(rename = "SR-SRV-001")]
    ServeAuth,
    /// `safe-run serve`: a limit is full (sandboxes, execs, request rate); retry after the
    /// answer's `Retry-After`.
    #[serde(rename = "SR-SRV-002")]
    ServeLimit,
    /// `safe-run serve`: the request is malformed or names nothing that exists (a bad body,
    /// parameter, path, sandbox or exec).
    #[serde(rename = "SR-SRV-003")]
    ServeRequest,
    /// `safe-run serve`: the request does not fit the sandbox's state (it ended, or is still
    /// running when its report is asked for).
    #[serde(rename = "SR-SRV-004")]
    ServeState,
    /// `safe-run serve`: the daemon itself failed (its token file, a worker).
    #[serde(rename = "SR-SRV-005")]
    ServeInternal,
    /// `safe-run artifact build`: an input is unusable (the agent is missing or not a static
    /// ELF, an unknown profile, an output directory that cannot be used).
    #[serde(rename = "SR-ART-001")]
    ArtifactInput,
    /// `safe-run artifact build`: a host tool failed or is missing (apt-get, apt-cache,
    /// dpkg-deb, depmod, mkfs.ext4, debugfs, xz, zstd, chroot).
    #[serde(rename = "SR-ART-002")]
    ArtifactTool,
    /// `safe-run artifact build`: a package does not hold what the build needs (no kernel
    /// image, a module that is neither shipped nor built in, a digest that does not match, a
    /// tree that fails its check).
    #[serde(rename = "SR-ART-003")]
    ArtifactContent,
    /// `safe-run artifact build`: reading or writing a file (cache, work tree, outputs) failed.
    #[serde(rename = "SR-ART-004")]
    ArtifactIo,
}

impl ErrorCode {
    /// Every code, in documentation order.
    pub const ALL: [ErrorCode; 29] = [
        ErrorCode::PolicyMissingField,
        ErrorCode::PolicyBadFormat,
        ErrorCode::PolicySemanticConflict,
        ErrorCode::PolicyUnreadable,
        ErrorCode::PolicyInvalidNetworkRule,
        ErrorCode::CompileTemplateMapping,
        ErrorCode::CompileIllegalRequest,
        ErrorCode::CompileNetworkPlan,
        ErrorCode::RunPreflight,
        ErrorCode::RunLaunch,
        ErrorCode::RunTimeout,
        ErrorCode::RunOutputLimit,
        ErrorCode::RunNetworkApply,
        ErrorCode::RunNetworkRelease,
        ErrorCode::EvidenceEventWrite,
        ErrorCode::EvidenceReport,
        ErrorCode::ArchiveStore,
        ErrorCode::ArchiveNotFound,
        ErrorCode::ArchiveTampered,
        ErrorCode::ArchiveProof,
        ErrorCode::ServeAuth,
        ErrorCode::ServeLimit,
        ErrorCode::ServeRequest,
        ErrorCode::ServeState,
        ErrorCode::ServeInternal,
        ErrorCode::ArtifactInput,
        ErrorCode::ArtifactTool,
        ErrorCode::ArtifactContent,
        ErrorCode::ArtifactIo,
    ];

    /// The stable string form, e.g. `SR-POL-001`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::PolicyMissingField => "SR-POL-001",
            ErrorCode::PolicyBadFormat => "SR-POL-002",
            ErrorCode::PolicySemanticConflict => "SR-POL-003",
            ErrorCode::PolicyUnreadable => "SR-POL-004",
            ErrorCode::PolicyInvalidNetworkRule => "SR-POL-201",
            ErrorCode::CompileTemplateMapping => "SR-CMP-001",
            ErrorCode::CompileIllegalRequest => "SR-CMP-002",
            ErrorCode::CompileNetworkPlan => "SR-CMP-201",
            ErrorCode::RunPreflight => "SR-RUN-001",
            ErrorCode::RunLaunch => "SR-RUN-002",
            ErrorCode::RunTimeout => "SR-RUN-003",
            ErrorCode::RunOutputLimit => "SR-RUN-004",
            ErrorCode::RunNetworkApply => "SR-RUN-201",
            ErrorCode::RunNetworkRelease => "SR-RUN-202",
            ErrorCode::EvidenceEventWrite => "SR-EVD-001",
            ErrorCode::EvidenceReport => "SR-EVD-002",
            ErrorCode::ArchiveStore => "SR-ARC-001",
            ErrorCode::ArchiveNotFound => "SR-ARC-002",
            ErrorCode::ArchiveTampered => "SR-ARC-003",
            ErrorCode::ArchiveProof => "SR-ARC-004",
            ErrorCode::ServeAuth => "SR-SRV-001",
            ErrorCode::ServeLimit => "SR-SRV-002",
            ErrorCode::ServeRequest => "SR-SRV-003",
            ErrorCode::ServeState => "SR-SRV-004",
            ErrorCode::ServeInternal => "SR-SRV-005",
            ErrorCode::ArtifactInput => "SR-ART-001",
            ErrorCode::ArtifactTool => "SR-ART-002",
            ErrorCode::ArtifactContent => "SR-ART-003",
            ErrorCode::ArtifactIo => "SR-ART-004",
        }
    }

    /// Parses the string form.
    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The process exit code `safe-run` uses for this family of failure.
    ///
    /// 0 success; 1 the workload itself failed (its own exit code is passed through instead
    /// where one exists); 2 usage; 3 policy invalid; 4 compile; 5 run; 6 timeout; 7 evidence;
    /// 8 output limit (`onLimit: kill`); 9 archive and transparency log; 10 the daemon's
    /// answers (a client's exit code for a refused request); 11 building microVM artifacts.
    pub const fn exit_code(self) -> i32 {
        match self {
            ErrorCode::PolicyMissingField
            | ErrorCode::PolicyBadFormat
            | ErrorCode::PolicySemanticConflict
            | ErrorCode::PolicyUnreadable
            | ErrorCode::PolicyInvalidNetworkRule => 3,
            ErrorCode::CompileTemplateMapping
            | ErrorCode::CompileIllegalRequest
            | ErrorCode::CompileNetworkPlan => 4,
            ErrorCode::RunPreflight
            | ErrorCode::RunLaunch
            | ErrorCode::RunNetworkApply
            | ErrorCode::RunNetworkRelease => 5,
            ErrorCode::RunTimeout => 6,
            ErrorCode::RunOutputLimit => 8,
            ErrorCode::EvidenceEventWrite | ErrorCode::EvidenceReport => 7,
            ErrorCode::ArchiveStore
            | ErrorCode::ArchiveNotFound
            | ErrorCode::ArchiveTampered
            | ErrorCode::ArchiveProof => 9,
            ErrorCode::ServeAuth
            | ErrorCode::ServeLimit
            | ErrorCode::ServeRequest
            | ErrorCode::ServeState
            | ErrorCode::ServeInternal => 10,
            ErrorCode::ArtifactInput
            | ErrorCode::ArtifactTool
            | ErrorCode::ArtifactContent
            | ErrorCode::ArtifactIo => 11,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_form_round_trips_through_serde_and_parse() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::parse("SR-XXX-000"), None);
    }
}
