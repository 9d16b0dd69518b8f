//! Cron schedules (with a seconds field) evaluated on the wall clock of the
//! pipeline timezone, and the `chatlake schedule` daemon that runs pipelines
//! at them.
//!
//! DST: the expression is matched against local wall-clock times. A local time
//! that does not exist (02:30 on a spring-forward day) fires at the first
//! instant after the gap (03:00); a local time that exists twice (01:30 on a
//! fall-back night) fires once, at the first. So a daily job runs once on
//! both days. Every function takes the clock as an argument.
//!
//! The daemon remembers, per pipeline, the last slot it ran
//! (`_schedule/<pipeline>.json`). After downtime it runs the latest
//! missed slot once, not once per missed slot. Each run takes the pipeline
//! lock, so two daemons (or a daemon and a manual run) never overlap.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use cron::Schedule;
use futures::FutureExt;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::config::Pipeline;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::pipeline::{run_once, RunOptions};
use crate::sink::{partition, Warehouse};

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

/// What the daemon remembers per pipeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ScheduleState {
    last_slot: DateTime<Utc>,
}

fn schedule_path(wh: &Warehouse, pipeline: &str) -> object_store::path::Path {
    partition::schedule_file(wh.root(), pipeline)
}

async fn load_last_slot(wh: &Warehouse, pipeline: &str) -> Result<Option<DateTime<Utc>>> {
    let slot = load_slot_at(wh, schedule_path(wh, pipeline)).await?;
    match slot {
        Some(s) => Ok(Some(s)),
        None => load_slot_at(wh, partition::legacy_schedule_file(wh.root(), pipeline)).await,
    }
}

async fn load_slot_at(
    wh: &Warehouse,
    path: object_store::path::Path,
) -> Result<Option<DateTime<Utc>>> {
    match wh.store().get(&path).await {
        Ok(g) => {
            let bytes = g.bytes().await.map_err(|e| Error::store(&path, e))?;
            let s: ScheduleState = serde_json::from_slice(&bytes).map_err(|e| Error::State {
                path: path.to_string(),
                message: format!("unreadable: {e}"),
            })?;
            Ok(Some(s.last_slot))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(Error::store(&path, e)),
    }
}

async fn save_last_slot(wh: &Warehouse, pipeline: &str, slot: DateTime<Utc>) -> Result<()> {
    let path = schedule_path(wh, pipeline);
    let body = serde_json::to_vec_pretty(&ScheduleState { last_slot: slot }).expect("serializes");
    wh.store()
        .put(&path, PutPayload::from(body))
        .await
        .map_err(|e| Error::store(&path, e))?;
    Ok(())
}

/// The daemon's clock: the system clock in production, a fake one in tests
/// (days of schedule across DST in a second).
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
    /// Returns at `t`, or earlier once `stop` is set.
    fn sleep_until<'a>(
        &'a self,
        t: DateTime<Utc>,
        stop: &'a AtomicBool,
    ) -> futures::future::BoxFuture<'a, ()>;
}

/// The wall clock; sleeps wake every 250 ms to notice a stop.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    fn sleep_until<'a>(
        &'a self,
        t: DateTime<Utc>,
        stop: &'a AtomicBool,
    ) -> futures::future::BoxFuture<'a, ()> {
        Box::pin(async move {
            while Utc::now() < t && !stop.load(Ordering::Relaxed) {
                let left = (t - Utc::now()).to_std().unwrap_or_default();
                tokio::time::sleep(left.min(std::time::Duration::from_millis(250))).await;
            }
        })
    }
}

/// How often the daemon evaluates a pipeline's `[[alerts]]` between runs.
pub const ALERT_EVERY: chrono::Duration = chrono::Duration::minutes(15);

