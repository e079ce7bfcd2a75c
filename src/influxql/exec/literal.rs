//! Strings compared with `time` in WHERE, read as InfluxDB 1.6.7 reads them
//! (`StringLiteral.ToTimeLiteral` over Go's `time.Parse`): the layouts, the
//! zone of strings without an offset (the statement's `tz()`), and the error
//! texts.

use super::Result;
use crate::influxql::zone::{format_rfc3339, Zone};
use crate::lineproto::{MAX_NANO_TIME, MIN_NANO_TIME};

/// A string compared with `time`, as InfluxDB's `ToTimeLiteral` reads it:
/// a string that starts with a date (`YYYY-MM-DD…`) is
/// `YYYY-MM-DD HH:MM:SS[.fraction]` in `zone` or RFC3339 with `T` and an
/// offset (absolute), a bare `YYYY-MM-DD` is midnight in `zone`; Go's
/// `time.Parse` rules (1- or 2-digit hour, at most 9 fractional digits, `,`
/// or `.` before them, runs of spaces). Anything else is not a time.
pub(super) fn time_string(text: &str, zone: Option<&Zone>) -> Result<i64> {
    let bytes = text.as_bytes();
    let date_like = bytes.len() >= 10
        && bytes[..4].iter().all(u8::is_ascii_digit)
        && bytes[4] == b'-'
        && bytes[5..7].iter().all(u8::is_ascii_digit)
        && bytes[7] == b'-'
        && bytes[8..10].iter().all(u8::is_ascii_digit);
    if !date_like {
        return Err(
            "invalid operation: time and *influxql.StringLiteral are not compatible".into(),
        );
    }
    let parsed = if bytes.len() == 10 {
        go_time::parse(text, go_time::Layout::Date)
    } else if bytes[10] == b'\n' {
        // Go's `.+` does not match a newline.
        return Err(
            "invalid operation: time and *influxql.StringLiteral are not compatible".into(),
        );
    } else {
        go_time::parse(text, go_time::Layout::DateTime)
            .or_else(|| go_time::parse(text, go_time::Layout::Rfc3339Nano))
    };
    let parsed = parsed.ok_or_else(|| "invalid timestamp string".to_string())?;
    let local = parsed.local_seconds();
    let seconds = match (parsed.offset, zone) {
        (Some(offset), _) => local - offset,
        (None, Some(zone)) => zone.local_to_utc(local),
        (None, None) => local,
    };
    let nanos = i128::from(seconds) * 1_000_000_000 + i128::from(parsed.nanos);
    if nanos > i128::from(MAX_NANO_TIME) || nanos < i128::from(MIN_NANO_TIME) + 1 {
        // Go prints the time in the offset it was read in.
        let offset = match (parsed.offset, zone) {
            (Some(offset), _) => offset,
            (None, Some(_)) => local - seconds,
            (None, None) => 0,
        };
        let shown = go_time::format_seconds(seconds, offset);
        let what = if nanos > 0 { "overflows" } else { "underflows" };
        return Err(format!("time {shown} {what} time literal"));
    }
    Ok(nanos as i64)
}

/// The parts of Go's `time.Parse` that time literals use.
mod go_time {
    use super::format_rfc3339;

    pub enum Layout {
        /// `2006-01-02`
        Date,
        /// `2006-01-02 15:04:05.999999`
        DateTime,
        /// `2006-01-02T15:04:05.999999999Z07:00`
        Rfc3339Nano,
    }

    pub struct Parsed {
        year: i64,
        month: u32,
        day: u32,
        hour: i64,
        minute: i64,
        second: i64,
        pub nanos: i64,
        /// Seconds east of UTC, when the text gives one.
        pub offset: Option<i64>,
    }

