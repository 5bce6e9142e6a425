//! Semantic rules: what a structurally valid policy must also satisfy.
//!
//! The schema has already checked types and field names; these rules check meaning: paths are
//! absolute and normalized, numbers are in range, the network allowlist is well-formed, the
//! policy stays within the operator's limits, and no dangerous combination is asked for. Every
//! rule reports through [`Ctx::report`], and every rule runs (no early return), so a policy
//! author sees all problems at once.
//!
//! The one side effect is reading the filesystem metadata of mount sources and a rootfs
//! directory (existence, symlink, canonical path), through [`HostFs`], so tests can point it
//! at fixtures. The combination constraints carry stable ids (`C1` ...) documented in
//! docs/policy.md.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use sr_common::{Diagnostic, ErrorCode};

use crate::model::{Backend, NetworkMode, PolicySpec, Protocol};
use crate::operator::{OperatorConfig, is_normalized_absolute};
use crate::source::{Node, PolicyPath, clip};

/// Paths no policy mount may cover: the sandbox builds these itself.
pub const RESERVED_TARGETS: [&str; 4] = ["/dev", "/proc", "/sys", "/tmp"];

/// Environment variables that make the dynamic loader run code the report does not name.
pub const FORBIDDEN_ENV: [&str; 2] = ["LD_AUDIT", "LD_PRELOAD"];

/// Largest uid/gid accepted inside the sandbox (65535 is reserved as "no id" by the kernel).
pub const MAX_ID: u32 = 65534;

/// Networks an allowlist may never reach: loopback, link-local (cloud metadata lives at
/// 169.254.169.254), "this network", and the IPv6 equivalents. Reaching them would let a
/// workload talk to services on the host or to the cloud provider's credential endpoint.
pub const INTERNAL_NETS: [&str; 5] = [
    "0.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "::1/128",
    "fe80::/10",
];

/// Host names that always mean the host itself or a metadata service.
pub const INTERNAL_HOSTS: [&str; 3] = ["localhost", "metadata.google.internal", "metadata"];

/// Shortest prefixes an allowlist CIDR may have; anything broader defeats the allowlist.
pub const MIN_PREFIX_V4: u8 = 8;
/// See [`MIN_PREFIX_V4`].
pub const MIN_PREFIX_V6: u8 = 16;

/// What the rules need to know about host paths.
pub trait HostFs {
    /// `symlink_metadata` of a path: `None` if it does not exist; else (is_symlink, is_dir,
    /// is_file).
    fn kind(&self, path: &Path) -> Option<(bool, bool, bool)>;
    /// The canonical form of an existing path.
    fn canonicalize(&self, path: &Path) -> Option<PathBuf>;
    /// Owner uid, owner gid and permission bits of an existing path (`None` if unknown).
    fn owner_mode(&self, path: &Path) -> Option<(u32, u32, u32)>;
}

/// The real filesystem.
pub struct RealFs;

impl HostFs for RealFs {
    fn kind(&self, path: &Path) -> Option<(bool, bool, bool)> {
        let m = std::fs::symlink_metadata(path).ok()?;
        let t = m.file_type();
        Some((t.is_symlink(), t.is_dir(), t.is_file()))
    }
    fn canonicalize(&self, path: &Path) -> Option<PathBuf> {
        std::fs::canonicalize(path).ok()
    }
    fn owner_mode(&self, path: &Path) -> Option<(u32, u32, u32)> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some((m.uid(), m.gid(), m.mode() & 0o7777))
    }
}

/// Whether `uid`/`gid` (with no supplementary groups, as the workload runs) may write `path`
/// by its permission bits: a directory needs write and search, a file write. ACLs are not
/// read, which is why a failure here is a warning, not an error.
pub fn writable_by(owner: u32, group: u32, mode: u32, is_dir: bool, uid: u32, gid: u32) -> bool {
    let shift = if uid == owner {
        6
    } else if gid == group {
        3
    } else {
        0
    };
    let bits = (mode >> shift) & 0o7;
    let need = if is_dir { 0o3 } else { 0o2 };
    bits & need == need
}

/// Facts the rules resolved and the compiler needs.
#[derive(Debug, Default)]
pub struct Resolved {
    /// Canonical source of each mount, in policy order (`None` where it could not be resolved).
    pub mount_sources: Vec<Option<PathBuf>>,
    /// Canonical rootfs directory, when `rootfs.source` is a directory.
    pub rootfs_dir: Option<PathBuf>,
}

