//! What each MCP tool takes and answers, as serde types whose JSON Schemas (schemars) are the
//! tools' input and output schemas. Names are camelCase on the wire, like API v1's.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `sandbox_create`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateIn {
    /// A PolicySpec v1 as YAML or JSON text (mount sources absolute). Give this or `template`.
    pub policy: Option<String>,
    /// The name of one of the operator's templates (serve.templates). Give this or `policy`.
    pub template: Option<String>,
}

/// A sandbox as the tools describe it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxOut {
    /// Its id (the run id): the `id` of the other tools.
    pub id: String,
    /// `running` or `ended`.
    pub state: String,
    /// When it was made (Unix ms).
    pub created_at_ms: u64,
    /// How it ended (`exited`, `timeout`, `stopped`, ...), once it has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
    /// Its signed report on the daemon's host, once written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_path: Option<String>,
    /// The template it was made from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Whether it came ready from a warm pool.
    pub from_pool: bool,
}

/// `sandbox_exec`: one command, answered when it ends.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExecIn {
    /// The sandbox. Without it the command runs in a throwaway sandbox made from `policy`,
    /// `template` or the operator's template named `default`, and destroyed after.
    pub id: Option<String>,
    /// The program (absolute path) and its arguments, e.g. `["/bin/echo", "hi"]`.
    pub argv: Vec<String>,
    /// Text given on stdin (none: /dev/null).
    pub stdin: Option<String>,
    /// The exec's own timeout in milliseconds (the sandbox's lifetime bounds it anyway).
    pub timeout_ms: Option<u64>,
    /// Working directory (absolute).
    pub cwd: Option<String>,
    /// Variables added to the policy's environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Only without `id`: the throwaway sandbox's policy (YAML or JSON text).
    pub policy: Option<String>,
    /// Only without `id`: the throwaway sandbox's template.
    pub template: Option<String>,
}

/// How an exec ended and what it printed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecOut {
    /// The sandbox it ran in.
    pub sandbox_id: String,
    /// The exec's id within the sandbox.
    pub exec_id: u64,
    /// `exited`, `signaled`, `timedOut` or `lost`.
    pub status: String,
    /// Its exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that killed it, when one did.
    pub signal: Option<i32>,
    /// Its stdout (lossy UTF-8), at most 64 KiB.
    pub stdout: String,
    /// Its stderr (lossy UTF-8), at most 64 KiB.
    pub stderr: String,
    /// Whether output is missing here: past the policy's output limit or past 64 KiB.
    pub truncated: bool,
    /// How long it ran.
    pub duration_ms: u64,
    /// A throwaway sandbox's report, written when it was destroyed after the exec.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_path: Option<String>,
}

/// `sandbox_exec_start`: a command that runs on while its output is read by cursor.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExecStartIn {
    /// The sandbox.
    pub id: String,
    /// The program (absolute path) and its arguments.
    pub argv: Vec<String>,
    /// Text given on stdin, then closed (none: /dev/null).
    pub stdin: Option<String>,
    /// The exec's own timeout in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Working directory (absolute).
    pub cwd: Option<String>,
    /// Variables added to the policy's environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// A started exec.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecStartOut {
    /// The sandbox.
    pub sandbox_id: String,
    /// The exec's id, for `sandbox_exec_output`.
    pub exec_id: u64,
}

/// `sandbox_exec_output`: what a started exec printed after a cursor.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExecOutputIn {
    /// The sandbox.
    pub id: String,
    /// The exec (`execId` of `sandbox_exec_start`).
    pub exec_id: u64,
    /// The `cursor` of the previous answer (none: from the start).
    pub cursor: Option<u64>,
    /// Wait up to this long (at most 30000) for output or the end when there is none yet.
    pub wait_ms: Option<u64>,
}

/// A started exec's output since the cursor.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecOutputOut {
    /// Stdout since the cursor (lossy UTF-8).
    pub stdout: String,
    /// Stderr since the cursor (lossy UTF-8).
    pub stderr: String,
    /// Give this as `cursor` next time (bytes of stdout and stderr so far).
    pub cursor: u64,
    /// Whether more output was already there past this answer's 64 KiB: ask again at once.
    pub more: bool,
    /// Whether some output is missing: past the policy's output limit (`cut`), or a chunk
    /// larger than 64 KiB cut short.
    pub truncated: bool,
    /// Whether the exec has ended (then `status` says how).
    pub exited: bool,
    /// `exited`, `signaled`, `timedOut`, `failed` or `lost`, once it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Its exit code, when it exited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that killed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Why it could not start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long it ran, once it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// `sandbox_read_file`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReadFileIn {
    /// The sandbox.
    pub id: String,
    /// An absolute path inside the sandbox (within the policy's mounts and tmpfs).
    pub path: String,
    /// Start at this byte (default 0).
    pub offset: Option<u64>,
    /// At most this many bytes (default and most: 64 KiB).
    pub length: Option<u64>,
}

/// A file's content (a part of it, for a large one).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadFileOut {
    /// The path read.
    pub path: String,
    /// The content, when it is UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The content as base64, when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
    /// The file's whole size.
    pub size: u64,
    /// Where this part starts.
    pub offset: u64,
    /// Whether the file goes on past this part (read again with a larger `offset`).
    pub truncated: bool,
    /// The whole file's digest, `sha256:<hex>`.
    pub sha256: String,
}

/// `sandbox_write_file`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WriteFileIn {
    /// The sandbox.
    pub id: String,
    /// An absolute path inside the sandbox, on a writable mount or tmpfs.
    pub path: String,
    /// The content as text. Give this or `base64`.
    pub text: Option<String>,
    /// The content as base64. Give this or `text`.
    pub base64: Option<String>,
    /// Permission bits in octal, e.g. `"0644"` (the default) or `"0755"`.
    pub mode: Option<String>,
}

/// A written file.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WriteFileOut {
    /// The path written.
    pub path: String,
    /// Bytes written.
    pub size: u64,
    /// Their digest, `sha256:<hex>` (the report lists the transfer with it).
    pub sha256: String,
}

/// `sandbox_list_files`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListFilesIn {
    /// The sandbox.
    pub id: String,
    /// An absolute directory inside the sandbox.
    pub path: String,
}

/// One directory entry.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    /// Its name.
    pub name: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: String,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits (decimal; 420 is 0644).
    pub mode: u32,
}

/// A directory's entries.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListFilesOut {
    /// The directory listed.
    pub path: String,
    /// Its entries (at most 1000).
    pub entries: Vec<FileEntry>,
    /// Whether there were more than are listed.
    pub truncated: bool,
}

/// `sandbox_kill` and `sandbox_report`: a sandbox by id.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IdIn {
    /// The sandbox.
    pub id: String,
}

/// A sandbox's signed run report.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReportOut {
    /// The sandbox.
    pub id: String,
    /// Where the report is on the daemon's host (`safe-run report verify PATH` checks it).
    pub report_path: String,
    /// The report itself (docs/evidence.md), exactly as signed.
    pub report: serde_json::Map<String, serde_json::Value>,
}

/// A failed tool call's structured content: the stable SR code and what to do about it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ToolError {
    /// The stable SR code (`SR-POL-002`, `SR-RUN-002`, ...; docs/errors.md).
    pub code: String,
    /// The policy path, argument or run phase it concerns.
    pub path: String,
    /// What happened.
    pub message: String,
    /// What to do about it.
    pub hint: String,
}
