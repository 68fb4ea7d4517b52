//! Carrying out a plan: each action on its own task, launches paced by the adaptive
//! limiter, every call retried by error class, then a wait for the final states.
//!
//! One workspace's failure never stops the others; the [`Report`] lists each.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::account::Engine;
use super::context::RunContext;
use super::events::{Event, Events};
use super::job::{Job, RunOptions};
use super::outcome::Outcome;
use super::report::{Report, SkipNote};
use super::{batch, launch_batch, quota_wait, step, wait};
use crate::cloud::InstanceState;
use crate::plan::{Action, ActionKind};

/// Carries out `job` on `engine`: the body of [`Engine::run`].
pub(crate) async fn execute(
    engine: Arc<Engine>,
    job: Job,
    opts: RunOptions,
    events: Events,
    cancel: CancellationToken,
) -> Report {
    let launching = |a: &&Action| matches!(a.action, ActionKind::Create | ActionKind::Replace);
    let all_launches = job.actions.iter().filter(launching).count();
    // The launches this run makes now: those skipped or waiting for quota are not
    // counted in its estimate.
    let launches = job
        .actions
        .iter()
        .filter(launching)
        .filter(|a| {
            !job.skip.contains_key(&a.workspace) && !job.quota_waiting.contains_key(&a.workspace)
        })
        .count();
    let rate = engine.launch_rate().filter(|_| all_launches > 0);
    events.emit(Event::Started {
        fleet: job.fleet.clone(),
        total: job.actions.len(),
        launches,
        rate_per_minute: rate.map(|r| r.rate_per_minute),
        burst_size: rate.map_or(0, |r| r.burst_size),
        adaptive: rate.is_some_and(|r| r.adaptive),
        auto: rate.is_some_and(|r| r.auto),
    });
    for a in &job.actions {
        events.emit(Event::Queued {
            workspace: a.workspace.clone(),
            action: a.action,
        });
    }
    let actions = job.actions.clone();
    let fleet = job.fleet.clone();
    let ctx = Arc::new(RunContext::new(
        engine,
        job,
        &opts,
        events.clone(),
        cancel.clone(),
        launches,
    ));
    if all_launches > 0 && ctx.recipe.is_some() {
        super::launch::prepare_launches(&ctx).await;
    }

    // Instances are waited for, and those launched for a stopped fleet stopped, as
    // each call is accepted.
    let settler = opts
        .wait
        .map(|timeout| wait::Settler::start(ctx.clone(), timeout, opts.poll));
    let adder = settler.as_ref().map(wait::Settler::adder);
    let slots = Arc::new(Semaphore::new(opts.parallelism.max(1)));
    let mut tasks = JoinSet::new();
    let mut not_started = 0;
    let mut outcomes: Vec<(Action, Outcome)> = Vec::new();
    let mut waiting = Vec::new();
    // Starts, stops and terminations go out first, many per call, beside the launches.
    let free = |a: &Action| {
        !ctx.skip.contains_key(&a.workspace) && !ctx.quota_waiting.contains_key(&a.workspace)
    };
    let batches = batch::batches(
        actions
            .iter()
            .filter(|a| batch::batchable(a) && free(a))
            .cloned()
            .collect(),
    );
    // A workspace may have more actions than one (a duplicate deleted, its instance
    // replaced): what is batched is told apart by its instance.
    let batched: BTreeSet<(ActionKind, Option<String>)> = batches
        .iter()
        .flatten()
        .map(|a| (a.action, a.instance_id.clone()))
        .collect();
    let mut batch_tasks = JoinSet::new();
    for b in batches {
        let work = |ctx: Arc<RunContext>| async move { batch::change_all(&ctx, b).await };
        batch::dispatch(&ctx, work, &slots, &mut batch_tasks, adder.clone()).await;
    }
    let rest: Vec<&Action> = actions
        .iter()
        .filter(|a| !batched.contains(&(a.action, a.instance_id.clone())))
        .collect();
    // Launches claimed before any call; those that share a call, many workspaces in
    // one RunInstances.
    let launch_batches = if all_launches > 0 && ctx.recipe.is_some() {
        let creates: Vec<&Action> = rest
            .iter()
            .copied()
            .filter(|a| !ctx.skip.contains_key(&a.workspace))
            .collect();
        launch_batch::plan(&ctx, &creates, |a| free(a), true)
    } else {
        vec![]
    };
    let in_batch: BTreeSet<String> = launch_batches
        .iter()
        .flat_map(|b| &b.actions)
        .map(|a| a.workspace.clone())
        .collect();
    for b in launch_batches {
        let work = |ctx: Arc<RunContext>| async move { launch_batch::launch_all(&ctx, b).await };
        batch::dispatch(&ctx, work, &slots, &mut batch_tasks, adder.clone()).await;
    }
    let rest: Vec<&Action> = rest
        .into_iter()
        .filter(|a| !(a.action == ActionKind::Create && in_batch.contains(&a.workspace)))
        .collect();
    for (i, action) in rest.iter().copied().enumerate() {
        if let Some(reason) = ctx.skip.get(&action.workspace) {
            outcomes.push((action.clone(), step::skip(&ctx, action, reason)));
            continue;
        }
        if let Some(reason) = ctx.quota_waiting.get(&action.workspace) {
            quota_wait::wait(&ctx, action, reason);
            waiting.push(action.clone());
            continue;
        }
        if step::dispatch(&ctx, action.clone(), &slots, &mut tasks, adder.clone())
            .await
            .is_err()
        {
            not_started = rest.len() - i;
            break;
        }
    }
    outcomes.extend(tasks.join_all().await);
    outcomes.extend(batch_tasks.join_all().await.into_iter().flatten());
    let mut confirmed = step::confirm_failed_launches(&ctx, &mut outcomes).await;
    waiting.extend(quota_wait::refused(&ctx, &mut outcomes).await);
    let settle = |outcomes: &[(Action, Outcome)], workspaces: &[String]| {
        for (action, outcome) in outcomes {
            if let Some(adder) = &adder
                && workspaces.contains(&action.workspace)
            {
                adder.add(&ctx, action, outcome);
            }
        }
    };
    settle(&outcomes, &confirmed);
    if !waiting.is_empty() {
        // What waited for quota is confirmed and waited for on its own, once launched.
        let mut later = quota_wait::run(&ctx, waiting, &slots, adder.as_ref()).await;
        let now_confirmed = step::confirm_failed_launches(&ctx, &mut later).await;
        settle(&later, &now_confirmed);
        confirmed.extend(now_confirmed);
        outcomes.extend(later);
    }
    launch_batch::write_own_tags(&ctx).await;
    // The wait ends once every handle that adds to it is gone.
    drop(adder);
    if let Some(settler) = settler {
        settler.finish(&mut outcomes).await;
    }
    let mut elsewhere = vec![];
    if cancel.is_cancelled() {
        let (never_started, names) = launched_elsewhere(&ctx, &actions, &mut outcomes).await;
        not_started -= never_started;
        elsewhere = names;
    }
    outcomes.sort_by(|a, b| a.0.workspace.cmp(&b.0.workspace));
    let mut report = report(
        &fleet,
        actions.len(),
        &outcomes,
        not_started,
        cancel.is_cancelled(),
        events.elapsed(),
    );
    report.confirmed_after_errors = confirmed;
    report.launched_by_other_runs = ctx.launched_by_others();
    report.launched -= report.launched_by_other_runs.len().min(report.launched);
    // Never launched by this run: not counted in `launched` to begin with.
    report.launched_by_other_runs.extend(elsewhere);
    report.fallbacks =
        std::mem::take(&mut *ctx.fallbacks.lock().unwrap_or_else(|e| e.into_inner()));
    report
        .fallbacks
        .sort_by(|a, b| a.workspace.cmp(&b.workspace));
    events.emit(Event::Summary(report.clone()));
    report
}

