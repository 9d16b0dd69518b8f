//! Alert rules (`[[alerts]]`): evaluated over the warehouse after every
//! run, by `chatlake alerts` and by the scheduler's timer.
//!
//! A rule is `when = "run_failed"` (a stream whose last run failed),
//! `when = "stale"` with `hours` (a stream with no successful run for that
//! long), or `sql` (each row of the query is one alert, keyed by the
//! columns `key` names). An alert is sent once when it starts firing, again
//! every `repeat_hours` while it keeps firing, and a "resolved" notice
//! follows when it clears. The state (`_state/<pipeline>/_alerts.json`)
//! lives in the warehouse, so restarts and cron runs agree; a notice whose
//! every delivery failed is not marked sent, so the next evaluation tries
//! again. Every notice is a row of `meta.alerts`, every delivery one of
//! `meta.deliveries`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::channels::{self, Delivery, Message};
pub use super::config::AlertRule;
use crate::config::secret::clean;
use crate::config::Pipeline;
use crate::error::{Error, Result};
use crate::normalize::time;
use crate::sink::Warehouse;

/// Alerts one rule may raise at one evaluation.
pub const MAX_ALERTS: usize = 1000;

/// What the state remembers of one firing alert.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Firing {
    since: DateTime<Utc>,
    last_sent: DateTime<Utc>,
}

/// `_state/<pipeline>/_alerts.json`: "<rule>\u{1f}<key>" -> firing.
type State = BTreeMap<String, Firing>;

fn state_path(wh: &Warehouse, pipeline: &str) -> object_store::path::Path {
    wh.root()
        .clone()
        .join("_state")
        .join(pipeline)
        .join("_alerts.json")
}

async fn load(wh: &Warehouse, pipeline: &str) -> Result<State> {
    Ok(wh
        .get_json(&state_path(wh, pipeline))
        .await?
        .unwrap_or_default())
}

/// Drops from the alerts firing those whose key `erased` says names an
/// erased person (`chatlake forget`): they end without a "resolved"
/// notice, which would name them again. Returns how many.
pub async fn forget_alerts(
    wh: &Warehouse,
    pipeline: &str,
    erased: impl Fn(&str) -> bool,
) -> Result<usize> {
    let mut state = load(wh, pipeline).await?;
    let before = state.len();
    state.retain(|k, _| !erased(k.split_once('\u{1f}').map_or(k.as_str(), |(_, key)| key)));
    let dropped = before - state.len();
    if dropped > 0 {
        wh.put_json(&state_path(wh, pipeline), &state).await?;
    }
    Ok(dropped)
}

/// One notice: an alert that starts, repeats or clears.
#[derive(Debug, Clone)]
pub struct Notice {
    pub rule: String,
    pub key: String,
    /// firing | repeat | resolved
    pub status: &'static str,
    pub detail: String,
    pub deliveries: Vec<Delivery>,
}

/// What one evaluation did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub notices: Vec<Notice>,
    /// Rules that could not be evaluated, with why.
    pub errors: Vec<String>,
    /// Alerts firing after the evaluation.
    pub firing: usize,
}

