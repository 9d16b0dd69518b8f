//! The `chatlake schedule` daemon: runs pipelines at the fire times of their
//! cron schedules ([`times`]: the cron arithmetic, on the wall clock of the
//! pipeline timezone, DST included). Every function takes the clock as an
//! argument.
//!
//! The daemon remembers, per pipeline, the last slot it ran
//! (`_schedule/<pipeline>.json`). After downtime it runs the latest
//! missed slot once, not once per missed slot. Each run takes the pipeline
//! lock, so two daemons (or a daemon and a manual run) never overlap.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::config::Pipeline;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::pipeline::{run_once, RunOptions};
use crate::sink::{partition, Warehouse};

pub mod times;
pub use times::{fire_times, missed_slot, next_after, parse_cron};

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
