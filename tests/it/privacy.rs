//! Issue 20, first part: a `[privacy]` policy applied before anything is
//! written. The simulator serves personal data as people type it (mixed-case
//! emails, phones with spaces and dashes, a card number and an email inside
//! messages and transcripts, a phone in `_extra`, poison records whose raw
//! JSON lands in meta.rejects); after a run under hash, drop and redact, no
//! file of the warehouse and no log line at RUST_LOG=debug holds any of it,
//! hashes equal HMAC-SHA256 computed here, and the chats-by-company view
//! gives the numbers of an unhashed run.

use std::collections::BTreeSet;

use chatlake::simulator::{CrmData, SiData, SimConfig};

use crate::support::*;

pub const PKEY: &str = "privacy-key-0123456789abcdef";
const CRM_KEY: &str = "crm-SECRET-5d21aa";

pub const POLICY: &str = r#"
[privacy]
key = "privacy-key-0123456789abcdef"
email = "hash"
phone = "hash"
name = "drop"
ip = "truncate"
url = "redact"
free_text = "redact"
"#;

pub fn sim_config() -> SimConfig {
    let mut si = SiData::new(d("2025-10-25"), d("2025-11-04"), 6);
    si.malformed_every = 9;
    let mut crm = CrmData::new(d("2025-10-28"), d("2025-11-04"), 3);
    crm.api_key = CRM_KEY.into();
    crm.now = Some(now_after(d("2025-11-06")));
    SimConfig {
        socialintents: si,
        crm,
        ..empty_sim_config()
    }
    .with_crm_contacts_for_visitors(2)
}

pub fn pipeline(sim: &chatlake::simulator::Simulator, privacy: &str) -> String {
    format!(
        r#"name = "p"
timezone = "America/New_York"
start_date = "2025-10-25"
[http]
max_attempts = 8
backoff_base_ms = 5
backoff_max_ms = 100
[sources.socialintents]
base_url = "{si}"
account_id = "acct"
api_token = "{TOKEN}"
streams = ["chats", "missed_chats", "offline_messages", "contacts"]
requests_per_minute = 600000
[sources.crm]
base_url = "{crm}"
api_key = "{CRM_KEY}"
streams = ["companies", "contacts", "conversations"]
requests_per_minute = 600000
{privacy}"#,
        si = sim.base_url("socialintents"),
        crm = sim.base_url("crm"),
    )
}

