//! The binary as a user runs it: run, state show/reset, query formats, and
//! clear errors for bad pipeline files.

use std::process::Command;

use crate::support::*;

/// A simulated account (`per_day` chats a day) for the binary: its
/// pipeline file, a warehouse path under its directory, and the runtime
/// serving the simulator (dropped last).
struct CliEnv {
    env: Env,
    wh: String,
    _rt: tokio::runtime::Runtime,
}

impl CliEnv {
    fn file(&self) -> &str {
        self.env.pipeline_file.to_str().unwrap()
    }

    /// `<dir>/wh` (not created).
    fn wh(&self) -> &str {
        &self.wh
    }
}

fn cli_env(per_day: u32) -> CliEnv {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(env_with(data(per_day), 7));
    let wh = env.dir.path().join("wh").to_str().unwrap().to_string();
    CliEnv { env, wh, _rt: rt }
}

/// `chatlake [global] run` of socialintents.chats for 2025-10-27..29.
fn run_chats(file: &str, wh: &str, global: &[&str]) -> (i32, String, String) {
    let mut args = global.to_vec();
    args.extend([
        "run",
        "--pipeline",
        file,
        "--warehouse",
        wh,
        "--from",
        "2025-10-27",
        "--to",
        "2025-10-29",
        "--stream",
        "socialintents.chats",
    ]);
    chatlake(&args)
}

