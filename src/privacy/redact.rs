//! Redaction of personal data inside free text: emails, phone numbers,
//! payment card numbers (Luhn-checked) and IP addresses become `[email]`,
//! `[phone]`, `[card]` and `[ip]`; order numbers, dates, times, prices and
//! tracking codes stay (the tests hold a corpus of both). Also: URLs
//! without their query string, and IP addresses truncated to a network.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::OnceLock;

use regex::{Captures, Regex};

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("static regex"))
}

/// Free text with personal data replaced.
pub fn text(s: &str) -> String {
    static EMAIL: OnceLock<Regex> = OnceLock::new();
    static CARD: OnceLock<Regex> = OnceLock::new();
    static IPV4: OnceLock<Regex> = OnceLock::new();
    static IPV6: OnceLock<Regex> = OnceLock::new();
    static PHONE: OnceLock<Regex> = OnceLock::new();
    let email = re(
        &EMAIL,
        r"(?i)[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}",
    );
    // What each pattern needs: text without it is left alone (most
    // messages hold no digit, `@` or `:`, and skip every regex).
    let (digit, at, colon) = (
        s.bytes().any(|b| b.is_ascii_digit()),
        s.contains('@'),
        s.contains(':'),
    );
    if !digit && !at && !colon {
        return s.to_string();
    }
    // ASCII word boundaries (`(?-u:\b)`): the regex engine's fast path; a
    // Unicode one falls back to backtracking on every message.
    let card = re(&CARD, r"(?-u:\b)\d(?:[ -]?\d){12,18}(?-u:\b)");
    let ipv4 = re(
        &IPV4,
        r"(?-u:\b)(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?-u:\b)",
    );
    let ipv6 = re(&IPV6, r"(?i)[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}");
    let phone = re(
        &PHONE,
        r"\+\d[\d ().-]{5,}\d|\(?(?-u:\b)\d{2,5}\)?[ .-]\(?\d{2,5}\)?[ .-]\d{2,5}(?:[ .-]\d{2,5})?(?-u:\b)",
    );
    let s = if at {
        email.replace_all(s, "[email]")
    } else {
        std::borrow::Cow::Borrowed(s)
    };
    if !digit {
        return if colon {
            ipv6_redacted(ipv6, &s)
        } else {
            s.into_owned()
        };
    }
    let s = card.replace_all(&s, |c: &Captures<'_>| {
        if luhn(&c[0]) {
            "[card]".to_string()
        } else {
            c[0].to_string()
        }
    });
    let s = ipv4.replace_all(&s, "[ip]");
    let s = if colon {
        std::borrow::Cow::Owned(ipv6_redacted(ipv6, &s))
    } else {
        s
    };
    let out = phone.replace_all(&s, |c: &Captures<'_>| {
        let m = c.get(0).expect("whole match");
        if is_phone(&s[..m.start()], m.as_str()) {
            "[phone]".to_string()
        } else {
            m.as_str().to_string()
        }
    });
    out.into_owned()
}

/// JSON text with every string value put through [`value`] (object keys
/// and the rest of the text as they are), without building the document:
/// each string literal is found in the text and replaced only when its
/// value changes. `text` must be valid JSON; None when a literal does not
/// close.
pub fn json(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let (mut last, mut i) = (0, 0);
    while i < b.len() {
        if b[i] != b'"' {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < b.len() && b[j] != b'"' {
            j += if b[j] == b'\\' { 2 } else { 1 };
        }
        if j >= b.len() {
            return None;
        }
        let next = b[j + 1..].iter().find(|c| !c.is_ascii_whitespace());
        if next != Some(&b':') {
            let literal = &text[i..=j];
            let s: std::borrow::Cow<'_, str> = if literal.contains('\\') {
                serde_json::from_str::<String>(literal).ok()?.into()
            } else {
                literal[1..literal.len() - 1].into()
            };
            let redacted = value(&s);
            if redacted != s {
                out.push_str(&text[last..i]);
                out.push_str(&serde_json::to_string(&redacted).ok()?);
                last = j + 1;
            }
        }
        i = j + 1;
    }
    out.push_str(&text[last..]);
    Some(out)
}

