//! What readers (DataFusion queries and views) see of the warehouse: the
//! store seen through a filter that drops any path under a `dt=` directory
//! whose value is not a date (a `dt=garbage/` left by hand or by another
//! tool), and refuses every write. Together with the file-name globs of
//! [`super::partition::read_glob`], queries read only what chatlake wrote,
//! and the warehouse stays read-only for them.
//!
//! Reads are of the version listed: the engine lists a table's files (with
//! their sizes) and then reads each footer and its pages by offset; a run
//! that replaced a partition in between made those offsets point into the
//! new file ("Corrupt footer", or a panic in the Parquet reader). Every read
//! therefore asks for the listed version (`If-Match` its e-tag; on local
//! disk checked against the very file handle read from), and a replaced file
//! is a [`object_store::Error::Precondition`], which `query::run_streaming`
//! answers by running the statement again.
//!
//! On local disk a ranged read is done here, on the thread that asks for it:
//! open, check the e-tag on that handle, read. object_store's
//! `LocalFileSystem` hands each read to tokio's blocking pool twice (open,
//! then read), and a query over a year of daily partitions makes thousands
//! of such reads of a few hundred KB from the page cache: the thread
//! hand-offs cost more than the reads (BENCHMARKS.md, "The server beside
//! DuckDB").

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

use super::partition::parse_partition;
use crate::schema::DT;

/// A read-only view of a store that hides malformed partition directories,
/// and remembers which files were opened (so that an error decoding one can
/// name it: see [`Readable::diagnose`]).
#[derive(Debug)]
pub struct Readable {
    inner: Arc<dyn ObjectStore>,
    /// The same files as a local file system, for ranged reads done in
    /// place ([`read_local`]); None for an object store.
    local: Option<LocalFileSystem>,
    opened: Arc<Mutex<BTreeSet<Path>>>,
    /// The e-tag of each file as last listed.
    listed: Arc<Mutex<HashMap<Path, String>>>,
}

impl Readable {
    /// A read-only view of `inner`, and a handle on the files it opens.
    /// `local`: `inner` is the local file system (`file:///`), whose
    /// ranged reads are then done in place.
    pub fn new(inner: Arc<dyn ObjectStore>, local: bool) -> (Readable, Opened) {
        let opened = Arc::new(Mutex::new(BTreeSet::new()));
        (
            Readable {
                inner: Arc::clone(&inner),
                local: local.then(LocalFileSystem::new),
                opened: Arc::clone(&opened),
                listed: Arc::default(),
            },
            Opened {
                store: inner,
                opened,
            },
        )
    }
}

/// The files a [`Readable`] has opened, to name the one at fault.
#[derive(Debug, Clone)]
pub struct Opened {
    store: Arc<dyn ObjectStore>,
    opened: Arc<Mutex<BTreeSet<Path>>>,
}

impl Opened {
    /// Forgets what was opened (before the next statement).
    pub fn clear(&self) {
        self.opened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The first opened file under `dir` that lacks one of `columns` (a
    /// file from an older chatlake, refused by `query::older_files`).
    pub async fn lacking(&self, dir: &Path, columns: &[String]) -> Option<Path> {
        let paths: Vec<Path> = self
            .opened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|p| p.prefix_matches(dir))
            .cloned()
            .collect();
        for p in paths {
            let Ok(meta) = footer(self.store.as_ref(), &p).await else {
                continue;
            };
            let fields = meta
                .file_metadata()
                .schema_descr()
                .root_schema()
                .get_fields();
            if columns.iter().any(|c| fields.iter().all(|f| f.name() != c)) {
                return Some(p);
            }
        }
        None
    }

    /// The opened Parquet files whose footer does not decode, each with why:
    /// checked here, with any panic of the decoder caught.
    pub async fn diagnose(&self) -> Vec<(Path, String)> {
        let paths: Vec<Path> = self
            .opened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        let mut bad = Vec::new();
        for p in paths {
            if let Err(why) = footer(self.store.as_ref(), &p).await {
                bad.push((p, why));
            }
        }
        bad
    }
}

/// The footer of `path`, or why it does not decode.
async fn footer(
    store: &dyn ObjectStore,
    path: &Path,
) -> std::result::Result<parquet::file::metadata::ParquetMetaData, String> {
    use object_store::ObjectStoreExt;
    let bytes = store
        .get(path)
        .await
        .map_err(|e| format!("unreadable: {e}"))?
        .bytes()
        .await
        .map_err(|e| format!("unreadable: {e}"))?;
    if bytes.len() < 12 || &bytes[..4] != b"PAR1" || &bytes[bytes.len() - 4..] != b"PAR1" {
        return Err(format!(
            "not a Parquet file ({} bytes, no PAR1 magic at both ends)",
            bytes.len()
        ));
    }
    let meta_len = u32::from_le_bytes(
        bytes[bytes.len() - 8..bytes.len() - 4]
            .try_into()
            .expect("4 bytes"),
    ) as usize;
    if meta_len + 12 > bytes.len() {
        return Err(format!(
            "corrupt footer: metadata of {meta_len} bytes in a {}-byte file",
            bytes.len()
        ));
    }
    let decoded = std::panic::catch_unwind(|| {
        parquet::file::metadata::ParquetMetaDataReader::new().parse_and_finish(&bytes)
    });
    match decoded {
        Ok(Ok(meta)) => Ok(meta),
        Ok(Err(e)) => Err(format!("corrupt footer: {e}")),
        Err(_) => Err("corrupt footer (the Parquet decoder failed on it)".into()),
    }
}

/// Records the listed version of a file (its e-tag), which reads then ask for.
fn remember(listed: &Mutex<HashMap<Path, String>>, m: &ObjectMeta) {
    if let Some(tag) = &m.e_tag {
        listed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(m.location.clone(), tag.clone());
    }
}

/// A ranged read of a local file, in place: the version checked against the
/// handle read from (its e-tag as `LocalFileSystem` lists it: inode, mtime in
/// microseconds and size, in hex), then the range read with `pread`.
fn read_local(
    path: &std::path::Path,
    location: &Path,
    options: &GetOptions,
    range: &GetRange,
) -> Result<GetResult> {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let failed = |why: String| object_store::Error::Generic {
        store: "LocalFileSystem",
        source: format!("reading {location}: {why}").into(),
    };
    let io_error = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::NotFound => object_store::Error::NotFound {
            path: location.to_string(),
            source: source.into(),
        },
        _ => failed(source.to_string()),
    };
    let file = std::fs::File::open(path).map_err(io_error)?;
    let md = file.metadata().map_err(io_error)?;
    let modified = md.modified().map_err(io_error)?;
    let micros = modified
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    let meta = ObjectMeta {
        location: location.clone(),
        last_modified: modified.into(),
        size: md.len(),
        e_tag: Some(format!("{:x}-{micros:x}-{:x}", md.ino(), md.len())),
        version: None,
    };
    options.check_preconditions(&meta)?;
    let range = range
        .as_range(meta.size)
        .map_err(|e| failed(e.to_string()))?;
    let mut buf = vec![0u8; (range.end - range.start) as usize];
    file.read_exact_at(&mut buf, range.start)
        .map_err(io_error)?;
    let bytes = bytes::Bytes::from(buf);
    Ok(GetResult {
        payload: GetResultPayload::Stream(futures::stream::once(async move { Ok(bytes) }).boxed()),
        attributes: Default::default(),
        range,
        meta,
    })
}

