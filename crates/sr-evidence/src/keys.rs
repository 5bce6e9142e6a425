//! The report-signing key: created on first use, refused when it could have been read or swapped
//! by someone else.
//!
//! * Private key file: PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, RFC 8410), mode 0600, in a
//!   directory created 0700. PKCS#8 is what `openssl pkey` reads, so operators can inspect or
//!   rotate keys with standard tools.
//! * Public key: raw 32 bytes, shown base64; exported as SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
//!   [`parse_public_key`] reads either form.
//! * Key id: the first 16 hex digits of SHA-256 over the raw 32-byte public key. It is a name
//!   for display and lookup only; verification always uses the key itself.
//!
//! A key file that is a symlink, not a regular file, or readable/writable by group or others
//! is refused: a symlink can point the signer at a key someone else controls, and a key others
//! can read can sign forged reports.

use std::fs::{DirBuilder, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::canonical::sha256_hex;
use crate::error::EvidenceError;

/// Environment variable overriding the key path (the operator config's `keyPath` otherwise).
pub const KEY_ENV: &str = "SAFE_RUN_KEY";

/// The key id of a public key: 16 hex digits of SHA-256 over its raw bytes.
pub fn keyid(key: &VerifyingKey) -> String {
    let mut id = sha256_hex(key.as_bytes());
    id.truncate(16);
    id
}

/// The raw public key, base64.
pub fn public_key_base64(key: &VerifyingKey) -> String {
    B64.encode(key.as_bytes())
}

/// The public key as SPKI PEM.
pub fn public_key_pem(key: &VerifyingKey) -> Result<String, EvidenceError> {
    key.to_public_key_pem(LineEnding::LF)
        .map_err(|e| EvidenceError::ReportEncode {
            reason: format!("cannot encode the public key: {e}"),
        })
}

/// Reads a public key from text: SPKI PEM, or the base64 of the raw 32 bytes.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    let text = text.trim();
    if text.starts_with("-----BEGIN PUBLIC KEY-----") {
        return VerifyingKey::from_public_key_pem(text).map_err(|e| e.to_string());
    }
    let bytes = B64
        .decode(text)
        .map_err(|e| format!("neither a PEM public key nor base64: {e}"))?;
    let raw: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "an Ed25519 public key is 32 bytes".to_owned())?;
    VerifyingKey::from_bytes(&raw).map_err(|e| e.to_string())
}

/// Reads a public key file (see [`parse_public_key`]).
pub fn read_public_key(path: &Path) -> Result<VerifyingKey, EvidenceError> {
    let text = std::fs::read_to_string(path).map_err(|source| EvidenceError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_public_key(&text).map_err(|reason| EvidenceError::Parse {
        path: path.to_owned(),
        what: "public key",
        reason,
    })
}

/// Loads the signing key at `path`; see the module docs for what is refused.
pub fn load(path: &Path) -> Result<SigningKey, EvidenceError> {
    let insecure = |reason: String| EvidenceError::KeyInsecure {
        path: path.to_owned(),
        reason,
    };
    let meta = std::fs::symlink_metadata(path).map_err(|source| EvidenceError::Read {
        path: path.to_owned(),
        source,
    })?;
    if meta.file_type().is_symlink() {
        return Err(insecure("it is a symlink".into()));
    }
    if !meta.is_file() {
        return Err(insecure("it is not a regular file".into()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(insecure(format!(
            "mode {mode:04o} lets group or others access it"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|source| EvidenceError::Read {
        path: path.to_owned(),
        source,
    })?;
    SigningKey::from_pkcs8_pem(&text).map_err(|e| EvidenceError::Parse {
        path: path.to_owned(),
        what: "PKCS#8 PEM Ed25519 private key",
        reason: e.to_string(),
    })
}

/// Loads the key at `path`, creating it (and its directory, 0700) when it does not exist.
/// Returns the key and whether it was created now.
pub fn load_or_create(path: &Path) -> Result<(SigningKey, bool), EvidenceError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => return load(path).map(|k| (k, false)),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(source) => {
            return Err(EvidenceError::Read {
                path: path.to_owned(),
                source,
            });
        }
    }
    let create_err = |source| EvidenceError::KeyCreate {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(create_err)?;
    }
    let key = SigningKey::generate(&mut rand_core::OsRng);
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| EvidenceError::ReportEncode {
            reason: format!("cannot encode the new key: {e}"),
        })?;
    let mut file = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => f,
        // Another process created it between our check and now: use theirs.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return load(path).map(|k| (k, false)),
        Err(source) => return Err(create_err(source)),
    };
    file.write_all(pem.as_bytes()).map_err(create_err)?;
    file.sync_all().map_err(create_err)?;
    Ok((key, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyid_is_16_hex_of_sha256_of_raw_key() {
        let key = SigningKey::from_bytes(&[7u8; 32]).verifying_key();
        let id = keyid(&key);
        assert_eq!(id.len(), 16);
        assert_eq!(id, sha256_hex(key.as_bytes())[..16]);
    }

    #[test]
    fn public_key_parses_from_pem_and_base64() {
        let key = SigningKey::from_bytes(&[9u8; 32]).verifying_key();
        assert_eq!(
            parse_public_key(&public_key_pem(&key).unwrap()).unwrap(),
            key
        );
        assert_eq!(parse_public_key(&public_key_base64(&key)).unwrap(), key);
        assert!(parse_public_key("AAAA").is_err());
        assert!(parse_public_key("not a key").is_err());
    }
}
