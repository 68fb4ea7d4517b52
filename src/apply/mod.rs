//! Carrying out a plan: each action on its own task, launches paced by the adaptive
//! limiter, every call retried by error class, then a wait for the final states.
//!
//! One workspace's failure never stops the others; the [`Report`] lists each.

pub mod events;
pub mod limiter;
pub mod memory;
pub mod progress;
mod step;
pub mod token;
mod wait;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cloud::{Cloud, ErrorClass, InstanceState};
use crate::manifest::{Manifest, RetryPolicy};
use crate::observe::Observed;
use crate::plan::{Action, ActionKind, Plan};
use events::{Event, Events};
use limiter::RateSettings;
use step::{Context, Outcome};

/// How to carry out a plan.
#[derive(Debug, Clone)]
pub struct Options {
    /// Actions (calls and waits) in flight at once.
    pub parallelism: usize,
    /// How long to wait for instances to reach their state; None returns after the calls.
    pub wait: Option<Duration>,
    /// Time between two looks at the fleet while waiting.
    pub poll: Duration,
    /// Launch pacing; None when pacing is disabled.
    pub rate: Option<RateSettings>,
    pub retry: RetryPolicy,
    /// Workspaces not to act on, with the reason (e.g. no quota left for them).
    pub skip: std::collections::BTreeMap<String, String>,
    /// Where each workspace's latest launch went (see [`memory`]).
    pub memory: Arc<memory::LaunchMemory>,
}

/// One workspace whose action failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureNote {
    pub workspace: String,
    pub action: ActionKind,
    /// The AWS error code, or `Timeout` for a wait that ran out.
    pub code: String,
    pub message: String,
    pub class: Option<ErrorClass>,
    /// What happened, what prism did, what to do: from the error catalogue.
    pub explained: crate::errors::Explained,
}

/// One workspace whose action was not carried out, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SkipNote {
    pub workspace: String,
    pub action: ActionKind,
    pub reason: String,
}

/// How an apply went.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub fleet: String,
    /// Actions in the plan.
    pub total: usize,
    /// Actions carried out (and, when waiting, settled).
    pub succeeded: usize,
    /// Of those, instances launched.
    pub launched: usize,
    pub failed: Vec<FailureNote>,
    pub skipped: Vec<SkipNote>,
    /// Actions never started because of an interruption.
    pub not_started: usize,
    pub interrupted: bool,
    pub duration_s: f64,
}

impl Report {
    /// Whether everything the plan asked for was done.
    pub fn complete(&self) -> bool {
        self.failed.is_empty()
            && self.skipped.is_empty()
            && self.not_started == 0
            && !self.interrupted
    }
}

/// Carries out `plan` (made from `manifest` and `observed`).
pub async fn execute(
    cloud: Arc<dyn Cloud>,
    manifest: &Manifest,
    plan: &Plan,
    observed: &Observed,
    opts: &Options,
    events: Events,
    cancel: CancellationToken,
) -> Report {
    let launches = plan
        .actions
        .iter()
        .filter(|a| matches!(a.action, ActionKind::Create | ActionKind::Replace))
        .count();
    let ctx = Arc::new(Context::new(
        cloud,
        manifest,
        observed,
        opts,
        events.clone(),
        cancel.clone(),
        launches,
    ));
    events.emit(Event::Started {
        fleet: plan.fleet.clone(),
        total: plan.actions.len(),
        launches,
        rate_per_minute: opts.rate.map(|r| r.rate_per_minute),
        burst_size: opts.rate.map_or(0, |r| r.burst_size),
        adaptive: opts.rate.is_some_and(|r| r.adaptive),
    });
    for a in &plan.actions {
        events.emit(Event::Queued {
            workspace: a.workspace.clone(),
            action: a.action,
        });
    }

    let slots = Arc::new(Semaphore::new(opts.parallelism.max(1)));
    let mut tasks = JoinSet::new();
    let mut not_started = 0;
    let mut outcomes: Vec<(Action, Outcome)> = Vec::new();
    for (i, action) in plan.actions.iter().enumerate() {
        if let Some(reason) = opts.skip.get(&action.workspace) {
            outcomes.push((action.clone(), step::skip(&ctx, action, reason)));
            continue;
        }
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("never closed"),
            () = cancel.cancelled() => {
                not_started = plan.actions.len() - i;
                break;
            }
        };
        let started = tokio::time::Instant::now();
        // Launches take their first permit here, in plan order; the wait is shown.
        let prepaid = step::launches(&ctx, action);
        if prepaid && ctx.launch_permit(&action.workspace).await.is_err() {
            not_started = plan.actions.len() - i;
            break;
        }
        let ctx = ctx.clone();
        let action = action.clone();
        tasks.spawn(async move {
            let outcome = step::run(&ctx, &action, prepaid, started).await;
            drop(permit);
            (action, outcome)
        });
    }
    outcomes.extend(tasks.join_all().await);
    outcomes.sort_by(|a, b| a.0.workspace.cmp(&b.0.workspace));

    if let Some(timeout) = opts.wait {
        wait::settle(&ctx, &mut outcomes, timeout, opts.poll).await;
    }
    let report = report(
        plan,
        &outcomes,
        not_started,
        cancel.is_cancelled(),
        events.elapsed(),
    );
    events.emit(Event::Summary(report.clone()));
    report
}

fn report(
    plan: &Plan,
    outcomes: &[(Action, Outcome)],
    not_started: usize,
    interrupted: bool,
    elapsed: Duration,
) -> Report {
    let mut r = Report {
        fleet: plan.fleet.clone(),
        total: plan.actions.len(),
        succeeded: 0,
        launched: 0,
        failed: vec![],
        skipped: vec![],
        not_started,
        interrupted,
        duration_s: elapsed.as_secs_f64(),
    };
    for (action, outcome) in outcomes {
        match outcome {
            Outcome::Done { launched, .. } => {
                r.succeeded += 1;
                r.launched += usize::from(*launched);
            }
            Outcome::Failed(note) => r.failed.push(note.clone()),
            Outcome::Skipped(reason) => r.skipped.push(SkipNote {
                workspace: action.workspace.clone(),
                action: action.action,
                reason: reason.clone(),
            }),
            Outcome::Interrupted => r.not_started += 1,
        }
    }
    r
}

/// The state an action leaves its instance in, to wait for.
fn target_state(
    action: ActionKind,
    desired: crate::manifest::DesiredState,
) -> Option<InstanceState> {
    match action {
        ActionKind::Create | ActionKind::Replace | ActionKind::Start => Some(match desired {
            crate::manifest::DesiredState::Running => InstanceState::Running,
            crate::manifest::DesiredState::Stopped => InstanceState::Stopped,
        }),
        ActionKind::Stop | ActionKind::Hibernate => Some(InstanceState::Stopped),
        ActionKind::Delete => None,
    }
}

#[cfg(test)]
mod tests;
