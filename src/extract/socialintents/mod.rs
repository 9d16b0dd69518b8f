//! Social Intents (`../shared/api-docs/socialintents-*.txt`): chats, missed
//! chats, offline messages, contacts and widgets.
//!
//! Every request asks for `timezone=UTC`, so `startDate` is never ambiguous
//! (a local time on a fall-back night names two instants). The local date
//! window is widened to the UTC dates that cover it; each record's `dt` is then
//! computed in the pipeline timezone, and records outside the window are left
//! for the window they belong to.

mod config;
mod records;

pub use config::SocialIntentsConfig;

use chrono::{Duration, Utc};
use chrono_tz::Tz;
use url::Url;

use super::http::{Auth, HttpClient, Traffic};
use super::window::Window;
use super::{Extracted, Registration, Source, StreamKind, StreamSpec};
use crate::error::{Error, Result};
use crate::extract::http::HttpConfig;
use crate::normalize::{time, Reject, TableBuffer};
use crate::schema;

pub use records::Parsed;

/// The `[sources.socialintents]` key and stream prefix.
pub const NAME: &str = "socialintents";
const SOURCE: &str = NAME;

/// Registered in [`crate::extract::SOURCES`].
pub const REGISTRATION: Registration = Registration {
    name: NAME,
    parse: config::parse,
};

/// A configured Social Intents source.
pub struct SocialIntents {
    pub(super) client: HttpClient,
    tz: Tz,
    cfg: SocialIntentsConfig,
    /// Applied to every row before it is buffered.
    pub(super) policy: Option<std::sync::Arc<crate::privacy::Policy>>,
    /// Requests in flight, at most `max_concurrency` (a window asks two
    /// endpoints at once).
    in_flight: tokio::sync::Semaphore,
}

impl SocialIntents {
    /// Builds the source from its config; `tz` is the pipeline timezone.
    pub fn new(cfg: &SocialIntentsConfig, http: &HttpConfig, tz: Tz) -> Result<Self> {
        let auth = Auth::Basic {
            user: cfg.account_id.clone(),
            password: cfg.api_token.clone(),
        };
        Ok(SocialIntents {
            client: HttpClient::new(SOURCE, &cfg.base_url, auth, http, cfg.requests_per_minute)?,
            tz,
            cfg: cfg.clone(),
            policy: None,
            in_flight: tokio::sync::Semaphore::new(cfg.max_concurrency),
        })
    }

    /// The URL of `endpoint` for the UTC dates covering `window` (every time
    /// asked in UTC), and its label for errors.
    fn url(&self, endpoint: &str, window: Option<Window>) -> Result<(Url, String)> {
        let (from, to);
        let mut query = Vec::new();
        if let Some(w) = window {
            let (start, end) = time::local_range(w.from, w.to, self.tz);
            (from, to) = (
                start.date_naive().to_string(),
                (end - Duration::microseconds(1)).date_naive().to_string(),
            );
            query.extend([("date_from", from.as_str()), ("date_to", to.as_str())]);
        }
        query.push(("timezone", "UTC"));
        self.client.endpoint(&[endpoint], &query)
    }
}

#[async_trait::async_trait]
impl Source for SocialIntents {
    /// What the source's client has sent so far.
    fn traffic(&self) -> Traffic {
        self.client.traffic()
    }

    fn max_concurrency(&self) -> usize {
        self.cfg.max_concurrency
    }

    /// One GET of the widgets listing.
    async fn check(&self) -> Result<String> {
        self.client
            .check(&["apps"], "widgets", |b| {
                records::envelope(b, "apps").map(|r| r.len() as u64)
            })
            .await
    }

