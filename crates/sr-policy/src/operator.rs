//! The operator config: host-level limits that every policy is validated against.
//!
//! The policy author says what a workload needs; the operator (whoever runs safe-run on this
//! host) says what policies may ask for. A policy can never widen this: a mount outside the
//! allowed prefixes, a limit above a ceiling, or root inside the sandbox without
//! `allowRootInSandbox` fails validation with SR-POL-003.
//!
//! Loaded from the file named by `SAFE_RUN_CONFIG` (YAML or JSON), else `/etc/safe-run/config.yaml`
//! when it exists, else built-in defaults. `SAFE_RUN_WORKDIR_BASE` overrides `runDir`.

use std::path::{Component, Path};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sr_common::{ByteSize, Diagnostic, DurationSpec, ErrorCode};

use crate::source::{self, SourceFormat};

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
    /// Give the read-only system directories (`hostRootfsPaths`) to the sandbox as private
    /// read-only overlayfs mounts (true), so file locks taken inside (`flock`, POSIX, OFD) live
    /// on the overlay's own inodes and never reach host processes or other runs; false binds
    /// the host's inodes and shares their lock state (see docs/sandbox.md, "File locks").
    pub isolate_file_locks: bool,
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
    /// `backend: microvm`: which VMM, its binaries, the default artifacts.
    pub microvm: MicrovmConfig,
    /// Where the firecracker backend finds its binaries and builds its jails.
    pub firecracker: FirecrackerConfig,
    /// Which mounts' files are digested into the report, and the per-run bounds.
    pub mount_digests: MountDigestConfig,
    /// `safe-run serve`: where it listens, its tokens, its limits.
    pub serve: ServeConfig,
}

/// `safe-run serve` (docs/serve.md); each setting can be overridden by a flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ServeConfig {
    /// The Unix socket it listens on (created 0600; its directory 0700).
    pub socket: String,
    /// A TCP address to listen on as well, loopback only (none by default).
    pub listen: Option<String>,
    /// The file of token hashes `safe-run token create` writes (0600).
    pub tokens_path: String,
    /// Sandboxes alive at once, over all tokens.
    pub max_sandboxes: u32,
    /// The largest request body.
    pub max_body: ByteSize,
    /// Named policies a create may ask for by name (`{"template": NAME}`), and that warm pools
    /// keep ready: name -> absolute path of a policy file.
    pub templates: std::collections::BTreeMap<String, String>,
    /// Execs running at once, over all sandboxes.
    pub max_execs: u32,
    /// Requests per second over all tokens (a bucket of one second's worth).
    pub requests_per_second: u32,
    /// A sandbox with no exec running and no request for this long is ended (its report says
    /// `idle`); `null` never ends one for idleness. Sandboxes waiting in a warm pool are not
    /// idle.
    pub idle_timeout: Option<DurationSpec>,
    /// What one token may use (an operator token, or a sandbox's own).
    pub per_token: TokenLimits,
    /// TLS on `listen` (then it may be any address, not only loopback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
}

/// A certificate chain and its private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsFiles {
    /// The certificate chain (leaf first).
    pub cert: String,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
}

/// Limits of one token; past one, the answer is 429 with `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct TokenLimits {
    /// Sandboxes alive at once that the token made.
    pub max_sandboxes: u32,
    /// Execs running at once that the token started.
    pub max_execs: u32,
    /// Requests per second (a bucket of one second's worth).
    pub requests_per_second: u32,
}

impl Default for TokenLimits {
    fn default() -> Self {
        TokenLimits {
            max_sandboxes: 16,
            max_execs: 32,
            requests_per_second: 1000,
        }
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            socket: "/run/safe-run/serve.sock".into(),
            listen: None,
            tokens_path: "/var/lib/safe-run/tokens.json".into(),
            max_sandboxes: 16,
            max_body: ByteSize::mib(64),
            templates: std::collections::BTreeMap::new(),
            max_execs: 64,
            requests_per_second: 2000,
            idle_timeout: Some(DurationSpec::from_secs(600)),
            per_token: TokenLimits::default(),
            tls: None,
        }
    }
}

