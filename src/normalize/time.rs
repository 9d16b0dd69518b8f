//! Time conversions in one place: source timestamp formats to UTC instants,
//! and local dates in the pipeline timezone (DST days have 23 or 25 hours).

use chrono::{DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

/// Parses a Social Intents date-time, `yyyy-MM-dd HH:mm:ss` with an optional
/// AM/PM marker. The API writes a 24-hour hour with a redundant marker
/// ("2017-06-24 15:01:31 PM"); a true 12-hour hour ("03:01:31 PM") is also
/// accepted. A marker that contradicts the hour ("15:01:31 AM") is an error.
pub fn parse_socialintents(s: &str) -> Result<NaiveDateTime, String> {
    let s = s.trim();
    let (body, marker) = match s.rsplit_once(' ') {
        Some((b, m)) if m.eq_ignore_ascii_case("AM") || m.eq_ignore_ascii_case("PM") => {
            (b.trim_end(), Some(m.eq_ignore_ascii_case("PM")))
        }
        _ => (s, None),
    };
    let naive = NaiveDateTime::parse_from_str(body, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(body, "%Y-%m-%dT%H:%M:%S%.f"))
        .map_err(|_| format!("`{s}` is not a date-time like 2017-06-24 15:01:31 PM"))?;
    let Some(pm) = marker else { return Ok(naive) };
    let hour = chrono::Timelike::hour(&naive);
    let shift_hours = match (hour, pm) {
        (0, false) | (1..=11, false) | (12..=23, true) => 0, // already 24-hour (or 12-hour morning)
        (12, false) => -12,                                  // 12:xx AM is just after midnight
        (1..=11, true) => 12,                                // true 12-hour afternoon
        _ => {
            return Err(format!(
                "`{s}`: hour {hour} contradicts the {} marker",
                if pm { "PM" } else { "AM" }
            ))
        }
    };
    Ok(naive + Duration::hours(shift_hours))
}

/// Parses a naive ISO-8601 date-time (with or without fraction or a `Z`/offset)
/// as UTC.
pub fn parse_naive_utc(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Ok(dt.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
        .map(|n| n.and_utc())
        .map_err(|_| format!("`{s}` is not an ISO date-time"))
}

/// Parses a Django duration string, `[D ]HH:MM:SS[.ffffff]` ("116 05:19:39.788243";
/// days may be negative, "-1 23:00:00" being minus one hour), into microseconds.
pub fn parse_duration_micros(s: &str) -> Result<i64, String> {
    let bad = || format!("`{s}` is not a duration like \"116 05:19:39.788243\"");
    let t = s.trim();
    let (days, clock) = match t.split_once(' ') {
        Some((d, c)) => (d.trim().parse::<i64>().map_err(|_| bad())?, c.trim()),
        None => (0, t),
    };
    let mut parts = clock.split(':');
    let (Some(h), Some(m), Some(sec), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let h: i64 = h.parse().map_err(|_| bad())?;
    let m: i64 = m.parse().map_err(|_| bad())?;
    let (whole, frac) = sec.split_once('.').unwrap_or((sec, ""));
    let whole: i64 = whole.parse().map_err(|_| bad())?;
    if !(0..60).contains(&m)
        || !(0..60).contains(&whole)
        || h < 0
        || frac.len() > 6
        || !frac.chars().all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    let micros_frac: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse().map_err(|_| bad())?
    };
    Ok(((days * 86_400 + h * 3_600 + m * 60 + whole) * 1_000_000) + micros_frac)
}

/// Epoch milliseconds to an instant; out-of-range values are an error.
pub fn from_epoch_millis(ms: i64) -> Result<DateTime<Utc>, String> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| format!("epoch milliseconds {ms} out of range"))
}

/// The instant as microseconds since the epoch (Arrow's timestamp unit here).
pub fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// The local calendar date of an instant in `tz`.
pub fn local_date(t: DateTime<Utc>, tz: Tz) -> NaiveDate {
    t.with_timezone(&tz).date_naive()
}

/// The first instant of local date `d` in `tz`: local midnight, or the end of
/// the DST gap when midnight does not exist that day.
pub fn day_start(d: NaiveDate, tz: Tz) -> DateTime<Utc> {
    let mut t = d.and_time(NaiveTime::MIN);
    loop {
        match tz.from_local_datetime(&t) {
            LocalResult::Single(x) => return x.with_timezone(&Utc),
            LocalResult::Ambiguous(a, b) => return a.min(b).with_timezone(&Utc),
            LocalResult::None => t += Duration::minutes(1),
        }
    }
}

