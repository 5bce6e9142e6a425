//! `safe-run serve --stdio`: the daemon's operations as newline-delimited JSON-RPC 2.0 on
//! stdin and stdout, for frameworks that spawn one process per agent conversation. There are
//! no tokens: whoever holds the pipes is the process's owner. Every sandbox the conversation
//! made is ended with its report when stdin closes.
//!
//! Methods: `sandbox.create {policy | template}`, `sandbox.list`, `sandbox.get {id}`,
//! `sandbox.exec {id, argv, env?, cwd?, stdin?, timeoutMs?}` (answers when it ends),
//! `sandbox.writeFile {id, path, text | base64, mode?}`, `sandbox.readFile {id, path}`,
//! `sandbox.listFiles {id, path}`, `sandbox.removeFile {id, path, recursive?}`,
//! `sandbox.kill {id}`, `sandbox.report {id}`.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use sr_common::Diagnostic;
use sr_runner::life::{ExecRequest, SandboxError};

use crate::sandboxes::{CreateError, Daemon, Live};
use crate::waiting::{WaitError, run_waiting};

/// The longest request line.
pub const MAX_LINE: usize = 64 << 20;

/// A JSON-RPC error: its code, message and data.
struct RpcError(i64, String, Value);

impl RpcError {
    fn params(e: impl std::fmt::Display) -> RpcError {
        RpcError(-32602, format!("invalid params: {e}"), Value::Null)
    }

    fn diagnostics(code: i64, ds: &[Diagnostic]) -> RpcError {
        let first = ds.first();
        RpcError(
            code,
            first.map(|d| d.message.clone()).unwrap_or_default(),
            json!(ds
                .iter()
                .map(|d| json!({"code": d.code.to_string(), "path": d.path, "message": d.message, "hint": d.hint}))
                .collect::<Vec<_>>()),
        )
    }
}

impl From<SandboxError> for RpcError {
    fn from(e: SandboxError) -> RpcError {
        RpcError::diagnostics(-32001, &[e.to_diagnostic()])
    }
}

fn params<T: for<'de> Deserialize<'de>>(v: Value) -> Result<T, RpcError> {
    serde_json::from_value(v).map_err(RpcError::params)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Id {
    id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Exec {
    id: String,
    argv: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    stdin: Option<String>,
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePath {
    id: String,
    path: String,
    #[serde(default)]
    recursive: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteFile {
    id: String,
    path: String,
    text: Option<String>,
    base64: Option<String>,
    mode: Option<u32>,
}

fn live(daemon: &Daemon, id: &str) -> Result<std::sync::Arc<Live>, RpcError> {
    daemon
        .get(id)
        .ok_or_else(|| RpcError(-32004, format!("no sandbox {id}"), Value::Null))
}

fn call(daemon: &Daemon, method: &str, p: Value) -> Result<Value, RpcError> {
    let ok = |v: Result<Value, serde_json::Error>| {
        v.map_err(|e| RpcError(-32603, e.to_string(), Value::Null))
    };
    match method {
        "sandbox.create" => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Create {
                policy: Option<String>,
                template: Option<String>,
            }
            let c: Create = params(p)?;
            let made = match (c.policy, c.template) {
                (Some(policy), None) => daemon.create(&policy),
                (None, Some(template)) => daemon.create_from_template(&template),
                _ => return Err(RpcError::params("give exactly one of policy and template")),
            };
            match made {
                Ok((l, _token)) => ok(serde_json::to_value(l.view())),
                Err(CreateError::Policy(ds)) => Err(RpcError::diagnostics(-32002, &ds)),
                Err(CreateError::Full(l)) => Err(RpcError(
                    -32003,
                    format!("{} sandboxes are alive, the most {} allows", l.max, l.limit),
                    Value::Null,
                )),
                Err(CreateError::Start(ds)) => Err(RpcError::diagnostics(-32001, &ds)),
            }
        }
        "sandbox.list" => ok(serde_json::to_value(
            daemon.list().iter().map(|l| l.view()).collect::<Vec<_>>(),
        )),
        "sandbox.get" => ok(serde_json::to_value(
            live(daemon, &params::<Id>(p)?.id)?.view(),
        )),
        "sandbox.exec" => {
            let e: Exec = params(p)?;
            let l = live(daemon, &e.id)?;
            let req = ExecRequest {
                argv: e.argv,
                env: e.env,
                cwd: e.cwd,
                timeout: e.timeout_ms.map(Duration::from_millis),
                stdin: e.stdin.is_some(),
                tty: None,
            };
            match run_waiting(&l, &req, e.stdin) {
                Ok(done) => ok(serde_json::to_value(done)),
                Err(WaitError::Sandbox(s)) => Err(s.into()),
                Err(WaitError::Limited(l)) => Err(RpcError(
                    -32003,
                    format!("{} is full ({})", l.limit, l.max),
                    serde_json::json!({"retryAfterMs": l.retry_after.as_millis() as u64}),
                )),
                Err(WaitError::Failed(d)) => Err(RpcError::diagnostics(-32005, &[d])),
                Err(WaitError::Ended) => Err(RpcError(
                    -32006,
                    "the sandbox ended during the exec".into(),
                    Value::Null,
                )),
            }
        }
        "sandbox.writeFile" => {
            let w: WriteFile = params(p)?;
            let bytes = match (w.text, w.base64) {
                (Some(t), None) => t.into_bytes(),
                (None, Some(b)) => base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map_err(RpcError::params)?,
                _ => return Err(RpcError::params("give exactly one of text and base64")),
            };
            let mode = w.mode.unwrap_or(0o644);
            let moved = live(daemon, &w.id)?.with_sandbox(|sb| {
                sb.put_file(&w.path, mode, bytes.len() as u64, &mut bytes.as_slice())
            })?;
            Ok(json!({"size": moved.size, "sha256": moved.sha256}))
        }
        "sandbox.readFile" => {
            let f: FilePath = params(p)?;
            let bytes = live(daemon, &f.id)?.with_sandbox(|sb| {
                let mut out = Vec::new();
                sb.get_file(&f.path, &mut out).map(|_| out)
            })?;
            Ok(match String::from_utf8(bytes) {
                Ok(text) => json!({"text": text}),
                Err(e) => {
                    json!({"base64": base64::engine::general_purpose::STANDARD.encode(e.into_bytes())})
                }
            })
        }
        "sandbox.listFiles" => {
            let f: FilePath = params(p)?;
            let entries = live(daemon, &f.id)?.with_sandbox(|sb| sb.list(&f.path))?;
            Ok(Value::Array(crate::sandboxes::listing(&entries)))
        }
        "sandbox.removeFile" => {
            let f: FilePath = params(p)?;
            live(daemon, &f.id)?.with_sandbox(|sb| sb.remove(&f.path, f.recursive))?;
            Ok(Value::Null)
        }
        "sandbox.kill" => {
            let l = live(daemon, &params::<Id>(p)?.id)?;
            ok(serde_json::to_value(l.destroy(daemon.host.signer.as_ref())))
        }
        "sandbox.report" => {
            let l = live(daemon, &params::<Id>(p)?.id)?;
            let path = l.report_path().ok_or_else(|| {
                RpcError(
                    -32007,
                    "the sandbox is still running (sandbox.kill ends it)".into(),
                    Value::Null,
                )
            })?;
            let bytes =
                std::fs::read(&path).map_err(|e| RpcError(-32603, e.to_string(), Value::Null))?;
            serde_json::from_slice(&bytes).map_err(|e| RpcError(-32603, e.to_string(), Value::Null))
        }
        other => Err(RpcError(-32601, format!("no method {other}"), Value::Null)),
    }
}

fn answer(line: &str, daemon: &Daemon) -> Option<Value> {
    let req: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => {
            return Some(
                json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": format!("parse error: {e}")}}),
            );
        }
    };
    let id = req.get("id").cloned();
    let method = req.get("method").and_then(Value::as_str);
    let (Some(method), Some("2.0")) = (method, req.get("jsonrpc").and_then(Value::as_str)) else {
        return Some(
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32600, "message": "not a JSON-RPC 2.0 request"}}),
        );
    };
    let result = call(
        daemon,
        method,
        req.get("params").cloned().unwrap_or(json!({})),
    );
    // A notification (no id) gets no answer.
    let id = id?;
    Some(match result {
        Ok(v) => json!({"jsonrpc": "2.0", "id": id, "result": v}),
        Err(RpcError(code, message, data)) => {
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message, "data": data}})
        }
    })
}

