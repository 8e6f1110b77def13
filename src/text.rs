//! Text that reaches a person: control characters escaped, times formatted for any input.
//!
//! File names on a stick, ref names and commit subjects of a bundle, the namespace inside an
//! SSHSIG and host file names are chosen by whoever made them. Every human-readable output and
//! log field shows them through [`escape`] (or [`Escaped`]), so a newline cannot forge a line
//! and an escape sequence cannot recolour or rewrite the terminal. JSON output keeps the exact
//! values (its encoder escapes control characters itself).

use std::borrow::Cow;
use std::fmt;

/// `s` with every control character (C0, DEL, C1), and the bidirectional overrides that
/// reorder what a terminal shows, written as an escape: `\n`, `\r`, `\t`, `\x1b`, `\u{202e}`.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

/// [`escape`] for text shown as lines (a diff, a file's content): newlines and tabs stay, every
/// other control character is escaped.
pub fn escape_lines(s: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| needs_escape(c) && c != '\n' && c != '\t';
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A `Display` of `s` through [`escape`], for format strings.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape(self.0))
    }
}

/// A path for a message: lossy UTF-8, escaped.
pub fn path(p: &std::path::Path) -> String {
    escape(&p.to_string_lossy()).into_owned()
}

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_escaped(out: &mut String, c: char) {
    use std::fmt::Write;
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if u32::from(c) < 0x80 && needs_escape(c) => {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        }
        c if needs_escape(c) => {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
        c => out.push(c),
    }
}

/// Unix seconds as RFC 3339 UTC (`2026-01-01T00:00:00Z`), for every `i64`: years past 9999
/// get more digits and a `+`, years before 1 a `-`, as ISO 8601's expanded form writes them.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (h, m, s) = (of_day / 3600, of_day % 3600 / 60, of_day % 60);
    let year = if (0..=9999).contains(&year) {
        format!("{year:04}")
    } else {
        format!("{year:+05}")
    };
    format!("{year}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

/// Unsigned Unix seconds as RFC 3339 (values past `i64::MAX` are shown as that).
pub fn rfc3339_u(secs: u64) -> String {
    rfc3339(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// The proleptic Gregorian date of a day count from 1970-01-01 (H. Hinnant's algorithm), in
/// 128-bit arithmetic so that no `i64` overflows.
fn civil_from_days(days: i64) -> (i128, u32, u32) {
    let z = i128::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i128::from(month <= 2);
    // Both are small by construction: day in 1..=31, month in 1..=12.
    let small = |v: i128| u32::try_from(v).unwrap_or(0);
    (year, small(month), small(day))
}

/// The latest second of year 9999 (`9999-12-31T23:59:59Z`): later commit times are refused.
pub const LAST_PLAUSIBLE: i64 = 253_402_300_799;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_and_control_characters_are_escaped() {
        assert!(matches!(escape("fleet@example.com"), Cow::Borrowed(_)));
        assert_eq!(escape("a\nb\r\tc"), "a\\nb\\r\\tc");
        assert_eq!(escape("\x1b[31mred"), "\\x1b[31mred");
        assert_eq!(escape("del\x7f"), "del\\x7f");
        assert_eq!(escape("csi\u{9b}"), "csi\\u{9b}");
        assert_eq!(escape("rtl\u{202e}txt"), "rtl\\u{202e}txt");
        assert_eq!(Escaped("x\ny").to_string(), "x\\ny");
        assert_eq!(escape("ünïcödé ✓"), "ünïcödé ✓");
        assert_eq!(escape_lines("-a\n+b\t\x1b[2J\r\n"), "-a\n+b\t\\x1b[2J\\r\n");
    }

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_600), "2026-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(4_102_444_800), "2100-01-01T00:00:00Z");
        assert_eq!(rfc3339(LAST_PLAUSIBLE), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(LAST_PLAUSIBLE + 1), "+10000-01-01T00:00:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn rfc3339_is_total() {
        for secs in [i64::MIN, i64::MIN + 1, -86_401, i64::MAX - 1, i64::MAX] {
            let text = rfc3339(secs);
            assert!(text.ends_with('Z'), "{secs}: {text}");
        }
        assert_eq!(rfc3339_u(u64::MAX), rfc3339(i64::MAX));
        // Agrees with humantime wherever humantime can format.
        for secs in (0..LAST_PLAUSIBLE).step_by(7_777_777_777) {
            let theirs = humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.unsigned_abs()),
            )
            .to_string();
            assert_eq!(rfc3339(secs), theirs);
        }
    }
}
