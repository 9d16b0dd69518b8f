//! Paging through a `{count, next, previous, results}` listing: each page
//! read with [`HttpClient`]'s retries and limits, its records handed on as raw
//! JSON text one page at a time, `next` followed only within the source's
//! origin and path, loops and endless listings stopped, and a listing whose
//! rows differ from its `count` read once more before it is refused. Also the
//! helpers `chatlake check` uses to count one page.

use serde_json::value::RawValue;
use url::Url;

use super::http::HttpClient;
use crate::error::Result;

/// A `{count, next, previous, results}` listing read to its end.
#[derive(Debug, Default)]
pub struct Listing {
    /// Every record of every page, in order, as raw JSON text (a source
    /// parses them one at a time).
    pub records: Vec<Box<RawValue>>,
    /// Pages read.
    pub pages: u64,
    /// Bytes of the pages' bodies.
    pub bytes: u64,
    /// What the API said the listing holds (`count` of the last page).
    pub count: Option<u64>,
}

/// What paging through one listing saw.
#[derive(Debug, Default)]
struct PageStats {
    pages: u64,
    bytes: u64,
    rows: u64,
    count: Option<u64>,
}

/// Pages of one listing at most; a guard against a server that never ends.
const MAX_PAGES: u64 = 100_000;

impl HttpClient {
    /// Reads a paginated listing from `first`, following each absolute `next`
    /// URL. A `next` on another scheme, host or port than `first` (the
    /// credentials would go there) or one already read (a loop) stops with an
    /// error. When the rows received differ from `count` (the data moved while
    /// paging), the listing is read once more; a second mismatch is an error,
    /// so nothing partial is committed.
    pub async fn get_listing(&self, first: Url, endpoint: &str) -> Result<Listing> {
        let (records, stats) = self
            .get_listing_each(first, endpoint, Vec::new, |all, page| {
                all.extend(page.iter().map(|r| (*r).to_owned()))
            })
            .await?;
        Ok(Listing {
            records,
            pages: stats.pages,
            bytes: stats.bytes,
            count: stats.count,
        })
    }

