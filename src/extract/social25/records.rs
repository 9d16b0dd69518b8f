//! Social25 records -> rows: one mapper per record shape (tenant with its
//! platforms, agent, conversation, message, failed sync). Timestamps are naive
//! ISO in UTC, with or without microseconds; `has_expired` is a Django
//! duration string; `auxiliary_data` / `custom_data` are kept as text.
//! Platform secrets (`app_secret`, `page_token`) are dropped, not even kept
//! in `_extra`.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::normalize::{key_hash, time, Cell, Record, Row};
use crate::schema;

/// Fields of a platform that are credentials: never stored.
pub const PLATFORM_SECRETS: &[&str] = &["app_secret", "page_token"];

fn object(raw: Value, what: &str) -> Result<Map<String, Value>, String> {
    match raw {
        Value::Object(o) => Ok(o),
        other => Err(format!("{what} is {}, expected an object", short(&other))),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        format!(
            "{}...",
            &s[..s.char_indices().nth(40).map_or(s.len(), |(i, _)| i)]
        )
    } else {
        s
    }
}

/// A required naive-UTC time field.
fn required_time(r: &mut Record<'_>, field: &str) -> Result<DateTime<Utc>, String> {
    let s = r.required_str(field)?;
    time::parse_naive_utc(&s).map_err(|e| format!("field `{field}`: {e}"))
}

/// A tenant: its row and one row per platform (secrets removed).
pub fn tenant(raw: Value, extracted_at: i64) -> Result<(Row, Vec<Row>), String> {
    let mut r = Record::new(schema::table("social25.tenants"), object(raw, "tenant")?);
    let id = r.required_str("id")?;
    r.set("tenant_id", Cell::Str(id.clone()));
    r.string("name", "name");
    r.string("company_logo", "company_logo");
    r.int("dispatch_style", "dispatch_style");
    r.string_list("tags", "tags");
    let platforms = match r.take("platforms") {
        None => Vec::new(),
        Some(Value::Array(p)) => p,
        Some(other) => {
            return Err(format!(
                "field `platforms` is {}, expected an array",
                short(&other)
            ))
        }
    };
    let pt = schema::table("social25.platforms");
    let mut rows = Vec::new();
    for (i, p) in platforms.into_iter().enumerate() {
        let mut pr = Record::new(pt, object(p, &format!("platforms[{i}]"))?);
        for secret in PLATFORM_SECRETS {
            pr.discard(secret);
        }
        pr.set("tenant_id", Cell::Str(id.clone()));
        pr.int("platform_id", "id");
        pr.string("platform", "platform");
        pr.string("name", "name");
        pr.string("page_id", "page_id");
        pr.string("callback_url", "callback_url");
        pr.text("data", "data");
        rows.push(
            pr.finish(extracted_at)
                .map_err(|e| format!("platforms[{i}]: {e}"))?,
        );
    }
    Ok((r.finish(extracted_at)?, rows))
}

/// An agent.
pub fn agent(raw: Value, extracted_at: i64) -> Result<Row, String> {
    let mut r = Record::new(schema::table("social25.agents"), object(raw, "agent")?);
    let id = r.required_str("id")?;
    r.set("agent_id", Cell::Str(id));
    for f in [
        "username",
        "first_name",
        "last_name",
        "type",
        "timezone",
        "tenant_id",
    ] {
        r.string(f, f);
    }
    for f in ["is_manager", "is_staff", "is_active", "is_online"] {
        r.boolean(f, f);
    }
    r.finish(extracted_at)
}

/// What the messages stream needs to know of a conversation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConversationSummary<'a> {
    pub id: &'a str,
    /// The latest message: its [`Fingerprint`] and its time.
    pub last: Option<(Fingerprint, DateTime<Utc>)>,
}

/// The summaries of a conversation listing, in listing order, compact: a
/// run lists every conversation of the account (1M is about 70 MB this
/// way; a vector of [`ConversationSummary`] with owned ids took about 120).
/// Each state's listing is one part, and [`Summaries::append`] moves parts,
/// so joining the states copies nothing.
#[derive(Debug, Default)]
pub struct Summaries {
    parts: Vec<Part>,
    len: usize,
}

