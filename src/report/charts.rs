//! The report's chart geometry and number formatting: plain arithmetic that
//! turns view rows into SVG coordinates (the template draws them), plus a
//! text alternative for every chart.

use chrono::Duration;
use serde_json::{json, Map, Value};

use super::{num, Period};

/// Okabe-Ito colours: told apart with every common colour-vision deficiency.
pub const PALETTE: &[&str] = &[
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00",
];

const W: f64 = 720.0;
const H: f64 = 220.0;
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 24.0;

/// A tile's label.
pub fn kpi_label(k: &str) -> &'static str {
    match k {
        "chats" => "Chats",
        "missed_chats" => "Missed chats",
        "missed_rate" => "Missed rate",
        "median_first_response_seconds" => "Median first response",
        "p90_first_response_seconds" => "p90 first response",
        "sla_attainment" => "Within SLA",
        "sla_attainment_business" => "Within SLA (business hours)",
        _ => "Failed syncs",
    }
}

/// 12,345.
pub fn int_text(n: i64) -> String {
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// 42 s, 3m 05s, 1h 02m.
pub fn duration_text(s: f64) -> String {
    let t = s.round() as i64;
    if t < 60 {
        format!("{t} s")
    } else if t < 3600 {
        format!("{}m {:02}s", t / 60, t % 60)
    } else {
        format!("{}h {:02}m", t / 3600, (t % 3600) / 60)
    }
}

fn is_rate(k: &str) -> bool {
    k.contains("rate") || k.contains("attainment")
}

/// A tile's value as people read it ("–" when there is none).
pub fn kpi_text(k: &str, v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if is_rate(k) => format!("{:.1}%", v * 100.0),
        Some(v) if k.ends_with("_seconds") => duration_text(v),
        Some(v) => int_text(v.round() as i64),
    }
}

/// The change against the previous period, in words.
pub fn change_text(k: &str, v: Option<f64>, p: Option<f64>) -> String {
    match (v, p) {
        (Some(v), Some(p)) if is_rate(k) => {
            signed(format!("{:.1}", (v - p) * 100.0)) + " pts vs previous"
        }
        (Some(v), Some(p)) if p != 0.0 => {
            signed(format!("{:.0}", (v - p) / p * 100.0)) + "% vs previous"
        }
        (Some(_), Some(_)) => "previous period: 0".into(),
        _ => "no previous figure".into(),
    }
}

/// "+3", "-1.5", and "±0" for a change that rounds to nothing.
fn signed(rounded: String) -> String {
    match rounded.trim_start_matches('-') {
        "0" | "0.0" => "±0".into(),
        _ if rounded.starts_with('-') => rounded.replacen('-', "−", 1),
        _ => format!("+{rounded}"),
    }
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|m| *m >= v)
        .unwrap_or(v)
}

