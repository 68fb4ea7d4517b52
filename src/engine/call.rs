//! The paced and retried AWS call: a permit from the limiter the call passes, retries by
//! error class, and a lookup before retrying a call whose answer was lost.

use std::future::Future;
use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::clock;
use super::context::RunContext;
use super::events::Event;
use super::outcome::StepError;
use crate::cloud::{CloudError, ErrorClass, tags};
use crate::retry::Attempts;

/// Which limiter a call passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    Launch,
    Start,
    /// CreateTags.
    Tag,
    /// TerminateInstances.
    Terminate,
    /// The other changes (StopInstances, ModifyInstanceAttribute, …).
    Mutate,
    None,
}

impl RunContext {
    /// Waits for the limiter of `pace`. The first permit of each launch is taken in plan
    /// order by the caller ([`RunContext::launch_permit`]), so launches go out in name order.
    async fn permit(&self, workspace: &str, pace: Pace, first: bool) -> Result<(), StepError> {
        let wait = async {
            match pace {
                Pace::Launch => {
                    if let Some(limiter) = &self.launch {
                        let left = self.launches_left.load(Ordering::Relaxed).max(1);
                        let period = limiter.period();
                        limiter
                            .acquire(|wait| {
                                self.events.emit(Event::RateLimited {
                                    workspace: workspace.to_string(),
                                    wait_s: wait.as_secs_f64(),
                                    eta_s: (wait + period * (left as u32 - 1)).as_secs_f64(),
                                });
                            })
                            .await;
                    }
                    if first {
                        let _ = self.launches_left.fetch_update(
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                            |n| Some(n.saturating_sub(1)),
                        );
                    }
                }
                Pace::Start => {
                    clock::until_ready(&self.engine.start).await;
                }
                Pace::Tag => {
                    clock::until_ready(&self.engine.tag).await;
                }
                Pace::Terminate => {
                    clock::until_ready(&self.engine.terminate).await;
                }
                Pace::Mutate => {
                    clock::until_ready(&self.engine.mutate).await;
                }
                Pace::None => {}
            }
        };
        let start = tokio::time::Instant::now();
        tokio::select! {
            () = wait => {
                let waited = start.elapsed();
                if !waited.is_zero() {
                    tracing::debug!(
                        target: "prism::limiter",
                        workspace,
                        pace = ?pace,
                        waited_ms = waited.as_millis() as u64,
                        "limiter wait"
                    );
                }
                Ok(())
            }
            () = self.cancel.cancelled() => Err(StepError::Interrupted),
        }
    }

    /// Takes the first launch permit of `workspace`, in plan order.
    pub async fn launch_permit(&self, workspace: &str) -> Result<(), StepError> {
        self.permit(workspace, Pace::Launch, true).await
    }

    /// Makes one call, retried by error class with exponential backoff; throttling of
    /// launches slows the launch limiter down. `prepaid` says the first attempt's permit
    /// is already taken; it is used up by that attempt.
    pub async fn call<T, F, Fut>(
        &self,
        workspace: &str,
        pace: Pace,
        prepaid: &mut bool,
        op: F,
    ) -> Result<T, StepError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, CloudError>>,
    {
        self.call_or_find(workspace, pace, prepaid, op, || async { None })
            .await
    }

