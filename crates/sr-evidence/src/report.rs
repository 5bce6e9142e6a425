//! `run_report.json` schema v1: the types, sealing (digest + signature) and the file layout.
//!
//! The runner fills a [`RunReport`] with facts (what was hashed, enforced, used, produced) and
//! leaves `integrity` empty; [`seal`] computes the digest over the report's canonical JSON and
//! signs it; [`write_report`] writes it in the canonical layout. Every field is documented in
//! docs/evidence.md and the JSON Schema (docs/run_report.schema.json) is generated from these
//! types.
//!
//! # Integrity
//!
//! * `digest` = `sha256:<hex>` of JCS(report without its `integrity` member);
//! * `signature` = base64 (standard, padded) of the Ed25519 signature over the UTF-8 bytes of
//!   the `digest` string (`sha256:…`, 71 bytes);
//! * `eventsHead` repeats `timeline.head` so the signed digest binds the event chain.
//!
//! # Layout
//!
//! The file is the JCS key order pretty-printed with two-space indentation and a final newline.
//! A verifier re-renders the parsed report and demands byte equality, so even a whitespace
//! change that leaves the JSON meaning intact is detected.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer, SigningKey};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canonical::{check_numbers, jcs, sha256_tagged};
use crate::error::EvidenceError;
use crate::keys;

/// The value of `schemaVersion`.
pub const SCHEMA_VERSION: &str = "safe-run/run-report/v1";
/// The value of `integrity.algorithm`.
pub const INTEGRITY_ALGORITHM: &str = "sha256+jcs";
/// The file name of the report inside a run directory.
pub const REPORT_FILE: &str = "run_report.json";

/// A run report, schema v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "safe-run run report v1")]
pub struct RunReport {
    /// Always `safe-run/run-report/v1`.
    #[schemars(extend("const" = "safe-run/run-report/v1"))]
    pub schema_version: String,
    /// Which run this is, where and when.
    pub run: RunInfo,
    /// The policy the run was held to.
    pub policy: PolicyInfo,
    /// Digests of everything the run depended on, taken before it started.
    pub inputs: Vec<Input>,
    /// What was enforced, as observed facts.
    pub enforcement: Enforcement,
    /// The event chain this report closes.
    pub timeline: Timeline,
    /// Resource use measured from the cgroup.
    pub resources: Resources,
    /// Network audit; absent for `network.mode: none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_audit: Option<NetworkAudit>,
    /// How the workload ended.
    pub exit: ExitInfo,
    /// Digests of what the workload produced (stdout, stderr).
    pub outputs: Vec<Output>,
    /// What cleanup removed, and any error.
    pub cleanup: Cleanup,
    /// Digests of the files in the run's mounts (writable ones after the run, read-only ones
    /// before it, as configured); absent when none was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mounts: Option<crate::mounts::MountEvidence>,
    /// Every exec in the sandbox, by id, as its chain records it (absent in reports of
    /// versions that had none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub execs: Vec<crate::activity::ExecRecord>,
    /// Every file moved in or out, by id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transfers: Vec<crate::activity::FileTransferred>,
    /// The warm pool the sandbox came from, as its chain records it; absent when it was made
    /// for this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<crate::activity::PoolClaim>,
    /// Evidence the run could not record, or recorded only in part, each as `CODE at path:
    /// message` (a failed or panicked output tee, an event or sample that could not be
    /// taken). Absent when there was none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Digest and signature over everything above; absent only before [`seal`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<Integrity>,
}

/// Identity and timing of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunInfo {
    /// The run id (also the run directory's name).
    pub id: String,
    /// The boundary that enforced the policy: `sandbox`, `qemu` or `firecracker`.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9-]*$"))]
    pub backend: String,
    /// RFC 3339 UTC.
    pub started_at: String,
    /// RFC 3339 UTC.
    pub ended_at: String,
    /// Wall-clock duration in milliseconds.
    pub duration_ms: u64,
    /// The host, kept minimal on purpose (no hostname, no addresses): a report is meant to be
    /// shared, and these two facts are what a verifier needs to judge the enforcement.
    pub host: HostInfo,
    /// The safe-run version that wrote the report.
    pub safe_run_version: String,
}

