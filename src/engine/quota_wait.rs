//! Workspaces the quota has no room for wait instead of being forgotten: the run reads
//! the quota and the region's usage again at a bounded pace, and lets them go, in name
//! order, as soon as there is room (a request approved, another instance stopped).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::context::RunContext;
use super::events::Event;
use super::outcome::Outcome;
use super::verdict::Verdict;
use super::wait::Adder;
use super::{ops, step};
use crate::plan::Action;
use crate::quota::{self, QuotaClass};

/// Says that `action` waits for room in a quota, and why.
pub fn wait(ctx: &RunContext, action: &Action, reason: &Verdict) {
    ctx.events.emit(Event::WaitingForQuota {
        workspace: action.workspace.clone(),
        action: action.action,
        reason: reason.clone(),
    });
}

/// Whether AWS refused the action for want of quota: it can wait for room.
fn refused_for_quota(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Failed(n) if n.code == "VcpuLimitExceeded")
}

/// Takes the actions AWS refused for want of quota out of `outcomes`: when the run
/// waits for quota, they wait with the others (returned); else they are not launched
/// for quota, said with the quota as it stands now. Never failed: another fleet took
/// the room the plan saw.
pub async fn refused(ctx: &RunContext, outcomes: &mut Vec<(Action, Outcome)>) -> Vec<Action> {
    let (refused, kept): (Vec<_>, Vec<_>) = std::mem::take(outcomes)
        .into_iter()
        .partition(|(_, o)| refused_for_quota(o));
    *outcomes = kept;
    let refused: Vec<Action> = refused.into_iter().map(|(a, _)| a).collect();
    if ctx.quota_wait.is_some() {
        for a in &refused {
            wait(ctx, a, &Verdict::RefusedWaiting);
        }
        return refused;
    }
    outcomes.extend(not_launched(ctx, refused).await);
    vec![]
}

/// `refused` as not launched for quota, each with the quota read now: what is in use,
/// and the value to ask for so that they fit.
async fn not_launched(ctx: &RunContext, refused: Vec<Action>) -> Vec<(Action, Outcome)> {
    let mut by_class: BTreeMap<&'static str, Vec<Action>> = BTreeMap::new();
    for a in refused {
        by_class
            .entry(quota::on_demand_class(&a.instance_type).code)
            .or_default()
            .push(a);
    }
    let mut out = Vec::new();
    for (code, actions) in by_class {
        let Some(class) = quota::by_name(code) else {
            continue;
        };
        let need: u32 = actions.iter().filter_map(Action::added_vcpus).sum();
        let detail = match quota::usage::in_use(ctx.cloud.as_ref(), class, &ctx.retry).await {
            Ok((used, limit)) => {
                let ask = quota::arith::recommended_value(f64::from(used + need), Some(limit))
                    .or_else(|| (f64::from(used + need) > limit).then(|| f64::from(used + need)))
                    .map(|v| {
                        format!(
                            "; to launch them, ask for {v}: `{}`",
                            quota::arith::request_command(class, v, Some(ctx.cloud.region()))
                        )
                    })
                    .unwrap_or_default();
                format!(
                    " — another launch took the room the plan saw; {} has {used} of {limit} vCPUs in use now and these need {need} more{ask}",
                    class.name
                )
            }
            Err(e) => format!("; the quota could not be read again: {e}"),
        };
        let reason = Verdict::Refused { detail };
        for a in actions {
            let outcome = step::skip(ctx, &a, &reason);
            out.push((a, outcome));
        }
    }
    out
}

