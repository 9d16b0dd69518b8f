//! The commands, one file each (`run.rs` is `chatlake run`). Each parses
//! its arguments, resolves the warehouse (`--warehouse` >
//! `CHATLAKE_WAREHOUSE` > the pipeline's `warehouse`) and calls into the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{Duration, NaiveDate, Utc};
use clap::{Parser, Subcommand};

use crate::config::Pipeline;
use crate::error::{Error, Result};
use crate::normalize::time;
use crate::output::{OutFile, ResultFormat};
use crate::pipeline::{self, RunOptions, RunReport};
use crate::query::Format;
use crate::simulator::{SimConfig, Simulator};
use crate::sink::Warehouse;
use crate::state::StateStore;

/// `println!` that returns an error (naming stdout) instead of panicking
/// when stdout is closed (`chatlake query ... | head`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err(|e| Error::io("writing to stdout", e))
    }};
}

/// `print!` as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*).map_err(|e| Error::io("writing to stdout", e))
    }};
}

/// The demo pipeline, compiled in so `chatlake demo` works from any directory.
const DEMO_PIPELINE: &str = include_str!("../../pipelines/demo.toml");

mod alerts;
mod check;
mod demo;
mod forget;
mod privacy;
mod query;
mod report;
mod run;
mod runs;
mod schedule;
mod serve;
mod simulator;
mod state;

/// chatlake: customer-chat APIs -> Parquet warehouse -> SQL reports.
#[derive(Debug, Parser)]
#[command(name = "chatlake", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log lines as text for people, or as one JSON object per line (with
    /// the structured fields: stream, window, rows...) for log collectors.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "CHATLAKE_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

/// Output of `runs` and `state show`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TextOrJson {
    /// Aligned text for people.
    Text,
    /// One JSON document for programs.
    Json,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `2026-12-01T16:00:00Z  INFO chatlake::pipeline: stream finished stream=...`
    Text,
    /// `{"timestamp":"...","level":"INFO","fields":{"message":"stream finished","stream":"..."},...}`
    Json,
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
    Run(run::RunArgs),
    /// Check a pipeline before running it: the file parses, every variable
    /// resolves, and each source answers one cheap authenticated request.
    /// Exits 0 only when every source is fine. Secrets are never printed.
    Check {
        /// Pipeline file (TOML).
        #[arg(long)]
        pipeline: PathBuf,
    },
    /// Run read-only SQL over the warehouse tables and the reporting views;
    /// without SQL (or as `chatlake sql`), an interactive shell.
    #[command(visible_alias = "sql")]
    Query(query::QueryArgs),
    /// Write the HTML report: KPIs against the previous period, daily chats,
    /// first-response times, a weekday x hour heatmap, agents, channels,
    /// companies and failed syncs. One self-contained file.
    Report(report::ReportArgs),
    /// Print a SQL script that defines the warehouse tables and every
    /// reporting view in another engine (DuckDB, Spark SQL, datafusion-cli),
    /// with the reporting settings filled in.
    Views(report::ViewsArgs),
    /// Show or reset watermarks.
    State {
        #[command(subcommand)]
        action: state::StateAction,
    },
    /// Run pipelines at their `schedule` until SIGTERM/SIGINT (a long-running daemon).
    Schedule(schedule::ScheduleArgs),
    /// Recent runs from meta.runs; exits 1 when a pipeline's last run failed.
    Runs(runs::RunsArgs),
    /// Print a shell completion script: e.g. `chatlake completions bash >
    /// ~/.local/share/bash-completion/completions/chatlake`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Serve the simulated APIs on 127.0.0.1 until interrupted.
    Simulator(simulator::SimulatorArgs),
    /// Erase a person: remove every row linked to the identifiers given
    /// (chats and their messages, contacts, conversations, rejects), record
    /// it in meta.erasures, and keep them out of every later run.
    Forget(forget::ForgetArgs),
    /// Apply the pipeline's `[privacy]` policy to what is already written.
    Privacy {
        #[command(subcommand)]
        action: privacy::PrivacyAction,
    },
    /// Evaluate the pipeline's `[[alerts]]` rules once and send what starts,
    /// repeats or clears (runs and the scheduler do this too): for cron.
    Alerts(alerts::AlertsArgs),
    /// Serve the warehouse, read-only, over the Postgres protocol: every
    /// table and reporting view, for psql, Metabase, Superset, Grafana,
    /// DBeaver and other BI tools.
    Serve(serve::ServeArgs),
    /// Send a test message to the pipeline's channels.
    Notify {
        #[command(subcommand)]
        action: alerts::NotifyAction,
    },
}

/// Runs a parsed command; `interactive` turns on the progress bar.
pub async fn execute(cli: Cli, interactive: bool) -> Result<ExitCode> {
    match cli.command {
        Command::Demo { wh } => demo::demo(wh.warehouse, interactive).await,
        Command::Run(args) => run::execute(args, interactive).await,
        Command::Check { pipeline } => check::check(&pipeline).await,
        Command::Query(args) => query::execute(args).await,
        Command::Report(args) => report::execute(args).await,
        Command::Views(args) => report::views(args).await,
        Command::State { action } => state::execute(action).await,
        Command::Schedule(args) => schedule::schedule(args).await,
        Command::Runs(args) => runs::execute(args).await,
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut cmd, "chatlake", &mut text);
            out!("{}", String::from_utf8_lossy(&text))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulator(args) => simulator::execute(args).await,
        Command::Forget(args) => forget::execute(args).await,
        Command::Privacy { action } => privacy::execute(action).await,
        Command::Alerts(args) => alerts::execute(args).await,
        Command::Notify { action } => alerts::notify(action).await,
        Command::Serve(args) => serve::execute(args).await,
    }
}

/// A flag set by the first SIGTERM or SIGINT, which logs `what` happens
/// next: runs stop before their next window, with everything committed so
/// far kept, and release their lock; the server stops listening.
pub fn stop_on_signals(what: &'static str) -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = Arc::clone(&flag);
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
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
        tracing::warn!("signal received: {what}");
        set.store(true, Ordering::Relaxed);
    });
    flag
}

/// The warehouse to write: `--warehouse` > `CHATLAKE_WAREHOUSE` > the pipeline's.
fn open_warehouse(flag_or_env: Option<String>, pipeline: Option<&Pipeline>) -> Result<Warehouse> {
    Warehouse::open(&warehouse_location(flag_or_env, pipeline))
}

/// The warehouse to read (query, state): it must exist already.
fn existing_warehouse(
    flag_or_env: Option<String>,
    pipeline: Option<&Pipeline>,
) -> Result<Warehouse> {
    Warehouse::open_existing(&warehouse_location(flag_or_env, pipeline))
}

fn warehouse_location(flag_or_env: Option<String>, pipeline: Option<&Pipeline>) -> String {
    flag_or_env
        .or_else(|| pipeline.map(|p| p.config.warehouse.clone()))
        .unwrap_or_else(|| "./warehouse".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command and every flag says what it is for in `--help`.
    #[test]
    fn every_command_and_flag_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name());
            if cmd.get_about().is_none() && path.trim() != "chatlake" {
                missing.push(path.clone());
            }
            for arg in cmd.get_arguments() {
                let builtin = ["help", "version"].contains(&arg.get_id().as_str());
                if !builtin && arg.get_help().is_none() {
                    missing.push(format!("{path} --{}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&<Cli as clap::CommandFactory>::command(), "", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }
}
