//! CompileBundle: the deterministic plan a policy compiles to, and the runner executes.
//!
//! Everything here is data. Collections are `Vec`s in a defined order (sorted where order carries
//! no meaning) or `BTreeMap`s, so that serializing a bundle gives the same bytes on every run and
//! machine. Nothing here holds a time, a random value or a host-specific path other than those
//! the policy and operator config name. Per-run names carry the literal placeholder `<runId>`,
//! which the runner substitutes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Placeholder substituted by the runner with the run id.
pub const RUN_ID_PLACEHOLDER: &str = "<runId>";

/// The boundary a bundle runs behind, with the one plan that boundary needs.
// One bundle per run: the variants' size difference costs nothing worth a Box in every match.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum BackendPlan {
    /// The process sandbox.
    Sandbox(SandboxPlan),
    /// A Firecracker microVM.
    Firecracker(FirecrackerPlan),
    /// A QEMU microVM (`backend: microvm` on `microvm.vmm: qemu`).
    Qemu(QemuPlan),
}

impl BackendPlan {
    /// The backend's name, as policies and reports spell it.
    pub fn name(&self) -> &'static str {
        match self {
            BackendPlan::Sandbox(_) => "sandbox",
            BackendPlan::Firecracker(_) => "firecracker",
            BackendPlan::Qemu(_) => "qemu",
        }
    }

    /// The process-sandbox plan, for that backend.
    pub fn sandbox(&self) -> Option<&SandboxPlan> {
        match self {
            BackendPlan::Sandbox(p) => Some(p),
            BackendPlan::Firecracker(_) | BackendPlan::Qemu(_) => None,
        }
    }

    /// The Firecracker plan, for that backend.
    pub fn firecracker(&self) -> Option<&FirecrackerPlan> {
        match self {
            BackendPlan::Firecracker(p) => Some(p),
            BackendPlan::Sandbox(_) | BackendPlan::Qemu(_) => None,
        }
    }

    /// What confines each exec: the process sandbox's plan, or the one the guest agent
    /// applies inside a microVM.
    pub fn exec_confinement(&self) -> Option<&SandboxPlan> {
        match self {
            BackendPlan::Sandbox(p) => Some(p),
            BackendPlan::Qemu(q) => Some(&q.guest),
            BackendPlan::Firecracker(f) => Some(&f.guest),
        }
    }

    /// The QEMU plan, for that backend.
    pub fn qemu(&self) -> Option<&QemuPlan> {
        match self {
            BackendPlan::Qemu(p) => Some(p),
            BackendPlan::Sandbox(_) | BackendPlan::Firecracker(_) => None,
        }
    }
}

/// The compiled plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompileBundle {
    /// Bundle format version (2: the backend is one typed plan).
    pub bundle_version: u32,
    /// `sha256:<hex>` of the RFC 8785 canonical JSON of the policy as parsed (as written,
    /// without `policyOverrides`).
    pub policy_digest: String,
    /// The policy's name.
    pub policy_name: String,
    /// The policy fields the caller replaced for this run; left out when none was.
    #[serde(default, skip_serializing_if = "PolicyOverrides::is_empty")]
    pub policy_overrides: PolicyOverrides,
    /// The isolation boundary and its plan (`kind`: `sandbox`, `firecracker` or `qemu`).
    pub backend: BackendPlan,
    /// What to execute.
    pub process: ProcessPlan,
    /// cgroup limits.
    pub cgroup_plan: CgroupPlan,
    /// `null` for `network.mode: none`.
    pub network_plan: Option<NetworkPlan>,
    /// Which events to record, signing.
    pub evidence_plan: EvidencePlan,
}

/// Policy fields a run's caller replaced (`safe-run run --backend microvm`), keyed by their
/// policy path, each value spelled as a policy spells it. The plan is compiled from the policy
/// with these applied, while `policyDigest` names the policy as written: together they say
/// exactly what was compiled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyOverrides {
    /// `runtime.backend`: `sandbox`, `microvm` or `firecracker`.
    #[serde(
        rename = "runtime.backend",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub runtime_backend: Option<String>,
}

