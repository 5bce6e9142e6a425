//! Which report `safe-run report verify` is asked about: a `run_report.json`, a run
//! directory, or a run id under the operator's run directory. A target that is not there or
//! is the wrong kind of file is a usage error, never a failed verification: nothing was
//! checked, so nothing can read as tampering.

use std::io::Read;
use std::path::{Path, PathBuf};

use sr_evidence::report::REPORT_FILE;
use sr_policy::OperatorConfig;

/// Reports are a few KiB; reading more than this to tell its kind is never needed.
const SNIFF_BYTES: u64 = 64 * 1024 * 1024;

/// The report file `target` names, or why it names none (the message of a usage error).
pub fn resolve(target: &Path) -> Result<PathBuf, String> {
    if target.is_dir() {
        return in_run_dir(target);
    }
    if target.is_file() {
        return check_kind(target).map(|()| target.to_path_buf());
    }
    if target.exists() {
        return Err(format!(
            "{} is neither a file nor a directory",
            target.display()
        ));
    }
    // A bare name may be a run id.
    let is_bare = target.components().count() == 1
        && target
            .to_str()
            .is_some_and(|s| !s.is_empty() && !s.contains('/') && s != "." && s != "..");
    if is_bare {
        let base = OperatorConfig::load()
            .map(|c| PathBuf::from(c.run_dir))
            .map_err(|d| {
                format!(
                    "cannot read the operator config to find run {}: {d}",
                    target.display()
                )
            })?;
        let dir = base.join(target);
        if dir.is_dir() {
            return in_run_dir(&dir);
        }
        return Err(format!(
            "{} does not exist, and there is no run with that id under {}",
            target.display(),
            base.display()
        ));
    }
    Err(format!("{} does not exist", target.display()))
}

fn in_run_dir(dir: &Path) -> Result<PathBuf, String> {
    let report = dir.join(REPORT_FILE);
    if report.is_file() {
        return Ok(report);
    }
    let events = dir.join("events.jsonl");
    if events.is_file() {
        return Err(format!(
            "run directory {} has no {REPORT_FILE} (the run is still going, or was killed before it could write one); verify its event log alone with --events {}",
            dir.display(),
            events.display()
        ));
    }
    Err(format!(
        "{} is not a run directory (no {REPORT_FILE}, no events.jsonl)",
        dir.display()
    ))
}

/// Whether `path` is a run report at all (a JSON object with `schemaVersion` and `run`). A file
/// named like a report that does not parse goes on to verification, which fails it: a
/// damaged report is evidence of tampering, a wrongly named file is not.
fn check_kind(path: &Path) -> Result<(), String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(SNIFF_BYTES).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let named_report = path.file_name().is_some_and(|n| n == REPORT_FILE);
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(v) if v.get("schemaVersion").is_some() && v.get("run").is_some() => Ok(()),
        Ok(v) if v.get("payloadType").is_some() => Err(format!(
            "{} is a DSSE envelope, not a run report; check it with `safe-run report verify-envelope {} --key PUBKEY`",
            path.display(),
            path.display()
        )),
        Err(_) if named_report => Ok(()),
        _ if bytes.first() == Some(&b'{')
            && bytes.contains(&b'\n')
            && path.extension().is_some_and(|e| e == "jsonl") =>
        {
            Err(format!(
                "{} is an event log, not a run report; verify it with --events {}",
                path.display(),
                path.display()
            ))
        }
        _ if named_report => Ok(()),
        _ => Err(format!(
            "{} is not a run report (expected the run_report.json written by `safe-run run`)",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_resolve_or_are_refused_as_usage() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run1");
        std::fs::create_dir(&run).unwrap();
        assert!(resolve(&run).unwrap_err().contains("not a run directory"));
        std::fs::write(run.join("events.jsonl"), "{}\n").unwrap();
        assert!(resolve(&run).unwrap_err().contains("--events"));
        std::fs::write(run.join(REPORT_FILE), r#"{"schemaVersion":"1","run":{}}"#).unwrap();
        assert_eq!(resolve(&run).unwrap(), run.join(REPORT_FILE));
        assert_eq!(
            resolve(&run.join(REPORT_FILE)).unwrap(),
            run.join(REPORT_FILE)
        );
        assert!(
            resolve(&run.join("events.jsonl"))
                .unwrap_err()
                .contains("event log")
        );
        let other = tmp.path().join("notes.txt");
        std::fs::write(&other, "hello").unwrap();
        assert!(resolve(&other).unwrap_err().contains("not a run report"));
        assert!(
            resolve(&tmp.path().join("nope"))
                .unwrap_err()
                .contains("does not exist")
        );
        // A damaged report goes on to verification (and fails there as tampering).
        std::fs::write(run.join(REPORT_FILE), "{ broken").unwrap();
        assert_eq!(
            resolve(&run.join(REPORT_FILE)).unwrap(),
            run.join(REPORT_FILE)
        );
    }
}
