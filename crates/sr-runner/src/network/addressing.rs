//! Carves the run's /30 out of the operator's subnet pool.
//!
//! The first candidate is derived from the run id (sha256, so two runs rarely start probing at
//! the same block); candidates overlapping any IPv4 network already configured on the host
//! (`ip -j -4 addr`) are skipped. Host side = first address, sandbox side = second. Two runs
//! started in the same instant could in theory both pick one free block: ids are random, so the
//! first candidates collide with probability 1/blocks, and `ip addr add` of the second would
//! still give two links the same /30; docs/network.md records this limit.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::error::NetworkError;

/// Parses the pool; it must be IPv4 and hold at least one /30.
pub fn parse_pool(pool: &str) -> Result<Ipv4Net, NetworkError> {
    let net: Ipv4Net = pool
        .parse()
        .map_err(|_| NetworkError::Config(format!("subnetPool {pool:?} is not an IPv4 CIDR")))?;
    if net.prefix_len() > 30 {
        return Err(NetworkError::Config(format!(
            "subnetPool {pool} is smaller than a /30"
        )));
    }
    Ok(net.trunc())
}

/// IPv4 networks configured on the host, from `ip -j -4 addr show` output.
pub fn networks_in_use(ip_addr_json: &str) -> Vec<Ipv4Net> {
    let Ok(Value::Array(links)) = serde_json::from_str::<Value>(ip_addr_json) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for link in &links {
        for info in link
            .get("addr_info")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let local = info
                .get("local")
                .and_then(Value::as_str)
                .and_then(|a| a.parse::<Ipv4Addr>().ok());
            let len = info
                .get("prefixlen")
                .and_then(Value::as_u64)
                .and_then(|l| u8::try_from(l).ok());
            if let (Some(addr), Some(len)) = (local, len) {
                if let Ok(net) = Ipv4Net::new(addr, len) {
                    out.push(net.trunc());
                }
            }
        }
    }
    out
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The run's /30: the first block from the id-derived start that overlaps nothing in use.
pub fn pick_subnet(
    pool: &Ipv4Net,
    run_id: &str,
    in_use: &[Ipv4Net],
) -> Result<Ipv4Net, NetworkError> {
    let blocks: u64 = 1u64 << (30 - u32::from(pool.prefix_len()));
    let digest = Sha256::digest(run_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let start = u64::from_be_bytes(first) % blocks;
    let base = u64::from(u32::from(pool.network()));
    for i in 0..blocks {
        let block = (start + i) % blocks;
        let Ok(addr) = u32::try_from(base + block * 4) else {
            continue;
        };
        let Ok(net) = Ipv4Net::new(Ipv4Addr::from(addr), 30) else {
            continue;
        };
        if !in_use.iter().any(|u| overlaps(u, &net)) {
            return Ok(net);
        }
    }
    Err(NetworkError::PoolExhausted(pool.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn pick_is_deterministic_and_skips_used_blocks() {
        let pool = parse_pool("10.213.0.0/16").unwrap();
        let a = pick_subnet(&pool, "0123456789ab", &[]).unwrap();
        assert_eq!(a, pick_subnet(&pool, "0123456789ab", &[]).unwrap());
        assert_eq!(a.prefix_len(), 30);
        assert!(pool.contains(&a));
        let b = pick_subnet(&pool, "0123456789ab", &[a]).unwrap();
        assert_ne!(a, b);
        // A wider network covering the candidate also counts as in use.
        let wide = Ipv4Net::new(a.network(), 24).unwrap().trunc();
        let c = pick_subnet(&pool, "0123456789ab", &[wide]).unwrap();
        assert!(!wide.contains(&c.network()));
    }

    #[test]
    fn exhausted_pool_and_bad_pools_are_errors() {
        let pool = parse_pool("10.213.0.0/30").unwrap();
        assert!(matches!(
            pick_subnet(&pool, "ab", &[pool]),
            Err(NetworkError::PoolExhausted(_))
        ));
        assert!(parse_pool("10.213.0.0/31").is_err());
        assert!(parse_pool("fd00::/64").is_err());
        assert!(parse_pool("nonsense").is_err());
    }

    #[test]
    fn parses_ip_addr_json() {
        let json = r#"[{"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]},
            {"ifname":"eth0","addr_info":[{"family":"inet","local":"10.213.7.9","prefixlen":24}]}]"#;
        let nets = networks_in_use(json);
        assert_eq!(
            nets,
            vec![
                "127.0.0.0/8".parse().unwrap(),
                "10.213.7.0/24".parse().unwrap()
            ]
        );
        assert!(networks_in_use("not json").is_empty());
    }
}
