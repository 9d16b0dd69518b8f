//! `chatlake report`: one self-contained HTML file for the people who read
//! reports: period and data health, KPI tiles against the previous period,
//! daily chats with the missed rate, the first-response distribution, a
//! weekday x hour heatmap, agents, channels, companies and failed syncs.
//!
//! Every figure comes from the reporting views (the SQL an analyst runs),
//! queried here and handed to one template (`report.html.j2`, minijinja,
//! auto-escaped). Charts are inline SVG drawn by the template from
//! coordinates computed in [`charts`]: bars, a line and a grid need no chart
//! library, and the file then has no script, font or image to fetch.

mod charts;
pub mod email;
mod png;

use chrono::{Duration, NaiveDate, Utc};
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::query::{self, Session};

/// The template, compiled in.
const TEMPLATE: &str = include_str!("report.html.j2");

/// The KPI names, in tile order (also the `data-kpi` attribute values).
pub const KPIS: &[&str] = &[
    "chats",
    "missed_chats",
    "missed_rate",
    "median_first_response_seconds",
    "p90_first_response_seconds",
    "sla_attainment",
    "sla_attainment_business",
    "failed_syncs",
];

/// What to report on.
#[derive(Debug, Clone, Copy)]
pub struct Period {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl Period {
    /// Days in the period.
    pub fn days(&self) -> i64 {
        (self.to - self.from).num_days() + 1
    }
    /// The period of the same length just before.
    pub fn previous(&self) -> Period {
        Period {
            from: self.from - Duration::days(self.days()),
            to: self.from - Duration::days(1),
        }
    }
    /// The last `days` complete local days before `today`.
    pub fn last_days(today: NaiveDate, days: u32) -> Period {
        Period {
            from: today - Duration::days(days as i64),
            to: today - Duration::days(1),
        }
    }
    fn sql(&self) -> String {
        format!("dt BETWEEN DATE '{}' AND DATE '{}'", self.from, self.to)
    }
}

/// Rows of `sql` as JSON objects, every column present (nulls as null).
async fn rows(session: &Session, sql: &str) -> Result<Vec<Map<String, Value>>> {
    let batches = query::run(session, sql).await?;
    let mut w = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow::json::writer::JsonArray>(Vec::new());
    for b in &batches {
        w.write(&query::nested_as_json(b)?)?;
    }
    w.finish()?;
    let bytes = w.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&bytes).map_err(|e| Error::Internal(format!("report query {sql}: {e}")))
}

