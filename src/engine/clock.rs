//! The clock every limiter reads: tokio's, so that tests under paused time
//! (`tokio::time::pause`) prove pacing exactly, without sleeping.

use std::num::NonZeroU32;
use std::ops::Add;
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// tokio's clock, as governor wants it.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

/// A point in tokio's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokioInstant(tokio::time::Instant);

impl Add<Nanos> for TokioInstant {
    type Output = TokioInstant;
    fn add(self, other: Nanos) -> TokioInstant {
        TokioInstant(self.0 + Duration::from(other))
    }
}

impl Reference for TokioInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        Nanos::from(self.0.saturating_duration_since(earlier.0))
    }

    fn saturating_sub(&self, duration: Nanos) -> Self {
        TokioInstant(
            self.0
                .checked_sub(Duration::from(duration))
                .unwrap_or(self.0),
        )
    }
}

impl Clock for TokioClock {
    type Instant = TokioInstant;
    fn now(&self) -> TokioInstant {
        TokioInstant(tokio::time::Instant::now())
    }
}

/// A token bucket on tokio's clock.
pub type Bucket = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<TokioInstant>>;

/// A bucket of `burst` tokens refilled one every `period`.
pub fn bucket(period: Duration, burst: u32) -> Bucket {
    let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
        .expect("a positive period")
        .allow_burst(NonZeroU32::new(burst.max(1)).expect("at least one"));
    RateLimiter::direct_with_clock(quota, TokioClock)
}

/// Waits for a token of `bucket`; returns how long it waited at first, if it did.
pub async fn until_ready(bucket: &Bucket) -> Option<Duration> {
    let mut first_wait = None;
    loop {
        match bucket.check() {
            Ok(()) => return first_wait,
            Err(not_until) => {
                let wait = not_until.wait_time_from(TokioClock.now());
                first_wait.get_or_insert(wait);
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// A duration as people say it: `45s`, `2m 5s`, `1h 3m`.
pub fn duration_text(d: std::time::Duration) -> String {
    let s = d.as_secs_f64().round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_bucket_paces_in_virtual_time() {
        let b = bucket(Duration::from_millis(200), 5);
        let t0 = tokio::time::Instant::now();
        for _ in 0..5 {
            assert_eq!(until_ready(&b).await, None, "the burst passes at once");
        }
        for _ in 0..5 {
            until_ready(&b).await;
        }
        assert_eq!(t0.elapsed(), Duration::from_secs(1), "five more at 5/s");
    }
}