/// Minimal host facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostInfo {
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// Machine architecture (`x86_64`, `aarch64`).
    pub arch: String,
}

/// The policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyInfo {
    /// `name` from the policy.
    pub name: String,
    /// `sha256:` of JCS of the validated policy (its canonical form).
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub digest: String,
    /// Path of the policy file as given, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Policy fields the run's caller replaced (`safe-run run --backend`); absent when the
    /// policy ran as written. `digest` is always of the policy as written: the run enforced
    /// it with these applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<PolicyOverrides>,
}

/// Policy fields replaced for one run, keyed by their policy path, each value spelled as a
/// policy spells it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyOverrides {
    /// The backend the run was given instead of the policy's `runtime.backend` (`run.backend`
    /// names the boundary it became: `microvm` runs on `qemu` or `firecracker`).
    #[serde(
        rename = "runtime.backend",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(regex(pattern = r"^(sandbox|microvm|firecracker)$"))]
    pub runtime_backend: Option<String>,
}

impl PolicyOverrides {
    /// Whether nothing was overridden.
    pub fn is_empty(&self) -> bool {
        self.runtime_backend.is_none()
    }
}

/// What an input is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum InputRole {
    /// The canonical policy (digest over its JCS).
    Policy,
    /// The compiled bundle (digest over its JCS).
    Bundle,
    /// The command line (digest over JCS of `[command, ...args]`).
    Command,
    /// The resolved command binary (digest over the file).
    Binary,
    /// A root filesystem image (digest over the file).
    Rootfs,
    /// A guest kernel (digest over the file).
    Kernel,
}

/// One input and its digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Input {
    /// What it is.
    pub role: InputRole,
    /// A short name (`policy`, `bundle`, the command's basename, ...).
    pub name: String,
    /// Absolute host path of a file input; `report verify` re-hashes it when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `sha256:<hex>`.
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub digest: String,
}

/// Enforcement facts, as observed on the host (never the policy's intentions).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Enforcement {
    /// Namespaces the workload runs in (`cgroup`, `ipc`, `mnt`, `net`, `pid`, `user`, `uts`), sorted.
    pub namespaces: Vec<String>,
    /// Landlock, when the backend uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub landlock: Option<Landlock>,
    /// The seccomp filter, when one was installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<Seccomp>,
    /// The cgroup and the limits written to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<Cgroup>,
    /// rlimits set (`RLIMIT_NOFILE` → value), sorted.
    #[serde(default)]
    pub rlimits: BTreeMap<String, u64>,
    /// Whether no_new_privs was set.
    pub no_new_privs: bool,
    /// Capabilities the workload kept (empty: all dropped), sorted.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// The identity mapping, when a user namespace was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserMapping>,
    /// The network as enforced.
    pub network: NetworkFacts,
    /// Features the policy or operator allowed to be absent and that were absent on this host.
    #[serde(default)]
    pub absent: Vec<AbsentFeature>,
    /// Backend-specific facts whose shape belongs to the backend (see docs/evidence.md:
    /// `firecracker` records `vmConfigDigest`, `jailer`, `guestAgent`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub backend: BTreeMap<String, Value>,
}

/// Landlock as applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Landlock {
    /// The ABI version used (the lower of the kernel's and the one safe-run targets).
    pub abi: u32,
    /// `fully_enforced`, `partially_enforced`, `not_enforced` or `unavailable`, as the kernel
    /// reported it when the ruleset was applied.
    pub status: String,
    /// The rules, sorted by path.
    pub rules: Vec<LandlockRule>,
    /// Rule paths that did not exist in the sandbox and were skipped, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// Scopes enforced (ABI >= 6: `abstract_unix_socket`, `signal`), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

impl LandlockRule {
    /// Parses the runner's `path:access` form (access after the last `:`).
    pub fn parse(rule: &str) -> LandlockRule {
        match rule.rsplit_once(':') {
            Some((path, access)) => LandlockRule {
                path: path.to_owned(),
                access: vec![access.to_owned()],
            },
            None => LandlockRule {
                path: rule.to_owned(),
                access: vec![],
            },
        }
    }
}

