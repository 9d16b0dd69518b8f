//! `run_once`: the whole flow for one pipeline run, stream by stream:
//! extract -> normalize -> sink (each partition written with one atomic PUT)
//! -> state (saved only after what it covers is committed) -> one meta.runs
//! row per stream. How a stream is read depends on its [`StreamKind`]:
//! - windowed: date windows; each window's partitions are replaced;
//! - snapshot: everything; the table is replaced (stale partitions deleted);
//! - changes: a cursor names the changed keys; their partitions are merged;
//! - upsert: everything, compared with the warehouse by key and updated_at;
//!   changed rows merged, vanished ones marked deleted.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Pipeline;
use crate::error::{Error, Result};
use crate::extract::window::{self, Window};
use crate::extract::{Extracted, Source, Stored, StreamKind, StreamSpec};
use crate::lock::{self, RunLock};
use crate::normalize::{build_batch, time, Cell, Reject, Row};
use crate::schema;
use crate::sink::{Merge, Warehouse};
use crate::state::{Loaded, StateStore};

/// Partitions written at once within a window.
const PARALLEL_PUTS: usize = 8;

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
    pub rejects: u64,
    pub retries: u64,
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

impl RunReport {
    /// Streams that failed.
    pub fn failures(&self) -> impl Iterator<Item = &StreamReport> {
        self.streams.iter().filter(|s| s.error.is_some())
    }
}

/// Runs every selected stream of `pipeline` into `wh` once.
pub async fn run_once(pipeline: &Pipeline, wh: &Warehouse, opts: &RunOptions) -> Result<RunReport> {
    let cfg = &pipeline.config;
    let now = opts.now.unwrap_or_else(Utc::now);
    let today = time::local_date(now, pipeline.tz);
    let run_id = format!(
        "{}-{:06x}",
        now.format("%Y%m%dT%H%M%SZ"),
        fastrand::u32(..0x100_0000)
    );
    let sources = Source::all(cfg, pipeline.tz, now)?;
    let all: Vec<(usize, StreamSpec)> = sources
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.streams().into_iter().map(move |spec| (i, spec)))
        .collect();
    let specs = select(all, &opts.streams)?;
    if let (Some(f), Some(t)) = (opts.from, opts.to) {
        if f > t {
            return Err(Error::Usage(format!("--from {f} is after --to {t}")));
        }
    }
    let states = StateStore::new(wh, &cfg.name).with_timezone(&cfg.timezone);
    if cfg.start_date > today && opts.from.is_none() {
        return Err(Error::Usage(format!(
            "start_date {} is after today ({today} in {}): there is nothing to read yet",
            cfg.start_date, cfg.timezone
        )));
    }
    check_timezone(&states, &specs, cfg, opts.full_refresh).await?;
    let lock = RunLock::acquire(wh, &cfg.name, &run_id, lock::DEFAULT_TTL).await?;
    failpoint(&format!("panic@{}", cfg.name));
    // A run counts as failed until every one of its meta.runs rows is written.
    let marker = crate::runlog::RunMarker {
        pipeline: cfg.name.clone(),
        run_id: run_id.clone(),
        started_at: Utc::now(),
        streams: specs.iter().map(|(_, s)| s.name.clone()).collect(),
    };
    crate::runlog::begin(wh, &marker).await?;
    let mut recorded = true;
    let bar = progress_bar(opts.progress);
    tracing::info!(pipeline = %cfg.name, run_id, warehouse = %wh, streams = specs.len(), "run started");

    let mut reports = Vec::new();
    for (source_index, spec) in &specs {
        let source = &sources[*source_index];
        let started_at = Utc::now();
        let mut rep = StreamReport {
            stream: spec.name.clone(),
            window: None,
            scope: "snapshot".into(),
            pages: 0,
            records: 0,
            source_count: None,
            rows_written: 0,
            rejects: 0,
            retries: 0,
            error: None,
            started_at,
            finished_at: started_at,
        };
        let retries_before = source.retries();
        let ctx = StreamCtx {
            pipeline,
            wh,
            states: &states,
            source,
            run_id: &run_id,
            now,
            today,
            bar: &bar,
            lock: &lock,
            stop: opts.stop.as_deref(),
            allow_mass_delete: opts.allow_mass_delete,
        };
        if let Err(e) = run_stream(&ctx, spec, opts, &mut rep).await {
            tracing::error!(stream = %spec.name, error = %e, "stream failed");
            rep.error = Some(crate::config::secret::redact(&e.to_string()));
        }
        rep.retries = source.retries() - retries_before;
        rep.finished_at = Utc::now();
        if let Err(e) = write_run_row(wh, pipeline, &run_id, &rep).await {
            recorded = false;
            rep.error.get_or_insert(format!("writing meta.runs: {e}"));
        }
        tracing::info!(stream = %rep.stream, rows = rep.rows_written, rejects = rep.rejects, retries = rep.retries,
            status = if rep.error.is_some() { "failed" } else { "success" }, "stream finished");
        reports.push(rep);
    }
    bar.finish_and_clear();
    if recorded {
        if let Err(e) = crate::runlog::finish(wh, &cfg.name, &run_id).await {
            tracing::warn!(error = %e, "could not clear the run marker; `chatlake runs` will list this run as incomplete");
        }
    }
    lock.release().await;
    Ok(RunReport {
        run_id,
        streams: reports,
    })
}

