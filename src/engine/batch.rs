//! Starts, stops and terminations of many workspaces in few calls: StartInstances,
//! StopInstances and TerminateInstances take many ids, so a timetable boundary, a
//! `workspace stop --fleet`, a destroy or a prune is a handful of calls, not one per
//! workspace.
//!
//! AWS acts on every id of such a call or, when it refuses one (an unknown id, an
//! instance in the wrong state), on none, naming the ids it refused. Those fail alone;
//! the rest go again in one call, which is not a second attempt for them: the refused
//! call changed nothing. A refusal that names no id sends each workspace's change on
//! its own, as one action ([`super::step`]). A lost answer or a throttle is retried for
//! the whole batch: each of these calls may be repeated safely.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::call::Pace;
use super::context::RunContext;
use super::ops::{changed, failed};
use super::outcome::{Outcome, StepError};
use super::wait::Adder;
use crate::cloud::{CloudError, ErrorClass, tags};
use crate::plan::{Action, ActionKind};

/// The most ids one call carries: AWS's resource bucket for these actions holds 1 000
/// instances, so a call of more could never go out whole.
pub const IDS_PER_CALL: usize = 1000;

/// Whether `action` can share a call with others of its kind.
pub fn batchable(action: &Action) -> bool {
    matches!(
        action.action,
        ActionKind::Start | ActionKind::Stop | ActionKind::Delete
    ) && action.instance_id.is_some()
}

/// Splits `actions` (batchable ones, in plan order) into the batches that go out as
/// one call each: by kind, up to [`IDS_PER_CALL`] ids. A kind with one action makes
/// no batch: that action goes out as any single action.
pub fn batches(actions: Vec<Action>) -> Vec<Vec<Action>> {
    let mut out = vec![];
    for kind in [ActionKind::Stop, ActionKind::Delete, ActionKind::Start] {
        let of_kind: Vec<Action> = actions
            .iter()
            .filter(|a| a.action == kind)
            .cloned()
            .collect();
        if of_kind.len() < 2 {
            continue;
        }
        out.extend(of_kind.chunks(IDS_PER_CALL).map(<[Action]>::to_vec));
    }
    out
}

/// Starts `work` (the actions of one batch) on a task of `tasks` once one of `slots`
/// is free: one slot for the whole batch. Each outcome goes to `settle` as the batch
/// ends.
pub async fn dispatch<F, Fut>(
    ctx: &Arc<RunContext>,
    work: F,
    slots: &Arc<Semaphore>,
    tasks: &mut JoinSet<Vec<(Action, Outcome)>>,
    settle: Option<Adder>,
) where
    F: FnOnce(Arc<RunContext>) -> Fut + Send + 'static,
    Fut: Future<Output = Vec<(Action, Outcome)>> + Send,
{
    let permit = slots.clone().acquire_owned().await.expect("never closed");
    let ctx = ctx.clone();
    tasks.spawn(async move {
        let outcomes = work(ctx.clone()).await;
        drop(permit);
        if let Some(settle) = settle {
            for (action, outcome) in &outcomes {
                settle.add(&ctx, action, outcome);
            }
        }
        outcomes
    });
}

/// Carries out `batch` (actions of one kind) in as few calls as AWS allows.
pub async fn change_all(ctx: &RunContext, mut batch: Vec<Action>) -> Vec<(Action, Outcome)> {
    let started = Instant::now();
    let mut outcomes = vec![];
    while !batch.is_empty() {
        let kind = batch[0].action;
        let ids: Vec<String> = batch.iter().filter_map(|a| a.instance_id.clone()).collect();
        let e = match call(ctx, kind, &ids, &label(&batch)).await {
            Ok(()) => {
                outcomes.extend(batch.drain(..).map(|a| {
                    let ws = a.workspace.clone();
                    let id = a.instance_id.clone().unwrap_or_default();
                    let done = changed(ctx, &ws, kind, &id, started);
                    (a, done)
                }));
                break;
            }
            Err(StepError::Interrupted) => {
                outcomes.extend(batch.drain(..).map(|a| (a, Outcome::Interrupted)));
                break;
            }
            Err(StepError::Cloud(e)) => e,
        };
        let (refused, rest): (Vec<Action>, Vec<Action>) = batch
            .drain(..)
            .partition(|a| names(&e, a.instance_id.as_deref().unwrap_or_default()));
        if refused.is_empty() || rest.is_empty() || e.class != ErrorClass::Permanent {
            // AWS did not say which: each on its own, as a single action.
            for a in refused.into_iter().chain(rest) {
                let outcome = super::step::run(ctx, &a, false, started).await;
                outcomes.push((a, outcome));
            }
            break;
        }
        for a in refused {
            let note = failed(ctx, &a, &e);
            outcomes.push((a, Outcome::Failed(note)));
        }
        batch = rest;
    }
    outcomes
}

