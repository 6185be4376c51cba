//! Image timestamps: `SOURCE_DATE_EPOCH` read exactly as mkimage reads it, and ctime-style dates.
//!
//! mkimage parses the variable with C's `strtol` (leading blanks, optional sign, decimal digits,
//! anything after ignored, overflow saturating), rejects a value `gmtime` cannot represent (it
//! prints a warning and uses 0), and stores the low 32 bits. Unset, it uses the current time.

/// The `ih_time` mkimage would write, given the value of `SOURCE_DATE_EPOCH` and the current time.
///
/// Returns the timestamp and, when the variable was invalid, the warning mkimage prints.
pub fn source_date(var: Option<&str>, now: i64) -> (u32, Option<String>) {
    let Some(value) = var else {
        return (now as u32, None);
    };
    let t = strtol(value);
    if year_of(t).is_none() {
        return (0, Some(format!("SOURCE_DATE_EPOCH is not valid '{value}'")));
    }
    (t as u32, None)
}

/// C `strtol(s, NULL, 10)` on a 64-bit long.
fn strtol(s: &str) -> i64 {
    let s = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut value: i64 = 0;
    for c in digits.bytes().take_while(u8::is_ascii_digit) {
        let d = i64::from(c - b'0');
        value = match value.checked_mul(10).and_then(|v| {
            if negative {
                v.checked_sub(d)
            } else {
                v.checked_add(d)
            }
        }) {
            Some(v) => v,
            None => return if negative { i64::MIN } else { i64::MAX },
        };
    }
    value
}

/// Days since 1970-01-01 → (year, month 1-12, day 1-31), proleptic Gregorian.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The year of a time, or `None` where glibc's `gmtime` fails (the year overflows an `int`).
fn year_of(t: i64) -> Option<i64> {
    let (year, _, _) = civil_from_days(t.div_euclid(86_400));
    (year - 1900 <= i64::from(i32::MAX) && year - 1900 >= i64::from(i32::MIN)).then_some(year)
}

/// Formats a time in UTC like C's `ctime`, without the newline: `Thu Jan  1 00:00:00 1970`.
pub fn ctime_utc(t: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{} {}{:3} {:02}:{:02}:{:02} {}",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[month as usize - 1],
        day,
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        year
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strtol_follows_c() {
        assert_eq!(strtol("1700000000"), 1_700_000_000);
        assert_eq!(strtol(" 12x"), 12);
        assert_eq!(strtol("abc"), 0);
        assert_eq!(strtol("-1"), -1);
        assert_eq!(strtol("+7"), 7);
        assert_eq!(strtol("99999999999999999999"), i64::MAX);
        assert_eq!(strtol("-99999999999999999999"), i64::MIN);
    }

    #[test]
    fn source_date_matches_mkimage() {
        assert_eq!(source_date(None, 42), (42, None));
        assert_eq!(source_date(Some("1700000000"), 42), (1_700_000_000, None));
        assert_eq!(source_date(Some("-1"), 42), (u32::MAX, None));
        assert_eq!(source_date(Some("4294967297"), 42), (1, None));
        let (t, warning) = source_date(Some("99999999999999999999"), 42);
        assert_eq!(t, 0);
        assert!(warning.unwrap().contains("not valid"));
    }

    #[test]
    fn ctime_format() {
        assert_eq!(ctime_utc(0), "Thu Jan  1 00:00:00 1970");
        assert_eq!(ctime_utc(1_700_000_000), "Tue Nov 14 22:13:20 2023");
        assert_eq!(ctime_utc(4_294_967_295), "Sun Feb  7 06:28:15 2106");
    }
}
