//! Errors as the API answers them: `application/problem+json` (RFC 9457) carrying the stable
//! SR code, the path or phase it concerns, and a hint.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sr_common::{Diagnostic, ErrorCode};
use sr_runner::life::{SandboxError, SandboxErrorKind};

/// One failed request (boxed: it travels through every handler's `Result`).
#[derive(Debug, Clone)]
pub struct Problem(Box<Body>);

/// A problem's body as it is sent.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub struct Body {
    /// `about:blank` (the code says what it is).
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: &'static str,
    /// The status's reason phrase.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened.
    pub detail: String,
    /// The stable SR code (`SR-POL-002`, ...), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The policy path or run phase it concerns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Seconds to wait before asking again (also the `Retry-After` header), for 429.
    #[serde(rename = "retryAfter", skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

/// The daemon's own code for a problem of `status` (a problem from a diagnostic carries the
/// diagnostic's code instead).
fn serve_code(status: StatusCode) -> ErrorCode {
    match status.as_u16() {
        401 | 403 => ErrorCode::ServeAuth,
        429 => ErrorCode::ServeLimit,
        409 | 410 => ErrorCode::ServeState,
        400..=499 => ErrorCode::ServeRequest,
        _ => ErrorCode::ServeInternal,
    }
}

impl Problem {
    /// A problem with `status` and `detail` only.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem(Box::new(Body {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            code: Some(serve_code(status).as_str().to_owned()),
            path: None,
            hint: None,
            retry_after: None,
        }))
    }

    /// Refused by a limit: 429 with `Retry-After` (whole seconds, at least one).
    pub fn limited(l: &crate::limits::Limited) -> Problem {
        let mut p = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{} is full ({})", l.limit, l.max),
        )
        .hint(format!(
            "retry after the Retry-After seconds, or raise {} in the operator config",
            l.limit
        ));
        p.0.retry_after = Some(l.retry_after.as_secs_f64().ceil().max(1.0) as u64);
        p
    }

    /// With a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Problem {
        self.0.hint = Some(hint.into());
        self
    }

    /// Its body.
    pub fn body(&self) -> &Body {
        &self.0
    }

    /// `diagnostics`' first, as `status` (the rest are in `detail`).
    pub fn from_diagnostics(status: StatusCode, diagnostics: &[Diagnostic]) -> Problem {
        let Some(first) = diagnostics.first() else {
            return Problem::new(status, "failed");
        };
        let mut detail = first.message.clone();
        for d in &diagnostics[1..] {
            detail.push_str(&format!("; {}: {}", d.path, d.message));
        }
        let mut p = Problem::new(status, detail);
        p.0.code = Some(first.code.to_string());
        p.0.path = Some(first.path.clone());
        p.0.hint = Some(first.hint.clone()).filter(|h| !h.is_empty());
        p
    }

    /// A diagnostic, with the status its code's family means.
    pub fn from_diagnostic(d: &Diagnostic) -> Problem {
        let status = match d.code {
            ErrorCode::PolicyMissingField
            | ErrorCode::PolicyBadFormat
            | ErrorCode::PolicySemanticConflict
            | ErrorCode::PolicyUnreadable
            | ErrorCode::PolicyInvalidNetworkRule
            | ErrorCode::CompileTemplateMapping
            | ErrorCode::CompileIllegalRequest
            | ErrorCode::CompileNetworkPlan => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Problem::from_diagnostics(status, std::slice::from_ref(d))
    }
}

impl From<SandboxError> for Problem {
    fn from(e: SandboxError) -> Problem {
        let status = match e.kind {
            SandboxErrorKind::Gone => StatusCode::CONFLICT,
            SandboxErrorKind::Invalid => StatusCode::BAD_REQUEST,
            SandboxErrorKind::NotFound => StatusCode::NOT_FOUND,
            SandboxErrorKind::OutsideRoot | SandboxErrorKind::PermissionDenied => {
                StatusCode::FORBIDDEN
            }
            SandboxErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            SandboxErrorKind::Unsupported => StatusCode::NOT_IMPLEMENTED,
            SandboxErrorKind::Damaged | SandboxErrorKind::LocalIo => StatusCode::BAD_GATEWAY,
            SandboxErrorKind::Protocol => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Problem::from_diagnostics(status, &[e.to_diagnostic()])
    }
}

impl From<crate::sandboxes::ExecError> for Problem {
    fn from(e: crate::sandboxes::ExecError) -> Problem {
        match e {
            crate::sandboxes::ExecError::Sandbox(e) => e.into(),
            crate::sandboxes::ExecError::Limited(l) => Problem::limited(&l),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&*self.0).unwrap_or_default();
        let mut r = (status, body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = self.0.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}
