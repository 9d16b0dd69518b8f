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
use crate::output::{OutFile, ResultFormat};
use crate::pipeline::{self, RunOptions, RunReport};
use crate::query::{self, Format};
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
const DEMO_PIPELINE: &str = include_str!("../pipelines/demo.toml");

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
        /// Ignore watermarks and re-extract from start_date (also after a timezone change).
        #[arg(long)]
        full_refresh: bool,
        /// Let an upsert stream mark more than `max_delete_share` of its rows deleted.
        #[arg(long)]
        allow_mass_delete: bool,
        /// Print the plan (streams, windows, what each asks the API for)
        /// from the saved state, without a request, a lock or a write.
        #[arg(long)]
        dry_run: bool,
    },
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
    Query {
        #[command(flatten)]
        wh: WarehouseArg,
        /// Output format (with --out: taken from the file's extension).
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Read the SQL from this file (statements separated by `;`).
        #[arg(
            short = 'f',
            long = "file",
            value_name = "FILE",
            conflicts_with = "sql"
        )]
        file: Option<PathBuf>,
        /// Write the result to FILE (.csv, .json, .ndjson or .parquet),
        /// outside the warehouse, instead of printing it.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// The SQL: one or more statements separated by `;`, or `-` to read
        /// them from stdin. Without it: the SQL shell (history, statements
        /// ending with `;` over several lines; from a pipe, line by line).
        sql: Option<String>,
    },
    /// Write the HTML report: KPIs against the previous period, daily chats,
    /// first-response times, a weekday x hour heatmap, agents, channels,
    /// companies and failed syncs. One self-contained file.
    Report {
        #[command(flatten)]
        wh: WarehouseArg,
        /// First local date (with --to).
        #[arg(long, requires = "to", conflicts_with = "days")]
        from: Option<NaiveDate>,
        /// Last local date, inclusive (with --from).
        #[arg(long, requires = "from", conflicts_with = "days")]
        to: Option<NaiveDate>,
        /// The last N complete local days (default 28, at most 3660), compared with the N before.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=crate::report::MAX_DAYS as i64))]
        days: Option<u32>,
        /// Output file, or - for stdout.
        #[arg(long, default_value = "report.html")]
        out: String,
    },
    /// Print a SQL script that defines the warehouse tables and every
    /// reporting view in another engine (DuckDB, Spark SQL, datafusion-cli),
    /// with the reporting settings filled in.
    Views {
        #[command(flatten)]
        wh: WarehouseArg,
        /// The engine the script is for.
        #[arg(long, value_enum)]
        dialect: crate::dialect::Dialect,
    },
    /// Show or reset watermarks.
    State {
        #[command(subcommand)]
        action: StateAction,
    },
    /// Run pipelines at their `schedule` until SIGTERM/SIGINT (a long-running daemon).
    Schedule {
        /// Pipeline files, or directories of them (repeatable).
        #[arg(long = "pipeline", required = true)]
        pipelines: Vec<PathBuf>,
        #[command(flatten)]
        wh: WarehouseArg,
        /// Serve /healthz and Prometheus /metrics on this address (e.g. 127.0.0.1:9187).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Recent runs from meta.runs; exits 1 when a pipeline's last run failed.
    Runs {
        /// Only this pipeline's runs.
        #[arg(long)]
        pipeline: Option<PathBuf>,
        #[command(flatten)]
        wh: WarehouseArg,
        /// How many runs to show.
        #[arg(long, default_value_t = 10)]
        last: usize,
        /// `text` for people; `json`: one object with `runs` (every column),
        /// `incomplete` and `failed_pipelines`, for monitors and scripts.
        #[arg(long, value_enum, default_value = "text")]
        format: TextOrJson,
    },
    /// Print a shell completion script: e.g. `chatlake completions bash >
    /// ~/.local/share/bash-completion/completions/chatlake`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
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
        /// Server-side limit per source, requests a second (a token bucket;
        /// beyond it 429 with Retry-After: 1). 0: none.
        #[arg(long, default_value_t = 0.0)]
        limit_rps: f64,
        /// Milliseconds before every answer.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// A fixed clock for the Social25 data (RFC 3339), instead of the
        /// wall clock: a large account's listing is then generated once,
        /// not again every second (benchmarks).
        #[arg(long)]
        now: Option<chrono::DateTime<Utc>>,
    },
}

