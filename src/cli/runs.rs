//! `chatlake runs`: recent runs from meta.runs; exits 1 when a pipeline's
//! last run failed (also a run that never finished recording).

use std::process::ExitCode;

use super::*;

/// The arguments of `chatlake runs`.
#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    /// Only this pipeline's runs.
    #[arg(long)]
    pub pipeline: Option<PathBuf>,
    #[command(flatten)]
    pub wh: WarehouseArg,
    /// How many runs to show.
    #[arg(long, default_value_t = 10)]
    pub last: usize,
    /// `text` for people; `json`: one object with `runs` (every column),
    /// `incomplete` and `failed_pipelines`, for monitors and scripts.
    #[arg(long, value_enum, default_value = "text")]
    pub format: TextOrJson,
}

/// Runs `chatlake runs`.
pub async fn execute(args: RunsArgs) -> Result<ExitCode> {
    let RunsArgs {
        pipeline,
        wh,
        last,
        format,
    } = args;
    let p = pipeline.as_deref().map(Pipeline::load).transpose()?;
    let wh = existing_warehouse(wh.warehouse, p.as_ref())?;
    runs(
        &wh,
        p.as_ref().map(|p| p.config.name.as_str()),
        last,
        format,
    )
    .await
}

/// `chatlake runs`: one line per run (all its streams), newest first.
pub(super) async fn runs(
    wh: &Warehouse,
    pipeline: Option<&str>,
    last: usize,
    format: TextOrJson,
) -> Result<ExitCode> {
    let ctx = crate::query::session(wh).await?;
    let filter = pipeline.map_or(String::new(), |p| {
        format!("WHERE pipeline = '{}'", p.replace('\'', "''"))
    });
    let sql = format!(
        "SELECT pipeline, run_id, MIN(started_at) AS started_at, \
             CAST(CAST(MAX(finished_at) AS BIGINT) - CAST(MIN(started_at) AS BIGINT) AS DOUBLE) / 1000000.0 AS seconds, \
             COUNT(*) AS streams, SUM(rows_written) AS rows_written, SUM(rejects) AS rejects, \
             SUM(requests) AS requests, SUM(throttled) AS throttled, \
             round(SUM(throttle_wait_seconds), 1) AS throttle_wait_seconds, \
             round(MAX(requests_per_second), 1) AS max_requests_per_second, \
             SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS failed_streams, \
             string_agg(error, ' | ') AS errors \
         FROM meta.runs {filter} GROUP BY pipeline, run_id ORDER BY started_at DESC LIMIT {last}"
    );
    let batches = crate::query::run(&ctx, &sql).await?;
    if format == TextOrJson::Text {
        let runs: Vec<serde_json::Value> =
            serde_json::from_str(&crate::query::render(&batches, Format::Json)?)
                .map_err(|e| Error::Usage(format!("runs as JSON: {e}")))?;
        out!("{}", text_table(&runs))?;
    }
    // The last run of each pipeline decides the exit code.
    let latest = format!(
        "WITH r AS (SELECT pipeline, run_id, MAX(started_at) AS s, \
                           SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS failed \
                    FROM meta.runs {filter} GROUP BY pipeline, run_id), \
              l AS (SELECT pipeline, MAX(s) AS s FROM r GROUP BY pipeline) \
         SELECT r.pipeline, r.failed FROM r JOIN l ON r.pipeline = l.pipeline AND r.s = l.s"
    );
    let mut failed: Vec<String> =
        crate::query::render(&crate::query::run(&ctx, &latest).await?, Format::Csv)?
            .lines()
            .skip(1)
            .filter_map(|l| {
                l.rsplit_once(',')
                    .filter(|(_, n)| *n != "0")
                    .map(|(p, _)| p.to_string())
            })
            .collect();
    // Runs that never finished writing meta.runs (killed, crashed, disk
    // full) are failed runs too; the newest such run after a pipeline's
    // last recorded run makes that pipeline's last run a failure.
    let incomplete = crate::state::runlog::unfinished(wh, pipeline).await?;
    let mut incomplete_json = Vec::new();
    if !incomplete.is_empty() {
        let recorded = crate::query::run(&ctx, &format!("SELECT pipeline, run_id, MAX(started_at) AS s, COUNT(*) AS n FROM meta.runs {filter} GROUP BY pipeline, run_id")).await?;
        let recorded = crate::query::render(&recorded, Format::Csv)?;
        let rows: Vec<Vec<&str>> = recorded
            .lines()
            .skip(1)
            .map(|l| l.split(',').collect())
            .collect();
        if format == TextOrJson::Text {
            outln!("incomplete runs (some or all meta.runs rows missing: the run was killed, crashed, or could not write them):")?;
        }
        for m in &incomplete {
            let n = rows
                .iter()
                .find(|r| r.get(1) == Some(&m.run_id.as_str()))
                .and_then(|r| r.get(3)?.parse().ok())
                .unwrap_or(0);
            let started = m.started_at.format("%Y-%m-%dT%H:%M:%SZ").to_string();
            if format == TextOrJson::Text {
                outln!(
                    "  {} {} started {started}: {n} of {} stream(s) recorded -- failed",
                    m.pipeline,
                    m.run_id,
                    m.streams.len()
                )?;
            }
            incomplete_json.push(serde_json::json!({
                "pipeline": m.pipeline,
                "run_id": m.run_id,
                "started_at": started,
                "streams": m.streams,
                "streams_recorded": n,
            }));
            let newest_recorded = rows
                .iter()
                .filter(|r| {
                    r.first() == Some(&m.pipeline.as_str()) && r.get(1) != Some(&m.run_id.as_str())
                })
                .filter_map(|r| {
                    chrono::NaiveDateTime::parse_from_str(
                        r.get(2)?.trim_end_matches('Z'),
                        "%Y-%m-%dT%H:%M:%S%.f",
                    )
                    .ok()
                })
                .max();
            if newest_recorded.is_none_or(|s| s < m.started_at.naive_utc())
                && !failed.contains(&m.pipeline)
            {
                failed.push(m.pipeline.clone());
            }
        }
    }
    // Messages that no channel took (alerts, tests): the runs went on.
    let deliveries = crate::query::run(
        &ctx,
        &format!(
            "SELECT CAST(delivered_at AS VARCHAR) AS delivered_at, pipeline, channel, kind, subject, attempts, error \
             FROM meta.deliveries WHERE status = 'failed' {} ORDER BY delivered_at DESC LIMIT {last}",
            filter.replacen("WHERE", "AND", 1)
        ),
    )
    .await?;
    let failed_deliveries: Vec<serde_json::Value> =
        serde_json::from_str(&crate::query::render(&deliveries, Format::Json)?)
            .map_err(|e| Error::Usage(format!("deliveries as JSON: {e}")))?;
    if format == TextOrJson::Text && !failed_deliveries.is_empty() {
        outln!("failed deliveries (newest first; all in meta.deliveries):")?;
        for d in &failed_deliveries {
            let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
            outln!(
                "  {} {} {} to {}: {} ({} attempts)",
                s("delivered_at").chars().take(16).collect::<String>(),
                escape(&s("pipeline")),
                s("kind"),
                escape(&s("channel")),
                escape(&s("error")),
                d["attempts"]
            )?;
        }
    }
    if format == TextOrJson::Json {
        let runs: serde_json::Value =
            serde_json::from_str(&crate::query::render(&batches, Format::Json)?)
                .map_err(|e| Error::Usage(format!("runs as JSON: {e}")))?;
        let doc = serde_json::json!({
            "runs": runs,
            "incomplete": incomplete_json,
            "failed_pipelines": failed,
            "failed_deliveries": failed_deliveries,
        });
        outln!("{doc:#}")?;
    }
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        crate::output::error(&format!("the last run failed for: {}", failed.join(", ")));
        Ok(ExitCode::FAILURE)
    }
}

