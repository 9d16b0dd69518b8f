//! Backfill benchmark: a large simulated history through the real pipeline
//! into a local warehouse, then the reporting views over it. Prints records/s,
//! peak RSS and view timings. The simulator runs as a separate `chatlake
//! simulator` process, so the peak RSS is the pipeline's own. Figures are
//! recorded in BENCHMARKS.md.
//!
//! - `cargo bench --bench backfill`: 1,000,000 Social Intents chats with their
//!   messages (CHATLAKE_BENCH_CHATS=N to change the size,
//!   CHATLAKE_BENCH_BUFFERED_MB=N to set `max_buffered_mb`). With
//!   CHATLAKE_BENCH_PRIVACY=1, under a `[privacy]` policy that hashes emails
//!   and phones, drops names and redacts free text; then `forget` of one
//!   visitor, timed.
//!   Then (unless CHATLAKE_BENCH_SERVE=0) the same queries through
//!   `chatlake serve`: warm, beside DuckDB; connect plus first query; 20
//!   clients at once and the server's peak RSS. CHATLAKE_BENCH_KEEP=1 keeps
//!   the warehouse (its path is printed last), to measure it again by hand.
//! - `CHATLAKE_BENCH_SOURCE=social25 cargo bench --bench backfill`: 100,000
//!   Social25 conversations (CHATLAKE_BENCH_CONVERSATIONS=N), their messages
//!   and failed syncs, then an incremental run with nothing changed.
//! - `CHATLAKE_BENCH_SOURCE=crm cargo bench --bench backfill`: a CRM account
//!   with 100,000 conversations (CHATLAKE_BENCH_CONVERSATIONS=N) in one JSON
//!   array, then a run with nothing changed.
//! - `CHATLAKE_BENCH_SOURCE=throughput cargo bench --bench backfill`: against
//!   a simulator limited to 10, then 50 requests/s per source with 50 ms
//!   latency: the adaptive rate against the limit, the share of 429s, a
//!   nightly run with nothing new, three sources at once against the slowest
//!   alone, and the old fixed default (120 requests a minute).

use std::time::Instant;

