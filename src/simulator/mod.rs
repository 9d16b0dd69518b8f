//! The built-in simulator: a deterministic fake of the source APIs on
//! 127.0.0.1, with auth checks, the documented filters and quirks, and fault
//! switches (429 with Retry-After, 500, latency, truncated bodies, an API
//! error status, malformed records). `demo` and the tests run against it.

pub mod clock;
pub mod crm;
pub mod data;
pub mod rhythm;
pub mod social25;
pub mod socialintents;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::sync::oneshot;

use crate::error::{Error, Result};
pub use crm::CrmData;
pub use data::SiData;
pub use social25::S25Data;

/// Every source the simulator serves: the one list a simulated source joins
/// (its data is a [`SimConfig`] field).
pub const SOURCES: &[SimSource] = &[
    SimSource {
        name: "socialintents",
        prefix: socialintents::PREFIX,
        routes: socialintents::routes,
    },
    SimSource {
        name: "social25",
        prefix: social25::PREFIX,
        routes: social25::routes,
    },
    SimSource {
        name: "crm",
        prefix: crm::PREFIX,
        routes: crm::routes,
    },
];

/// A simulated API: its source's name (as in `extract::SOURCES`), where its
/// routes are nested (the path of its `base_url`), and the routes.
pub struct SimSource {
    pub name: &'static str,
    pub prefix: &'static str,
    pub routes: fn() -> Router<Arc<SimState>>,
}

/// The one day of a default (empty) simulated account.
pub const QUIET_DAY: chrono::NaiveDate =
    chrono::NaiveDate::from_ymd_opt(2025, 10, 25).expect("a valid date");

/// Credentials the simulator accepts (the demo pipeline uses these).
pub const DEMO_ACCOUNT_ID: &str = "demo-account";
/// The demo API token.
pub const DEMO_API_TOKEN: &str = "demo-token";

/// Faults to inject, as probabilities per request (0.0 to 1.0).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Answer 429 with `Retry-After: retry_after_secs`.
    pub rate_429: f64,
    /// Answer 500.
    pub rate_500: f64,
    pub retry_after_secs: u32,
    /// Sleep before answering.
    pub latency_ms: u64,
    /// Server-side limit per source, requests a second (0: none): a token
    /// bucket holding one second of requests; beyond it, 429 with
    /// `Retry-After: 1`, as real APIs answer.
    pub limit_rps: f64,
    /// Cut the body in half (invalid JSON with a 200).
    pub truncate_rate: f64,
    /// Answer `apiStatus: Error` with this message.
    pub api_error: Option<String>,
}

/// What the simulator serves and accepts. The default serves each source's
/// default (empty) account: tests fill in the one they need.
#[derive(Debug, Clone, Default)]
pub struct SimConfig {
    pub socialintents: SiData,
    pub social25: S25Data,
    pub crm: CrmData,
    pub account_id: String,
    pub api_token: String,
    /// Seed of the fault dice.
    pub fault_seed: u64,
}

impl SimConfig {
    /// The demo account: data from `first_day` to `last_day`, shaped like a
    /// real support desk in New York (see `rhythm`).
    pub fn demo(first_day: chrono::NaiveDate, last_day: chrono::NaiveDate) -> Self {
        let tz = chrono_tz::America::New_York;
        SimConfig {
            socialintents: SiData {
                rhythm: Some(rhythm::Rhythm::new(tz, 42)),
                ..SiData::new(first_day, last_day, 40)
            },
            social25: S25Data {
                rhythm: Some(rhythm::Rhythm::new(tz, 25)),
                ..S25Data::new(first_day, last_day, 8)
            },
            crm: CrmData::new(first_day, last_day, 6),
            account_id: DEMO_ACCOUNT_ID.into(),
            api_token: DEMO_API_TOKEN.into(),
            fault_seed: 7,
        }
        .with_crm_contacts_for_visitors(20)
    }

    /// Makes every `every`-th Social Intents visitor (by chat start) a CRM
    /// contact, so chats join to companies by email.
    pub fn with_crm_contacts_for_visitors(mut self, every: usize) -> Self {
        let si = &self.socialintents;
        let start = si.first_day.and_time(chrono::NaiveTime::MIN).and_utc();
        let end = (si.last_day + chrono::Duration::days(1))
            .and_time(chrono::NaiveTime::MIN)
            .and_utc();
        let mut seen = std::collections::BTreeSet::new();
        self.crm.linked_emails = si
            .chats_in(start, end)
            .into_iter()
            .step_by(every.max(1))
            .map(|c| c.visitor_email)
            .filter(|e| seen.insert(e.clone()))
            .collect();
        self
    }
}