/// The rule context: where to report, what the operator allows.
pub struct Ctx<'a> {
    root: &'a Node,
    config: &'a OperatorConfig,
    base_dir: &'a Path,
    fs: &'a dyn HostFs,
    /// Everything reported so far.
    pub diagnostics: Vec<Diagnostic>,
    /// Warnings: the policy stays valid.
    pub warnings: Vec<Diagnostic>,
}

fn p(text: &str) -> PolicyPath {
    let mut path = PolicyPath::root();
    for part in text.split('.') {
        path = path.key(part);
    }
    path
}

impl<'a> Ctx<'a> {
    /// A context over the parsed document `root`.
    pub fn new(
        root: &'a Node,
        config: &'a OperatorConfig,
        base_dir: &'a Path,
        fs: &'a dyn HostFs,
    ) -> Self {
        Ctx {
            root,
            config,
            base_dir,
            fs,
            diagnostics: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Records a warning at `path`.
    pub fn warn(
        &mut self,
        code: ErrorCode,
        path: &PolicyPath,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        let d = self.located(code, path, message, hint);
        self.warnings.push(d);
    }

    /// Records a problem at `path`.
    pub fn report(
        &mut self,
        code: ErrorCode,
        path: &PolicyPath,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        let d = self.located(code, path, message, hint);
        self.diagnostics.push(d);
    }

    /// A diagnostic at `path`, with the line and column the policy text gives it.
    fn located(
        &self,
        code: ErrorCode,
        path: &PolicyPath,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic::new(code, path.to_string(), message, hint).at(Some(self.root.locate(path)))
    }

    fn bad(&mut self, path: &PolicyPath, message: impl Into<String>, hint: impl Into<String>) {
        self.report(ErrorCode::PolicyBadFormat, path, message, hint);
    }

    fn conflict(&mut self, path: &PolicyPath, message: impl Into<String>, hint: impl Into<String>) {
        self.report(ErrorCode::PolicySemanticConflict, path, message, hint);
    }

    fn net(&mut self, path: &PolicyPath, message: impl Into<String>, hint: impl Into<String>) {
        self.report(ErrorCode::PolicyInvalidNetworkRule, path, message, hint);
    }
}

/// Runs every rule over `spec`.
pub fn check(spec: &PolicySpec, ctx: &mut Ctx<'_>) -> Resolved {
    let mut resolved = Resolved::default();
    check_header(spec, ctx);
    check_runtime(spec, ctx);
    check_rootfs(spec, ctx, &mut resolved);
    check_mounts(spec, ctx, &mut resolved);
    check_network(spec, ctx);
    check_resources(spec, ctx);
    check_evidence(spec, ctx);
    check_artifacts(spec, ctx);
    check_combinations(spec, ctx, &resolved);
    resolved
}

fn check_header(spec: &PolicySpec, ctx: &mut Ctx<'_>) {
    if spec.version != 1 {
        ctx.bad(
            &p("version"),
            format!("version {} is not supported", spec.version),
            "write `version: 1`",
        );
    }
    let name_ok = !spec.name.is_empty()
        && spec.name.len() <= 63
        && spec.name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && spec
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !name_ok {
        ctx.bad(
            &p("name"),
            format!("name {:?} is not a valid policy name", clip(&spec.name)),
            "use 1-63 characters: letters, digits, '.', '_' and '-', starting with a letter or digit",
        );
    }
}

/// What is wrong with `command` as `runtime.command` (or the command after `safe-run run --`):
/// the message and the hint; `None` when it is an absolute, normalized path.
pub fn command_problem(command: &str) -> Option<(String, String)> {
    if is_normalized_absolute(command) && command != "/" {
        return None;
    }
    let hint = if !command.starts_with('/') && !command.is_empty() && !command.contains('/') {
        format!(
            "no PATH lookup is done: give the absolute path inside the sandbox, e.g. /usr/bin/{} (find it with `command -v {}`)",
            clip(command),
            clip(command)
        )
    } else {
        "write the program's full path inside the sandbox, e.g. /usr/bin/python3 (no PATH lookup is done)".to_owned()
    };
    Some((
        format!(
            "command {:?} is not an absolute, normalized path",
            clip(command)
        ),
        hint,
    ))
}

fn check_runtime(spec: &PolicySpec, ctx: &mut Ctx<'_>) {
    let rt = &spec.runtime;
    if let Some((message, hint)) = command_problem(&rt.command) {
        ctx.bad(&p("runtime.command"), message, hint);
    }
    for (i, arg) in rt.args.iter().enumerate() {
        if arg.contains('\0') {
            ctx.bad(
                &p("runtime.args").index(i),
                "argument contains a NUL byte",
                "remove the \\0 character; exec cannot pass it",
            );
        }
    }
    for (key, value) in &rt.env {
        let path = p("runtime.env").key(key);
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            ctx.bad(
                &path,
                format!("{:?} is not a valid environment variable name", clip(key)),
                "use a name without '=' or NUL, e.g. LANG",
            );
        } else if FORBIDDEN_ENV.contains(&key.as_str()) {
            ctx.conflict(
                &path,
                format!("{key} makes the loader run code that the run report does not name"),
                "run a wrapper script as the command instead, so the report shows what runs",
            );
        }
        if value.contains('\0') {
            ctx.bad(
                &path,
                "value contains a NUL byte",
                "remove the \\0 character",
            );
        }
    }
    if let Some(cwd) = &rt.cwd
        && !is_normalized_absolute(cwd)
    {
        ctx.bad(
            &p("runtime.cwd"),
            format!("cwd {:?} is not an absolute, normalized path", clip(cwd)),
            "e.g. /work; default is /",
        );
    }
    if let Some(t) = rt.timeout {
        let max = ctx.config.max_limits.timeout;
        if t.as_millis() == 0 {
            ctx.bad(
                &p("runtime.timeout"),
                "timeout must be greater than 0",
                "e.g. 30s; leave it out for the operator default",
            );
        } else if t > max {
            ctx.conflict(
                &p("runtime.timeout"),
                format!("timeout {t} exceeds the operator's ceiling {max}"),
                format!("use at most {max}"),
            );
        }
    }
    if let Some(max_bytes) = rt.output.as_ref().and_then(|o| o.max_bytes) {
        let max = ctx.config.max_limits.output_bytes;
        let path = p("runtime.output.maxBytes");
        if max_bytes.bytes() == 0 {
            ctx.bad(
                &path,
                "maxBytes must be greater than 0",
                "e.g. 16Mi; leave it out for the operator default",
            );
        } else if max_bytes > max {
            ctx.conflict(
                &path,
                format!(
                    "maxBytes {max_bytes} exceeds the operator's ceiling {max} (maxLimits.outputBytes)"
                ),
                format!("use at most {max}"),
            );
        }
    }
    if let Some(user) = &rt.user {
        for (field, id) in [("uid", user.uid), ("gid", user.gid)] {
            if id > MAX_ID {
                ctx.bad(
                    &p("runtime.user").key(field),
                    format!("{field} {id} is out of range"),
                    format!("use 0-{MAX_ID}"),
                );
            }
        }
        if user.uid == 0 && !ctx.config.allow_root_in_sandbox {
            ctx.conflict(
                &p("runtime.user.uid"),
                "uid 0 inside the sandbox is not allowed by the operator config",
                "use an unprivileged uid such as 1000, or ask the operator to set allowRootInSandbox",
            );
        }
    }
}

/// Checks a host path the policy exposes (mount source or rootfs dir) and returns its
/// canonical form when it is acceptable.
fn check_host_path(
    ctx: &mut Ctx<'_>,
    path: &PolicyPath,
    raw: &str,
    want_dir: bool,
) -> Option<PathBuf> {
    if raw.is_empty() || raw.contains('\0') {
        ctx.bad(
            path,
            "source is empty or contains a NUL byte",
            "write a host path, e.g. ./data or /srv/data",
        );
        return None;
    }
    let joined = ctx.base_dir.join(raw);
    let Some((is_symlink, is_dir, is_file)) = ctx.fs.kind(&joined) else {
        ctx.conflict(
            path,
            format!("source {} does not exist", joined.display()),
            "create it, or fix the path (relative sources are resolved against the policy file's directory)",
        );
        return None;
    };
    if is_symlink {
        ctx.conflict(
            path,
            format!(
                "source {} is a symlink; symlinks are never followed",
                joined.display()
            ),
            "name the real path the link points to",
        );
        return None;
    }
    if want_dir && !is_dir {
        ctx.conflict(
            path,
            format!("{} is not a directory", joined.display()),
            "name a directory holding a root filesystem",
        );
        return None;
    }
    if !is_dir && !is_file {
        ctx.conflict(
            path,
            format!(
                "source {} is neither a directory nor a regular file",
                joined.display()
            ),
            "device nodes, sockets and FIFOs cannot be mounted into a sandbox",
        );
        return None;
    }
    let Some(canonical) = ctx.fs.canonicalize(&joined) else {
        ctx.conflict(
            path,
            format!("source {} cannot be resolved", joined.display()),
            "check its permissions",
        );
        return None;
    };
    // Compare canonical with canonical (an operator prefix may itself go through a symlink);
    // a prefix that does not exist is compared as written.
    let allowed = ctx
        .config
        .allowed_mount_prefixes
        .iter()
        .any(|prefix| canonical.starts_with(canonical_or_lexical(ctx, Path::new(prefix))));
    if !allowed {
        let prefixes = ctx.config.allowed_mount_prefixes.join(", ");
        let hint = outside_prefix_hint(&canonical, &prefixes);
        ctx.conflict(
            path,
            format!(
                "source {} is outside the operator's allowed mount prefixes",
                canonical.display()
            ),
            hint,
        );
        return None;
    }
    Some(canonical)
}

/// The hint for a mount source outside the allowed prefixes: the usual mistakes get their
/// own advice.
fn outside_prefix_hint(source: &Path, prefixes: &str) -> String {
    let config = "the operator config's allowedMountPrefixes ($SAFE_RUN_CONFIG, else /etc/safe-run/config.yaml)";
    if source.starts_with("/etc") {
        format!(
            "with `rootfs: {{source: host}}` (the default) /etc is already visible read-only at /etc inside the sandbox: no mount is needed; to mount it elsewhere anyway, the operator must add it to {config}"
        )
    } else if source.starts_with("/root") || source.starts_with("/home") {
        format!(
            "home directories are not mountable by default: copy the data under one of: {prefixes}; or the operator adds the directory to {config}"
        )
    } else {
        format!("move the data under one of: {prefixes}; or the operator adds it to {config}")
    }
}

fn check_rootfs(spec: &PolicySpec, ctx: &mut Ctx<'_>, resolved: &mut Resolved) {
    let Some(rootfs) = &spec.rootfs else { return };
    if spec.backend() == Backend::Firecracker {
        // C6: reported by check_combinations.
        return;
    }
    if rootfs.source == "host" {
        return;
    }
    let path = p("rootfs.source");
    if !rootfs.source.starts_with('/') || !is_normalized_absolute(&rootfs.source) {
        ctx.bad(
            &path,
            format!(
                "{:?} is neither `host` nor an absolute, normalized path",
                clip(&rootfs.source)
            ),
            "write `host`, or the absolute path of a root filesystem directory",
        );
        return;
    }
    resolved.rootfs_dir = check_host_path(ctx, &path, &rootfs.source, true);
}

fn check_mounts(spec: &PolicySpec, ctx: &mut Ctx<'_>, resolved: &mut Resolved) {
    let mut targets: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, m) in spec.mounts.iter().enumerate() {
        let base = PolicyPath::root().key("mounts").index(i);
        resolved
            .mount_sources
            .push(check_host_path(ctx, &base.key("source"), &m.source, false));
        let tpath = base.key("target");
        let t = m.target.as_str();
        if !t.starts_with('/') {
            ctx.bad(
                &tpath,
                format!("target {:?} is not absolute", clip(t)),
                "write an absolute path inside the sandbox, e.g. /data",
            );
        } else if !is_normalized_absolute(t) {
            let hint = if t.split('/').any(|s| s == "..") {
                "remove `..`: a target names one fixed place inside the sandbox".to_owned()
            } else if t.contains('\0') {
                "remove the NUL character".to_owned()
            } else {
                format!("write it normalized: {}", normalize_lexically(t))
            };
            ctx.bad(
                &tpath,
                format!("target {:?} is not a normalized path", clip(t)),
                hint,
            );
        } else if t == "/" {
            ctx.conflict(
                &tpath,
                "a mount cannot replace the sandbox's root",
                "mount beneath it, e.g. /data; use rootfs to choose the root",
            );
        } else if let Some(reserved) = RESERVED_TARGETS
            .iter()
            .find(|r| Path::new(t).starts_with(r))
        {
            ctx.conflict(
                &tpath,
                format!("target {t} is on {reserved}, which the sandbox builds itself"),
                "choose another target such as /data or /work",
            );
        } else if let Some(first) = targets.get(t) {
            ctx.conflict(
                &tpath,
                format!("target {t} is already used by mounts[{first}]"),
                "give each mount its own target",
            );
        } else {
            targets.insert(t, i);
        }
        if !m.read_only
            && let Some(Some(src)) = resolved.mount_sources.last()
        {
            check_workload_can_write(ctx, &base.key("source"), src);
        }
        if !m.read_only && !ctx.config.allow_writable_mounts {
            ctx.conflict(
                &base.key("readOnly"),
                "writable mounts are not allowed by the operator config",
                "set `readOnly: true`, and have the workload write to /tmp",
            );
        }
    }
}

