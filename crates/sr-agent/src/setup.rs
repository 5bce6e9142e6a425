//! The guest setup: the host's one JSON line ([`GuestSetup`]) becomes what every exec shares
//! (an [`InitPlan`] and the compiled seccomp filter), checked against what the guest kernel
//! provides ([`GuestFacts`]). Whatever the plan asks that the guest cannot enforce is refused
//! here, as one `Failed` reply naming the step, rather than at the first exec.
//!
//! Pure except [`GuestFacts::probe`] and [`credit_entropy`].

use std::io::Write;

use sr_agent_proto::message::{MountFact, Ready};
use sr_bundle::MountStep;
use sr_runner::microvm::guest_setup::{GuestSetup, GuestSetupReply, MAX_SETUP_LINE};
use sr_runner::sandbox::bootstrap::InitPlan;
use sr_runner::sandbox::seccomp::{self, CompiledSeccomp};
use sr_runner::sandbox::sys::landlock_abi;

use crate::error::AgentError;

/// Fewest and most entropy bytes accepted (the host sends 64).
const ENTROPY_BYTES: std::ops::RangeInclusive<usize> = 32..=4096;

/// What the guest kernel offers, probed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFacts {
    /// `uname -r`.
    pub kernel_release: String,
    /// The modules the agent loaded, in order.
    pub modules: Vec<String>,
    /// The Landlock ABI (0: none).
    pub landlock_abi: u32,
    /// Whether the kernel has seccomp filters.
    pub seccomp: bool,
}

impl GuestFacts {
    /// Probes the running kernel; `modules` are the ones loaded at boot.
    pub fn probe(modules: Vec<String>) -> Self {
        let kernel_release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        // A kernel built with CONFIG_SECCOMP shows the field; without it, it is absent.
        let seccomp = std::fs::read_to_string("/proc/self/status")
            .map(|s| s.lines().any(|l| l.starts_with("Seccomp:")))
            .unwrap_or(false);
        GuestFacts {
            kernel_release,
            modules,
            landlock_abi: landlock_abi().map_or(0, |v| u32::try_from(v).unwrap_or(0)),
            seccomp,
        }
    }
}

/// A setup the guest accepted: what the serve loop needs.
pub struct Prepared {
    /// The plan every exec follows (built from the setup; the bootstrap-only fields are empty).
    pub plan: InitPlan,
    /// The guest plan's seccomp filter, compiled once.
    pub seccomp: CompiledSeccomp,
    /// The entropy to credit before any exec.
    pub entropy: Vec<u8>,
    /// What the agent says after `helloAck`.
    pub ready: Ready,
    /// Set for a restored VM: the host's clock to adopt.
    pub restored: Option<sr_runner::microvm::guest_setup::Restored>,
    /// The setup's answer.
    pub reply: GuestSetupReply,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("run_id", &self.plan.run_id)
            .field("reply", &self.reply)
            .finish_non_exhaustive()
    }
}