impl PolicyOverrides {
    /// Whether nothing was overridden.
    pub fn is_empty(&self) -> bool {
        self.runtime_backend.is_none()
    }
}

/// The workload process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessPlan {
    /// Absolute path inside the sandbox.
    pub command: String,
    /// Arguments without argv[0].
    pub args: Vec<String>,
    /// The whole environment (sorted).
    pub env: BTreeMap<String, String>,
    /// Working directory inside the sandbox.
    pub cwd: String,
    /// Identity inside the sandbox.
    pub uid: u32,
    /// Identity inside the sandbox.
    pub gid: u32,
    /// Wall-clock limit in milliseconds.
    pub timeout_ms: u64,
    /// The limit on each output stream.
    pub output: OutputPlan,
}

/// The limit on each of the workload's output streams (stdout, stderr), from
/// `runtime.output` or the operator's `defaultLimits.outputBytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputPlan {
    /// Bytes kept per stream, in the run directory and on the terminal.
    pub max_bytes: u64,
    /// What happens past `max_bytes`.
    pub on_limit: OutputAction,
}

/// What the runner does when a stream passes its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputAction {
    /// Keep the first `max_bytes`, read and discard the rest; the run goes on.
    Truncate,
    /// Keep the first `max_bytes`, then kill the whole process tree.
    Kill,
}

impl OutputAction {
    /// `truncate` or `kill`, as in the policy.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputAction::Truncate => "truncate",
            OutputAction::Kill => "kill",
        }
    }
}

/// The process-sandbox plan: namespaces, identity mapping, mounts, Landlock, seccomp, rlimits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxPlan {
    /// Namespaces to create, sorted: cgroup, ipc, mount, net, pid, user, uts.
    pub namespaces: Vec<String>,
    /// Host uid the workload's uid maps to.
    pub host_uid: u32,
    /// Host gid the workload's gid maps to.
    pub host_gid: u32,
    /// Hostname inside the sandbox.
    pub hostname: String,
    /// Mounts in the order they are made.
    pub mounts: Vec<MountStep>,
    /// Landlock ruleset mirroring the mount plan.
    pub landlock: LandlockPlan,
    /// Seccomp filter.
    pub seccomp: SeccompPlan,
    /// How read-only host directories are given to the sandbox, which decides whether file
    /// locks taken inside reach the host.
    #[serde(default)]
    pub file_locks: FileLocks,
    /// rlimits applied before exec, sorted by resource name.
    pub rlimits: BTreeMap<String, u64>,
    /// Set no_new_privs (always true).
    pub no_new_privs: bool,
    /// Capabilities kept (always empty).
    pub capabilities: Vec<String>,
}

/// Whether file locks taken inside the sandbox on read-only host directories are private.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FileLocks {
    /// Read-only host directories are private read-only overlays: locks stay on the overlay's
    /// inodes, unseen by the host and by other runs.
    #[default]
    Isolated,
    /// Read-only host directories are bind mounts: the host's inodes, and their locks, are
    /// shared.
    Shared,
}

/// One mount made when building the sandbox root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum MountStep {
    /// The new root: a tmpfs, read-only after setup (host rootfs), or a bind of a rootfs dir.
    Root {
        /// `host` or the canonical rootfs directory.
        source: String,
    },
    /// A bind mount of a host path.
    #[serde(rename_all = "camelCase")]
    Bind {
        /// Host path (canonical, verified with O_PATH|O_NOFOLLOW at run time).
        source: String,
        /// Path inside the sandbox.
        target: String,
        /// Read-only.
        read_only: bool,
        /// Where it came from: `rootfs` (host system dir) or `policy` (`mounts[i]`).
        origin: String,
    },
    /// A symlink recreated in the new root (e.g. /bin -> usr/bin on merged-/usr hosts).
    Symlink {
        /// Link path inside the sandbox.
        target: String,
        /// What it points to.
        link: String,
    },
    /// A size-limited tmpfs.
    #[serde(rename_all = "camelCase")]
    Tmpfs {
        /// Path inside the sandbox.
        target: String,
        /// Size limit in bytes.
        size_bytes: u64,
        /// Permission bits as a number (`1023` in JSON for mode `0o1777`).
        mode: u32,
    },
    /// A fresh procfs for the sandbox's pid namespace.
    Proc {
        /// Always /proc.
        target: String,
    },
    /// A minimal /dev with only the listed device nodes.
    Dev {
        /// Always /dev.
        target: String,
        /// Device names under /dev, sorted.
        devices: Vec<String>,
    },
}

