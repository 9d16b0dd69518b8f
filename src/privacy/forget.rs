//! `chatlake forget`: erases one person from the warehouse and keeps them
//! out. It finds every row linked to the identifiers given (the columns of
//! [`FOUND_IN`], then the messages of the chats and conversations found),
//! (and in the text of meta.rejects, meta.alerts and meta.deliveries),
//! rewrites each file that holds one without it (one PUT per file: readers
//! see the old or the new file), puts the identifiers' keyed hashes on the
//! suppression list, and records the erasure in meta.erasures (hashes and
//! counts, never an identifier).
//!
//! Order, so that a `kill -9` anywhere is finished by running `forget`
//! again: the journal (`_erasure.json`: the request's hashes and the rows
//! found) and the suppression list are written first, then the files, then
//! meta.erasures, then the journal is removed. A `forget` that finds a
//! journal of another request finishes that one first (by the hashes alone).

use std::collections::{BTreeSet, HashSet};

use arrow::array::{Array, BooleanArray, StringArray};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, NaiveDate, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::suppress::{self, IdKind, Suppressions, CARRIES};
use super::{hash, Action, Policy};
use crate::error::{Error, Result};
use crate::normalize::{build_batch, time, Cell, Row};
use crate::schema::{self, TableDef};
use crate::sink::{partition, Warehouse};

/// meta.rejects: searched in its raw JSON.
const REJECTS: &str = "meta.rejects";

/// The notices tables, searched in their text: an SQL alert rule's key and
/// detail (`col=value, ...`) and a delivery's subject can name a person.
const NOTICES: &[(&str, &[&str])] = &[
    ("meta.alerts", &["alert_key", "detail"]),
    ("meta.deliveries", &["subject", "error"]),
];

/// What one table held of the person.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TableOutcome {
    pub table: String,
    pub rows: u64,
    /// Files (partitions) that held rows of the person.
    pub files: u64,
    /// Columns the policy drops, so rows could not be found by them.
    pub not_searched: Vec<String>,
}

/// The outcome of a `forget`.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub erasure_id: String,
    pub tables: Vec<TableOutcome>,
    /// People on the suppression list afterwards.
    pub suppressed_people: usize,
    /// An earlier erasure this one finished first (killed before its end).
    pub finished_earlier: Option<String>,
    /// This request had begun before and was finished now.
    pub resumed: bool,
}

/// The journal of an erasure in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Journal {
    erasure_id: String,
    requested_at: DateTime<Utc>,
    requested_by: Option<String>,
    /// (kind, keyed hash) of each identifier asked for.
    identifiers: BTreeSet<(IdKind, String)>,
    /// The chats and conversations found (keyed hashes): a resumed erasure
    /// finds their messages by them, the chats being gone already.
    found: BTreeSet<(IdKind, String)>,
    tables: Vec<TableOutcome>,
}

/// The identifiers searched for: as given (normalized) where known, and as
/// keyed hashes (what a hashed column holds).
struct Targets {
    key: String,
    plain: HashSet<(IdKind, String)>,
    hashed: HashSet<(IdKind, String)>,
    /// Kinds whose values read are hashed to be compared (their plain
    /// values are unknown: an erasure resumed from its journal).
    hash_kinds: HashSet<IdKind>,
}

impl Targets {
    fn new(key: &str) -> Self {
        Targets {
            key: key.to_string(),
            plain: HashSet::new(),
            hashed: HashSet::new(),
            hash_kinds: HashSet::new(),
        }
    }

    /// Adds what a journal knows by hash only: the chats and conversations
    /// found (and, for `all`, the identifiers asked for too).
    fn resume(&mut self, j: &Journal, all: bool) {
        let known = j.found.iter().chain(j.identifiers.iter().filter(|_| all));
        for (kind, h) in known {
            self.hash_kinds.insert(*kind);
            self.hashed.insert((*kind, h.clone()));
        }
    }

