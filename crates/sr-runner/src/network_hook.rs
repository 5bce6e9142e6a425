//! The seam between the sandbox launcher and the network lifecycle.
//!
//! The launcher owns namespaces and processes; the network module owns links, addresses,
//! nftables and DNS. The launcher calls [`NetworkHook::prepare`] before it starts the
//! boundary, [`NetworkHook::attach`] once the boundary's network exists (a sandbox's
//! namespace; a microVM's TAP device, see [`Boundary`]) and before the workload starts, and
//! [`NetworkHook::release`] on every exit path. For `network.mode: none` it uses
//! [`NoNetwork`].

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use serde_json::Value;
use sr_common::Diagnostic;
use sr_common::events::EventType;

use crate::network_facts::{Boundary, NetworkAudit, NetworkFacts};

/// What attaching the network produced, for the sandbox and for the report.
#[derive(Debug, Clone, Default)]
pub struct AttachedNetwork {
    /// A resolv.conf to bind over /etc/resolv.conf inside the sandbox, when DNS is served.
    pub resolv_conf: Option<PathBuf>,
    /// Enforcement facts for the report (interfaces, addresses, nftables ruleset digest, ...).
    pub facts: NetworkFacts,
    /// The boundary's own side of the link, for a boundary that configures it itself (a
    /// microVM guest, from `sr.net=` on its kernel command line). `None` for mode none.
    pub guest: Option<GuestAddressing>,
    /// How long attach's steps took, in order (`link`, `table`, ...), for `--timings`.
    pub steps: Vec<(&'static str, std::time::Duration)>,
}

/// The run-time addressing of a boundary's side of the link: chosen at attach (the run's /30
/// from the subnet ledger), so it cannot be in the compiled plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestAddressing {
    /// The boundary's address.
    pub address: std::net::Ipv4Addr,
    /// Its prefix length (30).
    pub prefix: u8,
    /// The default gateway: the host side of the link, which is also the run's DNS resolver.
    pub gateway: std::net::Ipv4Addr,
}

impl GuestAddressing {
    /// The guest agent's kernel command line parameter: `sr.net=<address>/<prefix>,<gateway>`.
    pub fn kernel_param(&self) -> String {
        format!("sr.net={}/{},{}", self.address, self.prefix, self.gateway)
    }
}

/// Where the boundary's network namespace comes from, which decides what
/// [`NetworkHook::prepare`] may start before the boundary exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamespaceSource {
    /// The boundary makes its own, or has none (a microVM: its link is a TAP device made at
    /// attach).
    Boundary,
    /// The boundary joins one the hook makes (the process sandbox's init): the hook may make
    /// it, with the run's link in it, while the boundary starts.
    Hook,
}

/// A network namespace made by the hook for the boundary to join ([`NamespaceSource::Hook`]),
/// which the run's link is being put into meanwhile.
#[derive(Debug)]
pub struct PreparedNamespace {
    made: mpsc::Receiver<Result<File, String>>,
}

impl PreparedNamespace {
    /// The namespace that `made` will deliver (or why it could not be made).
    pub fn new(made: mpsc::Receiver<Result<File, String>>) -> Self {
        PreparedNamespace { made }
    }

    /// Waits until the namespace exists; returns the file that holds it (an nsfs file, for
    /// `setns(2)`). It lives while that file is open or a process is in it: the boundary keeps
    /// the file until its init has joined.
    pub fn wait(self) -> Result<File, String> {
        self.made
            .recv()
            .unwrap_or_else(|_| Err("the namespace's thread ended without one".into()))
    }
}

/// One sampling of the network's counters.
#[derive(Debug, Clone, Default)]
pub struct NetworkSample {
    /// Events to record now, in order: (event type, payload).
    pub events: Vec<(EventType, Value)>,
    /// The report's `networkAudit` block as of this sample (`None` for mode none).
    pub audit: Option<NetworkAudit>,
    /// The applied table's digest once it has been read back, or why it could not be (the
    /// read-back runs while the workload starts; the final sample waits for it). `None` for
    /// mode none, and before the read-back ends.
    pub ruleset_digest: Option<Result<String, Diagnostic>>,
}

/// Network lifecycle of one run.
pub trait NetworkHook {
    /// Starts what needs nothing of the boundary, before the boundary is started, so that it
    /// runs while the boundary starts (the allowlist: the run's /30 and its nftables table;
    /// with [`NamespaceSource::Hook`] also the sandbox's network namespace and the link into
    /// it, returned for the boundary to join). [`NetworkHook::attach`] still returns only once
    /// everything is in place, and [`NetworkHook::release`] removes what this made whether or
    /// not attach is ever called. Optional: attach does it all when prepare was not called
    /// (and the boundary then makes its own namespace). Failure is SR-RUN-201.
    fn prepare(
        &mut self,
        _run_dir: &Path,
        _source: NamespaceSource,
    ) -> Result<Option<PreparedNamespace>, Diagnostic> {
        Ok(None)
    }

    /// Connects `boundary` (the sandbox's namespace, or a microVM's TAP device) to the host and
    /// applies the run's rules. `run_dir` is the run directory. Failure is SR-RUN-201.
    fn attach(
        &mut self,
        boundary: &Boundary,
        run_dir: &Path,
    ) -> Result<AttachedNetwork, Diagnostic>;

    /// Samples rule counters; called periodically while the workload runs and once at its end
    /// (`final_sample`). Returns the events to record now and the current audit block.
    fn sample(&mut self, final_sample: bool) -> Result<NetworkSample, Diagnostic>;

    /// Removes everything `attach` created. Must be safe to call when `attach` failed midway or
    /// was never called, and more than once. Failure is SR-RUN-202. Called once the sandbox's
    /// processes have ended, so a link that goes with its namespace may be awaited rather
    /// than deleted.
    fn release(&mut self) -> Result<(), Diagnostic>;

    /// What release did, for the `network.released` event (merged into its payload): the
    /// objects removed, and a release handed to a deferred releaser (`deferred`). Null when
    /// there is nothing to say.
    fn release_summary(&self) -> Value {
        Value::Null
    }
}

/// `network.mode: none`: the sandbox keeps a network namespace with only loopback.
#[derive(Debug, Default)]
pub struct NoNetwork;

impl NetworkHook for NoNetwork {
    fn attach(
        &mut self,
        _boundary: &Boundary,
        _run_dir: &Path,
    ) -> Result<AttachedNetwork, Diagnostic> {
        Ok(AttachedNetwork::default())
    }
    fn sample(&mut self, _final_sample: bool) -> Result<NetworkSample, Diagnostic> {
        Ok(NetworkSample::default())
    }
    fn release(&mut self) -> Result<(), Diagnostic> {
        Ok(())
    }
}
