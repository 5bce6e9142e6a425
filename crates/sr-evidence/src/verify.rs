//! Offline verification of a run report and its event chain.
//!
//! Nothing here touches the network; everything a check needs is in the report, the event log,
//! the files they name, and (optionally) a public key given by the verifier. Every check is
//! listed with its result, so a reader sees what was proven and what could not be checked:
//!
//! | check | passes when |
//! |---|---|
//! | `report.read` | the file reads and is a JSON object |
//! | `report.layout` | the bytes are exactly the canonical layout (no byte changed, even whitespace) |
//! | `report.schema` | it validates against the v1 JSON Schema and `schemaVersion` is v1 |
//! | `integrity.digest` | `algorithm` is `sha256+jcs` and the digest recomputes |
//! | `signature` | the Ed25519 signature over the digest verifies (with `--key`: that key; otherwise the embedded, self-asserted key) |
//! | `events.chain` | every line of events.jsonl is a canonical, correctly hashed and linked event |
//! | `events.head` | the chain's last hash and count equal `timeline.head`, `integrity.eventsHead` and `timeline.count` |
//! | `policy.overrides` | only when the report records overrides: `run.backend` is a boundary the overriding `runtime.backend` runs on (`microvm`: `qemu` or `firecracker`) |
//! | `timeline.complete` | informational: whether the run reached cleanup (skip when not) |
//! | `output:<name>` | the output's numbers agree (kept ≤ limit, kept ≤ seen, `truncated` iff seen > kept), and the file, when present, has the recorded size and digest (skip when absent) |
//! | `mount:<target>` | a mount manifest's `manifestDigest` recomputes over its entries, and `files`, `bytes` and `complete` agree with them |
//! | `input:<role>:<name>` | only with [`VerifyOptions::check_host_files`]: a file input, when present, has the recorded digest (skip when absent); otherwise `not requested` |
//!
//! A skip never counts as a pass: [`Verification::ok`] is true when nothing failed, and the
//! output names every skip. Host files (the inputs' absolute paths: the binary, a rootfs, a
//! kernel) are re-hashed only on request: on another machine the same path names another
//! file, so checking it by default made a report fail everywhere but on the host that ran it.
//! A report verifies anywhere with only the report, its event log, its outputs and the public
//! key.

use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::canonical::SHA256_PREFIX;
use crate::chain::{self, CheckedChain, EVENTS_FILE};
use crate::keys;
use crate::report::{
    self, INTEGRITY_ALGORITHM, InputRole, RunReport, SCHEMA_VERSION, digest_of_value,
};

/// The result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Checked and correct.
    Pass,
    /// Checked and wrong.
    Fail,
    /// Could not be checked (and says why); never a pass.
    Skip,
    /// Not checked because the verifier did not ask for it (host files); never a pass.
    #[serde(rename = "not_requested")]
    NotRequested,
}

impl Status {
    /// `PASS`, `FAIL`, `SKIP`.
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
            Status::NotRequested => "OFF ",
        }
    }
}

/// One named check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Check name (see the module docs).
    pub name: String,
    /// Result.
    pub status: Status,
    /// What was found.
    pub detail: String,
}

/// All checks of one verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// Checks in the order they ran.
    pub checks: Vec<Check>,
    /// Whether the evidence covers the whole run (report: `timeline.complete`; events only:
    /// the chain ends with `cleanup.done`).
    pub complete: bool,
}