/// Daily chats (answered and missed, stacked) with the missed-rate line.
pub fn daily(rows: &[Map<String, Value>], p: Period) -> Value {
    let by_day: std::collections::HashMap<String, (f64, f64)> = rows
        .iter()
        .map(|r| {
            (
                r["dt"].as_str().unwrap_or("").to_string(),
                (
                    num(r, "chats").unwrap_or(0.0),
                    num(r, "missed").unwrap_or(0.0),
                ),
            )
        })
        .collect();
    let days: Vec<String> = (0..p.days())
        .map(|i| (p.from + Duration::days(i)).to_string())
        .collect();
    let max = nice_max(by_day.values().map(|v| v.0).fold(0.0, f64::max));
    let slot = (W - LEFT - 40.0) / days.len().max(1) as f64;
    let y = |v: f64| (H - BOTTOM) - v / max * (H - BOTTOM - 10.0);
    let (mut bars, mut points, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    for (i, d) in days.iter().enumerate() {
        let (chats, missed) = by_day.get(d).copied().unwrap_or((0.0, 0.0));
        let x = LEFT + i as f64 * slot + slot * 0.15;
        let bw = slot * 0.7;
        let title = format!("{d}: {} chats, {} missed", chats, missed);
        bars.push(json!({"x": x, "y": y(chats - missed), "w": bw, "h": (H - BOTTOM) - y(chats - missed), "fill": PALETTE[0], "title": title}));
        bars.push(json!({"x": x, "y": y(chats), "w": bw, "h": y(chats - missed) - y(chats), "fill": PALETTE[1], "title": title}));
        if chats > 0.0 {
            let ry = (H - BOTTOM) - missed / chats * (H - BOTTOM - 10.0);
            points.push(format!("{:.1},{:.1}", x + bw / 2.0, ry));
        }
        if i % (days.len() / 7).max(1) == 0 {
            labels.push(json!({"x": x + bw / 2.0, "text": &d[5..]}));
        }
    }
    let total: f64 = by_day.values().map(|v| v.0).sum();
    let missed: f64 = by_day.values().map(|v| v.1).sum();
    json!({
        "w": W, "h": H, "base": H - BOTTOM, "left": LEFT, "right": W - 40.0, "max": max, "bars": bars,
        "line": points.join(" "), "labels": labels, "empty": total == 0.0,
        "desc": format!("{} chats over {} days, {} missed; busiest day {} chats.", total, days.len(), missed,
                        by_day.values().map(|v| v.0).fold(0.0, f64::max)),
    })
}

/// First-response buckets, one bar per source in each bucket.
pub fn buckets(rows: &[Map<String, Value>]) -> Value {
    let names = ["0-30s", "30-60s", "1-2m", "2-5m", "5-15m", "15-60m", "1h+"];
    let mut sources: Vec<String> = rows
        .iter()
        .filter_map(|r| r["source"].as_str().map(str::to_string))
        .collect();
    sources.dedup();
    let max = nice_max(
        rows.iter()
            .filter_map(|r| num(r, "chats"))
            .fold(0.0, f64::max),
    );
    let group = (W - LEFT - 10.0) / names.len() as f64;
    let bw = group * 0.8 / sources.len().max(1) as f64;
    let y = |v: f64| (H - BOTTOM) - v / max * (H - BOTTOM - 10.0);
    let mut bars = Vec::new();
    for r in rows {
        let (Some(s), Some(o), Some(n)) = (
            r["source"].as_str(),
            num(r, "bucket_order"),
            num(r, "chats"),
        ) else {
            continue;
        };
        let si = sources.iter().position(|x| x == s).unwrap_or(0);
        let x = LEFT + (o - 1.0) * group + group * 0.1 + si as f64 * bw;
        bars.push(json!({"x": x, "y": y(n), "w": bw, "h": (H - BOTTOM) - y(n), "fill": PALETTE[si % PALETTE.len()],
                         "title": format!("{s}, {}: {n} chats", r["bucket"].as_str().unwrap_or(""))}));
    }
    let labels: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| json!({"x": LEFT + (i as f64 + 0.5) * group, "text": n}))
        .collect();
    let legend: Vec<Value> = sources
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"name": s, "fill": PALETTE[i % PALETTE.len()]}))
        .collect();
    let desc: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{} {}: {}",
                r["source"].as_str().unwrap_or(""),
                r["bucket"].as_str().unwrap_or(""),
                num(r, "chats").unwrap_or(0.0)
            )
        })
        .collect();
    json!({"w": W, "h": H, "base": H - BOTTOM, "left": LEFT, "right": W - 10.0, "max": max, "bars": bars, "labels": labels,
           "legend": legend, "empty": rows.is_empty(), "desc": format!("Answered chats by first-response time: {}.", desc.join("; "))})
}

