//! PolicySpec v1: model, parsing (YAML and JSON), validation, and the operator config.
//!
//! Validation runs in four steps, each pure except for reading mount-source metadata:
//!
//! 1. [`source`]: text to a tree of located values (size, depth, duplicate keys, aliases);
//! 2. [`schema`]: the tree against the JSON Schema generated from [`model`] (missing fields,
//!    unknown fields, types, formats): every violation, not only the first. Skipped when
//!    `fast_path` shows the document certainly passes it, since building the validator is
//!    most of the cost of validating a small policy;
//! 3. typed deserialization into [`PolicySpec`] (fields the schema rejected are pruned first,
//!    so that step 4 can still look at the rest), then the caller's [`overrides`] applied
//!    (`safe-run run --backend`);
//! 4. [`rules`]: semantic rules and the operator's limits, over the policy as overridden.
//!
//! All problems come back together in a [`ValidationReport`], each with a code, a policy path,
//! a line and column, a cause and a hint, sorted by location.
#![forbid(unsafe_code)]

mod fast_path;
pub mod model;
pub mod operator;
pub mod overrides;
pub mod rules;
pub mod schema;
pub mod source;

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::ser::SerializeStruct;
use sr_common::{Diagnostic, ErrorCode, Location};

pub use model::PolicySpec;
pub use operator::OperatorConfig;
pub use overrides::PolicyOverrides;
pub use schema::policy_schema;
pub use source::{MAX_DEPTH, MAX_INPUT_BYTES, SourceFormat};

use crate::rules::{Ctx, HostFs, RealFs};
use crate::source::{PolicyPath, Seg};

/// A policy that passed every check, with the facts the compiler needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedPolicy {
    /// The policy in force: as written (defaults not applied), with [`Self::overrides`]
    /// applied.
    pub spec: PolicySpec,
    /// The policy as written, without the overrides, as a JSON value
    /// (`serde_json::to_value` of the written spec): the input of the policy digest, so the
    /// digest names the file whatever a run overrides.
    pub canonical: serde_json::Value,
    /// What the caller replaced for this run (empty: the policy runs as written). Bundles and
    /// reports record it beside the digest.
    pub overrides: PolicyOverrides,
    /// The canonical absolute host path of each `mounts[i].source`, in policy order.
    pub mount_sources: Vec<PathBuf>,
    /// The canonical rootfs directory when `rootfs.source` is a directory (None for `host`).
    pub rootfs_dir: Option<PathBuf>,
    /// The file the policy was read from, when it came from a file.
    pub source_path: Option<PathBuf>,
    /// Problems that do not make the policy invalid but will likely make the run fail
    /// (e.g. a writable mount the workload's host uid cannot write).
    pub warnings: Vec<Diagnostic>,
}

/// Every problem found in a policy. Serializes to the ValidationResult JSON:
/// `{ "valid": bool, "policy": path, "errors": [Diagnostic...] }`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ValidationReport {
    /// The policy file, when known (shown as `policy`).
    pub policy: Option<String>,
    /// The problems, sorted by location, then path, then code.
    pub diagnostics: Vec<Diagnostic>,
    /// Warnings (shown as `warnings`, left out when empty): see [`ValidatedPolicy::warnings`].
    pub warnings: Vec<Diagnostic>,
}

impl ValidationReport {
    /// Whether there are no problems.
    pub fn is_valid(&self) -> bool {
        self.diagnostics.is_empty()
    }

    fn sort(&mut self) {
        let key = |d: &Diagnostic| {
            (
                d.location.unwrap_or(Location {
                    line: u32::MAX,
                    column: u32::MAX,
                }),
                d.path.clone(),
                d.code,
                d.message.clone(),
            )
        };
        self.diagnostics.sort_by_key(key);
        self.diagnostics.dedup();
    }
}

impl Serialize for ValidationReport {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = if self.warnings.is_empty() { 3 } else { 4 };
        let mut s = serializer.serialize_struct("ValidationResult", fields)?;
        s.serialize_field("valid", &self.is_valid())?;
        s.serialize_field("policy", &self.policy)?;
        s.serialize_field("errors", &self.diagnostics)?;
        if !self.warnings.is_empty() {
            s.serialize_field("warnings", &self.warnings)?;
        }
        s.end()
    }
}

/// Reads and validates the policy file at `path`. The format follows the extension (`.json`
/// is strict JSON, anything else YAML); relative mount sources resolve against the file's
/// directory.
pub fn load_policy_file(
    path: &Path,
    config: &OperatorConfig,
) -> Result<ValidatedPolicy, ValidationReport> {
    load_policy_file_with_overrides(path, config, &PolicyOverrides::none())
}

