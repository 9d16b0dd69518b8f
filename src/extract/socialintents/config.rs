//! `[sources.socialintents]`: what the pipeline file may say about Social Intents.

use serde::Deserialize;

use crate::config::Secret;
use crate::error::Result;
use crate::extract::{checks, BuildCtx, Source, SourceConfig};

/// Stream names of the Social Intents source.
pub const STREAMS: &[&str] = &[
    "chats",
    "missed_chats",
    "offline_messages",
    "contacts",
    "widgets",
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
    /// A hard cap on requests a minute. Unset (the default), the rate is
    /// adaptive: it rises while the API answers and is cut on 429/503.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Requests in flight at most: date windows of a stream read at once
    /// (each is committed in order).
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
}

fn default_window_days() -> u32 {
    7
}
fn default_concurrency() -> usize {
    4
}

/// Parses and checks the section.
pub fn parse(value: toml::Value) -> Result<std::sync::Arc<dyn SourceConfig>, String> {
    checks::parse_section(super::NAME, value, |c: &SocialIntentsConfig| {
        checks::base_url(super::NAME, &c.base_url)?;
        checks::streams(super::NAME, &c.streams, STREAMS)?;
        if !(1..=31).contains(&c.window_days) {
            return Err(format!(
                "sources.socialintents.window_days = {}: use 1 to 31",
                c.window_days
            ));
        }
        checks::positive(
            super::NAME,
            "requests_per_minute",
            c.requests_per_minute.unwrap_or(1).into(),
        )?;
        checks::concurrency(super::NAME, c.max_concurrency)
    })
}

impl SourceConfig for SocialIntentsConfig {
    fn name(&self) -> &'static str {
        super::NAME
    }
    fn build(&self, ctx: &BuildCtx<'_>) -> Result<Box<dyn Source>> {
        let mut source = super::SocialIntents::new(self, ctx.http, ctx.tz)?;
        source.client.redact_with(ctx.policy.clone());
        source.policy = ctx.policy.clone();
        Ok(Box::new(source))
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
