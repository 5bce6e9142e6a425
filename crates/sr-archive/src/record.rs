//! One archived run: the facts the index keeps, taken from a run directory's report.
//!
//! The facts come from `run_report.json` (signed), except the command line, which the report
//! holds only as a digest (`inputs[role=command]`): it is read from the run dir's `bundle.json`
//! and marked *attested* when its JCS digest equals that input's digest.
//!
//! The **report digest** is `sha256:` over the report file's bytes, not the report's own
//! `integrity.digest`: the file digest also covers the signature and the layout, and a third
//! party checks it with `sha256sum`. The report's canonical layout makes it deterministic.
//! It is also the log entry: the leaf is `H(0x00 || sha256(file bytes))` (32 raw bytes).

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sr_evidence::canonical::{jcs, sha256_tagged};
use sr_evidence::report::{ExitStatus, InputRole, REPORT_FILE, RunReport};

use crate::error::ArchiveError;

/// What the index holds about one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// Run id.
    pub run_id: String,
    /// RFC 3339 UTC.
    pub started_at: String,
    /// RFC 3339 UTC.
    pub ended_at: String,
    /// Wall-clock duration.
    pub duration_ms: u64,
    /// Policy name.
    pub policy_name: String,
    /// Policy digest (`sha256:` of its JCS).
    pub policy_digest: String,
    /// `sandbox` or `firecracker`.
    pub backend: String,
    /// Command line on one line: arguments joined by spaces, an argument with characters
    /// other than `[A-Za-z0-9_/.,:=+@%-]` written as a double-quoted, escaped string
    /// (`"a b\n"`); `?` when unknown.
    pub command: String,
    /// Whether `command` matches the report's signed command digest.
    pub command_attested: bool,
    /// Exit status (`exited`, `timeout`, `oom`, ...).
    pub status: String,
    /// Exit code, for `exited`.
    pub exit_code: Option<i32>,
    /// Signal, for `signaled`, `timeout`, `oom`.
    pub signal: Option<i32>,
    /// Limits the run reached: `timeout`, `memory`, `pids`.
    pub limits_hit: Vec<String>,
    /// Blocked destinations: `rule:<ruleId>` for rules with blocked hits, `default-drop` when
    /// the default drop counted packets, and any `blockedDestinations` the network audit names.
    pub blocked: Vec<String>,
    /// Packets the default drop counted.
    pub blocked_packets: u64,
    /// `sha256:` of the report file's bytes (the log entry).
    pub report_digest: String,
    /// The report's `integrity.digest`.
    pub integrity_digest: String,
    /// Key id that signed the report, if signed.
    pub keyid: Option<String>,
    /// The run directory (absolute when it was given so).
    pub run_dir: String,
}

impl RunRecord {
    /// The report file of this run.
    pub fn report_path(&self) -> PathBuf {
        Path::new(&self.run_dir).join(REPORT_FILE)
    }

    /// The 32 raw bytes of the report digest (the log entry).
    pub fn entry(&self) -> Result<[u8; 32], String> {
        let hex_part = self
            .report_digest
            .strip_prefix("sha256:")
            .ok_or_else(|| format!("{} is not a sha256: digest", self.report_digest))?;
        crate::checkpoint::parse_hash(hex_part)
    }
}

/// `sha256:` of bytes and the raw digest.
pub fn file_digest(bytes: &[u8]) -> (String, [u8; 32]) {
    let raw: [u8; 32] = Sha256::digest(bytes).into();
    (format!("sha256:{}", hex::encode(raw)), raw)
}

/// Builds the record of the run in `run_dir` from its report bytes and (optional) bundle.
pub fn from_parts(
    run_dir: &Path,
    report_bytes: &[u8],
    bundle: Option<&Value>,
) -> Result<RunRecord, String> {
    let report: RunReport =
        serde_json::from_slice(report_bytes).map_err(|e| format!("not a run report: {e}"))?;
    let (report_digest, _) = file_digest(report_bytes);
    let (command, command_attested) = command_of(&report, bundle);
    let integrity = report.integrity.as_ref();
    Ok(RunRecord {
        run_id: report.run.id.clone(),
        started_at: report.run.started_at.clone(),
        ended_at: report.run.ended_at.clone(),
        duration_ms: report.run.duration_ms,
        policy_name: report.policy.name.clone(),
        policy_digest: report.policy.digest.clone(),
        backend: report.run.backend.clone(),
        command,
        command_attested,
        status: status_name(report.exit.status).to_owned(),
        exit_code: report.exit.code,
        signal: report.exit.signal,
        limits_hit: limits_hit(&report),
        blocked: blocked(&report),
        blocked_packets: report
            .network_audit
            .as_ref()
            .map_or(0, |a| a.blocked.packets),
        report_digest,
        integrity_digest: integrity.map(|i| i.digest.clone()).unwrap_or_default(),
        keyid: integrity.and_then(|i| i.keyid.clone()),
        run_dir: run_dir.display().to_string(),
    })
}

