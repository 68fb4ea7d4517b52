//! Launch pacing: a token bucket (governor) whose rate adapts to AWS throttling, as
//! the AWS SDKs' adaptive retry mode does (CUBIC): on a throttle the rate becomes the
//! *measured* rate of accepted launches × 0.7 (never below an absolute floor), then
//! climbs back along a cubic curve of the time since: flat near the rate AWS accepted,
//! probing above it only after a while without throttles, up to the configured rate.
//! So it settles just under the rate AWS refills, and random throttles that slowing
//! down cannot cure only dent it for a while.
//!
//! A governor limiter's rate is fixed at creation, so an adaptive change swaps in a new
//! limiter (arc-swap) with a burst of one: slowing down never releases a fresh burst.
//! Waiters queue on a fair mutex, so launches go out in order and exactly one of them
//! is ever waiting for the next permit: the one whose wait the user is shown.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use governor::clock::Clock;
use tokio::sync::Mutex;

use super::clock::{self, TokioClock};

/// The most workspaces one RunInstances launches at the auto pace. Their names fit in
/// the tags AWS allows beside prism's own (50 per instance, 256 characters each).
pub const LAUNCHES_PER_CALL: usize = 100;

/// Launch pacing settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateSettings {
    /// Launches per minute once the burst is spent.
    pub rate_per_minute: f64,
    /// Launches allowed at once.
    pub burst_size: u32,
    /// Whether throttling slows the rate down.
    pub adaptive: bool,
    /// Whether nobody set it: the pace is AWS's own ([`RateSettings::AUTO`]), and
    /// launches that can share a call do.
    pub auto: bool,
}

impl RateSettings {
    /// The pace of a manifest that sets none (`rate_limit: auto`): AWS's documented
    /// RunInstances request bucket, 5 calls at once refilling 2 per second, adapting when
    /// AWS throttles (another tool sharing the account's bucket).
    pub const AUTO: RateSettings = RateSettings {
        rate_per_minute: 120.0,
        burst_size: 5,
        adaptive: true,
        auto: true,
    };

    /// Whether this is the pace of [`RateSettings::AUTO`].
    pub fn is_auto(&self) -> bool {
        *self == RateSettings::AUTO
    }

    /// The line the plan and the progress say the pace of launches with: `settings`
    /// None when launches are not paced.
    pub fn describe(settings: Option<&RateSettings>) -> String {
        match settings {
            Some(r) if r.auto => format!(
                "Launch pace: auto, as AWS's RunInstances buckets allow (up to {} workspaces a call, {} calls at once, then {} per minute; slower when AWS throttles)",
                LAUNCHES_PER_CALL, r.burst_size, r.rate_per_minute
            ),
            Some(r) => format!(
                "Rate limiting enabled: {} launches per minute (burst: {}{}), one call each",
                r.rate_per_minute,
                r.burst_size,
                if r.adaptive { ", adaptive" } else { "" }
            ),
            None => "Launch pace: not limited (the settings file turns pacing off)".to_string(),
        }
    }
}

impl Default for RateSettings {
    fn default() -> Self {
        RateSettings::AUTO
    }
}

/// The slowest launch pace, in launches per minute: an absolute floor, not a share of
/// the configured rate (0.5 per second, as the AWS SDKs' minimum fill rate).
pub const FLOOR_PER_MINUTE: f64 = 30.0;
/// The share of the measured send rate kept on a throttle (CUBIC's β).
const BETA: f64 = 0.7;
/// How fast the rate climbs back (CUBIC's C, in launches per minute per second³).
const SCALE: f64 = 0.04;
/// AWS's documented refill of the RunInstances bucket (2 per second), per minute: the
/// rate to come back to after a throttle while the accepted rate cannot be measured yet.
pub const AWS_REFILL_PER_MINUTE: f64 = 120.0;
/// Above this share of throttled calls among the last [`OUTCOMES`], throttles are not
/// taken for random ones any more: the rate is cut again.
const RANDOM_SHARE: f64 = 0.5;
/// How many of the latest calls' outcomes are kept.
const OUTCOMES: usize = 40;
/// Accepted calls in a row after a cut that bring the rate back to where AWS accepted
/// calls before it.
const RECOVER_AFTER: usize = 5;
/// The share of that rate they bring it back to: just under, as it was measured over a
/// window that may hold a burst.
const RECOVER_TO: f64 = 0.9;
/// AWS's documented RunInstances bucket: calls accepted at once.
pub const AWS_BURST: u32 = 5;
/// The window over which the send rate is measured.
const MEASURE_OVER: Duration = Duration::from_secs(10);

