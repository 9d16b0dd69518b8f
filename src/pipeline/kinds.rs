//! How each stream kind is read and committed, one short function each:
//! - windowed: date windows; each window's partitions are replaced, then the
//!   watermark moves;
//! - snapshot: everything; each changed partition is replaced, unchanged
//!   ones keep their files, stale ones are deleted;
//! - changes: a cursor names the changed keys; their partitions are merged,
//!   chunk by chunk, each followed by the cursor;
//! - upsert: everything, compared with the warehouse by key and `updated_at`;
//!   changed rows merged, vanished ones marked deleted.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use chrono::{DateTime, NaiveDate, Utc};
use indicatif::ProgressBar;

use super::ahead::{fetch_ahead, Ahead, Budget};
use super::commit::{commit, delete_stale_partitions};
use super::prepare::failpoint;
use super::upsert::{self, stored_keys};
use super::{RunOptions, StreamReport};
use crate::config::Pipeline;
use crate::error::{Error, Result};
use crate::extract::window::{self, Window};
use crate::extract::{ChangePlan, Extracted, Source, StreamSpec};
use crate::normalize::{key_hash, time};
use crate::sink::{Merge, Warehouse};
use crate::state::lock::RunLock;
use crate::state::{Loaded, StateStore};

pub(super) struct StreamCtx<'a> {
    pub(super) pipeline: &'a Pipeline,
    pub(super) wh: &'a Warehouse,
    pub(super) states: &'a StateStore<'a>,
    pub(super) source: &'a dyn Source,
    pub(super) run_id: &'a str,
    pub(super) now: DateTime<Utc>,
    pub(super) today: NaiveDate,
    pub(super) bar: &'a ProgressBar,
    pub(super) lock: &'a RunLock,
    pub(super) opts: &'a RunOptions,
    /// The run's bytes of answers held (read ahead, not yet written).
    pub(super) budget: &'a Budget,
}

impl StreamCtx<'_> {
    /// Before each window or chunk: stop if asked to, or if the lock was lost.
    pub(super) fn check_go_on(&self, spec: &StreamSpec) -> Result<()> {
        if self.lock.lost() {
            return Err(Error::State {
                path: format!("_locks/{}.json", self.pipeline.config.name),
                message: format!(
                    "{}: the pipeline lock was lost; stopped before the next commit",
                    spec.name
                ),
            });
        }
        if self
            .opts
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
        {
            return Err(Error::Stopped {
                stream: spec.name.clone(),
            });
        }
        Ok(())
    }
}

/// Chunks of a change-driven stream fetched at once (the next one starts
/// while the current one finishes).
const CHUNKS_AHEAD: usize = 2;

/// How a commit writes a partition.
pub(super) enum Write<'a> {
    /// The partition becomes exactly the new rows.
    Replace,
    /// The same, but a partition whose rows did not change keeps its file.
    ReplaceChanged,
    /// The new rows are merged in as the sink's [`Merge`] says.
    Merge(Merge<'a>),
}

/// A snapshot stream: read whole, the table replaced, stale partitions removed.
pub(super) async fn snapshot(
    ctx: &StreamCtx<'_>,
    spec: &StreamSpec,
    loaded: Option<&Loaded>,
    rep: &mut StreamReport,
) -> Result<()> {
    ctx.bar.set_message(spec.name.clone());
    let out = ctx.source.extract(spec, None, ctx.run_id).await?;
    let written = commit(ctx, spec, None, out, Write::ReplaceChanged, rep).await?;
    delete_stale_partitions(ctx, spec, &written).await?;
    ctx.states
        .save(&spec.name, loaded, None, None, ctx.run_id)
        .await?;
    ctx.bar.inc(1);
    Ok(())
}

/// A change-driven stream: the cursor names the changed keys; each chunk's
/// partitions are merged, then the cursor moves past it.
pub(super) async fn changes(
    ctx: &StreamCtx<'_>,
    spec: &StreamSpec,
    key_column: &'static str,
    mut loaded: Option<Loaded>,
    rep: &mut StreamReport,
) -> Result<()> {
    let cursor = if ctx.opts.full_refresh {
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
        plan.chunks.iter().map(|c| c.len).sum::<usize>()
    );
    // Fetching runs ahead of writing: the next chunk's requests go out
    // while this chunk's last answers (a 429's wait, say) and its write are
    // pending, so the source's request slots do not idle at chunk
    // boundaries. The source bounds the requests in flight across chunks
    // (Social25: `max_concurrency`). Chunks are written, and the cursor
    // saved, strictly in order. One step of the planned total.
    let ChangePlan {
        chunks,
        keys_of,
        mut cursor_after,
        ..
    } = plan;
    let fetch = async |i: usize| {
        let keys = keys_of(i);
        let out = ctx.source.extract_changes(spec, &keys, ctx.run_id).await;
        (keys, out)
    };
    let write = async |i: usize, (keys, out): (Vec<String>, Result<Extracted>)| {
        let chunk = &chunks[i];
        ctx.check_go_on(spec)?;
        let label = format!("changes {}/{}", i + 1, chunks.len());
        ctx.bar.set_message(format!("{} {label}", spec.name));
        let out = out.map_err(|e| at(spec, &label, e))?;
        let keys: HashSet<u128> = keys.iter().map(|k| key_hash(k)).collect();
        let how = Write::Merge(Merge {
            key_column,
            replace: &keys,
            tombstones: None,
        });
        commit(ctx, spec, None, out, how, rep)
            .await
            .map_err(|e| at(spec, &label, e))?;
        // The cursor moves only once every partition of the chunk is merged.
        let cursor = Some(cursor_after(i));
        loaded = Some(
            ctx.states
                .save(
                    &spec.name,
                    loaded.as_ref(),
                    chunk.reached,
                    cursor,
                    ctx.run_id,
                )
                .await?,
        );
        Ok(())
    };
    let ahead = Ahead {
        count: CHUNKS_AHEAD,
        budget: ctx.budget,
    };
    fetch_ahead(
        chunks.len(),
        ahead,
        fetch,
        |(_, out)| out.is_err(),
        |(_, out)| held(out),
        write,
    )
    .await?;
    ctx.bar.inc(1);
    Ok(())
}