struct StreamCtx<'a> {
    pipeline: &'a Pipeline,
    wh: &'a Warehouse,
    states: &'a StateStore<'a>,
    source: &'a Source,
    run_id: &'a str,
    now: DateTime<Utc>,
    today: NaiveDate,
    bar: &'a ProgressBar,
    lock: &'a RunLock,
    stop: Option<&'a AtomicBool>,
    allow_mass_delete: bool,
}

impl StreamCtx<'_> {
    /// Before each window or chunk: stop if asked to, or if the lock was lost.
    fn check_go_on(&self, spec: &StreamSpec) -> Result<()> {
        if self.lock.lost() {
            return Err(Error::State {
                path: format!("_locks/{}.json", self.pipeline.config.name),
                message: format!(
                    "{}: the pipeline lock was lost; stopped before the next commit",
                    spec.name
                ),
            });
        }
        if self.stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            return Err(Error::Stopped {
                stream: spec.name.clone(),
            });
        }
        Ok(())
    }
}

/// How a commit writes a partition.
enum Write<'a> {
    /// The partition becomes exactly the new rows.
    Replace,
    /// The new rows are merged in as the sink's [`Merge`] says.
    Merge(Merge<'a>),
}

async fn run_stream(
    ctx: &StreamCtx<'_>,
    spec: &StreamSpec,
    opts: &RunOptions,
    rep: &mut StreamReport,
) -> Result<()> {
    ctx.check_go_on(spec)?;
    let mut loaded = ctx.states.load(&spec.name).await?;
    let (window_days, final_lag) = match spec.kind {
        StreamKind::Snapshot => {
            ctx.bar.set_message(spec.name.clone());
            let out = ctx
                .source
                .extract(spec, None, ctx.run_id)
                .await
                .map_err(|e| at(spec, "snapshot", e))?;
            let written = commit(ctx, spec, None, out, Write::Replace, rep)
                .await
                .map_err(|e| at(spec, "snapshot", e))?;
            delete_stale_partitions(ctx, spec, &written)
                .await
                .map_err(|e| at(spec, "snapshot", e))?;
            ctx.states
                .save(&spec.name, loaded.as_ref(), None, None, ctx.run_id)
                .await?;
            return Ok(());
        }
        StreamKind::Changes { key_column } => {
            let cursor = if opts.full_refresh {
                None
            } else {
                loaded.as_ref().and_then(|l| l.state.cursor.clone())
            };
            let plan = ctx
                .source
                .plan_changes(spec, cursor)
                .await
                .map_err(|e| at(spec, "changes", e))?;
            rep.pages += plan.pages;
            rep.scope = format!(
                "{} changed",
                plan.chunks.iter().map(|c| c.keys.len()).sum::<usize>()
            );
            ctx.bar.inc_length(plan.chunks.len() as u64);
            for (i, chunk) in plan.chunks.iter().enumerate() {
                ctx.check_go_on(spec)?;
                let label = format!("changes {}/{}", i + 1, plan.chunks.len());
                ctx.bar.set_message(format!("{} {label}", spec.name));
                let keys: HashSet<String> = chunk.keys.iter().cloned().collect();
                let out = ctx
                    .source
                    .extract_changes(spec, chunk, ctx.run_id)
                    .await
                    .map_err(|e| at(spec, &label, e))?;
                commit(
                    ctx,
                    spec,
                    None,
                    out,
                    Write::Merge(Merge {
                        key_column,
                        replace: &keys,
                        tombstones: None,
                    }),
                    rep,
                )
                .await
                .map_err(|e| at(spec, &label, e))?;
                // The cursor moves only once every partition of the chunk is merged.
                loaded = Some(
                    ctx.states
                        .save(
                            &spec.name,
                            loaded.as_ref(),
                            chunk.reached,
                            Some(chunk.cursor.clone()),
                            ctx.run_id,
                        )
                        .await?,
                );
                ctx.bar.inc(1);
            }
            return Ok(());
        }
        StreamKind::Upsert { key_column } => {
            ctx.bar.set_message(spec.name.clone());
            return run_upsert(ctx, spec, key_column, loaded.as_ref(), rep)
                .await
                .map_err(|e| at(spec, "whole", e));
        }
        StreamKind::Windowed {
            window_days,
            final_lag,
        } => (window_days, final_lag),
    };
    let cfg = &ctx.pipeline.config;
    let mut watermark = if opts.full_refresh {
        None
    } else {
        loaded.as_ref().and_then(|l| l.state.watermark)
    };
    let default = window::default_range(watermark, cfg.start_date, cfg.lookback_days, ctx.today);
    let range = Window {
        from: opts.from.unwrap_or(default.from),
        to: opts.to.unwrap_or(default.to),
    };
    rep.window = Some(range);
    rep.scope = range.to_string();
    let windows = window::split(range, window_days);
    ctx.bar.inc_length(windows.len() as u64);
    for w in windows {
        ctx.check_go_on(spec)?;
        ctx.bar.set_message(format!("{} {w}", spec.name));
        let out = ctx
            .source
            .extract(spec, Some(w), ctx.run_id)
            .await
            .map_err(|e| at(spec, &w.to_string(), e))?;
        let written = commit(ctx, spec, Some(w), out, Write::Replace, rep)
            .await
            .map_err(|e| at(spec, &w.to_string(), e))?;
        // The last day whose data is complete: today is never complete; with a
        // finality lag, only days that ended before now minus the lag are.
        let reached = match final_lag {
            None => Some(w.to.min(ctx.today)),
            Some(lag) => w
                .days()
                .filter(|d| time::local_range(*d, *d, ctx.pipeline.tz).1 <= ctx.now - lag)
                .last(),
        };
        failpoint("after-partitions-before-watermark");
        if let Some(reached) =
            reached.filter(|_| window::extends_watermark(watermark, cfg.start_date, w))
        {
            let new = watermark.map_or(reached, |wm| wm.max(reached));
            loaded = Some(
                ctx.states
                    .save(&spec.name, loaded.as_ref(), Some(new), None, ctx.run_id)
                    .await?,
            );
            watermark = Some(new);
        }
        tracing::info!(stream = %spec.name, window = %w, partitions = written.len(), watermark = ?watermark, "window committed");
        ctx.bar.inc(1);
    }
    Ok(())
}

