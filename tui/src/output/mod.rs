//! Text output of the non-interactive commands.
//!
//! - [`flows`]: `skymap observe`'s flows as compact lines, JSON lines or a table.
//! - [`graph`]: `skymap graph`'s service graph as JSON, Graphviz dot or text.
//!
//! Shared here: times (always UTC, so output does not depend on the machine's
//! time zone and needs no time-zone database), durations and truncation.

pub mod flows;
pub mod graph;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A Unix time in nanoseconds split into UTC calendar fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Utc {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    nanos: u32,
}

impl Utc {
    fn from_unix_ns(ns: i64) -> Self {
        let seconds = ns.div_euclid(1_000_000_000);
        let nanos = ns.rem_euclid(1_000_000_000) as u32;
        let days = seconds.div_euclid(86_400);
        let of_day = seconds.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        Self {
            year,
            month,
            day,
            hour: of_day / 3600,
            minute: of_day % 3600 / 60,
            second: of_day % 60,
            nanos,
        }
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), by
/// counting 400-year eras of 146097 days from 0000-03-01 so that the leap day
/// falls at the end of each year.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let march_month = (5 * day_of_year + 2) / 153; // 0 = March
    let day = (day_of_year - (153 * march_month + 2) / 5 + 1) as u32;
    let month = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `Nov 26 06:18:18.123`, Hubble's compact time (day space-padded), in UTC.
pub fn compact_time(ns: i64) -> String {
    let t = Utc::from_unix_ns(ns);
    let month = MONTHS[(t.month as usize).saturating_sub(1) % 12];
    format!("{month} {:>2} {}", t.day, time_of_day(&t))
}

/// `06:18:18.123`: the time of day alone, in UTC (the explorer's tables).
pub fn clock_time(ns: i64) -> String {
    time_of_day(&Utc::from_unix_ns(ns))
}

fn time_of_day(t: &Utc) -> String {
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        t.hour,
        t.minute,
        t.second,
        t.nanos / 1_000_000
    )
}

/// `2026-11-26T06:18:18.123Z` (RFC 3339, UTC, milliseconds).
pub fn rfc3339(ns: i64) -> String {
    let t = Utc::from_unix_ns(ns);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        t.nanos / 1_000_000
    )
}

/// A short human duration: `640ns`, `850µs`, `2.1ms`, `40ms`, `1.25s`.
pub fn duration(ns: u64) -> String {
    const US: u64 = 1_000;
    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;
    match ns {
        0..US => format!("{ns}ns"),
        US..MS => format!("{}µs", ns / US),
        MS..10_000_000 => format!("{:.1}ms", ns as f64 / MS as f64),
        10_000_000..S => format!("{}ms", ns / MS),
        _ => format!("{:.2}s", ns as f64 / S as f64),
    }
}

/// At most `width` characters; longer text ends in `…`.
pub fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut short: String = text.chars().take(width.saturating_sub(1)).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc() {
        // 2026-11-26T06:18:18.123456789Z
        let ns = 1_795_673_898_123_456_789;
        assert_eq!(compact_time(ns), "Nov 26 06:18:18.123");
        assert_eq!(rfc3339(ns), "2026-11-26T06:18:18.123Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(compact_time(0), "Jan  1 00:00:00.000");
        assert_eq!(clock_time(ns), "06:18:18.123");
        // Leap day, and the day before the epoch.
        assert_eq!(
            rfc3339(1_709_164_800_000_000_000),
            "2024-02-29T00:00:00.000Z"
        );
        assert_eq!(rfc3339(-1_000_000), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn durations_and_truncation() {
        assert_eq!(duration(640), "640ns");
        assert_eq!(duration(850_400), "850µs");
        assert_eq!(duration(2_140_000), "2.1ms");
        assert_eq!(duration(40_000_000), "40ms");
        assert_eq!(duration(1_250_000_000), "1.25s");
        assert_eq!(truncate("frontend", 8), "frontend");
        assert_eq!(truncate("frontend-7d9f", 8), "fronten…");
    }
}
