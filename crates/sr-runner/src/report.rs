//! Turns what a run observed into the signed `run_report.json` v1 (the report's assembly; the
//! order of a run's evidence, from the run directory to the report, is [`crate::recording`]).
//!
//! The runner knows processes, cgroups and namespaces; sr-evidence knows the report format,
//! the chain and signatures. This module is the one place that maps the first onto the second:
//! the inputs hashed before the run ([`hash_inputs`]), and the report assembled and sealed after
//! it ([`write_signed_report`]). It adds no facts of its own: every field comes from the
//! runner's [`RunOutcome`], the compiled bundle, the policy or the event chain.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::cgroup::Layout;
use crate::digest_cache::{self, EntryStore};
use crate::{RunOutcome, RunStatus};
use serde_json::{Value, json};
use sr_bundle::{CompileBundle, MountStep};
use sr_common::{Diagnostic, ErrorCode};
use sr_evidence::activity::Activity;
use sr_evidence::mounts::{self, Budget, MountEvidence, MountManifest, Taken};
use sr_evidence::report::{
    self, AbsentFeature, BlockedSummary, Cgroup, Cleanup, Enforcement, ExitInfo, ExitStatus,
    HostInfo, Input, InputRole, Landlock, LandlockRule, NetworkAudit, NetworkFacts, Output,
    PolicyInfo, PolicyOverrides, Resources, RuleAudit, RunInfo, RunReport, Seccomp, Timeline,
    UserMapping, rfc3339_from_unix_ms,
};
use sr_evidence::{ChainSummary, EmitError, EventSink, SigningKey, events};
use sr_policy::ValidatedPolicy;
use sr_policy::operator::MountDigestConfig;

/// An event sink that forwards to another and counts resource samples, which the report's
/// `resources.samples` states.
pub struct CountingSink<S> {
    /// The sink every event goes to.
    pub inner: S,
    /// `resource.sample` events emitted (whether or not the plan kept them).
    pub samples: u64,
}

impl<S: EventSink> CountingSink<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        CountingSink { inner, samples: 0 }
    }
}

impl<S: EventSink> EventSink for CountingSink<S> {
    fn emit(&mut self, event_type: events::EventType, payload: Value) -> Result<(), EmitError> {
        if event_type == events::RESOURCE_SAMPLE {
            self.samples += 1;
        }
        self.inner.emit(event_type, payload)
    }
}

/// Digests every input of the run before it starts, records an `artifact.hashed` event for
/// each, and returns them for the report: the canonical policy, the bundle, the command line
/// and the host file the command resolves to (through the digest cache `digests`, see
/// [`crate::digest_cache`]; its event then says `"fromCache": true`).
pub fn hash_inputs(
    policy: &ValidatedPolicy,
    bundle: &CompileBundle,
    sink: &mut dyn EventSink,
    digests: &dyn EntryStore,
) -> Result<Vec<Input>, Diagnostic> {
    let encode = |e: sr_evidence::EvidenceError| e.to_diagnostic();
    let mut inputs = vec![Input {
        role: InputRole::Policy,
        name: "policy".into(),
        path: policy.source_path.as_ref().map(|p| p.display().to_string()),
        digest: bundle.policy_digest.clone(),
    }];
    inputs.push(Input::from_json(InputRole::Bundle, "bundle", bundle).map_err(encode)?);
    let mut argv = vec![bundle.process.command.clone()];
    argv.extend(bundle.process.args.iter().cloned());
    inputs.push(Input::from_json(InputRole::Command, "command", &argv).map_err(encode)?);
    let mut from_cache = false;
    if let Some(host_path) = resolve_command_on_host(bundle) {
        let name = host_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "binary".into());
        // A command that cannot be read here is reported by the launch itself (SR-RUN-002).
        if let Ok((digest, source)) =
            digest_cache::digest(digests, &host_path, digest_cache::system_now_ns)
        {
            from_cache = source == digest_cache::Source::Cache;
            inputs.push(Input {
                role: InputRole::Binary,
                name,
                path: Some(host_path.display().to_string()),
                digest,
            });
        }
    }
    if let Some(fc) = bundle.backend.firecracker() {
        for artifact in &fc.artifacts {
            let role = if artifact.role == "kernel" {
                InputRole::Kernel
            } else {
                InputRole::Rootfs
            };
            let input =
                Input::from_file(role, &artifact.role, Path::new(&artifact.path)).map_err(|e| {
                    Diagnostic::new(
                        ErrorCode::RunPreflight,
                        format!("artifacts.{}", artifact.role),
                        e.to_string(),
                        "check that the artifact exists and is readable",
                    )
                })?;
            inputs.push(input);
        }
    }
    for input in &inputs {
        let mut payload = json!({"role": input.role, "name": input.name, "path": input.path, "digest": input.digest});
        if from_cache
            && input.role == InputRole::Binary
            && let Some(p) = payload.as_object_mut()
        {
            p.insert("fromCache".into(), Value::Bool(true));
        }
        // A failed event write poisons the chain; the runner stops on its next emit.
        let _ = sink.emit(events::ARTIFACT_HASHED, payload);
    }
    Ok(inputs)
}

