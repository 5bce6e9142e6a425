//! Run-dir retention for `safe-run gc --keep N` / `--older-than DURATION`: which finished run
//! directories to delete (pure), and deleting them. A live run (its `run.lock` held) is never
//! a candidate; the newest runs are kept first.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// One run directory under the base, as seen by retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEntry {
    /// `<base>/<runId>`.
    pub path: PathBuf,
    /// When it last changed (its report or event log; the directory itself when it has
    /// neither).
    pub modified: SystemTime,
    /// Whether a runner holds its lock.
    pub live: bool,
}

/// What to keep.
#[derive(Debug, Clone, Copy, Default)]
pub struct Retention {
    /// Keep at least this many of the newest finished runs.
    pub keep: Option<usize>,
    /// Only delete runs older than this.
    pub older_than: Option<Duration>,
}

impl Retention {
    /// Whether retention was asked for at all.
    pub fn is_set(&self) -> bool {
        self.keep.is_some() || self.older_than.is_some()
    }
}

/// The run dirs to delete: finished ones outside the `keep` newest that are also older than
/// `older_than` (each bound applies when given; both must allow a deletion).
pub fn select(mut runs: Vec<RunEntry>, rule: Retention, now: SystemTime) -> Vec<PathBuf> {
    if !rule.is_set() {
        return Vec::new();
    }
    runs.retain(|r| !r.live);
    // Newest first; the path breaks ties so the choice is deterministic.
    runs.sort_by(|a, b| b.modified.cmp(&a.modified).then(a.path.cmp(&b.path)));
    runs.into_iter()
        .enumerate()
        .filter(|(i, _)| rule.keep.is_none_or(|k| *i >= k))
        .filter(|(_, r)| {
            rule.older_than.is_none_or(|age| {
                now.duration_since(r.modified)
                    .is_ok_and(|elapsed| elapsed > age)
            })
        })
        .map(|(_, r)| r.path)
        .collect()
}

/// Parses `30m`, `12h`, `7d` (days on top of the policy duration units).
pub fn parse_age(text: &str) -> Result<Duration, String> {
    if let Some(days) = text.strip_suffix('d')
        && !days.is_empty()
        && days.bytes().all(|b| b.is_ascii_digit())
    {
        return days
            .parse::<u64>()
            .ok()
            .and_then(|d| d.checked_mul(86_400))
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{text:?} is too large"));
    }
    sr_common::DurationSpec::parse(text)
        .map(|d| d.as_duration())
        .map_err(|e| format!("{e} (e.g. 30m, 12h, 7d)"))
}

/// The run dirs under `base` (names that are run ids), with their age and liveness.
pub fn scan(base: &Path) -> Vec<RunEntry> {
    let Ok(rd) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    let mut runs = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = e.path();
        // symlink_metadata: a symlink named like a run is never followed or deleted through.
        if !sr_runner::rundir::is_run_id(name)
            || !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir())
        {
            continue;
        }
        // The evidence files date a run; the directory's own mtime changes whenever gc tidies
        // it, so it only counts for a run that has neither.
        let stamp = |f: &str| {
            std::fs::symlink_metadata(path.join(f))
                .and_then(|m| m.modified())
                .ok()
        };
        let modified = stamp("run_report.json")
            .into_iter()
            .chain(stamp("events.jsonl"))
            .max()
            .or_else(|| stamp(""))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let live = sr_runner::rundir::is_locked(&path);
        runs.push(RunEntry {
            path,
            modified,
            live,
        });
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, secs_ago: u64, live: bool, now: SystemTime) -> RunEntry {
        RunEntry {
            path: PathBuf::from(name),
            modified: now - Duration::from_secs(secs_ago),
            live,
        }
    }

    #[test]
    fn keeps_the_newest_and_never_a_live_run() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let runs = vec![
            entry("a", 10, false, now),
            entry("b", 20, true, now),
            entry("c", 30, false, now),
            entry("d", 4000, false, now),
        ];
        let keep1 = Retention {
            keep: Some(1),
            older_than: None,
        };
        assert_eq!(
            select(runs.clone(), keep1, now),
            ["c", "d"].map(PathBuf::from)
        );
        let old = Retention {
            keep: None,
            older_than: Some(Duration::from_secs(3600)),
        };
        assert_eq!(select(runs.clone(), old, now), [PathBuf::from("d")]);
        let both = Retention {
            keep: Some(3),
            older_than: Some(Duration::from_secs(1)),
        };
        assert!(select(runs.clone(), both, now).is_empty());
        let zero = Retention {
            keep: Some(0),
            older_than: None,
        };
        assert_eq!(select(runs.clone(), zero, now).len(), 3);
        assert!(select(runs, Retention::default(), now).is_empty());
    }

    #[test]
    fn ages_parse_with_days() {
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_age("90m"), Ok(Duration::from_secs(5400)));
        assert!(parse_age("7").is_err());
        assert!(parse_age("d").is_err());
    }
}
