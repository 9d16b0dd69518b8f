//! Stage 2: source records (JSON objects) -> rows of a table -> Arrow
//! RecordBatches with the table's schema.
//!
//! A source mapper moves each known field of a record into its column with a
//! [`Record`]; what is left of the object becomes `_extra`. A record that cannot
//! fill a non-null column becomes a [`Reject`] (meta.rejects), never a panic or
//! a silent drop. A [`TableBuffer`] holds one window's rows, one per primary key
//! (the last pushed wins), grouped by `dt` partition; a spilling one (for
//! reads that are whole accounts) keeps them on disk ([`spill`]).

mod buffer;
mod spill;
pub mod time;

pub use buffer::{build_batch, sort_batch, TableBuffer};
pub use spill::{key_hash, spill_rows, sweep_stale as sweep_stale_spills, SPILL_ROWS};

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::schema::TableDef;

/// One typed value.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Timestamp, microseconds since the epoch, UTC.
    Micros(i64),
    /// Days since the epoch.
    Date(i32),
    List(Vec<String>),
}

impl Cell {
    fn key_part(&self) -> String {
        match self {
            Cell::Null => String::new(),
            Cell::Str(s) => s.clone(),
            Cell::Int(v) | Cell::Micros(v) => v.to_string(),
            Cell::Date(v) => v.to_string(),
            Cell::Float(v) => v.to_string(),
            Cell::Bool(v) => v.to_string(),
            Cell::List(v) => v.join("\u{1f}"),
        }
    }
}

/// One row of a table, before it becomes Arrow columns.
#[derive(Debug, Clone)]
pub struct Row {
    /// One cell per column of [`TableDef::columns`].
    pub cells: Vec<Cell>,
    /// JSON object text of unknown fields, if any.
    pub extra: Option<String>,
    /// When the record was fetched (µs since the epoch).
    pub extracted_at: i64,
}

impl Row {
    /// A row of `table` from (column, value) pairs, placed by column name;
    /// columns not named are null. An unknown column is an error naming it.
    pub fn named(table: &TableDef, cells: Vec<(&str, Cell)>, extracted_at: i64) -> Result<Row> {
        let mut row = Row {
            cells: vec![Cell::Null; table.columns.len()],
            extra: None,
            extracted_at,
        };
        for (column, cell) in cells {
            let i = table.index_of(column).ok_or_else(|| Error::Normalize {
                table: table.name.clone(),
                column: column.to_string(),
                message: "no such column in the schema".into(),
            })?;
            row.cells[i] = cell;
        }
        Ok(row)
    }
}

/// A record that could not become a row.
#[derive(Debug, Clone)]
pub struct Reject {
    /// Table it was meant for.
    pub table: String,
    /// Why, naming the field.
    pub reason: String,
    /// The record as the API sent it.
    pub raw_json: String,
}

/// Builds one row from one JSON object, column by column.
pub struct Record<'a> {
    table: &'a TableDef,
    obj: Map<String, Value>,
    cells: Vec<Cell>,
    /// Fields whose value had the wrong type: kept verbatim in `_extra`.
    drifted: Map<String, Value>,
}

impl<'a> Record<'a> {
    /// Starts a row of `table` from `obj`.
    pub fn new(table: &'a TableDef, obj: Map<String, Value>) -> Self {
        Record {
            table,
            obj,
            cells: vec![Cell::Null; table.columns.len()],
            drifted: Map::new(),
        }
    }

    /// Removes `field` from the record (it is then known, not `_extra`).
    pub fn take(&mut self, field: &str) -> Option<Value> {
        self.obj.remove(field).filter(|v| !v.is_null())
    }

    /// A field's value, left in the record.
    pub fn peek(&self, field: &str) -> Option<&Value> {
        self.obj.get(field)
    }

    /// Whether `column` already has a value.
    pub fn has(&self, column: &str) -> bool {
        self.table
            .index_of(column)
            .is_some_and(|i| self.cells[i] != Cell::Null)
    }

