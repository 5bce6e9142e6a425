//! The sandbox backend's cgroup v2 path, for real. These hosts have a hybrid cgroup layout (v1
//! controllers, a cgroup2 mount without any), so `sr_runner::cgroup`'s v2 code only meets
//! recorded filesystem operations in its unit tests. This test boots the guest kernel the
//! microVM artifacts use under QEMU with `cgroup_no_v1=all`, mounts cgroup2 with every controller
//! at `/sys/fs/cgroup`, and runs `safe-run run` (this build, the sandbox backend, as root in the
//! guest) there on real workloads:
//!
//! - a run whose workload waits for a file: while it waits, the guest reads the run's cgroup
//!   (the workload must be in it, with `memory.max`, `memory.swap.max`, `pids.max` and `cpu.max`
//!   as the policy says), then lets it exit 7; the report must say `v2` with the same limits;
//! - meanwhile, beside it: a shell reading 200 MB into a variable under a 32 MiB limit
//!   (reported as `oom`), then a bounded fork loop under `pids: 16` (stopped by the limit,
//!   recorded as `pids`); their cleanup must leave the shared parent and the waiting run alone;
//! - every report says `v2`, lists the run's one cgroup as removed, and `safe-run report verify`
//!   accepts it inside the guest;
//! - a run whose cgroup root holds processes of its own (as in a container's cgroup namespace)
//!   fails to launch saying why;
//! - afterwards no cgroup and no process of any run is left in the guest.
//!
//! The guest is not the microVM backend's: its agent runs execs unprivileged, and the sandbox
//! needs root. The test boots the kernel with an initramfs of its own: `/init` (stage 1, below)
//! and a tree under `/guest` with busybox (from the artifacts' rootfs), the stripped `safe-run`
//! and `safe-run-init` with the libraries and loader `ldd` names, the policies and a stage-2
//! script that does the runs and prints `SRTEST <key> <value>` lines on the serial console,
//! which the test reads after the guest powers off. Needs root (the artifacts are root's), QEMU,
//! the artifacts' kernel and rootfs, `debugfs`, `strip` and `ldd`; under CI=true a missing piece
//! is a failure, elsewhere a visible skip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod run_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use run_support::require_root;
use run_support::vm::{all_present, artifacts_dir};
use serde_json::{Value, json};
use sr_artifacts::initramfs::{Layout, Node, cpio_bytes};

const QEMU: &str = "/usr/bin/qemu-system-x86_64";
const DEBUGFS: &str = "/usr/sbin/debugfs";
const STRIP: &str = "/usr/bin/strip";
const LDD: &str = "/usr/bin/ldd";

/// The whole boot, runs included, normally takes well under a minute under software
/// emulation; this bounds a hung guest (QEMU is killed then, and the test fails).
const GUEST_TIMEOUT: Duration = Duration::from_secs(240);

/// Stage 1, pid 1 on the initramfs. pivot_root, which every sandbox makes, is refused while the
/// root is the initramfs itself (the root mount has no parent), so `/guest` becomes a mount of
/// its own and is moved over `/` (what switch_root does, without copying the tree to a tmpfs
/// first), and stage 2 runs chrooted there.
const STAGE1: &str = r#"#!/guest/bin/busybox sh
B=/guest/bin/busybox
$B mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
$B mount --bind /guest /guest
cd /guest
$B mount --move . /
exec $B chroot . /bin/busybox sh /srtest/stage2
"#;

/// Stage 2, pid 1 in the guest tree: mounts, cgroup2 with every controller, the runs, what is
/// left afterwards, power off. Every fact the test judges is a `SRTEST` line.
const STAGE2: &str = r#"/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mkdir -p /var/lib/safe-run
export SAFE_RUN_CONFIG=/srtest/config.json SAFE_RUN_ARCHIVE=/tmp/archive.db

say() { echo "SRTEST $*"; }
t() { say time.$1 "$(cut -d' ' -f1 /proc/uptime)"; }
# lines NAME FILE: every line of FILE as its own SRTEST line.
lines() { sed "s/^/SRTEST $1 /" "$2"; }
say boot ok
say controllers "$(cat /sys/fs/cgroup/cgroup.controllers)"
say init_cgroup "$(tr '\n' ' ' < /proc/1/cgroup)"

