//! Calendar dates from Unix time, for the date lines mail carries (RFC 5322 `Date:`, the mbox
//! `From ` line). Pure arithmetic: the caller passes the time in, as everywhere in this crate.

/// A moment in UTC, broken down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// The year.
    pub year: i64,
    /// The month name, `Jan` to `Dec`.
    pub month: &'static str,
    /// The day of the month, 1 to 31.
    pub day: i64,
    /// The weekday name, `Mon` to `Sun`.
    pub weekday: &'static str,
    /// Hours, minutes and seconds.
    pub hms: (u64, u64, u64),
}

/// Breaks `secs` since 1970-01-01 UTC down (Howard Hinnant's civil-from-days algorithm).
pub fn civil(secs: u64) -> Civil {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    Civil {
        year: yoe + era * 400 + i64::from(month <= 2),
        month: MONTHS[usize::try_from(month - 1).unwrap_or(0)],
        day,
        weekday: DAYS[usize::try_from(days % 7).unwrap_or(0)],
        hms: (rem / 3600, rem % 3600 / 60, rem % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        let c = civil(0);
        assert_eq!(
            (c.year, c.month, c.day, c.weekday, c.hms),
            (1970, "Jan", 1, "Thu", (0, 0, 0))
        );
        let c = civil(951_782_400);
        assert_eq!(
            (c.year, c.month, c.day, c.weekday),
            (2000, "Feb", 29, "Tue")
        );
        let c = civil(1_795_780_800 + 3661);
        assert_eq!(
            (c.year, c.month, c.day, c.weekday, c.hms),
            (2026, "Nov", 27, "Fri", (13, 1, 1))
        );
    }
}