use chatlake::config::Pipeline;
use chatlake::pipeline::{run_once, RunOptions};
use chatlake::query;
use chatlake::sink::Warehouse;
use chrono::{Duration, NaiveDate, TimeZone, Utc};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Kills the simulator process when the benchmark ends.
struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `chatlake simulator` with `per_day` chats and conversations a day;
/// returns it and its root URL.
fn start_simulator(
    first: NaiveDate,
    last: NaiveDate,
    per_day: u32,
    extra: &[&str],
) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_chatlake"))
        .args([
            "simulator",
            "--port",
            &port.to_string(),
            "--from",
            &first.to_string(),
            "--to",
            &last.to_string(),
            "--even",
        ])
        .args([
            "--chats-per-day",
            &per_day.to_string(),
            "--conversations-per-day",
            &per_day.to_string(),
        ])
        .args(["--crm-conversations-per-day", &per_day.to_string()])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("starting `chatlake simulator`");
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (Child(child), format!("http://127.0.0.1:{port}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop(Child(child)); // kills and reaps it
    panic!("simulator did not start on port {port}");
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Resets the peak RSS to the current RSS (Linux: `5` into clear_refs),
/// so that each run's peak is its own.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Times each query over the warehouse (views included), then prints the peak RSS.
async fn time_queries(wh: &Warehouse, sqls: &[&str]) {
    let ctx = query::session(wh).await.unwrap();
    for sql in sqls {
        let t = Instant::now();
        let batches = query::run(&ctx, sql).await.unwrap();
        let text = query::render(&batches, query::Format::Csv).unwrap();
        println!(
            "  {:>6.2} s  {sql}  -> {}",
            t.elapsed().as_secs_f64(),
            text.lines().nth(1).unwrap_or("")
        );
    }
    println!("  peak RSS after views {:.0} MB", peak_rss_mb());
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    match std::env::var("CHATLAKE_BENCH_SOURCE").as_deref() {
        Ok(source @ ("social25" | "crm")) => conversations_bench(source),
        Ok("throughput") => throughput(),
        Ok("socialintents") | Err(_) => socialintents(),
        Ok(other) => {
            panic!("CHATLAKE_BENCH_SOURCE={other}: use socialintents, social25, crm or throughput")
        }
    }
}

/// Backfills `source` (social25 or crm) with 300 conversations a day, then
/// runs again with nothing changed; prints each stream and the peak RSS.
fn conversations_bench(source: &str) {
    let conversations = env_u64("CHATLAKE_BENCH_CONVERSATIONS", 100_000);
    let per_day = env_u64("CHATLAKE_BENCH_CONVERSATIONS_PER_DAY", 300) as u32;
    let days = conversations.div_ceil(per_day as u64);
    let first = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
    let last = first + Duration::days(days as i64 - 1);
    // A fixed clock: the listing of a large account is generated once.
    let clock = format!("{}T00:00:00Z", last + Duration::days(1));
    let (_sim, url) = start_simulator(first, last, per_day, &["--now", &clock]);
    // CHATLAKE_BENCH_STREAMS=conversations,messages leaves out the failed
    // syncs, which the simulator generates slowly for a large account.
    let streams = std::env::var("CHATLAKE_BENCH_STREAMS")
        .unwrap_or_else(|_| "conversations,messages,failed_syncs".into())
        .split(',')
        .map(|s| format!("\"{}\"", s.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    let section = match source {
        "social25" => format!(
            "[sources.social25]\nbase_url = \"{url}/social25/api/v1.0\"\ntoken = \"demo-social25-token\"\n\
             tenant_id = \"007be0e1-6c95-4843-8673-a76a479266f8\"\nstreams = [{streams}]\n\
             requests_per_minute = 1000000\nmax_concurrency = 8\n"
        ),
        _ => format!(
            "[sources.crm]\nbase_url = \"{url}/crm/api/v1\"\napi_key = \"demo-crm-key\"\n\
             streams = [\"companies\", \"contacts\", \"conversations\"]\nrequests_per_minute = 100000\n"
        ),
    };
    let text = format!("name = \"bench-{source}\"\ntimezone = \"America/New_York\"\nstart_date = \"{first}\"\n{section}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let p = Pipeline::parse(&text, std::path::Path::new("bench.toml"), &|_| None).unwrap();
        let wh = Warehouse::open(dir.path().to_str().unwrap()).unwrap();
        println!("{source} backfill: {days} days, {per_day} conversations a day");
        for label in ["first run (backfill)", "second run (nothing changed)"] {
            reset_peak_rss();
            let t = Instant::now();
            let report = run_once(&p, &wh, &RunOptions::default()).await.unwrap();
            println!("  {label}: {:.1} s", t.elapsed().as_secs_f64());
            for s in &report.streams {
                assert!(s.error.is_none(), "{}: {:?}", s.stream, s.error);
                let secs = (s.finished_at - s.started_at).num_milliseconds() as f64 / 1000.0;
                println!(
                    "    {:<24} {:>22} {:>7} pages {:>8} records {:>8} rows {:>6.1} s {:>8.0} records/s",
                    s.stream, s.scope, s.pages, s.records, s.rows_written, secs, s.records as f64 / secs.max(0.001)
                );
            }
            println!("    peak RSS of this run {:.0} MB", peak_rss_mb());
        }
        if source == "social25" {
            time_queries(
                &wh,
                &[
                    "SELECT COUNT(*) FROM social25.messages",
                    "SELECT COUNT(*), SUM(missed_chats) FROM reporting.missed_chat_rate WHERE source = 'social25'",
                    "SELECT COUNT(*), AVG(avg_first_response_seconds) FROM reporting.response_times WHERE source = 'social25'",
                ],
            )
            .await;
        }
    });
}

fn socialintents() {
    let chats: u64 = std::env::var("CHATLAKE_BENCH_CHATS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    // A fixed daily volume (about 1M chats a year): a longer history means
    // more days, not bigger windows, so peak memory must stay flat.
    let per_day: u32 = std::env::var("CHATLAKE_BENCH_CHATS_PER_DAY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2740);
    let days: u64 = chats.div_ceil(per_day as u64);
    let first = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
    let last = first + Duration::days(days as i64 - 1);
    let (_sim, url) = start_simulator(first, last, per_day, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        // CHATLAKE_BENCH_BUFFERED_MB=N sets max_buffered_mb (default: the
        // pipeline's default), to compare with reading ahead by count alone.
        let buffered = std::env::var("CHATLAKE_BENCH_BUFFERED_MB")
            .map(|mb| format!("max_buffered_mb = {mb}\n"))
            .unwrap_or_default();
        let text = format!(
            r#"name = "bench"
timezone = "America/New_York"
start_date = "{first}"
{buffered}[sources.socialintents]
base_url = "{}/socialintents/v1/api"
account_id = "demo-account"
api_token = "demo-token"
streams = ["chats", "missed_chats"]
window_days = 7
requests_per_minute = 100000
"#,
            url
        );
        let privacy = std::env::var("CHATLAKE_BENCH_PRIVACY").is_ok_and(|v| v == "1");
        let text = if privacy {
            format!(
                "{text}[privacy]\nkey = \"bench-privacy-key-0123456789\"\nemail = \"hash\"\nphone = \"hash\"\nname = \"drop\"\nfree_text = \"redact\"\n"
            )
        } else {
            text
        };
        let p = Pipeline::parse(&text, std::path::Path::new("bench.toml"), &|_| None).unwrap();
        let wh = Warehouse::open(dir.path().to_str().unwrap()).unwrap();
        let opts = RunOptions {
            to: Some(last),
            now: Some(
                Utc.from_utc_datetime(&(last + Duration::days(1)).and_hms_opt(12, 0, 0).unwrap()),
            ),
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
        println!(
            "  records/s         {:.0}",
            chats_stream.records as f64 / secs
        );
        println!("  rows/s            {:.0}", rows as f64 / secs);
        println!("  peak RSS          {:.0} MB", peak_rss_mb());
        time_queries(
            &wh,
            &[
                "SELECT COUNT(*) FROM socialintents.chats",
                "SELECT COUNT(*), SUM(missed_chats) FROM reporting.missed_chat_rate",
                "SELECT COUNT(*), AVG(avg_first_response_seconds) FROM reporting.response_times",
            ],
        )
        .await;
        if privacy {
            forget_one(&p, &wh, first, per_day).await;
            return;
        }
        let month = (last - Duration::days(29), last);
        let (queries, duck) = side_by_side(&wh, dir.path(), month).await;
        if std::env::var("CHATLAKE_BENCH_SERVE").as_deref() != Ok("0") {
            through_the_server(dir.path().to_str().unwrap(), &queries, &duck).await;
        }
        if std::env::var("CHATLAKE_BENCH_KEEP").is_ok_and(|v| v == "1") {
            println!("warehouse kept in {}", dir.keep().display());
        }
    });
}

/// A line of /proc/PID/status, in MB (VmRSS: now; VmHWM: the peak).
fn status_mb(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// `chatlake serve` over the same warehouse, as a BI tool meets it: every
/// query of [`side_by_side`] through the server (tokio-postgres, every row
/// fetched), warm (median of 5 after one run), beside DuckDB in one
/// process; a new connection (SCRAM) plus its first query; 20 clients at
/// once running every query, and the server's peak RSS.
async fn through_the_server(wh_path: &str, queries: &[String], duck: &[Option<f64>]) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let password = "bench-serve-password-1";
    let server = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_chatlake"))
            .args([
                "serve",
                "--warehouse",
                wh_path,
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .env("CHATLAKE_SERVE_PASSWORD", password)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting chatlake serve"),
    );
    let pid = server.0.id();
    let dsn =
        format!("host=127.0.0.1 port={port} user=chatlake password={password} dbname=datafusion");
    let connect = || async {
        let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        Ok::<_, tokio_postgres::Error>(client)
    };
    let started = Instant::now();
    let c = loop {
        match connect().await {
            Ok(c) => break c,
            Err(_) if started.elapsed().as_secs() < 30 => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await
            }
            Err(e) => panic!("chatlake serve did not answer in 30 s: {e}"),
        }
    };
    println!("through chatlake serve (tokio-postgres, every row fetched; warm: median of 5 after one run), beside DuckDB in one process:");
    println!("  {:>8} {:>8} {:>6}  query", "server", "duckdb", "ratio");
    for (q, d) in queries.iter().zip(duck) {
        c.simple_query(q).await.unwrap();
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            c.simple_query(q).await.unwrap();
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        match d {
            Some(d) => println!("  {:>7.2}s {d:>7.2}s {:>6.2}  {q}", times[2], times[2] / d),
            None => println!("  {:>7.2}s {:>8} {:>6}  {q}", times[2], "-", "-"),
        }
    }
    for first in ["SELECT 1", queries[1].as_str()] {
        let mut times = Vec::new();
        for _ in 0..10 {
            let t = Instant::now();
            let c = connect().await.unwrap();
            c.simple_query(first).await.unwrap();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "  a new connection (SCRAM-SHA-256) and its first query, median of 10: {:.0} ms (slowest {:.0} ms): {first}",
            times[5], times[9]
        );
    }
    let before = status_mb(pid, "VmRSS:");
    let t = Instant::now();
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let (dsn, queries) = (dsn.clone(), queries.to_vec());
            tokio::spawn(async move {
                let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                for q in &queries {
                    client.simple_query(q).await.unwrap();
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    println!(
        "  20 clients at once, each running the {} queries: {:.1} s; server RSS {before:.0} MB before, peak {:.0} MB",
        queries.len(),
        t.elapsed().as_secs_f64(),
        status_mb(pid, "VmHWM:")
    );
    drop(server);
}

/// `forget` of one visitor (by email, as the simulator generated it on the
/// first day) in the backfilled warehouse: its time, and the files it
/// rewrote of those it searched.
async fn forget_one(p: &Pipeline, wh: &Warehouse, first: NaiveDate, per_day: u32) {
    use chatlake::privacy::suppress::IdKind;
    let day = Utc.from_utc_datetime(&first.and_hms_opt(12, 0, 0).unwrap());
    let sim = chatlake::simulator::SiData::new(first, first, per_day);
    let chat = sim
        .chats_in(day, day + Duration::hours(1))
        .into_iter()
        .find(|c| !c.malformed)
        .expect("a chat on the first day");
    let files = |t: &str| -> usize {
        let dir = std::path::Path::new(&wh.to_string()).join(t.replace('.', "/"));
        std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0)
    };
    let t = Instant::now();
    let out = chatlake::privacy::forget::forget(
        wh,
        p,
        &[(IdKind::Email, chat.visitor_email.clone())],
        None,
        false,
    )
    .await
    .unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!("forget of one visitor (by email): {secs:.2} s");
    for o in out.tables.iter().filter(|o| o.rows > 0) {
        println!(
            "  {:<30} {:>5} rows in {:>3} of {} partitions",
            o.table,
            o.rows,
            o.files,
            files(&o.table)
        );
    }
}

/// The median of five runs of `cmd`, in seconds (whole process).
fn median_of_5(mut cmd: impl FnMut() -> std::process::Command) -> f64 {
    let mut times: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let out = cmd().output().expect("starting a process");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[2]
}

/// Every reporting view through `chatlake query` against the same logic in
/// DuckDB (the script of `chatlake views --dialect duckdb`, run by the
/// Python package), whole process each, median of 5; then `chatlake report`
/// for the last 28 days. DuckDB comes from $CHATLAKE_BENCH_PYTHON (default:
/// the virtualenv tests/engines.sh makes).
async fn side_by_side(
    wh: &Warehouse,
    dir: &std::path::Path,
    month: (NaiveDate, NaiveDate),
) -> (Vec<String>, Vec<Option<f64>>) {
    let python = std::env::var("CHATLAKE_BENCH_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/chatlake/venv/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let script = dir.join("views.duckdb.sql");
    let text = query::views_script(wh, chatlake::dialect::Dialect::DuckDb)
        .await
        .unwrap();
    std::fs::write(&script, text).unwrap();
    let wh_path = dir.to_str().unwrap().to_string();
    let (m0, m1) = month;
    let queries = [
        "SELECT COUNT(*), SUM(first_response_business_seconds) FROM reporting.chats".to_string(),
        "SELECT COUNT(*), SUM(missed_chats) FROM reporting.missed_chat_rate".to_string(),
        "SELECT COUNT(*), AVG(avg_first_response_seconds), AVG(p90_first_response_seconds) FROM reporting.response_times".to_string(),
        format!("SELECT COUNT(*), AVG(avg_first_response_seconds), AVG(p90_first_response_seconds) FROM reporting.response_times WHERE dt BETWEEN DATE '{m0}' AND DATE '{m1}'"),
        "SELECT COUNT(*), SUM(within_target_business) FROM reporting.first_response_sla".to_string(),
        "SELECT COUNT(*), SUM(chats) FROM reporting.chats_by_hour".to_string(),
        "SELECT COUNT(*), SUM(chats) FROM reporting.first_response_buckets".to_string(),
        "SELECT COUNT(*), AVG(p90_first_response_seconds) FROM reporting.agent_performance".to_string(),
    ];
    let duck_ok = std::process::Command::new(&python)
        .args(["-c", "import duckdb"])
        .output()
        .is_ok_and(|o| o.status.success());
    // In one process each: the query alone, after the session (chatlake)
    // or the script (DuckDB) is set up; median of 5.
    let session = query::session(wh).await.unwrap();
    let duck_inside: Vec<Option<f64>> = if duck_ok {
        let out = std::process::Command::new(&python)
            .args([
                "-c",
                "import duckdb, sys, time, statistics\n\
                 c = duckdb.connect(); c.execute(open(sys.argv[1]).read())\n\
                 for q in sys.argv[2:]:\n\
                 \x20   ts = []\n\
                 \x20   for _ in range(5):\n\
                 \x20       t = time.perf_counter(); c.sql(q).fetchall(); ts.append(time.perf_counter() - t)\n\
                 \x20   print(statistics.median(ts))",
                script.to_str().unwrap(),
            ])
            .args(&queries)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().parse().ok())
            .collect()
    } else {
        vec![None; queries.len()]
    };
    println!("side by side (DuckDB: {python}); median of 5; in one process: the query alone; whole process: start, set up, query:");
    println!(
        "  {:>8} {:>8} {:>6} | {:>8} {:>8} {:>6}  query",
        "chatlake", "duckdb", "ratio", "chatlake", "duckdb", "ratio"
    );
    let mut inside = duck_inside.iter();
    for q in &queries {
        let mut times: Vec<f64> = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            query::run(&session, q).await.unwrap();
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let ours_inside = times[2];
        let theirs_inside = inside.next().copied().flatten();
        let ours = median_of_5(|| {
            let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_chatlake"));
            c.args(["query", "--warehouse", &wh_path, "--format", "csv", q]);
            c
        });
        let theirs = duck_ok.then(|| {
            median_of_5(|| {
                let mut c = std::process::Command::new(&python);
                c.args([
                    "-c",
                    "import duckdb, sys; c = duckdb.connect(); c.execute(open(sys.argv[1]).read()); c.sql(sys.argv[2]).fetchall()",
                    script.to_str().unwrap(),
                    q,
                ]);
                c
            })
        });
        let cell = |a: f64, b: Option<f64>| match b {
            Some(b) => format!("{a:>7.2}s {b:>7.2}s {:>6.2}", a / b),
            None => format!("{a:>7.2}s {:>8} {:>6}", "-", "-"),
        };
        println!(
            "  {} | {}  {q}",
            cell(ours_inside, theirs_inside),
            cell(ours, theirs)
        );
    }
    if !duck_ok {
        println!("  DuckDB not found: `{python} -c 'import duckdb'` failed (run tests/engines.sh once, or set CHATLAKE_BENCH_PYTHON)");
    }
    // Outside the warehouse, which only runs write.
    let report_dir = tempfile::tempdir().unwrap();
    let out = report_dir.path().join("report.html");
    let report = median_of_5(|| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_chatlake"));
        c.args([
            "report",
            "--warehouse",
            &wh_path,
            "--from",
            &(m1 - Duration::days(27)).to_string(),
            "--to",
            &m1.to_string(),
            "--out",
            out.to_str().unwrap(),
        ]);
        c
    });
    println!("  chatlake report, 28 days against the 28 before: {report:.2} s");
    (queries.to_vec(), duck_inside)
}

/// One run of the pipeline `text` into `wh`: wall seconds, requests and
/// throttled answers over every stream.
async fn timed_run(text: &str, wh: &Warehouse) -> (f64, u64, u64) {
    let p = Pipeline::parse(text, std::path::Path::new("bench.toml"), &|_| None).unwrap();
    let t = Instant::now();
    let report = run_once(&p, wh, &RunOptions::default()).await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    for s in &report.streams {
        assert!(s.error.is_none(), "{}: {:?}", s.stream, s.error);
    }
    let requests = report.streams.iter().map(|s| s.traffic.requests).sum();
    let throttled = report.streams.iter().map(|s| s.traffic.throttled).sum();
    (secs, requests, throttled)
}

/// Issue 10's throughput figures, per server-side limit.
fn throughput() {
    const PER_DAY: u32 = 20;
    const LATENCY_MS: &str = "50";
    let first = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // `limit`: the one limit these requests met (None for several sources,
    // each with its own).
    let line = |label: &str, (secs, requests, throttled): (f64, u64, u64), limit: Option<f64>| {
        let rps = requests as f64 / secs;
        let share = limit.map_or(String::new(), |l| {
            format!(" = {:>4.2} of the limit", rps / l)
        });
        println!(
            "    {label:<34} {secs:>6.1} s {requests:>6} requests {rps:>6.1}/s{share}, {throttled:>4} answered 429 ({:.1} %)",
            100.0 * throttled as f64 / requests.max(1) as f64
        );
    };
    for limit in [10u32, 50] {
        // About 30 s of Social25 requests at the limit: one per conversation.
        let days = (limit * 30 / PER_DAY) as i64;
        let last = first + Duration::days(days - 1);
        let limit_arg = limit.to_string();
        let args = [
            "--limit-rps",
            limit_arg.as_str(),
            "--latency-ms",
            LATENCY_MS,
        ];
        let (_sim, url) = start_simulator(first, last, PER_DAY, &args);
        let head = format!("name = \"bench-throughput\"\ntimezone = \"America/New_York\"\nstart_date = \"{first}\"\n");
        let s25 = |cap: &str| {
            format!(
                "[sources.social25]\nbase_url = \"{url}/social25/api/v1.0\"\ntoken = \"demo-social25-token\"\n\
                 tenant_id = \"007be0e1-6c95-4843-8673-a76a479266f8\"\nstreams = [\"conversations\", \"messages\", \"failed_syncs\"]\n\
                 max_concurrency = 8\n{cap}"
            )
        };
        let si = format!(
            "[sources.socialintents]\nbase_url = \"{url}/socialintents/v1/api\"\naccount_id = \"demo-account\"\n\
             api_token = \"demo-token\"\nstreams = [\"chats\", \"missed_chats\"]\nwindow_days = 7\n"
        );
        let crm = format!(
            "[sources.crm]\nbase_url = \"{url}/crm/api/v1\"\napi_key = \"demo-crm-key\"\n\
             streams = [\"companies\", \"contacts\", \"conversations\"]\n"
        );
        println!("limit {limit} requests/s per source, {LATENCY_MS} ms latency, Social25: {} conversations", days * PER_DAY as i64);
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let wh = Warehouse::open(dir.path().join("one").to_str().unwrap()).unwrap();
            let alone = timed_run(&format!("{head}{}", s25("")), &wh).await;
            line("Social25 alone, adaptive", alone, Some(limit as f64));
            let nightly = timed_run(&format!("{head}{}", s25("")), &wh).await;
            line(
                "the same, nightly (nothing new)",
                nightly,
                Some(limit as f64),
            );
            let wh = Warehouse::open(dir.path().join("three").to_str().unwrap()).unwrap();
            let three = timed_run(&format!("{head}{si}{}{crm}", s25("")), &wh).await;
            line("three sources at once (all requests)", three, None);
            println!(
                "    three sources / Social25 alone: {:.2} (wall time)",
                three.0 / alone.0
            );
        });
        drop(_sim);
    }
    // The old fixed default, 120 requests a minute, beside the adaptive rate
    // on the same small account (60 conversations) at a limit of 10/s.
    let last = first + Duration::days(2);
    let args = ["--limit-rps", "10", "--latency-ms", LATENCY_MS];
    let (_sim, url) = start_simulator(first, last, PER_DAY, &args);
    let text = |cap: &str| {
        format!(
            "name = \"bench-default\"\ntimezone = \"America/New_York\"\nstart_date = \"{first}\"\n\
             [sources.social25]\nbase_url = \"{url}/social25/api/v1.0\"\ntoken = \"demo-social25-token\"\n\
             tenant_id = \"007be0e1-6c95-4843-8673-a76a479266f8\"\nstreams = [\"conversations\", \"messages\"]\n\
             max_concurrency = 8\n{cap}"
        )
    };
    println!("the old fixed default against adaptive, limit 10 requests/s, 60 conversations");
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let wh = Warehouse::open(dir.path().join("fixed").to_str().unwrap()).unwrap();
        let fixed = timed_run(&text("requests_per_minute = 120\n"), &wh).await;
        line("fixed 120 requests a minute", fixed, Some(10.0));
        let wh = Warehouse::open(dir.path().join("adaptive").to_str().unwrap()).unwrap();
        let adaptive = timed_run(&text(""), &wh).await;
        line("adaptive", adaptive, Some(10.0));
    });
}
