//! The reporting calendar: the settings of a pipeline's `[reporting]`, and what every run
//! writes from them into the warehouse so that views, reports and other
//! engines never need the pipeline file: `meta.business_hours` (one row per
//! open interval of every business day from `start_date` through a year
//! after today), `meta.calendar` (every local date of that span with its
//! bounds and business hours summed up), `meta.business_clock` (business
//! time before any instant, by quarter hour of UTC) and `meta.reporting_settings` (one
//! row). One warehouse has one reporting calendar: the latest run's settings
//! win.

pub mod hours;

use arrow::datatypes::Date32Type;
use chrono::{Datelike, Duration, NaiveDate};
use chrono_tz::Tz;
use serde::Deserialize;

use crate::error::Result;
use crate::normalize::{build_batch, time, Cell, Row};
use crate::schema;
use crate::sink::Warehouse;

pub use hours::BusinessHours;

/// `[reporting]` in the pipeline file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportingConfig {
    /// The SLA target: a first response within this many seconds.
    pub first_response_target_seconds: u32,
    /// Business hours in the pipeline timezone, e.g. `Mon-Fri 09:00-17:00`.
    pub business_hours: String,
    /// Local dates without business hours.
    pub holidays: Vec<NaiveDate>,
}

impl Default for ReportingConfig {
    fn default() -> Self {
        ReportingConfig {
            first_response_target_seconds: 120,
            business_hours: "Mon-Fri 09:00-17:00".into(),
            holidays: Vec::new(),
        }
    }
}

impl ReportingConfig {
    /// Checks the section; the message names the key, the value and what is wrong.
    pub fn validate(&self) -> std::result::Result<BusinessHours, String> {
        if self.first_response_target_seconds == 0 {
            return Err("reporting.first_response_target_seconds = 0: at least 1".into());
        }
        BusinessHours::parse(&self.business_hours)
            .and_then(|h| h.one_piece_per_quarter_hour().map(|()| h))
            .map_err(|e| {
                format!(
                    "reporting.business_hours = \"{}\": {e}",
                    self.business_hours
                )
            })
    }
}

/// The tables every run replaces whole from `[reporting]`, in the order
/// [`write_settings`] takes them.
pub const TABLES: [&str; 4] = [
    "meta.business_hours",
    "meta.calendar",
    "meta.business_clock",
    "meta.reporting_settings",
];

/// A quarter hour in microseconds: the slot of meta.business_clock.
const SLOT_US: i64 = 900_000_000;

/// Days of meta.business_clock built and written at once (8,760 rows).
const CLOCK_DAYS: i64 = 91;

/// The instants a local day starts and ends (23 or 25 hours apart on DST days).
fn day_bounds(
    d: NaiveDate,
    tz: chrono_tz::Tz,
) -> (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) {
    (
        time::day_start(d, tz),
        time::day_start(d + Duration::days(1), tz),
    )
}

/// Business microseconds of a day's open intervals (whole minutes, so
/// seconds are exact).
fn business_us(open: &[(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)]) -> i64 {
    open.iter()
        .map(|(o, c)| time::micros(*c) - time::micros(*o))
        .sum()
}

/// The rows of day `d` on the business clock, one per quarter hour of UTC
/// that the day covers: the business time before it (`before`, carried from
/// row to row) and its open part, `open` intersected with the quarter hour.
/// An error names the day and the quarter hour if that part is in two
/// pieces (refused when the pipeline is loaded; this is the check on the
/// instants themselves, DST days included).
fn clock_day(
    table: &'static schema::TableDef,
    d: NaiveDate,
    (starts, ends): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>),
    open: &[(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)],
    before: &mut i64,
    now: i64,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let dt = Cell::Date(Date32Type::from_naive_date(d));
    let (start, end) = (time::micros(starts), time::micros(ends));
    let open: Vec<(i64, i64)> = open
        .iter()
        .map(|(o, c)| (time::micros(*o), time::micros(*c)))
        .collect();
    let mut slot = start.div_euclid(SLOT_US);
    while slot * SLOT_US < end {
        let (from, to) = (slot * SLOT_US, (slot + 1) * SLOT_US);
        // The open part of [from, to): the intervals' pieces inside it, in
        // order, touching ones joined.
        let mut piece: Option<(i64, i64)> = None;
        for (o, c) in open.iter().map(|(o, c)| (*o.max(&from), *c.min(&to))) {
            if o >= c {
                continue;
            }
            piece = match piece {
                None => Some((o, c)),
                Some((po, pc)) if pc == o => Some((po, c)),
                Some(_) => {
                    let at = chrono::DateTime::from_timestamp_micros(from).unwrap_or_default();
                    return Err(crate::error::Error::Internal(format!(
                        "meta.business_clock for {d}: the quarter hour from {at} (UTC) is open in two pieces; \
                         business hours may close and open again at most once per quarter hour"
                    )));
                }
            };
        }
        let (opens, closes) = piece.unwrap_or((from, from));
        let cells = vec![
            ("slot", Cell::Int(slot)),
            ("dt", dt.clone()),
            ("business_us_before_slot", Cell::Int(*before)),
            ("opens_us", Cell::Int(opens)),
            ("closes_us", Cell::Int(closes)),
        ];
        rows.push(Row::named(table, cells, now)?);
        *before += closes - opens;
        slot += 1;
    }
    Ok(())
}

