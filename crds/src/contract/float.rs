//! Serde for the `f64` fields of stage results, so that NaN and infinities survive JSON.
//!
//! JSON has no NaN or infinity and serde_json writes them as `null`, which does not read back
//! as an `f64`: a diverged loss or an infinite perplexity made the whole result (its
//! `result.json` and the termination message) unreadable. With `#[serde(with = "float")]` a
//! non-finite value is written as the string `"NaN"`, `"inf"` or `"-inf"` (what Rust's
//! `Display` prints, and what `f64::from_str` and Python's `float()` read), so a NaN stays a
//! NaN and an infinite perplexity stays infinite. Reading accepts numbers, those strings
//! (case-insensitive, also `"infinity"`) and `null` as NaN, which is what results written
//! before this module held. [`option`] does the same for `Option<f64>`, where `null` stays
//! `None`.

use serde::de::{self, Deserializer, Visitor};
use serde::Serializer;
use std::fmt;

/// Writes finite values as numbers, others as `"NaN"`, `"inf"` or `"-inf"`.
pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    if value.is_finite() {
        serializer.serialize_f64(*value)
    } else {
        serializer.serialize_str(&value.to_string())
    }
}

/// Reads a number, `"NaN"`/`"inf"`/`"-inf"`, or `null` (NaN).
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    deserializer.deserialize_any(FloatVisitor)
}

/// [`serialize`] and [`deserialize`] for `Option<f64>`: `None` is `null` (or absent with
/// `default`), `Some(NaN)` is `"NaN"`.
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Option<f64>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => super::serialize(v, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<f64>, D::Error> {
        deserializer.deserialize_option(OptionVisitor)
    }

    struct OptionVisitor;

    impl<'de> Visitor<'de> for OptionVisitor {
        type Value = Option<f64>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(EXPECTING)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

const EXPECTING: &str = "a number, or \"NaN\", \"inf\" or \"-inf\"";

struct FloatVisitor;

impl Visitor<'_> for FloatVisitor {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(EXPECTING)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }

    fn visit_unit<E: de::Error>(self) -> Result<f64, E> {
        Ok(f64::NAN)
    }

    fn visit_none<E: de::Error>(self) -> Result<f64, E> {
        Ok(f64::NAN)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
        // Only the non-finite spellings: a number in a string is a mistake, not a number.
        match v.trim().parse::<f64>() {
            Ok(x) if !x.is_finite() => Ok(x),
            _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize)]
    struct T {
        #[serde(with = "super")]
        x: f64,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "super::option"
        )]
        y: Option<f64>,
    }

    fn json(x: f64, y: Option<f64>) -> String {
        serde_json::to_string(&T { x, y }).expect("serializes")
    }

    fn parse(s: &str) -> Result<T, serde_json::Error> {
        serde_json::from_str(s)
    }

    #[test]
    fn non_finite_values_round_trip_as_strings() {
        assert_eq!(json(1.5, None), r#"{"x":1.5}"#);
        assert_eq!(
            json(f64::NAN, Some(f64::INFINITY)),
            r#"{"x":"NaN","y":"inf"}"#
        );
        assert_eq!(
            json(f64::NEG_INFINITY, Some(2.0)),
            r#"{"x":"-inf","y":2.0}"#
        );
        for (x, y) in [
            (f64::NAN, Some(f64::NAN)),
            (f64::INFINITY, Some(f64::NEG_INFINITY)),
            (-0.25, None),
            (3.0, Some(1e300)),
        ] {
            let back = parse(&json(x, y)).expect("parses");
            assert_eq!(back.x.to_bits(), x.to_bits(), "{x}");
            assert_eq!(back.y.map(f64::to_bits), y.map(f64::to_bits), "{y:?}");
        }
    }

    #[test]
    fn null_reads_as_nan_and_other_spellings_are_accepted() {
        // What serde_json wrote for NaN and infinities before.
        let t = parse(r#"{"x":null,"y":null}"#).expect("parses");
        assert!(t.x.is_nan());
        assert_eq!(t.y, None);
        let t = parse(r#"{"x":"Infinity","y":"-INF"}"#).expect("parses");
        assert_eq!((t.x, t.y), (f64::INFINITY, Some(f64::NEG_INFINITY)));
        assert_eq!(parse(r#"{"x":7}"#).expect("parses").x, 7.0);
        assert_eq!(parse(r#"{"x":-7}"#).expect("parses").x, -7.0);
        for bad in [
            r#"{"x":"1.5"}"#,
            r#"{"x":"lots"}"#,
            r#"{"x":true}"#,
            r#"{}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
