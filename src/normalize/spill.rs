//! Rows of a large read, spilled to disk so that memory does not grow with
//! the account: a Social25 conversation listing or a CRM array of a million
//! records is read whole, but held a few thousand rows at a time.
//!
//! A spilling [`super::TableBuffer`] moves its rows here every
//! [`SPILL_ROWS`] rows: one Arrow IPC file per spill (a "run", as in an
//! external sort) under a temporary directory that is removed when the buffer
//! is dropped, with one batch per partition. Each spilled row carries its
//! primary key in an extra column. Partitions are then rebuilt one at a time:
//! that partition's batches of every run, the rows still in memory, and only
//! the latest version of each key (a key seen again, in any partition, drops
//! the earlier row). Which partition holds a key's latest version is kept in
//! memory as a 128-bit hash of the key: 24 bytes a key instead of the row.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, StringArray, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;

use crate::error::{Error, Result};
use crate::schema::TableDef;

/// Rows held in memory before they are spilled (about 25 MB of rows at
/// the 1.6 KB a Social25 conversation takes).
pub const SPILL_ROWS: usize = 16_384;

/// [`SPILL_ROWS`], or `CHATLAKE_SPILL_ROWS` when set (the tests that kill
/// runs spill every few rows, so that small accounts take the spilled path).
pub fn spill_rows() -> usize {
    static ROWS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *ROWS.get_or_init(|| {
        std::env::var("CHATLAKE_SPILL_ROWS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(SPILL_ROWS)
    })
}

/// The extra column that carries each spilled row's primary key.
const KEY: &str = "__chatlake_key";

/// The spilled part of a buffer.
pub(super) struct Spill {
    /// Rows held in memory before a spill.
    every: usize,
    /// Created at the first spill (in the system's temporary directory);
    /// absorbed buffers add theirs. Removed on drop.
    dirs: Vec<tempfile::TempDir>,
    runs: Vec<PathBuf>,
    /// Partition -> (run, batch index within it), in spill order.
    parts: BTreeMap<Option<NaiveDate>, Vec<(usize, usize)>>,
    /// Key hash -> the partition of its latest version.
    latest: HashMap<u128, Option<NaiveDate>>,
}

/// A key's 128-bit hash: two SipHash-1-3 passes with different seeds.
/// A collision among a million keys has a chance of about 10^-27.
pub fn key_hash(key: &str) -> u128 {
    let half = |seed: u8| {
        let mut h = std::hash::DefaultHasher::new();
        seed.hash(&mut h);
        key.hash(&mut h);
        h.finish() as u128
    };
    (half(0) << 64) | half(1)
}

impl Spill {
    pub(super) fn new(every: usize) -> Self {
        Spill {
            every,
            dirs: Vec::new(),
            runs: Vec::new(),
            parts: BTreeMap::new(),
            latest: HashMap::new(),
        }
    }

    /// Spills into `dir` from now on (tests: a directory whose run file is a
    /// link to `/dev/full`).
    #[cfg(test)]
    pub(super) fn use_dir(&mut self, dir: tempfile::TempDir) {
        self.dirs.insert(0, dir);
    }

    /// The directories spilled into (tests look inside).
    #[cfg(test)]
    pub(super) fn dirs(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.path().to_path_buf()).collect()
    }

    /// Rows held in memory before a spill.
    pub(super) fn every(&self) -> usize {
        self.every
    }

    /// Records that `key`'s latest version is in partition `dt`.
    pub(super) fn saw(&mut self, key: &str, dt: Option<NaiveDate>) {
        self.latest.insert(key_hash(key), dt);
    }

    /// Adds `other`'s runs after this one's (its keys' versions win).
    pub(super) fn append(&mut self, other: Spill) {
        let offset = self.runs.len();
        self.runs.extend(other.runs);
        for (dt, batches) in other.parts {
            self.parts
                .entry(dt)
                .or_default()
                .extend(batches.into_iter().map(|(run, i)| (run + offset, i)));
        }
        // Theirs win. The larger map is kept and the smaller one added to
        // it: rebuilding a million keys would hold two maps at once.
        if self.latest.len() >= other.latest.len() {
            self.latest.extend(other.latest);
        } else {
            let mine = std::mem::replace(&mut self.latest, other.latest);
            for (key, dt) in mine {
                self.latest.entry(key).or_insert(dt);
            }
        }
        self.dirs.extend(other.dirs);
    }

    /// Distinct keys seen (spilled or not).
    pub(super) fn keys(&self) -> usize {
        self.latest.len()
    }

    /// Whether any row was spilled.
    pub(super) fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The partitions that have spilled rows.
    pub(super) fn partitions(&self) -> impl Iterator<Item = Option<NaiveDate>> + '_ {
        self.parts.keys().copied()
    }

    /// Writes one run: a batch per partition, each with its rows' keys.
    pub(super) fn write_run(
        &mut self,
        table: &TableDef,
        batches: Vec<(Option<NaiveDate>, RecordBatch, Vec<String>)>,
    ) -> Result<()> {
        if batches.is_empty() {
            return Ok(());
        }
        if self.dirs.is_empty() {
            let d =
                spill_dir().map_err(|e| spill_error(table, "creating a temporary directory", e))?;
            self.dirs.push(d);
        }
        let dir = self.dirs[0].path().to_path_buf();
        let path = dir.join(format!("run-{}.arrow", self.runs.len()));
        let schema = with_key(&table.file_schema());
        let file = private_file(&path)
            .map_err(|e| spill_error(table, &format!("creating {}", path.display()), e))?;
        let aerr = |e: arrow::error::ArrowError| {
            spill_error(table, &format!("writing {}", path.display()), e)
        };
        let mut w = FileWriter::try_new(std::io::BufWriter::new(file), &schema).map_err(aerr)?;
        let run = self.runs.len();
        // The run is known only once it is whole on disk: a write that
        // fails half-way (a full disk) leaves no entry pointing at it.
        let mut written = Vec::new();
        for (i, (dt, batch, keys)) in batches.into_iter().enumerate() {
            let mut columns = batch.columns().to_vec();
            columns.push(Arc::new(StringArray::from(keys)) as ArrayRef);
            let keyed = RecordBatch::try_new(Arc::clone(&schema), columns).map_err(aerr)?;
            w.write(&keyed).map_err(aerr)?;
            written.push((dt, i));
        }
        w.finish().map_err(aerr)?;
        w.into_inner()
            .map_err(aerr)?
            .into_inner()
            .map_err(|e| spill_error(table, &format!("writing {}", path.display()), e.error()))?
            .sync_data()
            .map_err(|e| spill_error(table, &format!("writing {}", path.display()), e))?;
        for (dt, i) in written {
            self.parts.entry(dt).or_default().push((run, i));
        }
        self.runs.push(path);
        Ok(())
    }

    /// Partition `dt`: its spilled batches, then `pending` (the rows still
    /// in memory, with their keys), keeping the latest version of each key
    /// whose latest version is in this partition. Unsorted.
    pub(super) fn partition(
        &self,
        table: &TableDef,
        dt: Option<NaiveDate>,
        pending: (RecordBatch, Vec<String>),
    ) -> Result<RecordBatch> {
        let schema = with_key(&table.file_schema());
        let mut batches = Vec::new();
        let mut readers: HashMap<usize, FileReader<std::io::BufReader<std::fs::File>>> =
            HashMap::new();
        for &(run, i) in self.parts.get(&dt).into_iter().flatten() {
            let path = self.runs.get(run).ok_or_else(|| {
                spill_error(
                    table,
                    "rebuilding a partition",
                    format!("spill run {run} is missing"),
                )
            })?;
            let aerr = |e: arrow::error::ArrowError| {
                spill_error(table, &format!("reading {}", path.display()), e)
            };
            let reader = match readers.entry(run) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    let f = std::fs::File::open(path).map_err(|e| {
                        spill_error(table, &format!("opening {}", path.display()), e)
                    })?;
                    v.insert(FileReader::try_new(std::io::BufReader::new(f), None).map_err(aerr)?)
                }
            };
            reader.set_index(i).map_err(aerr)?;
            match reader.next() {
                Some(b) => batches.push(b.map_err(aerr)?),
                None => {
                    return Err(spill_error(
                        table,
                        &format!("reading {}", path.display()),
                        "a spilled batch is missing",
                    ))
                }
            }
        }
        let (rows, keys) = pending;
        let mut columns = rows.columns().to_vec();
        columns.push(Arc::new(StringArray::from(keys)) as ArrayRef);
        let aerr = |e| spill_error(table, "rebuilding a partition", e);
        batches.push(RecordBatch::try_new(Arc::clone(&schema), columns).map_err(aerr)?);
        let all = concat_batches(&schema, &batches).map_err(aerr)?;
        drop(batches);
        let keys = all
            .column(all.num_columns() - 1)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| Error::Internal("spilled key column is not text".into()))?;
        // The last row of each key, if the key's latest version is here.
        let mut last: HashMap<&str, u32> = HashMap::new();
        for i in 0..keys.len() {
            let k = keys.value(i);
            if self.latest.get(&key_hash(k)) == Some(&dt) {
                last.insert(k, i as u32);
            }
        }
        let mut keep: Vec<u32> = last.into_values().collect();
        keep.sort_unstable();
        let kept = take_record_batch(&all, &UInt32Array::from(keep)).map_err(aerr)?;
        let n = kept.num_columns() - 1;
        kept.project(&(0..n).collect::<Vec<_>>()).map_err(aerr)
    }
}