/// `s` with its IPv6 addresses replaced by `[ip]`.
fn ipv6_redacted(ipv6: &Regex, s: &str) -> String {
    ipv6.replace_all(s, |c: &Captures<'_>| {
        let m = &c[0];
        let hex = m.chars().filter(char::is_ascii_hexdigit).count();
        let ip = hex >= 4
            && m.parse::<Ipv6Addr>().is_ok()
            && (m.contains("::") || m.matches(':').count() == 7);
        if ip {
            "[ip]".to_string()
        } else {
            m.to_string()
        }
    })
    .into_owned()
}

/// A JSON string value (in `_extra` or a rejected record): as [`text`],
/// and a value that is a phone number on its own (`"5551234567"`, no
/// separators needed) becomes `[phone]`.
pub fn value(s: &str) -> String {
    let t = s.trim();
    let digits = t.chars().filter(char::is_ascii_digit).count();
    let phone_like = t
        .chars()
        .all(|c| c.is_ascii_digit() || " +().-".contains(c))
        && (7..=15).contains(&digits)
        && !is_date(t);
    if phone_like {
        return "[phone]".into();
    }
    text(s)
}

/// Whether a phone-shaped match is a phone: 7 to 15 digits, not a date,
/// a price or a number named as an order, invoice, ticket or tracking one.
fn is_phone(before: &str, m: &str) -> bool {
    let digits = m.chars().filter(char::is_ascii_digit).count();
    if !(7..=15).contains(&digits) || is_date(m) {
        return false;
    }
    let before = before.trim_end().to_ascii_lowercase();
    let named = [
        "#", "order", "invoice", "ticket", "ref", "tracking", "no.", "nr", "number", "$", "€", "£",
    ];
    if named
        .iter()
        .any(|w| before.ends_with(w) || before.ends_with(&format!("{w}:")))
    {
        return false;
    }
    // A price: the last group is two digits after a point or comma.
    let last_sep = m.rfind(|c: char| !c.is_ascii_digit());
    !matches!(last_sep, Some(i) if m[i..].starts_with(['.', ',']) && m.len() - i - 1 == 2)
}

/// A date written with separators: 2025-10-27, 27.10.2025, 10/27/25.
fn is_date(s: &str) -> bool {
    static DATE: OnceLock<Regex> = OnceLock::new();
    re(
        &DATE,
        r"^(?:\d{4}[./-]\d{1,2}[./-]\d{1,2}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4})$",
    )
    .is_match(s.trim())
}

/// Whether the digits of `s` pass the Luhn check (payment card numbers).
fn luhn(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                *d
            }
        })
        .sum();
    sum % 10 == 0
}

/// A URL without its query string and fragment (where identifiers ride).
pub fn url(s: &str) -> String {
    match url::Url::parse(s.trim()) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => s.split(['?', '#']).next().unwrap_or("").to_string(),
    }
}