/// Replaces meta.business_hours, meta.calendar, meta.business_clock and
/// meta.reporting_settings with what pipeline `name`'s `[reporting]` says
/// (`r`, validated when the file was loaded), in its timezone, for
/// `start_date` through a year after `today`.
#[allow(clippy::too_many_arguments)]
pub async fn write_settings(
    wh: &Warehouse,
    name: &str,
    r: &ReportingConfig,
    tz: Tz,
    start_date: NaiveDate,
    today: NaiveDate,
    run_id: &str,
) -> Result<()> {
    let hours = r.validate().map_err(|message| {
        crate::error::Error::Internal(format!(
            "[reporting] of pipeline {name} passed validation when loaded, then failed: {message}"
        ))
    })?;
    let now = time::micros(chrono::Utc::now());
    let [hours_table, calendar_table, clock_table, settings_table] = TABLES.map(schema::table);
    let (mut hour_rows, mut day_rows) = (Vec::new(), Vec::new());
    let first = start_date.min(today);
    let until = today
        .checked_add_months(chrono::Months::new(12))
        .unwrap_or(today);
    // The open intervals of day `d`.
    let open_on = |d: NaiveDate| {
        if r.holidays.contains(&d) {
            Vec::new()
        } else {
            hours.intervals(d, tz)
        }
    };
    let mut d = first;
    while d <= until {
        let holiday = r.holidays.contains(&d);
        let open = open_on(d);
        let dt = Cell::Date(Date32Type::from_naive_date(d));
        for (opens, closes) in &open {
            let cells = vec![
                ("dt", dt.clone()),
                ("opens_at", Cell::Micros(time::micros(*opens))),
                ("closes_at", Cell::Micros(time::micros(*closes))),
            ];
            hour_rows.push(Row::named(hours_table, cells, now)?);
        }
        let instant = |t: Option<&chrono::DateTime<chrono::Utc>>| {
            t.map_or(Cell::Null, |t| Cell::Micros(time::micros(*t)))
        };
        let (starts, ends) = day_bounds(d, tz);
        let cells = vec![
            ("dt", dt.clone()),
            ("starts_at", instant(Some(&starts))),
            ("ends_at", instant(Some(&ends))),
            (
                "weekday",
                Cell::Int(d.weekday().number_from_monday().into()),
            ),
            ("is_holiday", Cell::Bool(holiday)),
            ("business_intervals", Cell::Int(open.len() as i64)),
            ("opens_at", instant(open.first().map(|(a, _)| a))),
            ("closes_at", instant(open.last().map(|(_, b)| b))),
            (
                "business_seconds",
                Cell::Int(business_us(&open) / 1_000_000),
            ),
        ];
        day_rows.push(Row::named(calendar_table, cells, now)?);
        d += Duration::days(1);
    }
    for (table, rows) in [(hours_table, hour_rows), (calendar_table, day_rows)] {
        wh.replace_partition(table, None, &build_batch(table, run_id, &rows)?)
            .await?;
    }
    // The clock has 96 rows a day: it is built and written CLOCK_DAYS days
    // at a time (a start_date in 1970 held 1.26 GB of rows at once).
    let mut before: i64 = 0;
    let mut next = Some(first);
    let chunks = std::iter::from_fn(|| {
        let from = next.filter(|d| *d <= until)?;
        let mut rows = Vec::new();
        let mut d = from;
        while d <= until && (d - from).num_days() < CLOCK_DAYS {
            let open = open_on(d);
            let (starts, ends) = day_bounds(d, tz);
            if let Err(e) = clock_day(
                clock_table,
                d,
                (starts, ends),
                &open,
                &mut before,
                now,
                &mut rows,
            ) {
                next = None;
                return Some(Err(e));
            }
            d += Duration::days(1);
        }
        next = Some(d);
        Some(build_batch(clock_table, run_id, &rows))
    });
    wh.replace_partition_with(clock_table, None, chunks).await?;
    let cells = vec![
        ("timezone", Cell::Str(tz.name().to_string())),
        (
            "first_response_target_seconds",
            Cell::Int(r.first_response_target_seconds.into()),
        ),
        ("business_hours", Cell::Str(r.business_hours.clone())),
        (
            "holidays",
            Cell::List(r.holidays.iter().map(|h| h.to_string()).collect()),
        ),
        ("pipeline", Cell::Str(name.to_string())),
    ];
    let row = Row::named(settings_table, cells, now)?;
    wh.replace_partition(
        settings_table,
        None,
        &build_batch(settings_table, run_id, &[row])?,
    )
    .await?;
    Ok(())
}