/// Carries out the `waiting` actions as room appears, until the run's quota wait is
/// over; without one, reports them as waiting at once. Each done action is handed to
/// `settle` as it ends.
pub async fn run(
    ctx: &Arc<RunContext>,
    mut waiting: Vec<Action>,
    slots: &Arc<Semaphore>,
    settle: Option<&Adder>,
) -> Vec<(Action, Outcome)> {
    let Some(qw) = ctx.quota_wait else {
        return waiting
            .into_iter()
            .map(|a| {
                let reason = ctx.quota_waiting.get(&a.workspace).cloned();
                (
                    a,
                    Outcome::Waiting(reason.unwrap_or(Verdict::RefusedWaiting)),
                )
            })
            .collect();
    };
    let deadline = ctx.started + qw.until;
    let mut tasks: JoinSet<(Action, Outcome)> = JoinSet::new();
    let mut done = Vec::new();
    waiting.sort_by(|a, b| a.workspace.cmp(&b.workspace));
    while !ctx.cancel.is_cancelled() && (!waiting.is_empty() || !tasks.is_empty()) {
        if waiting.is_empty() {
            if let Some(finished) = tasks.join_next().await {
                settle_one(
                    ctx,
                    finished.expect("a step does not panic"),
                    &mut waiting,
                    &mut done,
                    settle,
                );
            }
            continue;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if !ops::pause(ctx, qw.every.min(deadline - now)).await {
            break;
        }
        while let Some(finished) = tasks.try_join_next() {
            settle_one(
                ctx,
                finished.expect("a step does not panic"),
                &mut waiting,
                &mut done,
                settle,
            );
        }
        for action in admit(ctx, &mut waiting).await {
            if let Err(action) = step::dispatch(ctx, action, slots, &mut tasks, None).await {
                waiting.push(action);
                break;
            }
        }
    }
    for (action, outcome) in tasks.join_all().await {
        if refused_for_quota(&outcome) {
            waiting.push(action);
            continue;
        }
        if let Some(settle) = settle {
            settle.add(ctx, &action, &outcome);
        }
        done.push((action, outcome));
    }
    let interrupted = ctx.cancel.is_cancelled();
    for a in waiting {
        let outcome = if interrupted {
            Outcome::Interrupted
        } else {
            step::skip(ctx, &a, &Verdict::QuotaWaitExpired { within: qw.until })
        };
        done.push((a, outcome));
    }
    done
}

/// A finished action: done, or back to waiting when AWS refused it for want of quota.
fn settle_one(
    ctx: &RunContext,
    (action, outcome): (Action, Outcome),
    waiting: &mut Vec<Action>,
    done: &mut Vec<(Action, Outcome)>,
    settle: Option<&Adder>,
) {
    if refused_for_quota(&outcome) {
        // Back to waiting; past the deadline, skipped with the others still waiting.
        wait(ctx, &action, &Verdict::RefusedWaiting);
        waiting.push(action);
        waiting.sort_by(|a, b| a.workspace.cmp(&b.workspace));
    } else {
        if let Some(settle) = settle {
            settle.add(ctx, &action, &outcome);
        }
        done.push((action, outcome));
    }
}

/// Reads the room in the waiting actions' quotas and takes out of `waiting` those that
/// fit, in name order: in each quota, the first that does not fit holds back the rest.
async fn admit(ctx: &RunContext, waiting: &mut Vec<Action>) -> Vec<Action> {
    let classes: Vec<&'static QuotaClass> = waiting
        .iter()
        .map(|a| quota::on_demand_class(&a.instance_type).code)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter_map(quota::by_name)
        .collect();
    let mut room: BTreeMap<&str, u32> =
        match quota::usage::room(ctx.cloud.as_ref(), &classes, &ctx.retry).await {
            Ok(room) => room,
            Err(error) => {
                tracing::debug!(target: "prism::quota", %error, "quota not read; waiting on");
                return vec![];
            }
        };
    let mut full = BTreeSet::new();
    let mut admitted = Vec::new();
    for a in std::mem::take(waiting) {
        let class = quota::on_demand_class(&a.instance_type);
        // A type whose vCPUs are unknown goes ahead: AWS says whether it fits.
        let need = a.added_vcpus().unwrap_or(0);
        match room.get_mut(class.code) {
            Some(free) if !full.contains(class.code) && need <= *free => {
                ctx.events.emit(Event::QuotaAvailable {
                    workspace: a.workspace.clone(),
                    action: a.action,
                    quota: class.name.to_string(),
                    available_vcpus: *free,
                });
                *free -= need;
                admitted.push(a);
            }
            _ => {
                full.insert(class.code);
                waiting.push(a);
            }
        }
    }
    admitted
}