/// Landlock: the filesystem access allowed beneath each path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LandlockPlan {
    /// Fail the run when the kernel lacks Landlock (else record the absence).
    pub required: bool,
    /// Minimum ABI the rules need.
    pub min_abi: u32,
    /// Rules sorted by path.
    pub rules: Vec<LandlockRule>,
}

/// One Landlock path rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LandlockRule {
    /// Path inside the sandbox.
    pub path: String,
    /// `ro` (read + execute) or `rw` (read, write, create, remove, execute).
    pub access: String,
}

/// Seccomp: a deny list enforced with a BPF filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeccompPlan {
    /// Stable id of the profile (`sr-default-v2`).
    pub profile_id: String,
    /// What a denied call returns: `errno:EPERM`.
    pub deny_action: String,
    /// Denied syscalls, sorted.
    pub denied_syscalls: Vec<String>,
    /// clone/clone3 flags refused (namespace creation), sorted.
    pub denied_clone_flags: Vec<String>,
    /// Syscalls that fail with ENOSYS instead of `deny_action`, sorted: `clone3`, whose flags a
    /// filter cannot read, so libc falls back to `clone`, whose flags it can.
    #[serde(default)]
    pub enosys_syscalls: Vec<String>,
    /// Socket address families `socket`/`socketpair` may use (`AF_UNIX`...), sorted; any other
    /// family fails with `EAFNOSUPPORT`. Empty: no socket at all.
    #[serde(default)]
    pub allowed_socket_families: Vec<String>,
    /// Netlink protocols (`NETLINK_ROUTE`) an `AF_NETLINK` socket may use, sorted; the others
    /// fail with `EAFNOSUPPORT`. Only meaningful when `AF_NETLINK` is allowed.
    #[serde(default)]
    pub allowed_netlink_protocols: Vec<String>,
    /// Socket types (`SOCK_STREAM`...) an `AF_INET`/`AF_INET6` socket may have, sorted; the
    /// others fail with `EPROTONOSUPPORT`.
    #[serde(default)]
    pub allowed_inet_socket_types: Vec<String>,
    /// Protocols (`IPPROTO_TCP`...; `IPPROTO_IP` is 0, the default) an `AF_INET`/`AF_INET6`
    /// socket may name, sorted; the others fail with `EPROTONOSUPPORT`.
    #[serde(default)]
    pub allowed_ip_protocols: Vec<String>,
}

/// cgroup limits (v2 names; the runner maps them to v1 files where needed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CgroupPlan {
    /// Name of the run's cgroup under the safe-run parent: `safe-run-<runId>`.
    pub name: String,
    /// memory.max in bytes.
    pub memory_max_bytes: u64,
    /// pids.max.
    pub pids_max: u64,
    /// cpu.max quota in microseconds per `cpu_period_us`.
    pub cpu_quota_us: u64,
    /// cpu.max period in microseconds.
    pub cpu_period_us: u64,
}

/// The network plan for `mode: allowlist`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPlan {
    /// `allowlist`.
    pub mode: String,
    /// Host-side interface name template, e.g. `sr<runId>h` (sandbox veth) or `srt<runId>` (tap).
    pub host_interface: String,
    /// Sandbox-side interface name template.
    pub guest_interface: String,
    /// nftables objects to create.
    pub nft: NftPlan,
    /// DNS: which names the runner's resolver answers.
    pub dns: DnsPlan,
}