#[derive(Debug, Default)]
struct Part {
    /// Every id, one after another; `ends[i]` is where id i ends.
    ids: String,
    ends: Vec<usize>,
    fingerprints: Vec<Fingerprint>,
    /// The last message's time (µs), or `i64::MIN` for none.
    last_us: Vec<i64>,
}

impl Summaries {
    pub fn push(&mut self, c: ConversationSummary<'_>) {
        if self.parts.is_empty() {
            self.parts.push(Part::default());
        }
        let part = self.parts.last_mut().expect("a part");
        part.ids.push_str(c.id);
        part.ends.push(part.ids.len());
        let (fingerprint, at) = c
            .last
            .map_or((0, i64::MIN), |(f, at)| (f, time::micros(at)));
        part.fingerprints.push(fingerprint);
        part.last_us.push(at);
        self.len += 1;
    }

    /// Adds `other`'s summaries after these.
    pub fn append(&mut self, other: Summaries) {
        self.len += other.len;
        self.parts.extend(other.parts);
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Summary `i` in listing order.
    pub fn get(&self, mut i: usize) -> ConversationSummary<'_> {
        for part in &self.parts {
            if i < part.ends.len() {
                let start = if i == 0 { 0 } else { part.ends[i - 1] };
                let at = part.last_us[i];
                return ConversationSummary {
                    id: &part.ids[start..part.ends[i]],
                    last: (at != i64::MIN).then(|| {
                        let at = DateTime::from_timestamp_micros(at).expect("stored from a time");
                        (part.fingerprints[i], at)
                    }),
                };
            }
            i -= part.ends.len();
        }
        panic!("summary {i} of {}", self.len)
    }
}

/// A last message's identity: its id, time and modified time (so an edit
/// counts as a change), hashed to 16 bytes; a run holds one per
/// conversation of the account. Saved in the cursor as 32 hex digits.
pub type Fingerprint = u128;

/// A fingerprint as the cursor stores it.
pub fn fingerprint_text(f: Fingerprint) -> String {
    format!("{f:032x}")
}

/// The summary of a raw conversation, read leniently (a conversation whose
/// row is rejected may still have messages worth fetching), added to `into`.
pub fn summary(raw: &Value, into: &mut Summaries) {
    let Some(id) = raw.get("id").and_then(Value::as_str) else {
        return;
    };
    let last = raw
        .get("last_message")
        .filter(|m| m.is_object())
        .and_then(|m| {
            let mid = m.get("id")?.as_str()?;
            let text = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("");
            // An unreadable message time must not hide the conversation: fall
            // back to the modified time, then to the conversation's creation.
            let at = ["timestamp", "modified_timestamp"]
                .iter()
                .find_map(|k| time::parse_naive_utc(text(k)).ok())
                .or_else(|| {
                    raw.get("created")
                        .and_then(Value::as_str)
                        .and_then(|c| time::parse_naive_utc(c).ok())
                })?;
            Some((
                key_hash(&format!(
                    "{mid}@{}@{}",
                    text("timestamp"),
                    text("modified_timestamp")
                )),
                at,
            ))
        });
    into.push(ConversationSummary { id, last });
}

