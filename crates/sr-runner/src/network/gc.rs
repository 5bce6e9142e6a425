//! Recovery of leftovers from runs that died without releasing (SIGKILL, power loss).
//!
//! Two entry points: [`release_run`] (and [`NetworkLeftovers`], the runner gc's hook) removes
//! the table and link of one run the caller knows to be dead, drops its uplink forwarding
//! holds (restoring a flag no live run needs any more) and its subnet ledger entry; [`release_leftovers`] sweeps
//! every `safe_run_<id>` table whose run the caller reports dead *and* whose host link is gone. A live run's objects are never touched: liveness comes
//! from the caller (the runner holds an flock on `<run dir>/run.lock` for a run's whole life).
//! A dead run's host veth usually vanished with its sandbox's namespace; its table stays until
//! this runs. A microVM's TAP `srt<id>` is persistent: it stays after its VMM died, keeps the
//! sweep away from the run's table (as a live veth would), and is deleted by [`release_run`].

use std::cell::OnceCell;
use std::path::Path;

use serde_json::Value;
use sr_common::Diagnostic;

use super::error::NetworkError;
use super::exec::{NetCommand, NetCommandExecutor, SystemExecutor};
use super::forwarding::{self, StateLock};
use super::ledger;

/// Table name prefix of a run's table.
pub const TABLE_PREFIX: &str = "safe_run_";

fn run_id_of_table(name: &str) -> Option<&str> {
    name.strip_prefix(TABLE_PREFIX).filter(|id| is_run_id(id))
}

/// The run id of a run's host link: a sandbox's veth `sr<id>h` or a microVM's TAP `srt<id>`.
fn run_id_of_link(name: &str) -> Option<&str> {
    name.strip_prefix("srt")
        .filter(|id| is_run_id(id))
        .or_else(|| {
            name.strip_prefix("sr")
                .and_then(|r| r.strip_suffix('h'))
                .filter(|id| is_run_id(id))
        })
}