/// A writable mount is written by the workload's host identity (the operator's
/// `workloadHostUid`/`workloadHostGid`, 65534 by default), not by whoever runs safe-run: a
/// source that identity cannot write fails at run time with EACCES, so say so now.
fn check_workload_can_write(ctx: &mut Ctx<'_>, path: &PolicyPath, src: &Path) {
    let (uid, gid) = (ctx.config.workload_host_uid, ctx.config.workload_host_gid);
    let Some((owner, group, mode)) = ctx.fs.owner_mode(src) else {
        return;
    };
    let is_dir = ctx.fs.kind(src).is_some_and(|(_, d, _)| d);
    if writable_by(owner, group, mode, is_dir, uid, gid) {
        return;
    }
    ctx.warn(
        ErrorCode::PolicySemanticConflict,
        path,
        format!(
            "writable mount source {} (owner {owner}:{group}, mode {mode:o}) is not writable by the workload's host uid {uid} / gid {gid}: writes will fail with EACCES (permission denied)",
            src.display()
        ),
        format!(
            "chown {uid}:{gid} {} (results then belong to {uid}), or make it group-writable for gid {gid}; the ids are the operator config's workloadHostUid/workloadHostGid",
            src.display()
        ),
    );
}

fn check_network(spec: &PolicySpec, ctx: &mut Ctx<'_>) {
    let Some(network) = &spec.network else { return };
    let egress_path = p("network.egress");
    match network.mode {
        NetworkMode::None => {
            if !network.egress.is_empty() {
                ctx.net(
                    &egress_path,
                    "`mode: none` cannot have egress rules",
                    "set `mode: allowlist` to allow these destinations, or remove `egress`",
                );
            }
            return;
        }
        NetworkMode::Allowlist => {
            if network.egress.is_empty() {
                ctx.net(
                    &egress_path,
                    "`mode: allowlist` needs at least one egress rule",
                    "add a rule such as `{ host: pypi.org, protocol: tcp, ports: [443] }`, or use `mode: none`",
                );
            }
        }
    }
    let mut seen: BTreeMap<(String, Protocol), usize> = BTreeMap::new();
    for (i, rule) in network.egress.iter().enumerate() {
        let rp = egress_path.index(i);
        let dest = match (&rule.host, &rule.cidr) {
            (Some(_), Some(_)) => {
                ctx.net(
                    &rp,
                    "a rule has both `host` and `cidr`",
                    "keep one: split it into two rules if both are needed",
                );
                None
            }
            (None, None) => {
                ctx.net(
                    &rp,
                    "a rule needs `host` or `cidr`",
                    "add `host: example.org` or `cidr: 203.0.113.0/24`",
                );
                None
            }
            (Some(host), None) => {
                check_host(ctx, &rp.key("host"), host).then(|| host.to_ascii_lowercase())
            }
            (None, Some(cidr)) => check_cidr(ctx, &rp.key("cidr"), cidr).then(|| cidr.clone()),
        };
        let ports_path = rp.key("ports");
        match rule.protocol {
            Protocol::Icmp => {
                if !rule.ports.is_empty() {
                    ctx.net(
                        &ports_path,
                        "icmp has no ports",
                        "remove `ports` from this icmp rule",
                    );
                }
            }
            Protocol::Tcp | Protocol::Udp => {
                if rule.ports.is_empty() {
                    ctx.net(
                        &ports_path,
                        "tcp and udp rules need at least one port",
                        "add e.g. `ports: [443]`",
                    );
                }
                let mut seen_ports = BTreeSet::new();
                for (j, port) in rule.ports.iter().enumerate() {
                    if !(1..=65535).contains(port) {
                        ctx.net(
                            &ports_path.index(j),
                            format!("port {port} is out of range"),
                            "use a port from 1 to 65535",
                        );
                    } else if !seen_ports.insert(*port) {
                        ctx.net(
                            &ports_path.index(j),
                            format!("port {port} is listed twice"),
                            "list each port once",
                        );
                    }
                }
            }
        }
        if let Some(dest) = dest {
            if let Some(first) = seen.get(&(dest.clone(), rule.protocol)) {
                ctx.net(
                    &rp,
                    format!("duplicates network.egress[{first}] (same destination and protocol)"),
                    "merge the ports into one rule",
                );
            } else {
                seen.insert((dest, rule.protocol), i);
            }
        }
    }
}

