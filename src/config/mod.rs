//! The pipeline file (TOML in `pipelines/`): parse with unknown keys refused,
//! interpolate `${VAR}` in every string, then validate without any I/O.

pub mod secret;
pub mod vars;

pub use secret::Secret;

use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use chrono_tz::Tz;
use serde::Deserialize;

use crate::error::{Error, Result};

/// One pipeline file, as written (after `${VAR}` interpolation).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Pipeline name; keys its state in `_state/<name>/` and its meta.runs rows.
    pub name: String,
    /// IANA timezone: `dt` partitions, date windows and the schedule use it.
    pub timezone: String,
    /// Cron expression with a seconds field, evaluated in `timezone`.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Warehouse URL: a path, `file:///abs/path` or `s3://bucket/prefix`.
    #[serde(default = "default_warehouse")]
    pub warehouse: String,
    /// First local date extracted when a stream has no watermark yet.
    pub start_date: NaiveDate,
    /// Days re-extracted before the watermark on each run (late updates).
    #[serde(default = "default_lookback_days")]
    pub lookback_days: u32,
    /// Largest share of an upsert stream's stored rows that one run may mark
    /// deleted (0..1). A source that suddenly answers with nothing (`[]`)
    /// would otherwise mark everything deleted; such a run fails unless run
    /// with `--allow-mass-delete`.
    #[serde(default = "default_max_delete_share")]
    pub max_delete_share: f64,
    /// HTTP client settings shared by every source.
    #[serde(default)]
    pub http: HttpConfig,
    /// The sources this pipeline extracts.
    #[serde(default)]
    pub sources: SourcesConfig,
}

fn default_warehouse() -> String {
    "./warehouse".into()
}
fn default_lookback_days() -> u32 {
    2
}
fn default_max_delete_share() -> f64 {
    0.5
}

/// HTTP client settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// TCP connect timeout.
    pub connect_timeout_secs: u64,
    /// Whole-request timeout (headers and body).
    pub request_timeout_secs: u64,
    /// Attempts per request, the first included, for 429, 5xx and connection errors.
    pub max_attempts: u32,
    /// First backoff delay; doubles per attempt, with full jitter.
    pub backoff_base_ms: u64,
    /// Longest single wait, Retry-After included.
    pub backoff_max_ms: u64,
    /// Largest response body read, in MiB; a larger one fails the request
    /// with an error naming the endpoint (a guard against a broken or hostile
    /// server sending gigabytes).
    pub max_body_mb: u64,
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
        }
    }
}

/// Sources by name; each is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcesConfig {
    /// Social Intents live chat.
    pub socialintents: Option<SocialIntentsConfig>,
    /// Social25 chat API.
    pub social25: Option<Social25Config>,
    /// The CRM "Developer API".
    pub crm: Option<CrmConfig>,
}

/// `[sources.crm]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrmConfig {
    /// API root, e.g. `https://crm.example.com/api/v1`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer`.
    pub api_key: Secret,
    /// Streams: companies, contacts, conversations.
    pub streams: Vec<String>,
    /// Only these companies (the `companyId` filter); empty: all.
    #[serde(default)]
    pub company_ids: Vec<String>,
    /// Client-side rate limit (the API asks for at most 100 a minute).
    #[serde(default = "default_crm_rpm")]
    pub requests_per_minute: u32,
}

fn default_crm_rpm() -> u32 {
    100
}

/// Stream names of the CRM source.
pub const CRM_STREAMS: &[&str] = &["companies", "contacts", "conversations"];

/// `[sources.social25]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Social25Config {
    /// API root, e.g. `https://social25.herokuapp.com/api/v1.0`.
    pub base_url: String,
    /// Bearer token.
    pub token: Secret,
    /// The tenant's UUID.
    pub tenant_id: String,
    /// Streams: tenants, agents, conversations, messages, failed_syncs.
    pub streams: Vec<String>,
    /// `standard` (default) or `salesforce` format of failed syncs.
    #[serde(default)]
    pub failed_sync_type: Option<String>,
    /// Longest failed-sync window in local days. The API refuses more than 31
    /// days between from_time and till_time; 30 leaves room for a DST hour.
    #[serde(default = "default_s25_window_days")]
    pub window_days: u32,
    /// Client-side rate limit for this source.
    #[serde(default = "default_rpm")]
    pub requests_per_minute: u32,
    /// Conversations whose messages are fetched at once.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
}

