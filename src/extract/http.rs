//! The one HTTP client every source uses: auth, timeouts, retries with
//! exponential backoff and equal jitter on 429/5xx/connection errors (honouring
//! Retry-After, every wait capped), bounded attempts, and a client-side rate
//! limit. Credentials live only in request headers: errors and logs carry the
//! source and the endpoint path, never the URL's userinfo or the auth header,
//! and any configured secret the server echoes back is redacted.
//!
//! Everything the server sends is untrusted: bodies are read up to
//! `max_body_mb` (or, spooled to a temporary file, `max_file_body_mb`), pages are parsed without building a whole JSON tree ([`super::paging`])
//! (records stay raw text until a source maps them one at a time), redirects
//! and `next` links may not leave the source's origin, and values placed in a
//! URL path are percent-encoded, one segment each.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::{header, StatusCode};
use url::Url;

use super::pacer::Pacer;

use crate::config::{secret, Secret};
use crate::error::{Error, Result};

/// HTTP client settings.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// TCP connect timeout.
    pub connect_timeout_secs: u64,
    /// Whole-request timeout (headers and body).
    pub request_timeout_secs: u64,
    /// Attempts per request, the first included, for 429, 5xx and connection errors.
    pub max_attempts: u32,
    /// First backoff delay; doubles per attempt, with equal jitter (each wait
    /// anywhere between half and all of it).
    pub backoff_base_ms: u64,
    /// Longest single wait, Retry-After included.
    pub backoff_max_ms: u64,
    /// Largest response body read, in MiB; a larger one fails the request
    /// with an error naming the endpoint (a guard against a broken or hostile
    /// server sending gigabytes).
    pub max_body_mb: u64,
    /// Largest response body spooled to a temporary file, in MiB: bodies
    /// that are a whole account in one array (CRM) are read to disk, not
    /// memory.
    pub max_file_body_mb: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            connect_timeout_secs: 10,
            request_timeout_secs: 120,
            max_attempts: 6,
            backoff_base_ms: 500,
            backoff_max_ms: 60_000,
            max_body_mb: 256,
            max_file_body_mb: 4096,
        }
    }
}

/// How a source authenticates.
#[derive(Debug, Clone)]
pub enum Auth {
    /// HTTP Basic (Social Intents: account id and API token).
    Basic { user: String, password: Secret },
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
}

/// A rate-limited, retrying client for one source.
pub struct HttpClient {
    client: reqwest::Client,
    /// The personal-data policy: an error body an API sends back is
    /// redacted under it before it reaches an error or a log line.
    policy: Option<std::sync::Arc<crate::privacy::Policy>>,
    pub(super) source: String,
    /// The source's `base_url`: every request stays under its path.
    base: Url,
    auth: Auth,
    max_attempts: u32,
    backoff_base: Duration,
    backoff_max: Duration,
    pacer: Pacer,
    retries: AtomicU64,
    /// Requests answered and decoded (the retry budget grows with them).
    succeeded: AtomicU64,
    requests: AtomicU64,
    throttled: AtomicU64,
    /// Microseconds slept before retries (Retry-After or backoff).
    waited_us: AtomicU64,
    max_body: u64,
    max_file_body: u64,
}

/// Where a 2xx body is read to.
#[derive(Debug, Clone, Copy)]
enum BodyTo {
    Memory,
    File,
}

/// A 2xx body, as [`BodyTo`] asked.
enum Body {
    Memory(Bytes),
    File(std::fs::File),
}

/// Requests sent, retried and throttled, and time waited before retries:
/// a source's counters, or (subtracted) one stream's share of them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Traffic {
    /// Every attempt counts.
    pub requests: u64,
    pub retries: u64,
    /// Answers 429 or 503.
    pub throttled: u64,
    /// Slept on Retry-After or backoff.
    pub waited: Duration,
}