/// Reads the run in `run_dir` (its `run_report.json` and, when present, `bundle.json`).
pub fn from_run_dir(run_dir: &Path) -> Result<RunRecord, ArchiveError> {
    let report_path = run_dir.join(REPORT_FILE);
    let bytes = std::fs::read(&report_path).map_err(|e| ArchiveError::Unreadable {
        path: report_path.clone(),
        reason: e.to_string(),
    })?;
    let bundle = std::fs::read(run_dir.join("bundle.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    from_parts(run_dir, &bytes, bundle.as_ref()).map_err(|reason| ArchiveError::Unreadable {
        path: report_path,
        reason,
    })
}

/// The stable name of an exit status, as the report writes it.
pub fn status_name(s: ExitStatus) -> &'static str {
    s.as_str()
}

fn command_of(report: &RunReport, bundle: Option<&Value>) -> (String, bool) {
    let argv: Option<Vec<String>> = bundle.and_then(|b| {
        let process = b.get("process")?;
        let mut argv = vec![process.get("command")?.as_str()?.to_owned()];
        for a in process.get("args")?.as_array()? {
            argv.push(a.as_str()?.to_owned());
        }
        Some(argv)
    });
    let signed = report
        .inputs
        .iter()
        .find(|i| i.role == InputRole::Command)
        .map(|i| i.digest.as_str());
    match argv {
        Some(argv) => {
            let attested = jcs(&argv)
                .map(|b| Some(sha256_tagged(&b).as_str()) == signed)
                .unwrap_or(false);
            (display_argv(&argv), attested)
        }
        None => {
            // Without the bundle, the binary input at least names the program.
            let binary = report
                .inputs
                .iter()
                .find(|i| i.role == InputRole::Binary)
                .and_then(|i| i.path.clone().or_else(|| Some(i.name.clone())));
            (binary.unwrap_or_else(|| "?".to_owned()), false)
        }
    }
}

/// One line for an argv: see [`RunRecord::command`].
pub fn display_argv(argv: &[String]) -> String {
    let plain = |a: &str| {
        !a.is_empty()
            && a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_/.,:=+@%-".contains(&b))
    };
    argv.iter()
        .map(|a| {
            if plain(a) {
                a.clone()
            } else {
                format!("{a:?}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn limits_hit(report: &RunReport) -> Vec<String> {
    let mut hit = Vec::new();
    match report.exit.status {
        ExitStatus::Timeout => hit.push("timeout".to_owned()),
        ExitStatus::Oom => hit.push("memory".to_owned()),
        _ => {}
    }
    if let Some(cg) = &report.enforcement.cgroup {
        let limit = |key: &str| {
            cg.limits
                .get(key)
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let reached = |peak: Option<u64>, key: &str| matches!((peak, limit(key)), (Some(p), Some(l)) if p >= l);
        if reached(report.resources.memory_peak_bytes, "memory.max")
            && !hit.iter().any(|h| h == "memory")
        {
            hit.push("memory".to_owned());
        }
        if reached(report.resources.pids_peak, "pids.max") {
            hit.push("pids".to_owned());
        }
    }
    hit
}

fn blocked(report: &RunReport) -> Vec<String> {
    let Some(audit) = &report.network_audit else {
        return Vec::new();
    };
    let mut out: Vec<String> = audit
        .rules
        .iter()
        .filter(|r| r.blocked_hits > 0)
        .map(|r| format!("rule:{}", r.rule_id))
        .collect();
    if audit.blocked.packets > 0 {
        out.push("default-drop".to_owned());
    }
    if let Some(list) = audit
        .details
        .get("blockedDestinations")
        .and_then(Value::as_array)
    {
        out.extend(list.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_line_is_one_line_with_odd_arguments_quoted() {
        let argv: Vec<String> = ["/bin/sh", "-c", "echo 'a b'\nexit 3", ""]
            .map(String::from)
            .to_vec();
        assert_eq!(display_argv(&argv), r#"/bin/sh -c "echo 'a b'\nexit 3" """#);
    }
}