fn default_s25_window_days() -> u32 {
    30
}
fn default_concurrency() -> usize {
    4
}

/// Stream names of the Social25 source.
pub const SOCIAL25_STREAMS: &[&str] = &[
    "tenants",
    "agents",
    "conversations",
    "messages",
    "failed_syncs",
];

/// `[sources.socialintents]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocialIntentsConfig {
    /// API root, e.g. `https://api.socialintents.com/v1/api`.
    pub base_url: String,
    /// Basic-auth user name.
    pub account_id: String,
    /// Basic-auth password (the REST API token).
    pub api_token: Secret,
    /// Streams to extract: chats, missed_chats, offline_messages, contacts, widgets.
    pub streams: Vec<String>,
    /// Longest date window of one request, in days.
    #[serde(default = "default_window_days")]
    pub window_days: u32,
    /// Client-side rate limit for this source.
    #[serde(default = "default_rpm")]
    pub requests_per_minute: u32,
}

fn default_window_days() -> u32 {
    7
}
fn default_rpm() -> u32 {
    120
}

/// Stream names of the Social Intents source.
pub const SOCIALINTENTS_STREAMS: &[&str] = &[
    "chats",
    "missed_chats",
    "offline_messages",
    "contacts",
    "widgets",
];

/// A loaded, validated pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The file it came from (for messages).
    pub file: PathBuf,
    /// Its settings.
    pub config: PipelineConfig,
    /// `config.timezone`, parsed.
    pub tz: Tz,
}

impl Pipeline {
    /// Reads, interpolates (from the process environment) and validates a pipeline file.
    pub fn load(file: &Path) -> Result<Pipeline> {
        Self::load_with(file, &|name| std::env::var(name).ok())
    }

    /// As [`Pipeline::load`], with `${VAR}` looked up through `lookup`.
    pub fn load_with(file: &Path, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Pipeline> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| Error::io(format!("reading pipeline {}", file.display()), e))?;
        Self::parse(&text, file, lookup)
    }

    /// Parses pipeline text; `file` is only used in messages.
    pub fn parse(
        text: &str,
        file: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Pipeline> {
        let err = |message: String| Error::Config {
            file: file.to_path_buf(),
            message,
        };
        let mut value: toml::Value = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        interpolate_tree(&mut value, "", lookup).map_err(err)?;
        let config: PipelineConfig =
            PipelineConfig::deserialize(value).map_err(|e| err(e.to_string()))?;
        let tz = validate(&config).map_err(err)?;
        Ok(Pipeline {
            file: file.to_path_buf(),
            config,
            tz,
        })
    }
}