    /// Puts a value in `column`.
    pub fn set(&mut self, column: &str, cell: Cell) {
        let i = self.table.index_of(column).unwrap_or_else(|| {
            panic!(
                "mapper for {} sets unknown column {column}",
                self.table.name
            )
        });
        self.cells[i] = cell;
    }

    /// Moves text field `field` into string column `column`. Numbers and
    /// booleans are written as text; an array or object is kept in `_extra`.
    pub fn string(&mut self, column: &str, field: &str) {
        match self.take(field) {
            None => {}
            Some(Value::String(s)) => self.set(column, Cell::Str(s)),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => {
                self.set(column, Cell::Str(v.to_string()))
            }
            Some(v) => self.drift(field, v),
        }
    }

    /// Moves integer field `field` into int64 column `column` (numeric text
    /// is accepted; anything else is kept in `_extra`).
    pub fn int(&mut self, column: &str, field: &str) {
        match self.take(field) {
            None => {}
            Some(v) => match as_i64(&v) {
                Some(n) => self.set(column, Cell::Int(n)),
                None => self.drift(field, v),
            },
        }
    }

    /// Moves numeric field `field` into float64 column `column` (numeric
    /// text is accepted; anything else is kept in `_extra`).
    pub fn float(&mut self, column: &str, field: &str) {
        match self.take(field) {
            None => {}
            Some(v) => match v
                .as_f64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            {
                Some(f) => self.set(column, Cell::Float(f)),
                None => self.drift(field, v),
            },
        }
    }

    /// Moves boolean field `field` into bool column `column`.
    pub fn boolean(&mut self, column: &str, field: &str) {
        match self.take(field) {
            None => {}
            Some(Value::Bool(b)) => self.set(column, Cell::Bool(b)),
            Some(Value::String(s)) if s == "true" || s == "false" => {
                self.set(column, Cell::Bool(s == "true"))
            }
            Some(v) => self.drift(field, v),
        }
    }

    /// Moves any field into string column `column` as text: a string as is,
    /// anything else (object, array, number) as its JSON text.
    pub fn text(&mut self, column: &str, field: &str) {
        match self.take(field) {
            None => {}
            Some(Value::String(s)) => self.set(column, Cell::Str(s)),
            Some(v) => self.set(column, Cell::Str(v.to_string())),
        }
    }

    /// Moves a list-of-strings field into a `list<string>` column; other
    /// shapes are kept in `_extra`.
    pub fn string_list(&mut self, column: &str, field: &str) {
        match self.take(field) {
            None => {}
            Some(Value::Array(items)) if items.iter().all(|i| i.is_string()) => {
                let items = items
                    .into_iter()
                    .filter_map(|i| i.as_str().map(str::to_string))
                    .collect();
                self.set(column, Cell::List(items))
            }
            Some(v) => self.drift(field, v),
        }
    }

    /// Moves an optional naive-UTC ISO time into timestamp column `column`;
    /// an unparseable value is kept in `_extra`.
    pub fn naive_utc(&mut self, column: &str, field: &str) {
        match self.take(field) {
            None => {}
            Some(Value::String(s)) => match time::parse_naive_utc(&s) {
                Ok(t) => self.set(column, Cell::Micros(time::micros(t))),
                Err(_) => self.drift(field, Value::String(s)),
            },
            Some(v) => self.drift(field, v),
        }
    }

    /// Removes a field that must never be stored (secrets), not even in `_extra`.
    pub fn discard(&mut self, field: &str) {
        self.obj.remove(field);
    }

    /// Takes a field that must be a string, for keys and times: an error
    /// (the record is rejected) when missing or of another type.
    pub fn required_str(&mut self, field: &str) -> Result<String, String> {
        match self.take(field) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(v) => Err(format!(
                "field `{field}` is {v}, expected a non-empty string"
            )),
            None => Err(format!("field `{field}` is missing")),
        }
    }

    fn drift(&mut self, field: &str, v: Value) {
        self.drifted.insert(field.to_string(), v);
    }

    /// Finishes the row; an error names the first non-null column left empty.
    pub fn finish(mut self, extracted_at: i64) -> Result<Row, String> {
        for (c, cell) in self.table.columns.iter().zip(&self.cells) {
            if !c.nullable && *cell == Cell::Null {
                return Err(format!("column `{}` has no value", c.name));
            }
        }
        self.obj.append(&mut self.drifted);
        let extra = (!self.obj.is_empty()).then(|| Value::Object(self.obj).to_string());
        Ok(Row {
            cells: self.cells,
            extra,
            extracted_at,
        })
    }
}

