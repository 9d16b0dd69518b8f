//! Who `chatlake forget` erased, kept out for good: the suppression list
//! (`_state/<pipeline>/_suppressed.json`, keyed hashes only) and the rule
//! that finds one person's rows, shared by `forget` (in the warehouse) and
//! every run (each row before it is held, each rejected record before it
//! is written). A row is that person's when one of its identifying columns
//! ([`FOUND_IN`]) holds an identifier on the list; a found chat or Social25
//! conversation adds its own id, which finds its messages, stats and
//! failed syncs ([`CARRIES`]).

use std::collections::BTreeMap;
use std::sync::RwLock;

use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::hash;
use crate::error::{Error, Result};
use crate::normalize::{Cell, Row};
use crate::schema::{Personal, TableDef};
use crate::sink::{partition, Warehouse};

/// What an identifier is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdKind {
    Email,
    Phone,
    /// A Social Intents visitor id.
    VisitorId,
    /// A CRM contact id.
    ContactId,
    /// A Social25 user id.
    Social25User,
    /// A Social Intents chat of the person (finds its messages).
    Chat,
    /// A Social25 conversation of the person (its messages, stats, failed syncs).
    Social25Conversation,
}

impl IdKind {
    /// The name in the suppression list, meta.erasures and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            IdKind::Email => "email",
            IdKind::Phone => "phone",
            IdKind::VisitorId => "visitor_id",
            IdKind::ContactId => "contact_id",
            IdKind::Social25User => "social25_user",
            IdKind::Chat => "socialintents_chat",
            IdKind::Social25Conversation => "social25_conversation",
        }
    }

    /// `value` as it is compared and hashed: the same normalization as a
    /// hashed column of this kind, so a hash on the list equals the
    /// column's hashed value.
    pub fn normalize(self, value: &str) -> String {
        let kind = match self {
            IdKind::Email => Some(Personal::Email),
            IdKind::Phone => Some(Personal::Phone),
            _ => Some(Personal::PersonId),
        };
        hash::normalize(kind, value)
    }
}

/// Where each kind of identifier is found: (kind, table, column).
pub const FOUND_IN: &[(IdKind, &str, &str)] = &[
    (IdKind::Email, "socialintents.chats", "visitor_email"),
    (IdKind::Phone, "socialintents.chats", "visitor_phone"),
    (IdKind::VisitorId, "socialintents.chats", "visitor_id"),
    (IdKind::Chat, "socialintents.chat_messages", "chat_id"),
    (
        IdKind::Email,
        "socialintents.offline_messages",
        "visitor_email",
    ),
    (
        IdKind::Phone,
        "socialintents.offline_messages",
        "visitor_phone",
    ),
    (
        IdKind::VisitorId,
        "socialintents.offline_messages",
        "visitor_id",
    ),
    (IdKind::Email, "socialintents.contacts", "email"),
    (IdKind::Phone, "socialintents.contacts", "phone"),
    (IdKind::Email, "crm.contacts", "email"),
    (IdKind::Phone, "crm.contacts", "phone"),
    (IdKind::ContactId, "crm.contacts", "contact_id"),
    (IdKind::Email, "crm.conversations", "visitor_email"),
    (IdKind::Social25User, "social25.conversations", "user_id"),
    (IdKind::Phone, "social25.conversations", "user_phone"),
    (
        IdKind::Social25Conversation,
        "social25.messages",
        "conversation_id",
    ),
    (
        IdKind::Social25Conversation,
        "social25.conversation_stats",
        "conversation_id",
    ),
    (
        IdKind::Social25Conversation,
        "social25.failed_syncs",
        "conversation_id",
    ),
];

/// A found row of these tables makes its id an identifier too: (table,
/// column, kind). Their tables come before the tables they lead to in
/// [`FOUND_IN`]'s order of search ([`search_order`]).
pub const CARRIES: &[(&str, &str, IdKind)] = &[
    ("socialintents.chats", "chat_id", IdKind::Chat),
    (
        "social25.conversations",
        "conversation_id",
        IdKind::Social25Conversation,
    ),
];

/// The tables `forget` searches, carriers first, with the columns to look at.
pub fn search_order() -> Vec<(&'static str, Vec<(IdKind, &'static str)>)> {
    let mut tables: Vec<&str> = Vec::new();
    for (_, t, _) in FOUND_IN {
        if !tables.contains(t) {
            tables.push(t);
        }
    }
    let carrier = |t: &&str| CARRIES.iter().any(|(c, ..)| c == t);
    tables.sort_by_key(|t| !carrier(t));
    tables
        .into_iter()
        .map(|t| {
            let cols = FOUND_IN
                .iter()
                .filter(|(_, ft, _)| *ft == t)
                .map(|(k, _, c)| (*k, *c))
                .collect();
            (t, cols)
        })
        .collect()
}

/// One entry of the suppression list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub kind: IdKind,
    /// HMAC-SHA256 of the normalized identifier under the pipeline's key.
    pub hash: String,
    /// The erasure that added it (or the run that found it, for a chat or
    /// conversation of a suppressed person).
    pub by: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ListFile {
    key_fingerprint: Option<String>,
    entries: Vec<Entry>,
}

