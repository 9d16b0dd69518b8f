//! Stage 1: REST APIs -> records for one date window. One folder per source;
//! [`http`] is the client they share and [`window`] plans the date windows.
//! A source turns a window into [`Extracted`]: table buffers filled through
//! `normalize`, plus the records it had to reject.

pub mod http;
pub mod socialintents;
pub mod window;

use crate::normalize::{Reject, TableBuffer};
use crate::schema::TableDef;

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
