//! Proof files and their offline verification: an inclusion proof of one report, a
//! consistency proof between two checkpoints. Pure code over bytes already read.
//!
//! Inclusion proof (`safe-run report prove`):
//!
//! ```json
//! { "format": "safe-run/inclusion-proof/v1", "runId": "3f9c0a1b2c4d",
//!   "reportDigest": "sha256:<hex of the report file>", "leafIndex": 4, "treeSize": 20,
//!   "leafHash": "<hex>", "auditPath": ["<hex>", "..."], "rootHash": "<hex>",
//!   "checkpoint": { "format": "safe-run/checkpoint/v1", "...": "..." } }
//! ```
//!
//! Consistency proof (`safe-run log consistency --out`):
//!
//! ```json
//! { "format": "safe-run/consistency-proof/v1", "oldSize": 10, "newSize": 20,
//!   "oldRoot": "<hex>", "newRoot": "<hex>", "path": ["<hex>", "..."] }
//! ```

use serde::{Deserialize, Serialize};
use sr_evidence::VerifyingKey;
use sr_evidence::verify::{Check, Status};

use crate::checkpoint::{Checkpoint, parse_hash};
use crate::merkle::{self, Hash};
use crate::record::file_digest;

/// The `format` of an inclusion proof.
pub const INCLUSION_FORMAT: &str = "safe-run/inclusion-proof/v1";
/// The `format` of a consistency proof.
pub const CONSISTENCY_FORMAT: &str = "safe-run/consistency-proof/v1";

/// An inclusion proof of one report in the log, with the signed checkpoint it leads to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InclusionProof {
    /// Always [`INCLUSION_FORMAT`].
    pub format: String,
    /// The run.
    pub run_id: String,
    /// `sha256:` of the report file (the log entry).
    pub report_digest: String,
    /// The leaf's index.
    pub leaf_index: u64,
    /// The tree size the path is for.
    pub tree_size: u64,
    /// `H(0x00 || entry)`, hex.
    pub leaf_hash: String,
    /// `PATH(leafIndex, D[treeSize])`, hex, leaf to root.
    pub audit_path: Vec<String>,
    /// `MTH(D[treeSize])`, hex.
    pub root_hash: String,
    /// The signed checkpoint of `treeSize` and `rootHash`.
    pub checkpoint: Checkpoint,
}

/// A consistency proof between two tree sizes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistencyProof {
    /// Always [`CONSISTENCY_FORMAT`].
    pub format: String,
    /// Old tree size.
    pub old_size: u64,
    /// New tree size.
    pub new_size: u64,
    /// Old root, hex.
    pub old_root: String,
    /// New root, hex.
    pub new_root: String,
    /// `PROOF(oldSize, D[newSize])`, hex.
    pub path: Vec<String>,
}

/// Hashes as hex.
pub fn to_hex(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(hex::encode).collect()
}

fn from_hex(list: &[String]) -> Result<Vec<Hash>, String> {
    list.iter().map(|h| parse_hash(h)).collect()
}

fn check(name: &str, status: Status, detail: impl Into<String>) -> Check {
    Check {
        name: name.to_owned(),
        status,
        detail: detail.into(),
    }
}

fn short(hex: &str) -> &str {
    hex.get(..16).unwrap_or(hex)
}

