//! `chatlake schedule`: the long-running daemon that runs pipelines at
//! their `schedule`, with /healthz and /metrics, and with `--serve` the
//! warehouse over the Postgres protocol (as `chatlake serve`).

use std::process::ExitCode;

use super::*;

/// The arguments of `chatlake schedule`.
#[derive(Debug, clap::Args)]
pub struct ScheduleArgs {
    /// Pipeline files, or directories of them (repeatable).
    #[arg(long = "pipeline", required = true)]
    pub pipelines: Vec<PathBuf>,
    #[command(flatten)]
    pub wh: WarehouseArg,
    /// Serve /healthz and Prometheus /metrics on this address (e.g. 127.0.0.1:9187).
    #[arg(long)]
    pub listen: Option<String>,
    /// Also serve the warehouse read-only over the Postgres protocol on this
    /// address, as `chatlake serve` does (its options below apply). The
    /// pipelines must share one warehouse.
    #[arg(long)]
    pub serve: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub server: super::serve::ServerArgs,
}

/// `chatlake schedule`: one task per pipeline, until a signal; then each
/// finishes or abandons its current window cleanly, releases its lock, and
/// the daemon exits 0.
pub(super) async fn schedule(args: ScheduleArgs) -> Result<ExitCode> {
    let ScheduleArgs {
        pipelines: paths,
        wh,
        listen,
        serve,
        server,
    } = args;
    let warehouse = wh.warehouse;
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
    let stop = stop_on_signals("stopping before the next window (what is committed stays)");
    let metrics = crate::metrics::Metrics::default();
    if let Some(addr) = listen {
        let local = metrics.clone().serve(&addr).await?;
        outln!("serving /healthz and /metrics on http://{local}")?;
    }
    let mut tasks = Vec::new();
    let mut served: Option<crate::sink::Warehouse> = None;
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
        if serve.is_some() {
            match &served {
                Some(first) if first.to_string() != wh.to_string() => {
                    return Err(Error::Usage(format!(
                        "schedule --serve: the pipelines write to {first} and {wh}; \
                         one server serves one warehouse (give --warehouse, or run chatlake serve per warehouse)"
                    )))
                }
                Some(_) => {}
                None => served = Some(wh.clone()),
            }
        }
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
    // The Postgres listener, until the daemon stops.
    let server = match (serve, served) {
        (Some(listen), Some(wh)) => {
            let options = server.options(listen);
            crate::serve::validate(&options).map_err(Error::Usage)?;
            let (stop, watched) = (Arc::clone(&stop), Arc::clone(&stop));
            Some(tokio::spawn(async move {
                let stopped = async move {
                    while !watched.load(std::sync::atomic::Ordering::Relaxed) {
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                };
                let ready = |addr| super::serve::listening(&wh, &options, addr);
                let served = crate::serve::serve(&wh, &options, ready, stopped).await;
                if served.is_err() {
                    // A daemon whose listener failed (the port taken) stops,
                    // so that its supervisor sees it, rather than running on
                    // without what it was asked to serve.
                    tracing::error!("the Postgres listener failed: stopping the scheduler");
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                served
            }))
        }
        _ => None,
    };
    // All pipelines wait and run concurrently on this task.
    let mut code = ExitCode::SUCCESS;
    for result in futures::future::join_all(tasks).await {
        if let Err(e) = result {
            crate::output::error(&e.to_string());
            code = ExitCode::FAILURE;
        }
    }
    if let Some(server) = server {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                crate::output::error(&e.to_string());
                code = ExitCode::FAILURE;
            }
            Err(e) => {
                crate::output::error(&format!("the Postgres listener: {e}"));
                code = ExitCode::FAILURE;
            }
        }
    }
    outln!("scheduler stopped")?;
    Ok(code)
}
