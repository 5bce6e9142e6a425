//! Byte sizes written the Kubernetes way: `256Mi` (binary), `64M` (decimal), or a plain integer.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::UnitError;

/// A size in bytes. Parsed from `"256Mi"`, `"1Gi"`, `"64M"`, `"512"` or an integer; always
/// serialized as an integer number of bytes so that compiled output is canonical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

/// The largest size accepted: 2^53 - 1, so every size survives a JSON round trip exactly.
pub(crate) const MAX_EXACT_JSON_INT: u64 = (1 << 53) - 1;

/// The most digits a size may have. The schema's pattern says the same (`{1,16}`), so that
/// `parse` accepts exactly the strings `safe-run schema` does (see the duration's
/// `MAX_DIGITS`). 16 digits hold every size up to the 2^53 - 1 limit.
pub(crate) const MAX_DIGITS: usize = 16;
// The `UnitError` reason is a `&'static str`: keep its number in step with `MAX_DIGITS`.
const TOO_MANY_DIGITS: &str = "at most 16 digits";
const _: () = assert!(MAX_DIGITS == 16, "update TOO_MANY_DIGITS");

const UNITS: [(&str, u64); 8] = [
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("K", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
];

impl ByteSize {
    /// Number of bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// `n` mebibytes.
    pub const fn mib(n: u64) -> Self {
        ByteSize(n << 20)
    }

    /// Parses `"<digits>[unit]"` with at most 16 digits, rejecting signs, fractions, spaces and
    /// overflow: exactly the strings of the schema's pattern
    /// (`^[0-9]{1,16}(Ki|Mi|Gi|Ti|K|M|G|T)?$`) whose value fits.
    pub fn parse(text: &str) -> Result<Self, UnitError> {
        const KIND: &str = "byte size";
        let digits_end = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(digits_end);
        if digits.is_empty() {
            return Err(UnitError::invalid(
                KIND,
                text,
                "expected digits such as 256Mi",
            ));
        }
        if digits.len() > MAX_DIGITS {
            return Err(UnitError::invalid(KIND, text, TOO_MANY_DIGITS));
        }
        let number: u64 = digits
            .parse()
            .map_err(|_| UnitError::invalid(KIND, text, "number too large"))?;
        let multiplier = if unit.is_empty() {
            1
        } else {
            UNITS
                .iter()
                .find(|(name, _)| *name == unit)
                .map(|(_, m)| *m)
                .ok_or_else(|| {
                    UnitError::invalid(KIND, text, "unknown unit; use Ki, Mi, Gi, Ti, K, M, G or T")
                })?
        };
        let bytes = number
            .checked_mul(multiplier)
            .filter(|b| *b <= MAX_EXACT_JSON_INT)
            .ok_or_else(|| UnitError::invalid(KIND, text, "size too large"))?;
        Ok(ByteSize(bytes))
    }
}

impl FromStr for ByteSize {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ByteSize::parse(s)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, mult) in UNITS.iter().take(4).rev() {
            if self.0 >= *mult && self.0 % mult == 0 {
                return write!(f, "{}{}", self.0 / mult, name);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte size such as 256Mi, 1Gi, 64M or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                if v > MAX_EXACT_JSON_INT {
                    return Err(E::custom("size too large"));
                }
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom("a byte size cannot be negative"))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size: an integer number of bytes, or digits followed by Ki, Mi, Gi, Ti (powers of 1024) or K, M, G, T (powers of 1000), e.g. \"256Mi\".",
            "oneOf": [
                { "type": "integer", "minimum": 0, "maximum": MAX_EXACT_JSON_INT },
                { "type": "string", "pattern": format!("^[0-9]{{1,{MAX_DIGITS}}}(Ki|Mi|Gi|Ti|K|M|G|T)?$") }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(ByteSize::parse("256Mi").unwrap(), ByteSize(256 << 20));
        assert_eq!(ByteSize::parse("1Gi").unwrap(), ByteSize(1 << 30));
        assert_eq!(ByteSize::parse("64M").unwrap(), ByteSize(64_000_000));
        assert_eq!(ByteSize::parse("512").unwrap(), ByteSize(512));
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "",
            "-1",
            "1.5Gi",
            " 1Gi",
            "1 Gi",
            "1gi",
            "Gi",
            "1Gib",
            "99999999999999999999",
            "9999999Ti",
            "١٢",
            "1Ｍi",
            // More digits than the schema's pattern allows, even where the value would fit.
            "00000000000000001",
            "00000000000000001Ki",
        ] {
            assert!(ByteSize::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn negative_integer_is_rejected_by_serde() {
        assert!(serde_json::from_str::<ByteSize>("-5").is_err());
        assert_eq!(serde_json::from_str::<ByteSize>("5").unwrap(), ByteSize(5));
        assert_eq!(
            serde_json::from_str::<ByteSize>("\"2Ki\"").unwrap(),
            ByteSize(2048)
        );
    }

    #[test]
    fn digits_are_limited_like_the_schema_pattern() {
        assert_eq!(
            ByteSize::parse("9007199254740991").unwrap(),
            ByteSize(MAX_EXACT_JSON_INT)
        );
        assert_eq!(
            ByteSize::parse("0000000000000001Ki").unwrap(),
            ByteSize(1024)
        );
        let err = ByteSize::parse("00000000000000001").unwrap_err();
        assert!(err.to_string().contains("at most 16 digits"), "{err}");
        let schema = ByteSize::json_schema(&mut SchemaGenerator::default());
        assert_eq!(
            schema.pointer("/oneOf/1/pattern").and_then(|p| p.as_str()),
            Some("^[0-9]{1,16}(Ki|Mi|Gi|Ti|K|M|G|T)?$")
        );
    }

    proptest! {
        #[test]
        fn display_round_trips(n in 0u64..MAX_EXACT_JSON_INT) {
            let shown = ByteSize(n).to_string();
            prop_assert_eq!(ByteSize::parse(&shown).unwrap(), ByteSize(n));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,24}") {
            let _ = ByteSize::parse(&s);
        }
    }
}
