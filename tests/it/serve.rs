//! Issue 21 (`chatlake serve`): the server in this process, over a warehouse
//! the pipeline wrote from the simulator, reached with tokio-postgres (a
//! client nobody here wrote; SCRAM-SHA-256 and the extended protocol are
//! its own). Tests: the figures through the server equal the simulator's
//! records and `chatlake query`; every reporting view answers; a wrong
//! password is refused; writing is refused; a day a run commits is seen on
//! an open connection; 20 clients at once; a cancel request and the
//! statement timeout stop a long query; a query over its memory limit fails
//! alone; an idle connection is closed. (tests/server.sh: psql and
//! psycopg.)

use std::net::SocketAddr;

use chatlake::config::secret::Secret;
use chatlake::serve::{serve, Options};
use tokio_postgres::{NoTls, SimpleQueryMessage};

use crate::support::*;

pub(crate) const PASSWORD: &str = "serve-pass-4e1f0b7a";

/// Starts the server over `env`'s warehouse on a free loopback port; it
/// stops when the returned sender is dropped.
pub(crate) async fn start(
    env: &Env,
    max_connections: usize,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    start_with(env, |o| o.max_connections = max_connections).await
}

/// As [`start`], with the options `adjust` sets.
async fn start_with(
    env: &Env,
    adjust: impl FnOnce(&mut Options),
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let wh = env.wh.clone();
    let mut options = Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        user: "chatlake".into(),
        password: Some(Secret::new(PASSWORD)),
        tls: None,
        max_connections: 32,
        memory_limit: 512 << 20,
        query_memory_limit: 256 << 20,
        statement_timeout: None,
        idle_timeout: None,
    };
    adjust(&mut options);
    tokio::spawn(async move {
        serve(
            &wh,
            &options,
            |addr| {
                let _ = addr_tx.send(addr);
            },
            async move {
                let _ = stop_rx.await;
            },
        )
        .await
        .unwrap();
    });
    (addr_rx.await.unwrap(), stop_tx)
}

pub(crate) async fn connect(
    addr: SocketAddr,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "host={} port={} user=chatlake password={password} dbname=datafusion",
            addr.ip(),
            addr.port()
        ),
        NoTls,
    )
    .await?;
    tokio::spawn(conn);
    Ok(client)
}

