//! A run's evidence from its run directory to its signed report, around a sandbox's life: the
//! CLI's `safe-run run` and the daemon both go through here, so both leave the same evidence.
//!
//! [`Recording::start`], before anything runs: the run directory's copies of the policy and
//! the bundle (a run that cannot keep them does not start), the event chain, `policy.compiled`,
//! the digests of every input (`artifact.hashed`), the network hook for the plan
//! (`network.plan.generated`), and the read-only mounts' digests. It hands back the hook and
//! the sink the sandbox records into. [`Recording::finish`], after the sandbox is destroyed:
//! the writable mounts' digests, the chain's activity (execs and transfers), the chain synced,
//! and the report assembled and signed ([`crate::report`]).

use std::path::{Path, PathBuf};

use serde_json::json;
use sr_bundle::CompileBundle;
use sr_common::{Diagnostic, ErrorCode};
use sr_evidence::mounts::Taken;
use sr_evidence::report::Input;
use sr_evidence::{ChainWriter, EventSink, SigningKey, SystemClock, events};
use sr_policy::{OperatorConfig, ValidatedPolicy};

use crate::digest_cache::DirStore;
use crate::network::AllowlistNetwork;
use crate::report::{self, CountingSink, MountDigests, ReportContext};
use crate::{NetworkHook, NoNetwork, RunDir, RunOutcome};

/// The sink a recorded sandbox writes into: the run's chain, with its samples counted.
pub type RunSink = CountingSink<ChainWriter>;

/// What [`Recording::start`] made before the sandbox: the chain, the inputs' digests, the
/// network hook, the read-only mounts' digests.
type Begun = (
    ChainWriter,
    Vec<Input>,
    Box<dyn NetworkHook + Send>,
    MountDigests,
);

/// Where the policy came from, for the run directory's copy of it.
#[derive(Debug, Clone, Copy)]
pub enum PolicySource<'a> {
    /// A file, copied as it is (its extension kept).
    File(&'a Path),
    /// Text with no file (the built-in policy, a policy sent to the daemon), written as `name`.
    Text {
        /// The copy's file name in the run directory (`policy.yaml`, `policy.json`).
        name: &'a str,
        /// The policy's text.
        text: &'a str,
    },
}

/// A run's evidence between its start and its report.
pub struct Recording {
    /// The run directory.
    pub dir: RunDir,
    policy: ValidatedPolicy,
    bundle: CompileBundle,
    inputs: Vec<Input>,
    mount_digests: MountDigests,
}

/// What [`Recording::start`] hands to the sandbox.
pub struct Started {
    /// The evidence to finish once the sandbox is destroyed.
    pub recording: Recording,
    /// The network hook for the bundle's plan.
    pub hook: Box<dyn NetworkHook + Send>,
    /// The sink the sandbox records into.
    pub sink: RunSink,
}

/// What [`Recording::finish`] produced.
#[derive(Debug)]
pub struct Finished {
    /// The signed (or, by policy, unsigned) report, when it could be written.
    pub report_path: Option<PathBuf>,
    /// Evidence problems: a lost chain, inconsistent activity, a report that could not be
    /// written. Each is SR-EVD-001/002.
    pub errors: Vec<Diagnostic>,
}

fn evidence_error(path: &str, message: String, hint: &str) -> Diagnostic {
    Diagnostic::new(ErrorCode::EvidenceEventWrite, path, message, hint)
}

/// The file name the copy of policy file `path` gets in the run directory.
fn policy_copy_name(path: &Path) -> String {
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => "policy.json".into(),
        _ => "policy.yaml".into(),
    }
}

impl Recording {
    /// Starts the evidence of a run of `bundle` (compiled from `policy`) in `dir`. When it
    /// fails, `dir` keeps only what was written (a claimed spare's other files are removed).
    pub fn start(
        mut dir: RunDir,
        policy: &ValidatedPolicy,
        bundle: &CompileBundle,
        source: PolicySource<'_>,
        config: &OperatorConfig,
    ) -> Result<Started, Diagnostic> {
        match Self::begin(&mut dir, policy, bundle, source, config) {
            Ok((chain, inputs, hook, mount_digests)) => Ok(Started {
                recording: Recording {
                    dir,
                    policy: policy.clone(),
                    bundle: bundle.clone(),
                    inputs,
                    mount_digests,
                },
                hook,
                sink: CountingSink::new(chain),
            }),
            Err(d) => {
                dir.discard_unwritten();
                Err(d)
            }
        }
    }

