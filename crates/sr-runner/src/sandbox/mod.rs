//! The process sandbox backend: namespaces, mounts, Landlock, seccomp, cgroups.
//!
//! * [`launch`]: the runner side (multi-threaded, never forks): cgroups, spawning the init,
//!   the control protocol, monitoring, timeout, cleanup.
//! * [`init`]: the `safe-run __init` side (single-threaded): namespaces, the new root, pid 1,
//!   the workload's identity and confinement, exec.
//! * [`mounts`], [`landlock_rules`], [`seccomp`]: the plans for each layer, pure where possible.
//! * [`pty`]: pseudo-terminals for execs with a tty (allocation, window size, the child side).
//! * [`reap`]: the runner as child subreaper, and the reaping of the sandbox's orphaned pid 1.
//! * [`sys`]: the only module with `unsafe`.

pub mod agent;
pub mod bootstrap;
pub mod facts;
pub mod init;
pub mod landlock_rules;
pub mod launch;
pub mod mounts;
pub mod pty;
pub mod reap;
pub mod seccomp;
pub mod socket_filter;
pub mod spawner;
pub mod sys;