fn num(row: &Map<String, Value>, k: &str) -> Option<f64> {
    match row.get(k)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Exact percentile_cont written out, as in sql/reporting.response_times.sql
/// (DataFusion's own rounds its interpolation weight): over
/// `first_response_seconds` of reporting.chats, per `partition` (columns, or
/// "" for all rows), the rank `rn` and the 1-based positions of the median
/// and the p90. [`pick`] then takes the value at a position.
fn ranked(partition: &str) -> String {
    let over = if partition.is_empty() {
        String::new()
    } else {
        format!("PARTITION BY {partition}")
    };
    format!(
        "ROW_NUMBER() OVER ({over} ORDER BY first_response_seconds NULLS LAST) AS rn, \
         1 + 0.5 * (COUNT(first_response_seconds) OVER ({over}) - 1) AS p50_pos, \
         1 + 0.9 * (COUNT(first_response_seconds) OVER ({over}) - 1) AS p90_pos"
    )
}

/// The value `x` at position `pos` of [`ranked`], interpolated between its
/// neighbours (an aggregate: null when there is no value).
fn pick(pos: &str) -> String {
    format!(
        "SUM(CASE WHEN rn = FLOOR({pos}) THEN x * (1 - ({pos} - FLOOR({pos}))) \
                  WHEN rn = FLOOR({pos}) + 1 THEN x * ({pos} - FLOOR({pos})) END)"
    )
}

/// The KPI values of one period, over all sources together.
pub async fn kpis(session: &Session, p: Period) -> Result<Map<String, Value>> {
    let w = p.sql();
    let (ranked, p50, p90) = (ranked(""), pick("p50_pos"), pick("p90_pos"));
    let sql = format!(
        "SELECT c.chats, c.missed_chats, \
                CASE WHEN c.chats = 0 THEN NULL ELSE CAST(c.missed_chats AS DOUBLE) / c.chats END AS missed_rate, \
                r.median_first_response_seconds, r.p90_first_response_seconds, \
                CASE WHEN s.answered = 0 THEN NULL ELSE CAST(s.within AS DOUBLE) / s.answered END AS sla_attainment, \
                CASE WHEN s.answered = 0 THEN NULL ELSE CAST(s.within_business AS DOUBLE) / s.answered END AS sla_attainment_business, \
                f.failed_syncs \
         FROM (SELECT COUNT(*) AS chats, COALESCE(SUM(CASE WHEN is_missed THEN 1 ELSE 0 END), 0) AS missed_chats FROM reporting.chats WHERE {w}) c \
         CROSS JOIN (SELECT {p50} AS median_first_response_seconds, {p90} AS p90_first_response_seconds \
                     FROM (SELECT first_response_seconds AS x, {ranked} FROM reporting.chats WHERE {w}) t) r \
         CROSS JOIN (SELECT COALESCE(SUM(answered_chats), 0) AS answered, COALESCE(SUM(within_target), 0) AS within, \
                            COALESCE(SUM(within_target_business), 0) AS within_business FROM reporting.first_response_sla WHERE {w}) s \
         CROSS JOIN (SELECT COUNT(*) AS failed_syncs FROM social25.failed_syncs WHERE {w}) f"
    );
    Ok(rows(session, &sql)
        .await?
        .into_iter()
        .next()
        .unwrap_or_default())
}

/// The headline of a period against the one before, from the KPI values
/// of both: one line for a subject ("Chats 1,374 (+2%) · missed 18.4%
/// (−1.9 pts) · within SLA 82.5% (+0.4 pts)") and one line per figure for
/// a message's body.
pub fn headline_of(now: &Map<String, Value>, before: &Map<String, Value>) -> (String, String) {
    let change = |k: &str| {
        charts::change_text(k, num(now, k), num(before, k))
            .replace(" vs previous", "")
            .replace("previous period: 0", "new")
            .replace("no previous figure", "–")
    };
    let fig = |k: &str| charts::kpi_text(k, num(now, k));
    let subject = format!(
        "Chats {} ({}) · missed {} ({}) · within SLA {} ({})",
        fig("chats"),
        change("chats"),
        fig("missed_rate"),
        change("missed_rate"),
        fig("sla_attainment"),
        change("sla_attainment")
    );
    let body = KPIS
        .iter()
        .map(|k| {
            format!(
                "{}: {} ({} vs previous)",
                charts::kpi_label(k),
                fig(k),
                change(k)
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    (subject, body)
}

/// Renders the report of `period` (against the period before it).
pub async fn render(wh: &crate::sink::Warehouse, period: Period) -> Result<String> {
    fill("report.html", TEMPLATE, &context(wh, period).await?)
}

/// Everything the report shows for `period`, queried from the views: the
/// data both templates (the report and its email) are filled from.
pub async fn context(wh: &crate::sink::Warehouse, period: Period) -> Result<Value> {
    let prev = period.previous();
    // reporting.chats once for both periods; every view reads it from memory.
    let session = &query::session_for_dates(wh, prev.from, period.to).await?;
    let w = period.sql();
    let settings = rows(session, "SELECT timezone, first_response_target_seconds, business_hours FROM meta.reporting_settings LIMIT 1")
        .await?
        .into_iter()
        .next()
        .unwrap_or_default();
    let (now, before) = (kpis(session, period).await?, kpis(session, prev).await?);
    let target = num(&settings, "first_response_target_seconds").unwrap_or(120.0);
    let business_hours = settings
        .get("business_hours")
        .and_then(Value::as_str)
        .unwrap_or("Mon-Fri 09:00-17:00")
        .to_string();
    let tiles: Vec<Value> = KPIS
        .iter()
        .map(|k| {
            let (v, p) = (num(&now, k), num(&before, k));
            json!({"name": k, "label": charts::kpi_label(k), "value": v, "previous": p,
                   "shown": charts::kpi_text(k, v), "change": charts::change_text(k, v, p),
                   "help": charts::kpi_help(k, target, &business_hours)})
        })
        .collect();
    let sources = rows(
        session,
        &format!("SELECT DISTINCT source FROM reporting.chats WHERE {w} ORDER BY source"),
    )
    .await?;
    let daily = rows(
        session,
        &format!(
            "SELECT CAST(dt AS VARCHAR) AS dt, COUNT(*) AS chats, SUM(CASE WHEN is_missed THEN 1 ELSE 0 END) AS missed \
             FROM reporting.chats WHERE {w} GROUP BY dt ORDER BY dt"
        ),
    )
    .await?;
    let buckets = rows(
        session,
        &format!("SELECT source, bucket, bucket_order, SUM(chats) AS chats FROM reporting.first_response_buckets WHERE {w} GROUP BY source, bucket, bucket_order ORDER BY source, bucket_order"),
    )
    .await?;
    let heat = rows(
        session,
        &format!("SELECT weekday, local_hour, SUM(chats) AS chats, SUM(missed_chats) AS missed FROM reporting.chats_by_hour WHERE {w} GROUP BY weekday, local_hour"),
    )
    .await?;
    let agents = rows(
        session,
        &format!(
            "SELECT source, COALESCE(agent_name, '(unassigned)') AS agent, COUNT(*) AS chats, \
                    SUM(CASE WHEN x IS NOT NULL THEN 1 ELSE 0 END) AS answered, \
                    {p50} AS median, {p90} AS p90, AVG(duration_seconds) AS duration \
             FROM (SELECT source, agent_name, duration_seconds, first_response_seconds AS x, {ranked} \
                   FROM reporting.chats WHERE {w}) t \
             GROUP BY source, agent_name ORDER BY chats DESC, agent LIMIT 50",
            ranked = ranked("source, agent_name"),
            p50 = pick("p50_pos"),
            p90 = pick("p90_pos"),
        ),
    )
    .await?;
    let channels = rows(
        session,
        &format!(
            "SELECT source, COALESCE(channel, '(none)') AS channel, SUM(answered_chats) AS answered, SUM(missed_chats) AS missed, \
                    CASE WHEN SUM(answered_chats) = 0 THEN NULL ELSE CAST(SUM(within_target) AS DOUBLE) / SUM(answered_chats) END AS attainment \
             FROM reporting.first_response_sla WHERE {w} GROUP BY source, channel ORDER BY answered DESC, channel"
        ),
    )
    .await?;
    let companies = rows(
        session,
        &format!(
            "SELECT company_name, SUM(chats) AS chats, SUM(missed_chats) AS missed FROM reporting.chats_by_company \
             WHERE {w} GROUP BY company_name ORDER BY chats DESC, company_name LIMIT 20"
        ),
    )
    .await?;
    let failed_days = rows(
        session,
        &format!("SELECT CAST(dt AS VARCHAR) AS dt, SUM(failed_messages) AS n FROM reporting.failed_syncs_daily WHERE {w} GROUP BY dt ORDER BY dt"),
    )
    .await?;
    let failed_reasons = rows(
        session,
        &format!("SELECT log_message, SUM(failed_messages) AS n FROM reporting.failed_syncs_daily WHERE {w} GROUP BY log_message ORDER BY n DESC, log_message LIMIT 5"),
    )
    .await?;
    let health = rows(
        session,
        "WITH last AS (SELECT pipeline, stream, MAX(started_at) AS s FROM meta.runs GROUP BY pipeline, stream), \
              ok AS (SELECT pipeline, stream, MAX(finished_at) AS f FROM meta.runs WHERE status = 'success' GROUP BY pipeline, stream) \
         SELECT r.pipeline, r.stream, r.status, r.error, CAST(ok.f AS VARCHAR) AS last_success, \
                CAST(CAST(ok.f AS BIGINT) / 1000000 AS BIGINT) AS last_success_epoch \
         FROM meta.runs r JOIN last ON r.pipeline = last.pipeline AND r.stream = last.stream AND r.started_at = last.s \
         LEFT JOIN ok ON ok.pipeline = r.pipeline AND ok.stream = r.stream ORDER BY r.pipeline, r.stream",
    )
    .await?;
    let stale_before = (Utc::now() - Duration::days(2)).timestamp() as f64;
    let health: Vec<Value> = health
        .into_iter()
        .map(|mut r| {
            let failed = r.get("status").and_then(Value::as_str) == Some("failed");
            let stale = num(&r, "last_success_epoch").is_none_or(|t| t < stale_before);
            let warning = if failed {
                "last run failed"
            } else if stale {
                "no success for more than two days"
            } else {
                ""
            };
            r.insert("warning".into(), json!(warning));
            // To the minute, as people read it (the full instant is in meta.runs).
            if let Some(Value::String(t)) = r.get_mut("last_success") {
                *t = format!(
                    "{} UTC",
                    t.chars().take(16).collect::<String>().replace('T', " ")
                );
            }
            Value::Object(r)
        })
        .collect();
    let mismatches = rows(
        session,
        "SELECT stream, CAST(window_start AS VARCHAR) AS window_start, CAST(window_end AS VARCHAR) AS window_end, source_count, records, run_id \
         FROM meta.runs WHERE source_count IS NOT NULL AND source_count <> records ORDER BY started_at DESC LIMIT 20",
    )
    .await?;
    let ctx = json!({
        "from": period.from.to_string(), "to": period.to.to_string(), "days": period.days(),
        "prev_from": prev.from.to_string(), "prev_to": prev.to.to_string(),
        "timezone": settings.get("timezone").cloned().unwrap_or(json!("UTC")),
        "target": settings.get("first_response_target_seconds").cloned().unwrap_or(json!(120)),
        "business_hours": settings.get("business_hours").cloned().unwrap_or(json!("Mon-Fri 09:00-17:00")),
        "generated": Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        "sources": sources.iter().filter_map(|r| r.get("source").cloned()).collect::<Vec<_>>(),
        "health": health, "mismatches": mismatches, "tiles": tiles,
        "daily": charts::daily(&daily, period),
        "buckets": charts::buckets(&buckets),
        "heatmap": charts::heatmap(&heat),
        "agents": agents, "channels": channels, "companies": companies,
        "failed": charts::failed(&failed_days, period),
        "colours": {"answered": charts::ANSWERED, "missed": charts::MISSED}, "failed_reasons": failed_reasons,
    });
    let mut ctx = ctx;
    strip_controls(&mut ctx);
    Ok(ctx)
}

/// Fills the template `source` (named `name`) from `ctx`. Every value is
/// escaped as HTML, whatever the template's name (minijinja would otherwise
/// decide by its suffix): names and reasons come from the APIs.
pub(crate) fn fill(name: &str, source: &str, ctx: &Value) -> Result<String> {
    let mut env = minijinja::Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    env.add_filter("pct", |v: Option<f64>| {
        v.map_or("–".to_string(), |v| format!("{:.1}%", v * 100.0))
    });
    env.add_filter("secs", |v: Option<f64>| {
        v.map_or("–".to_string(), charts::duration_text)
    });
    env.add_filter("int", |v: Option<f64>| {
        v.map_or("–".to_string(), |v| charts::int_text(v.round() as i64))
    });
    env.add_template(name, source)
        .map_err(|e| Error::Internal(format!("template {name}: {e}")))?;
    let tmpl = env
        .get_template(name)
        .map_err(|e| Error::Internal(format!("template {name}: {e}")))?;
    tmpl.render(minijinja::Value::from_serialize(ctx))
        .map_err(|e| Error::Internal(format!("rendering {name}: {e:#}")))
}

/// Replaces, in every text of the report's data, the characters HTML may
/// not hold (C0 controls but tab, newline and carriage return; DEL; C1
/// controls) with U+FFFD: an API's agent or company name could carry them
/// (NUL, 0x01, 0x7f made the page an HTML5 parse error).
fn strip_controls(v: &mut Value) {
    match v {
        Value::String(s) if s.chars().any(not_html) => {
            *s = s
                .chars()
                .map(|c| if not_html(c) { '\u{fffd}' } else { c })
                .collect();
        }
        Value::Array(a) => a.iter_mut().for_each(strip_controls),
        Value::Object(o) => o.values_mut().for_each(strip_controls),
        _ => {}
    }
}

fn not_html(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

/// The timezone of the reporting calendar (meta.reporting_settings, as the
/// session read it; UTC before any run wrote it).
pub fn timezone(session: &Session) -> chrono_tz::Tz {
    session
        .setting("timezone")
        .and_then(|t| t.parse().ok())
        .unwrap_or(chrono_tz::UTC)
}

/// `[report]` in the pipeline file: where every run leaves its report.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportConfig {
    /// Path of the latest report, relative to the warehouse; a dated copy
    /// `YYYY-MM-DD.html` goes beside it.
    pub path: String,
    /// Days reported (the last complete local days).
    pub days: u32,
    /// Channels the report's headline figures and link are sent to, on
    /// the `every` cadence (see `notify::report`).
    pub deliver_to: Vec<String>,
    /// `daily`, `weekly:<Mon..Sun>` or `monthly:<1..28>`: after the first
    /// run of such a day, the period just ended is sent (yesterday, the
    /// last 7 days, the last 30 days), against the one before.
    pub every: Option<String>,
    /// On S3, how many days the report's link in a message works (a
    /// presigned URL; S3 allows at most 7).
    pub link_days: u32,
}

/// A delivery cadence: how many days it reports and whether `day` is one
/// of its days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cadence {
    Daily,
    Weekly(chrono::Weekday),
    Monthly(u32),
}

impl Cadence {
    /// Parses `daily`, `weekly:Mon`, `monthly:1`.
    pub fn parse(s: &str) -> std::result::Result<Cadence, String> {
        let bad =
            || format!("[report] every = {s:?}: use daily, weekly:<Mon..Sun> or monthly:<1..28>");
        match s.split_once(':') {
            None if s == "daily" => Ok(Cadence::Daily),
            Some(("weekly", d)) => d
                .parse::<chrono::Weekday>()
                .map(Cadence::Weekly)
                .map_err(|_| bad()),
            Some(("monthly", n)) => match n.parse::<u32>() {
                Ok(n) if (1..=28).contains(&n) => Ok(Cadence::Monthly(n)),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }

    /// Days the report of this cadence covers.
    pub fn days(self) -> u32 {
        match self {
            Cadence::Daily => 1,
            Cadence::Weekly(_) => 7,
            Cadence::Monthly(_) => 30,
        }
    }

    /// Whether the report is due on local date `day`.
    pub fn due(self, day: NaiveDate) -> bool {
        use chrono::Datelike;
        match self {
            Cadence::Daily => true,
            Cadence::Weekly(w) => day.weekday() == w,
            Cadence::Monthly(n) => day.day() == n,
        }
    }
}

/// Most days one report covers (ten years): beyond it the dates before
/// the period would leave the calendar.
pub const MAX_DAYS: u32 = 3660;

/// Top-level directories of the warehouse that hold tables or chatlake's
/// own state: a report path may not start with one of them (it would
/// overwrite a partition or a watermark).
fn reserved_dirs() -> Vec<&'static str> {
    let mut dirs: Vec<&'static str> = crate::schema::tables().map(|t| t.schema_name()).collect();
    dirs.extend(["_state", "_locks", "_runs", "_schedule"]);
    dirs
}

impl ReportConfig {
    /// Checks `days` and `path` (pure, no I/O): 1 to [`MAX_DAYS`] days; a
    /// path relative to the warehouse, with plain `/`-separated names (no
    /// `.`, `..`, backslash or control character), outside the tables.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if let Some(every) = &self.every {
            Cadence::parse(every)?;
            if self.deliver_to.is_empty() {
                return Err("[report] every: needs deliver_to = [\"channel\", ...]".into());
            }
        }
        if !(1..=7).contains(&self.link_days) {
            return Err(format!(
                "[report] link_days = {}: between 1 and 7 (S3 signs links for at most 7 days)",
                self.link_days
            ));
        }
        if !(1..=MAX_DAYS).contains(&self.days) {
            return Err(format!(
                "[report] days = {}: between 1 and {MAX_DAYS}",
                self.days
            ));
        }
        let p = &self.path;
        let why = if p.is_empty() {
            Some("is empty")
        } else if p.starts_with('/') {
            Some("is absolute; it is relative to the warehouse")
        } else if p.contains('\\') {
            Some("holds a backslash; separate directories with /")
        } else if p.chars().any(char::is_control) {
            Some("holds a control character")
        } else if p.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
            Some("holds an empty, `.` or `..` segment")
        } else if p.ends_with('/') {
            Some("names a directory, not a file")
        } else if reserved_dirs().contains(&p.split('/').next().unwrap_or("")) {
            Some("is inside a table or chatlake's state; use a directory of its own such as _reports/")
        } else {
            None
        };
        match why {
            Some(why) => Err(format!("[report] path {p:?} {why}")),
            None => Ok(()),
        }
    }
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            path: "_reports/latest.html".into(),
            days: 28,
            deliver_to: Vec::new(),
            every: None,
            link_days: 7,
        }
    }
}

