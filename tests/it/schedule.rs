//! The `chatlake schedule` daemon and `chatlake runs`: scheduled runs happen,
//! the daemon's Postgres listener (`--serve`) answers with what they
//! committed, SIGTERM stops the daemon cleanly (exit 0, lock released, data
//! exact), and
//! `runs` reports the last run and fails when it failed.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chatlake::simulator::Faults;

use crate::support::*;

fn chatlake(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_chatlake"))
        .args(args)
        .output()
        .unwrap()
}

fn meta_run_files(wh: &std::path::Path) -> usize {
    let dir = wh.join("meta/runs");
    if !dir.exists() {
        return 0;
    }
    files(&dir).len()
}

#[test]
fn the_daemon_runs_on_schedule_and_stops_cleanly_on_sigterm() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(env_with(data(5), 7));
    // Every 2 seconds; only the chats stream, to keep each run short.
    let text = pipeline_text(&env.sim.base_url("socialintents"), TOKEN, 7, "")
        .replace("0 30 2 * * *", "*/2 * * * * *")
        .replace("start_date = \"2025-10-27\"", "start_date = \"2025-10-27\"\nwarehouse = \"./unused\"")
        .replace("streams = [\"chats\", \"missed_chats\", \"offline_messages\", \"contacts\", \"widgets\"]", "streams = [\"chats\"]");
    std::fs::write(&env.pipeline_file, text).unwrap();
    let wh = env.dir.path().join("wh");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let pg_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_chatlake"))
        .args([
            "schedule",
            "--pipeline",
            env.pipeline_file.to_str().unwrap(),
            "--warehouse",
            wh.to_str().unwrap(),
        ])
        .args(["--listen", &listen])
        .args(["--serve", &format!("127.0.0.1:{pg_port}")])
        .env("CHATLAKE_SERVE_PASSWORD", "schedule-serve-pw-71c2")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while meta_run_files(&wh) < 2 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        meta_run_files(&wh) >= 2,
        "two scheduled runs within a minute"
    );
    // /healthz and /metrics while it runs.
    let (health, metrics) = rt.block_on(async {
        let get = |path: &str| reqwest::get(format!("http://{listen}{path}"));
        (
            get("/healthz").await.unwrap().text().await.unwrap(),
            get("/metrics").await.unwrap().text().await.unwrap(),
        )
    });
    assert_eq!(health.trim(), "ok");
    let runs_line = metrics
        .lines()
        .find(|l| l.starts_with("chatlake_runs_total{pipeline=\"test\",stream=\"socialintents.chats\",status=\"success\"}"))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(
        runs_line
            .rsplit(' ')
            .next()
            .unwrap()
            .parse::<f64>()
            .unwrap()
            >= 1.0,
        "{runs_line}"
    );
    assert!(
        metrics.contains("chatlake_last_success_timestamp_seconds{pipeline=\"test\""),
        "{metrics}"
    );
    // --serve: the warehouse the runs write, over the Postgres protocol, in
    // the same process. The first run has committed every day (two have
    // started), so the server counts the simulator's chats.
    let want = env
        .served_chats("2025-10-27", "2025-11-10")
        .iter()
        .filter(|c| !c.malformed)
        .count() as i64;
    let served: i64 = rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={pg_port} user=chatlake password=schedule-serve-pw-71c2 dbname=datafusion"
            ),
            tokio_postgres::NoTls,
        )
        .await
        .expect("the daemon's Postgres listener");
        tokio::spawn(conn);
        client
            .query_one("SELECT COUNT(*) FROM socialintents.chats", &[])
            .await
            .unwrap()
            .get(0)
    });
    assert_eq!(served, want, "chats through the daemon's listener");
    // SIGTERM, possibly mid-run: the daemon finishes or abandons the window and exits 0.
    let status = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let waited = Instant::now();
    while daemon.try_wait().unwrap().is_none() && waited.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = daemon.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("scheduler stopped"), "{stdout}");
    assert!(!wh.join("_locks/test.json").exists(), "lock released");
    assert!(
        wh.join("_schedule/test.json").exists(),
        "the last slot is remembered"
    );
    // What the runs committed is exact (they read 2025-10-27..today).
    rt.block_on(env.assert_exact("2025-10-27", "2025-11-10"));
    // `runs` lists them and exits 0 (the last run succeeded or was stopped cleanly).
    let runs = chatlake(&["runs", "--warehouse", wh.to_str().unwrap(), "--last", "5"]);
    let listed = String::from_utf8_lossy(&runs.stdout);
    assert!(
        listed.contains("test") && listed.contains("started (UTC)"),
        "{listed}"
    );
    assert!(
        runs.status.success(),
        "the last run succeeded or was stopped cleanly: {}\n{listed}\ndaemon: {}",
        String::from_utf8_lossy(&runs.stderr),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn runs_exits_non_zero_when_the_last_run_failed() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(env_with(data(3), 7));
    let wh = env.dir.path().join("wh");
    let run = |args: &[&str]| {
        let mut a = vec![
            "run",
            "--pipeline",
            env.pipeline_file.to_str().unwrap(),
            "--warehouse",
            wh.to_str().unwrap(),
        ];
        a.extend_from_slice(args);
        chatlake(&a)
    };
    assert!(run(&["--from", "2025-10-27", "--to", "2025-10-28"])
        .status
        .success());
    let ok = chatlake(&[
        "runs",
        "--pipeline",
        env.pipeline_file.to_str().unwrap(),
        "--warehouse",
        wh.to_str().unwrap(),
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    env.sim.set_faults(Faults {
        api_error: Some("Account suspended".into()),
        ..Faults::default()
    });
    assert!(!run(&["--from", "2025-10-27", "--to", "2025-10-28"])
        .status
        .success());
    let failed = chatlake(&[
        "runs",
        "--pipeline",
        env.pipeline_file.to_str().unwrap(),
        "--warehouse",
        wh.to_str().unwrap(),
        "--last",
        "2",
    ]);
    let stdout = String::from_utf8_lossy(&failed.stdout);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("the last run failed for: test"), "{stderr}");
    assert!(stdout.contains("Account suspended"), "{stdout}");
    // Another good run: healthy again.
    env.sim.set_faults(Faults::default());
    assert!(run(&["--from", "2025-10-27", "--to", "2025-10-28"])
        .status
        .success());
    assert!(chatlake(&["runs", "--warehouse", wh.to_str().unwrap()])
        .status
        .success());
}

/// Issue 9, defect 1: a run that panics (a bug; here the `panic@bad`
/// failpoint) ends only that run. The daemon logs it, counts it in
/// /metrics, releases that run's lock, and keeps running both pipelines.
#[test]
fn a_panicking_run_does_not_take_the_daemon_down() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(env_with(data(2), 7));
    let text = pipeline_text(&env.sim.base_url("socialintents"), TOKEN, 7, "")
        .replace("0 30 2 * * *", "*/2 * * * * *")
        .replace("streams = [\"chats\", \"missed_chats\", \"offline_messages\", \"contacts\", \"widgets\"]", "streams = [\"chats\"]");
    let dir = env.dir.path().join("pipelines");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("good.toml"), &text).unwrap();
    std::fs::write(
        dir.join("bad.toml"),
        text.replace("name = \"test\"", "name = \"bad\""),
    )
    .unwrap();
    let wh = env.dir.path().join("wh");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_chatlake"))
        .args([
            "schedule",
            "--pipeline",
            dir.to_str().unwrap(),
            "--warehouse",
            wh.to_str().unwrap(),
            "--listen",
            &listen,
        ])
        .env("CHATLAKE_FAILPOINT", "panic@bad")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let metric = |text: &str, prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    let started = Instant::now();
    let mut metrics = String::new();
    while started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(300));
        if let Ok(m) = rt.block_on(async {
            reqwest::get(format!("http://{listen}/metrics"))
                .await?
                .text()
                .await
        }) {
            metrics = m;
        }
        if metric(&metrics, "chatlake_aborted_runs_total{pipeline=\"bad\"}") >= 2.0
            && meta_run_files(&wh) >= 2
        {
            break;
        }
    }
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "the daemon is still running"
    );
    assert!(
        metric(&metrics, "chatlake_aborted_runs_total{pipeline=\"bad\"}") >= 2.0,
        "bad crashed twice and was retried: {metrics}"
    );
    assert!(
        meta_run_files(&wh) >= 2,
        "the good pipeline ran twice meanwhile"
    );
    assert!(
        !metrics.contains("chatlake_aborted_runs_total{pipeline=\"test\"}"),
        "{metrics}"
    );
    Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    let out = daemon.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("scheduled run crashed") && stderr.contains("failpoint panic@bad"),
        "{stderr}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !wh.join("_locks/bad.json").exists(),
        "the crashed run's lock is released"
    );
}

