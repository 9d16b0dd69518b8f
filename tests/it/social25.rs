//! Social25 against the simulator: exact rows across pages, messages re-read
//! only for changed conversations, failed-sync windows within 31 days and the
//! finality horizon, faults and kill -9, rejects, pagination guards, and the
//! views. Expected figures come from the simulator's model (S25Data) and
//! chrono-tz, never from the pipeline's code.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration as StdDuration;

use chatlake::config::Pipeline;
use chatlake::pipeline::{run_once, RunOptions, RunReport};
use chatlake::simulator::social25::{BadNext, S25Conversation, AGENTS, DEMO_TENANT_ID};
use chatlake::simulator::{Faults, S25Data, SimConfig};
use chatlake::state::StateStore;
use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::support::*;

const S25_TOKEN: &str = "s25-SECRET-b41f0e";
const TZ: chrono_tz::Tz = chrono_tz::America::New_York;

/// 2025-11-07 12:00 UTC: the run's clock and the simulator's.
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 11, 7, 12, 0, 0).unwrap()
}

/// Ten UTC days of conversations around the 2025-11-02 fall-back night.
fn s25_data(per_day: u32) -> S25Data {
    let mut data = S25Data::new(d("2025-10-27"), d("2025-11-05"), per_day);
    data.token = S25_TOKEN.into();
    data.page_size = 7;
    data.now = Some(now());
    data
}

fn s25_pipeline(base_url: &str, start_date: &str, window_days: u32) -> String {
    format!(
        r#"name = "s25"
timezone = "America/New_York"
start_date = "{start_date}"
lookback_days = 2
[http]
max_attempts = 8
backoff_base_ms = 5
backoff_max_ms = 100
[sources.social25]
base_url = "{base_url}"
token = "{S25_TOKEN}"
tenant_id = "{DEMO_TENANT_ID}"
streams = ["tenants", "agents", "conversations", "messages", "failed_syncs"]
window_days = {window_days}
requests_per_minute = 600000
max_concurrency = 4
"#
    )
}

async fn s25_env(data: S25Data, start_date: &str, window_days: u32) -> Env {
    let config = SimConfig {
        social25: data,
        fault_seed: 5,
        ..empty_sim_config()
    };
    env_from(config, "s25.toml", |sim| {
        s25_pipeline(&sim.base_url("social25"), start_date, window_days)
    })
    .await
}

async fn run_at(env: &Env, at: DateTime<Utc>, streams: &[&str]) -> RunReport {
    let opts = RunOptions {
        now: Some(at),
        streams: streams.iter().map(|s| s.to_string()).collect(),
        ..RunOptions::default()
    };
    run_once(&env.pipeline, &env.wh, &opts).await.unwrap()
}

fn ok(report: &RunReport) {
    let failures: Vec<_> = report
        .failures()
        .map(|s| s.error.clone().unwrap_or_default())
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

fn local(t: DateTime<Utc>) -> String {
    t.with_timezone(&TZ).date_naive().to_string()
}

fn set(rows: Vec<Vec<String>>) -> (usize, BTreeSet<Vec<String>>) {
    let n = rows.len();
    (n, rows.into_iter().collect())
}

/// Asserts the warehouse holds exactly the simulator's conversations and
/// messages (malformed messages excluded), with the right dt, no duplicate.
async fn assert_s25_exact(env: &Env) -> (usize, usize) {
    let data = env.sim.config().social25;
    let convs = data.conversations();
    let expected: BTreeSet<Vec<String>> = convs
        .iter()
        .map(|c| {
            vec![
                c.id.clone(),
                c.created.timestamp_micros().to_string(),
                local(c.created),
                c.state.to_string(),
            ]
        })
        .collect();
    let (n, got) = set(env
        .rows("SELECT conversation_id, CAST(created_at AS BIGINT), CAST(dt AS VARCHAR), state FROM social25.conversations")
        .await);
    assert_eq!(
        n,
        expected.len(),
        "conversation rows (duplicates or losses)"
    );
    assert_eq!(got, expected, "conversations differ from the simulator's");
    let expected: BTreeSet<Vec<String>> = convs
        .iter()
        .flat_map(|c| &c.messages)
        .filter(|m| !m.malformed)
        .map(|m| {
            vec![
                m.id.clone(),
                m.conversation_id.clone(),
                m.at.timestamp_micros().to_string(),
                local(m.at),
                m.outbound.to_string(),
            ]
        })
        .collect();
    let (n, got) = set(env
        .rows("SELECT message_id, conversation_id, CAST(sent_at AS BIGINT), CAST(dt AS VARCHAR), CAST(outbound AS VARCHAR) FROM social25.messages")
        .await);
    assert_eq!(n, expected.len(), "message rows (duplicates or losses)");
    let missing: Vec<_> = expected.difference(&got).take(3).collect();
    let extra: Vec<_> = got.difference(&expected).take(3).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "messages differ: missing {missing:?}, unexpected {extra:?}"
    );
    (convs.len(), expected.len())
}

