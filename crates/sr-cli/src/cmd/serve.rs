//! `safe-run serve`: the control plane for live sandboxes (docs/serve.md). The daemon itself is
//! the sr-daemon library; this owns its flags, the host checks before it listens, and the
//! runtime it runs on.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use sr_common::Diagnostic;
use sr_daemon::{AppState, Daemon, Listen};

use super::host::startup;
use crate::output::{Format, fail};

/// Arguments of `safe-run serve`.
#[derive(Args)]
#[command(after_help = "Examples:
  safe-run token create --scopes admin       # prints a token once; keep it
  safe-run serve                             # on serve.socket (/run/safe-run/serve.sock)
  safe-run serve --listen 127.0.0.1:8470     # and on a loopback port
  safe-run serve --listen 0.0.0.0:8443 --tls-cert cert.pem --tls-key key.pem   # TLS, any address
  curl --unix-socket /run/safe-run/serve.sock -H \"Authorization: Bearer $TOKEN\" \\
       -d '{\"policy\": \"version: 1\\nname: t\\nruntime: {command: /bin/true, args: []}\\nmounts: []\\n\"}' \\
       http://safe-run/v1/sandboxes

  safe-run serve --stdio                     # JSON-RPC on stdin/stdout, one conversation

Every sandbox ends in a signed run report (GET /v1/sandboxes/ID/report after DELETE), as a
`safe-run run` does. SIGTERM or SIGINT: stop accepting, destroy every sandbox, write every report.")]
pub struct ServeArgs {
    /// The Unix socket to listen on (default: serve.socket of the operator config).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// A loopback TCP address to listen on as well (default: serve.listen).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// The token file (default: serve.tokensPath).
    #[arg(long, value_name = "FILE")]
    tokens: Option<PathBuf>,
    /// TLS on --listen: the certificate chain (PEM; default: serve.tls.cert). With TLS the
    /// address may be any, not only loopback.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS on --listen: the private key (PEM; default: serve.tls.key).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Newline-delimited JSON-RPC 2.0 on stdin/stdout instead of HTTP (no tokens: the pipes'
    /// owner is trusted); every sandbox ends with its report when stdin closes.
    #[arg(long, conflicts_with_all = ["socket", "listen", "tokens", "tls_cert", "tls_key"])]
    stdio: bool,
}

/// Runs the daemon until SIGTERM/SIGINT; returns the process exit code.
pub fn execute(args: ServeArgs) -> u8 {
    match serve(args) {
        Ok(()) => 0,
        Err(d) => fail(&[d], Format::Text),
    }
}

fn serve(args: ServeArgs) -> Result<(), Diagnostic> {
    let host = super::host::prepare()?;
    if args.stdio {
        let daemon = Daemon::new(host);
        return sr_daemon::stdio::serve_stdio(
            &daemon,
            std::io::stdin().lock(),
            std::io::stdout().lock(),
        )
        .map_err(|e| {
            startup(
                "serve.stdio",
                format!("stdin/stdout: {e}"),
                "see docs/serve.md",
            )
        });
    }
    let config = &host.config;
    let listen = Listen {
        socket: args
            .socket
            .unwrap_or_else(|| PathBuf::from(&config.serve.socket)),
        tcp: match args.listen {
            Some(a) => Some(a),
            None => config
                .serve
                .listen
                .as_deref()
                .map(|a| {
                    a.parse().map_err(|e| {
                        startup(
                            "serve.listen",
                            format!("{a:?} is not an address: {e}"),
                            "write it as 127.0.0.1:8470",
                        )
                    })
                })
                .transpose()?,
        },
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            _ => config
                .serve
                .tls
                .as_ref()
                .map(|t| (PathBuf::from(&t.cert), PathBuf::from(&t.key))),
        },
    };
    let tokens_path = args
        .tokens
        .unwrap_or_else(|| PathBuf::from(&config.serve.tokens_path));
    let daemon = Arc::new(Daemon::new(host));
    let state = Arc::new(AppState::new(daemon, tokens_path));
    let runtime = super::host::runtime()?;
    eprintln!("safe-run serve: listening on {}", listen.socket.display());
    runtime
        .block_on(sr_daemon::serve(state, listen))
        .map_err(|e| startup("serve.listen", e.to_string(), "see docs/serve.md"))
}
