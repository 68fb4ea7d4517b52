//! Launch pacing: a token bucket (governor) whose rate adapts to AWS throttling.
//!
//! A governor limiter's rate is fixed at creation, so an adaptive change swaps in a new
//! limiter (arc-swap) with a burst of one: slowing down never releases a fresh burst.
//! Waiters queue on a fair mutex, so launches go out in order and exactly one of them
//! is ever waiting for the next permit: the one whose wait the user is shown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use governor::clock::Clock;
use tokio::sync::Mutex;

use super::clock::{self, TokioClock};

/// Launch pacing settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateSettings {
    /// Launches per minute once the burst is spent.
    pub rate_per_minute: f64,
    /// Launches allowed at once.
    pub burst_size: u32,
    /// Whether throttling slows the rate down.
    pub adaptive: bool,
}

impl Default for RateSettings {
    fn default() -> Self {
        RateSettings {
            rate_per_minute: 2.0,
            burst_size: 5,
            adaptive: true,
        }
    }
}

/// Successes in a row that raise a slowed-down rate one step.
const SUCCESSES_PER_STEP: u32 = 3;

/// What changes the rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Throttled,
    Succeeded,
}

/// The next rate: halved on throttling, down to a quarter of the configured rate;
/// raised by half again after successes, up to the configured rate.
pub fn next_rate(current: f64, configured: f64, signal: Signal) -> f64 {
    match signal {
        Signal::Throttled => (current / 2.0).max(configured / 4.0),
        Signal::Succeeded => (current * 1.5).min(configured),
    }
}

struct Bucket {
    limiter: clock::Bucket,
    rate_per_minute: f64,
}

impl Bucket {
    fn new(rate_per_minute: f64, burst: u32) -> Self {
        let period = Duration::from_secs_f64(60.0 / rate_per_minute.max(0.001));
        Bucket {
            limiter: clock::bucket(period, burst),
            rate_per_minute,
        }
    }
}

/// The launch limiter.
pub struct Limiter {
    settings: RateSettings,
    bucket: ArcSwap<Bucket>,
    queue: Mutex<()>,
    /// Serializes rate changes, so two throttles at once halve twice, each seeing the other.
    adjusting: std::sync::Mutex<()>,
    successes: AtomicU32,
}

impl Limiter {
    pub fn new(settings: RateSettings) -> Arc<Self> {
        Arc::new(Limiter {
            settings,
            bucket: ArcSwap::from_pointee(Bucket::new(
                settings.rate_per_minute,
                settings.burst_size,
            )),
            queue: Mutex::new(()),
            adjusting: std::sync::Mutex::new(()),
            successes: AtomicU32::new(0),
        })
    }

    /// The settings it was made with.
    pub fn settings(&self) -> RateSettings {
        self.settings
    }

    /// The current rate, in launches per minute.
    pub fn rate_per_minute(&self) -> f64 {
        self.bucket.load().rate_per_minute
    }

    /// Time between launches at the current rate.
    pub fn period(&self) -> Duration {
        Duration::from_secs_f64(60.0 / self.rate_per_minute())
    }

