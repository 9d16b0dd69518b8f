//! Social25 (`../shared/api-docs/social25-api.txt`): tenants (with their
//! platforms), agents, conversations, messages and failed syncs. Every list
//! endpoint is a `{count, next, previous, results}` listing read to its end
//! by [`HttpClient::get_listing`]; times are naive UTC.
//!
//! - tenants, agents: snapshots, replaced every run.
//! - conversations: all five states (the API's default is only open and
//!   auto_bot), a partitioned snapshot by the local date of `created`.
//! - messages: change-driven. The cursor holds the latest last-message time
//!   committed plus the fingerprints of the conversations whose last message
//!   is within `lookback_days` of it (bounded by recent activity, not by
//!   history). Only conversations whose last message changed are re-read, a
//!   few at once, in chunks ordered by last-message time; each chunk's
//!   partitions are merged by conversation, then the cursor is saved.
//! - failed_syncs: windows of at most 30 local days (at most 31 UTC days
//!   across DST), never asking past now minus 15 minutes.

mod config;
mod records;

pub use config::Social25Config;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use url::Url;

pub use records::{
    fingerprint_text, ConversationSummary, Fingerprint, Summaries, PLATFORM_SECRETS,
};

use super::http::{Auth, HttpClient, Traffic};
use super::paging::{value, Listing};
use super::window::Window;
use super::{ChangeChunk, ChangePlan, Extracted, Registration, Source, StreamKind, StreamSpec};
use crate::error::{Error, Result};
use crate::extract::http::HttpConfig;
use crate::normalize::{time, Cell, Reject};
use crate::schema;

/// The `[sources.social25]` key and stream prefix.
pub const NAME: &str = "social25";
const SOURCE: &str = NAME;

/// Registered in [`crate::extract::SOURCES`].
pub const REGISTRATION: Registration = Registration {
    name: NAME,
    parse: config::parse,
};

/// Every conversation state; each is listed with `?state=`.
pub const STATES: &[&str] = &["open", "closed", "auto_bot", "expired", "blocked"];

/// Failed syncs younger than this are still being retried by Social25.
pub const FINALITY: Duration = Duration::minutes(15);

/// Conversations whose messages are committed (and the cursor saved) together.
const CHUNK: usize = 200;

/// A configured Social25 source.
pub struct Social25 {
    pub(super) client: HttpClient,
    tz: Tz,
    now: DateTime<Utc>,
    overlap: Duration,
    cfg: Social25Config,
    /// The conversation listing of this run, shared by the conversations and
    /// messages streams so it is read once.
    listed: tokio::sync::Mutex<Option<Arc<Summaries>>>,
    /// Message requests in flight, across the chunks being fetched at once
    /// (`max_concurrency` permits).
    in_flight: tokio::sync::Semaphore,
    /// Applied to every row before it is buffered.
    pub(super) policy: Option<Arc<crate::privacy::Policy>>,
}

/// The messages stream's cursor, saved in its state file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessagesCursor {
    /// Latest last-message time whose conversation's messages are committed.
    pub high_water: Option<DateTime<Utc>>,
    /// Conversations whose last message is within the overlap of
    /// `high_water`: id -> (last message fingerprint as text, its time).
    pub recent: BTreeMap<String, (String, DateTime<Utc>)>,
}

impl MessagesCursor {
    /// Whether a conversation's messages must be read again.
    pub fn changed(&self, c: &ConversationSummary<'_>, overlap: Duration) -> bool {
        let Some((fingerprint, at)) = &c.last else {
            return false;
        };
        match self.high_water {
            None => true,
            Some(high) if *at < high - overlap => false,
            Some(_) => {
                self.recent.get(c.id).map(|(f, _)| f.as_str())
                    != Some(fingerprint_text(*fingerprint).as_str())
            }
        }
    }

