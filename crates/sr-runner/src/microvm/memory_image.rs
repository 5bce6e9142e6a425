//! A QEMU snapshot's guest memory image (`memory.bin`, docs/microvm.md "Snapshots"): the
//! guest's RAM as a sparse file of the RAM's size, holding only its non-zero pages, and the
//! digest that names those pages.
//!
//! The image is copied page by page, never through QEMU's migration stream: a snapshot-shaped
//! VM's RAM is a descriptor the runner made (`memory-backend-file` on `/proc/self/fd/N`) and
//! QEMU migrates it with `x-ignore-shared`, so the stream holds only the devices. Saving copies
//! the RAM's non-zero pages into the image; restoring copies them into a fresh descriptor
//! before QEMU loads the devices. A copy skips the holes (`SEEK_DATA`) and the zero pages,
//! which are most of a guest's RAM, and hashes what it copies in the same pass.
//!
//! The digest (`sha256:<hex>`) is over each non-zero page in offset order, as its offset
//! (8 bytes, little-endian) followed by its 4096 bytes. It names the memory whatever the file
//! system made of the holes: a copy of the image that filled them with zeros has the same one.

use std::fs::File;
use std::os::unix::fs::FileExt;

use nix::unistd::{Whence, lseek};
use sha2::{Digest, Sha256};

/// The unit the image is cut into (x86's page).
pub const PAGE: usize = 4096;
/// How much is read at a time.
const CHUNK: usize = 1 << 20;

/// What a copy of the non-zero pages passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// `sha256:<hex>` of the pages (see the module doc).
    pub sha256: String,
    /// How many bytes of non-zero pages.
    pub bytes: u64,
}

/// A fresh guest RAM of `size` bytes: an anonymous shared memory file (all holes), whose
/// descriptor QEMU maps shared, as the vsock backend needs.
pub fn guest_ram(size: u64) -> std::io::Result<File> {
    let fd = nix::sys::memfd::memfd_create(
        c"safe-run-guest-ram",
        nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    let file = File::from(fd);
    file.set_len(size)?;
    Ok(file)
}

/// Copies each non-zero page of `from` to the same offset of `to`, which must read as zeros
/// wherever `from` has none (a fresh [`guest_ram`], or a new file of the same size). Fails
/// unless `from` is exactly `size` bytes long.
pub fn copy_pages(from: &File, to: &File, size: u64) -> std::io::Result<Copied> {
    let len = from.metadata()?.len();
    if len != size {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the memory image is {len} bytes, the guest's RAM {size}"),
        ));
    }
    let mut hash = Sha256::new();
    let mut bytes = 0u64;
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    while let Some((start, end)) = next_data(from, pos, size)? {
        let mut at = start;
        while at < end {
            let n = ((end - at) as usize).min(CHUNK);
            from.read_exact_at(&mut buf[..n], at)?;
            bytes += copy_chunk(&buf[..n], at, to, &mut hash)?;
            at += n as u64;
        }
        pos = end;
    }
    Ok(Copied {
        sha256: format!("sha256:{}", hex::encode(hash.finalize())),
        bytes,
    })
}