/// Weekday x hour heatmap of chats; each cell's title gives the missed rate.
pub fn heatmap(rows: &[Map<String, Value>]) -> Value {
    let days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let max = rows
        .iter()
        .filter_map(|r| num(r, "chats"))
        .fold(0.0, f64::max);
    let (cw, ch, left, top) = (26.0, 22.0, 40.0, 18.0);
    let mut cells = Vec::new();
    for r in rows {
        let (Some(wd), Some(h), Some(n)) =
            (num(r, "weekday"), num(r, "local_hour"), num(r, "chats"))
        else {
            continue;
        };
        let missed = num(r, "missed").unwrap_or(0.0);
        let day = days[((wd as usize).clamp(1, 7)) - 1];
        cells.push(json!({
            "x": left + h * cw, "y": top + (wd - 1.0) * ch, "w": cw - 2.0, "h": ch - 2.0,
            "opacity": if max > 0.0 { 0.12 + 0.88 * n / max } else { 0.0 },
            "title": format!("{day} {:02}:00: {n} chats, {:.0}% missed", h, if n > 0.0 { missed / n * 100.0 } else { 0.0 }),
        }));
    }
    let busiest = rows
        .iter()
        .max_by(|a, b| {
            num(a, "chats")
                .unwrap_or(0.0)
                .total_cmp(&num(b, "chats").unwrap_or(0.0))
        })
        .map(|r| {
            format!(
                "busiest: {} {:02}:00 with {} chats",
                days[(num(r, "weekday").unwrap_or(1.0) as usize).clamp(1, 7) - 1],
                num(r, "local_hour").unwrap_or(0.0),
                num(r, "chats").unwrap_or(0.0)
            )
        })
        .unwrap_or_default();
    json!({
        "w": left + 24.0 * cw + 4.0, "h": top + 7.0 * ch + 4.0, "cells": cells, "fill": PALETTE[0],
        "days": days.iter().enumerate().map(|(i, d)| json!({"y": top + i as f64 * ch + ch * 0.65, "text": d})).collect::<Vec<_>>(),
        "hours": (0..24).step_by(3).map(|h| json!({"x": left + h as f64 * cw + cw / 2.0, "text": format!("{h:02}")})).collect::<Vec<_>>(),
        "empty": rows.is_empty(), "desc": format!("Chats by weekday and local hour; {busiest}."),
    })
}

/// Failed syncs per day.
pub fn failed(rows: &[Map<String, Value>]) -> Value {
    let max = nice_max(rows.iter().filter_map(|r| num(r, "n")).fold(0.0, f64::max));
    let slot = (W - LEFT - 10.0) / rows.len().max(1) as f64;
    let y = |v: f64| (H - BOTTOM) - v / max * (H - BOTTOM - 10.0);
    let bars: Vec<Value> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let n = num(r, "n").unwrap_or(0.0);
            json!({"x": LEFT + i as f64 * slot + slot * 0.15, "y": y(n), "w": slot * 0.7, "h": (H - BOTTOM) - y(n), "fill": PALETTE[5],
                   "title": format!("{}: {n} failed syncs", r["dt"].as_str().unwrap_or(""))})
        })
        .collect();
    let total: f64 = rows.iter().filter_map(|r| num(r, "n")).sum();
    json!({"w": W, "h": H, "base": H - BOTTOM, "left": LEFT, "right": W - 10.0, "max": max, "bars": bars, "empty": rows.is_empty(),
           "desc": format!("{total} failed syncs over {} days with failures.", rows.len())})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(int_text(1234567), "1,234,567");
        assert_eq!(int_text(-999), "-999");
        assert_eq!(duration_text(42.4), "42 s");
        assert_eq!(duration_text(185.0), "3m 05s");
        assert_eq!(duration_text(3725.0), "1h 02m");
        assert_eq!(
            change_text("chats", Some(1374.0), Some(1377.0)),
            "±0% vs previous"
        );
        assert_eq!(
            change_text("chats", Some(90.0), Some(100.0)),
            "−10% vs previous"
        );
        assert_eq!(
            change_text("missed_rate", Some(0.184), Some(0.203)),
            "−1.9 pts vs previous"
        );
        assert_eq!(
            change_text("sla_attainment", Some(0.5), None),
            "no previous figure"
        );
        assert_eq!(kpi_text("missed_rate", Some(0.1523)), "15.2%");
    }
}
