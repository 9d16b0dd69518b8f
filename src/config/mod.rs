//! The pipeline file (TOML in `pipelines/`): parse with unknown keys refused,
//! interpolate `${VAR}` in every string, then validate without any I/O. The
//! pipeline-wide keys are checked here; each `[sources.<name>]` section is
//! handed to its source (`extract::SOURCES`), which owns its keys and checks.

pub mod secret;
pub mod vars;

pub use secret::Secret;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::NaiveDate;
use chrono_tz::Tz;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::extract::{self, http::HttpConfig, BuildCtx, SourceConfig};
use crate::schedule::times;

/// One pipeline file, as written (after `${VAR}` interpolation).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Pipeline name; keys its state in `_state/<name>/` and its meta.runs rows.
    pub name: String,
    /// IANA timezone: `dt` partitions, date windows and the schedule use it.
    pub timezone: String,
    /// Cron expression with a seconds field, evaluated in `timezone`.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Warehouse URL: a path, `file:///abs/path` or `s3://bucket/prefix`.
    #[serde(default = "default_warehouse")]
    pub warehouse: String,
    /// First local date extracted when a stream has no watermark yet.
    pub start_date: NaiveDate,
    /// Days re-extracted before the watermark on each run (late updates).
    #[serde(default = "default_lookback_days")]
    pub lookback_days: u32,
    /// Largest share of an upsert stream's stored rows that one run may mark
    /// deleted (0..1). A source that suddenly answers with nothing (`[]`)
    /// would otherwise mark everything deleted; such a run fails unless run
    /// with `--allow-mass-delete`.
    #[serde(default = "default_max_delete_share")]
    pub max_delete_share: f64,
    /// MiB of answers a run holds in memory at once: windows read ahead and
    /// not yet written, across all streams, measured as the bytes of their
    /// responses. A stream waits to start its next window while this much
    /// is held (one window per stream always goes). `max_concurrency`
    /// bounds requests at once; this bounds memory.
    #[serde(default = "default_max_buffered_mb")]
    pub max_buffered_mb: u64,
    /// HTTP client settings shared by every source.
    #[serde(default)]
    pub http: HttpConfig,
    /// Reporting settings: SLA target, business hours, holidays.
    #[serde(default)]
    pub reporting: crate::calendar::ReportingConfig,
    /// When present, every run leaves an HTML report in the warehouse.
    #[serde(default)]
    pub report: Option<crate::report::ReportConfig>,
    /// What happens to personal data before it is written; absent, it is
    /// kept as the API sends it.
    #[serde(default)]
    pub privacy: Option<crate::privacy::PrivacyConfig>,
    /// Where messages go: `[channels.NAME]` (slack, webhook).
    #[serde(default)]
    pub channels: std::collections::BTreeMap<String, crate::notify::config::ChannelConfig>,
    /// `[[alerts]]`: rules evaluated after every run.
    #[serde(default)]
    pub alerts: Vec<crate::notify::config::AlertRule>,
}

fn default_warehouse() -> String {
    "./warehouse".into()
}
fn default_lookback_days() -> u32 {
    2
}
fn default_max_delete_share() -> f64 {
    0.5
}
fn default_max_buffered_mb() -> u64 {
    64
}

/// A loaded, validated pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The file it came from (for messages).
    pub file: PathBuf,
    /// Its settings.
    pub config: PipelineConfig,
    /// `config.timezone`, parsed.
    pub tz: Tz,
    /// Its `[sources.*]` sections, parsed and validated by the sources
    /// themselves, in registry order.
    pub sources: Vec<Arc<dyn SourceConfig>>,
    /// `[privacy]`, resolved for every column; None without the section.
    pub policy: Option<Arc<crate::privacy::Policy>>,
}

impl Pipeline {
    /// What building its sources may use, for a run whose clock reads `now`
    /// (see [`extract::build_all`]).
    pub fn build_ctx(&self, now: chrono::DateTime<chrono::Utc>) -> BuildCtx<'_> {
        BuildCtx {
            http: &self.config.http,
            tz: self.tz,
            now,
            lookback_days: self.config.lookback_days,
            policy: self.policy.clone(),
        }
    }

    /// The typed config of source `name`, if the pipeline has it.
    pub fn source<T: 'static>(&self, name: &str) -> Option<&T> {
        self.sources
            .iter()
            .find(|s| s.name() == name)
            .and_then(|s| s.as_any().downcast_ref())
    }
}

