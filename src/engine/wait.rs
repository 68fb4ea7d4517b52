//! Waiting until the instances acted on reach their state, with one DescribeInstances
//! of the fleet per look, whatever the number of instances.

use std::time::Duration;

use tokio::time::Instant;

use super::events::Event;
use super::executor::target_state;
use super::step::{self, Context, Outcome};
use crate::cloud::InstanceState;
use crate::plan::Action;

struct Target {
    index: usize,
    instance: String,
    want: InstanceState,
    then_stop: bool,
}

/// Waits for every done action's instance to settle; a timeout or an instance that
/// dies on the way turns that action into a failure.
pub async fn settle(
    ctx: &Context,
    outcomes: &mut [(Action, Outcome)],
    timeout: Duration,
    poll: Duration,
) {
    let mut targets: Vec<Target> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(index, (action, outcome))| match outcome {
            Outcome::Done {
                instance: Some(id),
                then_stop,
                ..
            } => target_state(action.action, ctx.desired).map(|want| Target {
                index,
                instance: id.clone(),
                want: if *then_stop {
                    InstanceState::Running
                } else {
                    want
                },
                then_stop: *then_stop,
            }),
            _ => None,
        })
        .collect();
    let deadline = Instant::now() + timeout;
    while !targets.is_empty() && !ctx.cancel.is_cancelled() {
        if Instant::now() >= deadline {
            for t in targets.drain(..) {
                let message = format!(
                    "{} did not reach {} within {}",
                    t.instance,
                    t.want,
                    humantime::format_duration(timeout)
                );
                fail(ctx, outcomes, t.index, "WaitTimedOut", message);
            }
            break;
        }
        if !step::pause(ctx, poll).await {
            break;
        }
        let Ok(seen) = ctx.fleet_instances().await else {
            continue;
        };
        let mut still = Vec::new();
        for mut t in targets.drain(..) {
            // Not visible yet (eventual consistency): look again next time.
            let Some(i) = seen.iter().find(|i| i.id == t.instance) else {
                still.push(t);
                continue;
            };
            let ws = outcomes[t.index].0.workspace.clone();
            if i.state == t.want && t.then_stop {
                if let Err(step::StepError::Cloud(e)) =
                    step::stop_launched(ctx, &ws, &t.instance).await
                {
                    fail(
                        ctx,
                        outcomes,
                        t.index,
                        e.code.as_deref().unwrap_or("StopFailed"),
                        e.message,
                    );
                    continue;
                }
                t.want = InstanceState::Stopped;
                t.then_stop = false;
                still.push(t);
            } else if i.state == t.want {
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
            } else if i.state.is_gone() {
                let message = format!("{} was {} before it was {}", t.instance, i.state, t.want);
                fail(ctx, outcomes, t.index, "InstanceTerminated", message);
            } else {
                still.push(t);
            }
        }
        targets = still;
    }
}

fn fail(
    ctx: &Context,
    outcomes: &mut [(Action, Outcome)],
    index: usize,
    code: &str,
    message: String,
) {
    let err = crate::cloud::CloudError::service("DescribeInstances", Some(code), message, None);
    let note = step::failed(ctx, &outcomes[index].0, &err);
    outcomes[index].1 = Outcome::Failed(note);
}
