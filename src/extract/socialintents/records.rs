//! Social Intents response bodies -> rows: the `apiStatus` envelope, and one
//! mapper per record shape (chat, contact, widget).

use chrono::{DateTime, Utc};
use std::collections::HashMap;

use std::ops::Range;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::normalize::{as_i64, time, Cell, Record, Row};
use crate::schema;

/// A record turned into rows: its time (which decides `dt`), the main row and
/// child rows (chat messages).
pub struct Parsed {
    pub time: Option<DateTime<Utc>>,
    pub rows: (Row, Vec<Row>),
}

/// The records of a response body, each still raw JSON text (no tree of the
/// whole body is built): checks `apiStatus` and finds the record array. A
/// record array that is `null` or not an array is an error, not "no
/// records": replacing a committed partition with nothing on the word of a
/// malformed answer would lose data.
pub fn envelope<'a>(body: &'a [u8], endpoint: &str) -> Result<Vec<&'a RawValue>, String> {
    match serde_json::from_slice(body) {
        Ok(obj) => records_of(obj, endpoint),
        Err(e) => Err(format!("expected a JSON object with apiStatus ({e})")),
    }
}

/// [`envelope`] in the one pass a run makes over a body: where each record's
/// text lies in `body`. The outer error: `body` is not complete JSON (cut
/// off, or not JSON at all; the caller retries it); the inner one: valid
/// JSON that is not a successful answer.
pub fn envelope_ranges(
    body: &[u8],
    endpoint: &str,
) -> Result<Result<Vec<Range<usize>>, String>, serde_json::Error> {
    let obj = match serde_json::from_slice(body) {
        Ok(obj) => obj,
        Err(e) if e.is_data() => {
            return Ok(Err(format!("expected a JSON object with apiStatus ({e})")))
        }
        Err(e) => return Err(e),
    };
    let base = body.as_ptr() as usize;
    Ok(records_of(obj, endpoint).map(|records| {
        records
            .iter()
            .map(|r| {
                let start = r.get().as_ptr() as usize - base;
                start..start + r.get().len()
            })
            .collect()
    }))
}

/// A value of the envelope's object: an array is kept as its elements' raw
/// text (the records, not parsed yet), anything else (the status fields) as
/// a value.
enum Part<'a> {
    Array(Vec<&'a RawValue>),
    Other(Value),
}

impl<'de> Deserialize<'de> for Part<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PartVisitor)
    }
}

struct PartVisitor;