/// After a cancel: the launches this run never made whose workspace is up anyway,
/// launched meanwhile by another run (another process, a `prism watch`), said as such
/// instead of "not launched". One DescribeInstances; on an error nothing is said. The
/// number of them that were never started (not among `outcomes`), and their names.
async fn launched_elsewhere(
    ctx: &RunContext,
    actions: &[Action],
    outcomes: &mut Vec<(Action, Outcome)>,
) -> (usize, Vec<String>) {
    let ours: BTreeSet<String> = ctx
        .sent
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(w, _)| w.clone())
        .collect();
    let started: BTreeSet<&str> = outcomes
        .iter()
        .filter(|(_, o)| !matches!(o, Outcome::Interrupted))
        .map(|(a, _)| a.workspace.as_str())
        .chain(ours.iter().map(String::as_str))
        .collect();
    let untouched: Vec<&Action> = actions
        .iter()
        .filter(|a| a.action == ActionKind::Create && !started.contains(a.workspace.as_str()))
        .collect();
    if untouched.is_empty() {
        return (0, vec![]);
    }
    let filter = crate::cloud::InstanceFilter {
        tags: vec![(crate::cloud::tags::FLEET.to_string(), ctx.fleet.clone())],
        states: vec![
            InstanceState::Pending,
            InstanceState::Running,
            InstanceState::Stopped,
        ],
        ..Default::default()
    };
    let Ok(live) = ctx.cloud.describe_instances(&filter).await else {
        return (0, vec![]);
    };
    let mut never_started = 0;
    let mut names = vec![];
    for a in untouched {
        let Some(i) = live
            .iter()
            .find(|i| i.workspace() == Some(a.workspace.as_str()))
        else {
            continue;
        };
        ctx.events.emit(Event::LaunchedElsewhere {
            workspace: a.workspace.clone(),
            instance_id: i.id.clone(),
        });
        names.push(a.workspace.clone());
        let done = Outcome::Done {
            instance: Some(i.id.clone()),
            launched: false,
            then_stop: false,
        };
        match outcomes
            .iter_mut()
            .find(|(o, _)| o.workspace == a.workspace)
        {
            Some((_, outcome)) => *outcome = done,
            None => {
                outcomes.push((a.clone(), done));
                never_started += 1;
            }
        }
    }
    (never_started, names)
}

fn report(
    fleet: &str,
    total: usize,
    outcomes: &[(Action, Outcome)],
    not_started: usize,
    interrupted: bool,
    elapsed: Duration,
) -> Report {
    let mut r = Report {
        fleet: fleet.to_string(),
        total,
        succeeded: 0,
        launched: 0,
        failed: vec![],
        skipped: vec![],
        not_started,
        waiting_for_quota: vec![],
        confirmed_after_errors: vec![],
        launched_by_other_runs: vec![],
        fallbacks: vec![],
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
            Outcome::Waiting(reason) => r.waiting_for_quota.push(SkipNote {
                workspace: action.workspace.clone(),
                action: action.action,
                reason: reason.clone(),
            }),
            Outcome::Interrupted => r.not_started += 1,
        }
    }
    r
}

#[cfg(test)]
mod tests;