/// Where the sandbox's command lives on the host: the longest bind target that contains it,
/// mapped to its source; or the rootfs directory joined with it.
fn resolve_command_on_host(bundle: &CompileBundle) -> Option<PathBuf> {
    let command = Path::new(&bundle.process.command);
    let plan = bundle.backend.sandbox()?;
    let mut best: Option<(usize, PathBuf)> = None;
    let mut rootfs_dir = None;
    for step in &plan.mounts {
        match step {
            MountStep::Bind { source, target, .. } => {
                if let Ok(rest) = command.strip_prefix(target) {
                    let depth = Path::new(target).components().count();
                    if best.as_ref().is_none_or(|(d, _)| depth > *d) {
                        best = Some((depth, Path::new(source).join(rest)));
                    }
                }
            }
            MountStep::Root { source } if source != "host" => {
                rootfs_dir = Some(PathBuf::from(source));
            }
            _ => {}
        }
    }
    let candidate = match (best, rootfs_dir) {
        (Some((_, p)), _) => p,
        (None, Some(dir)) => dir.join(command.strip_prefix("/").ok()?),
        (None, None) => return None,
    };
    std::fs::canonicalize(candidate).ok()
}

/// The `network.plan.generated` payload: the mode and, for an allowlist, the digest of the
/// bundle's network plan (JCS) and its size.
pub fn network_plan_payload(bundle: &CompileBundle) -> Value {
    match &bundle.network_plan {
        None => json!({"mode": "none"}),
        Some(plan) => json!({
            "mode": plan.mode,
            "planDigest": sr_evidence::canonical::jcs(plan)
                .map(|b| sr_evidence::canonical::sha256_tagged(&b))
                .ok(),
            "dnsNames": plan.dns.allowed_names.len(),
        }),
    }
}

/// Everything besides the outcome that the report states.
pub struct ReportContext<'a> {
    /// The validated policy.
    pub policy: &'a ValidatedPolicy,
    /// The bundle that ran.
    pub bundle: &'a CompileBundle,
    /// Inputs hashed before the run.
    pub inputs: Vec<Input>,
    /// The finished event chain.
    pub chain: ChainSummary,
    /// Resource samples taken.
    pub samples: u64,
    /// Mount manifests taken before and after the run ([`MountDigests`]).
    pub mounts: Option<MountEvidence>,
    /// The execs, transfers and pool claim the chain recorded.
    pub activity: Activity,
}

/// The run's mount digests, taken in two steps within one per-run budget: read-only mounts
/// before the workload starts, writable ones after it ended (as the operator config says).
pub struct MountDigests {
    config: MountDigestConfig,
    budget: Budget,
    manifests: Vec<MountManifest>,
}

