//! The digest cache of the host files a run records as inputs (the workload's binary, a
//! microVM's kernel, initramfs and root image): owns
//! `<run base>/.digests/` and the rule deciding when a digest may be reused instead of hashing
//! the file again.
//!
//! Hashing the binary is on the path of every run (about 4 ms for the 6.8 MB python3 on the
//! development VM, more than bubblewrap's whole start-up budget left). A digest is reused only
//! for the same file in the same state: the entry's name is derived from the file's
//! `(dev, ino, size, mtime, ctime)`, all nanoseconds. Every write through the kernel moves
//! `mtime` and `ctime`, and `ctime` cannot be set from user space (`utimensat` sets it to now),
//! so a changed file is a different entry. Two holes are closed by [`settled`]: a file
//! changed twice within a timestamp tick (coarse-timestamp filesystems) could keep its identity,
//! so only a file whose times lie [`SETTLE_NS`] before the hash started is cached; and a file
//! changed while it was hashed is never cached (its identity is compared before and after).
//! What stays trusted is what the kernel reports about the file and the root-owned cache
//! directory (anyone who can write it can also replace the signing key). The
//! `artifact.hashed` event of a reused digest says so (`"fromCache": true`): docs/evidence.md.
//!
//! The cache is bounded: a write that leaves more than [`MAX_ENTRIES`] files removes the least
//! recently written down to [`KEEP_AFTER_PRUNE`] ([`to_prune`]). Entries are only written on a
//! miss, so the check is off the path of a run whose binaries are cached; a workload that is a
//! new file every run (a freshly built binary) no longer grows the directory for ever. A hot
//! entry that is pruned costs one hash, then is cached again.
//!
//! The rule, the entry names, the entry format and the pruning choice are pure; reading and
//! writing entries is behind [`EntryStore`].

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The cache directory under the run base.
pub const DIGESTS_DIR: &str = ".digests";

/// How much older than the start of its hashing a file's `mtime` and `ctime` must be for its
/// digest to be cached: above the coarsest timestamp tick of the filesystems a binary lives on
/// (1 s on ext3 and small-inode ext4, 2 s on FAT).
pub const SETTLE_NS: i128 = 3_000_000_000;

const PREFIX: &str = "sha256:";

/// The most files the cache directory keeps (entries are 72 bytes; the bound is on inodes).
pub const MAX_ENTRIES: usize = 4096;

/// How many of the most recently written files a prune keeps.
pub const KEEP_AFTER_PRUNE: usize = 3072;

/// The files to remove from a cache directory holding `files` (name, last write in ns since
/// the epoch): none while there are at most `max`; else all but the `keep` most recently
/// written (ties broken by name, so the choice is the same whatever order the directory lists
/// them in).
pub fn to_prune(mut files: Vec<(String, i128)>, max: usize, keep: usize) -> Vec<String> {
    if files.len() <= max {
        return Vec::new();
    }
    files.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    files.into_iter().skip(keep).map(|(name, _)| name).collect()
}

/// What identifies a file's state, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, ns since the epoch.
    pub mtime_ns: i128,
    /// Last status change, ns since the epoch.
    pub ctime_ns: i128,
}

impl Identity {
    /// The identity in `meta`.
    pub fn of(meta: &Metadata) -> Identity {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// The entry name of a file state: 64 hex digits (SHA-256 of the identity, versioned).
pub fn entry_name(id: &Identity) -> String {
    let key = format!(
        "v1 {} {} {} {} {}",
        id.dev, id.ino, id.size, id.mtime_ns, id.ctime_ns
    );
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Whether the digest of a file in state `id`, whose hashing started at `hashed_at_ns`, may be
/// cached: both its times lie at least [`SETTLE_NS`] before that (a time in the future, after
/// a clock step back, never qualifies).
pub fn settled(id: &Identity, hashed_at_ns: i128) -> bool {
    id.mtime_ns.max(id.ctime_ns) <= hashed_at_ns - SETTLE_NS
}

/// The bytes of an entry holding `digest`.
pub fn render_entry(digest: &str) -> Vec<u8> {
    format!("{digest}\n").into_bytes()
}

/// The digest in an entry, if the entry is exactly one well-formed `sha256:` line (a torn or
/// foreign entry is a miss, and is replaced).
pub fn parse_entry(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?.strip_suffix('\n')?;
    let hex = text.strip_prefix(PREFIX)?;
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| text.to_owned())
}

/// Where entries live.
pub trait EntryStore {
    /// The entry `name`, if there is one.
    fn read(&self, name: &str) -> Option<Vec<u8>>;
    /// Stores `bytes` as entry `name`, replacing it whole (a failure only costs a later
    /// hash).
    fn write(&self, name: &str, bytes: &[u8]);
}

/// Entries as files in a directory (0700, created on first write).
pub struct DirStore {
    dir: PathBuf,
}

impl DirStore {
    /// The cache of the runs under `base`.
    pub fn under(base: &Path) -> DirStore {
        DirStore {
            dir: base.join(DIGESTS_DIR),
        }
    }
}

impl EntryStore for DirStore {
    fn read(&self, name: &str) -> Option<Vec<u8>> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.dir.join(name))
            .ok()?;
        let mut bytes = Vec::with_capacity(80);
        // An entry is one short line; a larger file is not one of ours.
        file.take(128).read_to_end(&mut bytes).ok()?;
        Some(bytes)
    }

