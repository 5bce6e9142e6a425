//! PolicySpec v1: the data model of a policy file, exactly as written by its author.
//!
//! Every struct rejects unknown fields. Optional fields carry their documented default in
//! `docs/policy.md`; defaults are applied where they are used (the compiler), never silently
//! invented here, so the policy digest covers what the author wrote.
//!
//! Field names are camelCase in YAML and JSON (`readOnly`, `tmpfsSize`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sr_common::{ByteSize, DurationSpec};

/// The most entries `mounts` may have (the schema's `maxItems`).
pub const MAX_MOUNTS: usize = 256;
/// The most entries `network.egress` may have (the schema's `maxItems`).
pub const MAX_EGRESS_RULES: usize = 256;
/// The most entries one egress rule's `ports` may have (the schema's `maxItems`).
pub const MAX_PORTS_PER_RULE: usize = 1024;

/// A whole policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "safe-run PolicySpec v1")]
pub struct PolicySpec {
    /// Schema version; must be 1.
    pub version: u32,
    /// A short name for the policy: letters, digits, '.', '_' and '-', at most 63 characters.
    pub name: String,
    /// What to run and how.
    pub runtime: Runtime,
    /// The root filesystem the workload sees. Default: a read-only view of the host's system
    /// directories (`source: host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<Rootfs>,
    /// Host paths made visible to the workload. Required (may be empty): a policy must say
    /// explicitly what it exposes. At most 256.
    #[schemars(length(max = MAX_MOUNTS))]
    pub mounts: Vec<Mount>,
    /// Network access. Default: `mode: none` (no network at all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    /// Resource limits. Default: the operator config's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Which evidence to record, and whether to sign the report. Default: every event, signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
    /// Kernel, initramfs and root filesystem images for a microVM. Required for
    /// `backend: firecracker`; for `backend: microvm` the operator config's `microvm`
    /// artifacts are used where it is absent; forbidden for `sandbox`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<Artifacts>,
}

/// Which isolation backend enforces the policy.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Process sandbox: Linux namespaces, Landlock, seccomp, cgroups.
    #[default]
    Sandbox,
    /// Firecracker microVM (pins that VMM).
    Firecracker,
    /// A microVM on the VMM the operator config chooses (`microvm.vmm`: `qemu` or
    /// `firecracker`).
    Microvm,
}

impl Backend {
    /// Whether it boots a guest kernel (a microVM of either VMM).
    pub fn is_vm(self) -> bool {
        matches!(self, Backend::Firecracker | Backend::Microvm)
    }

    /// The name policies spell.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sandbox => "sandbox",
            Backend::Firecracker => "firecracker",
            Backend::Microvm => "microvm",
        }
    }
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Runtime {
    /// Backend. Default `sandbox`.
    #[serde(default)]
    pub backend: Backend,
    /// Absolute path of the program, as seen inside the sandbox.
    pub command: String,
    /// Arguments (without argv[0]). Required, may be empty.
    pub args: Vec<String>,
    /// The workload's whole environment. The host environment never leaks in.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Absolute working directory inside the sandbox. Default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Wall-clock limit; the whole process tree is killed when it expires. Default: the
    /// operator config's `defaultLimits.timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationSpec>,
    /// Identity inside the sandbox. Default: an unprivileged user (uid/gid 1000) that is not
    /// host root. `root` needs the operator's `allowRootInSandbox`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    /// How much of stdout and stderr is kept, each. Default: the operator config's
    /// `defaultLimits.outputBytes` per stream, cut (`onLimit: truncate`) past it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Output>,
}

/// The limit on each output stream (stdout, stderr) of the workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Output {
    /// Bytes kept per stream (e.g. `16Mi`), in the run directory and on the terminal. Default:
    /// the operator config's `defaultLimits.outputBytes`; at most its `maxLimits.outputBytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<ByteSize>,
    /// What happens when a stream passes `maxBytes`: `truncate` (default: the rest is read and
    /// discarded, the run goes on) or `kill` (the whole process tree is killed).
    #[serde(default)]
    pub on_limit: OnLimit,
}

/// What a run does when an output stream passes its limit.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum OnLimit {
    /// Keep the first `maxBytes`, read and discard the rest; the run goes on.
    #[default]
    Truncate,
    /// Keep the first `maxBytes`, then kill the whole process tree (SR-RUN-004).
    Kill,
}

/// The identity the workload runs as, inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct User {
    /// User id inside the sandbox (0-65534).
    pub uid: u32,
    /// Group id inside the sandbox (0-65534).
    pub gid: u32,
}

/// Root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rootfs {
    /// `host` (a read-only view of the host's system directories) or an absolute path to a
    /// directory holding a root filesystem (sandbox). Always read-only.
    pub source: String,
}

/// A host path made visible inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mount {
    /// Host path. Relative paths are resolved against the policy file's directory. Must lie
    /// under one of the operator's allowed mount prefixes; symlinks are never followed.
    pub source: String,
    /// Absolute path inside the sandbox; no `..`, not on /proc, /dev or /sys.
    pub target: String,
    /// Read-only unless set to false. Default true.
    #[serde(default = "default_true")]
    pub read_only: bool,
}

fn default_true() -> bool {
    true
}

/// Network mode.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// No network: a fresh network namespace with only loopback.
    #[default]
    None,
    /// Egress only to the listed destinations, enforced by nftables on the host.
    Allowlist,
}

/// Network access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Network {
    /// `none` (default) or `allowlist`.
    #[serde(default)]
    pub mode: NetworkMode,
    /// Allowed destinations (allowlist only; must be absent or empty for `none`). At most 256.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_EGRESS_RULES))]
    pub egress: Vec<EgressRule>,
}

/// Transport protocol of an egress rule.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP echo (no ports).
    Icmp,
}

/// One allowed destination: exactly one of `host` and `cidr`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EgressRule {
    /// A DNS name, resolved by the runner at run time (and kept current).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// An IPv4 or IPv6 network in CIDR notation (`203.0.113.0/24`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// `tcp`, `udp` or `icmp`.
    pub protocol: Protocol,
    /// Destination ports, 1-65535. Required for tcp/udp, forbidden for icmp. At most 1024.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_PORTS_PER_RULE))]
    pub ports: Vec<i64>,
}

/// Resource limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    /// CPU quota in cores (e.g. 0.5, 1, 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory limit (e.g. `256Mi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// Maximum number of processes and threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
    /// Maximum open file descriptors per process (RLIMIT_NOFILE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_files: Option<i64>,
    /// Size of the private /tmp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs_size: Option<ByteSize>,
}

/// Evidence settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Evidence {
    /// Event types to record (see docs/evidence.md). Default: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    /// Sign the report with the host key. Default true.
    #[serde(default = "default_true")]
    pub sign: bool,
}

/// Firecracker artifacts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Artifacts {
    /// Guest kernel (an uncompressed vmlinux for Firecracker, a bzImage for QEMU).
    pub kernel: Artifact,
    /// An initramfs (QEMU: the modules the guest agent loads before it mounts the root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initramfs: Option<Artifact>,
    /// ext4 root filesystem image.
    pub rootfs: Artifact,
}

/// One artifact file, optionally pinned by digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Artifact {
    /// Absolute host path.
    pub path: String,
    /// Expected SHA-256, 64 lowercase hex digits. Checked before the VM starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl PolicySpec {
    /// The backend, defaulted.
    pub fn backend(&self) -> Backend {
        self.runtime.backend
    }

    /// The network mode, defaulted to `none`.
    pub fn network_mode(&self) -> NetworkMode {
        self.network.as_ref().map(|n| n.mode).unwrap_or_default()
    }
}
