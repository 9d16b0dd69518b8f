//! Business hours: the `[reporting] business_hours` text parsed into weekly
//! ranges, and the open intervals (UTC instants) of any local date, DST
//! included: an opening time inside a spring-forward gap opens at the end of
//! the gap, one that exists twice opens at the first; `24:00` closes at the
//! next local midnight, so a round-the-clock fall-back day is 25 hours long.

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveTime, TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;

use crate::normalize::time::day_start;

/// One range of the week: these weekdays, from `open` to `close` minutes
/// after local midnight (`close` may be 1440, i.e. 24:00).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub days: Vec<Weekday>,
    pub open: u32,
    pub close: u32,
}

/// The week's business hours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusinessHours(pub Vec<Range>);

const DAYS: [(&str, Weekday); 7] = [
    ("Mon", Weekday::Mon),
    ("Tue", Weekday::Tue),
    ("Wed", Weekday::Wed),
    ("Thu", Weekday::Thu),
    ("Fri", Weekday::Fri),
    ("Sat", Weekday::Sat),
    ("Sun", Weekday::Sun),
];

fn day(s: &str) -> Result<usize, String> {
    DAYS.iter()
        .position(|(n, _)| n.eq_ignore_ascii_case(s))
        .ok_or_else(|| format!("`{s}` is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun)"))
}