/// Whether AWS's refusal `e` names instance `id`.
fn names(e: &CloudError, id: &str) -> bool {
    !id.is_empty()
        && e.message.match_indices(id).any(|(at, _)| {
            // Not a longer id that starts the same.
            !e.message[at + id.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_hexdigit())
        })
}

/// What a batch's call is logged and retried as: its first workspace, and how many
/// go with it.
fn label(batch: &[Action]) -> String {
    match batch {
        [one] => one.workspace.clone(),
        [first, rest @ ..] => format!("{} and {} more", first.workspace, rest.len()),
        [] => String::new(),
    }
}

/// One call of `kind` for `ids`, paced and retried as any call. A start of prism's own
/// is first recorded on the instances, in one CreateTags (see [`super::ops::start`]).
async fn call(
    ctx: &RunContext,
    kind: ActionKind,
    ids: &[String],
    label: &str,
) -> Result<(), StepError> {
    let cloud = &ctx.cloud;
    match kind {
        ActionKind::Start => {
            if ctx.own_starts {
                let at = super::ops::start_stamp();
                ctx.call(label, Pace::Tag, &mut false, |_| {
                    cloud.tag_instances(ids, tags::STARTED, &at)
                })
                .await?;
            }
            ctx.call(label, Pace::Start, &mut false, |_| {
                cloud.start_instances(ids)
            })
            .await
        }
        ActionKind::Stop => {
            ctx.call(label, Pace::Mutate, &mut false, |_| {
                cloud.stop_instances(ids)
            })
            .await
        }
        ActionKind::Delete => {
            ctx.call(label, Pace::Terminate, &mut false, |_| {
                cloud.terminate_instances(ids)
            })
            .await
        }
        _ => unreachable!("only starts, stops and terminations are batched"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(kind: ActionKind, ws: &str, id: Option<&str>) -> Action {
        Action {
            workspace: ws.into(),
            action: kind,
            instance_id: id.map(str::to_string),
            instance_type: "t3.micro".into(),
            vcpus: Some(2),
            reason: String::new(),
            resize: None,
        }
    }

    #[test]
    fn a_refusal_names_an_id_only_whole() {
        let e = CloudError::service(
            "StopInstances",
            Some("InvalidInstanceID.NotFound"),
            "The instance IDs 'i-0abc, i-0abd1' do not exist",
            Some(400),
        );
        assert!(names(&e, "i-0abc"));
        assert!(names(&e, "i-0abd1"));
        assert!(!names(&e, "i-0abd"));
        assert!(!names(&e, "i-0ab"));
        assert!(!names(&e, ""));
    }

    #[test]
    fn batches_are_by_kind_and_a_lone_action_goes_alone() {
        let actions = vec![
            action(ActionKind::Stop, "a", Some("i-1")),
            action(ActionKind::Start, "b", Some("i-2")),
            action(ActionKind::Stop, "c", Some("i-3")),
            action(ActionKind::Delete, "d", Some("i-4")),
            action(ActionKind::Delete, "e", Some("i-5")),
        ];
        let batches = batches(actions);
        let names: Vec<Vec<&str>> = batches
            .iter()
            .map(|b| b.iter().map(|a| a.workspace.as_str()).collect())
            .collect();
        assert_eq!(names, vec![vec!["a", "c"], vec!["d", "e"]]);
    }
}