/// `'text'` as an SQL literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The rows a rule fires for: (key, detail).
async fn firing_rows(
    rule: &AlertRule,
    pipeline: &str,
    session: &crate::query::Session,
    now: DateTime<Utc>,
) -> Result<Vec<(String, String)>> {
    let p = lit(pipeline);
    let sql = match (rule.when.as_deref(), &rule.sql) {
        (Some("run_failed"), _) => format!(
            "WITH last AS (SELECT stream, MAX(started_at) AS s FROM meta.runs WHERE pipeline = {p} GROUP BY stream) \
             SELECT r.stream, r.error FROM meta.runs r JOIN last ON r.stream = last.stream AND r.started_at = last.s \
             WHERE r.pipeline = {p} AND r.status = 'failed' ORDER BY r.stream"
        ),
        (Some("stale"), _) => {
            let hours = rule.hours.unwrap_or(24.0);
            let cutoff = now - chrono::Duration::seconds((hours * 3600.0) as i64);
            format!(
                "SELECT stream, CAST(MAX(CASE WHEN status = 'success' THEN finished_at END) AS VARCHAR) AS last_success \
                 FROM meta.runs WHERE pipeline = {p} AND stream NOT LIKE '(%' GROUP BY stream \
                 HAVING MAX(CASE WHEN status = 'success' THEN finished_at END) IS NULL \
                     OR MAX(CASE WHEN status = 'success' THEN finished_at END) < TIMESTAMP {} ORDER BY stream",
                lit(&cutoff.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
            )
        }
        // At most MAX_ALERTS rows are read: a rule that matches millions
        // cannot make the evaluation's memory grow with them.
        (_, Some(sql)) => format!(
            "SELECT * FROM ({}) AS rule_rows LIMIT {}",
            sql.trim().trim_end_matches(';'),
            MAX_ALERTS + 1
        ),
        _ => return Ok(Vec::new()),
    };
    let batches = crate::query::run(session, &sql).await?;
    let text = crate::query::render(&batches, crate::query::Format::Json)?;
    let mut rows: Vec<serde_json::Map<String, serde_json::Value>> = serde_json::from_str(&text)
        .map_err(|e| Error::Internal(format!("alert rows as JSON: {e}")))?;
    if rows.len() > MAX_ALERTS {
        tracing::warn!(rule = %rule.name, "the rule matched more than {MAX_ALERTS} rows; the first {MAX_ALERTS} are alerts");
        rows.truncate(MAX_ALERTS);
    }
    if let (None, Some(first)) = (rule.when.as_deref(), rows.first()) {
        if let Some(missing) = rule.key.iter().find(|k| !first.contains_key(*k)) {
            return Err(Error::Usage(format!(
                "key {missing:?} is not a column of the rule's result (it has {})",
                first.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    let show = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    Ok(rows
        .iter()
        .map(|row| {
            let key_cols: Vec<&String> = match rule.when.as_deref() {
                Some(_) => row.keys().take(1).collect(), // the stream
                None if rule.key.is_empty() => row.keys().collect(),
                None => rule.key.iter().collect(),
            };
            let key = key_cols
                .iter()
                .map(|k| format!("{k}={}", row.get(*k).map(show).unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(", ");
            let detail = row
                .iter()
                .map(|(k, v)| format!("{k}={}", show(v)))
                .collect::<Vec<_>>()
                .join(", ");
            (clean(&key), clean(&detail))
        })
        .collect())
}

/// Evaluates every rule of `p` over the warehouse at `now`, sends what
/// starts, repeats or clears, records it, and saves the state. Errors of a
/// rule are reported in the outcome (its alerts stay as they were); only a
/// warehouse that cannot be read or written is an error.
pub async fn evaluate_and_notify(
    p: &Pipeline,
    wh: &Warehouse,
    now: DateTime<Utc>,
) -> Result<Outcome> {
    let cfg = &p.config;
    let mut out = Outcome::default();
    if cfg.alerts.is_empty() {
        return Ok(out);
    }
    let session = crate::query::session(wh).await?;
    let mut state = load(wh, &cfg.name).await?;
    let id = |rule: &str, key: &str| format!("{rule}\u{1f}{key}");
    for rule in &cfg.alerts {
        let rows = match firing_rows(rule, &cfg.name, &session, now).await {
            Ok(rows) => rows,
            Err(e) => {
                let why = format!(
                    "alert {:?} could not be evaluated: {}",
                    rule.name,
                    clean(&e.to_string())
                );
                tracing::warn!("{why}");
                out.errors.push(why);
                continue;
            }
        };
        let mut seen = std::collections::BTreeSet::new();
        for (key, detail) in rows {
            if !seen.insert(key.clone()) {
                continue; // one alert per key
            }
            let status = match state.get(&id(&rule.name, &key)) {
                None => "firing",
                Some(f)
                    if (now - f.last_sent).num_milliseconds() as f64
                        >= rule.repeat_hours * 3_600_000.0 =>
                {
                    "repeat"
                }
                Some(_) => continue,
            };
            out.notices.push(Notice {
                rule: rule.name.clone(),
                key,
                status,
                detail,
                deliveries: Vec::new(),
            });
        }
        let prefix = format!("{}\u{1f}", rule.name);
        for k in state.keys().filter(|k| k.starts_with(&prefix)) {
            let key = &k[prefix.len()..];
            if !seen.contains(key) {
                out.notices.push(Notice {
                    rule: rule.name.clone(),
                    key: key.to_string(),
                    status: "resolved",
                    detail: String::new(),
                    deliveries: Vec::new(),
                });
            }
        }
    }
    // Alerts of rules no longer in the file are forgotten.
    state.retain(|k, _| {
        cfg.alerts
            .iter()
            .any(|r| k.starts_with(&format!("{}\u{1f}", r.name)))
    });
    for n in &mut out.notices {
        let rule = cfg
            .alerts
            .iter()
            .find(|r| r.name == n.rule)
            .expect("a rule of this file");
        let subject = match n.status {
            "resolved" => format!("Resolved: {} ({})", n.rule, n.key),
            "repeat" => format!("Still firing: {} ({})", n.rule, n.key),
            _ => format!("Alert: {} ({})", n.rule, n.key),
        };
        let m = Message {
            kind: "alert".into(),
            pipeline: cfg.name.clone(),
            subject: format!("[chatlake {}] {subject}", cfg.name),
            text: if n.detail.is_empty() {
                "No longer firing.".into()
            } else {
                n.detail.clone()
            },
            alert: Some(serde_json::json!({"rule": n.rule, "key": n.key, "status": n.status})),
            at: now,
            email: None,
        };
        for c in &rule.notify {
            if let Some(channel) = cfg.channels.get(c) {
                n.deliveries.push(channels::deliver(c, channel, &m).await);
            }
        }
        // Marked sent only when a channel took it; otherwise the next
        // evaluation tries again.
        if n.deliveries.iter().any(Delivery::ok) {
            let k = id(&n.rule, &n.key);
            match n.status {
                "resolved" => {
                    state.remove(&k);
                }
                "repeat" => {
                    if let Some(f) = state.get_mut(&k) {
                        f.last_sent = now;
                    }
                }
                _ => {
                    state.insert(
                        k,
                        Firing {
                            since: now,
                            last_sent: now,
                        },
                    );
                }
            }
        }
    }
    out.firing = state.len();
    wh.put_json(&state_path(wh, &cfg.name), &state).await?;
    record(wh, p, now, &out.notices).await?;
    let deliveries: Vec<Delivery> = out
        .notices
        .iter()
        .flat_map(|n| n.deliveries.clone())
        .collect();
    channels::record(wh, &cfg.name, p.tz, &deliveries).await?;
    Ok(out)
}

/// Appends the notices to meta.alerts.
async fn record(
    wh: &Warehouse,
    p: &Pipeline,
    now: DateTime<Utc>,
    notices: &[Notice],
) -> Result<()> {
    use crate::normalize::{build_batch, Cell, Row};
    if notices.is_empty() {
        return Ok(());
    }
    let table = crate::schema::table("meta.alerts");
    let id = crate::pipeline::new_run_id(now);
    let rows = notices
        .iter()
        .map(|n| {
            let cells = vec![
                ("alerted_at", Cell::Micros(time::micros(now))),
                ("pipeline", Cell::Str(p.config.name.clone())),
                ("rule", Cell::Str(n.rule.clone())),
                ("alert_key", Cell::Str(n.key.clone())),
                ("status", Cell::Str(n.status.to_string())),
                ("detail", Cell::Str(n.detail.clone())),
                (
                    "channels",
                    Cell::List(n.deliveries.iter().map(|d| d.channel.clone()).collect()),
                ),
                (
                    "delivered",
                    Cell::Int(n.deliveries.iter().filter(|d| d.ok()).count() as i64),
                ),
            ];
            Row::named(table, cells, time::micros(now))
        })
        .collect::<Result<Vec<_>>>()?;
    let batch = build_batch(table, &id, &rows)?;
    wh.append(
        table,
        time::local_date(now, p.tz),
        &format!("{id}-alerts"),
        &batch,
    )
    .await
}

/// Logs what an evaluation did, or why it could not run.
fn log(p: &Pipeline, outcome: Result<Outcome>) {
    match outcome {
        Ok(o) => {
            for n in &o.notices {
                tracing::info!(pipeline = %p.config.name, rule = %n.rule, key = %n.key, status = n.status,
                    delivered = n.deliveries.iter().filter(|d| d.ok()).count(), "alert");
            }
        }
        Err(e) => {
            tracing::error!(pipeline = %p.config.name, error = %e, "could not evaluate the alert rules")
        }
    }
}

/// After a run (which holds the lock): evaluates the rules and logs what
/// happened; never fails.
pub async fn after_run(p: &Pipeline, wh: &Warehouse) {
    log(p, evaluate_and_notify(p, wh, Utc::now()).await);
}

/// [`evaluate_and_notify`] under the pipeline's lock (`chatlake alerts`
/// and the scheduler's timer; a run holding the lock evaluates at its own
/// end): a held lock is an [`Error::Locked`].
pub async fn evaluate_locked(p: &Pipeline, wh: &Warehouse, now: DateTime<Utc>) -> Result<Outcome> {
    let id = format!("alerts-{}", now.format("%Y%m%dT%H%M%SZ"));
    let lock = crate::state::lock::RunLock::acquire(
        wh,
        &p.config.name,
        &id,
        crate::state::lock::DEFAULT_TTL,
    )
    .await?;
    let outcome = evaluate_and_notify(p, wh, now).await;
    lock.release().await;
    outcome
}

/// The scheduler's timer between runs; never fails.
pub async fn on_timer(p: &Pipeline, wh: &Warehouse, now: DateTime<Utc>) {
    match evaluate_locked(p, wh, now).await {
        Err(e @ Error::Locked { .. }) => {
            tracing::info!(pipeline = %p.config.name, reason = %e, "alert check skipped")
        }
        outcome => log(p, outcome),
    }
}