/// Where the latest report is in the warehouse (`[report] path`).
pub fn latest_path(wh: &crate::sink::Warehouse, cfg: &ReportConfig) -> object_store::path::Path {
    cfg.path
        .split('/')
        .filter(|s| !s.is_empty())
        .fold(wh.root().clone(), |p, s| p.join(s))
}

/// Writes the report of the last `cfg.days` complete days before `today`
/// into the warehouse (through object_store, so S3 works the same): the
/// latest copy and a dated one. Returns where the latest copy is, as a URL.
pub async fn deliver(
    wh: &crate::sink::Warehouse,
    cfg: &ReportConfig,
    today: NaiveDate,
) -> Result<String> {
    use object_store::ObjectStoreExt;
    let html = render(wh, Period::last_days(today, cfg.days)).await?;
    // `path` and, beside it, `YYYY-MM-DD.html` (an empty path is refused,
    // not taken as the warehouse root).
    let mut segments: Vec<&str> = cfg.path.split('/').filter(|s| !s.is_empty()).collect();
    let under_root = |segs: &[&str]| segs.iter().fold(wh.root().clone(), |p, s| p.join(*s));
    let latest = latest_path(wh, cfg);
    let dated_name = format!("{today}.html");
    match segments.last_mut() {
        Some(last) => *last = &dated_name,
        None => return Err(Error::Usage("[report] path is empty".into())),
    }
    let dated = under_root(&segments);
    for path in [&latest, &dated] {
        wh.store()
            .put(path, html.clone().into_bytes().into())
            .await
            .map_err(|e| Error::store(path, e))?;
    }
    Ok(if wh.is_local() {
        format!("file:///{latest}")
    } else {
        wh.url_of(&latest).trim_end_matches('/').to_string()
    })
}