/// `chatlake run` over the test's dates; (exit code, stdout + stderr).
pub fn run(file: &str, wh: &str, extra: &[&str], key: Option<&str>) -> (i32, String) {
    let args = [
        &[
            "run",
            "--pipeline",
            file,
            "--warehouse",
            wh,
            "--from",
            "2025-10-27",
            "--to",
            "2025-11-04",
        ],
        extra,
    ]
    .concat();
    let mut cmd = chatlake_command(&args);
    cmd.env("RUST_LOG", "debug")
        .env_remove("CHATLAKE_PRIVACY_KEY");
    if let Some(k) = key {
        cmd.env("CHATLAKE_PRIVACY_KEY", k);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

pub fn hmac_hex(value: &str) -> String {
    hmac_sha256_hex(PKEY, value)
}

/// Every string value of every Parquet file under `dir`, decoded.
fn decoded_strings(dir: &std::path::Path) -> Vec<(String, String)> {
    use arrow::array::{Array, AsArray};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let mut out = Vec::new();
    for f in files(dir)
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "parquet"))
    {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            for (field, col) in batch.schema().fields().iter().zip(batch.columns()) {
                let col = arrow::compute::cast(col, &arrow::datatypes::DataType::Utf8)
                    .or_else(|_| {
                        // lists: their items
                        let l = col.as_list::<i32>();
                        Ok::<_, arrow::error::ArrowError>(std::sync::Arc::clone(l.values()))
                    })
                    .unwrap();
                let s = col.as_string::<i32>();
                for i in 0..s.len() {
                    if s.is_valid(i) {
                        out.push((
                            format!("{} {}", f.display(), field.name()),
                            s.value(i).to_string(),
                        ));
                    }
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_keeps_personal_data_out_of_every_file_and_log() {
    let env = env_from(sim_config(), "p.toml", |sim| pipeline(sim, POLICY)).await;
    let plain_dir = env.dir.path().join("plain");
    std::fs::write(plain_dir.with_extension("toml"), pipeline(&env.sim, "")).unwrap();
    let file = env.pipeline_file.to_str().unwrap().to_string();
    let wh = env.dir.path().join("wh");
    let wh_s = wh.to_str().unwrap().to_string();

    // What the simulator serves: every visitor email and phone, the card.
    let served = env.served_chats("2025-10-25", "2025-11-05");
    let crm = env.sim.config().crm;
    let mut plain: BTreeSet<String> = BTreeSet::new();
    for c in &served {
        plain.insert(c.visitor_email.clone());
        plain.insert(c.visitor_email.to_lowercase());
        plain.insert(c.visitor_email.to_uppercase());
        plain.insert(c.visitor_phone.clone());
        plain.insert(
            c.visitor_phone
                .chars()
                .filter(char::is_ascii_digit)
                .collect(),
        );
    }
    for c in crm.contacts() {
        plain.insert(c.email.to_lowercase());
    }
    plain.insert(chatlake::simulator::data::CARD.into());
    plain.insert(chatlake::simulator::data::CARD.replace(' ', ""));
    plain.retain(|v| v.len() >= 7);
    assert!(served
        .iter()
        .any(|c| c.visitor_email.chars().any(|ch| ch.is_ascii_uppercase())));

    // The key from a variable that is not set: exit 2, naming it.
    let from_env = env.dir.path().join("env.toml");
    let policy_env = POLICY.replace(PKEY, "${CHATLAKE_PRIVACY_KEY}");
    std::fs::write(&from_env, pipeline(&env.sim, &policy_env)).unwrap();
    let (code, out) = run(from_env.to_str().unwrap(), &wh_s, &[], None);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("CHATLAKE_PRIVACY_KEY"), "{out}");
    assert!(!wh.join("socialintents").exists(), "nothing written");

    let (code, out) = run(&file, &wh_s, &[], None);
    assert_eq!(code, 0, "{out}");
    for v in &plain {
        assert!(
            !out.contains(v.as_str()),
            "{v} in the run's output at RUST_LOG=debug"
        );
    }
    let values = decoded_strings(&wh);
    assert!(values.len() > 1000, "{}", values.len());
    for (place, value) in &values {
        for v in &plain {
            assert!(!value.contains(v.as_str()), "{v} in {place}: {value}");
        }
    }
    for f in files(&wh) {
        let bytes = std::fs::read(&f).unwrap();
        for v in &plain {
            assert!(
                !bytes.windows(v.len()).any(|w| w == v.as_bytes()),
                "{v} in the bytes of {}",
                f.display()
            );
        }
    }
    // The rejects are there, without what they held.
    let rejects = env.int("SELECT count(*) FROM meta.rejects").await;
    assert!(rejects > 0);
    // Redaction leaves the rest of a message; the order number and date survive.
    let bodies = env
        .rows("SELECT body FROM socialintents.chat_messages WHERE body LIKE '%order #123-456-789%'")
        .await;
    assert!(!bodies.is_empty());
    assert!(
        bodies.iter().all(|b| b[0]
            == "Please charge my card [card] for order #123-456-789 of 2025-10-27, $49.99."),
        "{bodies:?}"
    );
    let reach = env
        .rows("SELECT body FROM socialintents.chat_messages WHERE body LIKE 'Hi, I''m %Reach me%'")
        .await;
    assert!(!reach.is_empty());
    assert!(
        reach
            .iter()
            .all(|b| b[0].ends_with("Reach me at [email] or [phone].")),
        "{reach:?}"
    );

    // Hashes: HMAC-SHA256 of the normalized value, equal across tables.
    let c = env
        .served_chats("2025-10-27", "2025-11-04")
        .into_iter()
        .find(|c| !c.malformed && c.visitor_email.chars().any(|ch| ch.is_ascii_uppercase()))
        .unwrap();
    let h = hmac_hex(&c.visitor_email.trim().to_lowercase());
    let got = env
        .rows(&format!("SELECT DISTINCT visitor_email, visitor_phone, visitor_name FROM socialintents.chats WHERE chat_id = '{}'", c.id))
        .await;
    let phone = {
        let digits: String = c
            .visitor_phone
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        if c.visitor_phone.starts_with('+') {
            format!("+{digits}")
        } else {
            digits
        }
    };
    assert_eq!(
        got,
        vec![vec![h.clone(), hmac_hex(&phone), "NULL".to_string()]]
    );
    let linked = env
        .int(&format!(
            "SELECT count(*) FROM crm.contacts WHERE email = '{h}'"
        ))
        .await;
    let in_crm = crm
        .linked_emails
        .iter()
        .any(|e| e.eq_ignore_ascii_case(&c.visitor_email));
    assert_eq!(
        linked > 0,
        in_crm,
        "the chat's hash is the CRM contact's hash"
    );
    // IPs truncated to the /24.
    assert_eq!(
        env.rows("SELECT DISTINCT ip FROM socialintents.chats")
            .await,
        vec![vec!["73.184.238.0".to_string()]]
    );

    // reporting.chats_by_company equals an unhashed run's.
    let plain_wh = env.dir.path().join("plain-wh");
    let (code, out) = run(
        plain_dir.with_extension("toml").to_str().unwrap(),
        plain_wh.to_str().unwrap(),
        &[],
        None,
    );
    assert_eq!(code, 0, "{out}");
    let q = "SELECT CAST(dt AS VARCHAR), company_id, chats, missed_chats FROM reporting.chats_by_company ORDER BY 1, 2";
    let hashed = env.rows(q).await;
    let unhashed = batch_rows(
        &chatlake::query::run(
            &chatlake::query::session(
                &chatlake::sink::Warehouse::open(plain_wh.to_str().unwrap()).unwrap(),
            )
            .await
            .unwrap(),
            q,
        )
        .await
        .unwrap(),
    );
    assert!(hashed.len() > 5, "{hashed:?}");
    // The search above finds plain values where they are: the unhashed
    // warehouse holds emails, phones and the card.
    let unprotected = decoded_strings(&plain_wh);
    for probe in [
        c.visitor_email.clone(),
        c.visitor_phone.clone(),
        chatlake::simulator::data::CARD.to_string(),
    ] {
        assert!(
            unprotected.iter().any(|(_, v)| v.contains(&probe)),
            "{probe} not found in the unhashed warehouse"
        );
    }
    assert_eq!(hashed, unhashed);

    // Another key (from the variable) is refused; --full-refresh takes it.
    let env_file = from_env.to_str().unwrap();
    let (code, out) = run(env_file, &wh_s, &[], Some("another-key-0123456789"));
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("not the key this warehouse's hashes were made with"),
        "{out}"
    );
    assert!(
        !out.contains("another-key-0123456789") && !out.contains(PKEY),
        "{out}"
    );
    let (code, out) = run(
        env_file,
        &wh_s,
        &["--full-refresh"],
        Some("another-key-0123456789"),
    );
    assert_eq!(code, 0, "{out}");
}

/// Retention: a run deletes the partitions older than each table's
/// retention (here 5 days, chat messages 3) and the old dated reports,
/// records each in meta.deletions with its rows, and leaves newer
/// partitions byte for byte; `run --dry-run` lists them and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_partitions_and_nothing_else() {
    let config = SimConfig {
        socialintents: SiData::new(d("2025-10-25"), d("2025-11-05"), 4),
        ..empty_sim_config()
    };
    let keep = "[privacy]\nemail = \"keep\"\nphone = \"keep\"\n";
    // Social Intents chats only.
    let si = |sim: &chatlake::simulator::Simulator, privacy: &str| {
        let text = pipeline(sim, privacy).replace(
            r#"streams = ["chats", "missed_chats", "offline_messages", "contacts"]"#,
            r#"streams = ["chats", "missed_chats"]"#,
        );
        let crm = text.find("[sources.crm]").unwrap();
        let end = text[crm..].find("requests_per_minute = 600000\n").unwrap() + crm;
        format!(
            "{}{}",
            &text[..crm],
            &text[end + "requests_per_minute = 600000\n".len()..]
        )
    };
    // An alert sent to a webhook nobody answers: each run writes a notice
    // to meta.alerts and a failed delivery to meta.deliveries.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let notices = format!(
        "[channels.hook]\ntype = \"webhook\"\nurl = \"http://{closed}/hook\"\n\
         [[alerts]]\nname = \"always\"\nsql = \"SELECT 'x' AS k\"\nnotify = [\"hook\"]\n"
    );
    let env = env_from(config, "r.toml", |sim| si(sim, keep) + &notices).await;
    let report = env.run(Some("2025-10-27"), "2025-11-04").await;
    assert_eq!(report.failures().count(), 0, "{:?}", report.streams);
    let wh = env.dir.path().join("wh");
    // Those notices, as if written on 2025-10-01.
    for t in ["alerts", "deliveries"] {
        let dir = wh.join(format!("meta/{t}"));
        let written = files(&dir);
        assert!(!written.is_empty(), "no meta.{t} written");
        std::fs::create_dir_all(dir.join("dt=2025-10-01")).unwrap();
        for f in written {
            std::fs::copy(&f, dir.join("dt=2025-10-01").join(f.file_name().unwrap())).unwrap();
        }
    }
    let old_notices = env
        .rows("SELECT (SELECT count(*) FROM meta.alerts WHERE dt = DATE '2025-10-01') AS a, (SELECT count(*) FROM meta.deliveries WHERE dt = DATE '2025-10-01') AS d")
        .await;
    assert!(old_notices[0].iter().all(|n| n != "0"), "{old_notices:?}");
    // A dated report copy from long ago.
    std::fs::create_dir_all(wh.join("_reports")).unwrap();
    std::fs::write(wh.join("_reports/2025-10-01.html"), "<html></html>").unwrap();
    let before: std::collections::BTreeMap<_, _> = files(&wh)
        .into_iter()
        .map(|f| (f.clone(), std::fs::read(&f).unwrap()))
        .collect();
    let retention = format!(
        "{keep}retention_days = 5\n[privacy.retention]\n\"socialintents.chat_messages\" = 3\n[report]\npath = \"_reports/latest.html\"\n"
    );
    let env = env.with_pipeline(|text| text.replace(keep, &retention));
    let file = env.pipeline_file.to_str().unwrap().to_string();
    let wh_s = wh.to_str().unwrap().to_string();

    // The dry run (today is the wall clock: everything is past 5 days).
    let (code, out, err) = chatlake(&[
        "run",
        "--pipeline",
        &file,
        "--warehouse",
        &wh_s,
        "--dry-run",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("retention: would delete socialintents.chats dt=2025-10-27 (5 days kept)"),
        "{out}"
    );
    assert!(
        out.contains(
            "retention: would delete socialintents.chat_messages dt=2025-11-04 (3 days kept)"
        ),
        "{out}"
    );
    assert!(
        out.contains("retention: would delete _reports dt=2025-10-01"),
        "{out}"
    );
    for t in ["meta.alerts", "meta.deliveries"] {
        assert!(
            out.contains(&format!(
                "retention: would delete {t} dt=2025-10-01 (5 days kept)"
            )),
            "{out}"
        );
    }
    let after_dry: std::collections::BTreeMap<_, _> = files(&wh)
        .into_iter()
        .map(|f| (f.clone(), std::fs::read(&f).unwrap()))
        .collect();
    assert!(after_dry == before, "the dry run changed the warehouse");

    // The run of 2025-11-05, today being 2025-11-06.
    let report = env.run(Some("2025-11-05"), "2025-11-05").await;
    assert_eq!(report.failures().count(), 0, "{:?}", report.streams);
    let today = d("2025-11-06");
    let kept = |days: i64| today - chrono::Duration::days(days - 1);
    let tz = env.tz();
    let served = env.served_chats("2025-10-27", "2025-11-04");
    let mut expected: std::collections::BTreeMap<(String, chrono::NaiveDate), i64> =
        Default::default();
    for c in served.iter().filter(|c| !c.malformed) {
        let dt = chatlake::simulator::clock::local_date(c.start, tz);
        if dt < kept(5) {
            *expected
                .entry(("socialintents.chats".into(), dt))
                .or_default() += 1;
        }
        if dt < kept(3) {
            *expected
                .entry(("socialintents.chat_messages".into(), dt))
                .or_default() += c.messages.len() as i64;
        }
    }
    let recorded = env
        .rows("SELECT table_name, CAST(partition_dt AS VARCHAR), rows FROM meta.deletions WHERE table_name LIKE 'socialintents.%' ORDER BY 1, 2")
        .await;
    let want: Vec<Vec<String>> = expected
        .iter()
        .map(|((t, dt), n)| vec![t.clone(), dt.to_string(), n.to_string()])
        .collect();
    // Today 11-06: chats keep 11-02 on (10-27..11-01 go), messages 11-04 on.
    assert_eq!(want.len(), 6 + 8, "{want:?}");
    assert_eq!(recorded, want);
    assert_eq!(
        env.rows("SELECT CAST(partition_dt AS VARCHAR), reason FROM meta.deletions WHERE table_name = '_reports'").await,
        vec![vec!["2025-10-01".to_string(), "retention (5 days)".to_string()]]
    );
    assert!(!wh.join("_reports/2025-10-01.html").exists());
    // The old notices are gone too, and recorded with their rows.
    assert_eq!(
        env.rows("SELECT CAST(count(*) AS VARCHAR) FROM meta.deletions WHERE table_name = 'meta.alerts' AND partition_dt = DATE '2025-10-01'").await[0][0],
        "1"
    );
    let deleted = env
        .rows("SELECT (SELECT sum(rows) FROM meta.deletions WHERE table_name = 'meta.alerts') AS a, (SELECT sum(rows) FROM meta.deletions WHERE table_name = 'meta.deliveries') AS d")
        .await;
    assert_eq!(deleted, old_notices);
    for t in ["alerts", "deliveries"] {
        assert!(
            files(&wh.join(format!("meta/{t}/dt=2025-10-01"))).is_empty(),
            "meta.{t} dt=2025-10-01 is past its retention"
        );
    }
    // What is older is gone; what is newer and was not read again is the same file.
    let oldest_chat = env
        .rows("SELECT CAST(min(dt) AS VARCHAR) FROM socialintents.chats")
        .await;
    assert_eq!(oldest_chat, vec![vec![kept(5).to_string()]]);
    let oldest_message = env
        .rows("SELECT CAST(min(dt) AS VARCHAR) FROM socialintents.chat_messages")
        .await;
    assert_eq!(oldest_message, vec![vec![kept(3).to_string()]]);
    for (f, bytes) in &before {
        let rel = f.strip_prefix(&wh).unwrap().to_string_lossy().into_owned();
        let Some(dt) = rel
            .split("dt=")
            .nth(1)
            .and_then(|s| s.get(..10))
            .and_then(|s| s.parse::<chrono::NaiveDate>().ok())
        else {
            continue;
        };
        let days = if rel.starts_with("socialintents/chat_messages/") {
            3
        } else if rel.starts_with("socialintents/chats/") {
            5
        } else {
            continue;
        };
        if dt < kept(days) {
            assert!(!f.exists(), "{rel} is past its retention");
        } else if dt < d("2025-11-03") {
            // Outside the run's window and its lookback: untouched.
            assert_eq!(&std::fs::read(f).unwrap(), bytes, "{rel} changed");
        }
    }
}

/// Issue 20: the columns that find one person carry Parquet Bloom filters,
/// which answer for the emails a partition holds and (almost always) not
/// for others; other columns have none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identifier_columns_carry_bloom_filters() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::file::serialized_reader::ReadOptionsBuilder;
    let env = env_with(data(6), 7).await;
    env.run(Some("2025-10-27"), "2025-10-28").await;
    let file = env
        .dir
        .path()
        .join("wh/socialintents/chats/dt=2025-10-27/data.parquet");
    let options = ReadOptionsBuilder::new()
        .with_reader_properties(
            parquet::file::properties::ReaderProperties::builder()
                .set_read_bloom_filter(true)
                .build(),
        )
        .build();
    let reader =
        SerializedFileReader::new_with_options(std::fs::File::open(&file).unwrap(), options)
            .unwrap();
    let rg = reader.get_row_group(0).unwrap();
    let schema = rg.metadata().schema_descr();
    let index = |name: &str| {
        (0..schema.num_columns())
            .find(|i| schema.column(*i).name() == name)
            .unwrap()
    };
    let emails: Vec<String> = env
        .rows("SELECT visitor_email FROM socialintents.chats WHERE dt = DATE '2025-10-27'")
        .await
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert!(!emails.is_empty());
    let filter = rg
        .get_column_bloom_filter(index("visitor_email"))
        .expect("visitor_email has a Bloom filter");
    for e in &emails {
        assert!(filter.check(&e.as_str()), "{e}");
    }
    let absent = (0..200)
        .filter(|i| filter.check(&format!("nobody.{i}@example.net").as_str()))
        .count();
    assert!(absent < 10, "{absent} of 200 absent emails pass the filter");
    for column in ["visitor_phone", "visitor_id"] {
        assert!(
            rg.get_column_bloom_filter(index(column)).is_some(),
            "{column}"
        );
    }
    assert!(rg.get_column_bloom_filter(index("chat_type")).is_none());
    // Folded to the values written, not sized for a million.
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(size < 64 * 1024, "{size} bytes for a day of a few chats");
}

