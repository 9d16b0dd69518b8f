//! `chatlake run`: one run of a pipeline (or, with `--dry-run`, its plan
//! and what its retention would delete), then a line per stream.

use std::process::ExitCode;

use super::*;

/// The arguments of `chatlake run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Pipeline file (TOML).
    #[arg(long)]
    pub pipeline: PathBuf,
    #[command(flatten)]
    pub wh: WarehouseArg,
    /// First local date (YYYY-MM-DD, pipeline timezone). Default: watermark minus lookback_days.
    #[arg(long)]
    pub from: Option<NaiveDate>,
    /// Last local date, inclusive. Default: today.
    #[arg(long)]
    pub to: Option<NaiveDate>,
    /// Only this stream, as SOURCE.STREAM (repeatable).
    #[arg(long = "stream", value_name = "SOURCE.STREAM")]
    pub streams: Vec<String>,
    /// Ignore watermarks and re-extract from start_date (also after a timezone change).
    #[arg(long)]
    pub full_refresh: bool,
    /// Let an upsert stream mark more than `max_delete_share` of its rows deleted.
    #[arg(long)]
    pub allow_mass_delete: bool,
    /// Print the plan (streams, windows, what each asks the API for)
    /// from the saved state, without a request, a lock or a write.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn execute(args: RunArgs, interactive: bool) -> Result<ExitCode> {
    let RunArgs {
        pipeline,
        wh,
        from,
        to,
        streams,
        full_refresh,
        allow_mass_delete,
        dry_run,
    } = args;
    let p = Pipeline::load(&pipeline)?;
    if dry_run {
        // A warehouse that does not exist yet is a first run: no state.
        let location = warehouse_location(wh.warehouse, Some(&p));
        let missing = !location.contains("://") && !Path::new(&location).exists();
        let wh = (!missing)
            .then(|| Warehouse::open_existing(&location))
            .transpose()?;
        let opts = RunOptions {
            from,
            to,
            streams,
            full_refresh,
            ..RunOptions::default()
        };
        print_plan(&p, &pipeline::plan(&p, wh.as_ref(), &opts).await?)?;
        // What the run's retention would delete.
        if let (Some(policy), Some(wh)) = (&p.policy, &wh) {
            let today = time::local_date(Utc::now(), p.tz);
            let report = p.config.report.as_ref().map(|r| r.path.as_str());
            let gone = crate::privacy::retention::expired(wh, policy, today, p.tz, report).await?;
            for e in &gone {
                if let Some((column, _)) = e.rows_before {
                    outln!(
                        "retention: would delete {} rows of {} with {column} before {} ({} days kept)",
                        e.rows.unwrap_or(0),
                        e.table,
                        e.dt + Duration::days(1),
                        e.days
                    )?;
                    continue;
                }
                outln!(
                    "retention: would delete {} dt={} ({} days kept){}",
                    e.table,
                    e.dt,
                    e.days,
                    e.rows.map_or(String::new(), |r| format!(", {r} rows"))
                )?;
            }
            if gone.is_empty() && !policy.retention.is_empty() {
                outln!("retention: nothing is past its retention")?;
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let wh = open_warehouse(wh.warehouse, Some(&p))?;
    let stop = stop_on_signals("stopping before the next window (what is committed stays)");
    let opts = RunOptions {
        from,
        to,
        streams,
        full_refresh,
        allow_mass_delete,
        now: None,
        progress: interactive,
        stop: Some(stop),
    };
    let report = pipeline::run_once(&p, &wh, &opts).await?;
    print_report(&report)
}

/// `run --dry-run`: one line per stream, then its windows.
fn print_plan(p: &Pipeline, plan: &[pipeline::PlannedStream]) -> Result<ExitCode> {
    outln!(
        "dry run of pipeline {}: nothing is requested or written; a run would read:",
        p.config.name
    )?;
    for s in plan {
        let watermark = s.watermark.map_or("-".into(), |d| d.to_string());
        let range = match (s.windows.first(), s.windows.last()) {
            (Some(a), Some(b)) => format!("{}..{} in {} window(s)", a.from, b.to, s.windows.len()),
            _ if s.kind == "windowed" => "no window: --from is after today".into(),
            _ => "whole".into(),
        };
        outln!(
            "{:<30} {:<9} watermark {watermark:<10}  {range}",
            s.stream,
            s.kind
        )?;
        outln!("    {}", s.asks)?;
        for w in &s.windows {
            outln!("    window {w}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints one line per stream; failures go to stderr. Exit 1 if any failed.
pub(super) fn print_report(r: &RunReport) -> Result<ExitCode> {
    outln!("run {}", r.run_id)?;
    outln!(
        "{:<30} {:<23} {:>6} {:>9} {:>9} {:>8} {:>8} {:>9} {:>6}  status",
        "stream",
        "window",
        "pages",
        "records",
        "rows",
        "rejects",
        "retries",
        "throttled",
        "req/s"
    )?;
    for s in &r.streams {
        let window = &s.scope;
        let status = if s.error.is_some() { "FAILED" } else { "ok" };
        outln!(
            "{:<30} {:<23} {:>6} {:>9} {:>9} {:>8} {:>8} {:>9} {:>6.1}  {status}",
            s.stream,
            window,
            s.pages,
            s.records,
            s.rows_written,
            s.rejects,
            s.traffic.retries,
            s.traffic.throttled,
            s.requests_per_second()
        )?;
    }
    // A stream may write several tables (chats and their messages): rows of each.
    let mut by_table = std::collections::BTreeMap::<&str, u64>::new();
    for (table, n) in r.streams.iter().flat_map(|s| &s.rows_by_table) {
        *by_table.entry(table).or_default() += n;
    }
    if !by_table.is_empty() {
        outln!("rows written, by table:")?;
        for (table, n) in by_table {
            outln!("  {table:<34} {n:>9}")?;
        }
        // Three counts of chats, each true: say what each one counts.
        outln!(
            "(records: as the API sent them, overlaps included: a missed chat is in both the chats"
        )?;
        outln!(
            " and missedchats lists, and the API's date filter also returns neighbouring days;"
        )?;
        outln!(
            " rows: written to the stream's tables, each record once with its messages, as above)"
        )?;
    }
    let suppressed: u64 = r.streams.iter().map(|s| s.suppressed).sum();
    if suppressed > 0 {
        outln!("{suppressed} records of people `chatlake forget` erased were left out (meta.runs.suppressed)")?;
    }
    let failed: Vec<_> = r.failures().collect();
    for s in &failed {
        crate::output::error(s.error.as_deref().unwrap_or(""));
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
