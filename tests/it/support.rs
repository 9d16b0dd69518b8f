//! Test harness: a simulator, a temporary warehouse and a pipeline pointing
//! at both, plus the expected figures computed straight from the simulator's
//! records (never from the pipeline's own code).

use std::collections::BTreeMap;
use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::record_batch::RecordBatch;
use chatlake::config::Pipeline;
use chatlake::pipeline::{run_once, RunOptions, RunReport};
use chatlake::query;
use chatlake::simulator::clock::{local_date, local_range};
use chatlake::simulator::data::SimChat;
use chatlake::simulator::{SiData, SimConfig, Simulator};
use chatlake::sink::Warehouse;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

pub const TOKEN: &str = "tok-SECRET-7f3a9c";

pub fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

pub struct Env {
    pub sim: Simulator,
    pub dir: tempfile::TempDir,
    pub wh: Warehouse,
    pub pipeline: Pipeline,
    pub pipeline_file: std::path::PathBuf,
}

/// Simulated account: chats from 2025-10-25 to 2025-11-10 (the fall-back
/// night of 2025-11-02 inside), `per_day` regular chats per day.
pub fn data(per_day: u32) -> SiData {
    SiData::new(d("2025-10-25"), d("2025-11-10"), per_day)
}

pub fn pipeline_text(base_url: &str, token: &str, window_days: u32, extra: &str) -> String {
    format!(
        r#"name = "test"
timezone = "America/New_York"
schedule = "0 30 2 * * *"
start_date = "2025-10-27"
lookback_days = 2
[http]
max_attempts = 8
backoff_base_ms = 5
backoff_max_ms = 100
connect_timeout_secs = 5
request_timeout_secs = 30
[sources.socialintents]
base_url = "{base_url}"
account_id = "acct"
api_token = "{token}"
streams = ["chats", "missed_chats", "offline_messages", "contacts", "widgets"]
window_days = {window_days}
requests_per_minute = 60000
{extra}"#
    )
}

pub async fn env_with(data: SiData, window_days: u32) -> Env {
    env_with_extra(data, window_days, "").await
}

/// As [`env_with`], with `extra` lines in `[sources.socialintents]`.
pub async fn env_with_extra(data: SiData, window_days: u32, extra: &str) -> Env {
    let config = SimConfig {
        socialintents: data,
        fault_seed: 11,
        ..empty_sim_config()
    };
    env_from(config, "test.toml", |sim| {
        pipeline_text(&sim.base_url("socialintents"), TOKEN, window_days, extra)
    })
    .await
}

/// A simulator config that serves nothing yet: each test sets its source's data.
pub fn empty_sim_config() -> SimConfig {
    SimConfig {
        account_id: "acct".into(),
        api_token: TOKEN.into(),
        fault_seed: 11,
        ..SimConfig::default()
    }
}

/// Starts a simulator with `config`, writes the pipeline `text(&sim)` to
/// `<tempdir>/<file_name>`, and opens the warehouse `<tempdir>/wh`.
pub async fn env_from(
    config: SimConfig,
    file_name: &str,
    text: impl FnOnce(&Simulator) -> String,
) -> Env {
    let sim = Simulator::start(config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pipeline_file = dir.path().join(file_name);
    std::fs::write(&pipeline_file, text(&sim)).unwrap();
    let pipeline = Pipeline::load(&pipeline_file).unwrap();
    let wh = Warehouse::open(dir.path().join("wh").to_str().unwrap()).unwrap();
    Env {
        sim,
        dir,
        wh,
        pipeline,
        pipeline_file,
    }
}

/// "Now" at noon UTC the day after `day`: every window up to `day` is in the past.
pub fn now_after(day: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.succ_opt().unwrap().and_hms_opt(12, 0, 0).unwrap())
}

impl Env {
    /// The same account and warehouse, with its pipeline file rewritten by
    /// `edit` and loaded again.
    pub fn with_pipeline(self, edit: impl FnOnce(String) -> String) -> Env {
        let text = edit(std::fs::read_to_string(&self.pipeline_file).unwrap());
        std::fs::write(&self.pipeline_file, text).unwrap();
        Env {
            pipeline: Pipeline::load(&self.pipeline_file).unwrap(),
            ..self
        }
    }