/// RFC 1123 host name check; returns whether the name is usable.
fn check_host(ctx: &mut Ctx<'_>, path: &PolicyPath, host: &str) -> bool {
    let lower = host.to_ascii_lowercase();
    let fail = |ctx: &mut Ctx<'_>, message: String, hint: &str| {
        ctx.net(path, message, hint);
        false
    };
    if !host.is_ascii() {
        return fail(
            ctx,
            format!("host {:?} contains non-ASCII characters", clip(host)),
            "write the IDNA (punycode) form, e.g. xn--bcher-kva.example for bücher.example",
        );
    }
    if host.parse::<IpAddr>().is_ok() {
        return fail(
            ctx,
            format!("host {host:?} is an IP address"),
            "use `cidr` instead, e.g. `cidr: 203.0.113.7/32`",
        );
    }
    if host.starts_with("*.") {
        return fail(
            ctx,
            format!("wildcard host {host:?} is not supported"),
            "list each host name you need",
        );
    }
    if host.ends_with('.') {
        return fail(
            ctx,
            format!("host {host:?} ends with a dot"),
            "remove the trailing dot",
        );
    }
    let labels: Vec<&str> = host.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.is_empty() || host.len() > 253 || !labels.iter().all(label_ok) {
        return fail(
            ctx,
            format!("host {:?} is not a valid DNS name", clip(host)),
            "use letters, digits and '-' in dot-separated labels of 1-63 characters (RFC 1123)",
        );
    }
    if INTERNAL_HOSTS.contains(&lower.as_str()) || lower.ends_with(".localhost") {
        return fail(
            ctx,
            format!(
                "combination C4 egress-to-internal: host {host:?} names the host itself or a metadata service"
            ),
            "an allowlist may only reach outside services",
        );
    }
    if labels.len() < 2 {
        return fail(
            ctx,
            format!("host {host:?} is not a fully qualified name"),
            "write the full name, e.g. pypi.org (search domains are not used)",
        );
    }
    if labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return fail(
            ctx,
            format!("host {host:?} ends in a numeric label"),
            "an IP address belongs in `cidr`, e.g. 203.0.113.7/32",
        );
    }
    true
}

