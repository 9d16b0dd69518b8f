//! Delivering one message to one channel: a JSON POST with timeouts
//! (connect 10 s, whole request 20 s; the answer's body is never read
//! beyond 4 KiB), or an email ([`smtp`], 60 s per attempt), retried with
//! backoff on a connection error, a timeout, 429, 5xx or a transient SMTP
//! reply (3 attempts), and recorded as a row of `meta.deliveries`.
//! A delivery never returns an error: what failed is in its record.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};

use super::{smtp, ChannelConfig};
use crate::config::secret::clean;
use crate::error::Result;
use crate::normalize::time;
use crate::sink::Warehouse;

/// Attempts per delivery, the first included.
pub const ATTEMPTS: u32 = 3;
/// The first wait before a retry; doubles per attempt.
const BACKOFF: Duration = Duration::from_millis(500);

/// One message for people: a subject line and a body, plus the fields a
/// webhook receiver reads.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Message {
    /// alert | test
    pub kind: String,
    pub pipeline: String,
    /// One line: what happened.
    pub subject: String,
    /// The details (an error, the rows of a rule), secrets removed.
    pub text: String,
    /// For alerts: the rule, its key and firing | repeat | resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<serde_json::Value>,
    pub at: DateTime<Utc>,
    /// For email: the report's HTML body, charts and attachment (a report
    /// message only; other messages are plain text).
    #[serde(skip)]
    pub email: Option<std::sync::Arc<crate::report::email::Email>>,
}

/// What happened to one message on one channel (a row of meta.deliveries).
#[derive(Debug, Clone)]
pub struct Delivery {
    pub channel: String,
    pub channel_type: &'static str,
    pub kind: String,
    pub subject: String,
    pub attempts: u32,
    /// The HTTP status of the last attempt, if there was an answer.
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub at: DateTime<Utc>,
}

impl Delivery {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(20))
        // A channel's URL is where it is: a redirect is not followed.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

/// The body a channel receives.
fn body(channel: &ChannelConfig, m: &Message) -> String {
    match channel {
        ChannelConfig::Slack { .. } => serde_json::json!({
            "text": format!("*{}*\n{}", m.subject, m.text),
        })
        .to_string(),
        ChannelConfig::Webhook { .. } | ChannelConfig::Smtp(_) => {
            serde_json::to_string(m).unwrap_or_default()
        }
    }
}

/// `sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>.<body>").
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// Sends `m` to the channel `name`, retrying; never fails (see the record).
pub async fn deliver(name: &str, channel: &ChannelConfig, m: &Message) -> Delivery {
    let mut record = Delivery {
        channel: name.to_string(),
        channel_type: channel.kind(),
        kind: m.kind.clone(),
        subject: m.subject.clone(),
        attempts: 0,
        http_status: None,
        error: None,
        at: Utc::now(),
    };
    // Built once: an email's charts are not encoded again per attempt.
    let email = match channel {
        ChannelConfig::Smtp(c) => match smtp::build(c, m) {
            Ok(mail) => Some(mail),
            Err(e) => {
                record.error = Some(clean(&e));
                tracing::warn!(channel = name, error = %clean(&e), "delivery failed");
                return record;
            }
        },
        _ => None,
    };
    let client = client();
    for attempt in 1..=ATTEMPTS {
        record.attempts = attempt;
        let (retry, error) = match (channel, &email) {
            (ChannelConfig::Smtp(c), Some(mail)) => {
                let a = smtp::send_once(c, mail).await;
                (a.retry, a.error)
            }
            (ChannelConfig::Slack { url } | ChannelConfig::Webhook { url, .. }, _) => {
                let (retry, status, error) = post_once(&client, channel, url, m).await;
                record.http_status = status;
                // The URL and any secret it or the answer carries are never kept.
                (retry, error.map(|e| e.replace(url.expose(), "<url>")))
            }
            (ChannelConfig::Smtp(_), None) => unreachable!("an email is built above"),
        };
        record.error = error.map(|e| clean(&e));
        if !retry || attempt == ATTEMPTS {
            break;
        }
        tokio::time::sleep(BACKOFF * 2u32.pow(attempt - 1)).await;
    }
    if let Some(e) = &record.error {
        tracing::warn!(channel = name, attempts = record.attempts, error = %e, "delivery failed");
    }
    record
}

