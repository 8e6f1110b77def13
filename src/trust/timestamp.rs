//! The `valid-after` / `valid-before` timestamps of `allowed_signers`.

/// Parses `YYYYMMDD`, `YYYYMMDDHHMM` or `YYYYMMDDHHMMSS`, optionally ending in `Z`, to Unix
/// seconds.
///
/// Without the `Z`, `ssh-keygen` reads the time in the local time zone. outpost always reads it
/// as UTC: trust decisions must not depend on the host's time zone setting, and a difference
/// of a few hours does not matter against a time floor that moves with commits.
pub(crate) fn parse(text: &str) -> Result<u64, &'static str> {
    let digits = text.strip_suffix(['Z', 'z']).unwrap_or(text).as_bytes();
    if !matches!(digits.len(), 8 | 12 | 14) || !digits.iter().all(u8::is_ascii_digit) {
        return Err("not a timestamp");
    }
    let field = |start: usize, len: usize| {
        digits[start..start + len]
            .iter()
            .fold(0_u64, |acc, digit| acc * 10 + u64::from(digit - b'0'))
    };
    let (year, month, day) = (field(0, 4), field(4, 2), field(6, 2));
    let hour = if digits.len() >= 12 { field(8, 2) } else { 0 };
    let minute = if digits.len() >= 12 { field(10, 2) } else { 0 };
    let second = if digits.len() == 14 { field(12, 2) } else { 0 };
    if year < 1970 {
        return Err("year before 1970");
    }
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err("no such date");
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err("no such time of day");
    }
    let days = days_since_epoch(year, month, day);
    Ok(days * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Formats Unix seconds as RFC 3339 UTC, e.g. `2026-01-01T00:00:00Z`, for any value.
pub(crate) fn format(seconds: u64) -> String {
    crate::text::rfc3339_u(seconds)
}

/// Describes the time floor for a message: what this host has seen.
pub(crate) fn describe_floor(floor: u64) -> String {
    if floor == 0 {
        "this host has not accepted any commit yet".to_owned()
    } else {
        format!("this host has seen commits up to {}", format(floor))
    }
}

fn is_leap(year: u64) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given date (year >= 1970).
fn days_since_epoch(year: u64, month: u64, day: u64) -> u64 {
    let whole_years: u64 = (1970..year)
        .map(|y| if is_leap(y) { 366 } else { 365 })
        .sum();
    let whole_months: u64 = (1..month).map(|m| days_in_month(year, m)).sum();
    whole_years + whole_months + day - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_lengths_with_and_without_z() -> Result<(), &'static str> {
        assert_eq!(parse("19700101")?, 0);
        assert_eq!(parse("20260101")?, 1_767_225_600);
        assert_eq!(parse("20260101Z")?, 1_767_225_600);
        assert_eq!(parse("202601010130")?, 1_767_225_600 + 5400);
        assert_eq!(parse("20260101013005Z")?, 1_767_225_600 + 5405);
        assert_eq!(parse("20240229")?, 1_709_164_800);
        Ok(())
    }

    #[test]
    fn refuses_malformed_and_impossible_dates() {
        for bad in [
            "2026",
            "2026010",
            "20260101Zx",
            "2026-01-01",
            "20261301",
            "20250229",
            "20260100",
            "202601012400",
            "19691231",
            "+0260101",
        ] {
            assert!(parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn formats_as_rfc3339_utc() {
        assert_eq!(format(1_767_225_600), "2026-01-01T00:00:00Z");
        assert_eq!(
            describe_floor(0),
            "this host has not accepted any commit yet"
        );
        assert_eq!(
            describe_floor(1_767_225_600),
            "this host has seen commits up to 2026-01-01T00:00:00Z"
        );
    }
}
