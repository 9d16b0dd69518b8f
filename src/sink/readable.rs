//! What readers (DataFusion queries and views) see of the warehouse: the
//! store seen through a filter that drops any path under a `dt=` directory
//! whose value is not a date (a `dt=garbage/` left by hand or by another
//! tool), and refuses every write. Together with the file-name globs of
//! [`super::partition::read_glob`], queries read only what chatlake wrote,
//! and the warehouse stays read-only for them.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

use super::partition::parse_partition;
use crate::schema::DT;

/// A read-only view of a store that hides malformed partition directories.
#[derive(Debug)]
pub struct Readable(pub Arc<dyn ObjectStore>);

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
        write!(f, "Readable({})", self.0)
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

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.0.get_opts(location, options).await
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
        self.0
            .list(prefix)
            .filter(|m| std::future::ready(m.as_ref().map_or(true, |m| well_formed(&m.location))))
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let mut r = self.0.list_with_delimiter(prefix).await?;
        r.common_prefixes.retain(well_formed);
        r.objects.retain(|m| well_formed(&m.location));
        Ok(r)
    }

    async fn copy_opts(&self, _: &Path, to: &Path, _: CopyOptions) -> Result<()> {
        Err(read_only(to))
    }
}
