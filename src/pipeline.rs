//! `run_once`: the whole flow of one pipeline run. Per stream: extract (the
//! source reads the API) -> normalize (rows into Arrow batches) -> sink (each
//! partition one atomic PUT) -> state (watermark or cursor saved only after
//! what it covers is committed) -> one meta.runs row. How a stream is read
//! depends on its [`StreamKind`]; each kind is one function in [`kinds`].
//! [`prepare`] selects streams and checks the warehouse before the first
//! request; [`commit`] writes partitions, rejects and meta.runs rows.

mod ahead;
mod commit;
mod kinds;
mod prepare;
mod upsert;

pub(crate) use prepare::failpoint;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};

use self::kinds::StreamCtx;
use crate::config::Pipeline;
use crate::error::Result;
use crate::extract::http::Traffic;
use crate::extract::window::Window;
use crate::extract::{StreamKind, StreamSpec};
use crate::normalize::time;
use crate::sink::Warehouse;
use crate::state::lock::{self, RunLock};
use crate::state::StateStore;

/// What the user asked of this run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// First local date (default: watermark minus lookback, or start_date).
    pub from: Option<NaiveDate>,
    /// Last local date, inclusive (default: today in the pipeline timezone).
    pub to: Option<NaiveDate>,
    /// Only these streams (`source.stream`); empty: all configured.
    pub streams: Vec<String>,
    /// Ignore watermarks: re-extract from start_date (also accepts a changed
    /// timezone).
    pub full_refresh: bool,
    /// Let an upsert stream mark more than `max_delete_share` of its rows deleted.
    pub allow_mass_delete: bool,
    /// The clock: "today" is this instant's local date.
    pub now: Option<DateTime<Utc>>,
    /// Draw a progress bar.
    pub progress: bool,
    /// Set (e.g. by SIGTERM) to stop before the next window or chunk; what
    /// is committed stays committed.
    pub stop: Option<Arc<AtomicBool>>,
}

/// The outcome of one stream in one run (also its meta.runs row).
#[derive(Debug, Clone)]
pub struct StreamReport {
    pub stream: String,
    /// The date range read (windowed streams).
    pub window: Option<Window>,
    /// What was read, for people: the range, "snapshot" or "N changed".
    pub scope: String,
    pub pages: u64,
    pub records: u64,
    /// Records the source said it had (paginated listings' `count`).
    pub source_count: Option<u64>,
    pub rows_written: u64,
    /// rows_written by table (a stream may write several: chats and their messages).
    pub rows_by_table: std::collections::BTreeMap<String, u64>,
    pub rejects: u64,
    /// Records dropped because they belong to a person `forget` erased.
    pub suppressed: u64,
    /// The HTTP requests this stream made: sent, retried, throttled, waited.
    pub traffic: Traffic,
    /// Why it failed; None on success.
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub run_id: String,
    pub streams: Vec<StreamReport>,
}

impl StreamReport {
    /// Requests a second over the stream's wall time.
    pub fn requests_per_second(&self) -> f64 {
        let secs = (self.finished_at - self.started_at)
            .num_microseconds()
            .unwrap_or(0) as f64
            / 1e6;
        if secs > 0.0 {
            self.traffic.requests as f64 / secs
        } else {
            0.0
        }
    }

    /// Counts `n` rows written to `table`.
    pub(crate) fn add_rows(&mut self, table: &str, n: u64) {
        self.rows_written += n;
        *self.rows_by_table.entry(table.to_string()).or_default() += n;
    }

    /// A step of the run that is not a stream (its start, its retention)
    /// and failed: `message` comes from outside and is cleaned.
    fn failed(step: &str, started_at: DateTime<Utc>, message: &str) -> Self {
        StreamReport {
            started_at,
            error: Some(crate::config::secret::clean(message)),
            ..StreamReport::new(step)
        }
    }

