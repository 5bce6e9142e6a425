//! The compiler: a validated PolicySpec and the operator config in, a deterministic
//! [`CompileBundle`] out.
//!
//! [`compile`] is a pure function: it reads neither the clock, nor randomness, nor the host
//! (paths were resolved by validation, which is where the filesystem is consulted). Defaults
//! come from the operator config's `defaultLimits`. Everything per-run carries the `<runId>`
//! placeholder. [`to_canonical_json`] gives the exact bytes `safe-run compile --dry-run`
//! prints: pretty JSON with keys sorted at every level and a trailing newline, so the output is
//! byte-identical across runs and machines.
//!
//! Decisions a runner must know (also in docs/policy.md):
//!
//! * Host rootfs: one read-only `Bind` per `hostRootfsPaths` entry, even on merged-/usr hosts
//!   where `/bin`, `/lib`, `/sbin` are symlinks. The compiler does not look at the host; the
//!   runner turns a `Bind` whose source is a symlink into a `Symlink` step (same link text)
//!   and skips one whose source does not exist (e.g. `/lib32`).
//! * Policy mounts are ordered by target, so a parent is always mounted before its children.
//! * Overrides (`safe-run run --backend`): the plan is compiled from the policy in force (the
//!   override applied by validation); `policyDigest` stays the digest of the policy as written
//!   and `policyOverrides` records what was replaced, so a bundle says exactly what it came
//!   from.
//! * No `RLIMIT_NPROC`: it counts processes per *host* uid, and the workload uid is shared by
//!   concurrent runs, so one run could starve another. The cgroup `pids.max` limits the run's
//!   own tree instead.

#![forbid(unsafe_code)]

pub use sr_bundle as bundle;
pub use sr_bundle::{sort_keys, to_canonical_json};
pub mod microvm;
pub mod seccomp;

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use sr_common::{Diagnostic, ErrorCode, events};
use sr_policy::model::{Backend, NetworkMode, OnLimit, PolicySpec, Protocol};
use sr_policy::operator::Vmm;
use sr_policy::overrides::{BACKEND_PATH, Override};
use sr_policy::{OperatorConfig, PolicyOverrides, ValidatedPolicy};

pub use bundle::CompileBundle;
use bundle::{
    BackendPlan, CgroupPlan, DnsPlan, EvidencePlan, FileLocks, FirecrackerPlan, LandlockPlan,
    LandlockRule, MountStep, NetworkPlan, NftChain, NftPlan, NftRule, NftSet, OutputAction,
    OutputPlan, ProcessPlan, RUN_ID_PLACEHOLDER, SandboxPlan, SeccompPlan,
};

/// Bundle format version.
pub const BUNDLE_VERSION: u32 = 2;
/// Default identity inside the sandbox.
pub const DEFAULT_ID: u32 = 1000;
/// cgroup `cpu.max` period, in microseconds (the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;
/// Resource sampling interval, in milliseconds.
pub const SAMPLE_INTERVAL_MS: u64 = 500;
/// Hostname inside the sandbox.
pub const HOSTNAME: &str = "safe-run";
/// Device nodes in the sandbox's /dev, sorted.
pub const DEVICES: [&str; 6] = ["full", "null", "random", "tty", "urandom", "zero"];
/// Namespaces of the sandbox backend, sorted.
pub const NAMESPACES: [&str; 7] = ["cgroup", "ipc", "mount", "net", "pid", "user", "uts"];
/// Landlock ABI the rules need: 3, the first that can deny `truncate` (before it, a file on a
/// read-only path could still be truncated).
pub const LANDLOCK_MIN_ABI: u32 = 3;
/// Most vCPUs Firecracker accepts.
pub const FIRECRACKER_MAX_VCPUS: u64 = 32;
/// Kernel command line of the microVM (the runner appends the network `ip=` argument).
pub const FIRECRACKER_BOOT_ARGS: &str = "console=ttyS0 reboot=k panic=1 pci=off ro";
/// vsock context id of the guest.
pub const GUEST_CID: u32 = 3;

/// Why a validated policy could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// A value does not fit the backend's template.
    #[error("{path}: {message}")]
    TemplateMapping {
        /// Policy path.
        path: String,
        /// Cause.
        message: String,
        /// What to do.
        hint: String,
    },
    /// The network plan could not be built.
    #[error("{path}: {message}")]
    NetworkPlan {
        /// Policy path.
        path: String,
        /// Cause.
        message: String,
        /// What to do.
        hint: String,
    },
}

