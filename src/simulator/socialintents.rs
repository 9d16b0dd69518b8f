//! Social Intents endpoints of the simulator: /chats, /missedchats,
//! /offlinemessages, /contacts, /apps, /ping, with Basic or
//! X-SocialIntentsToken auth, date_from/date_to/timezone filters, and
//! `startDate` rendered in the requested timezone with the API's AM/PM quirk.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use serde_json::{json, Value};

use super::clock::local_range;
use super::data::{SimChat, WIDGETS};
use super::SimState;

/// Where the routes are nested (the API root).
pub const PREFIX: &str = "/socialintents/v1/api";

pub fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route(
            "/ping",
            get(|| async { axum::Json(json!({"statusCode": "200", "status": "PingSuccessful"})) }),
        )
        .route("/{endpoint}", get(handle))
        .route("/{endpoint}/", get(handle))
}

fn envelope(
    status: StatusCode,
    message: &str,
    key: &str,
    records: Vec<Value>,
) -> (StatusCode, String) {
    let ok = status.is_success();
    let body = json!({
        "apiStatus": if ok { "Success" } else { "Error" },
        "apiStatusCode": status.as_u16().to_string(),
        "apiStatusMessage": message,
        key: records,
    });
    (status, body.to_string())
}

async fn handle(
    State(sim): State<Arc<SimState>>,
    Path(endpoint): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    sim.count(&format!("socialintents/{endpoint}"));
    if let Some(r) = sim.fault("socialintents").await {
        return r;
    }
    let cfg = sim.config();
    if !authorized(&headers, &cfg.account_id, &cfg.api_token) {
        return json_response(envelope(
            StatusCode::UNAUTHORIZED,
            "Invalid credentials",
            "chats",
            vec![],
        ));
    }
    if let Some(msg) = sim.faults.lock().expect("faults lock").api_error.clone() {
        return json_response((
            StatusCode::OK,
            json!({"apiStatus": "Error", "apiStatusCode": "500", "apiStatusMessage": msg})
                .to_string(),
        ));
    }
    let tz: Tz = match q.get("timezone").map(|s| s.parse()) {
        None => cfg.socialintents.tz,
        Some(Ok(tz)) => tz,
        Some(Err(_)) => {
            return json_response(envelope(
                StatusCode::BAD_REQUEST,
                "Unknown timezone",
                "chats",
                vec![],
            ))
        }
    };
    let date = |k: &str| q.get(k).map(|s| s.parse::<NaiveDate>());
    let (from, to) = match (date("date_from"), date("date_to")) {
        (Some(Err(_)), _) | (_, Some(Err(_))) => {
            return json_response(envelope(
                StatusCode::BAD_REQUEST,
                "Dates must be yyyy-MM-dd",
                "chats",
                vec![],
            ))
        }
        (f, t) => (
            f.and_then(Result::ok)
                .unwrap_or(cfg.socialintents.first_day - chrono::Duration::days(2)),
            t.and_then(Result::ok)
                .unwrap_or(cfg.socialintents.last_day + chrono::Duration::days(2)),
        ),
    };
    let (start, end) = local_range(from, to.max(from), tz);
    let data = &cfg.socialintents;
    let (key, records): (&str, Vec<Value>) = match endpoint.as_str() {
        "chats" => ("chats", data.chats_in(start, end).iter().map(|c| chat_json(c, tz, data.drift)).collect()),
        "missedchats" => (
            "chats",
            data.chats_in(start, end).iter().filter(|c| c.chat_type == "Missed").map(|c| chat_json(c, tz, data.drift)).collect(),
        ),
        "offlinemessages" => ("chats", data.offline_in(start, end).iter().map(|c| chat_json(c, tz, data.drift)).collect()),
        "contacts" => (
            "contacts",
            data.contacts_in(start, end)
                .iter()
                .map(|c| {
                    json!({"id": c.id, "appId": c.widget_id, "name": c.name, "email": c.email,
                           "phone": "", "createdDate": render_time(c.created, tz, false)})
                })
                .collect(),
        ),
        "apps" => (
            "apps",
            WIDGETS
                .iter()
                .map(|(id, name, wtz)| {
                    let created = DateTime::from_timestamp(1_700_000_000, 0).expect("valid");
                    json!({"id": id, "name": name, "timezone": wtz, "createdDate": render_time(created, tz, false)})
                })
                .collect(),
        ),
        _ => return json_response(envelope(StatusCode::NOT_FOUND, "Not found", "chats", vec![])),
    };
    let (status, mut body) = envelope(StatusCode::OK, "", key, records);
    if sim.truncate() {
        body.truncate(body.len() / 2);
    }
    json_response((status, body))
}