/// The rate (launches per minute) `since` after a throttle that found the rate at
/// `before` (per minute): CUBIC's `W(t) = C·(t − K)³ + W_max`, with
/// `K = ∛(W_max·(1 − β)/C)`, so that W(0) = β·W_max, and W(K) = W_max.
pub fn cubic(before: f64, since: Duration) -> f64 {
    let k = (before * (1.0 - BETA) / SCALE).cbrt();
    let t = since.as_secs_f64() - k;
    SCALE * t * t * t + before
}

/// After a throttle: the measured send rate × β, never below the floor nor above
/// the rate in force.
pub fn after_throttle(current: f64, measured: Option<f64>) -> f64 {
    (measured.unwrap_or(current).min(current) * BETA).max(FLOOR_PER_MINUTE.min(current))
}

/// Where the last throttle left the rate.
#[derive(Debug, Clone, Copy)]
struct Throttle {
    at: tokio::time::Instant,
    /// The rate before it, per minute.
    before: f64,
    /// The rate it set, per minute.
    after: f64,
    /// The rate in force when it came, per minute.
    sent: f64,
    /// Whether slowing down was found not to help: throttles at this pace are random.
    random: bool,
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
    /// Serializes rate changes; holds the last throttle.
    adjusting: std::sync::Mutex<Option<Throttle>>,
    /// When the last launches were accepted, to measure the rate AWS accepts.
    accepted: std::sync::Mutex<std::collections::VecDeque<tokio::time::Instant>>,
    /// Whether each of the latest calls was throttled.
    outcomes: std::sync::Mutex<std::collections::VecDeque<bool>>,
}

impl Limiter {
    /// An adaptive limiter configured above AWS's documented RunInstances bucket (2 per
    /// second, 5 at once) starts there: calls sent at once are all in flight before the
    /// first throttle could slow them. It then probes up towards the configured rate
    /// along the cubic curve, as after a throttle that found AWS's rate. A fixed
    /// (`adaptive: false`) limiter keeps to the configuration.
    pub fn new(settings: RateSettings) -> Arc<Self> {
        let (rate, burst) = if settings.adaptive {
            (
                settings.rate_per_minute.min(AWS_REFILL_PER_MINUTE),
                settings.burst_size.min(AWS_BURST),
            )
        } else {
            (settings.rate_per_minute, settings.burst_size)
        };
        let probe = (rate < settings.rate_per_minute).then(|| Throttle {
            at: tokio::time::Instant::now(),
            before: rate,
            after: rate,
            sent: rate,
            random: false,
        });
        Arc::new(Limiter {
            settings,
            bucket: ArcSwap::from_pointee(Bucket::new(rate, burst)),
            queue: Mutex::new(()),
            adjusting: std::sync::Mutex::new(probe),
            accepted: Default::default(),
            outcomes: Default::default(),
        })
    }

    fn outcome(&self, throttled: bool) {
        let mut outcomes = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        outcomes.push_back(throttled);
        if outcomes.len() > OUTCOMES {
            outcomes.pop_front();
        }
    }

    /// How many of the latest calls were accepted since the last throttle.
    fn accepted_in_a_row(&self) -> usize {
        let outcomes = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        outcomes.iter().rev().take_while(|t| !**t).count()
    }