    fn write(&self, name: &str, bytes: &[u8]) {
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&self.dir);
        // Written under a name of its own, then renamed over the entry: a reader sees the old
        // entry or the whole new one. Not synced: after a crash a torn entry is a miss.
        let tmp = self.dir.join(format!(".{name}.{}", std::process::id()));
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .and_then(|mut f| f.write_all(bytes))
            .and_then(|()| std::fs::rename(&tmp, self.dir.join(name)));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
            return;
        }
        self.prune();
    }
}

impl DirStore {
    /// Removes what [`to_prune`] picks, once the directory holds more than [`MAX_ENTRIES`]
    /// files: names are counted first, and only an oversized directory is stat'ed.
    fn prune(&self) {
        let Ok(listing) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let names: Vec<std::ffi::OsString> = listing.flatten().map(|e| e.file_name()).collect();
        if names.len() <= MAX_ENTRIES {
            return;
        }
        let files = names
            .into_iter()
            .filter_map(|name| {
                let meta = std::fs::symlink_metadata(self.dir.join(&name)).ok()?;
                let written =
                    i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
                Some((name.into_string().ok()?, written))
            })
            .collect();
        for name in to_prune(files, MAX_ENTRIES, KEEP_AFTER_PRUNE) {
            let _ = std::fs::remove_file(self.dir.join(name));
        }
    }
}

/// Where a digest came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The file was read and hashed now.
    Hashed,
    /// The file is in the state it was in when it was hashed before.
    Cache,
}

/// The `sha256:` digest of the file at `path`: from `store` when the file is in a state
/// hashed before, else by reading it (and then cached when [`settled`]). `now_ns` is the
/// wall clock in ns since the epoch.
pub fn digest(
    store: &dyn EntryStore,
    path: &Path,
    now_ns: impl Fn() -> i128,
) -> io::Result<(String, Source)> {
    let before = Identity::of(&std::fs::metadata(path)?);
    if let Some(d) = store
        .read(&entry_name(&before))
        .and_then(|b| parse_entry(&b))
    {
        return Ok((d, Source::Cache));
    }
    let started = now_ns();
    let file = File::open(path)?;
    let opened = Identity::of(&file.metadata()?);
    Ok((
        hash_and_cache(store, &file, opened, started)?,
        Source::Hashed,
    ))
}

/// The `sha256:` digest of the open `file` (what a VMM is handed, so that the digest is of the
/// very file it reads): from `store` when the file is in a state hashed before, else by
/// reading it from its current offset to its end (and then cached when [`settled`]).
pub fn digest_open(
    store: &dyn EntryStore,
    file: &File,
    now_ns: impl Fn() -> i128,
) -> io::Result<(String, Source)> {
    let opened = Identity::of(&file.metadata()?);
    if let Some(d) = store
        .read(&entry_name(&opened))
        .and_then(|b| parse_entry(&b))
    {
        return Ok((d, Source::Cache));
    }
    let started = now_ns();
    Ok((
        hash_and_cache(store, file, opened, started)?,
        Source::Hashed,
    ))
}

/// Hashes `file` (in state `opened` when opened) and caches the digest when the file did not
/// change while it was read and had settled before `started`.
fn hash_and_cache(
    store: &dyn EntryStore,
    mut file: &File,
    opened: Identity,
    started: i128,
) -> io::Result<String> {
    let digest = hash_reader(&mut file)?;
    let after = Identity::of(&file.metadata()?);
    if opened == after && settled(&after, started) {
        store.write(&entry_name(&after), &render_entry(&digest));
    }
    Ok(digest)
}

