//! Local dates and day boundaries for the simulator and the tests, written
//! independently of `normalize::time` (which the pipeline uses), so that a DST
//! bug there shows up as a difference instead of being repeated in the
//! expectations. Here a day's first instant is found by binary search over
//! UTC seconds on the offsets chrono-tz reports, never by constructing a
//! local time.

use chrono::{DateTime, Duration, NaiveDate, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// The local date of instant `t` in `tz`: UTC plus the zone's offset at `t`.
pub fn local_date(t: DateTime<Utc>, tz: Tz) -> NaiveDate {
    let offset = tz
        .offset_from_utc_datetime(&t.naive_utc())
        .fix()
        .local_minus_utc();
    (t.naive_utc() + Duration::seconds(offset as i64)).date()
}

/// The first instant (to the second) whose local date is `d` or later.
pub fn day_start(d: NaiveDate, tz: Tz) -> DateTime<Utc> {
    // Every zone's offset is within ±26 h: the answer lies in this bracket.
    let midnight = d
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc()
        .timestamp();
    let at = |secs: i64| DateTime::from_timestamp(secs, 0).expect("in range");
    let (mut lo, mut hi) = (midnight - 27 * 3600, midnight + 27 * 3600);
    // Invariant: local_date(lo) < d <= local_date(hi), whole seconds.
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if local_date(at(mid), tz) < d {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    at(hi)
}

/// Instants `[start, end)` of the local dates `from..=to`.
pub fn local_range(from: NaiveDate, to: NaiveDate, tz: Tz) -> (DateTime<Utc>, DateTime<Utc>) {
    (day_start(from, tz), day_start(to + Duration::days(1), tz))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }
    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// Figures from the published rules, not from any code.
    #[test]
    fn dst_days_have_23_and_25_hours_and_a_missing_midnight_is_skipped() {
        let ny = chrono_tz::America::New_York;
        assert_eq!(
            local_range(d("2025-03-09"), d("2025-03-09"), ny),
            (utc("2025-03-09T05:00:00Z"), utc("2025-03-10T04:00:00Z"))
        );
        assert_eq!(
            local_range(d("2025-11-02"), d("2025-11-02"), ny),
            (utc("2025-11-02T04:00:00Z"), utc("2025-11-03T05:00:00Z"))
        );
        // Santiago springs forward at midnight: 2025-09-07 starts at 01:00 -03.
        assert_eq!(
            day_start(d("2025-09-07"), chrono_tz::America::Santiago),
            utc("2025-09-07T04:00:00Z")
        );
        assert_eq!(local_date(utc("2025-11-02T05:30:00Z"), ny), d("2025-11-02")); // 01:30 EDT... then EST
        assert_eq!(local_date(utc("2025-11-03T04:59:59Z"), ny), d("2025-11-02"));
        assert_eq!(local_date(utc("2025-11-03T05:00:00Z"), ny), d("2025-11-03"));
    }
}
