//! Unit tests of the HTTP client: Retry-After, paths, backoff.

use super::*;

#[test]
fn retry_after_forms() {
    assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
    assert_eq!(parse_retry_after("0"), Some(Duration::ZERO));
    assert_eq!(
        parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
        Some(Duration::ZERO)
    );
    assert_eq!(parse_retry_after("soon"), None);
    assert_eq!(parse_retry_after("-1"), None);
    assert_eq!(parse_retry_after("NaN"), None);
}

#[test]
fn hostile_retry_after_values_never_panic() {
    assert_eq!(
        parse_retry_after("99999999999999999999"),
        Some(Duration::MAX)
    );
    assert_eq!(parse_retry_after("1e300"), Some(Duration::MAX));
    assert_eq!(parse_retry_after("inf"), Some(Duration::MAX));
    assert_eq!(
        parse_retry_after("999999"),
        Some(Duration::from_secs(999_999))
    );
    let far = parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT").unwrap();
    assert!(far > Duration::from_secs(86_400 * 365 * 7000), "{far:?}");
}

#[test]
fn api_values_in_paths_are_one_encoded_segment_and_stay_under_base_url() {
    let c = HttpClient::new(
        "t",
        "http://127.0.0.1:9/v1/api/",
        Auth::Bearer(Secret::new("x")),
        &HttpConfig::default(),
        Some(60),
    )
    .unwrap();
    let path = |id: &str| c.endpoint(&["tenants", "T", "conversations", id, "messages", ""], &[]);
    let (url, label) = path("../../../../admin/export").unwrap();
    assert_eq!(
        url.path(),
        "/v1/api/tenants/T/conversations/..%2F..%2F..%2F..%2Fadmin%2Fexport/messages/"
    );
    assert_eq!(
        label,
        "/tenants/T/conversations/..%2F..%2F..%2F..%2Fadmin%2Fexport/messages/"
    );
    let (url, _) = path("c2?evil=1").unwrap();
    assert_eq!(
        (url.path(), url.query()),
        (
            "/v1/api/tenants/T/conversations/c2%3Fevil=1/messages/",
            None
        )
    );
    let (url, _) = path("c3#frag").unwrap();
    assert_eq!(
        (url.path(), url.fragment()),
        ("/v1/api/tenants/T/conversations/c3%23frag/messages/", None)
    );
    for bad in ["..", ".", ""] {
        assert!(path(bad).is_err(), "`{bad}` refused");
    }
    let (url, label) = c
        .endpoint(&["crm", "contacts"], &[("company_id", "1&x=2")])
        .unwrap();
    assert_eq!(url.query(), Some("company_id=1%26x%3D2"));
    assert_eq!(label, "/crm/contacts?company_id=1%26x%3D2");
}

#[test]
fn backoff_grows_and_is_capped() {
    let cfg = HttpConfig {
        backoff_base_ms: 100,
        backoff_max_ms: 1000,
        ..HttpConfig::default()
    };
    let c = HttpClient::new(
        "t",
        "http://127.0.0.1/api",
        Auth::Bearer(Secret::new("x")),
        &cfg,
        Some(60),
    )
    .unwrap();
    for attempt in 1..10 {
        let d = c.backoff(attempt).as_millis() as u64;
        let cap = (100u64 << attempt).min(1000);
        assert!(
            d >= cap / 2 && d <= cap,
            "attempt {attempt}: {d}ms vs cap {cap}"
        );
    }
}