    fn add(&mut self, kind: IdKind, value: &str) {
        let n = kind.normalize(value);
        self.hashed.insert((kind, hash::keyed(&self.key, &n)));
        self.plain.insert((kind, n));
    }

    fn matches(&self, kind: IdKind, value: &str) -> bool {
        let n = kind.normalize(value);
        if n.is_empty() {
            return false;
        }
        self.plain.contains(&(kind, n.clone()))
            || self.hashed.contains(&(kind, value.trim().to_string()))
            || (self.hash_kinds.contains(&kind)
                && self.hashed.contains(&(kind, hash::keyed(&self.key, &n))))
    }

    /// Whether a rejected record's JSON names the person: a value equal to
    /// an identifier (as any kind), or free text containing an email or
    /// the digits of a phone number.
    fn in_json(&self, raw: &str) -> bool {
        let Ok(v) = serde_json::from_str::<Value>(raw) else {
            return self.in_text(raw);
        };
        let mut found = false;
        suppress::walk(&v, &mut |s| {
            found =
                found || suppress::ALL_KINDS.iter().any(|k| self.matches(*k, s)) || self.in_text(s);
        });
        found
    }

    /// Whether a notice's text names the person: a field of `col=value,
    /// ...` (or of a subject's `(...)`) equal to an identifier (as any kind),
    /// or containing an email or the digits of a phone number.
    pub(super) fn in_fields(&self, text: &str) -> bool {
        text.split([',', '=', '(', ')'])
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .any(|t| suppress::ALL_KINDS.iter().any(|k| self.matches(*k, t)) || self.in_text(t))
    }

    fn in_text(&self, s: &str) -> bool {
        let lower = s.to_lowercase();
        let digits: String = s.chars().filter(char::is_ascii_digit).collect();
        self.plain.iter().any(|(k, v)| match k {
            IdKind::Email => lower.contains(v.as_str()),
            IdKind::Phone => {
                let d = v.trim_start_matches('+');
                d.len() >= 7 && digits.contains(d)
            }
            _ => false,
        })
    }
}

/// One Parquet file of a table, and the partition it is in.
pub(super) struct File {
    pub dt: Option<NaiveDate>,
    pub path: Path,
}

/// The Parquet files of `table` (every partition; the append files of a
/// meta table).
pub(super) async fn files(wh: &Warehouse, table: &TableDef) -> Result<Vec<File>> {
    let dir = partition::table_dir(wh.root(), table);
    let listed: Vec<_> = match wh.store().list(Some(&dir)).try_collect().await {
        Ok(l) => l,
        Err(object_store::Error::NotFound { .. }) => Vec::new(),
        Err(e) => return Err(Error::store(&dir, e)),
    };
    let mut out: Vec<File> = listed
        .into_iter()
        .filter(|m| m.location.extension() == Some("parquet"))
        .map(|m| File {
            dt: m
                .location
                .parts()
                .find_map(|p| partition::parse_partition(p.as_ref())),
            path: m.location,
        })
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// A text column of a batch (None: the file has no such column).
fn strings(batch: &RecordBatch, column: &str) -> Option<StringArray> {
    let c = batch.column_by_name(column)?;
    let c = if c.data_type() == &DataType::Utf8 {
        c.clone()
    } else {
        arrow::compute::cast(c, &DataType::Utf8).ok()?
    };
    c.as_any().downcast_ref::<StringArray>().cloned()
}

/// Which rows of `batch` (of `table`) are the person's.
fn mask(table: &str, batch: &RecordBatch, targets: &Targets) -> BooleanArray {
    let n = batch.num_rows();
    let mut hit = vec![false; n];
    if table == REJECTS {
        if let Some(raw) = strings(batch, "raw_json") {
            for (i, v) in raw.iter().enumerate() {
                hit[i] = v.is_some_and(|v| targets.in_json(v));
            }
        }
    }
    for (_, columns) in NOTICES.iter().filter(|(t, _)| *t == table) {
        for column in *columns {
            if let Some(values) = strings(batch, column) {
                for (i, v) in values.iter().enumerate() {
                    hit[i] = hit[i] || v.is_some_and(|v| targets.in_fields(v));
                }
            }
        }
    }
    for (kind, t, column) in suppress::FOUND_IN {
        if *t != table {
            continue;
        }
        if let Some(values) = strings(batch, column) {
            for (i, v) in values.iter().enumerate() {
                hit[i] = hit[i] || v.is_some_and(|v| targets.matches(*kind, v));
            }
        }
    }
    BooleanArray::from(hit)
}

/// The columns `mask` reads for `table`.
fn columns_of(table: &str) -> Vec<&'static str> {
    let mut cols: Vec<&str> = suppress::FOUND_IN
        .iter()
        .filter(|(_, t, _)| *t == table)
        .map(|(_, _, c)| *c)
        .collect();
    cols.extend(
        CARRIES
            .iter()
            .filter(|(t, ..)| *t == table)
            .map(|(_, c, _)| *c),
    );
    if table == REJECTS {
        cols.push("raw_json");
    }
    for (_, columns) in NOTICES.iter().filter(|(t, _)| *t == table) {
        cols.extend(columns.iter());
    }
    cols.dedup();
    cols
}