impl<'de> Visitor<'de> for PartVisitor {
    type Value = Part<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Part<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            items.push(item);
        }
        Ok(Part::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Part<'de>, A::Error> {
        Value::deserialize(MapAccessDeserializer::new(map)).map(Part::Other)
    }
    fn visit_str<E>(self, v: &str) -> Result<Part<'de>, E> {
        Ok(Part::Other(Value::String(v.to_string())))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Part<'de>, E> {
        Ok(Part::Other(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Part<'de>, E> {
        Ok(Part::Other(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Part<'de>, E> {
        Ok(Part::Other(Value::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Part<'de>, E> {
        Ok(Part::Other(Value::from(v)))
    }
    fn visit_unit<E>(self) -> Result<Part<'de>, E> {
        Ok(Part::Other(Value::Null))
    }
}

/// The checks of [`envelope`] on the parsed object.
fn records_of<'a>(
    mut obj: HashMap<String, Part<'a>>,
    endpoint: &str,
) -> Result<Vec<&'a RawValue>, String> {
    let small = |k: &str| match obj.get(k) {
        Some(Part::Other(v)) => Some(v.clone()),
        _ => None,
    };
    let status = small("apiStatus")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "Success".into());
    if status != "Success" {
        let code = small("apiStatusCode")
            .map(|v| v.to_string())
            .unwrap_or_default();
        let message = small("apiStatusMessage")
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        return Err(format!("apiStatus {status} {code}: {message}"));
    }
    let key = match endpoint {
        "contacts" => "contacts",
        "apps" => "apps",
        _ => "chats",
    };
    let part = match obj.remove(key) {
        Some(part) => part,
        None => {
            // Accept the record array under another name if it is the only one.
            let mut arrays = obj.into_values().filter(|p| matches!(p, Part::Array(_)));
            match (arrays.next(), arrays.next()) {
                (Some(only), None) => only,
                _ => return Err(format!("no `{key}` array in the response")),
            }
        }
    };
    match part {
        Part::Array(records) => Ok(records),
        Part::Other(v) => Err(format!("`{key}` is {}, expected an array", kind(&v))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Normalizes one record of `endpoint`; an error is the reject reason.
pub fn parse(endpoint: &str, raw: Value, extracted_at: i64) -> Result<Parsed, String> {
    let Value::Object(obj) = raw else {
        return Err(format!("record is {}, expected an object", kind(&raw)));
    };
    match endpoint {
        "chats" | "missedchats" => chat(obj, "socialintents.chats", true, extracted_at),
        "offlinemessages" => chat(obj, "socialintents.offline_messages", false, extracted_at),
        "contacts" => contact(obj, extracted_at),
        "apps" => widget(obj, extracted_at),
        other => Err(format!("no mapper for endpoint {other}")),
    }
}

/// `startDate`-style field (requested in UTC) -> instant.
fn si_time(r: &mut Record<'_>, field: &str) -> Result<DateTime<Utc>, String> {
    let s = r.required_str(field)?;
    time::parse_socialintents(&s)
        .map(|n| n.and_utc())
        .map_err(|e| format!("field `{field}`: {e}"))
}

fn chat(
    obj: Map<String, Value>,
    table: &str,
    with_messages: bool,
    extracted_at: i64,
) -> Result<Parsed, String> {
    let table = schema::table(table);
    let mut r = Record::new(table, obj);
    let id = r.required_str("id")?;
    let started = si_time(&mut r, "startDate")?;
    r.set("chat_id", Cell::Str(id.clone()));
    r.set("started_at", Cell::Micros(time::micros(started)));
    for (column, field) in [
        ("chat_type", "chatType"),
        ("widget_id", "appId"),
        ("visitor_id", "visitorId"),
        ("visitor_name", "visitorName"),
        ("visitor_name", "visitorFullName"),
        ("visitor_email", "visitorEmail"),
        ("visitor_phone", "visitorPhone"),
        ("agent_id", "agentId"),
        ("agent_name", "agentName"),
        ("agent_email", "agentEmail"),
        ("page", "page"),
        ("referrer", "referrer"),
        ("ip", "ip"),
        ("location", "location"),
        ("user_agent", "userAgent"),
        ("text_body", "textBody"),
        ("html_body", "htmlBody"),
    ] {
        if column == "visitor_name" && field == "visitorFullName" && r.has("visitor_name") {
            continue; // visitorName won; visitorFullName stays in _extra if it differs
        }
        r.string(column, field);
    }
    r.int("duration_seconds", "duration");
    r.int("visits", "visits");
    let mut children = Vec::new();
    if with_messages {
        let messages = match r.take("messages") {
            None => Vec::new(),
            Some(Value::Array(m)) => m,
            Some(other) => {
                return Err(format!(
                    "field `messages` is {}, expected an array",
                    kind(&other)
                ))
            }
        };
        r.set("message_count", Cell::Int(messages.len() as i64));
        let mt = schema::table("socialintents.chat_messages");
        // (sent_at µs, from the visitor?) of each timed message, for the
        // first-response facts below.
        let mut timed: Vec<(i64, bool)> = Vec::with_capacity(messages.len());
        for (i, m) in messages.into_iter().enumerate() {
            let Value::Object(mobj) = m else {
                return Err(format!("messages[{i}] is {}, expected an object", kind(&m)));
            };
            let mut mr = Record::new(mt, mobj);
            mr.set("chat_id", Cell::Str(id.clone()));
            mr.set("seq", Cell::Int(i as i64 + 1));
            if let Some(ts) = mr.take("timestamp") {
                let sent = as_i64(&ts)
                    .ok_or_else(|| {
                        format!("messages[{i}].timestamp is {ts}, expected epoch milliseconds")
                    })
                    .and_then(time::from_epoch_millis)?;
                mr.set("sent_at", Cell::Micros(time::micros(sent)));
                match mr.peek("type").and_then(Value::as_str) {
                    Some("messageToAgent") => timed.push((time::micros(sent), true)),
                    Some("messageToVisitor") => timed.push((time::micros(sent), false)),
                    _ => {}
                }
            }
            mr.string("type", "type");
            mr.string("nickname", "nickname");
            mr.string("body", "body");
            children.push(
                mr.finish(extracted_at)
                    .map_err(|e| format!("messages[{i}]: {e}"))?,
            );
        }
        let (first_in, first_out) = first_response(&timed);
        if let Some(t) = first_in {
            r.set("first_message_at", Cell::Micros(t));
        }
        if let Some(t) = first_out {
            r.set("first_response_at", Cell::Micros(t));
        }
    } else {
        let n = r
            .peek("messages")
            .and_then(Value::as_array)
            .map(|m| m.len())
            .unwrap_or(0);
        r.set("message_count", Cell::Int(n as i64));
    }
    Ok(Parsed {
        time: Some(started),
        rows: (r.finish(extracted_at)?, children),
    })
}

/// The first-response facts of a chat from its messages' (time, from the
/// visitor?) pairs: the visitor's first message, and the first agent message
/// at or after it (None when nobody replied). Computed once here, so the
/// reporting views need not join every message.
fn first_response(messages: &[(i64, bool)]) -> (Option<i64>, Option<i64>) {
    let first_in = messages.iter().filter(|m| m.1).map(|m| m.0).min();
    let first_out = first_in.and_then(|start| {
        messages
            .iter()
            .filter(|m| !m.1 && m.0 >= start)
            .map(|m| m.0)
            .min()
    });
    (first_in, first_out)
}

fn contact(obj: Map<String, Value>, extracted_at: i64) -> Result<Parsed, String> {
    let mut r = Record::new(schema::table("socialintents.contacts"), obj);
    let id = r.required_str("id")?;
    let created = si_time(&mut r, "createdDate")?;
    r.set("contact_id", Cell::Str(id));
    r.set("created_at", Cell::Micros(time::micros(created)));
    r.string("widget_id", "appId");
    r.string("name", "name");
    r.string("email", "email");
    r.string("phone", "phone");
    Ok(Parsed {
        time: Some(created),
        rows: (r.finish(extracted_at)?, Vec::new()),
    })
}

fn widget(obj: Map<String, Value>, extracted_at: i64) -> Result<Parsed, String> {
    let mut r = Record::new(schema::table("socialintents.widgets"), obj);
    let id = r.required_str("id")?;
    r.set("widget_id", Cell::Str(id));
    r.string("name", "name");
    r.string("timezone", "timezone");
    if r.peek("createdDate").is_some() {
        let created = si_time(&mut r, "createdDate")?;
        r.set("created_at", Cell::Micros(time::micros(created)));
    }
    Ok(Parsed {
        time: None,
        rows: (r.finish(extracted_at)?, Vec::new()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "id": "2c9fa7465ccfd687015cda9fed35085a", "appId": "w1", "accountId": "acct",
            "startDate": "2017-06-24 15:01:31 PM", "visitorName": "Tom", "agentName": "James",
            "duration": 41, "visits": "5", "chatType": "Answered",
            "messages": [
                {"type": "messageToAgent", "nickname": "Tom", "timestamp": 1498316491095i64, "body": "Hi"},
                {"type": "messageToVisitor", "nickname": "James", "timestamp": 1498316505253i64, "body": "Hello", "mood": "happy"}
            ]
        })
    }

    #[test]
    fn chat_maps_columns_messages_and_extra() {
        let p = parse("chats", sample(), 7).unwrap();
        let t = schema::table("socialintents.chats");
        let (main, msgs) = p.rows;
        let cell = |c: &str| main.cells[t.index_of(c).unwrap()].clone();
        assert_eq!(cell("started_at"), Cell::Micros(1_498_316_491_000_000));
        assert_eq!(cell("visits"), Cell::Int(5));
        assert_eq!(cell("message_count"), Cell::Int(2));
        assert_eq!(main.extra.as_deref(), Some(r#"{"accountId":"acct"}"#));
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[1].cells[2], Cell::Micros(1_498_316_505_253_000));
        assert_eq!(msgs[1].extra.as_deref(), Some(r#"{"mood":"happy"}"#));
    }

    #[test]
    fn first_response_is_the_first_agent_message_after_the_visitors_first() {
        let ms = |s: i64| s * 1_000;
        let mut v = sample();
        // An agent greeting before the visitor writes is not a response.
        v["messages"] = json!([
            {"type": "messageToVisitor", "timestamp": ms(100)},
            {"type": "messageToAgent", "timestamp": ms(110)},
            {"type": "messageToAgent", "timestamp": ms(105)},
            {"type": "messageToVisitor", "timestamp": ms(170)},
            {"type": "messageToVisitor", "timestamp": ms(130)},
        ]);
        let t = schema::table("socialintents.chats");
        let (main, _) = parse("chats", v.clone(), 0).unwrap().rows;
        let cell = |c: &str| main.cells[t.index_of(c).unwrap()].clone();
        assert_eq!(cell("first_message_at"), Cell::Micros(105_000_000));
        assert_eq!(cell("first_response_at"), Cell::Micros(130_000_000));
        // No reply after the visitor's first message: no response.
        v["messages"] = json!([
            {"type": "messageToVisitor", "timestamp": ms(100)},
            {"type": "messageToAgent", "timestamp": ms(110)},
        ]);
        let (main, _) = parse("chats", v, 0).unwrap().rows;
        let cell = |c: &str| main.cells[t.index_of(c).unwrap()].clone();
        assert_eq!(cell("first_message_at"), Cell::Micros(110_000_000));
        assert_eq!(cell("first_response_at"), Cell::Null);
    }

    #[test]
    fn bad_records_give_reasons() {
        let mut v = sample();
        v["startDate"] = json!("not a date");
        assert!(parse("chats", v, 0).err().unwrap().contains("startDate"));
        let mut v = sample();
        v["messages"][1]["timestamp"] = json!("soon");
        assert!(parse("chats", v, 0)
            .err()
            .unwrap()
            .contains("messages[1].timestamp"));
        assert!(parse("chats", json!([1]), 0).is_err());
    }

    #[test]
    fn envelope_checks_status() {
        let env = |body: &str, endpoint: &str| envelope(body.as_bytes(), endpoint).map(|r| r.len());
        let e = env(
            r#"{"apiStatus":"Error","apiStatusCode":"403","apiStatusMessage":"Invalid token"}"#,
            "chats",
        );
        assert!(e.unwrap_err().contains("Invalid token"));
        assert_eq!(
            env(r#"{"apiStatus":"Success","chats":[{"id":1}]}"#, "chats"),
            Ok(1)
        );
        assert_eq!(
            env(
                r#"{"apiStatus":"Success","contacts":[{"id":1},{"id":2}]}"#,
                "contacts"
            ),
            Ok(2)
        );
        assert_eq!(
            env(r#"{"apiStatus":"Success","items":[{"id":1}]}"#, "chats"),
            Ok(1),
            "the only array"
        );
        assert!(env("[]", "chats").is_err());
    }

    #[test]
    fn one_pass_finds_each_record_and_tells_a_cut_body_from_a_bad_answer() {
        let body = br#"{"apiStatus":"Success","n":[1,2],"chats":[ {"id":"a","t":[1,{"x":"]"}]} ,{"id":"b"}],"more":{"k":[3]}}"#;
        let ranges = envelope_ranges(body, "chats").unwrap().unwrap();
        let texts: Vec<&[u8]> = ranges.into_iter().map(|r| &body[r]).collect();
        assert_eq!(
            texts,
            [&br#"{"id":"a","t":[1,{"x":"]"}]}"#[..], br#"{"id":"b"}"#]
        );
        // Cut off, or not JSON: the outer error (the client retries it).
        assert!(envelope_ranges(&body[..body.len() - 1], "chats").is_err());
        assert!(envelope_ranges(b"<html>", "chats").is_err());
        // Complete JSON that is not a successful answer: the inner error.
        let inner = |b: &[u8]| envelope_ranges(b, "chats").unwrap().unwrap_err();
        assert!(inner(b"[1]").contains("expected a JSON object"));
        assert!(inner(br#"{"apiStatus":"Error","apiStatusMessage":"no"}"#).contains("no"));
        assert!(inner(br#"{"chats":7}"#).contains("`chats` is a number"));
    }

    #[test]
    fn a_null_or_non_array_record_list_is_an_error_not_no_records() {
        let e = envelope(br#"{"apiStatus":"Success","chats":null}"#, "chats").unwrap_err();
        assert!(e.contains("`chats` is null, expected an array"), "{e}");
        let e = envelope(br#"{"apiStatus":"Success","chats":{"a":1}}"#, "chats").unwrap_err();
        assert!(e.contains("`chats` is an object"), "{e}");
        assert!(envelope(br#"{"apiStatus":"Success"}"#, "chats").is_err());
    }
}