fn check_cidr(ctx: &mut Ctx<'_>, path: &PolicyPath, cidr: &str) -> bool {
    let net: IpNet = match cidr.parse() {
        Ok(n) => n,
        Err(_) => {
            let hint = if cidr.parse::<IpAddr>().is_ok() {
                format!("add a prefix length: {cidr}/32 (IPv4) or {cidr}/128 (IPv6)")
            } else {
                "write an address and prefix length, e.g. 203.0.113.0/24".to_owned()
            };
            ctx.net(
                path,
                format!("{:?} is not a CIDR network", clip(cidr)),
                hint,
            );
            return false;
        }
    };
    if net.addr() != net.network() {
        ctx.net(
            path,
            format!("{cidr} has host bits set"),
            format!("write the network address: {}", net.trunc()),
        );
        return false;
    }
    let min = match net {
        IpNet::V4(_) => MIN_PREFIX_V4,
        IpNet::V6(_) => MIN_PREFIX_V6,
    };
    if net.prefix_len() < min {
        ctx.net(
            path,
            format!("combination C5 egress-allow-all: {cidr} is broader than /{min} and defeats the allowlist"),
            "list the networks you need; use `mode: none` or a narrower CIDR",
        );
        return false;
    }
    for internal in INTERNAL_NETS {
        let Ok(internal) = internal.parse::<IpNet>() else {
            continue;
        };
        if internal.contains(&net) || net.contains(&internal) {
            ctx.net(
                path,
                format!("combination C4 egress-to-internal: {cidr} overlaps {internal} (loopback, link-local or metadata)"),
                "an allowlist may only reach outside services; the host and 169.254.169.254 are never reachable",
            );
            return false;
        }
    }
    if let IpNet::V6(_) = net {
        ctx.net(
            path,
            format!("{cidr} is IPv6; the run's network link is IPv4-only"),
            "use an IPv4 network, or a host name",
        );
        return false;
    }
    true
}

