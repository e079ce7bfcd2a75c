//! Response encoders: JSON as InfluxDB 1.6.7 writes it (Go's number and
//! time formats), chunked JSON, and CSV.

use std::fmt::Write as _;

use super::zone::{format_rfc3339, Zone};
use super::{Cell, Epoch, ResultSeries, StatementResult};

/// Go's `time.RFC3339Nano`: fractional seconds without trailing zeros.
pub fn format_time(nanos: i64) -> String {
    format_rfc3339(nanos, 0, true)
}

/// A float as Go's encoding/json writes it: the shortest digits that read
/// back as the same float (zmij; on an exact tie between two shortest
/// candidates the even one, as Go's strconv: InfluxDB 1.6.7 prints
/// 1573312159788211.25 as `1573312159788211.2` where Rust's `{}` gives
/// `…211.3`), in exponent form below 1e-6 and from 1e21.
pub fn format_float(value: f64, out: &mut String) {
    if !value.is_finite() {
        // JSON has no NaN/Inf; InfluxDB never emits them in results.
        out.push_str("null");
        return;
    }
    let mut buffer = zmij::Buffer::new();
    let text = buffer.format_finite(value);
    let abs = value.abs();
    if (abs == 0.0 || (1e-6..1e21).contains(&abs)) && !text.contains('e') {
        // The common case: plain digits, as Go writes them but for zmij's
        // `.0` on whole numbers.
        out.push_str(text.strip_suffix(".0").unwrap_or(text));
        return;
    }
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match text.split_once('e') {
        Some((mantissa, exponent)) => (mantissa, exponent.parse::<i32>().unwrap_or(0)),
        None => (text, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    // The digits d1 d2 … and where the decimal point falls among them.
    let mut digits: Vec<u8> = whole.bytes().chain(fraction.bytes()).collect();
    let mut point = whole.len() as i32 + exponent;
    let leading = digits.iter().take_while(|&&d| d == b'0').count();
    digits.drain(..leading);
    point -= leading as i32;
    while digits.last() == Some(&b'0') {
        digits.pop();
    }
    if negative {
        out.push('-');
    }
    if digits.is_empty() {
        out.push('0');
        return;
    }
    let digits = String::from_utf8_lossy(&digits);
    if !(1e-6..1e21).contains(&abs) {
        // Go: 1e-07 is cleaned to 1e-7; positive exponents keep their sign.
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let exponent = point - 1;
        let _ = write!(
            out,
            "e{}{}",
            if exponent < 0 { '-' } else { '+' },
            exponent.abs()
        );
        return;
    }
    let len = digits.len() as i32;
    if point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-point) as usize));
        out.push_str(&digits);
    } else if point >= len {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (point - len) as usize));
    } else {
        out.push_str(&digits[..point as usize]);
        out.push('.');
        out.push_str(&digits[point as usize..]);
    }
}

fn json_string(text: &str, out: &mut String) {
    out.push('"');
    let plain = |b: &u8| *b >= 0x20 && !matches!(b, b'"' | b'\\' | b'<' | b'>' | b'&');
    if text.as_bytes().iter().all(plain) {
        out.push_str(text);
        out.push('"');
        return;
    }
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn cell(value: &Cell, epoch: Epoch, zone: Option<&Zone>, out: &mut String) {
    match value {
        Cell::Null => out.push_str("null"),
        Cell::Time(nanos) => match epoch {
            Epoch::Rfc3339 => {
                let offset = zone.map_or(0, |zone| zone.offset_seconds(*nanos));
                json_string(&format_rfc3339(*nanos, offset, true), out)
            }
            Epoch::Units(units) => {
                let _ = write!(out, "{}", nanos / units.max(1));
            }
        },
        Cell::Float(v) => format_float(*v, out),
        Cell::Integer(v) => {
            let _ = write!(out, "{v}");
        }
        Cell::Unsigned(v) => {
            let _ = write!(out, "{v}");
        }
        Cell::String(v) => json_string(v, out),
        Cell::Boolean(v) => out.push_str(if *v { "true" } else { "false" }),
    }
}

fn series(series: &ResultSeries, epoch: Epoch, zone: Option<&Zone>, out: &mut String) {
    out.push('{');
    let mut first = true;
    let mut key = |name: &str, out: &mut String| {
        if !first {
            out.push(',');
        }
        first = false;
        json_string(name, out);
        out.push(':');
    };
    if let Some(name) = &series.name {
        key("name", out);
        json_string(name, out);
    }
    if let Some(tags) = &series.tags {
        key("tags", out);
        out.push('{');
        for (index, (tag, value)) in tags.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            json_string(tag, out);
            out.push(':');
            json_string(value, out);
        }
        out.push('}');
    }
    key("columns", out);
    out.push('[');
    for (index, column) in series.columns.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        json_string(column, out);
    }
    out.push(']');
    if !series.values.is_empty() {
        key("values", out);
        out.push('[');
        for (row_index, row) in series.values.iter().enumerate() {
            if row_index > 0 {
                out.push(',');
            }
            out.push('[');
            for (index, value) in row.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                cell(value, epoch, zone, out);
            }
            out.push(']');
        }
        out.push(']');
    }
    if series.partial {
        key("partial", out);
        out.push_str("true");
    }
    out.push('}');
}

