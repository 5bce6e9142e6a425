//! Export of a run as an in-toto Statement v1 in a DSSE envelope, so supply-chain tools
//! (cosign, in-toto verifiers, SLSA tooling) can check the same run.
//!
//! * Envelope: DSSE v1 (`payloadType`, base64 `payload`, `signatures: [{keyid, sig}]`); the
//!   signature is Ed25519 over `PAE(payloadType, payload)` where
//!   `PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, LEN being the byte
//!   length in ASCII decimal without leading zeros ([`pae`]). Hand-written: it is five lines,
//!   and the spec's test vector pins it.
//! * Statement: `_type` `https://in-toto.io/Statement/v1`; `subject` = the run's outputs, each
//!   `{name, digest: {sha256}}`; `predicateType` `https://slsa.dev/provenance/v1`.
//! * Predicate (SLSA provenance v1 vocabulary): `buildDefinition.buildType` =
//!   `https://safe-run.dev/backend/<backend>@v1`, `externalParameters` = the policy (name,
//!   digest, path), `internalParameters` = the enforcement facts, `resolvedDependencies` = the
//!   inputs as ResourceDescriptors; `runDetails.builder.id` names safe-run and its version,
//!   `metadata` = {invocationId: run id, startedOn, finishedOn}, `byproducts` = the run report
//!   itself (its digest, and `annotations.sealedBy`: the keyid and public key that signed the
//!   report) and the event chain head.
//! * Signers: [`export_intoto`] refuses a report unless its own signature verifies with the
//!   exporting key, or with a public key the caller names for the report. The DSSE keyid is
//!   the exporter's; the report's signer travels in the statement, and [`verify_envelope`]
//!   accepts the envelope only when the two are the same key or the verifier names the
//!   report's signer too. So an envelope never vouches, under one key, for a report that
//!   another key sealed without saying so.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::canonical::{SHA256_PREFIX, sha256_hex};
use crate::error::EvidenceError;
use crate::keys;
use crate::report::{self, RunReport};

/// The DSSE payload type of an in-toto statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// in-toto Statement v1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// SLSA provenance v1.
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";

/// DSSE v1 Pre-Authentication Encoding.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload_type.len() + payload.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// A DSSE envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Always [`PAYLOAD_TYPE`] here.
    pub payload_type: String,
    /// Base64 (standard) of the statement's bytes.
    pub payload: String,
    /// Signatures over PAE(payloadType, payload).
    pub signatures: Vec<EnvelopeSignature>,
}

/// One DSSE signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// The signer's key id (see [`keys::keyid`]).
    pub keyid: String,
    /// Base64 Ed25519 signature.
    pub sig: String,
}

fn sha256_map(digest: &str) -> Value {
    json!({ "sha256": digest.strip_prefix(SHA256_PREFIX).unwrap_or(digest) })
}

/// The name of the run report's byproduct in the statement.
const REPORT_BYPRODUCT: &str = report::REPORT_FILE;

/// The in-toto Statement v1 (SLSA provenance v1 predicate) describing a sealed report.
pub fn statement(report: &RunReport) -> Result<Value, EvidenceError> {
    let subject: Vec<Value> = report
        .outputs
        .iter()
        .map(|o| json!({ "name": o.path, "digest": sha256_map(&o.digest) }))
        .collect();
    let dependencies: Vec<Value> = report
        .inputs
        .iter()
        .map(|i| {
            let mut d = Map::new();
            d.insert("name".into(), json!(i.name));
            if let Some(p) = &i.path {
                d.insert("uri".into(), json!(format!("file://{p}")));
            }
            d.insert("digest".into(), sha256_map(&i.digest));
            d.insert("annotations".into(), json!({ "role": i.role }));
            Value::Object(d)
        })
        .collect();
    let report_bytes = report::render(report)?;
    let enforcement =
        serde_json::to_value(&report.enforcement).map_err(|e| EvidenceError::ReportEncode {
            reason: e.to_string(),
        })?;
    let mut report_entry = json!({
        "name": REPORT_BYPRODUCT,
        "digest": { "sha256": sha256_hex(&report_bytes) },
    });
    if let Some(i) = &report.integrity {
        let mut annotations = Map::new();
        annotations.insert("integrityDigest".into(), json!(i.digest));
        if let (Some(keyid), Some(public_key)) = (&i.keyid, &i.public_key) {
            annotations.insert(
                "sealedBy".into(),
                json!({ "keyid": keyid, "publicKey": public_key }),
            );
        }
        report_entry["annotations"] = Value::Object(annotations);
    }
    let mut byproducts = vec![report_entry];
    byproducts.push(json!({
        "name": crate::chain::EVENTS_FILE,
        "annotations": { "head": report.timeline.head, "count": report.timeline.count },
    }));
    Ok(json!({
        "_type": STATEMENT_TYPE,
        "subject": subject,
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": format!("https://safe-run.dev/backend/{}@v1", report.run.backend),
                "externalParameters": { "policy": report.policy },
                "internalParameters": { "enforcement": enforcement, "exit": report.exit },
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": { "id": format!("https://safe-run.dev/safe-run@{}", report.run.safe_run_version) },
                "metadata": {
                    "invocationId": report.run.id,
                    "startedOn": report.run.started_at,
                    "finishedOn": report.run.ended_at,
                },
                "byproducts": byproducts,
            }
        }
    }))
}

