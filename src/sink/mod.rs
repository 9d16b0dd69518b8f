//! Stage 3: RecordBatches -> Parquet files in the warehouse (local disk or S3
//! through object_store). A partition is one file, replaced by a single PUT
//! (multipart for large files), so readers see the old or the new partition,
//! never half of one, and a crash leaves no duplicate file. How the rows
//! are encoded (codecs, encodings, statistics) is in `encode.rs`.

mod encode;
pub mod partition;
pub mod readable;

use std::sync::Arc;

use std::collections::HashSet;

use arrow::array::{Array, BooleanArray, StringArray, TimestampMicrosecondArray};
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::async_writer::AsyncArrowWriter;
use parquet::arrow::ProjectionMask;
use tokio::io::AsyncWriteExt;
use url::Url;

use crate::error::{Error, Result};
use crate::normalize::{key_hash, sort_batch};
use crate::schema::TableDef;

/// Where the warehouse lives and how to reach it.
#[derive(Debug, Clone)]
pub struct Warehouse {
    store: Arc<dyn ObjectStore>,
    /// URL of the store's root, e.g. `file:///` or `s3://bucket` (for DataFusion).
    store_url: Url,
    /// The warehouse prefix inside the store.
    root: Path,
    /// What the user gave, for messages.
    display: String,
    /// S3 signs URLs that let anyone holding one GET an object for a while
    /// (the report's link in a message); None on local disk.
    signer: Option<Arc<dyn object_store::signer::Signer>>,
}

/// Refuses an S3 prefix whose segments an object store and the engines
/// would read differently: `.` and `..` (also percent-encoded, as `%2E`),
/// empty segments (`a//b`), backslashes and control characters. `run` wrote
/// `a/%2E%2E/b/` while `query` read `b/`.
fn check_prefix(prefix: &str) -> std::result::Result<(), String> {
    for seg in prefix.trim_matches('/').split('/') {
        let decoded = seg.replace("%2E", ".").replace("%2e", ".");
        let why = if seg.is_empty() && !prefix.trim_matches('/').is_empty() {
            Some("an empty segment (`//`)")
        } else if decoded == "." || decoded == ".." {
            Some("a `.` or `..` segment (also when percent-encoded)")
        } else if seg.contains('%') {
            Some("a percent-encoded character (write the character itself)")
        } else if seg.contains('\\') || seg.chars().any(char::is_control) {
            Some("a backslash or control character")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(format!(
                "the prefix holds {why}; name the prefix with plain segments"
            ));
        }
    }
    Ok(())
}

impl Warehouse {
    /// Opens a warehouse from a path, `file:///abs/path` or `s3://bucket/prefix`
    /// (or `s3a://`, Hadoop's spelling). A local directory is created if missing.
    pub fn open(location: &str) -> Result<Warehouse> {
        Self::open_with(location, true)
    }

    /// Opens a warehouse to read it: a local directory must already exist.
    pub fn open_existing(location: &str) -> Result<Warehouse> {
        Self::open_with(location, false)
    }

    /// Opens `s3://bucket/prefix` with the standard `AWS_*` environment plus
    /// `options` (object_store's S3 config keys, e.g. `aws_endpoint`), which win.
    pub fn open_s3_with(location: &str, options: &[(&str, &str)]) -> Result<Warehouse> {
        let fail = |m: String| Error::Usage(format!("warehouse `{location}`: {m}"));
        let Some(rest) = location.strip_prefix("s3://") else {
            return Err(fail("not an s3:// URL".into()));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(fail("no bucket in the URL".into()));
        }
        check_prefix(prefix).map_err(fail)?;
        let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
        for (k, v) in options {
            let key: object_store::aws::AmazonS3ConfigKey = k
                .parse()
                .map_err(|e: object_store::Error| fail(e.to_string()))?;
            builder = builder.with_config(key, *v);
        }
        let s3 = Arc::new(builder.build().map_err(|e| Error::store(location, e))?);
        Ok(Warehouse {
            signer: Some(s3.clone()),
            store: s3,
            store_url: Url::parse(&format!("s3://{bucket}")).map_err(|e| fail(e.to_string()))?,
            root: Path::from(prefix.trim_matches('/')),
            display: location.to_string(),
        })
    }