    /// [`RunContext::call`] for a call that may take effect although its answer is lost (a
    /// 5xx, a timeout, a dropped connection): before retrying, `find` looks for its
    /// effect with a read, which no launch permit paces, and ends the call when found.
    pub async fn call_or_find<T, F, Fut, G, GFut>(
        &self,
        workspace: &str,
        pace: Pace,
        prepaid: &mut bool,
        mut op: F,
        mut find: G,
    ) -> Result<T, StepError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, CloudError>>,
        G: FnMut() -> GFut,
        GFut: Future<Output = Option<T>>,
    {
        let mut attempts = Attempts::new(&self.retry);
        let mut paid = std::mem::take(prepaid);
        loop {
            if !std::mem::take(&mut paid) {
                self.permit(workspace, pace, false).await?;
            }
            // A replica that no longer holds its (account, region)'s lease cannot note a
            // launch, so it sends none: the holder does.
            if pace == Pace::Launch && self.engine.memory.fenced() {
                tracing::warn!(
                    workspace,
                    "not launched: another replica holds the lease of this account and region now"
                );
                return Err(StepError::Interrupted);
            }
            let attempt = attempts.attempt();
            let err = match op(attempt).await {
                Ok(v) => {
                    self.adapt(pace, None);
                    return Ok(v);
                }
                Err(e) => e,
            };
            self.adapt(pace, Some(&err));
            if err.class == ErrorClass::Transient
                && let Some(found) = find().await
            {
                tracing::debug!(
                    target: "prism::retry",
                    workspace,
                    attempt,
                    code = err.code.as_deref().unwrap_or("-"),
                    "the answer was lost; the call took effect"
                );
                self.adapt(pace, None);
                return Ok(found);
            }
            let throttle_wait = (err.class == ErrorClass::Throttle
                && Instant::now() < self.throttle_deadline)
                .then(|| attempts.after_throttle());
            // Throttles that slowing down does not cure are random: AWS's bucket gave
            // the throttled call no token, so its retry takes no new launch permit.
            paid = throttle_wait.is_some()
                && pace == Pace::Launch
                && self
                    .launch
                    .as_ref()
                    .is_some_and(|l| l.throttles_are_random());
            let Some(delay) = throttle_wait.or_else(|| attempts.after(&err)) else {
                tracing::debug!(
                    target: "prism::retry",
                    workspace,
                    attempt,
                    code = err.code.as_deref().unwrap_or("-"),
                    class = ?err.class,
                    "not retried: {}",
                    if matches!(err.class, ErrorClass::Throttle | ErrorClass::Transient) {
                        "no attempt left"
                    } else {
                        "retrying cannot help"
                    }
                );
                return Err(StepError::Cloud(err));
            };
            tracing::debug!(
                target: "prism::retry",
                workspace,
                attempt,
                code = err.code.as_deref().unwrap_or("-"),
                class = ?err.class,
                delay_ms = delay.as_millis() as u64,
                "retrying"
            );
            if let Some(m) = self.engine.metrics() {
                m.aws_retry(err.operation, err.class);
            }
            self.events.emit(Event::Retrying {
                workspace: workspace.to_string(),
                attempt,
                max_attempts: attempts.max_attempts(),
                delay_s: delay.as_secs_f64(),
                code: err.code.clone().unwrap_or_else(|| err.message.clone()),
                class: err.class,
            });
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.cancel.cancelled() => return Err(StepError::Interrupted),
            }
        }
    }

    fn adapt(&self, pace: Pace, err: Option<&CloudError>) {
        let (Pace::Launch, Some(limiter)) = (pace, &self.launch) else {
            return;
        };
        let changed = match err {
            None => limiter
                .succeeded()
                .map(|r| (r, "launches are succeeding again")),
            Some(e) if e.class == ErrorClass::Throttle => limiter
                .throttled()
                .map(|r| (r, "AWS is throttling launches")),
            Some(_) => None,
        };
        if let Some((rate_per_minute, reason)) = changed {
            if let Some(m) = self.engine.metrics() {
                m.launch_rate(self.cloud.region(), rate_per_minute);
            }
            self.events.emit(Event::RateChanged {
                rate_per_minute,
                reason: reason.into(),
            });
        }
    }

    // Lookups of the fleet, paced as reads.

    /// Every instance of the fleet, in one DescribeInstances by its tag, retried as any
    /// call of the run.
    pub(super) async fn fleet_instances(&self) -> Result<Vec<crate::cloud::Instance>, StepError> {
        self.describe_fleet(vec![]).await
    }

    /// Instance `id` of the fleet, in one DescribeInstances by its id and the fleet's
    /// tag; None when AWS does not show it (yet).
    pub(super) async fn fleet_instance(
        &self,
        id: &str,
    ) -> Result<Option<crate::cloud::Instance>, StepError> {
        let seen = self.describe_fleet(vec![id.to_string()]).await?;
        Ok(seen.into_iter().find(|i| i.id == id))
    }

    async fn describe_fleet(
        &self,
        ids: Vec<String>,
    ) -> Result<Vec<crate::cloud::Instance>, StepError> {
        let filter = crate::cloud::InstanceFilter {
            tags: vec![(tags::FLEET.to_string(), self.fleet.clone())],
            ids,
            ..Default::default()
        };
        self.call("", Pace::None, &mut false, |_| {
            self.cloud.describe_instances(&filter)
        })
        .await
    }
}
