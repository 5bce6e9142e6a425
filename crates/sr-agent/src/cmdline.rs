//! The kernel command line's `sr.*` parameters: what the host tells the agent before any
//! connection exists. Pure: the caller reads /proc/cmdline.
//!
//! `sr.agent_port=<u32>` (required: the vsock port to listen on) and
//! `sr.net=<address>/<prefix>,<gateway>` (optional: eth0's address and default route). Other
//! parameters belong to the kernel and are ignored; an `sr.` parameter the agent does not know
//! is an error, so a host/guest mismatch shows at boot, not as a silently ignored setting.

use std::net::Ipv4Addr;

use crate::error::AgentError;

const PHASE: &str = "boot.cmdline";

/// What the command line asks of the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootArgs {
    /// The vsock port the agent listens on.
    pub agent_port: u32,
    /// eth0's configuration, when the VM has a NIC.
    pub net: Option<NetConfig>,
}

/// `sr.net`: one IPv4 address on eth0 and a default route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    /// eth0's address.
    pub address: Ipv4Addr,
    /// Its prefix length (1..=32).
    pub prefix: u8,
    /// The default gateway (the host's end of the TAP).
    pub gateway: Ipv4Addr,
}

/// Parses the whole command line (as /proc/cmdline has it, whitespace-separated).
pub fn parse(cmdline: &str) -> Result<BootArgs, AgentError> {
    let mut port = None;
    let mut net = None;
    for word in cmdline.split_whitespace() {
        let Some(rest) = word.strip_prefix("sr.") else {
            continue;
        };
        let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
        match key {
            "agent_port" => {
                let p: u32 = value.parse().map_err(|_| {
                    AgentError::new(PHASE, format!("sr.agent_port={value:?} is not a u32"))
                })?;
                // 0 is not a port; u32::MAX is VMADDR_PORT_ANY.
                if p == 0 || p == u32::MAX {
                    return Err(AgentError::new(
                        PHASE,
                        format!("sr.agent_port={p} is not a usable vsock port"),
                    ));
                }
                port = Some(p);
            }
            "net" => net = Some(parse_net(value)?),
            other => {
                return Err(AgentError::new(
                    PHASE,
                    format!("unknown parameter sr.{other} (known: sr.agent_port, sr.net)"),
                ));
            }
        }
    }
    let agent_port = port.ok_or_else(|| {
        AgentError::new(
            PHASE,
            "sr.agent_port is missing from the kernel command line",
        )
    })?;
    Ok(BootArgs { agent_port, net })
}

fn parse_net(value: &str) -> Result<NetConfig, AgentError> {
    let bad = |why: &str| {
        AgentError::new(
            PHASE,
            format!("sr.net={value:?}: {why} (expected <address>/<prefix>,<gateway>)"),
        )
    };
    let (cidr, gateway) = value.split_once(',').ok_or_else(|| bad("no gateway"))?;
    let (address, prefix) = cidr.split_once('/').ok_or_else(|| bad("no prefix"))?;
    let address: Ipv4Addr = address.parse().map_err(|_| bad("not an IPv4 address"))?;
    let prefix: u8 = prefix.parse().map_err(|_| bad("not a prefix length"))?;
    if !(1..=32).contains(&prefix) {
        return Err(bad("the prefix length is not 1..=32"));
    }
    let gateway: Ipv4Addr = gateway
        .parse()
        .map_err(|_| bad("the gateway is not an IPv4 address"))?;
    Ok(NetConfig {
        address,
        prefix,
        gateway,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_qemu_command_line_gives_the_port() {
        let a = parse("console=ttyS0 panic=-1 reboot=t quiet ro sr.agent_port=1024\n");
        assert_eq!(
            a,
            Ok(BootArgs {
                agent_port: 1024,
                net: None
            })
        );
    }

    #[test]
    fn sr_net_gives_address_prefix_and_gateway() {
        let a = parse("quiet sr.agent_port=5 sr.net=172.16.0.2/30,172.16.0.1");
        assert_eq!(
            a.map(|a| a.net),
            Ok(Some(NetConfig {
                address: Ipv4Addr::new(172, 16, 0, 2),
                prefix: 30,
                gateway: Ipv4Addr::new(172, 16, 0, 1),
            }))
        );
    }

    #[test]
    fn mistakes_are_named() {
        for (line, expect) in [
            ("quiet ro", "sr.agent_port is missing"),
            ("sr.agent_port=x", "is not a u32"),
            ("sr.agent_port=0", "not a usable vsock port"),
            ("sr.agent_port=4294967295", "not a usable vsock port"),
            ("sr.agent_port=1 sr.net=10.0.0.2/24", "no gateway"),
            ("sr.agent_port=1 sr.net=10.0.0.2,10.0.0.1", "no prefix"),
            ("sr.agent_port=1 sr.net=10.0.0.2/33,10.0.0.1", "not 1..=32"),
            (
                "sr.agent_port=1 sr.net=fe80::1/64,10.0.0.1",
                "not an IPv4 address",
            ),
            ("sr.agent_port=1 sr.net=10.0.0.2/24,x", "gateway is not"),
            ("sr.agent_port=1 sr.debug=1", "unknown parameter sr.debug"),
        ] {
            match parse(line) {
                Err(e) => {
                    assert_eq!(e.phase, "boot.cmdline");
                    assert!(e.message.contains(expect), "{line}: {e}");
                }
                Ok(a) => panic!("{line}: accepted as {a:?}"),
            }
        }
    }
}
