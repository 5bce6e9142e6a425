//! Reading what apt says: the package a metapackage depends on, a recursive dependency list,
//! and the index record (version, architecture, sha256) of one package.

use crate::ArtifactError;

/// The arguments of `apt-cache depends` that keep only hard dependencies.
pub const HARD_DEPENDS_ONLY: &[&str] = &[
    "--no-recommends",
    "--no-suggests",
    "--no-conflicts",
    "--no-breaks",
    "--no-replaces",
    "--no-enhances",
];

/// The first real package of a `Depends:` line in `apt-cache depends PKG` output (the kernel
/// image `linux-image-cloud-amd64` points at).
pub fn first_depends(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| !p.starts_with('<') && !p.is_empty())
        .map(str::to_owned)
}

/// The packages of `apt-cache depends --recurse ...` output: its unindented lines, without
/// virtual packages (`<debconf-2.0>`) and foreign-architecture ones (`libc6:i386`), sorted
/// and each once.
pub fn recursive_packages(text: &str) -> Vec<String> {
    let mut out: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with(char::is_whitespace))
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('<') && !l.contains(':'))
        .map(str::to_owned)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// One package as apt's index describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageInfo {
    /// `Package`.
    pub package: String,
    /// `Version` (with any epoch).
    pub version: String,
    /// `Architecture`.
    pub architecture: String,
    /// `SHA256` of the `.deb`.
    pub sha256: String,
}

impl PackageInfo {
    /// The cache's file name: `name_version_arch.deb`, the epoch's `:` as `%3a` (as apt writes).
    pub fn cache_file_name(&self) -> String {
        format!(
            "{}_{}_{}.deb",
            self.package,
            self.version.replace(':', "%3a"),
            self.architecture
        )
    }
}

/// The first record of `apt-cache show --no-all-versions PKG` output.
pub fn parse_show(text: &str) -> Result<PackageInfo, ArtifactError> {
    let record = text.split("\n\n").next().unwrap_or_default();
    let field = |name: &str| -> Result<String, ArtifactError> {
        record
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                ArtifactError::content("packages", format!("apt-cache show gave no {name} field"))
            })
    };
    let info = PackageInfo {
        package: field("Package")?,
        version: field("Version")?,
        architecture: field("Architecture")?,
        sha256: field("SHA256")?.to_ascii_lowercase(),
    };
    let safe = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.~:_".contains(c))
    };
    if !safe(&info.package) || !safe(&info.version) || !safe(&info.architecture) {
        return Err(ArtifactError::content(
            "packages",
            format!("apt-cache show gave an unusable record: {info:?}"),
        ));
    }
    if info.sha256.len() != 64 || !info.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ArtifactError::content(
            "packages",
            format!("apt-cache show gave a bad SHA256 for {}", info.package),
        ));
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metapackage_points_at_the_versioned_kernel() {
        let text = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-57-cloud-amd64\n";
        assert_eq!(
            first_depends(text).as_deref(),
            Some("linux-image-6.1.0-57-cloud-amd64")
        );
        assert_eq!(first_depends("x\n  Depends: <virt>\n"), None);
        assert_eq!(first_depends(""), None);
    }

    #[test]
    fn recursive_lists_keep_real_packages_once() {
        let text = "\
python3-minimal
  PreDepends: python3.11-minimal
  Depends: dpkg
python3.11-minimal
  PreDepends: libc6
dpkg
  Depends: tar
<debconf-2.0>
libc6:i386
libc6
tar
dpkg
";
        assert_eq!(
            recursive_packages(text),
            vec![
                "dpkg",
                "libc6",
                "python3-minimal",
                "python3.11-minimal",
                "tar"
            ]
        );
    }

    const SHOW: &str = "\
Package: busybox-static
Source: busybox (1:1.35.0-4+deb12u1)
Version: 1:1.35.0-4+deb12u1+b1
Architecture: amd64
Filename: pool/main/b/busybox/busybox-static_1.35.0-4+deb12u1+b1_amd64.deb
SHA256: 3D3FDBE91D4660C873E14B092C213FE81C1DA6362DAA236EB25D0171EB108744
Description: Standalone rescue shell

Package: busybox-static
Version: 1:1.30
";

    #[test]
    fn show_gives_the_first_record() {
        let info = parse_show(SHOW).unwrap();
        assert_eq!(info.package, "busybox-static");
        assert_eq!(info.version, "1:1.35.0-4+deb12u1+b1");
        assert_eq!(info.architecture, "amd64");
        assert_eq!(
            info.sha256,
            "3d3fdbe91d4660c873e14b092c213fe81c1da6362daa236eb25d0171eb108744"
        );
        assert_eq!(
            info.cache_file_name(),
            "busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb"
        );
    }

    #[test]
    fn show_without_a_field_or_with_odd_values_is_an_error() {
        assert!(parse_show("Package: x\nVersion: 1\nArchitecture: amd64\n").is_err());
        let bad = SHOW.replace("Version: 1:1.35.0-4+deb12u1+b1", "Version: ../../x");
        assert!(parse_show(&bad).is_err());
        let bad = SHOW.replace("SHA256: 3D3F", "SHA256: ZZZZ");
        assert!(parse_show(&bad).is_err());
    }
}
