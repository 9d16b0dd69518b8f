//! What `chatlake schedule --listen ADDR` serves: `/healthz` and Prometheus
//! text metrics at `/metrics`, per pipeline and stream: runs by status, rows
//! written, rejects, retries, and the time of the last success.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use axum::routing::get;
use axum::Router;

use crate::error::{Error, Result};
use crate::pipeline::RunReport;

#[derive(Debug, Default, Clone)]
struct StreamStats {
    runs_ok: u64,
    runs_failed: u64,
    rows: u64,
    rejects: u64,
    retries: u64,
    last_success: Option<i64>,
}

/// Counters the scheduler updates after every run.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    inner: Arc<Mutex<BTreeMap<(String, String), StreamStats>>>,
    skipped: Arc<Mutex<BTreeMap<String, u64>>>,
    aborted: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Metrics {
    /// Records a finished run of `pipeline`.
    pub fn record(&self, pipeline: &str, report: &RunReport) {
        let mut m = self.inner.lock().expect("metrics lock");
        for s in &report.streams {
            let e = m
                .entry((pipeline.to_string(), s.stream.clone()))
                .or_default();
            if s.error.is_some() {
                e.runs_failed += 1;
            } else {
                e.runs_ok += 1;
                e.last_success = Some(s.finished_at.timestamp());
            }
            e.rows += s.rows_written;
            e.rejects += s.rejects;
            e.retries += s.traffic.retries;
        }
    }

    /// Records a slot skipped because another run held the lock.
    pub fn skipped(&self, pipeline: &str) {
        *self
            .skipped
            .lock()
            .expect("metrics lock")
            .entry(pipeline.to_string())
            .or_default() += 1;
    }

    /// Records a run that could not start or crashed (a panic) before it
    /// could report per stream.
    pub fn crashed(&self, pipeline: &str) {
        *self
            .aborted
            .lock()
            .expect("metrics lock")
            .entry(pipeline.to_string())
            .or_default() += 1;
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let m = self.inner.lock().expect("metrics lock");
        let mut out = String::new();
        let mut family =
            |name: &str,
             kind: &str,
             help: &str,
             value: &dyn Fn(&StreamStats) -> Option<(String, f64)>| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for ((p, s), st) in m.iter() {
                    if let Some((extra, v)) = value(st) {
                        let _ =
                            writeln!(out, "{name}{{pipeline=\"{p}\",stream=\"{s}\"{extra}}} {v}");
                    }
                }
            };
        family(
            "chatlake_runs_total",
            "counter",
            "Stream runs by status.",
            &|st| Some((",status=\"success\"".into(), st.runs_ok as f64)),
        );
        family(
            "chatlake_failed_runs_total",
            "counter",
            "Stream runs that failed.",
            &|st| Some((String::new(), st.runs_failed as f64)),
        );
        family(
            "chatlake_rows_written_total",
            "counter",
            "Rows written.",
            &|st| Some((String::new(), st.rows as f64)),
        );
        family(
            "chatlake_rejects_total",
            "counter",
            "Records quarantined in meta.rejects.",
            &|st| Some((String::new(), st.rejects as f64)),
        );
        family(
            "chatlake_retries_total",
            "counter",
            "HTTP retries.",
            &|st| Some((String::new(), st.retries as f64)),
        );
        family(
            "chatlake_last_success_timestamp_seconds",
            "gauge",
            "When the stream last succeeded (Unix time).",
            &|st| st.last_success.map(|t| (String::new(), t as f64)),
        );
        let _ = writeln!(out, "# HELP chatlake_skipped_slots_total Slots skipped because another run held the lock.\n# TYPE chatlake_skipped_slots_total counter");
        for (p, n) in self.skipped.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "chatlake_skipped_slots_total{{pipeline=\"{p}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP chatlake_aborted_runs_total Runs that could not start or crashed.\n# TYPE chatlake_aborted_runs_total counter");
        for (p, n) in self.aborted.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "chatlake_aborted_runs_total{{pipeline=\"{p}\"}} {n}");
        }
        out
    }

    /// Serves `/healthz` and `/metrics` on `addr` until the process ends,
    /// within the limits of [`MAX_CONNECTIONS`], [`HEADER_READ_TIMEOUT`]
    /// and [`CONNECTION_TIMEOUT`].
    pub async fn serve(self, addr: &str) -> Result<std::net::SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::io(format!("--listen {addr}"), e))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::io(format!("--listen {addr}"), e))?;
        let app = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route(
                "/metrics",
                get(move || {
                    let m = self.clone();
                    async move {
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "text/plain; version=0.0.4",
                            )],
                            m.render(),
                        )
                    }
                }),
            );
        tokio::spawn(accept(listener, app));
        Ok(local)
    }
}

/// Connections served at once; more are closed as soon as they are
/// accepted (200 idle clients held 200 file descriptors, and the scheduled
/// runs failed with "Too many open files").
pub const MAX_CONNECTIONS: usize = 32;

/// A client must have sent its request's headers within this time (a
/// slowloris client stayed connected for 90 s).
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A connection is closed after this long, idle or not.
pub const CONNECTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The accept loop of the metrics port.
async fn accept(listener: tokio::net::TcpListener, app: Router) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::warn!(error = %e, "metrics port: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            drop(slot);
        });
    }
}
