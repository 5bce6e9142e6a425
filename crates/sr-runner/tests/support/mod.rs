//! What the runner's root test binaries share: a hand-built bundle (so they do not depend on
//! the compiler), an output capture, and the harness that is also the sandbox init.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use sr_bundle::*;

#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

pub fn bundle(cmd: &str, args: &[&str]) -> CompileBundle {
    let mut mounts = vec![MountStep::Root {
        source: "host".into(),
    }];
    for d in [
        "/bin", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/sbin", "/usr",
    ] {
        mounts.push(MountStep::Bind {
            source: d.into(),
            target: d.into(),
            read_only: true,
            origin: "rootfs".into(),
        });
    }
    mounts.push(MountStep::Tmpfs {
        target: "/tmp".into(),
        size_bytes: 16 << 20,
        mode: 0o1777,
    });
    mounts.push(MountStep::Proc {
        target: "/proc".into(),
    });
    mounts.push(MountStep::Dev {
        target: "/dev".into(),
        devices: ["full", "null", "random", "tty", "urandom", "zero"]
            .map(String::from)
            .to_vec(),
    });
    let rules = ["/bin", "/etc", "/lib", "/lib64", "/proc", "/sbin", "/usr"]
        .iter()
        .map(|p| LandlockRule {
            path: (*p).into(),
            access: "ro".into(),
        })
        .chain([LandlockRule {
            path: "/tmp".into(),
            access: "rw".into(),
        }])
        .collect();
    CompileBundle {
        bundle_version: 2,
        policy_digest: "sha256:00".into(),
        policy_name: "runner-test".into(),
        policy_overrides: Default::default(),
        process: ProcessPlan {
            command: cmd.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::from([("PATH".into(), "/usr/bin:/bin".into())]),
            cwd: "/".into(),
            uid: 1000,
            gid: 1000,
            timeout_ms: 20_000,
            output: OutputPlan {
                max_bytes: 64 << 20,
                on_limit: OutputAction::Truncate,
            },
        },
        backend: BackendPlan::Sandbox(SandboxPlan {
            namespaces: ["cgroup", "ipc", "mount", "net", "pid", "user", "uts"]
                .map(String::from)
                .to_vec(),
            host_uid: 65534,
            host_gid: 65534,
            hostname: "safe-run".into(),
            mounts,
            landlock: LandlockPlan {
                required: true,
                min_abi: 1,
                rules,
            },
            seccomp: SeccompPlan {
                profile_id: "sr-default-v2".into(),
                deny_action: "errno:EPERM".into(),
                denied_syscalls: ["bpf", "keyctl", "mount", "ptrace", "setns", "unshare"]
                    .map(String::from)
                    .to_vec(),
                denied_clone_flags: ["CLONE_NEWNS", "CLONE_NEWUSER"].map(String::from).to_vec(),
                enosys_syscalls: vec!["clone3".into()],
                allowed_socket_families: owned(&sr_compiler::seccomp::ALLOWED_SOCKET_FAMILIES),
                allowed_netlink_protocols: owned(&sr_compiler::seccomp::ALLOWED_NETLINK_PROTOCOLS),
                allowed_inet_socket_types: owned(&sr_compiler::seccomp::ALLOWED_INET_SOCKET_TYPES),
                allowed_ip_protocols: owned(&sr_compiler::seccomp::ALLOWED_IP_PROTOCOLS),
            },
            file_locks: Default::default(),
            rlimits: BTreeMap::from([("nofile".into(), 256)]),
            no_new_privs: true,
            capabilities: vec![],
        }),
        cgroup_plan: CgroupPlan {
            name: "safe-run-<runId>".into(),
            memory_max_bytes: 256 << 20,
            pids_max: 64,
            cpu_quota_us: 100_000,
            cpu_period_us: 100_000,
        },
        network_plan: None,
        evidence_plan: EvidencePlan {
            events: vec![],
            sign: false,
            sample_interval_ms: 100,
        },
    }
}

pub fn owned(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// The host's cgroup layout, by a real preflight (root, Landlock) for runs under `base`.
pub fn preflight_layout(base: &std::path::Path) -> sr_runner::cgroup::Layout {
    let probes = sr_runner::preflight::RealProbes {
        cgroup_root: std::path::PathBuf::from("/sys/fs/cgroup"),
        init_exe: std::env::current_exe().unwrap(),
        run_base: base.to_path_buf(),
    };
    sr_runner::preflight::check(
        &probes,
        sr_runner::preflight::Needs {
            landlock_required: true,
            landlock_min_abi: 1,
        },
    )
    .map_err(|e| e.iter().map(|e| e.to_string()).collect::<Vec<_>>())
    .unwrap()
    .cgroup
}

/// The harness: `__init` dispatches to the sandbox init (the runner re-executes this
/// binary); without root the tests FAIL under CI=true and are SKIPPED otherwise; arguments
/// filter tests by name.
pub fn main(tests: &[(&str, fn())]) -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("__init") {
        return ExitCode::from(u8::try_from(sr_runner::sandbox::init::main()).unwrap_or(1));
    }
    if !nix::unistd::geteuid().is_root() {
        if std::env::var("CI").as_deref() == Ok("true") {
            eprintln!("FAILED: these runner tests need root (CI=true)");
            return ExitCode::FAILURE;
        }
        eprintln!("SKIPPED: these runner tests need root");
        return ExitCode::SUCCESS;
    }
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut failed = 0;
    for (name, f) in tests {
        if !filters.is_empty() && !filters.iter().any(|x| name.contains(x.as_str())) {
            continue;
        }
        let ok = std::panic::catch_unwind(f).is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        failed += usize::from(!ok);
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
