//! QEMU as a [`Backend`]: check the artifacts, start vhost-device-vsock and QEMU confined
//! ([`super::confine`]) inside the run's cgroup, wait for the guest agent over the hybrid
//! vsock, send it the guest setup line ([`super::guest_setup`]) and hand the connection over
//! to the agent protocol. Stop kills both VMM processes (the guest has no other existence).
//!
//! The start is split around the network attach (docs/microvm.md): `start` checks the
//! artifacts, starts vhost-device-vsock and prepares QEMU's command line, and returns the TAP
//! the plan names (`srt<run id>`, empty without a network); the hook then creates that TAP
//! and picks the run's /30; `connect` appends the guest's `sr.net=<address>/<prefix>,<gateway>`
//! to the kernel command line (the only run-time part of it), attaches to the TAP and only
//! then spawns QEMU with the descriptor (`-netdev tap,fd=6`), still in an empty network
//! namespace.
//!
//! Both VMM processes run under the host seccomp filter ([`super::host_seccomp`]), QEMU also
//! under its own `-sandbox` ([`QEMU_SANDBOX`]), stacked.
//!
//! Ready means the agent answered the setup; a boot that does not get there in time is
//! SR-RUN-002 with the tail of the guest's console in the hint.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use command_fds::FdMapping;
use sr_bundle::{QemuPlan, RUN_ID_PLACEHOLDER};
use sr_common::{Diagnostic, ErrorCode};

use super::accel;
use super::confine::Confinement;
use super::facts::{VmFacts, VmmConfinement};
use super::guest_setup::{self, GuestSetup};
use super::host::{
    check_pinned, console_tail, failed, plain_name, random_hex, sha256_of, version_line,
};
use super::host_seccomp;
use super::hybrid_vsock;
use super::snapshot::{self, Shape, SnapshotManifest};

mod make_snapshot;
mod restore;
use crate::cgroup::{self, RunCgroup};
use crate::digest_cache::{self, DirStore};
use crate::life::backend::{Backend, Killer, StartContext};
use crate::network_facts::Boundary;
use crate::network_hook::AttachedNetwork;
use crate::outcome::{CleanupReport, EnforcementFacts, RunStatus};
use crate::sandbox::reap::NsProcess;
pub use make_snapshot::SnapshotRequest;

/// How long a guest may take from QEMU's start to the agent's answer (software emulation
/// boots in about 3 s here; a loaded CI machine needs more).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// The pause between attempts to reach a guest agent that does not listen yet (a refused
/// attempt costs a Unix connect and one line; a restored guest answers about 200 ms after
/// its vsock device is plugged in, so a coarse pause would be a visible share of a restore).
const VSOCK_RETRY: Duration = Duration::from_millis(10);
/// How long vhost-device-vsock may take to create its socket.
const VHOST_TIMEOUT: Duration = Duration::from_secs(10);
/// QEMU's own seccomp filter: no obsolete calls, no privilege changes, no spawning, no
/// resource control.
pub const QEMU_SANDBOX: &str =
    "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";
/// The pause between reads of the guest console while waiting for the agent's line.
const CONSOLE_POLL: Duration = Duration::from_millis(5);
/// vhost-device-vsock's vhost-user socket in `vm/` (the plan's `--socket`).
const VHOST_SOCKET: &str = "vhost-vsock.sock";
/// How long a restored VM's CONNECT waits for its answer before the vsock backend is looked
/// at and the CONNECT made again: a restored agent answers within milliseconds.
const RESTORED_ANSWER_WAIT: Duration = Duration::from_secs(1);
/// The name vhost-user-backend gives the thread that serves the vsock rings.
const VHOST_RING_WORKER: &str = "vring_worker";
/// Why a guest with a live VMM can no longer be reached.
const VHOST_WORKER_GONE: &str =
    "vhost-device-vsock's ring worker thread ended, so no CONNECT is answered";
/// How much of the guest console a boot failure's hint carries.
const CONSOLE_TAIL: usize = 1500;

/// The VMM's two processes (each the outer end of its confinement chain).
#[derive(Default)]
struct Procs {
    qemu: Option<Child>,
    vhost: Option<Child>,
    /// Set by the first kill: a VMM process spawned afterwards is killed at once.
    stopped: bool,
}

/// The pids of `pid`'s children (the VMM itself, forked by `unshare` inside its namespace).
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

impl Procs {
    /// Kills the VMM processes: each inner VMM first, so that its `unshare` reaps it and exits
    /// (killed first, `unshare` would leave the VMM to us, the subreaper, as a zombie), then
    /// the outer process. Returns the inner processes, to reap if the outer one died first.
    fn kill(&mut self) -> Vec<NsProcess> {
        self.stopped = true;
        let mut inner = Vec::new();
        for c in [self.qemu.as_mut(), self.vhost.as_mut()]
            .into_iter()
            .flatten()
        {
            // A child of a live (unreaped) Child: its pid cannot have been recycled.
            if let Ok(None) = c.try_wait() {
                for pid in children_of(c.id()) {
                    let vmm = NsProcess::open(pid);
                    vmm.kill();
                    inner.push(vmm);
                }
            }
            // std's Child never signals a reaped pid, so this cannot hit a recycled one.
            let _ = c.kill();
        }
        inner
    }
}

