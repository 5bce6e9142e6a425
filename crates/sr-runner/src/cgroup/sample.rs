//! Reading a run's cgroup while it runs (memory, CPU time, tasks) and at its end (peaks, OOM
//! kills, pids-limit refusals), on v2 and v1 files alike.

use std::path::PathBuf;

use serde::Serialize;

use super::{CgroupFs, Layout, RunCgroup};

/// A resource sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// Current memory use in bytes.
    pub memory_bytes: u64,
    /// CPU time used so far in microseconds.
    pub cpu_usec: u64,
    /// Current number of tasks.
    pub pids: u64,
}

/// Final figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    /// Peak memory in bytes (kernel's own peak counter when it has one).
    pub memory_peak_bytes: u64,
    /// CPU time in microseconds.
    pub cpu_usec: u64,
    /// Peak task count (kernel counter on v2, the highest sample on v1).
    pub pids_peak: u64,
    /// OOM kills in the run's cgroup.
    pub oom_kills: u64,
    /// Forks and clones the pids limit refused (`max` in `pids.events`): the pids limit was
    /// hit when this is above 0.
    pub pids_limit_hits: u64,
}

fn parse_u64(s: &str) -> u64 {
    s.trim().parse().unwrap_or(0)
}

fn keyed(s: &str, key: &str) -> u64 {
    s.lines()
        .find_map(|l| {
            let mut it = l.split_whitespace();
            (it.next() == Some(key)).then(|| it.next().map(parse_u64).unwrap_or(0))
        })
        .unwrap_or(0)
}

impl RunCgroup {
    fn dir_with(&self, fs: &dyn CgroupFs, file: &str) -> Option<PathBuf> {
        self.paths
            .iter()
            .find(|d| fs.exists(&d.join(file)))
            .cloned()
    }

    fn read_file(&self, fs: &dyn CgroupFs, file: &str) -> Option<String> {
        self.dir_with(fs, file)
            .and_then(|d| fs.read(&d.join(file)).ok())
    }

    /// Reads the current usage.
    pub fn sample(&self, fs: &dyn CgroupFs) -> Sample {
        let v2 = matches!(self.layout, Layout::V2 { .. });
        let memory_bytes = self
            .read_file(
                fs,
                if v2 {
                    "memory.current"
                } else {
                    "memory.usage_in_bytes"
                },
            )
            .map(|s| parse_u64(&s))
            .unwrap_or(0);
        let cpu_usec = if v2 {
            self.read_file(fs, "cpu.stat")
                .map(|s| keyed(&s, "usage_usec"))
                .unwrap_or(0)
        } else {
            self.read_file(fs, "cpuacct.usage")
                .map(|s| parse_u64(&s) / 1000)
                .unwrap_or(0)
        };
        let pids = self
            .read_file(fs, "pids.current")
            .map(|s| parse_u64(&s))
            .unwrap_or(0);
        Sample {
            memory_bytes,
            cpu_usec,
            pids,
        }
    }

    /// Final figures; `pids_seen` is the highest sampled task count (v1 has no peak counter).
    pub fn totals(&self, fs: &dyn CgroupFs, pids_seen: u64) -> Totals {
        let v2 = matches!(self.layout, Layout::V2 { .. });
        let s = self.sample(fs);
        let memory_peak_bytes = self
            .read_file(
                fs,
                if v2 {
                    "memory.peak"
                } else {
                    "memory.max_usage_in_bytes"
                },
            )
            .map(|s| parse_u64(&s))
            .unwrap_or(s.memory_bytes);
        let oom_kills = if v2 {
            self.read_file(fs, "memory.events")
                .map(|s| keyed(&s, "oom_kill"))
                .unwrap_or(0)
        } else {
            self.read_file(fs, "memory.oom_control")
                .map(|s| keyed(&s, "oom_kill"))
                .unwrap_or(0)
        };
        let pids_peak = self
            .read_file(fs, "pids.peak")
            .map(|s| parse_u64(&s))
            .unwrap_or(0)
            .max(pids_seen)
            .max(s.pids);
        // `pids.events` has the same `max N` line on v1 and v2.
        let pids_limit_hits = self
            .read_file(fs, "pids.events")
            .map(|s| keyed(&s, "max"))
            .unwrap_or(0);
        Totals {
            memory_peak_bytes,
            cpu_usec: s.cpu_usec,
            pids_peak,
            oom_kills,
            pids_limit_hits,
        }
    }
}