    /// The share of the latest calls that were throttled.
    fn throttled_share(&self) -> f64 {
        let outcomes = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        // Too few to tell a share from a streak.
        if outcomes.len() < OUTCOMES / 2 {
            return 0.0;
        }
        let throttled = outcomes.iter().filter(|t| **t).count();
        throttled as f64 / outcomes.len() as f64
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

    /// Whether throttles were found random at the pace in force: slowing down did not
    /// cure them.
    pub fn throttles_are_random(&self) -> bool {
        let last = self.adjusting.lock().unwrap_or_else(|e| e.into_inner());
        last.is_some_and(|t| t.random)
    }

    fn note(times: &std::sync::Mutex<std::collections::VecDeque<tokio::time::Instant>>) {
        let now = tokio::time::Instant::now();
        let mut times = times.lock().unwrap_or_else(|e| e.into_inner());
        times.push_back(now);
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) > MEASURE_OVER)
        {
            times.pop_front();
        }
    }

    /// Launches per minute AWS accepted over the last few seconds; None with too few
    /// to tell.
    pub fn measured_rate(&self) -> Option<f64> {
        Self::rate_of(&self.accepted)
    }

    fn rate_of(
        times: &std::sync::Mutex<std::collections::VecDeque<tokio::time::Instant>>,
    ) -> Option<f64> {
        let now = tokio::time::Instant::now();
        let times = times.lock().unwrap_or_else(|e| e.into_inner());
        let recent: Vec<_> = times
            .iter()
            .filter(|t| now.duration_since(**t) <= MEASURE_OVER)
            .collect();
        let (first, n) = (recent.first()?, recent.len());
        let span = now.duration_since(**first).as_secs_f64();
        // A burst accepted at once says nothing of the rate AWS refills.
        if n < 3 || span < 2.0 {
            return None;
        }
        Some((n - 1) as f64 / span * 60.0)
    }

    /// Reports throttling; returns the new rate when it changed. A throttle of a call
    /// sent before the last slow-down took effect (within one new period of it) does not
    /// slow down again: it was sent at the old pace.
    ///
    /// Throttles that slowing down does not cure are random (AWS having a bad minute,
    /// other clients of the account): one that comes at the slower pace, before the rate
    /// climbed at all, puts the rate back where it was and marks that pace as one where
    /// throttles are random; they cut the rate again only once it climbs above it.
    pub fn throttled(&self) -> Option<f64> {
        if !self.settings.adaptive {
            return None;
        }
        self.outcome(true);
        let mut last = self.adjusting.lock().unwrap_or_else(|e| e.into_inner());
        let now = tokio::time::Instant::now();
        let current = self.rate_per_minute();
        if let Some(t) = *last {
            let cut = t.after < t.sent;
            if cut && now.duration_since(t.at) < Duration::from_secs_f64(60.0 / t.after) {
                return None;
            }
            let not_climbed = current <= t.after * (1.0 + 1e-9);
            if not_climbed && t.random {
                if self.throttled_share() <= RANDOM_SHARE {
                    return None;
                }
                // Too many to be random: cut, and gather the evidence afresh.
                self.outcomes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clear();
            }
            // Below the rate AWS accepted before the last cut, its bucket would refill
            // faster than calls take from it: slowing down did not help.
            let slower = not_climbed || current < t.before * 0.9;
            if slower && t.after < t.sent && !t.random {
                *last = Some(Throttle {
                    at: now,
                    before: t.sent,
                    after: t.sent,
                    sent: t.sent,
                    random: true,
                });
                return self.set(current, t.sent);
            }
        }
        let measured = self
            .measured_rate()
            .or(Some(AWS_REFILL_PER_MINUTE.min(current)));
        let next = after_throttle(current, measured);
        *last = Some(Throttle {
            at: now,
            // The curve flattens out at the rate AWS was found to accept.
            before: measured.unwrap_or(current).min(current).max(next),
            after: next,
            sent: current,
            random: false,
        });
        self.set(current, next)
    }

    /// Reports a successful launch; returns the new rate when it changed: the rate
    /// climbs back along the cubic curve, to the configured rate.
    pub fn succeeded(&self) -> Option<f64> {
        if !self.settings.adaptive {
            return None;
        }
        Self::note(&self.accepted);
        self.outcome(false);
        let mut last = self.adjusting.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.rate_per_minute();
        let configured = self.settings.rate_per_minute;
        let (Some(t), true) = (*last, current < configured) else {
            return None;
        };
        // A run of accepted calls at the slower pace: back to the rate AWS accepted
        // before the cut at once, rather than along the curve.
        let back = t.before * RECOVER_TO;
        if current < back && self.accepted_in_a_row() >= RECOVER_AFTER {
            *last = Some(Throttle { after: back, ..t });
            return self.set(current, back);
        }
        let next = cubic(t.before, t.at.elapsed()).max(t.after).min(configured);
        // Small steps are not worth a new bucket; the last one reaches the configured rate.
        if next < configured && next < current * 1.1 {
            return None;
        }
        self.set(current, next)
    }

    fn set(&self, current: f64, next: f64) -> Option<f64> {
        if (next - current).abs() < 1e-9 {
            return None;
        }
        // Burst of one, spent at once: a changed rate never lets a call through before
        // one period of the new rate has passed.
        let bucket = Bucket::new(next, 1);
        let _ = bucket.limiter.check();
        self.bucket.store(Arc::new(bucket));
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
    fn the_cubic_curve_starts_at_beta_and_returns_to_the_old_rate() {
        let before = 120.0;
        assert!((cubic(before, Duration::ZERO) - 84.0).abs() < 1e-9);
        let k = (before * (1.0 - BETA) / SCALE).cbrt();
        assert!((cubic(before, Duration::from_secs_f64(k)) - before).abs() < 1e-9);
        assert!(cubic(before, Duration::from_secs_f64(k + 2.0)) > before);
        assert_eq!(
            after_throttle(600.0, Some(120.0)),
            84.0,
            "the measured rate, × 0.7"
        );
        assert_eq!(
            after_throttle(600.0, None),
            420.0,
            "nothing measured: the rate in force"
        );
        assert_eq!(
            after_throttle(35.0, Some(20.0)),
            30.0,
            "never below the floor"
        );
        assert_eq!(
            after_throttle(10.0, Some(10.0)),
            10.0,
            "nor above a slower rate in force"
        );
    }

    /// AWS's RunInstances bucket (5, refilling 2 per second), in virtual time.
    struct AwsBucket {
        tokens: f64,
        at: tokio::time::Instant,
    }

    impl AwsBucket {
        fn take(&mut self) -> bool {
            let now = tokio::time::Instant::now();
            self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * 2.0).min(5.0);
            self.at = now;
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                true
            } else {
                false
            }
        }
    }

    /// Launches `n` through `limiter` against AWS's bucket; returns (throttled calls,
    /// seconds until the last launch).
    async fn against_aws(limiter: &Limiter, n: usize) -> (usize, f64) {
        let t0 = tokio::time::Instant::now();
        let mut aws = AwsBucket {
            tokens: 5.0,
            at: t0,
        };
        let mut throttled = 0;
        for _ in 0..n {
            loop {
                limiter.acquire(|_| {}).await;
                if aws.take() {
                    limiter.succeeded();
                    break;
                }
                throttled += 1;
                limiter.throttled();
            }
        }
        (throttled, t0.elapsed().as_secs_f64())
    }

    /// Configured far above what AWS refills (600/min, burst 20), the limiter finds
    /// AWS's rate: few calls throttled, and the run close to AWS's own bound.
    #[tokio::test(start_paused = true)]
    async fn the_rate_converges_on_what_aws_refills() {
        for n in [30usize, 100, 300] {
            let limiter = Limiter::new(RateSettings {
                rate_per_minute: 600.0,
                burst_size: 20,
                adaptive: true,
                auto: false,
            });
            let (throttled, took) = against_aws(&limiter, n).await;
            let bound = (n as f64 - 5.0) / 2.0;
            let share = throttled as f64 / (n + throttled) as f64;
            eprintln!(
                "{n} launches: {throttled} throttled ({share:.3}), {took:.1} s, AWS's bound {bound:.1} s"
            );
            assert!(share <= 0.05, "{n}: {throttled} throttled ({share:.2})");
            assert!(
                took <= bound * 1.15,
                "{n}: {took:.1} s against AWS's {bound:.1} s"
            );
        }
    }

    /// Throttles that come at random, whatever the pace (20 % of calls), are not cured by
    /// slowing down: the rate stays near the configured one, and the run takes little
    /// longer than the extra calls themselves.
    #[tokio::test(start_paused = true)]
    async fn random_throttles_do_not_drag_the_rate_down() {
        let mut ratios = vec![];
        for seed in 0..10 {
            let limiter = Limiter::new(RateSettings {
                rate_per_minute: 120.0,
                burst_size: 5,
                adaptive: true,
                auto: false,
            });
            let mut rng = fastrand::Rng::with_seed(seed);
            let t0 = tokio::time::Instant::now();
            let (n, mut calls) = (100, 0);
            for _ in 0..n {
                loop {
                    limiter.acquire(|_| {}).await;
                    calls += 1;
                    if rng.f64() >= 0.2 {
                        limiter.succeeded();
                        break;
                    }
                    limiter.throttled();
                }
            }
            let took = t0.elapsed().as_secs_f64();
            // What the calls alone take at the configured pace.
            let floor = (calls - 5) as f64 / 2.0;
            eprintln!(
                "seed {seed}: {calls} calls, {took:.1} s, {floor:.1} s at the configured pace, rate now {:.0}",
                limiter.rate_per_minute()
            );
            ratios.push(took / floor);
        }
        let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
        eprintln!("wall ÷ the calls' own time: {ratios:.2?}, mean {mean:.2}");
        assert!(mean <= 1.15, "{ratios:.2?}");
        assert!(ratios.iter().all(|r| *r <= 1.45), "{ratios:.2?}");
    }

    /// N launches at rate R with burst B: the last leaves (N − B) / R after the first.
    #[tokio::test(start_paused = true)]
    async fn thirty_launches_at_two_a_minute_burst_five_take_750_s() {
        let limiter = Limiter::new(RateSettings {
            rate_per_minute: 2.0,
            burst_size: 5,
            adaptive: true,
            auto: false,
        });
        let t0 = tokio::time::Instant::now();
        let mut waits = 0;
        for _ in 0..30 {
            limiter.acquire(|_| waits += 1).await;
        }
        assert_eq!(t0.elapsed(), Duration::from_secs(750));
        assert_eq!(waits, 25, "every launch after the burst waits");
    }

    /// A throttle sets the rate to 0.7 × the measured send rate with a burst of one;
    /// throttles of calls sent before that take effect do not slow down again; the rate
    /// then climbs back with time.
    #[tokio::test(start_paused = true)]
    async fn a_throttle_slows_once_then_the_rate_climbs_back() {
        let limiter = Limiter::new(RateSettings {
            rate_per_minute: 120.0,
            burst_size: 1,
            adaptive: true,
            auto: false,
        });
        for _ in 0..10 {
            limiter.acquire(|_| {}).await;
            limiter.succeeded();
        }
        let measured = limiter.measured_rate().unwrap();
        assert!((measured - 120.0).abs() < 15.0, "{measured}");
        let slowed = limiter.throttled().unwrap();
        assert!((slowed - measured * 0.7).abs() < 1e-6, "{slowed}");
        assert_eq!(
            limiter.throttled(),
            None,
            "sent at the old pace: no second cut"
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            limiter.succeeded(),
            Some(120.0),
            "back to the configured rate"
        );
        let fixed = Limiter::new(RateSettings {
            adaptive: false,
            ..RateSettings::default()
        });
        assert_eq!(fixed.throttled(), None);
        assert_eq!(fixed.rate_per_minute(), 120.0);
    }
}
