//! How fast one source sends. The APIs publish no limit ("reasonable rate
//! limits; if you receive a 429, reduce your request frequency"), so the rate
//! is found, not configured: it rises while the API answers and is cut on a
//! 429 or 503, the way the AWS SDKs' adaptive retry mode does (CUBIC, as in
//! TCP): after a cut to 70 %, the rate climbs back to where it was throttled
//! within a few seconds, stays near it, then probes beyond. Before the first
//! throttle it grows faster (as TCP's slow start), about doubling a second.
//!
//! The `model` tests run it against a token-bucket server on simulated time.
//!
//! `requests_per_minute`, when set, is a hard cap on top: requests are spaced
//! at least 60/N seconds apart, so no minute ever holds more than N.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Where an adaptive rate starts (requests per second).
pub const START_RATE: f64 = 5.0;
/// Before the first throttle: what each answer adds to the rate (so the
/// rate grows by this share of itself per second, as TCP's slow start).
const SLOW_START: f64 = 0.7;
/// The lowest rate a cut goes to.
const MIN_RATE: f64 = 0.5;
/// Share of the rate kept after a throttle.
const BETA: f64 = 0.7;
/// CUBIC's scale: how fast the rate grows away from the last throttle.
const SCALE: f64 = 0.4;
/// How the measured send rate is smoothed (per half-second bucket).
const SMOOTH: f64 = 0.8;
const BUCKET: f64 = 0.5;
/// After a cut, throttles of requests sent this soon are the same event.
const GRACE: Duration = Duration::from_millis(200);
/// How far above the last throttle's rate the rate may go...
const PROBE: f64 = 1.2;
/// ...raised this often without a throttle.
const PROBE_EVERY: Duration = Duration::from_secs(10);

/// The pacing of one source's requests.
pub struct Pacer {
    /// Hard cap in requests per second (from `requests_per_minute`).
    cap: Option<f64>,
    state: Mutex<State>,
}

struct State {
    /// Requests per second allowed now.
    rate: f64,
    /// The rate in force at the last throttle.
    last_max: f64,
    last_throttle: Instant,
    created: Instant,
    /// When the probing ceiling was last raised.
    probed: Instant,
    /// When the last request went (its slot).
    last_sent: Option<Instant>,
    /// Smoothed rate of answers that were not throttles (per second): what
    /// the API accepts, bursts its window allows aside.
    measured: f64,
    bucket_start: Instant,
    bucket_count: u64,
}

impl Pacer {
    /// Adaptive from [`START_RATE`], never above `requests_per_minute` when set.
    pub fn new(requests_per_minute: Option<u32>) -> Self {
        let cap = requests_per_minute.map(|n| f64::from(n.max(1)) / 60.0);
        // A cap is where a capped source starts; others start modestly.
        let rate = cap.unwrap_or(START_RATE);
        let now = Instant::now();
        Pacer {
            cap,
            state: Mutex::new(State {
                rate,
                last_max: rate,
                last_throttle: now,
                created: now,
                probed: now,
                last_sent: None,
                measured: 0.0,
                bucket_start: now,
                bucket_count: 0,
            }),
        }
    }

    /// Waits until the next request may go; returns when it went (for
    /// [`Pacer::throttled`]). Requests go one interval (at the rate allowed
    /// *now*) after the last one: a waiter that wakes to a changed rate
    /// waits again, so a cut or a rise applies to the very next request,
    /// not after the slots already handed out (8 of them at 5/s were 1.6 s).
    pub async fn wait(&self) -> Instant {
        loop {
            let slot = {
                let mut s = self.state.lock().expect("pacer lock");
                let now = Instant::now();
                let interval = Duration::from_secs_f64(1.0 / s.rate);
                let slot = s.last_sent.map_or(now, |last| last + interval);
                if slot <= now {
                    // Late by less than an interval: keep the schedule (a
                    // timer's lateness is not a slower rate). Idle longer:
                    // start again from now, no burst to catch up. Under a
                    // cap, the next request is spaced from this one's real
                    // time, so a late wake-up never brings two closer.
                    let sent = if self.cap.is_none() && now - slot < interval {
                        slot
                    } else {
                        now
                    };
                    s.last_sent = Some(sent);
                    return sent;
                }
                slot
            };
            tokio::time::sleep_until(slot).await;
        }
    }

