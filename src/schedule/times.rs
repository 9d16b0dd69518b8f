//! Cron arithmetic: the fire times of a cron expression (with a seconds
//! field) on the wall clock of an IANA timezone. Pure functions of their
//! arguments (the clock is always passed in) that import nothing of the
//! crate, so configuration validation can use them.
//!
//! DST: the expression is matched against local wall-clock times. A local time
//! that does not exist (02:30 on a spring-forward day) fires at the first
//! instant after the gap (03:00); a local time that exists twice (01:30 on a
//! fall-back night) fires once, at the first. So a daily job runs once on
//! both days.

use std::str::FromStr;

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use cron::Schedule;

/// Parses a cron expression with a seconds field, e.g. `0 30 2 * * *`.
pub fn parse_cron(expr: &str) -> Result<Schedule, String> {
    Schedule::from_str(expr).map_err(|e| {
        format!("`{expr}` is not a cron expression with seconds (e.g. \"0 30 2 * * *\"): {e}")
    })
}

/// The instant a local wall-clock time names in `tz`: the first of two on a
/// fall-back night, the end of the gap on a spring-forward day.
fn instant(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let mut t = local;
    loop {
        match tz.from_local_datetime(&t) {
            LocalResult::Single(x) => return x.with_timezone(&Utc),
            LocalResult::Ambiguous(a, b) => return a.min(b).with_timezone(&Utc),
            LocalResult::None => t = (t + Duration::minutes(1)).with_second(0),
        }
    }
}

trait WithSecond {
    fn with_second(self, s: u32) -> Self;
}
impl WithSecond for NaiveDateTime {
    fn with_second(self, s: u32) -> Self {
        chrono::Timelike::with_second(&self, s)
            .and_then(|t| chrono::Timelike::with_nanosecond(&t, 0))
            .unwrap_or(self)
    }
}

/// The fire times of `schedule` strictly after `after`, in order, each once.
pub fn fire_times(
    schedule: &Schedule,
    tz: Tz,
    after: DateTime<Utc>,
) -> impl Iterator<Item = DateTime<Utc>> + '_ {
    // Walk local wall-clock times (cron over a zone-less clock), starting a
    // little before `after` so a time shifted out of a DST gap is not missed.
    let start = after.with_timezone(&tz).naive_local() - Duration::hours(3);
    let mut last: Option<DateTime<Utc>> = None;
    schedule
        .after(&Utc.from_utc_datetime(&start))
        .filter_map(move |naive| {
            let t = instant(tz, naive.naive_utc());
            if t <= after || last.is_some_and(|l| t <= l) {
                return None;
            }
            last = Some(t);
            Some(t)
        })
}

/// The next fire time strictly after `after`.
pub fn next_after(schedule: &Schedule, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    fire_times(schedule, tz, after).next()
}

/// The latest fire time at or before `now` that is later than `last_ran`:
/// the one slot to run after downtime (None: nothing missed). Without a
/// record of a previous run, nothing counts as missed.
pub fn missed_slot(
    schedule: &Schedule,
    tz: Tz,
    last_ran: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let last_ran = last_ran?;
    let mut latest = None;
    for t in fire_times(schedule, tz, last_ran) {
        if t > now {
            break;
        }
        latest = Some(t);
    }
    latest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_daily_0230_job_runs_once_on_both_dst_days() {
        let tz = chrono_tz::America::New_York;
        let s = parse_cron("0 30 2 * * *").unwrap();
        let times: Vec<_> = fire_times(&s, tz, utc("2025-03-07T12:00:00Z"))
            .take(4)
            .collect();
        // Mar 8 02:30 EST; Mar 9 (spring forward) 02:30 does not exist -> 03:00 EDT; Mar 10 02:30 EDT.
        assert_eq!(
            times[..3],
            [
                utc("2025-03-08T07:30:00Z"),
                utc("2025-03-09T07:00:00Z"),
                utc("2025-03-10T06:30:00Z")
            ]
        );
        let s = parse_cron("0 30 1 * * *").unwrap();
        let times: Vec<_> = fire_times(&s, tz, utc("2025-11-01T12:00:00Z"))
            .take(3)
            .collect();
        // Nov 2 (fall back): 01:30 happens twice; the job runs at the first only.
        assert_eq!(
            times,
            [
                utc("2025-11-02T05:30:00Z"),
                utc("2025-11-03T06:30:00Z"),
                utc("2025-11-04T06:30:00Z")
            ]
        );
    }

    #[test]
    fn after_downtime_only_the_latest_missed_slot_runs() {
        let tz = chrono_tz::Europe::Amsterdam;
        let s = parse_cron("0 0 3 * * *").unwrap();
        let last = utc("2025-06-01T01:00:00Z"); // Jun 1 03:00 CEST ran
                                                // Down for three days: one run, for the latest slot.
        assert_eq!(
            missed_slot(&s, tz, Some(last), utc("2025-06-04T09:00:00Z")),
            Some(utc("2025-06-04T01:00:00Z"))
        );
        assert_eq!(
            missed_slot(&s, tz, Some(last), utc("2025-06-01T20:00:00Z")),
            None
        );
        assert_eq!(
            missed_slot(&s, tz, None, utc("2025-06-04T09:00:00Z")),
            None,
            "first start: nothing missed"
        );
        assert_eq!(
            next_after(&s, tz, utc("2025-06-04T01:00:00Z")),
            Some(utc("2025-06-05T01:00:00Z"))
        );
    }
}