/// Instants `[start, end)` covered by the local dates `from..=to` in `tz`.
pub fn local_range(from: NaiveDate, to: NaiveDate, tz: Tz) -> (DateTime<Utc>, DateTime<Utc>) {
    (day_start(from, tz), day_start(to + Duration::days(1), tz))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::America::New_York;

    fn ndt(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn socialintents_am_pm_quirk() {
        let p = |s| parse_socialintents(s).unwrap();
        assert_eq!(p("2017-06-24 15:01:31 PM"), ndt("2017-06-24 15:01:31"));
        assert_eq!(p("2017-06-24 03:01:31 PM"), ndt("2017-06-24 15:01:31"));
        assert_eq!(p("2017-06-24 09:01:31 AM"), ndt("2017-06-24 09:01:31"));
        assert_eq!(p("2017-06-24 00:01:31 AM"), ndt("2017-06-24 00:01:31"));
        assert_eq!(p("2017-06-24 12:01:31 AM"), ndt("2017-06-24 00:01:31"));
        assert_eq!(p("2017-06-24 12:01:31 PM"), ndt("2017-06-24 12:01:31"));
        assert_eq!(p("2017-06-24 23:59:59"), ndt("2017-06-24 23:59:59"));
        assert!(parse_socialintents("2017-06-24 15:01:31 AM").is_err());
        assert!(parse_socialintents("yesterday").is_err());
    }

    #[test]
    fn dst_days_have_23_and_25_hours() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let hours = |day: &str| {
            let (a, b) = local_range(d(day), d(day), New_York);
            (b - a).num_hours()
        };
        assert_eq!(hours("2025-03-09"), 23);
        assert_eq!(hours("2025-11-02"), 25);
        assert_eq!(hours("2025-06-01"), 24);
        // 23:30 local on Nov 1 is 03:30 UTC on Nov 2, but its dt is Nov 1.
        let late = Utc.with_ymd_and_hms(2025, 11, 2, 3, 30, 0).unwrap();
        assert_eq!(local_date(late, New_York), d("2025-11-01"));
        // Both 01:30s of the fall-back night fall on Nov 2.
        for h in [5, 6] {
            assert_eq!(
                local_date(
                    Utc.with_ymd_and_hms(2025, 11, 2, h, 30, 0).unwrap(),
                    New_York
                ),
                d("2025-11-02")
            );
        }
    }

    #[test]
    fn midnight_in_a_dst_gap_starts_at_the_gap_end() {
        // America/Santiago springs forward at midnight: 2025-09-07 00:00 does not exist.
        let tz: Tz = "America/Santiago".parse().unwrap();
        let start = day_start("2025-09-07".parse().unwrap(), tz);
        assert_eq!(
            start.with_timezone(&tz).format("%H:%M").to_string(),
            "01:00"
        );
    }

    #[test]
    fn naive_utc_and_epoch() {
        assert_eq!(
            parse_naive_utc("2024-01-15T10:30:00Z").unwrap(),
            Utc.with_ymd_and_hms(2024, 1, 15, 10, 30, 0).unwrap()
        );
        assert_eq!(
            micros(parse_naive_utc("2024-01-15T10:30:00.123456").unwrap()),
            micros(Utc.with_ymd_and_hms(2024, 1, 15, 10, 30, 0).unwrap()) + 123_456
        );
        assert_eq!(
            from_epoch_millis(1498316491095).unwrap().timestamp_millis(),
            1498316491095
        );
    }

    #[test]
    fn django_durations() {
        assert_eq!(
            parse_duration_micros("116 05:19:39.788243").unwrap(),
            ((116 * 86_400 + 5 * 3600 + 19 * 60 + 39) * 1_000_000) + 788_243
        );
        assert_eq!(
            parse_duration_micros("05:19:39").unwrap(),
            (5 * 3600 + 19 * 60 + 39) * 1_000_000
        );
        assert_eq!(parse_duration_micros("0 00:00:00.5").unwrap(), 500_000);
        assert_eq!(
            parse_duration_micros("-1 23:00:00").unwrap(),
            -3_600_000_000
        );
        for bad in [
            "",
            "116",
            "1 2:3",
            "x 05:19:39",
            "05:61:00",
            "05:19:39.1234567",
        ] {
            assert!(parse_duration_micros(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn naive_iso_with_and_without_micros_is_utc() {
        assert_eq!(
            parse_naive_utc("2018-10-25T08:06:42").unwrap().timestamp(),
            1_540_454_802
        );
        assert_eq!(
            parse_naive_utc("2018-10-25T08:06:43.730595")
                .unwrap()
                .timestamp_micros(),
            1_540_454_803_730_595
        );
    }
}
