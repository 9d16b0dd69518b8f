//! Keyed hashing of personal values: HMAC-SHA256 (RustCrypto's `hmac` and
//! `sha2`) under the pipeline's key, as 64 hex digits, after the value is
//! normalized for its kind so that one person hashes alike everywhere.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::schema::Personal;

/// HMAC-SHA256 of `value` under `key`, in lower-case hex.
pub fn keyed(key: &str, value: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes a key of any size");
    mac.update(value.as_bytes());
    let bytes = mac.finalize().into_bytes();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `value` is a hash [`keyed`] made: 64 lower-case hex digits (no
/// email, phone or id chatlake reads looks like one).
pub fn is_hash(value: &str) -> bool {
    value.len() == 64
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `value` as it is hashed: an email trimmed and lower-cased, a phone
/// reduced to its digits (a leading `+` kept), anything else trimmed.
pub fn normalize(kind: Option<Personal>, value: &str) -> String {
    let v = value.trim();
    match kind {
        Some(Personal::Email) => v.to_lowercase(),
        Some(Personal::Phone) => {
            let digits: String = v.chars().filter(char::is_ascii_digit).collect();
            if v.starts_with('+') {
                format!("+{digits}")
            } else {
                digits
            }
        }
        _ => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        // RFC 4231, test case 2.
        assert_eq!(
            keyed("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn one_person_normalizes_alike() {
        let e = Some(Personal::Email);
        assert_eq!(
            normalize(e, "  Ann.Lee@Example.COM "),
            "ann.lee@example.com"
        );
        let p = Some(Personal::Phone);
        assert_eq!(normalize(p, "+1 (555) 123-4567"), "+15551234567");
        assert_eq!(normalize(p, "555.123.4567"), "5551234567");
        assert_eq!(normalize(Some(Personal::Name), " Ann Lee "), "Ann Lee");
    }
}
