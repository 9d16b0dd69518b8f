//! `chatlake demo`: the simulator, the demo pipeline into a local
//! warehouse, the reporting views and the HTML report.

use std::process::ExitCode;

use super::*;

/// The demo account as of `now`, and today's local date in the demo
/// pipeline's timezone: data from the day before the pipeline's
/// `start_date` up to `now`. `chatlake simulator` serves the same account,
/// so a run by hand after the demo finds the same records.
pub(super) fn demo_account(now: chrono::DateTime<Utc>) -> Result<(SimConfig, NaiveDate)> {
    // Parse without the simulator URL, only to learn the dates to simulate.
    let probe = Pipeline::parse(DEMO_PIPELINE, Path::new("pipelines/demo.toml"), &|_| None)?;
    let today = time::local_date(now, probe.tz);
    let mut config = SimConfig::demo(
        probe.config.start_date - Duration::days(1),
        today + Duration::days(1),
    );
    config.socialintents.until = Some(now);
    Ok((config, today))
}

/// `chatlake demo`: simulator on loopback + the demo pipeline + the reports.
pub(super) async fn demo(warehouse: Option<String>, interactive: bool) -> Result<ExitCode> {
    let now = Utc::now();
    let (sim_config, today) = demo_account(now)?;
    let sim = Simulator::start(sim_config).await?;
    let url = sim.url();
    let p = Pipeline::parse(DEMO_PIPELINE, Path::new("pipelines/demo.toml"), &|name| {
        (name == "CHATLAKE_SIMULATOR_URL").then(|| url.clone())
    })?;
    let wh = open_warehouse(warehouse, Some(&p))?;
    outln!(
        "chatlake demo: simulator at {}, warehouse {wh}\n",
        sim.url()
    )?;
    let opts = RunOptions {
        progress: interactive,
        ..RunOptions::default()
    };
    let report = pipeline::run_once(&p, &wh, &opts).await?;
    let code = super::run::print_report(&report)?;
    let week = today - Duration::days(6);
    let yesterday = today - Duration::days(1);
    // Every table below is about the last 7 days: reporting.chats once for them.
    let ctx = crate::query::session_for_dates(&wh, week, today).await?;
    for (title, sql) in [
        ("reporting.missed_chat_rate, last 7 days by source and channel", format!(
            "SELECT source, channel, SUM(chats) AS chats, SUM(missed_chats) AS missed_chats, \
                 round(CAST(SUM(missed_chats) AS DOUBLE) / SUM(chats), 3) AS missed_rate \
                 FROM reporting.missed_chat_rate WHERE dt >= DATE '{week}' GROUP BY source, channel ORDER BY source, channel")),
        ("reporting.response_times, yesterday", format!(
            "SELECT dt, source, agent_name, answered_chats, round(avg_first_response_seconds, 1) AS avg_first_response_seconds, \
                 round(p50_first_response_seconds, 1) AS p50_first_response_seconds, round(p90_first_response_seconds, 1) AS p90_first_response_seconds \
                 FROM reporting.response_times WHERE dt = DATE '{yesterday}' ORDER BY source, agent_name")),
        ("reporting.chats_by_company, last 7 days", format!(
            "SELECT company_name, SUM(chats) AS chats, SUM(missed_chats) AS missed_chats, \
                 round(CAST(SUM(missed_chats) AS DOUBLE) / SUM(chats), 3) AS missed_rate \
                 FROM reporting.chats_by_company WHERE dt >= DATE '{week}' GROUP BY company_name ORDER BY company_name")),
        ("reporting.failed_syncs_daily, last 7 days", format!(
            "SELECT dt, log_message, failed_messages FROM reporting.failed_syncs_daily WHERE dt >= DATE '{week}' ORDER BY dt, log_message")),
    ] {
        outln!("\n{title} (rounded for display)")?;
        outln!("{}", crate::query::render(&crate::query::run(&ctx, &sql).await?, Format::Table)?)?;
    }
    // Under `cargo run`, `chatlake` is not on the PATH yet: the hint is a
    // command that works as printed.
    let me = if std::env::var_os("CARGO_MANIFEST_DIR").is_some() {
        "cargo run --"
    } else {
        "chatlake"
    };
    outln!("\nMore: {me} query --warehouse {wh} \"SELECT * FROM reporting.chats LIMIT 10\"")?;
    if me != "chatlake" {
        outln!("(`cargo install --path .` puts `chatlake` on the PATH, as the README's examples use it)")?;
    }
    let report = p.config.report.clone().unwrap_or_default();
    let url = crate::report::deliver(&wh, &report, today).await?;
    outln!("\nReport ({} days): {url}", report.days)?;
    Ok(code)
}