/// A conversation and its creation time (which decides `dt`).
pub fn conversation(raw: Value, extracted_at: i64) -> Result<(DateTime<Utc>, Row), String> {
    let mut r = Record::new(
        schema::table("social25.conversations"),
        object(raw, "conversation")?,
    );
    let id = r.required_str("id")?;
    let created = required_time(&mut r, "created")?;
    r.set("conversation_id", Cell::Str(id));
    r.set("created_at", Cell::Micros(time::micros(created)));
    r.string("flow", "flow");
    r.string("state", "state");
    r.string("agent_id", "agent_id");
    r.string_list("tags", "tags");
    r.text("comments", "comments");
    // An unreadable duration is not worth losing the conversation: it stays in _extra.
    if let Some(Ok(d)) = r
        .peek("has_expired")
        .and_then(Value::as_str)
        .map(time::parse_duration_micros)
    {
        r.take("has_expired");
        r.set("has_expired_us", Cell::Int(d));
    }
    // Nested objects: the known fields become columns, the rest stays in _extra.
    let mut leftovers = Map::new();
    for (field, columns) in [
        (
            "user",
            &[
                ("user_id", "id"),
                ("user_first_name", "first_name"),
                ("user_last_name", "last_name"),
                ("user_phone", "phone_number"),
            ][..],
        ),
        (
            "platform",
            &[("platform_source", "source"), ("platform_name", "name")][..],
        ),
        ("last_message", &[("last_message_id", "id")][..]),
    ] {
        match r.take(field) {
            None => {}
            Some(Value::Object(mut o)) => {
                for (column, key) in columns {
                    match o.remove(*key) {
                        None | Some(Value::Null) => {}
                        Some(Value::String(s)) => r.set(column, Cell::Str(s)),
                        Some(v) => {
                            o.insert(key.to_string(), v);
                        }
                    }
                }
                if field == "last_message" {
                    match o.remove("timestamp") {
                        Some(Value::String(s)) => match time::parse_naive_utc(&s) {
                            Ok(t) => r.set("last_message_at", Cell::Micros(time::micros(t))),
                            Err(_) => {
                                o.insert("timestamp".into(), Value::String(s));
                            }
                        },
                        Some(v) => {
                            o.insert("timestamp".into(), v);
                        }
                        None => {}
                    }
                    // The message itself lives in social25.messages; keep only what is not there.
                    continue;
                }
                if !o.is_empty() {
                    leftovers.insert(field.to_string(), Value::Object(o));
                }
            }
            Some(other) => {
                leftovers.insert(field.to_string(), other);
            }
        }
    }
    let mut row = r.finish(extracted_at)?;
    if !leftovers.is_empty() {
        let mut extra: Map<String, Value> = row
            .extra
            .as_deref()
            .and_then(|e| serde_json::from_str(e).ok())
            .unwrap_or_default();
        extra.extend(leftovers);
        row.extra = Some(Value::Object(extra).to_string());
    }
    Ok((created, row))
}

/// The columns messages and failed syncs share.
fn message_fields(r: &mut Record<'_>) -> Result<DateTime<Utc>, String> {
    let id = r.required_str("id")?;
    let sent = required_time(r, "timestamp")?;
    r.set("message_id", Cell::Str(id));
    r.set("sent_at", Cell::Micros(time::micros(sent)));
    r.naive_utc("modified_at", "modified_timestamp");
    r.string("agent_id", "agent_id");
    r.string("type", "type");
    r.string("status", "status");
    r.boolean("outbound", "outbound");
    r.text("text", "text");
    r.text("auxiliary_data", "auxiliary_data");
    Ok(sent)
}

/// A message of conversation `conversation_id` (the one that was asked for:
/// a message claiming another conversation is rejected, so merging by
/// conversation stays exact).
pub fn message(
    raw: Value,
    conversation_id: &str,
    extracted_at: i64,
) -> Result<(DateTime<Utc>, Row), String> {
    let mut r = Record::new(schema::table("social25.messages"), object(raw, "message")?);
    match r.take("conversation_id") {
        None => {}
        Some(Value::String(c)) if c == conversation_id => {}
        Some(other) => {
            return Err(format!("field `conversation_id` is {}, but the message was listed under conversation {conversation_id}", short(&other)))
        }
    }
    r.set("conversation_id", Cell::Str(conversation_id.to_string()));
    let sent = message_fields(&mut r)?;
    for f in ["file", "file_type", "media_title", "mime_type"] {
        r.text(f, f);
    }
    Ok((sent, r.finish(extracted_at)?))
}

