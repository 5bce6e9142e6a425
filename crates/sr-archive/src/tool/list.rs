//! `report list`: archived runs, newest first, with filters.

use clap::Args;
use sr_common::{Diagnostic, ErrorCode};

use super::{ArchiveLocation, Format, fail, print_out, usage};
use crate::{ArchivedRun, Filter, ReportState};

/// Arguments of `report list`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:
  safe-run report list                               # the newest 50 runs
  safe-run report list --status timeout --since 24h
  safe-run report list --policy build --command pytest --format json
  safe-run report list --blocked --limit 0           # every run that had traffic blocked
  safe-run report list --check                       # hash every report: names TAMPERED/missing

REPORT is `present` or `missing` (the run dir or report is gone); with --check, `intact` or
`TAMPERED` (the file no longer hashes to the archived digest). --check exits 9 (SR-ARC-003) when
any listed report is missing or tampered.")]
pub struct ListArgs {
    /// Runs started at or after this time: RFC 3339 (2026-12-01T00:00:00Z) or an age (90m, 24h, 7d).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Exit status: exited, signaled, timeout, oom, launchFailed, stopped, interrupted.
    #[arg(long)]
    pub status: Option<String>,
    /// Policy name, or a policy digest (sha256:…).
    #[arg(long)]
    pub policy: Option<String>,
    /// A substring of the command line.
    #[arg(long, value_name = "TEXT")]
    pub command: Option<String>,
    /// Backend (sandbox, firecracker).
    #[arg(long)]
    pub backend: Option<String>,
    /// Only runs that had network traffic blocked.
    #[arg(long, conflicts_with = "not_blocked")]
    pub blocked: bool,
    /// Only runs that had nothing blocked.
    #[arg(long)]
    pub not_blocked: bool,
    /// At most this many runs, newest first (0: all).
    #[arg(long, default_value_t = 50)]
    pub limit: u64,
    /// Hash every listed report against its archived digest (slower).
    #[arg(long)]
    pub check: bool,
    #[command(flatten)]
    /// The archive.
    pub location: ArchiveLocation,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Parses `--since`: RFC 3339, or an age such as `90m`, `24h`, `7d`, into Unix milliseconds.
pub fn parse_since(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let age = t
        .char_indices()
        .last()
        .filter(|(_, c)| matches!(c, 's' | 'm' | 'h' | 'd'))
        .and_then(|(i, unit)| {
            let n: u64 = t[..i].parse().ok()?;
            let secs = match unit {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                _ => 86_400,
            };
            n.checked_mul(secs)
        });
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let ms = match age {
        Some(secs) => now_ms.saturating_sub(secs.saturating_mul(1000)),
        None => {
            let dt = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .map_err(|e| {
                    format!("--since {t:?}: neither RFC 3339 nor an age like 24h ({e})")
                })?;
            u64::try_from(dt.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
        }
    };
    Ok(ms)
}

/// `report list`.
pub fn list(args: ListArgs) -> u8 {
    let since = match args.since.as_deref().map(parse_since).transpose() {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    let filter = Filter {
        since,
        status: args.status.clone(),
        policy: args.policy.clone(),
        command: args.command.clone(),
        backend: args.backend.clone(),
        blocked: match (args.blocked, args.not_blocked) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        limit: args.limit,
    };
    let db = match args.location.open_read_only() {
        Ok(db) => db,
        Err(e) => return fail(&[e.to_diagnostic()], args.format),
    };
    let runs = match db.list(&filter) {
        Ok(r) => r,
        Err(e) => return fail(&[e.to_diagnostic()], args.format),
    };
    let states: Vec<ReportState> = runs
        .iter()
        .map(|r| crate::check_report(&r.record, args.check))
        .collect();
    let bad = states
        .iter()
        .filter(|s| matches!(s, ReportState::Missing | ReportState::Changed { .. }))
        .count();
    match args.format {
        Format::Json => {
            // Serialized straight from the rows: no intermediate `Value` per run.
            #[derive(serde::Serialize)]
            struct Row<'a> {
                #[serde(flatten)]
                run: &'a ArchivedRun,
                report: &'static str,
            }
            #[derive(serde::Serialize)]
            struct Doc<'a> {
                ok: bool,
                runs: Vec<Row<'a>>,
            }
            let doc = Doc {
                ok: true,
                runs: runs
                    .iter()
                    .zip(&states)
                    .map(|(run, s)| Row {
                        run,
                        report: s.label(),
                    })
                    .collect(),
            };
            print_out(&(serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"));
        }
        Format::Text => {
            let mut text = format!(
                "{:<12}  {:<24}  {:<12}  {:>4}  {:<16}  {:<8}  {:<8}  COMMAND\n",
                "RUN", "STARTED", "STATUS", "EXIT", "POLICY", "BACKEND", "REPORT"
            );
            for (r, s) in runs.iter().zip(&states) {
                let rec = &r.record;
                let exit = rec
                    .exit_code
                    .map(|c| c.to_string())
                    .or(rec.signal.map(|s| format!("s{s}")))
                    .unwrap_or_else(|| "-".into());
                let mut status = rec.status.clone();
                if !rec.blocked.is_empty() {
                    status.push('*');
                }
                text.push_str(&format!(
                    "{:<12}  {:<24}  {:<12}  {:>4}  {:<16}  {:<8}  {:<8}  {}\n",
                    rec.run_id,
                    rec.started_at,
                    status,
                    exit,
                    rec.policy_name,
                    rec.backend,
                    s.label(),
                    rec.command
                ));
            }
            text.push_str(&format!(
                "{} run(s){}\n",
                runs.len(),
                if runs.iter().any(|r| !r.record.blocked.is_empty()) {
                    "; * had network traffic blocked"
                } else {
                    ""
                }
            ));
            print_out(&text);
        }
    }
    if args.check && bad > 0 {
        let d = Diagnostic::new(
            ErrorCode::ArchiveTampered,
            "archive.report",
            format!("{bad} listed report(s) are missing or no longer match the archived digest"),
            "see the REPORT column; the log leaves keep the original digests",
        );
        return fail(&[d], Format::Text);
    }
    0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_rfc3339_and_ages() {
        assert_eq!(
            parse_since("2026-12-01T01:00:00.5+01:00").unwrap(),
            crate::db::unix_ms("2026-12-01T00:00:00.500Z")
        );
        assert_eq!(crate::db::unix_ms("1970-01-01T00:00:01.25Z"), 1250);
        let day = parse_since("1d").unwrap();
        let now = crate::db::unix_ms(&crate::db::now_rfc3339());
        assert!(now - day >= 86_400_000 && now - day < 86_400_000 + 60_000);
        assert!(parse_since("yesterday").is_err());
        assert!(parse_since("5x").is_err());
    }
}