/// Checks the setup line against the guest and prepares the execs' shared state.
pub fn prepare(line: &[u8], facts: &GuestFacts) -> Result<Prepared, AgentError> {
    if line.len() > MAX_SETUP_LINE {
        return Err(AgentError::new(
            "guest.setup",
            format!(
                "the setup line has {} bytes, more than {MAX_SETUP_LINE}",
                line.len()
            ),
        ));
    }
    let setup: GuestSetup = serde_json::from_slice(line).map_err(|e| {
        AgentError::new(
            "guest.setup",
            format!("the setup line is not a GuestSetup: {e}"),
        )
    })?;
    let entropy = hex::decode(setup.entropy.trim())
        .map_err(|e| AgentError::new("guest.entropy", format!("entropy is not hex: {e}")))?;
    if !ENTROPY_BYTES.contains(&entropy.len()) {
        return Err(AgentError::new(
            "guest.entropy",
            format!(
                "entropy has {} bytes; {} to {} are accepted",
                entropy.len(),
                ENTROPY_BYTES.start(),
                ENTROPY_BYTES.end()
            ),
        ));
    }
    let guest = &setup.guest;
    if guest.host_uid == 0 || guest.host_gid == 0 {
        return Err(AgentError::new(
            "guest.identity",
            format!(
                "execs would run as uid {} gid {}; the guest plan must name an unprivileged identity",
                guest.host_uid, guest.host_gid
            ),
        ));
    }
    let ll = &guest.landlock;
    if ll.required && facts.landlock_abi < ll.min_abi.max(1) {
        return Err(AgentError::new(
            "guest.landlock",
            format!(
                "the policy requires Landlock ABI >= {} but the guest kernel {} provides {}",
                ll.min_abi.max(1),
                facts.kernel_release,
                facts.landlock_abi
            ),
        ));
    }
    if !facts.seccomp {
        return Err(AgentError::new(
            "guest.seccomp",
            format!(
                "the guest kernel {} has no seccomp filters",
                facts.kernel_release
            ),
        ));
    }
    let compiled = seccomp::compile(&guest.seccomp)
        .map_err(|e| AgentError::new("guest.seccomp", e.to_string()))?;
    let ready = Ready {
        kernel_release: Some(facts.kernel_release.clone()),
        mounts: mount_facts(&guest.mounts),
    };
    let reply = GuestSetupReply::Ok {
        kernel_release: facts.kernel_release.clone(),
        modules: facts.modules.clone(),
        landlock_abi: facts.landlock_abi,
        seccomp: facts.seccomp,
        guest_cid: None,
        crng_reseeded: false,
    };
    let restored = setup.restored;
    let plan = InitPlan {
        run_id: setup.run_id,
        // The bootstrap's own fields mean nothing in a guest: no runner parent, no new root to
        // build (the rootfs image is the root), no host mounts, no cgroups or network
        // namespace to join.
        parent_pid: 0,
        new_root: "/".to_owned(),
        process: setup.process,
        sandbox: setup.guest,
        allowed_mount_prefixes: Vec::new(),
        cgroup_self_attach: Vec::new(),
        joins_network_namespace: false,
    };
    Ok(Prepared {
        plan,
        seccomp: compiled,
        entropy,
        ready,
        reply,
        restored,
    })
}

/// The mounts `ready` reports: the root image, the policy's mounts (images) and the guest's
/// own tmpfs, /proc and /dev.
fn mount_facts(steps: &[MountStep]) -> Vec<MountFact> {
    let fact = |target: &str, read_only: bool| MountFact {
        target: target.to_owned(),
        read_only,
        source: None,
        lock_isolated: false,
    };
    let mut out = vec![fact("/", true)];
    for step in steps {
        match step {
            MountStep::Tmpfs { target, .. } => out.push(fact(target, false)),
            MountStep::Bind {
                target, read_only, ..
            } => out.push(fact(target, *read_only)),
            MountStep::Proc { target } | MountStep::Dev { target, .. } => {
                out.push(fact(target, false))
            }
            _ => {}
        }
    }
    out
}

/// Mixes the host's bytes into the guest's entropy pool and, with `reseed` (pid 1), makes
/// the kernel reseed its generator from that pool at once: a VM restored from a snapshot would
/// otherwise go on drawing from the generator state it shares with every sibling until the
/// kernel's next scheduled reseed. Whether it reseeded.
pub fn credit_entropy(bytes: &[u8], reseed: bool) -> Result<bool, AgentError> {
    let mut urandom = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")
        .map_err(|e| AgentError::io("guest.entropy", "opening /dev/urandom", &e))?;
    urandom
        .write_all(bytes)
        .map_err(|e| AgentError::io("guest.entropy", "writing /dev/urandom", &e))?;
    if !reseed {
        return Ok(false);
    }
    crate::sys::reseed_crng(&urandom)
        .map_err(|e| AgentError::sys("guest.entropy", "RNDRESEEDCRNG on /dev/urandom", e))?;
    Ok(true)
}

/// Sets the guest's wall clock to the host's (a restored VM's stopped at its snapshot).
pub fn set_clock(unix_time_ms: u64) -> Result<(), AgentError> {
    let ts = nix::sys::time::TimeSpec::new(
        i64::try_from(unix_time_ms / 1000).unwrap_or(i64::MAX),
        i64::try_from((unix_time_ms % 1000) * 1_000_000).unwrap_or(0),
    );
    nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, ts)
        .map_err(|e| AgentError::sys("guest.clock", "clock_settime(CLOCK_REALTIME)", e))
}

/// The reply for a refused setup.
pub fn failed(e: &AgentError) -> GuestSetupReply {
    GuestSetupReply::Failed {
        phase: e.phase.to_owned(),
        message: e.message.clone(),
    }
}
