//! [`TableBuffer`]: one window's rows of one table, one per primary key
//! (the last pushed wins), grouped by `dt` partition, with child rows
//! replaced along with their parent; the personal-data policy and the
//! erasure list applied as rows arrive; a spilling buffer keeps its rows on
//! disk ([`super::spill`]). Also the sort and the Arrow batch built from rows.

use std::collections::BTreeMap;

// Keys come from the API: foldhash's seeds are random per process, as
// hashbrown's own default.
use foldhash::{HashMap, HashMapExt};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, ListBuilder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;

use super::{spill, Cell, Row};
use crate::error::{Error, Result};
use crate::schema::{ColumnType, TableDef};

/// One window's rows of one table: one row per primary key, by partition.
pub struct TableBuffer {
    table: &'static TableDef,
    run_id: String,
    partitions: BTreeMap<Option<NaiveDate>, Vec<Option<Row>>>,
    index: HashMap<String, (Option<NaiveDate>, usize)>,
    /// Child tables: parent key -> the keys of the rows pushed with it.
    children: HashMap<String, Vec<String>>,
    /// Rows moved to disk (a spilling buffer only).
    pub(super) spill: Option<spill::Spill>,
    /// A spill that failed; reported when the rows are taken.
    spill_failed: Option<Error>,
    /// Applied to every row before it is held (so spills hold no more
    /// than the warehouse will).
    policy: Option<Arc<crate::privacy::Policy>>,
    /// Drops the rows of people `forget` erased (before the policy: it
    /// finds them by their identifiers as the API sends them).
    suppressor: Option<Arc<crate::privacy::suppress::Suppressor>>,
    /// Rows dropped by the suppressor.
    suppressed: u64,
}

impl TableBuffer {
    /// An empty buffer for `table`; rows will carry `run_id`.
    pub fn new(table: &'static TableDef, run_id: &str) -> Self {
        TableBuffer {
            table,
            run_id: run_id.to_string(),
            partitions: BTreeMap::new(),
            index: HashMap::new(),
            children: HashMap::new(),
            spill: None,
            spill_failed: None,
            policy: None,
            suppressor: None,
            suppressed: 0,
        }
    }

    /// The buffer, applying `policy` (if any) to every row pushed.
    pub fn with_policy(mut self, policy: &Option<Arc<crate::privacy::Policy>>) -> Self {
        self.policy = policy.clone();
        self.suppressor = policy.as_ref().and_then(|p| p.suppressor());
        self
    }

    /// An empty buffer that moves its rows to a temporary file every
    /// [`spill_rows`] rows, for reads whose size is the whole account (no
    /// parent/child families).
    pub fn spilling(table: &'static TableDef, run_id: &str) -> Self {
        Self::spilling_every(table, run_id, spill::spill_rows())
    }

    /// A spilling buffer that spills every `rows` rows.
    pub(super) fn spilling_every(table: &'static TableDef, run_id: &str, rows: usize) -> Self {
        TableBuffer {
            spill: Some(spill::Spill::new(rows)),
            ..TableBuffer::new(table, run_id)
        }
    }

