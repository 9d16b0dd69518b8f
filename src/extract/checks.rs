//! Checks every source's `[sources.<name>]` section shares: a usable base
//! URL, a non-empty list of known streams, and positive limits. Each message
//! names the key and the value.

use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::SourceConfig;

/// Deserializes `[sources.<name>]` into `T` and validates it; messages start
/// with `sources.<name>`.
pub fn parse_section<T: DeserializeOwned + SourceConfig>(
    name: &str,
    value: toml::Value,
    validate: fn(&T) -> Result<(), String>,
) -> Result<Arc<dyn SourceConfig>, String> {
    let cfg: T = T::deserialize(value).map_err(|e| format!("sources.{name}: {e}"))?;
    validate(&cfg)?;
    Ok(Arc::new(cfg))
}

/// `base_url` parses as an http(s) URL.
pub fn base_url(source: &str, url: &str) -> Result<(), String> {
    let u = url::Url::parse(url).map_err(|e| format!("sources.{source}.base_url `{url}`: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!(
            "sources.{source}.base_url `{url}`: use an http:// or https:// URL"
        ));
    }
    // A key in the query string (`?api_key=...`) or a user and password in
    // the URL are credentials: never printed, whatever form an echo takes.
    let register = crate::config::secret::register;
    for (_, v) in u.query_pairs() {
        register(&v);
    }
    for raw in u.query().unwrap_or("").split('&') {
        register(raw.split_once('=').map_or(raw, |(_, v)| v));
    }
    register(u.username());
    if let Some(p) = u.password() {
        register(p);
    }
    Ok(())
}

/// `streams` is not empty and names only streams of `known`.
pub fn streams(source: &str, streams: &[String], known: &[&str]) -> Result<(), String> {
    if streams.is_empty() {
        return Err(format!(
            "sources.{source}.streams is empty (known: {})",
            known.join(", ")
        ));
    }
    for s in streams {
        if !known.contains(&s.as_str()) {
            return Err(format!(
                "sources.{source}.streams: unknown stream `{s}` (known: {})",
                known.join(", ")
            ));
        }
    }
    Ok(())
}

/// A limit that must be at least 1.
pub fn positive(source: &str, key: &str, value: u64) -> Result<(), String> {
    if value == 0 {
        return Err(format!("sources.{source}.{key}: at least 1"));
    }
    Ok(())
}

/// `max_concurrency`: 1 to 64 (each request in flight holds its answer, and
/// a windowed stream a window's rows, in memory).
pub fn concurrency(source: &str, value: usize) -> Result<(), String> {
    if !(1..=64).contains(&value) {
        return Err(format!(
            "sources.{source}.max_concurrency = {value}: use 1 to 64"
        ));
    }
    Ok(())
}