/// Whether every `dt=` segment of `path` names a real date.
fn well_formed(path: &Path) -> bool {
    path.parts().all(|p| {
        let s = p.as_ref();
        !s.starts_with(&format!("{DT}=")) || parse_partition(s).is_some()
    })
}

fn read_only(path: &Path) -> object_store::Error {
    object_store::Error::NotSupported {
        source: format!("queries are read-only; refusing to write {path}").into(),
    }
}

impl fmt::Display for Readable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Readable({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Readable {
    async fn put_opts(&self, location: &Path, _: PutPayload, _: PutOptions) -> Result<PutResult> {
        Err(read_only(location))
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        _: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        Err(read_only(location))
    }

    async fn get_opts(&self, location: &Path, mut options: GetOptions) -> Result<GetResult> {
        self.opened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(location.clone());
        if options.if_match.is_none() && !options.head {
            options.if_match = self
                .listed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(location)
                .cloned();
        }
        match (&self.local, &options.range) {
            (Some(fs), Some(range)) if !options.head => {
                read_local(&fs.path_to_filesystem(location)?, location, &options, range)
            }
            _ => self.inner.get_opts(location, options).await,
        }
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        locations
            .map(|p| p.and_then(|p| Err(read_only(&p))))
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let listed = Arc::clone(&self.listed);
        self.inner
            .list(prefix)
            .filter(|m| std::future::ready(m.as_ref().map_or(true, |m| well_formed(&m.location))))
            .inspect(move |m| {
                if let Ok(m) = m {
                    remember(&listed, m);
                }
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let mut r = self.inner.list_with_delimiter(prefix).await?;
        r.common_prefixes.retain(well_formed);
        r.objects.retain(|m| well_formed(&m.location));
        for m in &r.objects {
            remember(&self.listed, m);
        }
        Ok(r)
    }

    async fn copy_opts(&self, _: &Path, to: &Path, _: CopyOptions) -> Result<()> {
        Err(read_only(to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    /// A read done in place asks for the version `LocalFileSystem` lists
    /// (the same e-tag), reads the range asked for, and refuses a replaced
    /// file as the store would (a precondition failure, which reruns the
    /// statement).
    #[tokio::test]
    async fn a_local_read_in_place_checks_the_listed_version() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data.parquet");
        std::fs::write(&file, b"0123456789").unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new());
        let (readable, _) = Readable::new(Arc::clone(&store), true);
        let path = Path::from_absolute_path(&file).unwrap();
        let listed: Vec<ObjectMeta> = readable
            .list(Some(&Path::from_absolute_path(dir.path()).unwrap()))
            .map(|m| m.unwrap())
            .collect()
            .await;
        assert_eq!(listed.len(), 1);
        let got = readable.get_range(&path, 2..5).await.unwrap();
        assert_eq!(&got[..], b"234");
        let head = store.head(&path).await.unwrap();
        let read = readable
            .get_opts(
                &path,
                GetOptions {
                    range: Some((0..1).into()),
                    ..GetOptions::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(read.meta.e_tag, head.e_tag);
        assert_eq!(read.meta.size, 10);
        // replaced as a run replaces a partition: another file renamed over it
        let tmp = dir.path().join("data.tmp");
        std::fs::write(&tmp, b"abcdefghijklmnop").unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        match readable.get_range(&path, 2..5).await {
            Err(object_store::Error::Precondition { .. }) => {}
            other => panic!("expected a precondition failure, got {other:?}"),
        }
        // listed again: the new version; a range that starts past the end
        // is an error, one that ends past it stops at the end (as the store)
        let _ = readable
            .list(Some(&Path::from_absolute_path(dir.path()).unwrap()))
            .collect::<Vec<_>>()
            .await;
        assert!(readable.get_range(&path, 20..40).await.is_err());
        assert_eq!(
            &readable.get_range(&path, 10..40).await.unwrap()[..],
            b"klmnop"
        );
        assert_eq!(
            &store.get_range(&path, 10..40).await.unwrap()[..],
            b"klmnop"
        );
    }
}
