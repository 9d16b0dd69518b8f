//! Before a run's first request: which streams run, whether the warehouse's
//! partitioning still matches the pipeline's timezone, the progress bar, and
//! the crash-test hook.

use indicatif::{ProgressBar, ProgressStyle};

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

/// What can be refused before the lock and the first request: an inverted
/// range, a start_date after today, a changed timezone.
pub(super) async fn check(
    cfg: &crate::config::PipelineConfig,
    opts: &super::RunOptions,
    today: chrono::NaiveDate,
    states: &StateStore<'_>,
    specs: &[(usize, StreamSpec)],
) -> Result<()> {
    if let (Some(f), Some(t)) = (opts.from, opts.to) {
        if f > t {
            return Err(Error::Usage(format!("--from {f} is after --to {t}")));
        }
    }
    if cfg.start_date > today && opts.from.is_none() {
        return Err(Error::Usage(format!(
            "start_date {} is after today ({today} in {}): there is nothing to read yet",
            cfg.start_date, cfg.timezone
        )));
    }
    check_timezone(states, specs, cfg, opts.full_refresh).await
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

pub(super) fn progress_bar(enabled: bool) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} windows  {msg}",
        )
        .expect("static template"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// Crash-test hook: when `CHATLAKE_FAILPOINT` names this point, the process
/// aborts here (as a kill -9 would), or, for a `panic@<pipeline>` point, the
/// run panics (as a bug would). Used by the fault suite to crash between
/// committing partitions and saving the watermark, and to prove the scheduler
/// survives a crashing run; inert otherwise.
pub(crate) fn failpoint(name: &str) {
    if std::env::var_os("CHATLAKE_FAILPOINT").is_some_and(|v| v == name) {
        if name.starts_with("panic@") {
            panic!("failpoint {name}");
        }
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
