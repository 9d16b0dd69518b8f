//! Backfill benchmark: a large simulated history (1,000,000 chats with their
//! messages by default) through the real pipeline into a local warehouse,
//! then the reporting views over it. Prints records/s, peak RSS and view
//! timings. Run: `cargo bench --bench backfill` (CHATLAKE_BENCH_CHATS=N to
//! change the size). Figures are recorded in BENCHMARKS.md.

use std::time::Instant;

use chatlake::config::Pipeline;
use chatlake::pipeline::{run_once, RunOptions};
use chatlake::query;
use chatlake::simulator::{SimConfig, Simulator};
use chatlake::sink::Warehouse;
use chrono::{Duration, NaiveDate, TimeZone, Utc};

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let chats: u64 = std::env::var("CHATLAKE_BENCH_CHATS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let days: u64 = 365;
    let per_day = (chats / days).max(1) as u32;
    let first = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
    let last = first + Duration::days(days as i64 - 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut cfg = SimConfig::demo(first, last);
        cfg.socialintents.chats_per_day = per_day;
        let sim = Simulator::start(cfg).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"name = "bench"
timezone = "America/New_York"
start_date = "{first}"
[sources.socialintents]
base_url = "{}"
account_id = "demo-account"
api_token = "demo-token"
streams = ["chats", "missed_chats"]
window_days = 7
requests_per_minute = 100000
"#,
            sim.socialintents_url()
        );
        let p = Pipeline::parse(&text, std::path::Path::new("bench.toml"), &|_| None).unwrap();
        let wh = Warehouse::open(dir.path().to_str().unwrap()).unwrap();
        let opts = RunOptions {
            to: Some(last),
            now: Some(Utc.from_utc_datetime(&(last + Duration::days(1)).and_hms_opt(12, 0, 0).unwrap())),
            ..RunOptions::default()
        };
        let t = Instant::now();
        let report = run_once(&p, &wh, &opts).await.unwrap();
        let secs = t.elapsed().as_secs_f64();
        let chats_stream = &report.streams[0];
        assert!(chats_stream.error.is_none(), "{:?}", chats_stream.error);
        let rows = chats_stream.rows_written;
        let unique_chats = rows; // chats + messages rows; see below for the chat count
        println!("backfill: {} days, {} windows", days, days.div_ceil(7));
        println!("  records received  {}", chats_stream.records);
        println!("  rows written      {unique_chats} (chats + messages)");
        println!("  time              {secs:.1} s");
        println!("  records/s         {:.0}", chats_stream.records as f64 / secs);
        println!("  rows/s            {:.0}", rows as f64 / secs);
        println!("  peak RSS          {:.0} MB", peak_rss_mb());
        let ctx = query::session(&wh).await.unwrap();
        for sql in [
            "SELECT COUNT(*) FROM socialintents.chats",
            "SELECT COUNT(*), SUM(missed_chats) FROM reporting.missed_chat_rate",
            "SELECT COUNT(*), AVG(avg_first_response_seconds) FROM reporting.response_times",
        ] {
            let t = Instant::now();
            let batches = query::run(&ctx, sql).await.unwrap();
            let text = query::render(&batches, query::Format::Csv).unwrap();
            println!("  {:>6.2} s  {sql}  -> {}", t.elapsed().as_secs_f64(), text.lines().nth(1).unwrap_or(""));
        }
        println!("  peak RSS after views {:.0} MB", peak_rss_mb());
    });
}