    /// The API answered (not a throttle): the rate grows along the cubic
    /// from the last throttle.
    pub fn success(&self) {
        let mut s = self.state.lock().expect("pacer lock");
        s.bucket_count += 1;
        let elapsed = s.bucket_start.elapsed().as_secs_f64();
        if elapsed >= BUCKET {
            let current = s.bucket_count as f64 / elapsed;
            s.measured = current * SMOOTH + s.measured * (1.0 - SMOOTH);
            s.bucket_count = 0;
            s.bucket_start = Instant::now();
        }
        if s.last_throttle != s.created && s.last_throttle.elapsed() < GRACE {
            return; // the cut holds while the server's window catches up
        }
        let unthrottled = s.last_throttle == s.created;
        let t = s.last_throttle.elapsed().as_secs_f64();
        let window = (s.last_max * (1.0 - BETA) / SCALE).cbrt();
        let cubic = SCALE * (t - window).powi(3) + s.last_max;
        // Without a cap, a rate the requests cannot use is not a rate the
        // API took: it stays within 1.5 times what was accepted lately.
        // A cap is the user's word that its rate is allowed.
        let mut ceiling = match self.cap {
            Some(c) => c,
            None => (if unthrottled { 2.0 } else { 1.5 } * s.measured).max(START_RATE),
        };
        // Once a limit was met, probe above it gently: at most 20 % over
        // the rate of the last throttle, raised every PROBE_EVERY without
        // one (a server's burst allowance, refilled while a run pauses,
        // would otherwise let the rate run far past the limit).
        if s.last_throttle != s.created {
            if s.probed.elapsed() >= PROBE_EVERY {
                s.last_max = s.last_max.max(s.rate);
                s.probed = Instant::now();
            }
            ceiling = ceiling.min(PROBE * s.last_max);
        }
        // Until the first throttle, the rate grows by SLOW_START of itself
        // per second (each answer adds SLOW_START): from 5/s to 50/s in
        // about 3 s, where the cubic alone took 10.
        let next = if unthrottled {
            cubic.max(s.rate + SLOW_START)
        } else {
            cubic
        };
        s.rate = self.clamp(next.min(ceiling).max(s.rate.min(ceiling)));
    }

    /// A 429 or 503 to a request sent at `sent`: the rate is cut to
    /// [`BETA`] of what the API was accepting. Once per congestion event: answers
    /// to requests sent before the last cut, or within [`GRACE`] after it
    /// (while the server's window still remembers the old rate), are
    /// accounted for already; eight requests in flight would otherwise cut
    /// the rate eight times.
    pub fn throttled(&self, sent: Instant) {
        let mut s = self.state.lock().expect("pacer lock");
        if sent < s.last_throttle + GRACE && s.last_throttle != s.created {
            return;
        }
        let sending = if s.measured > 0.0 {
            s.measured.min(s.rate)
        } else {
            s.rate
        };
        // The first throttle ends the climb from START_RATE, which overshoots
        // while the server's burst allowance drains: the accepted rate then
        // overstates the limit, so that cut goes to half (as TCP leaving
        // slow start) and the rate it climbs back to is discounted too.
        let first = s.last_throttle == s.created;
        s.last_max = if first { sending * BETA } else { sending };
        s.last_throttle = Instant::now();
        s.probed = s.last_throttle;
        s.rate = self.clamp(sending * if first { 0.5 } else { BETA });
    }

    /// The rate allowed now, in requests per second.
    pub fn rate(&self) -> f64 {
        self.state.lock().expect("pacer lock").rate
    }