/// The next range of `file` at or after `pos` that may hold data, widened to whole pages and
/// cut at `size`; None past the last one.
fn next_data(file: &File, pos: u64, size: u64) -> std::io::Result<Option<(u64, u64)>> {
    if pos >= size {
        return Ok(None);
    }
    let offset = |p: u64| i64::try_from(p).map_err(std::io::Error::other);
    let start = match lseek(file, offset(pos)?, Whence::SeekData) {
        Ok(s) => s as u64,
        Err(nix::errno::Errno::ENXIO) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let end = match lseek(file, offset(start)?, Whence::SeekHole) {
        Ok(e) => e as u64,
        Err(nix::errno::Errno::ENXIO) => size,
        Err(e) => return Err(e.into()),
    };
    let page = PAGE as u64;
    let start = start / page * page;
    let end = end.div_ceil(page).saturating_mul(page).min(size);
    Ok((start < end).then_some((start, end)))
}

/// Hashes and writes the non-zero pages of `chunk` (which starts at `offset`), each run of
/// them in one write; the bytes written.
fn copy_chunk(chunk: &[u8], offset: u64, to: &File, hash: &mut Sha256) -> std::io::Result<u64> {
    let mut written = 0u64;
    let mut run: Option<usize> = None;
    let pages = chunk.len().div_ceil(PAGE);
    for i in 0..=pages {
        let page = chunk.get(i * PAGE..((i + 1) * PAGE).min(chunk.len()));
        let data = page.filter(|p| !is_zero(p));
        if let Some(p) = data {
            hash.update((offset + (i * PAGE) as u64).to_le_bytes());
            hash.update(p);
            run.get_or_insert(i * PAGE);
            continue;
        }
        if let Some(from) = run.take() {
            let until = (i * PAGE).min(chunk.len());
            to.write_all_at(&chunk[from..until], offset + from as u64)?;
            written += (until - from) as u64;
        }
    }
    Ok(written)
}

/// Whether a page is all zeros (or-ing words, which the compiler vectorises, instead of
/// stopping at the first non-zero byte).
fn is_zero(page: &[u8]) -> bool {
    let words = page.chunks_exact(8);
    let rest = words.remainder();
    // A chunk that were somehow not 8 bytes would count as non-zero: copied, never lost.
    words.fold(0u64, |acc, w| {
        acc | u64::from_ne_bytes(w.try_into().unwrap_or([1; 8]))
    }) == 0
        && rest.iter().all(|b| *b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(size: u64, pages: &[(u64, u8)]) -> File {
        let f = tempfile::tempfile().unwrap();
        f.set_len(size).unwrap();
        for (index, byte) in pages {
            f.write_all_at(&vec![*byte; PAGE], index * PAGE as u64)
                .unwrap();
        }
        f
    }

    fn read_all(f: &File, size: u64) -> Vec<u8> {
        let mut v = vec![0u8; size as usize];
        f.read_exact_at(&mut v, 0).unwrap();
        v
    }

    #[test]
    fn only_non_zero_pages_are_copied_to_their_offsets() {
        let size = 64 * PAGE as u64;
        // Page 5 is written but zero: data to the file system, nothing to the image.
        let from = image(size, &[(1, 7), (2, 8), (5, 0), (63, 9)]);
        let to = guest_ram(size).unwrap();
        let copied = copy_pages(&from, &to, size).unwrap();
        assert_eq!(copied.bytes, 3 * PAGE as u64);
        assert_eq!(read_all(&to, size), read_all(&from, size));
    }

    #[test]
    fn the_digest_names_the_pages_not_the_holes() {
        let size = 16 * PAGE as u64;
        let sparse = image(size, &[(3, 1)]);
        let dense = image(size, &[(3, 1)]);
        // The same memory with its zeros written out.
        dense.write_all_at(&vec![0u8; 3 * PAGE], 0).unwrap();
        dense
            .write_all_at(&vec![0u8; 12 * PAGE], 4 * PAGE as u64)
            .unwrap();
        let sink = || guest_ram(size).unwrap();
        let a = copy_pages(&sparse, &sink(), size).unwrap();
        let b = copy_pages(&dense, &sink(), size).unwrap();
        assert_eq!(a, b);
        // One byte elsewhere is another memory.
        dense.write_all_at(&[1], 5 * PAGE as u64 + 17).unwrap();
        let c = copy_pages(&dense, &sink(), size).unwrap();
        assert_ne!(a.sha256, c.sha256);
        // And the same page at another offset too.
        let moved = image(size, &[(4, 1)]);
        assert_ne!(a.sha256, copy_pages(&moved, &sink(), size).unwrap().sha256);
    }

    #[test]
    fn an_image_of_another_size_is_refused() {
        let from = image(8 * PAGE as u64, &[(1, 1)]);
        let to = guest_ram(16 * PAGE as u64).unwrap();
        let e = copy_pages(&from, &to, 16 * PAGE as u64).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    }

    #[test]
    fn runs_across_chunks_and_an_unaligned_tail_copy_whole() {
        let size = (CHUNK as u64) * 3;
        let mut pages: Vec<(u64, u8)> = (200..600).map(|i| (i, (i % 251) as u8 + 1)).collect();
        pages.push((size / PAGE as u64 - 1, 3));
        let from = image(size, &pages);
        let to = guest_ram(size).unwrap();
        let copied = copy_pages(&from, &to, size).unwrap();
        assert_eq!(copied.bytes, 401 * PAGE as u64);
        assert_eq!(read_all(&to, size), read_all(&from, size));
    }
}
