//! Canonical JSON (RFC 8785, "JCS") and the digest notation used everywhere in the evidence.
//!
//! Every digest safe-run records is over bytes that any verifier can reproduce from the parsed
//! JSON alone: JCS sorts object keys by UTF-16 code units, removes whitespace and writes
//! numbers the way ECMAScript does. The implementation is the `serde_json_canonicalizer` crate.
//!
//! JCS is exact only for numbers an IEEE double holds exactly, so integers are kept within
//! ±(2^53-1) ([`MAX_SAFE_INTEGER`]); [`check_numbers`] enforces it before anything is hashed.
//! Digests are written `sha256:<64 lowercase hex>`.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The largest integer every JSON implementation reads exactly (2^53 - 1).
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// The prefix of every digest string.
pub const SHA256_PREFIX: &str = "sha256:";

/// RFC 8785 canonical bytes of `value`.
pub fn jcs<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    serde_json_canonicalizer::to_vec(value).map_err(|e| e.to_string())
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_tagged(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(SHA256_PREFIX.len() + 64);
    s.push_str(SHA256_PREFIX);
    s.push_str(&hex::encode(Sha256::digest(bytes)));
    s
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether `s` is a well-formed `sha256:<64 lowercase hex>` digest.
pub fn is_digest(s: &str) -> bool {
    s.strip_prefix(SHA256_PREFIX).is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Checks that every number in `value` survives JCS exactly: integers within ±(2^53-1), floats
/// finite. Returns the JSON pointer of the first offending number.
pub fn check_numbers(value: &Value) -> Result<(), String> {
    fn walk(value: &Value, path: &mut String) -> Result<(), String> {
        match value {
            Value::Number(n) => {
                let ok = if let Some(u) = n.as_u64() {
                    u <= MAX_SAFE_INTEGER
                } else if let Some(i) = n.as_i64() {
                    i.unsigned_abs() <= MAX_SAFE_INTEGER
                } else {
                    n.as_f64().is_some_and(f64::is_finite)
                };
                if ok {
                    Ok(())
                } else {
                    Err(format!(
                        "number {n} at '{path}' is outside ±(2^53-1) or not finite"
                    ))
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push('/');
                    path.push_str(&i.to_string());
                    walk(item, path)?;
                    path.truncate(len);
                }
                Ok(())
            }
            Value::Object(map) => {
                for (k, v) in map {
                    let len = path.len();
                    path.push('/');
                    path.push_str(&k.replace('~', "~0").replace('/', "~1"));
                    walk(v, path)?;
                    path.truncate(len);
                }
                Ok(())
            }
            Value::Null | Value::Bool(_) | Value::String(_) => Ok(()),
        }
    }
    walk(value, &mut String::new())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn jcs_sorts_keys_and_strips_whitespace() {
        let v: Value = serde_json::from_str(r#"{ "b": 1, "a": [true, null, "x"] }"#).unwrap();
        assert_eq!(jcs(&v).unwrap(), br#"{"a":[true,null,"x"],"b":1}"#);
    }

    #[test]
    fn numbers_beyond_2_pow_53_are_rejected() {
        assert!(check_numbers(&json!({"a": [MAX_SAFE_INTEGER]})).is_ok());
        let err = check_numbers(&json!({"a": [1, MAX_SAFE_INTEGER + 1]})).unwrap_err();
        assert!(err.contains("/a/1"), "{err}");
        assert!(check_numbers(&json!({"n": -(MAX_SAFE_INTEGER as i64) - 1})).is_err());
        assert!(check_numbers(&json!({"f": 1.5})).is_ok());
    }

    #[test]
    fn digest_notation() {
        let d = sha256_tagged(b"");
        assert_eq!(
            d,
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(is_digest(&d));
        assert!(!is_digest("sha256:E3B0"));
    }
}