impl Verification {
    /// True when no check failed.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.status == Status::Fail)
    }

    /// The error that names what failed (`None` when nothing did). When the signer is the only
    /// thing wrong, it says so plainly rather than suggesting tampering.
    pub fn failure_diagnostic(&self) -> Option<sr_common::Diagnostic> {
        use sr_common::{Diagnostic, ErrorCode};
        let failed: Vec<&Check> = self.failures().collect();
        if let [only] = failed.as_slice()
            && only.name == "signature"
            && only.detail.starts_with("the report was signed by key")
        {
            return Some(Diagnostic::new(
                ErrorCode::EvidenceReport,
                "evidence.verify",
                format!("wrong key: {}", only.detail),
                "every other check passed; verify with the signer's public key (`safe-run key export-public --out FILE` on the host that ran it)",
            ));
        }
        let names: Vec<&str> = failed.iter().map(|c| c.name.as_str()).collect();
        (!failed.is_empty()).then(|| {
            Diagnostic::new(
                ErrorCode::EvidenceReport,
                "evidence.verify",
                format!("verification failed: {}", names.join(", ")),
                "the report, its event log or a file it names was changed, or the key is not the signer's; see the FAIL lines",
            )
        })
    }

    fn push(&mut self, name: impl Into<String>, status: Status, detail: impl Into<String>) {
        self.checks.push(Check {
            name: name.into(),
            status,
            detail: detail.into(),
        });
    }

    /// One line per check: `PASS  signature  ed25519 keyid=…`.
    pub fn render_text(&self) -> String {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        let mut out = String::new();
        for c in &self.checks {
            out.push_str(&format!(
                "{}  {:width$}  {}\n",
                c.status.label(),
                c.name,
                c.detail
            ));
        }
        out
    }
}

/// Default location of the event log: `events.jsonl` beside the report.
pub fn default_events_path(report_path: &Path) -> PathBuf {
    report_path
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(EVENTS_FILE)
}

/// What a verification checks beyond the report, its chain and its outputs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Re-hash the inputs' host files (binary, rootfs, kernel) at their recorded absolute
    /// paths. Meaningful only on the host that ran the workload (or one built the same way).
    pub check_host_files: bool,
}

/// Verifies a report, its event chain and its outputs, with default options (host files are
/// not re-hashed). `events_path` defaults to `events.jsonl` beside the report; `key` is the
/// verifier's trusted public key.
pub fn verify(
    report_path: &Path,
    events_path: Option<&Path>,
    key: Option<&VerifyingKey>,
) -> Verification {
    verify_with(report_path, events_path, key, VerifyOptions::default())
}

/// [`verify`] with options.
pub fn verify_with(
    report_path: &Path,
    events_path: Option<&Path>,
    key: Option<&VerifyingKey>,
    options: VerifyOptions,
) -> Verification {
    let mut v = Verification {
        checks: Vec::new(),
        complete: false,
    };
    let bytes = match std::fs::read(report_path) {
        Ok(b) => b,
        Err(e) => {
            v.push(
                "report.read",
                Status::Fail,
                format!("{}: {e}", report_path.display()),
            );
            return v;
        }
    };
    let value: Value = match serde_json::from_slice(&bytes) {
        Ok(value @ Value::Object(_)) => value,
        Ok(_) => {
            v.push("report.read", Status::Fail, "not a JSON object");
            return v;
        }
        Err(e) => {
            v.push("report.read", Status::Fail, format!("not JSON: {e}"));
            return v;
        }
    };
    v.push(
        "report.read",
        Status::Pass,
        report_path.display().to_string(),
    );

    match report::render_value(&value) {
        Ok(canonical) if canonical == bytes => v.push(
            "report.layout",
            Status::Pass,
            "canonical (RFC 8785 key order, 2-space indent)",
        ),
        Ok(_) => v.push(
            "report.layout",
            Status::Fail,
            "the bytes differ from the canonical layout safe-run writes (edited file)",
        ),
        Err(e) => v.push("report.layout", Status::Fail, e),
    }

    check_schema(&mut v, &value);

    let integrity = value.get("integrity");
    let recorded_digest = integrity
        .and_then(|i| i.get("digest"))
        .and_then(Value::as_str);
    let algorithm = integrity
        .and_then(|i| i.get("algorithm"))
        .and_then(Value::as_str);
    match (digest_of_value(&value), recorded_digest) {
        (Ok(d), Some(r)) if d == r && algorithm == Some(INTEGRITY_ALGORITHM) => {
            v.push("integrity.digest", Status::Pass, d)
        }
        (Ok(_), Some(_)) if algorithm != Some(INTEGRITY_ALGORITHM) => v.push(
            "integrity.digest",
            Status::Fail,
            format!("algorithm is {algorithm:?}, expected {INTEGRITY_ALGORITHM}"),
        ),
        (Ok(d), Some(r)) => v.push(
            "integrity.digest",
            Status::Fail,
            format!("recorded {r}, recomputed {d}: the report was changed after sealing"),
        ),
        (Ok(_), None) => v.push("integrity.digest", Status::Fail, "no integrity.digest"),
        (Err(e), _) => v.push("integrity.digest", Status::Fail, e),
    }

    let parsed: RunReport = match serde_json::from_value(value) {
        Ok(r) => r,
        Err(e) => {
            v.push("report.types", Status::Fail, e.to_string());
            return v;
        }
    };
    check_signature(&mut v, &parsed, key);

    let events_path = events_path
        .map(Path::to_owned)
        .unwrap_or_else(|| default_events_path(report_path));
    check_events_against_report(&mut v, &parsed, &events_path);
    check_activity(&mut v, &parsed, &events_path);
    check_overrides(&mut v, &parsed);

    v.complete = parsed.timeline.complete;
    if parsed.timeline.complete {
        v.push("timeline.complete", Status::Pass, "the run reached cleanup");
    } else {
        v.push(
            "timeline.complete",
            Status::Skip,
            "incomplete: the report was written on an error path before cleanup finished",
        );
    }

    let run_dir = report_path.parent().unwrap_or_else(|| Path::new("."));
    for out in &parsed.outputs {
        check_output(&mut v, run_dir, out);
    }
    for input in &parsed.inputs {
        check_input(&mut v, input, options.check_host_files);
    }
    for manifest in parsed.mounts.iter().flat_map(|m| &m.manifests) {
        check_manifest(&mut v, manifest);
    }
    v
}

