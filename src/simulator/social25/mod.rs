//! Social25 in the simulator: a deterministic tenant ([`S25Data`] in
//! [`data`]: agents, conversations in five states, their messages, failed
//! syncs) and its endpoints under `/social25/api/v1.0`: Bearer auth, `{count, next,
//! previous, results}` pages with absolute `next` URLs, the `state` filter
//! (default: open and auto_bot), and the failed-sync rules (400 for more than
//! 31 days between from_time and till_time, or a till_time later than now
//! minus 15 minutes).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use serde_json::{json, Value};

mod data;

pub use data::*;

use super::SimState;

/// Where the routes are nested (the API root).
pub const PREFIX: &str = "/social25/api/v1.0";

/// The demo tenant.
pub const DEMO_TENANT_ID: &str = "007be0e1-6c95-4843-8673-a76a479266f8";
/// The demo Bearer token.
pub const DEMO_TOKEN: &str = "demo-social25-token";

pub fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/tenants/", get(tenants))
        .route("/tenants/{tenant}/agents/", get(agents))
        .route("/tenants/{tenant}/conversations/", get(conversations))
        .route(
            "/tenants/{tenant}/conversations/{conversation}/messages/",
            get(messages),
        )
        .route("/tenants/{tenant}/messages/failed/", get(failed))
}

type Q = Query<HashMap<String, String>>;

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn detail(status: StatusCode, message: &str) -> Response {
    json_response(status, json!({ "detail": message }).to_string())
}

/// Counts the request, rolls the fault dice, checks the token and the tenant.
async fn gate(
    sim: &SimState,
    key: &str,
    headers: &HeaderMap,
    tenant: Option<&str>,
) -> Result<S25Data, Response> {
    sim.count(key);
    if let Some(r) = sim.fault("social25").await {
        return Err(r);
    }
    let data = sim.config().social25;
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth.strip_prefix("Bearer ") != Some(data.token.as_str()) {
        return Err(detail(StatusCode::UNAUTHORIZED, "Invalid token."));
    }
    if tenant.is_some_and(|t| t != data.tenant_id) {
        return Err(detail(StatusCode::NOT_FOUND, "Not found."));
    }
    Ok(data)
}