    /// The table this buffer fills.
    pub fn table(&self) -> &'static TableDef {
        self.table
    }

    /// Adds a row to partition `dt` (None: unpartitioned). A row with the same
    /// primary key replaces the earlier one, wherever that one was.
    pub fn push(&mut self, dt: Option<NaiveDate>, row: Row) {
        self.push_key(dt, row);
    }

    /// Rows dropped because they belong to a person `forget` erased.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }

    /// [`TableBuffer::push`], returning the row's key (None: the row is
    /// a suppressed person's, and dropped).
    fn push_key(&mut self, dt: Option<NaiveDate>, mut row: Row) -> Option<String> {
        if self
            .suppressor
            .as_ref()
            .is_some_and(|s| s.row(self.table, &row))
        {
            self.suppressed += 1;
            return None;
        }
        if let Some(p) = &self.policy {
            p.apply(self.table, &mut row);
        }
        let key = key_of(self.table, &row);
        if let Some((old_dt, i)) = self.index.get(&key).copied() {
            self.partitions.get_mut(&old_dt).expect("indexed partition")[i] = None;
        }
        let rows = self.partitions.entry(dt).or_default();
        rows.push(Some(row));
        self.index.insert(key.clone(), (dt, rows.len() - 1));
        if let Some(spill) = &mut self.spill {
            spill.saw(&key, dt);
            if self.index.len() >= spill.every() && self.spill_failed.is_none() {
                if let Err(e) = self.spill_rows() {
                    self.spill_failed = Some(e);
                }
            }
        }
        Some(key)
    }

    /// Takes in every row of `other` (both spilling buffers), as if pushed
    /// here after this buffer's rows: a key in both keeps `other`'s version.
    pub fn absorb(&mut self, mut other: TableBuffer) {
        for failed in [self.spill_rows(), other.spill_rows()] {
            if let Err(e) = failed {
                self.spill_failed.get_or_insert(e);
            }
        }
        if let Some(e) = other.spill_failed.take() {
            self.spill_failed.get_or_insert(e);
        }
        self.suppressed += other.suppressed;
        for dt in other.partitions.keys() {
            self.partitions.entry(*dt).or_default();
        }
        match (&mut self.spill, other.spill) {
            (Some(mine), Some(theirs)) => mine.append(theirs),
            _ => debug_assert!(false, "absorb is for spilling buffers"),
        }
    }

    /// Moves the rows held in memory to a new spill run (the partitions
    /// stay known, so that touched partitions are still written).
    fn spill_rows(&mut self) -> Result<()> {
        let mut batches = Vec::new();
        for (dt, slots) in self.partitions.iter_mut() {
            let rows: Vec<Row> = std::mem::take(slots).into_iter().flatten().collect();
            if rows.is_empty() {
                continue;
            }
            let keys = rows.iter().map(|r| key_of(self.table, r)).collect();
            batches.push((*dt, build_batch(self.table, &self.run_id, &rows)?, keys));
        }
        self.index.clear();
        match self.spill.as_mut() {
            Some(spill) => spill.write_run(self.table, batches),
            None => Err(Error::Internal(
                "spilling rows of a buffer that does not spill".into(),
            )),
        }
    }

    /// Adds a parent row to this buffer and its child rows to `child`. When
    /// the parent's key was pushed before (the same chat twice in a page),
    /// the children pushed with the earlier version are dropped: a replaced
    /// parent takes its children with it.
    pub fn push_family(
        &mut self,
        child: &mut TableBuffer,
        dt: Option<NaiveDate>,
        parent: Row,
        children: Vec<Row>,
    ) {
        debug_assert!(
            self.spill.is_none() && child.spill.is_none(),
            "families are not spilled"
        );
        let Some(key) = self.push_key(dt, parent) else {
            // A suppressed person's chat: its messages go with it.
            child.suppressed += children.len() as u64;
            return;
        };
        // By key, not by scanning the index: a window holds ~100k children.
        for ckey in child.children.remove(&key).unwrap_or_default() {
            if let Some((cdt, i)) = child.index.remove(&ckey) {
                if let Some(slot) = child.partitions.get_mut(&cdt).and_then(|r| r.get_mut(i)) {
                    *slot = None;
                }
            }
        }
        let keys = children
            .into_iter()
            .filter_map(|row| child.push_key(dt, row))
            .collect();
        child.children.insert(key, keys);
    }

    /// Distinct rows held (in memory and spilled).
    pub fn len(&self) -> usize {
        match &self.spill {
            Some(s) => s.keys(),
            None => self.index.len(),
        }
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes sure partition `dt` exists (written, even if empty, so that a
    /// re-run over a day that lost its rows at the source clears it).
    pub fn touch(&mut self, dt: Option<NaiveDate>) {
        self.partitions.entry(dt).or_default();
    }

    /// Drains the buffer into one sorted RecordBatch per partition.
    pub fn into_batches(self) -> Result<Vec<(Option<NaiveDate>, RecordBatch)>> {
        self.into_partitions().collect()
    }

    /// Drains the buffer one partition at a time (each built when asked
    /// for, so a spilled buffer holds one partition in memory at a time),
    /// as sorted RecordBatches.
    pub fn into_partitions(
        self,
    ) -> impl Iterator<Item = Result<(Option<NaiveDate>, RecordBatch)>> + Send {
        let TableBuffer {
            table,
            run_id,
            mut partitions,
            spill,
            spill_failed,
            ..
        } = self;
        let spill = spill.filter(|s| !s.is_empty());
        if let Some(spill) = &spill {
            for dt in spill.partitions() {
                partitions.entry(dt).or_default();
            }
        }
        let failed = spill_failed.map(Err).into_iter();
        let built = partitions.into_iter().map(move |(dt, rows)| {
            let mut rows: Vec<Row> = rows.into_iter().flatten().collect();
            let batch = match &spill {
                None => {
                    sort_rows(table, &mut rows);
                    build_batch(table, &run_id, &rows)?
                }
                Some(spill) => {
                    let keys = rows.iter().map(|r| key_of(table, r)).collect();
                    let pending = build_batch(table, &run_id, &rows)?;
                    drop(rows);
                    let all = spill.partition(table, dt, (pending, keys))?;
                    sort_batch(table, &all).map_err(|e| Error::Normalize {
                        table: table.name.clone(),
                        column: table.sort_by.join(", "),
                        message: format!("sorting partition {dt:?}: {e}"),
                    })?
                }
            };
            Ok((dt, batch))
        });
        failed.chain(built)
    }
}

/// A row's primary key as one string (the parts joined by U+001E).
fn key_of(table: &TableDef, row: &Row) -> String {
    let part = |c: &String| row.cells[table.index_of(c).expect("validated pk")].key_part();
    let mut columns = table.primary_key.iter();
    let mut key = columns.next().map(part).unwrap_or_default();
    for c in columns {
        key.push('\u{1e}');
        key.push_str(&part(c));
    }
    key
}

/// Sorts a batch by the table's `sort_by` columns (nulls last), as
/// [`TableBuffer`] sorts its rows.
pub fn sort_batch(
    table: &TableDef,
    batch: &RecordBatch,
) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    use arrow::compute::{lexsort_to_indices, take_record_batch, SortColumn, SortOptions};
    if table.sort_by.is_empty() || batch.num_rows() < 2 {
        return Ok(batch.clone());
    }
    let columns: Vec<SortColumn> = table
        .sort_by
        .iter()
        .map(|c| SortColumn {
            values: Arc::clone(batch.column(table.index_of(c).expect("validated sort column"))),
            options: Some(SortOptions {
                descending: false,
                nulls_first: false,
            }),
        })
        .collect();
    let indices = lexsort_to_indices(&columns, None)?;
    take_record_batch(batch, &indices)
}

