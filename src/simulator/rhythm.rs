//! The shape of a real support desk, for the demo account: busy in office
//! hours, quiet at night and at weekends (in the account's timezone), a
//! slow upward trend with day-to-day noise, more missed chats out of hours,
//! and agents who answer at different speeds.
//!
//! Deterministic like the rest of the simulator: every draw comes from the
//! caller's seeded generator or from a hash of (seed, local date), so the
//! tests still recompute exactly what was served from `SiData`/`S25Data`.
//!
//! How it is used: a day is offered `CANDIDATES` times its nominal count of
//! records at uniform instants, and each candidate is kept with probability
//! `keep(t)`: the hour-and-weekday weight times the day's factor. Averaged
//! over a week that keeps about the nominal count per day.

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc, Weekday};
use chrono_tz::Tz;

use super::clock::local_date;

/// Candidates offered per nominal record of a day.
pub const CANDIDATES: u32 = 3;

/// Weight of each local hour on a weekday (1.0 at the busiest): opens at 8,
/// busy 9-17 with a lunch dip, an evening tail.
const HOURS: [f64; 24] = [
    0.05, 0.04, 0.03, 0.03, 0.03, 0.05, 0.12, 0.25, 0.6, 1.0, 1.0, 0.95, 0.75, 0.9, 0.95, 0.9, 0.8,
    0.6, 0.4, 0.35, 0.3, 0.2, 0.12, 0.08,
];
/// Saturdays and Sundays, against a weekday.
const WEEKEND: f64 = 0.3;

/// The demo account's rhythm in one timezone.
#[derive(Debug, Clone, Copy)]
pub struct Rhythm {
    pub tz: Tz,
    pub seed: u64,
}

impl Rhythm {
    pub fn new(tz: Tz, seed: u64) -> Self {
        Rhythm { tz, seed }
    }

    /// The chance that a candidate record at `t` exists.
    pub fn keep(&self, t: DateTime<Utc>) -> f64 {
        let local = t.with_timezone(&self.tz);
        let weekend = matches!(local.weekday(), Weekday::Sat | Weekday::Sun);
        let hour = HOURS[local.hour() as usize] * if weekend { WEEKEND } else { 1.0 };
        (hour * 0.95 * self.day_factor(local.date_naive())).min(1.0)
    }

    /// Trend (about +20 % a year, 1.0 on 2026-01-01) times the day's noise
    /// (0.8 to 1.2, from a hash of the local date).
    pub fn day_factor(&self, day: NaiveDate) -> f64 {
        let base = NaiveDate::from_ymd_opt(2026, 1, 1).expect("valid date");
        let trend = 1.0 + 0.2 * (day - base).num_days() as f64 / 365.0;
        let noise = fastrand::Rng::with_seed(super::data::mix(
            self.seed ^ 0x5eed ^ day.to_epoch_days() as u64,
        ))
        .f64();
        (trend * (0.8 + 0.4 * noise)).max(0.1)
    }

    /// Whether `t` is inside office hours (09:00-17:00 local on a weekday).
    pub fn office_hours(&self, t: DateTime<Utc>) -> bool {
        let local = t.with_timezone(&self.tz);
        !matches!(local.weekday(), Weekday::Sat | Weekday::Sun) && (9..17).contains(&local.hour())
    }

    /// Percent of chats missed at `t`: few in office hours, many out of them.
    pub fn missed_percent(&self, t: DateTime<Utc>, in_hours: u32, out_of_hours: u32) -> u32 {
        if self.office_hours(t) {
            in_hours
        } else {
            out_of_hours
        }
    }

    /// The local date of `t` (what the pipeline's `dt` will be).
    pub fn local_date(&self, t: DateTime<Utc>) -> NaiveDate {
        local_date(t, self.tz)
    }
}