fn result(result: &StatementResult, epoch: Epoch, out: &mut String) {
    let _ = write!(out, "{{\"statement_id\":{}", result.statement_id);
    if !result.series.is_empty() {
        out.push_str(",\"series\":[");
        for (index, item) in result.series.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            series(item, epoch, result.zone.as_ref(), out);
        }
        out.push(']');
    }
    if !result.messages.is_empty() {
        out.push_str(",\"messages\":[");
        for (index, message) in result.messages.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            out.push_str("{\"level\":");
            json_string(&message.level, out);
            out.push_str(",\"text\":");
            json_string(&message.text, out);
            out.push('}');
        }
        out.push(']');
    }
    if result.partial {
        out.push_str(",\"partial\":true");
    }
    if let Some(error) = &result.error {
        out.push_str(",\"error\":");
        json_string(error, out);
    }
    out.push('}');
}

fn finish(compact: String, pretty: bool) -> Vec<u8> {
    if !pretty {
        let mut bytes = compact.into_bytes();
        bytes.push(b'\n');
        return bytes;
    }
    match serde_json::from_str::<serde_json::Value>(&compact) {
        Ok(value) => {
            let mut bytes =
                serde_json::to_vec_pretty(&value).unwrap_or_else(|_| compact.into_bytes());
            bytes.push(b'\n');
            bytes
        }
        Err(_) => compact.into_bytes(),
    }
}

/// `{"results":[…]}`, pretty-printed with `pretty=true`.
pub fn encode_json(results: &[StatementResult], epoch: Epoch, pretty: bool) -> Vec<u8> {
    let mut out = String::from("{\"results\":[");
    for (index, item) in results.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        result(item, epoch, &mut out);
    }
    out.push_str("]}");
    finish(out, pretty)
}

/// `chunked=true`: one `{"results":[…]}` document per line, each series cut
/// into chunks of at most `chunk_size` rows. A cut series is marked
/// `"partial":true` in every chunk but its last, and a statement's result is
/// marked `"partial":true` in every document but its last.
pub fn encode_json_chunks(
    results: &[StatementResult],
    epoch: Epoch,
    pretty: bool,
    chunk_size: usize,
) -> Vec<u8> {
    let chunk_size = chunk_size.max(1);
    let mut out = Vec::new();
    for item in results {
        let mut pieces: Vec<StatementResult> = Vec::new();
        for whole in &item.series {
            let chunks: Vec<&[Vec<Cell>]> = if whole.values.is_empty() {
                vec![&whole.values[..]]
            } else {
                whole.values.chunks(chunk_size).collect()
            };
            let count = chunks.len();
            for (index, rows) in chunks.into_iter().enumerate() {
                pieces.push(StatementResult {
                    statement_id: item.statement_id,
                    series: vec![ResultSeries {
                        name: whole.name.clone(),
                        tags: whole.tags.clone(),
                        columns: whole.columns.clone(),
                        values: rows.to_vec(),
                        partial: index + 1 < count,
                    }],
                    zone: item.zone.clone(),
                    ..Default::default()
                });
            }
        }
        if pieces.is_empty() {
            pieces.push(StatementResult {
                series: Vec::new(),
                ..item.clone()
            });
        } else if let Some(last) = pieces.last_mut() {
            last.messages = item.messages.clone();
            last.error = item.error.clone();
        }
        let total = pieces.len();
        for (index, mut piece) in pieces.into_iter().enumerate() {
            piece.partial = index + 1 < total;
            out.extend(encode_json(std::slice::from_ref(&piece), epoch, pretty));
        }
    }
    out
}