    pub async fn run(&self, from: Option<&str>, to: &str) -> RunReport {
        let opts = RunOptions {
            from: from.map(d),
            to: Some(d(to)),
            now: Some(now_after(d(to))),
            ..RunOptions::default()
        };
        run_once(&self.pipeline, &self.wh, &opts).await.unwrap()
    }

    pub fn tz(&self) -> Tz {
        self.pipeline.tz
    }

    /// The chats the simulator serves for local dates from..=to (its truth).
    pub fn served_chats(&self, from: &str, to: &str) -> Vec<SimChat> {
        let (a, b) = local_range(d(from), d(to), self.tz());
        self.sim.config().socialintents.chats_in(a, b)
    }

    pub async fn sql(&self, q: &str) -> Vec<RecordBatch> {
        let ctx = query::session(&self.wh).await.unwrap();
        query::run(&ctx, q)
            .await
            .unwrap_or_else(|e| panic!("{q}: {e}"))
    }

    pub async fn int(&self, q: &str) -> i64 {
        let b = self.sql(q).await;
        let col = b[0].column(0);
        arrow::compute::cast(col, &arrow::datatypes::DataType::Int64)
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0)
    }

    /// Rows of a query as strings (every column cast to text), for set comparison.
    pub async fn rows(&self, q: &str) -> Vec<Vec<String>> {
        batch_rows(&self.sql(q).await)
    }

    /// Asserts the warehouse holds exactly the served chats and messages of
    /// local dates from..=to: same ids, same instants, right dt, no duplicate.
    pub async fn assert_exact(&self, from: &str, to: &str) -> usize {
        let served: Vec<SimChat> = self
            .served_chats(from, to)
            .into_iter()
            .filter(|c| !c.malformed)
            .collect();
        let tz = self.tz();
        let expected: BTreeMap<String, (i64, String, i64)> = served
            .iter()
            .map(|c| {
                (
                    c.id.clone(),
                    (
                        c.start.timestamp_micros(),
                        local_date(c.start, tz).to_string(),
                        c.visits,
                    ),
                )
            })
            .collect();
        let got_rows = self
            .rows(&format!(
                "SELECT chat_id, CAST(started_at AS BIGINT) AS t, CAST(dt AS VARCHAR) AS d, visits FROM socialintents.chats \
                 WHERE dt BETWEEN DATE '{from}' AND DATE '{to}'"
            ))
            .await;
        assert_eq!(
            got_rows.len(),
            expected.len(),
            "row count (duplicates or losses)"
        );
        let got: BTreeMap<String, (i64, String, i64)> = got_rows
            .into_iter()
            .map(|r| {
                (
                    r[0].clone(),
                    (r[1].parse().unwrap(), r[2].clone(), r[3].parse().unwrap()),
                )
            })
            .collect();
        assert_eq!(got.len(), expected.len(), "duplicate chat ids");
        let diff: Vec<_> = expected
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(v))
            .map(|(k, v)| format!("{k}: expected {v:?}, got {:?}", got.get(k)))
            .take(5)
            .collect();
        assert!(
            diff.is_empty(),
            "chats differ from the simulator's:\n{}",
            diff.join("\n")
        );
        let messages: usize = served.iter().map(|c| c.messages.len()).sum();
        let got_messages = self
            .int(&format!("SELECT COUNT(*) FROM socialintents.chat_messages WHERE dt BETWEEN DATE '{from}' AND DATE '{to}'"))
            .await;
        let distinct = self
            .int(&format!(
                "SELECT COUNT(*) FROM (SELECT DISTINCT chat_id, seq FROM socialintents.chat_messages WHERE dt BETWEEN DATE '{from}' AND DATE '{to}')"
            ))
            .await;
        assert_eq!(got_messages as usize, messages, "message count");
        assert_eq!(distinct as usize, messages, "duplicate messages");
        expected.len()
    }
}

