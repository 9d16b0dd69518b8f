//! Issue 13: `chatlake report` as a user runs it. The HTML is parsed with a
//! real HTML parser; every KPI tile's machine-readable value equals the same
//! figure computed here from the simulator's records, for the period and the
//! one before; nothing external is referenced; an empty period renders.

use std::collections::BTreeSet;

use chatlake::simulator::clock::local_date;
use chatlake::simulator::data::SimChat;
use chrono::NaiveDate;
use scraper::{Html, Selector};

use crate::support::*;

/// Every section heading, in order.
pub const HEADINGS: &[&str] = &[
    "Chat report",
    "Data health",
    "Key figures",
    "Daily chats",
    "First-response time",
    "Chats by weekday and hour",
    "Agents",
    "Channels",
    "Top companies",
    "Failed syncs",
];

/// The KPI figures of served chats with local dates from..=to (calendar SLA
/// only; the business one is checked against its view below).
fn expected(env: &Env, from: &str, to: &str, target: f64) -> Vec<(&'static str, Option<f64>)> {
    let tz = env.tz();
    let (a, b): (NaiveDate, NaiveDate) = (d(from), d(to));
    let chats: Vec<SimChat> = env
        .served_chats(from, to)
        .into_iter()
        .filter(|c| !c.malformed)
        .filter(|c| (a..=b).contains(&local_date(c.start, tz)))
        .collect();
    let n = chats.len() as f64;
    let missed = chats.iter().filter(|c| c.chat_type == "Missed").count() as f64;
    let mut waits: Vec<f64> = chats
        .iter()
        .filter_map(wait)
        .map(|(x, y)| (y - x).num_microseconds().unwrap() as f64 / 1e6)
        .collect();
    waits.sort_by(f64::total_cmp);
    let pct = |p| (!waits.is_empty()).then(|| crate::views::percentile(&waits, p));
    let within = waits.iter().filter(|w| **w <= target).count() as f64;
    vec![
        ("chats", Some(n)),
        ("missed_chats", Some(missed)),
        ("missed_rate", (n > 0.0).then(|| missed / n)),
        ("median_first_response_seconds", pct(0.5)),
        ("p90_first_response_seconds", pct(0.9)),
        (
            "sla_attainment",
            (!waits.is_empty()).then(|| within / waits.len() as f64),
        ),
        ("failed_syncs", Some(0.0)),
    ]
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * b.abs().max(1.0),
        (None, None) => true,
        _ => false,
    }
}

/// The tiles of a report: kpi -> (data-value, data-previous).
fn tiles(doc: &Html) -> Vec<(String, Option<f64>, Option<f64>)> {
    let sel = Selector::parse("[data-kpi]").unwrap();
    let val = |s: Option<&str>| {
        s.filter(|s| !s.is_empty())
            .map(|s| s.parse::<f64>().unwrap())
    };
    doc.select(&sel)
        .map(|e| {
            (
                e.value().attr("data-kpi").unwrap().to_string(),
                val(e.value().attr("data-value")),
                val(e.value().attr("data-previous")),
            )
        })
        .collect()
}

/// Nothing the page references is outside the file.
pub fn assert_self_contained(html: &str) {
    let doc = Html::parse_document(html);
    for e in doc.select(&Selector::parse("*").unwrap()) {
        for (k, v) in e.value().attrs() {
            if matches!(
                k,
                "src" | "href" | "xlink:href" | "action" | "srcset" | "poster" | "data"
            ) {
                panic!("<{} {k}=\"{v}\"> references something", e.value().name());
            }
        }
        assert!(
            !matches!(
                e.value().name(),
                "script" | "link" | "iframe" | "img" | "object" | "embed"
            ),
            "<{}>",
            e.value().name()
        );
    }
    assert!(!html.contains("url("), "no CSS url()");
    assert!(!html.contains("@import"));
}

