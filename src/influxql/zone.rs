//! `tz('…')`: the time zone of a SELECT, as InfluxDB 1.6.7 (Go's `time`
//! package) uses it.
//!
//! - [`Zone::load`] accepts the names Go's `time.LoadLocation` finds in the
//!   IANA database (chrono-tz's copy of it): `''` and `'UTC'` are UTC,
//!   `'Local'` the server's zone, names are case-sensitive.
//! - [`Zone::offset`] is the zone's UTC offset at an instant.
//! - [`Zone::window`] and [`Zone::fill_times`] are InfluxDB's GROUP BY time
//!   windows in a zone (`IteratorOptions.Window` and the fill iterator), with
//!   their behaviour around offset changes.
//! - [`Zone::local_to_utc`] reads a wall-clock time in the zone (Go's
//!   `time.Date`), for time literals without an offset.
//!
//! A zone whose offset is always zero ([`Zone::is_utc`]) gives the same
//! answers as no zone: the executor then keeps its UTC path.

use std::sync::OnceLock;

use chrono::{DateTime, Offset, TimeZone};
use chrono_tz::Tz;

use crate::lineproto::{MAX_NANO_TIME, MIN_NANO_TIME};

const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// Zones whose offset is zero at every instant.
const ZERO_OFFSET: &[&str] = &[
    "UTC",
    "Etc/UTC",
    "UCT",
    "Etc/UCT",
    "Universal",
    "Etc/Universal",
    "Zulu",
    "Etc/Zulu",
    "GMT",
    "Etc/GMT",
    "GMT0",
    "Etc/GMT0",
    "GMT+0",
    "Etc/GMT+0",
    "GMT-0",
    "Etc/GMT-0",
    "Greenwich",
    "Etc/Greenwich",
];

/// The time zone of a statement: the name it was given as and its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    name: String,
    tz: Tz,
}

impl Zone {
    /// Go's `time.LoadLocation(name)`; `None` when it would fail.
    pub fn load(name: &str) -> Option<Zone> {
        let tz = match name {
            "" | "UTC" => Tz::UTC,
            "Local" | "localtime" => local_zone(),
            // The zoneinfo directory's alias of America/New_York.
            "posixrules" => Tz::America__New_York,
            // tzdata's placeholder zone: offset 0 ("-00").
            "Factory" => Tz::UTC,
            _ => {
                if name.starts_with(['/', '\\']) || name.contains("..") {
                    return None;
                }
                // The zoneinfo directory's copies of the database.
                let name = name
                    .strip_prefix("posix/")
                    .or_else(|| name.strip_prefix("right/"))
                    .unwrap_or(name);
                name.parse::<Tz>().ok()?
            }
        };
        Some(Zone {
            name: name.to_string(),
            tz,
        })
    }

    /// The name the statement gave.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the offset is zero at every instant (the zone changes
    /// nothing).
    pub fn is_utc(&self) -> bool {
        self.name == "Factory" || ZERO_OFFSET.contains(&self.tz.name())
    }

    /// The UTC offset at an instant, in seconds (Go's
    /// `time.Unix(0, nanos).In(loc).Zone()`).
    pub fn offset_seconds(&self, nanos: i64) -> i64 {
        let seconds = nanos.div_euclid(NANOS_PER_SECOND);
        match DateTime::from_timestamp(seconds, 0) {
            Some(time) => i64::from(
                self.tz
                    .offset_from_utc_datetime(&time.naive_utc())
                    .fix()
                    .local_minus_utc(),
            ),
            None => 0,
        }
    }

    /// The UTC offset at an instant, in nanoseconds.
    pub fn offset(&self, nanos: i64) -> i64 {
        self.offset_seconds(nanos) * NANOS_PER_SECOND
    }

    /// The instant (seconds) of a wall-clock time in the zone, given as
    /// seconds since 1970-01-01T00:00:00 of that wall clock. As Go's
    /// `time.Date`: a time skipped by a change of offset is read with the
    /// offset before the change (02:30 when clocks jump from 02:00 to 03:00
    /// is 01:30 before the jump, one hour later in the new offset), a
    /// time that occurs twice is its first occurrence.
    pub fn local_to_utc(&self, local: i64) -> i64 {
        let guess = self.offset_seconds(local.saturating_mul(NANOS_PER_SECOND));
        if guess == 0 {
            return local;
        }
        let utc = local - guess;
        local - self.offset_seconds(utc.saturating_mul(NANOS_PER_SECOND))
    }