/// The runs for people, in 100 columns: one line per run, then its errors
/// on their own lines (control characters escaped, so a hostile error
/// cannot forge a line). `--format json` has every column in full.
fn text_table(runs: &[serde_json::Value]) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "{:<16}  {:<10} {:<8} {:>5} {:>7} {:>9} {:>7} {:>7} {:>5} {:>6}  {}\n",
        "started (UTC)",
        "pipeline",
        "run",
        "secs",
        "streams",
        "rows",
        "rejects",
        "reqs",
        "429s",
        "wait s",
        "status"
    );
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    let clip = |s: String, n: usize| {
        if s.chars().count() > n {
            format!("{}…", s.chars().take(n - 1).collect::<String>())
        } else {
            s
        }
    };
    for r in runs {
        let started = text(&r["started_at"]).replace('T', " ");
        let secs = r["seconds"]
            .as_f64()
            .map_or(String::new(), |s| format!("{s:.1}"));
        let failed = r["failed_streams"].as_u64().unwrap_or(0);
        let status = if failed == 0 {
            "ok".to_string()
        } else {
            format!("{failed} failed")
        };
        let _ = writeln!(
            out,
            "{:<16}  {:<10} {:<8} {:>5} {:>7} {:>9} {:>7} {:>7} {:>5} {:>6}  {status}",
            started.chars().take(16).collect::<String>(), // to the minute
            clip(escape(&text(&r["pipeline"])), 10),
            text(&r["run_id"]).chars().take(8).collect::<String>(), // a prefix, as git shows commits
            secs,
            text(&r["streams"]),
            text(&r["rows_written"]),
            text(&r["rejects"]),
            text(&r["requests"]),
            text(&r["throttled"]),
            text(&r["throttle_wait_seconds"]),
        );
        for e in text(&r["errors"]).split(" | ").filter(|e| !e.is_empty()) {
            let _ = writeln!(out, "  error: {}", escape(e));
        }
    }
    if runs.is_empty() {
        out.push_str("(no runs recorded)\n");
    }
    out
}

/// Control characters as escapes (`\n`, `\u{1b}`): one error, one line.
fn escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_text_table_fits_100_columns_and_an_error_stays_on_its_line() {
        let runs = vec![serde_json::json!({
            "pipeline": "a-very-long-pipeline-name", "run_id": "0193a3b2-7c1d-7e44-9f00-123456789abc",
            "started_at": "2026-12-03T14:05:09.123456Z", "seconds": 48.25, "streams": 13,
            "rows_written": 123456789, "rejects": 12, "requests": 99999, "throttled": 120,
            "throttle_wait_seconds": 3.5, "max_requests_per_second": 80.1, "failed_streams": 2,
            "errors": "socialintents.chats: 500\n2025-10-27T00 forged | crm.contacts: \u{1b}[31mred"
        })];
        let out = super::text_table(&runs);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert!(lines.iter().all(|l| l.chars().count() <= 100), "{out}");
        assert!(
            lines[1].starts_with("2026-12-03 14:05  a-very-lo… 0193a3b2  48.2      13 123456789"),
            "{out}"
        );
        assert!(lines[1].ends_with("2 failed"), "{out}");
        assert_eq!(
            lines[2],
            "  error: socialintents.chats: 500\\n2025-10-27T00 forged"
        );
        assert_eq!(lines[3], "  error: crm.contacts: \\u{1b}[31mred");
    }
}