/// A mount manifest's own numbers and its digest over the listed entries. The files
/// themselves are host files: not re-read here.
fn check_manifest(v: &mut Verification, m: &crate::mounts::MountManifest) {
    let name = format!("mount:{}", m.target);
    let mut problems = Vec::new();
    match crate::mounts::manifest_digest(&m.entries) {
        Ok(d) if d == m.manifest_digest => {}
        Ok(d) => problems.push(format!(
            "entries hash to {d}, manifestDigest is {}",
            m.manifest_digest
        )),
        Err(e) => problems.push(e),
    }
    if m.files != m.entries.len() as u64 {
        problems.push(format!(
            "files is {} but {} entries are listed",
            m.files,
            m.entries.len()
        ));
    }
    let hashed: u64 = m.entries.iter().filter_map(|e| e.bytes).sum();
    if hashed != m.bytes {
        problems.push(format!(
            "bytes is {} but the entries sum to {hashed}",
            m.bytes
        ));
    }
    if m.complete && (m.limit_reached.is_some() || !m.errors.is_empty()) {
        problems.push("complete, yet a bound was reached or an entry was unreadable".into());
    }
    if !problems.is_empty() {
        v.push(name, Status::Fail, problems.join("; "));
        return;
    }
    let extent = match (m.complete, m.limit_reached) {
        (true, _) => String::new(),
        (false, Some(limit)) => format!(
            " (incomplete: {} reached)",
            serde_json::to_value(limit)
                .ok()
                .and_then(|l| l.as_str().map(str::to_owned))
                .unwrap_or_default()
        ),
        (false, None) => format!(" (incomplete: {} unreadable)", m.errors.len()),
    };
    v.push(
        name,
        Status::Pass,
        format!(
            "{} entries, {} bytes, manifest {}{extent}",
            m.files, m.bytes, m.manifest_digest
        ),
    );
}

/// Verifies an event log alone (no report): the chain, and whether it is complete (ends with
/// `cleanup.done`). A valid chain without it is an incomplete prefix, e.g. after a crash.
pub fn verify_events(events_path: &Path) -> Verification {
    let mut v = Verification {
        checks: Vec::new(),
        complete: false,
    };
    let Some(chain) = read_chain(&mut v, events_path) else {
        return v;
    };
    v.complete = chain.ends_with_cleanup();
    if v.complete {
        v.push(
            "events.complete",
            Status::Pass,
            "the chain ends with cleanup.done",
        );
    } else {
        v.push(
            "events.complete",
            Status::Skip,
            format!(
                "incomplete prefix: the chain ends with {} (the run stopped before cleanup.done, or the plan omits it); without a signed report the tail could also have been cut",
                chain.last_type.as_deref().unwrap_or("no event")
            ),
        );
    }
    v
}