impl MountDigests {
    /// Nothing taken yet.
    pub fn new(config: &MountDigestConfig) -> MountDigests {
        // Report integers stay within 2^53 (docs/evidence.md, section 1).
        let cap = sr_evidence::canonical::MAX_SAFE_INTEGER;
        let config = MountDigestConfig {
            max_files: config.max_files.min(cap),
            max_bytes: sr_common::ByteSize(config.max_bytes.bytes().min(cap)),
            ..config.clone()
        };
        MountDigests {
            budget: Budget::new(config.max_files, config.max_bytes.bytes()),
            config,
            manifests: Vec::new(),
        }
    }

    /// Digests the policy mounts that `taken` concerns: read-only ones at the start,
    /// writable ones at the end, each when the config asks for it.
    pub fn take(&mut self, bundle: &CompileBundle, taken: Taken) {
        let Some(plan) = bundle.backend.sandbox() else {
            return;
        };
        for step in &plan.mounts {
            let MountStep::Bind {
                source,
                target,
                read_only,
                origin,
            } = step
            else {
                continue;
            };
            let wanted = match taken {
                Taken::Start => *read_only && self.config.read_only,
                Taken::End => !*read_only && self.config.writable,
            };
            if origin == "policy" && wanted {
                self.manifests.push(mounts::digest_tree(
                    Path::new(source),
                    target,
                    *read_only,
                    taken,
                    &mut self.budget,
                ));
            }
        }
    }

    /// The report's `mounts` section; absent when no mount was digested.
    pub fn evidence(self) -> Option<MountEvidence> {
        if self.manifests.is_empty() {
            return None;
        }
        let mut manifests = self.manifests;
        manifests.sort_by_key(|m| m.taken == Taken::End);
        Some(MountEvidence {
            max_files: self.config.max_files,
            max_bytes: self.config.max_bytes.bytes(),
            manifests,
        })
    }
}

/// Assembles the report, seals it (signing with `signer` when the evidence plan asks) and
/// writes `<run dir>/run_report.json`. Returns its path.
pub fn write_signed_report(
    outcome: &RunOutcome,
    ctx: ReportContext<'_>,
    signer: Option<&SigningKey>,
) -> Result<PathBuf, Diagnostic> {
    let report = assemble(outcome, ctx);
    let head = report.timeline.head.clone();
    let sealed = report::seal(report, &head, signer).map_err(|e| e.to_diagnostic())?;
    let path = outcome.run_dir.join(report::REPORT_FILE);
    report::write_report(&path, &sealed).map_err(|e| e.to_diagnostic())?;
    Ok(path)
}

/// The overrides the bundle was compiled with, as the report records them (`None`: the policy
/// ran as written).
fn policy_overrides(bundle: &CompileBundle) -> Option<PolicyOverrides> {
    let o = &bundle.policy_overrides;
    (!o.is_empty()).then(|| PolicyOverrides {
        runtime_backend: o.runtime_backend.clone(),
    })
}

