//! prism's one retry layer: exponential backoff with jitter (the exponential-backoff
//! crate), applied by error class. The SDK's own retries are off.

use std::future::Future;
use std::time::Duration;

use exponential_backoff::Backoff;

use crate::cloud::{CloudError, ErrorClass};
use crate::manifest::RetryPolicy;

/// The attempts of one call under a policy.
pub struct Attempts {
    delays: exponential_backoff::IntoIter,
    max_attempts: u32,
    attempt: u32,
}

impl Attempts {
    pub fn new(policy: &RetryPolicy) -> Self {
        let mut backoff = Backoff::new(
            policy.max_retries + 1,
            policy.initial_backoff,
            policy.max_backoff,
        );
        // The crate's factor is a whole number.
        backoff.set_factor(policy.multiplier.round().max(1.0) as u32);
        Attempts {
            max_attempts: backoff.max_attempts(),
            delays: backoff.into_iter(),
            attempt: 1,
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

    /// After a failed attempt: how long to wait before the next, or None to give up
    /// (an error retrying cannot help, or no attempt left).
    pub fn after(&mut self, err: &CloudError) -> Option<Duration> {
        let delay = self.delays.next().flatten();
        if !matches!(err.class, ErrorClass::Throttle | ErrorClass::Transient) {
            return None;
        }
        self.attempt += 1;
        delay
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
