//! Bearer tokens: made once, shown once, kept only as their SHA-256. A token is `srt_` and 43
//! characters of base64url (32 random bytes from the OS). The operator's tokens live in a file
//! of hashes (`serve.tokensPath`, 0600) that `safe-run token create` appends to; each sandbox
//! gets a token of its own when it is created, kept in memory, that reaches only that sandbox.
//! Comparisons hash the presented token and compare digests in constant time, so neither the
//! file nor the timing of a refusal tells anything about a valid token.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The prefix of every token (so a leaked one is recognisable in a scan).
pub const PREFIX: &str = "srt_";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Scope {
    /// Everything.
    Admin,
    /// Create sandboxes (and use the sandbox tokens that come back).
    Create,
    /// Read sandboxes' state and reports.
    Read,
}

impl Scope {
    /// The scope named `name`.
    pub fn parse(name: &str) -> Option<Scope> {
        match name {
            "admin" => Some(Scope::Admin),
            "create" => Some(Scope::Create),
            "read" => Some(Scope::Read),
            _ => None,
        }
    }
}

/// A token's SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// The hash of `token`.
    pub fn of(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    /// Whether `other` is the same hash, in constant time.
    pub fn matches(&self, other: &TokenHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// The hash's bytes (a key for per-token counters).
    pub fn bytes(&self) -> [u8; 32] {
        self.0
    }

    /// Lowercase hex.
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    fn from_hex(text: &str) -> Option<TokenHash> {
        let bytes = hex::decode(text).ok()?;
        Some(TokenHash(bytes.try_into().ok()?))
    }
}

/// A new random token.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// One operator token as the file keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StoredToken {
    /// A short name for logs and listings: the first 12 hex digits of the hash.
    pub id: String,
    /// The hash, hex.
    pub sha256: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
}

/// The operator's tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    /// Every token, in the order they were made.
    pub tokens: Vec<StoredToken>,
}

/// Why the token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// It could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// It is not a token file.
    #[error("{path}: not a token file: {reason}")]
    Malformed {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

impl TokenFile {
    /// Reads `path`; a missing file is an empty one.
    pub fn load(path: &Path) -> Result<TokenFile, TokenFileError> {
        let shown = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TokenFile::default()),
            Err(source) => {
                return Err(TokenFileError::Io {
                    path: shown,
                    source,
                });
            }
        };
        serde_json::from_str(&text).map_err(|e| TokenFileError::Malformed {
            path: shown,
            reason: e.to_string(),
        })
    }

    /// Makes a token with `scopes`, appends its hash to the file at `path` (created 0600, its
    /// directory 0700) and returns the token itself, which exists nowhere else.
    pub fn create(
        path: &Path,
        scopes: Vec<Scope>,
    ) -> Result<(String, StoredToken), TokenFileError> {
        let io = |source| TokenFileError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut file = TokenFile::load(path)?;
        let token = generate();
        let hash = TokenHash::of(&token).to_hex();
        let stored = StoredToken {
            id: hash[..12].to_owned(),
            sha256: hash,
            scopes,
        };
        file.tokens.push(stored.clone());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
        let tmp = path.with_extension("tmp");
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        let text = serde_json::to_vec_pretty(&file).unwrap_or_default();
        out.write_all(&text)
            .and_then(|()| out.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok((token, stored))
    }

    /// The scopes of the stored token `token` hashes to, if any.
    pub fn scopes_of(&self, token: &TokenHash) -> Option<Vec<Scope>> {
        let mut found = None;
        // Every entry is compared, so the time does not depend on which one matched.
        for t in &self.tokens {
            if let Some(h) = TokenHash::from_hex(&t.sha256)
                && h.matches(token)
            {
                found = Some(t.scopes.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_token_is_found_by_its_hash_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/tokens.json");
        let (token, stored) = TokenFile::create(&path, vec![Scope::Read]).unwrap();
        assert!(token.starts_with(PREFIX) && token.len() == PREFIX.len() + 43);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(&token[PREFIX.len()..]),
            "the file keeps the token itself"
        );
        assert!(text.contains(&stored.sha256));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let file = TokenFile::load(&path).unwrap();
        assert_eq!(
            file.scopes_of(&TokenHash::of(&token)),
            Some(vec![Scope::Read])
        );
        assert_eq!(file.scopes_of(&TokenHash::of("srt_wrong")), None);
        let (second, _) = TokenFile::create(&path, vec![Scope::Admin]).unwrap();
        assert_ne!(second, token);
        assert_eq!(TokenFile::load(&path).unwrap().tokens.len(), 2);
    }

    #[test]
    fn a_malformed_file_is_an_error_not_an_empty_list() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(
            TokenFile::load(&path),
            Err(TokenFileError::Malformed { .. })
        ));
    }
}
