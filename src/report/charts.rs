//! The report's chart geometry and number formatting: plain arithmetic that
//! turns view rows into SVG coordinates (the template draws them), plus a
//! text alternative for every chart.

use chrono::Duration;
use serde_json::{json, Map, Value};

use super::{num, Period};

/// One colour, one meaning, across the report (Okabe-Ito colours: told
/// apart with every common colour-vision deficiency).
pub const ANSWERED: &str = "#0072B2"; // blue: answered chats, everywhere
pub const MISSED: &str = "#E69F00"; // orange: missed chats, everywhere
pub const FAILED: &str = "#D55E00"; // vermillion: failed syncs
/// The sources, where a chart tells them apart (never blue or orange).
pub const SOURCES: &[&str] = &["#009E73", "#CC79A7", "#56B4E9", "#F0E442"];
/// The heatmap's one hue: how many chats (answered and missed together).
pub const VOLUME: &str = "#5E3C99";

const W: f64 = 720.0;
const H: f64 = 250.0;
/// Room for the y tick labels (the axis titles sit above the plot, level).
const LEFT: f64 = 48.0;
/// Room for the x tick labels and the x axis title.
const BOTTOM: f64 = 42.0;
const TOP: f64 = 26.0;

/// "Nice" ticks for a count axis from 0 that fits `max`: steps of 1, 2, 2.5
/// or 5 times a power of ten, about four of them, the last at or just above
/// `max` (56 gives 0, 20, 40, 60). Counts never get fractional steps.
pub fn nice_ticks(max: f64) -> Vec<f64> {
    if max.is_nan() || max <= 0.0 || !max.is_finite() {
        return vec![0.0, 1.0];
    }
    let raw = max / 4.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|m| *m >= raw && m.fract() == 0.0)
        .unwrap_or(raw.ceil())
        .max(1.0);
    let n = (max / step).ceil().max(1.0) as usize;
    (0..=n).map(|i| i as f64 * step).collect()
}

/// A chart's frame: the plot area, its y ticks (value, label, position),
/// and the axis titles, as the template's `axes` macro draws them.
fn frame(max: f64, right: f64, y_title: &str, x_title: &str) -> (Value, impl Fn(f64) -> f64) {
    let ticks = nice_ticks(max);
    let top = *ticks.last().unwrap_or(&1.0);
    let base = H - BOTTOM;
    let y = move |v: f64| base - v / top * (base - TOP);
    let yticks: Vec<Value> = ticks
        .iter()
        .map(|t| json!({"y": y(*t), "text": int_text(t.round() as i64)}))
        .collect();
    (
        json!({"w": W, "h": H, "base": base, "top": TOP, "left": LEFT, "right": right, "yticks": yticks,
               "ytitle": y_title, "xtitle": x_title, "xmid": (LEFT + right) / 2.0}),
        y,
    )
}

/// Adds `more` to the object `v`.
fn with(mut v: Value, more: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (v.as_object_mut(), more) {
        a.extend(b);
    }
    v
}

/// Date labels for a daily axis: about seven, "Mon 3 Nov".
fn day_label(d: chrono::NaiveDate) -> String {
    d.format("%a %-d %b").to_string()
}

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