/// The social25.conversation_stats row of a conversation from its messages'
/// (sent at µs, outbound) pairs; None without messages. The same rules as
/// the views had when they joined social25.messages: the first response is
/// the first outbound message at or after the first inbound one.
pub fn conversation_stats(
    conversation_id: &str,
    messages: &[(i64, Option<bool>)],
    extracted_at: i64,
) -> Option<(DateTime<Utc>, Row)> {
    let first = messages.iter().map(|m| m.0).min()?;
    let last = messages.iter().map(|m| m.0).max()?;
    let sent = |outbound: bool| messages.iter().filter(move |m| m.1 == Some(outbound));
    let first_in = sent(false).map(|m| m.0).min();
    let first_out = first_in.and_then(|t| sent(true).map(|m| m.0).filter(|s| *s >= t).min());
    let at = |t: Option<i64>| t.map_or(Cell::Null, Cell::Micros);
    let row = Row::named(
        schema::table("social25.conversation_stats"),
        vec![
            ("conversation_id", Cell::Str(conversation_id.to_string())),
            ("first_message_at", Cell::Micros(first)),
            ("last_message_at", Cell::Micros(last)),
            ("first_inbound_at", at(first_in)),
            ("first_response_at", at(first_out)),
            ("inbound_messages", Cell::Int(sent(false).count() as i64)),
            ("outbound_messages", Cell::Int(sent(true).count() as i64)),
            ("message_count", Cell::Int(messages.len() as i64)),
        ],
        extracted_at,
    )
    .ok()?;
    Some((DateTime::from_timestamp_micros(first)?, row))
}

