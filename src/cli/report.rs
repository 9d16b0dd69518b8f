//! `chatlake report` (the HTML report of a period) and `chatlake views`
//! (the tables and views as a script for another engine).

use std::process::ExitCode;

use super::*;

/// The arguments of `chatlake report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub wh: WarehouseArg,
    /// First local date (with --to).
    #[arg(long, requires = "to", conflicts_with = "days")]
    pub from: Option<NaiveDate>,
    /// Last local date, inclusive (with --from).
    #[arg(long, requires = "from", conflicts_with = "days")]
    pub to: Option<NaiveDate>,
    /// The last N complete local days (default 28, at most 3660), compared with the N before.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=crate::report::MAX_DAYS as i64))]
    pub days: Option<u32>,
    /// Output file, or - for stdout.
    #[arg(long, default_value = "report.html")]
    pub out: String,
    /// Pipeline file: its warehouse, and with --send its `[report]
    /// deliver_to` channels (default period: its `every` cadence's).
    #[arg(long)]
    pub pipeline: Option<PathBuf>,
    /// Send the headline figures and where the report is to the
    /// pipeline's `[report] deliver_to` channels now.
    #[arg(long, requires = "pipeline")]
    pub send: bool,
}

pub async fn execute(args: ReportArgs) -> Result<ExitCode> {
    let ReportArgs {
        wh,
        from,
        to,
        days,
        out,
        pipeline,
        send,
    } = args;
    let p = pipeline.as_deref().map(Pipeline::load).transpose()?;
    let wh = existing_warehouse(wh.warehouse, p.as_ref())?;
    let cadence_days = p
        .as_ref()
        .and_then(|p| p.config.report.as_ref()?.every.as_deref())
        .and_then(|e| crate::report::Cadence::parse(e).ok())
        .map(|c| c.days());
    let session = crate::query::session(&wh).await?;
    let period = match (from, to) {
        (Some(from), Some(to))
            if from <= to && (to - from).num_days() < i64::from(crate::report::MAX_DAYS) =>
        {
            crate::report::Period { from, to }
        }
        (Some(from), Some(to)) if from <= to => {
            return Err(Error::Usage(format!(
                "--from {from} --to {to}: at most {} days in one report",
                crate::report::MAX_DAYS
            )))
        }
        (Some(from), Some(to)) => {
            return Err(Error::Usage(format!("--from {from} is after --to {to}")))
        }
        _ => {
            let today = time::local_date(Utc::now(), crate::report::timezone(&session));
            crate::report::Period::last_days(today, days.or(cadence_days).unwrap_or(28))
        }
    };
    let html = crate::report::render(&wh, period).await?;
    if out == "-" {
        out!("{html}")?;
    } else {
        let path = std::path::Path::new(&out);
        let mut file = OutFile::create(&wh, path, "--out")?;
        std::io::Write::write_all(&mut file, html.as_bytes())
            .map_err(|e| Error::io(format!("writing {out}"), e))?;
        file.commit()?;
        crate::output::note(&format!(
            "report for {}..{} written to {out}",
            period.from, period.to
        ));
    }
    if let (true, Some(p)) = (send, &p) {
        let link = (out != "-")
            .then(|| std::fs::canonicalize(&out).ok())
            .flatten()
            .map(|abs| format!("file://{}", abs.display()));
        let sent = crate::notify::report::send(p, &wh, period, link.as_deref()).await?;
        if sent.is_empty() {
            return Err(Error::Usage(format!(
                "report --send: {} has no [report] deliver_to channel",
                p.file.display()
            )));
        }
        let failed = super::alerts::print_deliveries(&sent, |d| format!("sent    {}", d.subject))?;
        if failed > 0 {
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The arguments of `chatlake views`.
#[derive(Debug, clap::Args)]
pub struct ViewsArgs {
    #[command(flatten)]
    pub wh: WarehouseArg,
    /// The engine the script is for.
    #[arg(long, value_enum)]
    pub dialect: crate::dialect::Dialect,
}

/// `chatlake views`: the script for `dialect`.
pub async fn views(args: ViewsArgs) -> Result<ExitCode> {
    let ViewsArgs { wh, dialect } = args;
    let wh = existing_warehouse(wh.warehouse, None)?;
    let script = crate::query::views_script(&wh, dialect).await?;
    outln!("{}", script.trim_end())?;
    Ok(ExitCode::SUCCESS)
}
