//! Retention: each run deletes the partitions older than their table's
//! `[privacy] retention_days` (data tables, meta.rejects, and the notices
//! of meta.alerts and meta.deliveries, whose text can name a person), the
//! rows of
//! the unpartitioned CRM contacts not updated within it (by
//! their own date column, [`BY_COLUMN`]), and the dated copies of the HTML
//! report, and records each deletion in meta.deletions. A partition file is
//! removed with one DELETE, and a CRM file replaced with one PUT, so a
//! reader sees it whole or not at all. `run --dry-run` lists what would go
//! ([`expired`]).

use std::collections::BTreeMap;

use arrow::datatypes::Date32Type;
use chrono::{Duration, NaiveDate};
use futures::TryStreamExt;
use object_store::path::Path;

use crate::error::{Error, Result};
use crate::normalize::{build_batch, time, Cell, Row};
use crate::schema::{self, TableDef};
use crate::sink::{partition, Warehouse};

/// The name meta.deletions gives the dated report copies.
pub const REPORTS: &str = "_reports";

/// Unpartitioned tables whose rows a retention drops by their own date
/// column: a CRM contact not updated within the retention. (Companies are
/// not people: the reports by company need them.)
pub const BY_COLUMN: &[(&str, &str)] = &[("crm.contacts", "updated_at")];

/// The meta tables that hold what the API sent or what was said of a
/// person, so that a retention applies to them too.
const PERSONAL_META: &[&str] = &["meta.rejects", "meta.alerts", "meta.deliveries"];

/// Tables a retention may apply to: partitioned data tables, the
/// [`PERSONAL_META`] tables, and the tables of [`BY_COLUMN`].
fn retainable(t: &TableDef) -> bool {
    (t.is_partitioned() && (t.schema_name() != "meta" || PERSONAL_META.contains(&t.name.as_str())))
        || BY_COLUMN.iter().any(|(n, _)| *n == t.name)
}

/// The retention of every table: the per-table value, else the default.
/// An unknown, unpartitioned or meta table, or 0 days, is an error.
pub fn resolve(
    default: Option<u32>,
    per_table: &BTreeMap<String, u32>,
) -> std::result::Result<BTreeMap<String, u32>, String> {
    if default == Some(0) {
        return Err(
            "privacy.retention_days = 0: at least 1 (or leave it out: keep forever)".into(),
        );
    }
    let mut out = BTreeMap::new();
    for t in schema::tables().filter(|t| retainable(t)) {
        if let Some(d) = default {
            out.insert(t.name.clone(), d);
        }
    }
    for (name, days) in per_table {
        let t = schema::tables()
            .find(|t| t.name == *name)
            .ok_or_else(|| format!("privacy.retention.\"{name}\": no such table"))?;
        if !retainable(t) {
            return Err(format!(
                "privacy.retention.\"{name}\": only partitioned data tables, meta.rejects, meta.alerts, meta.deliveries and the CRM contacts have a retention \
                 ({name} is {})",
                if t.is_partitioned() { "chatlake's own record" } else { "unpartitioned" }
            ));
        }
        if *days == 0 {
            return Err(format!("privacy.retention.\"{name}\" = 0: at least 1"));
        }
        out.insert(name.clone(), *days);
    }
    Ok(out)
}