/// One POST of `m` to a Slack or webhook channel: whether to try again,
/// the HTTP status if there was an answer, and the error.
async fn post_once(
    client: &reqwest::Client,
    channel: &ChannelConfig,
    url: &crate::config::secret::Secret,
    m: &Message,
) -> (bool, Option<u16>, Option<String>) {
    let payload = body(channel, m);
    let mut req = client
        .post(url.expose())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::USER_AGENT, "chatlake");
    if let ChannelConfig::Webhook {
        secret: Some(secret),
        ..
    } = channel
    {
        let ts = Utc::now().timestamp();
        req = req.header("X-Chatlake-Timestamp", ts.to_string()).header(
            "X-Chatlake-Signature",
            signature(secret.expose(), ts, &payload),
        );
    }
    match req.body(payload).send().await {
        Ok(mut resp) => {
            let status = resp.status();
            // At most 4 KiB of the answer, for the error message.
            let mut said = Vec::new();
            while let Ok(Ok(Some(chunk))) =
                tokio::time::timeout(Duration::from_secs(5), resp.chunk()).await
            {
                said.extend_from_slice(&chunk[..chunk.len().min(4096 - said.len())]);
                if said.len() >= 4096 {
                    break;
                }
            }
            if status.is_success() {
                (false, Some(status.as_u16()), None)
            } else {
                let text = String::from_utf8_lossy(&said)
                    .chars()
                    .take(200)
                    .collect::<String>();
                (
                    status.as_u16() == 429 || status.is_server_error(),
                    Some(status.as_u16()),
                    Some(format!("HTTP {}: {}", status.as_u16(), text.trim())),
                )
            }
        }
        Err(e) => (
            true,
            None,
            Some(if e.is_timeout() {
                "timed out".to_string()
            } else if e.is_connect() {
                "connection failed".to_string()
            } else {
                "request failed".to_string()
            }),
        ),
    }
}

/// Appends `records` to meta.deliveries (one file for the batch).
pub async fn record(
    wh: &Warehouse,
    pipeline: &str,
    tz: chrono_tz::Tz,
    records: &[Delivery],
) -> Result<()> {
    use crate::normalize::{build_batch, Cell, Row};
    if records.is_empty() {
        return Ok(());
    }
    let table = crate::schema::table("meta.deliveries");
    let at = records[0].at;
    let id = crate::pipeline::new_run_id(at);
    let rows = records
        .iter()
        .map(|d| {
            let cells = vec![
                ("delivered_at", Cell::Micros(time::micros(d.at))),
                ("pipeline", Cell::Str(pipeline.to_string())),
                ("channel", Cell::Str(d.channel.clone())),
                ("channel_type", Cell::Str(d.channel_type.to_string())),
                ("kind", Cell::Str(d.kind.clone())),
                ("subject", Cell::Str(d.subject.clone())),
                (
                    "status",
                    Cell::Str(if d.ok() { "sent" } else { "failed" }.to_string()),
                ),
                ("attempts", Cell::Int(i64::from(d.attempts))),
                (
                    "http_status",
                    d.http_status
                        .map_or(Cell::Null, |s| Cell::Int(i64::from(s))),
                ),
                ("error", d.error.clone().map_or(Cell::Null, Cell::Str)),
            ];
            Row::named(table, cells, time::micros(d.at))
        })
        .collect::<Result<Vec<_>>>()?;
    let batch = build_batch(table, &id, &rows)?;
    wh.append(
        table,
        time::local_date(at, tz),
        &format!("{id}-deliveries"),
        &batch,
    )
    .await
}

/// `chatlake notify test`: one test message to each channel (or one),
/// recorded like any other delivery.
pub async fn send_test(
    p: &crate::config::Pipeline,
    wh: Option<&Warehouse>,
    only: Option<&str>,
) -> Result<Vec<Delivery>> {
    let mut out = Vec::new();
    for (name, channel) in &p.config.channels {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let m = Message {
            kind: "test".into(),
            pipeline: p.config.name.clone(),
            subject: format!("chatlake test message for pipeline {}", p.config.name),
            text: format!(
                "If you read this, channel {name} ({}) works.",
                channel.kind()
            ),
            alert: None,
            at: Utc::now(),
            email: None,
        };
        out.push(deliver(name, channel, &m).await);
    }
    if let Some(wh) = wh {
        record(wh, &p.config.name, p.tz, &out).await?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    /// The signature a receiver recomputes: HMAC-SHA256 over
    /// "<timestamp>.<body>". Expected value computed independently with
    /// Python: `hmac.new(b"Jefe", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()`.
    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        assert_eq!(
            super::signature("Jefe", 1700000000, "{\"a\":1}"),
            "sha256=fa5f6481efc59da48b19c9dc10196c9953e5651f8304b3a318b6b87d70272e0a"
        );
    }
}