/// [`load_policy_file`] with `overrides` applied before the semantic rules (see
/// [`overrides`]).
pub fn load_policy_file_with_overrides(
    path: &Path,
    config: &OperatorConfig,
    overrides: &PolicyOverrides,
) -> Result<ValidatedPolicy, ValidationReport> {
    let shown = path.display().to_string();
    let text = match read_policy_text(path) {
        Ok(t) => t,
        Err(d) => {
            return Err(ValidationReport {
                policy: Some(shown),
                diagnostics: vec![d],
                warnings: Vec::new(),
            });
        }
    };
    let base_dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let base_dir = std::fs::canonicalize(&base_dir).unwrap_or(base_dir);
    match validate_with_overrides(
        &text,
        SourceFormat::from_path(path),
        &base_dir,
        config,
        &RealFs,
        overrides,
    ) {
        Ok(mut v) => {
            v.source_path = Some(path.to_path_buf());
            Ok(v)
        }
        Err(mut report) => {
            report.policy = Some(shown);
            Err(report)
        }
    }
}

fn read_policy_text(path: &Path) -> Result<String, Diagnostic> {
    use std::io::Read;
    let root = PolicyPath::root().to_string();
    let unreadable = |e: std::io::Error| {
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound => {
                "check the path (relative paths are resolved against the current directory); `safe-run init FILE` writes a starter policy"
            }
            std::io::ErrorKind::PermissionDenied => {
                "make the file readable by the user running safe-run"
            }
            _ => "give the path of a policy file (.yaml, .yml or .json)",
        };
        Diagnostic::new(
            ErrorCode::PolicyUnreadable,
            &root,
            format!("cannot read the policy file {}: {e}", path.display()),
            hint,
        )
    };
    if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(unreadable(std::io::Error::from(
            std::io::ErrorKind::IsADirectory,
        )));
    }
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let mut bytes = Vec::new();
    // Read one byte past the limit, so an oversized file is reported without reading it all.
    let limit = u64::try_from(MAX_INPUT_BYTES).unwrap_or(u64::MAX) + 1;
    file.take(limit)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(Diagnostic::new(
            ErrorCode::PolicyBadFormat,
            &root,
            format!(
                "{} is larger than the {MAX_INPUT_BYTES}-byte (1 MiB) limit",
                path.display()
            ),
            "a policy is a few KiB: remove generated or embedded data",
        )
        .at(Some(Location { line: 1, column: 1 })));
    }
    String::from_utf8(bytes).map_err(|e| {
        Diagnostic::new(
            ErrorCode::PolicyBadFormat,
            &root,
            format!(
                "{} is not UTF-8 text (invalid byte at offset {})",
                path.display(),
                e.utf8_error().valid_up_to()
            ),
            "save the policy as UTF-8",
        )
        .at(Some(Location { line: 1, column: 1 }))
    })
}

/// Validates policy text. Relative mount sources resolve against `base_dir`.
pub fn validate_str(
    text: &str,
    format: SourceFormat,
    base_dir: &Path,
    config: &OperatorConfig,
) -> Result<ValidatedPolicy, ValidationReport> {
    validate_with(text, format, base_dir, config, &RealFs)
}

/// [`validate_str`] with an injected view of the host filesystem (for tests).
pub fn validate_with(
    text: &str,
    format: SourceFormat,
    base_dir: &Path,
    config: &OperatorConfig,
    fs: &dyn HostFs,
) -> Result<ValidatedPolicy, ValidationReport> {
    validate_with_overrides(text, format, base_dir, config, fs, &PolicyOverrides::none())
}