/// One partition (or report copy) past its retention.
#[derive(Debug, Clone)]
pub struct Expired {
    /// A table name, or [`REPORTS`].
    pub table: String,
    pub dt: NaiveDate,
    pub days: u32,
    pub files: Vec<Path>,
    /// Rows in its files (None for a report); for a table of
    /// [`BY_COLUMN`], the rows older than the retention.
    pub rows: Option<i64>,
    /// For a table of [`BY_COLUMN`]: its date column, and the first
    /// instant (µs) kept; its rows before it go, the others stay.
    pub rows_before: Option<(&'static str, i64)>,
}

/// The first local date a retention of `days` keeps on `today`.
pub fn first_kept(today: NaiveDate, days: u32) -> NaiveDate {
    today - Duration::days(i64::from(days) - 1)
}

/// What is past its retention on `today`, read from the warehouse's
/// listing and Parquet footers only (nothing is written).
pub async fn expired(
    wh: &Warehouse,
    policy: &super::Policy,
    today: NaiveDate,
    tz: chrono_tz::Tz,
    report_path: Option<&str>,
) -> Result<Vec<Expired>> {
    let mut out = Vec::new();
    for (name, days) in &policy.retention {
        let table = schema::table(name);
        let first = first_kept(today, *days);
        if let Some((_, column)) = BY_COLUMN.iter().find(|(n, _)| n == name) {
            let cutoff = time::micros(time::day_start(first, tz));
            let path = partition::data_file(wh.root(), table, None);
            let mut rows = 0;
            for b in wh.read_file(&path, Some(&[column])).await? {
                rows += older(&b, column, cutoff).true_count() as i64;
            }
            if rows > 0 {
                out.push(Expired {
                    table: name.clone(),
                    dt: first - Duration::days(1),
                    days: *days,
                    files: vec![path],
                    rows: Some(rows),
                    rows_before: Some((column, cutoff)),
                });
            }
            continue;
        }
        let dir = partition::table_dir(wh.root(), table);
        let mut by_dt: BTreeMap<NaiveDate, Vec<(Path, u64)>> = BTreeMap::new();
        let listed: Vec<_> = match wh.store().list(Some(&dir)).try_collect().await {
            Ok(l) => l,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(Error::store(&dir, e)),
        };
        for m in listed {
            let dt = m
                .location
                .parts()
                .find_map(|p| partition::parse_partition(p.as_ref()));
            if let Some(dt) = dt.filter(|d| *d < first) {
                by_dt.entry(dt).or_default().push((m.location, m.size));
            }
        }
        for (dt, files) in by_dt {
            let mut rows = 0;
            for (path, size) in &files {
                rows += parquet_rows(wh, path, *size).await.unwrap_or(0);
            }
            out.push(Expired {
                table: name.clone(),
                dt,
                days: *days,
                files: files.into_iter().map(|(p, _)| p).collect(),
                rows: Some(rows),
                rows_before: None,
            });
        }
    }
    if let (Some(days), Some(report)) = (policy.report_retention, report_path) {
        let first = first_kept(today, days);
        let mut segments: Vec<&str> = report.split('/').filter(|s| !s.is_empty()).collect();
        segments.pop();
        let dir = segments.iter().fold(wh.root().clone(), |p, s| p.join(*s));
        let listed = match wh.store().list_with_delimiter(Some(&dir)).await {
            Ok(l) => l.objects,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(Error::store(&dir, e)),
        };
        for m in listed {
            let dated = m
                .location
                .filename()
                .and_then(|f| f.strip_suffix(".html"))
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
            if let Some(dt) = dated.filter(|d| *d < first) {
                out.push(Expired {
                    table: REPORTS.into(),
                    dt,
                    days,
                    files: vec![m.location],
                    rows: None,
                    rows_before: None,
                });
            }
        }
    }
    Ok(out)
}

/// The rows of `batch` whose `column` (a timestamp) is before `cutoff` µs.
fn older(
    batch: &arrow::record_batch::RecordBatch,
    column: &str,
    cutoff: i64,
) -> arrow::array::BooleanArray {
    use arrow::array::{Array, TimestampMicrosecondArray};
    let Some(ts) = batch
        .column_by_name(column)
        .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
    else {
        return arrow::array::BooleanArray::from(vec![false; batch.num_rows()]);
    };
    ts.iter()
        .map(|v| Some(v.is_some_and(|v| v < cutoff)))
        .collect()
}

/// Rewrites the file of a [`BY_COLUMN`] table without its rows before the
/// cutoff (one PUT; deleted when none is left).
async fn drop_rows(wh: &Warehouse, e: &Expired, column: &str, cutoff: i64) -> Result<()> {
    let table = schema::table(&e.table);
    for path in &e.files {
        wh.remove_rows(table, path, |b| older(b, column, cutoff))
            .await?;
    }
    Ok(())
}

/// Rows in a Parquet file, from its footer (two range reads).
async fn parquet_rows(wh: &Warehouse, path: &Path, size: u64) -> Option<i64> {
    use object_store::ObjectStoreExt;
    if size < 12 {
        return None;
    }
    let tail = wh.store().get_range(path, size - 8..size).await.ok()?;
    let len = u64::from(u32::from_le_bytes(tail[..4].try_into().ok()?));
    if len + 8 > size {
        return None;
    }
    let meta = wh
        .store()
        .get_range(path, size - 8 - len..size - 8)
        .await
        .ok()?;
    let decoded = parquet::file::metadata::ParquetMetaDataReader::decode_metadata(&meta).ok()?;
    Some(decoded.file_metadata().num_rows())
}

/// Deletes what is past its retention and records it in meta.deletions.
/// Returns what was deleted.
pub async fn apply(
    wh: &Warehouse,
    pipeline: &str,
    run_id: &str,
    policy: &super::Policy,
    today: NaiveDate,
    tz: chrono_tz::Tz,
    report_path: Option<&str>,
) -> Result<Vec<Expired>> {
    let gone = expired(wh, policy, today, tz, report_path).await?;
    if gone.is_empty() {
        return Ok(gone);
    }
    use object_store::ObjectStoreExt;
    for e in &gone {
        if let Some((column, cutoff)) = e.rows_before {
            drop_rows(wh, e, column, cutoff).await?;
            tracing::info!(table = %e.table, rows = ?e.rows, days = e.days, "rows deleted past their retention");
            continue;
        }
        for f in &e.files {
            match wh.store().delete(f).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(err) => return Err(Error::store(f, err)),
            }
        }
        tracing::info!(table = %e.table, dt = %e.dt, rows = ?e.rows, days = e.days, "deleted past its retention");
    }
    let table = schema::table("meta.deletions");
    let now = time::micros(chrono::Utc::now());
    let rows = gone
        .iter()
        .map(|e| {
            let cells = vec![
                ("run_id", Cell::Str(run_id.to_string())),
                ("pipeline", Cell::Str(pipeline.to_string())),
                ("table_name", Cell::Str(e.table.clone())),
                (
                    "partition_dt",
                    Cell::Date(Date32Type::from_naive_date(e.dt)),
                ),
                ("rows", e.rows.map_or(Cell::Null, Cell::Int)),
                (
                    "reason",
                    Cell::Str(match e.rows_before {
                        Some((column, _)) => format!(
                            "retention ({} days): rows with {column} before {}",
                            e.days,
                            e.dt + Duration::days(1)
                        ),
                        None => format!("retention ({} days)", e.days),
                    }),
                ),
                ("deleted_at", Cell::Micros(now)),
            ];
            Row::named(table, cells, now)
        })
        .collect::<Result<Vec<_>>>()?;
    let batch = build_batch(table, run_id, &rows)?;
    wh.append(table, today, &format!("{run_id}-retention"), &batch)
        .await?;
    Ok(gone)
}