fn is_run_id(id: &str) -> bool {
    id.len() == 12
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Run tables present: (family, name, run id).
pub fn run_tables(
    exec: &dyn NetCommandExecutor,
) -> Result<Vec<(String, String, String)>, NetworkError> {
    let out = exec
        .run(&NetCommand::nft(&["list", "tables"]))
        .map_err(NetworkError::Sample)?;
    let doc: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    let mut tables = Vec::new();
    for obj in doc
        .get("nftables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(t) = obj.get("table") else { continue };
        let name = t.get("name").and_then(Value::as_str).unwrap_or_default();
        let family = t.get("family").and_then(Value::as_str).unwrap_or_default();
        if let Some(id) = run_id_of_table(name) {
            tables.push((family.to_owned(), name.to_owned(), id.to_owned()));
        }
    }
    Ok(tables)
}

/// Deletes the tables of runs for which `is_run_alive(run_id)` is false and whose host link is
/// gone; returns what it removed (`table inet safe_run_<id>`). Errors are SR-RUN-202.
///
/// A second guard besides the caller's liveness: a run's host veth `sr<id>h` exists exactly as
/// long as its sandbox's network namespace does (the peer lives in it), so a run whose link
/// still exists has a live sandbox and is skipped, even if the caller believes it dead (a gc
/// looking at another run-dir base, a stale lock check). Once the sandbox's processes are gone
/// (gc kills a dead run's cgroup first), the kernel removes the link and the next sweep removes
/// the table. Links are never deleted here: [`release_run`] does that for a run the caller
/// knows to be dead.
pub fn release_leftovers_with(
    exec: &dyn NetCommandExecutor,
    is_run_alive: &dyn Fn(&str) -> bool,
) -> Result<Vec<String>, Diagnostic> {
    let tables = run_tables(exec).map_err(|e| NetworkError::Release(e.to_string()))?;
    let links = exec
        .run(&NetCommand::ip(&["-j", "link", "show"]))
        .map_err(|e| NetworkError::Release(e.to_string()))?;
    let links: Value = serde_json::from_str(&links).unwrap_or(Value::Null);
    let linked: Vec<&str> = links
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l.get("ifname").and_then(Value::as_str))
        .filter_map(run_id_of_link)
        .collect();
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    for (family, name, id) in tables {
        if is_run_alive(&id) || linked.contains(&id.as_str()) {
            continue;
        }
        match exec.run(&NetCommand::nft(&["delete", "table", &family, &name])) {
            Ok(_) => removed.push(format!("table {family} {name}")),
            Err(e) if e.is_not_found() => {}
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.is_empty() {
        Ok(removed)
    } else {
        Err(NetworkError::Release(errors.join("; ")).to_diagnostic())
    }
}

/// Gives back what `run_id` holds in the shared state under `state_dir`: its forwarding holds
/// (restoring each uplink flag no live run holds any more; a holder is live while its
/// `safe_run_<id>` table exists) and its subnet ledger entry. Returns what it gave back
/// (`forwarding on <if> (restored)`, `subnet <cidr>`... as text).
pub fn release_shared(
    exec: &dyn NetCommandExecutor,
    state_dir: &Path,
    run_id: &str,
) -> Result<Vec<String>, String> {
    // No state dir: no allowlist run ever recorded anything here (gc of a run without
    // network objects must not create it).
    if !state_dir.exists() {
        return Ok(Vec::new());
    }
    let lock = StateLock::acquire(state_dir)?;
    let tables: OnceCell<Result<Vec<String>, String>> = OnceCell::new();
    let is_live = |other: &str| -> Result<bool, String> {
        tables
            .get_or_init(|| {
                run_tables(exec)
                    .map(|t| t.into_iter().map(|(_, _, id)| id).collect())
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map(|ids| ids.iter().any(|id| id == other))
            .map_err(Clone::clone)
    };
    let mut released = Vec::new();
    let mut errors = Vec::new();
    match forwarding::release(exec, &lock, run_id, &is_live) {
        Ok(devs) => released.extend(devs.iter().map(|d| format!("forwarding on {d} (restored)"))),
        Err(e) => errors.push(format!("restoring forwarding: {e}")),
    }
    match ledger::release(&lock, run_id) {
        Ok(true) => released.push("subnet ledger entry".to_owned()),
        Ok(false) => {}
        Err(e) => errors.push(format!("releasing the subnet: {e}")),
    }
    if errors.is_empty() {
        Ok(released)
    } else {
        Err(errors.join("; "))
    }
}

/// Removes the table and host link of one dead run (`run_id`), then gives back its shared
/// state under `state_dir` ([`release_shared`]); "not found" is success.
pub fn release_run(
    exec: &dyn NetCommandExecutor,
    state_dir: &Path,
    run_id: &str,
) -> Result<Vec<String>, NetworkError> {
    if !is_run_id(run_id) {
        return Err(NetworkError::Release(format!("{run_id:?} is not a run id")));
    }
    let table = format!("{TABLE_PREFIX}{run_id}");
    // A sandbox's veth, or a microVM's TAP: a TAP is persistent, so unlike the veth it
    // outlives its VMM and must be deleted here.
    let (veth, tap) = (format!("sr{run_id}h"), format!("srt{run_id}"));
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    for (what, cmd) in [
        (
            format!("table inet {table}"),
            NetCommand::nft(&["delete", "table", "inet", &table]),
        ),
        (
            format!("link {veth}"),
            NetCommand::ip(&["link", "del", &veth]),
        ),
        (
            format!("link {tap}"),
            NetCommand::ip(&["link", "del", &tap]),
        ),
    ] {
        match exec.run(&cmd) {
            Ok(_) => removed.push(what),
            Err(e) if e.is_not_found() => {}
            Err(e) => errors.push(e.to_string()),
        }
    }
    match release_shared(exec, state_dir, run_id) {
        Ok(r) => removed.extend(r),
        Err(e) => errors.push(e),
    }
    if errors.is_empty() {
        Ok(removed)
    } else {
        Err(NetworkError::Release(errors.join("; ")))
    }
}

/// The runner's gc hook ([`crate::gc::LeftoverCleaner`]): removes one dead run's network
/// objects on this host and gives back its shared state under
/// [`forwarding::DEFAULT_STATE_DIR`].
#[derive(Debug, Default, Clone, Copy)]
pub struct NetworkLeftovers;

impl crate::gc::LeftoverCleaner for NetworkLeftovers {
    fn release_leftovers(&self, run_id: &str) -> Result<Vec<String>, String> {
        release_run(
            &SystemExecutor,
            Path::new(forwarding::DEFAULT_STATE_DIR),
            run_id,
        )
        .map_err(|e| e.to_diagnostic().to_string())
    }
}

/// [`release_leftovers_with`] on this host.
pub fn release_leftovers(is_run_alive: &dyn Fn(&str) -> bool) -> Result<Vec<String>, Diagnostic> {
    release_leftovers_with(&SystemExecutor, is_run_alive)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::network::exec::RecordingExecutor;

    #[test]
    fn removes_only_dead_runs_whose_sandbox_is_gone() {
        let exec = RecordingExecutor::new(|cmd| match cmd {
            NetCommand::Nft { args } if args[0] == "list" => Ok(r#"{"nftables":[{"metainfo":{}},
                {"table":{"family":"inet","name":"safe_run_aaaaaaaaaaaa"}},
                {"table":{"family":"inet","name":"safe_run_bbbbbbbbbbbb"}},
                {"table":{"family":"inet","name":"safe_run_cccccccccccc"}},
                {"table":{"family":"inet","name":"filter"}},
                {"table":{"family":"inet","name":"safe_run_notanid"}}]}"#
                .into()),
            NetCommand::Ip { args } if args[0] == "-j" => {
                Ok(r#"[{"ifname":"lo"},{"ifname":"srcccccccccccch"},{"ifname":"eth0"}]"#.into())
            }
            _ => Ok(String::new()),
        });
        // b is alive; c is "dead" per the caller but its sandbox still holds its link.
        let removed = release_leftovers_with(&exec, &|id| id == "bbbbbbbbbbbb").unwrap();
        assert_eq!(removed, vec!["table inet safe_run_aaaaaaaaaaaa"]);
        let deletes: Vec<String> = exec
            .commands()
            .iter()
            .map(ToString::to_string)
            .filter(|c| c.contains("delete") || c.contains(" del "))
            .collect();
        assert_eq!(deletes, ["nft -j delete table inet safe_run_aaaaaaaaaaaa"]);
    }

    #[test]
    fn one_dead_run() {
        let state = tempfile::tempdir().unwrap();
        let state = state.path();
        let exec = RecordingExecutor::new(|cmd| match cmd {
            NetCommand::Ip { .. } => {
                Err(RecordingExecutor::failure(cmd, "Cannot find device \"x\""))
            }
            _ => Ok(String::new()),
        });
        assert_eq!(
            release_run(&exec, state, "aaaaaaaaaaaa").unwrap(),
            vec!["table inet safe_run_aaaaaaaaaaaa"]
        );
        assert!(release_run(&exec, state, "../etc").is_err());
        let failing = RecordingExecutor::new(|cmd| {
            Err(RecordingExecutor::failure(cmd, "Operation not permitted"))
        });
        let err = release_run(&failing, state, "aaaaaaaaaaaa").unwrap_err();
        assert_eq!(err.code(), sr_common::ErrorCode::RunNetworkRelease);
        // Every step was attempted: the table, the veth, the TAP.
        assert_eq!(failing.commands().len(), 3);
    }

    /// A microVM's TAP is persistent: gc of a dead run deletes it, and while it exists the
    /// sweep leaves the run's table alone, as for a live veth.
    #[test]
    fn a_dead_microvms_tap_is_deleted_and_guards_the_sweep() {
        let state = tempfile::tempdir().unwrap();
        let exec = RecordingExecutor::new(|_| Ok(String::new()));
        let removed = release_run(&exec, state.path(), "aaaaaaaaaaaa").unwrap();
        assert!(
            removed.contains(&"link srtaaaaaaaaaaaa".to_owned()),
            "{removed:?}"
        );
        assert_eq!(run_id_of_link("srtaaaaaaaaaaaa"), Some("aaaaaaaaaaaa"));
        assert_eq!(run_id_of_link("sraaaaaaaaaaaah"), Some("aaaaaaaaaaaa"));
        assert_eq!(run_id_of_link("srtaaaa"), None);
        let sweep = RecordingExecutor::new(|cmd| match cmd {
            NetCommand::Nft { args } if args[0] == "list" => Ok(r#"{"nftables":[
                {"table":{"family":"inet","name":"safe_run_aaaaaaaaaaaa"}}]}"#
                .into()),
            NetCommand::Ip { .. } => Ok(r#"[{"ifname":"srtaaaaaaaaaaaa"}]"#.into()),
            _ => Ok(String::new()),
        });
        assert!(
            release_leftovers_with(&sweep, &|_| false)
                .unwrap()
                .is_empty()
        );
    }

    /// Issue 14 item 5: gc of a SIGKILLed run gives back the uplink flags only it held; a flag
    /// a live run (its table exists) also holds stays on.
    #[test]
    fn a_dead_runs_forwarding_is_restored_unless_a_live_run_holds_it() {
        let state = tempfile::tempdir().unwrap();
        let (dead, live) = ("aaaaaaaaaaaa", "bbbbbbbbbbbb");
        {
            let lock = StateLock::acquire(state.path()).unwrap();
            let on = RecordingExecutor::new(|cmd| match cmd {
                NetCommand::SysctlRead { .. } => Ok("0".into()),
                _ => Ok(String::new()),
            });
            forwarding::ensure(&on, &lock, dead, &["eth0".into(), "eth1".into()]).unwrap();
            forwarding::ensure(&on, &lock, live, &["eth0".into()]).unwrap();
            let pool = "10.213.0.0/16".parse().unwrap();
            let me = ledger::Holder::this_process(dead);
            ledger::claim(&lock, &pool, &[], me, &|_| true).unwrap();
        }
        let exec = RecordingExecutor::new(|cmd| match cmd {
            NetCommand::Nft { args } if args == &["list", "tables"] => Ok(
                r#"{"nftables":[{"table":{"family":"inet","name":"safe_run_bbbbbbbbbbbb"}}]}"#
                    .into(),
            ),
            NetCommand::Ip { .. } => Err(RecordingExecutor::failure(cmd, "Cannot find device")),
            _ => Ok(String::new()),
        });
        let removed = release_run(&exec, state.path(), dead).unwrap();
        assert_eq!(
            removed,
            [
                "table inet safe_run_aaaaaaaaaaaa",
                "forwarding on eth1 (restored)",
                "subnet ledger entry"
            ]
        );
        let writes: Vec<String> = exec
            .commands()
            .iter()
            .map(ToString::to_string)
            .filter(|c| c.starts_with("sysctl -w"))
            .collect();
        assert_eq!(writes, ["sysctl -w net.ipv4.conf.eth1.forwarding=0"]);
        let lock = StateLock::acquire(state.path()).unwrap();
        let record = lock.read();
        assert_eq!(record.len(), 1);
        assert_eq!(record["eth0"].runs.iter().collect::<Vec<_>>(), [live]);
        drop(lock);
        // The live run ends without releasing (SIGKILL too): the next gc gives eth0 back.
        let gone = RecordingExecutor::new(|cmd| match cmd {
            NetCommand::Nft { args } if args == &["list", "tables"] => {
                Ok(r#"{"nftables":[]}"#.into())
            }
            _ => Ok(String::new()),
        });
        let removed = release_run(&gone, state.path(), live).unwrap();
        assert!(removed.contains(&"forwarding on eth0 (restored)".to_owned()));
        assert!(!state.path().join(forwarding::FORWARDING_FILE).exists());
    }

    #[test]
    fn a_real_failure_is_sr_run_202() {
        let exec = RecordingExecutor::new(|cmd| match cmd {
            NetCommand::Nft { args } if args[0] == "list" => Ok(
                r#"{"nftables":[{"table":{"family":"inet","name":"safe_run_aaaaaaaaaaaa"}}]}"#
                    .into(),
            ),
            NetCommand::Nft { .. } => {
                Err(RecordingExecutor::failure(cmd, "Operation not permitted"))
            }
            _ => Ok("[]".into()),
        });
        let err = release_leftovers_with(&exec, &|_| false).unwrap_err();
        assert_eq!(err.code, sr_common::ErrorCode::RunNetworkRelease);
        assert_eq!(err.path, "cleanup.network");
    }
}
