//! One action on one workspace: its calls and their retries. Where a launch goes
//! (zones, fallback types, ClientTokens) is in `launch.rs`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::clock;
use super::events::{Event, Events};
use super::executor::{FailureNote, FallbackNote};
use super::limiter::Limiter;
use super::token::spec_digest;
use crate::cloud::{Cloud, CloudError, ErrorClass, LaunchSpec, tags};
use crate::engine::{Engine, Job, Recipe, RunOptions};
use crate::manifest::{DesiredState, RetryPolicy};
use crate::plan::{Action, ActionKind};
use crate::retry::Attempts;

/// How an action ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The calls were accepted; `instance` is the workspace's instance afterwards.
    Done {
        instance: Option<String>,
        launched: bool,
        then_stop: bool,
    },
    Failed(FailureNote),
    Skipped(String),
    /// Still waiting for room in a quota when the run ended, with why.
    Waiting(String),
    /// Not carried out: Ctrl-C came first.
    Interrupted,
}

/// Why a step stopped early.
pub enum StepError {
    Cloud(CloudError),
    Interrupted,
}

impl From<CloudError> for StepError {
    fn from(e: CloudError) -> Self {
        StepError::Cloud(e)
    }
}

/// Which limiter a call passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    Launch,
    Start,
    Mutate,
    None,
}

/// What every step of a run shares.
pub struct Context {
    pub engine: Arc<Engine>,
    pub cloud: Arc<dyn Cloud>,
    pub fleet: String,
    pub desired: DesiredState,
    pub allow_replace: bool,
    pub events: Events,
    pub cancel: CancellationToken,
    pub skip: BTreeMap<String, String>,
    pub(super) recipe: Option<Recipe>,
    /// The region's zones, read once per run before the first launch; None when they
    /// could not be read (launches then let AWS choose).
    pub(super) zones: OnceCell<Option<Vec<String>>>,
    /// Workspaces launched on a fallback type, and why.
    pub(super) fallbacks: std::sync::Mutex<Vec<FallbackNote>>,
    /// Workspaces waiting for room in a quota, with why.
    pub quota_waiting: BTreeMap<String, String>,
    /// Whether, and how long, the run waits for quota.
    pub quota_wait: Option<super::QuotaWait>,
    /// When the run began.
    pub started: Instant,
    /// The launch limiter when the run began; the engine's, shared with other runs.
    launch: Option<Arc<Limiter>>,
    pub retry: RetryPolicy,
    /// Until when throttled calls are retried.
    throttle_deadline: Instant,
    launches_left: AtomicUsize,
    /// The template's spec digest: the key of the launch notes.
    pub(super) digest: String,
    /// Workspace and ClientToken of each launch this run made.
    pub(super) sent: std::sync::Mutex<Vec<(String, String)>>,
    /// Time between two looks at an instance that a resize waits for.
    pub(super) poll: Duration,
    /// How long a resize waits for its instance to stop.
    pub(super) settle: Duration,
    /// What the error catalogue fills its texts with.
    pub errors: crate::errors::Context,
    /// Whether starts are recorded as prism's own (see [`Job::own_starts`]).
    own_starts: bool,
}

impl Context {
    pub fn new(
        engine: Arc<Engine>,
        job: Job,
        opts: &RunOptions,
        events: Events,
        cancel: CancellationToken,
        launches: usize,
    ) -> Self {
        let digest = job
            .recipe
            .as_ref()
            .and_then(|r| r.spec.as_ref().ok())
            .map(spec_digest)
            .unwrap_or_default();
        Context {
            cloud: engine.cloud().clone(),
            launch: engine.launch_limiter(),
            engine,
            fleet: job.fleet,
            desired: job.desired,
            allow_replace: job.allow_replace,
            events,
            cancel,
            skip: job.skip,
            quota_waiting: job.quota_waiting,
            quota_wait: job.quota_wait,
            started: Instant::now(),
            recipe: job.recipe,
            zones: OnceCell::new(),
            fallbacks: std::sync::Mutex::new(Vec::new()),
            retry: opts.retry.clone(),
            throttle_deadline: Instant::now() + opts.throttle_deadline,
            launches_left: AtomicUsize::new(launches),
            digest,
            poll: opts.poll,
            settle: opts.wait.unwrap_or(Duration::from_secs(600)),
            errors: job.errors,
            own_starts: job.own_starts,
            sent: Default::default(),
        }
    }

    /// The spec to launch from, or why there is none.
    pub(super) fn template(&self) -> Result<&LaunchSpec, String> {
        match &self.recipe {
            Some(r) => r.spec.as_ref().map_err(Clone::clone),
            None => Err("the job has no launch recipe".into()),
        }
    }

    /// Waits for the limiter of `pace`. The first permit of each launch is taken in plan
    /// order by the caller ([`Context::launch_permit`]), so launches go out in name order.
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

