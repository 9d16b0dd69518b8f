//! Runs in progress, so that a run whose meta.runs rows are missing or
//! incomplete (killed, crashed, or the disk filled while writing them) still
//! counts as failed: each run writes `_runs/<pipeline>/<run id>.json` before
//! its first stream and deletes it once every meta.runs row of the run is
//! written. `chatlake runs` reports a marker whose run no longer holds the
//! pipeline lock as an incomplete, failed run.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sink::{partition, Warehouse};

/// What a run in progress says of itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunMarker {
    pub pipeline: String,
    pub run_id: String,
    pub started_at: DateTime<Utc>,
    /// The streams it set out to run.
    pub streams: Vec<String>,
}

/// Records that `marker`'s run has started (before its first stream).
pub async fn begin(wh: &Warehouse, marker: &RunMarker) -> Result<()> {
    let path = partition::run_marker(wh.root(), &marker.pipeline, &marker.run_id);
    let body = serde_json::to_vec_pretty(marker).expect("marker serializes");
    wh.store()
        .put(&path, PutPayload::from(body))
        .await
        .map_err(|e| Error::store(&path, e))?;
    Ok(())
}

/// Records that every meta.runs row of the run is written.
pub async fn finish(wh: &Warehouse, pipeline: &str, run_id: &str) -> Result<()> {
    let path = partition::run_marker(wh.root(), pipeline, run_id);
    match wh.store().delete(&path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(Error::store(&path, e)),
    }
}

/// Runs that started but never finished writing meta.runs, oldest first,
/// without the runs still in progress (their lock names them and is live).
pub async fn unfinished(wh: &Warehouse, pipeline: Option<&str>) -> Result<Vec<RunMarker>> {
    let dir = match pipeline {
        Some(p) => partition::runs_dir(wh.root(), p),
        None => wh.root().clone().join("_runs"),
    };
    let metas: Vec<_> = match wh.store().list(Some(&dir)).try_collect().await {
        Ok(m) => m,
        Err(object_store::Error::NotFound { .. }) => Vec::new(),
        Err(e) => return Err(Error::store(&dir, e)),
    };
    let mut out = Vec::new();
    for m in metas {
        let Ok(got) = wh.store().get(&m.location).await else {
            continue;
        };
        let bytes = got
            .bytes()
            .await
            .map_err(|e| Error::store(&m.location, e))?;
        let Ok(marker) = serde_json::from_slice::<RunMarker>(&bytes) else {
            tracing::warn!(path = %m.location, "unreadable run marker ignored");
            continue;
        };
        if !crate::state::lock::is_held_by(wh, &marker.pipeline, &marker.run_id).await {
            out.push(marker);
        }
    }
    out.sort_by_key(|m| m.started_at);
    Ok(out)
}
