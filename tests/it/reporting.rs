//! Issue 13 (first part): the reporting calendar. Every run writes
//! meta.business_hours and meta.reporting_settings from `[reporting]`, and
//! reporting.chats gains local_hour, weekday, first_response_business_seconds
//! and duration_seconds. Expected values are computed here, independently:
//! local times by binary search on chrono-tz offsets (never by building a
//! local time with the pipeline's helpers), business intervals from the
//! settings written out by hand.

use std::collections::BTreeMap;

use chatlake::simulator::clock::{day_start, local_date};
use chatlake::simulator::data::SimChat;
use chrono::{DateTime, Datelike, Duration, NaiveDate, Offset, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::Tz;

use crate::support::*;

// The ranges open and close inside quarter hours of the clock, and two of
// Friday's touch (one open piece in the quarter hour 16:45-17:00).
const HOURS: &str =
    "Mon-Thu 08:50-17:10, Fri 09:05-12:10, Fri 13:20-16:55, Fri 16:55-17:07, Sun 00:00-24:00";
const HOLIDAY: &str = "2025-10-31";

/// The local wall-clock time of instant `t`.
fn local(t: DateTime<Utc>, tz: Tz) -> chrono::NaiveDateTime {
    t.naive_utc()
        + Duration::seconds(
            tz.offset_from_utc_datetime(&t.naive_utc())
                .fix()
                .local_minus_utc() as i64,
        )
}

/// The first instant whose local wall-clock time is `at` or later (the end
/// of a gap for a time that does not exist, the first of two otherwise).
fn first_instant_at(at: chrono::NaiveDateTime, tz: Tz) -> DateTime<Utc> {
    let (mut lo, mut hi) = (
        at.and_utc().timestamp() - 27 * 3600,
        at.and_utc().timestamp() + 27 * 3600,
    );
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if local(DateTime::from_timestamp(mid, 0).unwrap(), tz) < at {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    DateTime::from_timestamp(hi, 0).unwrap()
}

/// The business intervals of local day `d` under HOURS and HOLIDAY.
fn intervals(d: NaiveDate, tz: Tz) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    if d == d_(HOLIDAY) {
        return vec![];
    }
    match d.weekday() {
        Weekday::Sat => vec![],
        Weekday::Sun => vec![(day_start(d, tz), day_start(d + Duration::days(1), tz))],
        Weekday::Fri => [
            ((9, 5), (12, 10)),
            ((13, 20), (16, 55)),
            ((16, 55), (17, 7)),
        ]
        .map(|(a, b)| (at(d, a, tz), at(d, b, tz)))
        .to_vec(),
        _ => vec![(at(d, (8, 50), tz), at(d, (17, 10), tz))],
    }
}

/// Local `hour`:`minute` of day `d`.
fn at(d: NaiveDate, (hour, minute): (u32, u32), tz: Tz) -> DateTime<Utc> {
    first_instant_at(d.and_hms_opt(hour, minute, 0).unwrap(), tz)
}

fn d_(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

/// The seconds of [from, to) inside business intervals.
fn business_seconds(from: DateTime<Utc>, to: DateTime<Utc>, tz: Tz) -> f64 {
    let mut total = 0i64;
    let mut day = local_date(from, tz);
    while day <= local_date(to, tz) {
        for (o, c) in intervals(day, tz) {
            let (a, b) = (from.max(o), to.min(c));
            if a < b {
                total += (b - a).num_microseconds().unwrap();
            }
        }
        day += Duration::days(1);
    }
    total as f64 / 1e6
}

/// A simulated account with `[reporting]` set (target 90 s, HOURS, HOLIDAY),
/// run over two weeks around the fall-back night.
async fn calendar_env(per_day: u32) -> Env {
    let env = env_with(data(per_day), 7).await.with_pipeline(|text| {
        text.replace(
            "[http]",
            &format!("[reporting]\nfirst_response_target_seconds = {TARGET}\nbusiness_hours = \"{HOURS}\"\nholidays = [\"{HOLIDAY}\"]\n[http]"),
        )
    });
    let report = env.run(Some("2025-10-27"), "2025-11-09").await;
    assert!(report.failures().next().is_none());
    env
}

const TARGET: f64 = 90.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn business_hours_local_hours_and_business_seconds_match_independent_figures() {
    let env = calendar_env(12).await;
    let tz = env.tz();

    // meta.reporting_settings: one row, as configured.
    let settings = env.rows("SELECT timezone, first_response_target_seconds, business_hours, pipeline FROM meta.reporting_settings").await;
    assert_eq!(
        settings,
        [vec![
            "America/New_York".to_string(),
            "90".into(),
            HOURS.into(),
            "test".into()
        ]]
    );

    // meta.business_hours for two weeks around the fall-back night.
    let got = env
        .rows("SELECT CAST(dt AS VARCHAR) AS d, CAST(opens_at AS VARCHAR) AS o, CAST(closes_at AS VARCHAR) AS c FROM meta.business_hours WHERE dt BETWEEN DATE '2025-10-27' AND DATE '2025-11-09' ORDER BY dt, opens_at")
        .await;
    let fmt = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let mut expected = Vec::new();
    let mut day = d_("2025-10-27");
    while day <= d_("2025-11-09") {
        for (o, c) in intervals(day, tz) {
            expected.push(vec![day.to_string(), fmt(o), fmt(c)]);
        }
        day += Duration::days(1);
    }
    assert_eq!(got, expected);
    // The round-the-clock fall-back Sunday is 25 hours; the holiday has no row.
    assert!(
        got.contains(&vec![
            "2025-11-02".into(),
            "2025-11-02T04:00:00Z".into(),
            "2025-11-03T05:00:00Z".into()
        ]),
        "{got:?}"
    );
    assert!(!got.iter().any(|r| r[0] == HOLIDAY));
    // From start_date through a year after today ("today" is 2025-11-10 here).
    let span = env.rows("SELECT CAST(MIN(dt) AS VARCHAR) AS a, CAST(MAX(dt) AS VARCHAR) AS b FROM meta.business_hours").await;
    assert_eq!(
        span,
        [vec!["2025-10-27".to_string(), "2026-11-10".to_string()]],
        "start_date .. today + 1 year (the last day a Tuesday)"
    );

    // meta.calendar: every local date, its bounds (23 and 25 hours on the DST
    // days) and its business hours, against the intervals above.
    let got = env
        .rows("SELECT CAST(dt AS VARCHAR) AS d, CAST(starts_at AS VARCHAR) AS s, CAST(ends_at AS VARCHAR) AS e, weekday, is_holiday, business_intervals, CAST(opens_at AS VARCHAR) AS o, CAST(closes_at AS VARCHAR) AS c, business_seconds FROM meta.calendar WHERE dt BETWEEN DATE '2025-10-27' AND DATE '2025-11-09' ORDER BY dt")
        .await;
    let mut expected = Vec::new();
    let mut day = d_("2025-10-27");
    while day <= d_("2025-11-09") {
        let open = intervals(day, tz);
        let or_null = |t: Option<DateTime<Utc>>| t.map_or("NULL".to_string(), fmt);
        expected.push(vec![
            day.to_string(),
            fmt(day_start(day, tz)),
            fmt(day_start(day + Duration::days(1), tz)),
            day.weekday().number_from_monday().to_string(),
            (day == d_(HOLIDAY)).to_string(),
            open.len().to_string(),
            or_null(open.first().map(|i| i.0)),
            or_null(open.last().map(|i| i.1)),
            open.iter()
                .map(|(a, b)| (*b - *a).num_seconds())
                .sum::<i64>()
                .to_string(),
        ]);
        day += Duration::days(1);
    }
    assert_eq!(got, expected);
    let hours = |d: &str| {
        let d = d_(d);
        (day_start(d + Duration::days(1), tz) - day_start(d, tz)).num_hours()
    };
    assert_eq!((hours("2025-11-02"), hours("2025-11-03")), (25, 24));
    assert!(got.contains(&vec![
        "2025-11-02".into(),
        "2025-11-02T04:00:00Z".into(),
        "2025-11-03T05:00:00Z".into(),
        "7".into(),
        "false".into(),
        "1".into(),
        "2025-11-02T04:00:00Z".into(),
        "2025-11-03T05:00:00Z".into(),
        "90000".into()
    ]));
    let days = env.rows("SELECT COUNT(*) AS n, CAST(MIN(dt) AS VARCHAR) AS a, CAST(MAX(dt) AS VARCHAR) AS b FROM meta.calendar").await;
    assert_eq!(
        days,
        [vec![
            "380".to_string(),
            "2025-10-27".into(),
            "2026-11-10".into()
        ]],
        "every date from start_date through today + 1 year"
    );

    // reporting.chats, per Social Intents chat, against the served data.
    let served: BTreeMap<String, SimChat> = env
        .served_chats("2025-10-27", "2025-11-09")
        .into_iter()
        .filter(|c| !c.malformed)
        .map(|c| (c.id.clone(), c))
        .collect();
    let rows = env
        .rows("SELECT chat_id, local_hour, weekday, first_response_business_seconds, duration_seconds FROM reporting.chats WHERE source = 'socialintents' AND dt BETWEEN DATE '2025-10-27' AND DATE '2025-11-09'")
        .await;
    assert_eq!(rows.len(), served.len());
    let (mut straddling, mut outside, mut fallback_one_am) = (0, 0, 0);
    // Waits the view cannot take from one day's single interval.
    let (mut past_midnight, mut over_weekend, mut on_split_day) = (0, 0, 0);
    // Waits that begin or end in a quarter hour that is only partly open
    // (08:50 and 17:10 on Monday to Thursday; 09:05, 12:10, 13:20 and 17:07 on Friday).
    let mut in_part_open_quarter = 0;
    let part_open = |t: DateTime<Utc>| {
        let q = DateTime::from_timestamp(t.timestamp().div_euclid(900) * 900, 0).unwrap();
        let open = business_seconds(q, q + Duration::minutes(15), tz);
        open > 0.0 && open < 900.0
    };
    for r in &rows {
        let c = &served[&r[0]];
        let l = local(c.start, tz);
        assert_eq!(
            r[1],
            l.hour().to_string(),
            "{}: local hour of {}",
            c.id,
            c.start
        );
        assert_eq!(
            r[2],
            local_date(c.start, tz)
                .weekday()
                .number_from_monday()
                .to_string(),
            "{}",
            c.id
        );
        assert_eq!(
            r[4].parse::<f64>().unwrap(),
            c.duration_s as f64,
            "{}: duration",
            c.id
        );
        match wait(c) {
            None => assert_eq!(r[3], "NULL", "{}: no reply, no business seconds", c.id),
            Some((a, b)) => {
                let want = business_seconds(a, b, tz);
                let got: f64 = r[3].parse().unwrap();
                assert!(
                    (got - want).abs() < 1e-6,
                    "{}: business seconds {got}, expected {want} ({a}..{b})",
                    c.id
                );
                let total = (b - a).num_microseconds().unwrap() as f64 / 1e6;
                if want > 0.0 && want < total {
                    straddling += 1;
                }
                if want == 0.0 {
                    outside += 1;
                }
                let (from, to) = (local_date(a, tz), local_date(b, tz));
                past_midnight += usize::from(from != to);
                over_weekend += usize::from((to - from).num_days() >= 2 && want > 0.0);
                on_split_day += usize::from(from.weekday() == Weekday::Fri && want > 0.0);
                in_part_open_quarter += usize::from(part_open(a) || part_open(b));
            }
        }
        if local_date(c.start, tz) == d_("2025-11-02") && l.hour() == 1 {
            fallback_one_am += 1;
        }
    }
    // The data covers the cases that matter (the counts are what the simulator serves).
    assert!(
        straddling > 0 && outside > 0,
        "straddling {straddling}, outside {outside}"
    );
    assert!(
        past_midnight > 10 && over_weekend >= 2 && on_split_day > 3 && in_part_open_quarter > 3,
        "past midnight {past_midnight}, over a weekend {over_weekend}, on a split Friday {on_split_day}, in a partly open quarter hour {in_part_open_quarter}"
    );
    let repeated: Vec<_> = served
        .values()
        .filter(|c| local_date(c.start, tz) == d_("2025-11-02") && local(c.start, tz).hour() == 1)
        .map(|c| c.start)
        .collect();
    assert!(
        repeated.iter().any(|t| t.hour() == 5) && repeated.iter().any(|t| t.hour() == 6),
        "both 01:xx of the fall-back night are served: {repeated:?}"
    );
    assert_eq!(fallback_one_am, repeated.len());
    println!("{} chats checked: {straddling} waits straddle opening or closing, {outside} entirely outside business hours, {fallback_one_am} in the repeated 01:xx hour, {past_midnight} past midnight, {over_weekend} over a weekend, {on_split_day} on a split Friday, {in_part_open_quarter} beginning or ending in a partly open quarter hour", rows.len());

    // No chat has hour 2 on the spring-forward day (a separate account: March 2025).
    let spring = env_with(
        chatlake::simulator::SiData::new(d_("2025-03-08"), d_("2025-03-10"), 40),
        7,
    )
    .await
    .with_pipeline(|text| {
        text.replace("start_date = \"2025-10-27\"", "start_date = \"2025-03-08\"")
    });
    spring.run(Some("2025-03-08"), "2025-03-10").await;
    let hours = spring.rows("SELECT DISTINCT local_hour FROM reporting.chats WHERE dt = DATE '2025-03-09' ORDER BY local_hour").await;
    let hours: Vec<&str> = hours.iter().map(|r| r[0].as_str()).collect();
    assert!(
        !hours.contains(&"2") && hours.contains(&"1") && hours.contains(&"3"),
        "{hours:?}"
    );
    // ... and its day in meta.calendar is 23 hours long (EST until 02:00, EDT after).
    let day = spring.rows("SELECT CAST(starts_at AS VARCHAR) AS s, CAST(ends_at AS VARCHAR) AS e FROM meta.calendar WHERE dt = DATE '2025-03-09'").await;
    assert_eq!(
        day,
        [vec![
            "2025-03-09T05:00:00Z".to_string(),
            "2025-03-10T04:00:00Z".into()
        ]]
    );
}

/// A bad `[reporting]` value is an error naming the key, the value and why (exit 2).
#[test]
fn bad_reporting_settings_are_refused_with_a_reason() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(env_with(data(1), 7));
    let text = std::fs::read_to_string(&env.pipeline_file).unwrap();
    for (setting, says) in [
        (
            "business_hours = \"Mon-Fri 9-5\"",
            "reporting.business_hours = \"Mon-Fri 9-5\": `9` is not a time",
        ),
        (
            "business_hours = \"Fri-Mon 09:00-17:00\"",
            "first day comes after the last",
        ),
        (
            "first_response_target_seconds = 0",
            "reporting.first_response_target_seconds = 0",
        ),
        ("holidays = [\"2025-13-01\"]", "holidays"),
        (
            "business_hours = \"Mon-Fri 09:00-12:05, 12:10-17:00\"",
            "Mon: the break from 12:05 to 12:10 begins and ends inside the quarter hour 12:00-12:15",
        ),
    ] {
        std::fs::write(
            &env.pipeline_file,
            text.replace("[http]", &format!("[reporting]\n{setting}\n[http]")),
        )
        .unwrap();
        let (code, _, err) = chatlake(&[
            "run",
            "--pipeline",
            env.pipeline_file.to_str().unwrap(),
            "--warehouse",
            env.dir.path().join("wh").to_str().unwrap(),
        ]);
        assert_eq!(code, 2, "{setting}: {err}");
        assert!(err.contains(says), "{setting}: {err}");
    }
}

/// The four views on top of reporting.chats, per row, against figures
/// computed here from the served chats: SLA attainment (calendar and
/// business), weekday x hour counts, response-time buckets, agent figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sla_hours_buckets_and_agents_match_independent_figures() {
    let env = calendar_env(30).await;
    let tz = env.tz();
    let served: Vec<SimChat> = env
        .served_chats("2025-10-27", "2025-11-09")
        .into_iter()
        .filter(|c| !c.malformed)
        .collect();
    let q = |view: &str, cols: &str, keys: &str| {
        format!("SELECT {cols} FROM reporting.{view} WHERE source = 'socialintents' AND dt BETWEEN DATE '2025-10-27' AND DATE '2025-11-09' ORDER BY {keys}")
    };
    let f = |s: &str| -> Option<f64> { (s != "NULL").then(|| s.parse().unwrap()) };
    let same = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() < 1e-6 * b.abs().max(1.0),
        (None, None) => true,
        _ => false,
    };

    // first_response_sla by (dt, channel).
    #[derive(Default)]
    struct Sla {
        answered: i64,
        within: i64,
        within_business: i64,
        missed: i64,
    }
    let mut sla: BTreeMap<(String, String), Sla> = BTreeMap::new();
    for c in &served {
        let e = sla
            .entry((local_date(c.start, tz).to_string(), c.widget_id.clone()))
            .or_default();
        e.missed += (c.chat_type == "Missed") as i64;
        if let Some((a, b)) = wait(c) {
            e.answered += 1;
            e.within += ((b - a).num_microseconds().unwrap() as f64 / 1e6 <= TARGET) as i64;
            e.within_business += (business_seconds(a, b, tz) <= TARGET) as i64;
        }
    }
    let rows = env
        .rows(&q("first_response_sla", "CAST(dt AS VARCHAR) AS d, channel, answered_chats, within_target, within_target_business, attainment, attainment_business, missed_chats", "dt, channel"))
        .await;
    assert_eq!(rows.len(), sla.len());
    for (r, ((dt, ch), e)) in rows.iter().zip(&sla) {
        assert_eq!((&r[0], &r[1]), (dt, ch));
        let ints: Vec<i64> = [2, 3, 4, 7]
            .iter()
            .map(|i| r[*i].parse().unwrap())
            .collect();
        assert_eq!(
            ints,
            [e.answered, e.within, e.within_business, e.missed],
            "{dt} {ch}"
        );
        let rate = |n: i64| (e.answered > 0).then(|| n as f64 / e.answered as f64);
        assert!(
            same(f(&r[5]), rate(e.within)) && same(f(&r[6]), rate(e.within_business)),
            "{dt} {ch}: {r:?}"
        );
    }
    let (within, within_business): (i64, i64) = sla
        .values()
        .fold((0, 0), |(a, b), e| (a + e.within, b + e.within_business));
    assert!(
        within_business > within,
        "business hours forgive waits outside them: {within_business} vs {within}"
    );

    // chats_by_hour by (dt, hour).
    let mut hours: BTreeMap<(String, u32), (u32, i64, i64)> = BTreeMap::new();
    for c in &served {
        let d = local_date(c.start, tz);
        let e = hours
            .entry((d.to_string(), local(c.start, tz).hour()))
            .or_insert((d.weekday().number_from_monday(), 0, 0));
        e.1 += 1;
        e.2 += (c.chat_type == "Missed") as i64;
    }
    let rows = env
        .rows(&q(
            "chats_by_hour",
            "CAST(dt AS VARCHAR) AS d, weekday, local_hour, chats, missed_chats",
            "dt, local_hour",
        ))
        .await;
    let got: Vec<(String, u32, (u32, i64, i64))> = rows
        .iter()
        .map(|r| {
            (
                r[0].clone(),
                r[2].parse().unwrap(),
                (
                    r[1].parse().unwrap(),
                    r[3].parse().unwrap(),
                    r[4].parse().unwrap(),
                ),
            )
        })
        .collect();
    let want: Vec<(String, u32, (u32, i64, i64))> =
        hours.into_iter().map(|((d, h), v)| (d, h, v)).collect();
    assert_eq!(got, want);

    // first_response_buckets by (dt, bucket).
    let bucket = |s: f64| match s {
        s if s < 30.0 => (1, "0-30s"),
        s if s < 60.0 => (2, "30-60s"),
        s if s < 120.0 => (3, "1-2m"),
        s if s < 300.0 => (4, "2-5m"),
        s if s < 900.0 => (5, "5-15m"),
        s if s < 3600.0 => (6, "15-60m"),
        _ => (7, "1h+"),
    };
    let mut buckets: BTreeMap<(String, i32, &str), i64> = BTreeMap::new();
    for c in &served {
        if let Some((a, b)) = wait(c) {
            let (order, name) = bucket((b - a).num_microseconds().unwrap() as f64 / 1e6);
            *buckets
                .entry((local_date(c.start, tz).to_string(), order, name))
                .or_default() += 1;
        }
    }
    let rows = env
        .rows(&q(
            "first_response_buckets",
            "CAST(dt AS VARCHAR) AS d, bucket_order, bucket, chats",
            "dt, bucket_order",
        ))
        .await;
    let got: Vec<(String, i32, String, i64)> = rows
        .iter()
        .map(|r| {
            (
                r[0].clone(),
                r[1].parse().unwrap(),
                r[2].clone(),
                r[3].parse().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, i32, String, i64)> = buckets
        .into_iter()
        .map(|((d, o, n), c)| (d, o, n.to_string(), c))
        .collect();
    assert_eq!(got, want);
    assert!(
        got.iter()
            .map(|g| g.1)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            >= 4,
        "several buckets are exercised"
    );

    // agent_performance by (dt, agent).
    // (dt, agent) -> (chats, first-response waits, durations)
    type Agent = (i64, Vec<f64>, Vec<f64>);
    let mut agents: BTreeMap<(String, String), Agent> = BTreeMap::new();
    for c in &served {
        let name = c
            .agent
            .as_ref()
            .map_or("NULL".to_string(), |a| a.name.clone());
        let e = agents
            .entry((local_date(c.start, tz).to_string(), name))
            .or_default();
        e.0 += 1;
        if let Some((a, b)) = wait(c) {
            e.1.push((b - a).num_microseconds().unwrap() as f64 / 1e6);
        }
        e.2.push(c.duration_s as f64);
    }
    let rows = env
        .rows(&q("agent_performance", "CAST(dt AS VARCHAR) AS d, COALESCE(agent_name, 'NULL') AS a, chats, answered_chats, median_first_response_seconds, p90_first_response_seconds, within_target, avg_duration_seconds", "dt, a"))
        .await;
    assert_eq!(rows.len(), agents.len());
    for (r, ((dt, agent), (chats, waits, durations))) in rows.iter().zip(agents.iter_mut()) {
        assert_eq!((&r[0], &r[1]), (dt, agent));
        waits.sort_by(f64::total_cmp);
        let pct = |p| (!waits.is_empty()).then(|| crate::views::percentile(waits, p));
        assert_eq!(r[2].parse::<i64>().unwrap(), *chats, "{dt} {agent}");
        assert_eq!(r[3].parse::<usize>().unwrap(), waits.len(), "{dt} {agent}");
        assert!(
            same(f(&r[4]), pct(0.5)) && same(f(&r[5]), pct(0.9)),
            "{dt} {agent}: {r:?}"
        );
        assert_eq!(
            r[6].parse::<usize>().unwrap(),
            waits.iter().filter(|w| **w <= TARGET).count(),
            "{dt} {agent}"
        );
        let avg = durations.iter().sum::<f64>() / durations.len() as f64;
        assert!(same(f(&r[7]), Some(avg)), "{dt} {agent}: {r:?}");
    }
}

/// A meta.business_clock written by an older chatlake (its day-and-four-
/// intervals columns, not this one's quarter-hour columns) is not read as
/// zero business seconds: the query fails naming the columns, the table and
/// what rewrites it, and the file, through `chatlake query` and through
/// the server alike;
/// the next run rewrites it, and the view reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_business_clock_from_an_older_chatlake_is_named_and_the_next_run_rewrites_it() {
    use arrow::array::{ArrayRef, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let env = calendar_env(2).await;
    let wh = env.dir.path().join("wh");
    let clock = wh.join("meta/business_clock/data.parquet");
    assert!(clock.exists(), "{}", clock.display());
    // The older file: this one's slot, dt and bookkeeping columns, with the
    // older day-and-intervals columns in place of this one's three.
    let current = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&clock).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap()
    .next()
    .unwrap()
    .unwrap();
    let kept = ["slot", "dt", "_extracted_at", "_run_id", "_extra"];
    let older = ["business_us_before_day", "opens_1_us", "closes_1_us"];
    let mut fields: Vec<Field> = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for name in kept {
        let i = current.schema().index_of(name).unwrap();
        fields.push(current.schema().field(i).clone());
        columns.push(current.column(i).clone());
    }
    for name in older {
        fields.push(Field::new(name, DataType::Int64, false));
        columns.push(Arc::new(Int64Array::from(vec![0i64; current.num_rows()])));
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = arrow::record_batch::RecordBatch::try_new(schema.clone(), columns).unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&clock).unwrap(), schema, None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();

    let expected = "columns `business_us_before_slot`, `opens_us`, `closes_us` of meta.business_clock are missing from a file written by an older chatlake: the next `chatlake run` of the pipeline rewrites it";
    let sql = "SELECT COUNT(*) FROM reporting.chats WHERE first_response_business_seconds >= 0";
    let (code, _, err) = chatlake(&["query", "--warehouse", wh.to_str().unwrap(), sql]);
    assert_eq!(code, 1, "a failed query, not a usage error: {err}");
    assert!(err.contains(expected), "{err}");
    assert!(
        err.contains(&format!("warehouse file {}: ", clock.display())),
        "the file is named: {err}"
    );
    // a server's client reads the same words, the file named too, by the
    // simple and the extended protocol
    let (addr, _stop) = crate::serve::start(&env, 4).await;
    let client = crate::serve::connect(addr, crate::serve::PASSWORD)
        .await
        .unwrap();
    let named = format!("warehouse file {}: {expected}", clock.display());
    let e = client.simple_query(sql).await.unwrap_err();
    let message = e.as_db_error().map(|d| d.message().to_string());
    assert_eq!(message.as_deref(), Some(named.as_str()), "{e:?}");
    let e = client.query(sql, &[]).await.unwrap_err();
    let message = e.as_db_error().map(|d| d.message().to_string());
    assert_eq!(message.as_deref(), Some(named.as_str()), "{e:?}");
    let report = env.run(None, "2025-11-09").await;
    assert!(report.failures().next().is_none());
    let (code, out, err) = query_csv(wh.to_str().unwrap(), sql);
    assert_eq!(code, 0, "{err}");
    let answered = env
        .served_chats("2025-10-27", "2025-11-09")
        .iter()
        .filter(|c| !c.malformed && wait(c).is_some())
        .count();
    assert!(answered > 0);
    assert_eq!(
        out.lines().nth(1),
        Some(answered.to_string().as_str()),
        "{out}"
    );
}