fn read_chain(v: &mut Verification, events_path: &Path) -> Option<CheckedChain> {
    let bytes = match std::fs::read(events_path) {
        Ok(b) => b,
        Err(e) => {
            v.push(
                "events.chain",
                Status::Fail,
                format!("{}: {e} (pass --events FILE)", events_path.display()),
            );
            return None;
        }
    };
    match chain::check_chain(&bytes) {
        Ok(c) => {
            v.push(
                "events.chain",
                Status::Pass,
                format!("{} events, head {}", c.count, c.head),
            );
            Some(c)
        }
        Err(e) => {
            v.push(
                "events.chain",
                Status::Fail,
                format!("{}: {e}", events_path.display()),
            );
            None
        }
    }
}

fn check_schema(v: &mut Verification, value: &Value) {
    let schema = report::report_schema();
    let validator = match jsonschema::validator_for(&schema) {
        Ok(val) => val,
        Err(e) => {
            v.push(
                "report.schema",
                Status::Fail,
                format!("schema unusable: {e}"),
            );
            return;
        }
    };
    let errors: Vec<String> = validator
        .iter_errors(value)
        .take(5)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    let version = value.get("schemaVersion").and_then(Value::as_str);
    if !errors.is_empty() {
        v.push("report.schema", Status::Fail, errors.join("; "));
    } else if version != Some(SCHEMA_VERSION) {
        v.push(
            "report.schema",
            Status::Fail,
            format!("schemaVersion is {version:?}, expected {SCHEMA_VERSION}"),
        );
    } else {
        v.push("report.schema", Status::Pass, SCHEMA_VERSION);
    }
}

fn check_signature(v: &mut Verification, report: &RunReport, key: Option<&VerifyingKey>) {
    let Some(integrity) = &report.integrity else {
        v.push("signature", Status::Fail, "no integrity block");
        return;
    };
    let Some(sig_b64) = &integrity.signature else {
        if integrity.keyid.is_some() || integrity.public_key.is_some() {
            v.push(
                "signature",
                Status::Fail,
                "keyid or publicKey present without a signature (signature removed)",
            );
        } else if key.is_some() {
            v.push(
                "signature",
                Status::Fail,
                "the report is unsigned but --key was given",
            );
        } else {
            v.push(
                "signature",
                Status::Skip,
                "the report is unsigned (policy evidence.sign: false)",
            );
        }
        return;
    };
    if integrity.keyid.is_none() || integrity.public_key.is_none() {
        v.push(
            "signature",
            Status::Fail,
            "a signed report carries signature, keyid and publicKey together; one was removed",
        );
        return;
    }
    let (key, trust) = match key {
        Some(k) => (*k, "key given by the verifier"),
        None => {
            let embedded = integrity
                .public_key
                .as_deref()
                .ok_or_else(|| "no integrity.publicKey; pass --key".to_owned())
                .and_then(keys::parse_public_key);
            match embedded {
                Ok(k) => (
                    k,
                    "self-asserted key embedded in the report: proves integrity, not who signed; pass --key to check the signer",
                ),
                Err(e) => {
                    v.push("signature", Status::Fail, e);
                    return;
                }
            }
        }
    };
    let id = keys::keyid(&key);
    if integrity.keyid.as_deref() != Some(id.as_str()) {
        v.push(
            "signature",
            Status::Fail,
            match integrity.keyid.as_deref() {
                Some(signer) => format!(
                    "the report was signed by key {signer}, not by the key given (keyid {id})"
                ),
                None => format!("the report names no signing key; the key given is {id}"),
            },
        );
        return;
    }
    if let Some(pk) = &integrity.public_key
        && pk != &keys::public_key_base64(&key)
    {
        v.push(
            "signature",
            Status::Fail,
            format!("the embedded public key is not key {id}"),
        );
        return;
    }
    let sig = match B64
        .decode(sig_b64)
        .ok()
        .and_then(|b| Signature::from_slice(&b).ok())
    {
        Some(s) => s,
        None => {
            v.push(
                "signature",
                Status::Fail,
                "signature is not a base64 Ed25519 signature",
            );
            return;
        }
    };
    match key.verify_strict(integrity.digest.as_bytes(), &sig) {
        Ok(()) => v.push(
            "signature",
            Status::Pass,
            format!("ed25519 keyid={id} ({trust})"),
        ),
        Err(_) => v.push(
            "signature",
            Status::Fail,
            format!("ed25519 signature does not verify with key {id}"),
        ),
    }
}