/// Refuses a run whose timezone differs from the one the streams' data was
/// partitioned in: `dt` would shift, and re-read days would duplicate or
/// lose chats at the edges. `--full-refresh` re-reads everything in the new
/// timezone.
async fn check_timezone(
    states: &StateStore<'_>,
    specs: &[(usize, StreamSpec)],
    cfg: &crate::config::PipelineConfig,
    full_refresh: bool,
) -> Result<()> {
    if full_refresh {
        return Ok(());
    }
    for (_, spec) in specs {
        let Some(loaded) = states.load(&spec.name).await? else {
            continue;
        };
        if let Some(tz) = loaded.state.timezone.filter(|tz| *tz != cfg.timezone) {
            return Err(Error::Usage(format!(
                "stream {}: its data is partitioned by local dates in {tz}, but the pipeline now says timezone = \"{}\". \
                 Running on would shift dt and duplicate or lose rows at day edges; \
                 run once with --full-refresh to re-read everything in {} (or set the timezone back)",
                spec.name, cfg.timezone, cfg.timezone
            )));
        }
    }
    Ok(())
}

/// An upsert stream: compare the source with the warehouse, merge the new and
/// changed rows into their partitions, mark the vanished ones, then save the
/// high-water `updatedAt`.
async fn run_upsert(
    ctx: &StreamCtx<'_>,
    spec: &StreamSpec,
    key_column: &'static str,
    loaded: Option<&Loaded>,
    rep: &mut StreamReport,
) -> Result<()> {
    let table = spec.tables[0];
    let stored = stored_keys(ctx.wh, table, key_column).await?;
    let mut up = ctx.source.extract_upsert(spec, &stored, ctx.run_id).await?;
    // Besides where the new rows go: where changed and vanished keys live now.
    for key in up.replace.iter().chain(&up.tombstones) {
        if let Some(s) = stored.get(key) {
            up.extracted.buffers[0].touch(s.dt);
        }
    }
    rep.scope = format!("{} changed, {} gone", up.replace.len(), up.tombstones.len());
    let share = ctx.pipeline.config.max_delete_share;
    if !up.tombstones.is_empty()
        && up.tombstones.len() as f64 > share * up.live as f64
        && !ctx.allow_mass_delete
    {
        return Err(Error::BadResponse {
            source_name: spec.name.clone(),
            endpoint: spec.endpoints.join(", "),
            message: format!(
                "the answer would mark {} of {} stored rows deleted ({:.0}%), more than max_delete_share = {share}; nothing written. \
                 If the source really lost them, run once with --allow-mass-delete",
                up.tombstones.len(),
                up.live,
                100.0 * up.tombstones.len() as f64 / up.live.max(1) as f64
            ),
        });
    }
    let how = Write::Merge(Merge {
        key_column,
        replace: &up.replace,
        tombstones: Some((&up.tombstones, time::micros(ctx.now))),
    });
    commit(ctx, spec, None, up.extracted, how, rep).await?;
    rep.rows_written += up.tombstones.len() as u64;
    if !up.tombstones.is_empty() {
        tracing::info!(stream = %spec.name, gone = up.tombstones.len(), "records gone from the source marked deleted");
    }
    let high = up.high_water.or_else(|| {
        loaded.and_then(|l| {
            l.state
                .cursor
                .as_ref()?
                .get("high_water")?
                .as_str()?
                .parse::<DateTime<Utc>>()
                .ok()
        })
    });
    let cursor = high.map(|h| serde_json::json!({ "high_water": h }));
    ctx.states
        .save(
            &spec.name,
            loaded,
            high.map(|h| time::local_date(h, ctx.pipeline.tz)),
            cursor,
            ctx.run_id,
        )
        .await?;
    Ok(())
}