# start NAME: safe-run run of /srtest/NAME.json in the background, with a run base of its own.
start() {
  t $1.start
  SAFE_RUN_WORKDIR_BASE=/tmp/runs/$1 safe-run run --policy /srtest/$1.json \
    --result /tmp/$1.result >/tmp/$1.out 2>/tmp/$1.err &
}
# finish NAME PID: its exit status, output, result, report, the events judged, verify.
finish() {
  wait $2
  say $1.exit $?
  t $1.end
  lines $1.stdout /tmp/$1.out
  lines $1.stderr /tmp/$1.err
  say $1.result "$(tr -d '\n' < /tmp/$1.result)"
  for d in /tmp/runs/$1/*/; do
    say $1.report "$(tr -d '\n' < $d/run_report.json)"
    grep -E '"type":"(run\.oom|process\.exited)"' $d/events.jsonl > /tmp/$1.events
    lines $1.event /tmp/$1.events
    safe-run report verify $d/run_report.json > /tmp/$1.verify 2>&1
    say $1.verify $?
    t $1.verified
    lines $1.verify_output /tmp/$1.verify
  done
}

start limits
lpid=$!
# Wait until the workload itself (its command line has the marker) is in a run's cgroup.
dir=
i=0
while [ -z "$dir" ] && [ $i -lt 1200 ]; do
  for c in /sys/fs/cgroup/safe-run/safe-run-*; do
    [ -f $c/cgroup.procs ] || continue
    for p in $(cat $c/cgroup.procs); do
      tr '\0' ' ' < /proc/$p/cmdline 2>/dev/null | grep -q srtest-limits-workload && dir=$c
    done
  done
  [ -n "$dir" ] || sleep 0.05
  i=$((i+1))
done
say limits.cgroup_dir "$dir"
if [ -n "$dir" ]; then
  for f in memory.max memory.swap.max pids.max cpu.max; do
    say limits.file.$f "$(cat $dir/$f)"
  done
  say limits.parent_subtree_control "$(cat /sys/fs/cgroup/safe-run/cgroup.subtree_control)"
fi

# While the limits run waits, two runs start and end beside it: their cleanup must leave the
# shared parent (the kernel refuses to remove a cgroup with children) and the waiting run alone.
start oom
finish oom $!
start pids
finish pids $!
# (cgroup files have no size: read them.)
say limits.still_running "$([ -n "$dir" ] && [ -n "$(cat $dir/cgroup.procs)" ] && echo yes || echo no)"

touch /srtest/share/go
finish limits $lpid

# A cgroup root that holds processes and is not the hierarchy's root (as a container's own
# cgroup namespace shows it): the kernel gives its children no controllers, and the run must
# fail saying why, leaving nothing.
mkdir /sys/fs/cgroup/box
SAFE_RUN_WORKDIR_BASE=/tmp/runs/busy sh /srtest/busy >/dev/null 2>/tmp/busy.err
say busy.exit $?
lines busy.stderr /tmp/busy.err
say busy.result "$(tr -d '\n' < /tmp/busy.result)"
rmdir /sys/fs/cgroup/box

say after.cgroups "$(find /sys/fs/cgroup -mindepth 1 -type d | tr '\n' ' ')"
left=
for p in /proc/[0-9]*; do
  case "$(readlink $p/exe 2>/dev/null) $(tr '\0' ' ' < $p/cmdline 2>/dev/null)" in
    */safe-run*|*"sleep 20"*) left="$left ${p#/proc/}" ;;
  esac
done
say after.processes "$left"
say done
poweroff -f
"#;

/// Runs the pids policy with `/sys/fs/cgroup` showing a cgroup (`box`) this shell is in.
const BUSY: &str = r#"echo $$ > /sys/fs/cgroup/box/cgroup.procs
exec unshare -m sh -c 'mount --bind /sys/fs/cgroup/box /sys/fs/cgroup &&
  exec safe-run run --policy /srtest/pids.json --result /tmp/busy.result'
"#;