/// Rows of a simple-protocol query, every value as the server's text.
async fn text_rows(c: &tokio_postgres::Client, sql: &str) -> Vec<Vec<String>> {
    c.simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_answers_with_the_warehouse_figures() {
    let env = env_with(data(3), 7).await;
    env.run(Some("2025-10-27"), "2025-10-29").await;
    let (addr, _stop) = start(&env, 32).await;
    let c = connect(addr, PASSWORD).await.expect("SCRAM login");

    // The chats of each local day, as the simulator served them.
    let mut want = Vec::new();
    for day in ["2025-10-27", "2025-10-28", "2025-10-29"] {
        let n = env
            .served_chats(day, day)
            .iter()
            .filter(|c| !c.malformed)
            .count();
        want.push(vec![day.to_string(), n.to_string()]);
    }
    let got = text_rows(
        &c,
        "SELECT CAST(dt AS VARCHAR) AS day, COUNT(*) AS n FROM socialintents.chats GROUP BY dt ORDER BY day",
    )
    .await;
    assert_eq!(got, want);

    // The extended protocol with a parameter (a prepared statement).
    let row = c
        .query_one(
            "SELECT COUNT(*) FROM socialintents.chats WHERE dt = $1",
            &[&chrono::NaiveDate::from_ymd_opt(2025, 10, 28).unwrap()],
        )
        .await
        .expect("a parameterised query");
    assert_eq!(row.get::<_, i64>(0).to_string(), want[1][1]);

    // Every reporting view answers, with as many rows as `chatlake query` gives.
    for view in std::fs::read_dir("sql").unwrap() {
        let name = view.unwrap().file_name().into_string().unwrap();
        let name = name.trim_end_matches(".sql");
        let sql = format!("SELECT COUNT(*) FROM {name}");
        let here = env.rows(&sql).await;
        assert_eq!(text_rows(&c, &sql).await, here, "{name}");
    }
    let sql = "SELECT CAST(dt AS VARCHAR) AS day, source, chats, missed_chats FROM reporting.missed_chat_rate ORDER BY day, source, chats, missed_chats";
    assert_eq!(text_rows(&c, sql).await, env.rows(sql).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_and_writes_are_refused() {
    let env = env_with(data(1), 7).await;
    env.run(Some("2025-10-27"), "2025-10-27").await;
    let (addr, _stop) = start(&env, 32).await;
    let Err(err) = connect(addr, "not-the-password").await else {
        panic!("a wrong password was accepted");
    };
    assert!(
        format!("{err:?}").contains("28P01") || err.to_string().contains("password"),
        "{err:?}"
    );
    let c = connect(addr, PASSWORD).await.unwrap();
    for sql in [
        "CREATE TABLE x (a INT)",
        "DROP TABLE socialintents.chats",
        "INSERT INTO socialintents.widgets SELECT * FROM socialintents.widgets",
        "SET datafusion.execution.target_partitions = 1",
    ] {
        let err = c.simple_query(sql).await.expect_err(sql);
        let db = err
            .as_db_error()
            .unwrap_or_else(|| panic!("{sql}: {err:?}"));
        assert!(
            db.message().contains("read-only"),
            "{sql}: {}",
            db.message()
        );
    }
    // The connection still serves after a refusal, and the table is whole.
    let n = text_rows(&c, "SELECT COUNT(*) FROM socialintents.chats").await;
    assert_eq!(
        n,
        env.rows("SELECT COUNT(*) FROM socialintents.chats").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_day_is_seen_on_an_open_connection_and_many_clients_are_served() {
    let env = env_with(data(2), 7).await;
    env.run(Some("2025-10-27"), "2025-10-27").await;
    let (addr, _stop) = start(&env, 32).await;
    let c = connect(addr, PASSWORD).await.unwrap();
    let days = "SELECT COUNT(DISTINCT dt) FROM socialintents.chats";
    assert_eq!(text_rows(&c, days).await, [["1"]]);
    env.run(Some("2025-10-27"), "2025-10-28").await;
    assert_eq!(
        text_rows(&c, days).await,
        [["2"]],
        "the new day, same connection"
    );

    // 20 clients at once, each with its own query.
    let want = env.rows("SELECT COUNT(*) FROM reporting.chats").await;
    let clients: Vec<_> = (0..20)
        .map(|_| {
            tokio::spawn(async move {
                let c = connect(addr, PASSWORD).await.unwrap();
                text_rows(&c, "SELECT COUNT(*) FROM reporting.chats").await
            })
        })
        .collect();
    for c in clients {
        assert_eq!(c.await.unwrap(), want);
    }
}

/// Sums more numbers than the test could wait for (about an hour here): it
/// ends only when it is stopped.
const ENDLESS: &str = "SELECT SUM(value) FROM range(1000000000000)";

/// The error an endless query ends with, and when (at most 30 s).
async fn stopped<T: std::fmt::Debug>(
    query: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> (tokio_postgres::Error, std::time::Duration) {
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(std::time::Duration::from_secs(30), query)
        .await
        .expect("the query is still running after 30 s")
        .expect_err("the endless query returned rows");
    (err, started.elapsed())
}

/// The SQLSTATE and message of a failed query.
fn db_error(err: &tokio_postgres::Error) -> (String, String) {
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("not an error from the server: {err:?}"));
    (db.code().code().to_string(), db.message().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_and_the_statement_timeout_stop_a_long_query() {
    use std::time::Duration;
    let env = env_with(data(1), 7).await;
    env.run(Some("2025-10-27"), "2025-10-27").await;
    let (addr, _stop) = start_with(&env, |o| {
        o.statement_timeout = Some(Duration::from_secs(3));
    })
    .await;
    let c = connect(addr, PASSWORD).await.unwrap();
    let want = env.rows("SELECT COUNT(*) FROM reporting.chats").await;

    // The protocol's cancel request, from its own connection, 500 ms in.
    let token = c.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        token.cancel_query(NoTls).await.unwrap();
    });
    let (err, took) = stopped(c.simple_query(ENDLESS)).await;
    canceller.await.unwrap();
    assert_eq!(
        db_error(&err),
        (
            "57014".into(),
            "canceling statement due to user request".into()
        )
    );
    assert!(
        took < Duration::from_millis(2500),
        "cancelled after {took:?}"
    );
    // The connection serves on.
    assert_eq!(
        text_rows(&c, "SELECT COUNT(*) FROM reporting.chats").await,
        want
    );

    // The extended protocol, stopped by the server's timeout (3 s).
    let (err, took) = stopped(c.query(ENDLESS, &[])).await;
    assert_eq!(
        db_error(&err),
        (
            "57014".into(),
            "canceling statement due to statement timeout".into()
        )
    );
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(6),
        "the 3 s statement timeout struck after {took:?}"
    );

    // A client's own shorter statement_timeout (in ms, as Postgres takes it).
    c.simple_query("SET statement_timeout = 400").await.unwrap();
    let (err, took) = stopped(c.simple_query(ENDLESS)).await;
    assert_eq!(db_error(&err).0, "57014");
    assert!(
        took < Duration::from_millis(2500),
        "400 ms timeout after {took:?}"
    );
    // A longer one does not lift the server's.
    c.simple_query("SET statement_timeout = '10min'")
        .await
        .unwrap();
    let (err, took) = stopped(c.simple_query(ENDLESS)).await;
    assert_eq!(db_error(&err).0, "57014");
    assert!(
        took < Duration::from_secs(6),
        "the server's 3 s after {took:?}"
    );
    assert_eq!(
        text_rows(&c, "SELECT COUNT(*) FROM reporting.chats").await,
        want
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_its_memory_limit_fails_alone_and_idle_connections_close() {
    use std::time::Duration;
    let env = env_with(data(2), 7).await;
    env.run(Some("2025-10-27"), "2025-10-28").await;
    let (addr, _stop) = start_with(&env, |o| {
        o.query_memory_limit = 32 << 20;
        o.idle_timeout = Some(Duration::from_millis(1500));
    })
    .await;
    // The expected rows first: on a loaded machine this takes longer than
    // the idle timeout, which would close a connection opened before it.
    let sql = "SELECT CAST(dt AS VARCHAR) AS day, source, chats, missed_chats FROM reporting.missed_chat_rate ORDER BY day, source";
    let want = env.rows(sql).await;
    let greedy = connect(addr, PASSWORD).await.unwrap();
    let other = connect(addr, PASSWORD).await.unwrap();
    // 100 million numbers in one array: 800 MB, which nothing can spill.
    let huge = tokio::spawn(async move {
        let r = greedy
            .simple_query("SELECT cardinality(array_agg(value)) FROM range(100000000)")
            .await;
        (r.map(|_| ()), greedy)
    });
    // Meanwhile the other client's queries are answered, and right.
    for _ in 0..5 {
        assert_eq!(text_rows(&other, sql).await, want);
    }
    let (result, greedy) = huge.await.unwrap();
    let err = result.expect_err("800 MB fitted in a 32 MiB query limit");
    let (code, message) = db_error(&err);
    assert_eq!(code, "53200", "{message}");
    assert!(
        message.contains("Resources exhausted") && message.contains("--query-memory-mb"),
        "{message}"
    );
    // The greedy client itself serves on.
    assert_eq!(text_rows(&greedy, sql).await, want);

    // Idle timeout (1.5 s): a connection that keeps asking stays open...
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(text_rows(&other, "SELECT 1").await, [["1"]]);
    }
    // ...one left alone for longer is closed by the server.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(greedy.simple_query("SELECT 1").await.is_err());
    assert!(greedy.is_closed());
    // New connections are still welcome.
    let again = connect(addr, PASSWORD).await.unwrap();
    assert_eq!(text_rows(&again, "SELECT 1").await, [["1"]]);
}
