//! The spare run directory: `<base>/.spare/<owner>.<name>`, a run directory made ahead of time
//! with its empty files, which the next run claims with one `rename` instead of creating them.
//!
//! Why: on the run base's ext4 every inode allocation costs 0.3-0.5 ms, and a run allocates
//! seven before its workload starts (the directory, `run.lock`, the policy copy, `bundle.json`,
//! `events.jsonl`, `stdout.log`, `stderr.log`); a rename allocates none. The refill happens off
//! the path the user waits for (see docs/run.md, "The run directory").
//!
//! This module owns the spare's layout ([`SPARE_FILES`]), its naming, the claim (pure logic
//! behind [`SpareOps`], so that the race between runs is tested without a file system), the
//! refill ([`refill`]) and the removal of spares a killed refill left half made
//! ([`remove_dead`], called by gc). Invariants:
//!
//! * A spare is built under `.spare/.new-<random>` with its `run.lock` held, and renamed to its
//!   claimable name only when complete, so a claimable spare is never half filled.
//! * A claim is a `rename` of the spare to the run's staging name: the rename of a given
//!   source succeeds once, so two runs never get the same spare; the loser tries the next one
//!   or creates its directory as before.
//! * A spare's name starts with the euid, egid and umask it was made with; a run claims only a
//!   spare made with its own, so its directory has the same owner, group and modes as one it
//!   would have created.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::rundir::{LOCK_FILE, new_run_id};

/// The directory under the run base that holds the spares.
pub const SPARE_DIR: &str = ".spare";

/// Prefix of a spare still being built (never claimed; gc removes it once its builder died).
pub const BUILDING_PREFIX: &str = ".new-";

/// The name under which a spare holds its policy copy; a run whose copy is named otherwise
/// (`policy.json`) renames it.
pub const SPARE_POLICY: &str = "policy.yaml";

/// How a file of the spare is created: as `File::create` / `fs::write` would (0666 less the
/// umask), or with a mode of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileMode {
    /// 0666 less the umask: the files the run writes with `File::create`, `fs::write`, or
    /// `fs::copy` (which sets the source's mode itself, whatever the file's mode was).
    Default,
    /// This mode (less the umask, as with `open(2)`).
    Exactly(u32),
}

/// The files of a spare besides `run.lock`, each as the run would create it.
pub const SPARE_FILES: [(&str, FileMode); 5] = [
    (SPARE_POLICY, FileMode::Default),
    ("bundle.json", FileMode::Default),
    // ChainWriter::create makes it 0600.
    ("events.jsonl", FileMode::Exactly(0o600)),
    ("stdout.log", FileMode::Default),
    ("stderr.log", FileMode::Default),
];

/// Who makes files: the spare's name starts with it, and a run claims only its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Maker {
    /// Effective uid.
    pub uid: u32,
    /// Effective gid.
    pub gid: u32,
    /// The process umask.
    pub umask: u32,
}

impl Maker {
    /// This process. None when the umask cannot be read (no `Umask:` line in
    /// /proc/self/status before Linux 4.7): then there are no spares, only created run dirs.
    /// (umask(2) cannot read the mask without setting it, a race with other threads' creates.)
    pub fn this_process() -> Option<Maker> {
        let status = fs::read_to_string("/proc/self/status").ok()?;
        let umask = status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())?;
        Some(Maker {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            umask,
        })
    }

    /// The prefix of the names of the spares it makes.
    pub fn prefix(&self) -> String {
        format!("{}.{}.{:03o}.", self.uid, self.gid, self.umask)
    }
}

/// The file-system effects of a claim.
pub trait SpareOps {
    /// The names in the spare directory (none when it cannot be read).
    fn names(&self) -> Vec<String>;
    /// Renames spare `name` to `to`. `NotFound` when another run took it first.
    fn take(&self, name: &str, to: &Path) -> io::Result<()>;
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The spare renamed to the staging name, if one was.
    pub claimed: Option<String>,
    /// How many other claimable spares were seen (0: the run should refill one).
    pub others: usize,
}

