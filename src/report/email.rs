//! The report as an email: the same figures as the HTML report, in the
//! shape mail clients show. A plain-text summary; an email-safe HTML body
//! (`email.html.j2`: tables and inline styles only, no script, no SVG, no
//! stylesheet to strip) that fits a 390 px phone; the charts as PNG images
//! by Content-ID ([`super::png`], cut from the report's own SVG); and the
//! full self-contained report, attached.

use serde_json::{json, Map, Value};

use super::png::{self, Chart};
use super::{Period, KPIS};
use crate::error::Result;
use crate::sink::Warehouse;

/// The email template, compiled in.
const TEMPLATE: &str = include_str!("email.html.j2");

/// One report, composed for people.
#[derive(Debug, Clone)]
pub struct Email {
    /// "Chat report 2025-10-29 to 2025-10-29: Chats 54 (+8%) · missed ..."
    pub subject: String,
    /// The plain-text summary (also what Slack and webhooks get).
    pub text: String,
    /// The email-safe HTML body; its images are `cid:<chart id>`.
    pub html: String,
    pub charts: Vec<Chart>,
    /// The full report and its attachment name.
    pub report: String,
    pub report_name: String,
}

/// The values of one period's KPI tiles (`value` or `previous`), by name.
fn figures(ctx: &Value, which: &str) -> Map<String, Value> {
    ctx["tiles"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| Some((t["name"].as_str()?.to_string(), t[which].clone())))
        .collect()
}

/// Composes the report of `period`: the subject and text always, the HTML
/// body, charts and attachment when `rich` (an email channel is among the
/// recipients; rasterizing is not free). `link` is where the report can be
/// opened, if anywhere.
pub async fn compose(
    wh: &Warehouse,
    period: Period,
    link: Option<&str>,
    rich: bool,
) -> Result<Email> {
    let mut ctx = super::context(wh, period).await?;
    let (headline, lines) = super::headline_of(&figures(&ctx, "value"), &figures(&ctx, "previous"));
    let subject = format!("Chat report {} to {}: {headline}", period.from, period.to);
    let report_name = format!("chat-report-{}-to-{}.html", period.from, period.to);
    let warnings: Vec<String> = ctx["health"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h["warning"].as_str().is_some_and(|w| !w.is_empty()))
        .map(|h| {
            format!(
                "{}: {} (last success {})",
                h["stream"].as_str().unwrap_or("?"),
                h["warning"].as_str().unwrap_or(""),
                h["last_success"].as_str().unwrap_or("never")
            )
        })
        .collect();
    let mut text = format!(
        "{} to {} ({} days, local dates in {}), compared with {} to {}.\n\n{lines}\n",
        period.from,
        period.to,
        period.days(),
        ctx["timezone"].as_str().unwrap_or("UTC"),
        ctx["prev_from"].as_str().unwrap_or(""),
        ctx["prev_to"].as_str().unwrap_or(""),
    );
    if !warnings.is_empty() {
        text.push_str(&format!("\nData health:\n{}\n", warnings.join("\n")));
    }
    if let Some(url) = link {
        text.push_str(&format!("\nThe report: {url}"));
    }
    if !rich {
        return Ok(Email {
            subject,
            text,
            html: String::new(),
            charts: Vec::new(),
            report: String::new(),
            report_name,
        });
    }
    let report = super::fill("report.html", super::TEMPLATE, &ctx)?;
    let charts = png::charts(&report)?;
    text.push_str(&format!(
        "\nThe full report is attached ({report_name}): open it in a browser.\n"
    ));
    if let Value::Object(o) = &mut ctx {
        o.insert("subject".into(), json!(subject));
        o.insert("link".into(), json!(link));
        o.insert("report_name".into(), json!(report_name));
        o.insert("warnings".into(), json!(warnings));
        o.insert(
            "charts".into(),
            charts
                .iter()
                .map(|c| json!({"id": c.id, "title": c.title, "width": c.width.min(600)}))
                .collect(),
        );
        o.insert("kpi_order".into(), json!(KPIS));
    }
    let html = super::fill("email.html", TEMPLATE, &ctx)?;
    Ok(Email {
        subject,
        text,
        html,
        charts,
        report,
        report_name,
    })
}
