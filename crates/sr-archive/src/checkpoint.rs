//! Signed checkpoints (signed tree heads) of the transparency log. Pure code.
//!
//! A checkpoint is a JSON object:
//!
//! ```json
//! { "format": "safe-run/checkpoint/v1", "treeSize": 20, "rootHash": "<64 hex>",
//!   "time": "2026-12-02T06:00:00.000Z", "keyid": "<16 hex>", "publicKey": "<base64>",
//!   "signature": "<base64 Ed25519>" }
//! ```
//!
//! The signature is over the UTF-8 bytes of the *signed body*, a text of five lines each ending
//! in `\n`, so that any verifier can rebuild it without a JSON library's opinions:
//!
//! ```text
//! safe-run/checkpoint/v1
//! treeSize 20
//! rootHash <64 lowercase hex>
//! time 2026-12-02T06:00:00.000Z
//! keyid <16 hex>
//! ```
//!
//! The key is the report-signing key of sr-evidence; `keyid` is its key id.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sr_evidence::{SigningKey, VerifyingKey, keys};

use crate::merkle::Hash;

/// The `format` of a checkpoint.
pub const CHECKPOINT_FORMAT: &str = "safe-run/checkpoint/v1";

/// A signed tree head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Checkpoint {
    /// Always [`CHECKPOINT_FORMAT`].
    pub format: String,
    /// Number of leaves.
    pub tree_size: u64,
    /// `MTH` of those leaves, lowercase hex.
    pub root_hash: String,
    /// When it was signed, RFC 3339 UTC (host clock; not a trusted timestamp).
    pub time: String,
    /// Key id of the signer.
    pub keyid: String,
    /// The signer's raw public key, base64 (self-asserted; pin the key with `--key`).
    pub public_key: String,
    /// Base64 Ed25519 signature over [`Checkpoint::body`].
    pub signature: String,
}

/// The signed body for these values.
pub fn body(tree_size: u64, root_hash: &str, time: &str, keyid: &str) -> String {
    format!(
        "{CHECKPOINT_FORMAT}\ntreeSize {tree_size}\nrootHash {root_hash}\ntime {time}\nkeyid {keyid}\n"
    )
}

impl Checkpoint {
    /// Signs the tree head `(tree_size, root)` at `time`.
    pub fn sign(tree_size: u64, root: &Hash, time: &str, key: &SigningKey) -> Checkpoint {
        use ed25519_dalek::Signer;
        let public = key.verifying_key();
        let keyid = keys::keyid(&public);
        let root_hash = hex::encode(root);
        let sig = key.sign(body(tree_size, &root_hash, time, &keyid).as_bytes());
        Checkpoint {
            format: CHECKPOINT_FORMAT.to_owned(),
            tree_size,
            root_hash,
            time: time.to_owned(),
            keyid,
            public_key: keys::public_key_base64(&public),
            signature: B64.encode(sig.to_bytes()),
        }
    }

    /// The signed body of this checkpoint.
    pub fn body(&self) -> String {
        body(self.tree_size, &self.root_hash, &self.time, &self.keyid)
    }

    /// The root hash as bytes.
    pub fn root(&self) -> Result<Hash, String> {
        parse_hash(&self.root_hash)
    }

    /// Checks the format and the signature: against `trusted` when given (the embedded key must
    /// be that key), else against the embedded, self-asserted key. Returns the key used.
    pub fn verify(&self, trusted: Option<&VerifyingKey>) -> Result<VerifyingKey, String> {
        if self.format != CHECKPOINT_FORMAT {
            return Err(format!(
                "format is {:?}, expected {CHECKPOINT_FORMAT}",
                self.format
            ));
        }
        self.root()?;
        let embedded = keys::parse_public_key(&self.public_key)
            .map_err(|e| format!("publicKey is not an Ed25519 key: {e}"))?;
        let key = match trusted {
            Some(t) if *t != embedded => {
                return Err(format!(
                    "signed by keyid {}, not by the given key {}",
                    keys::keyid(&embedded),
                    keys::keyid(t)
                ));
            }
            Some(t) => *t,
            None => embedded,
        };
        if keys::keyid(&key) != self.keyid {
            return Err(format!(
                "keyid {} is not the id of its public key ({})",
                self.keyid,
                keys::keyid(&key)
            ));
        }
        let raw = B64
            .decode(&self.signature)
            .map_err(|e| format!("signature is not base64: {e}"))?;
        let raw: [u8; 64] = raw
            .try_into()
            .map_err(|_| "an Ed25519 signature is 64 bytes".to_owned())?;
        key.verify_strict(
            self.body().as_bytes(),
            &ed25519_dalek::Signature::from_bytes(&raw),
        )
        .map_err(|_| "the signature does not verify".to_owned())?;
        Ok(key)
    }
}

/// 64 lowercase hex digits to a hash.
pub fn parse_hash(text: &str) -> Result<Hash, String> {
    if text.len() != 64 || text.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!("{text:?} is not 64 lowercase hex digits"));
    }
    let bytes = hex::decode(text).map_err(|e| format!("{text:?} is not hex: {e}"))?;
    bytes
        .try_into()
        .map_err(|_| format!("{text:?} is not 32 bytes"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn body_is_the_documented_text() {
        let root = [0xabu8; 32];
        let key = SigningKey::from_bytes(&[1; 32]);
        let cp = Checkpoint::sign(7, &root, "2026-12-02T06:00:00.000Z", &key);
        assert_eq!(
            cp.body(),
            format!(
                "safe-run/checkpoint/v1\ntreeSize 7\nrootHash {}\ntime 2026-12-02T06:00:00.000Z\nkeyid {}\n",
                "ab".repeat(32),
                cp.keyid
            )
        );
        cp.verify(None).unwrap();
        cp.verify(Some(&key.verifying_key())).unwrap();
    }

    #[test]
    fn wrong_key_and_edits_are_refused() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let other = SigningKey::from_bytes(&[2; 32]);
        let cp = Checkpoint::sign(7, &[0u8; 32], "t", &key);
        let err = cp.verify(Some(&other.verifying_key())).unwrap_err();
        assert!(err.contains("not by the given key"), "{err}");
        let mut edited = cp.clone();
        edited.tree_size = 8;
        assert!(edited.verify(None).unwrap_err().contains("does not verify"));
        // Re-signed by someone else but claiming the original keyid.
        let mut swapped = Checkpoint::sign(7, &[0u8; 32], "t", &other);
        swapped.keyid = cp.keyid.clone();
        assert!(swapped.verify(None).unwrap_err().contains("keyid"));
    }
}
