//! Durations as Istio users write them (`10s`, `1.5s`, `100ms`, `1m`, `1h`, `1h30m`).
//!
//! Istio's protobuf durations are strings; Envoy and Go tooling accept the Go syntax, so Mizzen
//! accepts a sequence of decimal numbers each followed by a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`,
//! `h`). Values are kept as a typed [`std::time::Duration`] and written back in a canonical form.

use std::{borrow::Cow, fmt, str::FromStr, time};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// The pattern the CRD schema enforces; [`Duration::from_str`] accepts exactly this language.
pub const PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";

/// A non-negative duration parsed from Istio's string form.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub time::Duration);

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseDurationError {
    #[error("empty duration")]
    Empty,
    #[error(
        "invalid duration {0:?}: expected a number followed by a unit (ns, us, ms, s, m, h), e.g. 1.5s"
    )]
    Syntax(String),
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

impl Duration {
    pub const fn from_millis(ms: u64) -> Self {
        Self(time::Duration::from_millis(ms))
    }

    pub const fn from_secs(s: u64) -> Self {
        Self(time::Duration::from_secs(s))
    }

    pub const fn get(self) -> time::Duration {
        self.0
    }
}

impl From<time::Duration> for Duration {
    fn from(d: time::Duration) -> Self {
        Self(d)
    }
}

const UNITS: [(&str, u128); 7] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

impl FromStr for Duration {
    type Err = ParseDurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ParseDurationError::Empty);
        }
        let syntax = || ParseDurationError::Syntax(s.to_string());
        let overflow = || ParseDurationError::Overflow(s.to_string());
        let mut rest = s;
        let mut total: u128 = 0;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(syntax)?;
            let (number, tail) = rest.split_at(num_len);
            let unit_len = tail
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(unit_len);
            let scale = UNITS
                .iter()
                .find(|(name, _)| *name == unit)
                .map(|(_, scale)| *scale)
                .ok_or_else(syntax)?;
            let (whole, frac) = match number.split_once('.') {
                Some((w, f)) => (w, f),
                None => (number, ""),
            };
            if whole.is_empty() || (number.contains('.') && frac.is_empty()) {
                return Err(syntax());
            }
            let whole: u128 = whole.parse().map_err(|_| overflow())?;
            let mut nanos = whole.checked_mul(scale).ok_or_else(overflow)?;
            // Fractions finer than a nanosecond are dropped, as Go does.
            let mut place = scale;
            for digit in frac.bytes() {
                place /= 10;
                if place == 0 {
                    break;
                }
                nanos += u128::from(digit - b'0') * place;
            }
            total = total.checked_add(nanos).ok_or_else(overflow)?;
            rest = tail;
        }
        let secs = u64::try_from(total / 1_000_000_000).map_err(|_| overflow())?;
        let nanos = u32::try_from(total % 1_000_000_000).expect("below one second");
        Ok(Self(time::Duration::new(secs, nanos)))
    }
}

impl fmt::Display for Duration {
    /// The shortest exact form in one unit (`90s` stays `90s`, `1.5s` stays `1.5s`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        let exact = |scale: u128| nanos.is_multiple_of(scale);
        for (unit, scale) in [
            ("h", 3_600_000_000_000u128),
            ("m", 60_000_000_000),
            ("s", 1_000_000_000),
        ] {
            if exact(scale) {
                return write!(f, "{}{unit}", nanos / scale);
            }
        }
        if nanos >= 1_000_000_000 {
            let secs = format!("{}.{:09}", nanos / 1_000_000_000, nanos % 1_000_000_000);
            return write!(f, "{}s", secs.trim_end_matches('0'));
        }
        for (unit, scale) in [("ms", 1_000_000u128), ("us", 1_000)] {
            if exact(scale) {
                return write!(f, "{}{unit}", nanos / scale);
            }
        }
        write!(f, "{nanos}ns")
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": PATTERN,
            "description": "A duration such as 10s, 1.5s, 100ms, 1m or 1h."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> time::Duration {
        s.parse::<Duration>().unwrap().get()
    }

    #[test]
    fn parses_istio_forms() {
        assert_eq!(d("10s"), time::Duration::from_secs(10));
        assert_eq!(d("1.5s"), time::Duration::from_millis(1500));
        assert_eq!(d("100ms"), time::Duration::from_millis(100));
        assert_eq!(d("1m"), time::Duration::from_secs(60));
        assert_eq!(d("1h"), time::Duration::from_secs(3600));
        assert_eq!(d("1h30m"), time::Duration::from_secs(5400));
        assert_eq!(d("250us"), time::Duration::from_micros(250));
        assert_eq!(d("0.001s"), time::Duration::from_millis(1));
        assert_eq!(d("0s"), time::Duration::ZERO);
    }

    #[test]
    fn refuses_nonsense_with_the_input_named() {
        for bad in [
            "", "10", "s", "1.s", ".5s", "-1s", "1d", "1 s", "10sec", "1e3s",
        ] {
            let err = bad.parse::<Duration>().unwrap_err().to_string();
            assert!(err.contains("duration"), "{bad:?}: {err}");
        }
        assert!(matches!(
            "99999999999999999999h".parse::<Duration>(),
            Err(ParseDurationError::Overflow(_))
        ));
    }

    #[test]
    fn pattern_and_parser_agree() {
        let re = regex::Regex::new(PATTERN).unwrap();
        for s in [
            "10s", "1.5s", "100ms", "1h30m", "5µs", "10", "1.s", "1d", "", "-1s",
        ] {
            assert_eq!(re.is_match(s), s.parse::<Duration>().is_ok(), "{s:?}");
        }
    }

    #[test]
    fn displays_a_canonical_form_that_round_trips() {
        for (input, shown) in [
            ("10s", "10s"),
            ("1.5s", "1.5s"),
            ("100ms", "100ms"),
            ("60s", "1m"),
            ("1h", "1h"),
            ("0.25s", "250ms"),
            ("1h30m", "90m"),
        ] {
            let parsed: Duration = input.parse().unwrap();
            assert_eq!(parsed.to_string(), shown);
            assert_eq!(shown.parse::<Duration>().unwrap(), parsed);
        }
    }
}
