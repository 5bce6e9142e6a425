//! The one error type of the artifact build, each variant mapped to a stable `SR-ART-*` code.

use std::path::Path;

use sr_common::{Diagnostic, ErrorCode};

/// A failed artifact build. `step` is where (`agent`, `kernel`, `modules`, `initramfs`,
/// `rootfs`, `packages`, `manifest`, `out`); it becomes the diagnostic's path.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// An input is unusable (SR-ART-001).
    #[error("{message}")]
    Input {
        /// The step.
        step: &'static str,
        /// Why.
        message: String,
        /// What to do.
        hint: String,
    },
    /// A host tool failed or is missing (SR-ART-002).
    #[error("{command}: {reason}")]
    Tool {
        /// The step.
        step: &'static str,
        /// The command line.
        command: String,
        /// The exit status and the end of stderr, or why it could not start.
        reason: String,
    },
    /// A package does not hold what the build needs (SR-ART-003).
    #[error("{message}")]
    Content {
        /// The step.
        step: &'static str,
        /// Why.
        message: String,
    },
    /// A file could not be read or written (SR-ART-004).
    #[error("{path}")]
    Io {
        /// The step.
        step: &'static str,
        /// The file.
        path: String,
        /// The system's reason.
        source: std::io::Error,
    },
}

impl ArtifactError {
    /// An I/O error on `path`.
    pub fn io(step: &'static str, path: &Path, source: std::io::Error) -> Self {
        ArtifactError::Io {
            step,
            path: path.display().to_string(),
            source,
        }
    }

    /// A content error.
    pub fn content(step: &'static str, message: impl Into<String>) -> Self {
        ArtifactError::Content {
            step,
            message: message.into(),
        }
    }

    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            ArtifactError::Input { .. } => ErrorCode::ArtifactInput,
            ArtifactError::Tool { .. } => ErrorCode::ArtifactTool,
            ArtifactError::Content { .. } => ErrorCode::ArtifactContent,
            ArtifactError::Io { .. } => ErrorCode::ArtifactIo,
        }
    }

    /// The step it failed in.
    pub fn step(&self) -> &'static str {
        match self {
            ArtifactError::Input { step, .. }
            | ArtifactError::Tool { step, .. }
            | ArtifactError::Content { step, .. }
            | ArtifactError::Io { step, .. } => step,
        }
    }

    /// The diagnostic a person or a program sees.
    pub fn to_diagnostic(&self) -> Diagnostic {
        let hint = match self {
            ArtifactError::Input { hint, .. } => hint.clone(),
            ArtifactError::Tool { .. } => {
                "install the tool (scripts/setup.sh does: apt-get install \
                kmod e2fsprogs xz-utils zstd), run `apt-get update`, and run as root"
                    .into()
            }
            ArtifactError::Content { .. } => {
                "run `apt-get update` and build again; if it persists, \
                the Debian package changed its layout: see docs/artifacts.md"
                    .into()
            }
            ArtifactError::Io { .. } => "check that the directory exists, has space, and is \
                writable by this user (the default output and cache directories need root)"
                .into(),
        };
        Diagnostic::new(self.code(), self.step(), sr_common::error_chain(self), hint)
    }
}
