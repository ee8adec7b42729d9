//! Times as the container verbs show them: RFC 3339 in logs, Docker's rough durations in `ps`.
//! Written here because the crate has no date dependency and needs only UTC formatting.

/// Now, in nanoseconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `2026-11-22T08:52:53.123456789Z`.
pub fn rfc3339(nanos: i64) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let frac = nanos.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Docker's rough duration: `Less than a second`, `3 seconds`, `About a minute`, `5 minutes`,
/// `About an hour`, `2 hours`, `3 days`, `2 weeks`, `4 months`, `2 years`.
pub fn human_duration(nanos: i64) -> String {
    let s = nanos / 1_000_000_000;
    let plural = |n: i64, unit: &str| {
        if n == 1 {
            format!("1 {unit}")
        } else {
            format!("{n} {unit}s")
        }
    };
    match s {
        i64::MIN..=0 => "Less than a second".to_string(),
        1..=59 => plural(s, "second"),
        60..=119 => "About a minute".to_string(),
        120..=3599 => plural(s / 60, "minute"),
        3600..=7199 => "About an hour".to_string(),
        7200..=172_799 => plural(s / 3600, "hour"),
        172_800..=1_209_599 => plural(s / 86_400, "day"),
        1_209_600..=5_183_999 => plural(s / 604_800, "week"),
        5_184_000..=63_071_999 => plural(s / 2_592_000, "month"),
        _ => plural(s / 31_536_000, "year"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339(1_795_337_573_000_000_005),
            "2026-11-22T08:52:53.000000005Z"
        );
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(3_000_000_000), "3 seconds");
        assert_eq!(human_duration(90_000_000_000), "About a minute");
        assert_eq!(human_duration(300_000_000_000), "5 minutes");
        assert_eq!(human_duration(7_200_000_000_000), "2 hours");
    }
}