impl Pipeline {
    /// Reads, interpolates (from the process environment) and validates a pipeline file.
    pub fn load(file: &Path) -> Result<Pipeline> {
        Self::load_with(file, &|name| std::env::var(name).ok())
    }

    /// As [`Pipeline::load`], with `${VAR}` looked up through `lookup`.
    pub fn load_with(file: &Path, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Pipeline> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| Error::io(format!("reading pipeline {}", file.display()), e))?;
        Self::parse(&text, file, lookup)
    }

    /// Parses pipeline text; `file` is only used in messages.
    pub fn parse(
        text: &str,
        file: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Pipeline> {
        let err = |message: String| Error::Config {
            file: file.to_path_buf(),
            message,
        };
        let mut value: toml::Value = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        // Every variable that is missing, at once (not one per attempt).
        let mut missing = Vec::new();
        interpolate_tree(&mut value, "", lookup, &mut missing);
        match missing.len() {
            0 => {}
            1 => return Err(err(missing.remove(0))),
            n => {
                return Err(err(format!(
                    "{n} values could not be resolved:\n  {}",
                    missing.join("\n  ")
                )))
            }
        }
        // Each source reads its own section; the rest is the pipeline's.
        let sections = match value.as_table_mut().and_then(|t| t.remove("sources")) {
            None => toml::map::Map::new(),
            Some(toml::Value::Table(t)) => t,
            Some(_) => {
                return Err(err(
                    "`sources` must be a table of [sources.<name>] sections".into(),
                ))
            }
        };
        let config: PipelineConfig =
            PipelineConfig::deserialize(value).map_err(|e| err(e.to_string()))?;
        let tz = validate(&config).map_err(err)?;
        let sources = parse_sources(sections).map_err(err)?;
        let policy = match &config.privacy {
            Some(p) => Some(Arc::new(p.policy().map_err(err)?)),
            None => None,
        };
        // A retention within the lookback would delete what every run reads again.
        if let Some((table, days)) = policy
            .iter()
            .flat_map(|p| &p.retention)
            .find(|(_, d)| **d <= config.lookback_days)
        {
            return Err(err(format!(
                "privacy retention of {table} ({days} days) is within lookback_days = {}: every run would read those days again; keep more days than the lookback",
                config.lookback_days
            )));
        }
        Ok(Pipeline {
            file: file.to_path_buf(),
            config,
            tz,
            sources,
            policy,
        })
    }
}

/// Resolves every `${VAR}` in the tree; what cannot be resolved (each
/// with its key) goes to `errors`.
fn interpolate_tree(
    value: &mut toml::Value,
    key: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<String>,
) {
    match value {
        toml::Value::String(s) => match vars::interpolate(s, key, lookup) {
            Ok(v) => *s = v,
            Err(e) => errors.push(e),
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_tree(item, &format!("{key}[{i}]"), lookup, errors);
            }
        }
        toml::Value::Table(table) => {
            for (k, v) in table.iter_mut() {
                let path = if key.is_empty() {
                    k.clone()
                } else {
                    format!("{key}.{k}")
                };
                interpolate_tree(v, &path, lookup, errors);
            }
        }
        _ => {}
    }
}

/// The earliest `start_date`: no chat service kept transcripts before it,
/// and the reporting calendar has a row per quarter hour from start_date on.
pub const EARLIEST_START: NaiveDate = match NaiveDate::from_ymd_opt(2000, 1, 1) {
    Some(d) => d,
    None => panic!("a valid date"),
};

/// Longest pipeline `name`.
pub const MAX_NAME_LEN: usize = 64;