/// One Landlock path rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LandlockRule {
    /// Path inside the sandbox.
    pub path: String,
    /// Access granted (`ro`, `rw`, or Landlock right names), sorted.
    pub access: Vec<String>,
}

/// The seccomp filter as installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Seccomp {
    /// The profile name from the bundle.
    pub profile_id: String,
    /// `sha256:` of the BPF program bytes loaded into the kernel.
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub filter_digest: String,
    /// Number of syscalls the filter denies.
    pub denied_syscalls: u64,
    /// Total BPF instructions loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<u64>,
    /// What `socket`/`socketpair` may create; anything else was refused by the filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sockets: Option<SocketRules>,
}

/// The socket allow lists a seccomp filter enforced (names as in the kernel's headers).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SocketRules {
    /// Address families (`AF_UNIX`, `AF_INET`, ...), sorted; others get `EAFNOSUPPORT`.
    pub families: Vec<String>,
    /// Netlink protocols allowed under `AF_NETLINK`, sorted.
    pub netlink_protocols: Vec<String>,
    /// Socket types allowed under `AF_INET`/`AF_INET6`, sorted; others get `EPROTONOSUPPORT`.
    pub inet_socket_types: Vec<String>,
    /// Protocols allowed under `AF_INET`/`AF_INET6` (`IPPROTO_IP` is the default 0), sorted.
    pub ip_protocols: Vec<String>,
}

/// The cgroup as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cgroup {
    /// `v1` or `v2`.
    pub version: String,
    /// Control file → value actually written (`memory.max` → `268435456`), sorted.
    pub limits: BTreeMap<String, String>,
}

/// User namespace mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserMapping {
    /// uid inside the sandbox.
    pub uid: u32,
    /// gid inside the sandbox.
    pub gid: u32,
    /// The host uid it maps to.
    pub host_uid: u32,
    /// The host gid it maps to.
    pub host_gid: u32,
}

/// The network as enforced.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkFacts {
    /// `none` or `allowlist`.
    pub mode: String,
    /// `sha256:` of the nftables ruleset text applied for the run (allowlist only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub nft_ruleset_digest: Option<String>,
    /// Further facts from the network module (interface names, addresses), sorted by key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, Value>,
}

/// A feature that was absent and allowed to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AbsentFeature {
    /// The feature (`landlock`, `cgroup.cpu`, ...).
    pub feature: String,
    /// Why it was absent and who allowed it.
    pub reason: String,
}

/// The event chain this report closes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Timeline {
    /// Hash of the last event (or the genesis value when none was written).
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub head: String,
    /// Events written.
    pub count: u64,
    /// Events the evidence plan gated out.
    pub dropped: u64,
    /// Whether the run reached cleanup (false: the report was written on an error path).
    pub complete: bool,
}

/// Resource use.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// Peak memory in bytes, when the cgroup reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_peak_bytes: Option<u64>,
    /// CPU time in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_usage_us: Option<u64>,
    /// Peak number of processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_peak: Option<u64>,
    /// Number of resource samples taken.
    pub samples: u64,
}

/// Network audit of an allowlist run.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkAudit {
    /// One entry per egress rule, in policy order.
    pub rules: Vec<RuleAudit>,
    /// Traffic the default drop rule blocked.
    pub blocked: BlockedSummary,
    /// Further audit data from the network module (DNS answers, ...), sorted by key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, Value>,
}

/// Counters of one egress rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleAudit {
    /// The rule id from the network plan.
    pub rule_id: String,
    /// Index in `network.egress`.
    pub egress_index: u32,
    /// Packets the rule allowed.
    pub allowed_hits: u64,
    /// Packets to this rule's destination that were blocked (e.g. a port outside the rule).
    pub blocked_hits: u64,
}

/// The default-drop counter.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlockedSummary {
    /// Packets dropped.
    pub packets: u64,
    /// Bytes dropped.
    pub bytes: u64,
}

