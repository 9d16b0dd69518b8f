//! The table registry: `schemas/**/*.toml`, compiled in, parsed into
//! [`TableDef`]s with their Arrow schemas. The one definition of every
//! table's columns, key, partitioning and sort order.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::Deserialize;

/// Name of the Hive partition column.
pub const DT: &str = "dt";
/// Standard column: when the record was fetched.
pub const EXTRACTED_AT: &str = "_extracted_at";
/// Standard column: the run that wrote it.
pub const RUN_ID: &str = "_run_id";
/// Standard column: JSON of fields the schema does not know.
pub const EXTRA: &str = "_extra";

mod registry {
    include!(concat!(env!("OUT_DIR"), "/registry.rs"));
}

/// Every schema file, found in `schemas/` by build.rs: (path, contents).
pub use registry::SCHEMA_FILES as FILES;
/// Every view file, found in `sql/` by build.rs: (file name, SQL).
pub use registry::VIEW_FILES;

/// Column types a schema file may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ColumnType {
    #[serde(rename = "string")]
    String,
    #[serde(rename = "int64")]
    Int64,
    #[serde(rename = "float64")]
    Float64,
    #[serde(rename = "bool")]
    Bool,
    /// Timestamp(Microsecond, "UTC").
    #[serde(rename = "timestamp")]
    Timestamp,
    /// Date32.
    #[serde(rename = "date")]
    Date,
    /// List<Utf8>.
    #[serde(rename = "list<string>")]
    ListString,
}

impl ColumnType {
    /// The Arrow type stored in Parquet.
    pub fn arrow(self) -> DataType {
        match self {
            ColumnType::String => DataType::Utf8,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Bool => DataType::Boolean,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ColumnType::Date => DataType::Date32,
            ColumnType::ListString => {
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
            }
        }
    }
}

/// The kind of personal data a column holds (`personal = "..."` in its
/// schema file); the `[privacy]` policy of a pipeline says what happens to
/// each kind. `_extra` of every table counts as [`Personal::FreeText`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Personal {
    /// An email address of a customer.
    Email,
    /// A phone number of a customer.
    Phone,
    /// A customer's name (or a chat nickname).
    Name,
    /// An IP address.
    Ip,
    /// A city, region or country.
    Location,
    /// A browser's user agent.
    Device,
    /// A page or referrer URL (its query string may carry identifiers).
    Url,
    /// Text a person wrote (messages, transcripts, notes) or raw JSON.
    FreeText,
    /// An id that stands for one person (a visitor, contact or user id):
    /// kept, and what `forget` searches by.
    PersonId,
    /// A name or email of the support team itself (agents, users).
    Staff,
}

impl Personal {
    /// The kinds a `[privacy]` section sets a policy for (a person id is
    /// kept: it is what finds one person).
    pub const CONFIGURABLE: [Personal; 9] = [
        Personal::Email,
        Personal::Phone,
        Personal::Name,
        Personal::Ip,
        Personal::Location,
        Personal::Device,
        Personal::Url,
        Personal::FreeText,
        Personal::Staff,
    ];

    /// The name used in schema files and `[privacy]`.
    pub fn as_str(self) -> &'static str {
        match self {
            Personal::Email => "email",
            Personal::Phone => "phone",
            Personal::Name => "name",
            Personal::Ip => "ip",
            Personal::Location => "location",
            Personal::Device => "device",
            Personal::Url => "url",
            Personal::FreeText => "free_text",
            Personal::PersonId => "person_id",
            Personal::Staff => "staff",
        }
    }
}

/// One column of a schema file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnDef {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ColumnType,
    #[serde(default = "yes")]
    pub nullable: bool,
    pub doc: String,
    /// Changes on every read while the record itself does not (a duration
    /// up to now): not compared when a snapshot decides whether a partition
    /// changed, so an unchanged partition keeps its file and this value as
    /// of its `_extracted_at`.
    #[serde(default)]
    pub volatile: bool,
    /// The kind of personal data it holds, if any.
    #[serde(default)]
    pub personal: Option<Personal>,
}

fn yes() -> bool {
    true
}

