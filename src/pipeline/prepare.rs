//! Before a run's first request: which streams run, whether the warehouse's
//! partitioning still matches the pipeline's timezone, the progress bar, and
//! the crash-test hook.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::{Error, Result};
use crate::extract::StreamSpec;
use crate::state::StateStore;

/// Keeps the streams named by `--stream` (`source.stream`, or one of a
/// stream's aliases).
pub(super) fn select<T>(
    specs: Vec<(T, StreamSpec)>,
    wanted: &[String],
) -> Result<Vec<(T, StreamSpec)>> {
    if wanted.is_empty() {
        return Ok(specs);
    }
    let named = |s: &StreamSpec, w: &str| s.name == w || s.aliases.iter().any(|a| a == w);
    for w in wanted {
        if !specs.iter().any(|(_, s)| named(s, w)) {
            let known: Vec<_> = specs.iter().map(|(_, s)| s.name.as_str()).collect();
            return Err(Error::Usage(format!(
                "--stream {w}: not a configured stream (configured: {})",
                known.join(", ")
            )));
        }
    }
    Ok(specs
        .into_iter()
        .filter(|(_, s)| wanted.iter().any(|w| named(s, w)))
        .collect())
}

/// The pipeline's sources, and the streams `opts` selects (each with the
/// index of its source).
#[allow(clippy::type_complexity)]
pub(super) fn streams(
    pipeline: &crate::config::Pipeline,
    now: chrono::DateTime<chrono::Utc>,
    opts: &super::RunOptions,
) -> Result<(
    Vec<Box<dyn crate::extract::Source>>,
    Vec<(usize, StreamSpec)>,
)> {
    let sources = crate::extract::build_all(&pipeline.sources, &pipeline.build_ctx(now))?;
    let all: Vec<(usize, StreamSpec)> = sources
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.streams().into_iter().map(move |spec| (i, spec)))
        .collect();
    let specs = select(all, &opts.streams)?;
    Ok((sources, specs))
}

/// What can be refused before the lock and the first request: an inverted
/// range, a start_date after today, a changed timezone.
pub(super) async fn check(
    cfg: &crate::config::PipelineConfig,
    opts: &super::RunOptions,
    today: chrono::NaiveDate,
    states: Option<&StateStore<'_>>,
    specs: &[(usize, StreamSpec)],
) -> Result<()> {
    if let (Some(f), Some(t)) = (opts.from, opts.to) {
        if f > t {
            return Err(Error::Usage(format!("--from {f} is after --to {t}")));
        }
    }
    // Today in the pipeline timezone can be yesterday where the user is:
    // the run goes on (snapshots and the CRM have work), its date-windowed
    // streams read nothing, and it says so.
    if let (Some(f), None) = (opts.from, opts.to) {
        if f > today {
            tracing::warn!(
                "--from {f} is after today ({today} in {}): the date-windowed streams have no day to read yet",
                cfg.timezone
            );
        }
    }
    if cfg.start_date > today && opts.from.is_none() {
        return Err(Error::Usage(format!(
            "start_date {} is after today ({today} in {}): there is nothing to read yet",
            cfg.start_date, cfg.timezone
        )));
    }
    match states {
        Some(states) => check_timezone(states, specs, cfg, opts.full_refresh).await,
        None => Ok(()),
    }
}

/// Refuses a run whose timezone differs from the one the streams' data was
/// partitioned in: `dt` would shift, and re-read days would duplicate or
/// lose chats at the edges. `--full-refresh` re-reads everything in the new
/// timezone.
async fn check_timezone(
    states: &StateStore<'_>,
    specs: &[(usize, StreamSpec)],
    cfg: &crate::config::PipelineConfig,
    full_refresh: bool,
) -> Result<()> {
    if full_refresh {
        return Ok(());
    }
    for (_, spec) in specs {
        let Some(loaded) = states.load(&spec.name).await? else {
            continue;
        };
        if let Some(tz) = loaded.state.timezone.filter(|tz| *tz != cfg.timezone) {
            return Err(Error::Usage(format!(
                "stream {}: its data is partitioned by local dates in {tz}, but the pipeline now says timezone = \"{}\". \
                 Running on would shift dt and duplicate or lose rows at day edges; \
                 run once with --full-refresh to re-read everything in {} (or set the timezone back)",
                spec.name, cfg.timezone, cfg.timezone
            )));
        }
    }
    Ok(())
}