fn interpolate_tree(
    value: &mut toml::Value,
    key: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), String> {
    match value {
        toml::Value::String(s) => *s = vars::interpolate(s, key, lookup)?,
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_tree(item, &format!("{key}[{i}]"), lookup)?;
            }
        }
        toml::Value::Table(table) => {
            for (k, v) in table.iter_mut() {
                let path = if key.is_empty() {
                    k.clone()
                } else {
                    format!("{key}.{k}")
                };
                interpolate_tree(v, &path, lookup)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Checks everything that can be checked without I/O; returns the parsed timezone.
fn validate(c: &PipelineConfig) -> Result<Tz, String> {
    if c.name.is_empty()
        || !c
            .name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_".contains(ch))
    {
        return Err(format!(
            "name `{}`: use letters, digits, - and _ only",
            c.name
        ));
    }
    let tz: Tz = c.timezone.parse().map_err(|_| {
        format!(
            "timezone `{}` is not an IANA timezone (e.g. America/New_York)",
            c.timezone
        )
    })?;
    if let Some(expr) = &c.schedule {
        let cron = crate::schedule::parse_cron(expr).map_err(|e| format!("schedule: {e}"))?;
        if crate::schedule::next_after(&cron, tz, chrono::Utc::now()).is_none() {
            return Err(format!(
                "schedule: `{expr}` never fires (no such date in any year ahead)"
            ));
        }
    }
    if !(0.0..=1.0).contains(&c.max_delete_share) {
        return Err(format!(
            "max_delete_share = {}: a share between 0 and 1",
            c.max_delete_share
        ));
    }
    if c.lookback_days > 366 {
        return Err(format!("lookback_days = {}: at most 366", c.lookback_days));
    }
    if c.http.max_body_mb == 0 {
        return Err("http.max_body_mb: at least 1".into());
    }
    if c.http.max_attempts == 0 {
        return Err("http.max_attempts: at least 1".into());
    }
    if c.sources.socialintents.is_none() && c.sources.social25.is_none() && c.sources.crm.is_none()
    {
        return Err("no source configured: add [sources.socialintents], [sources.social25] or [sources.crm]".into());
    }
    if let Some(crm) = &c.sources.crm {
        validate_crm(crm)?;
    }
    if let Some(s) = &c.sources.social25 {
        validate_social25(s)?;
    }
    let Some(si) = &c.sources.socialintents else {
        return Ok(tz);
    };
    url::Url::parse(&si.base_url)
        .map_err(|e| format!("sources.socialintents.base_url `{}`: {e}", si.base_url))?;
    if si.streams.is_empty() {
        return Err("sources.socialintents.streams is empty".into());
    }
    for s in &si.streams {
        if !SOCIALINTENTS_STREAMS.contains(&s.as_str()) {
            return Err(format!(
                "sources.socialintents.streams: unknown stream `{s}` (known: {})",
                SOCIALINTENTS_STREAMS.join(", ")
            ));
        }
    }
    if !(1..=31).contains(&si.window_days) {
        return Err(format!(
            "sources.socialintents.window_days = {}: use 1 to 31",
            si.window_days
        ));
    }
    if si.requests_per_minute == 0 {
        return Err("sources.socialintents.requests_per_minute: at least 1".into());
    }
    Ok(tz)
}

fn validate_crm(s: &CrmConfig) -> Result<(), String> {
    url::Url::parse(&s.base_url)
        .map_err(|e| format!("sources.crm.base_url `{}`: {e}", s.base_url))?;
    if s.streams.is_empty() {
        return Err("sources.crm.streams is empty".into());
    }
    for st in &s.streams {
        if !CRM_STREAMS.contains(&st.as_str()) {
            return Err(format!(
                "sources.crm.streams: unknown stream `{st}` (known: {})",
                CRM_STREAMS.join(", ")
            ));
        }
    }
    for id in &s.company_ids {
        if id.is_empty() || id.contains(['/', '?', '#', '&']) {
            return Err(format!(
                "sources.crm.company_ids: `{id}` is not a company id"
            ));
        }
    }
    if s.requests_per_minute == 0 {
        return Err("sources.crm.requests_per_minute: at least 1".into());
    }
    Ok(())
}

fn validate_social25(s: &Social25Config) -> Result<(), String> {
    url::Url::parse(&s.base_url)
        .map_err(|e| format!("sources.social25.base_url `{}`: {e}", s.base_url))?;
    if s.tenant_id.is_empty()
        || !s
            .tenant_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(format!(
            "sources.social25.tenant_id `{}`: expected a UUID",
            s.tenant_id
        ));
    }
    if s.streams.is_empty() {
        return Err("sources.social25.streams is empty".into());
    }
    for st in &s.streams {
        if !SOCIAL25_STREAMS.contains(&st.as_str()) {
            return Err(format!(
                "sources.social25.streams: unknown stream `{st}` (known: {})",
                SOCIAL25_STREAMS.join(", ")
            ));
        }
    }
    if let Some(t) = &s.failed_sync_type {
        if t != "standard" && t != "salesforce" {
            return Err(format!(
                "sources.social25.failed_sync_type `{t}`: use \"standard\" or \"salesforce\""
            ));
        }
    }
    if !(1..=30).contains(&s.window_days) {
        return Err(format!(
            "sources.social25.window_days = {}: use 1 to 30 (the API allows 31 days)",
            s.window_days
        ));
    }
    if s.requests_per_minute == 0 || s.max_concurrency == 0 {
        return Err(
            "sources.social25: requests_per_minute and max_concurrency must be at least 1".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "acme"
timezone = "America/New_York"
schedule = "0 30 2 * * *"
start_date = "2025-01-01"
[sources.socialintents]
base_url = "https://api.socialintents.com/v1/api"
account_id = "${SI_ACCOUNT}"
api_token = "${SI_TOKEN}"
streams = ["chats", "widgets"]
"#;

    fn env(name: &str) -> Option<String> {
        match name {
            "SI_ACCOUNT" => Some("acct".into()),
            "SI_TOKEN" => Some("tok-123".into()),
            _ => None,
        }
    }

    #[test]
    fn parses_and_interpolates() {
        let p = Pipeline::parse(GOOD, Path::new("p.toml"), &env).unwrap();
        let si = p.config.sources.socialintents.as_ref().unwrap();
        assert_eq!(si.account_id, "acct");
        assert_eq!(si.api_token.expose(), "tok-123");
        assert_eq!(p.config.lookback_days, 2);
        assert_eq!(p.tz, chrono_tz::America::New_York);
        assert!(
            !format!("{p:?}").contains("tok-123"),
            "secret leaked into Debug"
        );
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let text = GOOD
            .replace("lookback", "x")
            .replace("start_date", "lookbak_days = 1\nstart_date");
        let e = Pipeline::parse(&text, Path::new("pipelines/acme.toml"), &env)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("lookbak_days") && e.contains("pipelines/acme.toml"),
            "{e}"
        );
    }

    #[test]
    fn missing_variable_is_named() {
        let e = Pipeline::parse(GOOD, Path::new("p.toml"), &|_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("SI_ACCOUNT") || e.contains("SI_TOKEN"), "{e}");
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        for (from, to, needle) in [
            ("America/New_York", "Mars/Base", "IANA"),
            ("\"chats\", \"widgets\"", "\"chatz\"", "chatz"),
            ("0 30 2 * * *", "every night", "schedule"),
        ] {
            let e = Pipeline::parse(&GOOD.replace(from, to), Path::new("p.toml"), &env)
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    const S25: &str = r#"
name = "acme"
timezone = "Europe/Amsterdam"
start_date = "2025-01-01"
[sources.social25]
base_url = "https://social25.herokuapp.com/api/v1.0"
token = "${S25_TOKEN}"
tenant_id = "007be0e1-6c95-4843-8673-a76a479266f8"
streams = ["tenants", "agents", "conversations", "messages", "failed_syncs"]
"#;

    #[test]
    fn social25_alone_is_a_pipeline_and_its_limits_are_checked() {
        let env = |n: &str| (n == "S25_TOKEN").then(|| "s25-tok".to_string());
        let p = Pipeline::parse(S25, Path::new("p.toml"), &env).unwrap();
        let s = p.config.sources.social25.as_ref().unwrap();
        assert_eq!((s.window_days, s.max_concurrency), (30, 4));
        assert!(!format!("{p:?}").contains("s25-tok"));
        for (from, to, needle) in [
            (
                "streams = [",
                "window_days = 31\nstreams = [",
                "window_days = 31",
            ),
            (
                "streams = [",
                "failed_sync_type = \"sf\"\nstreams = [",
                "failed_sync_type",
            ),
            ("\"messages\",", "\"message\",", "unknown stream `message`"),
            (
                "007be0e1-6c95-4843-8673-a76a479266f8",
                "../../x",
                "tenant_id",
            ),
        ] {
            let e = Pipeline::parse(&S25.replace(from, to), Path::new("p.toml"), &env)
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn crm_is_checked() {
        let text = r#"
name = "acme"
timezone = "UTC"
start_date = "2025-01-01"
[sources.crm]
base_url = "https://crm.example.com/api/v1"
api_key = "${CRM_API_KEY}"
streams = ["companies", "contacts", "conversations"]
company_ids = ["123e4567"]
"#;
        let env = |n: &str| (n == "CRM_API_KEY").then(|| "crm-key-1".to_string());
        let p = Pipeline::parse(text, Path::new("p.toml"), &env).unwrap();
        let crm = p.config.sources.crm.as_ref().unwrap();
        assert_eq!((crm.requests_per_minute, crm.company_ids.len()), (100, 1));
        assert!(!format!("{p:?}").contains("crm-key-1"));
        for (from, to, needle) in [
            ("\"contacts\",", "\"contact\",", "unknown stream `contact`"),
            ("\"123e4567\"", "\"a&b\"", "company_ids"),
            ("api_key", "apikey", "apikey"),
        ] {
            let e = Pipeline::parse(&text.replace(from, to), Path::new("p.toml"), &env)
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{e}");
        }
    }
}