/// Kills and reaps QEMU on every path out of the test, a panic included.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Adds the directories above `path` (relative, no leading `/`).
fn parents(l: &mut Layout, path: &str) {
    let mut parent = path;
    while let Some((p, _)) = parent.rsplit_once('/') {
        l.insert(p.to_owned(), Node::Dir);
        parent = p;
    }
}

/// Adds the file `path` (relative, no leading `/`) and its parent directories.
fn add(l: &mut Layout, path: &str, mode: u32, data: Vec<u8>) {
    parents(l, path);
    l.insert(path.to_owned(), Node::File { mode, data });
}

/// Adds the directory `path` and its parents.
fn dir(l: &mut Layout, path: &str) {
    parents(l, path);
    l.insert(path.to_owned(), Node::Dir);
}

/// busybox, as the artifacts' rootfs holds it (the same static build the microVM guest runs).
fn busybox(work: &Path) -> Vec<u8> {
    let out = work.join("busybox");
    let rootfs = artifacts_dir().join("rootfs.ext4");
    let o = Command::new(DEBUGFS)
        .arg("-R")
        .arg(format!("dump /bin/busybox {}", out.display()))
        .arg(&rootfs)
        .output()
        .expect("debugfs runs");
    let data = std::fs::read(&out).unwrap_or_default();
    assert!(
        o.status.success() && data.starts_with(b"\x7fELF"),
        "debugfs could not dump /bin/busybox from {}: {}",
        rootfs.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    data
}

/// `bin` without its symbols (the debug builds are hundreds of MB; the guest's RAM holds the
/// initramfs).
fn stripped(bin: &str, work: &Path) -> Vec<u8> {
    let out = work.join(Path::new(bin).file_name().expect("a file name"));
    let st = Command::new(STRIP)
        .arg("-o")
        .arg(&out)
        .arg(bin)
        .status()
        .expect("strip runs");
    assert!(st.success(), "strip {bin} failed");
    std::fs::read(&out).expect("the stripped binary")
}

/// The shared libraries and the loader `ldd` lists for `bin`, as absolute paths.
fn libraries(bin: &str) -> Vec<String> {
    let o = Command::new(LDD).arg(bin).output().expect("ldd runs");
    assert!(o.status.success(), "ldd {bin} failed");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = l.split_once("=> ").map_or(l, |(_, p)| p);
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| path.to_owned())
        })
        .collect()
}

/// A sandbox policy running `/bin/sh -c script` with no network.
fn policy(name: &str, script: &str, resources: Value, mounts: Value) -> Value {
    json!({
        "version": 1,
        "name": name,
        "runtime": {
            "backend": "sandbox",
            "command": "/bin/sh",
            "args": ["-c", script],
            "env": {"PATH": "/usr/bin:/bin"},
            "timeout": "90s"
        },
        "mounts": mounts,
        "network": {"mode": "none"},
        "resources": resources,
    })
}