/// Whether the process under `outer` (its confinement's outer end) runs without a thread
/// named [`VHOST_RING_WORKER`]: vhost-user-backend's worker ends on the first error it
/// meets (vhost-device-vsock 0.3.0 has been seen to meet one when a CONNECT races the guest
/// driver's setup of the rings), and nothing restarts it, so the process lives on and
/// answers nothing. False when that cannot be told (no such process, /proc unreadable).
fn ring_worker_gone(outer: u32) -> bool {
    children_of(outer)
        .into_iter()
        .any(|pid| match std::fs::read_dir(format!("/proc/{pid}/task")) {
            Ok(tasks) => !tasks.flatten().any(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|name| name.trim_end() == VHOST_RING_WORKER)
            }),
            Err(_) => false,
        })
}

/// QEMU's start, prepared by `start` and done by `connect`: after the network attach, which
/// creates the TAP QEMU opens by name and chooses the guest's addresses.
struct PendingQemu {
    args: Vec<String>,
    confinement: Confinement,
    artifact_fds: Vec<FdMapping>,
    /// The run's TAP when the plan gives the guest a NIC (then `connect` needs its
    /// addressing).
    tap: Option<String>,
    /// The run's cgroup, which QEMU must be in.
    cgroup: Option<RunCgroup>,
}

/// What a restored VM needs to be replaced by a cold boot (see `boot_instead`).
struct BootInstead {
    confinement: Confinement,
    cgroup: Option<RunCgroup>,
}

/// A QEMU microVM.
pub struct QemuVm {
    /// The unprivileged identity the VMM runs as.
    vmm_uid: u32,
    vmm_gid: u32,
    procs: Arc<Mutex<Procs>>,
    plan: Option<QemuPlan>,
    vm_dir: PathBuf,
    started: Option<Instant>,
    setup: Option<GuestSetup>,
    timeout_ms: u64,
    facts: VmFacts,
    pending: Option<PendingQemu>,
    /// Where snapshots of agent-ready VMs are looked for (none: always boot).
    snapshots: Option<PathBuf>,
    /// The snapshot this run restores instead of booting.
    restore: Option<(PathBuf, SnapshotManifest)>,
    /// Set with `restore`: how to boot instead should the restored VM's vsock fail.
    boot_instead: Option<BootInstead>,
    /// The snapshot's memory image being copied into the restored VM's RAM.
    ram_fill: Option<restore::RamFill>,
    /// The runs' digest cache, for the artifacts (none: each is hashed).
    digests: Option<DirStore>,
}

/// The OOM kills the guest kernel reported on its console: one `Out of memory: Killed process`
/// line each. Only the kernel writes the console: `/dev/console` and `/dev/kmsg` are root's
/// (0600, 0644) and execs are never root, so a workload cannot forge or hide a line.
pub fn oom_kills_in(console: &[u8]) -> u64 {
    String::from_utf8_lossy(console)
        .lines()
        .filter(|l| l.contains("Out of memory: Killed process"))
        .count() as u64
}

impl QemuVm {
    /// A QEMU microVM whose VMM processes run as `vmm_uid`/`vmm_gid` (never 0).
    pub fn new(vmm_uid: u32, vmm_gid: u32) -> Self {
        QemuVm {
            vmm_uid,
            vmm_gid,
            procs: Arc::new(Mutex::new(Procs::default())),
            plan: None,
            vm_dir: PathBuf::new(),
            started: None,
            setup: None,
            timeout_ms: 0,
            facts: VmFacts::default(),
            pending: None,
            snapshots: None,
            restore: None,
            boot_instead: None,
            ram_fill: None,
            digests: None,
        }
    }

    /// Restores a VM from a snapshot of its shape under `dir`, when there is one, instead of
    /// booting it (docs/microvm.md, "Snapshots").
    pub fn with_snapshots(mut self, dir: Option<PathBuf>) -> Self {
        self.snapshots = dir;
        self
    }

    fn procs(&self) -> std::sync::MutexGuard<'_, Procs> {
        self.procs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens and hashes each artifact and checks pinned digests; returns the open files, which
    /// QEMU gets as the descriptors the plan names (`/proc/self/fd/N`).
    fn check_artifacts(&mut self, plan: &QemuPlan) -> Result<Vec<FdMapping>, RunStatus> {
        let mut fds = Vec::new();
        for a in &plan.artifacts {
            let unreadable = |e: std::io::Error| {
                failed(
                    "launch.artifacts",
                    format!("the {} {}: {e}", a.role, a.path),
                    "build the microVM artifacts with `safe-run artifact build` (docs/microvm.md), or fix artifacts.* in the policy",
                )
            };
            let file = std::fs::File::open(&a.path).map_err(unreadable)?;
            if !file.metadata().map_err(unreadable)?.is_file() {
                return Err(failed(
                    "launch.artifacts",
                    format!("the {} {} is not a regular file", a.role, a.path),
                    "point artifacts.* at the files `safe-run artifact build` wrote",
                ));
            }
            let digest = match &self.digests {
                Some(store) => {
                    let (digest, source) =
                        digest_cache::digest_open(store, &file, digest_cache::system_now_ns)
                            .map_err(unreadable)?;
                    if source == digest_cache::Source::Cache {
                        self.facts.artifacts_from_cache.insert(a.role.clone());
                    }
                    digest
                }
                None => sha256_of(&file).map_err(unreadable)?,
            };
            let child_fd = a
                .jail_path
                .strip_prefix("/proc/self/fd/")
                .and_then(|n| n.parse::<i32>().ok())
                .filter(|n| *n > 2)
                .ok_or_else(|| {
                    failed(
                        "launch.artifacts",
                        format!(
                            "the plan gives the {} as {:?}, not a descriptor",
                            a.role, a.jail_path
                        ),
                        "recompile the policy with this safe-run",
                    )
                })?;
            fds.push(FdMapping {
                parent_fd: file.into(),
                child_fd,
            });
            check_pinned(a, &digest)?;
            self.facts.artifacts.insert(a.role.clone(), digest);
        }
        Ok(fds)
    }

