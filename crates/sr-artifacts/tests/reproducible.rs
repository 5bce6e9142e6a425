//! Builds the `minimal` profile twice, with real apt, dpkg-deb, depmod and mkfs.ext4, into two
//! temporary directories, and compares the bytes. Needs root, the tools and apt's lists; it
//! skips (with a note) where they are missing, except under CI=true, where it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn cannot_run() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root".into());
    }
    for tool in [
        "apt-get",
        "apt-cache",
        "dpkg-deb",
        "depmod",
        "mkfs.ext4",
        "debugfs",
        "cc",
    ] {
        if !have(tool) {
            return Some(format!("{tool} is missing"));
        }
    }
    None
}

/// A static stand-in agent: a tiny C program built with `cc -static`.
fn stand_in_agent(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("agent.c");
    std::fs::write(&src, "int main(void) { return 0; }\n").unwrap();
    let out = dir.join("safe-run-agent");
    let status = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .unwrap();
    assert!(status.success(), "cc -static failed (libc6-dev?)");
    out
}

#[test]
fn two_minimal_builds_are_byte_identical() {
    if let Some(why) = cannot_run() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "cannot run under CI: {why}"
        );
        eprintln!("skipped: {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let agent = stand_in_agent(tmp.path());
    let cache = tmp.path().join("debs");
    let mut manifests = Vec::new();
    for name in ["one", "two"] {
        let opts = sr_artifacts::Options {
            out_dir: tmp.path().join(name),
            agent: agent.clone(),
            profile: sr_artifacts::Profile::Minimal,
            cache_dir: cache.clone(),
            source_date_epoch: 0,
        };
        let m = sr_artifacts::build(&opts, &sr_artifacts::RealHost, &mut |l| eprintln!("{l}"))
            .unwrap_or_else(|e| panic!("{}", e.to_diagnostic()));
        manifests.push(m);
    }
    assert_eq!(manifests[0], manifests[1]);
    for f in ["vmlinuz", "initramfs.img", "rootfs.ext4", "manifest.json"] {
        let a = std::fs::read(tmp.path().join("one").join(f)).unwrap();
        let b = std::fs::read(tmp.path().join("two").join(f)).unwrap();
        assert!(a == b, "{f} differs between two builds");
    }
    let m = &manifests[0];
    assert!(m.modules.iter().any(|p| p.ends_with("/virtio_blk.ko")));
    assert!(
        m.modules
            .iter()
            .any(|p| p.ends_with("/vmw_vsock_virtio_transport.ko"))
    );
    assert_eq!(m.sources.len(), 2, "{:?}", m.sources);
}

#[test]
fn a_dynamic_agent_is_refused_with_sr_art_001() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = sr_artifacts::Options {
        out_dir: tmp.path().join("out"),
        agent: std::env::current_exe().unwrap(),
        profile: sr_artifacts::Profile::Minimal,
        cache_dir: tmp.path().join("debs"),
        source_date_epoch: 0,
    };
    struct NoCommands;
    impl sr_artifacts::Host for NoCommands {
        fn run(
            &self,
            _: &'static str,
            cmd: &sr_artifacts::Cmd,
        ) -> Result<Vec<u8>, sr_artifacts::ArtifactError> {
            panic!("ran {}", cmd.display())
        }
    }
    let err = sr_artifacts::build(&opts, &NoCommands, &mut |_| {}).unwrap_err();
    let d = err.to_diagnostic();
    assert_eq!(d.code.as_str(), "SR-ART-001");
    assert!(d.message.contains("dynamically linked"), "{d}");
    assert!(d.hint.contains("crt-static"), "{d}");
}
