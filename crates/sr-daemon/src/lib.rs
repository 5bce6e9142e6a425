//! `safe-run serve`: the control plane for live sandboxes, a thin HTTP layer (tokio + axum)
//! over the same library path as `safe-run run`, so every sandbox it serves ends in the same
//! signed report.
//!
//! * [`api`]: API v1's routes and auth; [`app`] builds the router, so tests need no socket.
//! * [`sandboxes`]: the live sandboxes and their life (create, exec, destroy, reap, shutdown).
//! * [`stdio`]: the same operations as JSON-RPC on stdin/stdout (`serve --stdio`).
//! * [`mcp`]: the same sandboxes as MCP tools, over stdio (`safe-run mcp`) and at `/mcp`.
//! * [`streams`]: execs read as Server-Sent Events, resumable by stream offset.
//! * [`lease`]: a sandbox's deadline and idleness.
//! * [`retention`]: how long an ended sandbox stays reachable.
//! * [`limits`]: execs at once and request rates, per token and over all.
//! * [`pool`]: warm pools of ready sandboxes per template.
//! * [`tokens`]: bearer tokens, kept as hashes.
//! * [`tls`]: TLS on the TCP listener (rustls).
//! * [`problem`]: errors as `application/problem+json`.
//! * [`client`]: a client of a running daemon (`safe-run run --pool`).
//!
//! [`serve`] listens on a Unix socket (0600) and, if asked, on a loopback TCP address; on
//! SIGTERM or SIGINT it stops accepting, destroys every sandbox and writes every report. A
//! sandbox whose own timeout passes is ended by its monitor and its report written by the
//! reaper, whether or not a client is still there.

pub mod api;
pub mod client;
pub mod lease;
pub mod limits;
pub mod mcp;
pub mod pool;
pub mod problem;
pub mod retention;
pub mod sandboxes;
pub mod stdio;
pub mod streams;
pub mod tls;
pub mod tokens;
pub mod waiting;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use api::{AppState, app, openapi};
pub use sandboxes::{Daemon, Host};

/// How often the reaper looks for sandboxes that ended by themselves.
const REAP_EVERY: Duration = Duration::from_millis(250);

/// Where to listen.
#[derive(Debug, Clone)]
pub struct Listen {
    /// The Unix socket.
    pub socket: PathBuf,
    /// A TCP address as well: loopback, or any with `tls`.
    pub tcp: Option<SocketAddr>,
    /// TLS on the TCP address: the certificate chain and private key files (PEM).
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// Why the daemon could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A TCP address that is not loopback, with no TLS to protect it.
    #[error(
        "{0} is not a loopback address; without TLS (serve.tls, --tls-cert/--tls-key) safe-run serve listens on loopback only"
    )]
    NotLoopback(SocketAddr),
    /// The TLS certificate or key cannot be used.
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    /// The socket or address could not be bound.
    #[error("listening on {what}: {source}")]
    Bind {
        /// The socket or address.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Another daemon answers on the socket.
    #[error("{0} is in use by another safe-run serve")]
    InUse(PathBuf),
}

fn bind_socket(path: &Path) -> Result<tokio::net::UnixListener, ServeError> {
    let bind = |source| ServeError::Bind {
        what: path.display().to_string(),
        source,
    };
    if path.exists() {
        // A live daemon answers; a dead one's socket is stale and is replaced.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ServeError::InUse(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(bind)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(bind)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(bind)?;
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(bind)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind)?;
    Ok(listener)
}

/// Serves `state` on `listen` until SIGTERM or SIGINT, then ends every sandbox with its report.
pub async fn serve(state: Arc<AppState>, listen: Listen) -> Result<(), ServeError> {
    if let Some(addr) = listen.tcp
        && !addr.ip().is_loopback()
        && listen.tls.is_none()
    {
        return Err(ServeError::NotLoopback(addr));
    }
    let acceptor = match &listen.tls {
        Some((cert, key)) => Some(tls::acceptor(cert, key)?),
        None => None,
    };
    let unix = bind_socket(&listen.socket)?;
    let tcp = match listen.tcp {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind {
                    what: addr.to_string(),
                    source,
                })?,
        ),
        None => None,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let router = app(state.clone());
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(
        axum::serve(unix, router.clone())
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .into_future(),
    );
    match (tcp, acceptor) {
        (Some(tcp), Some(acceptor)) => {
            let what = format!("{:?}", tcp.local_addr().ok());
            let listener = tls::TlsListener::new(tcp, acceptor)
                .map_err(|source| ServeError::Bind { what, source })?;
            servers.spawn(
                axum::serve(listener, router)
                    .with_graceful_shutdown(stopped(stop_rx.clone()))
                    .into_future(),
            );
        }
        (Some(tcp), None) => {
            servers.spawn(
                axum::serve(tcp, router)
                    .with_graceful_shutdown(stopped(stop_rx.clone()))
                    .into_future(),
            );
        }
        (None, _) => {}
    }
    // The reaper has a thread of its own: a task on the blocking pool every 250 ms would wake
    // its idle threads in turn, and none would ever time out after a burst of execs.
    let (reaper_stop, ticks) = std::sync::mpsc::channel::<()>();
    let reaper_daemon = state.daemon.clone();
    let reaper = std::thread::Builder::new()
        .name("sr-reaper".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                ticks.recv_timeout(REAP_EVERY)
            {
                reaper_daemon.reap();
                reaper_daemon.replenish();
            }
        })
        .map_err(|source| ServeError::Bind {
            what: "the reaper thread".into(),
            source,
        })?;
    wait_for_stop_signal().await;
    let _ = stop_tx.send(true);
    while servers.join_next().await.is_some() {}
    drop(reaper_stop);
    let _ = tokio::task::spawn_blocking(move || reaper.join()).await;
    let daemon = state.daemon.clone();
    let _ = tokio::task::spawn_blocking(move || daemon.shutdown()).await;
    let _ = std::fs::remove_file(&listen.socket);
    Ok(())
}

pub(crate) async fn wait_for_stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // No handler could be installed: serve until killed (a later start recovers).
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
