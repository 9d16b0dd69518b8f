//! Issue 9: chatlake against hostile or broken APIs. Each test starts a tiny
//! scripted HTTP server on 127.0.0.1 that misbehaves in one way, runs the real
//! binary or pipeline against it, and checks the outcome: a clear error or a
//! quarantined record, never a panic, a hang, a leaked secret or a lost row.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, Request, Response, StatusCode};

use crate::support::*;

/// What the scripted server answers: (path and query, how many times this
/// path was asked before, request headers) -> response.
type Script = dyn Fn(&str, usize, &HeaderMap) -> Response<Body> + Send + Sync;

/// A scripted server; `requests` logs every path and query asked.
pub struct Hostile {
    pub url: String,
    pub requests: Arc<Mutex<Vec<String>>>,
    _rt: Option<tokio::runtime::Runtime>,
}

impl Hostile {
    /// Starts the server on its own runtime thread (usable from sync tests).
    pub fn start(
        script: impl Fn(&str, usize, &HeaderMap) -> Response<Body> + Send + Sync + 'static,
    ) -> Hostile {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (url, requests) = rt.block_on(Self::serve(Arc::new(script)));
        Hostile {
            url,
            requests,
            _rt: Some(rt),
        }
    }

    async fn serve(script: Arc<Script>) -> (String, Arc<Mutex<Vec<String>>>) {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let log = Arc::clone(&requests);
        let app = axum::Router::new().fallback(move |req: Request<Body>| {
            let (script, log, seen) = (Arc::clone(&script), Arc::clone(&log), Arc::clone(&seen));
            async move {
                let pq = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_default();
                log.lock().unwrap().push(pq.clone());
                let n = {
                    let mut s = seen.lock().unwrap();
                    let e = s.entry(req.uri().path().to_string()).or_insert(0);
                    *e += 1;
                    *e - 1
                };
                script(&pq, n, req.headers())
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/v1/api"), requests)
    }

    pub fn asked(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

pub fn json(status: u16, body: impl Into<String>) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json")
        .body(Body::from(body.into()))
        .unwrap()
}

/// An empty, successful Social Intents answer for any endpoint.
pub fn si_empty(path: &str) -> Response<Body> {
    let key = if path.contains("/contacts") {
        "contacts"
    } else if path.contains("/apps") {
        "apps"
    } else {
        "chats"
    };
    json(200, format!(r#"{{"apiStatus":"Success","{key}":[]}}"#))
}

/// A successful Social Intents answer with these chats.
pub fn si_chats(chats: Vec<serde_json::Value>) -> Response<Body> {
    json(
        200,
        serde_json::json!({"apiStatus": "Success", "chats": chats}).to_string(),
    )
}

/// A pipeline file for a Social Intents source at `url` with these streams,
/// in a fresh temporary directory; returns (dir, pipeline file, warehouse).
pub fn si_pipeline(url: &str, streams: &str, extra: &str) -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let text = pipeline_text(url, TOKEN, 7, extra).replace(
        r#"streams = ["chats", "missed_chats", "offline_messages", "contacts", "widgets"]"#,
        &format!("streams = {streams}"),
    );
    let file = dir.path().join("p.toml");
    std::fs::write(&file, text).unwrap();
    let wh = dir.path().join("wh");
    (
        dir,
        file.to_str().unwrap().to_string(),
        wh.to_str().unwrap().to_string(),
    )
}

pub fn run_window(file: &str, wh: &str) -> (i32, String, String) {
    chatlake(&[
        "run",
        "--pipeline",
        file,
        "--warehouse",
        wh,
        "--from",
        "2025-10-27",
        "--to",
        "2025-10-28",
    ])
}

/// Defect 1: a Retry-After of any size neither panics nor waits longer than
/// `backoff_max_ms` (100 ms in the test pipeline) per retry.
#[test]
fn retry_after_of_any_size_is_capped_and_never_panics() {
    for header in [
        "99999999999999999999",
        "999999",
        "1e308",
        "Fri, 31 Dec 9999 23:59:59 GMT",
    ] {
        let h = header.to_string();
        let server = Hostile::start(move |path, n, _| {
            if n < 2 {
                let mut r = json(429, "{}");
                r.headers_mut().insert("retry-after", h.parse().unwrap());
                r
            } else {
                si_empty(path)
            }
        });
        let (_dir, file, wh) = si_pipeline(&server.url, r#"["chats"]"#, "");
        let started = Instant::now();
        let (code, out, err) = run_window(&file, &wh);
        let took = started.elapsed();
        assert_eq!(code, 0, "Retry-After {header}: {out}{err}");
        assert!(!err.contains("panicked"), "{err}");
        // Two retries of at most 100 ms each, plus start-up: far below one real Retry-After.
        assert!(
            took < Duration::from_secs(10),
            "Retry-After {header}: took {took:?}"
        );
        assert_eq!(
            server.asked().len(),
            3,
            "two 429s then the answer: {:?}",
            server.asked()
        );
        assert!(
            !std::path::Path::new(&wh)
                .join("_locks")
                .read_dir()
                .map(|mut d| d.next().is_some())
                .unwrap_or(false),
            "lock released"
        );
    }
}

/// A Social Intents chat starting at `start` (UTC, as asked) with `n` messages.
pub fn si_chat(id: &str, start: &str, n: usize) -> serde_json::Value {
    let messages: Vec<_> = (0..n)
        .map(|i| serde_json::json!({"type": "visitor", "nickname": "v", "timestamp": 1761570000000i64 + i as i64 * 1000, "body": format!("m{i}")}))
        .collect();
    serde_json::json!({"id": id, "chatType": "Live Chat", "startDate": start, "visitorName": "v", "duration": 30, "visits": 1, "messages": messages})
}

pub fn query_rows(wh: &str, sql: &str) -> Vec<String> {
    let (code, out, err) = query_csv(wh, sql);
    assert_eq!(code, 0, "{sql}: {err}");
    out.lines().skip(1).map(str::to_string).collect()
}

/// Defect 7: the same chat twice in one page (5 messages, then 1): the
/// second version wins, and with it its one message only.
#[test]
fn a_repeated_parent_replaces_its_children_too() {
    let server = Hostile::start(|path, _, _| {
        if path.contains("/chats") {
            let chats = vec![
                si_chat("dup", "2025-10-27 15:00:00", 5),
                si_chat("other", "2025-10-27 16:00:00", 2),
                si_chat("dup", "2025-10-27 15:00:00", 1),
            ];
            si_chats(chats)
        } else {
            si_empty(path)
        }
    });
    let (_dir, file, wh) = si_pipeline(&server.url, r#"["chats"]"#, "");
    let (code, out, err) = run_window(&file, &wh);
    assert_eq!(code, 0, "{out}{err}");
    let rows = query_rows(&wh, "SELECT chat_id, COUNT(*) FROM socialintents.chat_messages GROUP BY chat_id ORDER BY chat_id");
    assert_eq!(rows, ["dup,1", "other,2"]);
    assert_eq!(
        query_rows(&wh, "SELECT COUNT(*) FROM socialintents.chats"),
        ["2"]
    );
}

/// Defect 10: `{"chats": null}` is refused; it does not empty a committed partition.
#[test]
fn a_null_record_list_fails_the_stream_and_keeps_committed_data() {
    let null_now = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&null_now);
    let server = Hostile::start(move |path, _, _| {
        if path.contains("/chats") && flag.load(Ordering::SeqCst) {
            json(200, r#"{"apiStatus":"Success","chats":null}"#)
        } else if path.contains("/chats") {
            si_chats(vec![si_chat("c1", "2025-10-27 15:00:00", 2)])
        } else {
            si_empty(path)
        }
    });
    let (_dir, file, wh) = si_pipeline(&server.url, r#"["chats"]"#, "");
    assert_eq!(run_window(&file, &wh).0, 0);
    null_now.store(true, Ordering::SeqCst);
    let (code, _, err) = run_window(&file, &wh);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("`chats` is null, expected an array") && err.contains("/chats?date_from="),
        "{err}"
    );
    assert_eq!(
        query_rows(&wh, "SELECT chat_id FROM socialintents.chats"),
        ["c1"]
    );
    assert_eq!(
        query_rows(&wh, "SELECT COUNT(*) FROM socialintents.chat_messages"),
        ["2"]
    );
}

/// Defect 2: a body over `max_body_mb` (announced, or chunked and endless)
/// fails the request with an error naming the endpoint; memory stays bounded.
#[test]
fn oversized_and_endless_bodies_are_refused() {
    let big = Arc::new(format!(
        r#"{{"apiStatus":"Success","chats":[{}]}}"#,
        vec![r#"{"id":"x"}"#; 200_000].join(",")
    ));
    for endless in [false, true] {
        let big = Arc::clone(&big);
        let server = Hostile::start(move |path, _, _| {
            if !path.contains("/chats") {
                return si_empty(path);
            }
            if endless {
                let chunk = bytes::Bytes::from(vec![b' '; 64 * 1024]);
                let stream = futures::stream::repeat(chunk).map(Ok::<_, std::io::Error>);
                Response::builder()
                    .status(200)
                    .body(Body::from_stream(stream))
                    .unwrap()
            } else {
                json(200, big.as_str())
            }
        });
        let (_dir, file, wh) = si_pipeline(&server.url, r#"["chats"]"#, "");
        let text = std::fs::read_to_string(&file).unwrap().replace(
            "request_timeout_secs = 30",
            "request_timeout_secs = 30\nmax_body_mb = 1",
        );
        std::fs::write(&file, text).unwrap();
        let started = Instant::now();
        let (code, _, err) = run_window(&file, &wh);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("/chats?date_from=")
                && err.contains("limit of 1 MiB ([http] max_body_mb)"),
            "endless={endless}: {err}"
        );
        assert!(started.elapsed() < Duration::from_secs(20));
        // Refused at once: not retried (the same answer would come again).
        assert_eq!(
            server
                .asked()
                .iter()
                .filter(|p| p.contains("/chats"))
                .count(),
            1,
            "{:?}",
            server.asked()
        );
    }
}

/// The same for a CRM array, which is spooled to a temporary file rather
/// than memory: an endless body stops at `max_file_body_mb`, once.
#[test]
fn an_endless_crm_array_stops_at_the_file_limit() {
    let server = Hostile::start(|_, _, _| {
        let open = futures::stream::once(async { Ok(bytes::Bytes::from_static(b"[")) });
        let chunk = bytes::Bytes::from(vec![b' '; 64 * 1024]);
        let rest = futures::stream::repeat(chunk).map(Ok::<_, std::io::Error>);
        Response::builder()
            .status(200)
            .body(Body::from_stream(open.chain(rest)))
            .unwrap()
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("crm.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"crm\"\ntimezone = \"UTC\"\nstart_date = \"2025-10-01\"\n[http]\nmax_file_body_mb = 2\n[sources.crm]\nbase_url = \"{}\"\napi_key = \"{TOKEN}\"\nstreams = [\"companies\"]\nrequests_per_minute = 60000\n",
            server.url
        ),
    )
    .unwrap();
    let wh = dir.path().join("wh");
    let started = Instant::now();
    let (code, _, err) = chatlake(&[
        "run",
        "--pipeline",
        file.to_str().unwrap(),
        "--warehouse",
        wh.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("/companies") && err.contains("limit of 2 MiB ([http] max_file_body_mb)"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(server.asked().len(), 1, "not retried: {:?}", server.asked());
}

/// Defect 3: a credential echoed by the API (in a 401 body, or an
/// apiStatusMessage) appears nowhere: not on stderr or stdout (debug logs
/// included), not in meta.runs.
#[test]
fn echoed_credentials_are_redacted_everywhere() {
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("acct:{TOKEN}"));
    for status in [401u16, 200] {
        let b = basic.clone();
        let server = Hostile::start(move |path, _, headers| {
            let sent = headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            if !path.contains("/chats") {
                si_empty(path)
            } else if status == 401 {
                json(
                    401,
                    format!(r#"{{"detail":"token {TOKEN} is not valid (you sent: {sent}, {b})"}}"#),
                )
            } else {
                json(
                    200,
                    format!(
                        r#"{{"apiStatus":"Error","apiStatusCode":"403","apiStatusMessage":"Invalid token {TOKEN} in {sent}"}}"#
                    ),
                )
            }
        });
        let (_dir, file, wh) = si_pipeline(&server.url, r#"["chats"]"#, "");
        let (code, stdout, stderr) = chatlake_env(
            &[
                "run",
                "--pipeline",
                &file,
                "--warehouse",
                &wh,
                "--from",
                "2025-10-27",
                "--to",
                "2025-10-28",
            ],
            &[("RUST_LOG", "debug")],
        );
        assert_eq!(code, 1, "{stderr}");
        assert!(
            stderr.contains("***"),
            "the echo is shown, redacted: {stderr}"
        );
        let (_, runs, _) = query_csv(&wh, "SELECT error FROM meta.runs");
        assert!(runs.contains("***"), "{runs}");
        let files: String = files(std::path::Path::new(&wh))
            .iter()
            .map(|f| String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned())
            .collect();
        for (what, text) in [
            ("stdout", stdout.as_ref()),
            ("stderr", stderr.as_ref()),
            ("meta.runs", runs.as_str()),
            ("warehouse files", files.as_str()),
        ] {
            assert!(
                !text.contains(TOKEN) && !text.contains(&basic),
                "status {status}: secret in {what}: {text}"
            );
        }
    }
}

/// Defect 10: a redirect to another server is not followed (its data is not
/// ingested, our credentials do not go there); one within the origin is.
#[test]
fn cross_origin_redirects_are_refused() {
    let elsewhere =
        Hostile::start(|_, _, _| si_chats(vec![si_chat("evil", "2025-10-27 15:00:00", 1)]));
    let target = elsewhere.url.replace("127.0.0.1", "localhost");
    let server = Hostile::start(move |path, _, _| {
        if path.contains("/chats") {
            Response::builder()
                .status(302)
                .header("location", format!("{target}/chats"))
                .body(Body::empty())
                .unwrap()
        } else if path.contains("/moved") {
            si_empty("/chats")
        } else {
            Response::builder()
                .status(302)
                .header("location", "/v1/api/moved")
                .body(Body::empty())
                .unwrap()
        }
    });
    let (_dir, file, wh) = si_pipeline(&server.url, r#"["chats", "offline_messages"]"#, "");
    let (code, out, err) = run_window(&file, &wh);
    assert_eq!(code, 1, "{out}{err}");
    // The port is named: it may be the only part that differs (issue 24.19).
    let port = elsewhere
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    assert!(
        err.contains(&format!(
            "refusing a redirect to another server (http://localhost:{port}, the request went to http://127.0.0.1:"
        )),
        "{err}"
    );
    assert!(
        elsewhere.asked().is_empty(),
        "nothing asked of the other server: {:?}",
        elsewhere.asked()
    );
    assert!(
        out.contains("socialintents.offline_messages")
            && out
                .lines()
                .any(|l| l.starts_with("socialintents.offline_messages") && l.ends_with("ok")),
        "same-origin redirect followed: {out}"
    );
}

/// The Social25 pipeline for `url` with only the messages stream.
fn s25_pipeline(url: &str) -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"name = "test"
timezone = "America/New_York"
start_date = "2025-10-27"
lookback_days = 2
[http]
max_attempts = 2
backoff_base_ms = 5
backoff_max_ms = 50
[sources.social25]
base_url = "{url}"
token = "{TOKEN}"
tenant_id = "T1"
streams = ["messages"]
requests_per_minute = 60000
"#
    );
    let file = dir.path().join("p.toml");
    std::fs::write(&file, text).unwrap();
    let wh = dir.path().join("wh").to_str().unwrap().to_string();
    (dir, file.to_str().unwrap().to_string(), wh)
}

fn listing(results: Vec<serde_json::Value>) -> Response<Body> {
    json(200, serde_json::json!({"count": results.len(), "next": null, "previous": null, "results": results}).to_string())
}

/// Defect 4: conversation ids from the API are one percent-encoded path
/// segment each: `../../../../admin/export`, `c2?evil=1` and `c3#frag` ask
/// for their own messages, and nothing else on the host is requested.
#[test]
fn api_ids_cannot_steer_requests_to_other_paths() {
    let evil = ["../../../../admin/export", "c2?evil=1", "c3#frag"];
    let server = Hostile::start(move |path, _, _| {
        let prefix = "/v1/api/tenants/T1/conversations/";
        if path.starts_with(prefix) && path.contains("state=open") {
            let convs = evil
                .iter()
                .map(|id| serde_json::json!({"id": id, "created": "2025-10-27T15:00:00", "last_message": {"id": format!("m-{id}"), "timestamp": "2025-10-27T15:01:00"}}))
                .collect();
            listing(convs)
        } else if path.starts_with(prefix) && path.contains("state=") {
            listing(vec![])
        } else if let Some(rest) = path
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("/messages/"))
        {
            let id = percent_decode(rest);
            listing(vec![
                serde_json::json!({"id": format!("m-{id}"), "conversation_id": id, "timestamp": "2025-10-27T15:01:00", "text": "hi"}),
            ])
        } else {
            // A trap: what an escaped request would read and store.
            listing(vec![
                serde_json::json!({"id": "stolen", "timestamp": "2025-10-27T15:01:00", "text": "admin export"}),
            ])
        }
    });
    let (_dir, file, wh) = s25_pipeline(&server.url);
    let (code, out, err) = run_window(&file, &wh);
    assert_eq!(code, 0, "{out}{err}");
    let asked = server.asked();
    assert_eq!(asked.len(), 5 + 3, "{asked:?}");
    for p in &asked {
        assert!(
            p.starts_with("/v1/api/tenants/T1/conversations/")
                && !p.contains("admin/")
                && !p.contains("evil=1&")
                && !p.contains('#'),
            "{p}"
        );
    }
    let got = query_rows(
        &wh,
        "SELECT conversation_id, message_id FROM social25.messages ORDER BY conversation_id",
    );
    let mut want: Vec<String> = evil
        .iter()
        .map(|id| {
            format!(
                "{},m-{id}",
                if id.contains(',') {
                    format!("\"{id}\"")
                } else {
                    id.to_string()
                }
            )
        })
        .collect();
    want.sort();
    assert_eq!(got, want);
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// Defect 10: a startDate in year 1 or 9999 is quarantined with a reason,
/// not silently dropped; the other chats land.
#[test]
fn records_outside_the_dates_asked_for_are_quarantined() {
    let server = Hostile::start(|path, _, _| {
        if path.contains("/chats") && path.contains("date_from=2025-10-27") {
            let chats = vec![
                si_chat("ok", "2025-10-27 15:00:00", 1),
                si_chat("y1", "0001-01-01 10:00:00", 1),
                si_chat("y9999", "9999-12-31 10:00:00", 1),
            ];
            si_chats(chats)
        } else {
            si_empty(path)
        }
    });
    let (_dir, file, wh) = si_pipeline(&server.url, r#"["chats"]"#, "");
    let (code, out, err) = run_window(&file, &wh);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        query_rows(&wh, "SELECT chat_id FROM socialintents.chats"),
        ["ok"]
    );
    let rejects = query_rows(&wh, "SELECT reason FROM meta.rejects ORDER BY reason");
    assert_eq!(rejects.len(), 2, "{rejects:?}");
    assert!(
        rejects[0].contains(
            "0001-01-01 10:00:00 is outside the dates asked for (2025-10-27..2025-10-29 UTC)"
        ),
        "{rejects:?}"
    );
    assert!(
        rejects[1].contains("9999-12-31 10:00:00 is outside"),
        "{rejects:?}"
    );
}

/// Defect 10: a CRM endpoint that suddenly answers `[]` would mark every
/// row deleted: refused (nothing written) unless `--allow-mass-delete`.
#[test]
fn a_crm_answer_that_would_delete_most_rows_is_refused() {
    let empty = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&empty);
    let server = Hostile::start(move |_, _, _| {
        if flag.load(Ordering::SeqCst) {
            return json(200, "[]");
        }
        let companies: Vec<_> = (1..=4)
            .map(|i| serde_json::json!({"id": format!("co{i}"), "name": format!("Co {i}"), "createdAt": "2025-10-01T10:00:00.000Z", "updatedAt": "2025-10-02T10:00:00.000Z"}))
            .collect();
        json(200, serde_json::Value::Array(companies).to_string())
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("crm.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"crm\"\ntimezone = \"UTC\"\nstart_date = \"2025-10-01\"\n[http]\nmax_attempts = 1\n[sources.crm]\nbase_url = \"{}\"\napi_key = \"{TOKEN}\"\nstreams = [\"companies\"]\nrequests_per_minute = 60000\n",
            server.url
        ),
    )
    .unwrap();
    let (file, wh) = (file.to_str().unwrap(), dir.path().join("wh"));
    let wh = wh.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--pipeline", file, "--warehouse", wh];
        args.extend_from_slice(extra);
        chatlake(&args)
    };
    assert_eq!(run(&[]).0, 0);
    empty.store(true, Ordering::SeqCst);
    let (code, _, err) = run(&[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "would mark 4 of 4 stored rows deleted (100%), more than max_delete_share = 0.5"
        ) && err.contains("--allow-mass-delete"),
        "{err}"
    );
    assert_eq!(
        query_rows(
            wh,
            "SELECT COUNT(*) FROM crm.companies WHERE deleted_at IS NULL"
        ),
        ["4"]
    );
    let (code, _, err) = run(&["--allow-mass-delete"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        query_rows(
            wh,
            "SELECT COUNT(*) FROM crm.companies WHERE deleted_at IS NOT NULL"
        ),
        ["4"]
    );
}

/// Defect 10: settings that can only go wrong are refused up front, with the
/// key, the value and why (exit 2): a start_date in the future, a cron that
/// never fires, two scheduled pipelines with one name, a changed timezone on
/// an existing warehouse (unless --full-refresh), and a statement too deep
/// to plan.
#[test]
fn impossible_settings_are_refused_with_a_reason() {
    let server = Hostile::start(|path, _, _| si_empty(path));
    let (dir, file, wh) = si_pipeline(&server.url, r#"["chats"]"#, "");
    let text = std::fs::read_to_string(&file).unwrap();
    let variant = |name: &str, from: &str, to: &str| {
        let f = dir.path().join(name);
        std::fs::write(&f, text.replace(from, to)).unwrap();
        f.to_str().unwrap().to_string()
    };
    // start_date after today.
    let future = variant(
        "future.toml",
        "start_date = \"2025-10-27\"",
        "start_date = \"2999-01-01\"",
    );
    let (code, _, err) = chatlake(&["run", "--pipeline", &future, "--warehouse", &wh]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("start_date 2999-01-01 is after today"),
        "{err}"
    );
    // A cron that never fires (February 30).
    let never = variant("never.toml", "0 30 2 * * *", "0 0 0 30 2 *");
    let (code, _, err) = chatlake(&["run", "--pipeline", &never, "--warehouse", &wh]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("schedule: `0 0 0 30 2 *` never fires"),
        "{err}"
    );
    // Two files, one name.
    let sched = dir.path().join("sched");
    std::fs::create_dir_all(&sched).unwrap();
    std::fs::write(sched.join("a.toml"), &text).unwrap();
    std::fs::write(sched.join("b.toml"), &text).unwrap();
    let (code, _, err) = chatlake(&[
        "schedule",
        "--pipeline",
        sched.to_str().unwrap(),
        "--warehouse",
        &wh,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("a.toml and") && err.contains("b.toml both have name = \"test\""),
        "{err}"
    );
    // The timezone changes under an existing warehouse.
    assert_eq!(run_window(&file, &wh).0, 0);
    let moved = variant(
        "moved.toml",
        "timezone = \"America/New_York\"",
        "timezone = \"Europe/Berlin\"",
    );
    let (code, _, err) = chatlake(&["run", "--pipeline", &moved, "--warehouse", &wh]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("partitioned by local dates in America/New_York")
            && err.contains("--full-refresh"),
        "{err}"
    );
    let (code, _, err) = chatlake(&[
        "run",
        "--pipeline",
        &moved,
        "--warehouse",
        &wh,
        "--full-refresh",
        "--to",
        "2025-10-28",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = chatlake(&[
        "run",
        "--pipeline",
        &moved,
        "--warehouse",
        &wh,
        "--to",
        "2025-10-28",
    ]);
    assert_eq!(
        code, 0,
        "after the full refresh, the new timezone is the warehouse's: {err}"
    );
    // A statement with thousands of terms: an error, not a stack overflow.
    let deep = format!("SELECT 1{}", "+1".repeat(5000));
    let (code, _, err) = chatlake(&["query", "--warehouse", &wh, &deep]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("the statement has 5000 operators; at most 1000"),
        "{err}"
    );
    let (code, out, err) = query_csv(&wh, &format!("SELECT 1{} AS n", "+1".repeat(1000)));
    assert_eq!((code, out.trim()), (0, "n\n1001"), "{err}");
}
