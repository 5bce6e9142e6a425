//! `safe-run artifact build`: the kernel, initramfs and root filesystem a microVM boots, built
//! reproducibly from Debian's packages (crates/sr-artifacts, docs/artifacts.md).
//!
//! `safe-run artifact snapshot`: an agent-ready guest of a policy's VM shape (QEMU, or
//! Firecracker through its jailer), saved for runs to restore instead of booting
//! (sr_runner::microvm::snapshot and ::firecracker, docs/microvm.md).
//!
//! Exit codes: 0 built, 11 (SR-ART-xxx) the build failed, 3 an unreadable operator config
//! (only read when --out is not given), 2 usage; for `snapshot`, the policy's and compile's
//! codes and 5 (SR-RUN-002) when the VM could not be booted, saved or restored.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, Subcommand};
use sr_artifacts::{Options, Profile, RealHost};

use sr_common::{Diagnostic, ErrorCode};

use crate::output::{Format, fail, print_stdout};

/// Subcommands of `safe-run artifact`.
#[derive(Subcommand)]
pub enum ArtifactCommand {
    /// Build vmlinuz, initramfs.img, rootfs.ext4 and manifest.json, reproducibly.
    Build(BuildArgs),
    /// Boot a policy's microVM once, save it agent-ready; its runs then restore it.
    Snapshot(SnapshotArgs),
}

/// Arguments of `safe-run artifact snapshot`.
#[derive(Args)]
#[command(
    after_help = "A QEMU microVM boots in seconds under software emulation; restoring a saved,
agent-ready guest takes a fraction of that. This boots the VM a policy describes (its vCPUs,
memory, kernel, initramfs and rootfs, hashed as opened), waits for the guest agent to listen,
saves the VM's state, checks it by restoring it once, and publishes it under
<dir>/<shape key>/ (vmstate.bin and snapshot.json: the shape, the state's sha256 and size,
the boot, save and restore times).

A later `safe-run run` (or `safe-run serve` sandbox) whose VM has the same shape (QEMU version,
accelerator, arguments, artifact digests) restores it instead of booting; its report says
`start: snapshot` with the snapshot's key and the digest of the state loaded, or `start: boot`
and why no snapshot was used. Each restored VM gets a fresh vsock device and context id, the
host's clock, and fresh entropy from which the guest kernel reseeds its generator before any
exec (docs/microvm.md, Snapshots, lists what clones still share).

A snapshot holds no per-run device: policies with a network allowlist or mounts boot cold.
Needs root, QEMU and vhost-device-vsock (scripts/setup.sh) and the guest artifacts.

A `backend: firecracker` policy (or `microvm` on an operator config whose microvm.vmm is
firecracker) is booted through the jailer and saved with Firecracker's snapshot API (VM state
and guest memory, both hashed); that needs a KVM host with firecracker and jailer
(docs/microvm.md, Firecracker: snapshots).

