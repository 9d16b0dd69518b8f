//! The personal-data policy of a pipeline (`[privacy]`): what happens to
//! each kind of personal data (the `personal` tags of `schemas/`) before
//! any byte of it is written. Applied to every row as it enters a table
//! buffer (so spill files in the temporary directory hold the same values
//! as the warehouse), to `_extra`, and to `meta.rejects`.
//!
//! - `hash`: HMAC-SHA256 under the pipeline's key ([`hash`]), after
//!   normalizing (emails trimmed and lower-cased, phones reduced to their
//!   digits with a leading `+` kept), so one person has one value in every
//!   table, source and run;
//! - `drop`: null;
//! - `truncate` (IP addresses): IPv4 to its /24, IPv6 to its /48;
//! - `redact`: free text with emails, phones, payment cards and IP
//!   addresses replaced by `[email]`, `[phone]`, `[card]`, `[ip]`
//!   ([`redact`]); URLs without their query string and fragment.

pub mod apply;
pub mod forget;
pub mod hash;
pub mod redact;
pub mod retention;
pub mod suppress;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::Deserialize;
use serde_json::Value;

use crate::config::Secret;
use crate::normalize::{Cell, Row};
use crate::schema::{self, ColumnType, Personal, TableDef};

/// What happens to a column's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Keep,
    Hash,
    Drop,
    Truncate,
    Redact,
}

impl Action {
    /// The name used in `[privacy]`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Keep => "keep",
            Action::Hash => "hash",
            Action::Drop => "drop",
            Action::Truncate => "truncate",
            Action::Redact => "redact",
        }
    }
}

/// `[privacy]` in the pipeline file. A kind it does not name takes the
/// default of [`PrivacyConfig::action`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// The key of keyed hashing; required once anything is hashed.
    #[serde(default)]
    pub key: Option<Secret>,
    #[serde(default)]
    pub email: Option<Action>,
    #[serde(default)]
    pub phone: Option<Action>,
    #[serde(default)]
    pub name: Option<Action>,
    #[serde(default)]
    pub ip: Option<Action>,
    #[serde(default)]
    pub location: Option<Action>,
    #[serde(default)]
    pub device: Option<Action>,
    #[serde(default)]
    pub url: Option<Action>,
    #[serde(default)]
    pub free_text: Option<Action>,
    /// Names and emails of the support team (agents).
    #[serde(default)]
    pub staff: Option<Action>,
    /// Per-column overrides by qualified name (`socialintents.chats.visitor_name`).
    #[serde(default)]
    pub columns: BTreeMap<String, Action>,
    /// Local days a table keeps (today and the N-1 before); none: forever.
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// Per-table retention in days, by table name.
    #[serde(default)]
    pub retention: BTreeMap<String, u32>,
}

/// The actions a kind allows, and its default.
fn allowed(kind: Personal) -> (&'static [Action], Action) {
    use Action::*;
    match kind {
        Personal::Email | Personal::Phone => (&[Keep, Hash, Drop], Hash),
        Personal::Name | Personal::Staff => (&[Keep, Hash, Drop], Keep),
        Personal::Ip => (&[Keep, Truncate, Hash, Drop], Truncate),
        Personal::Location | Personal::Device => (&[Keep, Drop], Keep),
        Personal::Url => (&[Keep, Redact, Drop], Keep),
        Personal::FreeText => (&[Keep, Redact, Drop], Redact),
        Personal::PersonId => (&[Keep, Hash], Keep),
    }
}

impl PrivacyConfig {
    /// The action for `kind`: the section's value, else the default.
    pub fn action(&self, kind: Personal) -> Action {
        let set = match kind {
            Personal::Email => self.email,
            Personal::Phone => self.phone,
            Personal::Name => self.name,
            Personal::Ip => self.ip,
            Personal::Location => self.location,
            Personal::Device => self.device,
            Personal::Url => self.url,
            Personal::FreeText => self.free_text,
            Personal::Staff => self.staff,
            Personal::PersonId => None,
        };
        set.unwrap_or(allowed(kind).1)
    }

