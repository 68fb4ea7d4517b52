//! Waiting until the instances acted on reach their state, with one DescribeInstances
//! of the fleet per look, whatever the number of instances.
//!
//! The wait runs beside the calls, from the run's first action: each instance is
//! waited for from the moment its call was accepted. An instance launched for a
//! stopped fleet (a timetable outside its windows) is stopped as soon as it runs, not
//! once the last launch is sent, so a fleet launched out of hours never has more
//! instances running than the launches in flight.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::context::RunContext;
use super::events::Event;
use super::ops;
use super::outcome::{Outcome, StepError, target_state};
use super::report::FailureNote;
use crate::cloud::{CloudError, InstanceState};
use crate::plan::Action;

struct Target {
    action: Action,
    instance: String,
    want: InstanceState,
    then_stop: bool,
    deadline: Instant,
}

/// The wait, running beside the calls: [`Settler::add`] each outcome as it comes,
/// then [`Settler::finish`].
pub struct Settler {
    tx: UnboundedSender<Target>,
    task: JoinHandle<BTreeMap<String, FailureNote>>,
    timeout: Duration,
}

impl Settler {
    /// Starts waiting for what is added; each instance at most `timeout`, looking at
    /// the fleet every `poll`.
    pub fn start(ctx: Arc<RunContext>, timeout: Duration, poll: Duration) -> Settler {
        let (tx, rx) = unbounded_channel();
        let task = tokio::spawn(async move { run(&ctx, rx, timeout, poll).await });
        Settler { tx, task, timeout }
    }

    /// A handle that adds outcomes, for a task of the run.
    pub fn adder(&self) -> Adder {
        Adder {
            tx: self.tx.clone(),
            timeout: self.timeout,
        }
    }

    /// Waits for everything added to settle (or for the run to be interrupted), then
    /// turns the outcomes of instances that timed out or died on the way into failures.
    pub async fn finish(self, outcomes: &mut [(Action, Outcome)]) {
        drop(self.tx);
        let failed = self.task.await.unwrap_or_default();
        for (_, outcome) in outcomes.iter_mut() {
            if let Outcome::Done {
                instance: Some(id), ..
            } = outcome
                && let Some(note) = failed.get(id)
            {
                *outcome = Outcome::Failed(note.clone());
            }
        }
    }
}

/// Adds outcomes to a [`Settler`]'s wait.
#[derive(Clone)]
pub struct Adder {
    tx: UnboundedSender<Target>,
    timeout: Duration,
}

impl Adder {
    /// Waits for `action`'s instance to reach its state, when `outcome` is a done call.
    pub fn add(&self, ctx: &RunContext, action: &Action, outcome: &Outcome) {
        let Outcome::Done {
            instance: Some(id),
            then_stop,
            ..
        } = outcome
        else {
            return;
        };
        let Some(want) = target_state(action.action, ctx.desired) else {
            return;
        };
        let _ = self.tx.send(Target {
            action: action.clone(),
            instance: id.clone(),
            want: if *then_stop {
                InstanceState::Running
            } else {
                want
            },
            then_stop: *then_stop,
            deadline: Instant::now() + self.timeout,
        });
    }
}

async fn run(
    ctx: &RunContext,
    mut rx: UnboundedReceiver<Target>,
    timeout: Duration,
    poll: Duration,
) -> BTreeMap<String, FailureNote> {
    let mut failed = BTreeMap::new();
    let mut targets: Vec<Target> = Vec::new();
    let mut open = true;
    while !ctx.cancel.is_cancelled() {
        while let Ok(t) = rx.try_recv() {
            targets.push(t);
        }
        if targets.is_empty() {
            if !open {
                break;
            }
            tokio::select! {
                t = rx.recv() => match t {
                    Some(t) => targets.push(t),
                    None => open = false,
                },
                () = ctx.cancel.cancelled() => break,
            }
            continue;
        }
        let now = Instant::now();
        let (expired, left): (Vec<_>, Vec<_>) = targets.drain(..).partition(|t| now >= t.deadline);
        targets = left;
        for t in expired {
            let message = format!(
                "{} did not reach {} within {}",
                t.instance,
                t.want,
                humantime::format_duration(timeout)
            );
            fail(ctx, &mut failed, &t, "WaitTimedOut", message);
        }
        if targets.is_empty() || !ops::pause(ctx, poll).await {
            continue;
        }
        // What was accepted during the pause is looked for in the same look.
        while let Ok(t) = rx.try_recv() {
            targets.push(t);
        }
        let Ok(seen) = ctx.fleet_instances().await else {
            continue;
        };
        let mut still = Vec::new();
        for t in targets.drain(..) {
            // Not visible yet (eventual consistency): look again next time.
            let Some(i) = seen.iter().find(|i| i.id == t.instance) else {
                still.push(t);
                continue;
            };
            if let Some(t) = look(ctx, &mut failed, t, i.state).await {
                still.push(t);
            }
        }
        targets = still;
    }
    failed
}

/// What instance state `state` means for target `t`: the target to keep waiting for,
/// or None when it is settled (or failed).
async fn look(
    ctx: &RunContext,
    failed: &mut BTreeMap<String, FailureNote>,
    mut t: Target,
    state: InstanceState,
) -> Option<Target> {
    let ws = t.action.workspace.clone();
    if state == t.want && t.then_stop {
        if let Err(StepError::Cloud(e)) = ops::stop_launched(ctx, &ws, &t.instance).await {
            // The StopInstances error as AWS gave it.
            failed.insert(t.instance.clone(), ops::failed(ctx, &t.action, &e));
            return None;
        }
        t.want = InstanceState::Stopped;
        t.then_stop = false;
        Some(t)
    } else if state == t.want {
        ctx.events.emit(match t.want {
            InstanceState::Stopped => Event::Stopped {
                workspace: ws,
                instance_id: t.instance.clone(),
            },
            _ => Event::Running {
                workspace: ws,
                instance_id: t.instance.clone(),
            },
        });
        None
    } else if state.is_gone() {
        let message = format!("{} was {} before it was {}", t.instance, state, t.want);
        fail(ctx, failed, &t, "InstanceTerminated", message);
        None
    } else {
        Some(t)
    }
}

fn fail(
    ctx: &RunContext,
    failed: &mut BTreeMap<String, FailureNote>,
    t: &Target,
    code: &str,
    message: String,
) {
    let err = CloudError::service("DescribeInstances", Some(code), message, None);
    failed.insert(t.instance.clone(), ops::failed(ctx, &t.action, &err));
}
