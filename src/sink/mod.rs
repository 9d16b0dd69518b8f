//! Stage 3: RecordBatches -> Parquet files in the warehouse (local disk or S3
//! through object_store). A partition is one file, replaced by a single PUT
//! (multipart for large files), so readers see the old or the new partition,
//! never half of one, and a crash leaves no duplicate file.

pub mod partition;

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use object_store::buffered::BufWriter;
use parquet::arrow::async_writer::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::metadata::SortingColumn;
use url::Url;

use crate::error::{Error, Result};
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
}

impl Warehouse {
    /// Opens a warehouse from a path, `file:///abs/path` or `s3://bucket/prefix`.
    /// A local directory is created if missing.
    pub fn open(location: &str) -> Result<Warehouse> {
        Self::open_with(location, true)
    }

    /// Opens a warehouse to read it: a local directory must already exist.
    pub fn open_existing(location: &str) -> Result<Warehouse> {
        Self::open_with(location, false)
    }

    fn open_with(location: &str, create: bool) -> Result<Warehouse> {
        let fail = |m: String| Error::Usage(format!("warehouse `{location}`: {m}"));
        if let Some(rest) = location.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(fail("no bucket in the URL".into()));
            }
            let s3 = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| Error::store(location, e))?;
            return Ok(Warehouse {
                store: Arc::new(s3),
                store_url: Url::parse(&format!("s3://{bucket}")).map_err(|e| fail(e.to_string()))?,
                root: Path::from(prefix.trim_matches('/')),
                display: location.to_string(),
            });
        }
        let local = match location.strip_prefix("file://") {
            Some(p) => std::path::PathBuf::from(p),
            None if location.contains("://") => return Err(fail("use a path, file:// or s3://".into())),
            None => std::path::PathBuf::from(location),
        };
        if create {
            std::fs::create_dir_all(&local).map_err(|e| Error::io(format!("creating warehouse {location}"), e))?;
        } else if !local.is_dir() {
            return Err(fail("no such directory (run a pipeline into it first)".into()));
        }
        let abs = std::fs::canonicalize(&local).map_err(|e| Error::io(format!("warehouse {location}"), e))?;
        let root = Path::from_absolute_path(&abs).map_err(|e| Error::store(location, e.into()))?;
        Ok(Warehouse {
            store: Arc::new(LocalFileSystem::new()),
            store_url: Url::parse("file:///").expect("static URL"),
            root,
            display: location.to_string(),
        })
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
    pub fn url_of(&self, dir: &Path) -> String {
        let base = self.store_url.as_str().trim_end_matches('/');
        format!("{base}/{}/", dir.as_ref())
    }

    /// Replaces partition `dt` of `table` with `batch` (a single PUT); an
    /// empty batch removes the partition. Returns the rows written.
    pub async fn replace_partition(&self, table: &TableDef, dt: Option<NaiveDate>, batch: &RecordBatch) -> Result<usize> {
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

    /// Adds a file named `name` to partition `dt` of an append-only table.
    pub async fn append(&self, table: &TableDef, dt: NaiveDate, name: &str, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let path = partition::append_file(&self.root, table, dt, name);
        self.write_parquet(table, &path, batch).await
    }

    async fn write_parquet(&self, table: &TableDef, path: &Path, batch: &RecordBatch) -> Result<()> {
        let perr = |source| Error::Parquet { path: path.to_string(), source };
        let writer = BufWriter::new(Arc::clone(&self.store), path.clone());
        let mut w = AsyncArrowWriter::try_new(writer, batch.schema(), Some(writer_properties(table))).map_err(perr)?;
        w.write(batch).await.map_err(perr)?;
        w.close().await.map_err(perr)?;
        tracing::debug!(table = %table.name, path = %path, rows = batch.num_rows(), "partition committed");
        Ok(())
    }
}

impl std::fmt::Display for Warehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display)
    }
}

/// zstd, page statistics, and the sort order recorded in the footer.
fn writer_properties(table: &TableDef) -> WriterProperties {
    let sorting: Vec<SortingColumn> = table
        .sort_by
        .iter()
        .map(|c| SortingColumn {
            column_idx: table.index_of(c).expect("validated sort column") as i32,
            descending: false,
            nulls_first: false,
        })
        .collect();
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("valid level")))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_sorting_columns(Some(sorting))
        .set_created_by(concat!("chatlake ", env!("CARGO_PKG_VERSION")).into())
        .build()
}