impl CompileError {
    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            CompileError::TemplateMapping { .. } => ErrorCode::CompileTemplateMapping,
            CompileError::NetworkPlan { .. } => ErrorCode::CompileNetworkPlan,
        }
    }
}

impl CompileError {
    /// The same error, saying that the backend whose template refused the policy was the
    /// caller's override (`--backend`), not the policy's own choice.
    fn under_backend_override(self, chosen: Override<Backend>) -> CompileError {
        match self {
            CompileError::TemplateMapping {
                path,
                message,
                hint,
            } => CompileError::TemplateMapping {
                path,
                message: format!(
                    "{message} ({BACKEND_PATH} is {} from `{} {}`)",
                    chosen.value.name(),
                    chosen.origin,
                    chosen.value.name()
                ),
                hint: format!(
                    "{hint}; or run without `{} {}`",
                    chosen.origin,
                    chosen.value.name()
                ),
            },
            other @ CompileError::NetworkPlan { .. } => other,
        }
    }
}

/// The bundle's record of the overrides the plan was compiled with.
fn bundle_overrides(overrides: &PolicyOverrides) -> bundle::PolicyOverrides {
    bundle::PolicyOverrides {
        runtime_backend: overrides.backend.map(|b| b.value.name().to_owned()),
    }
}

impl From<CompileError> for Diagnostic {
    fn from(e: CompileError) -> Diagnostic {
        let code = e.code();
        match e {
            CompileError::TemplateMapping {
                path,
                message,
                hint,
            }
            | CompileError::NetworkPlan {
                path,
                message,
                hint,
            } => Diagnostic::new(code, path, message, hint),
        }
    }
}

/// `sha256:<hex>` of the RFC 8785 (JCS) canonical form of `value`.
pub fn policy_digest(value: &serde_json::Value) -> String {
    // JCS of a serde_json::Value cannot fail: a Value holds no non-finite number and only
    // string keys. Fall back to the plain serialization rather than panic all the same.
    let bytes =
        serde_json_canonicalizer::to_vec(value).unwrap_or_else(|_| value.to_string().into_bytes());
    format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
}

/// Compiles a validated policy.
pub fn compile(
    policy: &ValidatedPolicy,
    config: &OperatorConfig,
) -> Result<CompileBundle, Diagnostic> {
    compile_inner(policy, config).map_err(Diagnostic::from)
}

fn compile_inner(
    policy: &ValidatedPolicy,
    config: &OperatorConfig,
) -> Result<CompileBundle, CompileError> {
    let spec = &policy.spec;
    let limits = Effective::of(spec, config);
    let process = process_plan(spec, config);
    let backend = spec.backend();
    let vm = backend.is_vm();
    let network_plan = match spec.network_mode() {
        NetworkMode::None => None,
        NetworkMode::Allowlist => Some(network_plan(spec, backend)?),
    };
    let backend = match backend {
        Backend::Sandbox => Ok(BackendPlan::Sandbox(sandbox_plan(policy, config, &limits))),
        Backend::Firecracker => firecracker_plan(
            spec,
            config,
            &limits,
            network_plan.as_ref(),
            guest_plan(policy, config, &limits, &process),
        )
        .map(BackendPlan::Firecracker),
        Backend::Microvm => match config.microvm.vmm {
            Vmm::Qemu => microvm::qemu_plan(
                spec,
                config,
                &limits,
                network_plan.as_ref(),
                guest_plan(policy, config, &limits, &process),
            )
            .map(BackendPlan::Qemu),
            Vmm::Firecracker => firecracker_plan(
                spec,
                config,
                &limits,
                network_plan.as_ref(),
                guest_plan(policy, config, &limits, &process),
            )
            .map(BackendPlan::Firecracker),
        },
    }
    .map_err(|e| match policy.overrides.backend {
        Some(chosen) => e.under_backend_override(chosen),
        None => e,
    })?;
    Ok(CompileBundle {
        bundle_version: BUNDLE_VERSION,
        policy_digest: policy_digest(&policy.canonical),
        policy_name: spec.name.clone(),
        policy_overrides: bundle_overrides(&policy.overrides),
        backend,
        process,
        cgroup_plan: CgroupPlan {
            name: format!("safe-run-{RUN_ID_PLACEHOLDER}"),
            // A microVM's host cgroup bounds the VMM: the guest's memory plus what the VMM
            // needs around it, and the VMM's own threads (the guest's processes are the guest
            // kernel's to limit).
            memory_max_bytes: if vm {
                limits.memory + microvm::VMM_MEMORY_OVERHEAD
            } else {
                limits.memory
            },
            pids_max: if vm {
                microvm::VMM_MAX_TASKS
            } else {
                limits.pids
            },
            cpu_quota_us: limits.cpu_quota_us,
            cpu_period_us: CPU_PERIOD_US,
        },
        network_plan,
        evidence_plan: evidence_plan(spec),
    })
}

