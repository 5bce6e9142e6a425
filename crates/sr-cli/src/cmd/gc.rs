//! `safe-run gc`: removes what runs killed with SIGKILL left behind (cgroups, network links and
//! nftables tables), never touching a live run (one whose `run.lock` is held). Evidence is
//! kept; each recovered run dir gets a `recovered.json`. `safe-run run` does the same quietly
//! before every run.

use std::path::{Path, PathBuf};

use clap::Args;
use sr_policy::OperatorConfig;
use sr_runner::cgroup::{self, HostFs, Layout};
use sr_runner::gc;
use sr_runner::network::gc::NetworkLeftovers;

use crate::output::{Format, fail};

/// Arguments of `safe-run gc`.
#[derive(Args)]
pub struct GcArgs {
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
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::json!({"ok": !failed, "recovered": recovered})
        ),
        Format::Text => {
            if recovered.is_empty() {
                println!("gc: nothing to remove under {}", base.display());
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
        !dir.exists() || sr_runner::rundir::is_locked(&dir)
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