/// Digests of the files in policy mounts (the report's `mounts` section; docs/evidence.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct MountDigestConfig {
    /// Digest writable mounts after the workload ended (what it wrote).
    pub writable: bool,
    /// Digest read-only mounts before the workload started (what there was to read).
    pub read_only: bool,
    /// At most this many entries listed per run, over all mounts.
    pub max_files: u64,
    /// At most this many bytes hashed per run, over all mounts.
    pub max_bytes: ByteSize,
}

impl Default for MountDigestConfig {
    fn default() -> Self {
        MountDigestConfig {
            writable: true,
            read_only: false,
            max_files: 10_000,
            max_bytes: ByteSize::mib(1024),
        }
    }
}

/// Locations used by the firecracker backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct FirecrackerConfig {
    /// The `firecracker` binary (passed to the jailer as `--exec-file`).
    pub firecracker_bin: String,
    /// The `jailer` binary.
    pub jailer_bin: String,
    /// Base directory of the jailer's chroots (`--chroot-base-dir`).
    pub chroot_base_dir: String,
}

impl Default for FirecrackerConfig {
    fn default() -> Self {
        FirecrackerConfig {
            firecracker_bin: "/usr/local/bin/firecracker".into(),
            jailer_bin: "/usr/local/bin/jailer".into(),
            chroot_base_dir: "/srv/jailer".into(),
        }
    }
}

/// The VMM a `backend: microvm` policy runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Vmm {
    /// QEMU: KVM where it runs a normal guest, software emulation (TCG) otherwise.
    #[default]
    Qemu,
    /// Firecracker behind its jailer (KVM hosts).
    Firecracker,
}

/// `backend: microvm` (docs/microvm.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct MicrovmConfig {
    /// The VMM.
    pub vmm: Vmm,
    /// `qemu-system-x86_64`.
    pub qemu_bin: String,
    /// `vhost-device-vsock` (the guest's vsock device for QEMU).
    pub vhost_device_vsock_bin: String,
    /// The kernel a policy without `artifacts` boots (what `safe-run artifact build` writes).
    pub kernel: String,
    /// The initramfs a policy without `artifacts` boots (QEMU).
    pub initramfs: String,
    /// The root filesystem a policy without `artifacts` boots.
    pub rootfs: String,
    /// Where `safe-run artifact snapshot` keeps snapshots of agent-ready QEMU guests, and where
    /// runs look for one of their VM's shape to restore instead of booting (empty: never).
    pub snapshots: String,
}

impl Default for MicrovmConfig {
    fn default() -> Self {
        MicrovmConfig {
            vmm: Vmm::Qemu,
            qemu_bin: "/usr/bin/qemu-system-x86_64".into(),
            vhost_device_vsock_bin: "/usr/local/bin/vhost-device-vsock".into(),
            kernel: "/var/lib/safe-run/artifacts/vmlinuz".into(),
            initramfs: "/var/lib/safe-run/artifacts/initramfs.img".into(),
            rootfs: "/var/lib/safe-run/artifacts/rootfs.ext4".into(),
            snapshots: "/var/lib/safe-run/snapshots".into(),
        }
    }
}

impl MicrovmConfig {
    /// The snapshot directory, unless snapshots are off (an empty `snapshots`).
    pub fn snapshot_dir(&self) -> Option<std::path::PathBuf> {
        (!self.snapshots.is_empty()).then(|| std::path::PathBuf::from(&self.snapshots))
    }
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
    /// Bytes kept of each output stream (stdout, stderr) in the run directory.
    pub output_bytes: ByteSize,
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
    /// Most conntrack entries one run's sandbox may hold at once (flows it opened, forwarded
    /// or to its resolver); new flows beyond it are dropped and counted.
    pub max_connections: u32,
    /// What the plan's default drops do with what the policy does not allow: `reject`
    /// (default: a TCP reset for TCP, ICMP administratively prohibited for everything else,
    /// so a client fails at once) or `drop` (silently; the client waits for its own timeout).
    /// Counted in the network audit the same way either way.
    pub blocked: BlockedVerdict,
}

/// [`NetworkConfig::blocked`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BlockedVerdict {
    /// TCP reset / ICMP administratively prohibited.
    #[default]
    Reject,
    /// Silent drop.
    Drop,
}

