//! The CRM "Developer API" in the simulator: a deterministic account
//! ([`CrmData`]: companies, contacts, helpdesk conversations) served under
//! `/crm/api/v1` as plain JSON arrays, with Bearer auth (401 "Invalid or
//! missing API key"), the `companyId` filter, 404 for unknown paths, and
//! switches to edit records (a new `updatedAt`) or delete them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use serde_json::{json, Value};

use super::SimState;

/// Where the routes are nested (the API root).
pub const PREFIX: &str = "/crm/api/v1";
/// The demo API key.
pub const DEMO_API_KEY: &str = "demo-crm-key";

const INDUSTRIES: &[&str] = &["Technology", "Retail", "Logistics", "Healthcare"];
const FIRST: &[&str] = &["Jane", "Omar", "Lena", "Tariq", "Ana", "Bo"];
const LAST: &[&str] = &["Smith", "Khan", "Visser", "Mensah", "Ruiz", "Berg"];
const TAGS: &[&str] = &["support", "urgent", "billing", "sales"];

/// The CRM account the simulator serves.
#[derive(Debug, Clone)]
pub struct CrmData {
    pub seed: u64,
    pub api_key: String,
    pub companies: u32,
    pub contacts_per_company: u32,
    /// First and last UTC day with new conversations.
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
    pub conversations_per_day: u32,
    /// Extra contacts with these emails (e.g. Social Intents visitors), one
    /// per company in turn, written in upper case as people type them.
    pub linked_emails: Vec<String>,
    /// Edits at the source: id -> the new `updatedAt` (notes or status change).
    pub edits: BTreeMap<String, DateTime<Utc>>,
    /// Ids deleted at the source.
    pub deleted: BTreeSet<String>,
    /// Every Nth conversation (by index) is served without `createdAt`; 0: none.
    pub malformed_every: u32,
    /// Nothing later exists yet. None: the wall clock.
    pub now: Option<DateTime<Utc>>,
}

/// A company.
#[derive(Debug, Clone)]
pub struct CrmCompany {
    pub id: String,
    pub name: String,
    pub is_customer: bool,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    pub edited: bool,
}

/// A contact.
#[derive(Debug, Clone)]
pub struct CrmContact {
    pub id: String,
    pub company_id: String,
    pub name: String,
    pub email: String,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    pub edited: bool,
}

/// A helpdesk conversation.
#[derive(Debug, Clone)]
pub struct CrmConversation {
    pub id: String,
    pub company_id: String,
    pub visitor_email: String,
    pub status: &'static str,
    pub assigned_to: Option<String>,
    pub is_read: bool,
    pub tags: Vec<String>,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    pub last_message: DateTime<Utc>,
    pub malformed: bool,
    pub edited: bool,
}

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// RFC 3339 in UTC with `Z`, milliseconds only when there are some.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    if t.timestamp_subsec_millis() == 0 {
        t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    }
}

/// The account of [`super::SimConfig::default`]: its companies and contacts, no conversations.
impl Default for CrmData {
    fn default() -> Self {
        Self::new(crate::simulator::QUIET_DAY, crate::simulator::QUIET_DAY, 0)
    }
}

impl CrmData {
    /// A small account for tests and the demo.
    pub fn new(first_day: NaiveDate, last_day: NaiveDate, conversations_per_day: u32) -> Self {
        CrmData {
            seed: 77,
            api_key: DEMO_API_KEY.into(),
            companies: 6,
            contacts_per_company: 3,
            first_day,
            last_day,
            conversations_per_day,
            linked_emails: Vec::new(),
            edits: BTreeMap::new(),
            deleted: BTreeSet::new(),
            malformed_every: 0,
            now: None,
        }
    }

    fn epoch(&self) -> DateTime<Utc> {
        self.first_day.and_time(NaiveTime::MIN).and_utc() - Duration::days(90)
    }

    fn edited(&self, id: &str, updated: DateTime<Utc>) -> (DateTime<Utc>, bool) {
        match self.edits.get(id) {
            Some(t) => (*t, true),
            None => (updated, false),
        }
    }