/// Serves requests from `input` to `output` until `input` ends, then ends every sandbox with
/// its report.
pub fn serve_stdio(
    daemon: &Daemon,
    mut input: impl BufRead,
    mut output: impl Write,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = std::io::Read::take(&mut input, MAX_LINE as u64 + 1).read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        let reply = if buf.len() > MAX_LINE && buf.last() != Some(&b'\n') {
            // Skip the rest of the oversized line.
            let mut rest = Vec::new();
            while input.read_until(b'\n', &mut rest)? > 0 && rest.last() != Some(&b'\n') {
                rest.clear();
            }
            Some(
                json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": format!("a request line longer than {MAX_LINE} bytes")}}),
            )
        } else {
            let line = String::from_utf8_lossy(&buf);
            let line = line.trim();
            (!line.is_empty()).then(|| answer(line, daemon)).flatten()
        };
        if let Some(r) = reply {
            writeln!(output, "{r}")?;
            output.flush()?;
        }
    }
    daemon.shutdown();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon() -> Daemon {
        Daemon::new(crate::Host {
            config: sr_policy::OperatorConfig::default(),
            layout: sr_runner::cgroup::Layout::V2 {
                root: "/nonexistent".into(),
            },
            init_exe: "/nonexistent".into(),
            signer: None,
        })
    }

    fn run(input: &str) -> Vec<Value> {
        let mut out = Vec::new();
        serve_stdio(&daemon(), input.as_bytes(), &mut out).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn malformed_lines_get_json_rpc_errors_and_notifications_no_answer() {
        let answers = run(concat!(
            "{not json\n",
            "{\"id\": 1, \"method\": \"sandbox.list\"}\n",
            "{\"jsonrpc\": \"2.0\", \"id\": 2, \"method\": \"nope\"}\n",
            "{\"jsonrpc\": \"2.0\", \"id\": 3, \"method\": \"sandbox.list\"}\n",
            "{\"jsonrpc\": \"2.0\", \"method\": \"sandbox.list\"}\n",
            "\n",
            "{\"jsonrpc\": \"2.0\", \"id\": 4, \"method\": \"sandbox.get\", \"params\": {\"id\": \"x\", \"extra\": 1}}\n",
            "{\"jsonrpc\": \"2.0\", \"id\": 5, \"method\": \"sandbox.create\", \"params\": {\"policy\": \"version: 1\"}}\n",
        ));
        let codes: Vec<Value> = answers.iter().map(|a| a["error"]["code"].clone()).collect();
        assert_eq!(
            codes,
            [
                json!(-32700),
                json!(-32600),
                json!(-32601),
                Value::Null,
                json!(-32602),
                json!(-32002)
            ],
            "{answers:?}"
        );
        assert_eq!(answers[3]["result"], json!([]));
        assert!(
            answers[5]["error"]["data"][0]["code"]
                .as_str()
                .unwrap()
                .starts_with("SR-POL-")
        );
    }
}