fn minutes(s: &str) -> Result<u32, String> {
    let bad = || format!("`{s}` is not a time HH:MM between 00:00 and 24:00");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 24 || m > 59 || (h == 24 && m != 0) || s.len() != 5 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

impl BusinessHours {
    /// Parses e.g. `Mon-Thu 09:00-17:00, Fri 09:00-13:00, Sat 10:00-14:00`;
    /// a range without days (`00:00-24:00`) is every day. The error says
    /// what is wrong with which part.
    pub fn parse(text: &str) -> Result<BusinessHours, String> {
        let mut ranges = Vec::new();
        for part in text.split(',').map(str::trim) {
            if part.is_empty() {
                return Err("an empty range (two commas, or a trailing one)".into());
            }
            let (days, times) = match part.rsplit_once(' ') {
                Some((d, t)) => (Some(d.trim()), t),
                None => (None, part),
            };
            let days: Vec<Weekday> = match days {
                None => DAYS.iter().map(|(_, d)| *d).collect(),
                Some(d) => match d.split_once('-') {
                    Some((a, b)) => {
                        let (a, b) = (day(a.trim())?, day(b.trim())?);
                        if a > b {
                            return Err(format!("`{d}`: the first day comes after the last (write Mon-Fri, not Fri-Mon)"));
                        }
                        (a..=b).map(|i| DAYS[i].1).collect()
                    }
                    None => vec![DAYS[day(d)?].1],
                },
            };
            let (open, close) = times.split_once('-').ok_or_else(|| {
                format!("`{part}`: expected DAYS HH:MM-HH:MM, e.g. Mon-Fri 09:00-17:00")
            })?;
            let (open, close) = (minutes(open)?, minutes(close)?);
            if open >= close {
                return Err(format!("`{part}`: opens at or after it closes"));
            }
            for r in &ranges {
                let r: &Range = r;
                if r.days.iter().any(|d| days.contains(d)) && open < r.close && r.open < close {
                    return Err(format!("`{part}` overlaps another range on the same day"));
                }
            }
            ranges.push(Range { days, open, close });
        }
        Ok(BusinessHours(ranges))
    }

    /// Refuses a break that begins and ends inside one quarter hour of the
    /// clock (`09:00-12:05, 12:10-17:00`): meta.business_clock keeps one open
    /// piece per quarter hour. Ranges that touch (`09:00-12:00, 12:00-17:00`)
    /// are one piece; a day may have any number of ranges otherwise.
    pub fn one_piece_per_quarter_hour(&self) -> Result<(), String> {
        let hhmm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
        for (name, day) in DAYS {
            let mut ranges: Vec<(u32, u32)> = self
                .0
                .iter()
                .filter(|r| r.days.contains(&day))
                .map(|r| (r.open, r.close))
                .collect();
            ranges.sort();
            for pair in ranges.windows(2) {
                let (closes, opens) = (pair[0].1, pair[1].0);
                let quarter = (closes - 1) / 15 * 15;
                if closes < opens && opens < quarter + 15 {
                    return Err(format!(
                        "{name}: the break from {} to {} begins and ends inside the quarter hour {}-{}; \
                         business hours may close and open again at most once per quarter hour \
                         (end the break at {} or later, or begin it at {} or earlier)",
                        hhmm(closes),
                        hhmm(opens),
                        hhmm(quarter),
                        hhmm(quarter + 15),
                        hhmm(quarter + 15),
                        hhmm(quarter),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The open intervals `[opens_at, closes_at)` of local date `d` in `tz`,
    /// in order (none on a closed day).
    pub fn intervals(&self, d: NaiveDate, tz: Tz) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        let mut out: Vec<_> = self
            .0
            .iter()
            .filter(|r| r.days.contains(&d.weekday()))
            .map(|r| (local_instant(d, r.open, tz), local_instant(d, r.close, tz)))
            .filter(|(a, b)| a < b)
            .collect();
        out.sort();
        out
    }
}

/// The instant of `minutes` after local midnight of `d` (1440: the next
/// day's start): the first of two on a fall-back night, the end of the gap
/// when it does not exist.
pub fn local_instant(d: NaiveDate, minutes: u32, tz: Tz) -> DateTime<Utc> {
    if minutes >= 24 * 60 {
        return day_start(d + Duration::days(1), tz);
    }
    let mut t = d.and_time(
        NaiveTime::from_num_seconds_from_midnight_opt(minutes * 60, 0).expect("in the day"),
    );
    loop {
        match tz.from_local_datetime(&t) {
            LocalResult::Single(x) => return x.with_timezone(&Utc),
            LocalResult::Ambiguous(a, b) => return a.min(b).with_timezone(&Utc),
            LocalResult::None => t += Duration::minutes(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges_and_names_what_is_wrong() {
        let h =
            BusinessHours::parse("Mon-Thu 09:00-17:00, Fri 09:00-13:00, Sat 10:00-14:00").unwrap();
        assert_eq!(h.0.len(), 3);
        assert_eq!(h.0[0].days.len(), 4);
        assert_eq!((h.0[1].open, h.0[1].close), (540, 780));
        assert_eq!(
            BusinessHours::parse("00:00-24:00").unwrap().0[0].days.len(),
            7
        );
        for (bad, says) in [
            ("Mon-Fri 9-17", "not a time"),
            ("Mon-Fri 17:00-09:00", "opens at or after it closes"),
            ("Funday 09:00-17:00", "`Funday` is not a day"),
            ("Fri-Mon 09:00-17:00", "first day comes after the last"),
            ("Mon-Fri 09:00-17:00, Fri 12:00-18:00", "overlaps"),
            ("Mon-Fri 09:00-25:00", "not a time"),
            ("Mon-Fri 09:00-17:00,", "empty range"),
        ] {
            let e = BusinessHours::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        // Any number of ranges a day; a break inside one quarter hour is
        // refused, naming the day, the break and the quarter hour.
        let six = BusinessHours::parse(
            "Mon-Fri 08:00-09:00, Fri 10:00-11:00, Fri 12:00-13:00, Fri 14:00-15:00, Fri 16:00-17:00, Fri 17:30-17:45",
        )
        .unwrap();
        assert!(six.one_piece_per_quarter_hour().is_ok());
        for ok in [
            "Mon-Fri 09:00-12:00, 12:00-17:00",
            "Mon-Fri 09:00-12:15, 12:30-17:00",
            "Mon-Fri 09:00-12:10, 12:20-17:00",
            "Mon-Fri 09:00-12:00, 12:10-17:00",
            "Mon-Fri 09:00-12:05, 12:15-17:00",
            "Sat 12:03-12:07",
            "Mon 00:00-24:00, Tue 00:00-00:01",
        ] {
            let h = BusinessHours::parse(ok).unwrap();
            assert_eq!(h.one_piece_per_quarter_hour(), Ok(()), "{ok}");
        }
        let e = BusinessHours::parse("Mon-Fri 09:00-12:05, Wed 12:10-17:00")
            .unwrap()
            .one_piece_per_quarter_hour()
            .unwrap_err();
        assert_eq!(
            e,
            "Wed: the break from 12:05 to 12:10 begins and ends inside the quarter hour 12:00-12:15; \
             business hours may close and open again at most once per quarter hour \
             (end the break at 12:15 or later, or begin it at 12:00 or earlier)"
        );
        for bad in [
            "Mon 09:00-12:14, 12:14-13:00, 13:00-13:01, 13:02-14:00",
            "Sun 23:00-23:46, 23:59-24:00",
            "Tue 00:01-00:02, 00:03-00:04",
        ] {
            let h = BusinessHours::parse(bad).unwrap();
            assert!(h.one_piece_per_quarter_hour().is_err(), "{bad}");
        }
    }
}
