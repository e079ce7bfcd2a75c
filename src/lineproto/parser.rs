//! The line-protocol parser, a port of the rules of InfluxDB 1.6.7's
//! `models/points.go` (the error texts are InfluxDB's).
//!
//! Lines are found the way InfluxDB finds them: a newline inside a quoted
//! string field value does not end the line. Each line is then scanned once,
//! left to right, over bytes; names borrow from the body unless they hold
//! escapes.

use std::borrow::Cow;

use super::{FieldValue, LineError, ParsedBatch, Point, Precision};

/// InfluxDB's valid time range (`models.MinNanoTime` .. `models.MaxNanoTime`).
pub const MIN_NANO_TIME: i64 = i64::MIN + 2;
pub const MAX_NANO_TIME: i64 = i64::MAX - 1;

/// Parse a whole request body. `now` (nanoseconds) stamps every line without a
/// timestamp, so that such points of one request share one server time.
pub fn parse(body: &[u8], precision: Precision, now: i64) -> ParsedBatch<'_> {
    let mut batch = ParsedBatch::default();
    let mut start = 0;
    let mut line_number = 0;
    while start < body.len() {
        let end = scan_line(body, start);
        line_number += 1;
        let raw = &body[start..end];
        start = end + 1;
        let trimmed = trim_leading_space(raw);
        if trimmed.is_empty() || trimmed[0] == b'#' {
            continue;
        }
        // InfluxDB trims trailing spaces, tabs and newlines, but keeps a `\r`.
        let line = trim_trailing_space(trimmed);
        if line.is_empty() {
            continue;
        }
        let parsed = match std::str::from_utf8(line) {
            Ok(text) => parse_line(text, precision, now, line_number),
            Err(_) => Err(reason("invalid UTF-8")),
        };
        match parsed {
            Ok(point) => batch.points.push(point),
            Err(reason) => batch.errors.push(LineError {
                line: line_number,
                text: String::from_utf8_lossy(line).into_owned(),
                reason,
            }),
        }
    }
    batch
}

fn trim_leading_space(line: &[u8]) -> &[u8] {
    let skip = line
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .count();
    &line[skip..]
}

fn trim_trailing_space(line: &[u8]) -> &[u8] {
    let keep = line.len()
        - line
            .iter()
            .rev()
            .take_while(|b| matches!(b, b' ' | b'\t' | b'\n'))
            .count();
    &line[..keep]
}

/// The end (exclusive) of the line starting at `start`: InfluxDB's `scanLine`.
fn scan_line(buf: &[u8], start: usize) -> usize {
    // Fast path: a line without quotes or backslashes ends at its newline.
    let rest = &buf[start..];
    let newline = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
    if memchr::memchr2(b'"', b'\\', &rest[..newline]).is_none() {
        return start + newline;
    }
    let mut i = start;
    let mut quoted = false;
    let mut fields = false;
    let mut equals = 0usize;
    let mut commas = 0usize;
    while i < buf.len() {
        let byte = buf[i];
        if byte == b'\\' && i + 2 < buf.len() {
            i += 2;
            continue;
        }
        if byte == b' ' {
            fields = true;
        }
        if fields {
            if !quoted && byte == b'=' {
                i += 1;
                equals += 1;
                continue;
            } else if !quoted && byte == b',' {
                i += 1;
                commas += 1;
                continue;
            } else if byte == b'"' && equals > commas {
                i += 1;
                quoted = !quoted;
                continue;
            }
        }
        if byte == b'\n' && !quoted {
            break;
        }
        i += 1;
    }
    i
}

type Reason = String;

fn reason(text: &str) -> Reason {
    text.to_string()
}