/// A file found to hold rows of the person.
struct Hit {
    table: &'static TableDef,
    path: Path,
}

/// Searches every table; adds the chats and conversations found to
/// `targets`. Returns the files with rows of the person, and per table
/// what was found.
async fn search(
    wh: &Warehouse,
    policy: &Policy,
    targets: &mut Targets,
) -> Result<(Vec<Hit>, Vec<TableOutcome>)> {
    let mut hits = Vec::new();
    let mut outcomes = Vec::new();
    let mut order: Vec<&str> = suppress::search_order()
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    order.push(REJECTS);
    order.extend(NOTICES.iter().map(|(t, _)| *t));
    // Chat messages live in their chat's partition: only those are read.
    let mut chat_dts: BTreeSet<Option<NaiveDate>> = BTreeSet::new();
    for name in order {
        let table = schema::table(name);
        let cols = columns_of(name);
        let mut outcome = TableOutcome {
            table: name.to_string(),
            rows: 0,
            files: 0,
            not_searched: suppress::FOUND_IN
                .iter()
                .filter(|(_, t, c)| *t == name && policy.action(t, c) == Action::Drop)
                .map(|(_, t, c)| format!("{t}.{c}"))
                .collect(),
        };
        for f in files(wh, table).await? {
            // (Resumed, the chats may be gone already: every partition.)
            let resumed = targets.hash_kinds.contains(&IdKind::Chat);
            if table.partition_by.as_deref() == Some("parent")
                && !resumed
                && !chat_dts.contains(&f.dt)
            {
                continue;
            }
            let mut rows = 0;
            for batch in wh.read_file(&f.path, Some(&cols)).await? {
                let m = mask(name, &batch, targets);
                let found = m.true_count();
                if found == 0 {
                    continue;
                }
                rows += found as u64;
                for (t, column, kind) in CARRIES {
                    if *t != name {
                        continue;
                    }
                    let ids = strings(&batch, column);
                    for (i, id) in ids.iter().flat_map(|a| a.iter()).enumerate() {
                        if let Some(id) = id.filter(|_| m.value(i)) {
                            targets.add(*kind, id);
                        }
                    }
                    if *kind == IdKind::Chat {
                        chat_dts.insert(f.dt);
                    }
                }
            }
            if rows > 0 {
                outcome.rows += rows;
                outcome.files += 1;
                hits.push(Hit {
                    table,
                    path: f.path,
                });
            }
        }
        outcomes.push(outcome);
    }
    Ok((hits, outcomes))
}

