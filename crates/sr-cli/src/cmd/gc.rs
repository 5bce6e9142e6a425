//! `safe-run gc`: removes what runs killed with SIGKILL left behind (cgroups, network links and
//! nftables tables), never touching a live run (one whose `run.lock` is held). Evidence is
//! kept; each recovered run dir gets a `recovered.json`. `safe-run run` does the same quietly
//! before every run. With `--keep N` and/or `--older-than DURATION` it then deletes finished
//! run directories (evidence included) by retention; see [`super::prune`].

use std::path::{Path, PathBuf};

use clap::Args;
use sr_policy::OperatorConfig;
use sr_runner::cgroup::{self, HostFs, Layout};
use sr_runner::gc;
use sr_runner::network::gc::NetworkLeftovers;

use crate::output::{Format, fail};

/// Arguments of `safe-run gc`.
#[derive(Args)]
#[command(after_help = "Examples:
  safe-run gc                          # recover what SIGKILLed runs left; delete nothing else
  safe-run gc --keep 20                # also delete all but the 20 newest finished run dirs
  safe-run gc --older-than 7d          # also delete finished run dirs older than 7 days
  safe-run gc --keep 5 --older-than 1d # delete only runs that are both beyond the 5 newest and older than a day

A live run (its run.lock held) is never deleted. Deleting a run dir deletes its evidence
(report, event log, outputs): export or copy what you must keep first. See docs/run.md.")]
pub struct GcArgs {
    /// Keep the N newest finished run dirs; delete older ones.
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,
    /// Delete finished run dirs not changed for this long (e.g. 30m, 12h, 7d).
    #[arg(long, value_name = "DURATION", value_parser = super::prune::parse_age)]
    pub older_than: Option<std::time::Duration>,
    /// Only list what --keep / --older-than would delete.
    #[arg(long)]
    pub dry_run: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Runs the subcommand; returns the process exit code (0, or 5 when something could not be
/// removed).
pub fn execute(args: GcArgs) -> u8 {
    let config = match OperatorConfig::load() {
        Ok(c) => c,
        Err(d) => return fail(&[d], args.format),
    };
    let base = PathBuf::from(&config.run_dir);
    let layout = cgroup::detect(&HostFs, sr_runner::preflight::default_cgroup_root()).ok();
    let mut recovered = gc::collect(&base, layout.as_ref(), &HostFs, &NetworkLeftovers, true);
    let mut failed = recovered.iter().any(|r| !r.errors.is_empty());
    let net = network_leftovers(&base);
    match &net {
        Ok(removed) if !removed.is_empty() => recovered.push(gc::Recovered {
            run_id: "-".into(),
            run_dir: base.clone(),
            removed: removed.clone(),
            errors: Vec::new(),
        }),
        Ok(_) => {}
        Err(d) => {
            failed = true;
            eprintln!("error: {d}");
        }
    }
    let rule = super::prune::Retention {
        keep: args.keep,
        older_than: args.older_than,
    };
    let doomed = super::prune::select(
        super::prune::scan(&base),
        rule,
        std::time::SystemTime::now(),
    );
    let mut pruned = Vec::new();
    for dir in doomed {
        // The lock is tried again right before deleting: a run may have started meanwhile
        // only under a fresh id, but this keeps "never a live run" true by construction.
        if sr_runner::rundir::is_locked(&dir) {
            continue;
        }
        if args.dry_run {
            pruned.push(dir);
            continue;
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => pruned.push(dir),
            Err(e) => {
                failed = true;
                eprintln!("error: cannot delete run dir {}: {e}", dir.display());
            }
        }
    }
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::json!({"ok": !failed, "recovered": recovered, "pruned": pruned, "dryRun": args.dry_run})
        ),
        Format::Text => {
            if recovered.is_empty() && pruned.is_empty() {
                println!("gc: nothing to remove under {}", base.display());
            }
            for p in &pruned {
                println!("gc: {verb} run dir {}", p.display());
            }
            for r in &recovered {
                println!("gc: run {} ({})", r.run_id, r.run_dir.display());
                for x in &r.removed {
                    println!("  removed {x}");
                }
                for e in &r.errors {
                    println!("  could not remove: {e}");
                }
            }
        }
    }
    if failed { 5 } else { 0 }
}

/// The network module's leftovers: nftables tables and links of runs that are not alive.
///
/// Only runs under this run directory base are judged: a table whose run directory is not
/// here belongs to a safe-run with another base (another operator config, a test) and is
/// never touched, since this process cannot see its lock.
fn network_leftovers(base: &Path) -> Result<Vec<String>, sr_common::Diagnostic> {
    let alive = |run_id: &str| {
        let dir = base.join(run_id);
        !dir.exists()
            || sr_runner::rundir::is_locked(&dir)
            || sr_runner::network::release::pending_state(&dir)
                == sr_runner::network::release::PendingState::Working
    };
    sr_runner::network::gc::release_leftovers(&alive)
}

/// gc before a run: same work, no output (errors are retried by the next gc). The network
/// sweep (which lists nftables) only runs when a dead run was found, to keep launches lean.
pub fn collect_quietly(base: &Path, layout: &Layout) {
    if !gc::collect(base, Some(layout), &HostFs, &NetworkLeftovers, false).is_empty() {
        let _ = network_leftovers(base);
    }
}
