//! Issue 24: the second hostile-input round. One regression test per defect
//! (numbered as in the issue), each run against the real binary or pipeline,
//! each failing without its fix.

use std::io::{BufRead, Read};
use std::process::{Command, Stdio};

use crate::hostile::{
    json, query_rows, run_window, si_chat, si_chats, si_empty, si_pipeline, Hostile,
};
use crate::support::*;

/// The first word of each statement of a generated script, as a
/// tokenizer with the engine's string-literal rules splits it.
fn statement_words(
    script: &str,
    dialect: &dyn datafusion::sql::sqlparser::dialect::Dialect,
) -> Vec<String> {
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = Tokenizer::new(dialect, script)
        .tokenize()
        .unwrap_or_else(|e| panic!("{e}\n{script}"));
    let mut words = Vec::new();
    let mut first = true;
    for t in tokens {
        match t {
            Token::Whitespace(_) => {}
            Token::SemiColon => first = true,
            Token::Word(w) if first => {
                words.push(w.value.to_uppercase());
                first = false;
            }
            _ => first = false,
        }
    }
    words
}

/// The statements of a generated DataFusion script, as datafusion-cli
/// runs them.
fn parsed(script: &str) -> Vec<String> {
    datafusion::sql::parser::DFParser::parse_sql(script)
        .unwrap_or_else(|e| panic!("{e}\n{script}"))
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// 24.1: a warehouse path with a quote, or with SQL in its name, stays one
/// string literal in every dialect: the scripts keep the same statements as
/// for a plain path, hold no COPY, and the DataFusion one reads the chats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_quote_the_warehouse_path_in_every_dialect() {
    use chatlake::dialect::Dialect;
    use datafusion::sql::sqlparser::dialect::{DuckDbDialect, GenericDialect, MySqlDialect};
    let env = env_with(data(3), 7).await;
    env.run(Some("2025-10-27"), "2025-10-29").await;
    let root = env.dir.path().join("wh");
    let chats = env.int("SELECT count(*) FROM socialintents.chats").await;
    assert!(chats > 0);
    let mut current = root;
    let mut counts = Vec::new();
    for name in [
        "plain",
        "o'brien wh",
        "x', hive_partitioning = false); COPY (SELECT 42) TO 'x.csv'; SELECT ('",
        "semi; colon' ; DROP TABLE t; --",
    ] {
        let dir = env.dir.path().join(name);
        std::fs::rename(&current, &dir).unwrap();
        current = dir.clone();
        let wh = chatlake::sink::Warehouse::open(dir.to_str().unwrap()).unwrap();
        let mut per_dialect = Vec::new();
        for (d, parser) in [
            (
                Dialect::DuckDb,
                &DuckDbDialect {} as &dyn datafusion::sql::sqlparser::dialect::Dialect,
            ),
            // Spark reads backslash escapes in literals, as MySQL does.
            (Dialect::Spark, &MySqlDialect {}),
            (Dialect::DataFusion, &GenericDialect {}),
        ] {
            let script = chatlake::query::views_script(&wh, d).await.unwrap();
            let words = statement_words(&script, parser);
            assert!(
                !words.iter().any(|w| w == "COPY" || w == "SELECT"),
                "{name} {d:?}: {words:?}"
            );
            let dir_text = dir.to_str().unwrap();
            let literal =
                chatlake::dialect::literal(&format!("{dir_text}/socialintents/chats/"), d);
            if d == Dialect::DataFusion {
                assert!(script.contains(&literal), "{name}: {script}");
                // A fresh DataFusion session reads the chats through the script.
                let ctx = datafusion::prelude::SessionContext::new();
                for s in &parsed(&script) {
                    ctx.sql(s).await.unwrap().collect().await.unwrap();
                }
                let n = ctx
                    .sql("SELECT count(*) FROM socialintents.chats")
                    .await
                    .unwrap()
                    .collect()
                    .await
                    .unwrap();
                assert_eq!(batch_rows(&n), vec![vec![chats.to_string()]], "{name}");
            }
            per_dialect.push(words);
        }
        counts.push(per_dialect);
    }
    assert!(counts.iter().all(|c| *c == counts[0]), "{counts:?}");
    // Spark's literal for a quote and a backslash, by its rules.
    assert_eq!(
        chatlake::dialect::literal("a'b\\c", Dialect::Spark),
        r"'a\'b\\c'"
    );
    assert_eq!(
        chatlake::dialect::literal("a'b\\c", Dialect::DuckDb),
        r"'a''b\c'"
    );
    // A newline or a glob character in the path is refused (exit 2).
    for bad in ["new\nline", "star*", "back\\slash", "per%2Ecent"] {
        let dir = env.dir.path().join(bad);
        std::fs::create_dir_all(&dir).unwrap();
        let (code, _, err) = chatlake(&[
            "views",
            "--dialect",
            "duckdb",
            "--warehouse",
            dir.to_str().unwrap(),
        ]);
        assert_eq!(code, 2, "{bad:?}: {err}");
        assert!(err.contains("control"), "{err}");
    }
}