Examples:
  safe-run artifact snapshot --policy examples/microvm_uname.yaml
  safe-run artifact snapshot --policy p.yaml --out /srv/snapshots --format json"
)]
pub struct SnapshotArgs {
    /// The policy whose VM shape to snapshot (`runtime.backend: microvm` or `firecracker`).
    #[arg(long, value_name = "POLICY")]
    pub policy: PathBuf,
    /// The snapshot directory (default: the operator config's microvm.snapshots).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Output: `text` (a summary) or `json` (the manifest on stdout).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Arguments of `safe-run artifact build`.
#[derive(Args)]
#[command(
    after_help = "What it builds, into --out (default: the directory of the operator \
config's microvm.kernel, /var/lib/safe-run/artifacts):
  vmlinuz         Debian's cloud kernel (the package linux-image-cloud-amd64 depends on)
  initramfs.img   /init = the static guest agent, the virtio/vsock/virtio_blk/ext4/virtio_net
                  modules (decompressed, dependencies resolved) listed in load order in
                  /etc/safe-run/modules, empty /dev /proc /sys /newroot
  rootfs.ext4     minimal: busybox-static with its applet links, the agent at
                  /sbin/safe-run-agent, root and sandbox (uid/gid 1000) in /etc/passwd;
                  debian: minimal plus python3 (python3-minimal and its dependencies)
  manifest.json   sha256 and size of each, the packages and their .deb sha256, the kernel
                  release, the modules, the agent's sha256, the profile, mke2fs's version

Packages come through apt (run `apt-get update` first) and are kept in --cache, each checked
against apt's sha256. Needs root and apt-get, dpkg-deb, depmod (kmod), mkfs.ext4 (e2fsprogs).
The same inputs (packages, agent, profile, SOURCE_DATE_EPOCH, mke2fs) give byte-identical
files. It takes about 20 s cold for minimal (about 30 MB of downloads), less from the cache;
debian adds python3 (about 10 MB more).

Pin the digests in a policy (the summary prints this block):
  runtime: {backend: microvm, ...}
  artifacts:
    kernel:    {path: /var/lib/safe-run/artifacts/vmlinuz,       sha256: <manifest outputs.kernel.sha256>}
    initramfs: {path: /var/lib/safe-run/artifacts/initramfs.img, sha256: <...>}
    rootfs:    {path: /var/lib/safe-run/artifacts/rootfs.ext4,   sha256: <...>}

Examples:
  safe-run artifact build
  safe-run artifact build --profile debian --out /srv/vm --agent ./target/release/safe-run-agent
  SOURCE_DATE_EPOCH=1700000000 safe-run artifact build --format json > manifest.json"
)]
pub struct BuildArgs {
    /// The output directory (default: the directory of the operator config's microvm.kernel).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The static guest agent (default: safe-run-agent beside the safe-run executable).
    #[arg(long, value_name = "PATH")]
    pub agent: Option<PathBuf>,
    /// The root filesystem: `minimal` (busybox) or `debian` (busybox and python3).
    #[arg(long, default_value = "minimal", value_name = "PROFILE")]
    pub profile: String,
    /// Where downloaded .deb files are kept.
    #[arg(long, value_name = "DIR", default_value = sr_artifacts::DEFAULT_CACHE_DIR)]
    pub cache: PathBuf,
    /// Output: `text` (a summary) or `json` (the manifest on stdout).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Runs the subcommand; returns the process exit code.
pub fn execute(command: ArtifactCommand) -> u8 {
    match command {
        ArtifactCommand::Build(args) => build(args),
        ArtifactCommand::Snapshot(args) => snapshot(args),
    }
}

fn default_agent() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("safe-run-agent")))
        .unwrap_or_else(|| PathBuf::from("safe-run-agent"))
}

