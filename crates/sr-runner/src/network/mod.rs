//! Network allowlist lifecycle (veth, nftables, DNS). Filled by the network work.
