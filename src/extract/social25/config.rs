//! `[sources.social25]`: what the pipeline file may say about Social25.

use serde::Deserialize;

use crate::config::Secret;
use crate::error::Result;
use crate::extract::{checks, BuildCtx, Source, SourceConfig};

/// Stream names of the Social25 source.
pub const STREAMS: &[&str] = &[
    "tenants",
    "agents",
    "conversations",
    "messages",
    "failed_syncs",
];

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
    #[serde(default = "default_window_days")]
    pub window_days: u32,
    /// A hard cap on requests a minute. Unset (the default), the rate is
    /// adaptive: it rises while the API answers and is cut on 429/503.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Requests in flight at most: conversations whose messages are
    /// fetched at once, failed-sync windows read at once.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
}

fn default_window_days() -> u32 {
    30
}
fn default_concurrency() -> usize {
    4
}

/// Parses and checks the section.
pub fn parse(value: toml::Value) -> Result<std::sync::Arc<dyn SourceConfig>, String> {
    checks::parse_section(super::NAME, value, |s: &Social25Config| {
        checks::base_url(super::NAME, &s.base_url)?;
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
        checks::streams(super::NAME, &s.streams, STREAMS)?;
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
        checks::positive(
            super::NAME,
            "requests_per_minute",
            s.requests_per_minute.unwrap_or(1).into(),
        )?;
        checks::concurrency(super::NAME, s.max_concurrency)
    })
}

impl SourceConfig for Social25Config {
    fn name(&self) -> &'static str {
        super::NAME
    }
    fn build(&self, ctx: &BuildCtx<'_>) -> Result<Box<dyn Source>> {
        let mut source = super::Social25::new(self, ctx.http, ctx.tz, ctx.now, ctx.lookback_days)?;
        source.client.redact_with(ctx.policy.clone());
        source.policy = ctx.policy.clone();
        Ok(Box::new(source))
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
