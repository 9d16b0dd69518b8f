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
/// Basic credentials).
pub fn register(value: &str) {
    if value.len() < MIN_REDACTED_LEN {
        return;
    }
    let mut r = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
    if !r.iter().any(|s| s == value) {
        r.push(value.to_string());
        // Longest first, so a secret that contains another is removed whole.
        r.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
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

/// A `tracing` writer that redacts registered secrets from every line.
pub struct RedactingWriter<W>(pub W);

impl<W: std::io::Write> std::io::Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(redact(&text).as_bytes())?;
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
}
