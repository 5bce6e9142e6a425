//! MCP (the Model Context Protocol) for the control plane: the daemon's sandboxes as nine
//! tools, served over stdio (`safe-run mcp`) and over Streamable HTTP at `/mcp` of the API
//! (docs/serve.md, "MCP"). Built on the official Rust SDK, rmcp, kept to this module:
//!
//! * [`tools`]: what each tool does, as plain functions over a [`Daemon`] (no MCP in them).
//! * [`shapes`]: their arguments and answers, whose JSON Schemas are the tools' schemas.
//! * [`catalog`]: the tools as listed (descriptions, schemas, annotations).
//! * [`http`]: the Streamable HTTP service and its bearer-token check.
//! * here: the rmcp server handler, and [`serve_stdio`].
//!
//! A failed call is a tool error (`isError`), never a protocol error: its structured content
//! is `{"error": {code, path, message, hint}}` with the stable SR code, and its text says the
//! same in one line. Only an unknown tool name is a protocol error (invalid params).

pub mod catalog;
pub mod http;
pub mod shapes;
pub mod tools;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};

use crate::sandboxes::Daemon;
use shapes::ToolError;

/// The MCP server over a daemon: cheap to clone (one per HTTP request, or one for stdio).
#[derive(Clone)]
pub struct McpServer {
    daemon: Arc<Daemon>,
}

impl McpServer {
    /// The server of `daemon`'s sandboxes.
    pub fn new(daemon: Arc<Daemon>) -> McpServer {
        McpServer { daemon }
    }
}

/// A tool's answer as an MCP result: structured content, and the same as JSON text.
pub fn result(answer: Result<serde_json::Value, ToolError>) -> CallToolResult {
    match answer {
        Ok(v) => CallToolResult::structured(v),
        Err(e) => {
            let line = e.line();
            let mut r = CallToolResult::structured_error(serde_json::json!({ "error": e }));
            r.content = vec![ContentBlock::text(line)];
            r
        }
    }
}

const INSTRUCTIONS: &str = "Sandboxes for running untrusted commands under a policy. \
sandbox_create makes one (answering its id); sandbox_exec runs a command and answers when it \
ends (without id: in a throwaway sandbox); sandbox_exec_start and sandbox_exec_output run a \
long command and read its output by cursor; sandbox_read_file, sandbox_write_file and \
sandbox_list_files reach the policy's mounts and tmpfs; sandbox_kill ends a sandbox and \
writes its signed report, which sandbox_report reads. Programs are absolute paths.";

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("safe-run", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(catalog::tools()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        catalog::tools().into_iter().find(|t| t.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.to_string();
        if !catalog::NAMES.contains(&name.as_str()) {
            return Err(ErrorData::invalid_params(
                format!("no tool {name:?}; tools/list lists them"),
                None,
            ));
        }
        let args = serde_json::Value::Object(request.arguments.unwrap_or_default());
        let daemon = self.daemon.clone();
        // The tools block (processes, pipes): off the runtime's workers.
        let answer = tokio::task::spawn_blocking(move || tools::call(&daemon, &name, args))
            .await
            .unwrap_or_else(|e| {
                Some(Err(ToolError::arguments(
                    "tool",
                    format!("the tool failed: {e}"),
                    "this is a bug; the daemon goes on",
                )))
            });
        let answer = answer.unwrap_or_else(|| {
            Err(ToolError::arguments(
                "tool",
                "no such tool",
                "tools/list lists them",
            ))
        });
        Ok(result(answer).into())
    }
}

/// Serves MCP on stdin and stdout until stdin closes (or SIGTERM/SIGINT), then ends every
/// sandbox with its report. No tokens: whoever holds the pipes owns the process.
pub async fn serve_stdio(daemon: Arc<Daemon>) -> std::io::Result<()> {
    let served = McpServer::new(daemon.clone())
        .serve(rmcp::transport::io::stdio_pipes())
        .await;
    let outcome = match served {
        Ok(running) => {
            let stop = running.cancellation_token();
            tokio::select! {
                _ = running.waiting() => {}
                _ = crate::wait_for_stop_signal() => stop.cancel(),
            }
            Ok(())
        }
        Err(e) => Err(std::io::Error::other(format!("MCP over stdio: {e}"))),
    };
    let _ = tokio::task::spawn_blocking(move || daemon.shutdown()).await;
    outcome
}