    fn begin(
        dir: &mut RunDir,
        policy: &ValidatedPolicy,
        bundle: &CompileBundle,
        source: PolicySource<'_>,
        config: &OperatorConfig,
    ) -> Result<Begun, Diagnostic> {
        let bundle_copy = dir.path.join("bundle.json");
        let copied = match source {
            PolicySource::File(path) => {
                let name = policy_copy_name(path);
                dir.take_file(&name);
                let copy = dir.path.join(name);
                // fs::copy gives the copy the source's mode, also into an existing file.
                std::fs::copy(path, &copy).map(drop).map_err(|e| (copy, e))
            }
            PolicySource::Text { name, text } => {
                dir.take_file(name);
                let copy = dir.path.join(name);
                std::fs::write(&copy, text).map_err(|e| (copy, e))
            }
        }
        .and_then(|()| {
            dir.take_file("bundle.json");
            std::fs::write(&bundle_copy, sr_bundle::to_canonical_json(bundle))
                .map_err(|e| (bundle_copy, e))
        });
        if let Err((path, e)) = copied {
            return Err(evidence_error(
                "evidence.rundir",
                format!("cannot write {}: {e}", path.display()),
                "check free space and permissions of the run directory",
            ));
        }
        let clock = Box::new(SystemClock);
        let plan = &bundle.evidence_plan.events;
        let mut chain = if dir.take_file(sr_evidence::chain::EVENTS_FILE) {
            ChainWriter::adopt(&dir.path, plan, clock)
        } else {
            ChainWriter::create(&dir.path, plan, clock)
        }
        .map_err(|e| {
            evidence_error(
                "evidence.events",
                e.to_string(),
                "check that the run directory is writable",
            )
        })?;
        // A failed write poisons the chain; the sandbox stops at its next event. The chain,
        // like the report, names the overrides the bundle was compiled with.
        let mut compiled = json!({"policyDigest": bundle.policy_digest, "policyName": bundle.policy_name, "backend": bundle.backend.name()});
        if !bundle.policy_overrides.is_empty()
            && let Some(payload) = compiled.as_object_mut()
        {
            payload.insert("policyOverrides".into(), json!(bundle.policy_overrides));
        }
        let _ = chain.emit(events::POLICY_COMPILED, compiled);
        let digests = DirStore::under(dir.path.parent().unwrap_or(&dir.path));
        let inputs = report::hash_inputs(policy, bundle, &mut chain, &digests)?;
        // mode none: a private network namespace with loopback only; allowlist: the network
        // module.
        let hook: Box<dyn NetworkHook + Send> = match &bundle.network_plan {
            None => Box::new(NoNetwork),
            Some(plan) => Box::new(AllowlistNetwork::new(plan, &dir.run_id, &config.network)?),
        };
        let _ = chain.emit(
            events::NETWORK_PLAN_GENERATED,
            report::network_plan_payload(bundle),
        );
        // Read-only mounts as they were before the workload could read them.
        let mut mount_digests = MountDigests::new(&config.mount_digests);
        mount_digests.take(bundle, Taken::Start);
        Ok((chain, inputs, hook, mount_digests))
    }

    /// Finishes the evidence of the destroyed sandbox's `outcome` with the `sink` it gave back,
    /// and writes the report (signed with `signer` when the policy signs).
    pub fn finish(
        mut self,
        outcome: &RunOutcome,
        sink: Option<RunSink>,
        signer: Option<&SigningKey>,
    ) -> Finished {
        // Writable mounts as the workload left them.
        self.mount_digests.take(&self.bundle, Taken::End);
        let Some(counting) = sink else {
            return Finished {
                report_path: None,
                errors: vec![evidence_error(
                    "evidence.events",
                    "the event chain was lost before the report could be written".into(),
                    "this is a bug; the run directory keeps events.jsonl as far as it was written",
                )],
            };
        };
        let mut errors = Vec::new();
        let samples = counting.samples;
        let mut chain = counting.inner;
        let activity = chain.take_activity().unwrap_or_else(|e| {
            errors.push(evidence_error(
                "evidence.activity",
                format!("the run's exec events are inconsistent: {e}"),
                "this is a bug in safe-run; the chain in events.jsonl is kept as written",
            ));
            Default::default()
        });
        let report_path = match chain.finish() {
            Ok(summary) => {
                let ctx = ReportContext {
                    policy: &self.policy,
                    bundle: &self.bundle,
                    inputs: self.inputs,
                    chain: summary,
                    samples,
                    mounts: self.mount_digests.evidence(),
                    activity,
                };
                match report::write_signed_report(outcome, ctx, signer) {
                    Ok(p) => {
                        self.dir.mark_finished();
                        Some(p)
                    }
                    Err(d) => {
                        errors.push(d);
                        None
                    }
                }
            }
            Err(e) => {
                errors.push(e.to_diagnostic());
                None
            }
        };
        Finished {
            report_path,
            errors,
        }
    }
}
