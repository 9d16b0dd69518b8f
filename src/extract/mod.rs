//! Stage 1: REST APIs -> records. One folder per source (socialintents,
//! social25, crm); [`http`] is the client they share and [`window`] plans the
//! date windows. A source turns a window, a snapshot or a chunk of changed
//! keys into [`Extracted`]: table buffers filled through `normalize`, plus
//! the records it had to reject; a whole upsert read it streams record by
//! record ([`UpsertRecord`]) to the pipeline's comparison with the
//! warehouse. [`StreamKind`] says which.

pub mod checks;
pub mod crm;
pub mod http;
pub mod pacer;
pub mod paging;
pub mod social25;
pub mod socialintents;
pub mod window;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

use self::http::HttpConfig;
use self::window::Window;
use crate::error::{Error, Result};
use crate::normalize::{self, Reject, TableBuffer};
use crate::schema::TableDef;

/// Every source chatlake knows, by its `[sources.<name>]` key: the one place
/// a new source is registered.
pub const SOURCES: &[Registration] = &[
    socialintents::REGISTRATION,
    social25::REGISTRATION,
    crm::REGISTRATION,
];

/// A source as the registry knows it: its key and how its section is read.
pub struct Registration {
    /// The `[sources.<name>]` key, also the prefix of its streams.
    pub name: &'static str,
    /// Parses and validates its section of the pipeline file.
    pub parse: fn(toml::Value) -> std::result::Result<Arc<dyn SourceConfig>, String>,
}

/// The names of every registered source.
pub fn source_names() -> Vec<&'static str> {
    SOURCES.iter().map(|r| r.name).collect()
}

/// A source's validated `[sources.<name>]` section.
pub trait SourceConfig: std::fmt::Debug + Send + Sync + 'static {
    /// Its registry key.
    fn name(&self) -> &'static str;
    /// The source, ready to extract.
    fn build(&self, ctx: &BuildCtx<'_>) -> Result<Box<dyn Source>>;
    /// For tests and tools that need the concrete config.
    fn as_any(&self) -> &dyn std::any::Any;
}

/// What building a source may use from the pipeline.
pub struct BuildCtx<'a> {
    pub http: &'a HttpConfig,
    /// The pipeline timezone.
    pub tz: Tz,
    /// The run's clock (finality horizons are measured from it).
    pub now: DateTime<Utc>,
    pub lookback_days: u32,
    /// The personal-data policy every row passes before it is buffered.
    pub policy: Option<Arc<crate::privacy::Policy>>,
}

/// A configured source. Each stream kind has its reader; a source implements
/// the readers of the kinds its streams use. Being asked for another is a
/// bug in the source's stream list, reported as [`Error::Internal`].
#[async_trait]
pub trait Source: Send + Sync {
    /// The streams this source extracts, in the order they run.
    fn streams(&self) -> Vec<StreamSpec>;

    /// What the source's HTTP client has sent and waited so far.
    fn traffic(&self) -> http::Traffic;

    /// Requests in flight at most (`max_concurrency`): a windowed stream
    /// reads this many windows at once.
    fn max_concurrency(&self) -> usize {
        1
    }

    /// `chatlake check`: one cheap authenticated request; what it showed.
    async fn check(&self) -> Result<String>;

    /// A windowed stream's window, or a snapshot stream whole (window None).
    async fn extract(
        &self,
        spec: &StreamSpec,
        _window: Option<Window>,
        _run_id: &str,
    ) -> Result<Extracted> {
        Err(not_a_reader(spec, "windowed or snapshot"))
    }

    /// A change-driven stream's plan from its cursor: which keys to re-read,
    /// in chunks, each with the cursor to save once it is committed.
    async fn plan_changes(
        &self,
        spec: &StreamSpec,
        _cursor: Option<serde_json::Value>,
    ) -> Result<ChangePlan> {
        Err(not_a_reader(spec, "change-driven"))
    }

    /// Every record of one chunk's keys.
    async fn extract_changes(
        &self,
        spec: &StreamSpec,
        _keys: &[String],
        _run_id: &str,
    ) -> Result<Extracted> {
        Err(not_a_reader(spec, "change-driven"))
    }