    /// A stream starting now, nothing read yet.
    fn new(stream: &str) -> Self {
        let now = Utc::now();
        StreamReport {
            stream: stream.to_string(),
            window: None,
            scope: "snapshot".into(),
            pages: 0,
            records: 0,
            source_count: None,
            rows_written: 0,
            rows_by_table: Default::default(),
            rejects: 0,
            suppressed: 0,
            traffic: Traffic::default(),
            error: None,
            started_at: now,
            finished_at: now,
        }
    }
}

impl RunReport {
    /// Streams that failed.
    pub fn failures(&self) -> impl Iterator<Item = &StreamReport> {
        self.streams.iter().filter(|s| s.error.is_some())
    }
}

pub use prepare::PlannedStream;

/// `run --dry-run`: what `run_once` with `opts` would read, stream by
/// stream, from the saved state alone (no request, no lock, no write).
/// `wh` None: a warehouse that does not exist yet (every stream's first run).
pub async fn plan(
    pipeline: &Pipeline,
    wh: Option<&Warehouse>,
    opts: &RunOptions,
) -> Result<Vec<PlannedStream>> {
    let cfg = &pipeline.config;
    let now = opts.now.unwrap_or_else(Utc::now);
    let today = time::local_date(now, pipeline.tz);
    let (_sources, specs) = prepare::streams(pipeline, now, opts)?;
    let states = wh.map(|wh| StateStore::new(wh, &cfg.name).with_timezone(&cfg.timezone));
    prepare::check(cfg, opts, today, states.as_ref(), &specs).await?;
    prepare::plan(cfg, opts, today, states.as_ref(), &specs).await
}