/// Key -> what the warehouse holds for it (partition, updated_at, deleted, company).
async fn stored_keys(
    wh: &Warehouse,
    table: &schema::TableDef,
    key_column: &str,
) -> Result<HashMap<String, Stored>> {
    use arrow::array::{Array, StringArray, TimestampMicrosecondArray};
    let mut out = HashMap::new();
    for (dt, b) in wh
        .scan(
            table,
            &[key_column, "updated_at", "deleted_at", "company_id"],
        )
        .await?
    {
        let text = |c: &str| {
            b.column_by_name(c)
                .and_then(|a| a.as_any().downcast_ref::<StringArray>().cloned())
        };
        let ts = |c: &str| {
            b.column_by_name(c).and_then(|a| {
                a.as_any()
                    .downcast_ref::<TimestampMicrosecondArray>()
                    .cloned()
            })
        };
        let (Some(keys), updated, deleted, company) = (
            text(key_column),
            ts("updated_at"),
            ts("deleted_at"),
            text("company_id"),
        ) else {
            continue;
        };
        for i in 0..b.num_rows() {
            if keys.is_null(i) {
                continue;
            }
            out.insert(
                keys.value(i).to_string(),
                Stored {
                    dt,
                    updated_at: updated
                        .as_ref()
                        .filter(|u| !u.is_null(i))
                        .map(|u| u.value(i)),
                    deleted: deleted.as_ref().is_some_and(|d| !d.is_null(i)),
                    scope: company
                        .as_ref()
                        .filter(|c| !c.is_null(i))
                        .map(|c| c.value(i).to_string()),
                },
            );
        }
    }
    Ok(out)
}