/// The unsealed report for `outcome`.
pub fn assemble(outcome: &RunOutcome, ctx: ReportContext<'_>) -> RunReport {
    let started = outcome.timings.started_at_unix_ms;
    let ended = outcome.timings.finished_at_unix_ms.max(started);
    RunReport {
        schema_version: report::SCHEMA_VERSION.to_owned(),
        run: RunInfo {
            id: outcome.run_id.clone(),
            backend: outcome.backend.clone(),
            started_at: rfc3339_from_unix_ms(started),
            ended_at: rfc3339_from_unix_ms(ended),
            duration_ms: ended - started,
            host: HostInfo {
                kernel: outcome.enforcement.kernel.clone(),
                arch: std::env::consts::ARCH.to_owned(),
            },
            safe_run_version: env!("CARGO_PKG_VERSION").to_owned(),
        },
        policy: PolicyInfo {
            name: outcome.policy_name.clone(),
            digest: outcome.policy_digest.clone(),
            path: ctx
                .policy
                .source_path
                .as_ref()
                .map(|p| p.display().to_string()),
            overrides: policy_overrides(ctx.bundle),
        },
        inputs: ctx.inputs,
        enforcement: enforcement(outcome, ctx.bundle),
        timeline: Timeline::from_summary(&ctx.chain, true),
        resources: Resources {
            memory_peak_bytes: Some(outcome.resources.memory_peak_bytes),
            cpu_usage_us: Some(outcome.resources.cpu_usec),
            pids_peak: Some(outcome.resources.pids_peak),
            samples: ctx.samples,
        },
        network_audit: network_audit(&outcome.network_audit),
        exit: exit_info(&outcome.status),
        outputs: [("stdout", &outcome.stdout), ("stderr", &outcome.stderr)]
            .into_iter()
            .filter(|(_, s)| !s.sha256.is_empty())
            .map(|(name, s)| Output {
                name: name.to_owned(),
                path: s
                    .path
                    .strip_prefix(&outcome.run_dir)
                    .unwrap_or(&s.path)
                    .display()
                    .to_string(),
                bytes: s.size,
                digest: tagged(&s.sha256),
                bytes_seen: Some(s.seen),
                truncated: s.truncated,
                limit_bytes: Some(s.limit_bytes),
                on_limit: Some(ctx.bundle.process.output.on_limit.as_str().to_owned()),
            })
            .collect(),
        cleanup: Cleanup {
            ok: outcome.cleanup.errors.is_empty(),
            removed: outcome.cleanup.removed.clone(),
            errors: outcome
                .cleanup
                .errors
                .iter()
                .map(|d| format!("{} at {}: {}", d.code, d.path, d.message))
                .collect(),
        },
        mounts: ctx.mounts,
        execs: ctx.activity.execs,
        transfers: ctx.activity.transfers,
        pool: ctx.activity.pool,
        warnings: outcome
            .warnings
            .iter()
            .map(|d| format!("{} at {}: {}", d.code, d.path, d.message))
            .collect(),
        integrity: None,
    }
}

fn enforcement(outcome: &RunOutcome, bundle: &CompileBundle) -> Enforcement {
    let facts = &outcome.enforcement;
    let workload = facts.workload.as_ref();
    let mut absent = Vec::new();
    let landlock = workload.map(|w| {
        if w.landlock.status != "fully_enforced" {
            absent.push(AbsentFeature {
                feature: "landlock".into(),
                reason: format!(
                    "Landlock {} on this kernel (ABI {}); the operator config does not require it",
                    w.landlock.status.replace('_', " "),
                    w.landlock.abi
                ),
            });
        }
        let mut rules: Vec<LandlockRule> = w
            .landlock
            .rules
            .iter()
            .map(|r| LandlockRule::parse(r))
            .collect();
        rules.sort_by(|a, b| a.path.cmp(&b.path));
        let mut skipped = w.landlock.skipped.clone();
        skipped.sort();
        let mut scopes = w.landlock.scopes.clone();
        scopes.sort();
        Landlock {
            abi: u32::try_from(w.landlock.abi).unwrap_or(0),
            status: w.landlock.status.clone(),
            rules,
            skipped,
            scopes,
        }
    });
    let seccomp = workload.map(|w| Seccomp {
        profile_id: w.seccomp_profile.clone(),
        filter_digest: tagged(&w.seccomp_digest),
        denied_syscalls: bundle
            .backend
            .exec_confinement()
            .map_or(0, |p| p.seccomp.denied_syscalls.len() as u64),
        instructions: Some(w.seccomp_instructions as u64),
        sockets: Some(w.seccomp_sockets.clone()),
    });
    let cgroup = facts.cgroup_layout.as_ref().map(|layout| Cgroup {
        version: match layout {
            Layout::V1 { .. } => "v1",
            Layout::V2 { .. } => "v2",
        }
        .to_owned(),
        limits: facts.cgroup_limits.clone(),
    });
    let user = workload.and_then(|w| {
        let (uid, host_uid) = parse_id_map(&w.uid_map)?;
        let (gid, host_gid) = parse_id_map(&w.gid_map)?;
        Some(UserMapping {
            uid,
            gid,
            host_uid,
            host_gid,
        })
    });
    let (nft_ruleset_digest, details) = match &outcome.network {
        crate::network_facts::NetworkFacts::Allowlist(f) => {
            (f.nft_ruleset_digest.clone(), f.details())
        }
        crate::network_facts::NetworkFacts::None => (None, BTreeMap::new()),
    };
    let mut backend = BTreeMap::new();
    backend.insert("hostname".to_owned(), json!(facts.hostname));
    backend.insert("cgroupPaths".to_owned(), json!(facts.cgroup_paths));
    if let Some(w) = workload {
        backend.insert(
            "capabilitiesDropped".to_owned(),
            json!(w.capabilities_dropped),
        );
        let mounts: Vec<Value> = w
            .policy_mounts
            .iter()
            .map(|(source, target, ro)| json!({"source": source, "target": target, "readOnly": ro}))
            .collect();
        backend.insert("policyMounts".to_owned(), Value::Array(mounts));
        backend.insert(
            "lockIsolatedMounts".to_owned(),
            json!(w.lock_isolated_mounts),
        );
    }
    if let Some(vm) = &facts.microvm {
        backend.insert("microvm".to_owned(), json!(vm));
    }
    let mut namespaces = facts.namespaces.clone();
    namespaces.sort();
    Enforcement {
        namespaces,
        landlock,
        seccomp,
        cgroup,
        rlimits: workload
            .map(|w| w.rlimits.iter().cloned().collect())
            .unwrap_or_default(),
        no_new_privs: workload.is_some_and(|w| w.no_new_privs),
        capabilities: facts.capabilities_kept.clone(),
        user,
        network: NetworkFacts {
            mode: if bundle.network_plan.is_some() {
                "allowlist"
            } else {
                "none"
            }
            .to_owned(),
            nft_ruleset_digest,
            details,
        },
        absent,
        backend,
    }
}

