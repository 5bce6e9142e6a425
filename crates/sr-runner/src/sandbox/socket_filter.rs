//! The socket part of the seccomp filter: which address families, netlink protocols, and
//! `AF_INET`/`AF_INET6` types and protocols `socket(2)` and `socketpair(2)` may use.
//!
//! The plan names what is allowed ([`SeccompPlan::allowed_socket_families`] and friends); this
//! module turns the names into numbers and the allow lists into deny rules, because a seccomp
//! rule can only say "these conditions all hold", so "the family is none of the allowed ones" is
//! one rule of `!=` conditions. Two programs come out:
//!
//! 1. **families** (`EAFNOSUPPORT`): a family outside the list; a netlink protocol outside its
//!    list.
//! 2. **inet** (`EPROTONOSUPPORT`): an `AF_INET`/`AF_INET6` socket whose type (the low four bits
//!    of `type`, so `SOCK_NONBLOCK`/`SOCK_CLOEXEC` do not matter) or protocol is not allowed.
//!
//! Arguments are compared as 32-bit values, as the kernel reads them (`int family`, `int type`,
//! `int protocol`): high bits a caller sets are ignored by both.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use sr_bundle::SeccompPlan;

use super::seccomp::SeccompError;

/// The value of an `AF_*` name.
pub fn socket_family(name: &str) -> Option<u64> {
    let v = match name {
        "AF_UNIX" | "AF_LOCAL" => libc::AF_UNIX,
        "AF_INET" => libc::AF_INET,
        "AF_INET6" => libc::AF_INET6,
        "AF_NETLINK" => libc::AF_NETLINK,
        "AF_PACKET" => libc::AF_PACKET,
        "AF_VSOCK" => libc::AF_VSOCK,
        _ => return None,
    };
    Some(v as u64)
}

/// The value of a `NETLINK_*` protocol name.
pub fn netlink_protocol(name: &str) -> Option<u64> {
    let v = match name {
        "NETLINK_ROUTE" => libc::NETLINK_ROUTE,
        "NETLINK_SOCK_DIAG" => libc::NETLINK_SOCK_DIAG,
        "NETLINK_AUDIT" => libc::NETLINK_AUDIT,
        "NETLINK_KOBJECT_UEVENT" => libc::NETLINK_KOBJECT_UEVENT,
        _ => return None,
    };
    Some(v as u64)
}

/// The value of a `SOCK_*` type name.
pub fn socket_type(name: &str) -> Option<u64> {
    let v = match name {
        "SOCK_STREAM" => libc::SOCK_STREAM,
        "SOCK_DGRAM" => libc::SOCK_DGRAM,
        "SOCK_RAW" => libc::SOCK_RAW,
        "SOCK_RDM" => libc::SOCK_RDM,
        "SOCK_SEQPACKET" => libc::SOCK_SEQPACKET,
        _ => return None,
    };
    Some(v as u64)
}

/// The value of an `IPPROTO_*` name.
pub fn ip_protocol(name: &str) -> Option<u64> {
    let v = match name {
        "IPPROTO_IP" => libc::IPPROTO_IP,
        "IPPROTO_ICMP" => libc::IPPROTO_ICMP,
        "IPPROTO_ICMPV6" => libc::IPPROTO_ICMPV6,
        "IPPROTO_TCP" => libc::IPPROTO_TCP,
        "IPPROTO_UDP" => libc::IPPROTO_UDP,
        _ => return None,
    };
    Some(v as u64)
}