/// An API's error body that quotes a person (an email, a phone) reaches no
/// log line and no meta.runs error in plain text under a policy that
/// redacts free text; without one it is shown as it came.
#[test]
fn api_error_bodies_are_redacted_under_the_policy() {
    use crate::hostile::{json, si_empty, si_pipeline, Hostile};
    let server = Hostile::start(|path, _, _| {
        if path.contains("/chats") {
            json(
                500,
                r#"{"detail":"no chat for Ann.Lee@example.org, call +1 (555) 010-7788"}"#,
            )
        } else {
            si_empty(path)
        }
    });
    for (privacy, plain) in [
        ("[privacy]\nemail = \"keep\"\nphone = \"keep\"\n", false),
        ("", true),
    ] {
        let (dir, file, wh) = si_pipeline(&server.url, r#"["chats"]"#, "");
        let text = std::fs::read_to_string(&file).unwrap();
        let file = dir.path().join("p2.toml");
        std::fs::write(&file, format!("{text}\n{privacy}")).unwrap();
        let (code, out, err) = chatlake_env(
            &[
                "run",
                "--pipeline",
                file.to_str().unwrap(),
                "--warehouse",
                &wh,
                "--from",
                "2025-10-27",
                "--to",
                "2025-10-27",
            ],
            &[("RUST_LOG", "debug")],
        );
        assert_eq!(code, 1, "{out}{err}");
        let (_, runs, _) = query_csv(&wh, "SELECT error FROM meta.runs");
        for (what, text) in [("output", format!("{out}{err}")), ("meta.runs", runs)] {
            for probe in ["Ann.Lee@example.org", "+1 (555) 010-7788"] {
                assert_eq!(
                    text.contains(probe),
                    plain,
                    "{probe} in {what} (policy: {privacy:?}): {text}"
                );
            }
            if !plain {
                assert!(
                    text.contains("no chat for [email], call [phone]"),
                    "{what}: {text}"
                );
            }
        }
    }
}

/// `chatlake privacy apply`: a warehouse written without a policy, then
/// rewritten under POLICY, holds exactly what a run under POLICY writes
/// (every personal table compared, run columns aside); its dry run changes
/// no byte, a run killed after its second file is finished by running it
/// again, and a second apply rewrites nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privacy_apply_rewrites_what_was_written_before_the_policy() {
    let env = env_from(sim_config(), "plain.toml", |sim| pipeline(sim, "")).await;
    let dir = env.dir.path();
    let (plain, direct) = (dir.join("wh"), dir.join("direct"));
    let policy_file = dir.join("policy.toml");
    std::fs::write(&policy_file, pipeline(&env.sim, POLICY)).unwrap();
    let policy_file = policy_file.to_str().unwrap();
    let (code, out) = run(
        env.pipeline_file.to_str().unwrap(),
        plain.to_str().unwrap(),
        &[],
        None,
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(policy_file, direct.to_str().unwrap(), &[], None);
    assert_eq!(code, 0, "{out}");
    let apply = |extra: &[&str], env_vars: &[(&str, &str)]| {
        let args = [
            &[
                "privacy",
                "apply",
                "--pipeline",
                policy_file,
                "--warehouse",
                plain.to_str().unwrap(),
            ][..],
            extra,
        ]
        .concat();
        chatlake_env(&args, env_vars)
    };
    let snapshot = || -> Vec<(std::path::PathBuf, Vec<u8>)> {
        files(&plain)
            .into_iter()
            .map(|f| (f.clone(), std::fs::read(&f).unwrap()))
            .collect()
    };

    let before = snapshot();
    let (code, out, err) = apply(&["--dry-run"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("files that would be rewritten"), "{out}");
    assert!(snapshot() == before, "the dry run changed the warehouse");

    let (code, out, err) = apply(&[], &[("CHATLAKE_FAILPOINT", "privacy-apply@file-2")]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("failpoint privacy-apply@file-2"), "{err}");
    let (code, out, err) = apply(&[], &[]);
    assert_eq!(code, 0, "{out}{err}");
    for v in [PKEY, "4111 1111 1111 1111"] {
        assert!(!out.contains(v) && !err.contains(v), "{v} printed");
    }

    // Equal to what a run under the policy writes.
    let read = |wh: &std::path::Path, q: &str| {
        let wh = chatlake::sink::Warehouse::open(wh.to_str().unwrap()).unwrap();
        let q = q.to_string();
        async move {
            let ctx = chatlake::query::session(&wh).await.unwrap();
            let mut rows = batch_rows(&chatlake::query::run(&ctx, &q).await.unwrap());
            rows.sort();
            rows
        }
    };
    for table in [
        "socialintents.chats",
        "socialintents.chat_messages",
        "socialintents.offline_messages",
        "socialintents.contacts",
        "crm.companies",
        "crm.contacts",
        "crm.conversations",
    ] {
        let q = format!("SELECT * EXCLUDE (_extracted_at, _run_id) FROM {table}");
        let (a, b) = (read(&plain, &q).await, read(&direct, &q).await);
        assert!(!a.is_empty(), "{table} is empty");
        assert!(
            a == b,
            "{table}: applied and direct differ:\n{:?}\n{:?}",
            a.iter().find(|r| !b.contains(r)),
            b.iter().find(|r| !a.contains(r))
        );
    }
    let q = "SELECT table_name, reason, raw_json FROM meta.rejects";
    assert_eq!(read(&plain, q).await, read(&direct, q).await);
    // No plain email, phone or card is left in any file's bytes.
    let served = env.served_chats("2025-10-27", "2025-11-04");
    for f in files(&plain) {
        let bytes = std::fs::read(&f).unwrap();
        for c in served.iter().take(20) {
            for v in [&c.visitor_email, &c.visitor_phone] {
                assert!(
                    !bytes.windows(v.len()).any(|w| w == v.as_bytes()),
                    "{v} in {}",
                    f.display()
                );
            }
        }
    }

    // Again: nothing to do, not a byte changed.
    let after = snapshot();
    let (code, out, err) = apply(&[], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("every file already follows the policy"),
        "{out}"
    );
    assert!(snapshot() == after, "a second apply changed the warehouse");
}

/// Retention of the unpartitioned CRM contacts: a contact not updated
/// within the retention (local days, in the pipeline's timezone) is
/// dropped, one edited since stays; recorded in meta.deletions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_crm_contacts_not_updated_within_it() {
    use chrono::TimeZone;
    let mut config = sim_config();
    // Two contacts edited on 2025-11-04 (UTC), one a minute before the
    // cutoff: the local midnight of 2025-11-02 in New York (EDT, 04:00Z).
    let cutoff = chrono_tz::America::New_York
        .from_local_datetime(&d("2025-11-02").and_hms_opt(0, 0, 0).unwrap())
        .single()
        .unwrap()
        .with_timezone(&chrono::Utc);
    config
        .crm
        .edits
        .insert("ct-000-000".into(), now_after(d("2025-11-03")));
    config
        .crm
        .edits
        .insert("ct-001-001".into(), cutoff + chrono::Duration::seconds(1));
    config
        .crm
        .edits
        .insert("ct-001-002".into(), cutoff - chrono::Duration::minutes(1));
    let keep = "[privacy]\nemail = \"keep\"\nphone = \"keep\"\nretention_days = 5\n";
    let env = env_from(config, "c.toml", |sim| pipeline(sim, keep)).await;
    // Today is 2025-11-06: the retention keeps 2025-11-02 on.
    let report = env.run(Some("2025-11-05"), "2025-11-05").await;
    assert_eq!(report.failures().count(), 0, "{:?}", report.streams);
    let contacts = env.sim.config().crm.contacts();
    let kept: Vec<Vec<String>> = contacts
        .iter()
        .filter(|c| c.updated >= cutoff)
        .map(|c| vec![c.id.clone()])
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(
        env.rows("SELECT contact_id FROM crm.contacts ORDER BY 1")
            .await,
        kept
    );
    assert_eq!(
        env.rows("SELECT CAST(rows AS VARCHAR), reason FROM meta.deletions WHERE table_name = 'crm.contacts'")
            .await,
        vec![vec![
            (contacts.len() - 2).to_string(),
            "retention (5 days): rows with updated_at before 2025-11-02".to_string()
        ]]
    );
}
