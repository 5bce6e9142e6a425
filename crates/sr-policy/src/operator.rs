//! The operator config: host-level limits that every policy is validated against.
//!
//! The policy author says what a workload needs; the operator (whoever runs safe-run on this
//! host) says what policies may ask for. A policy can never widen this: a mount outside the
//! allowed prefixes, a limit above a ceiling, or root inside the sandbox without
//! `allowRootInSandbox` fails validation with SR-POL-003.
//!
//! Loaded from the file named by `SAFE_RUN_CONFIG` (YAML or JSON), else `/etc/safe-run/config.yaml`
//! when it exists, else built-in defaults. `SAFE_RUN_WORKDIR_BASE` overrides `runDir`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sr_common::{ByteSize, DurationSpec};

/// Environment variable naming the operator config file.
pub const CONFIG_ENV: &str = "SAFE_RUN_CONFIG";
/// Environment variable overriding the run directory base.
pub const WORKDIR_BASE_ENV: &str = "SAFE_RUN_WORKDIR_BASE";
/// The config file read when `SAFE_RUN_CONFIG` is unset and it exists.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/safe-run/config.yaml";

/// Host-level limits and locations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct OperatorConfig {
    /// Mount sources must lie under one of these absolute prefixes (after canonicalization).
    pub allowed_mount_prefixes: Vec<String>,
    /// Whether policies may ask for writable mounts.
    pub allow_writable_mounts: bool,
    /// Whether policies may run the workload as uid 0 inside the sandbox.
    pub allow_root_in_sandbox: bool,
    /// Host directories bound read-only into the sandbox for `rootfs.source: host`.
    pub host_rootfs_paths: Vec<String>,
    /// Host uid and gid the workload's identity maps to. Must not be 0.
    pub workload_host_uid: u32,
    /// See `workload_host_uid`.
    pub workload_host_gid: u32,
    /// Fail closed when the kernel lacks Landlock (true), or record its absence (false).
    pub require_landlock: bool,
    /// Base of the per-run directories (`<runDir>/<runId>/`).
    pub run_dir: String,
    /// Ed25519 signing key file (created 0600 on first use).
    pub key_path: String,
    /// Limits applied when a policy does not set them.
    pub default_limits: Limits,
    /// Ceilings no policy may exceed.
    pub max_limits: Limits,
    /// Network settings for `mode: allowlist`.
    pub network: NetworkConfig,
}

/// A full set of limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Limits {
    /// CPU cores.
    pub cpus: f64,
    /// Memory.
    pub memory: ByteSize,
    /// Processes and threads.
    pub pids: u64,
    /// Open files per process.
    pub open_files: u64,
    /// Size of the private /tmp.
    pub tmpfs_size: ByteSize,
    /// Wall-clock timeout.
    pub timeout: DurationSpec,
}

/// Network settings for allowlist runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct NetworkConfig {
    /// IPv4 pool (a /16 or larger) from which each run's veth /30 is carved.
    pub subnet_pool: String,
    /// Upstream DNS server (`ip:port`) the runner's resolver asks. Default (null): the first
    /// nameserver in the host's /etc/resolv.conf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_dns: Option<String>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            subnet_pool: "10.213.0.0/16".to_owned(),
            upstream_dns: None,
        }
    }
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            allowed_mount_prefixes: vec!["/srv".into(), "/tmp".into(), "/var/tmp".into()],
            allow_writable_mounts: true,
            allow_root_in_sandbox: false,
            host_rootfs_paths: ["/bin", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/sbin", "/usr"]
                .map(String::from)
                .to_vec(),
            workload_host_uid: 65534,
            workload_host_gid: 65534,
            require_landlock: true,
            run_dir: "/tmp/safe-run/runs".into(),
            key_path: "/var/lib/safe-run/keys/report-signing.key".into(),
            default_limits: Limits {
                cpus: 1.0,
                memory: ByteSize::mib(512),
                pids: 256,
                open_files: 1024,
                tmpfs_size: ByteSize::mib(64),
                timeout: DurationSpec::from_secs(300),
            },
            max_limits: Limits {
                cpus: 8.0,
                memory: ByteSize::mib(16 * 1024),
                pids: 32768,
                open_files: 1 << 20,
                tmpfs_size: ByteSize::mib(4096),
                timeout: DurationSpec::from_secs(24 * 3600),
            },
            network: NetworkConfig::default(),
        }
    }
}
