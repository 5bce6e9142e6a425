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

/// Appends the RFC 8785 form of a parsed JSON value to `out`: the same bytes as [`jcs`] (a
/// property test compares them on random values).
///
/// Hand-written for the verifier's hot loop: the crate re-parses every object key and buffers
/// every property, so allocation dominated the verification of long event logs. Object keys
/// already in JCS order (every canonical line is) are written without sorting; numbers other
/// than integers within ±(2^53-1) are formatted by the crate (ECMAScript rules).
pub fn jcs_value_into(value: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) if u <= MAX_SAFE_INTEGER => {
                out.extend_from_slice(u.to_string().as_bytes())
            }
            (_, Some(i)) if i.unsigned_abs() <= MAX_SAFE_INTEGER => {
                out.extend_from_slice(i.to_string().as_bytes())
            }
            _ => out.extend_from_slice(&jcs(n)?),
        },
        Value::String(s) => write_string(s, out)?,
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                jcs_value_into(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let sorted = map
                .keys()
                .zip(map.keys().skip(1))
                .all(|(a, b)| utf16_cmp(a, b).is_lt());
            out.push(b'{');
            if sorted {
                for (i, (k, v)) in map.iter().enumerate() {
                    write_member(i, k, v, out)?;
                }
            } else {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| utf16_cmp(a.0, b.0));
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    write_member(i, k, v, out)?;
                }
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn write_member(i: usize, key: &str, value: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    if i > 0 {
        out.push(b',');
    }
    write_string(key, out)?;
    out.push(b':');
    jcs_value_into(value, out)
}

/// JSON string escaping as RFC 8785 section 3.2.2.2 requires; serde_json escapes exactly the
/// same set the same way (`\"`, `\\`, `\b \f \n \r \t`, other controls as `\u00xx`).
fn write_string(s: &str, out: &mut Vec<u8>) -> Result<(), String> {
    serde_json::to_writer(&mut *out, s).map_err(|e| e.to_string())
}

/// Orders keys by their UTF-16 code units, as RFC 8785 sorts object members.
fn utf16_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
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

    fn arb_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            any::<u64>().prop_map(|u| json!(u)),
            (-1e30f64..1e30).prop_map(|f| json!(f)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            "\\PC{0,8}".prop_map(Value::String),
            "[\\x00-\\x1f\"\\\\\u{7f}\u{e000}\u{10000}a-c]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec(("[a-c\u{e000}\u{10000}\u{7f}\n]{0,3}", inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2048, failure_persistence: None, ..Default::default() })]
        /// The hand-written canonicalizer agrees byte for byte with the crate.
        #[test]
        fn jcs_value_into_agrees_with_the_crate(v in arb_json()) {
            let mut mine = Vec::new();
            jcs_value_into(&v, &mut mine).unwrap();
            proptest::prop_assert_eq!(String::from_utf8(mine).unwrap(), String::from_utf8(jcs(&v).unwrap()).unwrap());
            // And on the value as re-parsed from canonical text (keys then arrive sorted).
            let reparsed: Value = serde_json::from_slice(&jcs(&v).unwrap()).unwrap();
            let mut again = Vec::new();
            jcs_value_into(&reparsed, &mut again).unwrap();
            proptest::prop_assert_eq!(again, jcs(&v).unwrap());
        }
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