/// Claims one of `maker`'s complete spares by renaming it to `to`. A spare another run took
/// first (`NotFound`) is skipped; any other error ends the claim (the run creates its
/// directory as before).
pub fn claim(ops: &dyn SpareOps, maker: &Maker, to: &Path) -> Claim {
    let prefix = maker.prefix();
    let mut mine: Vec<String> = ops
        .names()
        .into_iter()
        .filter(|n| n.strip_prefix(&prefix).is_some_and(is_spare_tail))
        .collect();
    mine.sort();
    let mut claimed = None;
    let mut tried = 0;
    for (i, name) in mine.iter().enumerate() {
        tried = i + 1;
        match ops.take(name, to) {
            Ok(()) => {
                claimed = Some(name.clone());
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(_) => break,
        }
    }
    Claim {
        claimed,
        others: mine.len() - tried,
    }
}

/// Whether `tail` (a spare name after its maker prefix) is a spare's random part.
fn is_spare_tail(tail: &str) -> bool {
    crate::rundir::is_run_id(tail)
}

/// [`SpareOps`] on the run base's spare directory.
#[derive(Debug)]
pub struct HostSpares {
    dir: PathBuf,
}

impl HostSpares {
    /// The spares under run base `base`.
    pub fn under(base: &Path) -> HostSpares {
        HostSpares {
            dir: base.join(SPARE_DIR),
        }
    }
}

impl SpareOps for HostSpares {
    fn names(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn take(&self, name: &str, to: &Path) -> io::Result<()> {
        fs::rename(self.dir.join(name), to)
    }
}

/// Builds one spare for this process under `base` (see the module doc). Meant for a thread off
/// the waited-for path; a failure only means the next run creates its directory.
pub fn refill(base: &Path) -> io::Result<()> {
    let maker = Maker::this_process().ok_or_else(|| io::Error::other("umask unknown"))?;
    let spares = base.join(SPARE_DIR);
    fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&spares)?;
    let tail = new_run_id().map_err(io::Error::other)?;
    let building = spares.join(format!("{BUILDING_PREFIX}{tail}"));
    // The same mode as RunDir::create gives a run dir.
    fs::DirBuilder::new().mode(0o700).create(&building)?;
    let lock = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(building.join(LOCK_FILE))
        .and_then(|f| {
            // Held while building, so gc leaves it alone; a gc that locked it first is
            // removing it.
            Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| e.into())
        })?;
    let filled = SPARE_FILES.iter().try_for_each(|(name, mode)| {
        let mut o = OpenOptions::new();
        o.write(true).create_new(true);
        if let FileMode::Exactly(m) = mode {
            o.mode(*m);
        }
        o.open(building.join(name)).map(drop)
    });
    let done = filled
        .and_then(|()| fs::rename(&building, spares.join(format!("{}{tail}", maker.prefix()))));
    if done.is_err() {
        let _ = fs::remove_dir_all(&building);
    }
    drop(lock);
    done
}