/// One table, as its schema file defines it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableDef {
    /// `<schema>.<table>`.
    #[serde(rename = "table")]
    pub name: String,
    pub description: String,
    pub primary_key: Vec<String>,
    /// Column whose local date is `dt`; `"parent"` when the dt comes from the
    /// parent record (chat messages live with their chat); none: unpartitioned.
    #[serde(default)]
    pub partition_by: Option<String>,
    #[serde(default)]
    pub sort_by: Vec<String>,
    pub columns: Vec<ColumnDef>,
    #[serde(skip)]
    file_schema: Option<SchemaRef>,
    /// Column name -> index, once the registry has checked the table.
    #[serde(skip)]
    positions: foldhash::HashMap<String, usize>,
}

impl TableDef {
    /// `socialintents` of `socialintents.chats`.
    pub fn schema_name(&self) -> &str {
        self.name.split_once('.').map(|(s, _)| s).unwrap_or("")
    }
    /// `chats` of `socialintents.chats`.
    pub fn table_name(&self) -> &str {
        self.name
            .split_once('.')
            .map(|(_, t)| t)
            .unwrap_or(&self.name)
    }
    /// Whether rows live under `dt=YYYY-MM-DD/`.
    pub fn is_partitioned(&self) -> bool {
        self.partition_by.is_some()
    }
    /// Whether a column is left out when comparing a partition with its
    /// stored rows: `_extracted_at`, `_run_id` and columns marked `volatile`.
    pub fn is_volatile(&self, column: &str) -> bool {
        column == EXTRACTED_AT
            || column == RUN_ID
            || self
                .index_of(column)
                .is_some_and(|i| self.columns[i].volatile)
    }
    /// The columns holding personal data, with their kind (`_extra`, free
    /// text in every table, is not listed).
    pub fn personal_columns(&self) -> impl Iterator<Item = (&str, Personal)> + '_ {
        self.columns
            .iter()
            .filter_map(|c| c.personal.map(|p| (c.name.as_str(), p)))
    }
    /// Index of a column among [`TableDef::columns`].
    pub fn index_of(&self, column: &str) -> Option<usize> {
        if self.positions.is_empty() {
            self.columns.iter().position(|c| c.name == column)
        } else {
            self.positions.get(column).copied()
        }
    }
    /// The schema inside each Parquet file: the columns, then `_extracted_at`,
    /// `_run_id`, `_extra` (no `dt`: it is the directory name).
    pub fn file_schema(&self) -> SchemaRef {
        self.file_schema
            .clone()
            .expect("registry builds file_schema")
    }
    /// The schema a query sees: the file schema plus `dt` (Date32) when partitioned.
    pub fn table_schema(&self) -> SchemaRef {
        let mut fields: Vec<Field> = self
            .file_schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        if self.is_partitioned() {
            fields.push(Field::new(DT, DataType::Date32, false));
        }
        Arc::new(Schema::new(fields))
    }

    fn build(mut self, file: &str) -> Result<TableDef, String> {
        if !self.name.contains('.') {
            return Err(format!(
                "schemas/{file}: table `{}` must be <schema>.<table>",
                self.name
            ));
        }
        let known = |c: &String| self.index_of(c).is_some();
        for c in self.primary_key.iter().chain(&self.sort_by) {
            if !known(c) {
                return Err(format!(
                    "schemas/{file}: unknown column `{c}` in primary_key/sort_by"
                ));
            }
        }
        if let Some(p) = &self.partition_by {
            let ok = p == "parent"
                || self
                    .index_of(p)
                    .is_some_and(|i| self.columns[i].ty == ColumnType::Timestamp);
            if !ok {
                return Err(format!(
                    "schemas/{file}: partition_by `{p}` must be a timestamp column or \"parent\""
                ));
            }
        }
        let mut fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| Field::new(&c.name, c.ty.arrow(), c.nullable))
            .collect();
        fields.push(Field::new(
            EXTRACTED_AT,
            ColumnType::Timestamp.arrow(),
            false,
        ));
        fields.push(Field::new(RUN_ID, DataType::Utf8, false));
        fields.push(Field::new(EXTRA, DataType::Utf8, true));
        self.file_schema = Some(Arc::new(Schema::new(fields)));
        self.positions = (self.columns.iter().enumerate())
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        Ok(self)
    }
}