#[test]
fn run_state_and_query_from_the_command_line() {
    let cli = cli_env(10);
    let (env, file, wh) = (&cli.env, cli.file(), cli.wh());
    let (code, out, err) = run_chats(file, wh, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("socialintents.chats")
            && out.contains("2025-10-27..2025-10-29")
            && !out.contains("contacts"),
        "{out}"
    );

    let (code, out, _) = chatlake(&["state", "show", "--pipeline", file, "--warehouse", wh]);
    assert_eq!(code, 0);
    assert!(
        out.contains("socialintents.chats") && out.contains("watermark 2025-10-29"),
        "{out}"
    );

    let expected = env.served_chats("2025-10-27", "2025-10-29").len();
    let (code, out, err) = query_csv(wh, "SELECT COUNT(*) AS n FROM reporting.chats");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("n\n{expected}"));
    let (code, out, _) = chatlake(&[
        "query",
        "--warehouse",
        &format!("file://{wh}"),
        "--format",
        "json",
        "SELECT COUNT(*) AS n FROM socialintents.chats",
    ]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("[{{\"n\":{expected}}}]"));

    let (code, out, _) = chatlake(&[
        "state",
        "reset",
        "--pipeline",
        file,
        "--warehouse",
        wh,
        "--stream",
        "socialintents.chats",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("reset 1 stream"), "{out}");
    let (_, out, _) = chatlake(&["state", "show", "--pipeline", file, "--warehouse", wh]);
    assert!(!out.contains("socialintents.chats"), "{out}");

    // Issue 9, defect 9: a scheduler record (where older versions kept it,
    // inside _state/, and where it lives now) does not break `state`, and a
    // mistyped stream is an error, not "reset 0 streams" with exit 0.
    let wh_dir = std::path::Path::new(wh);
    std::fs::write(
        wh_dir.join("_state/test/_schedule.json"),
        r#"{"last_slot":"2025-10-28T06:30:00Z"}"#,
    )
    .unwrap();
    std::fs::create_dir_all(wh_dir.join("_schedule")).unwrap();
    std::fs::write(
        wh_dir.join("_schedule/test.json"),
        r#"{"last_slot":"2025-10-29T06:30:00Z"}"#,
    )
    .unwrap();
    let (code, out, err) = chatlake(&["state", "show", "--pipeline", file, "--warehouse", wh]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("_schedule"), "{out}");
    let (code, _, err) = chatlake(&[
        "state",
        "reset",
        "--pipeline",
        file,
        "--warehouse",
        wh,
        "--stream",
        "no.such",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(
            "--stream no.such: no such stream in pipeline test (configured: socialintents.chats"
        ),
        "{err}"
    );
    let (code, out, err) = chatlake(&["state", "reset", "--pipeline", file, "--warehouse", wh]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("reset 0 stream"), "{out}");
    assert!(
        wh_dir.join("_schedule/test.json").exists(),
        "the scheduler's record is not a stream state"
    );

    let missing = env.dir.path().join("no-such-warehouse");
    let (code, _, err) = chatlake(&[
        "query",
        "--warehouse",
        missing.to_str().unwrap(),
        "SELECT 1",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no such directory") && !missing.exists(),
        "{err}"
    );

    let (code, _, err) = chatlake(&[
        "run",
        "--pipeline",
        file,
        "--warehouse",
        wh,
        "--stream",
        "socialintents.nope",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("socialintents.nope"), "{err}");
}

#[test]
fn pipeline_errors_name_the_key_the_variable_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        pipeline_text("http://127.0.0.1:1", "${CHATLAKE_TEST_UNSET_TOKEN}", 7, ""),
    )
    .unwrap();
    let (code, _, err) = chatlake(&["run", "--pipeline", file.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("CHATLAKE_TEST_UNSET_TOKEN") && err.contains("bad.toml"),
        "{err}"
    );
    std::fs::write(
        &file,
        pipeline_text("http://127.0.0.1:1", "x", 7, "colour = \"red\""),
    )
    .unwrap();
    let (code, _, err) = chatlake(&["run", "--pipeline", file.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("colour") && err.contains("bad.toml"), "{err}");
}

#[test]
fn demo_pipeline_file_parses() {
    let text = include_str!("../../pipelines/demo.toml");
    let p = chatlake::config::Pipeline::parse(text, std::path::Path::new("demo.toml"), &|_| None)
        .unwrap();
    assert_eq!(p.config.name, "demo");
    let example = include_str!("../../pipelines/example.toml");
    let env = |n: &str| Some(format!("value-of-{n}"));
    chatlake::config::Pipeline::parse(example, std::path::Path::new("example.toml"), &env).unwrap();
}

/// `chatlake query --format FORMAT SQL` over an empty warehouse: its stdout,
/// once it has exited 0.
fn query_empty(format: &str, sql: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let wh = dir.path().to_str().unwrap();
    let (code, out, err) = chatlake(&["query", "--warehouse", wh, "--format", format, sql]);
    assert_eq!(code, 0, "{err}");
    out
}

/// Issue 9, defect 10: `--format csv` renders list columns as JSON text.
#[test]
fn csv_renders_list_columns_as_json() {
    let out = query_empty(
        "csv",
        "SELECT 1 AS id, make_array('a', 'b,c') AS tags, make_array(1, 2) AS n, CAST(NULL AS VARCHAR) AS x",
    );
    assert_eq!(
        out,
        "id,tags,n,x\n1,\"[\"\"a\"\",\"\"b,c\"\"]\",\"[1,2]\",\n"
    );
}

/// DataFusion's own settings come from DATAFUSION_* variables, as in
/// datafusion-cli; a value DataFusion refuses names the setting.
#[test]
fn datafusion_settings_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let wh = dir.path().to_str().unwrap();
    let show = "SELECT value FROM information_schema.df_settings WHERE name = 'datafusion.execution.batch_size'";
    let (code, out, err) = query_csv(wh, show);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "value\n8192\n", "DataFusion's default");
    let (code, out, err) = chatlake_env(
        &["query", "--warehouse", wh, "--format", "csv", show],
        &[("DATAFUSION_EXECUTION_BATCH_SIZE", "1234")],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "value\n1234\n");
    let (code, _, err) = chatlake_env(
        &["query", "--warehouse", wh, "SELECT 1"],
        &[("DATAFUSION_EXECUTION_BATCH_SIZE", "many")],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("DATAFUSION_EXECUTION_BATCH_SIZE"), "{err}");
}

/// meta.business_clock's key is declared to DataFusion, so a view that
/// reads no business seconds plans without its two joins (issue 21: the
/// missed rate through the server), and one that reads them keeps both.
#[test]
fn views_without_business_seconds_do_not_join_the_clock() {
    let clock_scans = |sql: &str| {
        query_empty("csv", &format!("EXPLAIN {sql}"))
            .matches("TableScan: meta.business_clock")
            .count()
    };
    assert_eq!(clock_scans("SELECT * FROM reporting.missed_chat_rate"), 0);
    assert_eq!(
        clock_scans("SELECT * FROM reporting.first_response_buckets"),
        0
    );
    assert_eq!(
        clock_scans("SELECT chat_id, is_missed FROM reporting.chats"),
        0
    );
    // Twice: at the quarter hour of the customer's message and of the reply.
    assert_eq!(clock_scans("SELECT * FROM reporting.first_response_sla"), 2);
}

/// A reader that goes away (`chatlake query ... | head -1`): exit 141, as a
/// Unix tool killed by SIGPIPE, with nothing on stderr (no panic).
#[test]
fn a_closed_stdout_ends_the_query_quietly_with_141() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_chatlake"))
        .args([
            "query",
            "--warehouse",
            dir.path().to_str().unwrap(),
            "--format",
            "csv",
        ])
        .arg("SELECT * FROM generate_series(1, 2000000)")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    drop(child.stdout.take()); // the reader goes away
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(141),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

/// Issue 9, defect 8: a damaged partition file is named in the query error,
/// and a hostile footer that makes the Parquet decoder panic is an error too.
#[test]
fn a_damaged_file_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("socialintents/chats/dt=2025-10-27");
    std::fs::create_dir_all(&part).unwrap();
    std::fs::write(part.join("data.parquet"), b"this is not parquet at all").unwrap();
    let widgets = dir.path().join("socialintents/widgets");
    std::fs::create_dir_all(&widgets).unwrap();
    // Magic at both ends and a footer length far beyond the file.
    let mut hostile = b"PAR1".to_vec();
    hostile.extend_from_slice(&[7u8; 40]);
    hostile.extend_from_slice(&u32::MAX.to_le_bytes());
    hostile.extend_from_slice(b"PAR1");
    std::fs::write(widgets.join("data.parquet"), &hostile).unwrap();
    let wh = dir.path().to_str().unwrap();
    for (sql, file) in [
        (
            "SELECT COUNT(*) FROM socialintents.chats",
            part.join("data.parquet"),
        ),
        (
            "SELECT * FROM socialintents.widgets",
            widgets.join("data.parquet"),
        ),
    ] {
        let (code, _, err) = chatlake(&["query", "--warehouse", wh, sql]);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains(&format!("warehouse file {}:", file.display())),
            "{err}"
        );
    }
}