/// Issue 9, defect 6: a run that could not write its meta.runs rows (here:
/// `meta/runs` is not a directory, as good as a full disk for that write)
/// counts as failed in `chatlake runs`, though meta.runs holds only the
/// earlier good run.
#[test]
fn runs_counts_a_run_without_its_meta_runs_rows_as_failed() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(env_with(data(3), 7));
    let wh = env.dir.path().join("wh");
    let (file, whs) = (env.pipeline_file.to_str().unwrap(), wh.to_str().unwrap());
    let run = || {
        chatlake(&[
            "run",
            "--pipeline",
            file,
            "--warehouse",
            whs,
            "--from",
            "2025-10-27",
            "--to",
            "2025-10-28",
            "--stream",
            "socialintents.chats",
        ])
    };
    assert!(run().status.success());
    assert!(chatlake(&["runs", "--warehouse", whs]).status.success());
    let (runs_dir, aside) = (wh.join("meta/runs"), wh.join("runs-aside"));
    std::fs::rename(&runs_dir, &aside).unwrap();
    std::fs::write(&runs_dir, b"not a directory").unwrap();
    let broken = run();
    let stderr = String::from_utf8_lossy(&broken.stderr);
    assert_eq!(broken.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("writing meta.runs"), "{stderr}");
    std::fs::remove_file(&runs_dir).unwrap();
    std::fs::rename(&aside, &runs_dir).unwrap();
    let out = chatlake(&["runs", "--warehouse", whs]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("incomplete runs")
            && stdout.contains("0 of 1 stream(s) recorded -- failed"),
        "{stdout}"
    );
    assert!(stderr.contains("the last run failed for: test"), "{stderr}");
    // A good run afterwards: healthy again (the incomplete one stays listed).
    assert!(run().status.success());
    let out = chatlake(&["runs", "--warehouse", whs]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("incomplete runs"));
}