    /// The GROUP BY time window `[start, end)` that holds `t`: InfluxDB's
    /// `IteratorOptions.Window` with a location. Windows start at multiples
    /// of the interval (plus offset) of local time; a window that holds a
    /// change of offset is longer or shorter (unless the change is as long
    /// as the interval).
    pub fn window(&self, t: i64, interval: i64, shift: i64) -> (i64, i64) {
        if interval <= 0 {
            return (MIN_NANO_TIME, MAX_NANO_TIME);
        }
        let t = t.wrapping_sub(shift);
        let zone = self.offset(t);
        let mut dt = t.wrapping_add(zone) % interval;
        if dt < 0 {
            dt += interval;
        }
        let mut start = if MIN_NANO_TIME.wrapping_add(dt) >= t {
            MIN_NANO_TIME
        } else {
            t - dt
        };
        // The offset at the start may differ from the one at t.
        let start_offset = self.offset(start);
        let o = zone.wrapping_sub(start_offset);
        if o != 0 && o.wrapping_abs() < interval {
            start = start.wrapping_add(o);
        }
        start = start.wrapping_add(shift);

        let rest = interval - dt;
        let mut end = if MAX_NANO_TIME.wrapping_sub(rest) <= t {
            MAX_NANO_TIME
        } else {
            t + rest
        };
        let end_offset = self.offset(end);
        let o = zone.wrapping_sub(end_offset);
        if o != 0 && o.wrapping_abs() < interval {
            // Clocks set back: the repeated time belongs to this window.
            // Clocks set forward: only when the change is inside it.
            if o > 0 || self.offset(end.wrapping_add(o)) == end_offset {
                end = end.wrapping_add(o);
            }
        }
        (start, end.wrapping_add(shift))
    }

    /// The rows InfluxDB's fill iterator gives for one series of GROUP BY
    /// time windows: `present` are the starts of the windows that hold
    /// points, ascending; the rows run from the window of `min` (or the
    /// first present window when `min` is unbounded) to the window of
    /// `max`. Each row is its time and, for a window that holds points, its
    /// index in `present` (`None` for a filled row). The expected time
    /// advances by the interval and by the change of offset it crosses, and
    /// a window whose start is not the expected time is shown as it is (as
    /// InfluxDB does), so rows around a change of offset follow InfluxDB's.
    /// The rows are in ascending order; with `descending` they are those of
    /// a descending query (which can differ), reversed.
    pub fn fill_times(
        &self,
        (interval, shift): (i64, i64),
        (min, max): (i64, i64),
        present: &[i64],
        descending: bool,
        max_rows: i64,
    ) -> Result<Vec<(i64, Option<usize>)>, String> {
        if interval <= 0 {
            return Err("invalid duration".into());
        }
        let Some(&first) = present.first() else {
            return Ok(Vec::new());
        };
        let first = self.window(first, interval, shift).0;
        let low = if min == MIN_NANO_TIME {
            None
        } else {
            Some(self.window(min, interval, shift).0)
        };
        let high = self.window(max, interval, shift).0;
        let span_start = low.unwrap_or(first);
        if high.saturating_sub(span_start) / interval > max_rows {
            return Err(format!(
                "too many buckets in GROUP BY time: more than {max_rows} per series"
            ));
        }
        let mut out = Vec::new();
        // Expected time, and the offset it was computed in.
        let (mut expected, end) = if descending {
            (high, low)
        } else {
            (span_start, Some(high))
        };
        let mut offset = self.offset(expected);
        let mut index: usize = 0;
        let next_present = |index: usize| -> Option<(usize, i64)> {
            if descending {
                let at = present.len().checked_sub(index + 1)?;
                present.get(at).map(|&time| (at, time))
            } else {
                present.get(index).map(|&time| (index, time))
            }
        };
        loop {
            match next_present(index) {
                None => {
                    let inside = match (descending, end) {
                        (false, Some(end)) => expected <= end,
                        (true, Some(end)) => expected >= end,
                        // A descending query without a lower bound stops
                        // at its last window with points.
                        (_, None) => false,
                    };
                    if !inside {
                        break;
                    }
                    out.push((expected, None));
                }
                Some((at, time)) => {
                    let later = if descending {
                        time < expected
                    } else {
                        time > expected
                    };
                    if later {
                        out.push((expected, None));
                    } else {
                        out.push((time, Some(at)));
                        index += 1;
                    }
                }
            }
            let step = if descending {
                expected.checked_sub(interval)
            } else {
                expected.checked_add(interval)
            };
            let Some(step) = step else { break };
            expected = step;
            let now = self.offset(expected.saturating_sub(1));
            if now != offset {
                let diff = offset - now;
                if diff.abs() < interval {
                    expected = expected.saturating_add(diff);
                }
                offset = now;
            }
            if out.len() as i64 > max_rows.saturating_add(present.len() as i64) {
                return Err(format!(
                    "too many buckets in GROUP BY time: more than {max_rows} per series"
                ));
            }
        }
        if descending {
            out.reverse();
        }
        Ok(out)
    }
}

