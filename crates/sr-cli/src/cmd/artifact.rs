//! `safe-run artifact build`: the kernel, initramfs and root filesystem a microVM boots, built
//! reproducibly from Debian's packages (crates/sr-artifacts, docs/artifacts.md).
//!
//! Exit codes: 0 built, 11 (SR-ART-xxx) the build failed, 3 an unreadable operator config
//! (only read when --out is not given), 2 usage.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, Subcommand};
use sr_artifacts::{Options, Profile, RealHost};

use crate::output::{Format, fail, print_stdout};

/// Subcommands of `safe-run artifact`.
#[derive(Subcommand)]
pub enum ArtifactCommand {
    /// Build vmlinuz, initramfs.img, rootfs.ext4 and manifest.json, reproducibly.
    Build(BuildArgs),
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_rootfs_sandbox_user_is_the_compiled_plans_default_uid() {
        assert_eq!(sr_artifacts::SANDBOX_ID, sr_compiler::DEFAULT_ID);
    }
}