/// The daemon on an injected clock, across the fall-back night: a job at
/// 01:30 New York time runs once on 2025-11-02 (01:30 happens twice), and
/// once on each other day; the runs are exact. Expected slots come from the
/// DST rules (EDT = UTC-4 until 2025-11-02 02:00, EST = UTC-5 after).
#[test]
fn the_daemon_on_a_fake_clock_runs_once_per_day_across_fall_back() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(env_with(data(3), 7));
    let text = pipeline_text(&env.sim.base_url("socialintents"), TOKEN, 7, "")
        .replace("0 30 2 * * *", "0 30 1 * * *")
        .replace(
            "streams = [\"chats\", \"missed_chats\", \"offline_messages\", \"contacts\", \"widgets\"]",
            "streams = [\"chats\"]",
        );
    std::fs::write(&env.pipeline_file, text).unwrap();
    let pipeline = chatlake::config::Pipeline::load(&env.pipeline_file).unwrap();
    let utc = |s: &str| s.parse::<chrono::DateTime<chrono::Utc>>().unwrap();
    let clock = std::sync::Arc::new(FakeClock {
        now: std::sync::Mutex::new(utc("2025-11-01T12:00:00Z")),
        end: utc("2025-11-04T12:00:00Z"),
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();
    rt.block_on(chatlake::schedule::serve_pipeline(
        pipeline,
        env.wh.clone(),
        stop,
        chatlake::metrics::Metrics::default(),
        clock,
    ))
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "three days of schedule without waiting for them"
    );
    let runs =
        rt.block_on(env.rows("SELECT DISTINCT substr(run_id, 1, 16) FROM meta.runs ORDER BY 1"));
    let runs: Vec<&str> = runs.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        runs,
        ["20251102T053000Z", "20251103T063000Z", "20251104T063000Z"]
    );
    rt.block_on(env.assert_exact("2025-10-27", "2025-11-03"));
}
