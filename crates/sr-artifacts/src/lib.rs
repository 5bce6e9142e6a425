//! Reproducible microVM artifacts for safe-run (`safe-run artifact build`, docs/artifacts.md).
//!
//! From Debian's packages (through apt, so from the host's configured mirror) it builds:
//! - `vmlinuz`: the kernel of `linux-image-cloud-amd64`'s current dependency;
//! - `initramfs.img`: the static guest agent as `/init` and the virtio, vsock, block, ext4 and
//!   net modules it loads (see [`initramfs`] for the layout the agent relies on);
//! - `rootfs.ext4`: busybox (profile `minimal`) or busybox and python3 (profile `debian`),
//!   the agent, `/etc/passwd` with root and `sandbox` (1000);
//! - `manifest.json`: digests of all three, the packages and their `.deb` digests, the module
//!   list, the agent's digest, the tool versions.
//!
//! The same inputs (packages, agent, profile, SOURCE_DATE_EPOCH, mke2fs version) give the
//! same bytes. The pure parts live in [`modules`], [`initramfs`], [`rootfs`], [`debs`],
//! [`manifest`] and [`elf`]; every external command goes through [`host::Host`].

pub mod debs;
pub mod elf;
mod error;
pub mod host;
pub mod initramfs;
pub mod manifest;
pub mod modules;
pub mod rootfs;

mod build;

pub use build::{Options, Profile, build};
pub use error::ArtifactError;
pub use host::{Cmd, Host, RealHost};
pub use manifest::Manifest;
pub use rootfs::SANDBOX_ID;

/// The metapackage whose dependency is the kernel.
pub const KERNEL_METAPACKAGE: &str = "linux-image-cloud-amd64";

/// The package busybox comes from (a static build).
pub const BUSYBOX_PACKAGE: &str = "busybox-static";

/// The package the `debian` profile's python3 comes from (with its hard dependencies).
pub const PYTHON_PACKAGE: &str = "python3-minimal";

/// The default directory for downloaded `.deb` files.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/safe-run/debs";
