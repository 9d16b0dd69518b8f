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
        outln!("{}", crate::query::render(&batches, Format::Table)?)?;
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
    let incomplete = crate::runlog::unfinished(wh, pipeline).await?;
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
    if format == TextOrJson::Json {
        let runs: serde_json::Value =
            serde_json::from_str(&crate::query::render(&batches, Format::Json)?)
                .map_err(|e| Error::Usage(format!("runs as JSON: {e}")))?;
        let doc = serde_json::json!({
            "runs": runs,
            "incomplete": incomplete_json,
            "failed_pipelines": failed,
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