    /// The cursor once `done` (sorted by last-message time) is committed.
    pub fn advance(&mut self, done: &[ConversationSummary<'_>], overlap: Duration) {
        for c in done {
            if let Some((fingerprint, at)) = &c.last {
                self.high_water = Some(self.high_water.map_or(*at, |h| h.max(*at)));
                self.recent
                    .insert(c.id.to_string(), (fingerprint_text(*fingerprint), *at));
            }
        }
        if let Some(high) = self.high_water {
            self.recent.retain(|_, (_, at)| *at >= high - overlap);
        }
    }
}

impl Social25 {
    /// Builds the source; `now` is the run's clock, `lookback_days` the
    /// overlap in which late messages are still noticed.
    pub fn new(
        cfg: &Social25Config,
        http: &HttpConfig,
        tz: Tz,
        now: DateTime<Utc>,
        lookback_days: u32,
    ) -> Result<Self> {
        Ok(Social25 {
            client: HttpClient::new(
                SOURCE,
                &cfg.base_url,
                Auth::Bearer(cfg.token.clone()),
                http,
                cfg.requests_per_minute,
            )?,
            tz,
            now,
            overlap: Duration::days(lookback_days as i64).max(Duration::hours(1)),
            cfg: cfg.clone(),
            listed: tokio::sync::Mutex::new(None),
            in_flight: tokio::sync::Semaphore::new(cfg.max_concurrency),
            policy: None,
        })
    }

    /// `base_url` + path segments (each percent-encoded: ids come from the
    /// API) + query pairs; `label` names it in errors.
    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<(Url, String)> {
        self.client.endpoint(segments, query)
    }

