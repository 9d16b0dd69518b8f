//! Stage 1: REST APIs -> records. One folder per source (socialintents,
//! social25, crm); [`http`] is the client they share and [`window`] plans the
//! date windows. A source turns a window, a snapshot, a chunk of changed keys
//! or a whole upsert read into [`Extracted`]: table buffers filled through
//! `normalize`, plus the records it had to reject. [`StreamKind`] says which.

pub mod crm;
pub mod http;
pub mod social25;
pub mod socialintents;
pub mod window;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

use self::window::Window;
use crate::config::PipelineConfig;
use crate::error::Result;
use crate::normalize::{Reject, TableBuffer};
use crate::schema::TableDef;

/// A configured source. A new API is one more folder and one more variant.
pub enum Source {
    SocialIntents(socialintents::SocialIntents),
    Social25(social25::Social25),
    Crm(crm::Crm),
}

impl Source {
    /// Every source the pipeline configures, in a fixed order. `now` is the
    /// run's clock (finality horizons are measured from it).
    pub fn all(cfg: &PipelineConfig, tz: Tz, now: DateTime<Utc>) -> Result<Vec<Source>> {
        let mut out = Vec::new();
        if let Some(si) = &cfg.sources.socialintents {
            out.push(Source::SocialIntents(socialintents::SocialIntents::new(
                si, &cfg.http, tz,
            )?));
        }
        if let Some(s25) = &cfg.sources.social25 {
            out.push(Source::Social25(social25::Social25::new(
                s25,
                &cfg.http,
                tz,
                now,
                cfg.lookback_days,
            )?));
        }
        if let Some(crm) = &cfg.sources.crm {
            out.push(Source::Crm(crm::Crm::new(crm, &cfg.http, tz)?));
        }
        Ok(out)
    }

    /// The streams this source extracts.
    pub fn streams(&self) -> Vec<StreamSpec> {
        match self {
            Source::SocialIntents(s) => s.streams(),
            Source::Social25(s) => s.streams(),
            Source::Crm(s) => s.streams(),
        }
    }

    /// Fetches and normalizes one window of a stream (None: snapshot).
    pub async fn extract(
        &self,
        spec: &StreamSpec,
        window: Option<Window>,
        run_id: &str,
    ) -> Result<Extracted> {
        match self {
            Source::SocialIntents(s) => s.extract(spec, window, run_id).await,
            Source::Social25(s) => s.extract(spec, window, run_id).await,
            Source::Crm(_) => Err(crate::error::Error::Usage(format!(
                "{} is read whole (upsert)",
                spec.name
            ))),
        }
    }

    /// Plans a change-driven stream from its cursor: which keys to re-read, in
    /// chunks, each with the cursor to save once it is committed.
    pub async fn plan_changes(
        &self,
        spec: &StreamSpec,
        cursor: Option<serde_json::Value>,
    ) -> Result<ChangePlan> {
        match self {
            Source::Social25(s) => s.plan_changes(spec, cursor).await,
            _ => Err(crate::error::Error::Usage(format!(
                "{} is not change-driven",
                spec.name
            ))),
        }
    }

    /// Reads an upsert stream whole and compares it with what the warehouse holds.
    pub async fn extract_upsert(
        &self,
        spec: &StreamSpec,
        stored: &std::collections::HashMap<String, Stored>,
        run_id: &str,
    ) -> Result<Upserts> {
        match self {
            Source::Crm(s) => s.extract_upsert(spec, stored, run_id).await,
            _ => Err(crate::error::Error::Usage(format!(
                "{} is not an upsert stream",
                spec.name
            ))),
        }
    }

    /// Fetches and normalizes every record of one chunk's keys.
    pub async fn extract_changes(
        &self,
        spec: &StreamSpec,
        chunk: &ChangeChunk,
        run_id: &str,
    ) -> Result<Extracted> {
        match self {
            Source::Social25(s) => s.extract_changes(spec, chunk, run_id).await,
            _ => Err(crate::error::Error::Usage(format!(
                "{} is not change-driven",
                spec.name
            ))),
        }
    }

