//! The commands: demo, run, query, state, simulator. Each parses its
//! arguments, resolves the warehouse (`--warehouse` > `CHATLAKE_WAREHOUSE` >
//! the pipeline's `warehouse`) and calls into the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{Duration, NaiveDate, Utc};
use clap::{Parser, Subcommand};

use crate::config::Pipeline;
use crate::error::{Error, Result};
use crate::normalize::time;
use crate::pipeline::{self, RunOptions, RunReport};
use crate::query::{self, Format};
use crate::simulator::{SimConfig, Simulator};
use crate::sink::Warehouse;
use crate::state::StateStore;

/// The demo pipeline, compiled in so `chatlake demo` works from any directory.
const DEMO_PIPELINE: &str = include_str!("../pipelines/demo.toml");

/// chatlake: customer-chat APIs -> Parquet warehouse -> SQL reports.
#[derive(Debug, Parser)]
#[command(name = "chatlake", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Warehouse selection shared by the commands.
#[derive(Debug, clap::Args)]
pub struct WarehouseArg {
    /// Warehouse: a path, file:///abs/path or s3://bucket/prefix
    /// (default: $CHATLAKE_WAREHOUSE, then the pipeline's `warehouse`).
    #[arg(long, env = "CHATLAKE_WAREHOUSE")]
    pub warehouse: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the built-in simulator, run pipelines/demo.toml against it and print the reports.
    Demo {
        #[command(flatten)]
        wh: WarehouseArg,
    },
    /// Run a pipeline once: extract, write partitions, advance watermarks.
    Run {
        /// Pipeline file (TOML).
        #[arg(long)]
        pipeline: PathBuf,
        #[command(flatten)]
        wh: WarehouseArg,
        /// First local date (YYYY-MM-DD, pipeline timezone). Default: watermark minus lookback_days.
        #[arg(long)]
        from: Option<NaiveDate>,
        /// Last local date, inclusive. Default: today.
        #[arg(long)]
        to: Option<NaiveDate>,
        /// Only this stream, as SOURCE.STREAM (repeatable).
        #[arg(long = "stream", value_name = "SOURCE.STREAM")]
        streams: Vec<String>,
        /// Ignore watermarks and re-extract from start_date.
        #[arg(long)]
        full_refresh: bool,
    },
    /// Run read-only SQL over the warehouse tables and the reporting views.
    Query {
        #[command(flatten)]
        wh: WarehouseArg,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// The SQL statement.
        sql: String,
    },
    /// Show or reset watermarks.
    State {
        #[command(subcommand)]
        action: StateAction,
    },
    /// Serve the simulated APIs on 127.0.0.1 until interrupted.
    Simulator {
        /// Port to listen on.
        #[arg(long, default_value_t = 8089)]
        port: u16,
        /// First day with data (default: 400 days ago).
        #[arg(long)]
        from: Option<NaiveDate>,
        /// Last day with data (default: up to now).
        #[arg(long)]
        to: Option<NaiveDate>,
        /// Regular Social Intents chats per day.
        #[arg(long, default_value_t = 40)]
        chats_per_day: u32,
        /// Social25 conversations per day.
        #[arg(long, default_value_t = 8)]
        conversations_per_day: u32,
        /// CRM helpdesk conversations per day.
        #[arg(long, default_value_t = 6)]
        crm_conversations_per_day: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum StateAction {
    /// Print each stream's watermark.
    Show {
        #[arg(long)]
        pipeline: PathBuf,
        #[command(flatten)]
        wh: WarehouseArg,
    },
    /// Forget watermarks (all streams, or one): the next run starts at start_date.
    Reset {
        #[arg(long)]
        pipeline: PathBuf,
        #[command(flatten)]
        wh: WarehouseArg,
        /// Only this stream (SOURCE.STREAM).
        #[arg(long)]
        stream: Option<String>,
    },
}

/// Runs a parsed command; `interactive` turns on the progress bar.
pub async fn execute(cli: Cli, interactive: bool) -> Result<ExitCode> {
    match cli.command {
        Command::Demo { wh } => demo(wh.warehouse, interactive).await,
        Command::Run { pipeline, wh, from, to, streams, full_refresh } => {
            let p = Pipeline::load(&pipeline)?;
            let wh = open_warehouse(wh.warehouse, Some(&p))?;
            let stop = stop_on_signals();
            let opts = RunOptions { from, to, streams, full_refresh, now: None, progress: interactive, stop: Some(stop) };
            let report = pipeline::run_once(&p, &wh, &opts).await?;
            Ok(print_report(&report))
        }
        Command::Query { wh, format, sql } => {
            let wh = existing_warehouse(wh.warehouse, None)?;
            let ctx = query::session(&wh).await?;
            let batches = query::run(&ctx, &sql).await?;
            print!("{}", query::render(&batches, format)?);
            if format == Format::Table {
                println!();
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::State { action: StateAction::Show { pipeline, wh } } => {
            let p = Pipeline::load(&pipeline)?;
            let wh = existing_warehouse(wh.warehouse, Some(&p))?;
            let states = StateStore::new(&wh, &p.config.name).list().await?;
            if states.is_empty() {
                println!("no state for pipeline {} in {wh}", p.config.name);
            }
            for s in states {
                let wm = s.watermark.map_or("-".to_string(), |d| d.to_string());
                println!("{:<32} watermark {wm:<10}  updated {}  run {}", s.stream, s.updated_at.format("%Y-%m-%dT%H:%M:%SZ"), s.run_id);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::State { action: StateAction::Reset { pipeline, wh, stream } } => {
            let p = Pipeline::load(&pipeline)?;
            let wh = existing_warehouse(wh.warehouse, Some(&p))?;
            let removed = StateStore::new(&wh, &p.config.name).reset(stream.as_deref()).await?;
            println!("reset {} stream(s){}", removed.len(), if removed.is_empty() { String::new() } else { format!(": {}", removed.join(", ")) });
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulator { port, from, to, chats_per_day, conversations_per_day, crm_conversations_per_day } => {
            let today = Utc::now().date_naive();
            let first = from.unwrap_or(today - Duration::days(400));
            let mut config = SimConfig::demo(first, to.unwrap_or(today + Duration::days(1)));
            config.socialintents.chats_per_day = chats_per_day;
            config.social25.conversations_per_day = conversations_per_day;
            config.crm.conversations_per_day = crm_conversations_per_day;
            if to.is_none() {
                config.socialintents.until = Some(Utc::now());
            }
            let sim = Simulator::start_on(config, port).await?;
            println!("simulator serving Social Intents at {}", sim.socialintents_url());
            println!("                 and Social25 at {} (token {}, tenant {})", sim.social25_url(), crate::simulator::social25::DEMO_TOKEN, crate::simulator::social25::DEMO_TENANT_ID);
            println!("credentials: account_id = {}, api_token = {}", crate::simulator::DEMO_ACCOUNT_ID, crate::simulator::DEMO_API_TOKEN);
            tokio::signal::ctrl_c().await.map_err(|e| Error::io("waiting for Ctrl-C", e))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A flag set by the first SIGTERM or SIGINT: runs stop before their next
/// window, with everything committed so far kept, and release their lock.
pub fn stop_on_signals() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = Arc::clone(&flag);
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::warn!("signal received: stopping before the next window (what is committed stays)");
        set.store(true, Ordering::Relaxed);
    });
    flag
}

/// The warehouse to write: `--warehouse` > `CHATLAKE_WAREHOUSE` > the pipeline's.
fn open_warehouse(flag_or_env: Option<String>, pipeline: Option<&Pipeline>) -> Result<Warehouse> {
    Warehouse::open(&warehouse_location(flag_or_env, pipeline))
}

/// The warehouse to read (query, state): it must exist already.
fn existing_warehouse(flag_or_env: Option<String>, pipeline: Option<&Pipeline>) -> Result<Warehouse> {
    Warehouse::open_existing(&warehouse_location(flag_or_env, pipeline))
}

fn warehouse_location(flag_or_env: Option<String>, pipeline: Option<&Pipeline>) -> String {
    flag_or_env
        .or_else(|| pipeline.map(|p| p.config.warehouse.clone()))
        .unwrap_or_else(|| "./warehouse".to_string())
}

/// `chatlake demo`: simulator on loopback + the demo pipeline + the reports.
async fn demo(warehouse: Option<String>, interactive: bool) -> Result<ExitCode> {
    // Parse once without the simulator URL, only to learn the dates to simulate.
    let probe = Pipeline::parse(DEMO_PIPELINE, Path::new("pipelines/demo.toml"), &|_| None)?;
    let today = time::local_date(Utc::now(), probe.tz);
    let mut sim_config = SimConfig::demo(probe.config.start_date - Duration::days(1), today + Duration::days(1));
    sim_config.socialintents.until = Some(Utc::now());
    let sim = Simulator::start(sim_config).await?;
    let url = sim.url();
    let p = Pipeline::parse(DEMO_PIPELINE, Path::new("pipelines/demo.toml"), &|name| {
        (name == "CHATLAKE_SIMULATOR_URL").then(|| url.clone())
    })?;
    let wh = open_warehouse(warehouse, Some(&p))?;
    println!("chatlake demo: simulator at {}, warehouse {wh}\n", sim.url());
    let opts = RunOptions { progress: interactive, ..RunOptions::default() };
    let report = pipeline::run_once(&p, &wh, &opts).await?;
    let code = print_report(&report);
    let ctx = query::session(&wh).await?;
    let week = today - Duration::days(6);
    let yesterday = today - Duration::days(1);
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
        println!("\n{title} (rounded for display)");
        println!("{}", query::render(&query::run(&ctx, &sql).await?, Format::Table)?);
    }
    println!("\nMore: chatlake query --warehouse {wh} \"SELECT * FROM reporting.chats LIMIT 10\"");
    Ok(code)
}

/// Prints one line per stream; failures go to stderr. Exit 1 if any failed.
fn print_report(r: &RunReport) -> ExitCode {
    println!("run {}", r.run_id);
    println!("{:<30} {:<23} {:>6} {:>9} {:>9} {:>8} {:>8}  status", "stream", "window", "pages", "records", "rows", "rejects", "retries");
    for s in &r.streams {
        let window = &s.scope;
        let status = if s.error.is_some() { "FAILED" } else { "ok" };
        println!("{:<30} {:<23} {:>6} {:>9} {:>9} {:>8} {:>8}  {status}", s.stream, window, s.pages, s.records, s.rows_written, s.rejects, s.retries);
    }
    let failed: Vec<_> = r.failures().collect();
    for s in &failed {
        eprintln!("error: {}", s.error.as_deref().unwrap_or(""));
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