impl BlockedVerdict {
    /// The name used in the config and the report.
    pub fn as_str(self) -> &'static str {
        match self {
            BlockedVerdict::Reject => "reject",
            BlockedVerdict::Drop => "drop",
        }
    }
}

/// Default of [`NetworkConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: u32 = 4096;
/// Highest accepted [`NetworkConfig::max_connections`] (the kernel's own table is commonly
/// 65536-262144 entries for the whole host).
pub const MAX_MAX_CONNECTIONS: u32 = 1 << 20;

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            subnet_pool: "10.213.0.0/16".to_owned(),
            upstream_dns: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            blocked: BlockedVerdict::Reject,
        }
    }
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            allowed_mount_prefixes: vec!["/srv".into(), "/tmp".into(), "/var/tmp".into()],
            allow_writable_mounts: true,
            allow_root_in_sandbox: false,
            host_rootfs_paths: [
                "/bin", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/sbin", "/usr",
            ]
            .map(String::from)
            .to_vec(),
            workload_host_uid: 65534,
            workload_host_gid: 65534,
            require_landlock: true,
            isolate_file_locks: true,
            run_dir: "/tmp/safe-run/runs".into(),
            key_path: "/var/lib/safe-run/keys/report-signing.key".into(),
            default_limits: Limits {
                cpus: 1.0,
                memory: ByteSize::mib(512),
                pids: 256,
                open_files: 1024,
                tmpfs_size: ByteSize::mib(64),
                timeout: DurationSpec::from_secs(300),
                output_bytes: ByteSize::mib(64),
            },
            max_limits: Limits {
                cpus: 8.0,
                memory: ByteSize::mib(16 * 1024),
                pids: 32768,
                open_files: 1 << 20,
                tmpfs_size: ByteSize::mib(4096),
                timeout: DurationSpec::from_secs(24 * 3600),
                output_bytes: ByteSize::mib(1024),
            },
            network: NetworkConfig::default(),
            microvm: MicrovmConfig::default(),
            firecracker: FirecrackerConfig::default(),
            mount_digests: MountDigestConfig::default(),
            serve: ServeConfig::default(),
        }
    }
}

impl OperatorConfig {
    /// Loads the host's config: the file named by `SAFE_RUN_CONFIG`, else
    /// [`DEFAULT_CONFIG_PATH`] when it exists, else the built-in defaults; then applies
    /// `SAFE_RUN_WORKDIR_BASE` to `runDir`, and validates the result.
    pub fn load() -> Result<OperatorConfig, Diagnostic> {
        Self::load_with(
            &|name| std::env::var_os(name),
            Path::new(DEFAULT_CONFIG_PATH),
        )
    }

    /// [`OperatorConfig::load`] with the environment and the default config path passed in,
    /// so tests need neither process-wide environment changes nor `/etc`.
    pub fn load_with(
        env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
        default_path: &Path,
    ) -> Result<OperatorConfig, Diagnostic> {
        let from_env = env(CONFIG_ENV).filter(|v| !v.is_empty());
        let mut config = match from_env {
            Some(path) => Self::read_file(Path::new(&path))?,
            None if default_path.exists() => Self::read_file(default_path)?,
            None => OperatorConfig::default(),
        };
        if let Some(base) = env(WORKDIR_BASE_ENV).filter(|v| !v.is_empty()) {
            config.run_dir = base.to_string_lossy().into_owned();
        }
        config.validate()?;
        Ok(config)
    }

