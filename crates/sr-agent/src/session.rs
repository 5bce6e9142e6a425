//! One host connection: the setup line, then the agent protocol until the host closes it or
//! asks for a shutdown. The same in the guest (vsock) and in the test mode (a Unix socket);
//! only a guest (`pid1`) mounts the plan's tmpfs and sets its hostname and loopback.

use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;
use sr_runner::microvm::guest_setup::{GuestSetupReply, MAX_SETUP_LINE};
use sr_runner::sandbox::agent::{self, spawn::ExecContext};

use crate::boot;
use crate::error::AgentError;
use crate::setup::{self, GuestFacts, Prepared};
use crate::stream::{self, FdStream, LineError};

/// What `helloAck` calls the agent.
pub const AGENT_NAME: &str = "safe-run-agent";

/// What the agent knows before a connection arrives.
#[derive(Debug)]
pub struct Guest {
    /// What the kernel offers.
    pub facts: GuestFacts,
    /// A boot step that failed after the listener was up (e.g. `sr.net`): the setup is
    /// refused with it, so the host learns why instead of timing out.
    pub boot_failure: Option<AgentError>,
    /// Running as the VM's pid 1 (the mounts, hostname and loopback are ours to set).
    pub pid1: bool,
}

/// How a connection ended.
#[derive(Debug)]
pub enum Outcome {
    /// The agent protocol ran until the host closed the connection or shut the agent down.
    Served,
    /// The connection closed before a single byte: a probe; the agent may accept the next.
    Probe,
    /// The setup was refused (the host got a `Failed` reply when it could be sent), or the
    /// serve loop could not start.
    Refused(AgentError),
}

/// How long a fresh connection may take to send its setup line.
const SETUP_WAIT: Duration = Duration::from_secs(10);

/// Sets `SO_RCVTIMEO` (zero: none); whether it took.
fn set_receive_timeout(conn: &FdStream, limit: Duration) -> bool {
    let tv = TimeVal::new(
        i64::try_from(limit.as_secs()).unwrap_or(i64::MAX),
        i64::from(limit.subsec_micros()),
    );
    setsockopt(conn, sockopt::ReceiveTimeout, &tv).is_ok()
}

/// Serves one connection.
pub fn run(mut conn: FdStream, guest: &Guest) -> Outcome {
    // A host that connects and never sends its setup line (one that gave up on the
    // connection) must not hold the only listener: after SETUP_WAIT it counts as a probe.
    let waited = set_receive_timeout(&conn, SETUP_WAIT);
    let line = match stream::read_line(&conn, MAX_SETUP_LINE) {
        Ok(line) => line,
        Err(LineError::Closed { bytes: 0 }) => return Outcome::Probe,
        Err(LineError::Io(Errno::EAGAIN)) if waited => return Outcome::Probe,
        Err(e) => return refuse(&mut conn, AgentError::new("guest.setup", e.to_string())),
    };
    // The protocol after it has no deadline of its own: the host ends it.
    set_receive_timeout(&conn, Duration::ZERO);
    if let Some(e) = &guest.boot_failure {
        return refuse(&mut conn, e.clone());
    }
    let cid = guest_cid(&conn);
    let prepared = match setup::prepare(&line, &guest.facts).and_then(|p| apply(p, guest.pid1, cid))
    {
        Ok(p) => p,
        Err(e) => return refuse(&mut conn, e),
    };
    if let Err(e) = stream::write_line(&mut conn, &prepared.reply) {
        return Outcome::Refused(AgentError::io("guest.setup", "writing the setup reply", &e));
    }
    let ctx = ExecContext {
        plan: &prepared.plan,
        seccomp: &prepared.seccomp,
        userns: false,
    };
    match agent::serve(conn, AGENT_NAME, ctx, prepared.ready.clone()) {
        Ok(_) => Outcome::Served,
        Err(f) => Outcome::Refused(AgentError::new(f.phase, f.message)),
    }
}

/// The guest's vsock context id, as the connection's local address (none over a Unix socket).
fn guest_cid(conn: &FdStream) -> Option<u32> {
    nix::sys::socket::getsockname::<nix::sys::socket::VsockAddr>(std::os::fd::AsRawFd::as_raw_fd(
        &std::os::fd::AsFd::as_fd(conn),
    ))
    .ok()
    .map(|a| a.cid())
}

/// What the guest does with an accepted setup before it answers: (pid 1, restored) the host's
/// clock, entropy (reseeding the generator as pid 1), and (pid 1) the plan's mounts, the
/// hostname and loopback.
fn apply(mut p: Prepared, pid1: bool, cid: Option<u32>) -> Result<Prepared, AgentError> {
    if let (true, Some(restored)) = (pid1, p.restored) {
        setup::set_clock(restored.unix_time_ms)?;
    }
    let reseeded = setup::credit_entropy(&p.entropy, pid1)?;
    if let GuestSetupReply::Ok {
        guest_cid,
        crng_reseeded,
        ..
    } = &mut p.reply
    {
        *guest_cid = cid;
        *crng_reseeded = reseeded;
    }
    if pid1 {
        boot::plan_mounts(
            &p.plan.sandbox.mounts,
            p.plan.sandbox.host_uid,
            p.plan.sandbox.host_gid,
        )?;
        nix::unistd::sethostname(&p.plan.sandbox.hostname)
            .map_err(|e| AgentError::sys("guest.hostname", "sethostname", e))?;
        sr_runner::sandbox::sys::loopback_up()
            .map_err(|e| AgentError::io("guest.net", "bringing lo up", &e))?;
    }
    Ok(p)
}

fn refuse(conn: &mut FdStream, e: AgentError) -> Outcome {
    // The host may already be gone; the console line says it all either way.
    let _ = stream::write_line(conn, &setup::failed(&e));
    Outcome::Refused(e)
}