    /// Builds each policy mount's ext4 image in `<run dir>/mounts/` (super::mount_image) and
    /// returns the descriptors QEMU reads them from; records their digests.
    fn mount_images(
        &mut self,
        plan: &QemuPlan,
        run_dir: &Path,
    ) -> Result<Vec<FdMapping>, RunStatus> {
        let mut fds = Vec::new();
        if plan.mounts.is_empty() {
            return Ok(fds);
        }
        let dir = run_dir.join("mounts");
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)))
            .map_err(|e| {
                failed(
                    "launch.mounts",
                    format!("{}: {e}", dir.display()),
                    "see docs/microvm.md",
                )
            })?;
        for (i, m) in plan.mounts.iter().enumerate() {
            let image = super::mount_image::build(m, i, &dir, self.vmm_uid, self.vmm_gid)
                .map_err(|e| {
                    failed(
                        "launch.mounts",
                        format!("the image of mounts {} -> {}: {e}", m.source, m.target),
                        "the source must be a directory the workload's host identity can read; mkfs.ext4 (e2fsprogs) must be installed; see docs/microvm.md, Mounts",
                    )
                })?;
            let child_fd = m
                .jail_path
                .strip_prefix("/proc/self/fd/")
                .and_then(|n| n.parse::<i32>().ok())
                .filter(|n| *n > 2)
                .ok_or_else(|| {
                    failed(
                        "launch.mounts",
                        format!(
                            "the plan gives the image of {} as {:?}",
                            m.target, m.jail_path
                        ),
                        "recompile the policy with this safe-run",
                    )
                })?;
            self.facts
                .mount_images
                .insert(m.target.clone(), image.digest);
            fds.push(FdMapping {
                parent_fd: image.file.into(),
                child_fd,
            });
        }
        Ok(fds)
    }

    fn spawn(
        &self,
        bin: &str,
        args: &[String],
        (confinement, fds): (&Confinement, Vec<FdMapping>),
        log: &Path,
        cg: Option<&RunCgroup>,
    ) -> Result<Child, RunStatus> {
        let out = std::fs::File::create(log).map_err(|e| {
            failed(
                "launch.vmm",
                format!("{}: {e}", log.display()),
                "see docs/microvm.md",
            )
        })?;
        let err = out.try_clone().map_err(|e| {
            failed(
                "launch.vmm",
                format!("{}: {e}", log.display()),
                "see docs/microvm.md",
            )
        })?;
        let mut cmd = confinement.command(bin, args, fds).map_err(|e| {
            failed(
                "launch.vmm",
                format!("passing the artifacts to {bin}: {e}"),
                "this is a bug",
            )
        })?;
        cmd.current_dir(&self.vm_dir)
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = crate::sandbox::spawner::spawn(cmd).map_err(|e| {
            failed(
                "launch.vmm",
                format!("cannot start {bin}: {e}"),
                "install util-linux (setpriv, unshare); see docs/microvm.md",
            )
        })?;
        if let Some(cg) = cg
            && let Err(e) = cg.attach(&cgroup::HostFs, child.id())
        {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
            return Err(failed(
                "launch.cgroup",
                format!("attaching {bin} to the run's cgroup: {e}"),
                "see docs/run.md",
            ));
        }
        Ok(child)
    }

    fn boot_failure(&self, cause: String) -> RunStatus {
        let console = self.vm_dir.join(
            self.plan
                .as_ref()
                .map_or("console.log", |p| p.console_log.as_str()),
        );
        let tail = console_tail(&console, CONSOLE_TAIL);
        let qemu_log = console_tail(&self.vm_dir.join("qemu.log"), 600);
        let mut hint = String::from("the guest did not reach its agent; see docs/microvm.md");
        if !qemu_log.is_empty() {
            hint.push_str(&format!("\nQEMU said:\n{qemu_log}"));
        }
        if !tail.is_empty() {
            hint.push_str(&format!("\nthe guest console ends with:\n{tail}"));
        }
        failed("launch.boot", cause, hint)
    }
}

/// The descriptor `-netdev tap,...,fd=N` names in QEMU's arguments (above the artifacts').
fn tap_fd_of(args: &[String]) -> Option<i32> {
    let netdev = args
        .iter()
        .position(|a| a == "-netdev")
        .and_then(|i| args.get(i + 1))?;
    let rest = netdev.strip_prefix("tap,")?;
    rest.split(',')
        .find_map(|kv| kv.strip_prefix("fd="))
        .and_then(|n| n.parse::<i32>().ok())
        .filter(|n| *n > 5)
}

