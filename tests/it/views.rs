//! The reporting views equal figures computed here from the simulator's
//! records, with the definitions written out independently in Rust.

use std::collections::BTreeMap;

use chatlake::simulator::clock::local_date;
use chatlake::simulator::data::SimChat;

use crate::support::*;

/// First messageToVisitor at or after the first messageToAgent, minus it.
fn first_response_seconds(c: &SimChat) -> Option<f64> {
    wait(c).map(|(a, b)| (b - a).num_milliseconds() as f64 / 1000.0)
}

/// Linear interpolation between closest ranks (percentile_cont).
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = p * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

/// The column names of a result.
fn schema_of(batches: &[arrow::record_batch::RecordBatch]) -> Vec<String> {
    batches
        .first()
        .map(|b| {
            b.schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Two percentiles as text, within a millionth of each other (relative).
fn within_a_millionth(a: &str, b: &str) -> bool {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(a), Ok(b)) => (a - b).abs() <= 1e-6 * a.abs().max(1.0),
        _ => false,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_chat_rate_and_response_times_match_the_served_data() {
    let env = env_with(data(40), 7).await;
    env.run(Some("2025-10-27"), "2025-11-05").await;
    let tz = env.tz();
    let served = env.served_chats("2025-10-27", "2025-11-05");

    // missed_chat_rate: (dt, channel) -> (chats, missed)
    let mut rate: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    for c in &served {
        let e = rate
            .entry((local_date(c.start, tz).to_string(), c.widget_id.clone()))
            .or_default();
        e.0 += 1;
        e.1 += (c.chat_type == "Missed") as i64;
    }
    let got = env
        .rows("SELECT CAST(dt AS VARCHAR) AS d, source, channel, chats, missed_chats, missed_rate FROM reporting.missed_chat_rate ORDER BY dt, channel")
        .await;
    assert_eq!(got.len(), rate.len());
    for (row, ((dt, channel), (chats, missed))) in got.iter().zip(&rate) {
        assert_eq!(
            (&row[0], row[1].as_str(), &row[2]),
            (dt, "socialintents", channel)
        );
        assert_eq!(
            (
                row[3].parse::<i64>().unwrap(),
                row[4].parse::<i64>().unwrap()
            ),
            (*chats, *missed),
            "{dt} {channel}"
        );
        assert!(close(
            row[5].parse().unwrap(),
            *missed as f64 / *chats as f64
        ));
    }

    // response_times: (dt, agent) -> answered chats and their first-response seconds
    let mut times: BTreeMap<(String, String), (i64, Vec<f64>)> = BTreeMap::new();
    for c in served.iter().filter(|c| c.chat_type != "Missed") {
        let agent = c.agent.as_ref().unwrap().name.clone();
        let e = times
            .entry((local_date(c.start, tz).to_string(), agent))
            .or_default();
        e.0 += 1;
        e.1.extend(first_response_seconds(c));
    }
    let got = env
        .rows("SELECT CAST(dt AS VARCHAR) AS d, agent_name, answered_chats, avg_first_response_seconds, p50_first_response_seconds, p90_first_response_seconds FROM reporting.response_times ORDER BY dt, agent_name")
        .await;
    assert_eq!(got.len(), times.len());
    let mut checked = 0;
    for (row, ((dt, agent), (answered, secs))) in got.iter().zip(times.iter_mut()) {
        assert_eq!((&row[0], &row[1]), (dt, agent));
        assert_eq!(row[2].parse::<i64>().unwrap(), *answered);
        secs.sort_by(f64::total_cmp);
        let avg = secs.iter().sum::<f64>() / secs.len() as f64;
        assert!(
            close(row[3].parse().unwrap(), avg),
            "{dt} {agent} avg {} vs {avg}",
            row[3]
        );
        assert!(
            close(row[4].parse().unwrap(), percentile(secs, 0.5)),
            "{dt} {agent} p50"
        );
        assert!(
            close(row[5].parse().unwrap(), percentile(secs, 0.9)),
            "{dt} {agent} p90"
        );
        checked += 1;
    }
    assert!(checked > 20);
    // Greetings sent before the visitor spoke exist and are not counted as replies.
    assert!(served.iter().any(|c| c
        .messages
        .first()
        .is_some_and(|m| m.kind == "messageToVisitor")));
}

/// `chatlake views --dialect datafusion` run in a fresh DataFusion session
/// (as datafusion-cli would) defines every view with the same rows as
/// chatlake's own session, also with whole sources missing (empty views).
/// The one difference allowed: DataFusion's own percentile_cont rounds its
/// interpolation weight down to a millionth (chatlake's is exact, see
/// src/query/percentile.rs), so a percentile may differ by a millionth of
/// the gap between the two ranks it lies between; the README says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_datafusion_script_gives_the_same_views_in_a_fresh_session() {
    let env = env_with(data(10), 7).await;
    env.run(Some("2025-10-27"), "2025-11-05").await;
    let script = chatlake::query::views_script(&env.wh, chatlake::dialect::Dialect::DataFusion)
        .await
        .unwrap();
    let ctx = datafusion::prelude::SessionContext::new();
    let statements: Vec<String> = script
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
        .split(";\n")
        .map(|s| s.trim().trim_end_matches(';').to_string())
        .filter(|s| !s.is_empty())
        .collect();
    for s in &statements {
        ctx.sql(s)
            .await
            .unwrap_or_else(|e| panic!("{e}\nin: {s}"))
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{e}\nin: {s}"));
    }
    let mut compared = 0;
    for (file, _) in chatlake::schema::VIEW_FILES {
        let view = file.trim_end_matches(".sql");
        let q = format!("SELECT * FROM {view}");
        let ours = env.rows(&q).await;
        let batches = ctx.sql(&q).await.unwrap().collect().await.unwrap();
        let mut theirs = batch_rows(&batches);
        let mut ours = ours;
        ours.sort();
        theirs.sort();
        assert_eq!(ours.len(), theirs.len(), "{view}");
        let names = schema_of(&batches);
        for (a, b) in ours.iter().zip(&theirs) {
            let same = a.len() == b.len()
                && a.iter().zip(b).zip(&names).all(|((x, y), name)| {
                    x == y
                        || (name.contains("_first_response_seconds")
                            && !name.starts_with("avg_")
                            && within_a_millionth(x, y))
                });
            assert!(same, "{view}:\n ours   {a:?}\n theirs {b:?}");
        }
        compared += ours.len();
    }
    assert!(compared > 300, "only {compared} view rows compared");
    println!(
        "datafusion script: {} statements, {compared} view rows equal",
        statements.len()
    );
}
