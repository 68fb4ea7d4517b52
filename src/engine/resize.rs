//! An in-place resize: stop, change the instance type, start back to the fleet's
//! state; the instance keeps its id and its volumes. A type AWS refuses is undone.

use tokio::time::Instant;

use super::call::Pace;
use super::context::RunContext;
use super::events::Event;
use super::ops::{self, changed, failed_event, failure_note, pause};
use super::outcome::{Outcome, StepError};
use crate::cloud::{CloudError, InstanceState};
use crate::manifest::DesiredState;
use crate::plan::{Action, ActionKind};

/// Resizes instance `id` in place from `sizes.0` to `sizes.1`: stops it (unless
/// stopped), changes its type, and starts it when the fleet runs. When AWS refuses the
/// new type (at the change, or at the start), the instance goes back on its old type
/// and to the fleet's state, and the action fails with AWS's explanation.
pub(super) async fn resize(
    ctx: &RunContext,
    action: &Action,
    id: &str,
    (from, to): (&str, &str),
    started: Instant,
) -> Result<Outcome, StepError> {
    let ws = action.workspace.as_str();
    let cloud = &ctx.cloud;
    ctx.events.emit(Event::Resizing {
        workspace: ws.to_string(),
        instance_id: id.to_string(),
        from_instance_type: from.to_string(),
        instance_type: to.to_string(),
    });
    if instance_state(ctx, id).await? != Some(InstanceState::Stopped) {
        ctx.call(ws, Pace::Mutate, &mut false, |_| cloud.stop_instance(id))
            .await?;
        until_stopped(ctx, id).await?;
    }
    let runs = ctx.desired == DesiredState::Running;
    let refused = match ctx
        .call(ws, Pace::Mutate, &mut false, |_| {
            cloud.modify_instance_type(id, to)
        })
        .await
    {
        Err(StepError::Cloud(e)) => Some((e, false)),
        Err(other) => return Err(other),
        Ok(()) if !runs => None,
        Ok(()) => match ops::start(ctx, ws, id).await {
            Err(StepError::Cloud(e)) => Some((e, true)),
            Err(other) => return Err(other),
            Ok(()) => None,
        },
    };
    if let Some((e, changed)) = refused {
        undo_resize(ctx, ws, id, from, changed).await?;
        let mut note = failure_note(ctx, action, &e);
        note.explained.what_prism_does = format!(
            "prism put {ws} back on {from}{}; its disk is kept. The other workspaces carry on.",
            if runs { " and started it again" } else { "" }
        );
        ctx.events.emit(failed_event(&note));
        return Ok(Outcome::Failed(note));
    }
    Ok(changed(ctx, ws, ActionKind::Resize, id, started))
}

/// Puts a resized instance back as it was: its old type when the new one was applied
/// (`changed`), then started when the fleet runs.
async fn undo_resize(
    ctx: &RunContext,
    ws: &str,
    id: &str,
    from: &str,
    changed: bool,
) -> Result<(), StepError> {
    let cloud = &ctx.cloud;
    if changed {
        // A start that failed may leave the instance on its way back to stopped.
        until_stopped(ctx, id).await?;
        ctx.call(ws, Pace::Mutate, &mut false, |_| {
            cloud.modify_instance_type(id, from)
        })
        .await?;
    }
    if ctx.desired == DesiredState::Running {
        ops::start(ctx, ws, id).await?;
    }
    ctx.events.emit(Event::ResizeUndone {
        workspace: ws.to_string(),
        instance_id: id.to_string(),
        instance_type: from.to_string(),
    });
    Ok(())
}

/// The state of instance `id` of the fleet; None when AWS does not show it (yet).
async fn instance_state(ctx: &RunContext, id: &str) -> Result<Option<InstanceState>, StepError> {
    let seen = ctx.fleet_instance(id).await?;
    Ok(seen.map(|i| i.state))
}

/// Waits until instance `id` is stopped, looking every poll interval.
async fn until_stopped(ctx: &RunContext, id: &str) -> Result<(), StepError> {
    let deadline = Instant::now() + ctx.settle;
    loop {
        if instance_state(ctx, id).await? == Some(InstanceState::Stopped) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(StepError::Cloud(CloudError::service(
                "DescribeInstances",
                Some("WaitTimedOut"),
                format!(
                    "{id} did not stop within {}",
                    humantime::format_duration(ctx.settle)
                ),
                None,
            )));
        }
        if !pause(ctx, ctx.poll).await {
            return Err(StepError::Interrupted);
        }
    }
}