/// The name every spill directory starts with, followed by the process id
/// of the run that made it (so that a later run can tell it is stale).
const DIR_PREFIX: &str = "chatlake-spill-";

/// A new spill directory in the system's temporary directory, readable by
/// this user only (it holds the rows of personal data being written).
fn spill_dir() -> std::io::Result<tempfile::TempDir> {
    let mut b = tempfile::Builder::new();
    let prefix = format!("{DIR_PREFIX}{}-", std::process::id());
    b.prefix(&prefix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(0o700));
    }
    b.tempdir()
}

/// Creates `path` for writing, readable by this user only.
fn private_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    // The directory is this user's only (0700), so nobody else can have
    // put a link here.
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

/// Removes the spill directories left in the temporary directory by runs
/// that were killed (their process is gone): they hold rows of personal
/// data and are otherwise never removed. Directories of live processes, and
/// anything that is not a spill directory, are left alone. Returns how many
/// were removed.
pub fn sweep_stale() -> usize {
    sweep_stale_in(&std::env::temp_dir(), |pid| {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    })
}

fn sweep_stale_in(tmp: &std::path::Path, alive: impl Fn(u32) -> bool) -> usize {
    // Without /proc there is no telling a live run from a dead one.
    if !std::path::Path::new("/proc/self").exists() {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        // `<pid>-<random>`; older chatlakes wrote `<random>` only: those are
        // removed once a day old.
        let stale = match rest
            .split_once('-')
            .and_then(|(p, _)| p.parse::<u32>().ok())
        {
            Some(pid) => !alive(pid),
            None => e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(86_400)),
        };
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        if stale && is_dir && std::fs::remove_dir_all(e.path()).is_ok() {
            tracing::info!(dir = %e.path().display(), "removed the spill directory of a run that ended without cleaning up");
            removed += 1;
        }
    }
    removed
}