/// How long an agent takes for a first reply, in milliseconds, by position
/// in the agent list: from quick (about half a minute) to slow (several
/// minutes).
pub fn agent_reply_ms(agent: usize) -> std::ops::Range<i64> {
    match agent % 4 {
        0 => 4_000..45_000,
        1 => 10_000..100_000,
        2 => 25_000..240_000,
        _ => 60_000..480_000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Timelike};

    #[test]
    fn office_hours_are_busier_than_nights_and_weekends() {
        let r = Rhythm::new(chrono_tz::America::New_York, 1);
        // Tuesday 2026-03-03: 10:00 and 03:00 New York time (UTC-5).
        let ten = Utc.with_ymd_and_hms(2026, 3, 3, 15, 0, 0).unwrap();
        let three = Utc.with_ymd_and_hms(2026, 3, 3, 8, 0, 0).unwrap();
        let saturday_ten = Utc.with_ymd_and_hms(2026, 3, 7, 15, 0, 0).unwrap();
        assert!(r.keep(ten) > 10.0 * r.keep(three));
        assert!(r.keep(ten) > 2.0 * r.keep(saturday_ten));
        assert!(r.office_hours(ten) && !r.office_hours(three) && !r.office_hours(saturday_ten));
        assert_eq!(
            r.local_date(three),
            NaiveDate::from_ymd_opt(2026, 3, 3).unwrap()
        );
        // Noise stays in its band, and differs between days.
        let f: Vec<f64> = (0..30)
            .map(|k| {
                r.day_factor(
                    NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + chrono::Duration::days(k),
                )
            })
            .collect();
        assert!(f.iter().all(|x| (0.75..1.3).contains(x)), "{f:?}");
        assert!(f.windows(2).any(|w| (w[0] - w[1]).abs() > 0.05));
    }

    /// The demo account as a support lead would look at it: computed from
    /// the served chats, office hours are busy and nights and weekends
    /// quiet, two 28-day periods differ, missed chats are more frequent
    /// out of hours, and the quickest agent answers far sooner than the
    /// slowest.
    #[test]
    fn the_demo_account_looks_like_a_support_desk() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let config = crate::simulator::SimConfig::demo(d("2026-09-01"), d("2026-11-30"));
        let si = &config.socialintents;
        let r = si.rhythm.expect("the demo has a rhythm");
        let at = |s: &str| d(s).and_hms_opt(0, 0, 0).unwrap().and_utc();
        let chats = si.chats_in(at("2026-09-05"), at("2026-11-28"));
        let (mut office, mut night, mut weekday, mut weekend) = (0, 0, 0, 0);
        let (mut missed_in, mut in_hours, mut missed_out, mut out_hours) = (0, 0, 0, 0);
        let mut first_reply: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
        for c in &chats {
            let local = c.start.with_timezone(&r.tz);
            let h = local.hour();
            let is_weekend = matches!(local.weekday(), Weekday::Sat | Weekday::Sun);
            if !is_weekend && (10..12).contains(&h) {
                office += 1;
            }
            if !is_weekend && (2..4).contains(&h) {
                night += 1;
            }
            *(if is_weekend {
                &mut weekend
            } else {
                &mut weekday
            }) += 1;
            let missed = c.chat_type == "Missed";
            if r.office_hours(c.start) {
                in_hours += 1;
                missed_in += usize::from(missed);
            } else {
                out_hours += 1;
                missed_out += usize::from(missed);
            }
            if let (Some(agent), Some(first)) = (
                &c.agent,
                c.messages.iter().find(|m| m.kind == "messageToAgent"),
            ) {
                if let Some(reply) = c
                    .messages
                    .iter()
                    .find(|m| m.kind == "messageToVisitor" && m.ts_ms > first.ts_ms)
                {
                    first_reply
                        .entry(agent.name.clone())
                        .or_default()
                        .push(reply.ts_ms - first.ts_ms);
                }
            }
        }
        assert!(office > 8 * night, "10-12 h: {office}, 2-4 h: {night}");
        // per day: 5 weekdays, 2 weekend days a week
        assert!(
            weekday as f64 / 5.0 > 2.0 * weekend as f64 / 2.0,
            "{weekday} vs {weekend}"
        );
        let rate = |m: usize, n: usize| m as f64 / n as f64;
        assert!(rate(missed_out, out_hours) > 2.0 * rate(missed_in, in_hours));
        let period = |from: &str, to: &str| si.chats_in(at(from), at(to)).len();
        let (a, b) = (
            period("2026-10-03", "2026-10-31"),
            period("2026-10-31", "2026-11-28"),
        );
        assert!(
            a != b && (a as f64 / b as f64 - 1.0).abs() < 0.3,
            "{a} vs {b}"
        );
        let median = |v: &mut Vec<i64>| {
            v.sort();
            v[v.len() / 2]
        };
        let mut medians: Vec<i64> = first_reply.values_mut().map(median).collect();
        medians.sort();
        assert_eq!(medians.len(), 4);
        assert!(medians[3] > 4 * medians[0], "{medians:?}");
    }
}