fn parse_line(
    text: &str,
    precision: Precision,
    now: i64,
    number: usize,
) -> Result<Point<'_>, Reason> {
    let line = text.as_bytes();
    // Slices are taken at ASCII delimiters only, so they are char boundaries;
    // `get` keeps even a mistake here from panicking.
    let piece =
        |start: usize, end: usize| text.get(start..end).ok_or_else(|| reason("invalid UTF-8"));
    // ---- measurement and tags: up to the first unescaped space.
    let key_end = find_unescaped(line, 0, |b| b == b' ');
    let key = &line[..key_end];
    if key.is_empty() || key[0] == b',' {
        return Err(reason("missing measurement"));
    }
    let measurement_end = find_unescaped(key, 0, |b| b == b',');
    let measurement = unescape(piece(0, measurement_end)?, b",  ");
    let mut tags: Vec<(Cow<'_, str>, Cow<'_, str>)> = Vec::new();
    let mut position = measurement_end;
    while position < key.len() {
        // key[position] == b','
        let tag_start = position + 1;
        let tag_end = find_unescaped(key, tag_start, |b| b == b',');
        let tag = &key[tag_start..tag_end];
        let equals = find_unescaped(tag, 0, |b| b == b'=');
        if equals == tag.len() {
            return Err(reason(if tag.is_empty() {
                "missing tag key"
            } else {
                "missing tag value"
            }));
        }
        if equals == 0 {
            return Err(reason("missing tag key"));
        }
        if equals + 1 == tag.len() {
            return Err(reason("missing tag value"));
        }
        let value = &tag[equals + 1..];
        if find_unescaped(value, 0, |b| b == b'=') != value.len() {
            return Err(reason("invalid tag format"));
        }
        let key_text = piece(tag_start, tag_start + equals)?;
        let value_text = piece(tag_start + equals + 1, tag_end)?;
        tags.push((unescape(key_text, b",= "), unescape(value_text, b",= ")));
        position = tag_end;
    }
    tags.sort_by(|a, b| a.0.cmp(&b.0));
    if tags.windows(2).any(|pair| pair[0].0 == pair[1].0) {
        return Err(reason("duplicate tags"));
    }

    // ---- fields
    let mut position = key_end;
    while position < line.len() && line[position] == b' ' {
        position += 1;
    }
    if position >= line.len() {
        return Err(reason("missing fields"));
    }
    let mut fields: Vec<(Cow<'_, str>, FieldValue<'_>)> = Vec::new();
    loop {
        // field key up to an unescaped '='
        let key_start = position;
        let mut i = position;
        loop {
            if i >= line.len() {
                return Err(reason("missing fields"));
            }
            match line[i] {
                b'\\' => i += 2,
                b'=' => break,
                b' ' | b',' => {
                    return Err(reason(if i == key_start {
                        "missing field key"
                    } else {
                        "invalid field format"
                    }))
                }
                _ => i += 1,
            }
        }
        if i == key_start {
            return Err(reason("missing field key"));
        }
        let field_key = unescape(piece(key_start, i)?, b",= ");
        i += 1; // '='
        if i >= line.len() || line[i] == b' ' || line[i] == b',' {
            return Err(reason("missing field value"));
        }
        let (value, end) = if line[i] == b'"' {
            let value_start = i + 1;
            let mut j = value_start;
            loop {
                if j >= line.len() {
                    return Err(reason("unbalanced quotes"));
                }
                match line[j] {
                    b'\\' => j += 2,
                    b'"' => break,
                    _ => j += 1,
                }
            }
            (
                FieldValue::String(unescape(piece(value_start, j)?, b"\"\\")),
                j + 1,
            )
        } else {
            let mut j = i;
            while j < line.len() && line[j] != b' ' && line[j] != b',' {
                j += 1;
            }
            (parse_scalar(&line[i..j])?, j)
        };
        match fields.iter_mut().find(|(name, _)| *name == field_key) {
            Some(existing) => existing.1 = value,
            None => fields.push((field_key, value)),
        }
        position = end;
        if position >= line.len() || line[position] == b' ' {
            break;
        }
        if line[position] == b',' {
            position += 1;
            continue;
        }
        return Err(reason("invalid field format"));
    }

    // ---- timestamp
    while position < line.len() && line[position] == b' ' {
        position += 1;
    }
    let timestamp = if position >= line.len() {
        now
    } else {
        let text = &line[position..];
        let value = parse_timestamp(text)?;
        value
            .checked_mul(precision.nanos())
            .filter(|t| (MIN_NANO_TIME..=MAX_NANO_TIME).contains(t))
            .ok_or_else(time_outside_range)?
    };
    Ok(Point {
        measurement,
        tags,
        fields,
        timestamp,
        line: number,
        text,
    })
}

fn time_outside_range() -> Reason {
    format!("time outside range {MIN_NANO_TIME} - {MAX_NANO_TIME}")
}

fn parse_timestamp(text: &[u8]) -> Result<i64, Reason> {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(reason("bad timestamp"));
    }
    let text = std::str::from_utf8(text).map_err(|_| reason("bad timestamp"))?;
    let value: i64 = text.parse().map_err(|_| time_outside_range())?;
    if !(MIN_NANO_TIME..=MAX_NANO_TIME).contains(&value) {
        return Err(time_outside_range());
    }
    Ok(value)
}