/// [`validate_with`] with the caller's `overrides`: the schema checks the text as written,
/// the rules check the typed policy with the overrides applied, and a rule that fails only
/// because of an override says so (see [`overrides`]).
pub fn validate_with_overrides(
    text: &str,
    format: SourceFormat,
    base_dir: &Path,
    config: &OperatorConfig,
    fs: &dyn HostFs,
    overrides: &PolicyOverrides,
) -> Result<ValidatedPolicy, ValidationReport> {
    let parsed = source::parse(text, format);
    let mut report = ValidationReport {
        policy: None,
        diagnostics: parsed.diagnostics,
        warnings: Vec::new(),
    };
    let Some(root) = parsed.root else {
        report.sort();
        return Err(report);
    };
    let instance = root.to_json();
    // A plainly valid document passes the schema, so its validator (costly to build) is not
    // needed; anything else takes the full check, which explains every problem.
    let fast = fast_path::plainly_valid(&instance);
    let problems = if fast.is_some() {
        Vec::new()
    } else {
        schema::check(&instance, &root)
    };

    // Prune what the schema rejected, and put a neutral placeholder where a required field
    // is missing or was pruned, so that the semantic rules can still check everything else.
    let mut pruned = instance.clone();
    let mut suppress: Vec<PolicyPath> = Vec::new();
    let mut suppress_exact: Vec<String> = Vec::new();
    let mut run_rules = true;
    for problem in &problems {
        let target = up_to_last_key(&problem.prune);
        let pattern = pattern_of(&target);
        if target.0.is_empty() {
            // The whole document: there is nothing for the rules to check.
            run_rules = false;
        }
        remove_at(&mut pruned, &target);
        if let Some(pivot) = pivot_stand_in(&pattern) {
            // A field other rules depend on: the rules run against a stand-in, and what the
            // stand-in could make them say wrongly is silenced.
            if let Some(value) = pivot.value {
                insert_at(&mut pruned, &target, value);
            }
            suppress.extend(
                pivot
                    .silence_under
                    .iter()
                    .map(|k| PolicyPath::root().key(k)),
            );
            suppress_exact.extend(pivot.silence_exact.iter().map(|p| (*p).to_owned()));
            suppress.push(target);
            continue;
        }
        if problem.unknown_field {
            continue;
        }
        let parent = target.parent();
        match placeholder(&pattern) {
            Some((value, neutral)) => {
                insert_at(&mut pruned, &target, value);
                if !neutral && !parent.0.is_empty() {
                    // The placeholder could trigger rules about its siblings.
                    suppress.push(parent.clone());
                }
            }
            None if REQUIRED.contains(&pattern.as_str()) => run_rules = false,
            None => {}
        }
        // A rule about the pruned value itself, or about the object that lost it (e.g. "a
        // rule needs host or cidr" after a bad `host` was pruned), would be misled.
        if !parent.0.is_empty() {
            suppress_exact.push(parent.to_string());
        }
        suppress.push(target);
    }
    report
        .diagnostics
        .extend(problems.into_iter().map(|p| p.diagnostic));

    let mut result = None;
    if run_rules {
        // The fast path already deserialized the same, unpruned, document.
        let typed = match fast {
            Some(spec) => Ok(spec),
            None => serde_path_to_error::deserialize::<_, PolicySpec>(&pruned),
        };
        match typed {
            Ok(written) => {
                let spec = overrides.applied_to(written.clone());
                let mut ctx = Ctx::new(&root, config, base_dir, fs);
                let resolved = rules::check(&spec, &mut ctx);
                let mut rule_diags = ctx.diagnostics;
                report.warnings = ctx.warnings;
                if !rule_diags.is_empty() && overrides.change(&written) {
                    // Which problems the override caused: those the policy as written does
                    // not have. Only on this failing path do the rules run twice.
                    let mut as_written = Ctx::new(&root, config, base_dir, fs);
                    rules::check(&written, &mut as_written);
                    rule_diags =
                        overrides.attribute(&written, rule_diags, &as_written.diagnostics, &root);
                }
                report
                    .diagnostics
                    .extend(rule_diags.into_iter().filter(|d| {
                        !suppress_exact.contains(&d.path)
                            && !suppress.iter().any(|s| {
                                d.path == s.to_string()
                                    || d.path.starts_with(&format!("{s}."))
                                    || d.path.starts_with(&format!("{s}["))
                            })
                    }));
                result = Some((written, spec, resolved));
            }
            Err(e) if report.diagnostics.is_empty() => {
                // The schema accepted it but serde did not (e.g. a duration that overflows).
                let path = serde_error_path(e.path());
                let loc = root.locate(&path);
                report.diagnostics.push(
                    Diagnostic::new(
                        ErrorCode::PolicyBadFormat,
                        path.to_string(),
                        e.inner().to_string(),
                        "see docs/policy.md for this field's format",
                    )
                    .at(Some(loc)),
                );
            }
            Err(_) => {}
        }
    }
    report.sort();
    match result {
        Some((written, spec, resolved)) if report.is_valid() => {
            let canonical = serde_json::to_value(&written).map_err(|e| ValidationReport {
                policy: None,
                warnings: Vec::new(),
                diagnostics: vec![Diagnostic::new(
                    ErrorCode::PolicyBadFormat,
                    PolicyPath::root().to_string(),
                    format!("internal error: {e}"),
                    "report this as a bug",
                )],
            })?;
            Ok(ValidatedPolicy {
                spec,
                canonical,
                overrides: *overrides,
                mount_sources: resolved.mount_sources.into_iter().flatten().collect(),
                rootfs_dir: resolved.rootfs_dir,
                source_path: None,
                warnings: report.warnings,
            })
        }
        _ => Err(report),
    }
}

/// A stand-in for a rejected field that other rules depend on.
struct PivotStandIn {
    /// The value the rules see instead (`None`: the field is left out).
    value: Option<serde_json::Value>,
    /// Diagnostics under these top-level keys could be artefacts of the stand-in.
    silence_under: &'static [&'static str],
    /// Diagnostics at exactly these paths could be artefacts of the stand-in.
    silence_exact: &'static [&'static str],
}