fn csv_field(text: &str, out: &mut String) {
    if text.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&text.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(text);
    }
}

/// `Accept: application/csv`: `name,tags,<columns>` then one line per row;
/// times are integers (nanoseconds unless `epoch=` says otherwise); results
/// of several statements are separated by an empty line.
pub fn encode_csv(results: &[StatementResult], epoch: Epoch) -> Vec<u8> {
    let mut out = String::new();
    let units = match epoch {
        Epoch::Rfc3339 => 1,
        Epoch::Units(units) => units.max(1),
    };
    for (result_index, item) in results.iter().enumerate() {
        if result_index > 0 {
            out.push('\n');
        }
        if let Some(error) = &item.error {
            out.push_str("error\n");
            csv_field(error, &mut out);
            out.push('\n');
            continue;
        }
        let mut header_written: Option<Vec<String>> = None;
        for series in &item.series {
            if header_written.as_ref() != Some(&series.columns) {
                out.push_str("name,tags");
                for column in &series.columns {
                    out.push(',');
                    csv_field(column, &mut out);
                }
                out.push('\n');
                header_written = Some(series.columns.clone());
            }
            let tags = series
                .tags
                .as_ref()
                .map(|tags| {
                    tags.iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            for row in &series.values {
                csv_field(series.name.as_deref().unwrap_or(""), &mut out);
                out.push(',');
                csv_field(&tags, &mut out);
                for value in row {
                    out.push(',');
                    match value {
                        Cell::Null => {}
                        Cell::Time(nanos) => {
                            let _ = write!(out, "{}", nanos / units);
                        }
                        Cell::Float(v) => format_float(*v, &mut out),
                        Cell::Integer(v) => {
                            let _ = write!(out, "{v}");
                        }
                        Cell::Unsigned(v) => {
                            let _ = write!(out, "{v}");
                        }
                        Cell::String(v) => csv_field(v, &mut out),
                        Cell::Boolean(v) => out.push_str(if *v { "true" } else { "false" }),
                    }
                }
                out.push('\n');
            }
        }
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    proptest::proptest! {
        /// Every finite float prints as a JSON number that reads back as
        /// the same float, in Go's layout (exponent form exactly outside
        /// [1e-6, 1e21), no `.0` on whole numbers).
        #[test]
        fn format_float_reads_back(bits in proptest::num::u64::ANY, small in -1_000_000i64..1_000_000, scale in 0i32..12) {
            for value in [f64::from_bits(bits), small as f64 / 10f64.powi(scale)] {
                if !value.is_finite() {
                    continue;
                }
                let mut out = String::new();
                super::format_float(value, &mut out);
                proptest::prop_assert_eq!(out.parse::<f64>().ok(), Some(value), "{}", out);
                let abs = value.abs();
                let exponent_form = abs != 0.0 && !(1e-6..1e21).contains(&abs);
                proptest::prop_assert_eq!(out.contains('e'), exponent_form, "{}", out);
                proptest::prop_assert!(!out.ends_with(".0"), "{}", out);
                proptest::prop_assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok(), "{}", out);
            }
        }
    }

    #[test]
    // The tie cases are written as the exact binary values they are.
    #[allow(clippy::excessive_precision)]
    fn format_float_edges() {
        for (value, text) in [
            (1.0, "1"),
            (-0.0, "-0"),
            (1e16, "10000000000000000"),
            (-1.5e20, "-150000000000000000000"),
            (123.456, "123.456"),
            (1e-6, "0.000001"),
            (1e21, "1e+21"),
            (1e-7, "1e-7"),
            (0.0, "0"),
            (1.5e300, "1.5e+300"),
            (-2.5e-100, "-2.5e-100"),
            (1e15, "1000000000000000"),
            (0.001, "0.001"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            // Exact ties between two shortest candidates: the even one, as
            // InfluxDB 1.6.7 (Go) printed these values.
            (1573312159788211.25, "1573312159788211.2"),
            (214877347937472.125, "214877347937472.12"),
            (-272270773927338.625, "-272270773927338.62"),
        ] {
            let mut out = String::new();
            super::format_float(value, &mut out);
            assert_eq!(out, text);
        }
    }
}