/// Issue 22: what a PDF or an email shows without hover. Every heatmap cell
/// prints its chats and missed share, equal to the served chats of that
/// local weekday and hour (counted here); the daily chart's y axis ends at
/// the first "nice" tick at or above the busiest day; every chart has axis
/// titles; blue and orange mean answered and missed wherever they appear.
fn charts_read_without_hover(env: &Env, doc: &Html) {
    use chrono::{Datelike, Timelike};
    let sel = |s: &str| Selector::parse(s).unwrap();
    let text = |e: scraper::ElementRef| e.text().collect::<String>().trim().to_string();
    let tz = env.tz();
    let (a, b) = (d("2025-11-03"), d("2025-11-09"));
    let mut cells = std::collections::BTreeMap::<(u32, u32), (u32, u32)>::new();
    for c in env.served_chats("2025-11-03", "2025-11-09") {
        let local = c.start.with_timezone(&tz);
        if c.malformed || !(a..=b).contains(&local.date_naive()) {
            continue;
        }
        let e = cells
            .entry((local.weekday().number_from_monday(), local.hour()))
            .or_default();
        e.0 += 1;
        e.1 += u32::from(c.chat_type == "Missed");
    }
    let heat = doc
        .select(&sel("#heatmap svg"))
        .next()
        .expect("the heatmap");
    let printed: Vec<String> = heat.select(&sel("text.cell")).map(text).collect();
    // Each cell prints two texts: its chats, then its missed share.
    let mut got: Vec<(String, String)> = printed
        .chunks(2)
        .map(|p| (p[0].clone(), p.get(1).cloned().unwrap_or_default()))
        .collect();
    let mut want: Vec<(String, String)> = cells
        .values()
        .map(|(n, missed)| {
            (
                n.to_string(),
                format!("{:.0}%", f64::from(*missed) / f64::from(*n) * 100.0),
            )
        })
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "heatmap cells: printed vs served");
    assert!(
        heat.parent()
            .and_then(|p| p.parent())
            .is_some_and(|s| text(scraper::ElementRef::wrap(s).unwrap()).contains("Colour: chats")),
        "the heatmap has a colour legend"
    );
    // The daily chart's scale fits the busiest day.
    let mut per_day = std::collections::BTreeMap::<NaiveDate, u32>::new();
    for c in env.served_chats("2025-11-03", "2025-11-09") {
        let day = local_date(c.start, tz);
        if !c.malformed && (a..=b).contains(&day) {
            *per_day.entry(day).or_default() += 1;
        }
    }
    let busiest = f64::from(*per_day.values().max().unwrap());
    let daily = doc.select(&sel("#daily svg")).next().unwrap();
    let ticks: Vec<f64> = daily
        .select(&sel("text[text-anchor=end]"))
        .filter_map(|t| text(t).replace(',', "").parse().ok())
        .collect();
    let top = ticks.iter().copied().fold(0.0, f64::max);
    assert!(ticks.len() >= 3, "{ticks:?}");
    assert!(
        top >= busiest && top < busiest * 1.7 + 1.0,
        "scale to {top} for a busiest day of {busiest}"
    );
    for chart in ["#daily", "#first-response", "#failed-syncs"] {
        if let Some(svg) = doc.select(&sel(&format!("{chart} svg"))).next() {
            let titles: Vec<String> = svg.select(&sel("text.axis")).map(text).collect();
            assert!(
                titles.len() >= 2 && titles.iter().all(|t| !t.is_empty()),
                "{chart}: {titles:?}"
            );
        }
    }
    // One colour, one meaning: blue only for answered, orange only for missed.
    for (colour, meaning) in [("#0072B2", "answered"), ("#E69F00", "missed")] {
        for e in doc.select(&sel(&format!("[fill='{colour}']"))) {
            let title = e.select(&sel("title")).next().map(text).unwrap_or_default();
            assert!(
                e.ancestors().any(|a| a
                    .value()
                    .as_element()
                    .is_some_and(|x| x.attr("id") == Some("daily"))),
                "{colour} ({meaning}) used outside the daily chart: {title}"
            );
        }
    }
}

fn headings(doc: &Html) -> Vec<String> {
    doc.select(&Selector::parse("h1, h2").unwrap())
        .map(|h| h.text().collect::<String>())
        .collect()
}