/// How the workload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ExitStatus {
    /// It exited on its own (`code`).
    Exited,
    /// A signal killed it (`signal`).
    Signaled,
    /// The wall-clock timeout killed it.
    Timeout,
    /// The OOM killer killed it.
    Oom,
    /// It never started.
    LaunchFailed,
    /// safe-run stopped it because the run's evidence could no longer be recorded
    /// (SR-EVD-001).
    Stopped,
    /// An output stream passed its limit under `onLimit: kill` and safe-run killed the whole
    /// process tree (SR-RUN-004).
    OutputLimit,
    /// safe-run itself was stopped (SIGINT/SIGTERM) and killed the sandbox (`signal`: the
    /// signal safe-run received).
    Interrupted,
    /// How the workload ended was not observed: the sandbox init vanished (killed from
    /// outside) without reporting it. No `code`, no `signal`: none is invented.
    Lost,
    /// A live sandbox that its daemon ended (`reason` says why), with whatever ran in it
    /// killed; each exec's own end is in the activity ledger.
    Destroyed,
}

/// Why a daemon ended a live sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum EndReason {
    /// A client asked for it (`DELETE`, a kill tool).
    Request,
    /// Its deadline (a create's or a later `timeout` request's) passed.
    Deadline,
    /// It was idle (no exec, no request) for the daemon's idle timeout.
    Idle,
    /// The daemon was stopping (SIGTERM/SIGINT, or its stdin closed).
    Shutdown,
}

impl ExitStatus {
    /// The name the report's JSON uses (`exited`, `outputLimit`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            ExitStatus::Exited => "exited",
            ExitStatus::Signaled => "signaled",
            ExitStatus::Timeout => "timeout",
            ExitStatus::Oom => "oom",
            ExitStatus::LaunchFailed => "launchFailed",
            ExitStatus::Stopped => "stopped",
            ExitStatus::OutputLimit => "outputLimit",
            ExitStatus::Interrupted => "interrupted",
            ExitStatus::Lost => "lost",
            ExitStatus::Destroyed => "destroyed",
        }
    }
}

/// Exit facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExitInfo {
    /// How it ended.
    pub status: ExitStatus,
    /// Exit code, for `exited`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// Signal number, for `signaled`/`timeout`/`oom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Why the daemon ended it, for `destroyed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<EndReason>,
}

/// One output file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Output {
    /// `stdout` or `stderr`.
    pub name: String,
    /// Path relative to the run directory.
    pub path: String,
    /// Size in bytes of the saved file: the bytes kept.
    pub bytes: u64,
    /// `sha256:<hex>` of the file (of the bytes kept).
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub digest: String,
    /// Bytes the workload wrote to the stream, kept or not (absent in reports written before
    /// output limits existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_seen: Option<u64>,
    /// Whether the stream passed its limit, so that `bytesSeen - bytes` bytes were discarded.
    #[serde(default)]
    pub truncated: bool,
    /// The limit in force on this stream, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<u64>,
    /// What the limit did when it was passed: `truncate` (the run went on) or `kill`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(truncate|kill)$"))]
    pub on_limit: Option<String>,
}

/// Cleanup result.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cleanup {
    /// Whether everything was removed.
    pub ok: bool,
    /// What was removed (`cgroup:…`, `nft:…`, `link:…`, `mount:…`), in order.
    pub removed: Vec<String>,
    /// Errors met while cleaning up (each with its code), in order.
    pub errors: Vec<String>,
}

/// The seal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Integrity {
    /// Always `sha256+jcs`.
    #[schemars(extend("const" = "sha256+jcs"))]
    pub algorithm: String,
    /// `sha256:<hex>` of JCS(report without `integrity`).
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub digest: String,
    /// Equal to `timeline.head`.
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub events_head: String,
    /// Base64 Ed25519 signature over the UTF-8 bytes of `digest`; absent when unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The signer's key id (16 hex of sha256 of the raw public key); with `signature`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{16}$"))]
    pub keyid: Option<String>,
    /// The signer's raw public key, base64; self-asserted (see docs/evidence.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

