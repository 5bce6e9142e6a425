//! cgroups: per-run memory, cpu and pids limits, samples, OOM detection and removal, on cgroup
//! v2 and on v1.
//!
//! **v2** (one unified hierarchy, most hosts): the run's cgroup is
//! `<root>/safe-run/safe-run-<runId>`; the controllers are enabled in `cgroup.subtree_control`
//! of the root and of `safe-run/`; limits go to `memory.max`, `memory.swap.max` (0: no swap, so
//! the memory limit means what it says), `pids.max`, `cpu.max`; OOM kills are counted in
//! `memory.events`; removal writes `cgroup.kill`.
//!
//! **v1** (per-controller hierarchies, older and hybrid hosts such as this one): one directory
//! per controller, `<root>/<ctrl>/safe-run/safe-run-<runId>` for memory, pids, cpu and cpuacct;
//! `memory.limit_in_bytes` and `memory.memsw.limit_in_bytes` (equal: no swap) when swap
//! accounting exists, `pids.max`, `cpu.cfs_period_us` + `cpu.cfs_quota_us`; OOM kills in
//! `memory.oom_control` (`oom_kill`); CPU time from `cpuacct.usage`. v1 has no `cgroup.kill`:
//! removal SIGKILLs each pid in `cgroup.procs` until it is empty.
//!
//! The root is a parameter and file access goes through [`CgroupFs`], so the unit tests run
//! against an in-memory fake that records every write.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use sr_compiler::bundle::CgroupPlan;

/// Name of the parent cgroup that holds every run's cgroup.
pub const PARENT: &str = "safe-run";

/// The file operations cgroups need.
pub trait CgroupFs {
    /// Whether the path exists.
    fn exists(&self, path: &Path) -> bool;
    /// Creates a directory (parents must exist). Already existing is not an error.
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    /// Writes a control file.
    fn write(&self, path: &Path, value: &str) -> io::Result<()>;
    /// Reads a control file.
    fn read(&self, path: &Path) -> io::Result<String>;
    /// Removes a cgroup directory.
    fn rmdir(&self, path: &Path) -> io::Result<()>;
    /// Lists subdirectories' names.
    fn list_dirs(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Sends SIGKILL to a process found in a cgroup (part of the seam so that unit tests never
    /// signal a real pid).
    fn kill(&self, pid: i32);
}

/// The real filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostFs;

impl CgroupFs for HostFs {
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        match std::fs::create_dir(path) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            r => r,
        }
    }
    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        std::fs::write(path, value)
    }
    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn rmdir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }
    fn list_dirs(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(path)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        out.sort();
        Ok(out)
    }
    fn kill(&self, pid: i32) {
        // ESRCH (already gone) is the expected race with an exiting task.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Which cgroup layout the host has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "version", rename_all = "camelCase")]
pub enum Layout {
    /// Unified hierarchy at `root`.
    V2 {
        /// Mount point of cgroup2 with the controllers.
        root: PathBuf,
    },
    /// Per-controller hierarchies.
    V1 {
        /// memory controller mount.
        memory: PathBuf,
        /// pids controller mount.
        pids: PathBuf,
        /// cpu controller mount.
        cpu: PathBuf,
        /// cpuacct controller mount (maybe the same as cpu).
        cpuacct: Option<PathBuf>,
    },
}

/// Why the cgroup layout cannot host a run.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DetectError(pub String);

/// Detects the layout under `root` (normally `/sys/fs/cgroup`). v2 is used when its
/// `cgroup.controllers` lists memory, pids and cpu; otherwise the v1 hierarchies must exist.
pub fn detect(fs: &dyn CgroupFs, root: &Path) -> Result<Layout, DetectError> {
    let controllers = root.join("cgroup.controllers");
    if fs.exists(&controllers) {
        let have = fs.read(&controllers).unwrap_or_default();
        let have: Vec<&str> = have.split_whitespace().collect();
        let missing: Vec<&str> = ["memory", "pids", "cpu"]
            .into_iter()
            .filter(|c| !have.contains(c))
            .collect();
        if missing.is_empty() {
            return Ok(Layout::V2 {
                root: root.to_path_buf(),
            });
        }
        return Err(DetectError(format!(
            "cgroup v2 at {} lacks the controllers: {}",
            root.display(),
            missing.join(", ")
        )));
    }
    let memory = root.join("memory");
    let pids = root.join("pids");
    let cpu = root.join("cpu");
    let mut missing = Vec::new();
    if !fs.exists(&memory.join("memory.limit_in_bytes")) {
        missing.push("memory");
    }
    if !fs.exists(&pids.join("pids.max")) && !fs.exists(&pids.join("cgroup.procs")) {
        missing.push("pids");
    }
    if !fs.exists(&cpu.join("cpu.cfs_quota_us")) {
        missing.push("cpu");
    }
    if !missing.is_empty() {
        return Err(DetectError(format!(
            "no cgroup v2 controllers at {} and the cgroup v1 hierarchies lack: {}",
            root.display(),
            missing.join(", ")
        )));
    }
    let cpuacct = if fs.exists(&cpu.join("cpuacct.usage")) {
        Some(cpu.clone())
    } else if fs.exists(&root.join("cpuacct").join("cpuacct.usage")) {
        Some(root.join("cpuacct"))
    } else {
        None
    };
    Ok(Layout::V1 {
        memory,
        pids,
        cpu,
        cpuacct,
    })
}

/// One run's cgroup(s).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunCgroup {
    /// The layout.
    pub layout: Layout,
    /// The run's directories (one for v2; one per controller for v1), in creation order.
    pub paths: Vec<PathBuf>,
    /// Limits actually written: file name -> value.
    pub limits_written: BTreeMap<String, String>,
}

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

