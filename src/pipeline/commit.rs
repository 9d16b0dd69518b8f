//! Writing what a stream read: every partition of every table (one atomic
//! PUT each, several at once), its rejects into meta.rejects, its outcome into
//! meta.runs, and what an upsert stream compares against.

use std::collections::HashSet;

use arrow::datatypes::Date32Type;
use chrono::{NaiveDate, Utc};
use futures::{StreamExt, TryStreamExt};

use super::kinds::{StreamCtx, Write};
use super::StreamReport;
use crate::config::Pipeline;
use crate::error::Result;
use crate::extract::window::Window;
use crate::extract::{Extracted, StreamSpec};
use crate::normalize::{build_batch, time, Cell, Reject, Row};
use crate::schema;
use crate::sink::Warehouse;

/// Partitions written at once within a window.
const PARALLEL_PUTS: usize = 8;

/// Writes one extract: every partition of every table, then its rejects.
/// Returns the partitions it covers (table name, dt), written or left as
/// they were.
pub(super) async fn commit(
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
    rep.suppressed += out.buffers.iter().map(|b| b.suppressed()).sum::<u64>();
    // A rejected record of a person `forget` erased is not kept either.
    let mut rejects = out.rejects;
    if let Some(s) = ctx.pipeline.policy.as_ref().and_then(|p| p.suppressor()) {
        let before = rejects.len();
        rejects.retain(|r| !s.json(&r.raw_json));
        rep.suppressed += (before - rejects.len()) as u64;
    }
    // Partitions are built one at a time as the PUTs go out (a spilled
    // buffer is read back from disk partition by partition).
    let parts = out.buffers.into_iter().flat_map(|buffer| {
        let table = buffer.table();
        buffer
            .into_partitions()
            .map(move |p| p.map(|(dt, batch)| (table, dt, batch)))
    });
    let how = &how;
    // Each partition is its own atomic PUT; several go up at once.
    let done: Vec<(&str, Option<NaiveDate>, usize)> = futures::stream::iter(parts)
        .map(|part| async move {
            let (table, dt, batch) = part?;
            let n = match how {
                Write::Replace => ctx.wh.replace_partition(table, dt, &batch).await?,
                Write::ReplaceChanged => {
                    ctx.wh
                        .replace_partition_if_changed(table, dt, &batch)
                        .await?
                }
                Write::Merge(merge) => {
                    ctx.wh.merge_partition(table, dt, &batch, merge).await?;
                    batch.num_rows()
                }
            };
            Ok::<_, crate::error::Error>((table.name.as_str(), dt, n))
        })
        .buffer_unordered(PARALLEL_PUTS)
        .try_collect()
        .await?;
    let mut written = Vec::with_capacity(done.len());
    for (table, dt, n) in done {
        rep.add_rows(table, n as u64);
        written.push((table.to_string(), dt));
    }
    if !rejects.is_empty() {
        rep.rejects += rejects.len() as u64;
        tracing::warn!(stream = %spec.name, window = ?w.map(|w| w.to_string()), rejects = rejects.len(), "records quarantined in meta.rejects");
        write_rejects(ctx, spec, w, &rejects).await?;
    }
    Ok(written)
}

/// After a snapshot of a partitioned table: removes the partitions the
/// snapshot no longer has (every record that was there is gone or moved).
pub(super) async fn delete_stale_partitions(
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

pub(super) async fn write_rejects(
    ctx: &StreamCtx<'_>,
    spec: &StreamSpec,
    w: Option<Window>,
    rejects: &[Reject],
) -> Result<()> {
    let table = schema::table("meta.rejects");
    let now = Utc::now();
    let date = |d: NaiveDate| Cell::Date(Date32Type::from_naive_date(d));
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
                ("reason", Cell::Str(crate::config::secret::clean(&r.reason))),
                (
                    "raw_json",
                    Cell::Str(crate::config::secret::redact(&r.raw_json)),
                ),
                ("run_id", Cell::Str(ctx.run_id.to_string())),
                ("extracted_at", Cell::Micros(time::micros(now))),
            ];
            let mut row = Row::named(table, cells, time::micros(now))?;
            // The record as the API sent it, under the free-text policy.
            if let Some(p) = &ctx.pipeline.policy {
                p.apply(table, &mut row);
                let at = table.index_of("reason").unwrap_or(usize::MAX);
                if let Some(Cell::Str(reason)) = row.cells.get_mut(at) {
                    *reason = p.message(reason);
                }
            }
            Ok(row)
        })
        .collect::<Result<Vec<Row>>>()?;
    let batch = build_batch(table, ctx.run_id, &rows)?;
    let part = w.map_or("snapshot".to_string(), |w| w.from.to_string());
    let name = format!("{}-{}-{part}", ctx.run_id, spec.name);
    ctx.wh.append(table, ctx.today, &name, &batch).await
}

pub(super) async fn write_run_row(
    wh: &Warehouse,
    pipeline: &Pipeline,
    run_id: &str,
    rep: &StreamReport,
) -> Result<()> {
    let table = schema::table("meta.runs");
    let date =
        |d: Option<NaiveDate>| d.map_or(Cell::Null, |d| Cell::Date(Date32Type::from_naive_date(d)));
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
        ("suppressed", int(rep.suppressed)),
        ("retries", int(rep.traffic.retries)),
        ("requests", int(rep.traffic.requests)),
        ("throttled", int(rep.traffic.throttled)),
        (
            "throttle_wait_seconds",
            Cell::Float(rep.traffic.waited.as_secs_f64()),
        ),
        (
            "requests_per_second",
            Cell::Float(rep.requests_per_second()),
        ),
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
