//! InfluxDB 1.x line protocol.
//!
//! The parser borrows from the request body: names and string values are
//! `Cow::Borrowed` unless they contain escapes. It never panics on any input
//! and reports every bad line with its number and InfluxDB's reason, so that
//! `/write` can keep the good lines and answer `partial write: …`.

mod parser;

pub use parser::{parse, MAX_NANO_TIME, MIN_NANO_TIME};

use std::borrow::Cow;

/// Timestamp precision of a write (`precision=` on `/write`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Precision {
    #[default]
    Nanosecond,
    Microsecond,
    Millisecond,
    Second,
    Minute,
    Hour,
}

impl Precision {
    /// `n`, `ns`, `u`, `us`, `µ`, `ms`, `s`, `m`, `h`; `None` for anything else
    /// (InfluxDB 1.x then treats timestamps as nanoseconds).
    pub fn from_param(value: &str) -> Option<Precision> {
        Some(match value {
            "n" | "ns" => Precision::Nanosecond,
            "u" | "us" | "µ" => Precision::Microsecond,
            "ms" => Precision::Millisecond,
            "s" => Precision::Second,
            "m" => Precision::Minute,
            "h" => Precision::Hour,
            _ => return None,
        })
    }

    /// Nanoseconds in one unit of this precision.
    pub fn nanos(self) -> i64 {
        match self {
            Precision::Nanosecond => 1,
            Precision::Microsecond => 1_000,
            Precision::Millisecond => 1_000_000,
            Precision::Second => 1_000_000_000,
            Precision::Minute => 60_000_000_000,
            Precision::Hour => 3_600_000_000_000,
        }
    }
}

/// A field value as written.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue<'a> {
    Float(f64),
    Integer(i64),
    Unsigned(u64),
    String(Cow<'a, str>),
    Boolean(bool),
}

/// One parsed point. Names are unescaped.
#[derive(Debug, Clone, PartialEq)]
pub struct Point<'a> {
    pub measurement: Cow<'a, str>,
    /// Sorted by key; a key written twice keeps its last value.
    pub tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// In line order; a key written twice keeps its last value, in the position of the first.
    pub fields: Vec<(Cow<'a, str>, FieldValue<'a>)>,
    /// Nanoseconds since the Unix epoch.
    pub timestamp: i64,
    /// 1-based line number in the request body.
    pub line: usize,
    /// The line itself (trimmed): what a coordinator forwards to replicas.
    pub text: &'a str,
}

/// A line that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number in the request body.
    pub line: usize,
    /// The line as sent (lossily decoded), for the error message.
    pub text: String,
    /// InfluxDB's reason, e.g. `invalid field format`.
    pub reason: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unable to parse '{}': {}", self.text, self.reason)
    }
}

/// The result of parsing one request body.
#[derive(Debug, Default)]
pub struct ParsedBatch<'a> {
    pub points: Vec<Point<'a>>,
    pub errors: Vec<LineError>,
}

/// The canonical, escaped series key `measurement,k1=v1,k2=v2` of a point
/// whose tags are sorted by key, as InfluxDB prints it in `SHOW SERIES`.
/// Storage hashes this string into the ring token.
pub fn series_key(measurement: &str, tags: &[(impl AsRef<str>, impl AsRef<str>)]) -> String {
    let mut key = String::with_capacity(measurement.len() + tags.len() * 16);
    escape_into(&mut key, measurement, &[',', ' ']);
    for (tag_key, tag_value) in tags {
        key.push(',');
        escape_into(&mut key, tag_key.as_ref(), &[',', '=', ' ']);
        key.push('=');
        escape_into(&mut key, tag_value.as_ref(), &[',', '=', ' ']);
    }
    key
}

fn escape_into(out: &mut String, text: &str, special: &[char]) {
    if !text.contains(special) {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        if special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

#[cfg(test)]
mod series_key_tests {
    use super::series_key;

    #[test]
    fn escapes_names_and_joins_tags() {
        let tags = [("host name", "a,b"), ("region", "x=y")];
        assert_eq!(
            series_key("cpu load", &tags),
            r"cpu\ load,host\ name=a\,b,region=x\=y"
        );
        assert_eq!(series_key("m", &[] as &[(&str, &str)]), "m");
    }
}

#[cfg(test)]
mod tests;
