//! What steps share: starting and stopping one instance, pausing, and saying a
//! failure.

use std::time::Duration;

use tokio::time::Instant;

use super::call::Pace;
use super::context::RunContext;
use super::events::Event;
use super::outcome::{Outcome, StepError};
use super::report::FailureNote;
use crate::cloud::{CloudError, ErrorClass, tags};
use crate::plan::{Action, ActionKind};

/// Records that `action` failed with `e`: the event, and the note for the summary.
pub fn failed(ctx: &RunContext, action: &Action, e: &CloudError) -> FailureNote {
    let note = failure_note(ctx, action, e);
    ctx.events.emit(failed_event(&note));
    note
}

/// The note for the summary of `action` failing with `e`, explained by the catalogue.
pub(super) fn failure_note(ctx: &RunContext, action: &Action, e: &CloudError) -> FailureNote {
    let mut errors = super::launch::explain_context(ctx, e);
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

/// Says that `kind` changed instance `id` of `ws`: the outcome of a done action on an
/// existing instance.
pub(super) fn changed(
    ctx: &RunContext,
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
pub(super) async fn start(ctx: &RunContext, ws: &str, id: &str) -> Result<(), StepError> {
    let cloud = &ctx.cloud;
    if ctx.own_starts {
        let at = start_stamp();
        ctx.call(ws, Pace::Tag, &mut false, |_| {
            cloud.tag_instance(id, tags::STARTED, &at)
        })
        .await?;
    }
    ctx.call(ws, Pace::Start, &mut false, |_| cloud.start_instance(id))
        .await
}

/// The value of the `prism:started` tag that records a start of prism's own: now, to
/// the second (RFC 3339, UTC).
pub(super) fn start_stamp() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_default()
        .to_string()
}

/// Stops an instance that was launched for a stopped fleet, once it runs.
pub async fn stop_launched(ctx: &RunContext, ws: &str, id: &str) -> Result<(), StepError> {
    ctx.call(ws, Pace::Mutate, &mut false, |_| {
        ctx.cloud.stop_instance(id)
    })
    .await
}

/// Waits before the next look at the fleet, unless interrupted.
pub async fn pause(ctx: &RunContext, d: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = ctx.cancel.cancelled() => false,
    }
}
