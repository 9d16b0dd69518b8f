//! Reading ahead of the writer: a stream's windows (or chunks) are fetched
//! while earlier ones are written, and written strictly in order. How far
//! ahead is bounded twice:
//! - by a count: at most `count` fetches at once (the source's
//!   `max_concurrency`, for the API's sake), and at most one more item
//!   fetched and waiting;
//! - by bytes: the answers fetched and not yet written, across every stream
//!   of the run, stay within the run's [`Budget`] (`max_buffered_mb`). A
//!   fetch reserves the largest answer its stream has seen so far when it
//!   starts, and holds its real size once it is in; it starts only if that
//!   reservation fits beside everything held. A stream that holds nothing
//!   may always start one, so an answer larger than the budget is read alone
//!   rather than never, and a stream's first answer (its size not known yet)
//!   is read before its second starts.

use std::collections::BTreeMap;
use std::future::Future;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::watch;

use crate::error::Result;

/// The bytes of answers a run holds in memory: fetched, not yet written.
/// Shared by the run's streams.
pub struct Budget {
    limit: u64,
    held: watch::Sender<u64>,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Self {
        Budget {
            limit,
            held: watch::Sender::new(0),
        }
    }

    /// Bytes held now.
    pub fn held(&self) -> u64 {
        *self.held.borrow()
    }
}

/// One stream's part of the [`Budget`]; what it still holds is given back
/// when it is dropped (a stream that fails or stops).
struct Share<'a> {
    budget: &'a Budget,
    bytes: u64,
}

impl Share<'_> {
    fn take(&mut self, n: u64) {
        self.bytes += n;
        self.budget.held.send_modify(|h| *h += n);
    }
    fn give_back(&mut self, n: u64) {
        self.bytes -= n;
        self.budget.held.send_modify(|h| *h -= n);
    }
}

impl Drop for Share<'_> {
    fn drop(&mut self) {
        let n = self.bytes;
        self.give_back(n);
    }
}

/// How far a stream reads ahead of its writer.
#[derive(Clone, Copy)]
pub(super) struct Ahead<'a> {
    /// Fetches at once, at most.
    pub(super) count: usize,
    /// The run's budget of bytes held.
    pub(super) budget: &'a Budget,
}

/// What the fetching side of [`fetch_ahead`] holds.
struct Reader<'a, T, F> {
    running: FuturesUnordered<F>,
    /// What each fetch in flight reserved.
    reserved: BTreeMap<usize, u64>,
    /// Fetched, not yet written: the item and its bytes.
    fetched: BTreeMap<usize, (T, u64)>,
    /// The next item to start.
    next: usize,
    /// No item at or past this one is started or kept: `n`, or the item
    /// after the first that failed. Fetches in flight watch it, and give up
    /// once it is at or before their item.
    end: watch::Sender<usize>,
    /// The largest answer this stream has fetched (None: none yet).
    largest: Option<u64>,
    ahead: Ahead<'a>,
    share: Share<'a>,
}

impl<T, F: Future<Output = (usize, Option<T>)>> Reader<'_, T, F> {
    /// Starts every fetch the count and the budget allow; `writing`: an item
    /// is being written (it counts against the count).
    fn start(&mut self, writing: bool, fetch: &impl Fn(usize) -> F) {
        while self.next < self.end()
            && self.running.len() < self.ahead.count
            && self.running.len() + self.fetched.len() + usize::from(writing) <= self.ahead.count
        {
            let alone = self.running.is_empty() && self.share.bytes == 0;
            let estimate = self.largest.unwrap_or(0);
            let fits = self.largest.is_some()
                && self.ahead.budget.held() + estimate <= self.ahead.budget.limit;
            if !(alone || fits) {
                break;
            }
            self.share.take(estimate);
            self.reserved.insert(self.next, estimate);
            self.running.push(fetch(self.next));
            self.next += 1;
        }
    }

    fn end(&self) -> usize {
        *self.end.borrow()
    }

    /// Takes in a finished fetch; when it failed, moves `end` to just after
    /// it.
    fn fetched(
        &mut self,
        (i, item): (usize, Option<T>),
        failed: &impl Fn(&T) -> bool,
        bytes: &impl Fn(&T) -> u64,
    ) {
        if let Some(r) = self.reserved.remove(&i) {
            self.share.give_back(r);
        }
        // Dropped after an earlier item failed.
        let Some(item) = item.filter(|_| i < self.end()) else {
            return;
        };
        let size = bytes(&item);
        self.largest = Some(self.largest.unwrap_or(0).max(size));
        self.share.take(size);
        let stop = failed(&item);
        self.fetched.insert(i, (item, size));
        if stop {
            // Nothing after it is started or kept: the stream fails at it
            // anyway.
            self.end.send_replace(i + 1);
            for (_, (_, size)) in self.fetched.split_off(&(i + 1)) {
                self.share.give_back(size);
            }
        }
    }
}