/// An IP address truncated to its network: IPv4 to the /24 (`a.b.c.0`),
/// IPv6 to the /48. Text that is not an address is dropped (None): it
/// cannot be truncated safely.
pub fn truncate_ip(s: &str) -> Option<String> {
    match s.trim().parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            Some(format!("{a}.{b}.{c}.0"))
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            Some(Ipv6Addr::new(seg[0], seg[1], seg[2], 0, 0, 0, 0, 0).to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    /// JSON redacted in its text equals JSON redacted as a document (every
    /// string value through `value`, keys kept), escapes and nesting too.
    #[test]
    fn json_text_is_redacted_as_its_values() {
        fn walk(v: &mut serde_json::Value) {
            match v {
                serde_json::Value::String(s) => *s = value(s),
                serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
                serde_json::Value::Object(o) => o.values_mut().for_each(walk),
                _ => {}
            }
        }
        for text in [
            r#"{"visitorCustom2":"callback +44 20 7946 0140 / Ann.Lee.7@Example.ORG","n":5551234567}"#,
            r#"{"ann@example.org": "key stays", "a": ["5551234567", {"b": "ip 203.0.113.9"}]}"#,
            r#"{"q": "say \"hi\" to bob@example.com\n", "u": "\u00e9t\u00e9 4111 1111 1111 1111"}"#,
            r#"["order #123-456-789", "2025-10-27", "$49.99"]"#,
            r#"{"nothing": "to see", "empty": ""}"#,
        ] {
            let mut want: serde_json::Value = serde_json::from_str(text).unwrap();
            walk(&mut want);
            let got: serde_json::Value = serde_json::from_str(&json(text).unwrap()).unwrap();
            assert_eq!(got, want, "{text}");
        }
        assert_eq!(json(r#"{"a": "unclosed}"#), None);
    }

    use super::*;

    /// Messages with personal data, and what is left of each.
    const REDACTED: &[(&str, &str)] = &[
        (
            "Hi, I'm Ann — ann.lee+shop@Example.co.uk",
            "Hi, I'm Ann — [email]",
        ),
        (
            "mail me at JOHN_DOE@mail.example.com.",
            "mail me at [email].",
        ),
        ("call +1 (555) 123-4567 after 5", "call [phone] after 5"),
        ("my number is 555-123-4567", "my number is [phone]"),
        (
            "tel: 0151 123 4567 or +44 20 7946 0958",
            "tel: [phone] or [phone]",
        ),
        ("555.123.4567 is my cell", "[phone] is my cell"),
        (
            "card 4111 1111 1111 1111 exp 12/27",
            "card [card] exp 12/27",
        ),
        ("paid with 5500-0000-0000-0004", "paid with [card]"),
        ("my ip is 192.168.1.23", "my ip is [ip]"),
        ("from 2001:db8::8a2e:370:7334 today", "from [ip] today"),
        (
            "<p>Email: <b>bob@example.org</b> Phone: +49 30 123456</p>",
            "<p>Email: <b>[email]</b> Phone: [phone]</p>",
        ),
    ];

    /// Messages without personal data: they stay as they are.
    const KEPT: &[&str] = &[
        "Order #123-456-789 has not arrived",
        "order 12345678 was charged twice",
        "Invoice: 2025-000123, due 2025-10-27",
        "It happened on 27.10.2025 at 10:30:45",
        "between 10/27/25 and 11/03/25",
        "the total was $1 299.00 and then €12 345.67",
        "tracking 1Z999AA10123456784 via UPS",
        "tracking number: 9400 1000 0000 0000 0000 00",
        "version 2.4.1 fixed it; ticket 55512",
        "The meeting is at 14:00, room 301",
        "card ending 4242, 3 items at 19.99 each",
        "SKU 100-200-3 back in stock",
        "Note:: see the FAQ",
    ];

    #[test]
    fn personal_data_in_text_is_replaced() {
        for (input, expected) in REDACTED {
            assert_eq!(text(input), *expected, "{input}");
        }
    }

    #[test]
    fn order_numbers_dates_times_prices_and_tracking_codes_stay() {
        for input in KEPT {
            assert_eq!(text(input), *input);
        }
    }

    #[test]
    fn values_urls_and_addresses() {
        assert_eq!(value("5551234567"), "[phone]");
        assert_eq!(value("+1 555 123 4567"), "[phone]");
        assert_eq!(value("2025-10-27"), "2025-10-27");
        assert_eq!(value("blue"), "blue");
        assert_eq!(
            url("https://shop.example.com/cart?email=a%40b.com&id=7#top"),
            "https://shop.example.com/cart"
        );
        assert_eq!(url("/pricing?utm=x"), "/pricing");
        assert_eq!(truncate_ip("203.0.113.77").as_deref(), Some("203.0.113.0"));
        assert_eq!(
            truncate_ip("2001:db8:85a3:8d3:1319:8a2e:370:7348").as_deref(),
            Some("2001:db8:85a3::")
        );
        assert_eq!(truncate_ip("unknown"), None);
        assert!(luhn("4111111111111111") && !luhn("4111111111111112"));
    }
}