/// What a tile counts, in words a support lead reads.
pub fn kpi_help(k: &str, target_seconds: f64, business_hours: &str) -> String {
    let target = duration_text(target_seconds);
    match k {
        "chats" => "Chats and conversations that started in the period, every source.".into(),
        "missed_chats" => "Chats no agent ever answered.".into(),
        "missed_rate" => "Missed chats out of all chats.".into(),
        "median_first_response_seconds" => "Half of the answered chats had their first reply sooner than this (clock time).".into(),
        "p90_first_response_seconds" => "9 in 10 answered chats had their first reply sooner than this (clock time).".into(),
        "sla_attainment" => format!("Answered chats whose first reply came within {target} of clock time, nights and weekends included."),
        "sla_attainment_business" => format!("The same, counting only the wait inside business hours ({business_hours}): a chat that waited only outside them counts as within."),
        _ => "Social25 messages that failed to reach the customer.".into(),
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

/// Daily chats (answered and missed, stacked) with the missed-rate line on
/// a right-hand axis (0 to 100 %).
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
    let days: Vec<chrono::NaiveDate> = (0..p.days()).map(|i| p.from + Duration::days(i)).collect();
    let busiest = by_day.values().map(|v| v.0).fold(0.0, f64::max);
    let right = W - 52.0;
    let (frame, y) = frame(busiest, right, "chats per day", "local date");
    let slot = (right - LEFT) / days.len().max(1) as f64;
    let base = H - BOTTOM;
    let (mut bars, mut points, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    for (i, d) in days.iter().enumerate() {
        let (chats, missed) = by_day.get(&d.to_string()).copied().unwrap_or((0.0, 0.0));
        let x = LEFT + i as f64 * slot + slot * 0.15;
        let bw = slot * 0.7;
        let title = format!("{d}: {chats} chats, {missed} missed");
        bars.push(json!({"x": x, "y": y(chats - missed), "w": bw, "h": base - y(chats - missed), "fill": ANSWERED, "title": title}));
        bars.push(json!({"x": x, "y": y(chats), "w": bw, "h": y(chats - missed) - y(chats), "fill": MISSED, "title": title}));
        if chats > 0.0 {
            let ry = base - missed / chats * (base - TOP);
            points.push(format!("{:.1},{:.1}", x + bw / 2.0, ry));
        }
        if i % days.len().div_ceil(7).max(1) == 0 {
            labels.push(json!({"x": x + bw / 2.0, "text": day_label(*d)}));
        }
    }
    let rate_ticks: Vec<Value> = [0.0, 0.25, 0.5, 0.75, 1.0]
        .iter()
        .map(|r| json!({"y": base - r * (base - TOP), "text": format!("{:.0}%", r * 100.0)}))
        .collect();
    let total: f64 = by_day.values().map(|v| v.0).sum();
    let missed: f64 = by_day.values().map(|v| v.1).sum();
    with(
        frame,
        json!({
            "bars": bars, "line": points.join(" "), "labels": labels, "empty": total == 0.0,
            "rate_ticks": rate_ticks, "rate_title": "missed rate",
            "desc": format!("{total} chats over {} days, {missed} missed; busiest day {busiest} chats.", days.len()),
        }),
    )
}

/// First-response buckets, one bar per source in each bucket.
pub fn buckets(rows: &[Map<String, Value>]) -> Value {
    let names = ["0-30s", "30-60s", "1-2m", "2-5m", "5-15m", "15-60m", "1h+"];
    let mut sources: Vec<String> = rows
        .iter()
        .filter_map(|r| r["source"].as_str().map(str::to_string))
        .collect();
    sources.dedup();
    let max = rows
        .iter()
        .filter_map(|r| num(r, "chats"))
        .fold(0.0, f64::max);
    let right = W - 10.0;
    let (frame, y) = frame(max, right, "answered chats", "time to first reply");
    let group = (right - LEFT) / names.len() as f64;
    let bw = group * 0.8 / sources.len().max(1) as f64;
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
        bars.push(json!({"x": x, "y": y(n), "w": bw, "h": (H - BOTTOM) - y(n), "fill": SOURCES[si % SOURCES.len()],
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
        .map(|(i, s)| json!({"name": s, "fill": SOURCES[i % SOURCES.len()]}))
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
    with(
        frame,
        json!({"bars": bars, "labels": labels, "legend": legend, "empty": rows.is_empty(),
                       "desc": format!("Answered chats by first-response time: {}.", desc.join("; "))}),
    )
}

/// Weekday x hour heatmap of chats: the colour says how many, and each
/// cell prints its count and, below it, the share missed (a PDF or an
/// email has no hover).
pub fn heatmap(rows: &[Map<String, Value>]) -> Value {
    let days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let max = rows
        .iter()
        .filter_map(|r| num(r, "chats"))
        .fold(0.0, f64::max);
    let (cw, ch, left, top) = (36.0, 32.0, 40.0, 18.0);
    let shade = |n: f64| {
        if max > 0.0 {
            0.08 + 0.92 * n / max
        } else {
            0.0
        }
    };
    let mut cells = Vec::new();
    for r in rows {
        let (Some(wd), Some(h), Some(n)) =
            (num(r, "weekday"), num(r, "local_hour"), num(r, "chats"))
        else {
            continue;
        };
        let missed = num(r, "missed").unwrap_or(0.0);
        let day = days[((wd as usize).clamp(1, 7)) - 1];
        let rate = if n > 0.0 { missed / n * 100.0 } else { 0.0 };
        let (x, y) = (left + h * cw, top + (wd - 1.0) * ch);
        cells.push(json!({
            "x": x, "y": y, "w": cw - 2.0, "h": ch - 2.0, "cx": x + (cw - 2.0) / 2.0,
            "opacity": shade(n), "n": int_text(n.round() as i64), "rate": format!("{rate:.0}%"),
            // light text on the dark half of the scale
            "ink": if shade(n) > 0.55 { "#ffffff" } else { "#1d2330" },
            "title": format!("{day} {:02}:00: {n} chats, {rate:.0}% missed", h),
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
    // The colour scale: five steps from none to the busiest cell.
    let scale: Vec<Value> = (0..5)
        .map(|i| {
            let n = max * i as f64 / 4.0;
            json!({"opacity": shade(n), "text": int_text(n.round() as i64)})
        })
        .collect();
    json!({
        "w": left + 24.0 * cw + 4.0, "h": top + 7.0 * ch + 4.0, "cells": cells, "fill": VOLUME, "scale": scale,
        "days": days.iter().enumerate().map(|(i, d)| json!({"y": top + i as f64 * ch + ch * 0.6, "text": d})).collect::<Vec<_>>(),
        "hours": (0..24).step_by(2).map(|h| json!({"x": left + h as f64 * cw + cw / 2.0, "text": format!("{h:02}")})).collect::<Vec<_>>(),
        "empty": rows.is_empty(), "desc": format!("Chats by weekday and local hour; {busiest}."),
    })
}

/// Failed syncs per day, every day of the period on the axis.
pub fn failed(rows: &[Map<String, Value>], p: Period) -> Value {
    let by_day: std::collections::HashMap<String, f64> = rows
        .iter()
        .map(|r| {
            (
                r["dt"].as_str().unwrap_or("").to_string(),
                num(r, "n").unwrap_or(0.0),
            )
        })
        .collect();
    let days: Vec<chrono::NaiveDate> = (0..p.days()).map(|i| p.from + Duration::days(i)).collect();
    let max = by_day.values().copied().fold(0.0, f64::max);
    let right = W - 10.0;
    let (frame, y) = frame(max, right, "failed messages", "local date");
    let slot = (right - LEFT) / days.len().max(1) as f64;
    let base = H - BOTTOM;
    let (mut bars, mut labels) = (Vec::new(), Vec::new());
    for (i, d) in days.iter().enumerate() {
        let n = by_day.get(&d.to_string()).copied().unwrap_or(0.0);
        let x = LEFT + i as f64 * slot + slot * 0.15;
        if n > 0.0 {
            bars.push(
                json!({"x": x, "y": y(n), "w": slot * 0.7, "h": base - y(n), "fill": FAILED,
                             "title": format!("{d}: {n} failed syncs")}),
            );
        }
        if i % days.len().div_ceil(7).max(1) == 0 {
            labels.push(json!({"x": x + slot * 0.35, "text": day_label(*d)}));
        }
    }
    let total: f64 = by_day.values().sum();
    with(
        frame,
        json!({"bars": bars, "labels": labels, "empty": rows.is_empty(),
                       "desc": format!("{total} failed syncs over {} days with failures.", rows.len())}),
    )
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

    /// Ticks fitted to the data, worked by hand: the busiest day 56 gives
    /// 0..60 by 20, not a scale to 100.
    #[test]
    fn ticks_are_nice_and_fit_the_data() {
        assert_eq!(nice_ticks(56.0), vec![0.0, 20.0, 40.0, 60.0]);
        assert_eq!(nice_ticks(100.0), vec![0.0, 25.0, 50.0, 75.0, 100.0]);
        assert_eq!(nice_ticks(7.0), vec![0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(nice_ticks(3.0), vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(nice_ticks(1234.0), vec![0.0, 500.0, 1000.0, 1500.0]);
        assert_eq!(nice_ticks(0.0), vec![0.0, 1.0]);
        for max in [9.0, 41.0, 56.0, 99.0, 101.0, 733.0, 12_345.0] {
            let t = nice_ticks(max);
            let top = *t.last().unwrap();
            assert!(top >= max && top < max * 1.7 + 1.0, "{max}: {t:?}");
            assert!((3..=6).contains(&t.len()), "{max}: {t:?}");
        }
    }
}
