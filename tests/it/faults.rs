//! Faults: 429/500 storms, Retry-After, truncated bodies, API errors, bad
//! credentials, and a `chatlake run` process killed with SIGKILL mid-run.
//! Each ends by comparing the warehouse with the simulator's records.

use std::process::Command;
use std::time::{Duration, Instant};

use chatlake::simulator::Faults;
use chatlake::state::StateStore;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_429s_and_500s_ends_with_exactly_the_right_rows() {
    let env = env_with(data(20), 1).await;
    env.sim.set_faults(Faults { rate_429: 0.2, rate_500: 0.1, retry_after_secs: 0, ..Faults::default() });
    let report = env.run(Some("2025-10-27"), "2025-11-06").await;
    assert_eq!(report.failures().count(), 0, "{:?}", report.failures().collect::<Vec<_>>());
    let rows = env.assert_exact("2025-10-27", "2025-11-06").await;
    let retries: u64 = report.streams.iter().map(|s| s.retries).sum();
    let injected = env.sim.faults_injected();
    assert!(injected > 10, "faults injected: {injected}");
    assert_eq!(retries, injected, "every injected fault was retried once");
    let logged = env.int("SELECT SUM(retries) FROM meta.runs").await as u64;
    assert_eq!(logged, retries, "meta.runs records the retries");
    println!("429/500 storm: {injected} faults injected, {retries} retries, {rows} chats checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_json_bodies_are_retried() {
    let env = env_with(data(20), 3).await;
    env.sim.set_faults(Faults { truncate_rate: 0.3, ..Faults::default() });
    let report = env.run(Some("2025-10-27"), "2025-11-04").await;
    assert_eq!(report.failures().count(), 0);
    assert!(env.sim.faults_injected() > 0);
    env.assert_exact("2025-10-27", "2025-11-04").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_and_attempts_are_bounded() {
    let env = env_with(data(5), 7).await;
    let text = pipeline_text(&env.sim.socialintents_url(), TOKEN, 7, "").replace("max_attempts = 8", "max_attempts = 2");
    std::fs::write(&env.pipeline_file, text).unwrap();
    let pipeline = chatlake::config::Pipeline::load(&env.pipeline_file).unwrap();
    env.sim.set_faults(Faults { rate_429: 1.0, retry_after_secs: 1, ..Faults::default() });
    let opts = chatlake::pipeline::RunOptions {
        from: Some(d("2025-10-27")),
        to: Some(d("2025-10-28")),
        streams: vec!["socialintents.chats".into()],
        now: Some(now_after(d("2025-10-28"))),
        ..Default::default()
    };
    let started = Instant::now();
    let report = chatlake::pipeline::run_once(&pipeline, &env.wh, &opts).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After: 1 was not waited for");
    let err = report.streams[0].error.clone().expect("stream must fail");
    assert!(err.contains("429") && err.contains("2 attempts") && err.contains("socialintents.chats"), "{err}");
    assert!(err.contains("2025-10-27..2025-10-28"), "error names the window: {err}");
    assert_eq!(env.sim.requests()["socialintents/missedchats"], 2);
    // Nothing committed, so no watermark.
    assert!(StateStore::new(&env.wh, "test").load("socialintents.chats").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_error_status_fails_the_stream_with_its_message() {
    let env = env_with(data(5), 7).await;
    env.sim.set_faults(Faults { api_error: Some("Account suspended".into()), ..Faults::default() });
    let report = env.run(Some("2025-10-27"), "2025-10-28").await;
    let err = report.streams[0].error.clone().unwrap();
    assert!(err.contains("Account suspended"), "{err}");
    let status = env.rows("SELECT status, error FROM meta.runs WHERE stream = 'socialintents.chats'").await;
    assert_eq!(status[0][0], "failed");
    assert!(status[0][1].contains("Account suspended"));
}

#[test]
fn bad_credentials_fail_at_once_without_leaking_the_token() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(env_with(data(5), 7));
    let wrong = "tok-WRONG-secret-991";
    std::fs::write(&env.pipeline_file, pipeline_text(&env.sim.socialintents_url(), wrong, 7, "")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_chatlake"))
        .args(["run", "--pipeline", env.pipeline_file.to_str().unwrap(), "--from", "2025-10-27", "--to", "2025-10-28"])
        .arg("--warehouse")
        .arg(env.dir.path().join("wh"))
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("401") && stderr.contains("socialintents") && stderr.contains("/missedchats"), "{stderr}");
    assert!(!stderr.contains(wrong) && !stdout.contains(wrong), "token leaked");
    assert_eq!(env.sim.requests()["socialintents/missedchats"], 1, "401 is not retried");
    for f in files(&env.dir.path().join("wh")) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(!bytes.windows(wrong.len()).any(|w| w == wrong.as_bytes()), "token in {}", f.display());
    }
}

#[test]
fn killed_mid_run_then_rerun_ends_exact() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(env_with(data(20), 2));
    env.sim.set_faults(Faults { latency_ms: 60, ..Faults::default() });
    let args = ["--from", "2025-10-27", "--to", "2025-11-08"];
    let kills = kill_runs_after(&env, &args, &[350, 900, 1500]);
    assert!(kills >= 2, "the runs finished before they could be killed");
    let partial = rt.block_on(StateStore::new(&env.wh, "test").load("socialintents.chats")).unwrap();
    env.sim.set_faults(Faults::default());
    let status = spawn_run(&env, &args).wait().unwrap();
    assert!(status.success());
    let rows = rt.block_on(env.assert_exact("2025-10-27", "2025-11-08"));
    println!(
        "kill -9: {kills} kills, watermark after kills {:?}, {rows} chats checked",
        partial.map(|l| l.state.watermark)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_shares_the_attempt_bound_with_http_errors() {
    let env = env_with(data(5), 7).await;
    env.sim.set_faults(Faults { truncate_rate: 1.0, ..Faults::default() });
    let report = env.run(Some("2025-10-27"), "2025-10-28").await;
    let err = report.streams[0].error.clone().expect("every body is cut off");
    assert!(err.contains("invalid JSON") && err.contains("gave up after 8 attempts"), "{err}");
    // max_attempts = 8 in the test pipeline: 8 requests, not 8 x 8.
    assert_eq!(env.sim.requests()["socialintents/missedchats"], 8);
}
