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
    env.sim.set_faults(Faults {
        rate_429: 0.2,
        rate_500: 0.1,
        retry_after_secs: 0,
        ..Faults::default()
    });
    let report = env.run(Some("2025-10-27"), "2025-11-06").await;
    assert_eq!(
        report.failures().count(),
        0,
        "{:?}",
        report.failures().collect::<Vec<_>>()
    );
    let rows = env.assert_exact("2025-10-27", "2025-11-06").await;
    let retries: u64 = report.streams.iter().map(|s| s.traffic.retries).sum();
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
    env.sim.set_faults(Faults {
        truncate_rate: 0.3,
        ..Faults::default()
    });
    let report = env.run(Some("2025-10-27"), "2025-11-04").await;
    assert_eq!(report.failures().count(), 0);
    assert!(env.sim.faults_injected() > 0);
    env.assert_exact("2025-10-27", "2025-11-04").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_and_attempts_are_bounded() {
    let env = env_with(data(5), 7).await;
    let text = pipeline_text(&env.sim.base_url("socialintents"), TOKEN, 7, "")
        .replace("max_attempts = 8", "max_attempts = 2")
        // Retry-After is honoured up to backoff_max_ms, the longest single wait.
        .replace("backoff_max_ms = 100", "backoff_max_ms = 2000");
    std::fs::write(&env.pipeline_file, text).unwrap();
    let pipeline = chatlake::config::Pipeline::load(&env.pipeline_file).unwrap();
    env.sim.set_faults(Faults {
        rate_429: 1.0,
        retry_after_secs: 1,
        ..Faults::default()
    });
    let opts = chatlake::pipeline::RunOptions {
        from: Some(d("2025-10-27")),
        to: Some(d("2025-10-28")),
        streams: vec!["socialintents.chats".into()],
        now: Some(now_after(d("2025-10-28"))),
        ..Default::default()
    };
    let started = Instant::now();
    let report = chatlake::pipeline::run_once(&pipeline, &env.wh, &opts)
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was not waited for"
    );
    let err = report.streams[0].error.clone().expect("stream must fail");
    assert!(
        err.contains("429") && err.contains("2 attempts") && err.contains("socialintents.chats"),
        "{err}"
    );
    assert!(
        err.contains("2025-10-27..2025-10-28"),
        "error names the window: {err}"
    );
    assert_eq!(env.sim.requests()["socialintents/missedchats"], 2);
    // Nothing committed, so no watermark.
    assert!(StateStore::new(&env.wh, "test")
        .load("socialintents.chats")
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_error_status_fails_the_stream_with_its_message() {
    let env = env_with(data(5), 7).await;
    env.sim.set_faults(Faults {
        api_error: Some("Account suspended".into()),
        ..Faults::default()
    });
    let report = env.run(Some("2025-10-27"), "2025-10-28").await;
    let err = report.streams[0].error.clone().unwrap();
    assert!(err.contains("Account suspended"), "{err}");
    let status = env
        .rows("SELECT status, error FROM meta.runs WHERE stream = 'socialintents.chats'")
        .await;
    assert_eq!(status[0][0], "failed");
    assert!(status[0][1].contains("Account suspended"));
}

#[test]
fn bad_credentials_fail_at_once_without_leaking_the_token() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(env_with(data(5), 7));
    let wrong = "tok-WRONG-secret-991";
    std::fs::write(
        &env.pipeline_file,
        pipeline_text(&env.sim.base_url("socialintents"), wrong, 7, ""),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_chatlake"))
        .args([
            "run",
            "--pipeline",
            env.pipeline_file.to_str().unwrap(),
            "--from",
            "2025-10-27",
            "--to",
            "2025-10-28",
        ])
        .arg("--warehouse")
        .arg(env.dir.path().join("wh"))
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // The chats stream asks /chats and /missedchats at once; its error
    // names whichever was refused first.
    assert!(
        stderr.contains("401")
            && stderr.contains("socialintents")
            && (stderr.contains(
                "socialintents.chats, window 2025-10-27..2025-10-28: socialintents /missedchats?"
            ) || stderr.contains(
                "socialintents.chats, window 2025-10-27..2025-10-28: socialintents /chats?"
            )),
        "{stderr}"
    );
    assert!(
        !stderr.contains(wrong) && !stdout.contains(wrong),
        "token leaked"
    );
    // Each endpoint is asked at most once (a 401 is not retried), the one
    // the error names exactly once; the other may not have been asked
    // before the stream stopped.
    let asked = |e: &str| env.sim.requests().get(e).copied().unwrap_or(0);
    let (missed, chats) = (
        asked("socialintents/missedchats"),
        asked("socialintents/chats"),
    );
    let named = if stderr.contains("socialintents /missedchats?") {
        missed
    } else {
        chats
    };
    assert!(
        missed <= 1 && chats <= 1 && named == 1,
        "401 is not retried: /missedchats asked {missed} times, /chats {chats}"
    );
    for f in files(&env.dir.path().join("wh")) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes.windows(wrong.len()).any(|w| w == wrong.as_bytes()),
            "token in {}",
            f.display()
        );
    }
}