#[cfg(test)]
mod cadence_tests {
    use super::Cadence;
    use chrono::NaiveDate;

    /// Escaping does not hang on the template's name.
    #[test]
    fn values_are_escaped_as_html_whatever_the_template_is_called() {
        let ctx = serde_json::json!({"name": "<script>alert('x')</script> \"Co\" & O'Brien"});
        for name in ["report.html.j2", "plain.txt", "noname"] {
            let out = super::fill(name, "<td title=\"{{ name }}\">{{ name }}</td>", &ctx).unwrap();
            assert!(
                !out.contains("<script") && !out.contains("'x'"),
                "{name}: {out}"
            );
            assert!(
                out.contains("&lt;script&gt;alert(&#x27;x&#x27;)")
                    && out.contains("&quot;Co&quot; &amp; O&#x27;Brien"),
                "{name}: {out}"
            );
        }
    }

    /// 2026-12-07 is a Monday (checked against a calendar).
    #[test]
    fn cadences_parse_and_fall_on_their_days() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        assert_eq!(Cadence::parse("daily"), Ok(Cadence::Daily));
        let monday = Cadence::parse("weekly:Mon").unwrap();
        assert!(monday.due(d("2026-12-07")) && !monday.due(d("2026-12-08")));
        let first = Cadence::parse("monthly:1").unwrap();
        assert!(first.due(d("2027-01-01")) && !first.due(d("2026-12-31")));
        assert_eq!(
            (Cadence::Daily.days(), monday.days(), first.days()),
            (1, 7, 30)
        );
        for bad in [
            "weekly",
            "weekly:Moon",
            "monthly:29",
            "monthly:0",
            "hourly",
            "",
        ] {
            assert!(Cadence::parse(bad).is_err(), "{bad}");
        }
    }
}