    fn open_with(location: &str, create: bool) -> Result<Warehouse> {
        let fail = |m: String| Error::Usage(format!("warehouse `{location}`: {m}"));
        if location.starts_with("s3://") {
            return Self::open_s3_with(location, &[]);
        }
        // Hadoop's name for the same bucket (Spark users copy s3a:// paths).
        if let Some(rest) = location.strip_prefix("s3a://") {
            return Self::open_s3_with(&format!("s3://{rest}"), &[]);
        }
        let local = match location.strip_prefix("file://") {
            Some(p) => std::path::PathBuf::from(p),
            None if location.contains("://") => {
                return Err(fail("use a path, file:// or s3://".into()))
            }
            None => std::path::PathBuf::from(location),
        };
        if create {
            std::fs::create_dir_all(&local)
                .map_err(|e| Error::io(format!("creating warehouse {location}"), e))?;
        } else if !local.is_dir() {
            return Err(fail(
                "no such directory (run a pipeline into it first)".into(),
            ));
        }
        let abs = std::fs::canonicalize(&local)
            .map_err(|e| Error::io(format!("warehouse {location}"), e))?;
        if let Some(c) = abs.to_string_lossy().chars().find(|c| c.is_control()) {
            return Err(fail(format!(
                "the path holds the control character {c:?}; move the warehouse to a plain path"
            )));
        }
        let root = Path::from_absolute_path(&abs).map_err(|e| Error::store(location, e.into()))?;
        Ok(Warehouse {
            signer: None,
            store: Arc::new(LocalFileSystem::new()),
            store_url: Url::parse("file:///").expect("static URL"),
            root,
            display: location.to_string(),
        })
    }

    /// Whether the warehouse is on local disk (atomic create-if-absent by the
    /// file system) rather than an object store.
    pub fn is_local(&self) -> bool {
        self.store_url.scheme() == "file"
    }

    /// The object store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }
    /// The URL DataFusion registers the store under.
    pub fn store_url(&self) -> &Url {
        &self.store_url
    }
    /// The warehouse prefix.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// A URL for a directory inside the warehouse (trailing slash included).
    /// A URL that GETs `path` without credentials until `expires` has
    /// passed (S3's presigned URL); None on local disk.
    pub async fn presigned_get(
        &self,
        path: &Path,
        expires: std::time::Duration,
    ) -> Result<Option<String>> {
        let Some(signer) = &self.signer else {
            return Ok(None);
        };
        signer
            .signed_url(reqwest::Method::GET, path, expires)
            .await
            .map(|u| Some(u.to_string()))
            .map_err(|e| Error::store(path, e))
    }