    /// An upsert stream read whole, each record handed to `on_record` as it
    /// is read (the pipeline compares it with the warehouse:
    /// `pipeline/upsert.rs`). Returns (responses, records) read.
    async fn read_whole(
        &self,
        spec: &StreamSpec,
        _on_record: &mut (dyn for<'r> FnMut(UpsertRecord<'r>) + Send),
    ) -> Result<(u64, u64)> {
        Err(not_a_reader(spec, "upsert"))
    }

    /// What a whole read of an upsert stream covers: the values of its
    /// scope column whose stored keys it can mark deleted (CRM: the
    /// configured `company_ids`); None: every stored key.
    fn upsert_scope(&self, _spec: &StreamSpec) -> Option<std::collections::HashSet<String>> {
        None
    }
}

fn not_a_reader(spec: &StreamSpec, kind: &str) -> Error {
    Error::Internal(format!(
        "stream {} is declared {:?} but its source has no {kind} reader",
        spec.name, spec.kind
    ))
}

/// Every configured source built, in the order given (a pipeline's
/// sources are in registry order; `Pipeline::build_ctx` makes the context).
pub fn build_all(
    configs: &[Arc<dyn SourceConfig>],
    ctx: &BuildCtx<'_>,
) -> Result<Vec<Box<dyn Source>>> {
    configs.iter().map(|s| s.build(ctx)).collect()
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
    Upsert {
        key_column: &'static str,
        /// A column that scopes what one read covers (CRM: `company_id`
        /// when only some companies are read), or None.
        scope_column: Option<&'static str>,
    },
}

/// One record of an upsert stream's whole read, as its source parsed it.
pub struct UpsertRecord<'a> {
    /// Its key as the API sent it; also for a record that failed to parse
    /// (it exists at the source, so it is not marked deleted).
    pub id: Option<&'a str>,
    /// Its row with partition and `updatedAt`, or why it is rejected.
    pub parsed: std::result::Result<UpsertRow, String>,
    /// The record as received (a reject keeps it in meta.rejects).
    pub raw: &'a serde_json::Value,
}

/// A parsed record of an upsert stream.
pub struct UpsertRow {
    pub row: normalize::Row,
    /// Its partition (None for an unpartitioned table).
    pub dt: Option<NaiveDate>,
    /// Its `updatedAt`: unchanged rows are not rewritten.
    pub updated: DateTime<Utc>,
}

/// What a change-driven stream will re-read, in chunks committed one by one.
pub struct ChangePlan {
    pub chunks: Vec<ChangeChunk>,
    /// Pages and records read while planning (e.g. the conversation listing).
    pub pages: u64,
    /// The keys of chunk `i`, made when it is fetched (a first run of a
    /// large account would otherwise hold every key twice).
    pub keys_of: Box<dyn Fn(usize) -> Vec<String> + Send + Sync>,
    /// The cursor to save once chunk `i` (and every chunk before it) is
    /// committed; called with 0, 1, 2, ... in order.
    pub cursor_after: Box<dyn FnMut(usize) -> serde_json::Value + Send>,
}

impl std::fmt::Debug for ChangePlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangePlan")
            .field("chunks", &self.chunks)
            .field("pages", &self.pages)
            .finish_non_exhaustive()
    }
}

/// Keys re-read together ([`ChangePlan::keys_of`]); once their partitions
/// are merged, the cursor after them is saved.
#[derive(Debug, Clone)]
pub struct ChangeChunk {
    /// How many keys.
    pub len: usize,
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
    /// Other names `--stream` accepts for it (`socialintents.missed_chats`
    /// selects the chats stream it feeds).
    pub aliases: Vec<String>,
}

/// One window's worth of extracted data, ready to commit.
pub struct Extracted {
    /// One buffer per table of the stream.
    pub buffers: Vec<TableBuffer>,
    pub rejects: Vec<Reject>,
    /// Responses that carried data.
    pub pages: u64,
    /// Bytes of those responses: what a run holds in memory is bounded by
    /// this measure (see `pipeline::kinds::Budget`).
    pub bytes: u64,
    /// Records received (before deduplication).
    pub records: u64,
    /// Records the API said it had (paginated listings' `count`), if it said.
    pub source_count: Option<u64>,
}

impl Extracted {
    /// Empty buffers for `spec`'s tables, applying `policy` to each row.
    pub fn new(
        spec: &StreamSpec,
        run_id: &str,
        policy: &Option<Arc<crate::privacy::Policy>>,
    ) -> Self {
        Extracted {
            buffers: spec
                .tables
                .iter()
                .map(|t| TableBuffer::new(t, run_id).with_policy(policy))
                .collect(),
            rejects: Vec::new(),
            pages: 0,
            bytes: 0,
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
