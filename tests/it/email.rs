//! Issue 25 (email): an in-process SMTP sink (a few lines of the protocol,
//! here) receives what chatlake sends; the message is parsed with a real
//! MIME parser (mail-parser). Tests: the report email's parts, images and
//! attachment, with the headline figures computed here from the served
//! chats; the credentials reach the server and no output or file; a server
//! that refuses for a while is retried and recorded, and never fails the
//! run. (tests/email.sh does the same against Python's aiosmtpd and opens
//! the HTML body in Chromium.)

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::support::*;

/// What the sink saw of one accepted message.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub data: Vec<u8>,
}

pub struct Sink {
    pub port: u16,
    pub mails: Arc<Mutex<Vec<Mail>>>,
    /// Decoded AUTH PLAIN answers ("\0user\0password").
    pub auths: Arc<Mutex<Vec<String>>>,
    /// DATA commands seen (accepted or refused).
    pub datas: Arc<AtomicU32>,
    /// Refuse this many messages with 451 (a transient error) first.
    pub fail_next: Arc<AtomicU32>,
}

/// An SMTP server on a loopback port: EHLO with AUTH PLAIN, MAIL, RCPT,
/// DATA (dot-unstuffed), RSET, NOOP, QUIT.
pub async fn sink() -> Sink {
    use base64::Engine;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let sink = Sink {
        port,
        mails: Arc::default(),
        auths: Arc::default(),
        datas: Arc::default(),
        fail_next: Arc::default(),
    };
    let (mails, auths, datas, fail) = (
        sink.mails.clone(),
        sink.auths.clone(),
        sink.datas.clone(),
        sink.fail_next.clone(),
    );
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (mails, auths, datas, fail) =
                (mails.clone(), auths.clone(), datas.clone(), fail.clone());
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut r = BufReader::new(r);
                let _ = w.write_all(b"220 sink ESMTP\r\n").await;
                let (mut from, mut to) = (String::new(), Vec::new());
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let cmd = line.trim_end().to_string();
                    let upper = cmd.to_ascii_uppercase();
                    let reply: String = if upper.starts_with("EHLO") {
                        "250-sink\r\n250-AUTH PLAIN\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n".into()
                    } else if upper.starts_with("HELO") || upper == "RSET" || upper == "NOOP" {
                        "250 ok\r\n".into()
                    } else if let Some(b64) = upper.strip_prefix("AUTH PLAIN ") {
                        let raw = base64::engine::general_purpose::STANDARD
                            .decode(cmd[11..].trim())
                            .unwrap_or_else(|_| b64.as_bytes().to_vec());
                        auths
                            .lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&raw).into_owned());
                        "235 2.7.0 ok\r\n".into()
                    } else if upper.starts_with("MAIL FROM:") {
                        from = cmd[10..].trim().to_string();
                        to.clear();
                        "250 ok\r\n".into()
                    } else if upper.starts_with("RCPT TO:") {
                        to.push(cmd[8..].trim().to_string());
                        "250 ok\r\n".into()
                    } else if upper == "DATA" {
                        let _ = w.write_all(b"354 go ahead\r\n").await;
                        let mut data = Vec::new();
                        loop {
                            let mut l = Vec::new();
                            if r.read_until(b'\n', &mut l).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if l == b".\r\n" {
                                break;
                            }
                            let l = if l.starts_with(b"..") {
                                &l[1..]
                            } else {
                                &l[..]
                            };
                            data.extend_from_slice(l);
                        }
                        datas.fetch_add(1, Ordering::SeqCst);
                        if fail.load(Ordering::SeqCst) > 0 {
                            fail.fetch_sub(1, Ordering::SeqCst);
                            "451 4.3.0 sink busy, try again later\r\n".into()
                        } else {
                            mails.lock().unwrap().push(Mail {
                                from: from.clone(),
                                to: to.clone(),
                                data,
                            });
                            "250 2.0.0 queued\r\n".into()
                        }
                    } else if upper == "QUIT" {
                        let _ = w.write_all(b"221 bye\r\n").await;
                        return;
                    } else {
                        "502 5.5.2 not implemented\r\n".into()
                    };
                    if w.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    sink
}

const PASSWORD: &str = "smtp-pass-9c1e7d33b2";

