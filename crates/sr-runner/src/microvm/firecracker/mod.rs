//! Firecracker as a [`Backend`] (KVM hosts): this module owns a Firecracker VM's life on the
//! host, from its jail to its removal.
//!
//! * start: build the jail's root in the run directory, place the artifacts in it (hard links
//!   where possible) and hash what was placed, create Firecracker's log and metrics files for
//!   the VMM's user; when the operator keeps a snapshot of this VM's shape, place its files in
//!   the jail too and check their digests (`restore`); start the jailer with the compiled
//!   arguments plus the cgroup arguments for this host ([`jailer`]), wait for the API socket.
//! * connect (after the network attach): configure the VM over the API and start it, or load
//!   the snapshot and resume it ([`api`]), wait for the guest agent over Firecracker's hybrid
//!   vsock ([`super::hybrid_vsock`]), send the guest setup line ([`super::guest_setup`]).
//! * [`FirecrackerVm::make_snapshot`]: boot a VM of a plan's shape, pause it when its agent
//!   listens, snapshot it in its jail and publish the files with a manifest ([`snapshot`]).
//! * stop: kill Firecracker (the jailer execs it in place: one pid), reap it, remove the
//!   cgroup the jailer made inside the run's, keep Firecracker's log and metrics in `vm/`,
//!   remove the jail. On every path: a guest has no other existence, and `SendCtrlAltDel`
//!   needs an i8042 device that not every guest kernel has.
//!
//! A refused API call is SR-RUN-002 at the step (`launch.api.boot-source`, ...) with
//! Firecracker's `fault_message` and a hint; a guest that does not answer in time is
//! `launch.boot` with the tails of the console and of Firecracker's log.

pub mod api;
pub mod jailer;
mod make_snapshot;
mod restore;
pub mod snapshot;

pub use make_snapshot::SnapshotRequest;

use std::collections::BTreeMap;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sr_bundle::{CgroupPlan, FirecrackerPlan, RUN_ID_PLACEHOLDER};
use sr_common::{Diagnostic, ErrorCode};

use self::jailer::{CgroupVersion, JailLayout};
use super::facts::{VmFacts, VmmConfinement};
use super::guest_setup::{self, GuestSetup};
use super::host::{
    check_pinned, console_tail, failed, plain_name, random_hex, sha256_file, version_line,
};
use super::hybrid_vsock;
use crate::cgroup::{Layout, RunCgroup};
use crate::life::backend::{Backend, Killer, Phases, StartContext};
use crate::network_facts::Boundary;
use crate::network_hook::AttachedNetwork;
use crate::outcome::{CleanupReport, EnforcementFacts, RunStatus};

/// How long each stage may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From the jailer's start to Firecracker's API socket.
    pub api_socket: Duration,
    /// One API exchange.
    pub api_request: Duration,
    /// From `InstanceStart` to the agent's answer to the setup line.
    pub boot: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            api_socket: Duration::from_secs(10),
            api_request: Duration::from_secs(10),
            boot: Duration::from_secs(60),
        }
    }
}

/// The console log (Firecracker's serial console is its stdout) in the run's `vm/`.
pub const CONSOLE_LOG: &str = "console.log";

/// `plan` with `<runId>` replaced everywhere.
fn substitute(plan: &FirecrackerPlan, run_id: &str) -> Result<FirecrackerPlan, String> {
    let sub = |s: &str| s.replace(RUN_ID_PLACEHOLDER, run_id);
    let vm_text = serde_json::to_string(&plan.vm_config).map_err(|e| e.to_string())?;
    Ok(FirecrackerPlan {
        vm_config: serde_json::from_str(&sub(&vm_text)).map_err(|e| e.to_string())?,
        jailer_args: plan.jailer_args.iter().map(|a| sub(a)).collect(),
        ..plan.clone()
    })
}

/// A Firecracker microVM.
pub struct FirecrackerVm {
    vmm_uid: u32,
    vmm_gid: u32,
    timeouts: Timeouts,
    child: Arc<Mutex<Option<Child>>>,
    plan: Option<FirecrackerPlan>,
    jail: Option<JailLayout>,
    /// The cgroup directories the jailer makes inside the run's (removed at stop).
    jail_cgroups: Vec<PathBuf>,
    vm_dir: PathBuf,
    started: Option<Instant>,
    setup: Option<GuestSetup>,
    timeout_ms: u64,
    facts: VmFacts,
    /// Where snapshots of agent-ready VMs are looked for (none: always boot).
    snapshots: Option<PathBuf>,
    /// The snapshot this run restores instead of booting, its files placed in the jail.
    restore: Option<snapshot::FirecrackerManifest>,
}