#[test]
fn killed_mid_run_then_rerun_ends_exact() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(env_with(data(20), 2));
    env.sim.set_faults(Faults {
        latency_ms: 60,
        ..Faults::default()
    });
    let args = ["--from", "2025-10-27", "--to", "2025-11-08"];
    // Kill points drawn from several seeds (printed, so a failure can be replayed).
    let mut kills = 0;
    for seed in [1u64, 2, 3] {
        let mut rng = fastrand::Rng::with_seed(seed);
        let delays: Vec<u64> = (0..2).map(|_| rng.u64(150..1_600)).collect();
        println!("kill -9 seed {seed}: after {delays:?} ms");
        kills += kill_runs_after(&env, &args, &delays);
    }
    assert!(
        kills >= 4,
        "the runs finished before they could be killed ({kills} kills)"
    );
    let partial = rt
        .block_on(StateStore::new(&env.wh, "test").load("socialintents.chats"))
        .unwrap();
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
    env.sim.set_faults(Faults {
        truncate_rate: 1.0,
        ..Faults::default()
    });
    let report = env.run(Some("2025-10-27"), "2025-10-28").await;
    let err = report.streams[0]
        .error
        .clone()
        .expect("every body is cut off");
    assert!(
        err.contains("invalid JSON") && err.contains("gave up after 8 attempts"),
        "{err}"
    );
    // max_attempts = 8 in the test pipeline: 8 requests, not 8 x 8. A
    // window asks chats and missed chats at once: the one that gives up
    // first made 8, and the other stops with the window.
    let requests = env.sim.requests();
    let (chats, missed) = (
        requests["socialintents/chats"],
        requests["socialintents/missedchats"],
    );
    assert_eq!(chats.max(missed), 8, "chats {chats}, missed chats {missed}");
    assert!(
        chats <= 8 && missed <= 8,
        "chats {chats}, missed chats {missed}"
    );
}

#[test]
fn a_crash_between_the_partitions_and_the_watermark_loses_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(env_with(data(20), 3));
    let args = [
        "run",
        "--pipeline",
        env.pipeline_file.to_str().unwrap(),
        "--from",
        "2025-10-27",
        "--to",
        "2025-11-06",
    ];
    let wh = env.dir.path().join("wh");
    // The first window's partitions are written, then the process dies before its watermark.
    let out = Command::new(env!("CARGO_BIN_EXE_chatlake"))
        .args(args)
        .arg("--warehouse")
        .arg(&wh)
        .env("CHATLAKE_FAILPOINT", "after-partitions-before-watermark")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("failpoint after-partitions-before-watermark"));
    let state = rt
        .block_on(StateStore::new(&env.wh, "test").load("socialintents.chats"))
        .unwrap();
    assert!(
        state.is_none(),
        "no watermark for data whose commit was not confirmed"
    );
    assert!(
        files(&wh)
            .iter()
            .any(|f| f.to_string_lossy().contains("socialintents/chats/dt=")),
        "partitions were written"
    );
    // The re-run rewrites the same partitions: no duplicate, nothing lost.
    let status = Command::new(env!("CARGO_BIN_EXE_chatlake"))
        .args(args)
        .arg("--warehouse")
        .arg(&wh)
        .status()
        .unwrap();
    assert!(status.success());
    let rows = rt.block_on(env.assert_exact("2025-10-27", "2025-11-06"));
    let wm = rt
        .block_on(StateStore::new(&env.wh, "test").load("socialintents.chats"))
        .unwrap()
        .unwrap()
        .state
        .watermark;
    assert_eq!(wm, Some(d("2025-11-06")));
    println!("crash before watermark: 1 crash, {rows} chats checked after the re-run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_drift_loses_nothing() {
    let mut drifting = data(10);
    drifting.drift = true;
    let env = env_with(drifting, 7).await;
    let report = env.run(Some("2025-10-27"), "2025-11-03").await;
    assert_eq!(report.failures().count(), 0);
    let served = env.served_chats("2025-10-27", "2025-11-03");
    // Every chat landed (a changed type does not reject the record)...
    let n = env.int("SELECT COUNT(*) FROM socialintents.chats WHERE dt BETWEEN DATE '2025-10-27' AND DATE '2025-11-03'").await;
    assert_eq!(n as usize, served.len());
    // ...the new field and the retyped one are kept verbatim in _extra, per chat.
    let rows = env
        .rows("SELECT chat_id, visits, _extra FROM socialintents.chats WHERE dt BETWEEN DATE '2025-10-27' AND DATE '2025-11-03'")
        .await;
    let by_id: std::collections::BTreeMap<&str, &chatlake::simulator::data::SimChat> =
        served.iter().map(|c| (c.id.as_str(), c)).collect();
    for r in &rows {
        let extra: serde_json::Value = serde_json::from_str(&r[2]).unwrap();
        let chat = by_id[r[0].as_str()];
        assert_eq!(r[1], "NULL", "visits no longer fits int64");
        assert_eq!(
            extra["visits"],
            serde_json::json!(format!("{} visits", chat.visits))
        );
        assert_eq!(extra["sentiment"], "positive");
    }
    assert_eq!(env.int("SELECT COUNT(*) FROM meta.rejects").await, 0);
    println!(
        "schema drift: {} chats checked, new field and retyped field kept in _extra",
        rows.len()
    );
}