    /// Waits for a launch permit. `on_wait` is told how long, when there is a wait.
    pub async fn acquire(&self, on_wait: impl FnOnce(Duration)) {
        let _turn = self.queue.lock().await;
        let mut on_wait = Some(on_wait);
        loop {
            let bucket = self.bucket.load_full();
            match bucket.limiter.check() {
                Ok(()) => return,
                Err(not_until) => {
                    let wait = not_until.wait_time_from(TokioClock.now());
                    if let Some(tell) = on_wait.take() {
                        tell(wait);
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Reports throttling; returns the new rate when it changed.
    pub fn throttled(&self) -> Option<f64> {
        self.successes.store(0, Ordering::Relaxed);
        self.adjust(Signal::Throttled)
    }

    /// Reports a successful launch; returns the new rate when it changed.
    pub fn succeeded(&self) -> Option<f64> {
        if self.rate_per_minute() >= self.settings.rate_per_minute {
            return None;
        }
        if self.successes.fetch_add(1, Ordering::Relaxed) + 1 < SUCCESSES_PER_STEP {
            return None;
        }
        self.successes.store(0, Ordering::Relaxed);
        self.adjust(Signal::Succeeded)
    }

    fn adjust(&self, signal: Signal) -> Option<f64> {
        if !self.settings.adaptive {
            return None;
        }
        let _one_at_a_time = self.adjusting.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.rate_per_minute();
        let next = next_rate(current, self.settings.rate_per_minute, signal);
        if (next - current).abs() < 1e-9 {
            return None;
        }
        // Burst of one: a changed rate never lets a batch through at once.
        self.bucket.store(Arc::new(Bucket::new(next, 1)));
        Some(next)
    }
}

/// A fixed-rate limiter for the other mutating calls, sized to AWS's own buckets.
pub fn fixed(per_second: u32, burst: u32) -> clock::Bucket {
    clock::bucket(Duration::from_secs(1) / per_second.max(1), burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_halves_down_to_a_floor_and_successes_climb_back() {
        let configured = 120.0;
        let mut rate = configured;
        let mut seen = vec![];
        for _ in 0..4 {
            rate = next_rate(rate, configured, Signal::Throttled);
            seen.push(rate);
        }
        assert_eq!(seen, [60.0, 30.0, 30.0, 30.0]);
        for _ in 0..3 {
            rate = next_rate(rate, configured, Signal::Succeeded);
        }
        assert_eq!(rate, 101.25);
        assert_eq!(next_rate(rate, configured, Signal::Succeeded), 120.0);
    }

    /// N launches at rate R with burst B: the last leaves (N − B) / R after the first.
    #[tokio::test(start_paused = true)]
    async fn thirty_launches_at_two_a_minute_burst_five_take_750_s() {
        let limiter = Limiter::new(RateSettings {
            rate_per_minute: 2.0,
            burst_size: 5,
            adaptive: true,
        });
        let t0 = tokio::time::Instant::now();
        let mut waits = 0;
        for _ in 0..30 {
            limiter.acquire(|_| waits += 1).await;
        }
        assert_eq!(t0.elapsed(), Duration::from_secs(750));
        assert_eq!(waits, 25, "every launch after the burst waits");
    }

    /// After a throttle the rate halves with a burst of one: the next launch waits one
    /// new period, then successes raise the rate step by step.
    #[tokio::test(start_paused = true)]
    async fn a_throttle_slows_the_next_launches_where_it_happens() {
        let limiter = Limiter::new(RateSettings {
            rate_per_minute: 60.0,
            burst_size: 1,
            adaptive: true,
        });
        let t0 = tokio::time::Instant::now();
        limiter.acquire(|_| {}).await;
        assert_eq!(limiter.throttled(), Some(30.0));
        limiter.acquire(|_| {}).await;
        assert_eq!(t0.elapsed(), Duration::ZERO, "the new bucket's one token");
        limiter.acquire(|_| {}).await;
        assert_eq!(t0.elapsed(), Duration::from_secs(2), "one period at 30/min");
        for _ in 0..2 {
            assert_eq!(limiter.succeeded(), None);
        }
        assert_eq!(
            limiter.succeeded(),
            Some(45.0),
            "three successes: one step up"
        );
        limiter.acquire(|_| {}).await;
        limiter.acquire(|_| {}).await;
        // tokio's timer counts whole milliseconds.
        let want = Duration::from_secs(2) + Duration::from_secs_f64(60.0 / 45.0);
        assert!(
            t0.elapsed() >= want && t0.elapsed() - want < Duration::from_millis(1),
            "the step-up bucket's token, then one period at 45/min: {:?}",
            t0.elapsed()
        );
    }

    #[test]
    fn adaptive_changes_are_reported_and_fixed_rates_never_change() {
        let adaptive = Limiter::new(RateSettings::default());
        assert_eq!(adaptive.throttled(), Some(1.0));
        assert_eq!(adaptive.succeeded(), None);
        assert_eq!(adaptive.succeeded(), None);
        assert_eq!(adaptive.succeeded(), Some(1.5));
        let fixed = Limiter::new(RateSettings {
            adaptive: false,
            ..RateSettings::default()
        });
        assert_eq!(fixed.throttled(), None);
        assert_eq!(fixed.rate_per_minute(), 2.0);
    }
}