/// The compiled plan with its run id placeholder replaced by `run_id`.
pub fn plan_for_run(plan: &QemuPlan, run_id: &str) -> QemuPlan {
    let sub = |s: &str| s.replace(RUN_ID_PLACEHOLDER, run_id);
    QemuPlan {
        args: plan.args.iter().map(|a| sub(a)).collect(),
        vhost_vsock_args: plan.vhost_vsock_args.iter().map(|a| sub(a)).collect(),
        vsock_socket: sub(&plan.vsock_socket),
        console_log: sub(&plan.console_log),
        ..plan.clone()
    }
}

/// What the runner appends to every QEMU command line: the accelerator and QEMU's sandbox.
fn vmm_tail(accelerator: &str) -> [String; 4] {
    [
        "-accel".to_owned(),
        accelerator.to_owned(),
        "-sandbox".to_owned(),
        QEMU_SANDBOX.to_owned(),
    ]
}

/// A random vsock context id for a restored guest (3 and up; below 2^31).
fn fresh_cid() -> std::io::Result<u32> {
    let hex = random_hex(4)?;
    let n = u32::from_str_radix(&hex, 16).map_err(std::io::Error::other)?;
    Ok(3 + n % (0x7fff_ffff - 3))
}

/// Replaces the value of vhost-device-vsock's `--guest-cid`.
fn set_guest_cid(args: &mut [String], cid: u32) {
    if let Some(i) = args.iter().position(|a| a == "--guest-cid")
        && let Some(v) = args.get_mut(i + 1)
    {
        *v = cid.to_string();
    }
}

/// Makes `dir` (0700, owned by `uid:gid`) for the VMM's sockets and logs.
fn vmm_dir(dir: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
}