fn check_events_against_report(v: &mut Verification, report: &RunReport, events_path: &Path) {
    let Some(chain) = read_chain(v, events_path) else {
        v.push("events.head", Status::Fail, "no valid chain to compare");
        return;
    };
    let t = &report.timeline;
    let events_head = report.integrity.as_ref().map(|i| i.events_head.as_str());
    let mut problems = Vec::new();
    if chain.head != t.head {
        problems.push(format!(
            "chain head {} != timeline.head {}",
            chain.head, t.head
        ));
    }
    if events_head != Some(t.head.as_str()) {
        problems.push(format!(
            "integrity.eventsHead {events_head:?} != timeline.head {}",
            t.head
        ));
    }
    if chain.count != t.count {
        problems.push(format!(
            "chain has {} events, timeline.count is {}",
            chain.count, t.count
        ));
    }
    if problems.is_empty() {
        v.push(
            "events.head",
            Status::Pass,
            format!("{} events, head matches the report", chain.count),
        );
    } else {
        v.push("events.head", Status::Fail, problems.join("; "));
    }
}

/// A report that records overrides ran on what they asked for: `policy.overrides` names the
/// policy backend the caller gave, `run.backend` the boundary that enforced it, and the two
/// must agree (`microvm` runs on `qemu` or `firecracker`). Only reports with overrides get the
/// check: an older report, or a run of the policy as written, has nothing to agree with.
fn check_overrides(v: &mut Verification, report: &RunReport) {
    let Some(backend) = report
        .policy
        .overrides
        .as_ref()
        .and_then(|o| o.runtime_backend.as_deref())
    else {
        return;
    };
    let boundary = report.run.backend.as_str();
    let runs_on = match backend {
        "microvm" => matches!(boundary, "qemu" | "firecracker"),
        other => other == boundary,
    };
    if runs_on {
        v.push(
            "policy.overrides",
            Status::Pass,
            format!(
                "runtime.backend={backend} replaced the policy's for this run (policy.digest is of the policy as written); it ran on {boundary}"
            ),
        );
    } else {
        v.push(
            "policy.overrides",
            Status::Fail,
            format!(
                "runtime.backend={backend} was given for this run, but run.backend says it ran on {boundary}"
            ),
        );
    }
}