/// Exports a report as a DSSE envelope signed by `signer`. The report's own signature must
/// verify with `report_key` when given (the report's signer is someone else, and the caller
/// vouches for that key), else with `signer`'s public key; otherwise it is refused.
pub fn export_intoto(
    report: &RunReport,
    signer: &SigningKey,
    report_key: Option<&VerifyingKey>,
) -> Result<Envelope, EvidenceError> {
    let own = signer.verifying_key();
    let sealer = report_key.unwrap_or(&own);
    crate::verify::report_signed_by(report, sealer).map_err(|reason| {
        EvidenceError::ExportRefused {
            reason: match report_key {
                Some(_) => format!("{reason} (the key given for the report)"),
                None => format!("{reason} (the exporting key)"),
            },
        }
    })?;
    let statement = statement(report)?;
    let payload = serde_json::to_vec(&statement).map_err(|e| EvidenceError::ReportEncode {
        reason: e.to_string(),
    })?;
    let sig = signer.sign(&pae(PAYLOAD_TYPE, &payload));
    Ok(Envelope {
        payload_type: PAYLOAD_TYPE.to_owned(),
        payload: B64.encode(&payload),
        signatures: vec![EnvelopeSignature {
            keyid: keys::keyid(&signer.verifying_key()),
            sig: B64.encode(sig.to_bytes()),
        }],
    })
}

/// What a verified envelope says.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedEnvelope {
    /// The in-toto statement.
    pub statement: Value,
    /// The key id that signed the envelope (the verifier's key).
    pub envelope_keyid: String,
    /// The key id that sealed the report inside (`sealedBy` of the report byproduct).
    pub report_keyid: String,
}

/// The `sealedBy` public key the statement names for its report.
fn report_sealer(statement: &Value) -> Result<VerifyingKey, String> {
    let sealed_by = statement
        .pointer("/predicate/runDetails/byproducts")
        .and_then(Value::as_array)
        .and_then(|b| {
            b.iter()
                .find(|p| p.get("name").and_then(Value::as_str) == Some(REPORT_BYPRODUCT))
        })
        .and_then(|p| p.pointer("/annotations/sealedBy"))
        .ok_or("the statement does not name the report's signer (no sealedBy annotation on the run_report.json byproduct; exported by an older safe-run?)")?;
    let key = sealed_by
        .get("publicKey")
        .and_then(Value::as_str)
        .ok_or("sealedBy has no publicKey")
        .and_then(|k| keys::parse_public_key(k).map_err(|_| "sealedBy.publicKey is not a key"))?;
    let keyid = sealed_by.get("keyid").and_then(Value::as_str);
    if keyid != Some(keys::keyid(&key).as_str()) {
        return Err(format!(
            "sealedBy.keyid {keyid:?} is not the id of sealedBy.publicKey ({})",
            keys::keyid(&key)
        ));
    }
    Ok(key)
}

/// Verifies an envelope's signature by `key` and returns the statement it carries. The report
/// inside must have been sealed by `key` too, or by `report_key` when the verifier names the
/// report's signer; otherwise the error says which key signed what.
pub fn verify_envelope(
    envelope: &Envelope,
    key: &VerifyingKey,
    report_key: Option<&VerifyingKey>,
) -> Result<VerifiedEnvelope, String> {
    let payload = B64
        .decode(&envelope.payload)
        .map_err(|e| format!("payload is not base64: {e}"))?;
    let id = keys::keyid(key);
    let signed = envelope.signatures.iter().any(|s| {
        s.keyid == id
            && B64
                .decode(&s.sig)
                .ok()
                .and_then(|b| Signature::from_slice(&b).ok())
                .is_some_and(|sig| {
                    key.verify_strict(&pae(&envelope.payload_type, &payload), &sig)
                        .is_ok()
                })
    });
    if !signed {
        return Err(format!("no signature by key {id} verifies"));
    }
    if envelope.payload_type != PAYLOAD_TYPE {
        return Err(format!(
            "payloadType is {}, expected {PAYLOAD_TYPE}",
            envelope.payload_type
        ));
    }
    let statement: Value =
        serde_json::from_slice(&payload).map_err(|e| format!("payload is not JSON: {e}"))?;
    let sealer = report_sealer(&statement)?;
    let report_keyid = keys::keyid(&sealer);
    let accepted = sealer == *key || report_key == Some(&sealer);
    if !accepted {
        let hint = match report_key {
            Some(k) => format!(
                "; the key given for the report is {}, not that one",
                keys::keyid(k)
            ),
            None => {
                format!("; pass key {report_keyid}'s public key with --report-key if you trust it")
            }
        };
        return Err(format!(
            "the envelope is signed by key {id}, but the report it carries was sealed by key {report_keyid}{hint}"
        ));
    }
    Ok(VerifiedEnvelope {
        statement,
        envelope_keyid: id,
        report_keyid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_spec_test_vector() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ");
    }
}
