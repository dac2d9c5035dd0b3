//! A plain UTC instant with millisecond precision. The domain has no clock: hosts
//! read theirs and pass the result in.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Milliseconds since the Unix epoch, UTC. Formats as RFC 3339 with milliseconds
/// and a `Z`, e.g. `2026-11-23T10:00:00.000Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn from_unix_millis(millis: i64) -> Self {
        Self(millis)
    }

    pub fn unix_millis(self) -> i64 {
        self.0
    }

    /// Milliseconds from `earlier` to this instant; 0 if `earlier` is not
    /// earlier (clocks of different hosts may disagree a little).
    pub fn millis_since(self, earlier: Timestamp) -> u64 {
        u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0)
    }

    /// Parses RFC 3339 in UTC: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+00:00)`.
    /// Other offsets are refused rather than silently converted.
    pub fn parse_rfc3339(raw: &str) -> Result<Self, String> {
        let bad = || format!("not an RFC 3339 UTC timestamp: {raw:?}");
        let b = raw.as_bytes();
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
            return Err(bad());
        }
        if b[13] != b':' || b[16] != b':' {
            return Err(bad());
        }
        let num = |from: usize, to: usize| -> Result<i64, String> {
            let s = raw.get(from..to).ok_or_else(bad)?;
            if !s.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            s.parse::<i64>().map_err(|_| bad())
        };
        let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
        let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return Err(bad());
        }
        let mut rest = &raw[19..];
        let mut millis = 0;
        if let Some(fraction) = rest.strip_prefix('.') {
            let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad());
            }
            // Keep milliseconds; finer digits are truncated.
            let padded = format!("{:0<3}", &fraction[..digits.min(3)]);
            millis = padded.parse::<i64>().map_err(|_| bad())?;
            rest = &fraction[digits..];
        }
        if !matches!(rest, "Z" | "z" | "+00:00" | "-00:00") {
            return Err(bad());
        }
        let days = days_from_civil(year, month, day);
        let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
        Ok(Self(seconds * 1_000 + millis))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.rem_euclid(1_000);
        let seconds = self.0.div_euclid(1_000);
        let days = seconds.div_euclid(86_400);
        let of_day = seconds.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            of_day / 3_600,
            of_day % 3_600 / 60,
            of_day % 60
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Timestamp::parse_rfc3339(&raw).map_err(serde::de::Error::custom)
    }
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's civil-calendar algorithms (public domain), proleptic Gregorian.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl From<Timestamp> for std::time::SystemTime {
    fn from(t: Timestamp) -> Self {
        let offset = std::time::Duration::from_millis(t.0.unsigned_abs());
        if t.0 >= 0 {
            std::time::UNIX_EPOCH + offset
        } else {
            std::time::UNIX_EPOCH - offset
        }
    }
}

impl From<std::time::SystemTime> for Timestamp {
    /// Converting an instant is not reading a clock: the caller brings the value.
    fn from(t: std::time::SystemTime) -> Self {
        match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(after) => Self(i64::try_from(after.as_millis()).unwrap_or(i64::MAX)),
            Err(before) => Self(-i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_since_is_never_negative() {
        let (earlier, later) = (
            Timestamp::from_unix_millis(1_000),
            Timestamp::from_unix_millis(1_250),
        );
        assert_eq!(later.millis_since(earlier), 250);
        assert_eq!(earlier.millis_since(later), 0);
    }

    fn check(millis: i64, text: &str) {
        assert_eq!(Timestamp::from_unix_millis(millis).to_string(), text);
        assert_eq!(
            Timestamp::parse_rfc3339(text),
            Ok(Timestamp::from_unix_millis(millis))
        );
    }

    #[test]
    fn formats_and_parses_known_instants() {
        check(0, "1970-01-01T00:00:00.000Z");
        check(1_795_428_000_000, "2026-11-23T10:00:00.000Z");
        check(951_782_400_123, "2000-02-29T00:00:00.123Z");
        check(-1, "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn accepts_other_precisions_and_zero_offset() {
        let t = Timestamp::parse_rfc3339("2026-11-23T10:00:00Z").expect("valid");
        assert_eq!(
            t,
            Timestamp::parse_rfc3339("2026-11-23T10:00:00.000000+00:00").expect("valid")
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-23T10:00:00.5Z")
                .expect("valid")
                .unix_millis()
                % 1000,
            500
        );
    }

    #[test]
    fn refuses_malformed_or_offset_times() {
        for raw in [
            "",
            "2026-11-23",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-23T24:00:00Z",
            "2026-11-23T10:00:00+01:00",
            "2026-11-23T10:00:00.Z",
            "2026-11-23T10:00:00",
            "２026-11-23T10:00:00Z",
        ] {
            assert!(
                Timestamp::parse_rfc3339(raw).is_err(),
                "{raw:?} should be refused"
            );
        }
    }
}
