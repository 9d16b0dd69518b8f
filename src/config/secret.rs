//! A string that never prints: `Debug` and `Display` show `***`, so a secret
//! can sit in config structs that get logged or put into errors. Every secret
//! is also registered process-wide, so that [`redact`] can remove it from text
//! that came from elsewhere (an API that echoes the token in an error body)
//! before that text reaches a log, stderr or a table.

use std::fmt;
use std::sync::RwLock;

/// What a redacted secret is replaced with.
pub const REDACTED: &str = "***";

/// Secrets shorter than this are not searched for (they would match
/// ordinary text); no real credential is this short.
const MIN_REDACTED_LEN: usize = 4;

static REGISTRY: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Registers a value to be removed by [`redact`] (e.g. the base64 form of
/// Basic credentials), in every form a server may echo it in (see
/// [`encodings`]).
pub fn register(value: &str) {
    if value.len() < MIN_REDACTED_LEN {
        return;
    }
    let mut r = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
    for form in encodings(value) {
        if !r.contains(&form) {
            r.push(form);
        }
    }
    // Longest first, so a secret that contains another is removed whole.
    r.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// The forms of `value` an echo may carry: raw; JSON-escaped, also with
/// `\/` for `/` (as PHP writes it) and every character as `\uXXXX`;
/// percent-encoded (upper- and lower-case hex, `+` or `%20` for a space,
/// `/` kept or encoded); base64 (standard and URL-safe, padded or not).
pub fn encodings(value: &str) -> Vec<String> {
    use base64::Engine;
    let mut out = vec![value.to_string()];
    let json = serde_json::to_string(value).unwrap_or_default();
    let json = json.trim_matches('"').to_string();
    out.push(json.replace('/', "\\/"));
    out.push(json);
    out.push(
        value
            .chars()
            .map(|c| format!("\\u{:04x}", c as u32))
            .collect(),
    );
    for keep_slash in [false, true] {
        let upper = percent(value, keep_slash);
        out.push(upper.replace("%20", "+"));
        out.push(lower_hex(&upper));
        out.push(upper);
    }
    let b = value.as_bytes();
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    out.extend(engines.iter().map(|e| e.encode(b)));
    out.retain(|f| f.len() >= MIN_REDACTED_LEN);
    out.sort();
    out.dedup();
    out
}

/// `value` with everything but `A-Za-z0-9-._~` (and `/` when kept) as
/// `%XX`, upper-case hex.
fn percent(value: &str, keep_slash: bool) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The `%XX` escapes of `text` in lower-case hex.
fn lower_hex(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let esc = rest.get(i..i + 3).unwrap_or(&rest[i..]);
        out.push_str(&esc.to_ascii_lowercase());
        rest = &rest[i + esc.len()..];
    }
    out.push_str(rest);
    out
}

/// `text` that came from outside (an API's error body, a server's
/// message), safe to print on one line: secrets redacted and every control
/// character escaped (`\n`, `\u{1b}`...), so that it can neither forge a
/// log line nor send escape codes to a terminal.
pub fn clean(text: &str) -> String {
    escape_controls(&redact(text))
}

/// `text` with control characters (C0, DEL, C1) and the bidirectional
/// overrides written as escapes.
pub fn escape_controls(text: &str) -> String {
    if !text.chars().any(needs_escape) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    out
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// `text` with every registered secret replaced by `***`.
pub fn redact(text: &str) -> String {
    let r = REGISTRY.read().unwrap_or_else(|e| e.into_inner());
    let mut out = text.to_string();
    for s in r.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), REDACTED);
        }
    }
    out
}

/// A credential resolved from the pipeline file; only [`Secret::expose`] shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps (and registers) a value.
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        register(&value);
        Secret(value)
    }
    /// The value, for the one place that sends it (HTTP auth headers).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A `tracing` writer that redacts registered secrets from every line and
/// keeps each event on one line: control characters inside it are escaped
/// (a newline in an API's message cannot forge a second log line, nor an
/// escape code reach the terminal); its final newline, and the colour codes
/// (`ESC[...m`) of a terminal log, are kept.
pub struct RedactingWriter<W>(pub W);

impl<W: std::io::Write> std::io::Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = redact(&String::from_utf8_lossy(buf));
        let (body, end) = match text.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (text.as_str(), ""),
        };
        let mut out = String::with_capacity(text.len());
        let mut rest = body;
        // Colour codes: ESC [ digits and ; m.
        while let Some(i) = rest.find('\u{1b}') {
            out.push_str(&escape_controls(&rest[..i]));
            let after = &rest[i + 1..];
            let sgr = after.strip_prefix('[').and_then(|a| {
                let n = a.find(|c: char| !(c.is_ascii_digit() || c == ';'))?;
                (a[n..].starts_with('m')).then_some(n + 2)
            });
            match sgr {
                Some(n) => {
                    out.push_str(&rest[i..i + 1 + n]);
                    rest = &after[n..];
                }
                None => {
                    out.push_str("\\u{1b}");
                    rest = after;
                }
            }
        }
        out.push_str(&escape_controls(rest));
        out.push_str(end);
        self.0.write_all(out.as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secrets_are_redacted_anywhere_in_text() {
        let _s = Secret::new("tok-unit-REDACT-42");
        register("YWNjdDp0b2stdW5pdA==");
        let text = "401: {\"detail\":\"bad token tok-unit-REDACT-42\", \"auth\":\"Basic YWNjdDp0b2stdW5pdA==\"}";
        let out = redact(text);
        assert!(
            !out.contains("tok-unit-REDACT-42") && !out.contains("YWNjdDp0b2stdW5pdA=="),
            "{out}"
        );
        assert_eq!(out.matches(REDACTED).count(), 2);
        assert_eq!(redact("ab"), "ab", "short text untouched");
    }

    /// Issue 24.5: every form a server may echo a secret in is redacted.
    #[test]
    fn escaped_and_encoded_echoes_are_redacted() {
        use base64::Engine;
        let token = "tok/unit+ENC\"42 x";
        let _s = Secret::new(token);
        let echoes = [
            r#"tok\/unit+ENC\"42 x"#.to_string(),
            r#"tok/unit+ENC\"42 x"#.to_string(),
            "tok%2Funit%2BENC%2242%20x".into(),
            "tok%2funit%2bENC%2242%20x".into(),
            "tok/unit%2BENC%2242+x".into(),
            base64::engine::general_purpose::STANDARD.encode(token),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token),
            token
                .chars()
                .map(|c| format!("\\u{:04x}", c as u32))
                .collect(),
        ];
        for echo in &echoes {
            let out = redact(&format!("{{\"detail\":\"bad token {echo}!\"}}"));
            assert_eq!(out, "{\"detail\":\"bad token ***!\"}", "{echo}");
        }
    }

    /// Issue 24.11: text from outside prints on one line, without escape codes.
    #[test]
    fn control_characters_from_outside_are_escaped() {
        assert_eq!(
            clean("bad\n2026-01-01 INFO stream finished status=\"success\"\u{1b}[2J\u{7}"),
            "bad\\n2026-01-01 INFO stream finished status=\"success\"\\u{1b}[2J\\u{7}"
        );
        let mut w = RedactingWriter(Vec::new());
        std::io::Write::write_all(
            &mut w,
            b"\x1b[32m INFO\x1b[0m error=oops\nforged \x1b]0;title\x07\n",
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(w.0).unwrap(),
            "\u{1b}[32m INFO\u{1b}[0m error=oops\\nforged \\u{1b}]0;title\\u{7}\n"
        );
    }
}
