//! Every warehouse path is built here: `<root>/<schema>/<table>/dt=YYYY-MM-DD/<file>`
//! for data, and the control objects beside the tables: `_state/<pipeline>/<stream>.json`
//! (watermarks), `_locks/<pipeline>.json` (the run lock), `_schedule/<pipeline>.json`
//! (the scheduler's last slot) and `_runs/<pipeline>/<run id>.json` (runs in progress).
//! Segments go through `Path::child`, which percent-encodes anything that could
//! climb out of the prefix (`..`, `/`), so data can never pick a path.

use chrono::NaiveDate;
use object_store::path::Path;

use crate::schema::{TableDef, DT};

/// The one data file of a partition (or of an unpartitioned table). A single
/// file per partition means one PUT replaces it atomically.
pub const DATA_FILE: &str = "data.parquet";

/// `<root>/<schema>/<table>`.
pub fn table_dir(root: &Path, table: &TableDef) -> Path {
    root.clone()
        .join(table.schema_name())
        .join(table.table_name())
}

/// `<root>/<schema>/<table>/dt=YYYY-MM-DD` (or the table dir when `dt` is None).
pub fn partition_dir(root: &Path, table: &TableDef, dt: Option<NaiveDate>) -> Path {
    let dir = table_dir(root, table);
    match dt {
        Some(d) => dir.join(format!("{DT}={}", d.format("%Y-%m-%d"))),
        None => dir,
    }
}

/// The data file of a partition.
pub fn data_file(root: &Path, table: &TableDef, dt: Option<NaiveDate>) -> Path {
    partition_dir(root, table, dt).join(DATA_FILE)
}

/// The date of a `dt=YYYY-MM-DD` directory name.
pub fn parse_partition(segment: &str) -> Option<NaiveDate> {
    segment
        .strip_prefix(&format!("{DT}="))
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
}

/// The directory of a pipeline's stream states.
pub fn state_dir(root: &Path, pipeline: &str) -> Path {
    root.clone().join("_state").join(pipeline)
}

/// The state object of one stream.
pub fn state_file(root: &Path, pipeline: &str, stream: &str) -> Path {
    state_dir(root, pipeline).join(format!("{stream}.json"))
}

/// The stream a state object belongs to (None: not a stream state, e.g. the
/// `_schedule.json` that older versions kept there).
pub fn state_stream(file_name: &str) -> Option<&str> {
    file_name
        .strip_suffix(".json")
        .filter(|s| !s.starts_with('_'))
}

/// The fingerprint of the key a pipeline's hashes were made with
/// (`_`-prefixed: not a stream state).
pub fn privacy_file(root: &Path, pipeline: &str) -> Path {
    state_dir(root, pipeline).join("_privacy.json")
}

/// The suppression list of a pipeline: who `forget` erased (keyed hashes).
pub fn suppression_file(root: &Path, pipeline: &str) -> Path {
    state_dir(root, pipeline).join("_suppressed.json")
}

/// An erasure `forget` began and has not finished (resumed by the next `forget`).
pub fn erasure_journal(root: &Path, pipeline: &str) -> Path {
    state_dir(root, pipeline).join("_erasure.json")
}

/// The run lock of a pipeline.
pub fn lock_file(root: &Path, pipeline: &str) -> Path {
    root.clone().join("_locks").join(format!("{pipeline}.json"))
}

/// What the scheduler remembers of a pipeline (its last slot).
pub fn schedule_file(root: &Path, pipeline: &str) -> Path {
    root.clone()
        .join("_schedule")
        .join(format!("{pipeline}.json"))
}

/// Where versions before 0.2 kept the schedule record (read as a fallback).
pub fn legacy_schedule_file(root: &Path, pipeline: &str) -> Path {
    state_dir(root, pipeline).join("_schedule.json")
}

/// The directory of a pipeline's runs in progress.
pub fn runs_dir(root: &Path, pipeline: &str) -> Path {
    root.clone().join("_runs").join(pipeline)
}

/// The marker of a run in progress: written before its first stream,
/// deleted once every meta.runs row of the run is written.
pub fn run_marker(root: &Path, pipeline: &str, run_id: &str) -> Path {
    runs_dir(root, pipeline).join(format!("{run_id}.json"))
}

/// Tables written by [`append_file`] (one file per run and part) rather
/// than one [`DATA_FILE`] per partition.
pub const APPEND_TABLES: &[&str] = &[
    "meta.runs",
    "meta.rejects",
    "meta.deletions",
    "meta.erasures",
    "meta.alerts",
    "meta.deliveries",
];

/// The files of a table that readers take, as a glob of file names (readers
/// match it against the name alone, partition directories aside): only what
/// chatlake writes. A stray `copy.parquet`, a hidden `.x.parquet` or macOS
/// `._data.parquet` is never read (nor counted).
pub fn read_glob(table: &TableDef) -> &'static str {
    if APPEND_TABLES.contains(&table.name.as_str()) {
        // `<run id>-<part>.parquet`; run ids start `YYYYMMDDTHHMMSSZ-`.
        "[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z-*.parquet"
    } else {
        DATA_FILE
    }
}

/// A file of an append-only table (meta.*): unique per run and part, so
/// appends never overwrite each other.
pub fn append_file(root: &Path, table: &TableDef, dt: NaiveDate, name: &str) -> Path {
    partition_dir(root, table, Some(dt)).join(format!("{name}.parquet"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema;

    #[test]
    fn hive_layout_and_no_escape() {
        let root = Path::from("wh");
        let t = schema::table("socialintents.chats");
        let d = NaiveDate::from_ymd_opt(2025, 3, 9);
        assert_eq!(
            data_file(&root, t, d).as_ref(),
            "wh/socialintents/chats/dt=2025-03-09/data.parquet"
        );
        let evil = append_file(&root, schema::table("meta.runs"), d.unwrap(), "../../x");
        assert!(
            evil.as_ref().starts_with("wh/meta/runs/dt=2025-03-09/"),
            "{evil}"
        );
        assert_eq!(evil.parts().count(), 5);
    }
}
