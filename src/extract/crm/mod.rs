//! The CRM "Developer API" (`../shared/api-docs/crm-developer-api.txt`):
//! companies, contacts and conversations. Each endpoint returns one plain JSON
//! array, with no date filter and no pagination, so the incremental logic is
//! client-side:
//!
//! - the body goes to a temporary file, is checked there to be complete
//!   JSON, then walked from disk one record at a time
//!   ([`records::for_each_element`]), never held in memory or as one
//!   `Value` tree; the rows to write spill to disk as they come;
//! - a record is written only when the warehouse does not hold it with the
//!   same `updatedAt` (new, changed, resurrected, or never stored); unchanged
//!   rows are not rewritten;
//! - a key the warehouse holds as live but a complete response no longer has
//!   is marked: `deleted_at` is set and the row kept;
//! - with `company_ids`, contacts and conversations are read per company
//!   (`?companyId=`), companies are filtered here, and only rows of those
//!   companies can be marked deleted.

mod config;
pub mod records;

pub use config::CrmConfig;

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use futures::StreamExt;

use super::http::{Auth, HttpClient, Traffic};
use super::{Extracted, Registration, Source, StoredKeys, StreamKind, StreamSpec, Upserts};
use crate::config::HttpConfig;
use crate::error::{Error, Result};
use crate::normalize::{key_hash, time, Reject, TableBuffer};
use crate::schema;

/// The `[sources.crm]` key and stream prefix.
pub const NAME: &str = "crm";
const SOURCE: &str = NAME;

/// Registered in [`crate::extract::SOURCES`].
pub const REGISTRATION: Registration = Registration {
    name: NAME,
    parse: config::parse,
};

/// A configured CRM source.
pub struct Crm {
    pub(super) client: HttpClient,
    tz: Tz,
    cfg: CrmConfig,
    /// Applied to every row before it is buffered.
    pub(super) policy: Option<std::sync::Arc<crate::privacy::Policy>>,
}

impl Crm {
    /// Builds the source; `tz` is the pipeline timezone (conversation dt).
    pub fn new(cfg: &CrmConfig, http: &HttpConfig, tz: Tz) -> Result<Self> {
        Ok(Crm {
            client: HttpClient::new(
                SOURCE,
                &cfg.base_url,
                Auth::Bearer(cfg.api_key.clone()),
                http,
                Some(cfg.requests_per_minute),
            )?,
            tz,
            cfg: cfg.clone(),
            policy: None,
        })
    }
}

#[async_trait::async_trait]
impl Source for Crm {
    /// What the source's client has sent so far.
    fn traffic(&self) -> Traffic {
        self.client.traffic()
    }

    fn max_concurrency(&self) -> usize {
        self.cfg.max_concurrency
    }

    /// One GET of the companies listing.
    async fn check(&self) -> Result<String> {
        self.client
            .check(
                &["companies"],
                "companies",
                crate::extract::paging::array_count,
            )
            .await
    }

    /// The streams the config asks for; each writes one table, keyed by id.
    fn streams(&self) -> Vec<StreamSpec> {
        [
            ("companies", "company_id"),
            ("contacts", "contact_id"),
            ("conversations", "conversation_id"),
        ]
        .into_iter()
        .filter(|(name, _)| self.cfg.streams.iter().any(|s| s == name))
        .map(|(name, key)| StreamSpec {
            name: format!("{SOURCE}.{name}"),
            kind: StreamKind::Upsert {
                key_column: key,
                scope_column: Some("company_id"),
            },
            tables: vec![schema::table(&format!("crm.{name}"))],
            endpoints: vec![name],
            aliases: Vec::new(),
        })
        .collect()
    }

