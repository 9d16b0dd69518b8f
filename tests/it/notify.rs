//! Issue 25 (alerts and channels): a local receiver plays Slack and a
//! webhook endpoint. Tests: `notify test` reaches each channel, the
//! webhook's signature is HMAC-SHA256 computed here; an alert fires once,
//! stays quiet while it keeps firing, repeats after its interval and
//! resolves, over four runs; a failing channel is retried, recorded in
//! meta.deliveries and never fails the run; no channel secret reaches any
//! output or file.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use chatlake::simulator::Faults;

use crate::support::*;

/// What the receiver saw: (path, signature header, timestamp header, body).
pub type Seen = Arc<Mutex<Vec<(String, Option<String>, Option<String>, String)>>>;

pub struct Receiver {
    pub url: String,
    pub seen: Seen,
    /// Answer 500 to this many requests before answering 200.
    pub fail_next: Arc<AtomicU32>,
}

/// A receiver on a loopback port that records every request.
pub async fn receiver() -> Receiver {
    use axum::http::{HeaderMap, StatusCode, Uri};
    let seen: Seen = Arc::default();
    let fail_next = Arc::new(AtomicU32::new(0));
    let (s, f) = (seen.clone(), fail_next.clone());
    let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: String| {
        let (s, f) = (s.clone(), f.clone());
        async move {
            let h = |n: &str| {
                headers
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            s.lock().unwrap().push((
                uri.path().to_string(),
                h("x-chatlake-signature"),
                h("x-chatlake-timestamp"),
                body,
            ));
            if f.load(Ordering::SeqCst) > 0 {
                f.fetch_sub(1, Ordering::SeqCst);
                (StatusCode::INTERNAL_SERVER_ERROR, "receiver down")
            } else {
                (StatusCode::OK, "ok")
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver {
        url,
        seen,
        fail_next,
    }
}

const SECRET: &str = "whsec-test-0123456789abcdef";

/// The channels block of the pipeline file: a Slack-like and a signed webhook.
fn channels(r: &Receiver) -> String {
    format!(
        "\n[channels.support]\ntype = \"slack\"\nurl = \"{}/slack/T000/B000/XXXXSLACKTOKEN\"\n\
         [channels.ops]\ntype = \"webhook\"\nurl = \"{}/hook\"\nsecret = \"${{CHATLAKE_TEST_WEBHOOK_SECRET}}\"\n",
        r.url, r.url
    )
}

/// A pipeline over the test account with both channels (a literal webhook
/// secret) and `rules` appended.
async fn env_with_rules(r: &Receiver, rules: &str) -> Env {
    env_with(data(2), 7).await.with_pipeline(|t| {
        (t + &channels(r) + rules)
            .replace("${CHATLAKE_TEST_WEBHOOK_SECRET}", "s3cr3t-for-this-test")
    })
}

fn assert_no_secret(texts: &[&str], dir: &std::path::Path) {
    for t in texts {
        assert!(!t.contains(SECRET) && !t.contains("XXXXSLACKTOKEN"), "{t}");
    }
    for f in files(dir) {
        let bytes = std::fs::read(&f).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(SECRET), "{}", f.display());
        assert!(!text.contains("XXXXSLACKTOKEN"), "{}", f.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_test_reaches_each_channel_and_the_webhook_is_signed() {
    std::env::set_var("CHATLAKE_TEST_WEBHOOK_SECRET", SECRET);
    let r = receiver().await;
    let env = env_with(data(2), 7).await;
    let env = env.with_pipeline(|t| t + &channels(&r));
    env.run(Some("2025-10-27"), "2025-10-28").await;
    let file = env.pipeline_file.to_str().unwrap().to_string();
    let wh = env.dir.path().join("wh");
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        chatlake_env(
            &[
                "notify",
                "test",
                "--pipeline",
                &file,
                "--warehouse",
                wh.to_str().unwrap(),
            ],
            &[("CHATLAKE_TEST_WEBHOOK_SECRET", SECRET)],
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ops            ok      accepted (webhook, HTTP 200)"),
        "{out}"
    );
    assert!(
        out.contains("support        ok      accepted (slack, HTTP 200)"),
        "{out}"
    );
    let seen = r.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let hook = seen
        .iter()
        .find(|s| s.0 == "/hook")
        .expect("the webhook got it");
    let (sig, ts) = (hook.1.clone().unwrap(), hook.2.clone().unwrap());
    assert_eq!(
        sig,
        format!(
            "sha256={}",
            hmac_sha256_hex(SECRET, &format!("{ts}.{}", hook.3))
        )
    );
    let body: serde_json::Value = serde_json::from_str(&hook.3).unwrap();
    assert_eq!(body["kind"], "test");
    assert_eq!(body["pipeline"], "test");
    let slack = seen.iter().find(|s| s.0.starts_with("/slack/")).unwrap();
    assert!(slack.1.is_none(), "Slack gets no signature");
    let text: serde_json::Value = serde_json::from_str(&slack.3).unwrap();
    assert!(text["text"]
        .as_str()
        .unwrap()
        .contains("chatlake test message"));
    assert_eq!(
        env.int("SELECT COUNT(*) FROM meta.deliveries WHERE kind = 'test' AND status = 'sent'")
            .await,
        2
    );
    assert_no_secret(&[&out, &err], &env.dir.path().join("wh"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_fires_once_repeats_after_its_interval_and_resolves() {
    let r = receiver().await;
    let env = env_with_rules(&r, "\n[[alerts]]\nname = \"run failed\"\nwhen = \"run_failed\"\nnotify = [\"ops\"]\nrepeat_hours = 0.002\n").await;
    let alerts = |r: &Receiver| -> Vec<serde_json::Value> {
        r.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| serde_json::from_str::<serde_json::Value>(&s.3).unwrap())
            .filter(|b| b["kind"] == "alert")
            .map(|b| b["alert"].clone())
            .collect()
    };
    // 1: the source fails -> one alert, firing, for the failed stream.
    env.sim.set_faults(Faults {
        api_error: Some("Account suspended".into()),
        ..Faults::default()
    });
    let run = env.run(Some("2025-10-27"), "2025-10-28").await;
    let failed: Vec<String> = run.failures().map(|s| s.stream.clone()).collect();
    assert!(!failed.is_empty());
    let got = alerts(&r);
    assert_eq!(got.len(), failed.len(), "{got:?}");
    assert!(got.iter().all(|a| a["status"] == "firing"), "{got:?}");
    assert!(
        got.iter().any(|a| a["key"] == "stream=socialintents.chats"),
        "{got:?}"
    );
    // 2: still failing, within the repeat interval -> nothing new.
    env.run(Some("2025-10-27"), "2025-10-28").await;
    assert_eq!(alerts(&r).len(), failed.len());
    // 3: past the interval (7.2 s) -> sent again, as "repeat".
    tokio::time::sleep(std::time::Duration::from_millis(7_500)).await;
    env.run(Some("2025-10-27"), "2025-10-28").await;
    let got = alerts(&r);
    assert_eq!(got.len(), 2 * failed.len(), "{got:?}");
    assert!(got[failed.len()..].iter().all(|a| a["status"] == "repeat"));
    // 4: the source recovers -> resolved.
    env.sim.set_faults(Faults::default());
    let ok = env.run(Some("2025-10-27"), "2025-10-28").await;
    assert_eq!(ok.failures().count(), 0);
    let got = alerts(&r);
    assert_eq!(got.len(), 3 * failed.len(), "{got:?}");
    assert!(got[2 * failed.len()..]
        .iter()
        .all(|a| a["status"] == "resolved"));
    // meta.alerts holds the same story.
    let rows = env
        .rows("SELECT status, COUNT(*) FROM meta.alerts WHERE alert_key = 'stream=socialintents.chats' GROUP BY status ORDER BY status")
        .await;
    assert_eq!(
        rows,
        vec![
            vec!["firing".to_string(), "1".into()],
            vec!["repeat".into(), "1".into()],
            vec!["resolved".into(), "1".into()]
        ]
    );
    // A fifth run with nothing failing sends nothing.
    env.run(Some("2025-10-27"), "2025-10-28").await;
    assert_eq!(alerts(&r).len(), 3 * failed.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_channel_is_retried_recorded_and_never_fails_the_run() {
    let r = receiver().await;
    // An SQL rule that fires after any successful run, keyed by stream.
    let env = env_with_rules(&r, "\n[[alerts]]\nname = \"ran\"\nsql = \"SELECT stream, status FROM meta.runs WHERE status = 'success' AND stream = 'socialintents.chats' LIMIT 1\"\nkey = [\"stream\"]\nnotify = [\"ops\"]\n").await;
    // Two 500s, then 200: delivered on the third attempt.
    r.fail_next.store(2, Ordering::SeqCst);
    let run = env.run(Some("2025-10-27"), "2025-10-28").await;
    assert_eq!(run.failures().count(), 0);
    assert_eq!(
        r.seen.lock().unwrap().len(),
        3,
        "two refusals and the retry that worked"
    );
    let rows = env
        .rows("SELECT status, attempts, http_status FROM meta.deliveries WHERE kind = 'alert'")
        .await;
    assert_eq!(
        rows,
        vec![vec!["sent".to_string(), "3".into(), "200".into()]]
    );
    // Still firing: nothing more is sent. Then the rule's alert is
    // resolved by editing it away... instead: a receiver that is down for
    // good while a new alert fires (a second stream's key).
    let env = env.with_pipeline(|t| {
        t.replace(
            "AND stream = 'socialintents.chats' LIMIT 1",
            "AND stream = 'socialintents.contacts' LIMIT 1",
        )
    });
    r.fail_next.store(1_000, Ordering::SeqCst);
    let before = r.seen.lock().unwrap().len();
    let run = env.run(Some("2025-10-27"), "2025-10-28").await;
    assert_eq!(
        run.failures().count(),
        0,
        "a delivery failure does not fail the run"
    );
    // The new alert: 3 attempts, all refused; the old one's "resolved": 3 too.
    assert_eq!(r.seen.lock().unwrap().len() - before, 6);
    let failed = env
        .rows("SELECT status, attempts, http_status, error FROM meta.deliveries WHERE status = 'failed' ORDER BY subject")
        .await;
    assert_eq!(failed.len(), 2, "{failed:?}");
    for f in &failed {
        assert_eq!(f[1..3], ["3".to_string(), "500".into()]);
        assert!(f[3].starts_with("HTTP 500: receiver down"), "{f:?}");
    }
    // `chatlake runs` shows them; the run itself is listed as ok.
    let wh = env.dir.path().join("wh");
    let (code, out, _) = chatlake(&["runs", "--warehouse", wh.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("failed deliveries (newest first; all in meta.deliveries):"),
        "{out}"
    );
    assert!(
        out.contains("alert to ops: HTTP 500: receiver down (3 attempts)"),
        "{out}"
    );
    // Not marked sent: the next evaluation (receiver back) sends both again.
    r.fail_next.store(0, Ordering::SeqCst);
    let before = r.seen.lock().unwrap().len();
    env.run(Some("2025-10-27"), "2025-10-28").await;
    let sent: Vec<serde_json::Value> = r.seen.lock().unwrap()[before..]
        .iter()
        .map(|s| serde_json::from_str::<serde_json::Value>(&s.3).unwrap()["alert"].clone())
        .collect();
    let mut statuses: Vec<&str> = sent.iter().map(|a| a["status"].as_str().unwrap()).collect();
    statuses.sort();
    assert_eq!(statuses, ["firing", "resolved"], "{sent:?}");
    assert_no_secret(&[], &env.dir.path().join("wh"));
}

/// The README's channels and alert rules, as printed, parse and evaluate:
/// its SQL rule runs over a real warehouse (yesterday's missed rate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_alert_rules_parse_and_run() {
    let readme = include_str!("../../README.md");
    let block = readme
        .split("```toml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .find(|b| b.contains("[[alerts]]") && b.contains("[channels."))
        .expect("the README shows channels and alerts");
    let r = receiver().await;
    let env = env_with(data(2), 7).await;
    let block = block
        .replace(
            "${SLACK_WEBHOOK_URL}",
            &format!("{}/slack/T/B/README", r.url),
        )
        .replace(
            "https://hooks.example.com/chatlake",
            &format!("{}/hook", r.url),
        )
        .replace("${WEBHOOK_SECRET}", "readme-example-secret")
        .replace("${SMTP_USER}", "readme-user")
        .replace("${SMTP_PASSWORD}", "readme-password");
    let env = env.with_pipeline(|t| t + "\n" + &block);
    assert_eq!(env.pipeline.config.alerts.len(), 3);
    assert_eq!(env.pipeline.config.channels.len(), 3);
    env.run(Some("2025-10-27"), "2025-10-28").await;
    // Every rule was evaluated (an SQL error would be reported, not sent).
    let outcome = chatlake::notify::evaluate_and_notify(&env.pipeline, &env.wh, chrono::Utc::now())
        .await
        .unwrap();
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
}

/// `stale`: a stream with no successful run for `hours` fires, one alert
/// per stream; evaluated at a later instant (no sleeping), as the cron
/// job `chatlake alerts` would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_without_a_success_for_hours_is_stale() {
    let r = receiver().await;
    let rules =
        "\n[[alerts]]\nname = \"stale\"\nwhen = \"stale\"\nhours = 2\nnotify = [\"support\"]\n";
    let env = env_with_rules(&r, rules).await;
    let run = env.run(Some("2025-10-27"), "2025-10-28").await;
    assert!(r.seen.lock().unwrap().is_empty(), "fresh: nothing stale");
    let streams: std::collections::BTreeSet<String> = run
        .streams
        .iter()
        .map(|s| format!("stream={}", s.stream))
        .collect();
    let later = chrono::Utc::now() + chrono::Duration::minutes(121);
    let o = chatlake::notify::evaluate_and_notify(&env.pipeline, &env.wh, later)
        .await
        .unwrap();
    let keys: std::collections::BTreeSet<String> =
        o.notices.iter().map(|n| n.key.clone()).collect();
    assert_eq!(
        keys, streams,
        "every stream is stale 2 h 1 min after its success"
    );
    assert!(o
        .notices
        .iter()
        .all(|n| n.status == "firing" && n.deliveries[0].ok()));
    let texts: Vec<String> = r
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| {
            serde_json::from_str::<serde_json::Value>(&s.3).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(texts.len(), streams.len());
    assert!(
        texts
            .iter()
            .all(|t| t.contains("[chatlake test] Alert: stale (stream=")),
        "{texts:?}"
    );
    // A run succeeds again: its own evaluation resolves them all.
    env.run(Some("2025-10-27"), "2025-10-28").await;
    let resolved = r
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.3.contains("\"status\":\"resolved\"") || s.3.contains("Resolved: stale"))
        .count();
    assert_eq!(resolved, streams.len());
}

/// `[report] deliver_to` with `every = "daily"`: the first run of a day
/// sends yesterday's headline to the channel, with the figures computed
/// here from the served chats, once (a second run that day sends nothing);
/// `chatlake report --send` sends a chosen period now, with the report's
/// location.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_headline_is_sent_on_its_cadence_with_the_figures() {
    let r = receiver().await;
    let env = env_with_rules(
        &r,
        "\n[report]\ndeliver_to = [\"ops\"]\nevery = \"daily\"\n",
    )
    .await;
    // The run's "today" is 2025-10-30 (noon UTC): it reports 2025-10-29.
    env.run(Some("2025-10-27"), "2025-10-29").await;
    let day: Vec<_> = env
        .served_chats("2025-10-29", "2025-10-29")
        .into_iter()
        .filter(|c| !c.malformed)
        .collect();
    let missed = day.iter().filter(|c| c.chat_type == "Missed").count();
    let bodies = |r: &Receiver| -> Vec<serde_json::Value> {
        r.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| serde_json::from_str::<serde_json::Value>(&s.3).unwrap())
            .filter(|b| b["kind"] == "report")
            .collect()
    };
    let sent = bodies(&r);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let subject = sent[0]["subject"].as_str().unwrap();
    let want = format!(
        "Chat report 2025-10-29 to 2025-10-29: Chats {} (",
        day.len()
    );
    assert!(subject.starts_with(&want), "{subject} / {want}");
    let rate = format!(
        " · missed {:.1}% (",
        missed as f64 / day.len() as f64 * 100.0
    );
    assert!(subject.contains(&rate), "{subject} / {rate}");
    let text = sent[0]["text"].as_str().unwrap();
    assert!(text.contains("The report: file:///"), "{text}");
    // Once a day.
    env.run(Some("2025-10-27"), "2025-10-29").await;
    assert_eq!(bodies(&r).len(), 1);
    // Now, for a chosen period, from the command line.
    let out = env.dir.path().join("period.html");
    let (code, stdout, err) = chatlake(&[
        "report",
        "--pipeline",
        env.pipeline_file.to_str().unwrap(),
        "--warehouse",
        env.dir.path().join("wh").to_str().unwrap(),
        "--from",
        "2025-10-28",
        "--to",
        "2025-10-29",
        "--out",
        out.to_str().unwrap(),
        "--send",
    ]);
    assert_eq!(code, 0, "{stdout}{err}");
    assert!(
        stdout.contains("ops            sent    Chat report 2025-10-28 to 2025-10-29: Chats"),
        "{stdout}"
    );
    let sent = bodies(&r);
    assert_eq!(sent.len(), 2);
    let two_days = env
        .served_chats("2025-10-28", "2025-10-29")
        .iter()
        .filter(|c| !c.malformed)
        .count();
    assert!(sent[1]["subject"]
        .as_str()
        .unwrap()
        .contains(&format!(": Chats {two_days} (")));
    assert!(sent[1]["text"]
        .as_str()
        .unwrap()
        .contains(&format!("The report: file://{}", out.display())));
}

/// The scheduler notices a stale stream when nothing runs: after one run,
/// the daemon (its next slot a year away) evaluates the rules every 15
/// minutes of its clock; 2 h after the run every stream fires `stale`,
/// once each, and nothing else is sent in the 3 hours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_notices_a_stale_stream_between_runs() {
    let r = receiver().await;
    let rules = "\n[[alerts]]\nname = \"stale\"\nwhen = \"stale\"\nhours = 2\nnotify = [\"ops\"]\n";
    let env = env_with_rules(&r, rules).await;
    let env = env
        .with_pipeline(|t| t.replace("schedule = \"0 30 2 * * *\"", "schedule = \"0 0 0 1 1 *\""));
    let run = env.run(Some("2025-10-27"), "2025-10-28").await;
    assert!(r.seen.lock().unwrap().is_empty());
    let start = chrono::Utc::now();
    let clock = Arc::new(FakeClock {
        now: Mutex::new(start),
        end: start + chrono::Duration::hours(3),
    });
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    chatlake::schedule::serve_pipeline(
        env.pipeline.clone(),
        env.wh.clone(),
        stop,
        chatlake::metrics::Metrics::default(),
        clock.clone(),
    )
    .await
    .unwrap();
    let sent: Vec<serde_json::Value> = r
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| serde_json::from_str::<serde_json::Value>(&s.3).unwrap())
        .collect();
    assert_eq!(sent.len(), run.streams.len(), "{sent:?}");
    assert!(sent.iter().all(|b| b["alert"]["status"] == "firing"));
    // Sent at the first check at least 2 h after the run: 2 h 00..15 min.
    let at: chrono::DateTime<chrono::Utc> = sent[0]["at"].as_str().unwrap().parse().unwrap();
    let after = at - start;
    assert!(
        after >= chrono::Duration::hours(2) && after <= chrono::Duration::minutes(136),
        "{after:?}"
    );
    assert_eq!(
        env.int("SELECT COUNT(*) FROM meta.runs").await as usize,
        run.streams.len(),
        "no run in between"
    );
}

/// What an alert carries is what the warehouse holds, so the personal-data
/// policy reaches it: an SQL rule over visitors' emails (hashed by the
/// policy) sends and records the hashes, never an email as the API gave it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_carry_personal_data_only_as_the_policy_stored_it() {
    let r = receiver().await;
    let rules = "\n[[alerts]]\nname = \"who\"\nsql = \"SELECT DISTINCT visitor_email FROM socialintents.chats WHERE visitor_email IS NOT NULL\"\nkey = [\"visitor_email\"]\nnotify = [\"ops\"]\n";
    let env = env_with_rules(&r, &format!("{rules}{}", crate::privacy::POLICY)).await;
    env.run(Some("2025-10-27"), "2025-10-28").await;
    let emails: std::collections::BTreeSet<String> = env
        .served_chats("2025-10-27", "2025-10-28")
        .iter()
        .map(|c| c.visitor_email.clone())
        .collect();
    let sent: Vec<String> = r.seen.lock().unwrap().iter().map(|s| s.3.clone()).collect();
    assert!(!sent.is_empty(), "the rule fired");
    let details = env
        .rows("SELECT alert_key, detail FROM meta.alerts")
        .await
        .concat()
        .join("\n");
    for email in &emails {
        let plain = email.to_lowercase();
        for text in sent.iter().chain([&details]) {
            assert!(!text.to_lowercase().contains(&plain), "{plain} in {text}");
        }
    }
    assert!(
        emails
            .iter()
            .any(|e| details.contains(&crate::privacy::hmac_hex(&e.to_lowercase()))),
        "{details}"
    );
}