/// The limits in force: the policy's, else the operator's defaults.
struct Effective {
    cpus: f64,
    cpu_quota_us: u64,
    memory: u64,
    pids: u64,
    open_files: u64,
    tmpfs: u64,
}

impl Effective {
    fn of(spec: &PolicySpec, config: &OperatorConfig) -> Effective {
        let d = &config.default_limits;
        let r = spec.resources.as_ref();
        let positive = |v: Option<i64>, default: u64| {
            v.and_then(|v| u64::try_from(v).ok())
                .filter(|v| *v > 0)
                .unwrap_or(default)
        };
        let cpus = r
            .and_then(|r| r.cpus)
            .filter(|c| c.is_finite() && *c > 0.0)
            .unwrap_or(d.cpus);
        // Quota in whole microseconds, at least 1000 (the kernel's minimum).
        let quota = (cpus * CPU_PERIOD_US as f64).round().max(1000.0) as u64;
        Effective {
            cpus,
            cpu_quota_us: quota,
            memory: r
                .and_then(|r| r.memory)
                .map_or(d.memory.bytes(), |m| m.bytes()),
            pids: positive(r.and_then(|r| r.pids), d.pids),
            open_files: positive(r.and_then(|r| r.open_files), d.open_files),
            tmpfs: r
                .and_then(|r| r.tmpfs_size)
                .map_or(d.tmpfs_size.bytes(), |m| m.bytes()),
        }
    }
}

fn process_plan(spec: &PolicySpec, config: &OperatorConfig) -> ProcessPlan {
    let rt = &spec.runtime;
    ProcessPlan {
        command: rt.command.clone(),
        args: rt.args.clone(),
        env: rt.env.clone(),
        cwd: rt.cwd.clone().unwrap_or_else(|| "/".to_owned()),
        uid: rt.user.as_ref().map_or(DEFAULT_ID, |u| u.uid),
        gid: rt.user.as_ref().map_or(DEFAULT_ID, |u| u.gid),
        timeout_ms: rt
            .timeout
            .unwrap_or(config.default_limits.timeout)
            .as_millis(),
        output: output_plan(rt.output.as_ref(), config),
    }
}

/// The output limit in force: the policy's `runtime.output`, field by field, else the
/// operator's default (validation has already held the policy's value to the ceiling).
fn output_plan(output: Option<&sr_policy::model::Output>, config: &OperatorConfig) -> OutputPlan {
    OutputPlan {
        max_bytes: output
            .and_then(|o| o.max_bytes)
            .filter(|b| b.bytes() > 0)
            .unwrap_or(config.default_limits.output_bytes)
            .bytes(),
        on_limit: match output.map(|o| o.on_limit).unwrap_or_default() {
            OnLimit::Truncate => OutputAction::Truncate,
            OnLimit::Kill => OutputAction::Kill,
        },
    }
}