    /// Reads a stream whole and decides, record by record against `stored`
    /// (what the warehouse holds), what to write and what to mark deleted.
    async fn extract_upsert(
        &self,
        spec: &StreamSpec,
        stored: &StoredKeys,
        run_id: &str,
    ) -> Result<Upserts> {
        let endpoint = spec.endpoints[0];
        let table = spec.tables[0];
        let mut up = Upserts {
            extracted: Extracted::new(spec, run_id, &self.policy),
            replace: HashSet::new(),
            tombstones: HashSet::new(),
            live: 0,
            high_water: None,
        };
        // The whole account, so its rows spill to disk as they come.
        up.extracted.buffers[0] = TableBuffer::spilling(table, run_id).with_policy(&self.policy);
        let filter: HashSet<&str> = self.cfg.company_ids.iter().map(String::as_str).collect();
        // Requests: one for the whole account, or one per configured company.
        let requests: Vec<Option<&str>> = if filter.is_empty() || endpoint == "companies" {
            vec![None]
        } else {
            self.cfg
                .company_ids
                .iter()
                .map(|c| Some(c.as_str()))
                .collect()
        };
        // Which stored keys the source still has (one flag per stored key),
        // even ids of rejected records: they exist, so they are not marked
        // deleted.
        let mut present = vec![false; stored.len()];
        // Each body goes to disk, checked complete; up to `max_concurrency`
        // are fetched at once and each is walked from disk, in order.
        let fetch = async |company: Option<&str>| {
            let query: Vec<(&str, &str)> = company.map(|c| ("companyId", c)).into_iter().collect();
            let (url, label) = self
                .client
                .endpoint(&endpoint.split('/').collect::<Vec<_>>(), &query)?;
            let body = self.client.get_complete_json_file(url, &label).await?;
            Ok::<_, Error>((label, body))
        };
        let mut bodies = futures::stream::iter(requests)
            .map(fetch)
            .buffered(self.cfg.max_concurrency);
        while let Some(fetched) = bodies.next().await {
            let (label, body) = fetched?;
            let extracted_at = time::micros(Utc::now());
            let out = &mut up.extracted;
            out.pages += 1;
            let (replace, high_water) = (&mut up.replace, &mut up.high_water);
            let n = records::for_each_element(std::io::BufReader::new(body), |raw| {
                let id = raw.get("id").and_then(|v| v.as_str()).map(str::to_string);
                if endpoint == "companies"
                    && !filter.is_empty()
                    && !id.as_deref().is_some_and(|i| filter.contains(i))
                {
                    return; // not a configured company
                }
                let hash = id.as_deref().map(key_hash);
                let was = hash.and_then(|h| stored.get(h));
                if let Some((i, _)) = was {
                    present[i] = true;
                }
                match records::parse(endpoint, raw.clone(), extracted_at) {
                    Ok(p) => {
                        *high_water =
                            Some(high_water.map_or(p.updated, |h: DateTime<Utc>| h.max(p.updated)));
                        let unchanged = was.is_some_and(|(_, s)| {
                            !s.deleted && s.updated_at == Some(time::micros(p.updated))
                        });
                        if unchanged {
                            return;
                        }
                        let dt = if table.is_partitioned() {
                            p.created.map(|c| time::local_date(c, self.tz))
                        } else {
                            None
                        };
                        out.buffers[0].push(dt, p.row);
                        // A stored row is replaced; a new key has none.
                        if let (Some(h), Some(_)) = (hash, was) {
                            replace.insert(h);
                        }
                    }
                    Err(reason) => out.rejects.push(Reject {
                        table: table.name.clone(),
                        reason,
                        raw_json: raw.to_string(),
                    }),
                }
            })
            .map_err(|message| Error::BadResponse {
                source_name: SOURCE.into(),
                endpoint: label.clone(),
                message,
            })?;
            out.records += n;
        }
        // Gone from a complete response: marked, within the configured scope.
        for (i, hash, s) in stored.iter() {
            let in_scope = filter.is_empty() || stored.scope(s).is_some_and(|c| filter.contains(c));
            if !s.deleted && in_scope {
                up.live += 1;
                if !present[i] {
                    up.tombstones.insert(hash);
                }
            }
        }
        Ok(up)
    }
}