/// A pipeline file beside `file`, with `from` replaced by `to`.
fn variant(file: &str, name: &str, from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(from), "{from} not in {text}");
    let f = std::path::Path::new(file).with_file_name(name);
    std::fs::write(&f, text.replacen(from, to, 1)).unwrap();
    f.to_str().unwrap().to_string()
}

/// 24.3, 24.15, 24.19: `[report]` days and path, timeouts and the name
/// are checked when the file is loaded (exit 2, nothing run); `report
/// --days` is bounded.
#[test]
fn report_settings_and_odd_values_are_refused_at_load() {
    let server = Hostile::start(|path, _, _| si_empty(path));
    let (_dir, file, wh) = si_pipeline(&server.url, r#"["chats"]"#, "");
    let cases = [
        (
            "[report]\ndays = 4294967295\n",
            "[report] days = 4294967295: between 1 and 3660",
        ),
        (
            "[report]\ndays = 0\n",
            "[report] days = 0: between 1 and 3660",
        ),
        (
            "[report]\npath = \"../x.html\"\n",
            "holds an empty, `.` or `..` segment",
        ),
        ("[report]\npath = \"/tmp/x.html\"\n", "is absolute"),
        ("[report]\npath = \"a\\\\b.html\"\n", "holds a backslash"),
        (
            "[report]\npath = \"socialintents/chats/dt=2025-10-27/data.parquet\"\n",
            "inside a table",
        ),
    ];
    for (i, (section, expected)) in cases.iter().enumerate() {
        let f = variant(
            &file,
            &format!("r{i}.toml"),
            "[sources.socialintents]",
            &format!("{section}[sources.socialintents]"),
        );
        let (code, out, err) = chatlake(&["run", "--pipeline", &f, "--warehouse", &wh]);
        assert_eq!(code, 2, "{section}: {out}{err}");
        assert!(err.contains(expected), "{section}: {err}");
        assert!(server.asked().is_empty(), "nothing requested for {section}");
    }
    for (from, to, expected) in [
        (
            "request_timeout_secs = 30",
            "request_timeout_secs = 0",
            "request_timeout_secs",
        ),
        (
            "name = \"test\"",
            &format!("name = \"{}\"", "n".repeat(300)) as &str,
            "at most 64 characters",
        ),
    ] {
        let f = variant(&file, "odd.toml", from, to);
        let (code, _, err) = chatlake(&["run", "--pipeline", &f, "--warehouse", &wh]);
        assert_eq!(code, 2, "{to}: {err}");
        assert!(err.contains(expected), "{err}");
    }
    std::fs::create_dir_all(&wh).unwrap();
    for days in ["200000000", "0"] {
        let (code, _, err) =
            chatlake(&["report", "--warehouse", &wh, "--days", days, "--out", "-"]);
        assert_eq!(code, 2, "--days {days}: {err}");
    }
    let (code, _, err) = chatlake(&[
        "report",
        "--warehouse",
        &wh,
        "--from",
        "0001-01-01",
        "--to",
        "9999-12-31",
        "--out",
        "-",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("at most 3660 days"), "{err}");
}

/// 24.9: `--out` never writes into the warehouse: not through a link to a
/// partition (`query`), not into a partition (`report`). The partition is
/// byte for byte what the run wrote.
#[test]
fn out_files_never_land_in_the_warehouse() {
    let server = Hostile::start(|path, _, _| {
        if path.contains("/chats") && !path.contains("missed") {
            si_chats(vec![si_chat("c1", "2025-10-27 15:00:00", 2)])
        } else {
            si_empty(path)
        }
    });
    let (dir, file, wh) = si_pipeline(&server.url, r#"["chats"]"#, "");
    assert_eq!(run_window(&file, &wh).0, 0);
    let part = std::path::Path::new(&wh).join("socialintents/chats/dt=2025-10-27/data.parquet");
    let before = std::fs::read(&part).unwrap();
    let link = dir.path().join("out.csv");
    std::os::unix::fs::symlink(&part, &link).unwrap();
    let (code, _, err) = chatlake(&[
        "query",
        "--warehouse",
        &wh,
        "--out",
        link.to_str().unwrap(),
        "SELECT 1 AS n",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("inside the warehouse"), "{err}");
    let (code, _, err) = chatlake(&[
        "report",
        "--warehouse",
        &wh,
        "--out",
        part.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("inside the warehouse"), "{err}");
    assert_eq!(
        std::fs::read(&part).unwrap(),
        before,
        "the partition is untouched"
    );
    assert_eq!(
        query_rows(&wh, "SELECT chat_id FROM socialintents.chats"),
        ["c1"]
    );
    // Outside the warehouse, a link is replaced by the result, not followed.
    let elsewhere = dir.path().join("keep.txt");
    std::fs::write(&elsewhere, "mine").unwrap();
    let link2 = dir.path().join("out2.csv");
    std::os::unix::fs::symlink(&elsewhere, &link2).unwrap();
    let (code, _, err) = chatlake(&[
        "query",
        "--warehouse",
        &wh,
        "--out",
        link2.to_str().unwrap(),
        "SELECT 1 AS n",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "mine");
    assert_eq!(std::fs::read_to_string(&link2).unwrap(), "n\n1\n");
}

/// Peak resident memory of a running child, polled from /proc until it ends.
fn peak_rss_mb(child: &mut std::process::Child) -> u64 {
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status) {
            if let Some(kb) = text
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
            {
                peak = peak.max(kb / 1024);
            }
        }
        if child.try_wait().unwrap().is_some() {
            return peak;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// 24.8: `query` streams its result: 400 MB of CSV (and of `--out`) with
/// a peak far below the result's size, and the first row arrives before
/// the last is made. It held the whole result and its text (2.45 GB for
/// 20 M rows) and printed nothing until the end.
#[test]
fn query_results_stream_in_flat_memory() {
    let dir = tempfile::tempdir().unwrap();
    let wh = dir.path().join("wh");
    std::fs::create_dir_all(&wh).unwrap();
    let sql = "SELECT i, repeat('x', 2000) AS pad FROM unnest(range(0, 200000)) AS t(i)";
    let mut child = Command::new(env!("CARGO_BIN_EXE_chatlake"))
        .args([
            "query",
            "--warehouse",
            wh.to_str().unwrap(),
            "--format",
            "csv",
            sql,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        stdout.read_line(&mut first).unwrap();
        let mut rest = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = stdout.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            rest += n as u64;
        }
        (first, rest)
    });
    let peak = peak_rss_mb(&mut child);
    let (first, rest) = reader.join().unwrap();
    assert!(first.starts_with("i,pad\n0,xx"), "{}", &first[..20]);
    assert!(rest > 399_000_000, "{rest} bytes");
    assert!(peak < 200, "peak RSS {peak} MB for a 400 MB result");
    // The same through --out.
    let out = dir.path().join("r.csv");
    let mut child = Command::new(env!("CARGO_BIN_EXE_chatlake"))
        .args([
            "query",
            "--warehouse",
            wh.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            sql,
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let peak = peak_rss_mb(&mut child);
    assert!(child.wait().unwrap().success());
    assert!(std::fs::metadata(&out).unwrap().len() > 400_000_000);
    assert!(peak < 200, "peak RSS {peak} MB writing a 400 MB file");
    // JSON says when NaN or infinity became null.
    let (code, out, err) = chatlake(&[
        "query",
        "--warehouse",
        wh.to_str().unwrap(),
        "--format",
        "json",
        "SELECT CAST('NaN' AS DOUBLE) AS a, CAST('inf' AS DOUBLE) AS b, 1.5 AS c",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), r#"[{"a":null,"b":null,"c":1.5}]"#);
    assert!(
        err.contains("2 NaN or infinite value(s) written as null"),
        "{err}"
    );
}

/// 24.12: operators that planned in exponential time or without bound
/// are counted: 24 chained `->` and 20,000 `&` are refused at once.
#[test]
fn every_operator_counts_towards_the_planning_bound() {
    let dir = tempfile::tempdir().unwrap();
    let wh = dir.path().to_str().unwrap();
    let started = std::time::Instant::now();
    let arrows = format!("SELECT '{{}}'{}", "->'a'".repeat(24));
    let (code, _, err) = chatlake(&["query", "--warehouse", wh, &arrows]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("24 `->`/`->>` operators; at most 12"), "{err}");
    for (op, n) in [("&", 20_000), ("|", 2000), ("<<", 2000), ("^", 2000)] {
        let sql = format!("SELECT 1{}", format!(" {op} 1").repeat(n));
        let (code, _, err) = chatlake(&["query", "--warehouse", wh, &sql]);
        assert_eq!(code, 2, "{op}: {err}");
        assert!(err.contains(&format!("has {n} operators")), "{op}: {err}");
    }
    let unions = format!("SELECT 1{}", " UNION ALL SELECT 1".repeat(1500));
    let (code, _, err) = chatlake(&["query", "--warehouse", wh, &unions]);
    assert_eq!(code, 2, "{err}");
    assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
    // Within the bounds, they run.
    let (code, out, err) = query_csv(
        wh,
        r#"SELECT ('{"a":{"b":7}}'->'a'->>'b') AS v, 6 & 3 AS x, 1 << 4 AS y"#,
    );
    assert_eq!((code, out.trim()), (0, "v,x,y\n7,2,16"), "{err}");
    // A write is refused by name, not with a parser error.
    let (code, _, err) = chatlake(&["query", "--warehouse", wh, "COPY (SELECT 1) TO '/x'"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("COPY is refused: queries are read-only"),
        "{err}"
    );
}

/// 24.10: `check` applies each source's envelope: an HTTP 200 that is the
/// Social Intents error envelope, `{}` or a bare string is not "credentials
/// accepted".
#[test]
fn check_applies_the_sources_envelope() {
    for body in [
        r#"{"apiStatus":"Error","apiStatusCode":"401","apiStatusMessage":"Invalid token"}"#,
        "{}",
        r#""ok""#,
    ] {
        let server = Hostile::start(move |_, _, _| json(200, body));
        let (_dir, file, _) = si_pipeline(&server.url, r#"["chats"]"#, "");
        let (code, out, err) = chatlake(&["check", "--pipeline", &file]);
        assert_eq!(code, 1, "{body}: {out}{err}");
        assert!(
            out.contains("FAILED") && !out.contains("credentials accepted"),
            "{body}: {out}"
        );
    }
    let server = Hostile::start(|path, _, _| si_empty(path));
    let (_dir, file, _) = si_pipeline(&server.url, r#"["chats"]"#, "");
    let (code, out, err) = chatlake(&["check", "--pipeline", &file]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("credentials accepted (GET /apps: widgets: 0)"),
        "{out}"
    );
}

/// 24.5: a server that echoes the token JSON-escaped (`\/`), or
/// percent-encoded, or base64, or puts a key in base_url's query string:
/// none of it reaches check's output, the text or JSON logs, or meta.runs.
#[test]
fn secrets_in_escaped_echoes_are_redacted() {
    use base64::Engine;
    let token = "tok/ECHO+7f3a 9c";
    let escaped = token.replace('/', "\\/");
    let percent = "tok%2FECHO%2B7f3a%209c";
    let b64 = base64::engine::general_purpose::STANDARD.encode(token);
    let (e, p, b) = (escaped.clone(), percent.to_string(), b64.clone());
    let server = Hostile::start(move |path, _, _| {
        json(
            200,
            format!(
                r#"{{"apiStatus":"Error","apiStatusCode":"403","apiStatusMessage":"bad {e} / {p} / {b} at {path}"}}"#
            ),
        )
    });
    let (dir, file, wh) = si_pipeline(&server.url, r#"["chats"]"#, "");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace(crate::support::TOKEN, token)
        .replace(
            &server.url,
            &format!("{}?api_key=KEY-in-the-query", server.url),
        );
    let file = dir.path().join("echo.toml");
    std::fs::write(&file, text).unwrap();
    let file = file.to_str().unwrap();
    let (_, check_out, check_err) = chatlake(&["check", "--pipeline", file]);
    let mut seen = vec![("check", check_out + &check_err)];
    for format in ["text", "json"] {
        let (code, out, err) = chatlake_env(
            &[
                "--log-format",
                format,
                "run",
                "--pipeline",
                file,
                "--warehouse",
                &wh,
                "--from",
                "2025-10-27",
                "--to",
                "2025-10-28",
            ],
            &[("RUST_LOG", "debug")],
        );
        assert_eq!(code, 1);
        seen.push(("run", out + &err));
    }
    let (_, runs, _) = query_csv(&wh, "SELECT error FROM meta.runs");
    assert!(runs.contains("bad ***"), "{runs}");
    seen.push(("meta.runs", runs));
    for (what, text) in &seen {
        for secret in [
            token,
            escaped.as_str(),
            percent,
            b64.as_str(),
            "KEY-in-the-query",
        ] {
            assert!(!text.contains(secret), "{secret} in {what}: {text}");
        }
    }
}

/// 24.11: an API error body with a newline and escape codes cannot forge
/// a log line or reach the terminal; with `--log-format json` every stderr
/// line is JSON.
#[test]
fn api_text_cannot_forge_log_lines() {
    // A plain-text body: a raw newline, escape codes, a bell.
    let forged = "oops\n2025-10-27T00:00:00Z  INFO chatlake: stream finished status=\"success\"\u{1b}[2J\u{1b}]0;pwned\u{7}";
    let server = Hostile::start(move |path, _, _| {
        if path.contains("/chats") {
            json(500, forged)
        } else {
            si_empty(path)
        }
    });
    let (_dir, file, wh) = si_pipeline(&server.url, r#"["chats"]"#, "");
    for format in ["text", "json"] {
        let (code, _, stderr) = chatlake(&[
            "--log-format",
            format,
            "run",
            "--pipeline",
            &file,
            "--warehouse",
            &wh,
            "--from",
            "2025-10-27",
            "--to",
            "2025-10-27",
        ]);
        assert_eq!(code, 1);
        assert!(
            !stderr.contains('\u{1b}') && !stderr.contains('\u{7}'),
            "{stderr:?}"
        );
        assert!(
            !stderr
                .lines()
                .any(|l| l.starts_with("2025-10-27T00:00:00Z")),
            "a forged line: {stderr}"
        );
        let shown = if format == "json" {
            "oops\\\\n2025-10-27"
        } else {
            "oops\\n2025-10-27"
        };
        assert!(stderr.contains(shown), "{stderr}");
        if format == "json" {
            for line in stderr.lines() {
                serde_json::from_str::<serde_json::Value>(line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            }
            assert!(
                stderr.lines().any(|l| l.contains(r#""message":"error: "#)),
                "{stderr}"
            );
        }
    }
    let (_, runs, _) = chatlake(&["runs", "--warehouse", &wh]);
    assert!(
        !runs.contains('\u{1b}') && !runs.contains("\n2025-10-27T00"),
        "{runs}"
    );
}

/// 24.14: an S3 prefix with `.`, `..` or an encoded dot segment is refused
/// (exit 2) before anything is read or written.
#[test]
fn s3_prefixes_with_dot_segments_are_refused() {
    for url in [
        "s3://b/a/../b",
        "s3://b/a/%2E%2E/b",
        "s3://b/./x",
        "s3://b/a//b",
        "s3://b/a/%2e",
    ] {
        let (code, _, err) = chatlake(&["query", "--warehouse", url, "SELECT 1"]);
        assert_eq!(code, 2, "{url}: {err}");
        assert!(err.contains("the prefix holds"), "{url}: {err}");
    }
}

/// 24.16: the SQL shell fed from a pipe: an apostrophe in a comment does
/// not swallow later statements, `\q` leaves, invalid UTF-8 names its line,
/// and a closed stdout ends it as `query` (141).
#[test]
fn the_shell_splits_statements_with_the_sql_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let wh = dir.path().to_str().unwrap();
    let (code, out, err) = chatlake_stdin(
        &["sql", "--warehouse", wh, "--format", "csv"],
        "SELECT 1 AS a; -- don't\nSELECT 2 AS b;\n\\q\nSELECT 3 AS c;\n",
    );
    assert_eq!((code, out.as_str()), (0, "a\n1\nb\n2\n"), "{err}");
    let (code, stdout, stderr) = chatlake_stdin(
        &["sql", "--warehouse", wh, "--format", "csv"],
        b"SELECT 1 AS a;\nSELECT '\xff\xfe' AS bad;\nSELECT 4 AS d;\n",
    );
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stdout, "a\n1\nd\n4\n");
    assert!(
        stderr.contains("line 2 of the input is not UTF-8"),
        "{stderr}"
    );
    // `sql | head -1`: the reader goes away.
    let mut child = Command::new(env!("CARGO_BIN_EXE_chatlake"))
        .args(["sql", "--warehouse", wh, "--format", "csv"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    {
        use std::io::Write;
        stdin.write_all(b"SELECT 1 AS a;\n").unwrap();
    }
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    drop(stdout);
    {
        use std::io::Write;
        let _ = stdin.write_all(b"SELECT i FROM unnest(range(0, 100000)) AS t(i);\n");
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(141),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// 24.17: control characters from the API (NUL, 0x01, 0x7f) do not reach
/// the report's HTML; the name still shows, with U+FFFD in their place.
#[test]
fn control_characters_do_not_reach_the_report() {
    let server = Hostile::start(|path, _, _| {
        if path.contains("/chats") && !path.contains("missed") {
            let mut c = si_chat("c1", "2025-10-27 15:00:00", 2);
            c["agentName"] = serde_json::json!("Ann\u{0}\u{1}\u{7f}Lee");
            c["messages"][0]["type"] = serde_json::json!("messageToAgent");
            c["messages"][1]["type"] = serde_json::json!("messageToVisitor");
            c["messages"][1]["nickname"] = serde_json::json!("Ann\u{0}\u{1}\u{7f}Lee");
            si_chats(vec![c])
        } else {
            si_empty(path)
        }
    });
    let (dir, file, wh) = si_pipeline(&server.url, r#"["chats"]"#, "");
    let (code, out, err) = run_window(&file, &wh);
    assert_eq!(code, 0, "{out}{err}");
    let stored = query_rows(
        &wh,
        "SELECT count(*) FROM socialintents.chat_messages WHERE strpos(nickname, chr(0)) > 0",
    );
    assert_eq!(stored, ["1"], "the warehouse keeps what the API sent");
    let text = report_of_day(dir.path(), &wh, "2025-10-27");
    assert!(
        !text
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')),
        "control characters in the report"
    );
}

/// `chatlake report` for one day of the warehouse: the HTML it wrote.
fn report_of_day(dir: &std::path::Path, wh: &str, day: &str) -> String {
    let html = dir.join("r.html");
    let (code, _, err) = chatlake(&[
        "report",
        "--warehouse",
        wh,
        "--from",
        day,
        "--to",
        day,
        "--out",
        html.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    std::fs::read_to_string(&html).unwrap()
}

/// An agent's name with markup and quotes, as an API may send it, shows in
/// the report's agents table as text: escaped, never a tag or an attribute.
#[test]
fn markup_in_a_name_is_text_in_the_report() {
    let name = r#"<script>alert("x")</script> O'Brien & "Co""#;
    let server = Hostile::start(move |path, _, _| {
        if path.contains("/chats") && !path.contains("missed") {
            let mut c = si_chat("c1", "2025-10-27 15:00:00", 2);
            c["agentName"] = serde_json::json!(name);
            si_chats(vec![c])
        } else {
            si_empty(path)
        }
    });
    let (dir, file, wh) = si_pipeline(&server.url, r#"["chats"]"#, "");
    let (code, out, err) = run_window(&file, &wh);
    assert_eq!(code, 0, "{out}{err}");
    let text = report_of_day(dir.path(), &wh, "2025-10-27");
    assert!(
        !text.to_lowercase().contains("<script"),
        "a script tag in the report"
    );
    assert!(
        text.contains("<td>&lt;script&gt;alert(&quot;x&quot;)&lt;&#x2f;script&gt; O&#x27;Brien &amp; &quot;Co&quot;</td>"),
        "the agent's name, escaped, in the agents table"
    );
}

/// 24.13: a run removes spill directories whose process is gone, and
/// leaves those of live processes.
#[test]
fn a_run_sweeps_the_spill_directories_of_killed_runs() {
    let server = Hostile::start(|path, _, _| si_empty(path));
    let (dir, file, wh) = si_pipeline(&server.url, r#"["chats"]"#, "");
    let tmp = dir.path().join("tmp");
    let dead = tmp.join("chatlake-spill-4000000-abc");
    let live = tmp.join(format!("chatlake-spill-{}-abc", std::process::id()));
    for d in [&dead, &live] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("run-0.arrow"), "names and phones").unwrap();
    }
    let (code, _, err) = chatlake_env(
        &[
            "run",
            "--pipeline",
            &file,
            "--warehouse",
            &wh,
            "--from",
            "2025-10-27",
            "--to",
            "2025-10-27",
        ],
        &[("TMPDIR", tmp.to_str().unwrap())],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!dead.exists(), "the dead run's spill directory is removed");
    assert!(live.exists(), "a live process's spill directory stays");
}

/// 24.6: the metrics port closes a client that does not finish its headers
/// (slowloris) and holds at most `MAX_CONNECTIONS` connections, however
/// many idle clients open; it answers again once they are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_port_cannot_be_held_open() {
    use chatlake::metrics::{Metrics, HEADER_READ_TIMEOUT, MAX_CONNECTIONS};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = Metrics::default().serve("127.0.0.1:0").await.unwrap();
    // A slowloris client: half a request, then nothing.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // 200 idle clients.
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // Those beyond the cap are closed at once (a read sees the end).
    let mut open = 0;
    for c in &mut idle {
        let mut b = [0u8; 1];
        match tokio::time::timeout(std::time::Duration::from_millis(20), c.read(&mut b)).await {
            Err(_) => open += 1,         // still open: nothing to read yet
            Ok(Ok(0)) | Ok(Err(_)) => {} // closed by the server
            Ok(Ok(_)) => panic!("an idle client got bytes"),
        }
    }
    assert!(
        open < MAX_CONNECTIONS,
        "{open} idle connections held (cap {MAX_CONNECTIONS})"
    );
    // After the header timeout every one of them is closed, the slow one too.
    tokio::time::sleep(HEADER_READ_TIMEOUT + std::time::Duration::from_secs(1)).await;
    let mut b = [0u8; 256];
    let n = tokio::time::timeout(std::time::Duration::from_secs(2), slow.read(&mut b))
        .await
        .expect("the slow client is closed, not left waiting")
        .unwrap_or(0);
    // hyper answers a header timeout with 408 or just closes.
    assert!(
        n == 0 || String::from_utf8_lossy(&b[..n]).contains("408"),
        "{}",
        String::from_utf8_lossy(&b[..n])
    );
    drop(idle);
    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(health.trim(), "ok");
}

/// 24.6: a scheduled run that cannot start (here: the pipeline's timezone
/// no longer fits the warehouse) is a failed run in `chatlake runs`, which
/// exits 1; it used to leave only a log line, and `runs` exited 0.
#[test]
fn a_scheduled_run_that_cannot_start_shows_in_runs() {
    let server = Hostile::start(|path, _, _| si_empty(path));
    let (_dir, file, wh) = si_pipeline(&server.url, r#"["chats"]"#, "");
    assert_eq!(run_window(&file, &wh).0, 0);
    let moved = variant(
        &file,
        "moved.toml",
        "timezone = \"America/New_York\"",
        "timezone = \"Europe/Berlin\"",
    );
    let moved = variant(&moved, "moved2.toml", "0 30 2 * * *", "*/1 * * * * *");
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_chatlake"))
        .args(["schedule", "--pipeline", &moved, "--warehouse", &wh])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let mut rows = Vec::new();
    while started.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let (code, out, _) = query_csv(
            &wh,
            "SELECT stream, status, error FROM meta.runs WHERE stream = '(run start)'",
        );
        if code == 0 && out.lines().count() > 1 {
            rows = out.lines().skip(1).map(str::to_string).collect();
            break;
        }
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(!rows.is_empty(), "no meta.runs row for the failed start");
    assert!(
        rows[0].starts_with("(run start),failed,\"the run could not start:")
            && rows[0].contains("America/New_York"),
        "{rows:?}"
    );
    let (code, out, err) = chatlake(&["runs", "--warehouse", &wh]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("could not start"), "{out}");
}

/// 24.4: queries while a run replaces a partition see the old file or the
/// new one, never a mix: each read asks for the listed version, and a
/// statement whose file was replaced under it runs again. About one query
/// in ten failed ("Corrupt footer") or panicked in the Parquet reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_during_a_rewrite_see_old_or_new_never_half() {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let env = env_with(data(40), 7).await;
    env.run(Some("2025-10-27"), "2025-10-29").await;
    let part = env
        .dir
        .path()
        .join("wh/socialintents/chat_messages/dt=2025-10-28/data.parquet");
    let old = std::fs::read(&part).unwrap();
    // The new version: the first third of the rows (another size, another footer).
    let batches: Vec<_> = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(old.clone()))
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let all = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let third = all.slice(0, all.num_rows() / 3);
    let mut new = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut new, third.schema(), None).unwrap();
    w.write(&third).unwrap();
    w.close().unwrap();
    let expect = |b: &arrow::record_batch::RecordBatch| {
        let lengths =
            arrow::compute::kernels::length::length(b.column_by_name("body").unwrap()).unwrap();
        let lengths = arrow::compute::cast(&lengths, &arrow::datatypes::DataType::Int64).unwrap();
        let sum = arrow::compute::sum(
            lengths
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap(),
        );
        vec![b.num_rows().to_string(), sum.unwrap_or(0).to_string()]
    };
    let versions = [expect(&all), expect(&third)];
    assert_ne!(versions[0], versions[1]);
    // A writer that replaces the partition as a run does (a whole file
    // renamed over it), every 60 ms, until the readers are done. (A run
    // replaces a partition once; at 30 ms a debug-build query on a loaded
    // machine met a replacement on all of its attempts once in CI: an
    // error, "run the query again", never half a partition.)
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = {
        let (stop, part, done) = (stop.clone(), part.clone(), done.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let tmp = part.with_extension(format!("tmp{n}"));
                std::fs::write(&tmp, if n % 2 == 0 { &new } else { &old }).unwrap();
                std::fs::rename(&tmp, &part).unwrap();
                n += 1;
                done.store(n, std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(60));
            }
            n
        })
    };
    let session = chatlake::query::session(&env.wh).await.unwrap();
    let mut seen = [0; 2];
    // At least 150 queries, and on until the writer has replaced the file
    // more than 50 times (a fast reader on a busy machine outran it).
    for i in 0..5_000 {
        if i >= 150 && done.load(std::sync::atomic::Ordering::Relaxed) > 50 {
            break;
        }
        let rows = chatlake::query::run(
            &session,
            "SELECT count(*), sum(octet_length(body)) FROM socialintents.chat_messages WHERE dt = DATE '2025-10-28'",
        )
        .await
        .unwrap_or_else(|e| panic!("query {i}: {e}"));
        let got = batch_rows(&rows).remove(0);
        let v = versions
            .iter()
            .position(|v| *v == got)
            .unwrap_or_else(|| panic!("query {i}: {got:?} is neither {versions:?}"));
        seen[v] += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let replaced = writer.join().unwrap();
    assert!(replaced > 50, "the partition was replaced {replaced} times");
    println!(
        "{} queries during {replaced} replacements: old {} times, new {} times",
        seen[0] + seen[1],
        seen[0],
        seen[1]
    );
}

/// 24.18: a permanent 429 with 40 windows in flight fails as fast as with
/// one: the source's retry budget is shared, and the windows after a
/// failed one are dropped. It took 40 x 8 attempts (and 529 s at 64).
#[test]
fn a_permanent_429_with_many_windows_in_flight_fails_fast() {
    let server = Hostile::start(|path, _, _| {
        if path.contains("/chats") {
            axum::http::Response::builder()
                .status(429)
                .header("retry-after", "1")
                .body(axum::body::Body::empty())
                .unwrap()
        } else {
            si_empty(path)
        }
    });
    let (_dir, file, wh) = si_pipeline(&server.url, r#"["chats"]"#, "max_concurrency = 40");
    let file = variant(&file, "w1.toml", "window_days = 7", "window_days = 1");
    let started = std::time::Instant::now();
    let (code, out, err) = chatlake(&[
        "run",
        "--pipeline",
        &file,
        "--warehouse",
        &wh,
        "--from",
        "2025-09-01",
        "--to",
        "2025-10-10",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    let asked = server
        .asked()
        .iter()
        .filter(|p| p.contains("/chats"))
        .count();
    // 8 attempts a request: at most the budget (2 x 8) of retries plus one
    // first attempt per window.
    assert!(asked <= 16 + 40, "{asked} requests");
    assert!(err.contains("429"), "{err}");
    println!(
        "permanent 429, 40 windows in flight: {asked} requests, {:?}",
        started.elapsed()
    );
}

/// 24.7: the business calendar from a start_date of 2000 (a million rows
/// of meta.business_clock) is written in chunks with a flat peak; one of
/// 1970 held 1.26 GB, of year 1 aborted. Earlier start dates are refused.
#[test]
fn the_business_clock_is_written_in_flat_memory() {
    use chrono::TimeZone;
    let server = Hostile::start(|path, _, _| si_empty(path));
    let (_dir, file, wh) = si_pipeline(&server.url, r#"["chats"]"#, "");
    let early = variant(
        &file,
        "y1.toml",
        "start_date = \"2025-10-27\"",
        "start_date = \"0001-01-01\"",
    );
    let (code, _, err) = chatlake(&["run", "--pipeline", &early, "--warehouse", &wh]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("at the earliest 2000-01-01"), "{err}");
    let y2k = variant(
        &file,
        "y2k.toml",
        "start_date = \"2025-10-27\"",
        "start_date = \"2000-01-01\"",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_chatlake"))
        .args([
            "run",
            "--pipeline",
            &y2k,
            "--warehouse",
            &wh,
            "--from",
            "2025-10-27",
            "--to",
            "2025-10-27",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let peak = peak_rss_mb(&mut child);
    assert!(child.wait().unwrap().success());
    // Quarter hours from local midnight of 2000-01-01 to the midnight after
    // the calendar's last day (a year after today), in New York.
    let tz = chrono_tz::America::New_York;
    let today = chrono::Utc::now().with_timezone(&tz).date_naive();
    let last = today.checked_add_months(chrono::Months::new(12)).unwrap();
    let midnight = |d: chrono::NaiveDate| {
        tz.from_local_datetime(&d.and_hms_opt(0, 0, 0).unwrap())
            .unwrap()
    };
    let expected =
        (midnight(last.succ_opt().unwrap()) - midnight(d("2000-01-01"))).num_minutes() / 15;
    let got = query_rows(&wh, "SELECT count(*) FROM meta.business_clock");
    assert_eq!(got, [expected.to_string()]);
    assert!(expected > 900_000, "{expected}");
    assert!(
        peak < 300,
        "peak RSS {peak} MB writing {expected} clock rows"
    );
    println!("business clock from 2000: {expected} rows, peak RSS {peak} MB");
}