fn json_response((status, body): (StatusCode, String)) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn authorized(headers: &HeaderMap, account: &str, token: &str) -> bool {
    if let Some(t) = headers.get("x-socialintentstoken") {
        return t.as_bytes() == token.as_bytes();
    }
    let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(b64) = auth.strip_prefix("Basic ") else {
        return false;
    };
    let expected = format!("{account}:{token}");
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .is_ok_and(|d| d == expected.as_bytes())
}

/// "2017-06-24 15:01:31 PM": 24-hour hour plus a redundant marker, or, when
/// `twelve_hour`, a true 12-hour clock.
fn render_time(t: DateTime<Utc>, tz: Tz, twelve_hour: bool) -> String {
    let local = t.with_timezone(&tz);
    if twelve_hour {
        local.format("%Y-%m-%d %I:%M:%S %p").to_string()
    } else {
        let marker = if chrono::Timelike::hour(&local) >= 12 {
            "PM"
        } else {
            "AM"
        };
        format!("{} {marker}", local.format("%Y-%m-%d %H:%M:%S"))
    }
}

fn chat_json(c: &SimChat, tz: Tz, drift: bool) -> Value {
    let start = if c.malformed {
        "2017-13-45 99:99:99 PM".to_string()
    } else {
        render_time(c.start, tz, c.twelve_hour)
    };
    let messages: Vec<Value> = c
        .messages
        .iter()
        .map(|m| json!({"type": m.kind, "nickname": m.nickname, "timestamp": m.ts_ms, "body": m.body}))
        .collect();
    let mut v = json!({
        "id": c.id,
        "chatType": c.chat_type,
        "appId": c.widget_id,
        "accountId": "2c9f8d8744e044e90144e0460e770000",
        "referrer": "",
        "startDate": start,
        "userAgent": "Safari 10.1/OS X 10.11",
        "ip": "73.184.238.75",
        "page": "http://www.example.com/pricing",
        "location": "Atlanta, GA, US",
        "visitorId": c.visitor_id,
        "visitorName": c.visitor_name,
        "visitorPhone": c.visitor_phone,
        "visitorEmail": c.visitor_email,
        "agentName": c.agent.as_ref().map(|a| a.name.clone()),
        "agentId": c.agent.as_ref().map(|a| a.id.clone()),
        "agentEmail": c.agent.as_ref().map(|a| a.email.clone()),
        "duration": c.duration_s,
        "visits": c.visits,
        "visitorCustom1": "plan=pro",
        "visitorCustom2": format!("callback {} / {}", c.visitor_phone, c.visitor_email),
        "textBody": c.messages.iter().map(|m| format!("{}: {}", m.nickname, m.body)).collect::<Vec<_>>().join("\n"),
        "htmlBody": c.messages.iter().map(|m| format!("<p><b>{}</b>: {}</p>", m.nickname, m.body)).collect::<String>(),
    });
    if c.chat_type != "Offline Message" {
        v["messages"] = Value::Array(messages);
    }
    if drift {
        v["sentiment"] = json!("positive");
        v["visits"] = json!(format!("{} visits", c.visits));
    }
    v
}
