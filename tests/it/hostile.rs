//! Issue 9: chatlake against hostile or broken APIs. Each test starts a tiny
//! scripted HTTP server on 127.0.0.1 that misbehaves in one way, runs the real
//! binary or pipeline against it, and checks the outcome: a clear error or a
//! quarantined record, never a panic, a hang, a leaked secret or a lost row.

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// `chatlake <args>`: (exit code, stdout, stderr).
pub fn chatlake(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_chatlake"))
        .args(args)
        .env_remove("CHATLAKE_WAREHOUSE")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn run_window(file: &str, wh: &str) -> (i32, String, String) {
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

#[allow(dead_code)]
fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

#[allow(dead_code)]
fn load(c: &AtomicUsize) -> usize {
    c.load(Ordering::SeqCst)
}