/// Crash-test hook: when `CHATLAKE_FAILPOINT` names this point, the process
/// aborts here (as a kill -9 would), or, for a `panic@<pipeline>` point, the
/// run panics (as a bug would). Used by the fault suite to crash between
/// committing partitions and saving the watermark, and to prove the scheduler
/// survives a crashing run; inert otherwise.
fn failpoint(name: &str) {
    if std::env::var_os("CHATLAKE_FAILPOINT").is_some_and(|v| v == name) {
        if name.starts_with("panic@") {
            panic!("failpoint {name}");
        }
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}

fn at(spec: &StreamSpec, window: &str, e: Error) -> Error {
    Error::Stream {
        stream: spec.name.clone(),
        window: window.to_string(),
        source: Box::new(e),
    }
}

/// Writes one extract: every partition of every table, then its rejects.
/// Returns the partitions written (table name, dt).
async fn commit(
    ctx: &StreamCtx<'_>,
    spec: &StreamSpec,
    w: Option<Window>,
    out: Extracted,
    how: Write<'_>,
    rep: &mut StreamReport,
) -> Result<Vec<(String, Option<NaiveDate>)>> {
    rep.pages += out.pages;
    rep.records += out.records;
    if let Some(c) = out.source_count {
        *rep.source_count.get_or_insert(0) += c;
    }
    let mut parts = Vec::new();
    for buffer in out.buffers {
        let table = buffer.table();
        parts.extend(
            buffer
                .into_batches()?
                .into_iter()
                .map(|(dt, batch)| (table, dt, batch)),
        );
    }
    let written: Vec<(String, Option<NaiveDate>)> = parts
        .iter()
        .map(|(t, dt, _)| (t.name.clone(), *dt))
        .collect();
    let how = &how;
    // Each partition is its own atomic PUT; several go up at once.
    let rows: u64 = futures::stream::iter(parts)
        .map(|(table, dt, batch)| async move {
            match how {
                Write::Replace => ctx.wh.replace_partition(table, dt, &batch).await,
                Write::Merge(merge) => {
                    ctx.wh.merge_partition(table, dt, &batch, merge).await?;
                    Ok(batch.num_rows())
                }
            }
        })
        .buffer_unordered(PARALLEL_PUTS)
        .try_fold(0u64, |acc, n| async move { Ok(acc + n as u64) })
        .await?;
    rep.rows_written += rows;
    if !out.rejects.is_empty() {
        rep.rejects += out.rejects.len() as u64;
        tracing::warn!(stream = %spec.name, window = ?w.map(|w| w.to_string()), rejects = out.rejects.len(), "records quarantined in meta.rejects");
        write_rejects(ctx, spec, w, &out.rejects).await?;
    }
    Ok(written)
}

/// After a snapshot of a partitioned table: removes the partitions the
/// snapshot no longer has (every record that was there is gone or moved).
async fn delete_stale_partitions(
    ctx: &StreamCtx<'_>,
    spec: &StreamSpec,
    written: &[(String, Option<NaiveDate>)],
) -> Result<()> {
    for table in spec.tables.iter().filter(|t| t.is_partitioned()) {
        let keep: HashSet<NaiveDate> = written
            .iter()
            .filter(|(t, _)| *t == table.name)
            .filter_map(|(_, d)| *d)
            .collect();
        for dt in ctx.wh.partitions(table).await? {
            if !keep.contains(&dt) {
                let empty = arrow::record_batch::RecordBatch::new_empty(table.file_schema());
                ctx.wh.replace_partition(table, Some(dt), &empty).await?;
                tracing::info!(table = %table.name, dt = %dt, "stale partition removed");
            }
        }
    }
    Ok(())
}

async fn write_rejects(
    ctx: &StreamCtx<'_>,
    spec: &StreamSpec,
    w: Option<Window>,
    rejects: &[Reject],
) -> Result<()> {
    let table = schema::table("meta.rejects");
    let now = Utc::now();
    let date = |d: NaiveDate| Cell::Date(days_since_epoch(d));
    let rows = rejects
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let cells = vec![
                ("table_name", Cell::Str(r.table.clone())),
                ("stream", Cell::Str(spec.name.clone())),
                ("window_start", w.map_or(Cell::Null, |w| date(w.from))),
                ("window_end", w.map_or(Cell::Null, |w| date(w.to))),
                ("seq", Cell::Int(i as i64 + 1)),
                (
                    "reason",
                    Cell::Str(crate::config::secret::redact(&r.reason)),
                ),
                (
                    "raw_json",
                    Cell::Str(crate::config::secret::redact(&r.raw_json)),
                ),
                ("run_id", Cell::Str(ctx.run_id.to_string())),
                ("extracted_at", Cell::Micros(time::micros(now))),
            ];
            Row::named(table, cells, time::micros(now))
        })
        .collect::<Result<Vec<Row>>>()?;
    let batch = build_batch(table, ctx.run_id, &rows)?;
    let part = w.map_or("snapshot".to_string(), |w| w.from.to_string());
    let name = format!("{}-{}-{part}", ctx.run_id, spec.name);
    ctx.wh.append(table, ctx.today, &name, &batch).await
}

