//! Stage 4: per-stream watermarks, stored in the warehouse as versioned JSON
//! under `_state/<pipeline>/<stream>.json`. Saved only after the partitions
//! they cover are committed. Each save is one atomic PUT; where the store
//! supports it (S3), the PUT is conditional on the version that was read, so
//! two writers can never silently overwrite each other.
//!
//! The other state a run keeps in the warehouse sits beside it: the run lock
//! ([`lock`]) and the markers of runs in progress ([`runlog`]).

pub mod lock;
pub mod runlog;

use chrono::{DateTime, NaiveDate, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sink::{partition, Warehouse};

/// The format version written in every state file.
pub const STATE_VERSION: u32 = 1;

/// What chatlake remembers about one stream of one pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamState {
    /// File format version ([`STATE_VERSION`]).
    pub version: u32,
    pub pipeline: String,
    /// `<source>.<stream>`.
    pub stream: String,
    /// Last local date whose partitions are all committed (windowed streams).
    pub watermark: Option<NaiveDate>,
    /// Run that saved this state.
    pub run_id: String,
    pub updated_at: DateTime<Utc>,
    /// Incremented on every save.
    pub generation: u64,
    /// Source-specific position of a change-driven stream (Social25 messages:
    /// the latest last-message time committed and the conversations near it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<serde_json::Value>,
    /// The pipeline timezone the stream's `dt` partitions were computed in
    /// (absent in states written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// A loaded state with the store version it was read at.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub state: StreamState,
    version: Option<UpdateVersion>,
}

/// State files of one pipeline.
pub struct StateStore<'a> {
    wh: &'a Warehouse,
    pipeline: String,
    timezone: Option<String>,
}

impl<'a> StateStore<'a> {
    /// The state of `pipeline` in `wh`.
    pub fn new(wh: &'a Warehouse, pipeline: &str) -> Self {
        StateStore {
            wh,
            pipeline: pipeline.to_string(),
            timezone: None,
        }
    }

    /// Records `timezone` in every state saved (the partitioning it implies).
    pub fn with_timezone(mut self, timezone: &str) -> Self {
        self.timezone = Some(timezone.to_string());
        self
    }

    fn dir(&self) -> Path {
        partition::state_dir(self.wh.root(), &self.pipeline)
    }

    fn path(&self, stream: &str) -> Path {
        partition::state_file(self.wh.root(), &self.pipeline, stream)
    }

    /// The stored state of `stream`, if any.
    pub async fn load(&self, stream: &str) -> Result<Option<Loaded>> {
        let path = self.path(stream);
        let got = match self.wh.store().get(&path).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(Error::store(&path, e)),
        };
        let version = UpdateVersion {
            e_tag: got.meta.e_tag.clone(),
            version: got.meta.version.clone(),
        };
        let bytes = got.bytes().await.map_err(|e| Error::store(&path, e))?;
        let state: StreamState = serde_json::from_slice(&bytes).map_err(|e| Error::State {
            path: path.to_string(),
            message: format!("unreadable: {e}"),
        })?;
        if state.version > STATE_VERSION {
            return Err(Error::State {
                path: path.to_string(),
                message: format!("written by a newer chatlake (format {})", state.version),
            });
        }
        Ok(Some(Loaded {
            state,
            version: Some(version),
        }))
    }

    /// Saves a new watermark (and cursor) for `stream`, on top of `prev` (what was loaded).
    pub async fn save(
        &self,
        stream: &str,
        prev: Option<&Loaded>,
        watermark: Option<NaiveDate>,
        cursor: Option<serde_json::Value>,
        run_id: &str,
    ) -> Result<Loaded> {
        let path = self.path(stream);
        let state = StreamState {
            version: STATE_VERSION,
            pipeline: self.pipeline.clone(),
            stream: stream.to_string(),
            watermark,
            run_id: run_id.to_string(),
            updated_at: Utc::now(),
            generation: prev.map(|p| p.state.generation + 1).unwrap_or(1),
            cursor,
            timezone: self.timezone.clone(),
        };
        let body = serde_json::to_vec_pretty(&state).expect("state serializes");
        let mode = match prev.and_then(|p| p.version.clone()) {
            Some(v) => PutMode::Update(v),
            None => PutMode::Create,
        };
        let put = |mode| {
            let opts = PutOptions {
                mode,
                ..Default::default()
            };
            self.wh
                .store()
                .put_opts(&path, PutPayload::from(body.clone()), opts)
        };
        let result = match put(mode.clone()).await {
            // Local disk has no compare-and-swap; its PUT is still an atomic rename.
            Err(object_store::Error::NotImplemented { .. }) => put(PutMode::Overwrite).await,
            Err(object_store::Error::AlreadyExists { .. }) if prev.is_none() => {
                return Err(Error::State {
                    path: path.to_string(),
                    message: "another run created this state at the same time".into(),
                })
            }
            other => other,
        };
        let put = result.map_err(|e| match e {
            object_store::Error::Precondition { .. } => Error::State {
                path: path.to_string(),
                message: "another run changed this state since it was read".into(),
            },
            e => Error::store(&path, e),
        })?;
        Ok(Loaded {
            state,
            version: Some(UpdateVersion {
                e_tag: put.e_tag,
                version: put.version,
            }),
        })
    }

    /// Every stream state of this pipeline.
    pub async fn list(&self) -> Result<Vec<StreamState>> {
        let dir = self.dir();
        let metas: Vec<_> = self
            .wh
            .store()
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(|e| Error::store(&dir, e))?;
        let mut out = Vec::new();
        for m in metas {
            if let Some(stream) = m.location.filename().and_then(partition::state_stream) {
                if let Some(l) = self.load(stream).await? {
                    out.push(l.state);
                }
            }
        }
        out.sort_by(|a, b| a.stream.cmp(&b.stream));
        Ok(out)
    }

    /// Deletes the state of `stream`, or of every stream; returns what was removed.
    pub async fn reset(&self, stream: Option<&str>) -> Result<Vec<String>> {
        let streams: Vec<String> = match stream {
            Some(s) => vec![s.to_string()],
            None => self.list().await?.into_iter().map(|s| s.stream).collect(),
        };
        let mut removed = Vec::new();
        for s in streams {
            let path = self.path(&s);
            match self.wh.store().delete(&path).await {
                Ok(()) => removed.push(s),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(Error::store(&path, e)),
            }
        }
        Ok(removed)
    }
}