/// Runs every selected stream of `pipeline` into `wh` once.
pub async fn run_once(pipeline: &Pipeline, wh: &Warehouse, opts: &RunOptions) -> Result<RunReport> {
    let cfg = &pipeline.config;
    let now = opts.now.unwrap_or_else(Utc::now);
    let today = time::local_date(now, pipeline.tz);
    let run_id = new_run_id(now);
    let (sources, specs) = prepare::streams(pipeline, now, opts)?;
    let states = StateStore::new(wh, &cfg.name).with_timezone(&cfg.timezone);
    prepare::check(cfg, opts, today, Some(&states), &specs).await?;
    let lock = RunLock::acquire(wh, &cfg.name, &run_id, lock::DEFAULT_TTL).await?;
    // Hashes only join when made with one key; people `forget` erased
    // stay out (every row is checked against the suppression list).
    let policy = pipeline.policy.as_deref();
    if let Err(e) =
        crate::privacy::begin_run(wh, &cfg.name, policy, opts.full_refresh, &run_id).await
    {
        lock.release().await;
        return Err(e);
    }
    prepare::failpoint(&format!("panic@{}", cfg.name));
    // A run counts as failed until every one of its meta.runs rows is written.
    let marker = crate::state::runlog::RunMarker {
        pipeline: cfg.name.clone(),
        run_id: run_id.clone(),
        started_at: Utc::now(),
        streams: specs.iter().map(|(_, s)| s.name.clone()).collect(),
    };
    crate::state::runlog::begin(wh, &marker).await?;
    // Spill directories of runs killed before they could remove them.
    crate::normalize::sweep_stale_spills();
    // The reporting calendar (business hours, SLA target) for views and reports.
    if let Err(e) = crate::calendar::write_settings(
        wh,
        &cfg.name,
        &cfg.reporting,
        pipeline.tz,
        cfg.start_date,
        today,
        &run_id,
    )
    .await
    {
        tracing::error!(error = %e, "could not write the reporting settings (meta.business_hours); reports use the previous ones");
    }
    let plan = prepare::plan(cfg, opts, today, Some(&states), &specs).await?;
    let (progress, bars) = prepare::progress_bars(
        opts.progress,
        sources.len(),
        |i| pipeline.sources[i].name().to_string(),
        &specs,
        &plan,
    );
    tracing::info!(pipeline = %cfg.name, run_id, warehouse = %wh, streams = specs.len(), "run started");

    // Sources run at once, each at its own rate; a source's streams run in
    // order (Social25 messages reuse the conversations listing). Together
    // they hold at most `max_buffered_mb` of answers read ahead.
    let budget = ahead::Budget::new(cfg.max_buffered_mb << 20);
    let by_source = (0..sources.len()).map(|i| {
        let own: Vec<&StreamSpec> = specs
            .iter()
            .filter(|(s, _)| *s == i)
            .map(|(_, spec)| spec)
            .collect();
        let ctx = StreamCtx {
            pipeline,
            wh,
            states: &states,
            source: sources[i].as_ref(),
            run_id: &run_id,
            now,
            today,
            bar: &bars[i],
            lock: &lock,
            opts,
            budget: &budget,
        };
        async move {
            let mut out = Vec::new();
            for spec in own {
                out.push(run_and_record(&ctx, spec).await);
            }
            out
        }
    });
    let mut reports: Vec<(StreamReport, bool)> = futures::future::join_all(by_source)
        .await
        .into_iter()
        .flatten()
        .collect();
    // In the order the streams were selected.
    reports.sort_by_key(|(r, _)| specs.iter().position(|(_, s)| s.name == r.stream));
    let recorded = reports.iter().all(|(_, recorded)| *recorded);
    let mut reports: Vec<StreamReport> = reports.into_iter().map(|(r, _)| r).collect();
    // The planned totals are exact: a run where every stream succeeded did
    // every step it planned (checked in debug builds, so by every test run).
    if reports.iter().all(|r| r.error.is_none()) {
        for bar in &bars {
            debug_assert_eq!(
                bar.position(),
                bar.length().unwrap_or(0),
                "progress plan of {}",
                bar.prefix()
            );
        }
    }
    for bar in &bars {
        bar.finish_and_clear();
    }
    let _ = progress.clear();
    // Partitions past their retention go, and are recorded in
    // meta.deletions; a failure fails the run (a meta.runs row says why).
    if let Some(policy) = &pipeline.policy {
        let report_path = cfg.report.as_ref().map(|r| r.path.as_str());
        let started = Utc::now();
        let outcome = crate::privacy::retention::apply(
            wh,
            &cfg.name,
            &run_id,
            policy,
            today,
            pipeline.tz,
            report_path,
        )
        .await;
        if let Err(e) = outcome {
            tracing::error!(error = %e, "retention failed");
            let rep = StreamReport::failed(RETENTION, started, &format!("retention: {e}"));
            if let Err(e) = commit::write_run_row(wh, pipeline, &run_id, &rep).await {
                tracing::error!(error = %e, "could not record the retention failure in meta.runs");
            }
            reports.push(rep);
        }
    }
    if let Err(e) = crate::privacy::end_run(wh, &cfg.name, policy).await {
        tracing::error!(error = %e, "could not save the suppression list's new chats and conversations; the next run finds them again");
    }
    // The report shows this run, failed streams included.
    if let Some(report) = &cfg.report {
        let url = match crate::report::deliver(wh, report, today).await {
            Ok(url) => {
                tracing::info!(report = %url, "report written");
                Some(url)
            }
            Err(e) => {
                tracing::error!(error = %e, "could not write the report");
                None
            }
        };
        // On its cadence, the headline goes to `deliver_to` (never fails the run).
        crate::notify::report::after_run(pipeline, wh, today, url.as_deref()).await;
    }
    // Alerts: the rules over what is now committed, sent to their
    // channels; a delivery failure is recorded, never fails the run.
    crate::notify::alerts::after_run(pipeline, wh).await;
    if recorded {
        if let Err(e) = crate::state::runlog::finish(wh, &cfg.name, &run_id).await {
            tracing::warn!(error = %e, "could not clear the run marker; `chatlake runs` will list this run as incomplete");
        }
    }
    lock.release().await;
    Ok(RunReport {
        run_id,
        streams: reports,
    })
}

