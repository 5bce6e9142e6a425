//! The seam between a sandbox's life (shared: run dir, evidence, cgroups, network attach,
//! timeouts, monitoring, cleanup, the outcome) and the boundary that isolates it (the process
//! sandbox today; a microVM next). A backend starts its boundary in two steps around the
//! network attach, hands over a connection to the agent inside, and stops everything it
//! started.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use sr_bundle::CompileBundle;

use crate::cgroup::RunCgroup;
use crate::network_facts::Boundary;
use crate::network_hook::{AttachedNetwork, NamespaceSource, PreparedNamespace};
use crate::outcome::{CleanupReport, EnforcementFacts, RunStatus};

/// Kills a boundary from any thread (a timeout, a signal, an output limit).
pub type Killer = Arc<dyn Fn() + Send + Sync>;

/// The killer of a backend whose sandbox is one child process (the init, the jailer): SIGKILL
/// to it while it is unreaped.
pub fn child_killer(child: &Arc<std::sync::Mutex<Option<std::process::Child>>>) -> Killer {
    let child = child.clone();
    Arc::new(move || {
        if let Some(c) = child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_mut()
        {
            // std's Child never signals a reaped pid, so this cannot hit a recycled one.
            let _ = c.kill();
        }
    })
}

/// Phase timings, by name.
pub type Phases = std::collections::BTreeMap<String, f64>;

/// What a backend gets to start its boundary.
pub struct StartContext<'a> {
    /// The run id.
    pub run_id: &'a str,
    /// The run directory.
    pub run_dir: &'a Path,
    /// The compiled policy.
    pub bundle: &'a CompileBundle,
    /// The run's cgroup, created already; the boundary's processes must be born in it.
    pub cgroup: Option<&'a RunCgroup>,
    /// The sandbox's own deadline (its timeout).
    pub deadline: Instant,
    /// Facts the backend enforces, for the report.
    pub enforcement: &'a mut EnforcementFacts,
    /// Where the backend records its phase timings.
    pub phases: &'a mut Phases,
    /// The network namespace the network hook made for the boundary to join, when the backend
    /// said it joins one ([`Backend::network_namespace_source`]) and the hook made one; `None`:
    /// the boundary makes its own.
    pub network_namespace: Option<PreparedNamespace>,
}

/// What a backend is made from, whichever the bundle asks for.
pub struct BackendInputs {
    /// The binary to execute as `<init_exe> __init` (the process sandbox's init).
    pub init_exe: std::path::PathBuf,
    /// Operator-allowed mount prefixes (the process sandbox re-checks each source).
    pub allowed_mount_prefixes: Vec<String>,
    /// The unprivileged uid and gid a VMM runs as (the operator's workload identity).
    pub vmm_identity: (u32, u32),
    /// Where microVMs (QEMU's and Firecracker's) look for snapshots to restore instead of
    /// booting (none: always boot).
    pub snapshots: Option<std::path::PathBuf>,
}

/// The backend `bundle` was compiled for.
pub fn for_bundle(bundle: &CompileBundle, inputs: BackendInputs) -> Box<dyn Backend> {
    match &bundle.backend {
        sr_bundle::BackendPlan::Qemu(_) => Box::new(
            crate::microvm::qemu::QemuVm::new(inputs.vmm_identity.0, inputs.vmm_identity.1)
                .with_snapshots(inputs.snapshots),
        ),
        sr_bundle::BackendPlan::Firecracker(_) => Box::new(
            crate::microvm::firecracker::FirecrackerVm::new(
                inputs.vmm_identity.0,
                inputs.vmm_identity.1,
            )
            .with_snapshots(inputs.snapshots),
        ),
        sr_bundle::BackendPlan::Sandbox(_) => {
            Box::new(crate::sandbox::launch::ProcessSandbox::new(
                inputs.init_exe,
                inputs.allowed_mount_prefixes,
            ))
        }
    }
}

/// What varies between isolation boundaries.
pub trait Backend: Send {
    /// The backend's name as the report says it (`sandbox`, `microvm`).
    fn name(&self) -> &'static str;

    /// Whether the boundary can join a network namespace the network hook makes before it
    /// starts ([`StartContext::network_namespace`]), or makes its own.
    fn network_namespace_source(&self) -> NamespaceSource {
        NamespaceSource::Boundary
    }

    /// Starts the boundary up to where its network can be attached. Returns where its network
    /// lives (a namespace, a TAP device) for the network hook. A failure is how the run ends.
    fn start(&mut self, cx: StartContext<'_>) -> Result<Boundary, RunStatus>;

    /// Finishes the start once the network is attached; returns the stream on which the
    /// agent inside speaks the agent protocol. Facts learnt only now (a guest's) go into
    /// `enforcement`.
    fn connect(
        &mut self,
        network: &AttachedNetwork,
        deadline: Instant,
        enforcement: &mut EnforcementFacts,
    ) -> Result<UnixStream, RunStatus>;

    /// A handle that kills the boundary.
    fn killer(&self) -> Killer;

    /// Kills the boundary (if still alive) and waits until nothing it ran is left.
    fn stop(&mut self, cleanup: &mut CleanupReport);

    /// Processes the boundary's own kernel killed for want of memory (a microVM's guest; the
    /// process sandbox's are counted by the run's cgroup). Asked after [`Backend::stop`].
    fn guest_oom_kills(&self) -> u64 {
        0
    }

    /// Removes what the backend made in the run directory.
    fn remove_files(&mut self, run_dir: &Path, cleanup: &mut CleanupReport);
}