/// A pipeline whose report goes, daily, to an email channel on `sink`.
async fn env_with_email(s: &Sink, extra: &str) -> Env {
    std::env::set_var("CHATLAKE_TEST_SMTP_PASSWORD", PASSWORD);
    env_with(data(4), 7).await.with_pipeline(|t| {
        format!(
            "{t}\n[channels.leads]\ntype = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\n\
             username = \"reports@example.com\"\npassword = \"${{CHATLAKE_TEST_SMTP_PASSWORD}}\"\n\
             from = \"chatlake <reports@example.com>\"\nto = [\"lead@example.com\", \"ops@example.com\"]\n\
             [report]\ndeliver_to = [\"leads\"]\nevery = \"daily\"\n{extra}",
            s.port
        )
    })
}

/// The report email after a run: subject with the day's figures (computed
/// here from the served chats), the plain-text and HTML alternatives (no
/// SVG, no script; every `cid:` image is a PNG part of the message), and
/// the full report attached. The password went to the server, and
/// nowhere else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_email_has_a_summary_charts_and_the_full_report() {
    use mail_parser::{MessageParser, MimeHeaders};
    let s = sink().await;
    let env = env_with_email(&s, "").await;
    // The run's "today" is 2025-10-30: the email reports 2025-10-29.
    env.run(Some("2025-10-27"), "2025-10-29").await;
    let mails = s.mails.lock().unwrap().clone();
    assert_eq!(mails.len(), 1, "one report email");
    let mail = &mails[0];
    assert_eq!(mail.from, "<reports@example.com>");
    assert_eq!(mail.to, ["<lead@example.com>", "<ops@example.com>"]);
    assert_eq!(
        *s.auths.lock().unwrap(),
        [format!("\0reports@example.com\0{PASSWORD}")]
    );
    let m = MessageParser::default()
        .parse(&mail.data)
        .expect("a MIME message");

    // The figures, from the simulator's records of that local day.
    let day: Vec<_> = env
        .served_chats("2025-10-29", "2025-10-29")
        .into_iter()
        .filter(|c| !c.malformed)
        .collect();
    let missed = day.iter().filter(|c| c.chat_type == "Missed").count();
    assert!(day.len() > 3 && missed > 0, "a day with chats and misses");
    let rate = format!("{:.1}%", missed as f64 / day.len() as f64 * 100.0);
    let subject = m.subject().unwrap();
    assert!(
        subject.starts_with(&format!(
            "Chat report 2025-10-29 to 2025-10-29: Chats {} (",
            day.len()
        )),
        "{subject}"
    );
    assert!(
        subject.contains(&format!(" · missed {rate} (")),
        "{subject}"
    );

    // multipart/mixed [ related [ alternative [ text, html ], png... ], report.html ]
    let root = m.content_type().unwrap();
    assert_eq!((root.ctype(), root.subtype()), ("multipart", Some("mixed")));
    let text = m.body_text(0).unwrap();
    assert!(text.contains(&format!("Chats: {} (", day.len())), "{text}");
    assert!(text.contains(&format!("Missed rate: {rate} (")), "{text}");
    assert!(
        text.contains("chat-report-2025-10-29-to-2025-10-29.html"),
        "{text}"
    );
    let html = m.body_html(0).unwrap();
    let lower = html.to_ascii_lowercase();
    assert!(
        !lower.contains("<svg") && !lower.contains("<script"),
        "{html}"
    );
    assert!(!lower.contains("<style"), "inline styles only");
    assert!(html.contains(&rate), "the HTML body has the missed rate");

    // Every image the HTML names is a PNG part with that Content-ID, at
    // twice the width the HTML draws it at or more.
    let cids: Vec<&str> = html
        .split("src=\"cid:")
        .skip(1)
        .map(|s| s.split('"').next().unwrap())
        .collect();
    assert!(cids.len() >= 3, "the charts: {cids:?}");
    for cid in &cids {
        let part = m
            .parts
            .iter()
            .find(|p| p.content_id() == Some(*cid))
            .unwrap_or_else(|| panic!("no part for cid:{cid}"));
        let ct = part.content_type().unwrap();
        assert_eq!((ct.ctype(), ct.subtype()), ("image", Some("png")));
        let png = part.contents();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{cid} is a PNG");
        let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
        assert!(width >= 1200, "{cid}: {width} px wide");
    }
    let attachment = m.attachments().find(|a| a.content_id().is_none()).unwrap();
    assert_eq!(
        attachment.attachment_name(),
        Some("chat-report-2025-10-29-to-2025-10-29.html")
    );
    let report = std::str::from_utf8(attachment.contents()).unwrap();
    assert!(report.contains("<h1>Chat report</h1>") && report.contains("<svg "));
    let value: f64 = report
        .split("data-kpi=\"chats\" data-value=\"")
        .nth(1)
        .and_then(|v| v.split('"').next()?.parse().ok())
        .expect("the report's chats tile");
    assert_eq!(value, day.len() as f64);

    // The password reached the server only.
    let deliveries = env
        .rows("SELECT channel_type, status, attempts, error FROM meta.deliveries")
        .await;
    assert_eq!(
        deliveries,
        vec![vec![
            "smtp".to_string(),
            "sent".into(),
            "1".into(),
            "NULL".into()
        ]]
    );
    for f in files(env.dir.path()) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(PASSWORD),
            "{}",
            f.display()
        );
    }
}

