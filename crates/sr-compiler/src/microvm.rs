//! The microVM plans' shared parts, and QEMU's: which artifacts a VM boots (the policy's, or the
//! operator's defaults for `backend: microvm`), and QEMU's and vhost-device-vsock's whole
//! command lines. Pure: nothing here looks at the host.
//!
//! QEMU's machine is what these hosts boot (docs/microvm.md): `-M pc` (the `microvm` machine
//! hung with Debian's cloud kernel), `-nodefaults` and no monitor but a QMP socket in the run
//! directory (0700) for the runner alone, the rootfs as a read-only virtio-blk drive, guest
//! memory from a shared memfd (vhost-user needs it), vsock through vhost-device-vsock, a
//! serial console into a file, and a virtio-net NIC on the run's TAP only when the policy
//! allows network.

use sr_bundle::{
    ArtifactCheck, MountStep, NetworkPlan, QemuPlan, RUN_ID_PLACEHOLDER, SandboxPlan, VmMount,
};
use sr_policy::OperatorConfig;
use sr_policy::model::{Artifact, PolicySpec};

use crate::{CompileError, Effective, GUEST_CID};

/// Host memory a VMM needs beside its guest's (QEMU with TCG's translation cache, its own
/// heap, vhost-device-vsock): added to the guest's memory in the run's cgroup.
pub const VMM_MEMORY_OVERHEAD: u64 = 384 << 20;
/// Tasks (threads) the VMM processes may have in the run's cgroup.
pub const VMM_MAX_TASKS: u64 = 256;
/// The descriptor of the first artifact in the VMM (kernel; then initramfs, rootfs).
pub const FIRST_ARTIFACT_FD: u32 = 3;
/// The vsock port the guest agent listens on.
pub const AGENT_PORT: u32 = 1024;
/// Kernel command line of a QEMU guest (`sr.agent_port` tells the agent its port).
/// `init_on_free=1`: the guest kernel zeroes memory as it frees it, so one workload's freed
/// pages hold nothing for the next process, and a snapshot's state carries no freed garbage
/// (QEMU skips zero pages): 58 MB instead of 97 MB for a fresh 256 MiB guest here.
pub const QEMU_BOOT_ARGS: &str = "console=ttyS0 panic=-1 reboot=t quiet ro init_on_free=1";
/// Most vCPUs a QEMU guest gets here.
pub const QEMU_MAX_VCPUS: u64 = 64;
/// The descriptor of the run's TAP in QEMU (`-netdev tap,fd=6`): after the artifacts (3, 4,
/// 5). The runner creates the TAP (the network hook), attaches to it and passes the open
/// descriptor, so QEMU needs neither `/dev/net/tun` nor the host's network namespace.
pub const TAP_FD: u32 = 6;
/// The guest NIC's MAC (the TAP is the run's own, so one address serves every run).
pub const GUEST_MAC: &str = "06:00:ac:10:00:02";

/// The artifacts a VM boots, each with its expected digest when pinned.
pub(crate) struct BootArtifacts {
    pub kernel: ArtifactCheck,
    pub initramfs: Option<ArtifactCheck>,
    pub rootfs: ArtifactCheck,
}

fn check(role: &str, a: &Artifact, jail: &str) -> ArtifactCheck {
    ArtifactCheck {
        role: role.to_owned(),
        path: a.path.clone(),
        expected_sha256: a.sha256.as_ref().map(|h| format!("sha256:{h}")),
        jail_path: jail.to_owned(),
    }
}

fn unpinned(role: &str, path: &str, jail: &str) -> ArtifactCheck {
    ArtifactCheck {
        role: role.to_owned(),
        path: path.to_owned(),
        expected_sha256: None,
        jail_path: jail.to_owned(),
    }
}

/// The policy's artifacts, or (for `backend: microvm` without them) the operator's defaults.
/// `jail` names the files as a Firecracker jail holds them; QEMU reads the host paths.
pub(crate) fn boot_artifacts(spec: &PolicySpec, config: &OperatorConfig) -> BootArtifacts {
    let d = &config.microvm;
    match &spec.artifacts {
        Some(a) => BootArtifacts {
            kernel: check("kernel", &a.kernel, "vmlinux"),
            initramfs: a
                .initramfs
                .as_ref()
                .map(|i| check("initramfs", i, "initramfs.img")),
            rootfs: check("rootfs", &a.rootfs, "rootfs.ext4"),
        },
        None => BootArtifacts {
            kernel: unpinned("kernel", &d.kernel, "vmlinux"),
            initramfs: Some(unpinned("initramfs", &d.initramfs, "initramfs.img")),
            rootfs: unpinned("rootfs", &d.rootfs, "rootfs.ext4"),
        },
    }
}