/// `sha256:` of everything `r` yields.
fn hash_reader(r: &mut dyn Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(buf.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(format!("{PREFIX}{}", hex::encode(hasher.finalize())))
}

/// The wall clock in ns since the epoch (0 if it is before it: nothing is then cached).
pub fn system_now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct MemStore(RefCell<BTreeMap<String, Vec<u8>>>);

    impl EntryStore for MemStore {
        fn read(&self, name: &str) -> Option<Vec<u8>> {
            self.0.borrow().get(name).cloned()
        }
        fn write(&self, name: &str, bytes: &[u8]) {
            self.0.borrow_mut().insert(name.to_owned(), bytes.to_vec());
        }
    }

    fn id() -> Identity {
        Identity {
            dev: 1,
            ino: 2,
            size: 3,
            mtime_ns: 10_000_000_000,
            ctime_ns: 11_000_000_000,
        }
    }

    #[test]
    fn every_field_of_the_identity_names_another_entry() {
        let base = entry_name(&id());
        assert_eq!(base.len(), 64);
        let changed = [
            Identity { dev: 9, ..id() },
            Identity { ino: 9, ..id() },
            Identity { size: 9, ..id() },
            Identity {
                mtime_ns: id().mtime_ns + 1,
                ..id()
            },
            Identity {
                ctime_ns: id().ctime_ns + 1,
                ..id()
            },
        ];
        for c in changed {
            assert_ne!(entry_name(&c), base, "{c:?}");
        }
    }

    #[test]
    fn only_files_unchanged_for_the_settle_time_are_cached() {
        let hashed_at = id().ctime_ns + SETTLE_NS;
        assert!(settled(&id(), hashed_at));
        assert!(!settled(&id(), hashed_at - 1));
        // An mtime set into the future (utimensat) keeps it uncached.
        let future = Identity {
            mtime_ns: hashed_at,
            ..id()
        };
        assert!(!settled(&future, hashed_at));
    }

    #[test]
    fn entries_must_be_exactly_one_digest_line() {
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(parse_entry(&render_entry(&d)), Some(d.clone()));
        assert_eq!(parse_entry(d.as_bytes()), None, "torn: no newline");
        assert_eq!(parse_entry(b""), None);
        assert_eq!(
            parse_entry(format!("sha256:{}\n", "AB".repeat(32)).as_bytes()),
            None
        );
        assert_eq!(parse_entry(format!("{d}\nx\n").as_bytes()), None);
        assert_eq!(
            parse_entry(format!("sha512:{}\n", "ab".repeat(32)).as_bytes()),
            None
        );
    }

    fn old_file(dir: &Path, bytes: &[u8]) -> PathBuf {
        let p = dir.join("bin");
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn a_settled_file_is_hashed_once_then_served_from_the_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let p = old_file(tmp.path(), b"hello");
        let store = MemStore::default();
        let later = || system_now_ns() + 2 * SETTLE_NS;
        let (d1, s1) = digest(&store, &p, later).unwrap();
        assert_eq!(s1, Source::Hashed);
        assert_eq!(
            d1,
            format!("sha256:{}", hex::encode(Sha256::digest(b"hello")))
        );
        let (d2, s2) = digest(&store, &p, later).unwrap();
        assert_eq!((d2, s2), (d1, Source::Cache));
    }

    #[test]
    fn an_open_file_shares_the_cache_of_its_path_and_is_read_to_its_end() {
        let tmp = tempfile::tempdir().unwrap();
        let p = old_file(tmp.path(), b"hello");
        let store = MemStore::default();
        let later = || system_now_ns() + 2 * SETTLE_NS;
        let (d1, s1) = digest_open(&store, &File::open(&p).unwrap(), later).unwrap();
        assert_eq!(s1, Source::Hashed);
        assert_eq!(
            (digest(&store, &p, later).unwrap()),
            (d1.clone(), Source::Cache)
        );
        let (d2, s2) = digest_open(&store, &File::open(&p).unwrap(), later).unwrap();
        assert_eq!((d2, s2), (d1, Source::Cache));
        // A file changed since is another entry.
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::fs::write(&p, b"HELLO").unwrap();
        let (d3, s3) = digest_open(&store, &File::open(&p).unwrap(), later).unwrap();
        assert_eq!(s3, Source::Hashed);
        assert_eq!(
            d3,
            format!("sha256:{}", hex::encode(Sha256::digest(b"HELLO")))
        );
    }

    #[test]
    fn a_fresh_file_is_never_cached() {
        let tmp = tempfile::tempdir().unwrap();
        let p = old_file(tmp.path(), b"hello");
        let store = MemStore::default();
        let (_, s) = digest(&store, &p, system_now_ns).unwrap();
        assert_eq!(s, Source::Hashed);
        assert!(store.0.borrow().is_empty());
    }

    #[test]
    fn a_rewritten_file_is_hashed_again_even_with_its_old_mtime_and_size() {
        let tmp = tempfile::tempdir().unwrap();
        let p = old_file(tmp.path(), b"hello");
        let store = MemStore::default();
        let later = || system_now_ns() + 2 * SETTLE_NS;
        let (d1, _) = digest(&store, &p, later).unwrap();
        let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
        // Same size, mtime put back: only ctime tells.
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::fs::write(&p, b"HELLO").unwrap();
        File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let (d2, s2) = digest(&store, &p, later).unwrap();
        assert_eq!(s2, Source::Hashed);
        assert_ne!(d1, d2);
    }

    #[test]
    fn a_torn_entry_is_a_miss_and_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let p = old_file(tmp.path(), b"hello");
        let store = DirStore::under(tmp.path());
        let name = entry_name(&Identity::of(&std::fs::metadata(&p).unwrap()));
        store.write(&name, b"sha256:ab");
        let later = || system_now_ns() + 2 * SETTLE_NS;
        let (d, s) = digest(&store, &p, later).unwrap();
        assert_eq!(s, Source::Hashed);
        assert_eq!(store.read(&name), Some(render_entry(&d)));
        assert_eq!(digest(&store, &p, later).unwrap(), (d, Source::Cache));
        // Nothing but the entry is left in the directory.
        let names: Vec<_> = std::fs::read_dir(tmp.path().join(DIGESTS_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(name)]);
    }

    #[test]
    fn a_prune_keeps_the_most_recently_written_and_is_order_independent() {
        let files = |order: &[usize]| -> Vec<(String, i128)> {
            order
                .iter()
                .map(|&i| (format!("e{i}"), i128::try_from(i % 3).unwrap()))
                .collect()
        };
        assert!(to_prune(files(&[0, 1, 2]), 3, 1).is_empty());
        let mut pruned = to_prune(files(&[0, 1, 2, 3, 4]), 3, 2);
        let mut again = to_prune(files(&[4, 3, 2, 1, 0]), 3, 2);
        pruned.sort();
        again.sort();
        assert_eq!(pruned, again);
        // Newest first: e2 (2), then e1 and e4 (1, by name e1 first): e1 and e2 stay.
        assert_eq!(pruned, ["e0", "e3", "e4"]);
    }

    #[test]
    fn a_write_beyond_the_bound_removes_the_oldest_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DirStore::under(tmp.path());
        let dir = tmp.path().join(DIGESTS_DIR);
        std::fs::create_dir(&dir).unwrap();
        let epoch = std::time::SystemTime::UNIX_EPOCH;
        for i in 0..MAX_ENTRIES {
            let f = std::fs::File::create(dir.join(format!("{i:064x}"))).unwrap();
            let secs = u64::try_from(i).unwrap() + 1_000_000;
            f.set_modified(epoch + std::time::Duration::from_secs(secs))
                .unwrap();
        }
        // At the bound: nothing goes.
        store.write(
            &format!("{:064x}", 1),
            &render_entry(&format!("sha256:{:064x}", 9)),
        );
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), MAX_ENTRIES);
        let newest = format!("{:064x}", MAX_ENTRIES + 7);
        store.write(&newest, &render_entry(&format!("sha256:{:064x}", 9)));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), KEEP_AFTER_PRUNE);
        assert!(store.read(&newest).is_some());
        // Entry 1 was rewritten just now; entries 0 and 2 were the oldest.
        assert!(store.read(&format!("{:064x}", 1)).is_some());
        assert!(store.read(&format!("{:064x}", 0)).is_none());
        assert!(store.read(&format!("{:064x}", 2)).is_none());
        assert!(store.read(&format!("{:064x}", MAX_ENTRIES - 1)).is_some());
    }
}