    /// Companies that exist (deleted ones left out).
    pub fn companies(&self) -> Vec<CrmCompany> {
        (0..self.companies)
            .map(|i| {
                let id = format!("cmp-{:04}-{:08x}", i, mix(self.seed ^ i as u64) as u32);
                let created = self.epoch() + Duration::days(i as i64);
                let (updated, edited) = self.edited(&id, created + Duration::hours(3));
                CrmCompany {
                    name: format!("Company {i}"),
                    is_customer: i % 3 != 2,
                    created,
                    updated,
                    edited,
                    id,
                }
            })
            .filter(|c| !self.deleted.contains(&c.id))
            .collect()
    }

    /// Contacts that exist, including one per linked email.
    pub fn contacts(&self) -> Vec<CrmContact> {
        let companies: Vec<String> = (0..self.companies)
            .map(|i| format!("cmp-{:04}-{:08x}", i, mix(self.seed ^ i as u64) as u32))
            .collect();
        let mut out = Vec::new();
        for (ci, company) in companies.iter().enumerate() {
            for j in 0..self.contacts_per_company {
                let h = mix(self.seed ^ ((ci as u64) << 16) ^ j as u64);
                let (first, last) = (FIRST[(h % 6) as usize], LAST[(h / 6 % 6) as usize]);
                let id = format!("ct-{ci:03}-{j:03}");
                let created =
                    self.epoch() + Duration::days(ci as i64) + Duration::hours(j as i64 + 1);
                let (updated, edited) = self.edited(&id, created + Duration::minutes(30));
                out.push(CrmContact {
                    email: format!("{first}.{last}@Company-{ci}.example"),
                    name: format!("{first} {last}"),
                    company_id: company.clone(),
                    created,
                    updated,
                    edited,
                    id,
                });
            }
        }
        for (k, email) in self.linked_emails.iter().enumerate() {
            let ci = k % companies.len().max(1);
            let id = format!("ct-linked-{k:04}");
            let created = self.epoch() + Duration::hours(k as i64);
            let (updated, edited) = self.edited(&id, created + Duration::minutes(5));
            out.push(CrmContact {
                email: email.to_uppercase(),
                name: format!("Visitor {k}"),
                company_id: companies.get(ci).cloned().unwrap_or_default(),
                created,
                updated,
                edited,
                id,
            });
        }
        out.retain(|c| !self.deleted.contains(&c.id));
        out
    }

    /// Conversations that exist, oldest first.
    pub fn conversations(&self) -> Vec<CrmConversation> {
        let contacts = self.contacts();
        let mut out = Vec::new();
        for day in self
            .first_day
            .iter_days()
            .take_while(|d| *d <= self.last_day)
        {
            for i in 0..self.conversations_per_day {
                let h = mix(self.seed ^ ((day.to_epoch_days() as u64) << 20) ^ i as u64);
                let id = format!("conv-{}-{i:03}", day.format("%Y%m%d"));
                let created = day.and_time(NaiveTime::MIN).and_utc()
                    + Duration::milliseconds((h % 86_400_000) as i64);
                // Most visitors are known contacts (their email typed in another case); some are strangers.
                let (company_id, visitor_email) =
                    match contacts.get((h >> 20) as usize % (contacts.len() + 3)) {
                        Some(c) if !contacts.is_empty() => (
                            c.company_id.clone(),
                            if h & 1 == 0 {
                                c.email.to_lowercase()
                            } else {
                                c.email.clone()
                            },
                        ),
                        _ => (String::new(), format!("stranger{}@example.net", h % 97)),
                    };
                let status = if (h >> 8) % 3 == 0 { "open" } else { "closed" };
                let assigned = ((h >> 12) % 5 != 0).then(|| format!("user-{}", (h >> 16) % 4));
                let tags: Vec<String> = TAGS
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| (h >> (24 + k)) & 1 == 1)
                    .map(|(_, t)| t.to_string())
                    .collect();
                let last_message = created + Duration::seconds(((h >> 30) % 3_600) as i64);
                let (updated, edited) = self.edited(&id, last_message);
                out.push(CrmConversation {
                    company_id,
                    visitor_email,
                    status: if edited { "closed" } else { status },
                    assigned_to: assigned,
                    is_read: (h >> 40) % 4 != 0,
                    tags,
                    created,
                    updated,
                    last_message,
                    malformed: self.malformed_every > 0
                        && i % self.malformed_every == self.malformed_every - 1,
                    edited,
                    id,
                });
            }
        }
        let now = self.now.unwrap_or_else(Utc::now);
        out.retain(|c| !self.deleted.contains(&c.id) && c.last_message <= now);
        out
    }
}

