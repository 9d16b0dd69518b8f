//! The warehouse on S3: a real S3-compatible server (s3s-fs, in-process, on
//! 127.0.0.1, behind real HTTP with SigV4 auth) serves a bucket; the pipeline,
//! the queries, the state and its conditional writes, and multipart uploads
//! run against it through object_store's AmazonS3.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use chatlake::sink::Warehouse;
use chatlake::state::StateStore;

use crate::support::*;

pub const ACCESS_KEY: &str = "chatlake-test-access";
pub const SECRET_KEY: &str = "chatlake-test-SECRET-8e1f";
pub const BUCKET: &str = "lake";

/// An S3-compatible server (s3s-fs) on a loopback port, storing objects under
/// a temporary directory; it stops when the runtime that started it ends.
pub struct S3Server {
    pub endpoint: String,
    pub root: tempfile::TempDir,
}

impl S3Server {
    /// Starts the server on the current tokio runtime, with bucket [`BUCKET`].
    pub async fn start() -> S3Server {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(BUCKET)).unwrap();
        let fs = s3s_fs::FileSystem::new(root.path()).unwrap();
        let service = {
            let mut b = s3s::service::S3ServiceBuilder::new(fs);
            b.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
            b.build()
        };
        let service =
            axum::error_handling::HandleError::new(service, |e: s3s::HttpError| async move {
                (
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    format!("{e:?}"),
                )
            });
        let app = axum::Router::new().fallback_service(service);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        S3Server {
            endpoint: format!("http://{addr}"),
            root,
        }
    }

    /// The `AWS_*` variables a user would set for this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ]
    }

    /// A warehouse handle in this process (same settings as [`S3Server::env`]).
    pub fn warehouse(&self, prefix: &str) -> Warehouse {
        let opts = [
            ("aws_access_key_id", ACCESS_KEY),
            ("aws_secret_access_key", SECRET_KEY),
            ("aws_region", "us-east-1"),
            ("aws_endpoint", self.endpoint.as_str()),
            ("aws_allow_http", "true"),
        ];
        Warehouse::open_s3_with(&format!("s3://{BUCKET}/{prefix}"), &opts).unwrap()
    }
}