impl Input {
    /// A file input (`binary`, `rootfs`, `kernel`): hashes the file at `path`.
    pub fn from_file(role: InputRole, name: &str, path: &Path) -> Result<Input, EvidenceError> {
        let (digest, _) =
            crate::verify::digest_file(path).map_err(|source| EvidenceError::Read {
                path: path.to_owned(),
                source,
            })?;
        Ok(Input {
            role,
            name: name.to_owned(),
            path: Some(path.display().to_string()),
            digest,
        })
    }

    /// A JSON input (`policy`, `bundle`, `command`): `sha256:` of its JCS.
    pub fn from_json<T: Serialize>(
        role: InputRole,
        name: &str,
        value: &T,
    ) -> Result<Input, EvidenceError> {
        let digest = jcs(value)
            .map(|bytes| sha256_tagged(&bytes))
            .map_err(|reason| EvidenceError::ReportEncode { reason })?;
        Ok(Input {
            role,
            name: name.to_owned(),
            path: None,
            digest,
        })
    }
}

impl Output {
    /// An output file at `rel_path` inside `run_dir`: size and digest.
    pub fn from_file(name: &str, run_dir: &Path, rel_path: &str) -> Result<Output, EvidenceError> {
        let path = run_dir.join(rel_path);
        let (digest, bytes) = crate::verify::digest_file(&path)
            .map_err(|source| EvidenceError::Read { path, source })?;
        Ok(Output {
            name: name.to_owned(),
            path: rel_path.to_owned(),
            bytes,
            digest,
            bytes_seen: None,
            truncated: false,
            limit_bytes: None,
            on_limit: None,
        })
    }
}

impl Timeline {
    /// The timeline of a finished chain; `complete` says whether the run reached cleanup.
    /// `head` is set again by [`seal`].
    pub fn from_summary(summary: &crate::chain::ChainSummary, complete: bool) -> Timeline {
        Timeline {
            head: summary.head.clone(),
            count: summary.count,
            dropped: summary.dropped,
            complete,
        }
    }
}

/// RFC 3339 UTC of a Unix time in milliseconds (the report's time format).
pub fn rfc3339_from_unix_ms(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    crate::chain::format_time(t)
}

/// The report as JSON without `integrity`, checked for exact numbers.
fn unsealed_value(report: &RunReport) -> Result<Value, EvidenceError> {
    let mut value = serde_json::to_value(report).map_err(|e| EvidenceError::ReportEncode {
        reason: e.to_string(),
    })?;
    if let Value::Object(map) = &mut value {
        map.remove("integrity");
    }
    check_numbers(&value).map_err(|reason| EvidenceError::ReportEncode { reason })?;
    Ok(value)
}

/// `sha256:` of JCS of a report value without its `integrity` member.
pub fn digest_of_value(value: &Value) -> Result<String, String> {
    let bytes = match value {
        Value::Object(map) if map.contains_key("integrity") => {
            let mut map = map.clone();
            map.remove("integrity");
            jcs(&Value::Object(map))?
        }
        other => jcs(other)?,
    };
    Ok(sha256_tagged(&bytes))
}

/// Seals a report: sets `timeline.head` to `events_head`, computes the digest and, with a
/// signer, the signature. Any `integrity` already present is replaced.
pub fn seal(
    mut report: RunReport,
    events_head: &str,
    signer: Option<&SigningKey>,
) -> Result<RunReport, EvidenceError> {
    report.integrity = None;
    report.timeline.head = events_head.to_owned();
    let value = unsealed_value(&report)?;
    let digest =
        digest_of_value(&value).map_err(|reason| EvidenceError::ReportEncode { reason })?;
    let (signature, keyid, public_key) = match signer {
        Some(key) => {
            let sig = key.sign(digest.as_bytes());
            let public = key.verifying_key();
            (
                Some(B64.encode(sig.to_bytes())),
                Some(keys::keyid(&public)),
                Some(B64.encode(public.as_bytes())),
            )
        }
        None => (None, None, None),
    };
    report.integrity = Some(Integrity {
        algorithm: INTEGRITY_ALGORITHM.to_owned(),
        digest,
        events_head: events_head.to_owned(),
        signature,
        keyid,
        public_key,
    });
    Ok(report)
}

