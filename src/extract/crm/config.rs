//! `[sources.crm]`: what the pipeline file may say about the CRM "Developer API".

use serde::Deserialize;

use crate::config::Secret;
use crate::error::Result;
use crate::extract::{checks, BuildCtx, Source, SourceConfig};

/// Stream names of the CRM source.
pub const STREAMS: &[&str] = &["companies", "contacts", "conversations"];

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
    /// A hard cap on requests a minute (the API's docs ask for at most 100;
    /// below it the rate still adapts to 429/503).
    #[serde(default = "default_rpm")]
    pub requests_per_minute: u32,
    /// Requests in flight at most: with `company_ids`, companies read at once.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
}

fn default_rpm() -> u32 {
    100
}
fn default_concurrency() -> usize {
    4
}

/// Parses and checks the section.
pub fn parse(value: toml::Value) -> Result<std::sync::Arc<dyn SourceConfig>, String> {
    checks::parse_section(super::NAME, value, |s: &CrmConfig| {
        checks::base_url(super::NAME, &s.base_url)?;
        checks::streams(super::NAME, &s.streams, STREAMS)?;
        for id in &s.company_ids {
            if id.is_empty() || id.contains(['/', '?', '#', '&']) {
                return Err(format!(
                    "sources.crm.company_ids: `{id}` is not a company id"
                ));
            }
        }
        checks::positive(
            super::NAME,
            "requests_per_minute",
            s.requests_per_minute.into(),
        )?;
        checks::concurrency(super::NAME, s.max_concurrency)
    })
}

impl SourceConfig for CrmConfig {
    fn name(&self) -> &'static str {
        super::NAME
    }
    fn build(&self, ctx: &BuildCtx<'_>) -> Result<Box<dyn Source>> {
        let mut source = super::Crm::new(self, ctx.http, ctx.tz)?;
        source.client.redact_with(ctx.policy.clone());
        Ok(Box::new(source))
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
