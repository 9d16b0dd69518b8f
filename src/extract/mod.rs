//! Stage 1: REST APIs -> records for one date window. One folder per source;
//! [`http`] is the client they share and [`window`] plans the date windows.
//! A source turns a window into [`Extracted`]: table buffers filled through
//! `normalize`, plus the records it had to reject.

pub mod http;
pub mod socialintents;
pub mod window;

use chrono_tz::Tz;

use self::window::Window;
use crate::config::PipelineConfig;
use crate::error::Result;
use crate::normalize::{Reject, TableBuffer};
use crate::schema::TableDef;

/// A configured source. A new API is one more folder and one more variant.
pub enum Source {
    SocialIntents(socialintents::SocialIntents),
}

impl Source {
    /// Every source the pipeline configures, in a fixed order.
    pub fn all(cfg: &PipelineConfig, tz: Tz) -> Result<Vec<Source>> {
        let mut out = Vec::new();
        if let Some(si) = &cfg.sources.socialintents {
            out.push(Source::SocialIntents(socialintents::SocialIntents::new(si, &cfg.http, tz)?));
        }
        Ok(out)
    }

    /// The streams this source extracts.
    pub fn streams(&self) -> Vec<StreamSpec> {
        match self {
            Source::SocialIntents(s) => s.streams(),
        }
    }

    /// Fetches and normalizes one window of a stream (None: snapshot).
    pub async fn extract(&self, spec: &StreamSpec, window: Option<Window>, run_id: &str) -> Result<Extracted> {
        match self {
            Source::SocialIntents(s) => s.extract(spec, window, run_id).await,
        }
    }

    /// HTTP retries so far.
    pub fn retries(&self) -> u64 {
        match self {
            Source::SocialIntents(s) => s.retries(),
        }
    }
}

/// How a stream is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// By local-date windows of at most this many days; partitions replaced per window.
    Windowed { window_days: u32 },
    /// Everything at once; the table is replaced whole.
    Snapshot,
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
}