    impl Parsed {
        /// Seconds since 1970-01-01T00:00:00 of the wall clock.
        pub fn local_seconds(&self) -> i64 {
            days_from_civil(self.year, self.month, self.day) * 86_400
                + self.hour * 3_600
                + self.minute * 60
                + self.second
        }
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date.
    fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
        let year = if month <= 2 { year - 1 } else { year };
        let era = year.div_euclid(400);
        let yoe = year - era * 400;
        let month = i64::from(month);
        let doy =
            (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    fn days_in(month: u32, year: i64) -> u32 {
        match month {
            2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    /// `digits` digits exactly.
    fn fixed(text: &mut &[u8], digits: usize) -> Option<i64> {
        let head = text.get(..digits)?;
        if !head.iter().all(u8::is_ascii_digit) {
            return None;
        }
        *text = &text[digits..];
        Some(head.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    }

    /// One or two digits (Go's `getnum(value, false)`).
    fn one_or_two(text: &mut &[u8]) -> Option<i64> {
        match text {
            [a, b, ..] if a.is_ascii_digit() && b.is_ascii_digit() => fixed(text, 2),
            [a, ..] if a.is_ascii_digit() => fixed(text, 1),
            _ => None,
        }
    }

    fn literal(text: &mut &[u8], byte: u8) -> Option<()> {
        if byte == b' ' {
            // A space matches a run of spaces.
            if text.first() != Some(&b' ') {
                return None;
            }
            while text.first() == Some(&b' ') {
                *text = &text[1..];
            }
            return Some(());
        }
        if text.first() != Some(&byte) {
            return None;
        }
        *text = &text[1..];
        Some(())
    }

    pub fn parse(text: &str, layout: Layout) -> Option<Parsed> {
        let mut rest = text.as_bytes();
        let text = &mut rest;
        let year = fixed(text, 4)?;
        literal(text, b'-')?;
        let month = u32::try_from(fixed(text, 2)?).ok()?;
        literal(text, b'-')?;
        let day = u32::try_from(fixed(text, 2)?).ok()?;
        let mut parsed = Parsed {
            year,
            month,
            day,
            hour: 0,
            minute: 0,
            second: 0,
            nanos: 0,
            offset: None,
        };
        if !matches!(layout, Layout::Date) {
            literal(
                text,
                if matches!(layout, Layout::DateTime) {
                    b' '
                } else {
                    b'T'
                },
            )?;
            parsed.hour = one_or_two(text)?;
            literal(text, b':')?;
            parsed.minute = fixed(text, 2)?;
            literal(text, b':')?;
            parsed.second = fixed(text, 2)?;
            if parsed.hour >= 24 || parsed.minute >= 60 || parsed.second >= 60 {
                return None;
            }
            // Fraction: `.` or `,` then 1 to 9 digits (more are extra text).
            if let [b'.' | b',', digit, ..] = text {
                if digit.is_ascii_digit() {
                    *text = &text[1..];
                    let count = text
                        .iter()
                        .take(9)
                        .take_while(|b| b.is_ascii_digit())
                        .count();
                    let value = fixed(text, count)?;
                    parsed.nanos = value * 10_i64.pow(9 - count as u32);
                }
            }
            if matches!(layout, Layout::Rfc3339Nano) {
                if text.first() == Some(&b'Z') {
                    *text = &text[1..];
                    parsed.offset = Some(0);
                } else {
                    let sign = match text.first()? {
                        b'+' => 1,
                        b'-' => -1,
                        _ => return None,
                    };
                    *text = &text[1..];
                    let hours = fixed(text, 2)?;
                    literal(text, b':')?;
                    let minutes = fixed(text, 2)?;
                    if hours > 24 || minutes > 60 {
                        return None;
                    }
                    parsed.offset = Some(sign * (hours * 3_600 + minutes * 60));
                }
            }
        }
        if !text.is_empty()
            || !(1..=12).contains(&parsed.month)
            || parsed.day < 1
            || parsed.day > days_in(parsed.month, parsed.year)
        {
            return None;
        }
        Some(parsed)
    }

    /// Go's `time.RFC3339` (no fraction) of an instant in an offset.
    pub fn format_seconds(seconds: i64, offset: i64) -> String {
        let nanos = i128::from(seconds) * 1_000_000_000;
        match i64::try_from(nanos) {
            Ok(nanos) => format_rfc3339(nanos, offset, false),
            Err(_) => {
                // Outside the nanosecond range: through chrono's wider one.
                match chrono::DateTime::from_timestamp(seconds + offset, 0) {
                    Some(time) => {
                        let mut text = time.format("%Y-%m-%dT%H:%M:%S").to_string();
                        if offset == 0 {
                            text.push('Z');
                        } else {
                            let minutes = offset / 60;
                            let sign = if minutes < 0 { '-' } else { '+' };
                            let minutes = minutes.abs();
                            text.push_str(&format!(
                                "{sign}{:02}:{:02}",
                                minutes / 60,
                                minutes % 60
                            ));
                        }
                        text
                    }
                    None => seconds.to_string(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOT_A_TIME: &str =
        "invalid operation: time and *influxql.StringLiteral are not compatible";
    const INVALID: &str = "invalid timestamp string";

    /// 2016-01-01T00:00:00Z plus seconds.
    fn at(seconds: i64) -> Result<i64> {
        Ok((1_451_606_400 + seconds) * 1_000_000_000)
    }

    #[test]
    fn strings_as_influxdb_reads_them() {
        // Each answer recorded from InfluxDB 1.6.7 (`time = '…'`, no tz()).
        for (text, expected) in [
            ("2016-01-01", at(0)),
            ("2016-01-01 6:00:00", at(6 * 3600)),
            ("2016-01-01  00:00:00", at(0)),
            ("2016-01-01T06:00:00.0Z", at(6 * 3600)),
            ("2016-01-01T6:00:00Z", at(6 * 3600)),
            ("2016-01-01T00:00:00-06:00", at(6 * 3600)),
            ("2016-01-01 00:00:00,5", at(0).map(|t| t + 500_000_000)),
            (
                "2016-01-01 00:00:00.123456789",
                at(0).map(|t| t + 123_456_789),
            ),
            ("2016-01-01 00:00:00.1234567891", Err(INVALID.into())),
            ("2016-01-01T00:00:00", Err(INVALID.into())),
            ("2016-01-01 00:00", Err(INVALID.into())),
            ("2016-01-01 00:00:00Z", Err(INVALID.into())),
            ("2016-02-30", Err(INVALID.into())),
            ("2016-01-01 24:00:00", Err(INVALID.into())),
            ("2016-01-01 06:00:00 ", Err(INVALID.into())),
            ("2016-01-01t06:00:00z", Err(INVALID.into())),
            ("2016-01-01 06:00:00.", Err(INVALID.into())),
            ("2016-01-01T06:00:00+0000", Err(INVALID.into())),
            ("2016-1-01", Err(NOT_A_TIME.into())),
            ("garbage", Err(NOT_A_TIME.into())),
            (
                "0001-01-01",
                Err("time 0001-01-01T00:00:00Z underflows time literal".into()),
            ),
            (
                "2262-04-11 23:47:17",
                Err("time 2262-04-11T23:47:17Z overflows time literal".into()),
            ),
            (
                "9999-12-31T23:59:59Z",
                Err("time 9999-12-31T23:59:59Z overflows time literal".into()),
            ),
            ("2262-04-11T23:47:17+01:00", Ok(9_223_368_437_000_000_000)),
        ] {
            assert_eq!(time_string(text, None), expected, "{text}");
        }
    }

    #[test]
    fn strings_without_offset_are_wall_clock_times_in_the_zone() {
        // Recorded from InfluxDB 1.6.7 with tz('America/Chicago') and
        // tz('Asia/Kolkata').
        let chicago = Zone::load("America/Chicago").expect("zone");
        let kolkata = Zone::load("Asia/Kolkata").expect("zone");
        assert_eq!(time_string("2016-01-01", Some(&chicago)), at(6 * 3600));
        assert_eq!(
            time_string("2016-01-01 00:00:00", Some(&chicago)),
            at(6 * 3600)
        );
        // Absolute times stay absolute.
        assert_eq!(time_string("2016-01-01T00:00:00Z", Some(&chicago)), at(0));
        assert_eq!(
            time_string("2016-01-01T00:00:00-06:00", Some(&kolkata)),
            at(6 * 3600)
        );
        // Skipped by the change to daylight time: 07:00Z; repeated by the
        // change back: the first one (06:00Z).
        assert_eq!(
            time_string("2016-03-13 02:00:00", Some(&chicago)),
            Ok(1_457_852_400_000_000_000)
        );
        assert_eq!(
            time_string("2016-11-06 01:00:00", Some(&chicago)),
            Ok(1_478_412_000_000_000_000)
        );
        assert_eq!(
            time_string("0001-01-01", Some(&chicago)),
            Err("time 0001-01-01T00:00:00-05:50 underflows time literal".into())
        );
        assert_eq!(
            time_string("1677-09-20 19:12:43", Some(&kolkata)),
            Err("time 1677-09-20T19:12:43+05:53 underflows time literal".into())
        );
        assert!(time_string("2262-04-11 23:47:17", Some(&kolkata)).is_ok());
        assert_eq!(
            time_string("2016-01-01T00:00:00", Some(&chicago)),
            Err(INVALID.into())
        );
    }
}
