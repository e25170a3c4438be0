//! Calendar dates and UTC timestamps (Howard Hinnant's civil-date algorithms), so dates of birth
//! and times shown to users need no date crate.

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A date typed as YYYY-MM-DD or, as people in the US write it, MM/DD/YYYY; checked to exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    pub year: i64,
    pub month: u32,
    pub day: u32,
}

impl Date {
    pub fn parse(text: &str) -> Option<Date> {
        let text = text.trim();
        // ASCII digits only: a year of four, a month and a day of one or two.
        let number = |s: Option<&str>, digits: std::ops::RangeInclusive<usize>| {
            s.filter(|s| digits.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u32>().ok())
        };
        let (year, month, day) = if text.contains('/') {
            let mut parts = text.splitn(3, '/');
            let (month, day) = (number(parts.next(), 1..=2)?, number(parts.next(), 1..=2)?);
            (number(parts.next(), 4..=4)?, month, day)
        } else {
            let mut parts = text.splitn(3, '-');
            let year = number(parts.next(), 4..=4)?;
            (
                year,
                number(parts.next(), 1..=2)?,
                number(parts.next(), 1..=2)?,
            )
        };
        let year = i64::from(year);
        if !(1850..=9999).contains(&year) || !(1..=12).contains(&month) || day == 0 {
            return None;
        }
        let date = Date { year, month, day };
        (civil_from_days(days_from_civil(year, month, day)) == (year, month, day)).then_some(date)
    }

    pub fn from_timestamp(ts: i64) -> Date {
        let (year, month, day) = civil_from_days(ts.div_euclid(86_400));
        Date { year, month, day }
    }

    /// Whole years between this date (a birth date) and `today`.
    pub fn age_on(&self, today: Date) -> i64 {
        let mut age = today.year - self.year;
        if (today.month, today.day) < (self.month, self.day) {
            age -= 1;
        }
        age
    }
}

impl std::fmt::Display for Date {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// The practice's offset from UTC in seconds, set once at start from `utc_offset_minutes`.
static LOCAL_OFFSET: std::sync::OnceLock<i64> = std::sync::OnceLock::new();

pub fn set_local_offset(seconds: i64) {
    let _ = LOCAL_OFFSET.set(seconds);
}

/// A moment as people read it, in the practice's time: `Nov 28, 2026, 2:03 PM`.
pub fn format_local(ts: i64) -> String {
    format_plain(ts + LOCAL_OFFSET.get().copied().unwrap_or(0))
}

fn format_plain(ts: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let date = Date::from_timestamp(ts);
    let secs = ts.rem_euclid(86_400);
    let (hour, minute) = (secs / 3600, (secs % 3600) / 60);
    let (hour12, half) = match hour {
        0 => (12, " AM"),
        1..=11 => (hour, " AM"),
        12 => (12, " PM"),
        _ => (hour - 12, " PM"),
    };
    // Pieces pushed one by one, not format!: lists show one or two of these per row, and the
    // formatting machinery was a tenth of the practice inbox's own work (measured).
    let mut out = String::with_capacity(24);
    out.push_str(MONTHS[(date.month - 1) as usize]);
    out.push(' ');
    push_number(&mut out, i64::from(date.day));
    out.push_str(", ");
    push_number(&mut out, date.year);
    out.push_str(", ");
    push_number(&mut out, hour12);
    out.push(':');
    if minute < 10 {
        out.push('0');
    }
    push_number(&mut out, minute);
    out.push_str(half);
    out
}

/// Appends `n` in decimal.
fn push_number(out: &mut String, n: i64) {
    if n < 0 {
        out.push('-');
    }
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
}

/// `2026-11-28 14:03:07Z` for logs, the audit report and its export.
pub fn format_timestamp(ts: i64) -> String {
    let date = Date::from_timestamp(ts);
    let secs = ts.rem_euclid(86_400);
    format!(
        "{date} {:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for days in [-800_000, -1, 0, 1, 10_957, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn parses_real_dates_only() {
        assert_eq!(
            Date::parse("2024-02-29").map(|d| d.to_string()).as_deref(),
            Some("2024-02-29")
        );
        assert_eq!(Date::parse("2023-02-29"), None);
        // 2026-11-28 00:05 and 13:30 UTC.
        assert_eq!(format_plain(1_795_824_300), "Nov 28, 2026, 12:05 AM");
        assert_eq!(format_plain(1_795_872_600), "Nov 28, 2026, 1:30 PM");
        // 2026-11-28 23:59, 12:00 and 2001-01-09 10:07 UTC.
        assert_eq!(format_plain(1_795_910_340), "Nov 28, 2026, 11:59 PM");
        assert_eq!(format_plain(1_795_867_200), "Nov 28, 2026, 12:00 PM");
        assert_eq!(format_plain(979_034_820), "Jan 9, 2001, 10:07 AM");
        assert_eq!(
            Date::parse(" 03/14/1984 ")
                .map(|d| d.to_string())
                .as_deref(),
            Some("1984-03-14")
        );
        assert_eq!(
            Date::parse("3/4/1984").map(|d| d.to_string()).as_deref(),
            Some("1984-03-04")
        );
        assert_eq!(Date::parse("14/03/1984"), None);
        assert_eq!(Date::parse("03/14/84"), None);
        for loose in [
            "03 / 14 / 1984",
            "+3/+4/+1984",
            "1984-+3-14",
            "1/1/01984",
            "1984-003-14",
        ] {
            assert_eq!(Date::parse(loose), None, "{loose}");
        }
        assert_eq!(Date::parse("2023-13-01"), None);
        assert_eq!(Date::parse("not a date"), None);
        assert_eq!(Date::parse("1800-01-01"), None);
    }

    #[test]
    fn age() {
        let birth = Date::parse("2008-11-29").unwrap();
        assert_eq!(birth.age_on(Date::parse("2026-11-28").unwrap()), 17);
        assert_eq!(birth.age_on(Date::parse("2026-11-29").unwrap()), 18);
        assert_eq!(format_timestamp(0), "1970-01-01 00:00:00Z");
    }
}