fn numbers(
    names: &[String],
    lookup: fn(&str) -> Option<u64>,
    what: &'static str,
) -> Result<Vec<u64>, SeccompError> {
    names
        .iter()
        .map(|n| {
            lookup(n).ok_or_else(|| SeccompError::UnknownSocketName {
                what,
                name: n.clone(),
            })
        })
        .collect()
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
        .map_err(|e| SeccompError::Backend(e.to_string()))
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, SeccompError> {
    SeccompRule::new(conditions).map_err(|e| SeccompError::Backend(e.to_string()))
}

/// `arg` is none of `allowed`.
fn none_of(arg: u8, allowed: &[u64]) -> Result<Vec<SeccompCondition>, SeccompError> {
    allowed
        .iter()
        .map(|v| cond(arg, SeccompCmpOp::Ne, *v))
        .collect()
}

fn program(
    rules: Vec<SeccompRule>,
    errno: i32,
    arch: TargetArch,
) -> Result<BpfProgram, SeccompError> {
    let mut by_call: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    by_call.insert(libc::SYS_socket, rules.clone());
    by_call.insert(libc::SYS_socketpair, rules);
    SeccompFilter::new(
        by_call,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch,
    )
    .and_then(TryInto::try_into)
    .map_err(|e| SeccompError::Backend(e.to_string()))
}

/// The two socket programs, in install order. Pure.
pub fn programs(plan: &SeccompPlan, arch: TargetArch) -> Result<Vec<BpfProgram>, SeccompError> {
    let families = numbers(
        &plan.allowed_socket_families,
        socket_family,
        "socket family",
    )?;
    let netlink = numbers(
        &plan.allowed_netlink_protocols,
        netlink_protocol,
        "netlink protocol",
    )?;
    let types = numbers(&plan.allowed_inet_socket_types, socket_type, "socket type")?;
    let protocols = numbers(&plan.allowed_ip_protocols, ip_protocol, "IP protocol")?;

    let mut family_rules = Vec::new();
    if families.is_empty() {
        // No family at all: a rule with no condition cannot be written, so match every value
        // of the 32-bit argument.
        family_rules.push(rule(vec![cond(0, SeccompCmpOp::Ge, 0)?])?);
    } else {
        family_rules.push(rule(none_of(0, &families)?)?);
    }
    let netlink_family = libc::AF_NETLINK as u64;
    if families.contains(&netlink_family) {
        let mut c = vec![cond(0, SeccompCmpOp::Eq, netlink_family)?];
        c.extend(none_of(2, &netlink)?);
        family_rules.push(rule(c)?);
    }

    let mut inet_rules = Vec::new();
    for family in [libc::AF_INET as u64, libc::AF_INET6 as u64] {
        if !families.contains(&family) {
            continue;
        }
        let mut c = vec![cond(0, SeccompCmpOp::Eq, family)?];
        c.extend(none_of(2, &protocols)?);
        inet_rules.push(rule(c)?);
        // seccomp has no "masked not-equal": one rule per type value that is not allowed.
        for t in (0..16u64).filter(|t| !types.contains(t)) {
            inet_rules.push(rule(vec![
                cond(0, SeccompCmpOp::Eq, family)?,
                cond(1, SeccompCmpOp::MaskedEq(0xf), t)?,
            ])?);
        }
    }

    let mut out = vec![program(family_rules, libc::EAFNOSUPPORT, arch)?];
    if !inet_rules.is_empty() {
        out.push(program(inet_rules, libc::EPROTONOSUPPORT, arch)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> SeccompPlan {
        SeccompPlan {
            profile_id: "t".into(),
            deny_action: "errno:EPERM".into(),
            denied_syscalls: vec![],
            denied_clone_flags: vec![],
            enosys_syscalls: vec![],
            allowed_socket_families: vec!["AF_INET".into(), "AF_NETLINK".into(), "AF_UNIX".into()],
            allowed_netlink_protocols: vec!["NETLINK_ROUTE".into()],
            allowed_inet_socket_types: vec!["SOCK_DGRAM".into(), "SOCK_STREAM".into()],
            allowed_ip_protocols: vec!["IPPROTO_IP".into(), "IPPROTO_TCP".into()],
        }
    }

    #[test]
    fn unknown_names_fail_closed() {
        for edit in [
            |p: &mut SeccompPlan| p.allowed_socket_families.push("AF_FROB".into()),
            |p: &mut SeccompPlan| p.allowed_netlink_protocols.push("NETLINK_FROB".into()),
            |p: &mut SeccompPlan| p.allowed_inet_socket_types.push("SOCK_FROB".into()),
            |p: &mut SeccompPlan| p.allowed_ip_protocols.push("IPPROTO_FROB".into()),
        ] {
            let mut p = plan();
            edit(&mut p);
            assert!(matches!(
                programs(&p, TargetArch::x86_64),
                Err(SeccompError::UnknownSocketName { .. })
            ));
        }
    }

    /// The verdict of the stacked programs: the first non-ALLOW action (the kernel takes the
    /// most severe; all of ours are ERRNO, so any one of them decides).
    fn verdict(plan: &SeccompPlan, nr: i64, args: [u64; 6]) -> Option<i32> {
        programs(plan, TargetArch::x86_64)
            .unwrap()
            .iter()
            .map(|p| super::super::seccomp::eval::run(p, nr, args))
            .find(|a| *a != libc::SECCOMP_RET_ALLOW)
            .map(|a| (a & 0xffff) as i32)
    }

    #[test]
    fn the_default_lists_refuse_exactly_what_the_profile_says() {
        use sr_compiler::seccomp as profile;
        let names = |l: &[&str]| l.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let plan = SeccompPlan {
            allowed_socket_families: names(&profile::ALLOWED_SOCKET_FAMILIES),
            allowed_netlink_protocols: names(&profile::ALLOWED_NETLINK_PROTOCOLS),
            allowed_inet_socket_types: names(&profile::ALLOWED_INET_SOCKET_TYPES),
            allowed_ip_protocols: names(&profile::ALLOWED_IP_PROTOCOLS),
            ..plan()
        };
        let sock = |f: u64, t: u64, p: u64| verdict(&plan, libc::SYS_socket, [f, t, p, 0, 0, 0]);
        let (unix, inet, inet6, netlink) = (1, 2, 10, 16);
        assert_eq!(sock(unix, 1, 0), None);
        assert_eq!(
            sock(inet, 1 | 0o4000 | 0o2000000, 0),
            None,
            "flags do not matter"
        );
        assert_eq!(sock(inet, 2, 17), None);
        assert_eq!(sock(inet6, 1, 6), None);
        assert_eq!(sock(inet, 2, 1), None, "ping socket");
        assert_eq!(sock(netlink, 3, 0), None, "NETLINK_ROUTE");
        // The high half of a 64-bit argument is ignored, as by the kernel's `int family`.
        assert_eq!(sock(unix | (1 << 32), 1, 0), None);
        let eaf = Some(libc::EAFNOSUPPORT);
        for family in [40, 17, 38, 15, 44, 30, 21, 31, 29, 0, 45, 0xffff_ffff] {
            assert_eq!(sock(family, 1, 0), eaf, "family {family}");
        }
        assert_eq!(sock(40 | (1 << 32), 1, 0), eaf, "AF_VSOCK with high bits");
        for proto in [15, 9, 4, 12] {
            assert_eq!(sock(netlink, 2, proto), eaf, "netlink protocol {proto}");
        }
        let eproto = Some(libc::EPROTONOSUPPORT);
        assert_eq!(sock(inet, 1, 132), eproto, "SCTP");
        assert_eq!(sock(inet, 5, 0), eproto, "SOCK_SEQPACKET (SCTP)");
        assert_eq!(sock(inet, 6, 0), eproto, "SOCK_DCCP");
        assert_eq!(sock(inet, 10, 0), eproto, "SOCK_PACKET");
        assert_eq!(sock(inet6, 2, 136), eproto, "UDP-Lite");
        assert_eq!(sock(inet, 1, 262), eproto, "MPTCP");
        let pair = verdict(&plan, libc::SYS_socketpair, [40, 1, 0, 0, 0, 0]);
        assert_eq!(pair, eaf, "socketpair is filtered too");
        assert_eq!(verdict(&plan, libc::SYS_read, [40, 1, 0, 0, 0, 0]), None);
    }

    #[test]
    fn inet_program_only_when_an_inet_family_is_allowed() {
        assert_eq!(programs(&plan(), TargetArch::x86_64).unwrap().len(), 2);
        let mut p = plan();
        p.allowed_socket_families = vec!["AF_UNIX".into()];
        assert_eq!(programs(&p, TargetArch::x86_64).unwrap().len(), 1);
        p.allowed_socket_families.clear();
        assert_eq!(programs(&p, TargetArch::x86_64).unwrap().len(), 1);
    }
}
