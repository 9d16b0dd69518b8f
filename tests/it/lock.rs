//! One run of a pipeline at a time: two `chatlake run`s started together (one
//! exits with a clear "locked" message, the other ends exact), on local disk
//! and on S3; a dead holder's lock is taken over, a live one's is not.

use std::process::{Command, Stdio};
use std::time::Duration;

use chatlake::simulator::Faults;
use chatlake::sink::Warehouse;
use chatlake::state::lock::{LockInfo, RunLock};
use object_store::{ObjectStoreExt, PutPayload};

use crate::s3::S3Server;
use crate::support::*;

/// Starts two runs of the same pipeline at once; returns (successes, locked messages).
fn race(env: &Env, warehouse: &str, extra_env: &[(&'static str, String)]) -> (usize, Vec<String>) {
    let spawn = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chatlake"));
        cmd.args([
            "run",
            "--pipeline",
            env.pipeline_file.to_str().unwrap(),
            "--from",
            "2025-10-27",
            "--to",
            "2025-11-03",
        ])
        .args(["--warehouse", warehouse])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        cmd.spawn().unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let mut ok = 0;
    let mut locked = Vec::new();
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        if out.status.success() {
            ok += 1;
        } else {
            assert_eq!(out.status.code(), Some(1), "{stderr}");
            locked.push(stderr);
        }
    }
    (ok, locked)
}

#[test]
fn two_runs_started_together_one_runs_one_is_told_it_is_locked() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(env_with(data(10), 2));
    env.sim.set_faults(Faults {
        latency_ms: 40,
        ..Faults::default()
    });
    let wh = env.dir.path().join("wh");
    let (ok, locked) = race(&env, wh.to_str().unwrap(), &[]);
    assert_eq!(ok, 1, "exactly one run goes ahead: {locked:?}");
    assert_eq!(locked.len(), 1);
    assert!(
        locked[0].contains("pipeline `test` is locked")
            && locked[0].contains("another run is in progress"),
        "{}",
        locked[0]
    );
    rt.block_on(env.assert_exact("2025-10-27", "2025-11-03"));
    assert!(
        !wh.join("_locks/test.json").exists(),
        "the lock is released at the end"
    );
}

#[test]
fn two_runs_on_s3_one_runs_one_is_told_it_is_locked() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (env, server) =
        rt.block_on(async { (env_with(data(10), 2).await, S3Server::start().await) });
    env.sim.set_faults(Faults {
        latency_ms: 40,
        ..Faults::default()
    });
    let (ok, locked) = race(&env, "s3://lake/locked", &server.env());
    assert_eq!(ok, 1, "exactly one run goes ahead: {locked:?}");
    assert!(locked[0].contains("is locked"), "{}", locked[0]);
    let wh = server.warehouse("locked");
    let report = rt.block_on(async {
        let ctx = chatlake::query::session(&wh).await.unwrap();
        let b = chatlake::query::run(
            &ctx,
            "SELECT COUNT(*), COUNT(DISTINCT chat_id) FROM socialintents.chats",
        )
        .await
        .unwrap();
        chatlake::query::render(&b, chatlake::query::Format::Csv).unwrap()
    });
    let served = env.served_chats("2025-10-27", "2025-11-03").len();
    assert_eq!(report.lines().nth(1).unwrap(), format!("{served},{served}"));
}

async fn plant(wh: &Warehouse, host: &str, pid: u32, expires_in: chrono::Duration) {
    plant_for(wh, "p", host, pid, expires_in).await
}

async fn plant_for(
    wh: &Warehouse,
    pipeline: &str,
    host: &str,
    pid: u32,
    expires_in: chrono::Duration,
) {
    let now = chrono::Utc::now();
    let info = LockInfo {
        pipeline: pipeline.into(),
        host: host.into(),
        pid,
        run_id: "other-run".into(),
        acquired_at: now,
        expires_at: now + expires_in,
    };
    let path = wh
        .root()
        .clone()
        .join("_locks")
        .join(format!("{pipeline}.json"));
    wh.store()
        .put(&path, PutPayload::from(serde_json::to_vec(&info).unwrap()))
        .await
        .unwrap();
}

async fn stale_and_live_locks(wh: &Warehouse) {
    // A live holder on another machine: locked, with its name in the message.
    plant(wh, "other-host", 4242, chrono::Duration::minutes(2)).await;
    let err = RunLock::acquire(wh, "p", "mine", Duration::from_secs(60))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("other-host pid 4242 (run other-run)"), "{err}");
    // Its lock expired: taken over.
    plant(wh, "other-host", 4242, chrono::Duration::seconds(-5)).await;
    let lock = RunLock::acquire(wh, "p", "mine", Duration::from_secs(60))
        .await
        .unwrap();
    // Now held by us: a second taker is refused.
    assert!(RunLock::acquire(wh, "p", "theirs", Duration::from_secs(60))
        .await
        .is_err());
    lock.release().await;
    RunLock::acquire(wh, "p", "after", Duration::from_secs(60))
        .await
        .unwrap()
        .release()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_locks_are_taken_over_and_live_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    stale_and_live_locks(&Warehouse::open(dir.path().to_str().unwrap()).unwrap()).await;
    let server = S3Server::start().await;
    stale_and_live_locks(&server.warehouse("locks")).await;
}

/// Issue 9, defect 5: two runs racing to take over a stale lock (expired, or
/// its holder's process gone) on local disk: exactly one wins, every time.
#[test]
fn two_runs_taking_over_a_stale_lock_on_local_disk_have_one_winner_in_25_trials() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(env_with(data(4), 7));
    env.sim.set_faults(Faults {
        latency_ms: 20,
        ..Faults::default()
    });
    let wh = env.dir.path().join("wh");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_string();
    let mut outcomes = Vec::new();
    for trial in 0..25 {
        // Alternate: an expired lock of another machine, and a lock of this
        // machine whose process is gone (pid beyond pid_max).
        rt.block_on(async {
            if trial % 2 == 0 {
                plant_for(
                    &env.wh,
                    "test",
                    "other-host",
                    4242,
                    chrono::Duration::seconds(-5),
                )
                .await
            } else {
                plant_for(
                    &env.wh,
                    "test",
                    &host,
                    4_999_999,
                    chrono::Duration::minutes(2),
                )
                .await
            }
        });
        let (ok, locked) = race(&env, wh.to_str().unwrap(), &[]);
        for l in &locked {
            assert!(
                l.contains("pipeline `test` is locked"),
                "trial {trial}: {l}"
            );
        }
        outcomes.push(ok);
    }
    println!("winners per trial: {outcomes:?}");
    assert!(
        outcomes.iter().all(|&n| n == 1),
        "exactly one winner every time: {outcomes:?}"
    );
    rt.block_on(env.assert_exact("2025-10-27", "2025-11-03"));
    assert!(!wh.join("_locks/test.json").exists());
}