fn err(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
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
    /// Creates the run's cgroup(s) named `plan.name` with `<runId>` replaced, and writes the
    /// limits. On error, whatever was created is removed again.
    pub fn create(
        fs: &dyn CgroupFs,
        layout: &Layout,
        plan: &CgroupPlan,
        run_id: &str,
    ) -> io::Result<RunCgroup> {
        let name = plan
            .name
            .replace(sr_compiler::bundle::RUN_ID_PLACEHOLDER, run_id);
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad cgroup name {name:?}"),
            ));
        }
        let mut cg = RunCgroup {
            layout: layout.clone(),
            paths: Vec::new(),
            limits_written: BTreeMap::new(),
        };
        match cg.setup(fs, plan, &name) {
            Ok(()) => Ok(cg),
            Err(e) => {
                let _ = cg.remove(fs);
                Err(e)
            }
        }
    }

    fn put(&mut self, fs: &dyn CgroupFs, dir: &Path, file: &str, value: String) -> io::Result<()> {
        let p = dir.join(file);
        fs.write(&p, &value).map_err(|e| err(&p, e))?;
        self.limits_written.insert(file.to_owned(), value);
        Ok(())
    }

    fn setup(&mut self, fs: &dyn CgroupFs, plan: &CgroupPlan, name: &str) -> io::Result<()> {
        let quota = if plan.cpu_quota_us == 0 {
            None
        } else {
            Some(plan.cpu_quota_us)
        };
        match self.layout.clone() {
            Layout::V2 { root } => {
                let parent = root.join(PARENT);
                // Enabling controllers for the children of root and of safe-run/.
                fs.write(&root.join("cgroup.subtree_control"), "+memory +pids +cpu")
                    .map_err(|e| err(&root.join("cgroup.subtree_control"), e))?;
                let dir = parent.join(name);
                mkdir_in_parent(fs, &parent, &dir, |fs| {
                    let sc = parent.join("cgroup.subtree_control");
                    fs.write(&sc, "+memory +pids +cpu").map_err(|e| err(&sc, e))
                })?;
                self.paths.push(dir.clone());
                self.put(fs, &dir, "memory.max", plan.memory_max_bytes.to_string())?;
                if fs.exists(&dir.join("memory.swap.max")) {
                    self.put(fs, &dir, "memory.swap.max", "0".into())?;
                }
                self.put(fs, &dir, "pids.max", plan.pids_max.to_string())?;
                let cpu = match quota {
                    Some(q) => format!("{q} {}", plan.cpu_period_us),
                    None => format!("max {}", plan.cpu_period_us),
                };
                self.put(fs, &dir, "cpu.max", cpu)?;
            }
            Layout::V1 {
                memory,
                pids,
                cpu,
                cpuacct,
            } => {
                let mk = |base: &Path, me: &mut RunCgroup| -> io::Result<PathBuf> {
                    let parent = base.join(PARENT);
                    let dir = parent.join(name);
                    mkdir_in_parent(fs, &parent, &dir, |_| Ok(()))?;
                    if !me.paths.contains(&dir) {
                        me.paths.push(dir.clone());
                    }
                    Ok(dir)
                };
                let m = mk(&memory, self)?;
                self.put(
                    fs,
                    &m,
                    "memory.limit_in_bytes",
                    plan.memory_max_bytes.to_string(),
                )?;
                if fs.exists(&m.join("memory.memsw.limit_in_bytes")) {
                    self.put(
                        fs,
                        &m,
                        "memory.memsw.limit_in_bytes",
                        plan.memory_max_bytes.to_string(),
                    )?;
                }
                let p = mk(&pids, self)?;
                self.put(fs, &p, "pids.max", plan.pids_max.to_string())?;
                let c = mk(&cpu, self)?;
                self.put(fs, &c, "cpu.cfs_period_us", plan.cpu_period_us.to_string())?;
                self.put(
                    fs,
                    &c,
                    "cpu.cfs_quota_us",
                    quota.map(|q| q.to_string()).unwrap_or_else(|| "-1".into()),
                )?;
                if let Some(acct) = cpuacct {
                    mk(&acct, self)?;
                }
            }
        }
        Ok(())
    }

    /// Moves process `pid` (and its future children) into every directory of the run.
    pub fn attach(&self, fs: &dyn CgroupFs, pid: u32) -> io::Result<()> {
        for dir in &self.paths {
            let p = dir.join("cgroup.procs");
            fs.write(&p, &pid.to_string()).map_err(|e| err(&p, e))?;
        }
        Ok(())
    }

    /// On cgroup v1, the `tasks` files through which the init moves *itself* (writing `0`)
    /// into the run's cgroups; `None` on v2.
    ///
    /// Why: moving another process (`cgroup.procs`, or a pid) takes the kernel's global
    /// `cgroup_threadgroup_rwsem` for writing, which waits for an RCU grace period: 5 to 15 ms,
    /// the slowest step of a launch. A single thread moving itself through `tasks` skips that
    /// lock (`cgroup_procs_write_start`: "if the thread is `current` ... we can skip the global
    /// lock"). The init is single-threaded, so moving its thread moves the process, and
    /// everything it forks later is born inside.
    pub fn self_attach_files(&self) -> Option<Vec<PathBuf>> {
        match self.layout {
            Layout::V1 { .. } => Some(self.paths.iter().map(|d| d.join("tasks")).collect()),
            Layout::V2 { .. } => None,
        }
    }

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

    /// Kills every process left in the run's cgroups and removes the directories. Returns
    /// the paths removed; errors are collected, not short-circuited, so one failure does not
    /// leave the others behind.
    pub fn remove(&self, fs: &dyn CgroupFs) -> (Vec<PathBuf>, Vec<String>) {
        kill_and_remove(fs, &self.paths)
    }
}