/// The per-run nftables table.
///
/// Every rule matches only traffic that enters the host through this run's `host_interface`
/// (the renderer adds `iifname "<host_interface>"` to each rule), so the base chains can keep
/// `policy accept` without touching the host's other traffic. Chains: `forward` (filter; the
/// egress allow rules and the final `default-drop`), `input` (filter; `dns` to the runner's
/// resolver, then `host-drop`), `postrouting` (nat; `masquerade`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NftPlan {
    /// Address family (`inet`).
    pub family: String,
    /// Table name template, e.g. `safe_run_<runId>`.
    pub table: String,
    /// Base chains.
    pub chains: Vec<NftChain>,
    /// Named sets, one per host rule (filled at run time with resolved addresses).
    pub sets: Vec<NftSet>,
    /// Rules in evaluation order: allow rules (one per egress rule), then the default drop.
    pub rules: Vec<NftRule>,
}

/// A base chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NftChain {
    /// Chain name.
    pub name: String,
    /// `filter` / `nat`.
    pub chain_type: String,
    /// `forward`, `postrouting`, ...
    pub hook: String,
    /// Priority.
    pub priority: i32,
    /// Chain policy (`accept`: rules only match this run's interface).
    pub policy: String,
}

/// A named address set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NftSet {
    /// Set name.
    pub name: String,
    /// `ipv4_addr` or `ipv6_addr`.
    pub set_type: String,
    /// Host name that fills it.
    pub host: String,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NftRule {
    /// Stable id used in comments, counters and audit: `egress-<i>`, `dns`, `default-drop`.
    pub id: String,
    /// Chain.
    pub chain: String,
    /// Index of the egress rule in the policy, when it comes from one.
    pub egress_index: Option<usize>,
    /// Match: destination set name or CIDR.
    pub daddr: Option<String>,
    /// Match: l4 protocol.
    pub protocol: Option<String>,
    /// Match: destination ports, sorted.
    pub dports: Vec<u16>,
    /// `accept`, `drop` or `masquerade`.
    pub verdict: String,
    /// Always true: every rule counts.
    pub counter: bool,
}

/// DNS plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DnsPlan {
    /// Names the resolver answers, sorted and deduplicated.
    pub allowed_names: Vec<String>,
}

/// The Firecracker plan: the VM's configuration in Firecracker's own shape, and the jailer's
/// command line. The runner drives Firecracker's API from `vm_config` (one PUT per section,
/// then `InstanceStart`), so what the bundle shows is what the VMM is asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FirecrackerPlan {
    /// The VM's configuration in the shape of Firecracker's `--config-file` (boot-source,
    /// drives, machine-config, vsock, network-interfaces); paths are inside the jail.
    pub vm_config: serde_json::Value,
    /// The `jailer` binary.
    #[serde(default)]
    pub jailer_bin: String,
    /// The jailer's own arguments (with `<runId>` placeholders): `--id`, `--exec-file`,
    /// `--uid`, `--gid`, `--chroot-base-dir` (under the run directory). The runner adds the
    /// cgroup arguments for the host's cgroup version (from `cgroupPlan`), then `--` and
    /// Firecracker's `--api-sock /<apiSocket>`.
    pub jailer_args: Vec<String>,
    /// Firecracker's API socket, relative to the jail's root.
    pub api_socket: String,
    /// The vsock port the guest agent listens on.
    #[serde(default)]
    pub agent_port: u32,
    /// Artifacts to hash and (when pinned) check before boot; each is placed in the jail's
    /// root as `jailPath`.
    pub artifacts: Vec<ArtifactCheck>,
    /// What the guest agent enforces on every exec inside the VM (as `QemuPlan::guest`).
    pub guest: SandboxPlan,
}

