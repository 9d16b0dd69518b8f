//! Cron schedules (with a seconds field) evaluated in the pipeline timezone.
//! The daemon that uses them comes with the production-runs work; for now the
//! pipeline file's `schedule` is parsed and validated here.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use cron::Schedule;

/// Parses a cron expression with a seconds field, e.g. `0 30 2 * * *`.
pub fn parse_cron(expr: &str) -> Result<Schedule, String> {
    Schedule::from_str(expr).map_err(|e| format!("`{expr}` is not a cron expression with seconds (e.g. \"0 30 2 * * *\"): {e}"))
}

/// The next time `schedule` fires strictly after `after`, evaluated in `tz`.
pub fn next_after(schedule: &Schedule, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule.after(&after.with_timezone(&tz)).next().map(|t| t.with_timezone(&Utc))
}
