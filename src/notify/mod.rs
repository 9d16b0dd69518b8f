//! Telling people: the pipeline file's `[channels.NAME]` (where messages
//! go) and `[[alerts]]` (when to send one). After every run, and when
//! `chatlake alerts` runs (cron) or the scheduler's timer fires, the rules
//! are evaluated over the warehouse; what starts firing, keeps firing past
//! its repeat interval, or clears is sent to the rule's channels
//! ([`alerts`]), each delivery retried with backoff and recorded
//! ([`channels`]). Nothing here can fail a run: a delivery that fails is a
//! row of `meta.deliveries`, a warning, and a line in `chatlake runs`.

pub mod alerts;
pub mod channels;
pub mod report;
pub mod smtp;

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::secret::Secret;

pub use alerts::{evaluate_and_notify, AlertRule};
pub use channels::{send_test, Delivery};

/// `[channels.NAME]`: where messages go. Secrets come from `${VAR}` and
/// never print.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ChannelConfig {
    /// A Slack incoming webhook: `{"text": ...}` POSTed to its URL (the URL
    /// is the secret).
    Slack { url: Secret },
    /// A JSON POST, signed when `secret` is set: `X-Chatlake-Timestamp`
    /// (Unix seconds) and `X-Chatlake-Signature: sha256=<hex>` of
    /// HMAC-SHA256(secret, "<timestamp>.<body>").
    Webhook {
        url: Secret,
        #[serde(default)]
        secret: Option<Secret>,
    },
    /// Email over SMTP ([`smtp`]): a report as a multipart message with
    /// its charts and the full report attached; alerts as plain text.
    Smtp(smtp::SmtpConfig),
}

impl ChannelConfig {
    /// What kind of channel, for messages and meta.deliveries.
    pub fn kind(&self) -> &'static str {
        match self {
            ChannelConfig::Slack { .. } => "slack",
            ChannelConfig::Webhook { .. } => "webhook",
            ChannelConfig::Smtp(_) => "smtp",
        }
    }
}

/// Checks channels and alert rules together (pure): names, URLs, every
/// rule's channels exist, one condition per rule.
pub fn validate(
    channels: &BTreeMap<String, ChannelConfig>,
    rules: &[AlertRule],
    report_to: &[String],
) -> Result<(), String> {
    if let Some(c) = report_to.iter().find(|c| !channels.contains_key(*c)) {
        return Err(format!(
            "[report] deliver_to names {c:?}, which is not a [channels.NAME] of this file"
        ));
    }
    for (name, c) in channels {
        if name.is_empty()
            || !name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_".contains(ch))
        {
            return Err(format!(
                "[channels.{name}]: name channels with letters, digits, - and _"
            ));
        }
        let (ChannelConfig::Slack { url } | ChannelConfig::Webhook { url, .. }) = c else {
            if let ChannelConfig::Smtp(smtp) = c {
                smtp.validate(name)?;
            }
            continue;
        };
        match url::Url::parse(url.expose()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
            // The URL is a secret (a Slack webhook's path is its key): never echoed.
            _ => {
                return Err(format!(
                    "[channels.{name}] url: not an http(s) URL with a host"
                ))
            }
        }
    }
    for (i, rule) in rules.iter().enumerate() {
        rule.validate()?;
        if rules[..i].iter().any(|r| r.name == rule.name) {
            return Err(format!(
                "[[alerts]] {:?}: two rules have this name (it keys their state)",
                rule.name
            ));
        }
        for c in &rule.notify {
            if !channels.contains_key(c) {
                return Err(format!(
                    "[[alerts]] {:?}: notify names {c:?}, which is not a [channels.NAME] of this file",
                    rule.name
                ));
            }
        }
    }
    Ok(())
}
