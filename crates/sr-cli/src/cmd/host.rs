//! What `safe-run serve` and `safe-run mcp` do before they serve: load the operator config,
//! run the host checks of `safe-run run` (SR-RUN-001), recover what a killed daemon or run
//! left behind, load the signing key; and the runtime they serve on.

use std::path::PathBuf;

use sr_common::{Diagnostic, ErrorCode};
use sr_daemon::Host;
use sr_policy::OperatorConfig;
use sr_runner::preflight::{self, Needs, RealProbes};

/// A startup failure at `what`.
pub fn startup(what: &str, message: String, hint: &str) -> Diagnostic {
    Diagnostic::new(ErrorCode::RunPreflight, what, message, hint)
}

/// The checked host a daemon runs on, its leftovers recovered.
pub fn prepare() -> Result<Host, Diagnostic> {
    let config = OperatorConfig::load()?;
    let init_exe = super::init::init_exe()?;
    let base = PathBuf::from(&config.run_dir);
    let probes = RealProbes::of_host(init_exe.clone(), base.clone());
    let needs = Needs {
        landlock_required: config.require_landlock,
        landlock_min_abi: 1,
    };
    let host = preflight::check(&probes, needs).map_err(|errs| {
        errs.first().map(|e| e.to_diagnostic()).unwrap_or_else(|| {
            startup(
                "preflight",
                "the host checks failed".into(),
                "see docs/run.md",
            )
        })
    })?;
    // What a killed daemon (or run) left behind, before anything new exists.
    super::gc::collect_quietly(&base, &host.cgroup);
    let signer = Some(super::key::load_signing_key(None)?);
    Ok(Host {
        config,
        layout: host.cgroup,
        init_exe,
        signer,
    })
}

/// The multi-threaded runtime a daemon serves on.
pub fn runtime() -> Result<tokio::runtime::Runtime, Diagnostic> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            startup(
                "serve.runtime",
                format!("cannot start the runtime: {e}"),
                "this is a bug",
            )
        })
}