impl Backend for QemuVm {
    fn name(&self) -> &'static str {
        "microvm"
    }

    fn start(&mut self, cx: StartContext<'_>) -> Result<Boundary, RunStatus> {
        let Some(plan) = cx.bundle.backend.qemu() else {
            return Err(failed(
                "launch.backend",
                format!(
                    "the bundle is for backend {}, not qemu",
                    cx.bundle.backend.name()
                ),
                "this is a bug",
            ));
        };
        // An allowlist: the guest's NIC is the TAP the plan names (`srt<run id>`), which the
        // network hook creates after this start and before connect spawns QEMU.
        let tap = cx
            .bundle
            .network_plan
            .as_ref()
            .map(|n| n.host_interface.replace(RUN_ID_PLACEHOLDER, cx.run_id));
        let plan = plan_for_run(plan, cx.run_id);
        self.vm_dir = cx.run_dir.join("vm");
        self.timeout_ms = cx.bundle.process.timeout_ms;
        if !plain_name(&plan.vsock_socket) || !plain_name(&plan.console_log) {
            return Err(failed(
                "launch.vmm",
                format!(
                    "the plan names the VMM's files {:?} and {:?}, not plain names in its directory",
                    plan.vsock_socket, plan.console_log
                ),
                "recompile the policy with this safe-run",
            ));
        }
        let t_artifacts = Instant::now();
        self.digests = Some(DirStore::under(cx.run_dir.parent().unwrap_or(cx.run_dir)));
        let mut artifact_fds = self.check_artifacts(&plan)?;
        artifact_fds.extend(self.mount_images(&plan, cx.run_dir)?);
        cx.phases.insert(
            "artifacts".into(),
            t_artifacts.elapsed().as_secs_f64() * 1000.0,
        );
        // The vm directory is the VMM's own; the VMM starts in it (entered before its
        // privileges are dropped), so nothing above it need be open to the VMM's user.
        let io = |e: std::io::Error| failed("launch.vmm", e.to_string(), "see docs/microvm.md");
        vmm_dir(&self.vm_dir, self.vmm_uid, self.vmm_gid).map_err(io)?;

        let accel = accel::host_accel();
        let confinement = self.vmm_confinement()?;
        self.facts.vmm = "qemu".into();
        self.facts.vmm_version = version_line(Path::new(&plan.qemu_bin));
        self.facts.accelerator = accel.name.into();
        self.facts.accelerator_reason = accel.reason.clone();
        let arg_after = |flag: &str| {
            plan.args
                .iter()
                .position(|a| a == flag)
                .and_then(|i| plan.args.get(i + 1))
                .cloned()
                .unwrap_or_default()
        };
        self.facts.vcpus = arg_after("-smp").parse().unwrap_or(0);
        self.facts.memory_mib = arg_after("-m").trim_end_matches('M').parse().unwrap_or(0);
        self.facts.kernel_cmdline = arg_after("-append");
        self.facts.machine = arg_after("-machine");
        self.facts.confinement = VmmConfinement {
            uid: self.vmm_uid,
            gid: self.vmm_gid,
            namespaces: confinement.namespaces(),
            no_new_privs: true,
            seccomp: format!("qemu -sandbox {QEMU_SANDBOX}"),
            host_seccomp: ["qemu", "vhost-device-vsock"]
                .into_iter()
                .map(|p| (p.to_owned(), host_seccomp::facts(&confinement.seccomp)))
                .collect(),
            cgroup: cx.cgroup.is_some(),
        };
        cx.enforcement.hostname = plan.guest.hostname.clone();
        cx.enforcement.capabilities_kept = plan.guest.capabilities.clone();
        self.choose_start(&plan, accel.name);
        let mut vhost_args = plan.vhost_vsock_args.clone();
        if self.restore.is_some() {
            // A fresh context id per restored VM: siblings of one snapshot must not share one.
            set_guest_cid(&mut vhost_args, fresh_cid().map_err(io)?);
            self.boot_instead = Some(BootInstead {
                confinement: confinement.clone(),
                cgroup: cx.cgroup.cloned(),
            });
        }

        let t_vmm = Instant::now();
        self.spawn_vhost(&plan, &vhost_args, &confinement, cx.cgroup)?;
        let mut args = match self.restore.clone() {
            // The memory image is copied into the RAM while QEMU starts; the devices' state
            // comes over QMP (`migrate-incoming`) and the vsock device is plugged in after it.
            Some((dir, _)) => self.restore_args(&plan.args, &dir, &mut artifact_fds, cx.cgroup)?,
            None => plan.args.clone(),
        };
        args.extend(vmm_tail(accel.name));
        cx.phases
            .insert("vmm_spawn".into(), t_vmm.elapsed().as_secs_f64() * 1000.0);
        self.setup = Some(GuestSetup {
            run_id: cx.run_id.to_owned(),
            process: cx.bundle.process.clone(),
            guest: plan.guest.clone(),
            entropy: random_hex(64).map_err(io)?,
            restored: None,
        });
        self.plan = Some(plan);
        self.pending = Some(PendingQemu {
            args,
            confinement,
            artifact_fds,
            tap: tap.clone(),
            cgroup: cx.cgroup.cloned(),
        });
        // QEMU itself starts in connect, once the hook has made the TAP (the guest configures
        // its own side, from sr.net on its kernel command line). Without a network there is
        // no TAP, and the no-network hook ignores the boundary.
        Ok(Boundary::Tap {
            name: tap.unwrap_or_default(),
        })
    }

    fn connect(
        &mut self,
        network: &AttachedNetwork,
        deadline: Instant,
        enforcement: &mut EnforcementFacts,
    ) -> Result<UnixStream, RunStatus> {
        let plan = self
            .plan
            .clone()
            .ok_or_else(|| failed("launch.boot", "connect before start", "this is a bug"))?;
        self.spawn_qemu(&plan, network)?;
        let mut boot_deadline = self.boot_deadline(deadline);
        let socket = self.vm_dir.join(&plan.vsock_socket);
        let port = plan.agent_port;
        let mut reached = None;
        if let Some((dir, manifest)) = self.restore.take() {
            self.restore_snapshot(&dir, &manifest, boot_deadline)?;
            reached =
                self.reach_agent(&socket, port, deadline, boot_deadline, RESTORED_ANSWER_WAIT)?;
            if reached.is_none() {
                self.boot_instead(&plan, format!(
                    "the snapshot {} was restored, but its vsock backend failed ({VHOST_WORKER_GONE}); booted instead",
                    manifest.key
                ))?;
                boot_deadline = self.boot_deadline(deadline);
            }
        }
        let stream = match reached {
            Some(stream) => stream,
            None => {
                // The first CONNECT waits for the agent's console line: one made while the
                // guest's vsock device was still coming up has been seen to go unanswered, and
                // every later one with it, under heavy load. Past the deadline the loop decides.
                self.await_agent_listening(boot_deadline)?;
                self.reach_agent(
                    &socket,
                    port,
                    deadline,
                    boot_deadline,
                    hybrid_vsock::ANSWER_WAIT,
                )?
                .ok_or_else(|| {
                    self.boot_failure(format!(
                        "the guest agent cannot be reached: {VHOST_WORKER_GONE}"
                    ))
                })?
            }
        };
        let setup = self
            .setup
            .take()
            .ok_or_else(|| failed("launch.boot", "no guest setup", "this is a bug"))?;
        let reply = guest_setup::exchange(&stream, &setup, boot_deadline)
            .map_err(|e| self.boot_failure(e))?;
        let boot_ms = self.started.map_or(0, |s| s.elapsed().as_millis() as u64);
        self.facts
            .record_setup(reply, boot_ms)
            .map_err(|(phase, message)| guest_setup::refused(&phase, &message))?;
        enforcement.microvm = Some(self.facts.clone());
        Ok(stream)
    }

    fn killer(&self) -> Killer {
        let procs = self.procs.clone();
        Arc::new(move || {
            procs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .kill();
        })
    }

    fn stop(&mut self, cleanup: &mut CleanupReport) {
        // A copier still at work ends by itself (its copy is bounded); nothing outlives stop.
        if let Some(fill) = self.ram_fill.take() {
            let _ = fill.join();
        }
        let mut procs = std::mem::take(&mut *self.procs());
        let inner = procs.kill();
        for (name, child) in [
            ("QEMU", procs.qemu.take()),
            ("vhost-device-vsock", procs.vhost.take()),
        ] {
            if let Some(mut c) = child {
                if let Err(e) = c.wait() {
                    cleanup.errors.push(Diagnostic::new(
                        ErrorCode::RunLaunch,
                        "cleanup.vmm",
                        format!("waiting for {name}: {e}"),
                        "its cgroup is killed by cleanup; see docs/microvm.md",
                    ));
                }
            }
        }
        for vmm in inner {
            if let Err(stuck) = vmm.reap(Duration::from_secs(5)) {
                cleanup.errors.push(Diagnostic::new(
                    ErrorCode::RunLaunch,
                    "cleanup.vmm",
                    format!(
                        "the VMM (host pid {}) did not end within 5 s: {stuck}",
                        vmm.pid()
                    ),
                    "it is in the run's cgroup, which cleanup kills; see docs/microvm.md",
                ));
            }
        }
    }

    fn guest_oom_kills(&self) -> u64 {
        let console = self.vm_dir.join(
            self.plan
                .as_ref()
                .map_or("console.log", |p| p.console_log.as_str()),
        );
        oom_kills_in(&std::fs::read(console).unwrap_or_default())
    }

    fn remove_files(&mut self, _run_dir: &Path, cleanup: &mut CleanupReport) {
        for sock in ["vhost-vsock.sock", "vsock.sock", "qmp.sock"] {
            if std::fs::remove_file(self.vm_dir.join(sock)).is_ok() {
                cleanup.removed.push(format!("vm/{sock}"));
            }
        }
    }
}