/// Every format on lists, nulls and an empty result: json is one array with
/// every column (null as null), ndjson one object a line, and an empty
/// result keeps its header.
#[test]
fn formats_keep_every_column_and_empty_results_keep_their_header() {
    let q = query_empty;
    let one = "SELECT 1 AS id, make_array('a', 'b,c') AS tags, CAST(NULL AS VARCHAR) AS x";
    assert_eq!(
        q("json", one),
        "[{\"id\":1,\"tags\":[\"a\",\"b,c\"],\"x\":null}]\n"
    );
    assert_eq!(
        q("ndjson", one),
        "{\"id\":1,\"tags\":[\"a\",\"b,c\"],\"x\":null}\n"
    );
    let none = "SELECT 1 AS id, 'a' AS name WHERE 1 = 0";
    assert_eq!(q("csv", none), "id,name\n");
    assert_eq!(q("json", none), "[]\n");
    assert_eq!(q("ndjson", none), "");
    let table = q("table", none);
    assert!(table.contains("| id | name |"), "{table}");
}

/// SQL from stdin (`-`) and from a file (`-f`), several statements each.
#[test]
fn sql_comes_from_stdin_or_a_file_statement_by_statement() {
    let dir = tempfile::tempdir().unwrap();
    let wh = dir.path().to_str().unwrap();
    let (code, out, err) = chatlake_stdin(
        &["query", "--warehouse", wh, "--format", "csv", "-"],
        "SELECT 'a;b' AS s;\nSELECT 2 AS n;\n",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "s\na;b\nn\n2\n");
    let file = dir.path().join("q.sql");
    std::fs::write(&file, "SELECT 3 AS n").unwrap();
    let (code, out, err) = chatlake(&[
        "query",
        "--warehouse",
        wh,
        "--format",
        "csv",
        "-f",
        file.to_str().unwrap(),
    ]);
    assert_eq!((code, out.as_str()), (0, "n\n3\n"), "{err}");
}

