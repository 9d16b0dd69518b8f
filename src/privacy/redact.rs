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
    let card = re(&CARD, r"\b\d(?:[ -]?\d){12,18}\b");
    let ipv4 = re(
        &IPV4,
        r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b",
    );
    let ipv6 = re(&IPV6, r"(?i)[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}");
    let phone = re(
        &PHONE,
        r"\+\d[\d ().-]{5,}\d|\(?\b\d{2,5}\)?[ .-]\(?\d{2,5}\)?[ .-]\d{2,5}(?:[ .-]\d{2,5})?\b",
    );
    let s = email.replace_all(s, "[email]");
    let s = card.replace_all(&s, |c: &Captures<'_>| {
        if luhn(&c[0]) {
            "[card]".to_string()
        } else {
            c[0].to_string()
        }
    });
    let s = ipv4.replace_all(&s, "[ip]");
    let s = ipv6.replace_all(&s, |c: &Captures<'_>| {
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
    });
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