/// A message that failed to sync to Salesforce.
pub fn failed_sync(raw: Value, extracted_at: i64) -> Result<(DateTime<Utc>, Row), String> {
    let mut r = Record::new(
        schema::table("social25.failed_syncs"),
        object(raw, "failed sync")?,
    );
    let sent = message_fields(&mut r)?;
    for f in [
        "ext_identifier",
        "tenant_id",
        "conversation_id",
        "log_message",
    ] {
        r.string(f, f);
    }
    r.text("custom_data", "custom_data");
    Ok((sent, r.finish(extracted_at)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conversation_stats_follow_the_first_inbound_message() {
        let t = schema::table("social25.conversation_stats");
        // outbound greeting, inbound, a message of unknown direction, two replies
        let msgs = [
            (50, Some(true)),
            (100, Some(false)),
            (120, None),
            (300, Some(true)),
            (200, Some(true)),
        ];
        let (first, row) = conversation_stats("c1", &msgs, 0).unwrap();
        let cell = |c: &str| row.cells[t.index_of(c).unwrap()].clone();
        assert_eq!(first.timestamp_micros(), 50);
        assert_eq!(cell("first_inbound_at"), Cell::Micros(100));
        assert_eq!(cell("first_response_at"), Cell::Micros(200));
        assert_eq!(cell("last_message_at"), Cell::Micros(300));
        assert_eq!(cell("inbound_messages"), Cell::Int(1));
        assert_eq!(cell("outbound_messages"), Cell::Int(3));
        assert_eq!(cell("message_count"), Cell::Int(5));
        // Only outbound: no inbound, no response. No messages: no row.
        let (_, row) = conversation_stats("c2", &[(10, Some(true))], 0).unwrap();
        assert_eq!(
            row.cells[t.index_of("first_response_at").unwrap()],
            Cell::Null
        );
        assert!(conversation_stats("c3", &[], 0).is_none());
    }

    #[test]
    fn tenant_platforms_lose_their_secrets() {
        let raw = json!({"id": "t1", "name": "Gen25", "settings": {"pusher": {"cluster": "eu"}}, "tags": [],
            "platforms": [{"id": 1, "platform": "facebook", "name": "FB", "page_id": "1",
                "app_secret": "s3cret", "page_token": "tok3n", "callback_url": null, "data": {"channel_subtype": "line"}, "new": 1}]});
        let (t, p) = tenant(raw, 0).unwrap();
        let all = format!("{t:?}{p:?}");
        assert!(!all.contains("s3cret") && !all.contains("tok3n"), "{all}");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].extra.as_deref(), Some(r#"{"new":1}"#));
        let pt = schema::table("social25.platforms");
        assert_eq!(
            p[0].cells[pt.index_of("data").unwrap()],
            Cell::Str(r#"{"channel_subtype":"line"}"#.into())
        );
        assert!(t.extra.unwrap().contains("pusher"));
    }

    #[test]
    fn summaries_give_back_what_was_pushed_in_order_across_parts() {
        let t = |s: i64| DateTime::from_timestamp_micros(1_540_454_802_000_000 + s * 1_000_003);
        let mut all = Summaries::default();
        type Last = Option<(Fingerprint, DateTime<Utc>)>;
        let mut expected: Vec<(String, Last)> = Vec::new();
        for part in 0..3 {
            let mut sums = Summaries::default();
            for i in 0..(part * 5) {
                let id = format!("conversation-{part}-{}", "é".repeat(i));
                let last =
                    (i % 4 != 0).then(|| (key_hash(&id), t((part * 100 + i) as i64).unwrap()));
                sums.push(ConversationSummary { id: &id, last });
                expected.push((id, last));
            }
            all.append(sums); // the first part is empty
        }
        assert_eq!(all.len(), expected.len());
        for (i, (id, last)) in expected.iter().enumerate() {
            assert_eq!(all.get(i), ConversationSummary { id, last: *last });
        }
    }

    #[test]
    fn conversation_flattens_and_parses_has_expired() {
        let raw = json!({"id": "c1", "flow": "SERVICE", "state": "OPEN", "created": "2018-09-10T12:30:28.431583",
            "agent_id": null, "user": {"id": "u1", "first_name": "Alen", "last_name": "D.", "phone_number": null, "gender": "male"},
            "platform": {"source": "facebook", "name": "FB", "supports_media_captions": false},
            "comments": null, "tags": ["vip"],
            "last_message": {"id": "m9", "timestamp": "2018-10-25T08:06:42", "modified_timestamp": "2018-10-25T08:06:43.730595", "text": null},
            "has_expired": "116 05:19:39.788243"});
        let mut sums = Summaries::default();
        summary(&raw, &mut sums);
        let s = sums.get(0);
        assert_eq!(s.id, "c1");
        assert_eq!(
            s.last.as_ref().unwrap().0,
            key_hash("m9@2018-10-25T08:06:42@2018-10-25T08:06:43.730595")
        );
        let (created, row) = conversation(raw, 0).unwrap();
        assert_eq!(created.timestamp_micros(), 1_536_582_628_431_583);
        let t = schema::table("social25.conversations");
        let cell = |c: &str| row.cells[t.index_of(c).unwrap()].clone();
        assert_eq!(cell("user_first_name"), Cell::Str("Alen".into()));
        assert_eq!(cell("platform_source"), Cell::Str("facebook".into()));
        assert_eq!(cell("last_message_at"), Cell::Micros(1_540_454_802_000_000));
        assert_eq!(
            cell("has_expired_us"),
            Cell::Int(((116 * 86_400 + 5 * 3600 + 19 * 60 + 39) * 1_000_000) + 788_243)
        );
        assert_eq!(cell("tags"), Cell::List(vec!["vip".into()]));
        let extra: Value = serde_json::from_str(row.extra.as_deref().unwrap()).unwrap();
        assert_eq!(extra["user"], json!({"gender": "male"}));
        assert_eq!(extra["platform"], json!({"supports_media_captions": false}));
    }

    #[test]
    fn messages_keep_aux_data_as_text_and_refuse_a_foreign_conversation() {
        let raw = json!({"id": "m1", "conversation_id": "c1", "timestamp": "2018-10-24T11:02:40.475002",
            "modified_timestamp": "2018-10-25T10:59:14", "type": "TEXT", "status": "READ", "outbound": true,
            "text": "hello!", "auxiliary_data": {"title": "x"}, "file": null});
        let (_, row) = message(raw.clone(), "c1", 0).unwrap();
        let t = schema::table("social25.messages");
        assert_eq!(
            row.cells[t.index_of("auxiliary_data").unwrap()],
            Cell::Str(r#"{"title":"x"}"#.into())
        );
        assert!(message(raw.clone(), "c2", 0)
            .unwrap_err()
            .contains("conversation c2"));
        let mut bad = raw;
        bad["timestamp"] = json!("yesterday");
        assert!(message(bad, "c1", 0).unwrap_err().contains("timestamp"));
    }
}
