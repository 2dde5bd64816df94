//! Times and dates in the forms the CLIs print and the log records, with no
//! date crate: RFC 3339 (Docker, Kubernetes), Go's default format (`docker
//! secret inspect`), and short ages for tables.

use std::time::{Duration, SystemTime};

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// RFC 3339 in UTC (`2026-11-23T17:04:05.123456789Z`, fraction optional).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, mo, da) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let time = time.trim_end_matches('Z');
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>());
    let (h, mi, se) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let frac: String = frac
        .chars()
        .take_while(char::is_ascii_digit)
        .take(9)
        .collect();
    let nanos: u32 = format!("{frac:0<9}").parse().ok()?;
    let secs = days_from_civil(y, mo, da) * 86400 + h * 3600 + mi * 60 + se;
    Some(SystemTime::UNIX_EPOCH + Duration::new(u64::try_from(secs).ok()?, nanos))
}

/// Go's time format as `docker secret inspect` prints it:
/// `2026-11-22 10:00:00.123 +0000 UTC`.
pub fn parse_go_time(s: &str) -> Option<SystemTime> {
    let mut it = s.split_whitespace();
    let (date, time) = (it.next()?, it.next()?);
    parse_rfc3339(&format!("{date}T{time}Z"))
}

/// UTC, second precision: `2026-11-22T10:00:00Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// How long ago `t` was, if it is in the past.
pub fn age(t: SystemTime) -> Option<Duration> {
    SystemTime::now().duration_since(t).ok()
}

/// `3d`, `5h`, `12m`, `40s`: ages for tables.
pub fn short_age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        let t = parse_rfc3339("2026-11-23T17:04:05.123456789Z").unwrap();
        let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(d.as_secs(), 1795453445);
        assert_eq!(d.subsec_nanos(), 123456789);
        assert_eq!(
            parse_rfc3339("1970-01-01T00:00:00Z").unwrap(),
            SystemTime::UNIX_EPOCH
        );
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000)),
            "2026-11-18T11:06:40Z"
        );
        for secs in [0u64, 951_782_400, 1_795_453_445, 4_102_444_800] {
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        }
    }

    #[test]
    fn go_times_parse() {
        assert_eq!(
            parse_go_time("2026-11-23 17:04:05.123456789 +0000 UTC"),
            parse_rfc3339("2026-11-23T17:04:05.123456789Z")
        );
    }

    #[test]
    fn short_ages() {
        assert_eq!(short_age(Duration::from_secs(59)), "59s");
        assert_eq!(short_age(Duration::from_secs(3 * 86400 + 5)), "3d");
    }
}