fn build(args: BuildArgs) -> u8 {
    let profile = match Profile::parse(&args.profile) {
        Ok(p) => p,
        Err(e) => return fail(&[e.to_diagnostic()], args.format),
    };
    let out_dir = match args.out {
        Some(dir) => dir,
        None => match sr_policy::OperatorConfig::load() {
            Ok(config) => Path::new(&config.microvm.kernel)
                .parent()
                .map_or_else(|| PathBuf::from("."), Path::to_owned),
            Err(d) => return fail(&[d], args.format),
        },
    };
    let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => match v.parse::<u64>() {
            Ok(n) => n,
            Err(_) => {
                let e = sr_artifacts::ArtifactError::Input {
                    step: "out",
                    message: format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"),
                    hint: "unset it, or set it to seconds since 1970".into(),
                };
                return fail(&[e.to_diagnostic()], args.format);
            }
        },
        _ => 0,
    };
    let opts = Options {
        out_dir: out_dir.clone(),
        agent: args.agent.unwrap_or_else(default_agent),
        profile,
        cache_dir: args.cache,
        source_date_epoch: epoch,
    };
    let start = Instant::now();
    let mut progress = |line: &str| {
        eprintln!("[{:5.1}s] {line}", start.elapsed().as_secs_f64());
    };
    let manifest = match sr_artifacts::build(&opts, &RealHost, &mut progress) {
        Ok(m) => m,
        Err(e) => return fail(&[e.to_diagnostic()], args.format),
    };
    let dir = std::fs::canonicalize(&out_dir).unwrap_or(out_dir);
    let dir = dir.display().to_string();
    match args.format {
        Format::Json => {
            let text = serde_json::to_string_pretty(&manifest).unwrap_or_default() + "\n";
            print_stdout(&text)
        }
        Format::Text => {
            eprintln!(
                "built profile {} for kernel {} in {:.1}s into {dir}:",
                manifest.profile,
                manifest.kernel_release,
                start.elapsed().as_secs_f64()
            );
            for f in manifest.outputs.values() {
                eprintln!("  {:<14} {:>10} bytes  sha256 {}", f.file, f.size, f.sha256);
            }
            eprintln!(
                "  manifest.json  {} modules, {} packages, agent sha256 {}",
                manifest.modules.len(),
                manifest.sources.len(),
                manifest.agent.sha256
            );
            eprintln!("\npin them in a policy:");
            print_stdout(&manifest.policy_snippet(&dir))
        }
    }
}