/// An integer from a JSON number or numeric string.
pub fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema;
    use chrono::NaiveDate;
    use serde_json::json;
    use std::sync::Arc;

    fn widget(id: &str, extra: Value) -> Map<String, Value> {
        let mut m = json!({"id": id, "name": format!("w{id}")})
            .as_object()
            .unwrap()
            .clone();
        if let Value::Object(e) = extra {
            m.extend(e);
        }
        m
    }

    fn row(obj: Map<String, Value>) -> Result<Row, String> {
        let t = schema::table("socialintents.widgets");
        let mut r = Record::new(t, obj);
        let id = r.required_str("id")?;
        r.set("widget_id", Cell::Str(id));
        r.string("name", "name");
        r.string("timezone", "timezone");
        r.finish(0)
    }

    #[test]
    fn unknown_and_drifted_fields_land_in_extra() {
        let r = row(widget(
            "1",
            json!({"color": "red", "timezone": {"nested": true}}),
        ))
        .unwrap();
        let extra: Value = serde_json::from_str(r.extra.as_deref().unwrap()).unwrap();
        assert_eq!(extra, json!({"color": "red", "timezone": {"nested": true}}));
        assert!(row(widget("2", json!({}))).unwrap().extra.is_none());
    }

    #[test]
    fn missing_key_is_a_reason_not_a_panic() {
        let mut obj = widget("1", json!({}));
        obj.remove("id");
        assert!(row(obj).unwrap_err().contains("`id`"));
    }

    #[test]
    fn buffer_keeps_the_last_version_of_a_key_even_across_partitions() {
        let t = schema::table("socialintents.widgets");
        let mut b = TableBuffer::new(t, "run1");
        let d1 = NaiveDate::from_ymd_opt(2025, 1, 1);
        let d2 = NaiveDate::from_ymd_opt(2025, 1, 2);
        b.push(d1, row(widget("1", json!({"name": "old"}))).unwrap());
        b.push(d1, row(widget("2", json!({}))).unwrap());
        b.push(d2, row(widget("1", json!({"name": "new"}))).unwrap());
        assert_eq!(b.len(), 2);
        let batches = b.into_batches().unwrap();
        let rows: usize = batches.iter().map(|(_, b)| b.num_rows()).sum();
        assert_eq!(rows, 2);
        assert_eq!(batches[1].1.num_rows(), 1);
    }

    /// Issue 24.2: a spill that fails half-way (a full disk) fails the
    /// buffer with the disk's error; it used to leave an index past the list
    /// of runs, and rebuilding the partitions panicked.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_full_disk_during_a_spill_is_an_error_not_a_panic() {
        let t = schema::table("socialintents.widgets");
        let mut b = TableBuffer::spilling_every(t, "run1", 16);
        let dir = tempfile::tempdir().unwrap();
        // Every write to the first run fails with ENOSPC.
        std::os::unix::fs::symlink("/dev/full", dir.path().join("run-0.arrow")).unwrap();
        b.spill.as_mut().unwrap().use_dir(dir);
        for i in 0..40 {
            let name = "x".repeat(2000);
            b.push(
                NaiveDate::from_ymd_opt(2025, 1, 1 + i % 3),
                row(widget(&i.to_string(), json!({ "name": name }))).unwrap(),
            );
        }
        let results: Vec<_> = b.into_partitions().collect();
        let e = results
            .iter()
            .find_map(|r| r.as_ref().err())
            .expect("the failed spill is reported");
        assert!(e.to_string().contains("No space left on device"), "{e}");
        assert!(e.to_string().contains("socialintents.widgets"), "{e}");
    }

    /// Issue 20: rows are spilled as the policy leaves them: the run files
    /// in the temporary directory hold the hashes, never the emails.
    #[test]
    fn spill_files_hold_only_what_the_policy_leaves() {
        let t = schema::table("socialintents.contacts");
        let cfg: crate::privacy::PrivacyConfig =
            toml::from_str("key = \"0123456789abcdef0123\"").unwrap();
        let policy = Some(Arc::new(cfg.policy().unwrap()));
        let mut b = TableBuffer::spilling_every(t, "run1", 4).with_policy(&policy);
        for i in 0..20 {
            let cells = vec![
                ("contact_id", Cell::Str(format!("c{i}"))),
                ("email", Cell::Str(format!("Person.{i}@Example.org"))),
                ("phone", Cell::Str(format!("+1 555 010 {i:04}"))),
                ("created_at", Cell::Micros(1_700_000_000_000_000)),
            ];
            b.push(None, Row::named(t, cells, 0).unwrap());
        }
        let dirs = b.spill.as_ref().unwrap().dirs();
        let mut bytes = Vec::new();
        for d in &dirs {
            for f in std::fs::read_dir(d).unwrap() {
                bytes.extend(std::fs::read(f.unwrap().path()).unwrap());
            }
        }
        assert!(bytes.len() > 1000, "{} bytes spilled", bytes.len());
        let text = String::from_utf8_lossy(&bytes).to_lowercase();
        assert!(
            !text.contains("@example.org") && !text.contains("555 010"),
            "plain values spilled"
        );
        let rows: usize = b
            .into_batches()
            .unwrap()
            .iter()
            .map(|(_, b)| b.num_rows())
            .sum();
        assert_eq!(rows, 20);
    }

    /// A spilling buffer gives exactly what a buffer in memory gives, for
    /// keys repeated within a run, across runs, across partitions and
    /// across absorbed buffers, with touched empty partitions kept.
    #[test]
    fn spilled_rows_come_back_as_the_in_memory_buffer_gives_them() {
        let t = schema::table("socialintents.widgets");
        let day = |n: u32| NaiveDate::from_ymd_opt(2025, 1, n);
        // (partition, id, name): 300 pushes over 40 ids, so most ids repeat,
        // some moving to another partition.
        let pushes: Vec<(Option<NaiveDate>, String, String)> = (0..300u32)
            .map(|i| {
                (
                    day(1 + (i / 40 + i * 7) % 5),
                    format!("{}", (i * 13) % 40),
                    format!("v{i}"),
                )
            })
            .collect();
        let push_all = |b: &mut TableBuffer, part: &[(Option<NaiveDate>, String, String)]| {
            for (dt, id, name) in part {
                b.push(*dt, row(widget(id, json!({ "name": name }))).unwrap());
            }
        };
        let mut memory = TableBuffer::new(t, "run1");
        push_all(&mut memory, &pushes);
        memory.touch(day(9));
        let a = memory.into_batches().unwrap();
        assert_eq!(a.len(), 6, "five partitions and the touched one");
        // Absorbed buffers with fewer keys than the first, as many, more.
        for split in [280, 150, 20] {
            let mut spilled = TableBuffer::spilling_every(t, "run1", 16);
            push_all(&mut spilled, &pushes[..split]);
            spilled.touch(day(9));
            let mut second = TableBuffer::spilling_every(t, "run1", 16);
            push_all(&mut second, &pushes[split..]);
            spilled.absorb(second);
            assert_eq!(spilled.len(), 40);
            let b = spilled.into_batches().unwrap();
            assert_eq!(
                a.iter().map(|(d, _)| *d).collect::<Vec<_>>(),
                b.iter().map(|(d, _)| *d).collect::<Vec<_>>()
            );
            for ((dt, x), (_, y)) in a.iter().zip(&b) {
                assert_eq!(x, y, "partition {dt:?}, split at {split}");
            }
        }
        assert_eq!(a.iter().map(|(_, b)| b.num_rows()).sum::<usize>(), 40);
    }
}
