//! What the pipeline file says of telling people, as parsed and validated:
//! `[channels.NAME]` ([`ChannelConfig`], SMTP's [`SmtpConfig`]) and
//! `[[alerts]]` ([`AlertRule`]). Plain data and pure checks, importing
//! nothing of the crate but [`Secret`], so the pipeline's configuration can
//! hold them; sending is [`super::channels`], evaluating [`super::alerts`].

use std::collections::BTreeMap;

use lettre::message::Mailbox;
use serde::Deserialize;

use crate::config::secret::Secret;

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
    /// Email over SMTP ([`super::smtp`]): a report as a multipart message with
    /// its charts and the full report attached; alerts as plain text.
    Smtp(SmtpConfig),
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

/// How the connection is protected.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain first, then STARTTLS, required (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same host or network (port 25).
    None,
}

/// `[channels.NAME] type = "smtp"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    /// Default: 587 (starttls), 465 (tls), 25 (none).
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub security: Security,
    #[serde(default)]
    pub username: Option<Secret>,
    #[serde(default)]
    pub password: Option<Secret>,
    pub from: String,
    pub to: Vec<String>,
}

impl SmtpConfig {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.security {
            Security::Starttls => 587,
            Security::Tls => 465,
            Security::None => 25,
        })
    }

    /// Checks the addresses and the host (pure). Addresses are not
    /// secrets, but the errors name only the field, never the credentials.
    pub fn validate(&self, name: &str) -> Result<(), String> {
        let host_ok = !self.host.is_empty()
            && self
                .host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
        if !host_ok {
            return Err(format!(
                "[channels.{name}] host {:?}: a host name or IP address, without scheme or port",
                self.host
            ));
        }
        if self.port == Some(0) {
            return Err(format!("[channels.{name}] port: between 1 and 65535"));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err(format!(
                "[channels.{name}]: set both username and password, or neither"
            ));
        }
        self.from
            .parse::<Mailbox>()
            .map_err(|e| format!("[channels.{name}] from {:?}: {e}", self.from))?;
        if self.to.is_empty() {
            return Err(format!(
                "[channels.{name}] to: at least one address, to = [\"lead@example.com\"]"
            ));
        }
        for to in &self.to {
            to.parse::<Mailbox>()
                .map_err(|e| format!("[channels.{name}] to {to:?}: {e}"))?;
        }
        Ok(())
    }
}

fn default_repeat_hours() -> f64 {
    24.0
}

/// One `[[alerts]]` table of the pipeline file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    pub name: String,
    /// `run_failed` or `stale` (absent for an SQL rule).
    #[serde(default)]
    pub when: Option<String>,
    /// `stale`: hours without a successful run.
    #[serde(default)]
    pub hours: Option<f64>,
    /// A query whose rows mean "firing".
    #[serde(default)]
    pub sql: Option<String>,
    /// The SQL columns that tell one alert from another (default: all).
    #[serde(default)]
    pub key: Vec<String>,
    /// Channel names.
    pub notify: Vec<String>,
    /// Hours before a still-firing alert is sent again.
    #[serde(default = "default_repeat_hours")]
    pub repeat_hours: f64,
}

impl AlertRule {
    /// One condition per rule, with what it needs (pure).
    pub fn validate(&self) -> std::result::Result<(), String> {
        let at = format!("[[alerts]] {:?}", self.name);
        if self.name.trim().is_empty() {
            return Err("[[alerts]]: every rule needs a name".into());
        }
        match (self.when.as_deref(), &self.sql) {
            (Some("run_failed"), None) => {}
            (Some("stale"), None) => match self.hours {
                Some(h) if h > 0.0 && h.is_finite() => {}
                _ => return Err(format!("{at}: when = \"stale\" needs hours > 0")),
            },
            (None, Some(sql)) if !sql.trim().is_empty() => {}
            (Some(w), None) => {
                return Err(format!(
                    "{at}: when = {w:?}: use \"run_failed\" or \"stale\" (or sql = \"...\")"
                ))
            }
            _ => {
                return Err(format!(
                    "{at}: give either when or sql, not both or neither"
                ))
            }
        }
        if self.notify.is_empty() {
            return Err(format!("{at}: notify names no channel"));
        }
        if !(self.repeat_hours > 0.0 && self.repeat_hours.is_finite()) {
            return Err(format!("{at}: repeat_hours must be above 0"));
        }
        Ok(())
    }
}