    /// The JSON document at `path`, or None when there is none (a state
    /// file not written yet).
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &Path) -> Result<Option<T>> {
        match self.store.get(path).await {
            Ok(got) => {
                let bytes = got.bytes().await.map_err(|e| Error::store(path, e))?;
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| Error::State {
                        path: path.to_string(),
                        message: format!("unreadable: {e}"),
                    })
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::store(path, e)),
        }
    }

    /// Writes `value` as JSON at `path` (one PUT: readers see old or new).
    pub async fn put_json<T: serde::Serialize>(&self, path: &Path, value: &T) -> Result<()> {
        let json = serde_json::to_vec_pretty(value).map_err(|e| Error::State {
            path: path.to_string(),
            message: format!("not serializable: {e}"),
        })?;
        self.store
            .put(path, json.into())
            .await
            .map(|_| ())
            .map_err(|e| Error::store(path, e))
    }

    pub fn url_of(&self, dir: &Path) -> String {
        let base = self.store_url.as_str().trim_end_matches('/');
        format!("{base}/{}/", dir.as_ref())
    }

    /// Replaces partition `dt` of `table` with `batch` (a single PUT); an
    /// empty batch removes the partition. Returns the rows written.
    pub async fn replace_partition(
        &self,
        table: &TableDef,
        dt: Option<NaiveDate>,
        batch: &RecordBatch,
    ) -> Result<usize> {
        let path = partition::data_file(&self.root, table, dt);
        if batch.num_rows() == 0 {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => return Ok(0),
                Err(e) => return Err(Error::store(&path, e)),
            }
        }
        self.write_parquet(table, &path, batch).await?;
        Ok(batch.num_rows())
    }

    /// Replaces partition `dt` of `table` with the batches of `batches`,
    /// written as they come (one row group each), so that a partition larger
    /// than memory should hold is never whole in memory; the new file
    /// appears at once when complete (a multipart upload, or a file renamed
    /// into place). An error from `batches` leaves the old partition.
    /// Returns the rows written.
    pub async fn replace_partition_with(
        &self,
        table: &TableDef,
        dt: Option<NaiveDate>,
        batches: impl Iterator<Item = Result<RecordBatch>>,
    ) -> Result<usize> {
        let path = partition::data_file(&self.root, table, dt);
        let perr = |source| Error::Parquet {
            path: path.to_string(),
            source,
        };
        let writer = BufWriter::new(Arc::clone(&self.store), path.clone());
        let props = encode::streamed_properties(table);
        let mut w =
            AsyncArrowWriter::try_new(writer, table.file_schema(), Some(props)).map_err(perr)?;
        let mut rows = 0;
        for batch in batches {
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    // Nothing is committed: the upload is dropped unfinished.
                    let _ = w.into_inner().abort().await;
                    return Err(e);
                }
            };
            rows += batch.num_rows();
            w.write(&batch).await.map_err(perr)?;
            w.flush().await.map_err(perr)?;
        }
        w.close().await.map_err(perr)?;
        tracing::debug!(table = %table.name, path = %path, rows, "partition committed");
        Ok(rows)
    }

    /// Replaces partition `dt` of `table` with `batch` unless it holds the
    /// same rows already (compared in order, leaving out `_extracted_at`,
    /// `_run_id` and columns the schema marks `volatile`): then the file is
    /// not touched, byte for byte. Returns the rows written (0 when left).
    pub async fn replace_partition_if_changed(
        &self,
        table: &TableDef,
        dt: Option<NaiveDate>,
        batch: &RecordBatch,
    ) -> Result<usize> {
        let path = partition::data_file(&self.root, table, dt);
        let schema = table.file_schema();
        let stored = match self.read_file(&path, None).await {
            Ok(batches) => batches
                .iter()
                .map(|b| conform(b, &schema))
                .collect::<std::result::Result<Vec<_>, _>>()
                .and_then(|b| concat_batches(&schema, &b))
                .ok(),
            Err(e) => {
                tracing::warn!(table = %table.name, file = %path, error = %e, "stored partition unreadable; it is replaced");
                None
            }
        };
        let same = stored.is_some_and(|old| {
            old.num_rows() == batch.num_rows()
                && schema.fields().iter().enumerate().all(|(i, f)| {
                    table.is_volatile(f.name())
                        || old.column(i).as_ref() == batch.column(i).as_ref()
                })
        });
        if same {
            return Ok(0);
        }
        self.replace_partition(table, dt, batch).await
    }

    /// The partitions a table has in the warehouse, sorted.
    pub async fn partitions(&self, table: &TableDef) -> Result<Vec<NaiveDate>> {
        let dir = partition::table_dir(&self.root, table);
        let listed = match self.store.list_with_delimiter(Some(&dir)).await {
            Ok(l) => l,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(Error::store(&dir, e)),
        };
        let mut out: Vec<NaiveDate> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().and_then(partition::parse_partition))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Merges `batch` into partition `dt`: the partition's rows whose key is
    /// in `merge.replace` are dropped (`batch` holds their new versions),
    /// rows whose key is in `merge.tombstones` get `deleted_at` set (if not
    /// yet), and all other rows stay. One read, one PUT. Returns the rows of
    /// the partition after the merge.
    pub async fn merge_partition(
        &self,
        table: &TableDef,
        dt: Option<NaiveDate>,
        batch: &RecordBatch,
        merge: &Merge<'_>,
    ) -> Result<usize> {
        let path = partition::data_file(&self.root, table, dt);
        let schema = table.file_schema();
        let aerr = |e| Error::ArrowAt {
            context: format!("merging into {path}"),
            source: e,
        };
        let mut parts = Vec::new();
        for old in self.read_file(&path, None).await? {
            let old = conform(&old, &schema).map_err(aerr)?;
            let col = old
                .column_by_name(merge.key_column)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned());
            let Some(col) = col else {
                return Err(Error::Normalize {
                    table: table.name.clone(),
                    column: merge.key_column.into(),
                    message: format!("{path} has no text column {}", merge.key_column),
                });
            };
            let keep: BooleanArray = col
                .iter()
                .map(|v| Some(!v.is_some_and(|v| merge.replace.contains(&key_hash(v)))))
                .collect();
            let mut kept = filter_record_batch(&old, &keep).map_err(aerr)?;
            if let Some((tombstones, at)) = merge.tombstones {
                kept =
                    mark_deleted(table, &kept, merge.key_column, tombstones, at).map_err(aerr)?;
            }
            parts.push(kept);
        }
        parts.push(batch.clone());
        let merged = concat_batches(&schema, &parts).map_err(aerr)?;
        let merged = sort_batch(table, &merged).map_err(|e| Error::ArrowAt {
            context: format!("sorting {path}"),
            source: e,
        })?;
        self.replace_partition(table, dt, &merged).await
    }

    /// Every row of a table, `columns` only, with its partition, handed to
    /// `each` one file at a time (the caller keeps what it needs).
    pub async fn scan(
        &self,
        table: &TableDef,
        columns: &[&str],
        mut each: impl FnMut(Option<NaiveDate>, RecordBatch),
    ) -> Result<()> {
        let dts: Vec<Option<NaiveDate>> = if table.is_partitioned() {
            self.partitions(table)
                .await?
                .into_iter()
                .map(Some)
                .collect()
        } else {
            vec![None]
        };
        // The table's schema cut down to `columns`: each file is read with only
        // those columns decoded, then conformed to it (nulls where a file lacks one).
        let full = table.file_schema();
        let idx: Vec<usize> = columns
            .iter()
            .filter_map(|c| full.index_of(c).ok())
            .collect();
        let wanted = Arc::new(full.project(&idx).map_err(|e| Error::ArrowAt {
            context: format!("columns of {}", table.name),
            source: e,
        })?);
        let names: Vec<&str> = wanted.fields().iter().map(|f| f.name().as_str()).collect();
        for dt in dts {
            let path = partition::data_file(&self.root, table, dt);
            for b in self.read_file(&path, Some(&names)).await? {
                let b = conform(&b, &wanted).map_err(|e| Error::ArrowAt {
                    context: format!("reading {path}"),
                    source: e,
                })?;
                each(dt, b);
            }
        }
        Ok(())
    }

    /// Every batch of one Parquet file, only `columns` decoded when given; a
    /// missing file is no batches.
    pub async fn read_file(
        &self,
        path: &Path,
        columns: Option<&[&str]>,
    ) -> Result<Vec<RecordBatch>> {
        let bytes = match self.store.get(path).await {
            Ok(got) => got.bytes().await.map_err(|e| Error::store(path, e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(Error::store(path, e)),
        };
        // Decoding is synchronous; a hostile or damaged file must not take
        // the run down even if the decoder panics on it.
        let decoded = std::panic::catch_unwind(|| -> Result<Vec<RecordBatch>> {
            let perr = |source| Error::Parquet {
                path: path.to_string(),
                source,
            };
            let mut builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(perr)?;
            if let Some(columns) = columns {
                let mask =
                    ProjectionMask::columns(builder.parquet_schema(), columns.iter().copied());
                builder = builder.with_projection(mask);
            }
            let reader = builder.build().map_err(perr)?;
            reader
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::ArrowAt {
                    context: format!("reading {path}"),
                    source: e,
                })
        });
        decoded.unwrap_or_else(|_| {
            Err(Error::File {
                path: path.to_string(),
                message:
                    "corrupt Parquet (the decoder failed on it); move it away or re-run the stream"
                        .into(),
            })
        })
    }

    /// Adds a file named `name` to partition `dt` of an append-only table.
    pub async fn append(
        &self,
        table: &TableDef,
        dt: NaiveDate,
        name: &str,
        batch: &RecordBatch,
    ) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let path = partition::append_file(&self.root, table, dt, name);
        self.write_parquet(table, &path, batch).await
    }

    /// Rewrites one file of `table` without the rows `remove` marks in each
    /// of its batches (one PUT; the file is deleted when no row is left,
    /// and not touched when none is marked). Returns the rows removed.
    pub async fn remove_rows(
        &self,
        table: &TableDef,
        path: &Path,
        remove: impl Fn(&RecordBatch) -> BooleanArray,
    ) -> Result<u64> {
        let batches = self.read_file(path, None).await?;
        let Some(first) = batches.first() else {
            return Ok(0);
        };
        let aerr = |e| Error::ArrowAt {
            context: format!("removing rows from {path}"),
            source: e,
        };
        let mut kept = Vec::with_capacity(batches.len());
        let mut removed = 0;
        for b in &batches {
            let marked = remove(b);
            removed += marked.true_count() as u64;
            let keep = arrow::compute::not(&marked).map_err(aerr)?;
            kept.push(filter_record_batch(b, &keep).map_err(aerr)?);
        }
        if removed == 0 {
            return Ok(0);
        }
        let batch = concat_batches(&first.schema(), &kept).map_err(aerr)?;
        if batch.num_rows() == 0 {
            match self.store.delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(Error::store(path, e)),
            }
        } else {
            self.write_parquet(table, path, &batch).await?;
        }
        Ok(removed)
    }

    /// Writes `batch` to `path` (one PUT, replacing what is there) with
    /// `table`'s writer settings and the batch's own schema.
    pub async fn write_file(
        &self,
        table: &TableDef,
        path: &Path,
        batch: &RecordBatch,
    ) -> Result<()> {
        self.write_parquet(table, path, batch).await
    }

    async fn write_parquet(
        &self,
        table: &TableDef,
        path: &Path,
        batch: &RecordBatch,
    ) -> Result<()> {
        let perr = |source| Error::Parquet {
            path: path.to_string(),
            source,
        };
        let file = encode::encode(batch, table).map_err(perr)?;
        let failed = |e: std::io::Error| Error::File {
            path: path.to_string(),
            message: format!("not written: {e}"),
        };
        // A file larger than the buffer goes up in parts; a part that fails
        // aborts the upload (nothing is committed until `shutdown`).
        let mut up = BufWriter::new(Arc::clone(&self.store), path.clone());
        if let Err(e) = up.write_all(&file).await {
            let _ = up.abort().await;
            return Err(failed(e));
        }
        up.shutdown().await.map_err(failed)?;
        tracing::debug!(table = %table.name, path = %path, rows = batch.num_rows(), "partition committed");
        Ok(())
    }
}