fn registry() -> &'static BTreeMap<String, TableDef> {
    static REGISTRY: OnceLock<BTreeMap<String, TableDef>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        FILES
            .iter()
            .map(|(file, text)| {
                // The files are compiled in and checked by the unit test below,
                // so a bad one cannot reach a user.
                let def: TableDef = toml::from_str(text)
                    .map_err(|e| format!("schemas/{file}: {e}"))
                    .and_then(|d: TableDef| d.build(file))
                    .unwrap_or_else(|e| panic!("{e}"));
                (def.name.clone(), def)
            })
            .collect()
    })
}

/// The table named `schema.table`. Panics on a name that is not in `schemas/`
/// (names come from code, never from data).
pub fn table(name: &str) -> &'static TableDef {
    registry()
        .get(name)
        .unwrap_or_else(|| panic!("no schema file defines table {name}"))
}

/// Every table, sorted by name.
pub fn tables() -> impl Iterator<Item = &'static TableDef> {
    registry().values()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file in schemas/ and sql/ is registered (read from disk here,
    /// independently of build.rs).
    #[test]
    fn every_file_in_schemas_and_sql_is_registered() {
        fn walk(dir: &std::path::Path, base: &std::path::Path, ext: &str, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, base, ext, out);
                } else if p.extension().is_some_and(|x| x == ext) {
                    out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for (dir, ext, registered) in [("schemas", "toml", FILES), ("sql", "sql", VIEW_FILES)] {
            let mut on_disk = Vec::new();
            walk(&root.join(dir), &root.join(dir), ext, &mut on_disk);
            on_disk.sort();
            let names: Vec<String> = registered.iter().map(|(n, _)| n.to_string()).collect();
            assert_eq!(names, on_disk, "{dir}/");
            assert!(!names.is_empty());
        }
        // Each schema file names the table its path says.
        for (path, _) in FILES {
            let t =
                tables().find(|t| format!("{}/{}.toml", t.schema_name(), t.table_name()) == *path);
            assert!(t.is_some(), "{path} does not define {path}'s table");
        }
    }

    /// The README's table of personal columns is the schemas' tags: every
    /// table with a tagged column has its row, listing exactly those
    /// columns by kind, and nothing else is listed.
    #[test]
    fn the_readme_lists_the_personal_columns_of_every_table() {
        let readme = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"),
        )
        .unwrap();
        let start = readme
            .find("<!-- personal-columns -->")
            .expect("README marks its table of personal columns");
        let end = readme.find("<!-- /personal-columns -->").unwrap();
        // `| table | kind: column, column; kind: column |` rows.
        let mut listed = std::collections::BTreeSet::new();
        for line in readme[start..end].lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            let table = cells[0].trim_matches('`');
            for part in cells[1].split(';').map(str::trim) {
                let (kind, cols) = part.split_once(':').unwrap_or_else(|| panic!("{line}"));
                for c in cols.split(',') {
                    listed.insert((
                        table.to_string(),
                        c.trim().trim_matches('`').to_string(),
                        kind.trim().to_string(),
                    ));
                }
            }
        }
        let tagged: std::collections::BTreeSet<(String, String, String)> = tables()
            .flat_map(|t| {
                t.personal_columns()
                    .map(|(c, p)| (t.name.clone(), c.to_string(), p.as_str().to_string()))
            })
            .collect();
        assert_eq!(listed, tagged);
        assert!(tagged.len() > 40, "{}", tagged.len());
    }

    #[test]
    fn every_schema_file_loads_and_documents_every_column() {
        assert_eq!(tables().count(), FILES.len());
        for t in tables() {
            assert!(!t.description.trim().is_empty(), "{}", t.name);
            for c in &t.columns {
                assert!(!c.doc.trim().is_empty(), "{}.{} has no doc", t.name, c.name);
            }
            let s = t.file_schema();
            // `dt` is the partition directory of a partitioned table, never a
            // column in its files (an unpartitioned table may have a `dt` column).
            assert!(s.field_with_name(EXTRA).is_ok());
            assert!(
                !t.is_partitioned() || s.field_with_name(DT).is_err(),
                "{}",
                t.name
            );
            assert_eq!(
                t.table_schema().field_with_name(DT).is_ok(),
                t.is_partitioned() || t.index_of(DT).is_some()
            );
        }
    }
}