/// One page of `items` as `{count, next, previous, results}`, with absolute
/// links; only the page's items are rendered.
fn page<T>(
    sim: &SimState,
    data: &S25Data,
    uri: &Uri,
    q: &HashMap<String, String>,
    items: &[T],
    render: impl Fn(&T) -> Value,
) -> Response {
    let size = data.page_size.max(1);
    let n: usize = q
        .get("page")
        .and_then(|p| p.parse().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    let count = items.len();
    let pages = count.div_ceil(size).max(1);
    if n > pages {
        return detail(StatusCode::NOT_FOUND, "Invalid page.");
    }
    let base = sim.base_url.get().cloned().unwrap_or_default();
    let link = |p: usize, host: &str| {
        let mut pairs: Vec<(String, String)> = q
            .iter()
            .filter(|(k, _)| *k != "page")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        pairs.sort();
        if p > 1 {
            pairs.push(("page".into(), p.to_string()));
        }
        let mut url =
            url::Url::parse(&format!("{host}{PREFIX}{}", uri.path())).expect("simulator URL");
        if !pairs.is_empty() {
            url.query_pairs_mut().extend_pairs(pairs);
        }
        url.to_string()
    };
    let next = (n < pages).then(|| match data.bad_next {
        None => link(n + 1, &base),
        Some(BadNext::Repeat) => link(n, &base),
        Some(BadNext::ForeignHost) => link(n + 1, "http://collector.example"),
    });
    let previous = (n > 1).then(|| link(n - 1, &base));
    let results: Vec<Value> = items
        .iter()
        .skip((n - 1) * size)
        .take(size)
        .map(render)
        .collect();
    let mut body = json!({"count": count as u64 + data.count_skew, "next": next, "previous": previous, "results": results}).to_string();
    if sim.truncate() {
        body.truncate(body.len() / 2);
    }
    json_response(StatusCode::OK, body)
}

async fn tenants(
    State(sim): State<Arc<SimState>>,
    uri: Uri,
    Query(q): Q,
    headers: HeaderMap,
) -> Response {
    let data = match gate(&sim, "social25/tenants", &headers, None).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let a = AGENTS[0];
    let platforms: Vec<Value> = PLATFORMS
        .iter()
        .enumerate()
        .map(|(i, (p, name))| {
            json!({"id": i + 1, "platform": p, "name": name, "page_id": (i + 1).to_string(),
                   "app_secret": format!("app-secret-{p}"), "page_token": format!("page-token-{p}"),
                   "callback_url": null, "data": if *p == "messagebird" { json!({"channel_subtype": "line"}) } else { Value::Null }})
        })
        .collect();
    let tenant = json!({
        "id": data.tenant_id, "name": "Acme Support", "company_logo": "http://example.com/logo.svg",
        "settings": {"pusher": {"public_key": "8f39ad825d7", "cluster": "eu"}}, "tags": ["vip"],
        "agent": {"id": a.0, "username": a.1, "first_name": a.2, "last_name": a.3, "type": "HUMAN", "tenant_id": data.tenant_id},
        "pusher_channel": "presence-acme", "agents": null, "dispatch_style": 1, "platforms": platforms,
    });
    page(&sim, &data, &uri, &q, &[tenant], Value::clone)
}

async fn agents(
    State(sim): State<Arc<SimState>>,
    Path(tenant): Path<String>,
    uri: Uri,
    Query(q): Q,
    headers: HeaderMap,
) -> Response {
    let data = match gate(&sim, "social25/agents", &headers, Some(&tenant)).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    page(&sim, &data, &uri, &q, AGENTS, |(id, user, first, last)| {
        json!({"id": id, "username": user, "first_name": first, "last_name": last,
                   "type": if *user == "bot" { "AUTOMATED" } else { "HUMAN" }, "is_manager": *user == "sofia.b",
                   "is_staff": true, "is_active": true, "timezone": "Europe/Amsterdam", "profile_picture": null,
                   "pusher_channel": format!("private-{user}"), "tenant_id": data.tenant_id, "is_online": false})
    })
}

async fn conversations(
    State(sim): State<Arc<SimState>>,
    Path(tenant): Path<String>,
    uri: Uri,
    Query(q): Q,
    headers: HeaderMap,
) -> Response {
    let data = match gate(&sim, "social25/conversations", &headers, Some(&tenant)).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let states: Vec<String> = match q.get("state").map(|s| s.to_ascii_uppercase()) {
        None => vec!["OPEN".into(), "AUTO_BOT".into()],
        Some(s) if ["OPEN", "CLOSED", "AUTO_BOT", "EXPIRED", "BLOCKED"].contains(&s.as_str()) => {
            vec![s]
        }
        Some(s) => return detail(StatusCode::BAD_REQUEST, &format!("Unknown state {s}.")),
    };
    // Without a fixed clock, "now" moves in whole seconds so a listing's pages share one generation.
    let now = data
        .now
        .unwrap_or_else(|| DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("valid"));
    let all = sim.s25_conversations(&data, now);
    let items: Vec<&S25Conversation> = all
        .iter()
        .filter(|c| states.iter().any(|s| s == c.state))
        .collect();
    page(&sim, &data, &uri, &q, &items, |c| conversation_json(c, now))
}

async fn messages(
    State(sim): State<Arc<SimState>>,
    Path((tenant, conversation)): Path<(String, String)>,
    uri: Uri,
    Query(q): Q,
    headers: HeaderMap,
) -> Response {
    let data = match gate(
        &sim,
        &format!("social25/messages/{conversation}"),
        &headers,
        Some(&tenant),
    )
    .await
    {
        Ok(d) => d,
        Err(r) => return r,
    };
    let Some(c) = data.find(&conversation) else {
        return detail(StatusCode::NOT_FOUND, "Not found.");
    };
    page(&sim, &data, &uri, &q, &c.messages, message_json)
}

async fn failed(
    State(sim): State<Arc<SimState>>,
    Path(tenant): Path<String>,
    uri: Uri,
    Query(q): Q,
    headers: HeaderMap,
) -> Response {
    let data = match gate(&sim, "social25/failed", &headers, Some(&tenant)).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let time = |k: &str| {
        q.get(k)
            .and_then(|v| NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S").ok())
            .map(|n| n.and_utc())
    };
    let (Some(from), Some(till)) = (time("from_time"), time("till_time")) else {
        return detail(
            StatusCode::BAD_REQUEST,
            "from_time and till_time are required, formatted like 2021-05-01T00:00:00.",
        );
    };
    if !q.contains_key("page") {
        if let Some(t) = q.get("type") {
            sim.count(&format!("social25/failed?type={t}"));
        }
        sim.failed_windows
            .lock()
            .expect("windows lock")
            .push((from, till)); // one entry per listing, not per page
    }
    if till - from > Duration::days(31) {
        return detail(
            StatusCode::BAD_REQUEST,
            "There can not be more than 31 days between from_time and till_time.",
        );
    }
    if till > data.now() - Duration::minutes(15) {
        return detail(
            StatusCode::BAD_REQUEST,
            "Messages can be retrieved 15 minutes after they have been received.",
        );
    }
    let items = data.failed_in(from, till);
    page(&sim, &data, &uri, &q, &items, |m| {
        let mut v = message_json(m);
        let o = v.as_object_mut().expect("object");
        o.insert("ext_identifier".into(), json!(uuid(hash_str(&m.id), 3)));
        o.insert("tenant_id".into(), json!(data.tenant_id));
        o.insert("custom_data".into(), Value::Null);
        o.insert("transcribe_enabled".into(), json!(false));
        o.insert("transcribe_in_progress".into(), json!(false));
        o.insert("log_message".into(), json!(m.failure));
        v
    })
}