pub fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/companies", get(companies))
        .route("/contacts", get(contacts))
        .route("/conversations", get(conversations))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "The requested resource doesn't exist",
            )
        })
}

type Q = Query<HashMap<String, String>>;

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "error": message }).to_string(),
    )
        .into_response()
}

async fn gate(sim: &SimState, key: &str, headers: &HeaderMap) -> Result<CrmData, Response> {
    sim.count(key);
    if let Some(r) = sim.fault("crm").await {
        return Err(r);
    }
    let data = sim.config().crm;
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth.strip_prefix("Bearer ") != Some(data.api_key.as_str()) {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "Invalid or missing API key",
        ));
    }
    Ok(data)
}

fn array(sim: &SimState, items: Vec<Value>) -> Response {
    let mut body = Value::Array(items).to_string();
    if sim.truncate() {
        body.truncate(body.len() / 2);
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

async fn companies(State(sim): State<Arc<SimState>>, headers: HeaderMap) -> Response {
    let data = match gate(&sim, "crm/companies", &headers).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let items = data
        .companies()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({"id": c.id, "name": c.name, "website": format!("https://company-{i}.example"),
                   "industry": INDUSTRIES[i % INDUSTRIES.len()], "dealValue": 10_000 * (i + 1), "stageId": format!("stage-{}", i % 3),
                   "position": i, "logoUrl": null, "notes": if c.edited { "edited" } else { "" },
                   "lastContact": rfc3339(c.updated), "isCustomer": c.is_customer, "createdBy": "user-1",
                   "createdAt": rfc3339(c.created), "updatedAt": rfc3339(c.updated)})
        })
        .collect();
    array(&sim, items)
}

async fn contacts(State(sim): State<Arc<SimState>>, Query(q): Q, headers: HeaderMap) -> Response {
    let data = match gate(&sim, "crm/contacts", &headers).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let company = q.get("companyId");
    let items = data
        .contacts()
        .iter()
        .filter(|c| company.is_none_or(|id| *id == c.company_id))
        .map(|c| {
            json!({"id": c.id, "companyId": c.company_id, "name": c.name, "email": c.email, "phone": "+1-555-0100",
                   "title": "Buyer", "role": "Decision Maker", "notes": if c.edited { "edited" } else { "" },
                   "isPrimary": c.id.ends_with("-000"), "userId": "user-1",
                   "createdAt": rfc3339(c.created), "updatedAt": rfc3339(c.updated)})
        })
        .collect();
    array(&sim, items)
}

async fn conversations(
    State(sim): State<Arc<SimState>>,
    Query(q): Q,
    headers: HeaderMap,
) -> Response {
    let data = match gate(&sim, "crm/conversations", &headers).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let company = q.get("companyId");
    let items = data
        .conversations()
        .iter()
        .filter(|c| company.is_none_or(|id| *id == c.company_id))
        .map(|c| {
            let mut v = json!({"id": c.id, "companyId": if c.company_id.is_empty() { Value::Null } else { json!(c.company_id) },
                   "visitorName": "Visitor", "visitorEmail": c.visitor_email, "visitorIp": "192.0.2.10",
                   "userAgent": "Mozilla/5.0", "referrerUrl": "https://google.com", "pageUrl": "https://example.com/pricing",
                   "status": c.status, "assignedToUserId": c.assigned_to, "isRead": c.is_read, "trustUploads": false,
                   "tags": c.tags, "lastMessageAt": rfc3339(c.last_message),
                   "createdAt": rfc3339(c.created), "updatedAt": rfc3339(c.updated)});
            if c.malformed {
                v.as_object_mut().expect("object").remove("createdAt");
            }
            v
        })
        .collect();
    array(&sim, items)
}