    /// Resolves the section into a [`Policy`] (pure, no I/O): every value
    /// allowed for its kind, every override naming a known string column,
    /// a key of at least 16 bytes when anything is hashed. Messages name
    /// the key and the value.
    pub fn policy(&self) -> Result<Policy, String> {
        for kind in Personal::CONFIGURABLE {
            let a = self.action(kind);
            let (ok, _) = allowed(kind);
            if !ok.contains(&a) {
                return Err(format!(
                    "privacy.{} = \"{}\": use {}",
                    kind.as_str(),
                    a.as_str(),
                    names(ok)
                ));
            }
        }
        let mut columns: BTreeMap<(String, String), Action> = BTreeMap::new();
        for t in schema::tables() {
            for c in &t.columns {
                if let Some(kind) = c.personal {
                    columns.insert((t.name.clone(), c.name.clone()), self.action(kind));
                }
            }
        }
        for (qualified, action) in &self.columns {
            let (table, column) = qualified
                .rsplit_once('.')
                .filter(|(t, _)| t.contains('.'))
                .ok_or_else(|| {
                    format!("privacy.columns.\"{qualified}\": name a column as <schema>.<table>.<column>")
                })?;
            let t = schema::tables()
                .find(|t| t.name == table)
                .ok_or_else(|| format!("privacy.columns.\"{qualified}\": no table {table}"))?;
            let c = t.columns.iter().find(|c| c.name == column).ok_or_else(|| {
                format!("privacy.columns.\"{qualified}\": {table} has no column {column}")
            })?;
            let ok: &[Action] = match (c.personal, c.ty) {
                (Some(kind), _) => allowed(kind).0,
                (None, ColumnType::String) => &[Action::Keep, Action::Hash, Action::Drop],
                (None, _) => &[Action::Keep, Action::Drop],
            };
            if !ok.contains(action) {
                return Err(format!(
                    "privacy.columns.\"{qualified}\" = \"{}\": use {}",
                    action.as_str(),
                    names(ok)
                ));
            }
            columns.insert((table.to_string(), column.to_string()), *action);
        }
        let hashes: Vec<String> = columns
            .iter()
            .filter(|(_, a)| **a == Action::Hash)
            .map(|((t, c), _)| format!("{t}.{c}"))
            .collect();
        let key = match (&self.key, hashes.first()) {
            (Some(k), _) if k.expose().len() >= 16 => Some(k.clone()),
            (Some(_), Some(_)) => {
                return Err("privacy.key: at least 16 characters (a random one: `openssl rand -base64 32`)".into())
            }
            (None, Some(first)) => {
                return Err(format!(
                    "privacy.key: required because {} column(s) are hashed ({first}...); set key = \"${{CHATLAKE_PRIVACY_KEY}}\"",
                    hashes.len()
                ))
            }
            (k, None) => k.clone(),
        };
        let free_text = self.action(Personal::FreeText);
        let by_table = schema::tables()
            .map(|t| {
                let actions = t
                    .columns
                    .iter()
                    .map(|c| {
                        columns
                            .get(&(t.name.clone(), c.name.clone()))
                            .copied()
                            .unwrap_or(Action::Keep)
                    })
                    .collect();
                (t.name.clone(), actions)
            })
            .collect();
        Ok(Policy {
            columns,
            by_table,
            key,
            extra: free_text,
            retention: retention::resolve(self.retention_days, &self.retention)?,
            report_retention: self.retention_days,
            suppressor: Default::default(),
        })
    }
}

