//! The wall clock, read in one place, and Unix times written the ways mail and people read
//! them: RFC 5322's `Date:`, the mbox `From ` line, and plain UTC for messages to
//! administrators. Formatting takes the time as an argument, so it is tested with fixed times;
//! only [`unix_now`] reads the clock.

use time::{Month, OffsetDateTime, Weekday};

/// Seconds since 1970-01-01 UTC (0 if the clock is set before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `secs` as a UTC date, or the Unix epoch for a time beyond what a date can hold.
fn utc_date(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn seconds(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX)
}

fn weekday(d: Weekday) -> &'static str {
    match d {
        Weekday::Monday => "Mon",
        Weekday::Tuesday => "Tue",
        Weekday::Wednesday => "Wed",
        Weekday::Thursday => "Thu",
        Weekday::Friday => "Fri",
        Weekday::Saturday => "Sat",
        Weekday::Sunday => "Sun",
    }
}

fn month(m: Month) -> &'static str {
    match m {
        Month::January => "Jan",
        Month::February => "Feb",
        Month::March => "Mar",
        Month::April => "Apr",
        Month::May => "May",
        Month::June => "Jun",
        Month::July => "Jul",
        Month::August => "Aug",
        Month::September => "Sep",
        Month::October => "Oct",
        Month::November => "Nov",
        Month::December => "Dec",
    }
}

/// RFC 5322 section 3.3 in UTC: `Thu, 01 Jan 1970 00:00:00 +0000`.
pub fn rfc5322(secs: u64) -> String {
    let t = utc_date(seconds(secs));
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        weekday(t.weekday()),
        t.day(),
        month(t.month()),
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// C's `asctime` in UTC, the date of an mbox `From ` line: `Fri Nov 27 12:00:00 2026`.
pub fn asctime(secs: u64) -> String {
    let t = utc_date(seconds(secs));
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        weekday(t.weekday()),
        month(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.year()
    )
}

/// For people: `2026-11-27 12:00:00 UTC` (a time no date can hold is shown as a number).
pub fn utc(secs: i64) -> String {
    match OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("{secs} (Unix time)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(rfc5322(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(
            rfc5322(1_795_780_800 + 3661),
            "Fri, 27 Nov 2026 13:01:01 +0000"
        );
        assert_eq!(asctime(1_795_780_800 + 3661), "Fri Nov 27 13:01:01 2026");
        assert_eq!(
            asctime(951_782_400 - 86_400 * 28),
            "Tue Feb  1 00:00:00 2000"
        );
        assert_eq!(utc(157_766_400), "1975-01-01 00:00:00 UTC");
        assert_eq!(utc(i64::MAX), format!("{} (Unix time)", i64::MAX));
    }

    #[test]
    fn the_clock_is_past_this_code() {
        assert!(unix_now() > 1_795_000_000);
    }
}