/// Fields whose value other rules depend on. When the schema rejects one, the semantic rules
/// still run (so every unrelated problem is reported at once) against a stand-in, and the
/// rules whose verdict depends on the real value are silenced.
fn pivot_stand_in(pattern: &str) -> Option<PivotStandIn> {
    use serde_json::json;
    Some(match pattern {
        // Only `artifacts` and `rootfs` are judged differently by backend when the stand-in
        // is `sandbox` (the firecracker-only rules cannot fire for it). A backend override
        // replaces the stand-in like any written value: the rules then judge the override's
        // backend, which the run would get whatever the file says.
        "runtime.backend" => PivotStandIn {
            value: Some(json!("sandbox")),
            silence_under: &["artifacts", "rootfs"],
            silence_exact: &[],
        },
        // `allowlist` checks every egress rule; only its "needs at least one rule" depends on
        // the mode.
        "network.mode" => PivotStandIn {
            value: Some(json!("allowlist")),
            silence_under: &[],
            silence_exact: &["network.egress"],
        },
        "network" => PivotStandIn {
            value: None,
            silence_under: &["network"],
            silence_exact: &[],
        },
        _ => return None,
    })
}

/// Required fields (patterns, `[*]` for any index).
const REQUIRED: [&str; 16] = [
    "version",
    "name",
    "runtime",
    "mounts",
    "runtime.command",
    "runtime.args",
    "runtime.user.uid",
    "runtime.user.gid",
    "rootfs.source",
    "mounts[*].source",
    "mounts[*].target",
    "network.egress[*].protocol",
    "artifacts.kernel",
    "artifacts.rootfs",
    "artifacts.kernel.path",
    "artifacts.rootfs.path",
];

/// A stand-in for a missing or rejected required field, and whether it is neutral (triggers
/// no rule about its siblings). A non-neutral one silences rules about its parent object.
fn placeholder(pattern: &str) -> Option<(serde_json::Value, bool)> {
    use serde_json::json;
    let v = match pattern {
        "version" => (json!(1), true),
        "name" => (json!("placeholder"), true),
        "runtime" => (json!({"command": "/bin/true", "args": []}), true),
        "mounts" | "runtime.args" => (json!([]), true),
        "runtime.command" => (json!("/bin/true"), true),
        "runtime.user.uid" | "runtime.user.gid" => (json!(rules::MAX_ID), true),
        "rootfs.source" => (json!("host"), true),
        // An empty path fails its own checks, which are silenced with the field.
        "mounts[*].source" | "mounts[*].target" => (json!(""), true),
        "network.egress[*].protocol" => (json!("tcp"), false),
        "artifacts.kernel" | "artifacts.rootfs" => (json!({"path": "/placeholder"}), true),
        "artifacts.kernel.path" | "artifacts.rootfs.path" => (json!("/placeholder"), true),
        _ => return None,
    };
    Some(v)
}

/// `mounts[3].source` -> `mounts[*].source`.
fn pattern_of(path: &PolicyPath) -> String {
    let mut out = String::new();
    for seg in &path.0 {
        match seg {
            Seg::Index(_) => out.push_str("[*]"),
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
        }
    }
    out
}

fn up_to_last_key(path: &PolicyPath) -> PolicyPath {
    let mut segs = path.0.clone();
    while matches!(segs.last(), Some(Seg::Index(_))) {
        segs.pop();
    }
    PolicyPath(segs)
}

/// The object holding the last key of `path`, and that key.
fn parent_object<'v>(
    value: &'v mut serde_json::Value,
    path: &PolicyPath,
) -> Option<(&'v mut serde_json::Map<String, serde_json::Value>, String)> {
    let (Seg::Key(last), parents) = path.0.split_last()? else {
        return None;
    };
    let mut cur = value;
    for seg in parents {
        cur = match (seg, cur) {
            (Seg::Key(k), serde_json::Value::Object(m)) => m.get_mut(k)?,
            (Seg::Index(i), serde_json::Value::Array(a)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    match cur {
        serde_json::Value::Object(m) => Some((m, last.clone())),
        _ => None,
    }
}

fn remove_at(value: &mut serde_json::Value, path: &PolicyPath) {
    if let Some((map, key)) = parent_object(value, path) {
        map.remove(&key);
    }
}

fn insert_at(value: &mut serde_json::Value, path: &PolicyPath, new: serde_json::Value) {
    if let Some((map, key)) = parent_object(value, path) {
        map.insert(key, new);
    }
}

fn serde_error_path(path: &serde_path_to_error::Path) -> PolicyPath {
    use serde_path_to_error::Segment;
    let mut out = PolicyPath::root();
    for seg in path.iter() {
        out = match seg {
            Segment::Seq { index } => out.index(*index),
            Segment::Map { key } => out.key(key),
            Segment::Enum { variant } => out.key(variant),
            Segment::Unknown => out,
        };
    }
    out
}
