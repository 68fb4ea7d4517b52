//! prism's one retry layer: exponential backoff with jitter, applied by error class.
//! The SDK's own retries are off.
//!
//! The exponential-backoff crate counts the attempts; the delay is computed here, since
//! the crate's factor is a whole number and the manifest's `multiplier` need not be.

use std::future::Future;
use std::time::Duration;

use exponential_backoff::Backoff;

use crate::cloud::{CloudError, ErrorClass};
use crate::manifest::RetryPolicy;

/// The delay before retry number `retry` (from 0): `initial × multiplier^retry`, at most
/// `max`, times `fraction` (from 0 to 1, drawn at random by callers): "full jitter", as
/// the AWS SDKs wait, so that many clients (and many workspaces) do not retry in step.
pub fn delay(policy: &RetryPolicy, retry: u32, fraction: f64) -> Duration {
    let exp = i32::try_from(retry).unwrap_or(i32::MAX);
    let base = (policy.initial_backoff.as_secs_f64() * policy.multiplier.max(1.0).powi(exp))
        .min(policy.max_backoff.as_secs_f64());
    Duration::from_secs_f64(base * fraction.clamp(0.0, 1.0))
}

/// The attempts of one call under a policy.
pub struct Attempts {
    attempts: exponential_backoff::IntoIter,
    policy: RetryPolicy,
    max_attempts: u32,
    attempt: u32,
    throttles: u32,
}

impl Attempts {
    pub fn new(policy: &RetryPolicy) -> Self {
        let backoff = Backoff::new(
            policy.max_retries + 1,
            policy.initial_backoff,
            policy.max_backoff,
        );
        Attempts {
            max_attempts: backoff.max_attempts(),
            attempts: backoff.into_iter(),
            policy: policy.clone(),
            attempt: 1,
            throttles: 0,
        }
    }

    /// The number of the attempt being made, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Attempts allowed in all.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// After a throttle, for callers that wait out throttling until a deadline instead
    /// of spending the retry budget of real errors on it: how long to wait (growing as
    /// the policy says, to `max_backoff`).
    pub fn after_throttle(&mut self) -> Duration {
        let d = delay(&self.policy, self.throttles.min(16), fastrand::f64());
        self.throttles += 1;
        self.attempt += 1;
        d
    }

    /// After a failed attempt: how long to wait before the next, or None to give up
    /// (an error retrying cannot help, or no attempt left).
    pub fn after(&mut self, err: &CloudError) -> Option<Duration> {
        // The crate says whether an attempt is left (None on the last one).
        let left = self.attempts.next().flatten().is_some();
        if !matches!(err.class, ErrorClass::Throttle | ErrorClass::Transient) || !left {
            return None;
        }
        let retry = self.attempt - 1;
        self.attempt += 1;
        Some(delay(&self.policy, retry, fastrand::f64()))
    }
}

/// Makes a call, retrying throttling and passing faults.
pub async fn call<T, F, Fut>(policy: &RetryPolicy, mut op: F) -> Result<T, CloudError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CloudError>>,
{
    let mut attempts = Attempts::new(policy);
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) => match attempts.after(&e) {
                Some(delay) => {
                    tracing::info!(code = ?e.code, ?delay, "retrying {}", e.operation);
                    tokio::time::sleep(delay).await;
                }
                None => return Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(multiplier: f64) -> RetryPolicy {
        RetryPolicy {
            max_retries: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            multiplier,
        }
    }

    #[test]
    fn fractional_multipliers_grow_the_delay_as_written() {
        let p = policy(1.4);
        let d: Vec<f64> = (0..4).map(|r| delay(&p, r, 1.0).as_secs_f64()).collect();
        for (got, want) in d.iter().zip([1.0, 1.4, 1.96, 2.744]) {
            assert!((got - want).abs() < 1e-9, "{d:?}");
        }
        assert_eq!(delay(&p, 20, 1.0), Duration::from_secs(10), "capped");
        assert_eq!(
            delay(&policy(1.0), 3, 1.0),
            Duration::from_secs(1),
            "no growth"
        );
    }

    #[test]
    fn full_jitter_draws_the_wait_between_zero_and_the_grown_delay() {
        let p = policy(2.0);
        assert_eq!(delay(&p, 1, 0.0), Duration::ZERO);
        assert_eq!(delay(&p, 1, 0.25), Duration::from_millis(500));
        assert_eq!(delay(&p, 1, 1.0), Duration::from_secs(2));
        assert_eq!(
            delay(&p, 9, 1.0),
            Duration::from_secs(10),
            "never past the cap"
        );
        assert_eq!(
            delay(&p, 1, 7.0),
            Duration::from_secs(2),
            "a fraction, at most 1"
        );
    }

    #[test]
    fn only_throttles_and_passing_faults_are_retried_and_the_budget_holds() {
        let throttle =
            CloudError::service("RunInstances", Some("RequestLimitExceeded"), "", Some(503));
        let permanent =
            CloudError::service("RunInstances", Some("InvalidParameterValue"), "", Some(400));
        let mut a = Attempts::new(&policy(2.0));
        assert_eq!(a.after(&permanent), None);
        let mut a2 = Attempts::new(&policy(2.0));
        let retries = std::iter::from_fn(|| a2.after(&throttle)).count();
        assert_eq!(retries, 5, "max_retries");
        assert_eq!(a.max_attempts(), 6);
    }
}
