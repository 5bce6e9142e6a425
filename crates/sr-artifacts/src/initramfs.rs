//! The initramfs: its layout (the contract with the guest agent) and its bytes, a gzipped
//! `newc` cpio written the same way every time.
//!
//! Layout:
//! - `/init`: the guest agent (static), mode 0755;
//! - `/lib/modules/<release>/<path>.ko`: the modules, decompressed;
//! - `/etc/safe-run/modules`: their absolute paths, one a line, in load order;
//! - empty `/dev`, `/proc`, `/sys`, `/newroot`.
//!
//! The cpio records come from the `cpio` crate's `newc` builder with every field set here:
//! entries sorted by name, inode numbers 1, 2, 3... in that order, uid/gid 0, one mtime,
//! device numbers 0. gzip (flate2) has no file name and mtime 0.

use std::collections::BTreeMap;
use std::io::Write;

use flate2::{Compression, GzBuilder};

use crate::ArtifactError;

/// The agent's module list, inside the initramfs.
pub const MODULES_LIST: &str = "etc/safe-run/modules";

/// One initramfs entry's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory (mode 0755).
    Dir,
    /// A regular file with its permission bits.
    File {
        /// Permission bits (0755, 0644).
        mode: u32,
        /// The bytes.
        data: Vec<u8>,
    },
}

/// The entries, by path without a leading `/` (sorted by the map).
pub type Layout = BTreeMap<String, Node>;

/// The initramfs layout for `agent`, and `modules` (paths relative to
/// `/lib/modules/<release>`, already plain `.ko`, in load order, with their bytes).
pub fn layout(agent: Vec<u8>, release: &str, modules: Vec<(String, Vec<u8>)>) -> Layout {
    let mut l = Layout::new();
    for d in ["dev", "proc", "sys", "newroot"] {
        l.insert(d.into(), Node::Dir);
    }
    add_file(&mut l, "init", 0o755, agent);
    let mut list = String::new();
    for (rel, data) in modules {
        let path = format!("lib/modules/{release}/{rel}");
        list.push('/');
        list.push_str(&path);
        list.push('\n');
        add_file(&mut l, &path, 0o644, data);
    }
    add_file(&mut l, MODULES_LIST, 0o644, list.into_bytes());
    l
}

fn add_file(l: &mut Layout, path: &str, mode: u32, data: Vec<u8>) {
    let mut parent = path;
    while let Some((p, _)) = parent.rsplit_once('/') {
        l.insert(p.to_owned(), Node::Dir);
        parent = p;
    }
    l.insert(path.to_owned(), Node::File { mode, data });
}

/// The uncompressed `newc` archive of `layout`, every entry's mtime `mtime`.
pub fn cpio_bytes(layout: &Layout, mtime: u32) -> Result<Vec<u8>, ArtifactError> {
    let mut out = Vec::new();
    let io = |e| ArtifactError::io("initramfs", std::path::Path::new("initramfs.img"), e);
    for (ino, (name, node)) in (1u32..).zip(layout) {
        let (mode, nlink, data): (u32, u32, &[u8]) = match node {
            Node::Dir => (0o040_755, 2, &[]),
            Node::File { mode, data } => (0o100_000 | (mode & 0o7777), 1, data),
        };
        let size = u32::try_from(data.len()).map_err(|_| {
            ArtifactError::content("initramfs", format!("{name} is larger than 4 GiB"))
        })?;
        let mut w = cpio::newc::Builder::new(name)
            .ino(ino)
            .mode(mode)
            .uid(0)
            .gid(0)
            .nlink(nlink)
            .mtime(mtime)
            .dev_major(0)
            .dev_minor(0)
            .rdev_major(0)
            .rdev_minor(0)
            .write(&mut out, size);
        w.write_all(data).map_err(io)?;
        w.finish().map_err(io)?;
    }
    cpio::newc::trailer(&mut out).map_err(io)?;
    Ok(out)
}

/// gzip with no name, mtime 0, best compression: the same bytes for the same input.
pub fn gzip(data: &[u8]) -> Result<Vec<u8>, ArtifactError> {
    let io = |e| ArtifactError::io("initramfs", std::path::Path::new("initramfs.img"), e);
    let mut enc = GzBuilder::new()
        .mtime(0)
        .operating_system(3)
        .write(Vec::new(), Compression::best());
    enc.write_all(data).map_err(io)?;
    enc.finish().map_err(io)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn sample() -> Layout {
        layout(
            b"\x7fELFagent".to_vec(),
            "6.1.0-9-cloud-amd64",
            vec![
                (
                    "kernel/drivers/virtio/virtio_ring.ko".into(),
                    b"ring".to_vec(),
                ),
                ("kernel/drivers/virtio/virtio.ko".into(), b"virtio".to_vec()),
            ],
        )
    }

    #[test]
    fn the_layout_is_the_agent_contract() {
        let l = sample();
        let names: Vec<&str> = l.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            vec![
                "dev",
                "etc",
                "etc/safe-run",
                "etc/safe-run/modules",
                "init",
                "lib",
                "lib/modules",
                "lib/modules/6.1.0-9-cloud-amd64",
                "lib/modules/6.1.0-9-cloud-amd64/kernel",
                "lib/modules/6.1.0-9-cloud-amd64/kernel/drivers",
                "lib/modules/6.1.0-9-cloud-amd64/kernel/drivers/virtio",
                "lib/modules/6.1.0-9-cloud-amd64/kernel/drivers/virtio/virtio.ko",
                "lib/modules/6.1.0-9-cloud-amd64/kernel/drivers/virtio/virtio_ring.ko",
                "newroot",
                "proc",
                "sys",
            ]
        );
        assert_eq!(
            l["etc/safe-run/modules"],
            Node::File {
                mode: 0o644,
                data: b"/lib/modules/6.1.0-9-cloud-amd64/kernel/drivers/virtio/virtio_ring.ko\n\
/lib/modules/6.1.0-9-cloud-amd64/kernel/drivers/virtio/virtio.ko\n"
                    .to_vec()
            },
            "load order kept, absolute paths"
        );
        assert!(matches!(l["init"], Node::File { mode: 0o755, .. }));
    }

    #[test]
    fn the_archive_reads_back_with_fixed_metadata() {
        let bytes = cpio_bytes(&sample(), 0).unwrap();
        let mut rest: &[u8] = &bytes;
        let mut seen = Vec::new();
        loop {
            let mut r = cpio::NewcReader::new(rest).unwrap();
            let e = r.entry().clone();
            if e.is_trailer() {
                break;
            }
            seen.push((
                e.name().to_owned(),
                e.ino(),
                e.mode(),
                e.uid(),
                e.gid(),
                e.mtime(),
            ));
            let mut data = Vec::new();
            r.read_to_end(&mut data).unwrap();
            if e.name() == "init" {
                assert_eq!(data, b"\x7fELFagent");
            }
            rest = r.finish().unwrap();
        }
        assert_eq!(seen.len(), 16);
        assert_eq!(seen[0], ("dev".into(), 1, 0o040755, 0, 0, 0));
        assert_eq!(seen[4], ("init".into(), 5, 0o100755, 0, 0, 0));
    }

    #[test]
    fn the_same_input_gives_the_same_bytes() {
        let a = gzip(&cpio_bytes(&sample(), 0).unwrap()).unwrap();
        let b = gzip(&cpio_bytes(&sample(), 0).unwrap()).unwrap();
        assert_eq!(a, b);
        // gzip header: magic, deflate, no flags (no name), mtime 0.
        assert_eq!(&a[..8], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0]);
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&a[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, cpio_bytes(&sample(), 0).unwrap());
    }
}