fn check_resources(spec: &PolicySpec, ctx: &mut Ctx<'_>) {
    let Some(r) = &spec.resources else { return };
    let max = &ctx.config.max_limits;
    let (max_cpus, max_mem, max_pids, max_files, max_tmp) = (
        max.cpus,
        max.memory,
        max.pids,
        max.open_files,
        max.tmpfs_size,
    );
    if let Some(cpus) = r.cpus {
        let path = p("resources.cpus");
        if cpus.is_nan() || cpus <= 0.0 {
            ctx.bad(
                &path,
                format!("cpus must be greater than 0, found {cpus}"),
                "e.g. 0.5 or 1",
            );
        } else if cpus > max_cpus {
            ctx.conflict(
                &path,
                format!("cpus {cpus} exceeds the operator's ceiling {max_cpus}"),
                format!("use at most {max_cpus}"),
            );
        } else if spec.backend().is_vm() && cpus.fract() != 0.0 {
            ctx.conflict(
                &path,
                format!("a microVM needs a whole number of vCPUs, found {cpus}"),
                format!("use {}", cpus.ceil()),
            );
        }
    }
    if let Some(memory) = r.memory {
        let path = p("resources.memory");
        if memory.bytes() == 0 {
            ctx.bad(&path, "memory must be greater than 0", "e.g. 256Mi");
        } else if memory > max_mem {
            ctx.conflict(
                &path,
                format!("memory {memory} exceeds the operator's ceiling {max_mem}"),
                format!("use at most {max_mem}"),
            );
        } else if spec.backend().is_vm() && memory.bytes() % (1 << 20) != 0 {
            ctx.conflict(
                &path,
                format!(
                    "a microVM's memory is sized in MiB; {memory} is not a whole number of MiB"
                ),
                "e.g. 256Mi",
            );
        }
    }
    for (name, value, ceiling) in [
        ("pids", r.pids, max_pids),
        ("openFiles", r.open_files, max_files),
    ] {
        let Some(v) = value else { continue };
        let path = p("resources").key(name);
        if v <= 0 {
            ctx.bad(
                &path,
                format!("{name} must be greater than 0, found {v}"),
                "e.g. 64",
            );
        } else if u64::try_from(v).is_ok_and(|v| v > ceiling) {
            ctx.conflict(
                &path,
                format!("{name} {v} exceeds the operator's ceiling {ceiling}"),
                format!("use at most {ceiling}"),
            );
        }
    }
    if let Some(tmp) = r.tmpfs_size {
        let path = p("resources.tmpfsSize");
        if tmp.bytes() == 0 {
            ctx.bad(&path, "tmpfsSize must be greater than 0", "e.g. 64Mi");
        } else if tmp > max_tmp {
            ctx.conflict(
                &path,
                format!("tmpfsSize {tmp} exceeds the operator's ceiling {max_tmp}"),
                format!("use at most {max_tmp}"),
            );
        }
    }
}

