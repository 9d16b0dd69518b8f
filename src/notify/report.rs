//! Sending the report's headline to `[report] deliver_to`: after a run on a
//! day of the `every` cadence (once per day: `_state/<pipeline>/_report_sent.json`
//! remembers the last local date sent), and by `chatlake report --send`.
//! Slack and webhooks get the headline figures with their change against
//! the period before, and where the report is (a `file://` URL for a local
//! warehouse; on S3 a presigned URL, valid `[report] link_days`); email
//! gets them too, with the charts and the full report attached
//! ([`crate::report::email`]).

use chrono::NaiveDate;

use super::channels::{self, Delivery, Message};
use crate::config::Pipeline;
use crate::error::{Error, Result};
use crate::report::{Cadence, Period};
use crate::sink::Warehouse;

/// Sends the headline of `period` to the `[report] deliver_to` channels.
pub async fn send(
    p: &Pipeline,
    wh: &Warehouse,
    period: Period,
    link: Option<&str>,
) -> Result<Vec<Delivery>> {
    let Some(cfg) = &p.config.report else {
        return Err(Error::Usage(format!(
            "{}: no [report] section",
            p.file.display()
        )));
    };
    let rich = cfg.deliver_to.iter().any(|c| {
        matches!(
            p.config.channels.get(c),
            Some(super::ChannelConfig::Smtp(_))
        )
    });
    let email = crate::report::email::compose(wh, period, link, rich).await?;
    let m = Message {
        kind: "report".into(),
        pipeline: p.config.name.clone(),
        subject: email.subject.clone(),
        text: email.text.clone(),
        alert: None,
        at: chrono::Utc::now(),
        email: rich.then(|| std::sync::Arc::new(email)),
    };
    let mut out = Vec::new();
    for name in &cfg.deliver_to {
        if let Some(channel) = p.config.channels.get(name) {
            out.push(channels::deliver(name, channel, &m).await);
        }
    }
    channels::record(wh, &p.config.name, p.tz, &out).await?;
    Ok(out)
}

fn sent_path(wh: &Warehouse, pipeline: &str) -> object_store::path::Path {
    wh.root()
        .clone()
        .join("_state")
        .join(pipeline)
        .join("_report_sent.json")
}

/// After a run (`today` is its local date, `link` where its report is):
/// sends the cadence's period when today is one of its days and it was not
/// sent today; a day whose every delivery failed is tried again by the
/// next run. Never fails the run.
pub async fn after_run(p: &Pipeline, wh: &Warehouse, today: NaiveDate, link: Option<&str>) {
    let Some(cfg) = &p.config.report else { return };
    let Some(cadence) = cfg.every.as_deref().and_then(|e| Cadence::parse(e).ok()) else {
        return;
    };
    if !cadence.due(today) {
        return;
    }
    let path = sent_path(wh, &p.config.name);
    // Unreadable counts as not sent: a second message beats none.
    let last: Option<NaiveDate> = wh
        .get_json::<serde_json::Value>(&path)
        .await
        .ok()
        .flatten()
        .and_then(|v| v["last"].as_str()?.parse().ok());
    if last == Some(today) {
        return;
    }
    let period = Period::last_days(today, cadence.days());
    // On S3, a link anyone in the channel can open for `link_days`.
    let signed = match wh
        .presigned_get(
            &crate::report::latest_path(wh, cfg),
            std::time::Duration::from_secs(86_400 * u64::from(cfg.link_days)),
        )
        .await
    {
        Ok(signed) => signed,
        Err(e) => {
            tracing::warn!(error = %e, "could not sign the report's link; the message names the object instead");
            None
        }
    };
    let link = signed.as_deref().or(link);
    match send(p, wh, period, link).await {
        Ok(sent) if sent.iter().any(Delivery::ok) => {
            let sent = serde_json::json!({ "last": today.to_string() });
            if let Err(e) = wh.put_json(&path, &sent).await {
                tracing::warn!(error = %e, "could not record that the report was sent; the next run sends it again");
            }
            tracing::info!(from = %period.from, to = %period.to, "report sent");
        }
        Ok(_) => tracing::warn!(
            "the report reached no channel (see meta.deliveries); the next run tries again"
        ),
        Err(e) => tracing::error!(error = %e, "could not send the report"),
    }
}
