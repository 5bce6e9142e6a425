//! Exec on a live sandbox: creates one sandbox for a policy (the process sandbox or a microVM,
//! as the policy's backend says) and times N execs of a command in it, one after the other
//! (bench/sandbox/bench_live_exec.sh runs it beside `safe-run run` and bubblewrap;
//! bench/microvm/bench.sh for a microVM beside the sandbox). Prints `create_ms`, then p50/p90/p99/max of the execs in ms.
//!
//!   live_exec_bench POLICY [N] [-- CMD ARGS]     (as root; this binary is its own init)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use sr_evidence::RecordingSink;
use sr_runner::life::backend::{BackendInputs, for_bundle};
use sr_runner::life::{ExecEnd, ExecRequest, Sandbox, SandboxSpec};
use sr_runner::{NoNetwork, RunDir, RunStatus};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__init") {
        std::process::exit(sr_runner::sandbox::init::main());
    }
    let policy = PathBuf::from(
        args.get(1)
            .expect("usage: live_exec_bench POLICY [N] [-- CMD]"),
    );
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200);
    let argv: Vec<String> = match args.iter().position(|a| a == "--") {
        Some(i) => args[i + 1..].to_vec(),
        None => vec!["/bin/true".into()],
    };
    let config = sr_policy::OperatorConfig::load().expect("operator config");
    let policy = sr_policy::load_policy_file(&policy, &config).expect("policy");
    let bundle = sr_compiler::compile(&policy, &config).expect("compile");
    let base = tempfile_dir();
    let probes =
        sr_runner::preflight::RealProbes::of_host(std::env::current_exe().unwrap(), base.clone());
    let host = sr_runner::preflight::check(
        &probes,
        sr_runner::preflight::Needs {
            landlock_required: false,
            landlock_min_abi: 1,
        },
    )
    .map_err(|e| e.iter().map(|e| e.to_string()).collect::<Vec<_>>())
    .expect("preflight");
    let dir = RunDir::create(&base).unwrap();
    // Whichever boundary the policy names: the process sandbox, or a microVM.
    let backend = for_bundle(
        &bundle,
        BackendInputs {
            init_exe: std::env::current_exe().unwrap(),
            allowed_mount_prefixes: config.allowed_mount_prefixes.clone(),
            vmm_identity: (config.workload_host_uid, config.workload_host_gid),
            snapshots: config.microvm.snapshot_dir(),
        },
    );
    let t = Instant::now();
    let sb = Sandbox::create(
        &dir,
        SandboxSpec {
            bundle,
            network: Box::new(NoNetwork),
            sink: RecordingSink::default(),
            cgroup_layout: host.cgroup,
        },
        backend,
        Arc::default(),
    );
    let create_ms = t.elapsed().as_secs_f64() * 1000.0;
    assert!(sb.start_failure().is_none(), "{:?}", sb.start_failure());
    let req = ExecRequest {
        argv,
        ..ExecRequest::default()
    };
    for _ in 0..10 {
        sb.exec(&req).unwrap().wait();
    }
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = sb.exec(&req).unwrap().wait();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(r.end, ExecEnd::Exited(0), "{:?}", r.end);
    }
    sb.destroy(RunStatus::Exited { code: 0 }, None);
    let _ = std::fs::remove_dir_all(&base);
    times.sort_by(f64::total_cmp);
    println!("create_ms {create_ms:.3}");
    for (name, p) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)] {
        println!("exec_{name}_ms {:.3}", percentile(&times, p));
    }
}

fn tempfile_dir() -> PathBuf {
    let p = Path::new("/tmp").join(format!("sr-live-bench-{}", std::process::id()));
    std::fs::create_dir_all(&p).unwrap();
    p
}
