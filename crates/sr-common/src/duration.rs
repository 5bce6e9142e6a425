//! Durations written with a unit: `500ms`, `30s`, `5m`, `1h`.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::UnitError;
use crate::size::MAX_EXACT_JSON_INT;

/// A duration with millisecond resolution. A bare number is rejected on purpose: `30` could mean
/// seconds or milliseconds, and a policy must not be ambiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct DurationSpec {
    millis: u64,
}

const UNITS: [(&str, u64); 4] = [("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000)];

/// The most digits a duration may have. The schema's pattern says the same (`{1,15}`), so that
/// `parse` accepts exactly the strings `safe-run schema` does: a policy checked by another
/// JSON Schema validator must not be judged differently, and the policy crate's fast path
/// relies on serde being at least as strict as the schema. 15 digits is plenty: a longer
/// number is zero-padded or at least 10^15 ms, over 30,000 years.
pub(crate) const MAX_DIGITS: usize = 15;
// The `UnitError` reason is a `&'static str`: keep its number in step with `MAX_DIGITS`.
const TOO_MANY_DIGITS: &str = "at most 15 digits";
const _: () = assert!(MAX_DIGITS == 15, "update TOO_MANY_DIGITS");

impl DurationSpec {
    /// A duration of `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        DurationSpec { millis }
    }

    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        DurationSpec {
            millis: secs * 1000,
        }
    }

    /// Milliseconds.
    pub const fn as_millis(self) -> u64 {
        self.millis
    }

    /// As a std duration.
    pub const fn as_duration(self) -> Duration {
        Duration::from_millis(self.millis)
    }

    /// Parses `"<digits><unit>"` with at most 15 digits and unit one of ms, s, m, h: exactly
    /// the strings of the schema's pattern (`^[0-9]{1,15}(ms|s|m|h)$`) whose value fits.
    pub fn parse(text: &str) -> Result<Self, UnitError> {
        const KIND: &str = "duration";
        let digits_end = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(digits_end);
        if digits.is_empty() {
            return Err(UnitError::invalid(
                KIND,
                text,
                "expected digits such as 30s",
            ));
        }
        if unit.is_empty() {
            return Err(UnitError::invalid(
                KIND,
                text,
                "a unit is required: ms, s, m or h",
            ));
        }
        if digits.len() > MAX_DIGITS {
            return Err(UnitError::invalid(KIND, text, TOO_MANY_DIGITS));
        }
        let number: u64 = digits
            .parse()
            .map_err(|_| UnitError::invalid(KIND, text, "number too large"))?;
        let multiplier = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, m)| *m)
            .ok_or_else(|| UnitError::invalid(KIND, text, "unknown unit; use ms, s, m or h"))?;
        let millis = number
            .checked_mul(multiplier)
            .filter(|m| *m <= MAX_EXACT_JSON_INT)
            .ok_or_else(|| UnitError::invalid(KIND, text, "duration too large"))?;
        Ok(DurationSpec { millis })
    }
}

impl FromStr for DurationSpec {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DurationSpec::parse(s)
    }
}

impl fmt::Display for DurationSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, mult) in UNITS.iter().rev() {
            if self.millis >= *mult && self.millis % mult == 0 {
                return write!(f, "{}{}", self.millis / mult, name);
            }
        }
        write!(f, "{}ms", self.millis)
    }
}

impl Serialize for DurationSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DurationSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        DurationSpec::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for DurationSpec {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration: digits followed by ms, s, m or h, e.g. \"30s\".",
            "type": "string",
            "pattern": format!("^[0-9]{{1,{MAX_DIGITS}}}(ms|s|m|h)$")
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(DurationSpec::parse("30s").unwrap().as_millis(), 30_000);
        assert_eq!(DurationSpec::parse("500ms").unwrap().as_millis(), 500);
        assert_eq!(DurationSpec::parse("2m").unwrap().as_millis(), 120_000);
        assert_eq!(DurationSpec::parse("1h").unwrap().as_millis(), 3_600_000);
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "",
            "30",
            "-1s",
            "1.5s",
            "s",
            "30 s",
            "30sec",
            "999999999999999h",
            // More digits than the schema's pattern allows, even where the value would fit.
            "9007199254740991ms",
            "0000000000000001s",
        ] {
            assert!(
                DurationSpec::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn digits_are_limited_like_the_schema_pattern() {
        assert_eq!(
            DurationSpec::parse("000000000000001s").unwrap().as_millis(),
            1_000
        );
        assert_eq!(
            DurationSpec::parse("900719925474099ms")
                .unwrap()
                .as_millis(),
            900_719_925_474_099
        );
        let err = DurationSpec::parse("9007199254740991ms").unwrap_err();
        assert!(err.to_string().contains("at most 15 digits"), "{err}");
        let schema = DurationSpec::json_schema(&mut SchemaGenerator::default());
        assert_eq!(
            schema.get("pattern").and_then(|p| p.as_str()),
            Some("^[0-9]{1,15}(ms|s|m|h)$")
        );
    }

    proptest! {
        // Up to 10^15 ms, every duration has a spelling of at most 15 digits (its count of
        // ms). Above, only whole seconds (or minutes, hours) do, and those are what `parse`
        // produces: see `parsed_durations_round_trip`.
        #[test]
        fn display_round_trips(ms in 0u64..10u64.pow(MAX_DIGITS as u32)) {
            let d = DurationSpec::from_millis(ms);
            prop_assert_eq!(DurationSpec::parse(&d.to_string()).unwrap(), d);
        }

        #[test]
        fn parsed_durations_round_trip(
            n in 0u64..10u64.pow(MAX_DIGITS as u32),
            unit in prop::sample::select(UNITS.to_vec()),
        ) {
            let text = format!("{n}{}", unit.0);
            if let Ok(d) = DurationSpec::parse(&text) {
                prop_assert_eq!(DurationSpec::parse(&d.to_string()).unwrap(), d);
            }
        }
    }
}
