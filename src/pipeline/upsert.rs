//! Upsert streams (read whole every run, CRM) compared with the warehouse.
//! The source only streams records ([`Source::read_whole`]); here each is
//! compared by key with what the warehouse holds ([`StoredKeys`], read by
//! [`stored_keys`]): a record whose stored row has the same `updatedAt` and
//! is not marked deleted is not rewritten, a changed or resurrected one
//! replaces its stored row, and a stored live key the complete read no
//! longer has, within what the read covers ([`Source::upsert_scope`]), is
//! marked deleted. The latest `updatedAt` read is the stream's high water.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};

use crate::error::Result;
use crate::extract::{Extracted, Source, StreamSpec, UpsertRecord};
use crate::normalize::{self, key_hash, time, Reject, TableBuffer};
use crate::schema;
use crate::sink::Warehouse;

/// Reads `spec` whole from `source` and compares every record with
/// `stored`: what to write, which stored rows it replaces, which keys are
/// gone. Rows are held by a spilling buffer (a whole account is read).
pub(super) async fn compare(
    source: &dyn Source,
    spec: &StreamSpec,
    stored: &StoredKeys,
    run_id: &str,
    policy: &Option<Arc<crate::privacy::Policy>>,
) -> Result<Upserts> {
    let table = spec.tables[0];
    let mut up = Upserts {
        extracted: Extracted::new(spec, run_id, policy),
        replace: HashSet::new(),
        tombstones: HashSet::new(),
        live: 0,
        high_water: None,
    };
    up.extracted.buffers[0] = TableBuffer::spilling(table, run_id).with_policy(policy);
    // Which stored keys the source still has (one flag per stored key),
    // rejected records included.
    let mut present = vec![false; stored.len()];
    let Upserts {
        extracted,
        replace,
        high_water,
        ..
    } = &mut up;
    let (buffers, rejects) = (&mut extracted.buffers, &mut extracted.rejects);
    let mut on_record = |r: UpsertRecord<'_>| {
        let hash = r.id.map(key_hash);
        let was = hash.and_then(|h| stored.get(h));
        if let Some((i, _)) = was {
            present[i] = true;
        }
        match r.parsed {
            Ok(p) => {
                *high_water =
                    Some(high_water.map_or(p.updated, |h: DateTime<Utc>| h.max(p.updated)));
                let unchanged = was.is_some_and(|(_, s)| {
                    !s.deleted && s.updated_at == Some(time::micros(p.updated))
                });
                if unchanged {
                    return;
                }
                buffers[0].push(p.dt, p.row);
                // A stored row is replaced; a new key has none.
                if let (Some(h), Some(_)) = (hash, was) {
                    replace.insert(h);
                }
            }
            Err(reason) => rejects.push(Reject {
                table: table.name.clone(),
                reason,
                raw_json: r.raw.to_string(),
            }),
        }
    };
    let (pages, records) = source.read_whole(spec, &mut on_record).await?;
    up.extracted.pages = pages;
    up.extracted.records = records;
    // Gone from a complete read: marked, within what the read covers.
    let scope = source.upsert_scope(spec);
    for (i, hash, s) in stored.iter() {
        let in_scope = scope
            .as_ref()
            .is_none_or(|f| stored.scope(s).is_some_and(|c| f.contains(c)));
        if !s.deleted && in_scope {
            up.live += 1;
            if !present[i] {
                up.tombstones.insert(hash);
            }
        }
    }
    Ok(up)
}

/// Key -> what the warehouse holds for it: partition, `updated_at`, whether
/// `deleted_at` is set, and the scope column's value (if the stream has one).
pub(super) async fn stored_keys(
    wh: &Warehouse,
    table: &schema::TableDef,
    key_column: &str,
    scope_column: Option<&str>,
) -> Result<StoredKeys> {
    use arrow::array::{Array, StringArray, TimestampMicrosecondArray};
    let mut out = StoredKeys::default();
    let columns = [
        key_column,
        "updated_at",
        "deleted_at",
        scope_column.unwrap_or(key_column),
    ];
    wh.scan(table, &columns, |dt, b| {
        let text = |c: &str| {
            b.column_by_name(c)
                .and_then(|a| a.as_any().downcast_ref::<StringArray>().cloned())
        };
        let ts = |c: &str| {
            b.column_by_name(c).and_then(|a| {
                a.as_any()
                    .downcast_ref::<TimestampMicrosecondArray>()
                    .cloned()
            })
        };
        let (Some(keys), updated, deleted, company) = (
            text(key_column),
            ts("updated_at"),
            ts("deleted_at"),
            scope_column.and_then(text),
        ) else {
            return;
        };
        for i in 0..b.num_rows() {
            if keys.is_null(i) {
                continue;
            }
            out.push(
                keys.value(i),
                dt,
                updated
                    .as_ref()
                    .filter(|u| !u.is_null(i))
                    .map(|u| u.value(i)),
                deleted.as_ref().is_some_and(|d| !d.is_null(i)),
                company
                    .as_ref()
                    .filter(|c| !c.is_null(i))
                    .map(|c| c.value(i)),
            );
        }
    })
    .await?;
    Ok(out.finish())
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
