//! `sr.net`: eth0's address and default route, set with busybox `ip` from the root image (the
//! same commands an operator would type; no netlink code of our own). Waits briefly for eth0,
//! which appears when virtio_net binds the NIC.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::cmdline::NetConfig;
use crate::error::AgentError;

const PHASE: &str = "guest.net";
/// Where the root image has busybox's `ip`: `busybox --list-full` puts it in /sbin (the
/// artifact build links applets where that list says); /bin/ip is tried for other images.
const IP_CANDIDATES: [&str; 2] = ["/sbin/ip", "/bin/ip"];
const IFACE: &str = "eth0";

/// The first `ip` of [`IP_CANDIDATES`] that exists.
fn ip_binary() -> Result<&'static str, AgentError> {
    IP_CANDIDATES
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or_else(|| {
            AgentError::new(
                PHASE,
                format!(
                    "sr.net is set but the root image has no ip ({})",
                    IP_CANDIDATES.join(", ")
                ),
            )
        })
}

/// The `ip` invocations for `net`, in order.
pub fn commands(net: &NetConfig) -> Vec<Vec<String>> {
    let v = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let cidr = format!("{}/{}", net.address, net.prefix);
    let gw = net.gateway.to_string();
    vec![
        v(&["addr", "add", &cidr, "dev", IFACE]),
        v(&["link", "set", IFACE, "up"]),
        v(&["route", "add", "default", "via", &gw, "dev", IFACE]),
    ]
}

/// Configures eth0 as `net` says.
pub fn configure(net: &NetConfig) -> Result<(), AgentError> {
    let dev = format!("/sys/class/net/{IFACE}");
    let mut waited = Duration::ZERO;
    while !Path::new(&dev).exists() {
        if waited >= Duration::from_secs(3) {
            return Err(AgentError::new(
                PHASE,
                format!("sr.net is set but {IFACE} did not appear (is virtio_net loaded?)"),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
        waited += Duration::from_millis(20);
    }
    let ip = ip_binary()?;
    for args in commands(net) {
        let out = Command::new(ip)
            .args(&args)
            .output()
            .map_err(|e| AgentError::io(PHASE, format!("running {ip}"), &e))?;
        if !out.status.success() {
            return Err(AgentError::new(
                PHASE,
                format!(
                    "{ip} {} failed ({}): {}",
                    args.join(" "),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
    }
    resolver(net)
}

/// The guest's resolver is its gateway: the run's own, on the host side of the TAP, which
/// answers only for the names the policy allows. The root image's `/etc/resolv.conf` links to
/// `/run/resolv.conf`, written here on a small tmpfs (the root is read-only).
fn resolver(net: &NetConfig) -> Result<(), AgentError> {
    use nix::mount::{MsFlags, mount};
    mount(
        Some("tmpfs"),
        "/run",
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=64k"),
    )
    .map_err(|e| AgentError::sys(PHASE, "mounting a tmpfs on /run", e))?;
    std::fs::write("/run/resolv.conf", resolv_conf(net))
        .map_err(|e| AgentError::io(PHASE, "writing /run/resolv.conf", &e))
}

/// `/run/resolv.conf` for `net`.
pub fn resolv_conf(net: &NetConfig) -> String {
    format!("nameserver {}\n", net.gateway)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn the_resolver_is_the_gateway() {
        let net = NetConfig {
            address: Ipv4Addr::new(172, 16, 0, 2),
            prefix: 30,
            gateway: Ipv4Addr::new(172, 16, 0, 1),
        };
        assert_eq!(resolv_conf(&net), "nameserver 172.16.0.1\n");
    }

    #[test]
    fn address_link_and_route_in_that_order() {
        let net = NetConfig {
            address: Ipv4Addr::new(172, 16, 0, 2),
            prefix: 30,
            gateway: Ipv4Addr::new(172, 16, 0, 1),
        };
        let c: Vec<String> = commands(&net).iter().map(|a| a.join(" ")).collect();
        assert_eq!(
            c,
            [
                "addr add 172.16.0.2/30 dev eth0",
                "link set eth0 up",
                "route add default via 172.16.0.1 dev eth0"
            ]
        );
    }
}