fn sandbox_plan(
    policy: &ValidatedPolicy,
    config: &OperatorConfig,
    limits: &Effective,
) -> SandboxPlan {
    let spec = &policy.spec;
    let mut mounts = Vec::new();
    let mut landlock = BTreeMap::new();
    match &policy.rootfs_dir {
        Some(dir) => {
            mounts.push(MountStep::Root {
                source: dir.display().to_string(),
            });
            landlock.insert("/".to_owned(), "ro");
        }
        None => {
            mounts.push(MountStep::Root {
                source: "host".to_owned(),
            });
            for path in &config.host_rootfs_paths {
                mounts.push(MountStep::Bind {
                    source: path.clone(),
                    target: path.clone(),
                    read_only: true,
                    origin: "rootfs".to_owned(),
                });
                landlock.insert(path.clone(), "ro");
            }
        }
    }
    // Policy mounts, parents before children (a path sorts before its extensions).
    let mut policy_mounts: Vec<(&str, String, bool)> = spec
        .mounts
        .iter()
        .zip(&policy.mount_sources)
        .map(|(m, src)| (m.target.as_str(), src.display().to_string(), m.read_only))
        .collect();
    policy_mounts.sort();
    for (target, source, read_only) in policy_mounts {
        landlock.insert(target.to_owned(), if read_only { "ro" } else { "rw" });
        mounts.push(MountStep::Bind {
            source,
            target: target.to_owned(),
            read_only,
            origin: "policy".to_owned(),
        });
    }
    mounts.push(MountStep::Tmpfs {
        target: "/tmp".to_owned(),
        size_bytes: limits.tmpfs,
        mode: 0o1777,
    });
    mounts.push(MountStep::Proc {
        target: "/proc".to_owned(),
    });
    mounts.push(MountStep::Dev {
        target: "/dev".to_owned(),
        devices: DEVICES.iter().map(|d| (*d).to_owned()).collect(),
    });
    landlock.insert("/tmp".to_owned(), "rw");
    landlock.insert("/proc".to_owned(), "ro");
    landlock.insert("/dev".to_owned(), "rw");

    let mut rlimits = BTreeMap::new();
    rlimits.insert("RLIMIT_CORE".to_owned(), 0);
    rlimits.insert("RLIMIT_NOFILE".to_owned(), limits.open_files);

    SandboxPlan {
        namespaces: NAMESPACES.iter().map(|n| (*n).to_owned()).collect(),
        host_uid: config.workload_host_uid,
        host_gid: config.workload_host_gid,
        hostname: HOSTNAME.to_owned(),
        mounts,
        landlock: LandlockPlan {
            required: config.require_landlock,
            min_abi: LANDLOCK_MIN_ABI,
            rules: landlock
                .into_iter()
                .map(|(path, access)| LandlockRule {
                    path,
                    access: access.to_owned(),
                })
                .collect(),
        },
        seccomp: SeccompPlan {
            profile_id: seccomp::PROFILE_ID.to_owned(),
            deny_action: seccomp::DENY_ACTION.to_owned(),
            denied_syscalls: seccomp::denied_syscalls(),
            denied_clone_flags: owned(&seccomp::DENIED_CLONE_FLAGS),
            enosys_syscalls: owned(&seccomp::ENOSYS_SYSCALLS),
            allowed_socket_families: owned(&seccomp::ALLOWED_SOCKET_FAMILIES),
            allowed_netlink_protocols: owned(&seccomp::ALLOWED_NETLINK_PROTOCOLS),
            allowed_inet_socket_types: owned(&seccomp::ALLOWED_INET_SOCKET_TYPES),
            allowed_ip_protocols: owned(&seccomp::ALLOWED_IP_PROTOCOLS),
        },
        file_locks: if config.isolate_file_locks {
            FileLocks::Isolated
        } else {
            FileLocks::Shared
        },
        rlimits,
        no_new_privs: true,
        capabilities: Vec::new(),
    }
}

/// The plan the guest agent applies to each exec inside a microVM: the sandbox plan's
/// confinement (identity, rlimits, Landlock, seccomp), with no namespaces of its own (the VM
/// is the boundary) and the guest's own root: the rootfs image, read-only.
fn guest_plan(
    policy: &ValidatedPolicy,
    config: &OperatorConfig,
    limits: &Effective,
    process: &ProcessPlan,
) -> SandboxPlan {
    let mut plan = sandbox_plan(policy, config, limits);
    plan.namespaces = Vec::new();
    // Inside the VM, Landlock is defence in depth behind the guest kernel: applied at the
    // guest kernel's ABI, whatever it is, and the report says what it was.
    plan.landlock.required = false;
    plan.landlock.min_abi = 1;
    plan.host_uid = process.uid;
    plan.host_gid = process.gid;
    // The guest keeps its own /tmp, /proc and /dev, and the policy's mounts (each becomes a
    // drive in `qemu_plan`); the host's system directories are the rootfs image's business.
    plan.mounts.retain(|m| match m {
        MountStep::Tmpfs { .. } | MountStep::Proc { .. } | MountStep::Dev { .. } => true,
        MountStep::Bind { origin, .. } => origin == "policy",
        MountStep::Root { .. } | MountStep::Symlink { .. } => false,
    });
    let targets: Vec<String> = plan
        .mounts
        .iter()
        .filter_map(|m| match m {
            MountStep::Bind { target, .. } => Some(target.clone()),
            _ => None,
        })
        .collect();
    plan.landlock.rules.retain(|r| {
        ["/tmp", "/proc", "/dev"].contains(&r.path.as_str()) || targets.contains(&r.path)
    });
    plan.landlock.rules.insert(
        0,
        LandlockRule {
            path: "/".to_owned(),
            access: "ro".to_owned(),
        },
    );
    plan
}

