//! Email channels: one message built with lettre (MIME, header and body
//! encodings are its business, not ours) and sent over SMTP, with STARTTLS
//! required, TLS from the first byte (rustls), or plain for a local relay.
//!
//! A report is a multipart message: a plain-text summary and an email-safe
//! HTML body (tables, inline styles, no script, no SVG) whose charts are
//! PNG images attached inline by Content-ID, plus the full report as an
//! HTML attachment ([`crate::report::email`]). Alerts and test messages are
//! plain text.
//!
//! Every send is bounded by [`SEND_TIMEOUT`] as a whole (lettre times out
//! only the connect): a server that answers slowly or never ends its reply
//! cannot hang a run.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::Deserialize;

use super::channels::Message;
use crate::config::secret::Secret;

/// Connecting (TCP and TLS) may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// One whole delivery (connect, greet, authenticate, send, quit).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);

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

/// The message `m` as email: multipart for a report (see the module
/// docs), plain text otherwise.
pub fn build(c: &SmtpConfig, m: &Message) -> Result<lettre::Message, String> {
    let mut b = lettre::Message::builder()
        .from(
            c.from
                .parse::<Mailbox>()
                .map_err(|e| format!("from: {e}"))?,
        )
        .subject(m.subject.clone())
        .date(m.at.into())
        .user_agent("chatlake".into());
    for to in &c.to {
        b = b.to(to.parse::<Mailbox>().map_err(|e| format!("to: {e}"))?);
    }
    let built = match &m.email {
        None => b.singlepart(SinglePart::plain(m.text.clone())),
        Some(e) => {
            let mut related = MultiPart::related().multipart(MultiPart::alternative_plain_html(
                m.text.clone(),
                e.html.clone(),
            ));
            for chart in &e.charts {
                related = related.singlepart(
                    Attachment::new_inline(chart.id.clone())
                        .body(chart.png.clone(), ContentType::parse("image/png").unwrap()),
                );
            }
            b.multipart(
                MultiPart::mixed().multipart(related).singlepart(
                    Attachment::new(e.report_name.clone())
                        .body(e.report.clone(), ContentType::TEXT_HTML),
                ),
            )
        }
    };
    built.map_err(|e| format!("building the message: {e}"))
}

fn transport(c: &SmtpConfig) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let tls =
        || TlsParameters::new_rustls(c.host.clone()).map_err(|e| format!("TLS settings: {e}"));
    let mut t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(c.host.clone())
        .port(c.port())
        .timeout(Some(CONNECT_TIMEOUT))
        .tls(match c.security {
            Security::Starttls => Tls::Required(tls()?),
            Security::Tls => Tls::Wrapper(tls()?),
            Security::None => Tls::None,
        });
    if let (Some(user), Some(pass)) = (&c.username, &c.password) {
        t = t.credentials(Credentials::new(
            user.expose().to_string(),
            pass.expose().to_string(),
        ));
    }
    Ok(t.build())
}

/// What one attempt came to: whether to try again, and the error.
pub struct Attempt {
    pub retry: bool,
    pub error: Option<String>,
}

/// One attempt to send `message` (already built) through `c`.
pub async fn send_once(c: &SmtpConfig, message: &lettre::Message) -> Attempt {
    let t = match transport(c) {
        Ok(t) => t,
        Err(e) => {
            return Attempt {
                retry: false,
                error: Some(e),
            }
        }
    };
    match tokio::time::timeout(SEND_TIMEOUT, t.send(message.clone())).await {
        Ok(Ok(_)) => Attempt {
            retry: false,
            error: None,
        },
        Ok(Err(e)) => Attempt {
            // A permanent refusal (5xx: bad address, authentication
            // failed) will not pass on a second try; the rest may.
            retry: !e.is_permanent(),
            error: Some(format!("SMTP {}:{}: {e}", c.host, c.port())),
        },
        Err(_) => Attempt {
            retry: true,
            error: Some(format!(
                "SMTP {}:{}: no answer within {} s",
                c.host,
                c.port(),
                SEND_TIMEOUT.as_secs()
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::{Security, SmtpConfig};

    fn config(edit: impl FnOnce(&mut SmtpConfig)) -> Result<(), String> {
        let mut c = SmtpConfig {
            host: "smtp.example.com".into(),
            port: None,
            security: Security::Starttls,
            username: None,
            password: None,
            from: "chatlake <reports@example.com>".into(),
            to: vec!["lead@example.com".into()],
        };
        edit(&mut c);
        c.validate("leads")
    }

    #[test]
    fn an_email_channel_is_checked_before_anything_is_sent() {
        assert_eq!(config(|_| {}), Ok(()));
        type Edit = fn(&mut SmtpConfig);
        let cases: [(Edit, &str); 6] = [
            (|c| c.host = "smtp://smtp.example.com".into(), "host"),
            (|c| c.port = Some(0), "port"),
            (|c| c.to.clear(), "to: at least one"),
            (
                |c| c.to = vec!["not an address".into()],
                "to \"not an address\"",
            ),
            (|c| c.from = "@".into(), "from"),
            (
                |c| c.username = Some(crate::config::secret::Secret::new("user-x")),
                "both username and password",
            ),
        ];
        for (edit, want) in cases {
            let err = config(edit).unwrap_err();
            assert!(
                err.starts_with("[channels.leads]") && err.contains(want),
                "{err}"
            );
        }
        let port = |s| {
            SmtpConfig {
                security: s,
                ..serde_json::from_value(
                    serde_json::json!({"host": "h", "from": "a@b.c", "to": ["d@e.f"]}),
                )
                .unwrap()
            }
            .port()
        };
        assert_eq!(
            (
                port(Security::Starttls),
                port(Security::Tls),
                port(Security::None)
            ),
            (587, 465, 25)
        );
    }
}