/// Rewrites one file without the person's rows (deleted when none is
/// left). Returns the rows removed.
async fn rewrite(wh: &Warehouse, hit: &Hit, targets: &Targets) -> Result<u64> {
    let removed = wh
        .remove_rows(hit.table, &hit.path, |b| mask(&hit.table.name, b, targets))
        .await?;
    tracing::info!(table = %hit.table.name, file = %hit.path, rows = removed, "erased");
    Ok(removed)
}

async fn read_journal(wh: &Warehouse, pipeline: &str) -> Result<Option<Journal>> {
    let path = partition::erasure_journal(wh.root(), pipeline);
    match wh.store().get(&path).await {
        Ok(got) => {
            let bytes = got.bytes().await.map_err(|e| Error::store(&path, e))?;
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::File {
                    path: path.to_string(),
                    message: format!("the journal of an unfinished erasure is not readable: {e}"),
                })
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(Error::store(&path, e)),
    }
}

/// Erases the people `ids` name, under the pipeline's policy (its key
/// makes the hashes). The caller holds the pipeline's lock unless
/// `dry_run` (which writes nothing).
pub async fn forget(
    wh: &Warehouse,
    pipeline: &crate::config::Pipeline,
    ids: &[(IdKind, String)],
    requested_by: Option<&str>,
    dry_run: bool,
) -> Result<Outcome> {
    let name = &pipeline.config.name;
    let policy = pipeline.policy.as_deref().filter(|p| p.key().is_some()).ok_or_else(|| {
        Error::Usage(format!(
            "forget: pipeline {name} has no [privacy] key; the erasure record and the suppression list keep identifiers only as keyed hashes. \
             Add [privacy] with key = \"${{CHATLAKE_PRIVACY_KEY}}\" (email = \"keep\" and phone = \"keep\" keep the data as it is)"
        ))
    })?;
    let key = policy
        .key()
        .map(|k| k.expose().to_string())
        .unwrap_or_default();
    super::check_key_with(wh, name, Some(policy), false, !dry_run).await?;
    let mut finished_earlier = None;
    let mut journal = read_journal(wh, name).await?;
    let asked: BTreeSet<(IdKind, String)> = ids
        .iter()
        .map(|(k, v)| (*k, hash::keyed(&key, &k.normalize(v))))
        .collect();
    if let Some(j) = journal.take() {
        if j.identifiers == asked {
            journal = Some(j);
        } else if !dry_run {
            // An earlier request, killed before its end: finished first.
            let mut targets = Targets::new(&key);
            targets.resume(&j, true);
            finished_earlier = Some(j.erasure_id.clone());
            erase(wh, pipeline, policy, j, targets, None).await?;
        }
    }
    let mut targets = Targets::new(&key);
    for (k, v) in ids {
        targets.add(*k, v);
    }
    if let Some(j) = &journal {
        targets.resume(j, false);
    }
    let resumed = journal.is_some();
    let (hits, tables) = search(wh, policy, &mut targets).await?;
    let now = Utc::now();
    let journal = journal.unwrap_or_else(|| Journal {
        // Named like a run id: meta tables read `<UTC start>-*.parquet`.
        erasure_id: format!(
            "{}-{:06x}",
            now.format("%Y%m%dT%H%M%SZ"),
            fastrand::u32(..0x100_0000)
        ),
        requested_at: now,
        // Always redacted: a request often quotes whom it is about.
        requested_by: requested_by.map(super::redact::text),
        identifiers: asked,
        found: targets.found_hashes().into_iter().collect(),
        tables: tables.clone(),
    });
    let list = Suppressions::load(wh, name).await?;
    if dry_run {
        let people = list.people() + ids.len();
        return Ok(Outcome {
            erasure_id: journal.erasure_id,
            tables,
            suppressed_people: people,
            finished_earlier,
            resumed,
        });
    }
    let out = erase(wh, pipeline, policy, journal, targets, Some(hits)).await?;
    Ok(Outcome {
        finished_earlier,
        resumed,
        ..out
    })
}

