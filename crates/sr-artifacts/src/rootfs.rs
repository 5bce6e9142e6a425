//! The root filesystem's pure parts: the files safe-run writes into the tree, busybox's applet
//! links, the image's size, its UUID and hash seed, and the `mkfs.ext4` command line.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::host::Cmd;

/// The uid and gid of the unprivileged user execs run as when a policy names none. It is
/// `sr_compiler::DEFAULT_ID` (a test in sr-cli keeps the two equal).
pub const SANDBOX_ID: u32 = 1000;

/// The unprivileged user's name.
pub const SANDBOX_USER: &str = "sandbox";

/// The ext4 block size.
pub const BLOCK: u64 = 4096;

/// The files safe-run writes into every rootfs: path (relative), mode, content.
pub fn etc_files() -> Vec<(&'static str, u32, String)> {
    vec![
        (
            "etc/passwd",
            0o644,
            format!(
                "root:x:0:0:root:/root:/bin/sh\n\
                 {SANDBOX_USER}:x:{SANDBOX_ID}:{SANDBOX_ID}:{SANDBOX_USER}:/home/{SANDBOX_USER}:/bin/sh\n"
            ),
        ),
        (
            "etc/group",
            0o644,
            format!("root:x:0:\n{SANDBOX_USER}:x:{SANDBOX_ID}:\n"),
        ),
        ("etc/hostname", 0o644, "safe-run\n".into()),
    ]
}

/// Where `/etc/resolv.conf` points: a file the guest agent writes on its `/run` tmpfs when the
/// guest has a network (`nameserver <gateway>`, the run's resolver).
pub const RESOLV_CONF_TARGET: &str = "/run/resolv.conf";

/// The empty directories of every rootfs, with their modes and owners.
pub fn empty_dirs() -> Vec<(String, u32, u32)> {
    vec![
        ("dev".into(), 0o755, 0),
        ("proc".into(), 0o555, 0),
        ("sys".into(), 0o555, 0),
        ("tmp".into(), 0o1777, 0),
        ("run".into(), 0o755, 0),
        ("root".into(), 0o700, 0),
        ("home".into(), 0o755, 0),
        (format!("home/{SANDBOX_USER}"), 0o755, SANDBOX_ID),
    ]
}

/// The applet links from `busybox --list-full` (`usr/bin/awk` per line): only those under
/// `bin`, `sbin`, `usr/bin`, `usr/sbin`, without `..`; sorted, each once.
pub fn applet_links(list: &str) -> Vec<String> {
    let mut out: Vec<String> = list
        .lines()
        .map(str::trim)
        .filter(|l| {
            ["bin/", "sbin/", "usr/bin/", "usr/sbin/"].iter().any(|p| {
                l.strip_prefix(p)
                    .is_some_and(|n| !n.is_empty() && !n.contains('/'))
            })
        })
        .filter(|l| !l.split('/').any(|c| c == ".." || c == "."))
        .map(str::to_owned)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// What the tree holds, for the image's size.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TreeStats {
    /// Files, directories, symlinks (each an inode).
    pub entries: u64,
    /// Blocks the data needs: each file rounded up to a block, one per directory and per
    /// long symlink.
    pub blocks: u64,
}

/// The image's size in KiB and its inode count: the data plus a tenth, the inode tables, a
/// journal and the allocation metadata, rounded up to a MiB; inodes for the entries plus a
/// tenth and 256 (room for the files the guest creates is in /tmp, a tmpfs, not here).
pub fn image_size(stats: TreeStats) -> (u64, u64) {
    let inodes = stats.entries + stats.entries / 10 + 256;
    let data = stats.blocks * BLOCK;
    let bytes = data + data / 10 + inodes * 256 + 16 * 1024 * 1024 + 8 * 1024 * 1024;
    let mib = bytes.div_ceil(1024 * 1024);
    (mib * 1024, inodes)
}