/// One progress line per source, its length the steps planned for it before
/// the first request (a step per window, one per snapshot, upsert or
/// change-driven stream, whose chunks count in the message), with an ETA.
/// Hidden when not on a terminal.
pub(super) fn progress_bars(
    enabled: bool,
    sources: usize,
    names: impl Fn(usize) -> String,
    specs: &[(usize, StreamSpec)],
    plan: &[PlannedStream],
) -> (MultiProgress, Vec<ProgressBar>) {
    let multi = if enabled {
        MultiProgress::new()
    } else {
        MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
    };
    let style = ProgressStyle::with_template(
        "{spinner} {prefix:<14} [{elapsed_precise}] {bar:30} {pos}/{len} steps  ETA {eta:<4} {msg}",
    )
    .expect("static template");
    let bars = (0..sources)
        .map(|i| {
            let steps: usize = specs
                .iter()
                .zip(plan)
                .filter(|((s, _), _)| *s == i)
                // A windowed stream steps once per window (none when --from
                // is after today); the others once.
                .map(|(_, p)| match p.kind {
                    "windowed" => p.windows.len(),
                    _ => 1,
                })
                .sum();
            let bar = multi.add(ProgressBar::new(steps as u64));
            bar.set_style(style.clone());
            bar.set_prefix(names(i));
            if enabled {
                bar.enable_steady_tick(std::time::Duration::from_millis(200));
            }
            bar
        })
        .collect();
    (multi, bars)
}

/// Crash-test hook: when `CHATLAKE_FAILPOINT` names this point, the process
/// aborts here (as a kill -9 would), or, for a `panic@<pipeline>` point, the
/// run panics (as a bug would). Used by the fault suite to crash between
/// committing partitions and saving the watermark, and to prove the scheduler
/// survives a crashing run; inert otherwise. Compiled out of release builds
/// (the tests run the debug binary): a stray variable cannot abort a
/// production run.
pub(crate) fn failpoint(name: &str) {
    if !cfg!(debug_assertions) {
        return;
    }
    if std::env::var_os("CHATLAKE_FAILPOINT").is_some_and(|v| v == name) {
        if name.starts_with("panic@") {
            panic!("failpoint {name}");
        }
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}

/// What a run would do for one stream (`run --dry-run`).
#[derive(Debug, Clone)]
pub struct PlannedStream {
    pub stream: String,
    /// windowed, snapshot, changes or upsert.
    pub kind: &'static str,
    /// The saved watermark (None: first run, or ignored by --full-refresh).
    pub watermark: Option<chrono::NaiveDate>,
    /// The local-date windows a windowed stream reads, in order.
    pub windows: Vec<crate::extract::window::Window>,
    /// What it asks the API for.
    pub asks: String,
}

/// The plan of every selected stream from the saved state alone: no
/// request, no lock, no write.
pub(super) async fn plan(
    cfg: &crate::config::PipelineConfig,
    opts: &super::RunOptions,
    today: chrono::NaiveDate,
    states: Option<&StateStore<'_>>,
    specs: &[(usize, StreamSpec)],
) -> Result<Vec<PlannedStream>> {
    use crate::extract::{window, StreamKind};
    let mut out = Vec::new();
    for (_, spec) in specs {
        let loaded = match states {
            Some(states) => states.load(&spec.name).await?,
            None => None,
        };
        let watermark = loaded
            .as_ref()
            .and_then(|l| l.state.watermark)
            .filter(|_| !opts.full_refresh);
        let endpoints = spec.endpoints.join(", ");
        let (kind, windows, asks) = match spec.kind {
            StreamKind::Windowed { window_days, .. } => {
                let default =
                    window::default_range(watermark, cfg.start_date, cfg.lookback_days, today);
                let range = window::Window {
                    from: opts.from.unwrap_or(default.from),
                    to: opts.to.unwrap_or(default.to),
                };
                let windows = window::split(range, window_days);
                let asks = format!(
                    "GET {endpoints} once per window (every page), for the UTC dates covering it; \
                     each window's partitions replaced"
                );
                ("windowed", windows, asks)
            }
            StreamKind::Snapshot => (
                "snapshot",
                Vec::new(),
                format!("GET {endpoints} whole (every page); the table replaced"),
            ),
            StreamKind::Changes { .. } => (
                "changes",
                Vec::new(),
                format!(
                    "GET {endpoints} for each conversation changed since the saved cursor{}",
                    if loaded.as_ref().is_some_and(|l| l.state.cursor.is_some()) {
                        ""
                    } else {
                        " (none saved: every conversation)"
                    }
                ),
            ),
            StreamKind::Upsert { .. } => (
                "upsert",
                Vec::new(),
                format!(
                    "GET {endpoints} whole; rows compared with the warehouse's, changes merged"
                ),
            ),
        };
        out.push(PlannedStream {
            stream: spec.name.clone(),
            kind,
            watermark,
            windows,
            asks,
        });
    }
    Ok(out)
}