/// The report's `execs` and `transfers` are exactly what its chain records.
fn check_activity(v: &mut Verification, report: &RunReport, events_path: &Path) {
    let Ok(text) = std::fs::read_to_string(events_path) else {
        v.push(
            "activity",
            Status::Fail,
            "no event log to rebuild the execs from",
        );
        return;
    };
    let mut ledger = crate::activity::Ledger::default();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            v.push("activity", Status::Fail, "an event line does not parse");
            return;
        };
        let ty = event
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let seq = event.get("seq").and_then(Value::as_u64).unwrap_or_default();
        ledger.feed(seq, ty, event.get("payload").unwrap_or(&Value::Null));
    }
    let crate::activity::Activity {
        execs,
        transfers,
        pool,
    } = match ledger.finish() {
        Ok(activity) => activity,
        Err(e) => {
            v.push(
                "activity",
                Status::Fail,
                format!("the chain's execs are inconsistent: {e}"),
            );
            return;
        }
    };
    let mut problems = Vec::new();
    if execs != report.execs {
        let ids = |l: &[crate::activity::ExecRecord]| l.iter().map(|e| e.id).collect::<Vec<_>>();
        match execs.iter().zip(&report.execs).find(|(a, b)| a != b) {
            Some((chain, rep)) => problems.push(format!(
                "exec {}: the report says {:?}, the chain {:?}",
                chain.id, rep, chain
            )),
            None => problems.push(format!(
                "the chain has execs {:?}, the report {:?}",
                ids(&execs),
                ids(&report.execs)
            )),
        }
    }
    if transfers != report.transfers {
        problems.push(format!(
            "the chain has {} transfers, the report lists {} that differ",
            transfers.len(),
            report.transfers.len()
        ));
    }
    if pool != report.pool {
        problems.push(format!(
            "the chain's pool claim is {pool:?}, the report's {:?}",
            report.pool
        ));
    }
    if problems.is_empty() {
        v.push(
            "activity",
            Status::Pass,
            format!(
                "{} execs and {} transfers match the chain{}",
                execs.len(),
                transfers.len(),
                pool.map_or(String::new(), |p| format!(
                    ", as does the claim from the pool of {:?}",
                    p.template
                ))
            ),
        );
    } else {
        v.push("activity", Status::Fail, problems.join("; "));
    }
}

fn check_output(v: &mut Verification, run_dir: &Path, out: &report::Output) {
    let name = format!("output:{}", out.name);
    let rel = Path::new(&out.path);
    if rel.is_absolute() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        v.push(
            name,
            Status::Fail,
            format!("path {} is not relative to the run directory", out.path),
        );
        return;
    }
    if let Some(problem) = stream_facts_problem(out) {
        v.push(name, Status::Fail, problem);
        return;
    }
    let path = run_dir.join(rel);
    let cut = match (out.truncated, out.bytes_seen) {
        (true, Some(seen)) => format!(" (cut at its limit; {seen} bytes seen)"),
        _ => String::new(),
    };
    match hash_file(&path) {
        Ok(None) => v.push(
            name,
            Status::Skip,
            format!("{} is not on disk; not checked", path.display()),
        ),
        Ok(Some((digest, bytes))) if digest == out.digest && bytes == out.bytes => {
            v.push(name, Status::Pass, format!("{bytes} bytes {digest}{cut}"))
        }
        Ok(Some((digest, bytes))) => v.push(
            name,
            Status::Fail,
            format!(
                "{} has {bytes} bytes {digest}; the report says {} bytes {}",
                path.display(),
                out.bytes,
                out.digest
            ),
        ),
        Err(e) => v.push(name, Status::Fail, e),
    }
}

/// Whether an output's own numbers contradict each other: more kept than seen or than the
/// limit, or `truncated` not saying whether bytes were discarded.
pub fn stream_facts_problem(out: &report::Output) -> Option<String> {
    if let Some(limit) = out.limit_bytes
        && out.bytes > limit
    {
        return Some(format!(
            "{} bytes kept, more than its limit of {limit}",
            out.bytes
        ));
    }
    match out.bytes_seen {
        Some(seen) if seen < out.bytes => {
            Some(format!("{} bytes kept but only {seen} seen", out.bytes))
        }
        Some(seen) if out.truncated != (seen > out.bytes) => Some(format!(
            "truncated is {} but {seen} bytes were seen and {} kept",
            out.truncated, out.bytes
        )),
        None if out.truncated => Some("truncated without bytesSeen".to_owned()),
        _ => None,
    }
}

