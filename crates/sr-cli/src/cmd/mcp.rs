//! `safe-run mcp`: the daemon's sandboxes as MCP tools on stdin and stdout, for an MCP client
//! (an agent, an IDE) that starts one server process per conversation (docs/serve.md, "MCP").
//! The tools are sr-daemon's `mcp` module; this owns the flags, the startup checks it shares
//! with `safe-run serve`, and the runtime.

use std::sync::Arc;

use clap::Args;
use sr_common::Diagnostic;
use sr_daemon::Daemon;

use super::host::startup;
use crate::output::{Format, fail};

/// Arguments of `safe-run mcp`.
#[derive(Args)]
#[command(
    after_help = "MCP over stdio: the client starts `safe-run mcp` and speaks MCP on its stdin and
stdout (log lines go to stderr). There is no token: whoever holds the pipes owns the process, so
the client must be trusted with root's sandboxes. When stdin closes (or on SIGTERM/SIGINT),
every sandbox is destroyed and its signed report written.

Tools: sandbox_create, sandbox_exec (one-shot without an id), sandbox_exec_start,
sandbox_exec_output, sandbox_read_file, sandbox_write_file, sandbox_list_files, sandbox_kill,
sandbox_report.

A client configuration (e.g. mcpServers in Claude Desktop, Cursor, or examples/agent/mcp.json):
  {
    \"mcpServers\": {
      \"safe-run\": { \"command\": \"/usr/local/bin/safe-run\", \"args\": [\"mcp\"] }
    }
  }

Over HTTP instead, `safe-run serve` serves the same tools at /mcp (a create or admin token).
A one-shot sandbox_exec without an id uses the operator's template named \"default\"
(serve.templates) when the call names no policy and no template."
)]
pub struct McpArgs {}

/// Serves MCP on stdio until stdin closes; returns the process exit code.
pub fn execute(_args: McpArgs) -> u8 {
    match serve() {
        Ok(()) => 0,
        Err(d) => fail(&[d], Format::Text),
    }
}

fn serve() -> Result<(), Diagnostic> {
    let daemon = Arc::new(Daemon::new(super::host::prepare()?));
    let runtime = super::host::runtime()?;
    let served = runtime.block_on(sr_daemon::mcp::serve_stdio(daemon));
    // A read of stdin still pending (after a signal) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    served.map_err(|e| startup("mcp.stdio", e.to_string(), "see docs/serve.md (MCP)"))
}