#[test]
fn the_report_figures_equal_the_served_data_and_it_references_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(env_with(data(20), 7)).with_pipeline(|text| {
        text.replace(
            "[http]",
            "[reporting]\nfirst_response_target_seconds = 150\n[http]",
        )
    });
    rt.block_on(env.run(Some("2025-10-27"), "2025-11-09"));
    let wh = env.dir.path().join("wh");
    let out = env.dir.path().join("report.html");
    let (code, _, err) = chatlake(&[
        "report",
        "--warehouse",
        wh.to_str().unwrap(),
        "--from",
        "2025-11-03",
        "--to",
        "2025-11-09",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let html = std::fs::read_to_string(&out).unwrap();
    let doc = Html::parse_document(&html);
    assert!(doc.errors.len() < 5, "parses cleanly: {:?}", doc.errors);
    assert_self_contained(&html);
    assert_eq!(headings(&doc), HEADINGS);

    let got = tiles(&doc);
    let names: Vec<&str> = got.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(names, chatlake::report::KPIS);
    let now = expected(&env, "2025-11-03", "2025-11-09", 150.0);
    let before = expected(&env, "2025-10-27", "2025-11-02", 150.0);
    for ((name, v), (_, p)) in now.iter().zip(&before) {
        let (_, gv, gp) = got.iter().find(|t| t.0 == *name).unwrap();
        assert!(close(*gv, *v), "{name}: {gv:?} vs {v:?}");
        assert!(close(*gp, *p), "{name} (previous period): {gp:?} vs {p:?}");
    }
    // Business-hours attainment: the SLA view's sums over the period.
    let sums = rt.block_on(env.rows(
        "SELECT CAST(SUM(within_target_business) AS DOUBLE) / SUM(answered_chats) AS a FROM reporting.first_response_sla WHERE dt BETWEEN DATE '2025-11-03' AND DATE '2025-11-09'",
    ));
    let (_, business, _) = got
        .iter()
        .find(|t| t.0 == "sla_attainment_business")
        .unwrap();
    assert!(close(*business, Some(sums[0][0].parse().unwrap())));
    // Charts: titles and text alternatives.
    for svg in doc.select(&Selector::parse("svg").unwrap()) {
        let has = |tag: &str| {
            svg.select(&Selector::parse(tag).unwrap())
                .next()
                .is_some_and(|t| !t.text().collect::<String>().trim().is_empty())
        };
        assert!(
            has("title") && has("desc"),
            "every chart has a title and a description"
        );
        assert_eq!(svg.value().attr("role"), Some("img"));
    }
    charts_read_without_hover(&env, &doc);
    let sources: BTreeSet<_> = doc
        .select(&Selector::parse("p.meta").unwrap())
        .flat_map(|p| p.text().map(str::to_string).collect::<Vec<_>>())
        .collect();
    assert!(
        sources
            .iter()
            .any(|t| t.contains("Sources: socialintents.")),
        "{sources:?}"
    );

    // An empty period renders, with "no data" sections and empty values.
    let (code, html, err) = chatlake(&[
        "report",
        "--warehouse",
        wh.to_str().unwrap(),
        "--from",
        "2024-01-01",
        "--to",
        "2024-01-07",
        "--out",
        "-",
    ]);
    assert_eq!(code, 0, "{err}");
    let doc = Html::parse_document(&html);
    assert_eq!(headings(&doc), HEADINGS);
    assert!(html.contains("No chats in this period."));
    for (name, v, _) in tiles(&doc) {
        let want = if matches!(name.as_str(), "chats" | "missed_chats" | "failed_syncs") {
            Some(0.0)
        } else {
            None
        };
        assert!(close(v, want), "{name}: {v:?}");
    }
}

/// With `[report]`, every run leaves the report in the warehouse (latest and
/// a dated copy), also when a stream failed: the report shows the failure.
#[test]
fn every_run_with_a_report_table_writes_it_and_shows_a_failed_stream() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(env_with(data(5), 7)).with_pipeline(|text| {
        text.replace(
            "[http]",
            "[report]\npath = \"out/latest.html\"\ndays = 7\n[http]",
        )
    });
    rt.block_on(env.run(Some("2025-10-27"), "2025-11-09"));
    let wh = env.dir.path().join("wh");
    let latest = std::fs::read_to_string(wh.join("out/latest.html")).unwrap();
    // "today" is 2025-11-10 for this run: the report covers 2025-11-03..2025-11-09.
    assert_eq!(
        std::fs::read_to_string(wh.join("out/2025-11-10.html")).unwrap(),
        latest
    );
    assert!(
        latest.contains("2025-11-03 to 2025-11-09 (7 days"),
        "period"
    );
    assert!(!latest.contains("last run failed"));
    assert_self_contained(&latest);
    env.sim.set_faults(chatlake::simulator::Faults {
        api_error: Some("Account suspended".into()),
        ..Default::default()
    });
    let report = rt.block_on(env.run(Some("2025-11-09"), "2025-11-09"));
    assert!(report.failures().next().is_some());
    let latest = std::fs::read_to_string(wh.join("out/latest.html")).unwrap();
    assert!(
        latest.contains("last run failed"),
        "the failed stream is flagged"
    );
}