fn sort_rows(table: &TableDef, rows: &mut [Row]) {
    let idx: Vec<usize> = table
        .sort_by
        .iter()
        .map(|c| table.index_of(c).expect("validated"))
        .collect();
    rows.sort_by(|a, b| {
        idx.iter()
            .map(|&i| cmp_cells(&a.cells[i], &b.cells[i]))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
}

fn cmp_cells(a: &Cell, b: &Cell) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (a, b) {
        (Cell::Null, Cell::Null) => Equal,
        (Cell::Null, _) => Greater, // nulls last
        (_, Cell::Null) => Less,
        (Cell::Str(x), Cell::Str(y)) => x.cmp(y),
        (Cell::Int(x) | Cell::Micros(x), Cell::Int(y) | Cell::Micros(y)) => x.cmp(y),
        (Cell::Date(x), Cell::Date(y)) => x.cmp(y),
        (Cell::Float(x), Cell::Float(y)) => x.total_cmp(y),
        _ => a.key_part().cmp(&b.key_part()),
    }
}

/// Builds a RecordBatch with `table`'s file schema from rows.
pub fn build_batch(table: &TableDef, run_id: &str, rows: &[Row]) -> Result<RecordBatch> {
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(table.columns.len() + 3);
    for (i, col) in table.columns.iter().enumerate() {
        let wrong = |cell: &Cell| Error::Normalize {
            table: table.name.clone(),
            column: col.name.clone(),
            message: format!("value {cell:?} does not fit type {:?}", col.ty),
        };
        macro_rules! build {
            ($builder:expr, $pat:pat => $val:expr) => {{
                let mut b = $builder;
                for r in rows {
                    match &r.cells[i] {
                        Cell::Null => b.append_null(),
                        $pat => b.append_value($val),
                        other => return Err(wrong(other)),
                    }
                }
                Arc::new(b.finish()) as ArrayRef
            }};
        }
        let array = match col.ty {
            ColumnType::String => build!(StringBuilder::new(), Cell::Str(s) => s),
            ColumnType::Int64 => build!(Int64Builder::new(), Cell::Int(v) => *v),
            ColumnType::Float64 => build!(Float64Builder::new(), Cell::Float(v) => *v),
            ColumnType::Bool => build!(BooleanBuilder::new(), Cell::Bool(v) => *v),
            ColumnType::Timestamp => {
                build!(TimestampMicrosecondBuilder::new().with_timezone("UTC"), Cell::Micros(v) => *v)
            }
            ColumnType::Date => build!(Date32Builder::new(), Cell::Date(v) => *v),
            ColumnType::ListString => {
                let mut b = ListBuilder::new(StringBuilder::new());
                for r in rows {
                    match &r.cells[i] {
                        Cell::Null => b.append_null(),
                        Cell::List(items) => {
                            for s in items {
                                b.values().append_value(s);
                            }
                            b.append(true);
                        }
                        other => return Err(wrong(other)),
                    }
                }
                Arc::new(b.finish()) as ArrayRef
            }
        };
        arrays.push(array);
    }
    let mut extracted = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut run = StringBuilder::new();
    let mut extra = StringBuilder::new();
    for r in rows {
        extracted.append_value(r.extracted_at);
        run.append_value(run_id);
        extra.append_option(r.extra.as_deref());
    }
    arrays.push(Arc::new(extracted.finish()));
    arrays.push(Arc::new(run.finish()));
    arrays.push(Arc::new(extra.finish()));
    RecordBatch::try_new(table.file_schema(), arrays).map_err(|e| Error::Normalize {
        table: table.name.clone(),
        column: "*".into(),
        message: e.to_string(),
    })
}