/// A run's id: its start (UTC, to the second) and 24 random bits.
pub(crate) fn new_run_id(at: DateTime<Utc>) -> String {
    format!(
        "{}-{:06x}",
        at.format("%Y%m%dT%H%M%SZ"),
        fastrand::u32(..0x100_0000)
    )
}

/// The stream name of the meta.runs row of a failed retention.
pub const RETENTION: &str = "(retention)";

/// The stream name of the meta.runs row of a run that could not start.
pub const RUN_START: &str = "(run start)";

/// Records in meta.runs a run of `pipeline` that could not start (its
/// settings no longer fit the warehouse, the machine was out of file
/// descriptors...), as one failed row for [`RUN_START`], so that `chatlake
/// runs` lists it and exits 1. A scheduled run that fails this way left no
/// trace but a log line.
pub async fn record_failed_start(
    pipeline: &Pipeline,
    wh: &Warehouse,
    started_at: DateTime<Utc>,
    error: &crate::error::Error,
) -> Result<String> {
    let run_id = new_run_id(started_at);
    let mut rep = StreamReport::failed(
        RUN_START,
        started_at,
        &format!("the run could not start: {error}"),
    );
    rep.scope = "not started".into();
    commit::write_run_row(wh, pipeline, &run_id, &rep).await?;
    Ok(run_id)
}

/// One stream, then its meta.runs row; whether that row was written.
async fn run_and_record(ctx: &StreamCtx<'_>, spec: &StreamSpec) -> (StreamReport, bool) {
    let mut rep = StreamReport::new(&spec.name);
    let traffic_before = ctx.source.traffic();
    if let Err(e) = run_stream(ctx, spec, &mut rep).await {
        // An error may quote what an API sent: under the policy's free-text
        // rule, as any row would be.
        let mut message = crate::config::secret::clean(&e.to_string());
        if let Some(p) = &ctx.pipeline.policy {
            message = p.message(&message);
        }
        tracing::error!(stream = %spec.name, error = %message, "stream failed");
        rep.error = Some(message);
    }
    rep.traffic = ctx.source.traffic() - traffic_before;
    rep.finished_at = Utc::now();
    let mut recorded = true;
    if let Err(e) = commit::write_run_row(ctx.wh, ctx.pipeline, ctx.run_id, &rep).await {
        recorded = false;
        rep.error.get_or_insert(format!("writing meta.runs: {e}"));
    }
    tracing::info!(stream = %rep.stream, rows = rep.rows_written, rejects = rep.rejects, requests = rep.traffic.requests, retries = rep.traffic.retries, throttled = rep.traffic.throttled,
        status = if rep.error.is_some() { "failed" } else { "success" }, "stream finished");
    (rep, recorded)
}

/// One stream, by its kind (see [`kinds`]).
async fn run_stream(ctx: &StreamCtx<'_>, spec: &StreamSpec, rep: &mut StreamReport) -> Result<()> {
    ctx.check_go_on(spec)?;
    let loaded = ctx.states.load(&spec.name).await?;
    match spec.kind {
        StreamKind::Windowed {
            window_days,
            final_lag,
        } => kinds::windowed(ctx, spec, (window_days, final_lag), loaded, rep).await,
        StreamKind::Snapshot => kinds::snapshot(ctx, spec, loaded.as_ref(), rep)
            .await
            .map_err(|e| kinds::at(spec, "snapshot", e)),
        StreamKind::Changes { key_column } => {
            kinds::changes(ctx, spec, key_column, loaded, rep).await
        }
        StreamKind::Upsert {
            key_column,
            scope_column,
        } => kinds::upsert(ctx, spec, (key_column, scope_column), loaded.as_ref(), rep)
            .await
            .map_err(|e| kinds::at(spec, "whole", e)),
    }
}