/// Fetches items `0..n`, reading ahead as [`Ahead`] allows, while `write`
/// takes each one in order: the next fetches go out while one is written (a
/// 429's wait or a slow commit does not idle the source's requests).
/// `bytes` says how many bytes of answers an item holds. Once an item fails
/// (as `failed` says), no later item is started and the later ones in
/// flight are dropped: the stream fails at that item anyway, and 64 windows
/// retrying a permanent 429 took 267 requests and 529 s to fail. Items
/// before it are written, so what precedes the failure is committed.
/// Fetching stops when `write` fails.
pub(super) async fn fetch_ahead<T>(
    n: usize,
    ahead: Ahead<'_>,
    fetch: impl AsyncFn(usize) -> T,
    failed: impl Fn(&T) -> bool,
    bytes: impl Fn(&T) -> u64,
    mut write: impl AsyncFnMut(usize, T) -> Result<()>,
) -> Result<()> {
    let end = watch::Sender::new(n);
    let end_rx = end.subscribe();
    let one = |i: usize| {
        let (fetch, mut end) = (&fetch, end_rx.clone());
        async move {
            tokio::select! {
                item = fetch(i) => (i, Some(item)),
                Ok(_) = end.wait_for(|end| *end <= i) => (i, None),
            }
        }
    };
    let mut reader = Reader {
        running: FuturesUnordered::new(),
        reserved: BTreeMap::new(),
        fetched: BTreeMap::new(),
        next: 0,
        end,
        largest: None,
        ahead: Ahead {
            count: ahead.count.max(1),
            ..ahead
        },
        share: Share {
            budget: ahead.budget,
            bytes: 0,
        },
    };
    // Bytes given back by any stream may let a waiting fetch start.
    let mut freed = ahead.budget.held.subscribe();
    for i in 0..n {
        // Wait for item i, starting fetches as they are allowed.
        let (item, size) = loop {
            freed.borrow_and_update();
            reader.start(false, &one);
            if let Some(x) = reader.fetched.remove(&i) {
                break x;
            }
            if i >= reader.end() {
                return Ok(());
            }
            tokio::select! {
                Some(done) = reader.running.next() => reader.fetched(done, &failed, &bytes),
                Ok(()) = freed.changed() => {}
            }
        };
        let stop = failed(&item);
        // Write it, taking in fetches meanwhile.
        let mut writing = std::pin::pin!(write(i, item));
        let written = loop {
            freed.borrow_and_update();
            reader.start(true, &one);
            tokio::select! {
                written = &mut writing => break written,
                Some(done) = reader.running.next() => reader.fetched(done, &failed, &bytes),
                Ok(()) = freed.changed() => {}
            }
        };
        // `size` was taken when it was fetched; `fetched` no longer holds it.
        reader.share.give_back(size);
        written?;
        if stop {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    /// Items of `size` bytes, each fetched in 10 ms; records the most fetches
    /// at once and the most bytes held; writes take 30 ms.
    async fn read(
        n: usize,
        count: usize,
        budget: &Budget,
        size: impl Fn(usize) -> u64,
        fail_at: Option<usize>,
    ) -> (Result<()>, Vec<usize>, usize, u64) {
        let (now, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let peak = AtomicU64::new(0);
        let written = Mutex::new(Vec::new());
        let result = fetch_ahead(
            n,
            Ahead { count, budget },
            async |i| {
                let at_once = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(at_once, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                (i, size(i), Some(i) == fail_at)
            },
            |(_, _, failed)| *failed,
            |(_, bytes, _)| *bytes,
            async |i, (_, _, failed)| {
                peak.fetch_max(budget.held(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                if failed {
                    return Err(crate::error::Error::Internal(format!("item {i} failed")));
                }
                written.lock().unwrap().push(i);
                Ok(())
            },
        )
        .await;
        let written = written.into_inner().unwrap();
        (
            result,
            written,
            most.load(Ordering::SeqCst),
            peak.load(Ordering::SeqCst),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn small_items_are_read_count_at_once_and_written_in_order() {
        let budget = Budget::new(1_000_000);
        let (result, written, most, _) = read(20, 4, &budget, |_| 100, None).await;
        result.unwrap();
        assert_eq!(written, (0..20).collect::<Vec<_>>());
        assert_eq!(most, 4, "the count bounds fetches at once");
        assert_eq!(budget.held(), 0, "everything written is given back");
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_held_stay_within_the_budget() {
        // Items of 40 bytes, a budget of 100: at most two held at once (the
        // count alone would allow four fetches and one more waiting).
        let budget = Budget::new(100);
        let (result, written, most, peak) = read(20, 4, &budget, |_| 40, None).await;
        result.unwrap();
        assert_eq!(written, (0..20).collect::<Vec<_>>());
        assert!(peak <= 100, "held {peak} bytes with a budget of 100");
        assert!(
            most <= 2,
            "{most} fetches at once: 3 x 40 bytes do not fit in 100"
        );
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_item_larger_than_the_budget_is_read_alone() {
        let budget = Budget::new(100);
        let (result, written, most, peak) =
            read(5, 4, &budget, |i| if i == 2 { 500 } else { 10 }, None).await;
        result.unwrap();
        assert_eq!(written, (0..5).collect::<Vec<_>>());
        // Read, not waited for forever. Its size was not known when it
        // started: the four small items then in hand are all it shares with.
        assert!((500..=540).contains(&peak), "held {peak} bytes");
        assert!(most <= 4);
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_stops_later_items_and_gives_back_their_bytes() {
        let budget = Budget::new(1_000_000);
        let (result, written, _, _) = read(64, 4, &budget, |_| 100, Some(5)).await;
        let err = result.unwrap_err().to_string();
        assert!(err.contains("item 5 failed"), "{err}");
        assert_eq!(
            written,
            (0..5).collect::<Vec<_>>(),
            "what precedes the failure is written"
        );
        assert_eq!(
            budget.held(),
            0,
            "items dropped after the failure hold nothing"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn streams_share_one_budget() {
        let budget = Budget::new(100);
        let (a, b) = tokio::join!(
            read(10, 4, &budget, |_| 30, None),
            read(10, 4, &budget, |_| 30, None)
        );
        a.0.unwrap();
        b.0.unwrap();
        // Each stream may always hold one item; beyond that, the sum fits:
        // a fetch in flight reserves its size.
        assert!(a.3.max(b.3) <= 100 + 30, "held {} and {} bytes", a.3, b.3);
        assert_eq!(budget.held(), 0);
    }
}