/// The QEMU plan: QEMU's whole command line and vhost-device-vsock's, as the runner starts
/// them. Both run in the run's `vm/` directory, and their own files (sockets, console log) are
/// named relative to it. The acceleration is not in it: the runner probes once whether
/// KVM runs a normal guest and adds `-accel kvm` or `-accel tcg`, and the report says which.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QemuPlan {
    /// `qemu-system-x86_64`.
    pub qemu_bin: String,
    /// Its arguments, in order.
    pub args: Vec<String>,
    /// `vhost-device-vsock`.
    pub vhost_vsock_bin: String,
    /// Its arguments, in order.
    pub vhost_vsock_args: Vec<String>,
    /// The hybrid-vsock socket the runner reaches the guest agent through (in `vm/`).
    pub vsock_socket: String,
    /// The guest's vsock context id.
    pub guest_cid: u32,
    /// The vsock port the guest agent listens on.
    pub agent_port: u32,
    /// Where the guest's serial console is written, in `vm/` (its tail goes into a boot
    /// failure's hint).
    pub console_log: String,
    /// Artifacts to hash and (when pinned) check before boot.
    pub artifacts: Vec<ArtifactCheck>,
    /// What the guest agent enforces on every exec inside the VM (defence in depth behind the
    /// guest kernel): the process sandbox's plan as the guest sees it. `namespaces` is empty
    /// (the VM is the boundary), `hostUid`/`hostGid` are the guest identity execs run as, and
    /// `mounts` are what the agent mounts itself (`/tmp`, `/proc`, `/dev`, and each policy
    /// mount as a `bind` whose source is `virtio-blk:<serial>`, the drive holding its image).
    pub guest: SandboxPlan,
    /// The policy's mounts, each an ext4 image of its source the runner builds at start and
    /// passes as the descriptor the plan names (`-drive file=/proc/self/fd/N`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<VmMount>,
}

/// A policy mount on a QEMU microVM: the host directory, copied into an ext4 image on its own
/// virtio-blk drive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmMount {
    /// The canonical host directory (opened with `O_NOFOLLOW` and checked again at run time).
    pub source: String,
    /// Where the guest agent mounts it.
    pub target: String,
    /// Read-only (the drive too); else the guest's changes are copied back at the end.
    pub read_only: bool,
    /// The drive's serial, by which the guest agent finds its block device.
    pub serial: String,
    /// The descriptor QEMU reads the image from (`/proc/self/fd/N`).
    pub jail_path: String,
    /// Free space a writable image gets beyond its content (the guest's disk for it).
    pub headroom_bytes: u64,
}

/// An artifact and its expected digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactCheck {
    /// `kernel`, `initramfs` or `rootfs`.
    pub role: String,
    /// Host path.
    pub path: String,
    /// Expected `sha256:<hex>`, when pinned.
    pub expected_sha256: Option<String>,
    /// Where the VMM finds the file: Firecracker's path inside its jail (the one `vm_config`
    /// names); QEMU's `/proc/self/fd/N`, the descriptor the runner opened and passed.
    #[serde(default)]
    pub jail_path: String,
}

/// Evidence plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvidencePlan {
    /// Event types to record, sorted.
    pub events: Vec<String>,
    /// Sign the report.
    pub sign: bool,
    /// Resource sampling interval in milliseconds.
    pub sample_interval_ms: u64,
}

/// The bytes `compile --dry-run` prints: pretty JSON, keys sorted, trailing newline.
pub fn to_canonical_json(bundle: &CompileBundle) -> String {
    let value = serde_json::to_value(bundle)
        .map(sort_keys)
        .unwrap_or(serde_json::Value::Null);
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
    text.push('\n');
    text
}

/// Rebuilds every object with its keys in sorted order (`serde_json` here preserves insertion
/// order, so sorting must be explicit).
/// `value` with every object's keys sorted (what a `BTreeMap` gives), recursively.
pub fn sort_keys(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let sorted: BTreeMap<String, serde_json::Value> =
                map.into_iter().map(|(k, v)| (k, sort_keys(v))).collect();
            serde_json::Value::Object(sorted.into_iter().collect())
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sort_keys).collect())
        }
        other => other,
    }
}