    /// HTTP retries so far.
    pub fn retries(&self) -> u64 {
        match self {
            Source::SocialIntents(s) => s.retries(),
            Source::Social25(s) => s.retries(),
            Source::Crm(s) => s.retries(),
        }
    }
}

/// How a stream is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// By local-date windows of at most this many days; partitions replaced
    /// per window. With `final_lag`, records younger than that are not final
    /// yet: nothing later than now minus the lag is asked for, and the
    /// watermark only passes days that ended before it.
    Windowed {
        window_days: u32,
        final_lag: Option<chrono::Duration>,
    },
    /// Everything at once; the table is replaced whole (a partitioned table:
    /// every partition present is replaced, the others deleted).
    Snapshot,
    /// Driven by a cursor: only the records of changed keys are re-read, and
    /// each partition they land in is merged (rows of those keys replaced).
    Changes { key_column: &'static str },
    /// Read whole every run and compared with the warehouse by key and
    /// `updated_at`: only new or changed rows are written (partitions merged
    /// by key), and keys gone from the source get `deleted_at`.
    Upsert { key_column: &'static str },
}

/// What the warehouse holds for one key of an upsert stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// Its partition.
    pub dt: Option<NaiveDate>,
    /// Its `updated_at` (µs).
    pub updated_at: Option<i64>,
    /// Whether it is marked deleted.
    pub deleted: bool,
    /// Its `company_id`, for sources that read a subset of companies.
    pub scope: Option<String>,
}

/// An upsert stream's reading, compared with the warehouse.
pub struct Upserts {
    /// The rows to write (new or changed), and rejects.
    pub extracted: Extracted,
    /// Keys whose rows are (re)written.
    pub replace: std::collections::HashSet<String>,
    /// Keys gone from the source: their rows are kept with `deleted_at` set.
    pub tombstones: std::collections::HashSet<String>,
    /// Stored rows not marked deleted, within what this read covers (the
    /// base of the mass-delete guard).
    pub live: usize,
    /// Latest `updatedAt` read.
    pub high_water: Option<DateTime<Utc>>,
}

/// What a change-driven stream will re-read, in chunks committed one by one.
#[derive(Debug, Default)]
pub struct ChangePlan {
    pub chunks: Vec<ChangeChunk>,
    /// Pages and records read while planning (e.g. the conversation listing).
    pub pages: u64,
}

/// Keys re-read together; once their partitions are merged, `cursor` is saved.
#[derive(Debug, Clone)]
pub struct ChangeChunk {
    pub keys: Vec<String>,
    /// The stream's cursor after this chunk.
    pub cursor: serde_json::Value,
    /// The local date the cursor reached (shown as the watermark).
    pub reached: Option<NaiveDate>,
}

/// One stream of a source, as the pipeline schedules it.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    /// `<source>.<stream>`, the key of its state and meta.runs rows.
    pub name: String,
    pub kind: StreamKind,
    /// Tables it writes; the first is its main table.
    pub tables: Vec<&'static TableDef>,
    /// API endpoints it reads (paths relative to base_url), in merge order:
    /// a record from a later endpoint replaces the same key from an earlier one.
    pub endpoints: Vec<&'static str>,
}

/// One window's worth of extracted data, ready to commit.
pub struct Extracted {
    /// One buffer per table of the stream.
    pub buffers: Vec<TableBuffer>,
    pub rejects: Vec<Reject>,
    /// Responses that carried data.
    pub pages: u64,
    /// Records received (before deduplication).
    pub records: u64,
    /// Records the API said it had (paginated listings' `count`), if it said.
    pub source_count: Option<u64>,
}

impl Extracted {
    /// Empty buffers for `spec`'s tables.
    pub fn new(spec: &StreamSpec, run_id: &str) -> Self {
        Extracted {
            buffers: spec
                .tables
                .iter()
                .map(|t| TableBuffer::new(t, run_id))
                .collect(),
            rejects: Vec::new(),
            pages: 0,
            records: 0,
            source_count: None,
        }
    }

    /// Adds a listing's `count` to the source count.
    pub fn add_count(&mut self, count: Option<u64>) {
        if let Some(c) = count {
            *self.source_count.get_or_insert(0) += c;
        }
    }
}