    /// As [`HttpClient::get_listing`], handing each page's records (raw JSON)
    /// to `on_page` as it arrives, so only one page is held at a time. Each attempt
    /// starts from a fresh `init()`; the state of the attempt whose rows match
    /// `count` is returned.
    pub async fn get_listing_each<S>(
        &self,
        first: Url,
        endpoint: &str,
        init: impl Fn() -> S,
        mut on_page: impl FnMut(&mut S, &[&RawValue]),
    ) -> Result<(S, Listing)> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut state = init();
            let stats = self
                .read_listing(first.clone(), endpoint, |page| on_page(&mut state, page))
                .await?;
            let rows = stats.rows;
            match stats.count {
                Some(count) if count != rows => {
                    let message = format!(
                        "the API reported count {count} but its {} page(s) held {rows} rows",
                        stats.pages
                    );
                    if attempt >= 2 {
                        return Err(self.bad(
                            endpoint,
                            format!("{message} twice; not committing a partial listing"),
                        ));
                    }
                    tracing::warn!(source = %self.source, endpoint, "{message}; reading the listing again");
                }
                _ => {
                    return Ok((
                        state,
                        Listing {
                            records: Vec::new(),
                            pages: stats.pages,
                            bytes: stats.bytes,
                            count: stats.count,
                        },
                    ))
                }
            }
        }
    }

    /// Follows `next` from `first`, giving each page's results to `on_page`.
    async fn read_listing(
        &self,
        first: Url,
        endpoint: &str,
        mut on_page: impl FnMut(&[&RawValue]),
    ) -> Result<PageStats> {
        let mut seen = std::collections::HashSet::new();
        let mut out = PageStats::default();
        let mut url = first.clone();
        loop {
            seen.insert(url.to_string());
            let page_label = if out.pages == 0 {
                endpoint.to_string()
            } else {
                format!("{endpoint} (page {})", out.pages + 1)
            };
            let body = self.get_complete_json(url.clone(), &page_label).await?;
            out.pages += 1;
            out.bytes += body.len() as u64;
            // The page's fields as raw text: no tree of the records is built.
            let page: Page<'_> = serde_json::from_slice(&body).map_err(|e| {
                self.bad(
                    &page_label,
                    format!("expected a JSON object with `results` ({e})"),
                )
            })?;
            let items: Vec<&RawValue> = match page.results {
                None => return Err(self.bad(&page_label, "no `results` array in the page".into())),
                Some(r) => serde_json::from_str(r.get())
                    .map_err(|_| self.bad(&page_label, "`results` is not an array".into()))?,
            };
            out.rows += items.len() as u64;
            on_page(&items);
            out.count = page
                .count
                .as_ref()
                .and_then(serde_json::Value::as_u64)
                .or(out.count);
            let next = match page.next {
                None | Some(serde_json::Value::Null) => return Ok(out),
                Some(serde_json::Value::String(s)) if s.is_empty() => return Ok(out),
                Some(serde_json::Value::String(s)) => s,
                Some(other) => {
                    return Err(self.bad(
                        &page_label,
                        format!("`next` is {other}, expected a URL or null"),
                    ))
                }
            };
            let next_url = Url::parse(&next).map_err(|e| {
                self.bad(&page_label, format!("`next` is not an absolute URL ({e})"))
            })?;
            if (
                next_url.scheme(),
                next_url.host_str(),
                next_url.port_or_known_default(),
            ) != (
                first.scheme(),
                first.host_str(),
                first.port_or_known_default(),
            ) {
                return Err(self.bad(
                    &page_label,
                    format!(
                        "`next` points to another server ({}://{}); not following it with our credentials",
                        next_url.scheme(),
                        next_url.host_str().unwrap_or("?")
                    ),
                ));
            }
            if !next_url.path().starts_with(&self.base_path()) {
                return Err(self.bad(
                    &page_label,
                    format!(
                        "`next` leaves the API's path ({}); not following it",
                        next_url.path()
                    ),
                ));
            }
            if seen.contains(next_url.as_str()) {
                return Err(self.bad(
                    &page_label,
                    format!(
                        "`next` repeats a page already read ({}); stopping a pagination loop",
                        next_url.path()
                    ),
                ));
            }
            if out.pages >= MAX_PAGES {
                return Err(self.bad(&page_label, format!("more than {MAX_PAGES} pages")));
            }
            url = next_url;
        }
    }
}

/// One record of a listing as a JSON value (the page it came from was
/// validated as complete JSON, so this only fails on nesting deeper than
/// serde_json's limit, which validation refused already).
pub fn value(raw: &RawValue) -> serde_json::Value {
    serde_json::from_str(raw.get()).unwrap_or(serde_json::Value::Null)
}

/// `chatlake check` of a `{count, next, previous, results}` listing: the
/// page's `count`, or its results when it has none; an error when the
/// body is not such a page.
pub fn listing_count(body: &[u8]) -> std::result::Result<u64, String> {
    let page: Page<'_> = serde_json::from_slice(body)
        .map_err(|e| format!("expected a JSON object with `results` ({e})"))?;
    let items: Vec<&RawValue> = match page.results {
        None => return Err("no `results` array in the page".into()),
        Some(r) => {
            serde_json::from_str(r.get()).map_err(|_| "`results` is not an array".to_string())?
        }
    };
    Ok(page
        .count
        .and_then(|c| c.as_u64())
        .unwrap_or(items.len() as u64))
}

/// `chatlake check` of an endpoint that answers a plain JSON array.
pub fn array_count(body: &[u8]) -> std::result::Result<u64, String> {
    serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(body)
        .map(|a| a.len() as u64)
        .map_err(|e| format!("expected a JSON array of records ({e})"))
}

/// One page of a listing: `results` stays raw JSON text.
#[derive(serde::Deserialize)]
struct Page<'a> {
    #[serde(borrow, default)]
    results: Option<&'a RawValue>,
    #[serde(default)]
    count: Option<serde_json::Value>,
    #[serde(default)]
    next: Option<serde_json::Value>,
}