    /// The streams the config asks for. `chats` and `missed_chats` both feed
    /// socialintents.chats, so they form one stream (keyed
    /// `socialintents.chats`) whose windows read both endpoints: a partition is
    /// replaced by the union of the two, deduplicated on chat id.
    fn streams(&self) -> Vec<StreamSpec> {
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
                aliases: vec![format!("{SOURCE}.missed_chats")],
            });
        }
        if has("offline_messages") {
            out.push(StreamSpec {
                name: format!("{SOURCE}.offline_messages"),
                kind: windowed,
                tables: vec![schema::table("socialintents.offline_messages")],
                endpoints: vec!["offlinemessages"],
                aliases: Vec::new(),
            });
        }
        if has("contacts") {
            out.push(StreamSpec {
                name: format!("{SOURCE}.contacts"),
                kind: windowed,
                tables: vec![schema::table("socialintents.contacts")],
                endpoints: vec!["contacts"],
                aliases: Vec::new(),
            });
        }
        if has("widgets") {
            out.push(StreamSpec {
                name: format!("{SOURCE}.widgets"),
                kind: StreamKind::Snapshot,
                tables: vec![schema::table("socialintents.widgets")],
                endpoints: vec!["apps"],
                aliases: Vec::new(),
            });
        }
        out
    }

    /// Fetches and normalizes one window (None for a snapshot stream).
    async fn extract(
        &self,
        spec: &StreamSpec,
        window: Option<Window>,
        run_id: &str,
    ) -> Result<Extracted> {
        let mut buffers: Vec<TableBuffer> = spec
            .tables
            .iter()
            .map(|t| TableBuffer::new(t, run_id).with_policy(&self.policy))
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
            bytes: 0,
            records: 0,
            source_count: None,
        };
        let mut outside = 0usize;
        // The UTC instants the request covers: whole UTC dates around the window.
        let asked = window.map(|w| {
            let (start, end) = time::local_range(w.from, w.to, self.tz);
            let first = start
                .date_naive()
                .and_time(chrono::NaiveTime::MIN)
                .and_utc();
            let last = (end - Duration::microseconds(1))
                .date_naive()
                .and_time(chrono::NaiveTime::MIN)
                .and_utc();
            (first, last + Duration::days(1))
        });
        // The endpoints of a window (chats and missed chats) are asked for
        // at once: the API prepares the second answer while the first is
        // read. Their records are then taken in the order of the endpoints.
        let answers = futures::future::try_join_all(spec.endpoints.iter().map(|endpoint| {
            async move {
                let (url, label) = self.url(endpoint, window)?;
                let _slot = self.in_flight.acquire().await;
                let extracted_at = time::micros(Utc::now());
                // One pass over the body checks it is complete JSON and
                // finds the records, which stay raw text; each becomes a
                // value (and rows) on its own.
                let (body, found) = self
                    .client
                    .get_parsed(url, &label, |body| {
                        records::envelope_ranges(body, endpoint).map(|r| (body.clone(), r))
                    })
                    .await?;
                Ok::<_, Error>((*endpoint, label, extracted_at, body, found))
            }
        }))
        .await?;
        for (endpoint, label, extracted_at, body, found) in answers {
            let records = found.map_err(|message| Error::BadResponse {
                source_name: SOURCE.into(),
                endpoint: label.clone(),
                message,
            })?;
            out.pages += 1;
            out.bytes += body.len() as u64;
            out.records += records.len() as u64;
            let table = spec.tables[0];
            for range in records {
                let raw = &body[range];
                // `raw` is a value of the body just parsed whole: valid JSON
                // and UTF-8, so these cannot fail.
                let value = serde_json::from_slice(raw).unwrap_or(serde_json::Value::Null);
                let raw_json = || String::from_utf8_lossy(raw).into_owned();
                let p = match records::parse(endpoint, value, extracted_at) {
                    Ok(p) => p,
                    Err(reason) => {
                        out.rejects.push(Reject {
                            table: table.name.clone(),
                            reason,
                            raw_json: raw_json(),
                        });
                        continue;
                    }
                };
                // A record outside the UTC dates asked for (a year-1 or
                // year-9999 startDate) belongs to no window: quarantined, not
                // silently skipped.
                if let (Some((from, till)), Some(t)) = (asked, p.time) {
                    if t < from || t >= till {
                        out.rejects.push(Reject {
                            table: table.name.clone(),
                            reason: format!(
                                "its time {} is outside the dates asked for ({}..{} UTC)",
                                t.format("%Y-%m-%d %H:%M:%S"),
                                from.date_naive(),
                                (till - Duration::days(1)).date_naive()
                            ),
                            raw_json: raw_json(),
                        });
                        continue;
                    }
                }
                let dt = p.time.map(|t| time::local_date(t, self.tz));
                if let (Some(w), Some(d)) = (window, dt) {
                    if d < w.from || d > w.to {
                        outside += 1; // belongs to a neighbouring window, which fetches it
                        continue;
                    }
                }
                // A later record with the same key (missedchats then chats, or a
                // repeat in one page) replaces the earlier one with its messages.
                let (main, children) = p.rows;
                match buffers.split_first_mut() {
                    Some((parent, [child, ..])) => parent.push_family(child, dt, main, children),
                    Some((parent, [])) => parent.push(dt, main),
                    None => {}
                }
            }
        }
        if outside > 0 {
            tracing::debug!(stream = %spec.name, outside, "records outside the local window (fetched with their own window)");
        }
        out.buffers = buffers;
        Ok(out)
    }
}