/// A server that refuses (451, try later): the first time, the retry is
/// seen by the server and delivers; when it refuses every attempt, `chatlake
/// run` still exits 0, meta.deliveries records the failure with the
/// server's reply, and `chatlake runs` shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_smtp_server_is_retried_recorded_and_never_fails_the_run() {
    let s = sink().await;
    let env = env_with_email(&s, "").await;
    s.fail_next.store(1, Ordering::SeqCst);
    let run = env.run(Some("2025-10-27"), "2025-10-29").await;
    assert_eq!(run.failures().count(), 0);
    assert_eq!(s.datas.load(Ordering::SeqCst), 2, "refused once, then sent");
    assert_eq!(s.mails.lock().unwrap().len(), 1);
    assert_eq!(
        env.rows("SELECT status, attempts FROM meta.deliveries")
            .await,
        vec![vec!["sent".to_string(), "2".into()]]
    );

    // Refusing for good, through the binary (its "today" is the real one,
    // so the report is due again).
    s.fail_next.store(1_000, Ordering::SeqCst);
    let file = env.pipeline_file.to_str().unwrap().to_string();
    let wh = env.dir.path().join("wh");
    let wh2 = wh.clone();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        chatlake_env(
            &[
                "run",
                "--pipeline",
                &file,
                "--warehouse",
                wh2.to_str().unwrap(),
                "--from",
                "2025-10-28",
                "--to",
                "2025-10-29",
            ],
            &[("CHATLAKE_TEST_SMTP_PASSWORD", PASSWORD)],
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(s.datas.load(Ordering::SeqCst), 2 + 3, "three attempts");
    let failed = env
        .rows("SELECT channel, attempts, error FROM meta.deliveries WHERE status = 'failed'")
        .await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0][..2], ["leads".to_string(), "3".into()]);
    assert!(
        failed[0][2].contains("451") && failed[0][2].contains("sink busy"),
        "{failed:?}"
    );
    let (code, runs, _) = chatlake(&["runs", "--warehouse", wh.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(runs.contains("report to leads: SMTP 127.0.0.1:"), "{runs}");
    for text in [&out, &err, &runs] {
        assert!(!text.contains(PASSWORD), "{text}");
    }
}

/// `chatlake notify test` on `env`'s pipeline (the password in its
/// environment): exit code, stdout, stderr.
async fn notify_test(env: &Env) -> (i32, String, String) {
    let file = env.pipeline_file.to_str().unwrap().to_string();
    tokio::task::spawn_blocking(move || {
        chatlake_env(
            &["notify", "test", "--pipeline", &file],
            &[("CHATLAKE_TEST_SMTP_PASSWORD", PASSWORD)],
        )
    })
    .await
    .unwrap()
}

/// `security = "tls"` against a server that speaks plain SMTP: `notify
/// test` says FAILED with the TLS error, promptly (no hang), and the
/// password is in no output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_failure_is_reported_not_hung() {
    let s = sink().await;
    let env = env_with_email(&s, "").await;
    let env = env.with_pipeline(|t| t.replace("security = \"none\"", "security = \"tls\""));
    let started = std::time::Instant::now();
    let (code, out, err) = notify_test(&env).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("leads          FAILED  SMTP 127.0.0.1:")
            && out.contains("(after 3 attempts)"),
        "{out}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(s.mails.lock().unwrap().is_empty());
    for text in [&out, &err] {
        assert!(!text.contains(PASSWORD), "{text}");
    }
}

/// A server whose greeting never ends (bytes without a line end, as fast
/// as it can): the delivery stops after 1 MiB with a clear error, in
/// seconds, instead of reading until the timeout with memory growing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_reply_is_cut_off() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let chunk = [b'a'; 64 * 1024];
                let _ = stream.write_all(b"220 ").await;
                while stream.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    let s = Sink {
        port,
        mails: Arc::default(),
        auths: Arc::default(),
        datas: Arc::default(),
        fail_next: Arc::default(),
    };
    let env = env_with_email(&s, "").await;
    let started = std::time::Instant::now();
    let (code, out, err) = notify_test(&env).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("the server sent more than 1024 KiB of replies (after 3 attempts)"),
        "{out}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}