/// The whole vCPU count of `limits` within `max`, or why not.
pub(crate) fn vcpus(limits: &Effective, max: u64, vmm: &str) -> Result<u64, CompileError> {
    let vcpus = limits.cpus.ceil() as u64;
    if (1..=max).contains(&vcpus) {
        Ok(vcpus)
    } else {
        Err(CompileError::TemplateMapping {
            path: "resources.cpus".into(),
            message: format!("{vcpus} vCPUs do not fit {vmm}'s limit of {max}"),
            hint: format!("use at most {max} cpus"),
        })
    }
}

/// QEMU's plan for `spec`.
pub(crate) fn qemu_plan(
    spec: &PolicySpec,
    config: &OperatorConfig,
    limits: &Effective,
    network: Option<&NetworkPlan>,
    mut guest: SandboxPlan,
) -> Result<QemuPlan, CompileError> {
    let vcpus = vcpus(limits, QEMU_MAX_VCPUS, "QEMU")?;
    let mem_mib = limits.memory.div_ceil(1 << 20);
    let mut artifacts = boot_artifacts(spec, config);
    // QEMU reads each artifact through a descriptor the runner opened, hashed and passed as
    // fd 3, 4, 5 (in the order of `artifacts`): the VMM's user needs no access to the
    // artifacts' directories, and the digest in the report is of the very file it booted.
    let mut next_fd = FIRST_ARTIFACT_FD;
    let mut by_fd = |a: &mut ArtifactCheck| {
        a.jail_path = format!("/proc/self/fd/{next_fd}");
        next_fd += 1;
    };
    by_fd(&mut artifacts.kernel);
    if let Some(i) = artifacts.initramfs.as_mut() {
        by_fd(i);
    }
    by_fd(&mut artifacts.rootfs);
    // The VMM's own files are named relative to its working directory, the run's `vm/`
    // directory: the runner enters it before dropping privileges, so the VMM's user needs no
    // access to any directory above it, and the plan does not depend on where runs live.
    let vhost_socket = "vhost-vsock.sock".to_owned();
    let vsock_socket = "vsock.sock".to_owned();
    let console_log = "console.log".to_owned();
    let append = format!("{QEMU_BOOT_ARGS} sr.agent_port={AGENT_PORT}");
    let mut args: Vec<String> = [
        "-name",
        &format!("safe-run-{RUN_ID_PLACEHOLDER}"),
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        "-machine",
        "pc",
        "-cpu",
        "max",
        "-smp",
        &vcpus.to_string(),
        "-m",
        &format!("{mem_mib}M"),
        "-object",
        &format!("memory-backend-memfd,id=mem,size={mem_mib}M,share=on"),
        "-numa",
        "node,memdev=mem",
        "-kernel",
        &artifacts.kernel.jail_path,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if let Some(initramfs) = &artifacts.initramfs {
        args.extend(["-initrd".to_owned(), initramfs.jail_path.clone()]);
    }
    let drive = format!(
        "file={},format=raw,if=none,id=rootfs,readonly=on",
        qemu_option_value(&artifacts.rootfs.jail_path)
    );
    args.extend(
        [
            "-append",
            &append,
            "-drive",
            &drive,
            "-device",
            "virtio-blk-pci,drive=rootfs",
            "-chardev",
            &format!("socket,id=vhu,path={}", qemu_option_value(&vhost_socket)),
            "-device",
            "vhost-user-vsock-pci,chardev=vhu",
            "-serial",
            &format!("file:{}", qemu_option_value(&console_log)),
            "-qmp",
            &format!("unix:{},server=on,wait=off", qemu_option_value("qmp.sock")),
        ]
        .iter()
        .map(|s| (*s).to_owned()),
    );
    // Each policy mount: an ext4 image of its source (built by the runner at start), passed
    // as a descriptor after the artifacts' and the TAP's (TAP_FD + 1 on), on its own
    // virtio-blk drive whose serial the guest agent finds it by. The guest's plan names the
    // drive instead of the host path.
    debug_assert!(next_fd <= TAP_FD);
    let mounts = vm_mounts(&mut guest.mounts, TAP_FD + 1, limits.tmpfs);
    for (i, m) in mounts.iter().enumerate() {
        let ro = if m.read_only { "on" } else { "off" };
        args.extend([
            "-drive".to_owned(),
            format!(
                "file={},format=raw,if=none,id=mount{i},readonly={ro}",
                qemu_option_value(&m.jail_path)
            ),
            "-device".to_owned(),
            format!("virtio-blk-pci,drive=mount{i},serial={}", m.serial),
        ]);
    }
    // The TAP (`net.host_interface`, `srt<runId>`) reaches QEMU as descriptor TAP_FD; the
    // guest's own address and gateway are chosen at run time and go onto the kernel command
    // line (`sr.net=`), appended by the runner: the compiled arguments stay deterministic.
    if network.is_some() {
        args.extend(
            [
                "-netdev",
                &format!("tap,id=n0,fd={TAP_FD}"),
                "-device",
                &format!("virtio-net-pci,netdev=n0,mac={GUEST_MAC}"),
            ]
            .iter()
            .map(|s| (*s).to_owned()),
        );
    }
    let vhost_vsock_args = [
        "--guest-cid",
        &GUEST_CID.to_string(),
        "--socket",
        &vhost_socket,
        "--uds-path",
        &vsock_socket,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut checks = vec![artifacts.kernel];
    checks.extend(artifacts.initramfs);
    checks.push(artifacts.rootfs);
    Ok(QemuPlan {
        qemu_bin: config.microvm.qemu_bin.clone(),
        args,
        vhost_vsock_bin: config.microvm.vhost_device_vsock_bin.clone(),
        vhost_vsock_args,
        vsock_socket,
        guest_cid: GUEST_CID,
        agent_port: AGENT_PORT,
        console_log,
        artifacts: checks,
        guest,
        mounts,
    })
}

/// The virtio-blk serial of the `i`th policy mount's drive (at most 20 bytes in virtio).
pub fn mount_serial(i: usize) -> String {
    format!("srmount{i}")
}

/// The guest plan's policy mounts as drives, descriptors from `first_fd` on; rewrites each
/// guest bind's source to `virtio-blk:<serial>`. A writable image gets `headroom` bytes of
/// free space beyond its content (the policy's `tmpfsSize`: the same budget as `/tmp`).
pub(crate) fn vm_mounts(steps: &mut [MountStep], first_fd: u32, headroom: u64) -> Vec<VmMount> {
    let mut out = Vec::new();
    for step in steps {
        if let MountStep::Bind {
            source,
            target,
            read_only,
            origin,
        } = step
            && origin == "policy"
        {
            let i = out.len();
            let serial = mount_serial(i);
            out.push(VmMount {
                source: source.clone(),
                target: target.clone(),
                read_only: *read_only,
                serial: serial.clone(),
                jail_path: format!("/proc/self/fd/{}", first_fd as usize + i),
                headroom_bytes: if *read_only { 0 } else { headroom },
            });
            *source = format!("virtio-blk:{serial}");
        }
    }
    out
}

/// A value inside a QEMU `-drive` option list: commas are doubled (QEMU's escape), so a path
/// with a comma cannot add options.
fn qemu_option_value(value: &str) -> String {
    value.replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use super::{qemu_option_value, vm_mounts};
    use sr_bundle::MountStep;

    fn bind(source: &str, target: &str, read_only: bool, origin: &str) -> MountStep {
        MountStep::Bind {
            source: source.into(),
            target: target.into(),
            read_only,
            origin: origin.into(),
        }
    }

    #[test]
    fn each_policy_mount_becomes_a_drive_after_the_artifacts() {
        let mut guest = vec![
            bind("/srv/in", "/data", true, "policy"),
            bind("/usr", "/usr", true, "rootfs"),
            bind("/srv/out", "/out", false, "policy"),
        ];
        let mounts = vm_mounts(&mut guest, 6, 64 << 20);
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].jail_path, "/proc/self/fd/6");
        assert_eq!(mounts[0].serial, "srmount0");
        assert_eq!(mounts[0].headroom_bytes, 0);
        assert_eq!(mounts[1].source, "/srv/out");
        assert_eq!(mounts[1].jail_path, "/proc/self/fd/7");
        assert_eq!(mounts[1].headroom_bytes, 64 << 20);
        assert_eq!(
            guest[0],
            bind("virtio-blk:srmount0", "/data", true, "policy")
        );
        assert_eq!(guest[1], bind("/usr", "/usr", true, "rootfs"));
        assert_eq!(
            guest[2],
            bind("virtio-blk:srmount1", "/out", false, "policy")
        );
    }

    #[test]
    fn a_comma_in_a_path_cannot_add_a_drive_option() {
        assert_eq!(
            qemu_option_value("/a,readonly=off,b"),
            "/a,,readonly=off,,b"
        );
    }
}
