//! Running a command: the host's `exec` and what it may send while the command runs (stdin
//! frames, `stdinClose`, `signal`, `resize`); the agent's `started`, `stdinCredit`, output frames
//! and `exit`.

use serde::{Deserialize, Serialize};

/// Run one command inside the boundary. Its `id` names the exec in every later frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Exec {
    /// Request id, chosen by the host, unique on the connection; also the exec id.
    pub id: u64,
    /// Not empty; `argv[0]` is the program (an absolute path, or looked up in the env's `PATH`).
    pub argv: Vec<String>,
    /// The whole environment, in order; names unique. Nothing is inherited from the agent.
    pub env: Vec<EnvVar>,
    /// Working directory (absolute); `None`: the agent's default (the policy's `cwd`).
    pub cwd: Option<String>,
    /// Wall-clock limit for this exec; when it passes, the agent kills the exec's process tree.
    pub timeout_ms: Option<u64>,
    /// Whether the host will send stdin.
    pub stdin: StdinMode,
    /// A terminal of this size (stdout and stderr then arrive merged on stdout), or pipes.
    pub tty: Option<TtySize>,
    /// Identity; a missing uid or gid takes the agent's default (the policy's user).
    pub user: ExecUser,
}

/// One environment variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    /// Not empty, no `=`, no NUL.
    pub name: String,
    /// No NUL.
    pub value: String,
}

/// Where the exec's stdin comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StdinMode {
    /// `/dev/null`.
    #[default]
    None,
    /// A pipe the host fills with stdin data frames and ends with `stdinClose`.
    Pipe,
}

/// A terminal size, in character cells; both at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtySize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// The exec's identity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecUser {
    /// uid inside the boundary.
    pub uid: Option<u32>,
    /// gid inside the boundary.
    pub gid: Option<u32>,
}

/// The exec's process exists and runs the program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Started {
    /// The exec id.
    pub id: u64,
    /// Its pid inside the boundary.
    pub pid: u32,
    /// Bytes of stdin the host may send before the next `stdinCredit` (0 without a stdin pipe).
    pub stdin_window: u32,
    /// What confines the process, as the agent applied it.
    pub confinement: Option<Box<Confinement>>,
}

/// Confinement applied to an exec's process, for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Confinement {
    /// `PR_SET_NO_NEW_PRIVS` was set.
    pub no_new_privs: bool,
    /// Capabilities dropped from the bounding set.
    pub capabilities_dropped: u64,
    /// `/proc/self/uid_map` as written (`inside outside count`), empty without a user namespace.
    pub uid_map: String,
    /// `/proc/self/gid_map` as written.
    pub gid_map: String,
    /// Landlock, when the kernel has it.
    pub landlock: Option<LandlockFacts>,
    /// seccomp, when a filter was installed.
    pub seccomp: Option<SeccompFacts>,
    /// rlimits applied.
    pub rlimits: Vec<Rlimit>,
}

/// What Landlock enforced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LandlockFacts {
    /// Kernel ABI.
    pub abi: u32,
    /// How completely.
    pub status: LandlockStatus,
    /// Rules added: `path:access`.
    pub rules: Vec<String>,
    /// Rule paths that do not exist and were skipped.
    pub skipped: Vec<String>,
    /// Scopes enforced.
    pub scopes: Vec<String>,
}

/// Landlock's own verdict on a ruleset (the spelling the sandbox's facts already use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LandlockStatus {
    /// Every requested access right is enforced.
    FullyEnforced,
    /// Some are, the kernel's ABI lacks others.
    PartiallyEnforced,
    /// None are.
    NotEnforced,
    /// The kernel has no Landlock.
    Unavailable,
}

/// The seccomp filter installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeccompFacts {
    /// Profile id.
    pub profile: String,
    /// `sha256:` of the installed BPF programs.
    pub digest: String,
    /// Total BPF instructions.
    pub instructions: u64,
    /// What `socket`/`socketpair` may create under the filter (absent: not restricted by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sockets: Option<SocketAllowList>,
}

/// The socket allow lists a seccomp filter enforces (names as in the kernel's headers).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SocketAllowList {
    /// Address families (`AF_UNIX`, ...).
    pub families: Vec<String>,
    /// Netlink protocols under `AF_NETLINK`.
    pub netlink_protocols: Vec<String>,
    /// Socket types under `AF_INET`/`AF_INET6`.
    pub inet_socket_types: Vec<String>,
    /// Protocols under `AF_INET`/`AF_INET6`.
    pub ip_protocols: Vec<String>,
}

/// One resource limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rlimit {
    /// e.g. `RLIMIT_NOFILE`.
    pub name: String,
    /// The soft and hard value.
    pub value: u64,
}

/// The host may send `bytes` more of stdin to exec `id` (flow control: the agent grants what it
/// has written into the exec's stdin, so one slow reader never blocks the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdinCredit {
    /// The exec id.
    pub id: u64,
    /// Additional bytes allowed; at least 1.
    pub bytes: u32,
}

/// A request naming only an id: `stdinClose`, `removed`, `statsRequest`, `shutdown`, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdOnly {
    /// The request (or exec) id.
    pub id: u64,
}

/// Deliver a signal to the exec's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signal {
    /// The exec id.
    pub id: u64,
    /// Signal number, 1 to 64.
    pub signal: i32,
}

/// The host's terminal changed size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resize {
    /// The exec id (an exec started with a tty).
    pub id: u64,
    /// Rows, at least 1.
    pub rows: u16,
    /// Columns, at least 1.
    pub cols: u16,
}

/// The exec ended; nothing more arrives for its id after this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Exit {
    /// The exec id.
    pub id: u64,
    /// How it ended.
    pub status: ExitStatus,
    /// The exec's own timeout killed it.
    pub timed_out: bool,
    /// From start to reap.
    pub duration_ms: u64,
    /// Bytes sent in stdout frames.
    pub stdout_bytes: u64,
    /// Bytes sent in stderr frames.
    pub stderr_bytes: u64,
    /// Bytes of stdin written into the process.
    pub stdin_bytes: u64,
}

/// An exit code or a terminating signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ExitStatus {
    /// Exited with this code (0 to 255).
    Code(i32),
    /// Killed by this signal (1 to 64).
    Signal(i32),
}