fn owned(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

fn network_plan(spec: &PolicySpec, backend: Backend) -> Result<NetworkPlan, CompileError> {
    let egress = spec
        .network
        .as_ref()
        .map(|n| n.egress.as_slice())
        .unwrap_or_default();
    if egress.is_empty() {
        return Err(CompileError::NetworkPlan {
            path: "network.egress".into(),
            message: "allowlist without egress rules reached the compiler".into(),
            hint: "validate the policy first (`safe-run validate`)".into(),
        });
    }
    let (host_interface, guest_interface) = match backend {
        Backend::Sandbox => (
            format!("sr{RUN_ID_PLACEHOLDER}h"),
            format!("sr{RUN_ID_PLACEHOLDER}g"),
        ),
        Backend::Firecracker | Backend::Microvm => {
            (format!("srt{RUN_ID_PLACEHOLDER}"), "eth0".to_owned())
        }
    };
    let chain = |name: &str, chain_type: &str, hook: &str, priority: i32| NftChain {
        name: name.to_owned(),
        chain_type: chain_type.to_owned(),
        hook: hook.to_owned(),
        priority,
        policy: "accept".to_owned(),
    };
    let mut sets = Vec::new();
    let mut rules = Vec::new();
    let mut names = Vec::new();
    for (i, rule) in egress.iter().enumerate() {
        let daddr = match (&rule.host, &rule.cidr) {
            (Some(host), None) => {
                let name = format!("egress_{i}_v4");
                let host = host.to_ascii_lowercase();
                names.push(host.clone());
                sets.push(NftSet {
                    name: name.clone(),
                    set_type: "ipv4_addr".to_owned(),
                    host,
                });
                format!("@{name}")
            }
            (None, Some(cidr)) => cidr.clone(),
            _ => {
                return Err(CompileError::NetworkPlan {
                    path: format!("network.egress[{i}]"),
                    message: "rule without exactly one of host and cidr reached the compiler"
                        .into(),
                    hint: "validate the policy first (`safe-run validate`)".into(),
                });
            }
        };
        let mut dports = Vec::new();
        for (j, p) in rule.ports.iter().enumerate() {
            let port = u16::try_from(*p).ok().filter(|p| *p > 0).ok_or_else(|| {
                CompileError::NetworkPlan {
                    path: format!("network.egress[{i}].ports[{j}]"),
                    message: format!("port {p} is out of range"),
                    hint: "validate the policy first (`safe-run validate`)".into(),
                }
            })?;
            dports.push(port);
        }
        dports.sort_unstable();
        dports.dedup();
        rules.push(NftRule {
            id: format!("egress-{i}"),
            chain: "forward".to_owned(),
            egress_index: Some(i),
            daddr: Some(daddr),
            protocol: Some(
                match rule.protocol {
                    Protocol::Tcp => "tcp",
                    Protocol::Udp => "udp",
                    Protocol::Icmp => "icmp",
                }
                .to_owned(),
            ),
            dports,
            verdict: "accept".to_owned(),
            counter: true,
        });
    }
    let fixed =
        |id: &str, chain: &str, protocol: Option<&str>, dports: Vec<u16>, verdict: &str| NftRule {
            id: id.to_owned(),
            chain: chain.to_owned(),
            egress_index: None,
            daddr: None,
            protocol: protocol.map(str::to_owned),
            dports,
            verdict: verdict.to_owned(),
            counter: true,
        };
    rules.push(fixed("dns", "input", Some("udp"), vec![53], "accept"));
    rules.push(fixed("host-drop", "input", None, Vec::new(), "drop"));
    rules.push(fixed("default-drop", "forward", None, Vec::new(), "drop"));
    rules.push(fixed(
        "masquerade",
        "postrouting",
        None,
        Vec::new(),
        "masquerade",
    ));
    names.sort();
    names.dedup();
    Ok(NetworkPlan {
        mode: "allowlist".to_owned(),
        host_interface,
        guest_interface,
        nft: NftPlan {
            family: "inet".to_owned(),
            table: format!("safe_run_{RUN_ID_PLACEHOLDER}"),
            chains: vec![
                chain("forward", "filter", "forward", 0),
                chain("input", "filter", "input", 0),
                chain("postrouting", "nat", "postrouting", 100),
            ],
            sets,
            rules,
        },
        dns: DnsPlan {
            allowed_names: names,
        },
    })
}

fn firecracker_plan(
    spec: &PolicySpec,
    config: &OperatorConfig,
    limits: &Effective,
    network: Option<&NetworkPlan>,
    guest: SandboxPlan,
) -> Result<FirecrackerPlan, CompileError> {
    let artifacts = microvm::boot_artifacts(spec, config);
    let vcpus = microvm::vcpus(limits, FIRECRACKER_MAX_VCPUS, "Firecracker")?;
    let mem_mib = limits.memory.div_ceil(1 << 20);
    let mut vm = serde_json::json!({
        "boot-source": {
            "kernel_image_path": "vmlinux",
            "boot_args": FIRECRACKER_BOOT_ARGS,
        },
        "drives": [{
            "drive_id": "rootfs",
            "path_on_host": "rootfs.ext4",
            "is_root_device": true,
            "is_read_only": true,
        }],
        "machine-config": {
            "vcpu_count": vcpus,
            "mem_size_mib": mem_mib,
            "smt": false,
        },
        "vsock": {
            "guest_cid": GUEST_CID,
            "uds_path": "vsock.sock",
        },
    });
    if let (Some(net), Some(obj)) = (network, vm.as_object_mut()) {
        obj.insert(
            "network-interfaces".into(),
            serde_json::json!([{
                "iface_id": "eth0",
                "host_dev_name": net.host_interface,
                "guest_mac": "06:00:ac:10:00:02",
            }]),
        );
    }
    let fc = &config.firecracker;
    // The jail lives in the run directory, so that the run's cleanup (and `safe-run gc`)
    // owns it; cgroup arguments depend on the host's cgroup version and are the runner's.
    let jailer_args = [
        "--id",
        RUN_ID_PLACEHOLDER,
        "--exec-file",
        &fc.firecracker_bin,
        "--uid",
        &config.workload_host_uid.to_string(),
        "--gid",
        &config.workload_host_gid.to_string(),
        "--chroot-base-dir",
        &format!("{}/{RUN_ID_PLACEHOLDER}/jail", config.run_dir),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    Ok(FirecrackerPlan {
        vm_config: sort_keys(vm),
        jailer_bin: fc.jailer_bin.clone(),
        jailer_args,
        api_socket: "api.socket".to_owned(),
        agent_port: microvm::AGENT_PORT,
        // Firecracker boots an uncompressed kernel with its drivers built in: no initramfs.
        artifacts: vec![artifacts.kernel, artifacts.rootfs],
        guest,
    })
}

fn evidence_plan(spec: &PolicySpec) -> EvidencePlan {
    let evidence = spec.evidence.as_ref();
    let mut events: Vec<String> = match evidence.and_then(|e| e.events.as_ref()) {
        // What ran and what moved is always recorded (see `events::ACTIVITY`).
        Some(list) => list
            .iter()
            .cloned()
            .chain(events::ACTIVITY.iter().map(|e| e.as_str().to_owned()))
            .collect(),
        None => events::all_names(),
    };
    events.sort();
    events.dedup();
    EvidencePlan {
        events,
        sign: evidence.is_none_or(|e| e.sign),
        sample_interval_ms: SAMPLE_INTERVAL_MS,
    }
}

#[cfg(test)]
mod tests {
    use sr_common::ByteSize;
    use sr_policy::model::Output;

    use super::*;

    #[test]
    fn output_limit_resolves_field_by_field() {
        let mut config = OperatorConfig::default();
        config.default_limits.output_bytes = ByteSize::mib(3);
        let plan = |o: Option<Output>| output_plan(o.as_ref(), &config);
        // Absent: the operator's default, truncate.
        assert_eq!(
            plan(None),
            OutputPlan {
                max_bytes: 3 << 20,
                on_limit: OutputAction::Truncate
            }
        );
        // Only the action: the default size.
        let kill_only = Output {
            max_bytes: None,
            on_limit: OnLimit::Kill,
        };
        assert_eq!(
            plan(Some(kill_only)),
            OutputPlan {
                max_bytes: 3 << 20,
                on_limit: OutputAction::Kill
            }
        );
        // The policy's own size.
        let sized = Output {
            max_bytes: Some(ByteSize(1024)),
            on_limit: OnLimit::Truncate,
        };
        assert_eq!(plan(Some(sized)).max_bytes, 1024);
    }
}