fn network_audit(audit: &Option<crate::network_facts::NetworkAudit>) -> Option<NetworkAudit> {
    let audit = audit.as_ref()?;
    // Rules the policy did not write (the plan's own) are in `details`, not `rules`.
    let rules = audit
        .rules
        .iter()
        .filter_map(|r| {
            Some(RuleAudit {
                rule_id: r.rule_id.clone(),
                egress_index: r.egress_index?,
                allowed_hits: r.allowed_hits,
                blocked_hits: r.blocked_hits,
            })
        })
        .collect();
    Some(NetworkAudit {
        rules,
        blocked: BlockedSummary {
            packets: audit.default_drop.packets,
            bytes: audit.default_drop.bytes,
        },
        details: audit.details(),
    })
}

fn exit_info(status: &RunStatus) -> ExitInfo {
    let reason = match status {
        RunStatus::Destroyed { reason } => Some(*reason),
        _ => None,
    };
    let (status, code, signal) = match status {
        RunStatus::Exited { code } => (ExitStatus::Exited, Some(*code), None),
        RunStatus::Signaled { signal } => (ExitStatus::Signaled, None, Some(*signal)),
        RunStatus::Timeout { .. } => (ExitStatus::Timeout, None, Some(libc::SIGKILL)),
        RunStatus::Oom { signal, code, .. } => (ExitStatus::Oom, *code, *signal),
        RunStatus::LaunchFailed { .. } => (ExitStatus::LaunchFailed, None, None),
        RunStatus::Stopped { .. } => (ExitStatus::Stopped, None, Some(libc::SIGKILL)),
        RunStatus::OutputLimit { .. } => (ExitStatus::OutputLimit, None, Some(libc::SIGKILL)),
        RunStatus::Interrupted { signal } => (ExitStatus::Interrupted, None, Some(*signal)),
        RunStatus::Lost { .. } => (ExitStatus::Lost, None, None),
        RunStatus::Destroyed { .. } => (ExitStatus::Destroyed, None, Some(libc::SIGKILL)),
    };
    ExitInfo {
        status,
        code,
        signal,
        reason,
    }
}

