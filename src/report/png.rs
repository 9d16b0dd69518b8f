//! The report's charts as PNG images, for email: Gmail and Outlook show no
//! inline SVG. Each chart is cut out of the rendered report (the same SVG
//! a browser shows), made a standalone SVG document with the page's chart
//! styles, and rasterized by resvg at twice its size (sharp on a phone's
//! screen). Text is set in DejaVu Sans, compiled in: a fresh machine may
//! have no fonts at all, and the images must not depend on the one that
//! sends them.

use std::sync::{Arc, OnceLock};

use resvg::{tiny_skia, usvg};

use crate::error::{Error, Result};

/// One chart of the report, rasterized.
#[derive(Debug, Clone)]
pub struct Chart {
    /// The report section it comes from (`daily`, `heatmap`, ...); also its
    /// Content-ID in an email.
    pub id: String,
    /// Its `<title>`, for the image's alt text.
    pub title: String,
    /// Its drawn size in CSS pixels (the PNG has twice as many).
    pub width: u32,
    pub height: u32,
    pub png: Vec<u8>,
}

/// Pixels per CSS pixel in the PNG.
const SCALE: f32 = 2.0;

/// The page's chart styles (report.html.j2, `svg text`), which a
/// standalone SVG does not inherit.
const STYLE: &str = "text { font-family: 'DejaVu Sans'; font-size: 11px; fill: #5b6474 } \
                     text.axis { font-size: 12px; fill: #1d2330 }";

fn options() -> &'static usvg::Options<'static> {
    static OPTIONS: OnceLock<usvg::Options<'static>> = OnceLock::new();
    OPTIONS.get_or_init(|| {
        let mut db = usvg::fontdb::Database::new();
        db.load_font_data(dejavu::sans::regular().to_vec());
        db.load_font_data(dejavu::sans::bold().to_vec());
        db.set_sans_serif_family("DejaVu Sans");
        usvg::Options {
            font_family: "DejaVu Sans".into(),
            fontdb: Arc::new(db),
            style_sheet: Some(STYLE.into()),
            ..usvg::Options::default()
        }
    })
}

/// Every chart (`<svg>` inside a `<section id=...>`) of a rendered report,
/// in page order, as PNG.
pub fn charts(report_html: &str) -> Result<Vec<Chart>> {
    let mut out = Vec::new();
    let mut rest = report_html;
    while let Some(start) = rest.find("<svg ") {
        let section = rest[..start]
            .rfind("<section id=\"")
            .map(|i| &rest[i + 13..])
            .and_then(|s| s.split('"').next())
            .unwrap_or("chart")
            .to_string();
        let Some(len) = rest[start..].find("</svg>") else {
            break;
        };
        let svg = &rest[start..start + len + 6];
        out.push(rasterize(&section, svg)?);
        rest = &rest[start + len + 6..];
    }
    Ok(out)
}

/// One `<svg viewBox="0 0 W H" ...>` of the report as a PNG.
fn rasterize(id: &str, svg: &str) -> Result<Chart> {
    let bad = |why: String| Error::Internal(format!("report chart {id}: {why}"));
    let view: Vec<f32> = svg
        .split("viewBox=\"")
        .nth(1)
        .and_then(|v| v.split('"').next())
        .map(|v| {
            v.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let [_, _, w, h] = view[..] else {
        return Err(bad("no viewBox".into()));
    };
    let title = svg
        .split("<title")
        .nth(1)
        .and_then(|t| t.split_once('>'))
        .and_then(|(_, t)| t.split("</title>").next())
        .unwrap_or(id)
        .to_string();
    // The report's SVG is HTML; as a document of its own it needs the SVG
    // namespace and a size.
    let doc = svg.replacen(
        "<svg ",
        &format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" "),
        1,
    );
    let tree = usvg::Tree::from_str(&doc, options()).map_err(|e| bad(e.to_string()))?;
    let (pw, ph) = ((w * SCALE).ceil() as u32, (h * SCALE).ceil() as u32);
    let mut pixmap = tiny_skia::Pixmap::new(pw, ph).ok_or_else(|| bad(format!("size {w}x{h}")))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(
        &tree,
        tiny_skia::Transform::from_scale(SCALE, SCALE),
        &mut pixmap.as_mut(),
    );
    let png = pixmap.encode_png().map_err(|e| bad(e.to_string()))?;
    Ok(Chart {
        id: id.to_string(),
        title: html_unescape(&title),
        width: w.ceil() as u32,
        height: h.ceil() as u32,
        png,
    })
}

/// The few entities the template's auto-escaping writes.
fn html_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#x2f;", "/")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    /// A chart with text: the PNG has the drawn size times two, and the
    /// text is drawn (dark pixels where only a light bar would be without
    /// a font).
    #[test]
    fn a_chart_with_text_rasterizes_with_the_compiled_in_font() {
        let html = "<section id=\"daily\"><svg viewBox=\"0 0 120 40\" role=\"img\"><title>Daily &amp; more</title>\
                    <rect x=\"0\" y=\"30\" width=\"120\" height=\"10\" fill=\"#eeeeee\"/>\
                    <text class=\"axis\" x=\"2\" y=\"20\">Chats 123</text></svg></section>";
        let charts = super::charts(html).unwrap();
        assert_eq!(charts.len(), 1);
        let c = &charts[0];
        assert_eq!(
            (c.id.as_str(), c.title.as_str(), c.width, c.height),
            ("daily", "Daily & more", 120, 40)
        );
        let img = resvg::tiny_skia::Pixmap::decode_png(&c.png).unwrap();
        assert_eq!((img.width(), img.height()), (240, 80));
        // The text's ink (#1d2330, well below 0x80) is in the top half.
        let dark = img
            .pixels()
            .iter()
            .take(240 * 50)
            .filter(|p| p.red() < 0x80)
            .count();
        assert!(dark > 100, "no text drawn: {dark} dark pixels");
    }
}