/// The file schema plus the key column.
fn with_key(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(KEY, DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

fn spill_error(table: &TableDef, doing: &str, e: impl std::fmt::Display) -> Error {
    Error::Normalize {
        table: table.name.clone(),
        column: "*".into(),
        message: format!("spilling rows to disk: {doing}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn spill_directories_are_private_and_stale_ones_are_swept() {
        use std::os::unix::fs::PermissionsExt;
        let d = spill_dir().unwrap();
        assert_eq!(
            d.path().metadata().unwrap().permissions().mode() & 0o777,
            0o700
        );
        let f = d.path().join("run-0.arrow");
        private_file(&f).unwrap();
        assert_eq!(f.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        let name = d.path().file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with(&format!("chatlake-spill-{}-", std::process::id())),
            "{name}"
        );

        let tmp = tempfile::tempdir().unwrap();
        for n in [
            "chatlake-spill-4000000-aa",
            "chatlake-spill-77-bb",
            "chatlake-spill-old",
            "other-4000000-x",
        ] {
            std::fs::create_dir(tmp.path().join(n)).unwrap();
            std::fs::write(tmp.path().join(n).join("run-0.arrow"), "rows").unwrap();
        }
        // A file with the prefix is not a directory of ours.
        std::fs::write(tmp.path().join("chatlake-spill-4000001-f"), "x").unwrap();
        let removed = sweep_stale_in(tmp.path(), |pid| pid == 77);
        assert_eq!(removed, 1);
        let mut left: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "chatlake-spill-4000001-f",
                "chatlake-spill-77-bb",
                "chatlake-spill-old",
                "other-4000000-x"
            ]
        );
    }
}
