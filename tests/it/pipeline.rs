//! The pipeline against the simulator: exact rows, idempotent re-runs and
//! overlaps, newest versions, DST days, rejects, watermarks, a second reader.

use arrow::array::AsArray;
use arrow::datatypes::TimestampMicrosecondType;
use chatlake::simulator::clock::{local_date, local_range};
use chatlake::state::StateStore;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_equal_what_the_simulator_served() {
    let env = env_with(data(30), 5).await;
    let report = env.run(Some("2025-10-27"), "2025-11-08").await;
    assert_eq!(report.failures().count(), 0, "{:?}", report.streams);
    let chats = env.assert_exact("2025-10-27", "2025-11-08").await;
    assert!(chats > 13 * 30, "{chats}");

    // Missed chats come from both /chats and /missedchats: counted once.
    let served = env.served_chats("2025-10-27", "2025-11-08");
    let missed = served.iter().filter(|c| c.chat_type == "Missed").count() as i64;
    assert!(missed > 0);
    assert_eq!(
        env.int("SELECT COUNT(*) FROM socialintents.chats WHERE chat_type = 'Missed'")
            .await,
        missed
    );
    let stream = &report.streams[0];
    // The UTC-widened requests also return chats of neighbouring local days.
    assert!(
        stream.records as usize >= served.len() + missed as usize,
        "records = /chats + /missedchats"
    );

    // Offline messages, contacts and widgets, against the simulator too.
    let (a, b) = local_range(d("2025-10-27"), d("2025-11-08"), env.tz());
    let sim = env.sim.config().socialintents;
    assert_eq!(
        env.int("SELECT COUNT(*) FROM socialintents.offline_messages")
            .await as usize,
        sim.offline_in(a, b).len()
    );
    assert_eq!(
        env.int("SELECT COUNT(*) FROM socialintents.contacts").await as usize,
        sim.contacts_in(a, b).len()
    );
    assert_eq!(
        env.int("SELECT COUNT(*) FROM socialintents.widgets").await,
        3
    );

    // meta.runs has one row per stream with the same numbers.
    let runs = env
        .rows("SELECT stream, rows_written, status FROM meta.runs ORDER BY stream")
        .await;
    assert_eq!(runs.len(), report.streams.len());
    for (row, s) in runs.iter().zip({
        let mut v = report.streams.clone();
        v.sort_by(|a, b| a.stream.cmp(&b.stream));
        v
    }) {
        assert_eq!(
            (
                row[0].as_str(),
                row[1].parse::<u64>().unwrap(),
                row[2].as_str()
            ),
            (s.stream.as_str(), s.rows_written, "success")
        );
    }

    // Unknown fields are kept in _extra.
    let extra = env
        .rows("SELECT _extra FROM socialintents.chats LIMIT 1")
        .await;
    assert!(
        extra[0][0].contains("visitorCustom1") && extra[0][0].contains("accountId"),
        "{:?}",
        extra
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reruns_and_overlapping_windows_keep_one_newest_row_per_key() {
    let env = env_with(data(20), 4).await;
    env.run(Some("2025-10-27"), "2025-11-05").await;
    env.run(Some("2025-10-27"), "2025-11-05").await; // same window again
    env.run(Some("2025-10-30"), "2025-11-07").await; // overlapping, different window edges
    env.assert_exact("2025-10-27", "2025-11-07").await;

    // The source edits its records; the lookback run picks up the new version.
    env.sim.update(|c| c.socialintents.revision = 5);
    env.run(Some("2025-11-01"), "2025-11-07").await;
    let n = env.assert_exact("2025-11-01", "2025-11-07").await; // compares visits (which carry the revision) too
    assert!(n > 0);
    let files = files(env.dir.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("socialintents/chats/"))
        .count();
    assert_eq!(files, 12, "one file per partition, no leftovers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dst_days_and_late_evening_chats_get_the_right_instant_and_dt() {
    let env = env_with(data(10), 7).await;
    env.run(Some("2025-10-31"), "2025-11-03").await;
    env.assert_exact("2025-10-31", "2025-11-03").await; // every started_at and dt equals the simulator's

    // The two chats at local 01:30 on the fall-back night: one hour apart, both dt 2025-11-02.
    let rows = env
        .rows("SELECT CAST(started_at AS VARCHAR) AS s, CAST(dt AS VARCHAR) AS d FROM socialintents.chats WHERE chat_id IN ('s202511021', 's202511022') ORDER BY started_at")
        .await;
    assert_eq!(
        rows,
        vec![
            vec!["2025-11-02T05:30:00Z".to_string(), "2025-11-02".to_string()],
            vec!["2025-11-02T06:30:00Z".to_string(), "2025-11-02".to_string()],
        ]
    );
    // 23:50 local on Nov 1 is 03:50 UTC on Nov 2; its dt is Nov 1, and its
    // messages (some after local midnight) live with it.
    let late = env.rows("SELECT CAST(started_at AS VARCHAR) AS s, CAST(dt AS VARCHAR) AS d FROM socialintents.chats WHERE chat_id = 's202511010'").await;
    assert_eq!(
        late,
        vec![vec![
            "2025-11-02T03:50:00Z".to_string(),
            "2025-11-01".to_string()
        ]]
    );
    let msg_dts = env.rows("SELECT DISTINCT CAST(dt AS VARCHAR) AS d FROM socialintents.chat_messages WHERE chat_id = 's202511010'").await;
    assert_eq!(msg_dts, vec![vec!["2025-11-01".to_string()]]);

    // The 25-hour day has the chats of all 25 hours.
    let served = env.served_chats("2025-11-02", "2025-11-02").len() as i64;
    assert_eq!(
        env.int("SELECT COUNT(*) FROM socialintents.chats WHERE dt = DATE '2025-11-02'")
            .await,
        served
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spring_forward_day_has_23_hours_of_chats() {
    let mut data = SiData::new(d("2026-03-06"), d("2026-03-10"), 24);
    data.tz = chrono_tz::America::New_York;
    let env = env_with(data, 7).await;
    env.run(Some("2026-03-07"), "2026-03-09").await;
    env.assert_exact("2026-03-07", "2026-03-09").await;
    let (a, b) = local_range(d("2026-03-08"), d("2026-03-08"), env.tz());
    assert_eq!((b - a).num_hours(), 23);
    let served = env.served_chats("2026-03-08", "2026-03-08");
    assert!(served
        .iter()
        .all(|c| local_date(c.start, env.tz()) == d("2026-03-08")));
    assert_eq!(
        env.int("SELECT COUNT(*) FROM socialintents.chats WHERE dt = DATE '2026-03-08'")
            .await as usize,
        served.len()
    );
}

use chatlake::simulator::SiData;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_records_are_quarantined_and_the_rest_land() {
    let mut data = data(30);
    data.malformed_every = 40;
    let env = env_with(data, 7).await;
    let report = env.run(Some("2025-10-27"), "2025-11-02").await;
    assert_eq!(report.failures().count(), 0, "rejects do not fail the run");
    let served = env.served_chats("2025-10-27", "2025-11-02");
    let bad: Vec<_> = served.iter().filter(|c| c.malformed).collect();
    assert!(!bad.is_empty());
    // A missed malformed chat is served by /chats and /missedchats: two rejects.
    let expected_rejects = bad.len() + bad.iter().filter(|c| c.chat_type == "Missed").count();
    assert_eq!(report.streams[0].rejects as usize, expected_rejects);
    env.assert_exact("2025-10-27", "2025-11-02").await; // every good chat landed
    let rejects = env
        .rows("SELECT table_name, reason, raw_json, stream FROM meta.rejects")
        .await;
    assert_eq!(rejects.len(), expected_rejects);
    for b in &bad {
        let r = rejects
            .iter()
            .find(|r| r[2].contains(&b.id))
            .unwrap_or_else(|| panic!("no reject for {}", b.id));
        assert_eq!(r[0], "socialintents.chats");
        assert!(r[1].contains("startDate"), "{}", r[1]);
        assert_eq!(r[3], "socialintents.chats");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watermark_follows_committed_windows_and_lookback() {
    let env = env_with(data(5), 3).await;
    env.run(None, "2025-11-04").await;
    let states = StateStore::new(&env.wh, "test").list().await.unwrap();
    let chats = states
        .iter()
        .find(|s| s.stream == "socialintents.chats")
        .unwrap();
    assert_eq!(chats.watermark, Some(d("2025-11-04")));
    assert!(states.iter().any(|s| s.stream == "socialintents.widgets"));
    // The next default run starts at watermark - lookback_days (2).
    let report = env.run(None, "2025-11-06").await;
    assert_eq!(report.streams[0].window.unwrap().from, d("2025-11-02"));
    env.assert_exact("2025-10-27", "2025-11-06").await;
    // A window that does not join the watermark never moves it over the gap.
    env.run(Some("2025-11-09"), "2025-11-10").await;
    let after = StateStore::new(&env.wh, "test")
        .load("socialintents.chats")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.state.watermark, Some(d("2025-11-06")));
}

/// Windows are read `max_concurrency` at once (the simulator counts the
/// requests in flight) and committed in order: the rows are exact and the
/// watermark reaches the last window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_are_read_a_few_at_once_and_committed_in_order() {
    let env = env_with_extra(data(10), 1, "max_concurrency = 3").await;
    env.sim.set_faults(chatlake::simulator::Faults {
        latency_ms: 30,
        ..Default::default()
    });
    let report = env.run(None, "2025-11-08").await;
    assert_eq!(report.failures().count(), 0, "{:?}", report.streams);
    env.assert_exact("2025-10-27", "2025-11-08").await;
    assert_eq!(env.sim.most_in_flight("socialintents"), 3);
    for s in StateStore::new(&env.wh, "test").list().await.unwrap() {
        if ["chats", "missed_chats", "offline_messages"]
            .iter()
            .any(|n| s.stream.ends_with(n))
        {
            assert_eq!(s.watermark, Some(d("2025-11-08")), "{}", s.stream);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_files_read_as_hive_partitions_by_the_parquet_crate() {
    let env = env_with(data(120), 7).await;
    env.run(Some("2025-10-27"), "2025-11-04").await;
    let tz = env.tz();
    let chat_dir = env.dir.path().join("wh/socialintents/chats");
    let mut total = 0usize;
    let mut codecs = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&chat_dir).unwrap() {
        let part = entry.unwrap().path();
        let name = part.file_name().unwrap().to_string_lossy().to_string();
        let dt = d(name.strip_prefix("dt=").expect("hive partition directory"));
        let files: Vec<_> = std::fs::read_dir(&part)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{name}: {files:?}");
        let file = std::fs::File::open(&files[0]).unwrap();
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let meta = builder.metadata().clone();
        assert!(
            builder.schema().field_with_name("dt").is_err(),
            "dt lives in the path"
        );
        let col = meta
            .row_group(0)
            .columns()
            .iter()
            .find(|c| c.column_path().string() == "started_at")
            .unwrap();
        assert!(col.statistics().is_some(), "column statistics");
        codecs_follow_what_zstd_saves(&files[0], &mut codecs);
        let mut prev = i64::MIN;
        for batch in builder.build().unwrap() {
            let batch = batch.unwrap();
            let started = batch
                .column_by_name("started_at")
                .unwrap()
                .as_primitive::<TimestampMicrosecondType>();
            for i in 0..started.len() {
                let t = chrono::DateTime::from_timestamp_micros(started.value(i)).unwrap();
                assert_eq!(local_date(t, tz), dt, "row in the wrong partition");
                assert!(started.value(i) >= prev, "rows sorted by time");
                prev = started.value(i);
            }
            total += batch.num_rows();
        }
    }
    assert_eq!(total, env.served_chats("2025-10-27", "2025-11-04").len());
    assert_eq!(
        codecs,
        ["UNCOMPRESSED", "ZSTD"].into(),
        "both kinds of column chunk in these files"
    );
}

/// Integer and time columns of `file` are delta-packed without a
/// dictionary, text columns dictionary-encoded; and each column chunk is zstd
/// exactly where zstd saves at least 4 KiB and an eighth of it: the file's
/// rows are encoded again here with zstd on every column (same encodings),
/// and a column is expected uncompressed where that chunk saved less.
fn codecs_follow_what_zstd_saves(
    file: &std::path::Path,
    seen: &mut std::collections::BTreeSet<&'static str>,
) {
    use arrow::datatypes::DataType;
    use parquet::basic::{Compression, Encoding, ZstdLevel};
    use parquet::file::properties::{EnabledStatistics, WriterProperties};
    let reader =
        ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(file).unwrap()).unwrap();
    let written = reader.metadata().clone();
    let schema = reader.schema().clone();
    let batches: Vec<_> = reader.build().unwrap().map(|b| b.unwrap()).collect();
    let rows = arrow::compute::concat_batches(&schema, &batches).unwrap();
    let is_number = |t: &DataType| {
        matches!(
            t,
            DataType::Int64 | DataType::Timestamp(..) | DataType::Date32
        )
    };
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap()))
        .set_statistics_enabled(EnabledStatistics::Page);
    for f in schema.fields().iter().filter(|f| is_number(f.data_type())) {
        props = props
            .set_column_dictionary_enabled(f.name().as_str().into(), false)
            .set_column_encoding(f.name().as_str().into(), Encoding::DELTA_BINARY_PACKED);
    }
    let mut all_zstd = Vec::new();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(&mut all_zstd, schema.clone(), Some(props.build()))
            .unwrap();
    w.write(&rows).unwrap();
    let reference = w.close().unwrap();
    assert_eq!(written.num_row_groups(), 1);
    for (got, zstd) in written
        .row_group(0)
        .columns()
        .iter()
        .zip(reference.row_group(0).columns())
    {
        let column = got.column_path().string();
        let field = schema.field_with_name(&column).unwrap();
        let encodings: Vec<Encoding> = got.encodings().collect();
        if is_number(field.data_type()) {
            assert!(
                encodings.contains(&Encoding::DELTA_BINARY_PACKED)
                    && !encodings.contains(&Encoding::RLE_DICTIONARY)
                    && got.dictionary_page_offset().is_none(),
                "{}, column {column}: {encodings:?}",
                file.display()
            );
        } else if field.data_type() == &DataType::Utf8 {
            assert!(
                encodings.contains(&Encoding::RLE_DICTIONARY),
                "{}, column {column}: {encodings:?}",
                file.display()
            );
        }
        let saved = zstd.uncompressed_size() - zstd.compressed_size();
        let expected = if saved >= 4096 && saved * 8 >= zstd.uncompressed_size() {
            "ZSTD"
        } else {
            "UNCOMPRESSED"
        };
        // (a file does not record the zstd level)
        let codec = match got.compression() {
            Compression::ZSTD(_) => "ZSTD",
            Compression::UNCOMPRESSED => "UNCOMPRESSED",
            other => panic!("{}: codec {other}", file.display()),
        };
        assert_eq!(
            codec,
            expected,
            "{}, column {column}: zstd {} of {} bytes",
            file.display(),
            zstd.compressed_size(),
            zstd.uncompressed_size()
        );
        seen.insert(codec);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_warehouse() {
    let env = env_with(data(5), 7).await;
    env.run(Some("2025-10-27"), "2025-11-02").await;
    for f in files(env.dir.path()) {
        if f == env.pipeline_file {
            continue;
        }
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "token found in {}",
            f.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_is_read_only() {
    let env = env_with(data(3), 7).await;
    env.run(Some("2025-10-27"), "2025-10-28").await;
    let ctx = chatlake::query::session(&env.wh).await.unwrap();
    for sql in [
        "COPY (SELECT 1) TO '/tmp/chatlake-should-not-exist.csv'",
        "CREATE TABLE t AS SELECT 1",
        "INSERT INTO socialintents.widgets SELECT * FROM socialintents.widgets",
        "DROP VIEW reporting.chats",
        "SET datafusion.execution.batch_size = 1",
    ] {
        assert!(
            chatlake::query::run(&ctx, sql).await.is_err(),
            "{sql} was allowed"
        );
    }
    assert!(!std::path::Path::new("/tmp/chatlake-should-not-exist.csv").exists());
}

/// Issue 9, defect 8: readers take only the files chatlake writes. A stray
/// copy, a hidden file, macOS `._` metadata and a `dt=garbage/` directory
/// beside the real partitions change no count and break no query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_files_in_the_warehouse_are_not_read() {
    let env = env_with(data(6), 7).await;
    let report = env.run(Some("2025-10-27"), "2025-11-03").await;
    assert!(report.failures().next().is_none());
    let wh = env.dir.path().join("wh");
    let chats = wh.join("socialintents/chats");
    let day = chats.join("dt=2025-10-28");
    let real = std::fs::read(day.join("data.parquet")).unwrap();
    std::fs::write(day.join("copy.parquet"), &real).unwrap();
    std::fs::write(day.join(".hidden.parquet"), &real).unwrap();
    std::fs::write(
        day.join("._data.parquet"),
        b"\x00\x05\x16\x07 macOS resource fork",
    )
    .unwrap();
    std::fs::create_dir_all(chats.join("dt=garbage")).unwrap();
    std::fs::write(chats.join("dt=garbage/data.parquet"), &real).unwrap();
    std::fs::write(chats.join("data.parquet"), &real).unwrap(); // beside the partitions
    let widgets = wh.join("socialintents/widgets");
    std::fs::write(
        widgets.join("data (1).parquet"),
        std::fs::read(widgets.join("data.parquet")).unwrap(),
    )
    .unwrap();
    let runs_dir = std::fs::read_dir(wh.join("meta/runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let a_run = std::fs::read_dir(&runs_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(
        runs_dir.join("copy.parquet"),
        std::fs::read(&a_run).unwrap(),
    )
    .unwrap();

    let n = env.assert_exact("2025-10-27", "2025-11-03").await;
    let served_widgets = chatlake::simulator::data::WIDGETS.len() as i64;
    assert_eq!(
        env.int("SELECT COUNT(*) FROM socialintents.widgets").await,
        served_widgets
    );
    assert_eq!(
        env.int("SELECT COUNT(*) FROM meta.runs").await,
        report.streams.len() as i64
    );
    assert_eq!(
        env.int("SELECT SUM(chats) FROM reporting.missed_chat_rate WHERE source = 'socialintents'")
            .await,
        n as i64
    );
}

/// The demo pipeline (three sources) against a small demo account: the
/// sources run at once, each source's tables end exact, and meta.runs holds
/// one row per stream whose request counts are what each server saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sources_run_at_once_and_end_exact() {
    let (first, last) = (d("2025-10-27"), d("2025-11-05"));
    let config = chatlake::simulator::SimConfig::demo(first, last);
    let demo = include_str!("../../pipelines/demo.toml");
    let env = env_from(config, "demo.toml", |sim| {
        demo.replace(
            "${CHATLAKE_SIMULATOR_URL:-http://127.0.0.1:8089}",
            &sim.url(),
        )
    })
    .await;
    env.sim.set_faults(chatlake::simulator::Faults {
        latency_ms: 5,
        ..Default::default()
    });
    let report = env.run(None, "2025-11-05").await;
    assert_eq!(report.failures().count(), 0, "{:?}", report.streams);
    // Exact per source.
    env.assert_exact("2025-10-27", "2025-11-05").await;
    let data = env.sim.config();
    assert_eq!(
        env.int("SELECT COUNT(*) FROM social25.conversations").await as usize,
        data.social25.conversations().len()
    );
    assert_eq!(
        env.int("SELECT COUNT(*) FROM crm.conversations").await as usize,
        data.crm.conversations().len()
    );
    // At once: every source started before every other source finished.
    let span = |source: &str| {
        let own: Vec<_> = report
            .streams
            .iter()
            .filter(|s| s.stream.starts_with(source))
            .collect();
        assert!(!own.is_empty(), "{source}");
        (
            own.iter().map(|s| s.started_at).min().unwrap(),
            own.iter().map(|s| s.finished_at).max().unwrap(),
        )
    };
    let spans: Vec<_> = ["socialintents.", "social25.", "crm."]
        .iter()
        .map(|s| (s, span(s)))
        .collect();
    for (a, (a_start, _)) in &spans {
        for (b, (_, b_end)) in &spans {
            assert!(
                a_start < b_end,
                "{a} started after {b} had finished: not at once"
            );
        }
    }
    // meta.runs: one row per stream; requests as each server counted them.
    let rows = env
        .rows(&format!(
            "SELECT stream, requests FROM meta.runs WHERE run_id = '{}' ORDER BY stream",
            report.run_id
        ))
        .await;
    assert_eq!(rows.len(), report.streams.len());
    for source in ["socialintents", "social25", "crm"] {
        let ours: i64 = rows
            .iter()
            .filter(|r| r[0].starts_with(&format!("{source}.")))
            .map(|r| r[1].parse::<i64>().unwrap())
            .sum();
        assert_eq!(ours as usize, env.sim.traffic(source).0.len(), "{source}");
    }
    println!(
        "three sources at once: {} streams, spans {:?}",
        report.streams.len(),
        spans
            .iter()
            .map(|(s, (a, b))| format!("{s} {:.2}s", (*b - *a).num_milliseconds() as f64 / 1000.0))
            .collect::<Vec<_>>()
    );
}

/// Delta-packed columns hold any value: neighbouring rows at the two ends
/// of the range (whose differences overflow 64 bits) and dates at the ends
/// of Date32 read back exactly, with the `parquet` crate and through
/// `chatlake query`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_numbers_survive_delta_packing() {
    use chatlake::normalize::{build_batch, Cell, Row};
    let dir = tempfile::tempdir().unwrap();
    let wh = chatlake::sink::Warehouse::open(dir.path().to_str().unwrap()).unwrap();
    let table = chatlake::schema::table("meta.business_clock");
    // (slot, dt as days since 1970, before, opens, closes); slots ascend, as
    // the file is sorted by slot.
    let values: [(i64, i32, i64, i64, i64); 6] = [
        (i64::MIN, i32::MIN, i64::MAX, i64::MIN, 0),
        (i64::MIN + 1, i32::MAX, i64::MIN, i64::MAX, i64::MAX),
        (-1, 0, 1, i64::MAX, i64::MIN),
        (0, -719_162, 0, -1, -1),
        (1, 2_932_896, i64::MAX, 0, i64::MAX),
        (i64::MAX, -1, i64::MIN, i64::MIN, i64::MIN),
    ];
    let rows: Vec<Row> = values
        .iter()
        .map(|&(slot, dt, before, opens, closes)| {
            let cells = vec![
                ("slot", Cell::Int(slot)),
                ("dt", Cell::Date(dt)),
                ("business_us_before_slot", Cell::Int(before)),
                ("opens_us", Cell::Int(opens)),
                ("closes_us", Cell::Int(closes)),
            ];
            Row::named(table, cells, 0).unwrap()
        })
        .collect();
    let batch = build_batch(table, "run-1", &rows).unwrap();
    // Written whole (encoded in memory), then as a stream of batches (how a
    // run writes the clock).
    for streamed in [false, true] {
        if streamed {
            let batches = std::iter::once(Ok(batch.clone()));
            wh.replace_partition_with(table, None, batches)
                .await
                .unwrap();
        } else {
            wh.replace_partition(table, None, &batch).await.unwrap();
        }
        let file = dir.path().join("meta/business_clock/data.parquet");
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).unwrap()).unwrap();
        for c in reader.metadata().row_group(0).columns() {
            let name = c.column_path().string();
            if name != "_run_id" && name != "_extra" {
                assert!(
                    c.encodings()
                        .any(|e| e == parquet::basic::Encoding::DELTA_BINARY_PACKED),
                    "{name} is delta-packed (streamed: {streamed})"
                );
            }
        }
        let back: Vec<_> = reader.build().unwrap().map(|b| b.unwrap()).collect();
        let back = arrow::compute::concat_batches(&back[0].schema(), &back).unwrap();
        for (i, f) in batch.schema().fields().iter().enumerate() {
            assert_eq!(
                back.column_by_name(f.name()).unwrap().as_ref(),
                batch.column(i).as_ref(),
                "column {} (streamed: {streamed})",
                f.name()
            );
        }
    }
    // Through DataFusion (dates at the ends of Date32 are beyond what chrono
    // prints, so they are compared as days).
    let (code, out, err) = query_csv(
        dir.path().to_str().unwrap(),
        "SELECT slot, CAST(dt AS INT) AS days, business_us_before_slot, opens_us, closes_us \
         FROM meta.business_clock ORDER BY slot",
    );
    assert_eq!(code, 0, "{err}");
    let mut expected = String::from("slot,days,business_us_before_slot,opens_us,closes_us\n");
    for (slot, dt, before, opens, closes) in values {
        expected += &format!("{slot},{dt},{before},{opens},{closes}\n");
    }
    assert_eq!(out, expected);
}
