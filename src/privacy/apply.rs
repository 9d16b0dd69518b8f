//! `chatlake privacy apply`: rewrites what is already in the warehouse
//! under the pipeline's current policy, without calling any API: after a
//! `[privacy]` section is added or made stricter, the partitions written
//! before it hold what the new policy removes. Every file of every table
//! with personal data (and meta.rejects) is read, each personal column
//! (and `_extra`) put through the policy, and the file replaced (one PUT)
//! only when something changed. Every action is idempotent (a hashed value
//! is not hashed again, redacted text has nothing left to redact), so a
//! run killed half-way is finished by running it again, and a second run
//! rewrites nothing. What a policy cannot undo stays: a hashed column is
//! not un-hashed by `keep`.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, StringArray};
use arrow::compute::concat_batches;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;

use super::{Action, Policy};
use crate::error::{Error, Result};
use crate::normalize::Cell;
use crate::schema::{self, TableDef, EXTRA};
use crate::sink::Warehouse;

/// What `privacy apply` did to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub table: String,
    /// Files read.
    pub files: u64,
    /// Files rewritten (or, in a dry run, that would be).
    pub rewritten: u64,
    /// Rows in the files rewritten.
    pub rows: u64,
}

/// Whether the policy changes anything in `table`.
fn touches(policy: &Policy, table: &TableDef) -> bool {
    policy.extra != Action::Keep
        || table
            .columns
            .iter()
            .any(|c| policy.action(&table.name, &c.name) != Action::Keep)
}

/// `batch` (a file of `table`) under the policy.
fn apply_batch(policy: &Policy, table: &TableDef, batch: &RecordBatch) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let name = field.name().as_str();
        let def = table.columns.iter().find(|c| c.name == name);
        let action = match def {
            Some(c) => policy.action(&table.name, &c.name),
            None if name == EXTRA => policy.extra,
            None => Action::Keep,
        };
        let is_reason = table.name == "meta.rejects" && name == "reason";
        if action == Action::Keep && !is_reason {
            columns.push(Arc::clone(column));
            continue;
        }
        if action == Action::Drop {
            columns.push(arrow::array::new_null_array(
                field.data_type(),
                column.len(),
            ));
            continue;
        }
        if field.data_type() != &DataType::Utf8 {
            columns.push(Arc::clone(column));
            continue;
        }
        let Some(values) = column.as_any().downcast_ref::<StringArray>() else {
            columns.push(Arc::clone(column));
            continue;
        };
        let kind = def.and_then(|c| c.personal);
        let mapped: StringArray = values
            .iter()
            .map(|v| {
                let v = v?;
                if is_reason {
                    return Some(policy.message(v));
                }
                if name == EXTRA {
                    return policy.free_json(v);
                }
                match policy.cell(kind, action, Cell::Str(v.to_string())) {
                    Cell::Str(s) => Some(s),
                    _ => None,
                }
            })
            .collect();
        columns.push(Arc::new(mapped));
    }
    RecordBatch::try_new(batch.schema(), columns).map_err(|e| Error::ArrowAt {
        context: format!("applying the privacy policy to {}", table.name),
        source: e,
    })
}

/// Rewrites every file the policy changes; with `dry_run`, only counts
/// them. The caller holds the pipeline's lock unless `dry_run`.
pub async fn apply(wh: &Warehouse, policy: &Policy, dry_run: bool) -> Result<Vec<Applied>> {
    let mut out = Vec::new();
    let mut done = 0;
    for table in schema::tables() {
        let personal = table.columns.iter().any(|c| c.personal.is_some());
        let data = table.schema_name() != "meta" || table.name == "meta.rejects";
        if !data || !(personal || policy.extra != Action::Keep) || !touches(policy, table) {
            continue;
        }
        let mut applied = Applied {
            table: table.name.clone(),
            files: 0,
            rewritten: 0,
            rows: 0,
        };
        for f in super::forget::files(wh, table).await? {
            applied.files += 1;
            let batches = wh.read_file(&f.path, None).await?;
            let Some(first) = batches.first() else {
                continue;
            };
            let schema = first.schema();
            let new = batches
                .iter()
                .map(|b| apply_batch(policy, table, b))
                .collect::<Result<Vec<_>>>()?;
            if new == batches {
                continue;
            }
            let batch = concat_batches(&schema, &new).map_err(|e| Error::ArrowAt {
                context: format!("rewriting {}", f.path),
                source: e,
            })?;
            applied.rewritten += 1;
            applied.rows += batch.num_rows() as u64;
            if !dry_run {
                wh.write_file(table, &f.path, &batch).await?;
                tracing::info!(table = %table.name, file = %f.path, rows = batch.num_rows(), "rewritten under the privacy policy");
                done += 1;
                // Tests kill it here (as kill -9 would) and run it again.
                crate::pipeline::failpoint(&format!("privacy-apply@file-{done}"));
            }
        }
        out.push(applied);
    }
    Ok(out)
}
