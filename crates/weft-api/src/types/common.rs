//! Types shared by several Istio kinds: durations, string matches, selectors, metadata.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_with::skip_serializing_none;

/// Labels or annotations.
pub type Labels = BTreeMap<String, String>;

/// A protobuf `Duration` as Istio reads it from YAML: Go's duration syntax (`1.5s`, `100ms`,
/// `1h30m`). Kept signed so that validation can say why `-1s` is wrong instead of a parse error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    nanos: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}")]
pub struct DurationError {
    pub input: String,
    pub reason: &'static str,
}

impl Duration {
    pub const fn from_nanos(nanos: i64) -> Self {
        Duration { nanos }
    }

    pub const fn from_millis(ms: i64) -> Self {
        Duration {
            nanos: ms.saturating_mul(1_000_000),
        }
    }

    pub const fn from_secs(s: i64) -> Self {
        Duration {
            nanos: s.saturating_mul(1_000_000_000),
        }
    }

    pub fn as_nanos(&self) -> i64 {
        self.nanos
    }

    /// The duration as std's type, or `None` when negative.
    pub fn to_std(&self) -> Option<std::time::Duration> {
        u64::try_from(self.nanos)
            .ok()
            .map(std::time::Duration::from_nanos)
    }

    /// Parses Go's duration syntax, which is what Istio's CRDs accept.
    pub fn parse(input: &str) -> Result<Duration, DurationError> {
        let err = |reason| DurationError {
            input: input.to_string(),
            reason,
        };
        let s = input.trim();
        let (neg, mut rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        if rest == "0" {
            return Ok(Duration { nanos: 0 });
        }
        if rest.is_empty() {
            return Err(err("empty"));
        }
        let mut total: i128 = 0;
        while !rest.is_empty() {
            let num_end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let num = &rest[..num_end];
            if num.is_empty() || num == "." || num.matches('.').count() > 1 {
                return Err(err("expected a number, such as 10s or 1.5s"));
            }
            rest = &rest[num_end..];
            let unit_end = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let unit = &rest[..unit_end];
            rest = &rest[unit_end..];
            let scale: i128 = match unit {
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                "" => {
                    return Err(err(
                        "missing unit; use ns, us, ms, s, m or h (for example 10s)",
                    ));
                }
                _ => return Err(err("unknown unit; use ns, us, ms, s, m or h")),
            };
            let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
            let int: i128 = if int_part.is_empty() {
                0
            } else {
                int_part.parse().map_err(|_| err("number too large"))?
            };
            let mut value = int.checked_mul(scale).ok_or_else(|| err("too large"))?;
            let mut div = 1i128;
            for c in frac_part.bytes().take(18) {
                div *= 10;
                value += i128::from(c - b'0') * scale / div;
            }
            total = total.checked_add(value).ok_or_else(|| err("too large"))?;
            if total > i128::from(i64::MAX) {
                return Err(err("too large"));
            }
        }
        let nanos =
            i64::try_from(if neg { -total } else { total }).map_err(|_| err("too large"))?;
        Ok(Duration { nanos })
    }
}

impl fmt::Display for Duration {
    /// Protobuf's JSON form (`1.500s`), the form Envoy and Istio print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.nanos < 0 { "-" } else { "" };
        let n = self.nanos.unsigned_abs();
        let (secs, frac) = (n / 1_000_000_000, n % 1_000_000_000);
        if frac == 0 {
            write!(f, "{sign}{secs}s")
        } else if frac % 1_000_000 == 0 {
            write!(f, "{sign}{secs}.{:03}s", frac / 1_000_000)
        } else if frac % 1_000 == 0 {
            write!(f, "{sign}{secs}.{:06}s", frac / 1_000)
        } else {
            write!(f, "{sign}{secs}.{frac:09}s")
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Duration::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Istio's `StringMatch`: exactly one of exact, prefix or regex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Regex(String),
}

/// A percentage with fractions (`value: 0.1` is one in a thousand).
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Percent {
    pub value: Option<f64>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PortSelector {
    pub number: Option<i64>,
}

/// `selector.matchLabels` of the security and telemetry kinds.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    #[serde(default)]
    pub match_labels: Labels,
}

/// `workloadSelector.labels` of the networking kinds.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LabelSelector {
    #[serde(default)]
    pub labels: Labels,
}

#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PolicyTargetReference {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
}

/// Kubernetes `ObjectMeta`, with the fields a mesh reads typed and the rest carried.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: Option<String>,
    pub generate_name: Option<String>,
    pub namespace: Option<String>,
    pub self_link: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub generation: Option<i64>,
    pub creation_timestamp: Option<String>,
    pub deletion_timestamp: Option<String>,
    pub deletion_grace_period_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: Labels,
    pub owner_references: Option<Vec<serde_json::Value>>,
    pub finalizers: Option<Vec<String>>,
    pub managed_fields: Option<Vec<serde_json::Value>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let cases = [
            ("1.5s", 1_500_000_000),
            ("100ms", 100_000_000),
            ("1h", 3_600_000_000_000),
            ("1m30s", 90_000_000_000),
            ("0", 0),
            ("300us", 300_000),
            ("-2s", -2_000_000_000),
            (".5s", 500_000_000),
        ];
        for (s, n) in cases {
            assert_eq!(Duration::parse(s).map(|d| d.as_nanos()), Ok(n), "{s}");
        }
        for bad in ["", "10", "1.2.3s", "5 parsecs", "s", "1d", "99999999999h"] {
            assert!(Duration::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn duration_prints_like_protobuf_json() {
        assert_eq!(Duration::parse("1.5s").unwrap().to_string(), "1.500s");
        assert_eq!(Duration::parse("1h").unwrap().to_string(), "3600s");
        assert_eq!(Duration::parse("1us").unwrap().to_string(), "0.000001s");
        assert_eq!(Duration::parse("-250ms").unwrap().to_string(), "-0.250s");
        let d = Duration::parse("2m3.004005006s").unwrap();
        assert_eq!(Duration::parse(&d.to_string()), Ok(d));
    }
}