/// Checks everything that can be checked without I/O; returns the parsed timezone.
fn validate(c: &PipelineConfig) -> Result<Tz, String> {
    if c.name.len() > MAX_NAME_LEN {
        return Err(format!(
            "name `{}…`: at most {MAX_NAME_LEN} characters (it names files in the warehouse)",
            c.name.chars().take(24).collect::<String>()
        ));
    }
    if c.name.is_empty()
        || !c
            .name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_".contains(ch))
    {
        return Err(format!(
            "name `{}`: use letters, digits, - and _ only",
            c.name
        ));
    }
    let tz: Tz = c.timezone.parse().map_err(|_| {
        format!(
            "timezone `{}` is not an IANA timezone (e.g. America/New_York)",
            c.timezone
        )
    })?;
    if let Some(expr) = &c.schedule {
        let cron = times::parse_cron(expr).map_err(|e| format!("schedule: {e}"))?;
        // Measured from a fixed instant, not the clock, so validation is a
        // function of the file alone; the daemon warns when a schedule (one
        // with a year field) has no fire time left.
        let from = chrono::TimeZone::from_utc_datetime(&chrono::Utc, &EARLIEST_START.into());
        if times::next_after(&cron, tz, from).is_none() {
            return Err(format!(
                "schedule: `{expr}` never fires (no such date in any year)"
            ));
        }
    }
    if !(0.0..=1.0).contains(&c.max_delete_share) {
        return Err(format!(
            "max_delete_share = {}: a share between 0 and 1",
            c.max_delete_share
        ));
    }
    c.reporting.validate()?;
    if let Some(r) = &c.report {
        r.validate()?;
    }
    let report_to = c.report.as_ref().map_or(&[][..], |r| &r.deliver_to[..]);
    crate::notify::config::validate(&c.channels, &c.alerts, report_to)?;
    if c.start_date < EARLIEST_START {
        return Err(format!(
            "start_date = {}: at the earliest {EARLIEST_START} (the reporting calendar covers every day from start_date on)",
            c.start_date
        ));
    }
    if c.lookback_days > 366 {
        return Err(format!("lookback_days = {}: at most 366", c.lookback_days));
    }
    if c.http.max_body_mb == 0 || c.http.max_file_body_mb == 0 {
        return Err("http.max_body_mb, http.max_file_body_mb: at least 1".into());
    }
    if c.http.request_timeout_secs == 0 || c.http.connect_timeout_secs == 0 {
        return Err("http.request_timeout_secs, http.connect_timeout_secs: at least 1".into());
    }
    if c.max_buffered_mb == 0 {
        return Err("max_buffered_mb: at least 1".into());
    }
    if c.http.max_attempts == 0 {
        return Err("http.max_attempts: at least 1".into());
    }
    Ok(tz)
}