/// The initramfs: stage 1 as `/init`, the guest tree under `guest/`.
fn initramfs(work: &Path) -> Vec<u8> {
    let mut l = Layout::new();
    add(&mut l, "init", 0o755, STAGE1.as_bytes().to_vec());
    dir(&mut l, "dev");
    let g = |p: &str| format!("guest/{p}");
    add(&mut l, &g("bin/busybox"), 0o755, busybox(work));
    for d in [
        "dev",
        "proc",
        "sys",
        "tmp",
        "sbin",
        "usr/sbin",
        "srtest/share",
    ] {
        dir(&mut l, &g(d));
    }
    let bins = [
        env!("CARGO_BIN_EXE_safe-run"),
        env!("CARGO_BIN_EXE_safe-run-init"),
    ];
    for bin in bins {
        let name = Path::new(bin)
            .file_name()
            .expect("a file name")
            .to_string_lossy();
        // Side by side: safe-run starts the safe-run-init beside it.
        add(
            &mut l,
            &g(&format!("usr/bin/{name}")),
            0o755,
            stripped(bin, work),
        );
        for lib in libraries(bin) {
            let data = std::fs::read(&lib).unwrap_or_else(|e| panic!("reading {lib}: {e}"));
            add(&mut l, &g(lib.trim_start_matches('/')), 0o755, data);
        }
    }
    for (name, script) in [("stage2", STAGE2), ("busy", BUSY)] {
        let path = g(&format!("srtest/{name}"));
        add(&mut l, &path, 0o755, script.as_bytes().to_vec());
    }
    let config = json!({
        "allowedMountPrefixes": ["/srtest/share"],
        // overlayfs is a module of this kernel that the guest does not load; file locks are
        // not what this test is about.
        "isolateFileLocks": false,
        // This kernel's Landlock ABI is 2; the compiled policy asks for 3.
        "requireLandlock": false,
        "keyPath": "/var/lib/safe-run/keys/report-signing.key",
    });
    let policies = [
        (
            "limits",
            policy(
                "cgroup-v2-limits",
                ": srtest-limits-workload; cat /proc/self/cgroup; \
                 while [ ! -e /share/go ]; do sleep 0.1; done; exit 7",
                json!({"memory": "48Mi", "pids": 24, "cpus": 0.5}),
                json!([{"source": "/srtest/share", "target": "/share"}]),
            ),
        ),
        (
            "oom",
            policy(
                "cgroup-v2-oom",
                // (`yes` feeds the shell faster than `tr` of /dev/zero under emulation.)
                "x=$(yes aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa | head -c 200000000); \
                 echo survived ${#x}",
                json!({"memory": "32Mi"}),
                json!([]),
            ),
        ),
        (
            "pids",
            policy(
                "cgroup-v2-pids",
                // The inner shell forks sleepers until a fork is refused (then it dies: `can't
                // fork`); the outer one reports how far it got with builtins only, since the
                // sleepers still hold every task the limit allows.
                "sh -c 'i=0; while [ $i -lt 64 ]; do sleep 20 & i=$((i+1)); echo $i > /tmp/n; \
                 done' 2>/dev/null; read n < /tmp/n; echo forked $n",
                json!({"pids": 16}),
                json!([]),
            ),
        ),
    ];
    add(
        &mut l,
        &g("srtest/config.json"),
        0o644,
        config.to_string().into_bytes(),
    );
    for (name, p) in policies {
        add(
            &mut l,
            &g(&format!("srtest/{name}.json")),
            0o644,
            p.to_string().into_bytes(),
        );
    }
    cpio_bytes(&l, 0).expect("the initramfs")
}

/// The `SRTEST <key> <value>` lines of the console, a key's values in order.
fn facts(console: &str) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in console.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix("SRTEST ") {
            let (k, v) = rest.split_once(' ').unwrap_or((rest, ""));
            m.entry(k.to_owned()).or_default().push(v.to_owned());
        }
    }
    m
}