/// The end of the run starting at `start` up to (not including) the first
/// unescaped byte matching `stop`, or the slice's length.
fn find_unescaped(bytes: &[u8], start: usize, stop: impl Fn(u8) -> bool) -> usize {
    let mut i = start;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if stop(bytes[i]) {
            return i;
        }
        i += 1;
    }
    bytes.len()
}

fn to_str(bytes: &[u8]) -> Result<&str, Reason> {
    std::str::from_utf8(bytes).map_err(|_| reason("invalid UTF-8"))
}

/// Remove the backslash before any byte of `escapable`; other backslashes stay.
fn unescape<'a>(text: &'a str, escapable: &[u8]) -> Cow<'a, str> {
    if !text.as_bytes().contains(&b'\\') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(&next) = chars.peek() {
                if next.is_ascii() && escapable.contains(&(next as u8)) {
                    out.push(next);
                    chars.next();
                    continue;
                }
            }
        }
        out.push(c);
    }
    Cow::Owned(out)
}

fn parse_scalar(text: &[u8]) -> Result<FieldValue<'static>, Reason> {
    let Some(&first) = text.first() else {
        return Err(reason("missing field value"));
    };
    match first {
        b't' | b'T' | b'f' | b'F' => match text {
            b"t" | b"T" | b"true" | b"True" | b"TRUE" => Ok(FieldValue::Boolean(true)),
            b"f" | b"F" | b"false" | b"False" | b"FALSE" => Ok(FieldValue::Boolean(false)),
            _ => Err(reason("invalid boolean")),
        },
        b'-' | b'.' | b'0'..=b'9' => parse_number(text),
        _ => Err(reason("invalid boolean")),
    }
}

fn parse_number(text: &[u8]) -> Result<FieldValue<'static>, Reason> {
    let last = text[text.len() - 1];
    if last == b'i' || last == b'u' {
        let digits = &text[..text.len() - 1];
        let body = digits.strip_prefix(b"-").unwrap_or(digits);
        if body.is_empty() || !body.iter().all(u8::is_ascii_digit) {
            return Err(reason("invalid number"));
        }
        let digits = to_str(digits)?;
        if last == b'i' {
            return digits.parse::<i64>().map(FieldValue::Integer).map_err(|e| {
                format!(
                    "unable to parse integer {digits}: strconv.ParseInt: parsing \"{digits}\": {}",
                    go_num_error(&e.to_string())
                )
            });
        }
        if digits.starts_with('-') {
            return Err(reason("invalid number"));
        }
        return digits.parse::<u64>().map(FieldValue::Unsigned).map_err(|e| {
            format!("unable to parse unsigned {digits}: strconv.ParseUint: parsing \"{digits}\": {}", go_num_error(&e.to_string()))
        });
    }
    if !valid_float(text) {
        return Err(reason("invalid number"));
    }
    let value = fast_float2::parse::<f64, _>(text).map_err(|_| reason("invalid number"))?;
    if !value.is_finite() {
        return Err(format!(
            "unable to parse float {}: strconv.ParseFloat: parsing \"{}\": value out of range",
            String::from_utf8_lossy(text),
            String::from_utf8_lossy(text)
        ));
    }
    Ok(FieldValue::Float(value))
}

fn go_num_error(rust_text: &str) -> &'static str {
    if rust_text.contains("too large") || rust_text.contains("too small") {
        "value out of range"
    } else {
        "invalid syntax"
    }
}

/// InfluxDB's float grammar: `-?digits[.digits][(e|E)[+-]digits]`, where the
/// integer part may be empty when a fraction follows (`.5`).
fn valid_float(text: &[u8]) -> bool {
    let mut i = 0;
    if text.first() == Some(&b'-') {
        i += 1;
    }
    let int_start = i;
    while i < text.len() && text[i].is_ascii_digit() {
        i += 1;
    }
    let mut digits = i - int_start;
    if i < text.len() && text[i] == b'.' {
        i += 1;
        let fraction_start = i;
        while i < text.len() && text[i].is_ascii_digit() {
            i += 1;
        }
        digits += i - fraction_start;
    }
    if digits == 0 {
        return false;
    }
    if i < text.len() && (text[i] == b'e' || text[i] == b'E') {
        i += 1;
        if i < text.len() && (text[i] == b'+' || text[i] == b'-') {
            i += 1;
        }
        let exponent_start = i;
        while i < text.len() && text[i].is_ascii_digit() {
            i += 1;
        }
        if i == exponent_start {
            return false;
        }
    }
    i == text.len()
}
