//! Every warehouse path is built here: `<root>/<schema>/<table>/dt=YYYY-MM-DD/<file>`.
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