/// Parser errors and unknown tables in one human line.
#[test]
fn query_errors_say_what_and_where_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let wh = dir.path().to_str().unwrap();
    let (code, _, err) = chatlake(&["query", "--warehouse", wh, "SELEC 1"]);
    assert_eq!(code, 2);
    assert_eq!(
        err.trim(),
        "error: SQL: expected an SQL statement, found SELEC (line 1, column 1)"
    );
    let (code, _, err) = chatlake(&[
        "query",
        "--warehouse",
        wh,
        "SELECT * FROM socialintents.chatz",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains(
            "no table or view named `socialintents.chatz`; closest: `socialintents.chats`"
        ),
        "{err}"
    );
    assert!(err.contains("SHOW TABLES"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// `--out` writes a file in the extension's format, never inside the warehouse.
#[test]
fn out_writes_the_result_outside_the_warehouse_only() {
    let dir = tempfile::tempdir().unwrap();
    let wh = dir.path().join("wh");
    std::fs::create_dir_all(&wh).unwrap();
    let wh = wh.to_str().unwrap();
    let file = dir.path().join("r.parquet");
    let sql = "SELECT * FROM generate_series(1, 1000) AS t(n)";
    let (code, _, err) = chatlake(&[
        "query",
        "--warehouse",
        wh,
        "--out",
        file.to_str().unwrap(),
        sql,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("1000 rows written"), "{err}");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&file).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    assert_eq!(reader.map(|b| b.unwrap().num_rows()).sum::<usize>(), 1000);
    let csv = dir.path().join("r.csv");
    let (code, _, _) = chatlake(&[
        "query",
        "--warehouse",
        wh,
        "--out",
        csv.to_str().unwrap(),
        "SELECT 1 AS a",
    ]);
    assert_eq!(code, 0);
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), "a\n1\n");
    let inside = format!("{wh}/x.csv");
    let (code, _, err) = chatlake(&["query", "--warehouse", wh, "--out", &inside, "SELECT 1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("inside the warehouse"), "{err}");
    assert!(!std::path::Path::new(&inside).exists());
}

/// JSON functions pull fields out of `_extra` (and any JSON text).
#[test]
fn json_functions_read_fields_of_extra() {
    let out = query_empty(
        "csv",
        r#"SELECT json_get_str(e, 'mood') AS mood, json_get_int(e, 'visits') AS visits, json_get_str(e, 'user', 'gender') AS gender
           FROM (VALUES ('{"mood":"happy","visits":3,"user":{"gender":"unknown"}}')) AS t(e)"#,
    );
    assert_eq!(out, "mood,visits,gender\nhappy,3,unknown\n");
}

/// Issue 12: `runs` and `state show` as JSON for monitors, and JSON log
/// lines for log collectors, checked against the simulator's own counts.
#[test]
fn runs_state_and_logs_as_json() {
    let cli = cli_env(10);
    let (env, file, wh) = (&cli.env, cli.file(), cli.wh());
    let (code, out, err) = run_chats(file, wh, &["--log-format", "json"]);
    assert_eq!(code, 0, "{err}");
    let summary = out;
    // Every stderr line is one JSON object; the stream's structured fields are there.
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let finished = lines
        .iter()
        .find(|l| l["fields"]["message"] == "stream finished")
        .unwrap_or_else(|| panic!("no `stream finished` line in {err}"));
    assert_eq!(finished["fields"]["stream"], "socialintents.chats");
    assert_eq!(finished["level"], "INFO");
    assert!(lines
        .iter()
        .any(|l| l["fields"]["window"] == "2025-10-27..2025-10-29"));

    // The chats and messages the simulator served, and the requests it saw.
    let served: Vec<_> = env
        .served_chats("2025-10-27", "2025-10-29")
        .into_iter()
        .filter(|c| !c.malformed)
        .collect();
    let rows = served.len() + served.iter().map(|c| c.messages.len()).sum::<usize>();
    let requests: u64 = env.sim.requests().values().sum();
    // The run's summary counts rows per table, chats apart from their messages.
    let messages: usize = served.iter().map(|c| c.messages.len()).sum();
    assert!(
        summary.contains(&format!(
            "rows written, by table:\n  socialintents.chat_messages        {messages:>9}\n  socialintents.chats                {:>9}\n",
            served.len()
        )),
        "{summary}"
    );
    let (code, out, err) = chatlake(&["runs", "--warehouse", wh, "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let run = &doc["runs"][0];
    assert_eq!(doc["runs"].as_array().unwrap().len(), 1, "{doc:#}");
    assert_eq!(run["pipeline"], "test");
    assert_eq!(run["streams"], 1);
    assert_eq!(run["failed_streams"], 0);
    assert_eq!(run["rows_written"], rows as u64, "{doc:#}");
    assert_eq!(run["requests"], requests, "{doc:#}");
    assert_eq!(run["errors"], serde_json::Value::Null);
    assert_eq!(doc["incomplete"], serde_json::json!([]));
    assert_eq!(doc["failed_pipelines"], serde_json::json!([]));

    let (code, out, _) = chatlake(&[
        "state",
        "show",
        "--pipeline",
        file,
        "--warehouse",
        wh,
        "--format",
        "json",
    ]);
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc.as_array().unwrap().len(), 1, "{doc:#}");
    assert_eq!(doc[0]["stream"], "socialintents.chats");
    assert_eq!(doc[0]["watermark"], "2025-10-29");
    assert_eq!(doc[0]["run_id"], run["run_id"]);
}

/// Issue 12: `chatlake check` says per source whether it is reachable and
/// its credentials are accepted, exits 0 only when all are, makes one request
/// per source, and never prints the token.
#[test]
fn check_reaches_each_source_and_never_prints_the_token() {
    let cli = cli_env(2);
    let (env, file) = (&cli.env, cli.file());
    let (code, out, err) = chatlake(&["check", "--pipeline", file]);
    assert_eq!(code, 0, "{out}{err}");
    let widgets = chatlake::simulator::data::WIDGETS.len();
    assert!(
        out.contains("pipeline test (")
            && out.contains("socialintents  ok      reachable, credentials accepted")
            && out.contains(&format!("widgets: {widgets}"))
            && out.contains("streams: socialintents.chats, socialintents.offline_messages"),
        "{out}"
    );
    assert_eq!(env.sim.requests().values().sum::<u64>(), 1, "one request");

    let bad = env.dir.path().join("bad-token.toml");
    let wrong = "wrong-secret-token-1234";
    std::fs::write(
        &bad,
        std::fs::read_to_string(file).unwrap().replace(TOKEN, wrong),
    )
    .unwrap();
    let (code, out, err) = chatlake(&["check", "--pipeline", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("socialintents  FAILED  socialintents /apps: 401"),
        "{out}"
    );
    assert!(!out.contains(wrong) && !err.contains(wrong), "{out}{err}");

    // A server nobody listens on: FAILED within seconds (two attempts, not
    // a run's minutes of backoff), naming the host and port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let gone = env.dir.path().join("unreachable.toml");
    std::fs::write(
        &gone,
        std::fs::read_to_string(file)
            .unwrap()
            .replace(&env.sim.url(), &format!("http://127.0.0.1:{port}")),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let (code, out, err) = chatlake(&["check", "--pipeline", gone.to_str().unwrap()]);
    let took = started.elapsed();
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!(
            "FAILED  socialintents /apps: connection failed (127.0.0.1:{port})"
        )) && out.contains("gave up after 2 attempts"),
        "{out}"
    );
    assert!(took < std::time::Duration::from_secs(15), "{took:?}");

    // A variable that does not resolve is a pipeline-file error (exit 2).
    let unset = env.dir.path().join("unset.toml");
    std::fs::write(
        &unset,
        std::fs::read_to_string(file)
            .unwrap()
            .replace(TOKEN, "${CHATLAKE_TEST_NO_SUCH_VAR}"),
    )
    .unwrap();
    let (code, _, err) = chatlake(&["check", "--pipeline", unset.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("CHATLAKE_TEST_NO_SUCH_VAR"), "{err}");
}

/// Every file under `dir` with its bytes.
fn snapshot_files(
    dir: &std::path::Path,
) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Issue 12: `run --dry-run` prints the windows a run would read from the
/// saved watermark, and changes nothing: no request, no byte of the
/// warehouse (and no warehouse created when there is none).
#[test]
fn dry_run_plans_from_the_watermark_and_changes_nothing() {
    let cli = cli_env(2);
    let (env, file) = (&cli.env, cli.file());
    let wh = env.dir.path().join("wh");
    let (code, _, err) = run_chats(file, cli.wh(), &[]);
    assert_eq!(code, 0, "{err}");
    let before = snapshot_files(&wh);
    let requests = env.sim.requests().values().sum::<u64>();

    let (code, out, err) = chatlake(&[
        "run",
        "--pipeline",
        file,
        "--warehouse",
        wh.to_str().unwrap(),
        "--stream",
        "socialintents.chats",
        "--dry-run",
    ]);
    assert_eq!(code, 0, "{err}");
    // Watermark 2025-10-29 minus lookback_days = 2, to today in New York,
    // in windows of 7 days.
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::America::New_York)
        .date_naive();
    let mut expected = Vec::new();
    let mut from = d("2025-10-27");
    while from <= today {
        let to = (from + chrono::Duration::days(6)).min(today);
        expected.push(format!("    window {from}..{to}"));
        from = to + chrono::Duration::days(1);
    }
    let windows: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("    window "))
        .collect();
    assert_eq!(windows, expected, "{out}");
    assert!(
        out.contains(&format!(
            "socialintents.chats            windowed  watermark 2025-10-29  2025-10-27..{today} in {} window(s)",
            expected.len()
        )) && out.contains("GET missedchats, chats once per window"),
        "{out}"
    );
    assert_eq!(snapshot_files(&wh), before, "the warehouse is unchanged");
    assert_eq!(
        env.sim.requests().values().sum::<u64>(),
        requests,
        "no request"
    );

    // No warehouse yet: every stream from start_date, and none is created.
    let fresh = env.dir.path().join("fresh");
    let (code, out, err) = chatlake(&[
        "run",
        "--pipeline",
        file,
        "--warehouse",
        fresh.to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("socialintents.widgets          snapshot")
            && out.contains(
                "socialintents.contacts         windowed  watermark -           2025-10-27.."
            ),
        "{out}"
    );
    assert!(!fresh.exists());
    assert_eq!(
        env.sim.requests().values().sum::<u64>(),
        requests,
        "no request"
    );
}

/// `--from` a day after today in the pipeline timezone (today where the
/// user is, when New York is still on yesterday; it once failed a debug
/// build's progress check): the date-windowed streams read nothing and say
/// why, the snapshot is written, no watermark is saved, exit 0; the dry run
/// says the same.
#[test]
fn from_after_today_reads_no_window_and_says_so() {
    let cli = cli_env(2);
    let (env, file) = (&cli.env, cli.file());
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::America::New_York)
        .date_naive();
    let tomorrow = (today + chrono::Duration::days(1)).to_string();
    let args = [
        "run",
        "--pipeline",
        file,
        "--warehouse",
        cli.wh(),
        "--from",
        &tomorrow,
    ];
    let (code, out, err) = chatlake(&[&args[..], &["--dry-run"]].concat());
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("socialintents.chats            windowed  watermark -           no window: --from is after today"),
        "{out}"
    );
    let (code, out, err) = chatlake(&args);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!(
            "--from {tomorrow} is after today ({today} in America/New_York): the date-windowed streams have no day to read yet"
        )),
        "{err}"
    );
    let si = env.sim.requests();
    assert_eq!(
        si.keys().filter(|k| !k.ends_with("/apps")).count(),
        0,
        "only the snapshot asked the API: {si:?}\n{out}"
    );
    let (code, out, err) = query_csv(cli.wh(), "SELECT COUNT(*) AS n FROM socialintents.widgets");
    assert_eq!((code, out.as_str()), (0, "n\n3\n"), "{err}");
    let (code, out, err) =
        chatlake(&["state", "show", "--pipeline", file, "--warehouse", cli.wh()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains("socialintents.chats "),
        "no watermark saved:\n{out}"
    );
    // A --to before start_date (2025-10-27) alone: nothing to read either, said so.
    let (code, _, err) = chatlake(&[
        "run",
        "--pipeline",
        file,
        "--warehouse",
        cli.wh(),
        "--to",
        "2025-10-20",
        "--stream",
        "socialintents.chats",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("the range starts at 2025-10-27 (watermark minus lookback, or start_date), after --to 2025-10-20: nothing to read"),
        "{err}"
    );
}

/// Issue 12: the SQL shell fed through stdin: statements end with `;` and
/// may span lines (a `;` inside a string does not end one), an error is
/// reported and the shell goes on, `\q` leaves, and the exit code says
/// whether a statement failed.
#[test]
fn the_sql_shell_reads_statements_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let wh = dir.path().join("wh");
    std::fs::create_dir_all(&wh).unwrap();
    let shell = |input: &str| {
        chatlake_stdin(
            &[
                "sql",
                "--warehouse",
                wh.to_str().unwrap(),
                "--format",
                "csv",
            ],
            input,
        )
    };
    let (code, out, err) = shell(
        "SELECT 1 AS a;\n\nSELECT\n  2 AS b,\n  'x;\ny' AS c;\nSELEC 3;\nSELECT 4 AS d; SELECT 5 AS e;\n\\q\nSELECT 6 AS never;\n",
    );
    assert_eq!(out, "a\n1\nb,c\n2,\"x;\ny\"\nd\n4\ne\n5\n", "{err}");
    assert_eq!(
        err.trim(),
        "error: SQL: expected an SQL statement, found SELEC (line 1, column 1)"
    );
    assert_eq!(code, 1, "a statement failed");
    let (code, out, err) = shell("SELECT COUNT(*) AS n FROM socialintents.chats;");
    assert_eq!((code, out.as_str()), (0, "n\n0\n"), "{err}");
}

/// Issue 12: the CLI's output as people and scripts see it, kept as
/// snapshots (tests/it/snapshots; review a change with `cargo insta review`
/// or by reading the `.snap.new` file). Run ids, times, ports and paths are
/// filtered out.
#[test]
fn cli_output_snapshots() {
    let cli = cli_env(2);
    let (env, file, wh) = (&cli.env, cli.file(), cli.wh());
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"\d{8}T\d{6}Z-[0-9a-f]{6}", "[RUN_ID]");
    settings.add_filter(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "[TIME]");
    settings.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]");
    settings.add_filter(&regex_escape(env.dir.path().to_str().unwrap()), "[DIR]");
    // Timings: requests a second in the run summary, seconds in runs.
    settings.add_filter(r" +\d+\.\d  ok", " [REQ/S]  ok");
    settings.add_filter(
        r#""(seconds|max_requests_per_second)": [0-9.]+"#,
        r#""$1": [MEASURED]"#,
    );
    let _guard = settings.bind_to_scope();
    let show = |(code, out, err): (i32, String, String)| {
        format!("exit {code}\n--- stdout\n{out}--- stderr\n{err}")
    };

    // Every format on a result with a list, a null, and an empty result.
    let sql = "SELECT n, tags, note FROM (VALUES (1, make_array('a', 'b, c'), NULL), (2, make_array(), 'line\nbreak')) t(n, tags, note) ORDER BY n";
    let empty = "SELECT CAST(1 AS BIGINT) AS n, 'x' AS s WHERE false";
    for format in ["table", "csv", "json", "ndjson"] {
        let run = |q: &str| {
            chatlake(&[
                "query",
                "--warehouse",
                env.dir.path().to_str().unwrap(),
                "--format",
                format,
                q,
            ])
        };
        insta::assert_snapshot!(format!("query_{format}"), show(run(sql)));
        insta::assert_snapshot!(format!("query_{format}_empty"), show(run(empty)));
    }
    // Errors, one human line each.
    let dir = env.dir.path().to_str().unwrap();
    insta::assert_snapshot!(
        "error_parse",
        show(chatlake(&["query", "--warehouse", dir, "SELEC 1"]))
    );
    insta::assert_snapshot!(
        "error_unknown_table",
        show(chatlake(&[
            "query",
            "--warehouse",
            dir,
            "SELECT * FROM socialintents.chatz"
        ]))
    );
    // check, a run, its summary, runs, state; the shell through stdin.
    insta::assert_snapshot!("check", show(chatlake(&["check", "--pipeline", file])));
    insta::assert_snapshot!("run", show(run_chats(file, wh, &[])));
    insta::assert_snapshot!(
        "runs",
        show(chatlake(&["runs", "--warehouse", wh, "--format", "json"]))
    );
    insta::assert_snapshot!(
        "state_show",
        show(chatlake(&[
            "state",
            "show",
            "--pipeline",
            file,
            "--warehouse",
            wh
        ]))
    );
    insta::assert_snapshot!(
        "shell",
        show(chatlake_stdin(
            &["sql", "--warehouse", wh],
            "SELECT COUNT(*) AS chats\nFROM socialintents.chats;\nSELECT nope;\n"
        ))
    );
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '/' || c == '_' || c == '-' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}