fn names(actions: &[Action]) -> String {
    actions
        .iter()
        .map(|a| a.as_str())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// A resolved policy: the action of every column it changes.
#[derive(Debug, Clone)]
pub struct Policy {
    /// (table, column) -> action, for every tagged or overridden column.
    columns: BTreeMap<(String, String), Action>,
    /// Table -> the action of each of its columns, in schema order (what
    /// a row is put through: no lookup by name per value).
    by_table: std::collections::HashMap<String, Vec<Action>>,
    key: Option<Secret>,
    /// The action for `_extra` (the free-text one).
    extra: Action,
    /// Table -> days its partitions are kept.
    pub retention: BTreeMap<String, u32>,
    /// Days the dated copies of the HTML report are kept.
    pub report_retention: Option<u32>,
    /// The suppression list of the run in progress (shared by the clones
    /// of the policy the sources hold).
    suppressor: Arc<RwLock<Option<Arc<suppress::Suppressor>>>>,
}

impl Policy {
    /// The action on `table.column` (keep when the policy says nothing).
    pub fn action(&self, table: &str, column: &str) -> Action {
        self.columns
            .get(&(table.to_string(), column.to_string()))
            .copied()
            .unwrap_or(Action::Keep)
    }

    /// The key of keyed hashing, if any.
    pub fn key(&self) -> Option<&Secret> {
        self.key.as_ref()
    }

    /// Sets the suppression list a run checks rows against (None: none).
    pub fn set_suppressor(&self, s: Option<Arc<suppress::Suppressor>>) {
        *self.suppressor.write().unwrap_or_else(|p| p.into_inner()) = s;
    }

    /// The suppression list of the run in progress.
    pub fn suppressor(&self) -> Option<Arc<suppress::Suppressor>> {
        self.suppressor
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A fingerprint of the key (never the key): the warehouse keeps it, so
    /// that a run with another key is refused.
    pub fn key_fingerprint(&self) -> Option<String> {
        self.key
            .as_ref()
            .map(|k| hash::keyed(k.expose(), "chatlake privacy key fingerprint")[..16].to_string())
    }

    /// Applies the policy to a row of `table`, in place.
    pub fn apply(&self, table: &TableDef, row: &mut Row) {
        let actions = self.by_table.get(&table.name);
        for (i, c) in table.columns.iter().enumerate() {
            let action = match actions {
                Some(a) => a.get(i).copied().unwrap_or(Action::Keep),
                None => self.action(&table.name, &c.name),
            };
            if action == Action::Keep {
                continue;
            }
            let cell = std::mem::replace(&mut row.cells[i], Cell::Null);
            row.cells[i] = self.cell(c.personal, action, cell);
        }
        if let Some(extra) = row.extra.take() {
            row.extra = self.free_json(&extra);
        }
    }

    /// Text chatlake wrote around an outside value (a reject's reason):
    /// redacted unless free text is kept.
    pub fn message(&self, text: &str) -> String {
        match self.extra {
            Action::Keep => text.to_string(),
            _ => redact::text(text),
        }
    }

    /// JSON text (`_extra`, a rejected record's `raw_json`) under the
    /// free-text action: kept, dropped (None), or with every string value
    /// redacted (a text that is not JSON is redacted as text).
    pub fn free_json(&self, text: &str) -> Option<String> {
        match self.extra {
            Action::Drop => None,
            // Nothing a pattern could match (no `@`, no digit, no `::`):
            // as it is, without parsing it.
            Action::Redact
                if !text.contains('@')
                    && !text.contains("::")
                    && !text.bytes().any(|b| b.is_ascii_digit()) =>
            {
                Some(text.to_string())
            }
            Action::Redact => Some(redact_json_text(text)),
            _ => Some(text.to_string()),
        }
    }

    /// One value under `action` (for a column of `kind`).
    pub(crate) fn cell(&self, kind: Option<Personal>, action: Action, cell: Cell) -> Cell {
        let one = |s: String| -> Option<String> {
            match action {
                Action::Keep => Some(s),
                Action::Drop => None,
                // A value hashed already stays (rewriting under the
                // policy again changes nothing).
                Action::Hash if hash::is_hash(&s) => Some(s),
                Action::Hash => self
                    .key
                    .as_ref()
                    .map(|k| hash::keyed(k.expose(), &hash::normalize(kind, &s))),
                Action::Truncate => redact::truncate_ip(&s),
                Action::Redact if kind == Some(Personal::Url) => Some(redact::url(&s)),
                // JSON held as text (a rejected record, auxiliary data):
                // its string values, so that a bare phone number is found.
                Action::Redact if s.trim_start().starts_with(['{', '[']) => {
                    Some(redact_json_text(&s))
                }
                Action::Redact => Some(redact::text(&s)),
            }
        };
        match cell {
            Cell::Str(s) => one(s).map_or(Cell::Null, Cell::Str),
            Cell::List(items) if action != Action::Drop => {
                Cell::List(items.into_iter().filter_map(one).collect())
            }
            Cell::Null => Cell::Null,
            // Any other type is only ever kept or dropped.
            other if action == Action::Drop => {
                let _ = other;
                Cell::Null
            }
            other => other,
        }
    }
}

/// Checks the key against the fingerprint the warehouse keeps for
/// `pipeline`, and keeps this key's fingerprint when there is none yet (or
/// on `full_refresh`, which rewrites what it reads under the new key). A
/// different key is refused: hashes made with it would not join with the
/// earlier ones.
pub async fn check_key(
    wh: &crate::sink::Warehouse,
    pipeline: &str,
    policy: Option<&Policy>,
    full_refresh: bool,
) -> crate::error::Result<()> {
    check_key_with(wh, pipeline, policy, full_refresh, true).await
}

/// [`check_key`]; with `write` false, nothing is written (a dry run).
pub async fn check_key_with(
    wh: &crate::sink::Warehouse,
    pipeline: &str,
    policy: Option<&Policy>,
    full_refresh: bool,
    write: bool,
) -> crate::error::Result<()> {
    use crate::error::Error;
    use object_store::ObjectStoreExt;
    let Some(fingerprint) = policy.and_then(Policy::key_fingerprint) else {
        return Ok(());
    };
    let path = crate::sink::partition::privacy_file(wh.root(), pipeline);
    let stored = match wh.store().get(&path).await {
        Ok(got) => {
            let bytes = got.bytes().await.map_err(|e| Error::store(&path, e))?;
            serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("key_fingerprint")?.as_str().map(str::to_string))
        }
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => return Err(Error::store(&path, e)),
    };
    match stored {
        Some(s) if s == fingerprint => return Ok(()),
        Some(s) if !full_refresh => {
            return Err(Error::Usage(format!(
                "[privacy] key: not the key this warehouse's hashes were made with (key fingerprint {fingerprint}, the warehouse's {s}); \
                 hashed values would no longer join with earlier ones. Set the earlier key back, or run once with --full-refresh to re-read everything under the new key"
            )))
        }
        Some(s) => tracing::warn!(old = %s, new = %fingerprint, "privacy key changed: --full-refresh rewrites what it reads under the new key"),
        None => {}
    }
    if !write {
        return Ok(());
    }
    let body = serde_json::json!({ "key_fingerprint": fingerprint }).to_string();
    wh.store()
        .put(&path, body.into_bytes().into())
        .await
        .map_err(|e| Error::store(&path, e))?;
    Ok(())
}

/// What a run does before its first stream: checks the key
/// ([`check_key`]) and loads the suppression list into the policy, so
/// every row of an erased person is dropped before it is held. A list
/// without a key to check it with is refused: the people on it would come
/// back. So is a new key (even with `--full-refresh`) while the list is
/// not empty: its hashes were made with the old one.
pub async fn begin_run(
    wh: &crate::sink::Warehouse,
    pipeline: &str,
    policy: Option<&Policy>,
    full_refresh: bool,
    run_id: &str,
) -> crate::error::Result<()> {
    use crate::error::Error;
    let list = suppress::Suppressions::load(wh, pipeline).await?;
    let people = list.people();
    let key = policy.and_then(|p| p.key().map(|k| (p, k)));
    let Some((policy, key)) = key else {
        if list.is_empty() {
            return Ok(());
        }
        return Err(Error::Usage(format!(
            "pipeline {pipeline}: {people} people erased by `chatlake forget` are on the suppression list, \
             which needs the [privacy] key they were erased with; without it their records would come back"
        )));
    };
    let full_refresh = full_refresh
        && {
            if !list.is_empty() {
                check_key(wh, pipeline, Some(policy), false).await.map_err(|e| {
                Error::Usage(format!(
                    "{e}. A new key is refused even with --full-refresh while {people} people are on the suppression list (their hashes were made with the old key)"
                ))
            })?;
            }
            true
        };
    check_key(wh, pipeline, Some(policy), full_refresh).await?;
    policy.set_suppressor(Some(Arc::new(suppress::Suppressor::new(
        key.expose(),
        list,
        run_id,
    ))));
    Ok(())
}

/// What a run does after its last stream: saves the chats and
/// conversations of erased people it found (so a later run of one stream
/// drops their messages too), and lets the list go.
pub async fn end_run(
    wh: &crate::sink::Warehouse,
    pipeline: &str,
    policy: Option<&Policy>,
) -> crate::error::Result<()> {
    let Some(policy) = policy else {
        return Ok(());
    };
    let out = match policy.suppressor() {
        Some(s) => {
            s.save_if_grown(wh, pipeline, policy.key_fingerprint())
                .await
        }
        None => Ok(()),
    };
    policy.set_suppressor(None);
    out
}

/// JSON text with every string value redacted (object keys stay); text
/// that is not JSON is redacted as text.
fn redact_json_text(text: &str) -> String {
    let valid = serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
    valid
        .then(|| redact::json(text))
        .flatten()
        .unwrap_or_else(|| redact::text(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> PrivacyConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_values_and_keys_are_checked() {
        // The defaults hash emails and phones: a key is required.
        let e = config("").policy().unwrap_err();
        assert!(
            e.contains("privacy.key: required") && e.contains("CHATLAKE_PRIVACY_KEY"),
            "{e}"
        );
        let e = config("key = \"short\"").policy().unwrap_err();
        assert!(e.contains("at least 16"), "{e}");
        let e = config("key = \"0123456789abcdef\"\nlocation = \"hash\"")
            .policy()
            .unwrap_err();
        assert_eq!(e, "privacy.location = \"hash\": use keep | drop");
        // No hashing at all: no key needed.
        let p = config("email = \"drop\"\nphone = \"keep\"")
            .policy()
            .unwrap();
        assert_eq!(
            p.action("socialintents.chats", "visitor_email"),
            Action::Drop
        );
        assert_eq!(p.action("socialintents.chats", "ip"), Action::Truncate);
        assert_eq!(p.action("socialintents.chats", "text_body"), Action::Redact);
        assert_eq!(p.action("socialintents.chats", "chat_id"), Action::Keep);
        let e = config("email = \"drop\"\nphone = \"keep\"\n[columns]\n\"socialintents.chats.nope\" = \"drop\"")
            .policy()
            .unwrap_err();
        assert!(e.contains("has no column nope"), "{e}");
        let p = config(
            "email = \"keep\"\nphone = \"keep\"\n[columns]\n\"socialintents.chats.visitor_name\" = \"drop\"",
        )
        .policy()
        .unwrap();
        assert_eq!(
            p.action("socialintents.chats", "visitor_name"),
            Action::Drop
        );
        assert_eq!(p.action("socialintents.contacts", "name"), Action::Keep);
    }

    #[test]
    fn retention_applies_to_partitioned_data_tables_only() {
        let keep = "email = \"keep\"\nphone = \"keep\"\n";
        let p = config(&format!(
            "{keep}retention_days = 30\n[retention]\n\"socialintents.chat_messages\" = 7"
        ))
        .policy()
        .unwrap();
        assert_eq!(p.retention.get("socialintents.chats"), Some(&30));
        assert_eq!(p.retention.get("socialintents.chat_messages"), Some(&7));
        assert_eq!(p.retention.get("meta.rejects"), Some(&30));
        assert_eq!(p.retention.get("meta.runs"), None);
        assert_eq!(p.retention.get("crm.contacts"), Some(&30));
        assert_eq!(p.retention.get("socialintents.widgets"), None);
        for (bad, says) in [
            ("retention_days = 0", "at least 1"),
            (
                "[retention]\n\"socialintents.widgets\" = 30",
                "only partitioned data tables",
            ),
            (
                "[retention]\n\"meta.runs\" = 30",
                "only partitioned data tables",
            ),
            ("[retention]\n\"no.such\" = 30", "no such table"),
        ] {
            let e = config(&format!("{keep}{bad}")).policy().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
