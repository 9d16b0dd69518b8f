//! Date windows in the pipeline timezone: the default range from the
//! watermark (minus lookback) to today, split into windows of at most N days.

use std::fmt;

use chrono::{Duration, NaiveDate};

/// Local dates `from..=to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.from, self.to)
    }
}

impl Window {
    /// Every date in the window.
    pub fn days(&self) -> impl Iterator<Item = NaiveDate> {
        self.from.iter_days().take_while({
            let to = self.to;
            move |d| *d <= to
        })
    }
}

/// The range a run extracts when the user gave no dates: from the watermark
/// minus `lookback_days` (first run or full refresh: `start_date`) to today.
/// The watermark day itself is always re-read: it may have been partial.
pub fn default_range(
    watermark: Option<NaiveDate>,
    start_date: NaiveDate,
    lookback_days: u32,
    today: NaiveDate,
) -> Window {
    let from = match watermark {
        Some(w) => (w - Duration::days(lookback_days as i64)).max(start_date),
        None => start_date,
    };
    Window { from, to: today }
}

/// Splits `range` into consecutive windows of at most `days` days.
pub fn split(range: Window, days: u32) -> Vec<Window> {
    let mut out = Vec::new();
    let mut from = range.from;
    while from <= range.to {
        let to = (from + Duration::days(days.max(1) as i64 - 1)).min(range.to);
        out.push(Window { from, to });
        from = to + Duration::days(1);
    }
    out
}

/// Whether committing `w` may move the watermark: only when the window joins
/// the data already committed, so the watermark never jumps over a gap.
pub fn extends_watermark(watermark: Option<NaiveDate>, start_date: NaiveDate, w: Window) -> bool {
    match watermark {
        Some(wm) => w.from <= wm + Duration::days(1),
        None => w.from <= start_date,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn default_range_rereads_lookback_and_watermark_day() {
        let w = default_range(Some(d("2025-01-10")), d("2025-01-01"), 2, d("2025-01-20"));
        assert_eq!(
            w,
            Window {
                from: d("2025-01-08"),
                to: d("2025-01-20")
            }
        );
        let w = default_range(None, d("2025-01-01"), 2, d("2025-01-20"));
        assert_eq!(w.from, d("2025-01-01"));
        let w = default_range(Some(d("2025-01-02")), d("2025-01-01"), 5, d("2025-01-20"));
        assert_eq!(w.from, d("2025-01-01"));
    }

    #[test]
    fn split_covers_every_day_once() {
        let ws = split(
            Window {
                from: d("2025-01-01"),
                to: d("2025-01-17"),
            },
            7,
        );
        assert_eq!(ws.len(), 3);
        assert_eq!(
            ws[2],
            Window {
                from: d("2025-01-15"),
                to: d("2025-01-17")
            }
        );
        let days: Vec<_> = ws.iter().flat_map(|w| w.days()).collect();
        assert_eq!(days.len(), 17);
        assert!(split(
            Window {
                from: d("2025-01-02"),
                to: d("2025-01-01")
            },
            7
        )
        .is_empty());
    }

    #[test]
    fn watermark_never_jumps_a_gap() {
        let w = |a, b| Window {
            from: d(a),
            to: d(b),
        };
        assert!(extends_watermark(
            Some(d("2025-01-10")),
            d("2025-01-01"),
            w("2025-01-11", "2025-01-17")
        ));
        assert!(extends_watermark(
            Some(d("2025-01-10")),
            d("2025-01-01"),
            w("2025-01-03", "2025-01-17")
        ));
        assert!(!extends_watermark(
            Some(d("2025-01-10")),
            d("2025-01-01"),
            w("2025-01-12", "2025-01-17")
        ));
        assert!(!extends_watermark(
            None,
            d("2025-01-01"),
            w("2025-03-01", "2025-03-07")
        ));
    }
}