/// The bytes of each social25.conversations partition file, by `dt=` directory.
fn conversation_files(env: &Env) -> BTreeMap<String, Vec<u8>> {
    let dir = env.dir.path().join("wh/social25/conversations");
    files(&dir)
        .into_iter()
        .map(|p| {
            let dt = p
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_string();
            (dt, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// The failed syncs the simulator has with `timestamp < horizon`, as rows.
fn expected_failed(data: &S25Data, horizon: DateTime<Utc>) -> BTreeSet<Vec<String>> {
    let from = d("2025-01-01").and_hms_opt(0, 0, 0).unwrap().and_utc();
    data.failed_in(from, horizon)
        .iter()
        .map(|m| {
            vec![
                m.id.clone(),
                m.at.timestamp_micros().to_string(),
                local(m.at),
                m.failure.unwrap().to_string(),
            ]
        })
        .collect()
}

async fn assert_failed_exact(env: &Env, horizon: DateTime<Utc>) -> usize {
    let expected = expected_failed(&env.sim.config().social25, horizon);
    let (n, got) = set(env
        .rows("SELECT message_id, CAST(sent_at AS BIGINT), CAST(dt AS VARCHAR), log_message FROM social25.failed_syncs")
        .await);
    assert_eq!(n, expected.len(), "failed-sync rows");
    assert_eq!(got, expected, "failed syncs differ from the simulator's");
    n
}

fn message_requests(env: &Env) -> BTreeMap<String, u64> {
    env.sim
        .requests()
        .into_iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("social25/messages/")
                .map(|c| (c.to_string(), v))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_rows_across_pages_and_every_state() {
    let env = s25_env(s25_data(12), "2025-10-25", 4).await;
    let report = run_at(&env, now(), &[]).await;
    ok(&report);
    let (convs, messages) = assert_s25_exact(&env).await;
    let failed = assert_failed_exact(&env, now() - Duration::minutes(15)).await;
    let data = env.sim.config().social25;
    let all = data.conversations();
    // Every state was listed (the API's default is only open and auto_bot).
    let states: BTreeSet<&str> = all.iter().map(|c| c.state).collect();
    assert_eq!(
        states.len(),
        5,
        "the simulated tenant has conversations in all five states"
    );
    // Pages: one listing per state, 7 per page.
    let pages: u64 = ["OPEN", "CLOSED", "AUTO_BOT", "EXPIRED", "BLOCKED"]
        .iter()
        .map(|s| {
            (all.iter().filter(|c| c.state == *s).count() as u64)
                .div_ceil(7)
                .max(1)
        })
        .sum();
    assert_eq!(env.sim.requests()["social25/conversations"], pages);
    // Messages were asked once per conversation that has any.
    let with_messages = all.iter().filter(|c| !c.messages.is_empty()).count();
    assert_eq!(message_requests(&env).len(), with_messages);
    assert!(message_requests(&env).values().all(|n| *n == 1));
    // meta.runs: rows received equal the API's count, per stream.
    let runs = env.rows("SELECT stream, records, source_count, pages FROM meta.runs WHERE stream LIKE 'social25.%' ORDER BY stream").await;
    assert_eq!(runs.len(), 5);
    for r in &runs {
        assert_eq!(r[1], r[2], "records vs count for {}", r[0]);
    }
    let conv_run = runs
        .iter()
        .find(|r| r[0] == "social25.conversations")
        .unwrap();
    assert_eq!(conv_run[1], convs.to_string());
    assert_eq!(conv_run[3], pages.to_string());
    // Snapshots: agents, tenant, platforms without their secrets.
    assert_eq!(
        env.int("SELECT COUNT(*) FROM social25.agents").await,
        AGENTS.len() as i64
    );
    assert_eq!(env.int("SELECT COUNT(*) FROM social25.tenants").await, 1);
    assert_eq!(env.int("SELECT COUNT(*) FROM social25.platforms").await, 4);
    for f in files(&env.dir.path().join("wh")) {
        let bytes = std::fs::read(&f).unwrap();
        for needle in ["app-secret", "page-token", S25_TOKEN] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle} stored in {}",
                f.display()
            );
        }
    }
    // has_expired_us is the duration in µs: now - created, to the microsecond.
    let c = &all[0];
    let got = env
        .int(&format!(
            "SELECT has_expired_us FROM social25.conversations WHERE conversation_id = '{}'",
            c.id
        ))
        .await;
    assert_eq!(got, (now() - c.created).num_microseconds().unwrap());
    println!("social25: {convs} conversations in {pages} pages, {messages} messages, {failed} failed syncs, exact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_reads_messages_only_for_changed_conversations() {
    let env = s25_env(s25_data(12), "2025-10-25", 30).await;
    ok(&run_at(&env, now(), &[]).await);
    let before = message_requests(&env);
    let all = env.sim.config().social25.conversations();
    // Three conversations get new messages, one of them had none before.
    let mut changed: Vec<String> = [3usize, 40, 77]
        .iter()
        .map(|i| all[*i].id.clone())
        .collect();
    let empty = all
        .iter()
        .find(|c| c.messages.is_empty())
        .expect("some conversation has no messages");
    changed.push(empty.id.clone());
    let later = now() + Duration::hours(1);
    env.sim.update(|c| {
        for id in &changed {
            c.social25.appended.insert(id.clone(), 2);
        }
        c.social25.appended_after = Some(now() + Duration::minutes(5));
        c.social25.now = Some(later);
    });
    let files_before = conversation_files(&env);
    let second = run_at(&env, later, &[]).await;
    ok(&second);
    // Only the partitions of the changed conversations are rewritten (every
    // conversation's `has_expired` grew by an hour, which alone is no
    // change); the other files stay byte for byte.
    let files_after = conversation_files(&env);
    let rewritten: BTreeSet<String> = files_after
        .iter()
        .filter(|(dt, bytes)| files_before.get(*dt) != Some(*bytes))
        .map(|(dt, _)| dt.clone())
        .collect();
    let changed_days: BTreeSet<String> = all
        .iter()
        .filter(|c| changed.contains(&c.id))
        .map(|c| format!("dt={}", local(c.created)))
        .collect();
    assert_eq!(rewritten, changed_days, "rewritten conversation partitions");
    assert_eq!(files_after.len(), files_before.len());
    let in_changed_days = all
        .iter()
        .filter(|c| changed_days.contains(&format!("dt={}", local(c.created))))
        .count() as u64;
    let conversations = second
        .streams
        .iter()
        .find(|s| s.stream == "social25.conversations")
        .unwrap();
    assert_eq!(conversations.rows_written, in_changed_days);
    let after = message_requests(&env);
    let asked: BTreeSet<String> = after
        .iter()
        .filter(|(k, v)| before.get(*k).copied().unwrap_or(0) < **v)
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(
        asked,
        changed.iter().cloned().collect::<BTreeSet<_>>(),
        "only the changed conversations were re-read"
    );
    assert!(asked
        .iter()
        .all(|k| after[k] - before.get(k).copied().unwrap_or(0) == 1));
    let (_, messages) = assert_s25_exact(&env).await;
    // A third run with nothing new reads no messages at all.
    let quiet = later + Duration::hours(1);
    env.sim.update(|c| c.social25.now = Some(quiet));
    let report = run_at(&env, quiet, &["social25.messages"]).await;
    ok(&report);
    assert_eq!(
        message_requests(&env),
        after,
        "no message requests when nothing changed"
    );
    assert_eq!(report.streams[0].scope, "0 changed");
    // A whole night with nothing new writes no conversation partition.
    let files_before = conversation_files(&env);
    let night = run_at(&env, quiet, &[]).await;
    ok(&night);
    assert_eq!(conversation_files(&env), files_before, "files untouched");
    let conversations = night
        .streams
        .iter()
        .find(|s| s.stream == "social25.conversations")
        .unwrap();
    assert_eq!(
        (conversations.records, conversations.rows_written),
        (all.len() as u64, 0)
    );
    // The cursor stays small: only conversations near the latest message.
    let state = StateStore::new(&env.wh, "s25")
        .load("social25.messages")
        .await
        .unwrap()
        .unwrap()
        .state;
    let recent = state.cursor.as_ref().unwrap()["recent"]
        .as_object()
        .unwrap()
        .len();
    assert!(
        recent < all.len() / 2,
        "cursor holds {recent} of {} conversations",
        all.len()
    );
    println!(
        "changed-only: {} conversations re-read, {messages} messages exact, cursor holds {recent}",
        asked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sync_windows_stay_within_31_days_and_the_finality_horizon() {
    // 2025-10-04..: the first 30-day window holds the 25-hour fall-back day.
    let env = s25_env(s25_data(12), "2025-10-04", 30).await;
    ok(&run_at(&env, now(), &["social25.failed_syncs"]).await);
    let horizon = now() - Duration::minutes(15);
    // Windows are read a few at once: in the order of their dates.
    let mut windows = env.sim.failed_sync_windows();
    windows.sort();
    assert_eq!(windows.len(), 2, "{windows:?}");
    for (from, till) in &windows {
        assert!(
            *till - *from <= Duration::days(31),
            "window {from}..{till} is over 31 days"
        );
        assert!(
            *till <= horizon,
            "window {from}..{till} asks past the finality horizon {horizon}"
        );
    }
    assert_eq!(
        windows[0].1 - windows[0].0,
        Duration::days(30) + Duration::hours(1),
        "30 local days across fall-back"
    );
    assert_eq!(
        windows[1].1, horizon,
        "the last window stops exactly at now - 15 min"
    );
    assert_failed_exact(&env, horizon).await;
    // 11:45 UTC on Nov 7 is 06:45 in New York: Nov 6 is final, Nov 7 is not.
    let state = || async {
        StateStore::new(&env.wh, "s25")
            .load("social25.failed_syncs")
            .await
            .unwrap()
            .unwrap()
            .state
    };
    assert_eq!(state().await.watermark, Some(d("2025-11-06")));
    assert!(
        !env.sim.requests().keys().any(|k| k.contains("type=")),
        "type is only sent when configured"
    );
    // A day later the rest of Nov 7 is final; the re-run starts at watermark - lookback.
    let later = now() + Duration::days(1);
    env.sim.update(|c| c.social25.now = Some(later));
    ok(&run_at(&env, later, &["social25.failed_syncs"]).await);
    let second = &env.sim.failed_sync_windows()[2..];
    assert_eq!(second.len(), 1);
    assert_eq!(
        second[0].0,
        chatlake::simulator::clock::day_start(d("2025-11-04"), TZ)
    );
    assert_failed_exact(&env, later - Duration::minutes(15)).await;
    assert_eq!(state().await.watermark, Some(d("2025-11-07")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sync_type_is_passed_through() {
    let env = s25_env(s25_data(4), "2025-11-01", 30).await;
    let text = s25_pipeline(&env.sim.base_url("social25"), "2025-11-01", 30).replace(
        "window_days",
        "failed_sync_type = \"salesforce\"\nwindow_days",
    );
    std::fs::write(&env.pipeline_file, text).unwrap();
    let pipeline = Pipeline::load(&env.pipeline_file).unwrap();
    let opts = RunOptions {
        now: Some(now()),
        streams: vec!["social25.failed_syncs".into()],
        ..RunOptions::default()
    };
    ok(&run_once(&pipeline, &env.wh, &opts).await.unwrap());
    assert_eq!(
        env.sim.requests().get("social25/failed?type=salesforce"),
        Some(&1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_429s_and_500s_still_ends_exact() {
    let env = s25_env(s25_data(8), "2025-10-25", 30).await;
    env.sim.set_faults(Faults {
        rate_429: 0.15,
        rate_500: 0.1,
        retry_after_secs: 0,
        ..Faults::default()
    });
    let report = run_at(&env, now(), &[]).await;
    ok(&report);
    let retries: u64 = report.streams.iter().map(|s| s.traffic.retries).sum();
    assert!(env.sim.faults_injected() > 10);
    assert_eq!(retries, env.sim.faults_injected());
    assert_s25_exact(&env).await;
    assert_failed_exact(&env, now() - Duration::minutes(15)).await;
}

#[test]
fn killed_mid_run_then_rerun_ends_exact() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut data = s25_data(30);
    data.now = None; // the binary runs on the wall clock; all the data is in the past
    data.page_size = 20;
    let env = rt.block_on(s25_env(data, "2025-10-25", 30));
    env.sim.set_faults(Faults {
        latency_ms: 15,
        ..Faults::default()
    });
    let mut kills = kill_runs_after(&env, &[], &[600, 1400]);
    // And once between message chunks: the moment the first chunk's cursor is
    // saved (300 conversations make two chunks), the second is being merged.
    let cursor_file = env.dir.path().join("wh/_state/s25/social25.messages.json");
    let _ = std::fs::remove_file(&cursor_file);
    let mut child = spawn_run(&env, &[]);
    let started = std::time::Instant::now();
    while !cursor_file.exists()
        && started.elapsed() < StdDuration::from_secs(60)
        && child.try_wait().unwrap().is_none()
    {
        std::thread::sleep(StdDuration::from_millis(2));
    }
    if child.try_wait().unwrap().is_none() {
        child.kill().unwrap();
        kills += 1;
    }
    child.wait().unwrap();
    assert!(kills >= 2, "the runs finished before they could be killed");
    let mid = rt
        .block_on(StateStore::new(&env.wh, "s25").load("social25.messages"))
        .unwrap()
        .expect("first chunk's cursor");
    let recent = mid.state.cursor.as_ref().unwrap()["recent"]
        .as_object()
        .unwrap()
        .len();
    assert!(recent > 0);
    env.sim.set_faults(Faults::default());
    assert!(spawn_run(&env, &[]).wait().unwrap().success());
    let (convs, messages) = rt.block_on(assert_s25_exact(&env));
    rt.block_on(assert_failed_exact(
        &env,
        Utc::now() - Duration::minutes(15),
    ));
    println!(
        "social25 kill -9: {kills} kills, then {convs} conversations and {messages} messages exact"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_message_lands_in_meta_rejects() {
    let mut data = s25_data(12);
    data.malformed_every = 11;
    let env = s25_env(data, "2025-10-25", 30).await;
    let report = run_at(&env, now(), &[]).await;
    ok(&report);
    let malformed: Vec<String> = env
        .sim
        .config()
        .social25
        .conversations()
        .iter()
        .flat_map(|c| {
            c.messages
                .iter()
                .filter(|m| m.malformed)
                .map(|m| m.id.clone())
        })
        .collect();
    assert!(malformed.len() >= 3, "{malformed:?}");
    assert_s25_exact(&env).await; // every other message landed
    let rejects = env.rows("SELECT table_name, reason, raw_json FROM meta.rejects WHERE stream = 'social25.messages'").await;
    assert_eq!(rejects.len(), malformed.len());
    for id in &malformed {
        let r = rejects
            .iter()
            .find(|r| r[2].contains(id.as_str()))
            .unwrap_or_else(|| panic!("{id} not in meta.rejects"));
        assert_eq!(r[0], "social25.messages");
        assert!(
            r[1].contains("timestamp") && r[1].contains("conversation "),
            "{}",
            r[1]
        );
    }
    let run = env
        .rows("SELECT rejects FROM meta.runs WHERE stream = 'social25.messages'")
        .await;
    assert_eq!(run[0][0], malformed.len().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_loops_foreign_hosts_and_count_mismatches_stop_with_a_clear_error() {
    let mut data = s25_data(1);
    data.page_size = 2; // 5 agents: 3 pages
    let env = s25_env(data, "2025-10-25", 30).await;
    type Setup = Box<dyn Fn(&mut S25Data)>;
    let cases: [(&str, Setup, &str, u64); 3] = [
        (
            "repeat",
            Box::new(|d| d.bad_next = Some(BadNext::Repeat)),
            "repeats a page",
            1,
        ),
        (
            "foreign",
            Box::new(|d| d.bad_next = Some(BadNext::ForeignHost)),
            "another server (http://collector.example)",
            1,
        ),
        (
            "count",
            Box::new(|d| d.count_skew = 1),
            "reported count 6 but its 3 page(s) held 5 rows twice",
            6,
        ),
    ];
    for (name, setup, needle, requests) in cases {
        env.sim.update(|c| {
            c.social25.bad_next = None;
            c.social25.count_skew = 0;
            setup(&mut c.social25);
        });
        let before = env
            .sim
            .requests()
            .get("social25/agents")
            .copied()
            .unwrap_or(0);
        let report = run_at(&env, now(), &["social25.agents"]).await;
        let err = report.streams[0]
            .error
            .clone()
            .unwrap_or_else(|| panic!("{name}: the stream must fail"));
        assert!(
            err.contains(needle) && err.contains("social25.agents"),
            "{name}: {err}"
        );
        assert!(!err.contains(S25_TOKEN));
        assert_eq!(
            env.sim.requests()["social25/agents"] - before,
            requests,
            "{name}: requests"
        );
        assert!(
            !env.dir.path().join("wh/social25/agents").exists(),
            "{name}: nothing committed"
        );
    }
}

/// Per conversation, what the views must say (computed here from the model).
struct Expect {
    dt: String,
    channel: String,
    agent: String,
    missed: bool,
    first_response: Option<f64>,
}

fn expect(c: &S25Conversation) -> Expect {
    let first_in = c
        .messages
        .iter()
        .filter(|m| !m.outbound)
        .map(|m| m.at)
        .min();
    let first_out = first_in.and_then(|fi| {
        c.messages
            .iter()
            .filter(|m| m.outbound && m.at >= fi)
            .map(|m| m.at)
            .min()
    });
    let agent = c.agent_id.as_ref().map_or("NULL".to_string(), |id| {
        let a = AGENTS.iter().find(|a| a.0 == id).unwrap();
        format!("{} {}", a.2, a.3)
    });
    Expect {
        dt: local(c.created),
        channel: c.platform_source.to_string(),
        agent,
        missed: first_in.is_some() && !c.messages.iter().any(|m| m.outbound),
        first_response: first_in
            .zip(first_out)
            .map(|(i, o)| (o - i).num_microseconds().unwrap() as f64 / 1e6),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_equal_figures_computed_from_the_simulator() {
    let env = s25_env(s25_data(15), "2025-10-25", 30).await;
    ok(&run_at(&env, now(), &[]).await);
    let data = env.sim.config().social25;
    let convs: Vec<Expect> = data.conversations().iter().map(expect).collect();
    // Missed-chat rate per day and channel.
    let mut rate: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    for e in &convs {
        let r = rate.entry((e.dt.clone(), e.channel.clone())).or_default();
        r.0 += 1;
        r.1 += e.missed as i64;
    }
    let got = env.rows("SELECT CAST(dt AS VARCHAR), channel, chats, missed_chats FROM reporting.missed_chat_rate WHERE source = 'social25'").await;
    let got: BTreeMap<(String, String), (i64, i64)> = got
        .into_iter()
        .map(|r| {
            (
                (r[0].clone(), r[1].clone()),
                (r[2].parse().unwrap(), r[3].parse().unwrap()),
            )
        })
        .collect();
    assert_eq!(got, rate);
    assert!(
        rate.values().map(|v| v.1).sum::<i64>() > 0,
        "some conversations are missed"
    );
    // Response times per day and agent: answered count and the mean first response.
    let mut times: BTreeMap<(String, String), (i64, Vec<f64>)> = BTreeMap::new();
    for e in convs.iter().filter(|e| !e.missed) {
        let t = times.entry((e.dt.clone(), e.agent.clone())).or_default();
        t.0 += 1;
        t.1.extend(e.first_response);
    }
    let got = env.rows("SELECT CAST(dt AS VARCHAR), agent_name, answered_chats, avg_first_response_seconds FROM reporting.response_times WHERE source = 'social25'").await;
    assert_eq!(got.len(), times.len());
    for r in got {
        let (n, values) = &times[&(r[0].clone(), r[1].clone())];
        assert_eq!(r[2], n.to_string(), "{r:?}");
        if values.is_empty() {
            assert_eq!(r[3], "NULL");
        } else {
            let avg = values.iter().sum::<f64>() / values.len() as f64;
            let got: f64 = r[3].parse().unwrap();
            assert!((got - avg).abs() < 1e-6, "{r:?}: expected {avg}");
        }
    }
    // Failed syncs per day and reason.
    let mut failed: BTreeMap<(String, String), i64> = BTreeMap::new();
    for row in expected_failed(&data, now() - Duration::minutes(15)) {
        *failed.entry((row[2].clone(), row[3].clone())).or_default() += 1;
    }
    let got = env.rows("SELECT CAST(dt AS VARCHAR), log_message, failed_messages FROM reporting.failed_syncs_daily").await;
    let got: BTreeMap<(String, String), i64> = got
        .into_iter()
        .map(|r| ((r[0].clone(), r[1].clone()), r[2].parse().unwrap()))
        .collect();
    assert_eq!(got, failed);
    // Both sources share reporting.chats.
    let sources = env
        .rows("SELECT DISTINCT source FROM reporting.chats")
        .await;
    assert_eq!(sources, vec![vec!["social25".to_string()]]);
}

/// The pipeline of `s25_env` with an adaptive rate (no requests_per_minute)
/// and Retry-After honoured (up to 2 s).
fn adaptive(text: String) -> String {
    text.replace("requests_per_minute = 600000\n", "")
        .replace("backoff_max_ms = 100", "backoff_max_ms = 2000")
        .replace("max_concurrency = 4", "max_concurrency = 8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_server_limit_the_adaptive_rate_ends_exact_with_few_429s() {
    let env = s25_env(s25_data(20), "2025-10-25", 30)
        .await
        .with_pipeline(adaptive);
    let limit = 15.0;
    env.sim.set_faults(Faults {
        limit_rps: limit,
        latency_ms: 20,
        ..Faults::default()
    });
    let t = std::time::Instant::now();
    let report = run_at(&env, now(), &[]).await;
    let secs = t.elapsed().as_secs_f64();
    ok(&report);
    assert_s25_exact(&env).await;
    let (arrivals, limited) = env.sim.traffic("social25");
    let share = limited as f64 / arrivals.len() as f64;
    println!(
        "limit {limit}/s: {} requests in {secs:.1} s ({:.1}/s), {limited} answered 429 ({:.1} %)",
        arrivals.len(),
        arrivals.len() as f64 / secs,
        share * 100.0
    );
    assert!(arrivals.len() > 150, "{} requests", arrivals.len());
    assert!(limited > 0, "the run never reached the server's limit");
    let most = env.sim.most_in_flight("social25");
    assert!(most <= 8, "{most} requests in flight at once");
    assert!(
        share < 0.05,
        "{limited} of {} requests were 429",
        arrivals.len()
    );
    // meta.runs counts what the server saw, stream by stream.
    let row = env
        .rows(&format!(
            "SELECT SUM(requests), SUM(throttled), SUM(retries) FROM meta.runs WHERE run_id = '{}'",
            report.run_id
        ))
        .await;
    assert_eq!(
        row[0],
        vec![
            arrivals.len().to_string(),
            limited.to_string(),
            limited.to_string()
        ]
    );
    let waited: f64 = report
        .streams
        .iter()
        .map(|s| s.traffic.waited.as_secs_f64())
        .sum();
    assert!(
        limited == 0 || waited >= 0.9 * limited as f64,
        "Retry-After: 1 honoured: waited {waited:.2} s for {limited} 429s"
    );
}

/// Two chunks of conversations are fetched at once (the next starts while
/// the current one finishes), yet the server never sees more than
/// `max_concurrency` message requests at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_fetched_ahead_stay_within_max_concurrency() {
    let env = s25_env(s25_data(45), "2025-10-25", 30).await;
    let conversations = env.sim.config().social25.conversations().len();
    assert!(
        conversations > 400,
        "{conversations}: more than two chunks of 200"
    );
    env.sim.set_faults(Faults {
        latency_ms: 10,
        ..Faults::default()
    });
    ok(&run_at(&env, now(), &[]).await);
    assert_s25_exact(&env).await;
    assert_eq!(env.sim.most_in_flight("social25"), 4, "max_concurrency = 4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_minute_is_a_hard_cap_as_the_server_counts() {
    let env = s25_env(s25_data(6), "2025-10-25", 30)
        .await
        .with_pipeline(|t| t.replace("requests_per_minute = 600000", "requests_per_minute = 1200"));
    let report = run_at(&env, now(), &[]).await;
    ok(&report);
    assert_s25_exact(&env).await;
    let (arrivals, _) = env.sim.traffic("social25");
    assert!(arrivals.len() > 60, "{} requests", arrivals.len());
    // 1200 a minute is one every 50 ms: any 21 arrivals in a row span at
    // least a second (so no minute holds more than 1200), allowing 15 ms
    // of scheduling jitter at the server.
    let tightest = arrivals
        .windows(21)
        .map(|w| w[20].duration_since(w[0]))
        .min()
        .unwrap();
    println!(
        "{} requests; tightest 21 in a row: {tightest:?}",
        arrivals.len()
    );
    assert!(
        tightest >= std::time::Duration::from_millis(985),
        "{tightest:?}"
    );
    // A stream of 21 requests or more averages at most 21 in its first
    // second and 20 a second after.
    for s in report.streams.iter().filter(|s| s.traffic.requests >= 21) {
        let most = 20.0 * (s.traffic.requests as f64 + 20.0) / s.traffic.requests as f64;
        assert!(
            s.requests_per_second() <= most,
            "{}: {}",
            s.stream,
            s.requests_per_second()
        );
    }
}