/// A windowed stream: date windows from the watermark (minus lookback) to
/// today; each window's partitions replaced, then the watermark moved to the
/// last day that is complete.
pub(super) async fn windowed(
    ctx: &StreamCtx<'_>,
    spec: &StreamSpec,
    (window_days, final_lag): (u32, Option<chrono::Duration>),
    mut loaded: Option<Loaded>,
    rep: &mut StreamReport,
) -> Result<()> {
    let cfg = &ctx.pipeline.config;
    let mut watermark = if ctx.opts.full_refresh {
        None
    } else {
        loaded.as_ref().and_then(|l| l.state.watermark)
    };
    let default = window::default_range(watermark, cfg.start_date, cfg.lookback_days, ctx.today);
    let range = Window {
        from: ctx.opts.from.unwrap_or(default.from),
        to: ctx.opts.to.unwrap_or(default.to),
    };
    if range.from > range.to {
        // --from after today (prepare::check warned), or a --to before where
        // the stream would start: no day to read.
        if range.from > ctx.today {
            rep.scope = "none (after today)".into();
        } else {
            tracing::warn!(stream = %spec.name, "the range starts at {} (watermark minus lookback, or start_date), after --to {}: nothing to read; give --from too", range.from, range.to);
            rep.scope = format!("none (--to before {})", range.from);
        }
        return Ok(());
    }
    rep.window = Some(range);
    rep.scope = range.to_string();
    // As many as `prepare::plan` counted for the progress bar.
    let windows = window::split(range, window_days);
    // Up to `max_concurrency` windows are read at once, committed in order.
    let fetch = async |i: usize| {
        let w = windows[i];
        ctx.source
            .extract(spec, Some(w), ctx.run_id)
            .await
            .map_err(|e| at(spec, &w.to_string(), e))
    };
    let write = async |i: usize, out: Result<Extracted>| {
        let w = windows[i];
        ctx.check_go_on(spec)?;
        ctx.bar.set_message(format!("{} {w}", spec.name));
        let written = commit(ctx, spec, Some(w), out?, Write::Replace, rep)
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
        Ok(())
    };
    let ahead = Ahead {
        count: ctx.source.max_concurrency(),
        budget: ctx.budget,
    };
    fetch_ahead(windows.len(), ahead, fetch, Result::is_err, held, write).await
}

/// The bytes of answers a fetch holds until it is written (none once it
/// failed).
fn held(out: &Result<Extracted>) -> u64 {
    out.as_ref().map_or(0, |o| o.bytes)
}

/// An upsert stream: compare the source with the warehouse, merge the new and
/// changed rows into their partitions, mark the vanished ones, then save the
/// high-water `updatedAt`.
pub(super) async fn upsert(
    ctx: &StreamCtx<'_>,
    spec: &StreamSpec,
    (key_column, scope_column): (&'static str, Option<&'static str>),
    loaded: Option<&Loaded>,
    rep: &mut StreamReport,
) -> Result<()> {
    ctx.bar.set_message(spec.name.clone());
    let table = spec.tables[0];
    let stored = stored_keys(ctx.wh, table, key_column, scope_column).await?;
    let mut up =
        upsert::compare(ctx.source, spec, &stored, ctx.run_id, &ctx.pipeline.policy).await?;
    // Besides where the new rows go: where changed and vanished keys live now.
    for key in up.replace.iter().chain(&up.tombstones) {
        if let Some((_, s)) = stored.get(*key) {
            up.extracted.buffers[0].touch(s.dt);
        }
    }
    rep.scope = format!(
        "{} new, {} changed, {} gone",
        up.extracted.buffers[0]
            .len()
            .saturating_sub(up.replace.len()),
        up.replace.len(),
        up.tombstones.len()
    );
    let share = ctx.pipeline.config.max_delete_share;
    if !up.tombstones.is_empty()
        && up.tombstones.len() as f64 > share * up.live as f64
        && !ctx.opts.allow_mass_delete
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
    rep.add_rows(&table.name, up.tombstones.len() as u64);
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
    ctx.bar.inc(1);
    Ok(())
}

pub(super) fn at(spec: &StreamSpec, window: &str, e: Error) -> Error {
    Error::Stream {
        stream: spec.name.clone(),
        window: window.to_string(),
        source: Box::new(e),
    }
}