/// Creates `dir` inside the shared `parent` (creating the parent first, then `init_parent`).
///
/// The last run to finish removes the empty parent (see [`kill_and_remove`]), so the parent
/// can vanish between its mkdir and the child's: the child's ENOENT means exactly that, and
/// the whole step is retried.
fn mkdir_in_parent(
    fs: &dyn CgroupFs,
    parent: &Path,
    dir: &Path,
    init_parent: impl Fn(&dyn CgroupFs) -> io::Result<()>,
) -> io::Result<()> {
    let mut attempts = 0;
    loop {
        fs.mkdir(parent).map_err(|e| err(parent, e))?;
        init_parent(fs)?;
        match fs.mkdir(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 5 => attempts += 1,
            r => return r.map_err(|e| err(dir, e)),
        }
    }
}

/// Kills what is left in `dirs` and removes them (used for runs and by gc), then removes
/// their shared `safe-run` parents when they are empty, so that no trace stays once the last
/// run is gone. The kernel refuses to remove a cgroup that still has children (EBUSY), so a
/// concurrent run's parent is never taken from under it.
pub fn kill_and_remove(fs: &dyn CgroupFs, dirs: &[PathBuf]) -> (Vec<PathBuf>, Vec<String>) {
    let (removed, errors) = kill_and_remove_runs(fs, dirs);
    let mut parents: Vec<&Path> = removed
        .iter()
        .filter_map(|d| d.parent())
        .filter(|p| p.file_name().is_some_and(|n| n == PARENT))
        .collect();
    parents.dedup();
    for parent in parents {
        let _ = fs.rmdir(parent);
    }
    (removed, errors)
}