fn check_evidence(spec: &PolicySpec, ctx: &mut Ctx<'_>) {
    let Some(events) = spec.evidence.as_ref().and_then(|e| e.events.as_ref()) else {
        return;
    };
    let mut seen = BTreeSet::new();
    for (i, event) in events.iter().enumerate() {
        let path = p("evidence.events").index(i);
        if !sr_common::events::is_known(event) {
            ctx.bad(
                &path,
                format!("unknown event type {:?}", clip(event)),
                format!("use one of: {}", sr_common::events::names()),
            );
        } else if !seen.insert(event.as_str()) {
            ctx.bad(
                &path,
                format!("event {event} is listed twice"),
                "list each event once",
            );
        }
    }
}

fn check_artifacts(spec: &PolicySpec, ctx: &mut Ctx<'_>) {
    match (spec.backend(), &spec.artifacts) {
        (Backend::Firecracker, None) => ctx.report(
            ErrorCode::PolicyMissingField,
            &p("artifacts"),
            "`backend: firecracker` needs `artifacts` (kernel and rootfs images)",
            "add `artifacts: { kernel: { path: /path/vmlinux }, rootfs: { path: /path/rootfs.ext4 } }`",
        ),
        (Backend::Sandbox, Some(_)) => ctx.conflict(
            &p("artifacts"),
            "`artifacts` only applies to a microVM (`backend: microvm` or `firecracker`)",
            "remove `artifacts`, or set `runtime.backend: microvm`",
        ),
        (Backend::Firecracker | Backend::Microvm, Some(a)) => {
            let mut roles = vec![("kernel", &a.kernel), ("rootfs", &a.rootfs)];
            if let Some(initramfs) = &a.initramfs {
                roles.insert(1, ("initramfs", initramfs));
            }
            for (role, artifact) in roles {
                let base = p("artifacts").key(role);
                if !is_normalized_absolute(&artifact.path) || artifact.path == "/" {
                    ctx.bad(&base.key("path"), format!("{:?} is not an absolute, normalized file path", clip(&artifact.path)), "e.g. /srv/safe-run/vmlinux");
                }
                if let Some(sha) = &artifact.sha256
                    && !(sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
                {
                    ctx.bad(&base.key("sha256"), "sha256 must be 64 lowercase hex digits", "compute it with `sha256sum FILE` and paste the first column");
                }
            }
        }
        (Backend::Sandbox | Backend::Microvm, None) => {}
    }
}

fn check_combinations(spec: &PolicySpec, ctx: &mut Ctx<'_>, resolved: &Resolved) {
    let vm = spec.backend().is_vm();
    // C1: root inside the sandbox with a writable host path.
    let root_user = spec.runtime.user.as_ref().is_some_and(|u| u.uid == 0);
    if root_user {
        for (i, m) in spec.mounts.iter().enumerate() {
            if !m.read_only {
                ctx.conflict(
                    &PolicyPath::root().key("mounts").index(i).key("readOnly"),
                    "combination C1 root-writable-mount: uid 0 with a writable mount can create root-owned and setuid files on the host",
                    "make the mount read-only, or run as an unprivileged uid",
                );
            }
        }
    }
    // C2, C3: exposing the evidence run directory or the signing key.
    let run_dir = canonical_or_lexical(ctx, Path::new(&ctx.config.run_dir));
    let key_dir = canonical_or_lexical(ctx, ctx.config.key_dir());
    let mut exposed: Vec<(PolicyPath, &Path, bool)> = Vec::new();
    for (i, (m, src)) in spec.mounts.iter().zip(&resolved.mount_sources).enumerate() {
        if let Some(src) = src {
            exposed.push((
                PolicyPath::root().key("mounts").index(i).key("source"),
                src,
                !m.read_only,
            ));
        }
    }
    if let Some(dir) = &resolved.rootfs_dir {
        exposed.push((p("rootfs.source"), dir, false));
    }
    for (path, src, writable) in &exposed {
        let overlaps = |dir: &Path| src.starts_with(dir) || dir.starts_with(src);
        if overlaps(&key_dir) {
            ctx.conflict(
                path,
                format!(
                    "combination C3 mount-exposes-signing-key: {} overlaps the key directory {}",
                    src.display(),
                    key_dir.display()
                ),
                "mount a directory that does not contain the report-signing key",
            );
        } else if *writable && overlaps(&run_dir) {
            ctx.conflict(
                path,
                format!("combination C2 writable-run-dir: a writable mount of {} could rewrite evidence under {}", src.display(), run_dir.display()),
                "make the mount read-only, or mount a directory outside the run directory",
            );
        }
    }
    // C6: a microVM boots artifacts.rootfs; a policy rootfs would be silently ignored.
    if vm && let Some(rootfs) = &spec.rootfs {
        let why = if rootfs.source == "host" {
            "the host's own root cannot be a microVM's disk"
        } else {
            "the microVM boots artifacts.rootfs"
        };
        ctx.conflict(
            &p("rootfs.source"),
            format!("combination C6 microvm-rootfs: `rootfs` does not apply to a microVM ({why})"),
            "remove `rootfs`; set `artifacts.rootfs.path` to an ext4 image",
        );
    }
    // C7: a read-only mount whose data is writable through another mount.
    let writable: Vec<(usize, &PathBuf)> = spec
        .mounts
        .iter()
        .zip(&resolved.mount_sources)
        .enumerate()
        .filter_map(|(j, (m, src))| src.as_ref().filter(|_| !m.read_only).map(|s| (j, s)))
        .collect();
    for (i, (m, src)) in spec.mounts.iter().zip(&resolved.mount_sources).enumerate() {
        let Some(src) = src.as_ref().filter(|_| m.read_only) else {
            continue;
        };
        for (j, wsrc) in &writable {
            if src.starts_with(wsrc) {
                ctx.conflict(
                    &PolicyPath::root().key("mounts").index(i).key("source"),
                    format!(
                        "combination C7 read-only-under-writable: mounts[{i}] is read-only but its data is writable through mounts[{j}]"
                    ),
                    "make both read-only, or expose non-overlapping directories",
                );
                break;
            }
        }
    }
    // C8: Firecracker cannot share host directories. QEMU (`backend: microvm`) gets each
    // mount as an ext4 image of the source on its own virtio-blk drive (a writable one is
    // copied back through the agent at the end; docs/microvm.md).
    if spec.backend() == Backend::Firecracker && !spec.mounts.is_empty() {
        ctx.conflict(
            &p("mounts"),
            "combination C8 firecracker-mounts: backend firecracker cannot share host directories",
            "leave `mounts: []` and build the data into the rootfs image, or use `backend: microvm` (QEMU) or `backend: sandbox`",
        );
    }
}

/// The canonical form of a path that exists, else the path as written.
fn canonical_or_lexical(ctx: &Ctx<'_>, path: &Path) -> PathBuf {
    ctx.fs
        .canonicalize(path)
        .unwrap_or_else(|| path.to_path_buf())
}

/// `a//b/./c/` -> `/a/b/c` (`..` is not resolved; it is reported separately).
fn normalize_lexically(p: &str) -> String {
    let parts: Vec<&str> = p
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    format!("/{}", parts.join("/"))
}