impl std::ops::Sub for Traffic {
    type Output = Traffic;
    fn sub(self, before: Traffic) -> Traffic {
        Traffic {
            requests: self.requests - before.requests,
            retries: self.retries - before.retries,
            throttled: self.throttled - before.throttled,
            waited: self.waited.saturating_sub(before.waited),
        }
    }
}

/// At most this much of an error response's body is read (for its message).
const ERROR_BODY_BYTES: usize = 4096;

impl HttpClient {
    /// A client for `source`: adaptive rate, never above `requests_per_minute`
    /// when set (see [`Pacer`]).
    pub fn new(
        source: &str,
        base_url: &str,
        auth: Auth,
        cfg: &HttpConfig,
        requests_per_minute: Option<u32>,
    ) -> Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(cfg.connect_timeout_secs))
            .timeout(Duration::from_secs(cfg.request_timeout_secs))
            .user_agent(concat!("chatlake/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::custom(same_origin_redirects))
            .build()
            .map_err(|e| Error::Http {
                source_name: source.into(),
                endpoint: String::new(),
                message: format!("building the HTTP client: {e}"),
                retryable: false,
            })?;
        if let Auth::Basic { user, password } = &auth {
            // The header form of the credentials, in case a server echoes it.
            use base64::Engine;
            let basic = format!("{user}:{}", password.expose());
            secret::register(&base64::engine::general_purpose::STANDARD.encode(basic));
        }
        let base = Url::parse(base_url.trim_end_matches('/')).map_err(|e| Error::BadResponse {
            source_name: source.into(),
            endpoint: String::new(),
            message: format!("bad base_url: {e}"),
        })?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(Error::BadResponse {
                source_name: source.into(),
                endpoint: String::new(),
                message: "base_url must be an http(s) URL".into(),
            });
        }
        Ok(HttpClient {
            policy: None,
            base,
            max_body: cfg.max_body_mb.saturating_mul(1024 * 1024),
            max_file_body: cfg.max_file_body_mb.saturating_mul(1024 * 1024),
            client,
            source: source.to_string(),
            auth,
            max_attempts: cfg.max_attempts.max(1),
            backoff_base: Duration::from_millis(cfg.backoff_base_ms),
            backoff_max: Duration::from_millis(cfg.backoff_max_ms),
            pacer: Pacer::new(requests_per_minute),
            retries: AtomicU64::new(0),
            succeeded: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            waited_us: AtomicU64::new(0),
        })
    }

    /// What this client has sent and waited so far.
    pub fn traffic(&self) -> Traffic {
        Traffic {
            requests: self.requests.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            waited: Duration::from_micros(self.waited_us.load(Ordering::Relaxed)),
        }
    }

    /// `base_url` with `segments` appended, each percent-encoded as one path
    /// segment (an id from the API such as `../admin` or `c2?x=1` cannot add
    /// segments, a query or a fragment), then `query`; plus the label that
    /// names the request in errors and logs (path and query, no host, no
    /// credentials). An empty last segment gives a trailing slash. `.`, `..`
    /// and empty segments elsewhere are refused, and so is a result outside
    /// the base path.
    pub fn endpoint(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<(Url, String)> {
        let shown = segments.join("/");
        let mut url = self.base.clone();
        let base_path = self.base_path();
        for (i, seg) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            if matches!(*seg, "." | "..") || (seg.is_empty() && !last) {
                return Err(self.bad(
                    &shown,
                    format!("refusing `{seg}` as a URL path segment (a value from the API?)"),
                ));
            }
        }
        url.path_segments_mut()
            .map_err(|_| self.bad(&shown, "base_url cannot take a path".into()))?
            .pop_if_empty()
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        if !url.path().starts_with(&base_path) {
            return Err(self.bad(
                &shown,
                format!("the URL path {} leaves base_url", url.path()),
            ));
        }
        let label = match url.query() {
            Some(q) => format!("{}?{q}", &url.path()[base_path.len() - 1..]),
            None => url.path()[base_path.len() - 1..].to_string(),
        };
        Ok((url, label))
    }

    /// The base path with a trailing slash: every URL requested is under it.
    pub(super) fn base_path(&self) -> String {
        format!("{}/", self.base.path().trim_end_matches('/'))
    }

    /// GETs `url` and returns the body of a 2xx answer. `endpoint` names the
    /// request in errors and logs (a path, no credentials).
    pub async fn get(&self, url: Url, endpoint: &str) -> Result<Bytes> {
        self.get_decoded(url, endpoint, |body| Ok(body.clone()))
            .await
    }

    /// Redacts the error bodies of this source's API under `policy`.
    pub fn redact_with(&mut self, policy: Option<std::sync::Arc<crate::privacy::Policy>>) {
        self.policy = policy;
    }

    /// `chatlake check`: one authenticated GET of `segments` (a small
    /// listing), answered 2xx with JSON that `records` (the source's own
    /// envelope check, as a run applies it) accepts and counts. Says how
    /// many `what` it listed.
    pub async fn check(
        &self,
        segments: &[&str],
        what: &str,
        records: fn(&[u8]) -> std::result::Result<u64, String>,
    ) -> Result<String> {
        let (url, label) = self.endpoint(segments, &[])?;
        // Two attempts at most: a check answers in seconds, not after the
        // minutes of backoff a run allows an unreachable host.
        let body = self
            .get_body_with(
                url,
                &label,
                BodyTo::Memory,
                CHECK_ATTEMPTS,
                |body| match body {
                    Body::Memory(bytes) => serde_json::from_slice::<serde::de::IgnoredAny>(&bytes)
                        .map(|_| bytes)
                        .map_err(|e| format!("invalid JSON: {e}")),
                    Body::File(_) => Err("internal: the body was spooled".into()),
                },
            )
            .await?;
        let n = records(&body).map_err(|message| self.bad(&label, message))?;
        Ok(format!("GET {label}: {what}: {n}"))
    }

    /// GETs `url` and returns a body that is complete, valid JSON (checked
    /// without building a tree; a cut-off body is retried like a 5xx). The
    /// caller then walks it record by record.
    pub async fn get_complete_json(&self, url: Url, endpoint: &str) -> Result<Bytes> {
        self.get_parsed(url, endpoint, |body| {
            serde_json::from_slice::<serde::de::IgnoredAny>(body).map(|_| body.clone())
        })
        .await
    }

    /// GETs `url` and reads the body with `parse`, in the one pass over it
    /// that also checks it is complete JSON: a body `parse` finds cut off or
    /// not JSON (serde_json's syntax and end-of-input errors) is retried like
    /// a 5xx; any other outcome of `parse` is returned to the caller to judge.
    pub async fn get_parsed<T>(
        &self,
        url: Url,
        endpoint: &str,
        parse: impl Fn(&Bytes) -> std::result::Result<T, serde_json::Error>,
    ) -> Result<T> {
        self.get_decoded(url, endpoint, |body| {
            parse(body).map_err(|e| format!("invalid JSON: {e}"))
        })
        .await
    }

    /// [`HttpClient::get_complete_json`] for a body that may be larger than
    /// memory should hold (a whole account in one array): it goes to an
    /// anonymous temporary file (up to `max_file_body_mb`), is checked there,
    /// and comes back as that file, rewound, for the caller to stream.
    pub async fn get_complete_json_file(&self, url: Url, endpoint: &str) -> Result<std::fs::File> {
        use std::io::Seek;
        self.get_body(url, endpoint, BodyTo::File, |body| {
            let Body::File(mut file) = body else {
                return Err("internal: the body was not spooled".into());
            };
            let rewind = |file: &mut std::fs::File| {
                file.rewind()
                    .map_err(|e| format!("rewinding the spooled body: {e}"))
            };
            rewind(&mut file)?;
            serde_json::from_reader::<_, serde::de::IgnoredAny>(std::io::BufReader::new(&file))
                .map_err(|e| format!("invalid JSON: {e}"))?;
            rewind(&mut file)?;
            Ok(file)
        })
        .await
    }

    /// [`HttpClient::get_body`] for a body held in memory.
    async fn get_decoded<T>(
        &self,
        url: Url,
        endpoint: &str,
        decode: impl Fn(&Bytes) -> Result<T, String>,
    ) -> Result<T> {
        self.get_body(url, endpoint, BodyTo::Memory, |body| match body {
            Body::Memory(bytes) => decode(&bytes),
            Body::File(_) => Err("internal: the body was spooled".into()),
        })
        .await
    }

    /// The one retry loop: at most `max_attempts` requests, whether an attempt
    /// failed at the HTTP level or its body could not be decoded.
    async fn get_body<T>(
        &self,
        url: Url,
        endpoint: &str,
        to: BodyTo,
        decode: impl Fn(Body) -> Result<T, String>,
    ) -> Result<T> {
        self.get_body_with(url, endpoint, to, self.max_attempts, decode)
            .await
    }

    /// [`HttpClient::get_body`] with its own limit of attempts.
    async fn get_body_with<T>(
        &self,
        url: Url,
        endpoint: &str,
        to: BodyTo,
        max_attempts: u32,
        decode: impl Fn(Body) -> Result<T, String>,
    ) -> Result<T> {
        let max_attempts = max_attempts.clamp(1, self.max_attempts);
        let mut attempt = 1;
        loop {
            let sent = self.pacer.wait().await;
            let (err, retry_after) = match self.try_once(url.clone(), endpoint, sent, to).await {
                Ok(body) => match decode(body) {
                    Ok(value) => {
                        self.succeeded.fetch_add(1, Ordering::Relaxed);
                        return Ok(value);
                    }
                    Err(message) => (self.http_error(endpoint, message, true), None),
                },
                Err(failure) => failure,
            };
            // The source's retry budget: twice `max_attempts`, plus one
            // retry per request it answered. Requests in flight together
            // (64 windows at once) all retrying a permanent 429 spend it
            // together, and fail as fast as one request alone would; a
            // source that answers most requests never runs out of it.
            let budget = 2 * u64::from(self.max_attempts) + self.succeeded.load(Ordering::Relaxed);
            let spent = self.retries.load(Ordering::Relaxed) >= budget;
            if !err.is_retryable() || attempt >= max_attempts || spent {
                let why = if attempt >= max_attempts || !spent {
                    format!("gave up after {attempt} attempts")
                } else {
                    format!(
                        "gave up after {attempt} attempts: the source's {} retries so far exceed what its {} answers allow",
                        self.retries.load(Ordering::Relaxed),
                        self.succeeded.load(Ordering::Relaxed)
                    )
                };
                return Err(match err {
                    Error::Http {
                        source_name,
                        endpoint,
                        message,
                        retryable,
                    } if retryable => Error::Http {
                        source_name,
                        endpoint,
                        message: format!("{message} ({why})"),
                        retryable,
                    },
                    other => other,
                });
            }
            // The server's Retry-After wins over our own backoff; either way no
            // single wait is longer than `backoff_max_ms` (a hostile or broken
            // header cannot park the run).
            let delay = retry_after
                .unwrap_or_else(|| self.backoff(attempt))
                .min(self.backoff_max);
            tracing::warn!(source = %self.source, endpoint, attempt, delay_ms = delay.as_millis() as u64, error = %err, "retrying");
            self.retries.fetch_add(1, Ordering::Relaxed);
            self.waited_us
                .fetch_add(delay.as_micros() as u64, Ordering::Relaxed);
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    async fn try_once(
        &self,
        url: Url,
        endpoint: &str,
        sent: tokio::time::Instant,
        to: BodyTo,
    ) -> Result<Body, (Error, Option<Duration>)> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let fail = |message: String, retryable: bool| self.http_error(endpoint, message, retryable);
        let req = match &self.auth {
            Auth::Basic { user, password } => self
                .client
                .get(url)
                .basic_auth(user, Some(password.expose())),
            Auth::Bearer(token) => self.client.get(url).bearer_auth(token.expose()),
        };
        let resp = req
            .send()
            .await
            .map_err(|e| (fail(describe(&e), !e.is_redirect()), None))?;
        let status = resp.status();
        tracing::debug!(source = %self.source, endpoint, status = status.as_u16(), "response");
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            self.throttled.fetch_add(1, Ordering::Relaxed);
            self.pacer.throttled(sent);
        } else {
            self.pacer.success();
        }
        if status.is_success() {
            return match to {
                BodyTo::Memory => self.read_body(resp, endpoint).await.map(Body::Memory),
                BodyTo::File => self.read_body_to_file(resp, endpoint).await.map(Body::File),
            };
        }
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = read_prefix(resp, ERROR_BODY_BYTES).await;
        let mut text = secret::clean(&String::from_utf8_lossy(&body));
        if let Some(p) = &self.policy {
            text = p.message(&text);
        }
        let snippet: String = text.chars().take(200).collect();
        let message = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                format!("{status}: the credentials were refused; check the source's account id / token ({snippet})")
            }
            StatusCode::NOT_FOUND => {
                format!("{status}: no such endpoint; check base_url ({snippet})")
            }
            _ => format!("{status}: {snippet}"),
        };
        let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
        Err((fail(message, retryable), retry_after))
    }

    /// A 2xx body, read chunk by chunk and refused once it passes
    /// `max_body_mb` (announced or not), so a huge or endless body cannot
    /// exhaust memory. A transfer that breaks off is retryable.
    async fn read_body(
        &self,
        resp: reqwest::Response,
        endpoint: &str,
    ) -> Result<Bytes, (Error, Option<Duration>)> {
        // Sized once when the length is announced (and within the cap):
        // growing a 40 MB body by doubling copied it several times over.
        let announced = resp.content_length().unwrap_or(0).min(self.max_body);
        let mut buf = BytesMut::with_capacity(announced as usize);
        self.read_chunks(resp, endpoint, ("max_body_mb", self.max_body), |chunk| {
            buf.extend_from_slice(chunk);
            Ok(())
        })
        .await?;
        Ok(buf.freeze())
    }

    /// A 2xx body written to an anonymous temporary file (removed when the
    /// file is closed), refused once it passes `max_file_body_mb`.
    async fn read_body_to_file(
        &self,
        resp: reqwest::Response,
        endpoint: &str,
    ) -> Result<std::fs::File, (Error, Option<Duration>)> {
        use std::io::Write;
        let disk = |e: std::io::Error| {
            let message = format!("spooling the body to a temporary file: {e}");
            (self.http_error(endpoint, message, false), None)
        };
        let mut out = std::io::BufWriter::new(tempfile::tempfile().map_err(disk)?);
        let limit = ("max_file_body_mb", self.max_file_body);
        self.read_chunks(resp, endpoint, limit, |chunk| out.write_all(chunk))
            .await?;
        out.into_inner().map_err(|e| disk(e.into_error()))
    }

    /// Reads a body chunk by chunk into `sink`, refused once it passes
    /// `limit` (the setting's name and bytes), announced or not.
    async fn read_chunks(
        &self,
        mut resp: reqwest::Response,
        endpoint: &str,
        (setting, limit): (&str, u64),
        mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<(), (Error, Option<Duration>)> {
        let too_big = |what: String| {
            let message = format!(
                "the response body {what} the limit of {} MiB ([http] {setting}); not reading it",
                limit / (1024 * 1024)
            );
            (self.http_error(endpoint, message, false), None)
        };
        if let Some(len) = resp.content_length().filter(|l| *l > limit) {
            return Err(too_big(format!("is {len} bytes, over")));
        }
        let mut read = 0u64;
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    read += chunk.len() as u64;
                    if read > limit {
                        return Err(too_big("exceeds".into()));
                    }
                    sink(&chunk).map_err(|e| {
                        let message = format!("storing the body: {e}");
                        (self.http_error(endpoint, message, false), None)
                    })?;
                }
                Ok(None) => return Ok(()),
                Err(e) => {
                    let message = format!("reading the body: {}", describe(&e));
                    return Err((self.http_error(endpoint, message, true), None));
                }
            }
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let cap = self
            .backoff_base
            .saturating_mul(1 << attempt.min(20))
            .min(self.backoff_max);
        // Equal jitter: anywhere in [cap/2, cap], so retries of parallel work
        // spread out but none comes back sooner than half the backoff.
        let ms = cap.as_millis() as u64;
        Duration::from_millis(ms / 2 + fastrand::u64(0..=ms / 2))
    }

    /// An HTTP-level failure of `endpoint`.
    pub(super) fn http_error(&self, endpoint: &str, message: String, retryable: bool) -> Error {
        Error::Http {
            source_name: self.source.clone(),
            endpoint: endpoint.to_string(),
            message,
            retryable,
        }
    }

    pub(super) fn bad(&self, endpoint: &str, message: String) -> Error {
        Error::BadResponse {
            source_name: self.source.clone(),
            endpoint: endpoint.to_string(),
            message,
        }
    }
}