    fn clamp(&self, rate: f64) -> f64 {
        let r = rate.max(MIN_RATE);
        match self.cap {
            Some(c) => r.min(c),
            None => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cap_spaces_requests_and_throttles_cut_the_rate() {
        let p = Pacer::new(Some(1200)); // 20 a second
        let t0 = Instant::now();
        for _ in 0..5 {
            p.wait().await;
        }
        // 5 requests at 0, 50, 100, 150, 200 ms
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(200), "{took:?}");
        for _ in 0..100 {
            p.success();
        }
        assert!(p.rate() <= 20.0, "never above the cap: {}", p.rate());
        p.throttled(Instant::now());
        let cut = p.rate();
        assert!(cut <= 20.0 * BETA + 1e-9, "{cut}");
        // Another answer to a request sent before the cut: no second cut.
        p.throttled(t0);
        assert_eq!(p.rate(), cut);
    }

    #[tokio::test]
    async fn without_a_cap_the_rate_climbs_after_a_throttle_and_follows_what_is_sent() {
        let p = Pacer::new(None);
        assert_eq!(p.rate(), START_RATE);
        p.throttled(Instant::now());
        let cut = p.rate();
        assert!(
            (cut - START_RATE * 0.5).abs() < 1e-9,
            "the first cut halves: {cut}"
        );
        // With answers coming, it climbs back above the cut...
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_millis(1500) {
            p.wait().await;
            p.success();
        }
        assert!(p.rate() > cut, "{} > {cut}", p.rate());
        // ...but not past 20 % above the rate of the last throttle.
        assert!(p.rate() <= PROBE * START_RATE * BETA + 1e-9, "{}", p.rate());
        // A later throttle cuts to BETA of what was accepted.
        let before = p.rate();
        p.throttled(Instant::now());
        assert!(
            p.rate() <= before * BETA + 1e-9,
            "{} <= {before} * {BETA}",
            p.rate()
        );
    }
}

/// The pacer against a model of a rate-limited server, on simulated time:
/// the simulator's own token bucket (`limit` a second, one second of burst),
/// 50 ms latency, `Retry-After: 1`, 8 requests in flight.
#[cfg(test)]
mod model {
    use super::*;
    use crate::simulator::Bucket;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    /// Sends `n` requests; returns (seconds, requests sent, answered 429).
    async fn run(limit: f64, n: u64) -> (f64, u64, u64) {
        let pacer = Arc::new(Pacer::new(None));
        let server = Arc::new(Mutex::new(Bucket::default()));
        let left = Arc::new(AtomicU64::new(n));
        let sent = Arc::new(AtomicU64::new(0));
        let throttled = Arc::new(AtomicU64::new(0));
        let t0 = Instant::now();
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let (pacer, server, left, sent, throttled) = (
                    pacer.clone(),
                    server.clone(),
                    left.clone(),
                    sent.clone(),
                    throttled.clone(),
                );
                tokio::spawn(async move {
                    while left
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| l.checked_sub(1))
                        .is_ok()
                    {
                        loop {
                            let at = pacer.wait().await;
                            sent.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(25)).await;
                            let now = Instant::now().into_std();
                            let ok = server.lock().unwrap().take(limit, now);
                            tokio::time::sleep(Duration::from_millis(25)).await;
                            if ok {
                                pacer.success();
                                break;
                            }
                            throttled.fetch_add(1, Ordering::SeqCst);
                            pacer.throttled(at);
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.unwrap();
        }
        (
            t0.elapsed().as_secs_f64(),
            sent.load(Ordering::SeqCst),
            throttled.load(Ordering::SeqCst),
        )
    }

    /// Issue 10's targets, on the model: at least 0.9 of the limit,
    /// at most 5 % of requests answered 429, over 30 s of work that starts
    /// at 5/s. (The benchmark measures the same against the simulator.)
    #[tokio::test(start_paused = true)]
    async fn thirty_seconds_of_work_run_near_the_limit() {
        for limit in [10.0, 20.0, 50.0, 100.0] {
            let n = (30.0 * limit) as u64;
            let (secs, sent, throttled) = run(limit, n).await;
            let share = n as f64 / secs / limit;
            let rate429 = throttled as f64 / sent as f64;
            assert!(
                share >= 0.9 && rate429 <= 0.05,
                "limit {limit}/s: {secs:.1} s for {n} requests = {share:.2} of the limit, {throttled} of {sent} answered 429"
            );
        }
    }
}