/// Removes the spares whose builder died before completing them (gc). A spare being built
/// holds its lock; one without a lock file yet is removed only if still empty, so a builder
/// that is just starting fails its next create instead of completing a spare gc emptied.
pub fn remove_dead(base: &Path) -> Vec<PathBuf> {
    let spares = base.join(SPARE_DIR);
    let Ok(entries) = fs::read_dir(&spares) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for e in entries.filter_map(Result::ok) {
        if !e.file_name().to_string_lossy().starts_with(BUILDING_PREFIX) {
            continue;
        }
        let dir = e.path();
        match OpenOptions::new().write(true).open(dir.join(LOCK_FILE)) {
            Ok(f) => {
                // Kept locked while removing: a builder that has not locked it yet fails to.
                if let Ok(_held) = Flock::lock(f, FlockArg::LockExclusiveNonblock)
                    && fs::remove_dir_all(&dir).is_ok()
                {
                    removed.push(dir);
                }
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                if fs::remove_dir(&dir).is_ok() {
                    removed.push(dir);
                }
            }
            Err(_) => {}
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeSet;
    use std::fs::File;

    /// Spares in memory; `stolen` are taken by another run between the listing and the rename.
    struct Fake {
        names: Vec<String>,
        stolen: BTreeSet<String>,
        failing: bool,
        taken: RefCell<Vec<String>>,
    }

    impl Fake {
        fn new(names: &[&str]) -> Fake {
            Fake {
                names: names.iter().map(|s| (*s).to_owned()).collect(),
                stolen: BTreeSet::new(),
                failing: false,
                taken: RefCell::default(),
            }
        }
    }

    impl SpareOps for Fake {
        fn names(&self) -> Vec<String> {
            self.names.clone()
        }

        fn take(&self, name: &str, _to: &Path) -> io::Result<()> {
            if self.failing {
                return Err(io::Error::from(io::ErrorKind::PermissionDenied));
            }
            let already = self.taken.borrow().iter().any(|t| t == name);
            if self.stolen.contains(name) || already {
                return Err(io::Error::from(io::ErrorKind::NotFound));
            }
            self.taken.borrow_mut().push(name.to_owned());
            Ok(())
        }
    }

    const ME: Maker = Maker {
        uid: 0,
        gid: 0,
        umask: 0o022,
    };

    fn to() -> PathBuf {
        PathBuf::from("/base/.0123456789ab.new")
    }

    #[test]
    fn claims_one_of_its_own_spares() {
        let fake = Fake::new(&["0.0.022.aaaaaaaaaaaa", "0.0.022.bbbbbbbbbbbb"]);
        let c = claim(&fake, &ME, &to());
        assert_eq!(c.claimed.as_deref(), Some("0.0.022.aaaaaaaaaaaa"));
        assert_eq!(c.others, 1);
    }

    #[test]
    fn no_spare_means_creating_as_before() {
        let c = claim(&Fake::new(&[]), &ME, &to());
        assert_eq!(
            c,
            Claim {
                claimed: None,
                others: 0
            }
        );
    }

    #[test]
    fn never_claims_a_spare_being_built_or_made_by_someone_else() {
        let fake = Fake::new(&[
            ".new-aaaaaaaaaaaa",
            "1000.1000.022.aaaaaaaaaaaa",
            "0.0.077.aaaaaaaaaaaa",
            "0.1.022.aaaaaaaaaaaa",
            "0.0.022.not-a-random",
        ]);
        let c = claim(&fake, &ME, &to());
        assert_eq!(c.claimed, None);
        assert_eq!(c.others, 0);
        assert!(fake.taken.borrow().is_empty());
    }

    #[test]
    fn a_run_that_loses_the_race_takes_the_next_or_none() {
        let mut fake = Fake::new(&["0.0.022.aaaaaaaaaaaa", "0.0.022.bbbbbbbbbbbb"]);
        fake.stolen.insert("0.0.022.aaaaaaaaaaaa".into());
        let c = claim(&fake, &ME, &to());
        assert_eq!(c.claimed.as_deref(), Some("0.0.022.bbbbbbbbbbbb"));
        assert_eq!(c.others, 0);
        fake.stolen.insert("0.0.022.bbbbbbbbbbbb".into());
        assert_eq!(claim(&fake, &ME, &to()).claimed, None);
    }

    #[test]
    fn two_runs_never_get_the_same_spare() {
        let fake = Fake::new(&["0.0.022.aaaaaaaaaaaa"]);
        let first = claim(&fake, &ME, &to());
        let second = claim(&fake, &ME, &to());
        assert_eq!(first.claimed.as_deref(), Some("0.0.022.aaaaaaaaaaaa"));
        assert_eq!(second.claimed, None);
    }

    #[test]
    fn another_error_ends_the_claim() {
        let mut fake = Fake::new(&["0.0.022.aaaaaaaaaaaa", "0.0.022.bbbbbbbbbbbb"]);
        fake.failing = true;
        let c = claim(&fake, &ME, &to());
        assert_eq!(c.claimed, None);
        assert_eq!(c.others, 1);
    }

    #[test]
    fn refill_makes_a_complete_spare_and_gc_removes_only_dead_builds() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path();
        refill(base).unwrap();
        let maker = Maker::this_process().unwrap();
        let names = HostSpares::under(base).names();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(names[0].starts_with(&maker.prefix()));
        let spare = base.join(SPARE_DIR).join(&names[0]);
        assert!(spare.join(LOCK_FILE).exists());
        for (name, _) in SPARE_FILES {
            assert_eq!(fs::metadata(spare.join(name)).unwrap().len(), 0, "{name}");
        }
        // A build whose builder died (its lock released), one that has no lock file yet, and
        // one whose builder is alive.
        let dead = base.join(SPARE_DIR).join(".new-aaaaaaaaaaaa");
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join(LOCK_FILE), "").unwrap();
        fs::write(dead.join("bundle.json"), "").unwrap();
        let bare = base.join(SPARE_DIR).join(".new-bbbbbbbbbbbb");
        fs::create_dir(&bare).unwrap();
        let live = base.join(SPARE_DIR).join(".new-cccccccccccc");
        fs::create_dir(&live).unwrap();
        let f = File::create(live.join(LOCK_FILE)).unwrap();
        let _held = Flock::lock(f, FlockArg::LockExclusiveNonblock).unwrap();
        let mut gone = remove_dead(base);
        gone.sort();
        assert_eq!(gone, vec![dead.clone(), bare.clone()]);
        assert!(!dead.exists() && !bare.exists() && live.exists() && spare.exists());
    }
}
