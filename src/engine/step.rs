//! One action on one workspace: the dispatch from a plan's action to its calls. Where a
//! launch goes (zones, fallback types, ClientTokens) is in `launch.rs`, a resize in
//! `resize.rs`; what they share in `ops.rs`.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use super::call::Pace;
use super::context::RunContext;
use super::events::Event;
use super::ops::{changed, failed, failure_note, start};
use super::outcome::{Outcome, StepError};
use super::verdict::Verdict;
use super::wait::Adder;
use crate::manifest::DesiredState;
use crate::plan::{Action, ActionKind};

/// Starts `action` on a task of `tasks` once one of `slots` is free; a launch takes its
/// first launch permit here, before the task starts, so that launches leave in the order
/// they are dispatched (the wait is shown). The outcome goes to `settle` as it ends, when
/// there is one. Gives the action back when the run was cancelled before it started.
pub async fn dispatch(
    ctx: &Arc<RunContext>,
    action: Action,
    slots: &Arc<Semaphore>,
    tasks: &mut JoinSet<(Action, Outcome)>,
    settle: Option<Adder>,
) -> Result<(), Action> {
    let permit = tokio::select! {
        p = slots.clone().acquire_owned() => p.expect("never closed"),
        () = ctx.cancel.cancelled() => return Err(action),
    };
    let started = Instant::now();
    let prepaid = launches(ctx, &action);
    if prepaid && ctx.launch_permit(&action.workspace).await.is_err() {
        return Err(action);
    }
    let ctx = ctx.clone();
    let span = tracing::info_span!("workspace", workspace = %action.workspace);
    tasks.spawn(
        async move {
            let outcome = run(&ctx, &action, prepaid, started).await;
            drop(permit);
            if let Some(settle) = settle {
                settle.add(&ctx, &action, &outcome);
            }
            (action, outcome)
        }
        .instrument(span),
    );
    Ok(())
}

/// Whether `action` launches and may go ahead: the caller takes its first launch
/// permit before starting it, so that launches leave in plan order.
fn launches(ctx: &RunContext, action: &Action) -> bool {
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
pub(super) async fn run(
    ctx: &RunContext,
    action: &Action,
    mut prepaid: bool,
    started: Instant,
) -> Outcome {
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
            return skip(ctx, action, &Verdict::ReplaceNeedsPrune);
        }
        (ActionKind::Resize, Some(id)) => match &action.resize {
            Some(from) => {
                let sizes = (from.instance_type.as_str(), action.instance_type.as_str());
                super::resize::resize(ctx, action, id, sizes, started).await
            }
            None => {
                return skip(ctx, action, &Verdict::ResizeFromUnknown);
            }
        },
        (kind, Some(id)) => change(ctx, ws, kind, id, started).await,
        (_, None) => return skip(ctx, action, &Verdict::NoInstance),
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

/// Records that `action` is not carried out, and why.
pub fn skip(ctx: &RunContext, action: &Action, reason: &Verdict) -> Outcome {
    ctx.events.emit(Event::Skipped {
        workspace: action.workspace.clone(),
        action: action.action,
        reason: reason.clone(),
    });
    Outcome::Skipped(reason.clone())
}

async fn create(
    ctx: &RunContext,
    ws: &str,
    started: Instant,
    prepaid: &mut bool,
) -> Result<Outcome, StepError> {
    let instance = super::launch::launch(ctx, ws, prepaid).await?;
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
    ctx: &RunContext,
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
            ctx.call(ws, Pace::Terminate, &mut false, |_| {
                cloud.terminate_instance(id)
            })
            .await?
        }
    }
    Ok(changed(ctx, ws, kind, id, started))
}

/// Looks, once for the whole fleet, for the instances of workspaces whose launch failed
/// after calls that may have reached AWS (an answer lost, then retries that ran out):
/// a workspace whose instance is there was launched after all. Its outcome becomes a
/// launch, and the event says it was confirmed. Returns those workspaces.
pub async fn confirm_failed_launches(
    ctx: &RunContext,
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