/// The canonical file bytes of a report value: JCS key order, pretty-printed with two spaces,
/// newline at the end.
pub fn render_value(value: &Value) -> Result<Vec<u8>, String> {
    // Re-parsing the JCS bytes gives a Value whose maps are in JCS order (serde_json keeps
    // insertion order in this workspace), which the pretty printer then follows.
    let canonical: Value =
        serde_json::from_slice(&jcs(value)?).map_err(|e| format!("JCS output unreadable: {e}"))?;
    let mut out = serde_json::to_vec_pretty(&canonical).map_err(|e| e.to_string())?;
    out.push(b'\n');
    Ok(out)
}

/// The canonical file bytes of a report.
pub fn render(report: &RunReport) -> Result<Vec<u8>, EvidenceError> {
    let value = serde_json::to_value(report).map_err(|e| EvidenceError::ReportEncode {
        reason: e.to_string(),
    })?;
    render_value(&value).map_err(|reason| EvidenceError::ReportEncode { reason })
}

/// Writes the report to `path` (must not exist; mode 0644: a report is meant to be shared) and
/// syncs it.
pub fn write_report(path: &Path, report: &RunReport) -> Result<(), EvidenceError> {
    let bytes = render(report)?;
    let io = |source| EvidenceError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(io)?;
    file.write_all(&bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(())
}

/// Reads and parses a report (no verification).
pub fn read_report(path: &Path) -> Result<RunReport, EvidenceError> {
    let bytes = std::fs::read(path).map_err(|source| EvidenceError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| EvidenceError::Parse {
        path: path.to_owned(),
        what: "run report",
        reason: e.to_string(),
    })
}

/// The JSON Schema of [`RunReport`] (draft 2020-12), as kept in docs/run_report.schema.json.
pub fn report_schema() -> Value {
    let schema = schemars::schema_for!(RunReport);
    schema.to_value()
}

/// The schema rendered as docs/run_report.schema.json holds it (pretty, newline at the end).
pub fn report_schema_text() -> String {
    let value = report_schema();
    let mut s = serde_json::to_string_pretty(&value).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Keys whose UTF-8 and UTF-16 orders differ: the layout must follow JCS (UTF-16), and
    /// rendering a rendered report again must not change a byte (what `report.layout` relies on).
    #[test]
    fn layout_follows_jcs_order_and_is_idempotent() {
        let value = json!({"\u{e000}": 1, "\u{10000}": 2, "b": {"z": [1, 2], "a": null}});
        let once = render_value(&value).unwrap();
        let text = String::from_utf8(once.clone()).unwrap();
        assert!(
            text.find('\u{10000}').unwrap() < text.find('\u{e000}').unwrap(),
            "{text}"
        );
        assert!(text.find("\"a\"").unwrap() < text.find("\"z\"").unwrap());
        let reparsed: Value = serde_json::from_slice(&once).unwrap();
        assert_eq!(render_value(&reparsed).unwrap(), once);
        assert!(text.ends_with("}\n"));
    }

    #[test]
    fn seal_rejects_integers_beyond_2_pow_53() {
        let mut r: RunReport = serde_json::from_value(json!({
            "schemaVersion": SCHEMA_VERSION,
            "run": {"id": "r", "backend": "sandbox", "startedAt": "t", "endedAt": "t", "durationMs": 0,
                    "host": {"kernel": "k", "arch": "a"}, "safeRunVersion": "0"},
            "policy": {"name": "p", "digest": "d"},
            "inputs": [], "enforcement": {"namespaces": [], "noNewPrivs": true, "network": {"mode": "none"}},
            "timeline": {"head": "h", "count": 0, "dropped": 0, "complete": true},
            "resources": {"samples": 0},
            "exit": {"status": "exited", "code": 0},
            "outputs": [], "cleanup": {"ok": true, "removed": [], "errors": []}
        }))
        .unwrap();
        r.resources.memory_peak_bytes = Some(u64::MAX);
        let err = seal(r, "h", None).unwrap_err();
        assert_eq!(err.code(), sr_common::ErrorCode::EvidenceReport);
        assert!(err.to_string().contains("memoryPeakBytes"), "{err}");
    }
}