#[derive(Debug, Subcommand)]
pub enum StateAction {
    /// Print each stream's watermark.
    Show {
        /// Pipeline file (TOML).
        #[arg(long)]
        pipeline: PathBuf,
        #[command(flatten)]
        wh: WarehouseArg,
        /// `text` for people; `json`: an array of {stream, watermark,
        /// updated_at, run_id} (watermark null when there is none).
        #[arg(long, value_enum, default_value = "text")]
        format: TextOrJson,
    },
    /// Forget watermarks (all streams, or one): the next run starts at start_date.
    Reset {
        /// Pipeline file (TOML).
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
        Command::Run {
            pipeline,
            wh,
            from,
            to,
            streams,
            full_refresh,
            allow_mass_delete,
            dry_run,
        } => {
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
                    let gone =
                        crate::privacy::retention::expired(wh, policy, today, report).await?;
                    for e in &gone {
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
            let stop = stop_on_signals();
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
        Command::Query {
            wh,
            format,
            file,
            out,
            sql,
        } => {
            let text = match (sql.as_deref(), &file) {
                (_, Some(f)) => std::fs::read_to_string(f)
                    .map_err(|e| Error::io(format!("reading {}", f.display()), e))?,
                (Some("-"), None) => std::io::read_to_string(std::io::stdin())
                    .map_err(|e| Error::io("reading SQL from stdin", e))?,
                (Some(s), None) => s.to_string(),
                (None, None) => {
                    // No SQL: the shell.
                    let wh = existing_warehouse(wh.warehouse, None)?;
                    let session = query::session(&wh).await?;
                    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdin());
                    return crate::shell::run(&session, format, terminal).await;
                }
            };
            let statements = query::split_statements(&text)?;
            let wh = existing_warehouse(wh.warehouse, None)?;
            let ctx = query::session(&wh).await?;
            if let Some(path) = out {
                let [one] = statements.as_slice() else {
                    return Err(Error::Usage(format!(
                        "--out writes one result; the SQL holds {} statements",
                        statements.len()
                    )));
                };
                let format = ResultFormat::of_path(&path)?;
                let file = OutFile::create(&wh, &path, "--out")?;
                let w = std::io::BufWriter::new(file);
                let (w, rows, nonfinite) = query::write_result(&ctx, one, w, format).await?;
                let file = w.into_inner().map_err(|e| {
                    Error::io(format!("writing {}", path.display()), e.into_error())
                })?;
                file.commit()?;
                if let Some(note) = crate::output::nonfinite_note(nonfinite) {
                    crate::output::note(&note);
                }
                crate::output::note(&format!("{rows} rows written to {}", path.display()));
                return Ok(ExitCode::SUCCESS);
            }
            for sql in &statements {
                let w = std::io::BufWriter::new(std::io::stdout());
                let (_, _, nonfinite) =
                    query::write_result(&ctx, sql, w, ResultFormat::Text(format)).await?;
                if let Some(note) = crate::output::nonfinite_note(nonfinite) {
                    crate::output::note(&note);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::State {
            action:
                StateAction::Show {
                    pipeline,
                    wh,
                    format,
                },
        } => {
            let p = Pipeline::load(&pipeline)?;
            let wh = existing_warehouse(wh.warehouse, Some(&p))?;
            let states = StateStore::new(&wh, &p.config.name).list().await?;
            if format == TextOrJson::Json {
                let doc: Vec<_> = states
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "stream": s.stream,
                            "watermark": s.watermark.map(|d| d.to_string()),
                            "updated_at": s.updated_at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                            "run_id": s.run_id,
                        })
                    })
                    .collect();
                outln!("{:#}", serde_json::Value::from(doc))?;
                return Ok(ExitCode::SUCCESS);
            }
            if states.is_empty() {
                outln!("no state for pipeline {} in {wh}", p.config.name)?;
            }
            for s in states {
                let wm = s.watermark.map_or("-".to_string(), |d| d.to_string());
                outln!(
                    "{:<32} watermark {wm:<10}  updated {}  run {}",
                    s.stream,
                    s.updated_at.format("%Y-%m-%dT%H:%M:%SZ"),
                    s.run_id
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::State {
            action:
                StateAction::Reset {
                    pipeline,
                    wh,
                    stream,
                },
        } => {
            let p = Pipeline::load(&pipeline)?;
            let wh = existing_warehouse(wh.warehouse, Some(&p))?;
            let store = StateStore::new(&wh, &p.config.name);
            if let Some(s) = &stream {
                // A typo must not look like success: the stream must be
                // configured, or at least have a state to forget.
                let configured: Vec<String> = crate::extract::build_all(&p, Utc::now())?
                    .iter()
                    .flat_map(|src| src.streams())
                    .map(|spec| spec.name)
                    .collect();
                let stored = store.list().await?.iter().any(|st| &st.stream == s);
                if !stored && !configured.contains(s) {
                    return Err(Error::Usage(format!(
                        "state reset --stream {s}: no such stream in pipeline {} (configured: {})",
                        p.config.name,
                        configured.join(", ")
                    )));
                }
            }
            let removed = store.reset(stream.as_deref()).await?;
            outln!(
                "reset {} stream(s){}",
                removed.len(),
                if removed.is_empty() {
                    String::new()
                } else {
                    format!(": {}", removed.join(", "))
                }
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Views { wh, dialect } => {
            let wh = existing_warehouse(wh.warehouse, None)?;
            let script = query::views_script(&wh, dialect).await?;
            outln!("{}", script.trim_end())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Report {
            wh,
            from,
            to,
            days,
            out,
        } => {
            let wh = existing_warehouse(wh.warehouse, None)?;
            let session = query::session(&wh).await?;
            let period = match (from, to) {
                (Some(from), Some(to))
                    if from <= to
                        && (to - from).num_days() < i64::from(crate::report::MAX_DAYS) =>
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
                    crate::report::Period::last_days(today, days.unwrap_or(28))
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
            Ok(ExitCode::SUCCESS)
        }
        Command::Schedule {
            pipelines,
            wh,
            listen,
        } => schedule(pipelines, wh.warehouse, listen).await,
        Command::Check { pipeline } => check(&pipeline).await,
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut cmd, "chatlake", &mut text);
            out!("{}", String::from_utf8_lossy(&text))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Runs {
            pipeline,
            wh,
            last,
            format,
        } => {
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
        Command::Simulator {
            port,
            from,
            to,
            chats_per_day,
            conversations_per_day,
            crm_conversations_per_day,
            limit_rps,
            latency_ms,
            now,
        } => {
            let today = Utc::now().date_naive();
            let first = from.unwrap_or(today - Duration::days(400));
            let mut config = SimConfig::demo(first, to.unwrap_or(today + Duration::days(1)));
            config.socialintents.chats_per_day = chats_per_day;
            config.social25.conversations_per_day = conversations_per_day;
            config.crm.conversations_per_day = crm_conversations_per_day;
            config.social25.now = now;
            if to.is_none() {
                config.socialintents.until = Some(Utc::now());
            }
            let sim = Simulator::start_on(config, port).await?;
            sim.set_faults(crate::simulator::Faults {
                limit_rps,
                latency_ms,
                ..Default::default()
            });
            outln!(
                "simulator serving Social Intents at {}",
                sim.socialintents_url()
            )?;
            outln!(
                "                 and Social25 at {} (token {}, tenant {})",
                sim.social25_url(),
                crate::simulator::social25::DEMO_TOKEN,
                crate::simulator::social25::DEMO_TENANT_ID
            )?;
            outln!(
                "credentials: account_id = {}, api_token = {}",
                crate::simulator::DEMO_ACCOUNT_ID,
                crate::simulator::DEMO_API_TOKEN
            )?;
            tokio::signal::ctrl_c()
                .await
                .map_err(|e| Error::io("waiting for Ctrl-C", e))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `chatlake schedule`: one task per pipeline, until a signal; then each
/// finishes or abandons its current window cleanly, releases its lock, and
/// the daemon exits 0.
async fn schedule(
    paths: Vec<PathBuf>,
    warehouse: Option<String>,
    listen: Option<String>,
) -> Result<ExitCode> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(&p)
                .map_err(|e| Error::io(format!("reading {}", p.display()), e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "toml"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(p);
        }
    }
    if files.is_empty() {
        return Err(Error::Usage("schedule: no pipeline files given".into()));
    }
    let stop = stop_on_signals();
    let metrics = crate::metrics::Metrics::default();
    if let Some(addr) = listen {
        let local = metrics.clone().serve(&addr).await?;
        outln!("serving /healthz and /metrics on http://{local}")?;
    }
    let mut tasks = Vec::new();
    let mut names: std::collections::HashMap<String, PathBuf> = std::collections::HashMap::new();
    for f in &files {
        let p = Pipeline::load(f)?;
        // One name = one state and one lock: two files with the same name
        // would share (and fight over) both.
        if let Some(other) = names.insert(p.config.name.clone(), f.clone()) {
            return Err(Error::Usage(format!(
                "{} and {} both have name = \"{}\"; pipeline names must be unique (they key the state and the lock)",
                other.display(),
                f.display(),
                p.config.name
            )));
        }
        if p.config.schedule.is_none() {
            return Err(Error::Usage(format!(
                "{}: no `schedule` key; add e.g. schedule = \"0 30 2 * * *\"",
                f.display()
            )));
        }
        let wh = open_warehouse(warehouse.clone(), Some(&p))?;
        outln!(
            "scheduling {} ({}) at \"{}\" in {}, warehouse {wh}",
            p.config.name,
            f.display(),
            p.config.schedule.as_deref().unwrap_or(""),
            p.config.timezone
        )?;
        tasks.push(crate::schedule::serve_pipeline(
            p,
            wh,
            Arc::clone(&stop),
            metrics.clone(),
            Arc::new(crate::schedule::SystemClock),
        ));
    }
    // All pipelines wait and run concurrently on this task.
    let mut code = ExitCode::SUCCESS;
    for result in futures::future::join_all(tasks).await {
        if let Err(e) = result {
            crate::output::error(&e.to_string());
            code = ExitCode::FAILURE;
        }
    }
    outln!("scheduler stopped")?;
    Ok(code)
}

/// `chatlake runs`: one line per run (all its streams), newest first.
async fn runs(
    wh: &Warehouse,
    pipeline: Option<&str>,
    last: usize,
    format: TextOrJson,
) -> Result<ExitCode> {
    let ctx = query::session(wh).await?;
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
    let batches = query::run(&ctx, &sql).await?;
    if format == TextOrJson::Text {
        outln!("{}", query::render(&batches, Format::Table)?)?;
    }
    // The last run of each pipeline decides the exit code.
    let latest = format!(
        "WITH r AS (SELECT pipeline, run_id, MAX(started_at) AS s, \
                           SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS failed \
                    FROM meta.runs {filter} GROUP BY pipeline, run_id), \
              l AS (SELECT pipeline, MAX(s) AS s FROM r GROUP BY pipeline) \
         SELECT r.pipeline, r.failed FROM r JOIN l ON r.pipeline = l.pipeline AND r.s = l.s"
    );
    let mut failed: Vec<String> = query::render(&query::run(&ctx, &latest).await?, Format::Csv)?
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
        let recorded = query::run(&ctx, &format!("SELECT pipeline, run_id, MAX(started_at) AS s, COUNT(*) AS n FROM meta.runs {filter} GROUP BY pipeline, run_id")).await?;
        let recorded = query::render(&recorded, Format::Csv)?;
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
        let runs: serde_json::Value = serde_json::from_str(&query::render(&batches, Format::Json)?)
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

/// A flag set by the first SIGTERM or SIGINT: runs stop before their next
/// window, with everything committed so far kept, and release their lock.
pub fn stop_on_signals() -> Arc<AtomicBool> {
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
        tracing::warn!(
            "signal received: stopping before the next window (what is committed stays)"
        );
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

/// `chatlake demo`: simulator on loopback + the demo pipeline + the reports.
async fn demo(warehouse: Option<String>, interactive: bool) -> Result<ExitCode> {
    // Parse once without the simulator URL, only to learn the dates to simulate.
    let probe = Pipeline::parse(DEMO_PIPELINE, Path::new("pipelines/demo.toml"), &|_| None)?;
    let today = time::local_date(Utc::now(), probe.tz);
    let mut sim_config = SimConfig::demo(
        probe.config.start_date - Duration::days(1),
        today + Duration::days(1),
    );
    sim_config.socialintents.until = Some(Utc::now());
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
    let code = print_report(&report)?;
    let week = today - Duration::days(6);
    let yesterday = today - Duration::days(1);
    // Every table below is about the last 7 days: reporting.chats once for them.
    let ctx = query::session_for_dates(&wh, week, today).await?;
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
        outln!("{}", query::render(&query::run(&ctx, &sql).await?, Format::Table)?)?;
    }
    outln!("\nMore: chatlake query --warehouse {wh} \"SELECT * FROM reporting.chats LIMIT 10\"")?;
    let report = p.config.report.clone().unwrap_or_default();
    let url = crate::report::deliver(&wh, &report, today).await?;
    outln!("\nReport ({} days): {url}", report.days)?;
    Ok(code)
}

/// `chatlake check`: the pipeline loads (syntax, keys, variables), then
/// one request per source, each bounded in time.
async fn check(file: &Path) -> Result<ExitCode> {
    const LIMIT: std::time::Duration = std::time::Duration::from_secs(60);
    let p = Pipeline::load(file)?;
    outln!(
        "pipeline {} ({}): parsed, every variable resolved, timezone {}",
        p.config.name,
        file.display(),
        p.config.timezone
    )?;
    let sources = crate::extract::build_all(&p, Utc::now())?;
    // Every source at once: an unreachable one retries for a while.
    let outcomes = futures::future::join_all(sources.iter().map(|source| async move {
        match tokio::time::timeout(LIMIT, source.check()).await {
            Ok(Ok(seen)) => {
                let streams: Vec<String> = source.streams().into_iter().map(|s| s.name).collect();
                Ok(format!(
                    "reachable, credentials accepted ({seen}); streams: {}",
                    streams.join(", ")
                ))
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} s", LIMIT.as_secs())),
        }
    }))
    .await;
    // What personal data these streams copy, stored as the API sends it.
    let mut personal: std::collections::BTreeSet<String> = Default::default();
    for source in &sources {
        for spec in source.streams() {
            for t in spec.tables {
                personal.extend(t.personal_columns().map(|(c, _)| format!("{}.{c}", t.name)));
            }
        }
    }
    let mut failed = 0;
    for (cfg, outcome) in p.sources.iter().zip(outcomes) {
        match outcome {
            Ok(line) => outln!("{:<14} ok      {line}", cfg.name())?,
            Err(e) => {
                failed += 1;
                outln!(
                    "{:<14} FAILED  {}",
                    cfg.name(),
                    crate::config::secret::clean(&e)
                )?;
            }
        }
    }
    if let Some(privacy) = &p.config.privacy {
        let said: Vec<String> = crate::schema::Personal::CONFIGURABLE
            .iter()
            .map(|k| format!("{} {}", k.as_str(), privacy.action(*k).as_str()))
            .collect();
        outln!(
            "privacy: {}; {} column override(s)",
            said.join(", "),
            privacy.columns.len()
        )?;
    } else if !personal.is_empty() {
        outln!(
            "warning: personal data is stored in plain text: {} columns of these streams hold names, emails, phones, IP addresses or what people wrote (e.g. {}); add a [privacy] section (see \"Personal data\" in the README)",
            personal.len(),
            personal.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
        )?;
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
fn print_report(r: &RunReport) -> Result<ExitCode> {
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