    /// Loads and validates the config file at `path` (YAML, or JSON for `.json`). Fields the
    /// file leaves out keep their built-in defaults, field by field. Environment variables are
    /// not consulted.
    pub fn load_from(path: &Path) -> Result<OperatorConfig, Diagnostic> {
        let config = Self::read_file(path)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses config text (strictly: unknown fields and duplicate keys are errors) and merges
    /// it over the defaults. Does not validate.
    pub fn from_text(text: &str, format: SourceFormat) -> Result<OperatorConfig, Diagnostic> {
        let parsed = source::parse(text, format);
        if let Some(first) = parsed.diagnostics.into_iter().next() {
            return Err(config_diag(
                first.code,
                &first.path,
                first.message,
                first.hint,
            ));
        }
        let Some(root) = parsed.root else {
            return Ok(OperatorConfig::default());
        };
        let overlay = root.to_json();
        if !overlay.is_object() && !overlay.is_null() {
            return Err(config_diag(
                ErrorCode::PolicyBadFormat,
                "",
                "the operator config must be a mapping".into(),
                "see docs/policy.md, section Operator config".into(),
            ));
        }
        let mut merged = serde_json::to_value(OperatorConfig::default()).map_err(|e| {
            config_diag(
                ErrorCode::PolicyBadFormat,
                "",
                format!("internal error: {e}"),
                String::new(),
            )
        })?;
        merge(&mut merged, overlay);
        serde_json::from_value(merged).map_err(|e| {
            config_diag(
                ErrorCode::PolicyBadFormat,
                "",
                e.to_string(),
                "fix the field named above; see docs/policy.md, section Operator config".into(),
            )
        })
    }

    fn read_file(path: &Path) -> Result<OperatorConfig, Diagnostic> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            config_diag(
                ErrorCode::PolicyBadFormat,
                "",
                format!("cannot read operator config {}: {e}", path.display()),
                format!("create the file, or unset {CONFIG_ENV} to use the built-in defaults"),
            )
        })?;
        Self::from_text(&text, SourceFormat::from_path(path)).map_err(|mut d| {
            d.message = format!("{} (in {})", d.message, path.display());
            d
        })
    }

    /// Checks the config itself: ids not 0, paths absolute and normalized, defaults within
    /// ceilings, network settings parseable.
    pub fn validate(&self) -> Result<(), Diagnostic> {
        let semantic = |field: &str, message: String, hint: &str| {
            Err(config_diag(
                ErrorCode::PolicySemanticConflict,
                field,
                message,
                hint.into(),
            ))
        };
        if self.workload_host_uid == 0 || self.workload_host_gid == 0 {
            return semantic(
                "workloadHostUid",
                "the workload must not map to host uid or gid 0".into(),
                "use an unprivileged id, e.g. 65534 (nobody)",
            );
        }
        let mut paths: Vec<(String, &str)> = Vec::new();
        for (i, p) in self.allowed_mount_prefixes.iter().enumerate() {
            paths.push((format!("allowedMountPrefixes[{i}]"), p));
        }
        for (i, p) in self.host_rootfs_paths.iter().enumerate() {
            paths.push((format!("hostRootfsPaths[{i}]"), p));
        }
        paths.push(("runDir".into(), &self.run_dir));
        paths.push(("keyPath".into(), &self.key_path));
        paths.push((
            "firecracker.firecrackerBin".into(),
            &self.firecracker.firecracker_bin,
        ));
        paths.push(("firecracker.jailerBin".into(), &self.firecracker.jailer_bin));
        paths.push((
            "firecracker.chrootBaseDir".into(),
            &self.firecracker.chroot_base_dir,
        ));
        for (field, p) in paths {
            if !is_normalized_absolute(p) {
                return semantic(
                    &field,
                    format!("`{p}` is not an absolute, normalized path"),
                    "write an absolute path without `.`, `..`, `//` or a trailing slash",
                );
            }
        }
        if self.key_path == "/"
            || Path::new(&self.key_path)
                .parent()
                .is_none_or(|d| d == Path::new("/"))
        {
            return semantic(
                "keyPath",
                "the signing key must live in its own directory, not in /".into(),
                "e.g. /var/lib/safe-run/keys/report-signing.key",
            );
        }
        for (name, d, m) in [("cpus", self.default_limits.cpus, self.max_limits.cpus)] {
            if !(d.is_finite() && m.is_finite() && d > 0.0 && d <= m) {
                return semantic(
                    &format!("defaultLimits.{name}"),
                    format!("default {d} must be > 0 and at most the ceiling {m}"),
                    "lower defaultLimits or raise maxLimits",
                );
            }
        }
        let int_pairs = [
            (
                "memory",
                self.default_limits.memory.bytes(),
                self.max_limits.memory.bytes(),
            ),
            ("pids", self.default_limits.pids, self.max_limits.pids),
            (
                "openFiles",
                self.default_limits.open_files,
                self.max_limits.open_files,
            ),
            (
                "tmpfsSize",
                self.default_limits.tmpfs_size.bytes(),
                self.max_limits.tmpfs_size.bytes(),
            ),
            (
                "timeout",
                self.default_limits.timeout.as_millis(),
                self.max_limits.timeout.as_millis(),
            ),
            (
                "outputBytes",
                self.default_limits.output_bytes.bytes(),
                self.max_limits.output_bytes.bytes(),
            ),
        ];
        for (name, d, m) in int_pairs {
            if d == 0 || d > m {
                return semantic(
                    &format!("defaultLimits.{name}"),
                    format!("default {d} must be > 0 and at most the ceiling {m}"),
                    "lower defaultLimits or raise maxLimits",
                );
            }
        }
        match self.network.subnet_pool.parse::<ipnet::Ipv4Net>() {
            Ok(net) if net.prefix_len() <= 24 && net.network() == net.addr() => {}
            _ => {
                return semantic(
                    "network.subnetPool",
                    format!(
                        "`{}` is not an IPv4 network of /24 or larger",
                        self.network.subnet_pool
                    ),
                    "e.g. 10.213.0.0/16 (each run takes a /30 from it)",
                );
            }
        }
        if let Some(dns) = &self.network.upstream_dns
            && dns.parse::<std::net::SocketAddr>().is_err()
        {
            return semantic(
                "network.upstreamDns",
                format!("`{dns}` is not an ip:port address"),
                "e.g. 192.0.2.53:53, or leave it out to use /etc/resolv.conf",
            );
        }
        if !(1..=MAX_MAX_CONNECTIONS).contains(&self.network.max_connections) {
            return semantic(
                "network.maxConnections",
                format!(
                    "{} is not between 1 and {MAX_MAX_CONNECTIONS}",
                    self.network.max_connections
                ),
                "e.g. 4096 (the default): a run's sandbox holds at most this many flows",
            );
        }
        Ok(())
    }

    /// The directory holding the signing key (no policy may mount it).
    pub fn key_dir(&self) -> &Path {
        Path::new(&self.key_path).parent().unwrap_or(Path::new("/"))
    }
}