/// Runs the chatlake binary with the server's AWS_* environment.
fn chatlake(server: &S3Server, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chatlake"));
    cmd.args(args);
    for (k, v) in server.env() {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn run_query_and_state_work_on_s3() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (env, server) =
        rt.block_on(async { (env_with(data(10), 3).await, S3Server::start().await) });
    let wh = format!("s3://{BUCKET}/prod/chat");
    let pipeline = env.pipeline_file.to_str().unwrap();
    for _ in 0..2 {
        // twice: a re-run replaces the same objects
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chatlake"));
        cmd.args([
            "run",
            "--pipeline",
            pipeline,
            "--warehouse",
            &wh,
            "--from",
            "2025-10-27",
            "--to",
            "2025-11-04",
        ])
        .env("RUST_LOG", "debug");
        for (k, v) in server.env() {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !printed.contains(SECRET_KEY) && !printed.contains(TOKEN),
            "a secret was printed (debug logs included)"
        );
    }
    // The objects are in the bucket, under the prefix, as Hive partitions.
    let stored = files(&server.root.path().join(BUCKET));
    assert!(stored.iter().any(|p| p
        .to_string_lossy()
        .contains("prod/chat/socialintents/chats/dt=2025-11-02/data.parquet")));
    // query reads them back: exactly the simulator's chats.
    let out = chatlake(
        &server,
        &["query", "--warehouse", &wh, "--format", "csv", "SELECT chat_id, CAST(started_at AS BIGINT) AS t, CAST(dt AS VARCHAR) AS d FROM socialintents.chats"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: BTreeMap<String, (String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), (f[1].to_string(), f[2].to_string()))
        })
        .collect();
    let tz = env.tz();
    let expected: BTreeMap<String, (String, String)> = env
        .served_chats("2025-10-27", "2025-11-04")
        .iter()
        .map(|c| {
            (
                c.id.clone(),
                (
                    c.start.timestamp_micros().to_string(),
                    c.start.with_timezone(&tz).date_naive().to_string(),
                ),
            )
        })
        .collect();
    assert_eq!(got, expected);
    let lines = String::from_utf8_lossy(&out.stdout).lines().count() - 1;
    assert_eq!(lines, expected.len(), "no duplicate after the re-run");
    // state show reads the watermark from S3.
    let out = chatlake(
        &server,
        &["state", "show", "--pipeline", pipeline, "--warehouse", &wh],
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && shown.contains("socialintents.chats")
            && shown.contains("2025-11-04"),
        "{shown}"
    );
    // No credential in any object.
    for f in stored {
        let bytes = std::fs::read(&f).unwrap();
        for needle in [SECRET_KEY, TOKEN] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle} in {}",
                f.display()
            );
        }
    }
    println!(
        "s3: {} chats written twice and read back exactly",
        expected.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_writes_are_conditional_on_s3() {
    let server = S3Server::start().await;
    let wh = server.warehouse("cond");
    let a = StateStore::new(&wh, "p");
    // Create-if-absent: a second creator loses.
    let first = a
        .save("s.x", None, Some(d("2025-01-01")), None, "run-a")
        .await
        .unwrap();
    let err = a
        .save("s.x", None, Some(d("2025-01-02")), None, "run-b")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("created this state at the same time"), "{err}");
    // If-Match: an update on the version read wins once; the stale one loses.
    let second = a
        .save("s.x", Some(&first), Some(d("2025-01-03")), None, "run-a")
        .await
        .unwrap();
    let err = a
        .save("s.x", Some(&first), Some(d("2025-01-04")), None, "run-b")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("changed this state since it was read"),
        "{err}"
    );
    let loaded = a.load("s.x").await.unwrap().unwrap();
    assert_eq!(
        (loaded.state.watermark, loaded.state.generation),
        (Some(d("2025-01-03")), 2)
    );
    a.save("s.x", Some(&second), Some(d("2025-01-05")), None, "run-a")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_partition_goes_up_as_multipart_and_reads_back() {
    let server = S3Server::start().await;
    let wh = server.warehouse("big");
    let table = chatlake::schema::table("socialintents.widgets");
    // ~24 MB of incompressible text: above the 10 MiB single-PUT buffer.
    let n = 6_000;
    let mut rng = fastrand::Rng::with_seed(1);
    let ids: Vec<String> = (0..n).map(|i| format!("w{i:05}")).collect();
    let blobs: Vec<String> = (0..n)
        .map(|_| (0..4_000).map(|_| rng.alphanumeric()).collect())
        .collect();
    let schema = table.file_schema();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| -> ArrayRef {
            match f.name().as_str() {
                "widget_id" => Arc::new(StringArray::from(ids.clone())),
                "name" => Arc::new(StringArray::from(blobs.clone())),
                "_run_id" => Arc::new(StringArray::from(vec!["r"; n])),
                "_extracted_at" => Arc::new(
                    arrow::array::TimestampMicrosecondArray::from(vec![0; n]).with_timezone("UTC"),
                ),
                _ => arrow::array::new_null_array(f.data_type(), n),
            }
        })
        .collect();
    let batch = RecordBatch::try_new(schema, columns).unwrap();
    wh.replace_partition(table, None, &batch).await.unwrap();
    let size = files(&server.root.path().join(BUCKET))
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .max()
        .unwrap();
    assert!(size > 15 * 1024 * 1024, "object is {size} bytes");
    let ctx = chatlake::query::session(&wh).await.unwrap();
    let got = chatlake::query::run(
        &ctx,
        "SELECT COUNT(*), SUM(length(name)) FROM socialintents.widgets",
    )
    .await
    .unwrap();
    let text = chatlake::query::render(&got, chatlake::query::Format::Csv).unwrap();
    assert_eq!(text.lines().nth(1).unwrap(), format!("{n},{}", n * 4_000));
}

/// On S3 the report's link in the cadence message is presigned: anyone
/// holding it GETs the report without credentials for `link_days`; the
/// same link with a longer expiry written in is refused (the signature
/// covers it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_link_on_s3_is_presigned() {
    let server = S3Server::start().await;
    let r = crate::notify::receiver().await;
    let env = env_with(data(2), 7).await.with_pipeline(|t| {
        t + &format!(
            "\n[channels.ops]\ntype = \"webhook\"\nurl = \"{}/hook\"\n[report]\ndeliver_to = [\"ops\"]\nevery = \"daily\"\nlink_days = 2\n",
            r.url
        )
    });
    let wh = server.warehouse("signed");
    let opts = chatlake::pipeline::RunOptions {
        from: Some(d("2025-10-27")),
        to: Some(d("2025-10-29")),
        now: Some(now_after(d("2025-10-29"))),
        ..Default::default()
    };
    chatlake::pipeline::run_once(&env.pipeline, &wh, &opts)
        .await
        .unwrap();
    let text = r
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| serde_json::from_str::<serde_json::Value>(&s.3).unwrap())
        .find(|b| b["kind"] == "report")
        .expect("the report was sent")["text"]
        .as_str()
        .unwrap()
        .to_string();
    let url = text
        .split("The report: ")
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    assert!(
        url.starts_with(&format!(
            "{}/{BUCKET}/signed/_reports/latest.html?",
            server.endpoint
        )) && url.contains("X-Amz-Expires=172800")
            && url.contains("X-Amz-Signature="),
        "{url}"
    );
    let got = reqwest::get(&url).await.unwrap();
    assert_eq!(got.status(), 200, "{url}");
    assert!(got.text().await.unwrap().contains("<title>Chat report"));
    let longer = url.replace("X-Amz-Expires=172800", "X-Amz-Expires=604800");
    assert_eq!(reqwest::get(&longer).await.unwrap().status(), 403);
}