    /// [`Context::call`] for a call that may take effect although its answer is lost (a
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
            self.events.emit(Event::RateChanged {
                rate_per_minute,
                reason: reason.into(),
            });
        }
    }
}

impl Context {
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

    /// The workspaces this run launched whose instance another run had launched first
    /// with the same ClientToken: AWS answered this run with that instance.
    pub fn launched_by_others(&self) -> Vec<String> {
        let sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        let others = self
            .engine
            .memory
            .launched_by_others(sent.iter().map(|(_, t)| t.as_str()));
        let mut names: Vec<String> = sent
            .iter()
            .filter(|(_, t)| others.contains(&t.as_str()))
            .map(|(w, _)| w.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

/// Whether `action` launches and may go ahead: the caller takes its first launch
/// permit before starting it, so that launches leave in plan order.
pub fn launches(ctx: &Context, action: &Action) -> bool {
    if ctx.template().is_err() {
        return false;
    }
    match action.action {
        ActionKind::Create => true,
        ActionKind::Replace => ctx.allow_replace,
        _ => false,
    }
}

/// Carries out one action; `prepaid` when its first launch permit is taken.
pub async fn run(ctx: &Context, action: &Action, mut prepaid: bool, started: Instant) -> Outcome {
    let ws = action.workspace.as_str();
    let result = match (action.action, action.instance_id.as_deref()) {
        (ActionKind::Create, _) => create(ctx, ws, started, &mut prepaid).await,
        (ActionKind::Replace, Some(old)) if ctx.allow_replace => {
            match change(ctx, ws, ActionKind::Delete, old, started).await {
                Ok(_) => create(ctx, ws, started, &mut prepaid).await,
                Err(e) => Err(e),
            }
        }
        (ActionKind::Replace, _) => {
            return skip(
                ctx,
                action,
                "replacing terminates the instance and its data; set `prune: true` to allow it",
            );
        }
        (ActionKind::Resize, Some(id)) => match &action.resize {
            Some(from) => {
                let sizes = (from.instance_type.as_str(), action.instance_type.as_str());
                super::resize::resize(ctx, action, id, sizes, started).await
            }
            None => {
                return skip(
                    ctx,
                    action,
                    "the resize does not say the type it starts from",
                );
            }
        },
        (kind, Some(id)) => change(ctx, ws, kind, id, started).await,
        (_, None) => return skip(ctx, action, "no instance to act on"),
    };
    match result {
        Ok(outcome) => outcome,
        Err(StepError::Interrupted) => Outcome::Interrupted,
        // Not said to have failed: the run sends it to wait for room, or reports it as
        // not launched for quota (see `quota_wait::refused`).
        Err(StepError::Cloud(e)) if e.code.as_deref() == Some("VcpuLimitExceeded") => {
            Outcome::Failed(failure_note(ctx, action, &e))
        }
        Err(StepError::Cloud(e)) => Outcome::Failed(failed(ctx, action, &e)),
    }
}

/// Records that `action` failed with `e`: the event, and the note for the summary.
pub fn failed(ctx: &Context, action: &Action, e: &CloudError) -> FailureNote {
    let note = failure_note(ctx, action, e);
    ctx.events.emit(failed_event(&note));
    note
}

/// The note for the summary of `action` failing with `e`, explained by the catalogue.
pub(super) fn failure_note(ctx: &Context, action: &Action, e: &CloudError) -> FailureNote {
    let mut errors = ctx.explain_context(e);
    // A resize's errors are about its new type, whatever the template's launches use.
    if action.action == ActionKind::Resize {
        errors = ctx.errors.clone();
        errors.instance_type = Some(action.instance_type.clone());
    }
    FailureNote {
        workspace: action.workspace.clone(),
        action: action.action,
        reached_aws: e.status.is_some() || e.class == ErrorClass::Transient,
        code: e.code.clone().unwrap_or_else(|| format!("{:?}", e.class)),
        message: e.message.clone(),
        class: Some(e.class),
        explained: crate::errors::explain(e, &errors),
    }
}

pub(super) fn failed_event(note: &FailureNote) -> Event {
    Event::Failed {
        workspace: note.workspace.clone(),
        action: note.action,
        code: note.code.clone(),
        message: note.message.clone(),
        class: note.class,
        explained: note.explained.clone(),
    }
}

/// Records that `action` is not carried out, and why.
pub fn skip(ctx: &Context, action: &Action, reason: &str) -> Outcome {
    ctx.events.emit(Event::Skipped {
        workspace: action.workspace.clone(),
        action: action.action,
        reason: reason.into(),
    });
    Outcome::Skipped(reason.into())
}

async fn create(
    ctx: &Context,
    ws: &str,
    started: Instant,
    prepaid: &mut bool,
) -> Result<Outcome, StepError> {
    let instance = ctx.launch(ws, prepaid).await?;
    ctx.events.emit(Event::Launched {
        workspace: ws.to_string(),
        instance_id: instance.id.clone(),
        took_s: started.elapsed().as_secs_f64(),
    });
    Ok(Outcome::Done {
        instance: Some(instance.id),
        launched: true,
        then_stop: ctx.desired == DesiredState::Stopped,
    })
}

async fn change(
    ctx: &Context,
    ws: &str,
    kind: ActionKind,
    id: &str,
    started: Instant,
) -> Result<Outcome, StepError> {
    let cloud = &ctx.cloud;
    match kind {
        ActionKind::Start => start(ctx, ws, id).await?,
        ActionKind::Stop => {
            ctx.call(ws, Pace::Mutate, &mut false, |_| cloud.stop_instance(id))
                .await?
        }
        ActionKind::Hibernate => {
            ctx.call(ws, Pace::Mutate, &mut false, |_| {
                cloud.hibernate_instance(id)
            })
            .await?
        }
        ActionKind::Create | ActionKind::Replace | ActionKind::Resize => {
            unreachable!("launches and resizes are not single calls")
        }
        ActionKind::Delete => {
            ctx.call(ws, Pace::Mutate, &mut false, |_| {
                cloud.terminate_instance(id)
            })
            .await?
        }
    }
    Ok(changed(ctx, ws, kind, id, started))
}

/// Says that `kind` changed instance `id` of `ws`: the outcome of a done action on an
/// existing instance.
pub(super) fn changed(
    ctx: &Context,
    ws: &str,
    kind: ActionKind,
    id: &str,
    started: Instant,
) -> Outcome {
    ctx.events.emit(Event::Changed {
        workspace: ws.to_string(),
        action: kind,
        instance_id: id.to_string(),
        took_s: started.elapsed().as_secs_f64(),
    });
    Outcome::Done {
        instance: Some(id.to_string()),
        launched: false,
        then_stop: false,
    }
}

/// Starts instance `id` of `ws`. A start of prism's own is first recorded on the
/// instance, in a call of its own before StartInstances: whatever happens between the
/// two, a start that does not follow the record soon after is someone else's.
pub(super) async fn start(ctx: &Context, ws: &str, id: &str) -> Result<(), StepError> {
    let cloud = &ctx.cloud;
    if ctx.own_starts {
        let now = jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or_default();
        let at = now.to_string();
        ctx.call(ws, Pace::Mutate, &mut false, |_| {
            cloud.tag_instance(id, tags::STARTED, &at)
        })
        .await?;
    }
    ctx.call(ws, Pace::Start, &mut false, |_| cloud.start_instance(id))
        .await
}

/// Stops an instance that was launched for a stopped fleet, once it runs.
pub async fn stop_launched(ctx: &Context, ws: &str, id: &str) -> Result<(), StepError> {
    ctx.call(ws, Pace::Mutate, &mut false, |_| {
        ctx.cloud.stop_instance(id)
    })
    .await
}

/// Waits before the next look at the fleet, unless interrupted.
pub async fn pause(ctx: &Context, d: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = ctx.cancel.cancelled() => false,
    }
}

/// Looks, once for the whole fleet, for the instances of workspaces whose launch failed
/// after calls that may have reached AWS (an answer lost, then retries that ran out):
/// a workspace whose instance is there was launched after all. Its outcome becomes a
/// launch, and the event says it was confirmed. Returns those workspaces.
pub async fn confirm_failed_launches(
    ctx: &Context,
    outcomes: &mut [(Action, Outcome)],
) -> Vec<String> {
    let unsure: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, (a, o))| {
            matches!(a.action, ActionKind::Create | ActionKind::Replace)
                && matches!(o, Outcome::Failed(n) if n.reached_aws)
        })
        .map(|(i, _)| i)
        .collect();
    if unsure.is_empty() {
        return vec![];
    }
    let Ok(seen) = ctx.fleet_instances().await else {
        return vec![];
    };
    let mut confirmed = vec![];
    for i in unsure {
        let (action, outcome) = &mut outcomes[i];
        let Some(found) = seen.iter().find(|inst| {
            inst.workspace() == Some(action.workspace.as_str())
                && !inst.state.is_gone()
                && action.instance_id.as_deref() != Some(inst.id.as_str())
        }) else {
            continue;
        };
        let Outcome::Failed(note) = outcome else {
            continue;
        };
        ctx.events.emit(Event::Confirmed {
            workspace: action.workspace.clone(),
            instance_id: found.id.clone(),
            after: note.code.clone(),
        });
        *outcome = Outcome::Done {
            instance: Some(found.id.clone()),
            launched: true,
            then_stop: ctx.desired == DesiredState::Stopped,
        };
        confirmed.push(action.workspace.clone());
    }
    confirmed
}
