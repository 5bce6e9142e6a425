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

/// When another run's cleanup removes the shared parent from under this run's creation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Vanish {
    /// After this run made the parent and enabled its controllers, before the child's mkdir
    /// (the mkdir fails with ENOENT).
    BeforeChildMkdir,
    /// After this run made the parent, before it enabled the controllers in the parent's
    /// `cgroup.subtree_control` (v2; the write fails with ENOENT).
    BeforeControllers,
}

/// A FakeFs on which another run's cleanup removes the shared parent right after this
/// run created it, once, at the moment `when` says.
struct ParentVanishesOnce<'a> {
    inner: &'a FakeFs,
    when: Vanish,
    fired: std::cell::Cell<bool>,
}

impl ParentVanishesOnce<'_> {
    /// Removes `parent` (another run's cleanup) and fails like the kernel, the first time.
    fn vanish(&self, parent: &Path) -> io::Result<()> {
        self.fired.set(true);
        self.inner.rmdir(parent)?;
        Err(io::Error::from(io::ErrorKind::NotFound))
    }
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
        if self.when == Vanish::BeforeChildMkdir && under_parent && !self.fired.get() {
            if let Some(parent) = p.parent() {
                return self.vanish(parent);
            }
        }
        self.inner.mkdir(p)
    }
    fn write(&self, p: &Path, v: &str) -> io::Result<()> {
        let parent = p
            .parent()
            .filter(|d| d.file_name().is_some_and(|n| n == PARENT));
        if self.when == Vanish::BeforeControllers
            && p.file_name().is_some_and(|n| n == "cgroup.subtree_control")
            && !self.fired.get()
            && let Some(parent) = parent
        {
            return self.vanish(parent);
        }
        if !self.inner.exists(p.parent().unwrap_or(p)) {
            // Like the kernel: no control file without its cgroup.
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
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
    for when in [Vanish::BeforeChildMkdir, Vanish::BeforeControllers] {
        let fake = FakeFs::default();
        fake.mkdir(Path::new("/cg")).unwrap();
        let racy = ParentVanishesOnce {
            inner: &fake,
            when,
            fired: std::cell::Cell::new(false),
        };
        let layout = Layout::V2 { root: "/cg".into() };
        let cg = RunCgroup::create(&racy, &layout, &plan(), "r").unwrap();
        assert!(racy.fired.get());
        assert!(fake.exists(&cg.paths[0]));
        let parent = Path::new("/cg/safe-run");
        assert!(fake.exists(parent));
        // The recreated parent has its controllers enabled again, so the run's limits apply.
        assert_eq!(
            fake.read(&parent.join("cgroup.subtree_control")).unwrap(),
            "+memory +pids +cpu"
        );
    }
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

/// A v2 root that is not the hierarchy's root and holds processes: the kernel refuses to
/// enable controllers for its children (EBUSY).
struct BusyRoot(FakeFs);

impl CgroupFs for BusyRoot {
    fn exists(&self, p: &Path) -> bool {
        self.0.exists(p)
    }
    fn mkdir(&self, p: &Path) -> io::Result<()> {
        self.0.mkdir(p)
    }
    fn write(&self, p: &Path, v: &str) -> io::Result<()> {
        if p == Path::new("/cg/cgroup.subtree_control") {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        self.0.write(p, v)
    }
    fn read(&self, p: &Path) -> io::Result<String> {
        self.0.read(p)
    }
    fn rmdir(&self, p: &Path) -> io::Result<()> {
        self.0.rmdir(p)
    }
    fn list_dirs(&self, p: &Path) -> io::Result<Vec<String>> {
        self.0.list_dirs(p)
    }
    fn kill(&self, pid: i32) {
        self.0.kill(pid)
    }
}

#[test]
fn a_v2_root_with_processes_of_its_own_is_explained() {
    let fs = BusyRoot(FakeFs::default());
    let layout = Layout::V2 { root: "/cg".into() };
    let e = RunCgroup::create(&fs, &layout, &plan(), "r").unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ResourceBusy);
    let msg = e.to_string();
    assert!(msg.starts_with("/cg/cgroup.subtree_control: "), "{msg}");
    assert!(msg.contains("/cg holds processes itself"), "{msg}");
    assert!(
        msg.contains("move its processes into a child cgroup"),
        "{msg}"
    );
    // Nothing was created, so nothing is left.
    assert!(!fs.exists(Path::new("/cg/safe-run")));
}