/// The zone of `tz('Local')`: Go reads `$TZ` (empty is UTC), else
/// `/etc/localtime`; a name it cannot find is UTC.
fn local_zone() -> Tz {
    static LOCAL: OnceLock<Tz> = OnceLock::new();
    *LOCAL.get_or_init(|| {
        let name = match std::env::var("TZ") {
            Ok(value) => value.trim_start_matches(':').to_string(),
            Err(_) => std::fs::read_link("/etc/localtime")
                .ok()
                .and_then(|target| {
                    let target = target.to_string_lossy().into_owned();
                    target
                        .split_once("zoneinfo/")
                        .map(|(_, name)| name.to_string())
                })
                .unwrap_or_default(),
        };
        if name.is_empty() {
            return Tz::UTC;
        }
        name.parse::<Tz>().unwrap_or(Tz::UTC)
    })
}

/// `nanos` as Go's `time.RFC3339Nano` in a zone offset (seconds):
/// fractional seconds without trailing zeros, `Z` for a zero offset, else
/// `±hh:mm` (seconds of an offset are not shown, as in Go).
pub fn format_rfc3339(nanos: i64, offset_seconds: i64, fraction: bool) -> String {
    use chrono::{Datelike, Timelike};
    use std::fmt::Write as _;
    let seconds = nanos.div_euclid(NANOS_PER_SECOND) + offset_seconds;
    let nanos_part = nanos.rem_euclid(NANOS_PER_SECOND) as u32;
    let Some(time) = DateTime::from_timestamp(seconds, nanos_part) else {
        return nanos.to_string();
    };
    let mut out = String::with_capacity(35);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        time.year(),
        time.month(),
        time.day(),
        time.hour(),
        time.minute(),
        time.second()
    );
    if fraction && nanos_part != 0 {
        let mut digits = nanos_part;
        let mut width = 9;
        while digits.is_multiple_of(10) {
            digits /= 10;
            width -= 1;
        }
        let _ = write!(out, ".{digits:0width$}");
    }
    if offset_seconds == 0 {
        out.push('Z');
    } else {
        let minutes = offset_seconds / 60;
        let sign = if minutes < 0 { '-' } else { '+' };
        let minutes = minutes.abs();
        let _ = write!(out, "{sign}{:02}:{:02}", minutes / 60, minutes % 60);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .and_then(|t| t.timestamp_nanos_opt())
            .unwrap_or(i64::MIN)
    }

    #[test]
    fn names_as_go_loads_them() {
        for name in [
            "",
            "UTC",
            "Local",
            "America/Chicago",
            "US/Central",
            "EST",
            "Etc/GMT+6",
            "posix/America/Chicago",
            "posixrules",
            "Factory",
        ] {
            assert!(Zone::load(name).is_some(), "{name}");
        }
        for name in [
            "utc",
            "america/chicago",
            "Nowhere/Bogus",
            "+05:00",
            "America",
            "../etc/passwd",
            "/etc/localtime",
            "zone.tab",
        ] {
            assert!(Zone::load(name).is_none(), "{name}");
        }
        assert!(Zone::load("Etc/UTC").is_some_and(|z| z.is_utc()));
        assert!(Zone::load("Africa/Monrovia").is_some_and(|z| !z.is_utc()));
    }

    #[test]
    fn offsets_and_formats() {
        let chicago = Zone::load("America/Chicago").expect("zone");
        let t = ns("2016-01-01T06:00:00Z");
        assert_eq!(chicago.offset_seconds(t), -6 * 3600);
        assert_eq!(
            format_rfc3339(t, chicago.offset_seconds(t), true),
            "2016-01-01T00:00:00-06:00"
        );
        // Local mean time: Go shows the offset without its seconds.
        let old = ns("1800-01-01T00:00:00Z");
        assert_eq!(
            format_rfc3339(old, chicago.offset_seconds(old), true),
            "1799-12-31T18:09:24-05:50"
        );
        let kolkata = Zone::load("Asia/Kolkata").expect("zone");
        assert_eq!(
            format_rfc3339(t + 5, kolkata.offset_seconds(t), true),
            "2016-01-01T11:30:00.000000005+05:30"
        );
    }

    #[test]
    fn wall_clock_times_as_go_reads_them() {
        let chicago = Zone::load("America/Chicago").expect("zone");
        let local = |text: &str| ns(text) / NANOS_PER_SECOND;
        // 02:00 does not exist on 2016-03-13: read as 07:00Z (as InfluxDB).
        assert_eq!(
            chicago.local_to_utc(local("2016-03-13T02:00:00Z")),
            local("2016-03-13T07:00:00Z")
        );
        // 01:00 occurs twice on 2016-11-06: the first one.
        assert_eq!(
            chicago.local_to_utc(local("2016-11-06T01:00:00Z")),
            local("2016-11-06T06:00:00Z")
        );
    }

    #[test]
    fn windows_across_offset_changes() {
        let chicago = Zone::load("America/Chicago").expect("zone");
        let hour = 3_600 * NANOS_PER_SECOND;
        // Recorded from InfluxDB 1.6.7: 2h windows on 2016-11-06 run
        // 00:00-05:00 to 01:00-06:00 (3 h), then 02:00-06:00.
        assert_eq!(
            chicago.window(ns("2016-11-06T07:30:00Z"), 2 * hour, 0),
            (ns("2016-11-06T05:00:00Z"), ns("2016-11-06T08:00:00Z"))
        );
        // On 2016-03-13 the window of 03:00-05:00 is one hour long.
        assert_eq!(
            chicago.window(ns("2016-03-13T08:30:00Z"), 2 * hour, 0),
            (ns("2016-03-13T08:00:00Z"), ns("2016-03-13T09:00:00Z"))
        );
        // A day is 23 hours on 2016-03-13.
        assert_eq!(
            chicago.window(ns("2016-03-13T12:00:00Z"), 24 * hour, 0),
            (ns("2016-03-13T06:00:00Z"), ns("2016-03-14T05:00:00Z"))
        );
    }

    #[test]
    fn fill_rows_follow_influxdb() {
        let chicago = Zone::load("America/Chicago").expect("zone");
        let hour = 3_600 * NANOS_PER_SECOND;
        let present: Vec<i64> = [
            "2016-11-06T03:00:00Z",
            "2016-11-06T05:00:00Z",
            "2016-11-06T08:00:00Z",
            "2016-11-06T10:00:00Z",
            "2016-11-06T12:00:00Z",
        ]
        .iter()
        .map(|t| ns(t))
        .collect();
        let range = (
            ns("2016-11-06T03:00:00Z"),
            ns("2016-11-06T13:59:59.999999999Z"),
        );
        // Recorded from InfluxDB 1.6.7: ascending, a filled row at
        // 01:00-06:00; descending, none.
        let rows = chicago
            .fill_times((2 * hour, 0), range, &present, false, 1_000)
            .expect("rows");
        let times: Vec<i64> = rows.iter().map(|(t, _)| *t).collect();
        assert_eq!(
            times,
            vec![
                present[0],
                present[1],
                ns("2016-11-06T07:00:00Z"),
                present[2],
                present[3],
                present[4]
            ]
        );
        let rows = chicago
            .fill_times((2 * hour, 0), range, &present, true, 1_000)
            .expect("rows");
        let times: Vec<i64> = rows.iter().map(|(t, _)| *t).collect();
        assert_eq!(times, present);
    }
}
