//! Step 2 of an allowlist's attach: the run's link, a veth pair into the sandbox's network
//! namespace or a TAP device for a microVM, with its host side made ready (IPv6 off, its own
//! forwarding flag, address, link up) and, for a veth, the sandbox side configured from inside
//! the namespace.
//!
//! A process sandbox's namespace can be made ahead of the sandbox ([`start_in_new_namespace`]):
//! a thread of its own makes the namespace, hands a descriptor of it to the boundary (whose
//! init joins it instead of making one) and puts the link into it while the init starts. The
//! link's 1.5-3 ms then overlap the init's exec instead of following it; the namespace's
//! lifetime is still the sandbox's, since nothing holds it once the init has joined and this
//! thread has ended.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::mpsc;

use super::background::Background;
use super::error::NetworkError;
use super::exec::{NetCommand, NetCommandExecutor, Netns};
use super::ruleset::RunBinding;
use crate::network_hook::PreparedNamespace;

/// Runs `cmd`, naming `step` in the error.
pub(super) fn run_step(
    exec: &dyn NetCommandExecutor,
    step: &str,
    cmd: NetCommand,
) -> Result<String, NetworkError> {
    exec.run(&cmd).map_err(|source| NetworkError::Apply {
        step: step.to_owned(),
        source,
    })
}

/// `address/prefix` of `addr` in the run's /30.
fn cidr(b: &RunBinding, addr: std::net::Ipv4Addr) -> String {
    format!("{addr}/{}", b.subnet.prefix_len())
}

/// The run's TAP device (named as its host side), then its host side as a veth's.
pub(super) fn tap_link(exec: &dyn NetCommandExecutor, b: &RunBinding) -> Result<(), NetworkError> {
    let h = b.host_if.as_str();
    run_step(
        exec,
        "creating the TAP device",
        NetCommand::ip(&["tuntap", "add", "dev", h, "mode", "tap"]),
    )?;
    disable_ipv6(exec, h)?;
    run_step(
        exec,
        "addressing and raising the host side",
        NetCommand::AddressUp {
            link: h.to_owned(),
            cidr: cidr(b, b.host_addr),
        },
    )?;
    enable_forwarding_from(exec, h)
}

/// The veth pair and both its ends. The pair is created over this process's netlink socket,
/// its sandbox end put straight into `ns`, then the host end is made ready in-process: IPv6
/// off before it goes up (no link-local address, no DAD), its forwarding flag, address and
/// link-up. Last, the sandbox end, from a thread that enters `ns` for it: loopback, address,
/// link, default route via the host side.
pub(super) fn veth_link(
    exec: &dyn NetCommandExecutor,
    ns: Netns,
    b: &RunBinding,
) -> Result<(), NetworkError> {
    let (h, g) = (&b.host_if, &b.guest_if);
    run_step(
        exec,
        "creating the veth pair",
        NetCommand::VethCreate {
            host: h.clone(),
            peer: g.clone(),
            peer_ns: ns,
        },
    )?;
    disable_ipv6(exec, h)?;
    enable_forwarding_from(exec, h)?;
    run_step(
        exec,
        "addressing and raising the host side",
        NetCommand::AddressUp {
            link: h.clone(),
            cidr: cidr(b, b.host_addr),
        },
    )?;
    run_step(
        exec,
        "configuring the sandbox side",
        NetCommand::ConfigureIn {
            ns,
            link: g.clone(),
            cidr: cidr(b, b.guest_addr),
            gateway: b.host_addr,
        },
    )
    .map(drop)
}

/// Makes the sandbox's network namespace and the veth into it on a thread of its own
/// (`sr-link`). The returned [`PreparedNamespace`] delivers a descriptor of the namespace as
/// soon as it exists, before the link is in it; the [`Background`] is the link's result, which
/// attach waits for before anything runs in the sandbox.
pub(super) fn start_in_new_namespace(
    exec: Arc<dyn NetCommandExecutor>,
    b: RunBinding,
) -> Result<(PreparedNamespace, Background<()>), NetworkError> {
    let (made, delivered) = mpsc::channel();
    let work = move || -> Result<(), NetworkError> {
        let step = "making the sandbox's network namespace";
        let ns = exec.new_namespace().map_err(|source| {
            let _ = made.send(Err(source.to_string()));
            NetworkError::Apply {
                step: step.to_owned(),
                source,
            }
        })?;
        // The boundary's own descriptor: this thread's closes when the link is in place.
        let for_boundary = ns.try_clone().map_err(|e| {
            let _ = made.send(Err(e.to_string()));
            NetworkError::Config(format!("{step}: {e}"))
        })?;
        // The boundary may have failed already; the namespace then goes with `ns`.
        let _ = made.send(Ok(for_boundary));
        veth_link(exec.as_ref(), Netns::Held(ns.as_raw_fd()), &b)
    };
    let running = Background::start("sr-link", work)
        .map_err(|e| NetworkError::Config(format!("starting the link's thread: {e}")))?;
    Ok((PreparedNamespace::new(delivered), running))
}

/// `disable_ipv6=1` on the host side. A kernel without IPv6 has no such sysctl, and nothing to
/// disable.
fn disable_ipv6(exec: &dyn NetCommandExecutor, link: &str) -> Result<(), NetworkError> {
    match exec.run(&NetCommand::SysctlWrite {
        key: format!("net.ipv6.conf.{link}.disable_ipv6"),
        value: "1".into(),
    }) {
        Err(e) if !e.is_not_found() => Err(NetworkError::Apply {
            step: "disabling IPv6 on the host side".into(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// The host side's own forwarding flag (it vanishes with the link).
fn enable_forwarding_from(exec: &dyn NetCommandExecutor, link: &str) -> Result<(), NetworkError> {
    run_step(
        exec,
        "enabling forwarding from the run",
        NetCommand::SysctlWrite {
            key: format!("net.ipv4.conf.{link}.forwarding"),
            value: "1".into(),
        },
    )
    .map(drop)
}