    async fn listing(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<Listing> {
        let (url, label) = self.url(segments, query)?;
        self.client.get_listing(url, &label).await
    }

    /// `tenants/<tenant_id>/<rest...>/` as segments (trailing slash included).
    fn tenant_path<'a>(&'a self, rest: &[&'a str]) -> Vec<&'a str> {
        let mut out = vec!["tenants", self.cfg.tenant_id.as_str()];
        out.extend_from_slice(rest);
        out.push("");
        out
    }

    /// The message listing of one conversation (its id percent-encoded in the path).
    /// At most `max_concurrency` of these run at once, whichever chunk asks.
    async fn messages_of(&self, conversation: String) -> (String, Result<Listing>) {
        let path = self.tenant_path(&["conversations", conversation.as_str(), "messages"]);
        let listing = match self.in_flight.acquire().await {
            Ok(_permit) => self.listing(&path, &[]).await,
            Err(_) => Err(Error::Internal("the request semaphore closed".into())),
        };
        (conversation, listing)
    }

    /// Lists the conversations of every state, one listing per state, page by
    /// page through `on_page` (only one page of raw JSON is held at a time);
    /// returns each state's result and listing figures.
    async fn each_state<S>(
        &self,
        init: impl Fn() -> S,
        mut on_page: impl FnMut(&mut S, &[&RawValue]),
    ) -> Result<Vec<(S, Listing)>> {
        let mut out = Vec::new();
        for state in STATES {
            let (url, label) =
                self.url(&self.tenant_path(&["conversations"]), &[("state", state)])?;
            out.push(
                self.client
                    .get_listing_each(url, &label, &init, &mut on_page)
                    .await?,
            );
        }
        Ok(out)
    }

    /// The conversation summaries of this run (listed now unless the
    /// conversations stream already did).
    async fn summaries(&self, pages: &mut u64) -> Result<Arc<Summaries>> {
        let mut listed = self.listed.lock().await;
        if let Some(s) = listed.as_ref() {
            return Ok(Arc::clone(s));
        }
        let mut summaries = Summaries::default();
        let per_state = self
            .each_state(Summaries::default, |sums, page| {
                for r in page {
                    records::summary(&value(r), sums);
                }
            })
            .await?;
        for (sums, l) in per_state {
            *pages += l.pages;
            summaries.append(sums);
        }
        let s = Arc::new(summaries);
        *listed = Some(Arc::clone(&s));
        Ok(s)
    }

    /// One failed-sync window, asked only up to the finality horizon.
    async fn failed_syncs(&self, w: Window, out: &mut Extracted, extracted_at: i64) -> Result<()> {
        let (start, end) = time::local_range(w.from, w.to, self.tz);
        let horizon = final_horizon(self.now);
        let till = end.min(horizon);
        if till <= start {
            return Ok(()); // nothing in this window is final yet
        }
        // Partitions of days this request covers (today's only up to the horizon).
        for d in w.days().filter(|d| time::day_start(*d, self.tz) < till) {
            out.buffers[0].touch(Some(d));
        }
        let fmt = |t: DateTime<Utc>| t.naive_utc().format("%Y-%m-%dT%H:%M:%S").to_string();
        let (from_time, till_time) = (fmt(start), fmt(till));
        let mut query = vec![
            ("from_time", from_time.as_str()),
            ("till_time", till_time.as_str()),
        ];
        if let Some(t) = &self.cfg.failed_sync_type {
            query.push(("type", t.as_str()));
        }
        let l = self
            .listing(&self.tenant_path(&["messages", "failed"]), &query)
            .await?;
        count(out, &l);
        for raw in l.records.iter().map(|r| value(r)) {
            match records::failed_sync(raw.clone(), extracted_at) {
                Ok((sent, row)) => {
                    let dt = time::local_date(sent, self.tz);
                    if dt >= w.from && dt <= w.to {
                        out.buffers[0].push(Some(dt), row);
                    }
                }
                Err(reason) => out.rejects.push(Reject {
                    table: "social25.failed_syncs".into(),
                    reason,
                    raw_json: raw.to_string(),
                }),
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Source for Social25 {
    /// What the source's client has sent so far.
    fn traffic(&self) -> Traffic {
        self.client.traffic()
    }

    fn max_concurrency(&self) -> usize {
        self.cfg.max_concurrency
    }

    /// One GET of the tenants listing.
    async fn check(&self) -> Result<String> {
        self.client
            .check(
                &["tenants", ""],
                "tenants",
                crate::extract::paging::listing_count,
            )
            .await
    }

    /// The streams the config asks for, in dependency order (conversations
    /// before messages, which reuse its listing).
    fn streams(&self) -> Vec<StreamSpec> {
        let t = |name: &str| schema::table(name);
        let all = [
            (
                "tenants",
                StreamKind::Snapshot,
                vec![t("social25.tenants"), t("social25.platforms")],
                "tenants/",
            ),
            (
                "agents",
                StreamKind::Snapshot,
                vec![t("social25.agents")],
                "tenants/{t}/agents/",
            ),
            (
                "conversations",
                StreamKind::Snapshot,
                vec![t("social25.conversations")],
                "tenants/{t}/conversations/",
            ),
            (
                "messages",
                StreamKind::Changes {
                    key_column: "conversation_id",
                },
                vec![t("social25.messages"), t("social25.conversation_stats")],
                "tenants/{t}/conversations/{c}/messages/",
            ),
            (
                "failed_syncs",
                StreamKind::Windowed {
                    window_days: self.cfg.window_days,
                    final_lag: Some(FINALITY),
                },
                vec![t("social25.failed_syncs")],
                "tenants/{t}/messages/failed/",
            ),
        ];
        all.into_iter()
            .filter(|(name, ..)| self.cfg.streams.iter().any(|s| s == name))
            .map(|(name, kind, tables, endpoint)| StreamSpec {
                name: format!("{SOURCE}.{name}"),
                kind,
                tables,
                endpoints: vec![endpoint],
                aliases: Vec::new(),
            })
            .collect()
    }

    /// Fetches and normalizes a snapshot (window None) or one failed-sync window.
    async fn extract(
        &self,
        spec: &StreamSpec,
        window: Option<Window>,
        run_id: &str,
    ) -> Result<Extracted> {
        let mut out = Extracted::new(spec, run_id, &self.policy);
        let stream = spec.name.trim_start_matches("social25.");
        let extracted_at = time::micros(Utc::now());
        let reject = |out: &mut Extracted, table: &str, reason: String, raw: &serde_json::Value| {
            out.rejects.push(Reject {
                table: table.into(),
                reason,
                raw_json: raw.to_string(),
            })
        };
        match (stream, window) {
            ("tenants", None) => {
                let l = self.listing(&["tenants", ""], &[]).await?;
                count(&mut out, &l);
                out.buffers[0].touch(None);
                out.buffers[1].touch(None);
                for raw in l.records.iter().map(|r| value(r)) {
                    match records::tenant(raw.clone(), extracted_at) {
                        Ok((tenant, platforms)) => {
                            // A repeated tenant replaces the earlier one with its platforms.
                            let (parent, child) = out.buffers.split_at_mut(1);
                            parent[0].push_family(&mut child[0], None, tenant, platforms)
                        }
                        Err(reason) => reject(&mut out, "social25.tenants", reason, &scrub(raw)),
                    }
                }
            }
            ("agents", None) => {
                let l = self.listing(&self.tenant_path(&["agents"]), &[]).await?;
                count(&mut out, &l);
                out.buffers[0].touch(None);
                for raw in l.records.iter().map(|r| value(r)) {
                    match records::agent(raw.clone(), extracted_at) {
                        Ok(row) => out.buffers[0].push(None, row),
                        Err(reason) => reject(&mut out, "social25.agents", reason, &raw),
                    }
                }
            }
            ("conversations", None) => {
                // Page by page: one page of raw JSON is held at a time, and
                // the rows spill to disk as they come (the listing is the
                // whole account). Each state's listing fills its own buffer,
                // so a listing read again starts from nothing.
                let table = spec.tables[0];
                let per_state = self
                    .each_state(
                        || {
                            (
                                crate::normalize::TableBuffer::spilling(table, run_id)
                                    .with_policy(&self.policy),
                                Summaries::default(),
                                Vec::new(),
                                0u64,
                            )
                        },
                        |(buffer, sums, rejects, received), page| {
                            for raw in page.iter().map(|r| value(r)) {
                                *received += 1;
                                records::summary(&raw, sums);
                                match records::conversation(raw.clone(), extracted_at) {
                                    Ok((created, row)) => {
                                        buffer.push(Some(time::local_date(created, self.tz)), row)
                                    }
                                    Err(reason) => rejects.push(Reject {
                                        table: table.name.clone(),
                                        reason,
                                        raw_json: raw.to_string(),
                                    }),
                                }
                            }
                        },
                    )
                    .await?;
                let mut summaries = Summaries::default();
                out.buffers[0] = crate::normalize::TableBuffer::spilling(table, run_id)
                    .with_policy(&self.policy);
                for ((buffer, sums, rejects, received), l) in per_state {
                    out.pages += l.pages;
                    out.bytes += l.bytes;
                    out.records += received;
                    out.add_count(l.count);
                    // In listing order: a conversation listed again (its state
                    // changed meanwhile) keeps its later version.
                    out.buffers[0].absorb(buffer);
                    out.rejects.extend(rejects);
                    summaries.append(sums);
                }
                *self.listed.lock().await = Some(Arc::new(summaries));
            }
            ("failed_syncs", Some(w)) => self.failed_syncs(w, &mut out, extracted_at).await?,
            _ => {
                return Err(Error::Usage(format!(
                    "{}: not extracted {}",
                    spec.name,
                    if window.is_some() {
                        "by window"
                    } else {
                        "as a snapshot"
                    }
                )))
            }
        }
        Ok(out)
    }

    /// Which conversations' messages to read again, oldest change first.
    async fn plan_changes(
        &self,
        spec: &StreamSpec,
        cursor: Option<serde_json::Value>,
    ) -> Result<ChangePlan> {
        let mut cursor: MessagesCursor = match cursor {
            None => MessagesCursor::default(),
            Some(v) => serde_json::from_value(v).map_err(|e| Error::State {
                path: spec.name.clone(),
                message: format!("unreadable messages cursor ({e}); `chatlake state reset --stream {}` starts over", spec.name),
            })?,
        };
        let mut pages = 0;
        let summaries = self.summaries(&mut pages).await?;
        // Indices into the summaries (4 bytes each), oldest change first.
        let mut order: Vec<u32> = (0..summaries.len() as u32)
            .filter(|&i| cursor.changed(&summaries.get(i as usize), self.overlap))
            .collect();
        let last_at = |i: u32| summaries.get(i as usize).last.map(|l| l.1);
        let id = |i: u32| summaries.get(i as usize).id;
        order.sort_by(|&a, &b| last_at(a).cmp(&last_at(b)).then(id(a).cmp(id(b))));
        order.dedup_by(|a, b| id(*a) == id(*b));
        tracing::info!(stream = %spec.name, conversations = summaries.len(), changed = order.len(), "messages to re-read");
        let mut high = cursor.high_water;
        let chunks = order
            .chunks(CHUNK)
            .map(|chunk| {
                high = chunk.iter().filter_map(|&i| last_at(i)).chain(high).max();
                ChangeChunk {
                    len: chunk.len(),
                    reached: high.map(|h| time::local_date(h, self.tz)),
                }
            })
            .collect();
        // Chunk i's conversations, made when it is fetched.
        let order = Arc::new(order);
        let keys_of = {
            let (order, summaries) = (Arc::clone(&order), Arc::clone(&summaries));
            move |i: usize| {
                chunk_of(&order, i)
                    .iter()
                    .map(|&c| summaries.get(c as usize).id.to_string())
                    .collect()
            }
        };
        // The cursor after chunk i, made when it is saved: one cursor is held,
        // advanced chunk by chunk (never one copy per chunk).
        let overlap = self.overlap;
        let mut advanced = 0;
        let cursor_after = move |i: usize| {
            while advanced <= i {
                let done: Vec<ConversationSummary<'_>> = chunk_of(&order, advanced)
                    .iter()
                    .map(|&c| summaries.get(c as usize))
                    .collect();
                cursor.advance(&done, overlap);
                advanced += 1;
            }
            serde_json::to_value(&cursor).expect("cursor serializes")
        };
        Ok(ChangePlan {
            chunks,
            pages,
            keys_of: Box::new(keys_of),
            cursor_after: Box::new(cursor_after),
        })
    }

    /// Every message of the chunk's conversations, a few conversations at once.
    async fn extract_changes(
        &self,
        spec: &StreamSpec,
        keys: &[String],
        run_id: &str,
    ) -> Result<Extracted> {
        let mut out = Extracted::new(spec, run_id, &self.policy);
        let extracted_at = time::micros(Utc::now());
        let outbound_column = spec.tables[0]
            .index_of("outbound")
            .ok_or_else(|| Error::Internal("social25.messages has no outbound column".into()))?;
        let mut fetched = futures::stream::iter(keys.iter().cloned())
            .map(|c| self.messages_of(c))
            .buffer_unordered(self.cfg.max_concurrency);
        while let Some((conversation, listing)) = fetched.next().await {
            let l = listing?;
            count(&mut out, &l);
            // (sent µs, outbound) of every message kept, for the stats row.
            let mut kept = Vec::with_capacity(l.records.len());
            for raw in l.records.iter().map(|r| value(r)) {
                match records::message(raw.clone(), &conversation, extracted_at) {
                    Ok((sent, row)) => {
                        let outbound = match row.cells[outbound_column] {
                            Cell::Bool(b) => Some(b),
                            _ => None,
                        };
                        kept.push((time::micros(sent), outbound));
                        out.buffers[0].push(Some(time::local_date(sent, self.tz)), row)
                    }
                    Err(reason) => out.rejects.push(Reject {
                        table: "social25.messages".into(),
                        reason: format!("conversation {conversation}: {reason}"),
                        raw_json: raw.to_string(),
                    }),
                }
            }
            if let Some((first, row)) =
                records::conversation_stats(&conversation, &kept, extracted_at)
            {
                out.buffers[1].push(Some(time::local_date(first, self.tz)), row);
            }
        }
        Ok(out)
    }
}

/// Chunk `i` of the changed conversations (indices into the listing).
fn chunk_of(order: &[u32], i: usize) -> &[u32] {
    order.chunks(CHUNK).nth(i).unwrap_or_default()
}

/// The latest instant whose failed syncs are final, in whole seconds.
pub fn final_horizon(now: DateTime<Utc>) -> DateTime<Utc> {
    let h = now - FINALITY;
    DateTime::from_timestamp(h.timestamp(), 0).unwrap_or(h)
}

fn count(out: &mut Extracted, l: &Listing) {
    out.pages += l.pages;
    out.bytes += l.bytes;
    out.records += l.records.len() as u64;
    out.add_count(l.count);
}

/// A raw tenant for meta.rejects, without platform secrets.
fn scrub(mut raw: serde_json::Value) -> serde_json::Value {
    if let Some(platforms) = raw.get_mut("platforms").and_then(|p| p.as_array_mut()) {
        for p in platforms.iter_mut().filter_map(|p| p.as_object_mut()) {
            for s in PLATFORM_SECRETS {
                p.remove(*s);
            }
        }
    }
    raw
}

/// The last local date that ended before `horizon` (None: not even `from`).
pub fn last_final_day(w: Window, horizon: DateTime<Utc>, tz: Tz) -> Option<NaiveDate> {
    w.days()
        .filter(|d| time::local_range(*d, *d, tz).1 <= horizon)
        .last()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn conv<'a>(id: &'a str, fp: &str, at: DateTime<Utc>) -> ConversationSummary<'a> {
        ConversationSummary {
            id,
            last: Some((crate::normalize::key_hash(fp), at)),
        }
    }

    #[test]
    fn cursor_reads_only_changed_conversations_and_stays_bounded() {
        let t0 = Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap();
        let overlap = Duration::days(2);
        let old = conv("a", "m1@", t0 - Duration::days(10));
        let recent = conv("b", "m2@", t0);
        let mut cur = MessagesCursor::default();
        assert!(cur.changed(&old, overlap) && cur.changed(&recent, overlap));
        cur.advance(&[old, recent], overlap);
        assert_eq!(cur.high_water, Some(t0));
        assert_eq!(
            cur.recent.keys().collect::<Vec<_>>(),
            ["b"],
            "old conversations leave the cursor"
        );
        assert!(!cur.changed(&old, overlap) && !cur.changed(&recent, overlap));
        // A new message in b, a late (backdated, within the overlap) one in c, and a status change.
        assert!(cur.changed(&conv("b", "m3@", t0 + Duration::minutes(5)), overlap));
        assert!(cur.changed(&conv("c", "m4@", t0 - Duration::hours(3)), overlap));
        assert!(cur.changed(&conv("b", "m2@later", t0), overlap));
        assert!(!cur.changed(
            &ConversationSummary {
                id: "d",
                last: None
            },
            overlap
        ));
    }

    #[test]
    fn finality() {
        let tz = chrono_tz::America::New_York;
        let now = Utc.with_ymd_and_hms(2025, 3, 10, 4, 10, 30).unwrap(); // 00:10:30 local, Mar 10
        let h = final_horizon(now);
        assert_eq!(h, Utc.with_ymd_and_hms(2025, 3, 10, 3, 55, 30).unwrap());
        let d = |day| NaiveDate::from_ymd_opt(2025, 3, day).unwrap();
        // 23:55 local on Mar 9 is the horizon: Mar 9 (a 23-hour day) is not final yet.
        assert_eq!(
            last_final_day(
                Window {
                    from: d(1),
                    to: d(10)
                },
                h,
                tz
            ),
            Some(d(8))
        );
        assert_eq!(
            last_final_day(
                Window {
                    from: d(9),
                    to: d(10)
                },
                h,
                tz
            ),
            None
        );
    }
}