#[test]
fn the_cgroup_v2_path_limits_reports_and_cleans_up_in_a_v2_only_guest() {
    let test = "the_cgroup_v2_path_limits_reports_and_cleans_up_in_a_v2_only_guest";
    if !require_root(test) {
        return;
    }
    let art = artifacts_dir();
    let needed: Vec<PathBuf> = [QEMU, DEBUGFS, STRIP, LDD]
        .iter()
        .map(PathBuf::from)
        .chain([art.join("vmlinuz"), art.join("rootfs.ext4")])
        .collect();
    if !all_present(
        test,
        &needed,
        "scripts/setup.sh installs QEMU, e2fsprogs and binutils; scripts/build-guest.sh builds the artifacts",
    ) {
        return;
    }
    let t0 = Instant::now();
    let work = tempfile::Builder::new()
        .prefix("sr-cgroup-v2-")
        .tempdir_in("/tmp")
        .expect("a temp dir");
    let initrd = work.path().join("initrd.cpio");
    std::fs::write(&initrd, initramfs(work.path())).expect("writing the initramfs");
    let console = work.path().join("console.log");
    let accel = sr_runner::microvm::accel::host_accel().name;
    let qemu = Command::new(QEMU)
        .args(["-nodefaults", "-no-reboot", "-display", "none"])
        .args(["-accel", accel, "-m", "512", "-smp", "1"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-kernel")
        .arg(art.join("vmlinuz"))
        .arg("-initrd")
        .arg(&initrd)
        .args([
            "-append",
            "console=ttyS0 cgroup_no_v1=all panic=-1 quiet loglevel=1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.path().join("qemu.err")).expect("qemu.err"))
        .spawn()
        .expect("QEMU starts");
    let mut qemu = KillOnDrop(qemu);
    let status = loop {
        if let Some(st) = qemu.0.try_wait().expect("waiting for QEMU") {
            break Some(st);
        }
        if t0.elapsed() > GUEST_TIMEOUT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&console).unwrap_or_default();
    let qemu_err = std::fs::read_to_string(work.path().join("qemu.err")).unwrap_or_default();
    let took = t0.elapsed();
    let f = facts(&text);
    let ctx = format!("console:\n{text}\nqemu stderr:\n{qemu_err}");
    assert!(
        status.is_some(),
        "the guest did not finish in {GUEST_TIMEOUT:?}\n{ctx}"
    );
    let one = |k: &str| -> String {
        f.get(k)
            .and_then(|v| v.first())
            .cloned()
            .unwrap_or_else(|| panic!("no SRTEST {k} line\n{ctx}"))
    };
    let json_of = |k: &str| -> Value {
        serde_json::from_str(&one(k))
            .unwrap_or_else(|e| panic!("SRTEST {k} is not JSON: {e}\n{ctx}"))
    };
    assert_eq!(one("done"), "", "the guest did not get to the end\n{ctx}");
    let events = |run: &str, ty: &str| -> Vec<Value> {
        f.get(&format!("{run}.event"))
            .into_iter()
            .flatten()
            .map(|l| serde_json::from_str::<Value>(l).expect("an event line"))
            .filter(|e| e["type"] == ty)
            .collect()
    };

    // The guest runs cgroup v2 only, with the controllers a run needs.
    let controllers = one("controllers");
    for c in ["memory", "pids", "cpu"] {
        assert!(
            controllers.split_whitespace().any(|x| x == c),
            "{controllers}\n{ctx}"
        );
    }
    assert_eq!(one("init_cgroup").trim(), "0::/", "v1 hierarchies\n{ctx}");

    // Every run used the v2 layout, wrote what its policy says, verified, cleaned up.
    let check_run = |run: &str, limits: &[(&str, &str)]| -> (Value, Value) {
        let result = json_of(&format!("{run}.result"));
        let report = json_of(&format!("{run}.report"));
        let id = result["runId"].as_str().unwrap_or_default();
        let dir = format!("/sys/fs/cgroup/safe-run/safe-run-{id}");
        let cg = &report["enforcement"]["cgroup"];
        assert_eq!(cg["version"], "v2", "{run}: {cg}\n{ctx}");
        for (file, value) in limits {
            assert_eq!(cg["limits"][file], *value, "{run}: {file}\n{ctx}");
        }
        assert_eq!(
            report["enforcement"]["backend"]["cgroupPaths"],
            json!([dir]),
            "{run}\n{ctx}"
        );
        assert_eq!(
            report["cleanup"],
            json!({"ok": true, "removed": [format!("cgroup:{dir}")], "errors": []}),
            "{run}\n{ctx}"
        );
        assert_eq!(one(&format!("{run}.verify")), "0", "{run}: verify\n{ctx}");
        (result, report)
    };

    // limits: the files the kernel holds while the workload runs are the policy's.
    let limits = [
        ("memory.max", "50331648"),
        ("memory.swap.max", "0"),
        ("pids.max", "24"),
        ("cpu.max", "50000 100000"),
    ];
    let (result, report) = check_run("limits", &limits);
    let dir = report["enforcement"]["backend"]["cgroupPaths"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        one("limits.cgroup_dir"),
        dir,
        "the workload is not in the run's cgroup\n{ctx}"
    );
    for (file, value) in limits {
        assert_eq!(
            one(&format!("limits.file.{file}")),
            value,
            "{file} in the guest\n{ctx}"
        );
    }
    let subtree = one("limits.parent_subtree_control");
    for c in ["memory", "pids", "cpu"] {
        assert!(
            subtree.split_whitespace().any(|x| x == c),
            "{subtree}\n{ctx}"
        );
    }
    // Inside, the cgroup namespace makes the run's cgroup the root of the one hierarchy.
    assert_eq!(f["limits.stdout"], vec!["0::/".to_owned()], "{ctx}");
    assert_eq!(
        one("limits.still_running"),
        "yes",
        "another run's cleanup took the waiting run's cgroup\n{ctx}"
    );
    assert_eq!(one("limits.exit"), "7", "{ctx}");
    assert_eq!(result["workloadExitCode"], 7, "{ctx}");
    assert_eq!(
        report["exit"],
        json!({"status": "exited", "code": 7}),
        "{ctx}"
    );

    // oom: 200 MB into a shell variable under 32 MiB is an OOM kill, counted by memory.events.
    let (result, report) = check_run(
        "oom",
        &[("memory.max", "33554432"), ("memory.swap.max", "0")],
    );
    assert_eq!(one("oom.exit"), "137", "{ctx}");
    assert_eq!(result["status"], "oom", "{ctx}");
    assert_eq!(result["limitsHit"], json!(["memory"]), "{ctx}");
    assert_eq!(report["exit"]["status"], "oom", "{ctx}");
    let oom = events("oom", "run.oom");
    assert!(
        oom.len() == 1 && oom[0]["payload"]["oomKills"].as_u64() >= Some(1),
        "{oom:?}\n{ctx}"
    );
    // memory.peak: the shell grew up to the limit, and not past it.
    let peak = report["resources"]["memoryPeakBytes"].as_u64().unwrap_or(0);
    assert!((16 << 20..=32 << 20).contains(&peak), "peak {peak}\n{ctx}");
    assert!(!f.contains_key("oom.stdout"), "the shell survived\n{ctx}");

    // pids: the fork loop stops at pids.max, and pids.events says the limit refused forks.
    let (result, report) = check_run("pids", &[("pids.max", "16")]);
    assert_eq!(one("pids.exit"), "0", "{ctx}");
    let forked: u64 = one("pids.stdout")
        .strip_prefix("forked ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no fork count\n{ctx}"));
    assert!(
        (1..16).contains(&forked),
        "forked {forked} under pids.max 16\n{ctx}"
    );
    assert_eq!(result["limitsHit"], json!(["pids"]), "{ctx}");
    let exited = events("pids", "process.exited");
    assert!(
        exited.len() == 1 && exited[0]["payload"]["pidsLimitHits"].as_u64() >= Some(1),
        "{exited:?}\n{ctx}"
    );
    let pids_peak = report["resources"]["pidsPeak"].as_u64().unwrap_or(0);
    assert!((1..=16).contains(&pids_peak), "pidsPeak {pids_peak}\n{ctx}");

    // A root with processes of its own: a launch failure that says why.
    let busy = json_of("busy.result");
    assert_eq!(busy["status"], "launchFailed", "{busy}\n{ctx}");
    assert_eq!(one("busy.exit"), busy["exitCode"].to_string(), "{ctx}");
    let why = busy["diagnostics"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        why.contains("Device or resource busy") && why.contains("holds processes itself"),
        "{why}\n{ctx}"
    );

    // Nothing is left: no cgroup at all (the shared parent went with the last run), no process.
    assert_eq!(one("after.cgroups"), "", "cgroups left in the guest\n{ctx}");
    assert_eq!(
        one("after.processes"),
        "",
        "processes left in the guest\n{ctx}"
    );
    // Where the time went, in the guest's order (its uptime in seconds at each step).
    let mut times: Vec<(f64, String)> = f
        .iter()
        .filter_map(|(k, v)| {
            Some((
                v.first()?.parse().ok()?,
                k.strip_prefix("time.")?.to_owned(),
            ))
        })
        .collect();
    times.sort_by(|a, b| a.0.total_cmp(&b.0));
    let times: Vec<String> = times.iter().map(|(t, k)| format!("{k} {t}")).collect();
    eprintln!(
        "cgroup v2 guest: {took:?} from start to power-off; guest uptime at: {}",
        times.join(", ")
    );
}