/// The suppression list of a pipeline, as a run or `forget` holds it.
#[derive(Debug, Default)]
pub struct Suppressions {
    entries: BTreeMap<(IdKind, String), String>,
    /// Entries added since it was loaded (saved at the end of a run).
    grown: bool,
}

impl Suppressions {
    /// The list of `pipeline` in `wh` (empty when there is none).
    pub async fn load(wh: &Warehouse, pipeline: &str) -> Result<Suppressions> {
        let path = partition::suppression_file(wh.root(), pipeline);
        let bytes = match wh.store().get(&path).await {
            Ok(got) => got.bytes().await.map_err(|e| Error::store(&path, e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(Suppressions::default()),
            Err(e) => return Err(Error::store(&path, e)),
        };
        let file: ListFile = serde_json::from_slice(&bytes).map_err(|e| Error::File {
            path: path.to_string(),
            message: format!("the suppression list is not readable ({e}); restore it from a backup: without it, erased people come back"),
        })?;
        Ok(Suppressions {
            entries: file
                .entries
                .into_iter()
                .map(|e| ((e.kind, e.hash), e.by))
                .collect(),
            grown: false,
        })
    }

    /// Writes the list (one PUT: readers see the old or the new list).
    pub async fn save(
        &mut self,
        wh: &Warehouse,
        pipeline: &str,
        fingerprint: Option<String>,
    ) -> Result<()> {
        let path = partition::suppression_file(wh.root(), pipeline);
        let file = ListFile {
            key_fingerprint: fingerprint,
            entries: self
                .entries
                .iter()
                .map(|((kind, hash), by)| Entry {
                    kind: *kind,
                    hash: hash.clone(),
                    by: by.clone(),
                })
                .collect(),
        };
        let body = serde_json::to_vec_pretty(&file).map_err(|e| Error::Internal(e.to_string()))?;
        wh.store()
            .put(&path, body.into())
            .await
            .map_err(|e| Error::store(&path, e))?;
        self.grown = false;
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether entries were added since the list was loaded or saved.
    pub fn grown(&self) -> bool {
        self.grown
    }

    /// Adds an entry; whether it is new.
    pub fn add(&mut self, kind: IdKind, hash: String, by: &str) -> bool {
        let new = !self.entries.contains_key(&(kind, hash.clone()));
        if new {
            self.entries.insert((kind, hash), by.to_string());
            self.grown = true;
        }
        new
    }

    pub fn contains(&self, kind: IdKind, hash: &str) -> bool {
        self.entries.contains_key(&(kind, hash.to_string()))
    }

    /// The people the list holds (the identifiers a person was erased by,
    /// not the chats and conversations found with them).
    pub fn people(&self) -> usize {
        self.entries
            .keys()
            .filter(|(k, _)| !matches!(k, IdKind::Chat | IdKind::Social25Conversation))
            .count()
    }
}

/// What a run checks each row against: the list, under the key it was
/// made with. Rows it drops are counted by the buffers (meta.runs
/// `suppressed`).
#[derive(Debug)]
pub struct Suppressor {
    key: String,
    list: RwLock<Suppressions>,
    /// No entry: nothing to hash.
    empty: bool,
    run_id: String,
}

impl Suppressor {
    pub fn new(key: &str, list: Suppressions, run_id: &str) -> Self {
        Suppressor {
            key: key.to_string(),
            empty: list.is_empty(),
            list: RwLock::new(list),
            run_id: run_id.to_string(),
        }
    }

    fn hashed(&self, kind: IdKind, value: &str) -> String {
        hash::keyed(&self.key, &kind.normalize(value))
    }

    /// Whether `row` of `table` (as the API sent it, before the policy)
    /// belongs to a suppressed person; a suppressed chat or conversation
    /// puts its id on the list, so that its messages are dropped too.
    pub fn row(&self, table: &TableDef, row: &Row) -> bool {
        if self.empty {
            return false;
        }
        let value = |column: &str| match table.index_of(column).map(|i| &row.cells[i]) {
            Some(Cell::Str(s)) if !s.trim().is_empty() => Some(s.as_str()),
            _ => None,
        };
        let hashes: Vec<(IdKind, String)> = FOUND_IN
            .iter()
            .filter(|(_, t, _)| *t == table.name)
            .filter_map(|(kind, _, column)| Some((*kind, self.hashed(*kind, value(column)?))))
            .collect();
        if hashes.is_empty() {
            return false;
        }
        let found = {
            let list = self.list.read().unwrap_or_else(|p| p.into_inner());
            hashes.iter().any(|(k, h)| list.contains(*k, h))
        };
        if found {
            for (t, column, kind) in CARRIES {
                if let Some(id) = value(column).filter(|_| *t == table.name) {
                    let h = self.hashed(*kind, id);
                    let mut list = self.list.write().unwrap_or_else(|p| p.into_inner());
                    list.add(*kind, h, &self.run_id);
                }
            }
        }
        found
    }

    /// Whether a rejected record (its raw JSON) names a suppressed person:
    /// any string or number in it, taken as any kind of identifier.
    pub fn json(&self, raw: &str) -> bool {
        if self.empty {
            return false;
        }
        let Ok(v) = serde_json::from_str::<Value>(raw) else {
            return false;
        };
        let list = self.list.read().unwrap_or_else(|p| p.into_inner());
        let mut found = false;
        walk(&v, &mut |s| {
            if !found {
                found = ALL_KINDS
                    .iter()
                    .any(|k| list.contains(*k, &self.hashed(*k, s)));
            }
        });
        found
    }

    /// Saves the list if rows found during the run added to it.
    pub async fn save_if_grown(
        &self,
        wh: &Warehouse,
        pipeline: &str,
        fingerprint: Option<String>,
    ) -> Result<()> {
        let mut list = std::mem::take(&mut *self.list.write().unwrap_or_else(|p| p.into_inner()));
        let out = if list.grown() {
            list.save(wh, pipeline, fingerprint).await
        } else {
            Ok(())
        };
        *self.list.write().unwrap_or_else(|p| p.into_inner()) = list;
        out
    }
}

/// Every kind, for a value whose kind is unknown (a rejected record).
pub const ALL_KINDS: [IdKind; 7] = [
    IdKind::Email,
    IdKind::Phone,
    IdKind::VisitorId,
    IdKind::ContactId,
    IdKind::Social25User,
    IdKind::Chat,
    IdKind::Social25Conversation,
];

/// Calls `each` with every string and number of a JSON value (object keys
/// left out).
pub fn walk(v: &Value, each: &mut impl FnMut(&str)) {
    match v {
        Value::String(s) => each(s),
        Value::Number(n) => each(&n.to_string()),
        Value::Array(a) => a.iter().for_each(|x| walk(x, each)),
        Value::Object(o) => o.values().for_each(|x| walk(x, each)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema;

    const KEY: &str = "suppression-test-key-0123";

    fn row(table: &str, cells: Vec<(&str, &str)>) -> Row {
        let t = schema::table(table);
        let cells = cells
            .into_iter()
            .map(|(c, v)| (c, Cell::Str(v.to_string())))
            .collect();
        Row::named(t, cells, 0).unwrap()
    }

    /// A Social25 user on the list: their conversation is dropped, and so
    /// are its messages, stats and failed syncs (by the conversation id the
    /// dropped row put on the list); another user's are kept. An email on
    /// the list is found in any case, a phone in any spacing, and in a
    /// rejected record's JSON.
    #[test]
    fn a_listed_person_and_what_hangs_off_them_are_dropped() {
        let mut list = Suppressions::default();
        let h = |k: IdKind, v: &str| hash::keyed(KEY, &k.normalize(v));
        list.add(IdKind::Social25User, h(IdKind::Social25User, "u-1"), "e1");
        list.add(IdKind::Email, h(IdKind::Email, "ann.lee@example.org"), "e1");
        list.add(IdKind::Phone, h(IdKind::Phone, "+1 555 010 0042"), "e1");
        let s = Suppressor::new(KEY, list, "run-1");
        let conv = |id: &str, user: &str| {
            row(
                "social25.conversations",
                vec![("conversation_id", id), ("user_id", user)],
            )
        };
        let msg = |table: &str, id: &str, conv: &str| {
            row(table, vec![("message_id", id), ("conversation_id", conv)])
        };
        assert!(s.row(schema::table("social25.conversations"), &conv("c-1", "u-1")));
        assert!(!s.row(schema::table("social25.conversations"), &conv("c-2", "u-2")));
        for table in ["social25.messages", "social25.failed_syncs"] {
            assert!(
                s.row(schema::table(table), &msg(table, "m-1", "c-1")),
                "{table}"
            );
            assert!(
                !s.row(schema::table(table), &msg(table, "m-2", "c-2")),
                "{table}"
            );
        }
        let stats = row(
            "social25.conversation_stats",
            vec![("conversation_id", "c-1")],
        );
        assert!(s.row(schema::table("social25.conversation_stats"), &stats));
        let chat = |email: &str, phone: &str| {
            row(
                "socialintents.chats",
                vec![
                    ("chat_id", "x"),
                    ("visitor_email", email),
                    ("visitor_phone", phone),
                ],
            )
        };
        let chats = schema::table("socialintents.chats");
        assert!(s.row(chats, &chat(" Ann.Lee@EXAMPLE.org", "")));
        assert!(s.row(chats, &chat("other@example.org", "+1 (555) 010-0042")));
        assert!(!s.row(chats, &chat("other@example.org", "555 010 0042")));
        assert!(s.json(r#"{"visitorEmail": "ANN.LEE@example.org", "id": 7}"#));
        assert!(!s.json(r#"{"visitorEmail": "bob@example.org"}"#));
        // An empty list hashes nothing and drops nothing.
        let none = Suppressor::new(KEY, Suppressions::default(), "run-2");
        assert!(!none.row(chats, &chat("ann.lee@example.org", "")));
    }
}