/// Runs one pipeline at its schedule until `stop` is set. A run that fails is
/// logged and recorded in meta.runs; the daemon goes on to the next slot.
pub async fn serve_pipeline(
    pipeline: Pipeline,
    wh: Warehouse,
    stop: Arc<AtomicBool>,
    metrics: Metrics,
    clock: Arc<dyn Clock>,
) -> Result<()> {
    let name = pipeline.config.name.clone();
    let expr = pipeline.config.schedule.clone().ok_or_else(|| {
        Error::Usage(format!(
            "{}: no `schedule` in the pipeline file",
            pipeline.file.display()
        ))
    })?;
    let schedule = parse_cron(&expr).map_err(Error::Usage)?;
    let tz = pipeline.tz;
    let mut last = load_last_slot(&wh, &name).await?;
    if let Some(slot) = missed_slot(&schedule, tz, last, clock.now()) {
        tracing::info!(pipeline = %name, missed = %slot, "running the slot missed while the daemon was down (once)");
        run_slot(&pipeline, &wh, slot, &stop, &metrics, clock.now()).await;
        last = Some(slot);
    }
    loop {
        let now = clock.now();
        let from = last.map_or(now, |l| l.max(now));
        let Some(next) = next_after(&schedule, tz, from) else {
            tracing::warn!(pipeline = %name, "the schedule never fires again");
            return Ok(());
        };
        tracing::info!(pipeline = %name, next = %next.with_timezone(&tz), "next run");
        // Between runs, the alert rules every ALERT_EVERY: a stream that
        // stopped updating is noticed when nothing runs.
        let mut check = clock.now() + ALERT_EVERY;
        while !pipeline.config.alerts.is_empty() && check < next {
            clock.sleep_until(check, &stop).await;
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            crate::notify::alerts::on_timer(&pipeline, &wh, clock.now()).await;
            check = clock.now() + ALERT_EVERY;
        }
        clock.sleep_until(next, &stop).await;
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        run_slot(&pipeline, &wh, next, &stop, &metrics, clock.now()).await;
        last = Some(next);
    }
}

/// One scheduled run. A panic inside it (a bug) is caught and ends only this
/// run: the daemon logs it, counts it as a failure and
/// goes on with the next slot and the other pipelines.
async fn run_slot(
    pipeline: &Pipeline,
    wh: &Warehouse,
    slot: DateTime<Utc>,
    stop: &Arc<AtomicBool>,
    metrics: &Metrics,
    now: DateTime<Utc>,
) {
    let name = &pipeline.config.name;
    let opts = RunOptions {
        stop: Some(Arc::clone(stop)),
        now: Some(now),
        ..RunOptions::default()
    };
    let outcome = match std::panic::AssertUnwindSafe(run_once(pipeline, wh, &opts))
        .catch_unwind()
        .await
    {
        Ok(result) => result,
        Err(payload) => {
            let why = crate::error::panic_message(payload.as_ref());
            metrics.crashed(name);
            tracing::error!(pipeline = %name, error = %why, "scheduled run crashed (a bug: please report it); the daemon goes on");
            return;
        }
    };
    match outcome {
        Ok(report) => {
            let failed = report.failures().count();
            metrics.record(name, &report);
            tracing::info!(pipeline = %name, run_id = %report.run_id, streams = report.streams.len(), failed, "scheduled run finished");
            if let Err(e) = save_last_slot(wh, name, slot).await {
                tracing::error!(pipeline = %name, error = %e, "could not record the slot");
            }
        }
        Err(Error::Locked { holder, .. }) => {
            metrics.skipped(name);
            tracing::warn!(pipeline = %name, holder = %holder, "slot skipped: another run holds the pipeline lock");
        }
        Err(e) => {
            metrics.crashed(name);
            tracing::error!(pipeline = %name, error = %e, "scheduled run could not start");
            // In meta.runs too, so that `chatlake runs` shows it and exits 1.
            if let Err(e2) = crate::pipeline::record_failed_start(pipeline, wh, now, &e).await {
                tracing::error!(pipeline = %name, error = %e2, "could not record the failed start in meta.runs");
            }
        }
    }
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
