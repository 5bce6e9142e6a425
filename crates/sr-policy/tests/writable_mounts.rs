//! The writable-mount check through the HostFs seam: a source the workload's host uid/gid
//! cannot write is a warning that says how to fix it; the policy stays valid.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use sr_policy::rules::{HostFs, writable_by};
use sr_policy::{OperatorConfig, SourceFormat, validate_with};

/// One directory, `/srv/out`, with the given owner and mode.
struct OneDir(u32, u32, u32);

impl HostFs for OneDir {
    fn kind(&self, path: &Path) -> Option<(bool, bool, bool)> {
        (path == Path::new("/srv/out")).then_some((false, true, false))
    }
    fn canonicalize(&self, path: &Path) -> Option<PathBuf> {
        Some(path.to_path_buf())
    }
    fn owner_mode(&self, path: &Path) -> Option<(u32, u32, u32)> {
        (path == Path::new("/srv/out")).then_some((self.0, self.1, self.2))
    }
}

const POLICY: &str = "version: 1\nname: t\nruntime: { command: /bin/true, args: [] }\nmounts:\n  - { source: /srv/out, target: /out, readOnly: false }\n";

fn warnings(fs: &OneDir, config: &OperatorConfig) -> Vec<String> {
    let v = validate_with(POLICY, SourceFormat::Yaml, Path::new("/"), config, fs).unwrap();
    v.warnings.iter().map(ToString::to_string).collect()
}

#[test]
fn a_root_owned_writable_source_warns_with_the_fix() {
    let config = OperatorConfig::default();
    let w = warnings(&OneDir(0, 0, 0o755), &config);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("SR-POL-003 at mounts[0].source (line 5"),
        "{}",
        w[0]
    );
    assert!(w[0].contains("owner 0:0, mode 755"), "{}", w[0]);
    assert!(w[0].contains("chown 65534:65534 /srv/out"), "{}", w[0]);
    // Owned by the workload's uid, group-writable for its gid, world-writable: no warning.
    assert!(warnings(&OneDir(65534, 0, 0o755), &config).is_empty());
    assert!(warnings(&OneDir(0, 65534, 0o775), &config).is_empty());
    assert!(warnings(&OneDir(0, 0, 0o1777), &config).is_empty());
    // The operator's own workload ids are the ones checked.
    let custom = OperatorConfig {
        workload_host_uid: 2000,
        workload_host_gid: 2000,
        ..OperatorConfig::default()
    };
    let w = warnings(&OneDir(65534, 65534, 0o755), &custom);
    assert!(w[0].contains("chown 2000:2000"), "{w:?}");
}

#[test]
fn permission_bits_are_read_like_the_kernel_reads_them() {
    // The owner class wins even when it grants less than others.
    assert!(!writable_by(7, 0, 0o577, true, 7, 9));
    // A directory needs write and search; a file only write.
    assert!(!writable_by(7, 0, 0o600, true, 7, 9));
    assert!(writable_by(7, 0, 0o600, false, 7, 9));
    assert!(writable_by(1, 9, 0o730, true, 7, 9));
    assert!(writable_by(1, 2, 0o703, true, 7, 9));
    assert!(!writable_by(1, 2, 0o775, true, 7, 9));
}