async fn write_run_row(
    wh: &Warehouse,
    pipeline: &Pipeline,
    run_id: &str,
    rep: &StreamReport,
) -> Result<()> {
    let table = schema::table("meta.runs");
    let date = |d: Option<NaiveDate>| d.map_or(Cell::Null, |d| Cell::Date(days_since_epoch(d)));
    let int = |v: u64| Cell::Int(v as i64);
    let status = if rep.error.is_some() {
        "failed"
    } else {
        "success"
    };
    let cells = vec![
        ("run_id", Cell::Str(run_id.to_string())),
        ("pipeline", Cell::Str(pipeline.config.name.clone())),
        ("stream", Cell::Str(rep.stream.clone())),
        ("window_start", date(rep.window.map(|w| w.from))),
        ("window_end", date(rep.window.map(|w| w.to))),
        ("pages", int(rep.pages)),
        ("records", int(rep.records)),
        ("source_count", rep.source_count.map_or(Cell::Null, int)),
        ("rows_written", int(rep.rows_written)),
        ("rejects", int(rep.rejects)),
        ("retries", int(rep.retries)),
        ("status", Cell::Str(status.into())),
        ("error", rep.error.clone().map_or(Cell::Null, Cell::Str)),
        ("started_at", Cell::Micros(time::micros(rep.started_at))),
        ("finished_at", Cell::Micros(time::micros(rep.finished_at))),
    ];
    let row = Row::named(table, cells, time::micros(rep.finished_at))?;
    let batch = build_batch(table, run_id, &[row])?;
    let dt = time::local_date(rep.started_at, pipeline.tz);
    wh.append(table, dt, &format!("{run_id}-{}", rep.stream), &batch)
        .await
}

/// Days since 1970-01-01 (Arrow Date32).
pub fn days_since_epoch(d: NaiveDate) -> i32 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32
}

/// Keeps the streams named by `--stream` (`source.stream`; `missed_chats`
/// selects the chats stream it feeds).
fn select<T>(specs: Vec<(T, StreamSpec)>, wanted: &[String]) -> Result<Vec<(T, StreamSpec)>> {
    if wanted.is_empty() {
        return Ok(specs);
    }
    let canonical = |w: &str| {
        if w == "socialintents.missed_chats" {
            "socialintents.chats".to_string()
        } else {
            w.to_string()
        }
    };
    for w in wanted {
        if !specs.iter().any(|(_, s)| s.name == canonical(w)) {
            let known: Vec<_> = specs.iter().map(|(_, s)| s.name.as_str()).collect();
            return Err(Error::Usage(format!(
                "--stream {w}: not a configured stream (configured: {})",
                known.join(", ")
            )));
        }
    }
    Ok(specs
        .into_iter()
        .filter(|(_, s)| wanted.iter().any(|w| canonical(w) == s.name))
        .collect())
}

fn progress_bar(enabled: bool) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} windows  {msg}",
        )
        .expect("static template"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}