/// One source's requests as the server saw them.
#[derive(Default)]
struct SourceTraffic {
    arrivals: Vec<std::time::Instant>,
    limited: u64,
    bucket: Bucket,
    /// Requests inside the latency wait now, and the most ever at once.
    in_flight: usize,
    most_in_flight: usize,
}

/// A token bucket holding at most one second of requests (the pacer's
/// model tests meet the same server).
#[derive(Default)]
pub(crate) struct Bucket {
    tokens: f64,
    last: Option<std::time::Instant>,
}

impl Bucket {
    /// Takes a token if there is one at `rate` a second.
    pub(crate) fn take(&mut self, rate: f64, now: std::time::Instant) -> bool {
        let capacity = rate.max(1.0);
        self.tokens = match self.last {
            None => capacity,
            Some(t) => (self.tokens + now.duration_since(t).as_secs_f64() * rate).min(capacity),
        };
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Social25 conversations generated for (data version, clock).
type S25Cached = (
    u64,
    chrono::DateTime<chrono::Utc>,
    Arc<Vec<social25::S25Conversation>>,
);

/// Shared state of a running simulator.
pub struct SimState {
    config: Mutex<SimConfig>,
    faults: Mutex<Faults>,
    dice: Mutex<fastrand::Rng>,
    requests: Mutex<BTreeMap<String, u64>>,
    injected: AtomicU64,
    /// Per source: arrivals and the server-side limit's bucket.
    sources: Mutex<BTreeMap<String, SourceTraffic>>,
    /// `http://127.0.0.1:PORT`, for absolute `next` links.
    base_url: OnceLock<String>,
    /// Bumped by every [`Simulator::update`] (keys the caches below).
    version: AtomicU64,
    /// Social25 conversations at (version, now): listing pages share one generation.
    s25_cache: Mutex<Option<S25Cached>>,
    /// Social25 failed-sync listings asked for (first pages): (from_time, till_time).
    failed_windows: Mutex<Vec<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)>>,
}

impl SimState {
    fn config(&self) -> SimConfig {
        self.config.lock().expect("sim config lock").clone()
    }