/// Whether `p` is absolute with no `.`/`..`/empty components and no trailing slash (except `/`).
pub(crate) fn is_normalized_absolute(p: &str) -> bool {
    if !p.starts_with('/') || p.contains('\0') {
        return false;
    }
    if p == "/" {
        return true;
    }
    !p.ends_with('/')
        && !p.contains("//")
        && Path::new(p)
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && !p.split('/').any(|s| s == ".")
}

fn config_diag(code: ErrorCode, field: &str, message: String, hint: String) -> Diagnostic {
    let path = if field.is_empty() || field == source::ROOT_PATH {
        "operatorConfig".to_owned()
    } else {
        format!("operatorConfig.{field}")
    };
    Diagnostic::new(code, path, message, hint)
}

/// Deep-merges `overlay` into `base`: mappings merge key by key, anything else replaces.
fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (_, Value::Null) => {}
        (slot, v) => *slot = v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        OperatorConfig::default().validate().unwrap();
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let c = OperatorConfig::from_text(
            "maxLimits: {cpus: 2}\nrunDir: /var/run/sr\n",
            SourceFormat::Yaml,
        )
        .unwrap();
        assert_eq!(c.max_limits.cpus, 2.0);
        assert_eq!(c.max_limits.pids, OperatorConfig::default().max_limits.pids);
        assert_eq!(c.run_dir, "/var/run/sr");
    }

    #[test]
    fn output_limit_defaults_and_ceiling() {
        let d = OperatorConfig::default();
        assert_eq!(d.default_limits.output_bytes, ByteSize::mib(64));
        assert_eq!(d.max_limits.output_bytes, ByteSize::mib(1024));
        // A partial file changes only what it names.
        let c = OperatorConfig::from_text("maxLimits: {outputBytes: 128Mi}\n", SourceFormat::Yaml)
            .unwrap();
        assert_eq!(c.max_limits.output_bytes, ByteSize::mib(128));
        assert_eq!(c.default_limits.output_bytes, ByteSize::mib(64));
        c.validate().unwrap();
        // A default above the ceiling, or zero, is refused.
        for text in [
            "defaultLimits: {outputBytes: 2Gi}\n",
            "defaultLimits: {outputBytes: 0}\n",
        ] {
            let c = OperatorConfig::from_text(text, SourceFormat::Yaml).unwrap();
            let e = c.validate().unwrap_err();
            assert_eq!(e.path, "operatorConfig.defaultLimits.outputBytes", "{text}");
        }
    }

    #[test]
    fn network_max_connections_defaults_and_bounds() {
        let c = OperatorConfig::from_text("network: {maxConnections: 64}\n", SourceFormat::Yaml)
            .unwrap();
        assert_eq!(c.network.max_connections, 64);
        assert_eq!(c.network.subnet_pool, "10.213.0.0/16");
        c.validate().unwrap();
        assert_eq!(
            OperatorConfig::default().network.max_connections,
            DEFAULT_MAX_CONNECTIONS
        );
        for bad in ["0", "1048577"] {
            let text = format!("network: {{maxConnections: {bad}}}\n");
            let c = OperatorConfig::from_text(&text, SourceFormat::Yaml).unwrap();
            let d = c.validate().unwrap_err();
            assert_eq!(d.code, ErrorCode::PolicySemanticConflict);
            assert!(d.path.contains("maxConnections"), "{d:?}");
        }
    }

    #[test]
    fn rejects_unknown_fields_duplicates_and_root_uid() {
        assert!(OperatorConfig::from_text("bogus: 1\n", SourceFormat::Yaml).is_err());
        assert!(OperatorConfig::from_text("runDir: /a\nrunDir: /b\n", SourceFormat::Yaml).is_err());
        let c = OperatorConfig::from_text("workloadHostUid: 0\n", SourceFormat::Yaml).unwrap();
        assert_eq!(
            c.validate().unwrap_err().code,
            ErrorCode::PolicySemanticConflict
        );
        let c = OperatorConfig::from_text("allowedMountPrefixes: [relative]\n", SourceFormat::Yaml)
            .unwrap();
        assert!(c.validate().is_err());
    }

    #[test]
    fn load_follows_env_then_default_file_then_builtins() {
        let dir = std::env::temp_dir().join(format!("sr-policy-operator-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let explicit = dir.join("explicit.json");
        std::fs::write(&explicit, r#"{"runDir": "/srv/explicit"}"#).unwrap();
        let default_file = dir.join("config.yaml");
        std::fs::write(&default_file, "runDir: /srv/default\n").unwrap();
        let missing = dir.join("missing.yaml");

        let env_with = |vars: Vec<(&'static str, String)>| {
            move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.into())
        };
        let c = OperatorConfig::load_with(
            &env_with(vec![(CONFIG_ENV, explicit.display().to_string())]),
            &default_file,
        )
        .unwrap();
        assert_eq!(c.run_dir, "/srv/explicit");
        let c = OperatorConfig::load_with(&env_with(vec![]), &default_file).unwrap();
        assert_eq!(c.run_dir, "/srv/default");
        let c = OperatorConfig::load_with(&env_with(vec![]), &missing).unwrap();
        assert_eq!(c, OperatorConfig::default());
        let c = OperatorConfig::load_with(
            &env_with(vec![(WORKDIR_BASE_ENV, "/var/sr".into())]),
            &default_file,
        )
        .unwrap();
        assert_eq!(c.run_dir, "/var/sr");
        // A named file that does not exist is an error, not a silent fallback.
        let e = OperatorConfig::load_with(
            &env_with(vec![(CONFIG_ENV, missing.display().to_string())]),
            &default_file,
        )
        .unwrap_err();
        assert!(e.message.contains("cannot read operator config"), "{e}");
        // The override is validated too.
        let e = OperatorConfig::load_with(
            &env_with(vec![(WORKDIR_BASE_ENV, "relative".into())]),
            &missing,
        )
        .unwrap_err();
        assert_eq!(e.path, "operatorConfig.runDir");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn normalized_paths() {
        for ok in ["/", "/a", "/a/b"] {
            assert!(is_normalized_absolute(ok), "{ok}");
        }
        for bad in ["", "a", "/a/", "/a//b", "/a/../b", "/a/./b", "/a\0b"] {
            assert!(!is_normalized_absolute(bad), "{bad}");
        }
    }
}