/// Writes the journal and the suppression list, rewrites every file that
/// holds the person (`hits`, or searched for now), records the erasure,
/// removes the journal.
async fn erase(
    wh: &Warehouse,
    pipeline: &crate::config::Pipeline,
    policy: &Policy,
    journal: Journal,
    mut targets: Targets,
    hits: Option<Vec<Hit>>,
) -> Result<Outcome> {
    let name = &pipeline.config.name;
    let journal_path = partition::erasure_journal(wh.root(), name);
    let body = serde_json::to_vec_pretty(&journal).map_err(|e| Error::Internal(e.to_string()))?;
    wh.store()
        .put(&journal_path, body.into())
        .await
        .map_err(|e| Error::store(&journal_path, e))?;
    let hits = match hits {
        Some(h) => h,
        None => search(wh, policy, &mut targets).await?.0,
    };
    // Kept out from now on, before a single file changes.
    let mut list = Suppressions::load(wh, name).await?;
    for (kind, h) in journal
        .identifiers
        .iter()
        .chain(targets.found_hashes().iter())
    {
        list.add(*kind, h.clone(), &journal.erasure_id);
    }
    list.save(wh, name, policy.key_fingerprint()).await?;
    for (i, hit) in hits.iter().enumerate() {
        rewrite(wh, hit, &targets).await?;
        // Tests kill `forget` here (as kill -9 would) and run it again.
        crate::pipeline::failpoint(&format!("forget@file-{}", i + 1));
    }
    // Alerts firing for the person are forgotten, not resolved: a
    // "resolved" notice would name them again.
    let dropped =
        crate::notify::alerts::forget_alerts(wh, name, |key| targets.in_fields(key)).await?;
    if dropped > 0 {
        tracing::info!(alerts = dropped, "erased from the alerts firing");
    }
    // The record: one row per table searched, with what the first search
    // found (a resumed erasure counts what the killed one had found).
    let table = schema::table("meta.erasures");
    let erased_at = Utc::now();
    let identifiers: Vec<String> = journal
        .identifiers
        .iter()
        .map(|(k, h)| format!("{}:{h}", k.as_str()))
        .collect();
    let rows = journal
        .tables
        .iter()
        .map(|t| {
            let cells = vec![
                ("erasure_id", Cell::Str(journal.erasure_id.clone())),
                ("pipeline", Cell::Str(name.clone())),
                (
                    "requested_at",
                    Cell::Micros(time::micros(journal.requested_at)),
                ),
                ("erased_at", Cell::Micros(time::micros(erased_at))),
                (
                    "requested_by",
                    journal.requested_by.clone().map_or(Cell::Null, Cell::Str),
                ),
                ("identifiers", Cell::List(identifiers.clone())),
                ("table_name", Cell::Str(t.table.clone())),
                ("rows", Cell::Int(t.rows as i64)),
                ("files", Cell::Int(t.files as i64)),
                ("not_searched", Cell::List(t.not_searched.clone())),
            ];
            Row::named(table, cells, time::micros(erased_at))
        })
        .collect::<Result<Vec<_>>>()?;
    let batch = build_batch(table, &journal.erasure_id, &rows)?;
    let dt = time::local_date(journal.requested_at, pipeline.tz);
    let file = format!("{}-forget", journal.erasure_id);
    wh.append(table, dt, &file, &batch).await?;
    match wh.store().delete(&journal_path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(Error::store(&journal_path, e)),
    }
    Ok(Outcome {
        erasure_id: journal.erasure_id,
        tables: journal.tables,
        suppressed_people: list.people(),
        finished_earlier: None,
        resumed: false,
    })
}

impl Targets {
    /// The hashes of the chats and conversations found (their messages
    /// are dropped by later runs too).
    fn found_hashes(&self) -> Vec<(IdKind, String)> {
        self.hashed
            .iter()
            .filter(|(k, _)| CARRIES.iter().any(|(_, _, c)| c == k))
            .cloned()
            .collect()
    }
}