impl QemuVm {
    /// How both VMM processes run: the operator's unprivileged identity, an empty network
    /// namespace (with a NIC too: QEMU gets its TAP as an open descriptor, see connect, so it
    /// needs neither the host's namespace nor /dev/net/tun), and the host seccomp filter.
    fn vmm_confinement(&self) -> Result<Confinement, RunStatus> {
        let host_filter = host_seccomp::compile().map_err(|e| {
            failed(
                "launch.vmm",
                format!("the VMM's host seccomp filter: {e}"),
                "this is a bug",
            )
        })?;
        Ok(Confinement {
            uid: self.vmm_uid,
            gid: self.vmm_gid,
            no_network: true,
            seccomp: Arc::new(host_filter),
        })
    }

    /// Starts vhost-device-vsock with `args` and waits for its vhost-user socket, which QEMU
    /// connects to (at its start, or when a restored VM's vsock device is plugged in).
    fn spawn_vhost(
        &mut self,
        plan: &QemuPlan,
        args: &[String],
        confinement: &Confinement,
        cg: Option<&RunCgroup>,
    ) -> Result<(), RunStatus> {
        let vhost = self.spawn(
            &plan.vhost_vsock_bin,
            args,
            (confinement, Vec::new()),
            &self.vm_dir.join("vhost-vsock.log"),
            cg,
        )?;
        self.procs().vhost = Some(vhost);
        let vhost_socket = self.vm_dir.join(VHOST_SOCKET);
        let until = Instant::now() + VHOST_TIMEOUT;
        while !vhost_socket.exists() {
            let exited = self
                .procs()
                .vhost
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= until {
                let log = console_tail(&self.vm_dir.join("vhost-vsock.log"), 600);
                return Err(failed(
                    "launch.vmm",
                    format!(
                        "vhost-device-vsock did not create {}",
                        vhost_socket.display()
                    ),
                    format!(
                        "install it with `cargo install vhost-device-vsock` (scripts/setup.sh does); it said: {log}"
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Spawns QEMU as `start` prepared it. The run's addresses enter here, the one run-time
    /// value of its command line: `sr.net=<guest>/<prefix>,<gateway>` appended to `-append`
    /// (the compiled plan holds the fixed part and stays deterministic).
    fn spawn_qemu(&mut self, plan: &QemuPlan, network: &AttachedNetwork) -> Result<(), RunStatus> {
        let PendingQemu {
            mut args,
            confinement,
            mut artifact_fds,
            tap,
            cgroup,
        } = self
            .pending
            .take()
            .ok_or_else(|| failed("launch.vmm", "QEMU was not prepared", "this is a bug"))?;
        if let Some(tap) = tap {
            let guest = network.guest.ok_or_else(|| {
                failed(
                    "launch.network",
                    "the guest has a NIC but the network attach gave it no address",
                    "this is a bug: an allowlist's hook must return the guest's addressing",
                )
            })?;
            let append = args
                .iter()
                .position(|a| a == "-append")
                .and_then(|i| args.get_mut(i + 1))
                .ok_or_else(|| {
                    failed(
                        "launch.vmm",
                        "the plan's QEMU command line has no -append",
                        "recompile the policy with this safe-run",
                    )
                })?;
            append.push(' ');
            append.push_str(&guest.kernel_param());
            self.facts.kernel_cmdline = append.clone();
            // QEMU gets the TAP as the descriptor its `-netdev tap,fd=N` names.
            let child_fd = tap_fd_of(&args).ok_or_else(|| {
                failed(
                    "launch.vmm",
                    "the plan's QEMU command line has no -netdev tap,fd=N (N > 5)",
                    "recompile the policy with this safe-run",
                )
            })?;
            let fd = crate::sandbox::sys::tap_attach(&tap).map_err(|e| {
                failed(
                    "launch.network",
                    format!("attaching to the run's TAP device {tap}: {e}"),
                    "the network hook creates it before QEMU starts; safe-run must run as root \
                     with /dev/net/tun (modprobe tun); see docs/microvm.md",
                )
            })?;
            artifact_fds.push(FdMapping {
                parent_fd: fd,
                child_fd,
            });
        }
        self.spawn_qemu_process(plan, &args, &confinement, artifact_fds, cgroup.as_ref())
    }

    /// Spawns QEMU with `args` and records it, unless the run was stopped meanwhile (a
    /// signal, a timeout): then nothing may outlive it.
    fn spawn_qemu_process(
        &mut self,
        plan: &QemuPlan,
        args: &[String],
        confinement: &Confinement,
        fds: Vec<FdMapping>,
        cgroup: Option<&RunCgroup>,
    ) -> Result<(), RunStatus> {
        let qemu = self.spawn(
            &plan.qemu_bin,
            args,
            (confinement, fds),
            &self.vm_dir.join("qemu.log"),
            cgroup,
        )?;
        let mut procs = self.procs();
        procs.qemu = Some(qemu);
        if procs.stopped {
            procs.kill();
            drop(procs);
            return Err(failed(
                "launch.vmm",
                "the run was stopped before the guest started",
                "see the run's end reason",
            ));
        }
        drop(procs);
        self.started = Some(Instant::now());
        Ok(())
    }

    /// Waits until the guest console shows the agent listening (true) or `until` passes
    /// (false); the boot failure if QEMU exits first. Only the guest kernel and the agent have
    /// written to the console by then (no exec has run), and a wrong line only moves the first
    /// CONNECT earlier.
    fn await_agent_listening(&mut self, until: Instant) -> Result<bool, RunStatus> {
        let console = self.vm_dir.join(
            self.plan
                .as_ref()
                .map_or("console.log", |p| p.console_log.as_str()),
        );
        loop {
            let text = std::fs::read(&console).unwrap_or_default();
            if String::from_utf8_lossy(&text).contains(snapshot::AGENT_LISTENING) {
                return Ok(true);
            }
            let exited = self
                .procs()
                .qemu
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                return Err(self.boot_failure(format!(
                    "QEMU exited ({status}) before the guest agent listened"
                )));
            }
            if Instant::now() >= until {
                return Ok(false);
            }
            std::thread::sleep(CONSOLE_POLL);
        }
    }

    /// How this VM starts: from a snapshot of its shape when the operator keeps snapshots and
    /// one is there, else a cold boot (and the facts say why, when a snapshot could have been
    /// used).
    fn choose_start(&mut self, plan: &QemuPlan, accelerator: &str) {
        self.facts.start = "boot".into();
        let Some(dir) = self.snapshots.clone() else {
            return;
        };
        if let Some(why) = snapshot::not_restorable(plan) {
            self.facts.start_note = Some(why);
            return;
        }
        let shape = Shape {
            qemu_version: self.facts.vmm_version.clone(),
            accelerator: accelerator.to_owned(),
            args: snapshot::shape_args(&plan.args),
            artifacts: self.facts.artifacts.clone(),
        };
        match snapshot::lookup(&dir, &shape) {
            Some(found) => self.restore = Some(found),
            None => {
                let why = match snapshot::other_format(&dir, &shape) {
                    Some(format) => format!(
                        "the snapshot of this VM's shape ({}) in {} is of format {format}, not {}",
                        shape.key(),
                        dir.display(),
                        snapshot::SNAPSHOT_FORMAT
                    ),
                    None => format!(
                        "no snapshot of this VM's shape ({}) in {}",
                        shape.key(),
                        dir.display()
                    ),
                };
                self.facts.start_note = Some(format!(
                    "{why}; `safe-run artifact snapshot --policy <policy>` makes one"
                ));
            }
        }
    }

    /// The boot's own deadline: `BOOT_TIMEOUT` after QEMU started, within the run's.
    fn boot_deadline(&self, deadline: Instant) -> Instant {
        self.started
            .map_or(deadline, |s| (s + BOOT_TIMEOUT).min(deadline))
    }

    /// A stream to the guest agent over the hybrid vsock, or None when vhost-device-vsock's
    /// ring worker is gone (no CONNECT will ever be answered). Retried while nothing listens
    /// yet, checking between attempts that the VMM is alive, so a VMM that died (a guest
    /// kernel panic, a bad artifact) ends the wait at once. A connection the VMM accepted gets
    /// `answer_wait` before it is abandoned and made again (the agent takes a connection
    /// closed without a byte for a probe).
    fn reach_agent(
        &mut self,
        socket: &Path,
        port: u32,
        deadline: Instant,
        boot_deadline: Instant,
        answer_wait: Duration,
    ) -> Result<Option<UnixStream>, RunStatus> {
        loop {
            let left = boot_deadline.saturating_duration_since(Instant::now());
            let e = match hybrid_vsock::connect(socket, port, left.min(answer_wait)) {
                Ok((s, _)) => return Ok(Some(s)),
                Err(e) => e,
            };
            let qemu_exit = self
                .procs()
                .qemu
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = qemu_exit {
                return Err(self.boot_failure(format!(
                    "QEMU exited ({status}) before the guest agent answered"
                )));
            }
            if self.vhost_worker_gone() {
                return Ok(None);
            }
            if e.is_transient() && Instant::now() + VSOCK_RETRY < boot_deadline {
                std::thread::sleep(VSOCK_RETRY);
                continue;
            }
            if Instant::now() >= deadline {
                return Err(RunStatus::Timeout {
                    limit_ms: self.timeout_ms,
                });
            }
            return Err(self.boot_failure(format!("the guest agent did not answer: {e}")));
        }
    }

    /// Whether vhost-device-vsock is running without its ring worker thread (see
    /// [`ring_worker_gone`]).
    fn vhost_worker_gone(&self) -> bool {
        self.procs()
            .vhost
            .as_ref()
            .is_some_and(|outer| ring_worker_gone(outer.id()))
    }

    /// Replaces a restored VM whose vsock backend failed with a cold boot of the same plan
    /// (the snapshot is only a faster start; the report says why it was not used). Only a
    /// restorable plan gets here: no NIC, no mount images.
    fn boot_instead(&mut self, plan: &QemuPlan, why: String) -> Result<(), RunStatus> {
        let BootInstead {
            confinement,
            cgroup,
        } = self.boot_instead.take().ok_or_else(|| {
            failed(
                "launch.snapshot",
                "no boot to fall back to",
                "this is a bug",
            )
        })?;
        let mut cleanup = CleanupReport::default();
        crate::life::backend::Backend::stop(self, &mut cleanup);
        if let Some(e) = cleanup.errors.first() {
            return Err(failed("launch.snapshot", e.message.clone(), e.hint.clone()));
        }
        for file in [
            VHOST_SOCKET,
            &plan.vsock_socket,
            &plan.console_log,
            "qmp.sock",
        ] {
            let _ = std::fs::remove_file(self.vm_dir.join(file));
        }
        self.spawn_vhost(plan, &plan.vhost_vsock_args, &confinement, cgroup.as_ref())?;
        let fds = self.check_artifacts(plan)?;
        let mut args = plan.args.clone();
        args.extend(vmm_tail(&self.facts.accelerator));
        self.spawn_qemu_process(plan, &args, &confinement, fds, cgroup.as_ref())?;
        self.facts.start = "boot".into();
        self.facts.start_note = Some(why);
        self.facts.snapshot = None;
        if let Some(setup) = self.setup.as_mut() {
            setup.restored = None;
        }
        Ok(())
    }

    /// The facts gathered so far (complete once connected).
    pub fn facts(&self) -> &VmFacts {
        &self.facts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_oom_kill_line_of_the_guest_console_counts_once() {
        let console = b"[    2.6] EXT4-fs (vda): mounted filesystem\n\
            [   9.1] sort invoked oom-killer: gfp_mask=0x140cca\n\
            [   9.2] Out of memory: Killed process 212 (sort) total-vm:262144kB\n\
            [   9.9] Out of memory: Killed process 230 (sh) total-vm:2048kB\n\xff\xfe\n";
        assert_eq!(oom_kills_in(console), 2);
        assert_eq!(oom_kills_in(b""), 0);
        assert_eq!(oom_kills_in(b"oom-killer invoked, nothing killed\n"), 0);
    }

    #[test]
    fn the_tap_descriptor_comes_from_the_netdev_argument() {
        let args = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            tap_fd_of(&args(&["-m", "1", "-netdev", "tap,id=n0,fd=6"])),
            Some(6)
        );
        // An artifact's descriptor, another backend, or none: refused.
        assert_eq!(tap_fd_of(&args(&["-netdev", "tap,id=n0,fd=3"])), None);
        assert_eq!(tap_fd_of(&args(&["-netdev", "user,id=n0"])), None);
        assert_eq!(tap_fd_of(&args(&["-netdev"])), None);
    }

    /// A process under a `sh` (the confinement chain's stand-in) with or without a thread
    /// named like vhost-user-backend's ring worker; `sh` forks it (`; :` keeps it from exec).
    fn process_with_thread(name: &str) -> std::process::Child {
        let script = format!(
            "import ctypes, threading, time, sys\n\
             def run():\n    ctypes.CDLL(None).prctl(15, b'{name}')\n    time.sleep(30)\n\
             threading.Thread(target=run, daemon=True).start()\n\
             print('ready', flush=True)\ntime.sleep(30)\n"
        );
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("python3 -c \"$0\"; :")
            .arg(script)
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
            &mut line,
        )
        .expect("ready");
        assert_eq!(line.trim(), "ready");
        child
    }

    #[test]
    fn a_vhost_process_without_its_ring_worker_is_told_apart() {
        for (thread, gone) in [(VHOST_RING_WORKER, false), ("vhu-vsock-cid-3", true)] {
            let mut outer = process_with_thread(thread);
            assert_eq!(ring_worker_gone(outer.id()), gone, "thread {thread}");
            for pid in children_of(outer.id()) {
                NsProcess::open(pid).kill();
            }
            let _ = outer.kill();
            let _ = outer.wait();
        }
        // No such process: nothing can be told.
        assert!(!ring_worker_gone(u32::MAX));
    }
}
