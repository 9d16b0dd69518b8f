//! Stage 1: REST APIs -> records. One folder per source (socialintents,
//! social25, crm); [`http`] is the client they share and [`window`] plans the
//! date windows. A source turns a window, a snapshot, a chunk of changed keys
//! or a whole upsert read into [`Extracted`]: table buffers filled through
//! `normalize`, plus the records it had to reject. [`StreamKind`] says which.

pub mod checks;
pub mod crm;
pub mod http;
pub mod pacer;
pub mod paging;
pub mod social25;
pub mod socialintents;
pub mod window;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

use self::window::Window;
use crate::config::HttpConfig;
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

    /// An upsert stream read whole and compared with what the warehouse holds.
    async fn extract_upsert(
        &self,
        spec: &StreamSpec,
        _stored: &StoredKeys,
        _run_id: &str,
    ) -> Result<Upserts> {
        Err(not_a_reader(spec, "upsert"))
    }
}

fn not_a_reader(spec: &StreamSpec, kind: &str) -> Error {
    Error::Internal(format!(
        "stream {} is declared {:?} but its source has no {kind} reader",
        spec.name, spec.kind
    ))
}

/// Every source the pipeline configures, built, in registry order.
pub fn build_all(
    pipeline: &crate::config::Pipeline,
    now: DateTime<Utc>,
) -> Result<Vec<Box<dyn Source>>> {
    let ctx = BuildCtx {
        http: &pipeline.config.http,
        tz: pipeline.tz,
        now,
        lookback_days: pipeline.config.lookback_days,
        policy: pipeline.policy.clone(),
    };
    pipeline.sources.iter().map(|s| s.build(&ctx)).collect()
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

/// What the warehouse holds for one key of an upsert stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stored {
    /// Its partition.
    pub dt: Option<NaiveDate>,
    /// Its `updated_at` (µs).
    pub updated_at: Option<i64>,
    /// Whether it is marked deleted.
    pub deleted: bool,
    /// Its `company_id` (for sources that read a subset of companies), as
    /// an index into [`StoredKeys`]' scopes: a million rows name a few
    /// companies.
    scope: Option<u32>,
}

/// Every key an upsert stream's table holds, compact: a sorted array of
/// (128-bit key hash, [`Stored`]), about 48 bytes a key where a map of
/// strings took about 150 (1M CRM conversations are read on every run).
#[derive(Debug, Default)]
pub struct StoredKeys {
    entries: Vec<(u128, Stored)>,
    scopes: Vec<String>,
    scope_index: HashMap<String, u32>,
}

impl StoredKeys {
    /// Adds a key; a key added again replaces what it had (call
    /// [`StoredKeys::finish`] once every key is in).
    pub fn push(
        &mut self,
        key: &str,
        dt: Option<NaiveDate>,
        updated_at: Option<i64>,
        deleted: bool,
        scope: Option<&str>,
    ) {
        let scope = scope.map(|c| match self.scope_index.get(c) {
            Some(i) => *i,
            None => {
                let i = self.scopes.len() as u32;
                self.scopes.push(c.to_string());
                self.scope_index.insert(c.to_string(), i);
                i
            }
        });
        let stored = Stored {
            dt,
            updated_at,
            deleted,
            scope,
        };
        self.entries.push((normalize::key_hash(key), stored));
    }

    /// Sorts by hash; of a key added twice, the later stays.
    pub fn finish(mut self) -> Self {
        self.entries.reverse();
        self.entries.sort_by_key(|e| e.0); // stable: the later first
        self.entries.dedup_by_key(|e| e.0);
        self.entries.shrink_to_fit();
        self.scope_index = HashMap::new();
        self
    }

    /// The key with this hash: its position (for [`StoredKeys::iter`]) and
    /// what is stored.
    pub fn get(&self, hash: u128) -> Option<(usize, &Stored)> {
        let i = self.entries.binary_search_by_key(&hash, |e| e.0).ok()?;
        Some((i, &self.entries[i].1))
    }

    /// (position, key hash, what is stored) of every key.
    pub fn iter(&self) -> impl Iterator<Item = (usize, u128, &Stored)> {
        self.entries
            .iter()
            .enumerate()
            .map(|(i, (h, s))| (i, *h, s))
    }

    /// The `company_id` of a stored key.
    pub fn scope(&self, s: &Stored) -> Option<&str> {
        s.scope.map(|i| self.scopes[i as usize].as_str())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// An upsert stream's reading, compared with the warehouse.
pub struct Upserts {
    /// The rows to write (new or changed), and rejects.
    pub extracted: Extracted,
    /// Stored keys whose rows are rewritten (changed or back from deleted),
    /// as [`normalize::key_hash`]es.
    pub replace: std::collections::HashSet<u128>,
    /// Keys gone from the source (hashed): their rows are kept with
    /// `deleted_at` set.
    pub tombstones: std::collections::HashSet<u128>,
    /// Stored rows not marked deleted, within what this read covers (the
    /// base of the mass-delete guard).
    pub live: usize,
    /// Latest `updatedAt` read.
    pub high_water: Option<DateTime<Utc>>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_keys_keep_the_later_of_a_key_and_find_every_key() {
        let day = |d| NaiveDate::from_ymd_opt(2025, 3, d);
        let mut keys = StoredKeys::default();
        for i in 0..1000u32 {
            let scope = ["c1", "c2", "c3"][i as usize % 3];
            keys.push(&format!("k{i}"), day(1), Some(i as i64), false, Some(scope));
        }
        // k7 again, later: it moved to another day and was deleted.
        keys.push("k7", day(9), Some(70), true, None);
        let keys = keys.finish();
        assert_eq!(keys.len(), 1000);
        for i in 0..1000u32 {
            let (_, s) = keys.get(normalize::key_hash(&format!("k{i}"))).unwrap();
            if i == 7 {
                assert_eq!((s.dt, s.updated_at, s.deleted), (day(9), Some(70), true));
                assert_eq!(keys.scope(s), None);
            } else {
                assert_eq!(
                    (s.dt, s.updated_at, s.deleted),
                    (day(1), Some(i as i64), false)
                );
                assert_eq!(keys.scope(s), Some(["c1", "c2", "c3"][i as usize % 3]));
            }
        }
        assert!(keys.get(normalize::key_hash("k1000")).is_none());
        // Positions are those `iter` gives.
        for (i, h, s) in keys.iter() {
            assert_eq!(keys.get(h), Some((i, s)));
        }
        // What a million keys cost.
        assert!(std::mem::size_of::<(u128, Stored)>() <= 48);
    }
}
