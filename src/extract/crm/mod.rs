//! The CRM "Developer API" (`../shared/api-docs/crm-developer-api.txt`):
//! companies, contacts and conversations. Each endpoint returns one plain JSON
//! array, with no date filter and no pagination, so the incremental logic is
//! client-side:
//!
//! - the body goes to a temporary file, is checked there to be complete
//!   JSON, then walked from disk one record at a time
//!   ([`records::for_each_element`]), never held in memory or as one
//!   `Value` tree; the rows to write spill to disk as they come;
//! - each record goes, parsed, to the pipeline, which compares it with the
//!   warehouse (`pipeline/upsert.rs`): unchanged rows are not rewritten, and
//!   a key a complete read no longer has is marked deleted;
//! - with `company_ids`, contacts and conversations are read per company
//!   (`?companyId=`), companies are filtered here, and only rows of those
//!   companies can be marked deleted ([`Source::upsert_scope`]).

mod config;
pub mod records;

pub use config::CrmConfig;

use std::collections::HashSet;

use chrono::Utc;
use chrono_tz::Tz;
use futures::StreamExt;

use super::http::{Auth, HttpClient, Traffic};
use super::{Registration, Source, StreamKind, StreamSpec, UpsertRecord, UpsertRow};
use crate::error::{Error, Result};
use crate::extract::http::HttpConfig;
use crate::normalize::time;
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

    /// Reads a stream whole (the account, or each configured company) and
    /// hands each record to `on_record`, parsed, as it is walked from disk.
    async fn read_whole(
        &self,
        spec: &StreamSpec,
        on_record: &mut (dyn for<'r> FnMut(UpsertRecord<'r>) + Send),
    ) -> Result<(u64, u64)> {
        let endpoint = spec.endpoints[0];
        let table = spec.tables[0];
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
        let (mut pages, mut read) = (0, 0);
        while let Some(fetched) = bodies.next().await {
            let (label, body) = fetched?;
            let extracted_at = time::micros(Utc::now());
            pages += 1;
            let n = records::for_each_element(std::io::BufReader::new(body), |raw| {
                let id = raw.get("id").and_then(|v| v.as_str());
                if endpoint == "companies"
                    && !filter.is_empty()
                    && !id.is_some_and(|i| filter.contains(i))
                {
                    return; // not a configured company
                }
                let parsed =
                    records::parse(endpoint, raw.clone(), extracted_at).map(|p| UpsertRow {
                        dt: if table.is_partitioned() {
                            p.created.map(|c| time::local_date(c, self.tz))
                        } else {
                            None
                        },
                        updated: p.updated,
                        row: p.row,
                    });
                on_record(UpsertRecord {
                    id,
                    parsed,
                    raw: &raw,
                });
            })
            .map_err(|message| Error::BadResponse {
                source_name: SOURCE.into(),
                endpoint: label.clone(),
                message,
            })?;
            read += n;
        }
        Ok((pages, read))
    }

    /// With `company_ids`, only rows of those companies can be marked deleted.
    fn upsert_scope(&self, _spec: &StreamSpec) -> Option<HashSet<String>> {
        (!self.cfg.company_ids.is_empty()).then(|| self.cfg.company_ids.iter().cloned().collect())
    }
}
