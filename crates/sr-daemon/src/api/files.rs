//! `/v1/sandboxes/{id}/files/{path}`: a file's bytes (get, put, remove) and a directory's
//! listing, only where the sandbox's policy mounts allow.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::{caller, reach};
use super::{AppState, blocking};
use crate::problem::Problem;
use crate::tokens::Scope;

#[derive(Debug, Deserialize)]
pub(super) struct FileQuery {
    /// Permission bits of a put (default 0644).
    mode: Option<String>,
    /// A GET of a directory: its listing instead of its content.
    #[serde(default)]
    list: bool,
    /// A DELETE of a non-empty directory.
    #[serde(default)]
    recursive: bool,
    /// `tar`: a GET packs the directory at the path into a tar stream; a PUT unpacks the body
    /// (a tar stream) into the directory at the path.
    format: Option<Format>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Format {
    /// The bytes of one file (the default).
    Raw,
    /// A tar stream of a directory.
    Tar,
}

pub(super) fn absolute(path: &str) -> String {
    format!("/{path}")
}

/// `GET .../files/{path}`: the file's bytes, or with `?list=true` a directory's entries.
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/files/{path}",
    tag = "files",
    summary = "The bytes of a file, the listing of a directory (list=true) or its tar stream (format=tar)",
    params(
        ("id" = String, Path, description = "The sandbox id"),
        ("path" = String, Path, description = "The path inside the sandbox, without its leading slash"),
        ("list" = Option<bool>, Query, description = "The entries of a directory"),
        ("format" = Option<String>, Query, description = "raw or tar"),
    ),
    responses(
        (status = 200, description = "The bytes, a listing or a tar stream", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = "4XX", description = "Refused: the problem says why (SR code, hint); 429 carries Retry-After", body = crate::problem::Body, content_type = "application/problem+json"),
        (status = "5XX", description = "The daemon or the sandbox failed", body = crate::problem::Body, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn get_file(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, path)): Path<(String, String)>,
    Query(q): Query<FileQuery>,
) -> Result<Response, Problem> {
    let c = caller(&state, &headers)?;
    let live = reach(&state, &c, &id, Scope::Read)?;
    let path = absolute(&path);
    if q.list {
        let entries = blocking(move || live.with_sandbox(|sb| sb.list(&path))).await??;
        return Ok(Json(crate::sandboxes::listing(&entries)).into_response());
    }
    let tar = q.format == Some(Format::Tar);
    let bytes = blocking(move || {
        live.with_sandbox(|sb| {
            let mut out = Vec::new();
            if tar {
                sb.get_tar(&path, &mut out).map(|_| out)
            } else {
                sb.get_file(&path, &mut out).map(|_| out)
            }
        })
    })
    .await??;
    let kind = if tar {
        "application/x-tar"
    } else {
        "application/octet-stream"
    };
    Ok(([(header::CONTENT_TYPE, kind)], bytes).into_response())
}

/// `PUT .../files/{path}`: the body becomes the file (`?mode=0600`), or with `?format=tar` is
/// unpacked into the directory (`?mode`: the directory's, when it is made).
#[utoipa::path(
    put,
    path = "/v1/sandboxes/{id}/files/{path}",
    tag = "files",
    summary = "Write a file, or unpack a tar stream into a directory (format=tar)",
    params(
        ("id" = String, Path, description = "The sandbox id"),
        ("path" = String, Path, description = "The path inside the sandbox, without its leading slash"),
        ("mode" = Option<String>, Query, description = "Octal permission bits"),
        ("format" = Option<String>, Query, description = "raw or tar"),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Size and digest of what arrived", body = Object),
        (status = "4XX", description = "Refused: the problem says why (SR code, hint); 429 carries Retry-After", body = crate::problem::Body, content_type = "application/problem+json"),
        (status = "5XX", description = "The daemon or the sandbox failed", body = crate::problem::Body, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn put_file(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, path)): Path<(String, String)>,
    Query(q): Query<FileQuery>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, Problem> {
    let c = caller(&state, &headers)?;
    let live = reach(&state, &c, &id, Scope::Create)?;
    let tar = q.format == Some(Format::Tar);
    let mode = match q.mode.as_deref() {
        None if tar => 0o755,
        None => 0o644,
        Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    format!("mode {m:?} is not octal permission bits"),
                )
                .hint("e.g. ?mode=0644")
            })?,
    };
    let path = absolute(&path);
    let moved = blocking(move || {
        live.with_sandbox(|sb| {
            let size = body.len() as u64;
            if tar {
                sb.put_tar(&path, mode, size, &mut body.as_ref())
            } else {
                sb.put_file(&path, mode, size, &mut body.as_ref())
            }
        })
    })
    .await??;
    Ok(Json(
        serde_json::json!({"size": moved.size, "sha256": moved.sha256}),
    ))
}

/// `DELETE .../files/{path}` (`?recursive=true` for a non-empty directory).
#[utoipa::path(
    delete,
    path = "/v1/sandboxes/{id}/files/{path}",
    tag = "files",
    summary = "Remove a file or directory",
    params(
        ("id" = String, Path, description = "The sandbox id"),
        ("path" = String, Path, description = "The path inside the sandbox, without its leading slash"),
        ("recursive" = Option<bool>, Query, description = "A non-empty directory too"),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = "4XX", description = "Refused: the problem says why (SR code, hint); 429 carries Retry-After", body = crate::problem::Body, content_type = "application/problem+json"),
        (status = "5XX", description = "The daemon or the sandbox failed", body = crate::problem::Body, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn remove_file(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, path)): Path<(String, String)>,
    Query(q): Query<FileQuery>,
) -> Result<StatusCode, Problem> {
    let c = caller(&state, &headers)?;
    let live = reach(&state, &c, &id, Scope::Create)?;
    let path = absolute(&path);
    blocking(move || live.with_sandbox(|sb| sb.remove(&path, q.recursive))).await??;
    Ok(StatusCode::NO_CONTENT)
}