/// The `[sources.<name>]` sections, each parsed by its registered source,
/// in registry order; an unknown name is an error listing the known ones.
fn parse_sources(
    mut sections: toml::map::Map<String, toml::Value>,
) -> Result<Vec<Arc<dyn SourceConfig>>, String> {
    if let Some(unknown) = sections
        .keys()
        .find(|k| !extract::SOURCES.iter().any(|r| r.name == k.as_str()))
    {
        return Err(format!(
            "[sources.{unknown}]: no such source (known: {})",
            extract::source_names().join(", ")
        ));
    }
    let sources: Vec<_> = extract::SOURCES
        .iter()
        .filter_map(|r| sections.remove(r.name).map(|v| (r.parse)(v)))
        .collect::<Result<_, _>>()?;
    if sources.is_empty() {
        return Err(format!(
            "no source configured: add a [sources.<name>] section ({})",
            extract::source_names().join(", ")
        ));
    }
    Ok(sources)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "acme"
timezone = "America/New_York"
schedule = "0 30 2 * * *"
start_date = "2025-01-01"
[sources.socialintents]
base_url = "https://api.socialintents.com/v1/api"
account_id = "${SI_ACCOUNT}"
api_token = "${SI_TOKEN}"
streams = ["chats", "widgets"]
"#;

    fn env(name: &str) -> Option<String> {
        match name {
            "SI_ACCOUNT" => Some("acct".into()),
            "SI_TOKEN" => Some("tok-123".into()),
            _ => None,
        }
    }

    #[test]
    fn parses_and_interpolates() {
        let p = Pipeline::parse(GOOD, Path::new("p.toml"), &env).unwrap();
        let si: &crate::extract::socialintents::SocialIntentsConfig =
            p.source("socialintents").unwrap();
        assert_eq!(si.account_id, "acct");
        assert_eq!(si.api_token.expose(), "tok-123");
        assert_eq!(p.config.lookback_days, 2);
        assert_eq!(p.tz, chrono_tz::America::New_York);
        assert!(
            !format!("{p:?}").contains("tok-123"),
            "secret leaked into Debug"
        );
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let text = GOOD
            .replace("lookback", "x")
            .replace("start_date", "lookbak_days = 1\nstart_date");
        let e = Pipeline::parse(&text, Path::new("pipelines/acme.toml"), &env)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("lookbak_days") && e.contains("pipelines/acme.toml"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_source_section_names_the_known_ones() {
        let text = format!("{GOOD}\n[sources.zendesk]\ntoken = \"x\"\n");
        let e = Pipeline::parse(&text, Path::new("p.toml"), &env)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[sources.zendesk]: no such source (known: socialintents, social25, crm)"),
            "{e}"
        );
        let none = "name = \"a\"\ntimezone = \"UTC\"\nstart_date = \"2025-01-01\"\n";
        let e = Pipeline::parse(none, Path::new("p.toml"), &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no source configured"), "{e}");
    }

    #[test]
    fn every_missing_variable_is_named_at_once() {
        let e = Pipeline::parse(GOOD, Path::new("p.toml"), &|_| None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("2 values could not be resolved")
                && e.contains("environment variable SI_ACCOUNT is not set")
                && e.contains("environment variable SI_TOKEN is not set"),
            "{e}"
        );
        // One missing: its message alone.
        let one = |name: &str| (name == "SI_ACCOUNT").then(|| "acct".to_string());
        let e = Pipeline::parse(GOOD, Path::new("p.toml"), &one)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("environment variable SI_TOKEN is not set")
                && !e.contains("could not be resolved"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        for (from, to, needle) in [
            ("America/New_York", "Mars/Base", "IANA"),
            ("\"chats\", \"widgets\"", "\"chatz\"", "chatz"),
            ("0 30 2 * * *", "every night", "schedule"),
        ] {
            let e = Pipeline::parse(&GOOD.replace(from, to), Path::new("p.toml"), &env)
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn a_retention_within_the_lookback_is_refused() {
        let privacy = "[privacy]\nemail = \"keep\"\nphone = \"keep\"\nretention_days = 2\n";
        let text = GOOD.replace(
            "[sources.socialintents]",
            &format!("{privacy}[sources.socialintents]"),
        );
        let e = Pipeline::parse(&text, Path::new("p.toml"), &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("within lookback_days = 2"), "{e}");
        let ok = text.replace("retention_days = 2", "retention_days = 3");
        assert!(Pipeline::parse(&ok, Path::new("p.toml"), &env).is_ok());
    }

    const S25: &str = r#"
name = "acme"
timezone = "Europe/Amsterdam"
start_date = "2025-01-01"
[sources.social25]
base_url = "https://social25.herokuapp.com/api/v1.0"
token = "${S25_TOKEN}"
tenant_id = "007be0e1-6c95-4843-8673-a76a479266f8"
streams = ["tenants", "agents", "conversations", "messages", "failed_syncs"]
"#;

    #[test]
    fn social25_alone_is_a_pipeline_and_its_limits_are_checked() {
        let env = |n: &str| (n == "S25_TOKEN").then(|| "s25-tok".to_string());
        let p = Pipeline::parse(S25, Path::new("p.toml"), &env).unwrap();
        let s: &crate::extract::social25::Social25Config = p.source("social25").unwrap();
        assert_eq!((s.window_days, s.max_concurrency), (30, 4));
        assert!(!format!("{p:?}").contains("s25-tok"));
        for (from, to, needle) in [
            (
                "streams = [",
                "window_days = 31\nstreams = [",
                "window_days = 31",
            ),
            (
                "streams = [",
                "failed_sync_type = \"sf\"\nstreams = [",
                "failed_sync_type",
            ),
            ("\"messages\",", "\"message\",", "unknown stream `message`"),
            (
                "007be0e1-6c95-4843-8673-a76a479266f8",
                "../../x",
                "tenant_id",
            ),
        ] {
            let e = Pipeline::parse(&S25.replace(from, to), Path::new("p.toml"), &env)
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn crm_is_checked() {
        let text = r#"
name = "acme"
timezone = "UTC"
start_date = "2025-01-01"
[sources.crm]
base_url = "https://crm.example.com/api/v1"
api_key = "${CRM_API_KEY}"
streams = ["companies", "contacts", "conversations"]
company_ids = ["123e4567"]
"#;
        let env = |n: &str| (n == "CRM_API_KEY").then(|| "crm-key-1".to_string());
        let p = Pipeline::parse(text, Path::new("p.toml"), &env).unwrap();
        let crm: &crate::extract::crm::CrmConfig = p.source("crm").unwrap();
        assert_eq!((crm.requests_per_minute, crm.company_ids.len()), (100, 1));
        assert!(!format!("{p:?}").contains("crm-key-1"));
        for (from, to, needle) in [
            ("\"contacts\",", "\"contact\",", "unknown stream `contact`"),
            ("\"123e4567\"", "\"a&b\"", "company_ids"),
            ("api_key", "apikey", "apikey"),
        ] {
            let e = Pipeline::parse(&text.replace(from, to), Path::new("p.toml"), &env)
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{e}");
        }
    }
}