/// A UUID-shaped string from 16 bytes (version 4, RFC 4122 variant bits set).
pub fn uuid_from(bytes: &[u8; 16]) -> String {
    let mut b = *bytes;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The filesystem UUID and directory hash seed, both derived from `inputs_digest` (the
/// sha256 of everything the tree was built from), so the same inputs give the same image.
pub fn uuid_and_seed(inputs_digest: &[u8; 32]) -> (String, String) {
    let derive = |label: &[u8]| -> [u8; 16] {
        let d = Sha256::new()
            .chain_update(label)
            .chain_update(inputs_digest)
            .finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&d[..16]);
        out
    };
    (
        uuid_from(&derive(b"safe-run rootfs uuid\0")),
        uuid_from(&derive(b"safe-run rootfs hash_seed\0")),
    )
}

/// How to make the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MkfsPlan {
    /// The tree to copy in (`-d`).
    pub tree: String,
    /// The image file to write.
    pub image: String,
    /// Its size in KiB.
    pub size_kib: u64,
    /// Its inode count.
    pub inodes: u64,
    /// `-U`.
    pub uuid: String,
    /// `-E hash_seed=`.
    pub hash_seed: String,
    /// Every timestamp mke2fs writes (`E2FSPROGS_FAKE_TIME`; 0 would mean "now" to mke2fs,
    /// so the caller passes at least 1).
    pub fake_time: u64,
}

/// The `mkfs.ext4` command: fixed UUID and hash seed, root owned by 0:0, no lazy init, no
/// reserved blocks, the inode count and size given, the tree copied in.
pub fn mkfs_cmd(p: &MkfsPlan) -> Cmd {
    Cmd::new(
        "mkfs.ext4",
        [
            "-q".to_owned(),
            "-F".to_owned(),
            "-t".to_owned(),
            "ext4".to_owned(),
            "-b".to_owned(),
            BLOCK.to_string(),
            "-m".to_owned(),
            "0".to_owned(),
            "-N".to_owned(),
            p.inodes.to_string(),
            "-L".to_owned(),
            "safe-run-root".to_owned(),
            "-U".to_owned(),
            p.uuid.clone(),
            "-E".to_owned(),
            format!(
                "hash_seed={},root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0,nodiscard",
                p.hash_seed
            ),
            "-d".to_owned(),
            p.tree.clone(),
            p.image.clone(),
            format!("{}k", p.size_kib),
        ],
    )
    .env("E2FSPROGS_FAKE_TIME", &p.fake_time.to_string())
}

/// The `debugfs -w -f` script that sets every inode's change and access times to `epoch`.
/// mke2fs -d copies each file's ctime from the tree, which no one can set (it is when the work
/// tree was written), and directories' atimes move when the build reads them (relatime), so
/// both are rewritten afterwards. `paths` are absolute inside the image; `None` when
/// one cannot be quoted for debugfs (a `"` or a line break in a name).
pub fn ctime_script(paths: &[String], epoch: u64) -> Option<String> {
    let mut s = String::new();
    for p in paths {
        if p.contains(['"', '\n', '\r']) {
            return None;
        }
        s.push_str(&format!("sif \"{p}\" ctime @{epoch}\n"));
        s.push_str(&format!("sif \"{p}\" atime @{epoch}\n"));
    }
    Some(s)
}