/// Checks `proof` for the report whose file bytes are `report_bytes`. Names: `proof.leaf`,
/// `proof.inclusion`, `proof.checkpoint`. `key` is the trusted log key (else the checkpoint's
/// self-asserted one).
pub fn check_inclusion(
    report_bytes: &[u8],
    proof: &InclusionProof,
    key: Option<&VerifyingKey>,
) -> Vec<Check> {
    let mut out = Vec::new();
    if proof.format != INCLUSION_FORMAT {
        out.push(check(
            "proof.format",
            Status::Fail,
            format!("format is {:?}, expected {INCLUSION_FORMAT}", proof.format),
        ));
        return out;
    }
    let (digest, raw) = file_digest(report_bytes);
    let leaf = merkle::leaf_hash(&raw);
    let claimed_leaf = parse_hash(&proof.leaf_hash);
    let leaf_ok = if digest != proof.report_digest {
        out.push(check(
            "proof.leaf",
            Status::Fail,
            format!(
                "the report's digest is {digest}, the proof is for {} (another or a changed report)",
                proof.report_digest
            ),
        ));
        false
    } else if claimed_leaf.as_ref() != Ok(&leaf) {
        out.push(check(
            "proof.leaf",
            Status::Fail,
            format!("leafHash is not H(0x00 || {digest})"),
        ));
        false
    } else {
        out.push(check(
            "proof.leaf",
            Status::Pass,
            format!("leaf {} = H(0x00 || {digest})", proof.leaf_index),
        ));
        true
    };
    let path = from_hex(&proof.audit_path);
    let root = parse_hash(&proof.root_hash);
    match (path, root) {
        (Ok(path), Ok(root)) if leaf_ok => {
            match merkle::verify_inclusion(proof.leaf_index, proof.tree_size, &leaf, &path, &root) {
                Ok(()) => out.push(check(
                    "proof.inclusion",
                    Status::Pass,
                    format!(
                        "leaf {} of {} ({} hashes) leads to root {}…",
                        proof.leaf_index,
                        proof.tree_size,
                        path.len(),
                        short(&proof.root_hash)
                    ),
                )),
                Err(e) => out.push(check("proof.inclusion", Status::Fail, e.to_string())),
            }
        }
        (Ok(_), Ok(_)) => out.push(check(
            "proof.inclusion",
            Status::Skip,
            "not checked: the leaf does not match the report",
        )),
        (Err(e), _) | (_, Err(e)) => out.push(check("proof.inclusion", Status::Fail, e)),
    }
    let cp = &proof.checkpoint;
    match cp.verify(key) {
        Err(e) => out.push(check("proof.checkpoint", Status::Fail, e)),
        Ok(_) if cp.tree_size != proof.tree_size || cp.root_hash != proof.root_hash => {
            out.push(check(
                "proof.checkpoint",
                Status::Fail,
                format!(
                    "the checkpoint signs size {} root {}…, the proof claims size {} root {}…",
                    cp.tree_size,
                    short(&cp.root_hash),
                    proof.tree_size,
                    short(&proof.root_hash)
                ),
            ))
        }
        Ok(_) => out.push(check(
            "proof.checkpoint",
            Status::Pass,
            format!(
                "ed25519 keyid={} size {} at {}{}",
                cp.keyid,
                cp.tree_size,
                cp.time,
                if key.is_some() {
                    " (key given by the verifier)"
                } else {
                    " (self-asserted key: pass --key to pin it)"
                }
            ),
        )),
    }
    out
}

/// Checks that `new` extends `old` with `proof`: `checkpoint.old`, `checkpoint.new` (signatures,
/// against `key` when given) and `log.consistency` (RFC 9162 section 2.1.4.2).
pub fn check_consistency(
    old: &Checkpoint,
    new: &Checkpoint,
    proof: &ConsistencyProof,
    key: Option<&VerifyingKey>,
) -> Vec<Check> {
    let mut out = Vec::new();
    for (name, cp) in [("checkpoint.old", old), ("checkpoint.new", new)] {
        match cp.verify(key) {
            Ok(_) => out.push(check(
                name,
                Status::Pass,
                format!(
                    "size {} root {}… keyid={} at {}",
                    cp.tree_size,
                    short(&cp.root_hash),
                    cp.keyid,
                    cp.time
                ),
            )),
            Err(e) => out.push(check(name, Status::Fail, e)),
        }
    }
    if old.keyid != new.keyid {
        out.push(check(
            "checkpoint.keys",
            Status::Fail,
            format!(
                "signed by different keys ({} and {}): not the same log",
                old.keyid, new.keyid
            ),
        ));
    }
    if proof.format != CONSISTENCY_FORMAT
        || proof.old_size != old.tree_size
        || proof.new_size != new.tree_size
    {
        out.push(check(
            "log.consistency",
            Status::Fail,
            format!(
                "the proof is for sizes {} -> {}, the checkpoints are {} -> {}",
                proof.old_size, proof.new_size, old.tree_size, new.tree_size
            ),
        ));
        return out;
    }
    let parsed = (old.root(), new.root(), from_hex(&proof.path));
    let (Ok(old_root), Ok(new_root), Ok(path)) = parsed else {
        out.push(check(
            "log.consistency",
            Status::Fail,
            "a hash is not 64 hex digits",
        ));
        return out;
    };
    match merkle::verify_consistency(old.tree_size, new.tree_size, &old_root, &new_root, &path) {
        Ok(()) => out.push(check(
            "log.consistency",
            Status::Pass,
            format!(
                "the log only grew: {} -> {} leaves ({} hashes)",
                old.tree_size,
                new.tree_size,
                path.len()
            ),
        )),
        Err(e) => out.push(check(
            "log.consistency",
            Status::Fail,
            format!("INCONSISTENT: {e}"),
        )),
    }
    out
}