fn kill_and_remove_runs(fs: &dyn CgroupFs, dirs: &[PathBuf]) -> (Vec<PathBuf>, Vec<String>) {
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    for dir in dirs {
        if !fs.exists(dir) {
            continue;
        }
        let kill = dir.join("cgroup.kill");
        if fs.exists(&kill) {
            let _ = fs.write(&kill, "1");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut delay = Duration::from_micros(200);
        loop {
            let procs = fs.read(&dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                fs.kill(pid);
            }
            match fs.rmdir(dir) {
                Ok(()) => {
                    removed.push(dir.clone());
                    break;
                }
                Err(e) if Instant::now() >= deadline => {
                    errors.push(format!("removing {}: {e}", dir.display()));
                    break;
                }
                // EBUSY while the killed tasks are still exiting.
                Err(_) => {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_millis(50));
                }
            }
        }
    }
    (removed, errors)
}

/// Every run cgroup directory named `safe-run-<runId>` under the layout's safe-run parents.
pub fn run_dirs(fs: &dyn CgroupFs, layout: &Layout, run_id: &str) -> Vec<PathBuf> {
    let name = format!("safe-run-{run_id}");
    let bases: Vec<PathBuf> = match layout {
        Layout::V2 { root } => vec![root.clone()],
        Layout::V1 {
            memory,
            pids,
            cpu,
            cpuacct,
        } => {
            let mut v = vec![memory.clone(), pids.clone(), cpu.clone()];
            if let Some(a) = cpuacct {
                if !v.contains(a) {
                    v.push(a.clone());
                }
            }
            v
        }
    };
    bases
        .into_iter()
        .map(|b| b.join(PARENT).join(&name))
        .filter(|p| fs.exists(p))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    use super::*;

    /// In-memory cgroupfs: a set of dirs and files; records writes.
    #[derive(Default)]
    struct FakeFs {
        dirs: RefCell<BTreeSet<PathBuf>>,
        files: RefCell<BTreeMap<PathBuf, String>>,
        writes: RefCell<Vec<(PathBuf, String)>>,
        killed: RefCell<Vec<i32>>,
    }

    impl FakeFs {
        fn file(&self, p: &str, v: &str) {
            self.files.borrow_mut().insert(p.into(), v.into());
        }
    }

    impl CgroupFs for FakeFs {
        fn exists(&self, p: &Path) -> bool {
            self.dirs.borrow().contains(p) || self.files.borrow().contains_key(p)
        }
        fn mkdir(&self, p: &Path) -> io::Result<()> {
            self.dirs.borrow_mut().insert(p.into());
            Ok(())
        }
        fn write(&self, p: &Path, v: &str) -> io::Result<()> {
            self.writes.borrow_mut().push((p.into(), v.into()));
            self.files.borrow_mut().insert(p.into(), v.into());
            Ok(())
        }
        fn read(&self, p: &Path) -> io::Result<String> {
            self.files
                .borrow()
                .get(p)
                .cloned()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        }
        fn rmdir(&self, p: &Path) -> io::Result<()> {
            // Like the kernel: a cgroup with child cgroups cannot be removed.
            if self.dirs.borrow().iter().any(|d| d.parent() == Some(p)) {
                return Err(io::Error::from(io::ErrorKind::ResourceBusy));
            }
            self.dirs.borrow_mut().remove(p);
            Ok(())
        }
        fn list_dirs(&self, _p: &Path) -> io::Result<Vec<String>> {
            Ok(Vec::new())
        }
        fn kill(&self, pid: i32) {
            self.killed.borrow_mut().push(pid);
        }
    }

    /// A FakeFs on which another run's cleanup removes the shared parent right after this
    /// run created it, once.
    struct ParentVanishesOnce<'a> {
        inner: &'a FakeFs,
        fired: std::cell::Cell<bool>,
    }

    impl CgroupFs for ParentVanishesOnce<'_> {
        fn exists(&self, p: &Path) -> bool {
            self.inner.exists(p)
        }
        fn mkdir(&self, p: &Path) -> io::Result<()> {
            let under_parent = p
                .parent()
                .and_then(Path::file_name)
                .is_some_and(|n| n == PARENT);
            if under_parent && !self.fired.get() {
                self.fired.set(true);
                if let Some(parent) = p.parent() {
                    self.inner.rmdir(parent)?;
                }
                return Err(io::Error::from(io::ErrorKind::NotFound));
            }
            self.inner.mkdir(p)
        }
        fn write(&self, p: &Path, v: &str) -> io::Result<()> {
            self.inner.write(p, v)
        }
        fn read(&self, p: &Path) -> io::Result<String> {
            self.inner.read(p)
        }
        fn rmdir(&self, p: &Path) -> io::Result<()> {
            self.inner.rmdir(p)
        }
        fn list_dirs(&self, p: &Path) -> io::Result<Vec<String>> {
            self.inner.list_dirs(p)
        }
        fn kill(&self, pid: i32) {
            self.inner.kill(pid)
        }
    }

    #[test]
    fn the_last_run_out_removes_the_shared_parent() {
        let fs = FakeFs::default();
        let layout = Layout::V2 { root: "/cg".into() };
        let a = RunCgroup::create(&fs, &layout, &plan(), "a").unwrap();
        let b = RunCgroup::create(&fs, &layout, &plan(), "b").unwrap();
        let parent = Path::new("/cg/safe-run");
        let (_, errors) = a.remove(&fs);
        assert!(errors.is_empty());
        assert!(fs.exists(parent), "b still runs: the parent must stay");
        let (_, errors) = b.remove(&fs);
        assert!(errors.is_empty());
        assert!(!fs.exists(parent), "nothing runs: the parent must go");
    }

    #[test]
    fn a_parent_removed_by_another_run_mid_creation_is_recreated() {
        let fake = FakeFs::default();
        let racy = ParentVanishesOnce {
            inner: &fake,
            fired: std::cell::Cell::new(false),
        };
        let layout = Layout::V2 { root: "/cg".into() };
        let cg = RunCgroup::create(&racy, &layout, &plan(), "r").unwrap();
        assert!(racy.fired.get());
        assert!(fake.exists(&cg.paths[0]));
        assert!(fake.exists(Path::new("/cg/safe-run")));
    }

    fn plan() -> CgroupPlan {
        CgroupPlan {
            name: "safe-run-<runId>".into(),
            memory_max_bytes: 64 << 20,
            pids_max: 32,
            cpu_quota_us: 50_000,
            cpu_period_us: 100_000,
        }
    }

    #[test]
    fn v2_detect_create_limits_and_oom() {
        let fs = FakeFs::default();
        fs.file("/cg/cgroup.controllers", "cpuset cpu io memory pids");
        let layout = detect(&fs, Path::new("/cg")).unwrap();
        assert_eq!(layout, Layout::V2 { root: "/cg".into() });
        let cg = RunCgroup::create(&fs, &layout, &plan(), "abc123").unwrap();
        let dir = PathBuf::from("/cg/safe-run/safe-run-abc123");
        assert_eq!(cg.paths, vec![dir.clone()]);
        let writes = fs.writes.borrow().clone();
        assert_eq!(
            writes[0],
            (
                "/cg/cgroup.subtree_control".into(),
                "+memory +pids +cpu".into()
            )
        );
        assert!(writes.contains(&(dir.join("memory.max"), (64u64 << 20).to_string())));
        assert!(writes.contains(&(dir.join("pids.max"), "32".into())));
        assert!(writes.contains(&(dir.join("cpu.max"), "50000 100000".into())));
        assert_eq!(cg.self_attach_files(), None);
        cg.attach(&fs, 42).unwrap();
        assert_eq!(fs.read(&dir.join("cgroup.procs")).unwrap(), "42");
        fs.file(
            "/cg/safe-run/safe-run-abc123/memory.events",
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        );
        fs.file("/cg/safe-run/safe-run-abc123/memory.peak", "1234");
        fs.file(
            "/cg/safe-run/safe-run-abc123/cpu.stat",
            "usage_usec 777\nuser_usec 700\n",
        );
        let t = cg.totals(&fs, 5);
        assert_eq!(t.pids_limit_hits, 0);
        fs.file("/cg/safe-run/safe-run-abc123/pids.events", "max 7\n");
        let t = cg.totals(&fs, 5);
        assert_eq!(t.pids_limit_hits, 7);
        assert_eq!(t.oom_kills, 1);
        assert_eq!(t.memory_peak_bytes, 1234);
        assert_eq!(t.cpu_usec, 777);
        assert_eq!(t.pids_peak, 5);
        fs.file("/cg/safe-run/safe-run-abc123/cgroup.kill", "0");
        let (removed, errors) = cg.remove(&fs);
        assert_eq!(removed, vec![dir.clone()]);
        assert!(errors.is_empty());
        assert!(
            fs.writes
                .borrow()
                .contains(&(dir.join("cgroup.kill"), "1".into()))
        );
        // The pid left in cgroup.procs is killed through the seam, never on the real host.
        assert_eq!(*fs.killed.borrow(), vec![42]);
    }

    #[test]
    fn v2_without_controllers_is_refused_with_the_missing_ones() {
        let fs = FakeFs::default();
        fs.file("/cg/cgroup.controllers", "cpuset io");
        let e = detect(&fs, Path::new("/cg")).unwrap_err();
        assert!(e.0.contains("memory, pids, cpu"), "{}", e.0);
    }

    #[test]
    fn v1_hybrid_creates_one_dir_per_controller() {
        let fs = FakeFs::default();
        fs.file("/cg/memory/memory.limit_in_bytes", "max");
        fs.file(
            "/cg/memory/safe-run/safe-run-r1/memory.memsw.limit_in_bytes",
            "max",
        );
        fs.file("/cg/pids/pids.max", "max");
        fs.file("/cg/cpu/cpu.cfs_quota_us", "-1");
        fs.file("/cg/cpuacct/cpuacct.usage", "0");
        let layout = detect(&fs, Path::new("/cg")).unwrap();
        assert!(
            matches!(&layout, Layout::V1 { cpuacct: Some(a), .. } if a == Path::new("/cg/cpuacct"))
        );
        let cg = RunCgroup::create(&fs, &layout, &plan(), "r1").unwrap();
        assert_eq!(cg.paths.len(), 4);
        let tasks = cg.self_attach_files().unwrap();
        assert_eq!(
            tasks[0],
            PathBuf::from("/cg/memory/safe-run/safe-run-r1/tasks")
        );
        assert_eq!(tasks.len(), 4);
        assert_eq!(
            cg.limits_written["memory.limit_in_bytes"],
            (64u64 << 20).to_string()
        );
        assert_eq!(
            cg.limits_written["memory.memsw.limit_in_bytes"],
            (64u64 << 20).to_string()
        );
        assert_eq!(cg.limits_written["cpu.cfs_quota_us"], "50000");
        assert_eq!(cg.limits_written["pids.max"], "32");
        fs.file(
            "/cg/memory/safe-run/safe-run-r1/memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        fs.file("/cg/cpuacct/safe-run/safe-run-r1/cpuacct.usage", "5000000");
        fs.file("/cg/pids/safe-run/safe-run-r1/pids.events", "max 4\n");
        let t = cg.totals(&fs, 3);
        assert_eq!(t.pids_limit_hits, 4);
        assert_eq!(t.oom_kills, 2);
        assert_eq!(t.cpu_usec, 5000);
        assert_eq!(run_dirs(&fs, &layout, "r1").len(), 4);
        let (removed, errors) = cg.remove(&fs);
        assert_eq!(removed.len(), 4);
        assert!(errors.is_empty());
    }

    #[test]
    fn missing_v1_controllers_are_named() {
        let fs = FakeFs::default();
        fs.file("/cg/memory/memory.limit_in_bytes", "max");
        let e = detect(&fs, Path::new("/cg")).unwrap_err();
        assert!(e.0.contains("pids, cpu"), "{}", e.0);
    }

    #[test]
    fn bad_names_are_refused() {
        let fs = FakeFs::default();
        let layout = Layout::V2 { root: "/cg".into() };
        let mut p = plan();
        p.name = "../escape".into();
        assert!(RunCgroup::create(&fs, &layout, &p, "x").is_err());
    }
}