    /// Rolls the fault dice for one request to `source`: Some(response) to
    /// send instead.
    async fn fault(&self, source: &str) -> Option<Response> {
        let f = self.faults.lock().expect("faults lock").clone();
        let now = std::time::Instant::now();
        let limited = {
            let mut sources = self.sources.lock().expect("sources lock");
            let s = sources.entry(source.to_string()).or_default();
            s.arrivals.push(now);
            let limited = f.limit_rps > 0.0 && !s.bucket.take(f.limit_rps, now);
            if limited {
                s.limited += 1;
            }
            s.in_flight += 1;
            s.most_in_flight = s.most_in_flight.max(s.in_flight);
            limited
        };
        if f.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(f.latency_ms)).await;
        }
        if let Some(s) = self.sources.lock().expect("sources lock").get_mut(source) {
            s.in_flight -= 1;
        }
        if limited {
            let mut r = (StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded").into_response();
            r.headers_mut().insert("retry-after", HeaderValue::from(1));
            return Some(r);
        }
        let roll = self.dice.lock().expect("dice lock").f64();
        if roll < f.rate_429 {
            self.injected.fetch_add(1, Ordering::Relaxed);
            let mut r = (StatusCode::TOO_MANY_REQUESTS, "rate limited").into_response();
            r.headers_mut()
                .insert("retry-after", HeaderValue::from(f.retry_after_secs));
            return Some(r);
        }
        if roll < f.rate_429 + f.rate_500 {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Some((StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response());
        }
        None
    }

    /// Whether to truncate this body.
    fn truncate(&self) -> bool {
        let rate = self.faults.lock().expect("faults lock").truncate_rate;
        let hit = rate > 0.0 && self.dice.lock().expect("dice lock").f64() < rate;
        if hit {
            self.injected.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    /// The Social25 conversations that exist at `now`, generated once per
    /// (data version, now) and shared by the pages of a listing.
    fn s25_conversations(
        &self,
        data: &S25Data,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Arc<Vec<social25::S25Conversation>> {
        let version = self.version.load(Ordering::Relaxed);
        let mut cache = self.s25_cache.lock().expect("s25 cache lock");
        if let Some((v, t, list)) = cache.as_ref() {
            if *v == version && *t == now {
                return Arc::clone(list);
            }
        }
        let list = Arc::new(data.conversations_at(now));
        *cache = Some((version, now, Arc::clone(&list)));
        list
    }

    fn count(&self, path: &str) {
        *self
            .requests
            .lock()
            .expect("requests lock")
            .entry(path.to_string())
            .or_default() += 1;
    }
}

/// A running simulator; stops when dropped.
pub struct Simulator {
    addr: SocketAddr,
    state: Arc<SimState>,
    _stop: oneshot::Sender<()>,
}

impl Simulator {
    /// Serves `config` on 127.0.0.1 at a free port (or `port`).
    pub async fn start(config: SimConfig) -> Result<Simulator> {
        Self::start_on(config, 0).await
    }

    /// As [`Simulator::start`], on a given port.
    pub async fn start_on(config: SimConfig, port: u16) -> Result<Simulator> {
        let state = Arc::new(SimState {
            dice: Mutex::new(fastrand::Rng::with_seed(config.fault_seed)),
            config: Mutex::new(config),
            faults: Mutex::new(Faults::default()),
            requests: Mutex::new(BTreeMap::new()),
            injected: AtomicU64::new(0),
            sources: Mutex::new(BTreeMap::new()),
            base_url: OnceLock::new(),
            version: AtomicU64::new(0),
            s25_cache: Mutex::new(None),
            failed_windows: Mutex::new(Vec::new()),
        });
        let app = SOURCES
            .iter()
            .fold(Router::new(), |app, s| app.nest(s.prefix, (s.routes)()))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| Error::io(format!("simulator: binding 127.0.0.1:{port}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("simulator address", e))?;
        let _ = state.base_url.set(format!("http://{addr}"));
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = rx.await;
            });
            if let Err(e) = server.await {
                tracing::error!(error = %e, "simulator stopped");
            }
        });
        Ok(Simulator {
            addr,
            state,
            _stop: tx,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `base_url` of `source` (a name in [`SOURCES`]).
    pub fn base_url(&self, source: &str) -> String {
        let s = SOURCES
            .iter()
            .find(|s| s.name == source)
            .unwrap_or_else(|| panic!("the simulator serves no source `{source}`"));
        format!("{}{}", self.url(), s.prefix)
    }

    /// Every Social25 failed-sync listing asked for so far (its first page):
    /// (from_time, till_time), as UTC.
    pub fn failed_sync_windows(
        &self,
    ) -> Vec<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> {
        self.state
            .failed_windows
            .lock()
            .expect("windows lock")
            .clone()
    }

    /// Replaces the fault switches.
    pub fn set_faults(&self, faults: Faults) {
        *self.state.faults.lock().expect("faults lock") = faults;
    }

    /// Changes the served data (e.g. bump `revision`).
    pub fn update(&self, f: impl FnOnce(&mut SimConfig)) {
        f(&mut self.state.config.lock().expect("sim config lock"));
        self.state.version.fetch_add(1, Ordering::Relaxed);
    }

    /// The served data.
    pub fn config(&self) -> SimConfig {
        self.state.config()
    }

    /// Requests received per endpoint path (faulted ones included).
    pub fn requests(&self) -> BTreeMap<String, u64> {
        self.state.requests.lock().expect("requests lock").clone()
    }

    /// Faults injected so far.
    pub fn faults_injected(&self) -> u64 {
        self.state.injected.load(Ordering::Relaxed)
    }

    /// The most requests `source` was answering at once (counted over each
    /// request's `latency_ms`).
    pub fn most_in_flight(&self, source: &str) -> usize {
        let sources = self.state.sources.lock().expect("sources lock");
        sources.get(source).map_or(0, |s| s.most_in_flight)
    }

    /// Requests that reached `source` ("socialintents", "social25", "crm"),
    /// by arrival time, and how many its server-side limit answered 429.
    pub fn traffic(&self, source: &str) -> (Vec<std::time::Instant>, u64) {
        let sources = self.state.sources.lock().expect("sources lock");
        sources
            .get(source)
            .map(|s| (s.arrivals.clone(), s.limited))
            .unwrap_or_default()
    }
}