fn check_input(v: &mut Verification, input: &report::Input, check_host_files: bool) {
    // Policy, bundle and command digests are over canonical JSON, not a file; they are covered
    // by the signed digest. File inputs are re-hashed when still on disk.
    if !matches!(
        input.role,
        InputRole::Binary | InputRole::Rootfs | InputRole::Kernel
    ) {
        return;
    }
    let Some(path) = &input.path else { return };
    let role = serde_json::to_value(input.role)
        .ok()
        .and_then(|r| r.as_str().map(str::to_owned))
        .unwrap_or_default();
    let name = format!("input:{role}:{}", input.name);
    if !check_host_files {
        v.push(
            name,
            Status::NotRequested,
            format!("not requested: host file {path} not re-hashed (--check-host-files, on the host that ran it)"),
        );
        return;
    }
    match hash_file(Path::new(path)) {
        Ok(None) => v.push(
            name,
            Status::Skip,
            format!("{path} is not on disk; not checked"),
        ),
        Ok(Some((digest, _))) if digest == input.digest => v.push(name, Status::Pass, digest),
        Ok(Some((digest, _))) => v.push(
            name,
            Status::Fail,
            format!(
                "{path} now hashes to {digest}; the report says {}",
                input.digest
            ),
        ),
        Err(e) => v.push(name, Status::Fail, e),
    }
}

/// Whether `report` is sealed and signed by `key`: its digest recomputes, its `keyid` is the
/// key's id, and the Ed25519 signature over the digest verifies. What `report export` demands
/// before it puts its own name on a report.
pub fn report_signed_by(report: &RunReport, key: &VerifyingKey) -> Result<(), String> {
    let id = keys::keyid(key);
    let Some(integrity) = &report.integrity else {
        return Err("the report is not sealed (no integrity block)".into());
    };
    let Some(sig_b64) = &integrity.signature else {
        return Err("the report is unsigned (evidence.sign: false)".into());
    };
    let value = serde_json::to_value(report).map_err(|e| e.to_string())?;
    let digest = digest_of_value(&value)?;
    if digest != integrity.digest {
        return Err(format!(
            "integrity.digest is {} but the report hashes to {digest}",
            integrity.digest
        ));
    }
    if integrity.keyid.as_deref() != Some(id.as_str()) {
        return Err(format!(
            "the report was sealed by key {}, not by key {id}",
            integrity.keyid.as_deref().unwrap_or("(none)")
        ));
    }
    let sig = B64
        .decode(sig_b64)
        .ok()
        .and_then(|b| Signature::from_slice(&b).ok())
        .ok_or("integrity.signature is not a base64 Ed25519 signature")?;
    key.verify_strict(integrity.digest.as_bytes(), &sig)
        .map_err(|_| format!("the report's signature does not verify with key {id}"))
}

/// `Ok(None)` when the file does not exist.
fn hash_file(path: &Path) -> Result<Option<(String, u64)>, String> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(buf.get(..n).unwrap_or_default());
        total += n as u64;
    }
    Ok(Some((
        format!("{SHA256_PREFIX}{}", hex::encode(hasher.finalize())),
        total,
    )))
}

/// `sha256:` and size of a file, for whoever fills the report's outputs and inputs.
pub fn digest_file(path: &Path) -> Result<(String, u64), std::io::Error> {
    match hash_file(path) {
        Ok(Some(d)) => Ok(d),
        Ok(None) => Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such file",
        )),
        Err(e) => Err(std::io::Error::other(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(bytes: u64, seen: Option<u64>, truncated: bool, limit: Option<u64>) -> report::Output {
        report::Output {
            name: "stdout".into(),
            path: "stdout.log".into(),
            bytes,
            digest: format!("sha256:{}", "0".repeat(64)),
            bytes_seen: seen,
            truncated,
            limit_bytes: limit,
            on_limit: None,
        }
    }

    #[test]
    fn stream_facts_must_agree() {
        assert_eq!(stream_facts_problem(&out(10, None, false, None)), None);
        assert_eq!(
            stream_facts_problem(&out(10, Some(10), false, Some(10))),
            None
        );
        assert_eq!(
            stream_facts_problem(&out(10, Some(80), true, Some(10))),
            None
        );
        for bad in [
            out(11, Some(80), true, Some(10)),
            out(10, Some(9), false, None),
            out(10, Some(80), false, Some(10)),
            out(10, Some(10), true, Some(10)),
            out(10, None, true, Some(10)),
        ] {
            assert!(stream_facts_problem(&bad).is_some(), "{bad:?}");
        }
    }
}