impl std::fmt::Display for Warehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display)
    }
}

/// `batch` with exactly `schema`'s columns: columns are taken by name, and a
/// column an older file lacks is all nulls.
fn conform(
    batch: &RecordBatch,
    schema: &SchemaRef,
) -> std::result::Result<RecordBatch, ArrowError> {
    if batch.schema() == *schema {
        return Ok(batch.clone());
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(Arc::clone(c)),
            Some(c) => arrow::compute::cast(c, f.data_type()),
            None => Ok(arrow::array::new_null_array(
                f.data_type(),
                batch.num_rows(),
            )),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    RecordBatch::try_new(Arc::clone(schema), columns)
}

/// How [`Warehouse::merge_partition`] treats the rows already there.
pub struct Merge<'a> {
    /// The text column that identifies a row (or a group of rows).
    pub key_column: &'a str,
    /// Keys whose old rows are dropped: the new batch holds their rows
    /// (as [`key_hash`]es: a million keys are 16 bytes each, not strings).
    pub replace: &'a HashSet<u128>,
    /// Keys (hashed) whose rows are kept but marked deleted at this instant
    /// (µs).
    pub tombstones: Option<(&'a HashSet<u128>, i64)>,
}

/// Sets `deleted_at` (where still null) on the rows whose key is a tombstone.
fn mark_deleted(
    table: &TableDef,
    batch: &RecordBatch,
    key_column: &str,
    tombstones: &HashSet<u128>,
    at: i64,
) -> std::result::Result<RecordBatch, ArrowError> {
    let Some(i) = table.index_of("deleted_at") else {
        return Ok(batch.clone());
    };
    let keys = batch
        .column_by_name(key_column)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>());
    let old = batch
        .column(i)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>();
    let (Some(keys), Some(old)) = (keys, old) else {
        return Ok(batch.clone());
    };
    let new: TimestampMicrosecondArray = keys
        .iter()
        .zip(old.iter())
        .map(|(k, d)| d.or_else(|| k.filter(|k| tombstones.contains(&key_hash(k))).map(|_| at)))
        .collect::<TimestampMicrosecondArray>()
        .with_timezone("UTC");
    let mut columns = batch.columns().to_vec();
    columns[i] = Arc::new(new);
    RecordBatch::try_new(batch.schema(), columns)
}