fn parse_id_map(line: &str) -> Option<(u32, u32)> {
    let mut parts = line.split_whitespace();
    let inside = parts.next()?.parse().ok()?;
    let outside = parts.next()?.parse().ok()?;
    Some((inside, outside))
}

fn tagged(digest: &str) -> String {
    if digest.starts_with("sha256:") {
        digest.to_owned()
    } else {
        format!("sha256:{digest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_records_the_overrides_the_bundle_was_compiled_with() {
        use sr_policy::model::Backend;
        use sr_policy::{OperatorConfig, PolicyOverrides as Given, SourceFormat};
        let text = "version: 1\nname: t\nruntime: { command: /bin/true, args: [] }\nmounts: []\n";
        let config = OperatorConfig::default();
        let compiled = |overrides: &Given| {
            let policy = sr_policy::validate_with_overrides(
                text,
                SourceFormat::Yaml,
                Path::new("/"),
                &config,
                &sr_policy::rules::RealFs,
                overrides,
            )
            .unwrap();
            sr_compiler::compile(&policy, &config).unwrap()
        };
        assert_eq!(policy_overrides(&compiled(&Given::none())), None);
        assert_eq!(
            policy_overrides(&compiled(&Given::backend(Backend::Microvm, "--backend"))),
            Some(PolicyOverrides {
                runtime_backend: Some("microvm".into())
            })
        );
    }

    #[test]
    fn id_maps_parse() {
        assert_eq!(parse_id_map("1000 65534 1"), Some((1000, 65534)));
        assert_eq!(parse_id_map("garbage"), None);
    }

    #[test]
    fn interrupted_runs_say_so() {
        let info = exit_info(&RunStatus::Interrupted { signal: 15 });
        assert_eq!(info.status, ExitStatus::Interrupted);
        assert_eq!(info.signal, Some(15));
    }

    /// Issue 14 item 4: a lost run has neither code nor signal (it used to read as signal 9).
    #[test]
    fn lost_runs_invent_no_signal() {
        let info = exit_info(&RunStatus::Lost {
            diagnostic: Diagnostic::new(ErrorCode::RunLaunch, "monitor.exit", "gone", ""),
        });
        assert_eq!(info.status, ExitStatus::Lost);
        assert_eq!((info.code, info.signal), (None, None));
    }

    #[test]
    fn allowlist_audit_maps_rules_and_default_drop() {
        use crate::network_facts as nf;
        let rule = |id: &str, index: Option<u32>, allowed, blocked| nf::RuleHits {
            rule_id: id.into(),
            egress_index: index,
            allowed_hits: allowed,
            blocked_hits: blocked,
        };
        let audit = Some(nf::NetworkAudit {
            rules: vec![
                rule("egress-0", Some(0), 3, 1),
                rule("default-drop", None, 0, 7),
            ],
            default_drop: nf::Totals {
                packets: 7,
                bytes: 420,
            },
            host_drop: nf::Totals::default(),
            pool_drop: nf::Totals::default(),
            connection_limit: nf::ConnectionLimitAudit {
                max_connections: 4096,
                dropped: nf::Totals::default(),
            },
            blocked_destinations: Vec::new(),
            blocked_destinations_total: 0,
            dns: nf::DnsAudit {
                answered: 1,
                refused: 2,
                ..Default::default()
            },
            dns_errors: Vec::new(),
        });
        let a = network_audit(&audit).unwrap();
        assert_eq!(a.rules.len(), 1);
        assert_eq!(a.rules[0].allowed_hits, 3);
        assert_eq!(a.blocked.packets, 7);
        assert_eq!(a.blocked.bytes, 420);
        assert!(a.details.contains_key("dns"));
        assert!(!a.details.contains_key("rules") && !a.details.contains_key("defaultDrop"));
        assert!(network_audit(&None).is_none());
    }
}
