//! Social Intents (`../shared/api-docs/socialintents-*.txt`): chats, missed
//! chats, offline messages, contacts and widgets.
//!
//! Every request asks for `timezone=UTC`, so `startDate` is never ambiguous
//! (a local time on a fall-back night names two instants). The local date
//! window is widened to the UTC dates that cover it; each record's `dt` is then
//! computed in the pipeline timezone, and records outside the window are left
//! for the window they belong to.

mod records;

use chrono::{Duration, Utc};
use chrono_tz::Tz;
use serde_json::Value;
use url::Url;

use super::http::{Auth, HttpClient};
use super::window::Window;
use super::{Extracted, StreamKind, StreamSpec};
use crate::config::{HttpConfig, SocialIntentsConfig};
use crate::error::{Error, Result};
use crate::normalize::{time, Reject, TableBuffer};
use crate::schema;

pub use records::Parsed;

const SOURCE: &str = "socialintents";

/// A configured Social Intents source.
pub struct SocialIntents {
    client: HttpClient,
    base_url: String,
    tz: Tz,
    cfg: SocialIntentsConfig,
}

impl SocialIntents {
    /// Builds the source from its config; `tz` is the pipeline timezone.
    pub fn new(cfg: &SocialIntentsConfig, http: &HttpConfig, tz: Tz) -> Result<Self> {
        let auth = Auth::Basic {
            user: cfg.account_id.clone(),
            password: cfg.api_token.clone(),
        };
        Ok(SocialIntents {
            client: HttpClient::new(SOURCE, auth, http, cfg.requests_per_minute)?,
            base_url: cfg.base_url.trim_end_matches('/').to_string(),
            tz,
            cfg: cfg.clone(),
        })
    }

    /// HTTP retries so far.
    pub fn retries(&self) -> u64 {
        self.client.retries()
    }

    /// The streams the config asks for. `chats` and `missed_chats` both feed
    /// socialintents.chats, so they form one stream (keyed
    /// `socialintents.chats`) whose windows read both endpoints: a partition is
    /// replaced by the union of the two, deduplicated on chat id.
    pub fn streams(&self) -> Vec<StreamSpec> {
        let has = |s: &str| self.cfg.streams.iter().any(|x| x == s);
        let windowed = StreamKind::Windowed {
            window_days: self.cfg.window_days,
            final_lag: None,
        };
        let mut out = Vec::new();
        let mut chat_endpoints = Vec::new();
        if has("missed_chats") {
            chat_endpoints.push("missedchats");
        }
        if has("chats") {
            chat_endpoints.push("chats");
        }
        if !chat_endpoints.is_empty() {
            out.push(StreamSpec {
                name: format!("{SOURCE}.chats"),
                kind: windowed,
                tables: vec![
                    schema::table("socialintents.chats"),
                    schema::table("socialintents.chat_messages"),
                ],
                endpoints: chat_endpoints,
            });
        }
        if has("offline_messages") {
            out.push(StreamSpec {
                name: format!("{SOURCE}.offline_messages"),
                kind: windowed,
                tables: vec![schema::table("socialintents.offline_messages")],
                endpoints: vec!["offlinemessages"],
            });
        }
        if has("contacts") {
            out.push(StreamSpec {
                name: format!("{SOURCE}.contacts"),
                kind: windowed,
                tables: vec![schema::table("socialintents.contacts")],
                endpoints: vec!["contacts"],
            });
        }
        if has("widgets") {
            out.push(StreamSpec {
                name: format!("{SOURCE}.widgets"),
                kind: StreamKind::Snapshot,
                tables: vec![schema::table("socialintents.widgets")],
                endpoints: vec!["apps"],
            });
        }
        out
    }

    /// Fetches and normalizes one window (None for a snapshot stream).
    pub async fn extract(
        &self,
        spec: &StreamSpec,
        window: Option<Window>,
        run_id: &str,
    ) -> Result<Extracted> {
        let mut buffers: Vec<TableBuffer> = spec
            .tables
            .iter()
            .map(|t| TableBuffer::new(t, run_id))
            .collect();
        if let Some(w) = window {
            for b in &mut buffers {
                for d in w.days() {
                    b.touch(Some(d));
                }
            }
        } else {
            buffers[0].touch(None);
        }
        let mut out = Extracted {
            buffers: Vec::new(),
            rejects: Vec::new(),
            pages: 0,
            records: 0,
            source_count: None,
        };
        let mut parsed: Vec<Parsed> = Vec::new();
        for endpoint in &spec.endpoints {
            let (records, extracted_at) = self.fetch(endpoint, window).await?;
            out.pages += 1;
            out.records += records.len() as u64;
            let table = spec.tables[0];
            for raw in records {
                match records::parse(endpoint, raw.clone(), time::micros(extracted_at)) {
                    Ok(p) => parsed.push(p),
                    Err(reason) => out.rejects.push(Reject {
                        table: table.name.clone(),
                        reason,
                        raw_json: raw.to_string(),
                    }),
                }
            }
        }
        let mut outside = 0usize;
        for p in parsed {
            let dt = p.time.map(|t| time::local_date(t, self.tz));
            if let (Some(w), Some(d)) = (window, dt) {
                if d < w.from || d > w.to {
                    outside += 1; // belongs to a neighbouring window, which fetches it
                    continue;
                }
            }
            let (main, children) = p.rows;
            buffers[0].push(dt, main);
            for child in children {
                buffers[1].push(dt, child);
            }
        }
        if outside > 0 {
            tracing::debug!(stream = %spec.name, outside, "records outside the local window (fetched with their own window)");
        }
        out.buffers = buffers;
        Ok(out)
    }

    /// One GET of `endpoint` for the UTC dates covering `window`.
    async fn fetch(
        &self,
        endpoint: &str,
        window: Option<Window>,
    ) -> Result<(Vec<Value>, chrono::DateTime<Utc>)> {
        let mut url = Url::parse(&format!("{}/{endpoint}", self.base_url)).map_err(|e| {
            Error::BadResponse {
                source_name: SOURCE.into(),
                endpoint: endpoint.into(),
                message: format!("bad base_url: {e}"),
            }
        })?;
        let label = match window {
            Some(w) => {
                let (start, end) = time::local_range(w.from, w.to, self.tz);
                let (from, to) = (
                    start.date_naive(),
                    (end - Duration::microseconds(1)).date_naive(),
                );
                url.query_pairs_mut()
                    .append_pair("date_from", &from.to_string())
                    .append_pair("date_to", &to.to_string())
                    .append_pair("timezone", "UTC");
                format!("/{endpoint}?date_from={from}&date_to={to}")
            }
            None => {
                url.query_pairs_mut().append_pair("timezone", "UTC");
                format!("/{endpoint}")
            }
        };
        let extracted_at = Utc::now();
        let body = self.client.get_json(url, &label).await?;
        let records = records::envelope(body, endpoint).map_err(|message| Error::BadResponse {
            source_name: SOURCE.into(),
            endpoint: label.clone(),
            message,
        })?;
        Ok((records, extracted_at))
    }
}