/// Every path in the tree, absolute inside the image (`/`, `/bin`, ...), sorted.
pub fn tree_paths(root: &Path) -> std::io::Result<Vec<String>> {
    let mut out = vec!["/".to_owned()];
    let mut stack = vec![(root.to_owned(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let name = format!("{prefix}/{}", e.file_name().to_string_lossy());
            if e.file_type()?.is_dir() {
                stack.push((e.path(), name.clone()));
            }
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// The tree's statistics (symlinks are not followed).
pub fn tree_stats(root: &Path) -> std::io::Result<TreeStats> {
    let mut s = TreeStats::default();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        s.entries += 1;
        s.blocks += 1;
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(e.path());
            } else {
                s.entries += 1;
                let len = e.metadata()?.len();
                if ft.is_symlink() {
                    s.blocks += u64::from(len > 59);
                } else {
                    s.blocks += len.div_ceil(BLOCK);
                }
            }
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_has_root_and_the_sandbox_user() {
        let files = etc_files();
        let passwd = &files.iter().find(|f| f.0 == "etc/passwd").unwrap().2;
        assert!(passwd.contains("root:x:0:0:"));
        assert!(passwd.contains("sandbox:x:1000:1000:sandbox:/home/sandbox:/bin/sh"));
        let group = &files.iter().find(|f| f.0 == "etc/group").unwrap().2;
        assert_eq!(group, "root:x:0:\nsandbox:x:1000:\n");
    }

    #[test]
    fn applet_links_are_filtered_sorted_and_unique() {
        let list =
            "usr/bin/[\nsbin/acpid\nlinuxrc\nbin/sh\nbin/sh\n../etc/x\nbin/../x\nusr/bin/awk\n";
        assert_eq!(
            applet_links(list),
            vec!["bin/sh", "sbin/acpid", "usr/bin/[", "usr/bin/awk"]
        );
    }

    #[test]
    fn the_size_leaves_room() {
        let (kib, inodes) = image_size(TreeStats {
            entries: 1000,
            blocks: 10_000,
        });
        assert_eq!(inodes, 1356);
        assert_eq!(kib % 1024, 0);
        assert!(kib * 1024 > 10_000 * BLOCK + 16 * 1024 * 1024);
    }

    #[test]
    fn uuids_are_stable_and_well_formed() {
        let (a, b) = uuid_and_seed(&[7u8; 32]);
        assert_eq!(uuid_and_seed(&[7u8; 32]), (a.clone(), b.clone()));
        assert_ne!(a, b);
        assert_ne!(uuid_and_seed(&[8u8; 32]).0, a);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert_eq!(
            uuid_from(&[0u8; 16]),
            "00000000-0000-4000-8000-000000000000"
        );
    }

    #[test]
    fn mkfs_gets_every_reproducibility_knob() {
        let cmd = mkfs_cmd(&MkfsPlan {
            tree: "/w/tree".into(),
            image: "/o/.rootfs.ext4.tmp".into(),
            size_kib: 65536,
            inodes: 2000,
            uuid: "u".into(),
            hash_seed: "s".into(),
            fake_time: 1,
        });
        assert_eq!(
            cmd.display(),
            "mkfs.ext4 -q -F -t ext4 -b 4096 -m 0 -N 2000 -L safe-run-root -U u \
             -E hash_seed=s,root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0,nodiscard \
             -d /w/tree /o/.rootfs.ext4.tmp 65536k"
        );
        assert_eq!(cmd.env, vec![("E2FSPROGS_FAKE_TIME".into(), "1".into())]);
    }

    #[test]
    fn the_ctime_script_covers_every_path() {
        let paths = vec!["/".to_owned(), "/usr/bin/[".to_owned()];
        assert_eq!(
            ctime_script(&paths, 7).unwrap(),
            "sif \"/\" ctime @7\nsif \"/\" atime @7\n\
             sif \"/usr/bin/[\" ctime @7\nsif \"/usr/bin/[\" atime @7\n"
        );
        assert_eq!(ctime_script(&["/a\"b".to_owned()], 0), None);
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("b")).unwrap();
        std::fs::write(d.path().join("b/f"), "x").unwrap();
        std::fs::write(d.path().join("a"), "x").unwrap();
        assert_eq!(tree_paths(d.path()).unwrap(), vec!["/", "/a", "/b", "/b/f"]);
    }

    #[test]
    fn stats_count_entries_and_blocks() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("a")).unwrap();
        std::fs::write(d.path().join("a/f"), vec![0u8; 5000]).unwrap();
        std::os::unix::fs::symlink("f", d.path().join("a/l")).unwrap();
        let s = tree_stats(d.path()).unwrap();
        assert_eq!(
            s,
            TreeStats {
                entries: 4,
                blocks: 4
            }
        );
    }
}
