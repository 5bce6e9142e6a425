//! What a microVM run enforced, as the report states it (`enforcement.backend.microvm`): the
//! VMM and how it was confined, the accelerator, the machine, the guest's size, the digest of
//! every artifact it booted, the kernel command line, and what the guest agent reported.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// The facts of one microVM.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VmFacts {
    /// `qemu` or `firecracker`.
    pub vmm: String,
    /// The VMM's own version line.
    pub vmm_version: String,
    /// `kvm` or `tcg` (software emulation), and why.
    pub accelerator: String,
    /// Why that accelerator (e.g. "/dev/kvm is nested PVM").
    pub accelerator_reason: String,
    /// QEMU's machine type.
    pub machine: String,
    /// vCPUs.
    pub vcpus: u64,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// role (`kernel`, `initramfs`, `rootfs`) -> `sha256:<hex>` of the file booted.
    pub artifacts: BTreeMap<String, String>,
    /// The roles whose digest came from the runs' digest cache: the file opened was in the
    /// state (device, inode, size, mtime, ctime) it was in when hashed before
    /// (docs/evidence.md, "Digest cache").
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub artifacts_from_cache: BTreeSet<String>,
    /// The guest kernel's command line.
    pub kernel_cmdline: String,
    /// The guest kernel's release, as the agent reported it.
    pub guest_kernel: String,
    /// Kernel modules the guest agent loaded.
    pub guest_modules: Vec<String>,
    /// The guest's Landlock ABI (0: none).
    pub guest_landlock_abi: u32,
    /// Whether the guest has seccomp filters.
    pub guest_seccomp: bool,
    /// How the VMM processes were confined on the host.
    pub confinement: VmmConfinement,
    /// Milliseconds from the VMM's start to the agent's answer.
    pub boot_ms: u64,
    /// `boot` (a cold boot) or `snapshot` (restored from one, see `snapshot`).
    pub start: String,
    /// Why a VM that could have been restored booted cold (no snapshot of its shape, a NIC...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_note: Option<String>,
    /// The snapshot it was restored from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotFact>,
    /// The guest's vsock context id, as the agent read it from its connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_cid: Option<u32>,
    /// Whether the agent reseeded the guest's random number generator from fresh host entropy
    /// before any exec.
    pub guest_crng_reseeded: bool,
    /// Each policy mount's image (target -> `sha256:<hex>` of the ext4 image the guest got).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub mount_images: BTreeMap<String, String>,
}

impl VmFacts {
    /// Records the agent's answer to the setup line, `boot_ms` after the VMM started; the
    /// step and message when the agent refused.
    pub fn record_setup(
        &mut self,
        reply: super::guest_setup::GuestSetupReply,
        boot_ms: u64,
    ) -> Result<(), (String, String)> {
        match reply {
            super::guest_setup::GuestSetupReply::Ok {
                kernel_release,
                modules,
                landlock_abi,
                seccomp,
                guest_cid,
                crng_reseeded,
            } => {
                self.guest_cid = guest_cid;
                self.guest_crng_reseeded = crng_reseeded;
                self.guest_kernel = kernel_release;
                self.guest_modules = modules;
                self.guest_landlock_abi = landlock_abi;
                self.guest_seccomp = seccomp;
                self.boot_ms = boot_ms;
                Ok(())
            }
            super::guest_setup::GuestSetupReply::Failed { phase, message } => Err((phase, message)),
        }
    }
}

/// The snapshot a VM was restored from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotFact {
    /// Its shape's key (its directory's name).
    pub key: String,
    /// `sha256:<hex>` of the VM state the VMM loaded: hashed as QEMU read it, or as it was
    /// placed in Firecracker's jail.
    pub vmstate_sha256: String,
    /// `sha256:<hex>` of the guest memory: of the file as placed in Firecracker's jail, or of
    /// the non-zero pages copied into QEMU's RAM (`microvm::memory_image`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_sha256: Option<String>,
    /// Milliseconds to load it into the VMM.
    pub load_ms: u64,
}

/// How the VMM's processes (QEMU and vhost-device-vsock) run on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VmmConfinement {
    /// The unprivileged uid and gid they run as.
    pub uid: u32,
    /// Their gid.
    pub gid: u32,
    /// The namespaces they were put in.
    pub namespaces: Vec<String>,
    /// `no_new_privs` set, every capability dropped (bounding and inheritable sets).
    pub no_new_privs: bool,
    /// The VMM's own seccomp filter (QEMU's `-sandbox` option, Firecracker's built-in ones).
    pub seccomp: String,
    /// The host seccomp filter each VMM process runs under, by process (`qemu`,
    /// `vhost-device-vsock`), installed before its chain's first exec and stacked under
    /// `seccomp` (super::host_seccomp). Empty for Firecracker, which its jailer starts.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub host_seccomp: BTreeMap<String, HostSeccomp>,
    /// The host cgroup that bounds them (the run's).
    pub cgroup: bool,
}

/// A host seccomp filter (super::host_seccomp) as the report states it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostSeccomp {
    /// The profile's id (`sr-vmm-host-v1`).
    pub profile: String,
    /// What a denied call returns (`errno:EPERM`).
    pub action: String,
    /// How many system calls are denied outright.
    pub denied_syscalls: usize,
    /// Namespace flags refused on `unshare` and `clone`.
    pub denied_namespace_flags: Vec<String>,
    /// The only socket address families allowed.
    pub socket_families: Vec<String>,
    /// BPF programs installed (the kernel's `Seccomp_filters` of the process counts them, plus
    /// the VMM's own).
    pub programs: usize,
    /// BPF instructions in all of them.
    pub instructions: usize,
    /// `sha256:<hex>` over the programs' instructions in install order.
    pub digest: String,
}
