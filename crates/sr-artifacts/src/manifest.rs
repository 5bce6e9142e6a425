//! `manifest.json`: what was built from what, in canonical JSON (RFC 8785: sorted keys, no
//! insignificant whitespace), so the same build gives the same bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ArtifactError;

/// The manifest's format name.
pub const FORMAT: &str = "safe-run-artifacts/1";

/// One output file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// Its name in the output directory.
    pub file: String,
    /// Lowercase hex sha256.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
}

/// One Debian package the build took files from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Source {
    /// Package name.
    pub package: String,
    /// Version.
    pub version: String,
    /// Architecture.
    pub architecture: String,
    /// sha256 of the `.deb` (checked against apt's index).
    pub sha256: String,
    /// What it is for: `kernel`, `busybox`, `python3`.
    pub role: String,
}

/// The manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// `minimal` or `debian`.
    pub profile: String,
    /// The timestamp every file carries (SOURCE_DATE_EPOCH, default 0).
    pub source_date_epoch: u64,
    /// `kernel`, `initramfs`, `rootfs`.
    pub outputs: BTreeMap<String, FileDigest>,
    /// The kernel release (`uname -r` in the guest).
    pub kernel_release: String,
    /// The modules `/etc/safe-run/modules` lists, in load order.
    pub modules: Vec<String>,
    /// Wanted modules the kernel has built in.
    pub builtin_modules: Vec<String>,
    /// The agent (`/init` in the initramfs, `/sbin/safe-run-agent` in the rootfs).
    pub agent: FileDigest,
    /// The packages, sorted.
    pub sources: Vec<Source>,
    /// Tool versions that shape the bytes (`mke2fs`).
    pub tools: BTreeMap<String, String>,
}

impl Manifest {
    /// Canonical JSON bytes, with a final newline.
    pub fn to_canonical(&self) -> Result<Vec<u8>, ArtifactError> {
        let mut v = serde_json_canonicalizer::to_vec(self).map_err(|e| {
            ArtifactError::content("manifest", format!("cannot serialize the manifest: {e}"))
        })?;
        v.push(b'\n');
        Ok(v)
    }

    /// The policy fragment that pins these artifacts in `dir`.
    pub fn policy_snippet(&self, dir: &str) -> String {
        let mut s = String::from("artifacts:\n");
        for key in ["kernel", "initramfs", "rootfs"] {
            if let Some(f) = self.outputs.get(key) {
                s.push_str(&format!(
                    "  {key}: {{path: {}/{}, sha256: {}}}\n",
                    dir.trim_end_matches('/'),
                    f.file,
                    f.sha256
                ));
            }
        }
        s
    }
}

/// The first version line of `mke2fs -V` output (`mke2fs 1.47.0 (5-Feb-2023)` -> `1.47.0`).
pub fn mke2fs_version(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("mke2fs "))
        .and_then(|r| r.split_whitespace().next())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(file: &str) -> FileDigest {
        FileDigest {
            file: file.into(),
            sha256: "ab".repeat(32),
            size: 3,
        }
    }

    fn sample() -> Manifest {
        Manifest {
            format: FORMAT.into(),
            profile: "minimal".into(),
            source_date_epoch: 0,
            outputs: [
                ("rootfs".to_owned(), digest("rootfs.ext4")),
                ("kernel".to_owned(), digest("vmlinuz")),
            ]
            .into(),
            kernel_release: "6.1.0-9-cloud-amd64".into(),
            modules: vec!["/lib/modules/x/virtio.ko".into()],
            builtin_modules: vec!["ext4".into()],
            agent: digest("safe-run-agent"),
            sources: vec![],
            tools: [("mke2fs".to_owned(), "1.47.0".to_owned())].into(),
        }
    }

    #[test]
    fn canonical_json_has_sorted_keys_and_no_spaces() {
        let text = String::from_utf8(sample().to_canonical().unwrap()).unwrap();
        assert!(
            text.starts_with("{\"agent\":{\"file\":\"safe-run-agent\""),
            "{text}"
        );
        assert!(text.find("\"builtinModules\"") < text.find("\"format\""));
        assert!(text.find("\"kernel\":") < text.find("\"rootfs\":"));
        assert!(!text.contains(": "));
        assert!(text.ends_with("}\n"));
        let back: Manifest = serde_json::from_str(&text).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn the_policy_snippet_pins_each_output() {
        let s = sample().policy_snippet("/var/lib/safe-run/artifacts/");
        assert_eq!(
            s,
            format!(
                "artifacts:\n  kernel: {{path: /var/lib/safe-run/artifacts/vmlinuz, sha256: {0}}}\n  \
                 rootfs: {{path: /var/lib/safe-run/artifacts/rootfs.ext4, sha256: {0}}}\n",
                "ab".repeat(32)
            )
        );
    }

    #[test]
    fn mke2fs_version_is_read_from_its_banner() {
        assert_eq!(
            mke2fs_version("mke2fs 1.47.0 (5-Feb-2023)\n\tUsing EXT2FS Library version 1.47.0\n")
                .as_deref(),
            Some("1.47.0")
        );
        assert_eq!(mke2fs_version("nothing"), None);
    }
}