/// Every file under `dir`, recursively.
pub fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Spawns `chatlake run --pipeline <file> --warehouse <wh>` (plus `args`),
/// quietly, for tests that kill it. Whole-account reads (Social25
/// conversations, CRM) spill to disk every 25 rows, so that a kill can land
/// between spills and the re-run takes the spilled path.
pub fn spawn_run(env: &Env, args: &[&str]) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_chatlake"))
        .env("CHATLAKE_SPILL_ROWS", "25")
        .args(["run", "--pipeline", env.pipeline_file.to_str().unwrap()])
        .args(args)
        .arg("--warehouse")
        .arg(env.dir.path().join("wh"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Starts a run for each delay and SIGKILLs it after that many ms (if it is
/// still running); returns how many were killed.
pub fn kill_runs_after(env: &Env, args: &[&str], delays_ms: &[u64]) -> usize {
    let mut kills = 0;
    for ms in delays_ms {
        let mut child = spawn_run(env, args);
        std::thread::sleep(std::time::Duration::from_millis(*ms));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
    }
    kills
}

/// The binary with `args`, without CHATLAKE_WAREHOUSE.
pub fn chatlake_command(args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_chatlake"));
    cmd.args(args).env_remove("CHATLAKE_WAREHOUSE");
    cmd
}

/// (exit code, stdout, stderr) of a finished process.
fn outcome(out: std::process::Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// `chatlake <args>` (without CHATLAKE_WAREHOUSE): (exit code, stdout, stderr).
pub fn chatlake(args: &[&str]) -> (i32, String, String) {
    outcome(chatlake_command(args).output().unwrap())
}

/// `chatlake query --warehouse wh --format csv sql`.
pub fn query_csv(wh: &str, sql: &str) -> (i32, String, String) {
    chatlake(&["query", "--warehouse", wh, "--format", "csv", sql])
}

/// As [`chatlake`], with these environment variables set.
pub fn chatlake_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    outcome(
        chatlake_command(args)
            .envs(env.iter().copied())
            .output()
            .unwrap(),
    )
}

/// As [`chatlake`], with `input` (text, or any bytes) on stdin.
pub fn chatlake_stdin(args: &[&str], input: impl AsRef<[u8]>) -> (i32, String, String) {
    use std::io::Write;
    let mut child = chatlake_command(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_ref())
        .unwrap();
    outcome(child.wait_with_output().unwrap())
}

/// A served chat's wait for a first response: (the customer's first message,
/// the first agent message at or after it); None when nobody replied.
pub fn wait(c: &SimChat) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let first_in = c
        .messages
        .iter()
        .filter(|m| m.kind == "messageToAgent")
        .map(|m| m.ts_ms)
        .min()?;
    let reply = c
        .messages
        .iter()
        .filter(|m| m.kind == "messageToVisitor" && m.ts_ms >= first_in)
        .map(|m| m.ts_ms)
        .min()?;
    let t = |ms: i64| DateTime::from_timestamp_millis(ms).expect("in range");
    Some((t(first_in), t(reply)))
}

/// Rows of batches as strings (every column cast to text, null as "NULL").
pub fn batch_rows(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for b in batches {
        let cols: Vec<_> = b
            .columns()
            .iter()
            .map(|c| arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8).unwrap())
            .collect();
        for i in 0..b.num_rows() {
            out.push(
                cols.iter()
                    .map(|c| {
                        if c.is_null(i) {
                            "NULL".to_string()
                        } else {
                            c.as_string::<i32>().value(i).to_string()
                        }
                    })
                    .collect(),
            );
        }
    }
    out
}

/// HMAC-SHA256 of `msg` under `key`, in lower-case hex: computed here, with
/// the hmac crate directly, to check what chatlake wrote or signed.
pub fn hmac_sha256_hex(key: &str, msg: &str) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(msg.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A clock for the daemon that jumps straight to each slot; past `end` it
/// stops the daemon.
pub struct FakeClock {
    pub now: std::sync::Mutex<chrono::DateTime<chrono::Utc>>,
    pub end: chrono::DateTime<chrono::Utc>,
}

impl chatlake::schedule::Clock for FakeClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        *self.now.lock().unwrap()
    }
    fn sleep_until<'a>(
        &'a self,
        t: chrono::DateTime<chrono::Utc>,
        stop: &'a std::sync::atomic::AtomicBool,
    ) -> futures::future::BoxFuture<'a, ()> {
        Box::pin(async move {
            if t > self.end {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            } else {
                *self.now.lock().unwrap() = t;
            }
        })
    }
}