impl FirecrackerVm {
    /// A Firecracker microVM whose VMM the jailer runs as `vmm_uid`/`vmm_gid`.
    pub fn new(vmm_uid: u32, vmm_gid: u32) -> Self {
        FirecrackerVm {
            vmm_uid,
            vmm_gid,
            timeouts: Timeouts::default(),
            child: Arc::new(Mutex::new(None)),
            plan: None,
            jail: None,
            jail_cgroups: Vec::new(),
            vm_dir: PathBuf::new(),
            started: None,
            setup: None,
            timeout_ms: 0,
            facts: VmFacts::default(),
            snapshots: None,
            restore: None,
        }
    }

    /// Restores a VM from a snapshot of its shape under `dir`, when there is one, instead of
    /// booting it (docs/microvm.md, "Firecracker: snapshots").
    pub fn with_snapshots(mut self, dir: Option<PathBuf>) -> Self {
        self.snapshots = dir;
        self
    }

    /// The same with other timeouts (tests).
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// The facts gathered so far (complete once connected).
    pub fn facts(&self) -> &VmFacts {
        &self.facts
    }

    /// The jail's layout, once started.
    pub fn jail(&self) -> Option<&JailLayout> {
        self.jail.as_ref()
    }

    fn child(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn exited(&self) -> Option<std::process::ExitStatus> {
        self.child()
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Builds the jail's root and puts the artifacts and Firecracker's own files in it.
    fn build_jail(&mut self, plan: &FirecrackerPlan, jail: &JailLayout) -> Result<(), RunStatus> {
        let io = |what: &str, e: std::io::Error| {
            failed(
                "launch.jail",
                format!("{what}: {e}"),
                "the run directory must be on a local filesystem root can write; see docs/microvm.md",
            )
        };
        if jail.jail_dir.exists() {
            return Err(failed(
                "launch.jail",
                format!("the jail {} exists already", jail.jail_dir.display()),
                "run ids are unique: this is a leftover; `safe-run gc` removes it",
            ));
        }
        std::fs::create_dir_all(&jail.root).map_err(|e| io(&jail.root.display().to_string(), e))?;
        for a in &plan.artifacts {
            if !plain_name(&a.jail_path) {
                return Err(failed(
                    "launch.artifacts",
                    format!(
                        "the plan places the {} as {:?}, not a plain name",
                        a.role, a.jail_path
                    ),
                    "recompile the policy with this safe-run",
                ));
            }
            let source = Path::new(&a.path);
            let meta = std::fs::metadata(source).map_err(|e| {
                failed(
                    "launch.artifacts",
                    format!("the {} {}: {e}", a.role, a.path),
                    "build a Firecracker kernel and rootfs (docs/microvm.md, Firecracker on KVM hosts), or fix artifacts.* in the policy",
                )
            })?;
            if !meta.is_file() {
                return Err(failed(
                    "launch.artifacts",
                    format!("the {} {} is not a regular file", a.role, a.path),
                    "point artifacts.* at the files themselves",
                ));
            }
            let (dest, _) = jailer::place(source, &jail.root, &a.jail_path)
                .map_err(|e| io(&format!("placing the {} {} in the jail", a.role, a.path), e))?;
            // The digest is of what the VMM opens: the placed file.
            let digest = sha256_file(&dest).map_err(|e| io(&dest.display().to_string(), e))?;
            check_pinned(a, &digest)?;
            self.facts.artifacts.insert(a.role.clone(), digest);
        }
        // Firecracker opens its log and metrics files; it does not create them.
        for name in [api::LOG_FILE, api::METRICS_FILE] {
            let p = jail.root.join(name);
            std::fs::File::create(&p).map_err(|e| io(&p.display().to_string(), e))?;
            std::os::unix::fs::chown(&p, Some(self.vmm_uid), Some(self.vmm_gid))
                .map_err(|e| io(&p.display().to_string(), e))?;
        }
        Ok(())
    }

    fn spawn_jailer(&mut self, plan: &FirecrackerPlan, argv: &[String]) -> Result<(), RunStatus> {
        let console = self.vm_dir.join(CONSOLE_LOG);
        let io = |e: std::io::Error| {
            failed(
                "launch.vmm",
                format!("{}: {e}", console.display()),
                "see docs/microvm.md",
            )
        };
        let out = std::fs::File::create(&console).map_err(io)?;
        let err = out.try_clone().map_err(io)?;
        let mut cmd = Command::new(&plan.jailer_bin);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.args(argv)
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = crate::sandbox::spawner::spawn(cmd).map_err(|e| {
            failed(
                "launch.vmm",
                format!("cannot start the jailer {}: {e}", plan.jailer_bin),
                "install Firecracker's jailer and set firecracker.jailerBin in the operator config (docs/microvm.md)",
            )
        })?;
        *self.child() = Some(child);
        Ok(())
    }

    /// Waits for Firecracker's API socket, or for the jailer to give up.
    fn wait_api(&self, socket: &Path) -> Result<(), RunStatus> {
        let until = Instant::now() + self.timeouts.api_socket;
        loop {
            if UnixStream::connect(socket).is_ok() {
                return Ok(());
            }
            let console = self.vm_dir.join(CONSOLE_LOG);
            if let Some(status) = self.exited() {
                return Err(failed(
                    "launch.vmm",
                    format!("the jailer exited ({status}) before Firecracker's API was up"),
                    format!(
                        "it said: {}\nsee docs/microvm.md (Firecracker on KVM hosts)",
                        console_tail(&console, 800)
                    ),
                ));
            }
            if Instant::now() >= until {
                return Err(failed(
                    "launch.api",
                    format!(
                        "Firecracker's API socket {} did not appear within {} ms",
                        socket.display(),
                        self.timeouts.api_socket.as_millis()
                    ),
                    format!(
                        "the jailer or Firecracker is stuck; it said: {}",
                        console_tail(&console, 800)
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn boot_failure(&self, cause: String) -> RunStatus {
        let console = console_tail(&self.vm_dir.join(CONSOLE_LOG), 1500);
        let log = self
            .jail
            .as_ref()
            .map(|j| console_tail(&j.root.join(api::LOG_FILE), 600))
            .unwrap_or_default();
        let mut hint = String::from(
            "the guest did not reach its agent; see docs/microvm.md (Firecracker on KVM hosts)",
        );
        if !log.is_empty() {
            hint.push_str(&format!("\nFirecracker's log ends with:\n{log}"));
        }
        if !console.is_empty() {
            hint.push_str(&format!("\nthe guest console ends with:\n{console}"));
        }
        failed("launch.boot", cause, hint)
    }

    /// Removes the cgroups the jailer made and the jail; keeps Firecracker's log and metrics.
    fn remove_jail(&mut self, cleanup: &mut CleanupReport) {
        for dir in std::mem::take(&mut self.jail_cgroups) {
            // The kernel frees a cgroup a moment after its last process is reaped.
            let mut result = Ok(());
            for _ in 0..100 {
                result = std::fs::remove_dir(&dir);
                match &result {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        result = Ok(());
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    Ok(()) => {
                        cleanup.removed.push(format!("cgroup:{}", dir.display()));
                        break;
                    }
                }
            }
            if let Err(e) = result {
                cleanup.errors.push(Diagnostic::new(
                    ErrorCode::RunLaunch,
                    "cleanup.cgroup",
                    format!("the jailer's cgroup {}: {e}", dir.display()),
                    "run `safe-run gc` to retry",
                ));
            }
        }
        let Some(jail) = self.jail.take() else {
            return;
        };
        for name in [api::LOG_FILE, api::METRICS_FILE] {
            let _ = std::fs::rename(jail.root.join(name), self.vm_dir.join(name));
        }
        match std::fs::remove_dir_all(&jail.chroot_base) {
            Ok(()) => cleanup
                .removed
                .push(format!("jail:{}", jail.chroot_base.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => cleanup.errors.push(Diagnostic::new(
                ErrorCode::RunLaunch,
                "cleanup.jail",
                format!("removing the jail {}: {e}", jail.chroot_base.display()),
                "remove it by hand; `safe-run gc` removes the run directory",
            )),
        }
    }

    /// Everything up to Firecracker's API answering: the jail with the artifacts (and, when
    /// this VM is restored, the snapshot's files), the facts known before the guest runs, the
    /// jailer started with the cgroup arguments for `cgroup` (the run's cgroup and its plan;
    /// none: no cgroup). Records the jail first, so that stop removes whatever was made.
    fn launch(
        &mut self,
        plan: &FirecrackerPlan,
        run_dir: &Path,
        run_id: &str,
        cgroup: Option<(&RunCgroup, &CgroupPlan)>,
        phases: &mut Phases,
    ) -> Result<(), RunStatus> {
        let recompile = "recompile the policy with this safe-run";
        if !plain_name(&plan.api_socket) {
            return Err(failed(
                "launch.vmm",
                format!(
                    "the API socket {:?} is not a plain name in the jail",
                    plan.api_socket
                ),
                recompile,
            ));
        }
        let jail = JailLayout::of(&plan.jailer_args, run_dir)
            .map_err(|e| failed("launch.jail", e, recompile))?;
        self.vm_dir = run_dir.join("vm");
        std::fs::create_dir_all(&self.vm_dir)
            .map_err(|e| failed("launch.vmm", e.to_string(), "see docs/microvm.md"))?;
        self.jail = Some(jail.clone());

        let t = Instant::now();
        self.build_jail(plan, &jail)?;
        phases.insert("artifacts".into(), t.elapsed().as_secs_f64() * 1000.0);

        let vm = &plan.vm_config;
        let num = |section: &str, field: &str| vm[section][field].as_u64().unwrap_or(0);
        self.facts.vmm = "firecracker".into();
        self.facts.vmm_version = version_line(&jail.exec_file);
        self.facts.accelerator = "kvm".into();
        self.facts.accelerator_reason = "Firecracker runs on KVM only".into();
        self.facts.machine = "firecracker".into();
        self.facts.vcpus = num("machine-config", "vcpu_count");
        self.facts.memory_mib = num("machine-config", "mem_size_mib");
        self.facts.kernel_cmdline = vm["boot-source"]["boot_args"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.facts.confinement = VmmConfinement {
            uid: self.vmm_uid,
            gid: self.vmm_gid,
            namespaces: vec!["mount".into()],
            no_new_privs: false,
            seccomp: "firecracker's built-in filters".into(),
            host_seccomp: BTreeMap::new(),
            cgroup: cgroup.is_some(),
        };

        let t = Instant::now();
        self.choose_start(plan, &jail)?;
        if self.restore.is_some() {
            phases.insert("snapshot".into(), t.elapsed().as_secs_f64() * 1000.0);
        }

        let cgroup = match cgroup {
            Some((cg, cgroup_plan)) => {
                let version = match cg.layout {
                    Layout::V1 { .. } => CgroupVersion::V1,
                    Layout::V2 { .. } => CgroupVersion::V2,
                };
                self.jail_cgroups = cg.paths.iter().map(|p| p.join(&jail.id)).collect();
                let parent = jailer::parent_cgroup(cgroup_plan, run_id);
                jailer::cgroup_args(version, cgroup_plan, Some(&parent))
            }
            None => jailer::no_cgroup_args(),
        };
        let argv = jailer::argv(&plan.jailer_args, cgroup, None, &plan.api_socket);
        let t = Instant::now();
        self.spawn_jailer(plan, &argv)?;
        self.wait_api(&jail.root.join(&plan.api_socket))?;
        phases.insert("vmm_spawn".into(), t.elapsed().as_secs_f64() * 1000.0);
        Ok(())
    }

    /// Sends `reqs` to Firecracker's API in the jail; a refusal fails at its step.
    fn drive(
        &self,
        jail: &JailLayout,
        plan: &FirecrackerPlan,
        reqs: &[api::ApiRequest],
    ) -> Result<(), RunStatus> {
        let mut client =
            api::UnixApi::new(&jail.root.join(&plan.api_socket), self.timeouts.api_request);
        api::drive(&mut client, reqs)
            .map_err(|(step, why)| failed(&step, why, api::hint_for(&step)))
    }
}

impl Backend for FirecrackerVm {
    fn name(&self) -> &'static str {
        "microvm"
    }

    fn start(&mut self, cx: StartContext<'_>) -> Result<Boundary, RunStatus> {
        let Some(plan) = cx.bundle.backend.firecracker() else {
            return Err(failed(
                "launch.backend",
                format!(
                    "the bundle is for backend {}, not firecracker",
                    cx.bundle.backend.name()
                ),
                "this is a bug",
            ));
        };
        if cx.bundle.network_plan.is_some() {
            return Err(failed(
                "launch.network",
                "network.mode allowlist is not available on Firecracker yet",
                "use network.mode: none, or backend: sandbox for an allowlist (docs/microvm.md)",
            ));
        }
        let plan =
            substitute(plan, cx.run_id).map_err(|e| failed("launch.vmm", e, "this is a bug"))?;
        self.timeout_ms = cx.bundle.process.timeout_ms;
        let cgroup = cx.cgroup.map(|cg| (cg, &cx.bundle.cgroup_plan));
        self.launch(&plan, cx.run_dir, cx.run_id, cgroup, cx.phases)?;
        cx.enforcement.hostname = plan.guest.hostname.clone();
        cx.enforcement.capabilities_kept = plan.guest.capabilities.clone();
        let entropy = random_hex(64).map_err(|e| {
            failed(
                "launch.vmm",
                format!("/dev/urandom: {e}"),
                "see docs/microvm.md",
            )
        })?;
        self.setup = Some(GuestSetup {
            run_id: cx.run_id.to_owned(),
            process: cx.bundle.process.clone(),
            guest: plan.guest.clone(),
            entropy,
            restored: None,
        });
        self.plan = Some(plan);
        Ok(Boundary::Tap {
            name: String::new(),
        })
    }

    fn connect(
        &mut self,
        _network: &AttachedNetwork,
        deadline: Instant,
        enforcement: &mut EnforcementFacts,
    ) -> Result<UnixStream, RunStatus> {
        let (Some(plan), Some(jail)) = (self.plan.clone(), self.jail.clone()) else {
            return Err(failed(
                "launch.boot",
                "connect before start",
                "this is a bug",
            ));
        };
        let uds = plan.vm_config["vsock"]["uds_path"].as_str().unwrap_or("");
        if !plain_name(uds) {
            return Err(failed(
                "launch.api",
                format!("the vsock socket {uds:?} is not a plain name in the jail"),
                "recompile the policy with this safe-run",
            ));
        }
        let chosen = self.restore.take();
        let restored = chosen.is_some();
        let started = match chosen {
            Some(manifest) => self.load_snapshot(&jail, &plan, &manifest)?,
            None => {
                let reqs = api::requests(&plan.vm_config).map_err(|e| {
                    failed("launch.api", e, "recompile the policy with this safe-run")
                })?;
                self.drive(&jail, &plan, &reqs)?;
                Instant::now()
            }
        };
        self.started = Some(started);
        let boot_deadline = (started + self.timeouts.boot).min(deadline);
        let stream = match hybrid_vsock::connect_when_ready(
            &jail.root.join(uds),
            plan.agent_port,
            boot_deadline,
            Duration::from_millis(50),
            hybrid_vsock::ANSWER_WAIT,
        ) {
            Ok((s, _)) => s,
            Err(e) => {
                if self.exited().is_none() && Instant::now() >= deadline {
                    return Err(RunStatus::Timeout {
                        limit_ms: self.timeout_ms,
                    });
                }
                return Err(self.boot_failure(format!(
                    "the guest agent did not answer within {} ms: {e}",
                    boot_deadline.saturating_duration_since(started).as_millis()
                )));
            }
        };
        let mut setup = self
            .setup
            .take()
            .ok_or_else(|| failed("launch.boot", "no guest setup", "this is a bug"))?;
        if restored {
            // The guest's clock stopped when the snapshot was made: the agent sets it from
            // this, as late as can be.
            setup.restored = Some(guest_setup::Restored {
                unix_time_ms: restore::unix_time_ms(),
            });
        }
        let reply = guest_setup::exchange(&stream, &setup, boot_deadline)
            .map_err(|e| self.boot_failure(e))?;
        self.facts
            .record_setup(reply, started.elapsed().as_millis() as u64)
            .map_err(|(phase, message)| guest_setup::refused(&phase, &message))?;
        enforcement.microvm = Some(self.facts.clone());
        Ok(stream)
    }

    fn killer(&self) -> Killer {
        crate::life::backend::child_killer(&self.child)
    }

    fn stop(&mut self, cleanup: &mut CleanupReport) {
        let child = self.child().take();
        if let Some(mut c) = child {
            let _ = c.kill();
            if let Err(e) = c.wait() {
                cleanup.errors.push(Diagnostic::new(
                    ErrorCode::RunLaunch,
                    "cleanup.vmm",
                    format!("waiting for Firecracker: {e}"),
                    "its cgroup is killed by cleanup; see docs/microvm.md",
                ));
            }
        }
        self.remove_jail(cleanup);
    }

    fn remove_files(&mut self, _run_dir: &Path, cleanup: &mut CleanupReport) {
        // Normally done by stop; again here in case stop was never reached.
        self.remove_jail(cleanup);
    }
}