/// Attempts of `chatlake check`'s one request per source.
const CHECK_ATTEMPTS: u32 = 2;

/// A redirect is followed only within the origin (scheme, host, port) of the
/// request, at most 5 times: data (and credentials) never come from, or go
/// to, another server.
fn same_origin_redirects(attempt: reqwest::redirect::Attempt<'_>) -> reqwest::redirect::Action {
    let origin = |u: &Url| {
        (
            u.scheme().to_string(),
            u.host_str().map(str::to_string),
            u.port_or_known_default(),
        )
    };
    let first = attempt.previous().first().map(origin);
    if attempt.previous().len() > 5 {
        attempt.error("more than 5 redirects")
    } else if first.is_some_and(|f| f != origin(attempt.url())) {
        // Scheme, host and port: the port may be the only part that differs.
        let show = |u: &Url| {
            format!(
                "{}://{}:{}",
                u.scheme(),
                u.host_str().unwrap_or("?"),
                u.port_or_known_default()
                    .map_or("?".into(), |p| p.to_string())
            )
        };
        let from = attempt.previous().first().map(show).unwrap_or_default();
        let to = show(attempt.url());
        attempt.error(format!(
            "refusing a redirect to another server ({to}, the request went to {from})"
        ))
    } else {
        attempt.follow()
    }
}

/// At most `limit` bytes of a body (an error response's message).
async fn read_prefix(mut resp: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        out.extend_from_slice(&chunk[..chunk.len().min(limit - out.len())]);
        if out.len() >= limit {
            break;
        }
    }
    out
}

/// A transport error naming the server (host and port) but not the URL,
/// which could carry userinfo or a key in its query.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_redirect() {
        "redirect refused"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let server = e
        .url()
        .and_then(|u| {
            let host = u.host_str()?;
            Some(match u.port_or_known_default() {
                Some(port) => format!(" ({host}:{port})"),
                None => format!(" ({host})"),
            })
        })
        .unwrap_or_default();
    let mut msg = format!(
        "{kind}{server}: {}",
        e.to_string()
            .replace(e.url().map(|u| u.as_str()).unwrap_or("\u{0}"), "<url>")
    );
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}

/// `Retry-After` as delay-seconds or an HTTP date. Any value, however large,
/// gives a duration (saturating at `Duration::MAX`); the caller caps it.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<f64>() {
        if secs.is_nan() || secs < 0.0 {
            return None; // negative or NaN
        }
        return Some(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v.trim()).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests;
