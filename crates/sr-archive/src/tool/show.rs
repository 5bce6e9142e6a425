//! `report show`: a human summary of one archived run.

use clap::Args;
use serde::Deserialize;
use serde_json::{Value, json};
use sr_evidence::report::{PolicyInfo, PolicyOverrides};

use super::{ArchiveLocation, Format, fail, print_out};
use crate::{Archive, ArchiveError, ArchivedRun, ReportState};

/// Arguments of `report show`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:
  safe-run report show 3f9c0a1b2c4d
  safe-run report show /tmp/safe-run/runs/3f9c0a1b2c4d
  safe-run report show /tmp/safe-run/runs/3f9c0a1b2c4d/run_report.json --format json

The summary names how the run ended, the policy (and what the run overrode in it), which
limits it hit, what was enforced (backend, namespaces, Landlock, seccomp, cgroup limits,
network), blocked destinations, the report digest
and whether the report is intact, and the run's leaf in the transparency log. Exit 8
(SR-ARC-003) when the report is missing or no longer matches the archived digest.")]
pub struct ShowArgs {
    /// A run id, run directory, or run_report.json path.
    #[arg(value_name = "RUN")]
    pub run: String,
    #[command(flatten)]
    /// The archive.
    pub location: ArchiveLocation,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// A tree size and this run's leaf, for `show`.
fn log_position(db: &Archive, run: &ArchivedRun) -> Option<(u64, u64)> {
    Some((run.leaf_index?, db.tree_size().ok()?))
}

/// `report show`.
pub fn show(args: ShowArgs) -> u8 {
    let db = match args.location.open_read_only() {
        Ok(db) => db,
        Err(e) => return fail(&[e.to_diagnostic()], args.format),
    };
    let run = match db.resolve(&args.run) {
        Ok(r) => r,
        Err(e) => return fail(&[e.to_diagnostic()], args.format),
    };
    let state = crate::check_report(&run.record, true);
    let report: Option<Value> = std::fs::read(run.record.report_path())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let position = log_position(&db, &run);
    match args.format {
        Format::Json => {
            let doc = json!({
                "ok": matches!(state, ReportState::Intact),
                "run": run,
                "report": { "path": run.record.report_path(), "state": state.label() },
                "log": position.map(|(leaf, size)| json!({"leafIndex": leaf, "treeSize": size})),
                "policyOverrides": policy_overrides(report.as_ref()),
                "enforcement": report.as_ref().and_then(|r| r.get("enforcement")).cloned(),
                "networkAudit": report.as_ref().and_then(|r| r.get("networkAudit")).cloned(),
            });
            print_out(&format!("{doc:#}\n"));
        }
        Format::Text => print_out(&render_show(&run, &state, report.as_ref(), position)),
    }
    match state {
        ReportState::Intact | ReportState::Present => 0,
        ReportState::Missing => fail(
            &[ArchiveError::Tampered {
                run_id: run.record.run_id.clone(),
                reason: format!("its report {} is gone", run.record.report_path().display()),
            }
            .to_diagnostic()],
            Format::Text,
        ),
        ReportState::Changed { now } => fail(
            &[ArchiveError::Tampered {
                run_id: run.record.run_id.clone(),
                reason: format!(
                    "its report now has digest {now}, the archive recorded {}",
                    run.record.report_digest
                ),
            }
            .to_diagnostic()],
            Format::Text,
        ),
    }
}

fn join_or_none(list: &[String]) -> String {
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

/// The human summary of `report show`.
pub fn render_show(
    run: &ArchivedRun,
    state: &ReportState,
    report: Option<&Value>,
    position: Option<(u64, u64)>,
) -> String {
    let rec = &run.record;
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<11} {v}\n"));
    line("run", rec.run_id.clone());
    let how = match (rec.exit_code, rec.signal) {
        (Some(c), _) => format!("{} (exit code {c})", rec.status),
        (None, Some(s)) => format!("{} (signal {s})", rec.status),
        _ => rec.status.clone(),
    };
    line("status", how);
    line(
        "time",
        format!(
            "{} .. {} ({} ms)",
            rec.started_at, rec.ended_at, rec.duration_ms
        ),
    );
    line(
        "policy",
        format!(
            "{} {}{}",
            rec.policy_name,
            rec.policy_digest,
            overrides_note(report)
        ),
    );
    line(
        "command",
        format!(
            "{}{}",
            rec.command,
            if rec.command_attested {
                " (matches the report's signed command digest)"
            } else {
                " (NOT attested: bundle.json missing or not matching the report's command digest)"
            }
        ),
    );
    line("limits hit", join_or_none(&rec.limits_hit));
    let mut blocked = join_or_none(&rec.blocked);
    if rec.blocked_packets > 0 {
        blocked.push_str(&format!(
            " ({} packets dropped by default)",
            rec.blocked_packets
        ));
    }
    line("blocked", blocked);
    line("backend", rec.backend.clone());
    for (i, e) in enforcement_lines(report).into_iter().enumerate() {
        line(if i == 0 { "enforced" } else { "" }, e);
    }
    line(
        "report",
        format!("{} {}", rec.report_path().display(), rec.report_digest),
    );
    line(
        "state",
        match state {
            ReportState::Intact => "intact: the file hashes to the archived digest".into(),
            ReportState::Present => "present (not hashed)".into(),
            ReportState::Missing => "MISSING: the run dir or report is gone".into(),
            ReportState::Changed { now } => format!("TAMPERED: the file now hashes to {now}"),
        },
    );
    line(
        "signed",
        rec.keyid.as_ref().map_or_else(
            || "no (evidence.sign: false)".into(),
            |k| format!("ed25519 keyid={k}"),
        ),
    );
    line(
        "archived",
        match position {
            Some((leaf, size)) => format!(
                "yes; leaf {leaf} of {size} in the transparency log (indexed {})",
                run.indexed_at
            ),
            None => format!("indexed {}, not in the log", run.indexed_at),
        },
    );
    out
}

/// The report's `policy.overrides`, read through the report's own type (a report too old to
/// have them, or not readable, has none).
fn policy_overrides(report: Option<&Value>) -> Option<PolicyOverrides> {
    let policy = report?.get("policy")?;
    PolicyInfo::deserialize(policy).ok()?.overrides
}

/// ` (overrides: runtime.backend=microvm)`, or nothing when the policy ran as written: the
/// digest is of the file, so the line must say what the run changed.
fn overrides_note(report: Option<&Value>) -> String {
    match policy_overrides(report).and_then(|o| o.runtime_backend) {
        Some(backend) => format!(" (overrides: runtime.backend={backend})"),
        None => String::new(),
    }
}

fn enforcement_lines(report: Option<&Value>) -> Vec<String> {
    let Some(e) = report.and_then(|r| r.get("enforcement")) else {
        return vec!["(report not readable)".into()];
    };
    let strs = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = vec![format!(
        "namespaces: {}",
        join_or_none(&strs(e.get("namespaces")))
    )];
    out.push(match e.get("landlock") {
        Some(l) => format!(
            "landlock: abi {} {} ({} rules)",
            l.get("abi").unwrap_or(&Value::Null),
            l.get("status").and_then(Value::as_str).unwrap_or("?"),
            l.get("rules").and_then(Value::as_array).map_or(0, Vec::len)
        ),
        None => "landlock: not enforced".into(),
    });
    out.push(match e.get("seccomp") {
        Some(s) => format!(
            "seccomp: profile {}, filter {}, {} syscalls denied",
            s.get("profileId").and_then(Value::as_str).unwrap_or("?"),
            s.get("filterDigest").and_then(Value::as_str).unwrap_or("?"),
            s.get("deniedSyscalls").unwrap_or(&Value::Null)
        ),
        None => "seccomp: none".into(),
    });
    out.push(match e.get("cgroup") {
        Some(c) => {
            let limits: Vec<String> = c
                .get("limits")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("?")))
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "cgroup {}: {}",
                c.get("version").and_then(Value::as_str).unwrap_or("?"),
                join_or_none(&limits)
            )
        }
        None => "cgroup: none".into(),
    });
    out.push(format!(
        "network: {}",
        e.pointer("/network/mode")
            .and_then(Value::as_str)
            .unwrap_or("?")
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_line_names_overrides_and_old_reports_have_none() {
        let with = json!({"policy": {"name": "p", "digest": format!("sha256:{}", "a".repeat(64)), "overrides": {"runtime.backend": "microvm"}}});
        assert_eq!(
            overrides_note(Some(&with)),
            " (overrides: runtime.backend=microvm)"
        );
        let old = json!({"policy": {"name": "p", "digest": format!("sha256:{}", "a".repeat(64))}});
        assert_eq!(overrides_note(Some(&old)), "");
        assert_eq!(overrides_note(None), "");
        assert_eq!(overrides_note(Some(&json!({"policy": 3}))), "");
    }
}
