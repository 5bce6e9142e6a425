//! The tools the MCP server lists: each one's name, description, input and output schemas
//! (from [`super::shapes`]) and annotations (hints for a client deciding what to confirm).

use std::sync::Arc;

use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use schemars::JsonSchema;

use super::shapes::*;

/// The names, in the order they are listed.
pub const NAMES: [&str; 9] = [
    "sandbox_create",
    "sandbox_exec",
    "sandbox_exec_start",
    "sandbox_exec_output",
    "sandbox_read_file",
    "sandbox_write_file",
    "sandbox_list_files",
    "sandbox_kill",
    "sandbox_report",
];

fn object() -> Arc<JsonObject> {
    let mut o = JsonObject::new();
    o.insert("type".into(), "object".into());
    Arc::new(o)
}

/// What a tool does to the sandbox, as annotation hints.
#[derive(Clone, Copy)]
enum Effect {
    /// Reads only.
    Reads,
    /// Makes something new, changing nothing there was.
    Makes,
    /// Runs a command, which may change anything in the sandbox.
    Runs,
    /// Replaces what was there; the same call twice does no more.
    Replaces,
}

fn annotations(title: &str, effect: Effect) -> ToolAnnotations {
    let a = ToolAnnotations::with_title(title).open_world(false);
    match effect {
        Effect::Reads => a.read_only(true).destructive(false).idempotent(true),
        Effect::Makes => a.read_only(false).destructive(false).idempotent(false),
        Effect::Runs => a.read_only(false).destructive(true).idempotent(false),
        Effect::Replaces => a.read_only(false).destructive(true).idempotent(true),
    }
}

fn tool<I: JsonSchema + 'static, O: JsonSchema + 'static>(
    name: &'static str,
    title: &str,
    description: &'static str,
    effect: Effect,
) -> Tool {
    // The shapes are structs, so their schemas are objects; a plain object schema stands in
    // should one ever not be.
    let input = rmcp::handler::server::tool::schema_for_input::<I>().unwrap_or_else(|_| object());
    Tool::new(name, description, input)
        .with_title(title)
        .with_raw_output_schema(rmcp::handler::server::tool::schema_for_output::<O>())
        .with_annotations(annotations(title, effect))
}

/// Every tool, as listed.
pub fn tools() -> Vec<Tool> {
    vec![
        tool::<CreateIn, SandboxOut>(
            "sandbox_create",
            "Create a sandbox",
            "Make a live sandbox from a policy (PolicySpec v1 as YAML or JSON text, mount sources absolute) or one of the operator's templates; answers its id. It stays alive for execs and files until sandbox_kill or its policy's runtime.timeout, and ends in a signed run report.",
            Effect::Makes,
        ),
        tool::<ExecIn, ExecOut>(
            "sandbox_exec",
            "Run a command",
            "Run a command (argv[0] an absolute path) in sandbox id and answer when it ends: exit code, stdout and stderr (64 KiB each at most, truncated says so). Without id it runs in a throwaway sandbox made from policy, template or the operator's template named default, which is destroyed (with its report) after.",
            Effect::Runs,
        ),
        tool::<ExecStartIn, ExecStartOut>(
            "sandbox_exec_start",
            "Start a command",
            "Start a command in sandbox id without waiting for it; answers its execId. Read its output with sandbox_exec_output.",
            Effect::Runs,
        ),
        tool::<ExecOutputIn, ExecOutputOut>(
            "sandbox_exec_output",
            "Read a started command's output",
            "Output of a started exec after cursor (none: from the start), at most 64 KiB per answer, with the cursor to give next; once it has ended, exited is true with its status and exit code. waitMs waits (30 s at most) for something new.",
            Effect::Reads,
        ),
        tool::<ReadFileIn, ReadFileOut>(
            "sandbox_read_file",
            "Read a file",
            "Read a file inside sandbox id (within the policy's mounts and tmpfs): text, or base64 when it is not UTF-8; 64 KiB per call, offset reads on.",
            Effect::Reads,
        ),
        tool::<WriteFileIn, WriteFileOut>(
            "sandbox_write_file",
            "Write a file",
            "Write a file inside sandbox id (on a writable mount or tmpfs), replacing it, from text or base64; the transfer is in the sandbox's report.",
            Effect::Replaces,
        ),
        tool::<ListFilesIn, ListFilesOut>(
            "sandbox_list_files",
            "List a directory",
            "List a directory inside sandbox id: name, kind, size, mode of each entry (1000 at most).",
            Effect::Reads,
        ),
        tool::<IdIn, SandboxOut>(
            "sandbox_kill",
            "Destroy a sandbox",
            "Destroy sandbox id: everything in it is killed and its signed run report written (sandbox_report reads it).",
            Effect::Replaces,
        ),
        tool::<IdIn, ReportOut>(
            "sandbox_report",
            "Read a sandbox's report",
            "The signed run report of an ended sandbox (after sandbox_kill or its timeout): what ran, each exec and file transfer, what was enforced.",
            Effect::Reads,
        ),
    ]
}