fn snapshot(args: SnapshotArgs) -> u8 {
    let config = match sr_policy::OperatorConfig::load() {
        Ok(c) => c,
        Err(d) => return fail(&[d], args.format),
    };
    let policy = match sr_policy::load_policy_file(&args.policy, &config) {
        Ok(p) => p,
        Err(report) => return fail(&report.diagnostics, args.format),
    };
    let bundle = match sr_compiler::compile(&policy, &config) {
        Ok(b) => b,
        Err(d) => return fail(&[d], args.format),
    };
    let usage = |message: String, hint: &str| {
        fail(
            &[Diagnostic::new(
                ErrorCode::RunLaunch,
                "snapshot",
                message,
                hint.to_owned(),
            )],
            args.format,
        )
    };
    let Some(out_dir) = args.out.clone().or_else(|| config.microvm.snapshot_dir()) else {
        return usage(
            "the operator config turns snapshots off (microvm.snapshots is empty)".into(),
            "give --out DIR, or set microvm.snapshots",
        );
    };
    let start = Instant::now();
    let mut progress = |line: &str| {
        eprintln!("[{:5.1}s] {line}", start.elapsed().as_secs_f64());
    };
    if let Some(plan) = bundle.backend.firecracker() {
        return firecracker_snapshot(&args, &config, plan, &out_dir, &mut progress);
    }
    let Some(plan) = bundle.backend.qemu() else {
        return usage(
            format!(
                "{} runs on backend {}; snapshots are of microVMs",
                args.policy.display(),
                bundle.backend.name()
            ),
            "give a policy with runtime.backend: microvm (or firecracker)",
        );
    };
    let plan = sr_runner::microvm::qemu::plan_for_run(plan, "snapshot");
    let work_dir = out_dir.join(format!(".work.{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&work_dir) {
        return usage(
            format!("{}: {e}", work_dir.display()),
            "the snapshot directory must be writable (run as root)",
        );
    }
    let mut vm =
        sr_runner::microvm::qemu::QemuVm::new(config.workload_host_uid, config.workload_host_gid);
    let made = vm.make_snapshot(sr_runner::microvm::qemu::SnapshotRequest {
        plan: &plan,
        work_dir: &work_dir,
        out_dir: &out_dir,
        progress: &mut progress,
    });
    let _ = std::fs::remove_dir_all(&work_dir);
    let (manifest, dir) = match made {
        Ok(m) => m,
        Err(status) => return fail(&[snapshot_failure(status)], args.format),
    };
    match args.format {
        Format::Json => {
            let text = serde_json::to_string_pretty(&manifest).unwrap_or_default() + "\n";
            print_stdout(&text)
        }
        Format::Text => {
            let ratio = manifest.restore_ms as f64 / manifest.boot_ms.max(1) as f64;
            print_stdout(&snapshot_text(
                &manifest.key,
                &dir,
                (manifest.vmstate_bytes, &manifest.vmstate_sha256),
                (manifest.memory_bytes, &manifest.memory_sha256),
                &format!(
                    "boot to agent listening {} ms, save {} ms, restore to agent answering {} ms ({ratio:.2}x the boot)",
                    manifest.boot_ms, manifest.save_ms, manifest.restore_ms
                ),
            ))
        }
    }
}

/// The diagnostic of a snapshot VM that did not make it.
fn snapshot_failure(status: sr_runner::outcome::RunStatus) -> Diagnostic {
    match status {
        sr_runner::outcome::RunStatus::LaunchFailed { diagnostic } => diagnostic,
        other => Diagnostic::new(
            ErrorCode::RunLaunch,
            "snapshot",
            format!("the snapshot VM ended: {other:?}"),
            "see docs/microvm.md, Snapshots".to_owned(),
        ),
    }
}

/// `artifact snapshot` of a Firecracker policy: its VM boots through the jailer in a run
/// directory of its own (the plan's jail lies under the operator's runDir), is saved with
/// Firecracker's snapshot API and published under `out_dir`.
fn firecracker_snapshot(
    args: &SnapshotArgs,
    config: &sr_policy::OperatorConfig,
    plan: &sr_compiler::bundle::FirecrackerPlan,
    out_dir: &std::path::Path,
    progress: &mut dyn FnMut(&str),
) -> u8 {
    let made = sr_runner::rundir::new_run_id()
        .map_err(|e| {
            Diagnostic::new(
                ErrorCode::RunLaunch,
                "snapshot",
                e.to_string(),
                "see docs/microvm.md".to_owned(),
            )
        })
        .and_then(|run_id| {
            let run_dir = std::path::Path::new(&config.run_dir).join(&run_id);
            let mut vm = sr_runner::microvm::firecracker::FirecrackerVm::new(
                config.workload_host_uid,
                config.workload_host_gid,
            );
            let made = vm.make_snapshot(sr_runner::microvm::firecracker::SnapshotRequest {
                plan,
                run_id: &run_id,
                run_dir: &run_dir,
                out_dir,
                progress,
            });
            let _ = std::fs::remove_dir_all(&run_dir);
            made.map_err(snapshot_failure)
        });
    let (manifest, dir) = match made {
        Ok(m) => m,
        Err(d) => return fail(&[d], args.format),
    };
    match args.format {
        Format::Json => {
            print_stdout(&(serde_json::to_string_pretty(&manifest).unwrap_or_default() + "\n"))
        }
        Format::Text => print_stdout(&snapshot_text(
            &manifest.key,
            &dir,
            (manifest.vmstate_bytes, &manifest.vmstate_sha256),
            (manifest.memory_bytes, &manifest.memory_sha256),
            &format!(
                "boot to agent listening {} ms, save {} ms",
                manifest.boot_ms, manifest.save_ms
            ),
        )),
    }
}

/// A published snapshot as `artifact snapshot` prints it (either VMM): its two files, each
/// with its size and digest, then how long it took.
fn snapshot_text(
    key: &str,
    dir: &std::path::Path,
    (vmstate_bytes, vmstate_sha256): (u64, &str),
    (memory_bytes, memory_sha256): (u64, &str),
    timings: &str,
) -> String {
    format!(
        "snapshot {key} in {}\n  VM state  {vmstate_bytes} bytes  {vmstate_sha256}\n  memory    {memory_bytes} bytes  {memory_sha256}\n  {timings}\n",
        dir.display()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_rootfs_sandbox_user_is_the_compiled_plans_default_uid() {
        assert_eq!(sr_artifacts::SANDBOX_ID, sr_compiler::DEFAULT_ID);
    }
}
