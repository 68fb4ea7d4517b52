//! Launches of many workspaces in one RunInstances, with no duplicate ever.
//!
//! AWS throttles RunInstances by calls (5 at once, 2 more per second) and by instances
//! (1 000 at once, 2 more per second): a class launched one call per workspace waits on
//! the first bucket, one launched in a few calls does not. Workspaces whose launch is
//! their first choice (the template's type, their first zone, no earlier launch noted)
//! share a call with the others of that zone, up to [`LAUNCHES_PER_CALL`].
//!
//! What keeps each workspace to one instance:
//!
//! - **The call is idempotent.** Its ClientToken is derived from the fleet, the spec,
//!   the zone and the ordered list of its workspaces: the same call sent again (a retry
//!   after a lost answer, a rerun, a second run at once making the same plan) gets the
//!   same instances back, never new ones.
//! - **Each instance says whose it is from its launch.** The list of workspaces goes on
//!   every instance of the call, in the launch call's own tags (`prism:batch:N`, see
//!   [`crate::cloud::batch_tags`]), and the instance with `AmiLaunchIndex` i is the i-th
//!   workspace's. So an instance is its workspace's from the moment AWS shows it, even
//!   when its own tags (`prism:workspace`, `Name`, `prism:member`), written by one
//!   CreateTags each right after, never were: the next run writes them.
//! - **The batch is noted before the call.** Each workspace's launch note names the
//!   batch, and the batch its members and zone ([`super::launch_notes`]). A rerun
//!   while DescribeInstances lags, whatever its plan, sends the noted call again first,
//!   whole and unchanged, and gets those instances back.
//! - **Only a definite answer sends a workspace on alone.** AWS launched fewer than
//!   asked (partial capacity), or none (no capacity, no quota): the answer says so, and
//!   those workspaces launch one by one as any launch does, their zone marked sold out.
//!   A call whose answer was lost and whose retries ran out launches nothing more: its
//!   workspaces are looked for before the summary and by the next run.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::call::Pace;
use super::capacity::{Availability, zone_order};
use super::client_token::client_token;
use super::context::RunContext;
use super::events::Event;
use super::launch::{fleet_tags, own_tags};
use super::launch_notes::{BatchNote, Launched, now_ms};
use super::ops::failed;
use super::outcome::{Outcome, StepError};
use crate::cloud::{CloudError, ErrorClass, Instance, LaunchSpec, batch_tags};
use crate::manifest::DesiredState;
use crate::plan::{Action, ActionKind};

/// The most workspaces one RunInstances launches. Their names fit in the tags AWS
/// allows beside prism's own (50 per instance, 256 characters each).
pub const LAUNCHES_PER_CALL: usize = 100;

/// Of AWS's 50 tags per instance, how many the list of workspaces may take.
const LIST_TAGS_MAX: usize = 40;

/// One RunInstances of many workspaces.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The run's launches it carries.
    pub actions: Vec<Action>,
    /// Every workspace of the call, in launch-index order: more than `actions` when it
    /// is an earlier run's batch sent again, some of whose instances are seen already.
    pub members: Vec<String>,
    pub zone: Option<String>,
}

/// Whether the run launches in batches: at AWS's own pace (`rate_limit: auto`, the
/// default). An explicit pace counts launches one by one, as the user set it.
pub fn batching(ctx: &RunContext) -> bool {
    ctx.engine.launch_rate().is_some_and(|r| r.is_auto())
}

/// The batches `actions` (the run's launches, in plan order) go out in: first the
/// batches earlier runs noted and AWS may not show yet, sent again as they were; then
/// the first-choice launches of each zone, in plan order. What is in no batch launches
/// on its own.
pub fn plan(ctx: &RunContext, actions: &[&Action]) -> Vec<Batch> {
    let Ok(template) = ctx.template() else {
        return vec![];
    };
    let launches: Vec<&Action> = actions
        .iter()
        .copied()
        .filter(|a| a.action == ActionKind::Create)
        .collect();
    let mut replays: BTreeMap<String, (BatchNote, Vec<Action>)> = BTreeMap::new();
    let mut fresh: BTreeMap<Option<String>, Vec<Action>> = BTreeMap::new();
    let zones = ctx.zones.get().cloned().flatten();
    for a in launches {
        let note = ctx
            .engine
            .memory
            .recall(&ctx.fleet, &a.workspace, &ctx.digest);
        match note {
            Some(n) => {
                let Some(token) = n.batch else { continue };
                let Some(b) = ctx.engine.memory.recall_batch(&token) else {
                    continue;
                };
                if b.fleet != ctx.fleet || b.spec_digest != ctx.digest {
                    continue;
                }
                replays
                    .entry(token)
                    .or_insert_with(|| (b, vec![]))
                    .1
                    .push(a.clone());
            }
            None => {
                let order = zone_order(&ctx.fleet, &a.workspace, zones.as_deref().unwrap_or(&[]));
                let zone = zones.as_ref().and(order.first().cloned().flatten());
                let open = zone.as_deref().is_none_or(|z| {
                    matches!(
                        ctx.engine.sold_out.check(&template.instance_type, z),
                        Availability::Available
                    )
                });
                if open {
                    fresh.entry(zone).or_default().push(a.clone());
                }
            }
        }
    }
    let mut out: Vec<Batch> = replays
        .into_values()
        .filter(|(b, _)| b.members.len() > 1)
        .map(|(b, actions)| Batch {
            actions,
            members: b.members,
            zone: b.zone,
        })
        .collect();
    for (zone, actions) in fresh {
        for chunk in chunks(actions) {
            if chunk.len() > 1 {
                out.push(Batch {
                    members: chunk.iter().map(|a| a.workspace.clone()).collect(),
                    actions: chunk,
                    zone: zone.clone(),
                });
            }
        }
    }
    out
}

/// `actions` cut into calls: at most [`LAUNCHES_PER_CALL`], and names that fit in
/// [`LIST_TAGS_MAX`] tags.
fn chunks(actions: Vec<Action>) -> Vec<Vec<Action>> {
    let mut out: Vec<Vec<Action>> = vec![];
    for a in actions {
        let fits = out.last().is_some_and(|c| {
            let mut names: Vec<String> = c.iter().map(|a| a.workspace.clone()).collect();
            names.push(a.workspace.clone());
            c.len() < LAUNCHES_PER_CALL && batch_tags::encode(&names).len() <= LIST_TAGS_MAX
        });
        match out.last_mut() {
            Some(c) if fits => c.push(a),
            _ => out.push(vec![a]),
        }
    }
    out
}

/// What `batch`'s call launches: the template in its zone, tagged with the fleet's
/// tags and the list of its workspaces, with the batch's own ClientToken.
fn spec(ctx: &RunContext, template: &LaunchSpec, batch: &Batch) -> LaunchSpec {
    let mut spec = template.clone();
    spec.availability_zone = batch.zone.clone();
    spec.tags = fleet_tags(ctx);
    spec.tags.extend(batch_tags::encode(&batch.members));
    spec.client_token = client_token(
        &ctx.fleet,
        &format!("batch {}", batch.members.join(" ")),
        &ctx.digest,
        batch.zone.as_deref(),
        0,
    );
    spec
}

/// Launches `batch` in one call; what it does not launch goes on one by one.
pub async fn launch_all(ctx: &RunContext, batch: Batch) -> Vec<(Action, Outcome)> {
    let started = Instant::now();
    let template = match ctx.template() {
        Ok(t) => t.clone(),
        Err(_) => return alone(ctx, batch.actions, started).await,
    };
    let spec = spec(ctx, &template, &batch);
    let token = spec.client_token.clone();
    ctx.engine.memory.remember_batch(
        &token,
        &BatchNote {
            fleet: ctx.fleet.clone(),
            members: batch.members.clone(),
            zone: batch.zone.clone(),
            spec_digest: ctx.digest.clone(),
            at: now_ms() / 1000,
        },
    );
    let label = match batch.actions.as_slice() {
        [first, rest @ ..] => format!("{} and {} more", first.workspace, rest.len()),
        [] => String::new(),
    };
    if ctx.launch_permit(&label).await.is_err() {
        return interrupted(batch.actions);
    }
    // One permit stands for the call; the run's estimate counts its launches.
    let _ = ctx
        .launches_left
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            Some(n.saturating_sub(batch.actions.len().saturating_sub(1)))
        });
    let count = u32::try_from(batch.members.len()).unwrap_or(u32::MAX);
    let sent_at = now_ms();
    let mut prepaid = true;
    let answer = ctx
        .call(&label, Pace::Launch, &mut prepaid, |attempt| {
            for a in &batch.actions {
                ctx.events.emit(Event::Launching {
                    workspace: a.workspace.clone(),
                    attempt,
                    availability_zone: batch.zone.clone(),
                    instance_type: spec.instance_type.clone(),
                });
            }
            ctx.cloud.run_instances(&spec, count)
        })
        .await;
    let launched = match answer {
        Ok(launched) => launched,
        Err(StepError::Interrupted) => return interrupted(batch.actions),
        Err(StepError::Cloud(e)) => return refused(ctx, batch, &e, started).await,
    };
    // AWS launched fewer than asked: the zone had no more.
    let partial = launched.len() < batch.members.len();
    let mut by_member: BTreeMap<String, (usize, Instance)> = BTreeMap::new();
    for (index, instance) in launched {
        if let Some(m) = batch.members.get(index as usize) {
            by_member.insert(m.clone(), (index as usize, instance));
        }
    }
    if batch.members.len() > batch.actions.len() {
        // Sent again: AWS answers as it did then; what it shows now tells which of
        // those instances are gone since.
        forget_gone(ctx, &mut by_member).await;
    }
    let mut outcomes = vec![];
    let mut short = vec![];
    for a in batch.actions {
        let Some((index, instance)) = by_member.get(&a.workspace) else {
            short.push(a);
            continue;
        };
        let key = format!("{token}/{index}");
        ctx.engine.memory.sent(
            &key,
            sent_at,
            &Launched {
                fleet: ctx.fleet.clone(),
                instance_id: instance.id.clone(),
                instance_type: spec.instance_type.clone(),
            },
        );
        ctx.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((a.workspace.clone(), key));
        ctx.events.emit(Event::Launched {
            workspace: a.workspace.clone(),
            instance_id: instance.id.clone(),
            took_s: started.elapsed().as_secs_f64(),
        });
        outcomes.push((
            a,
            Outcome::Done {
                instance: Some(instance.id.clone()),
                launched: true,
                then_stop: ctx.desired == DesiredState::Stopped,
            },
        ));
    }
    ctx.untagged
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(
            by_member
                .iter()
                .filter(|(_, (_, i))| batch_tags::untagged(&i.tags))
                .map(|(m, (_, i))| (i.id.clone(), m.clone())),
        );
    if !short.is_empty() {
        if partial {
            mark_sold_out(ctx, &spec.instance_type, batch.zone.as_deref(), None);
        }
        outcomes.extend(alone(ctx, short, started).await);
    }
    outcomes
}

/// The end of a batch AWS refused with `e`. An answer that says nothing was launched
/// sends each workspace on alone: one workspace's error stays its own. A call that may
/// have launched is each workspace's failure, looked for before the summary.
async fn refused(
    ctx: &RunContext,
    batch: Batch,
    e: &CloudError,
    started: Instant,
) -> Vec<(Action, Outcome)> {
    // Only a call whose answer was lost (and whose retries ran out) may have launched
    // something: any other answer says it launched nothing.
    if e.class == ErrorClass::Transient {
        return batch
            .actions
            .into_iter()
            .map(|a| {
                let note = failed(ctx, &a, e);
                (a, Outcome::Failed(note))
            })
            .collect();
    }
    if e.class == ErrorClass::Capacity {
        let code = e.code.as_deref().unwrap_or("InsufficientInstanceCapacity");
        mark_sold_out(ctx, &spec_type(ctx), batch.zone.as_deref(), Some(code));
    }
    alone(ctx, batch.actions, started).await
}

fn spec_type(ctx: &RunContext) -> String {
    ctx.template()
        .map(|t| t.instance_type.clone())
        .unwrap_or_default()
}

/// Marks (type, zone) sold out for every launch, as a launch alone does when AWS has
/// no capacity there.
fn mark_sold_out(ctx: &RunContext, instance_type: &str, zone: Option<&str>, code: Option<&str>) {
    let Some(zone) = zone else { return };
    let code = code.unwrap_or("InsufficientInstanceCapacity");
    if let Some(ttl) = ctx.engine.sold_out.mark(instance_type, zone, code) {
        ctx.events.emit(Event::ZoneUnavailable {
            instance_type: instance_type.to_string(),
            availability_zone: zone.to_string(),
            code: code.to_string(),
            for_s: ttl.as_secs_f64(),
            workspace: None,
        });
    }
}

/// Launches each of `actions` on its own, as any launch, all at once: the launch
/// limiter paces them.
async fn alone(ctx: &RunContext, actions: Vec<Action>, started: Instant) -> Vec<(Action, Outcome)> {
    futures::future::join_all(actions.into_iter().map(|a| async move {
        let outcome = super::step::run(ctx, &a, false, started).await;
        (a, outcome)
    }))
    .await
}

fn interrupted(actions: Vec<Action>) -> Vec<(Action, Outcome)> {
    actions
        .into_iter()
        .map(|a| (a, Outcome::Interrupted))
        .collect()
}

/// Drops from `by_member` the instances AWS now shows gone (terminated since the call
/// was first made); on an error nothing is dropped.
async fn forget_gone(ctx: &RunContext, by_member: &mut BTreeMap<String, (usize, Instance)>) {
    let Ok(seen) = ctx.fleet_instances().await else {
        return;
    };
    by_member.retain(|_, (_, i)| {
        seen.iter()
            .find(|s| s.id == i.id)
            .is_none_or(|s| !s.state.is_gone())
    });
}

/// Writes the own tags of the instances this run launched in batches: one CreateTags
/// each, paced as any change, while the run waits for its instances. A failure leaves
/// an instance known by its batch tags; a later run writes them (`plan.unnamed`).
pub async fn write_own_tags(ctx: &RunContext) {
    let untagged = std::mem::take(&mut *ctx.untagged.lock().unwrap_or_else(|e| e.into_inner()));
    if untagged.is_empty() {
        return;
    }
    ctx.events.emit(Event::Tagging {
        instances: untagged.len(),
        eta_s: ctx.engine.mutate_eta(untagged.len()).as_secs_f64(),
    });
    // Each instance's volumes get its tags in the same call.
    let volumes = volumes_of(ctx).await;
    for (id, workspace) in &untagged {
        let tags = own_tags(ctx, workspace);
        let mut ids = vec![id.clone()];
        ids.extend(volumes.get(id).cloned().unwrap_or_default());
        let written = ctx
            .call(workspace, Pace::Mutate, &mut false, |_| {
                ctx.cloud.tag_with(&ids, &tags)
            })
            .await;
        match written {
            Ok(()) => {}
            Err(StepError::Interrupted) => return,
            Err(StepError::Cloud(e)) => tracing::warn!(
                "could not tag {id} as {workspace} ({e}); prism knows it from its launch, and the next run tags it"
            ),
        }
    }
}

/// The volumes attached to each instance, by instance id (one DescribeVolumes); none
/// when it fails: the instances are tagged without them.
async fn volumes_of(ctx: &RunContext) -> BTreeMap<String, Vec<String>> {
    let read = ctx
        .call("", Pace::None, &mut false, |_| {
            ctx.cloud.describe_volumes(None)
        })
        .await;
    crate::cloud::volumes_by_instance(read.ok().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(ws: &str) -> Action {
        Action {
            action: ActionKind::Create,
            workspace: ws.into(),
            instance_id: None,
            instance_type: "t3.micro".into(),
            vcpus: Some(2),
            reason: String::new(),
            resize: None,
        }
    }

    #[test]
    fn calls_hold_at_most_a_hundred_and_what_their_tags_can_list() {
        let many: Vec<Action> = (0..250).map(|i| create(&format!("cs-{i:03}"))).collect();
        let sizes: Vec<usize> = chunks(many).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![100, 100, 50]);
        // Names of 40 characters: 6 to a tag, 40 tags hold 240.
        let long: Vec<Action> = (0..300).map(|i| create(&format!("{i:040}"))).collect();
        for c in chunks(long) {
            let names: Vec<String> = c.iter().map(|a| a.workspace.clone()).collect();
            assert!(batch_tags::encode(&names).len() <= LIST_TAGS_MAX);
            assert_eq!(
                batch_tags::decode(&batch_tags::encode(&names).into_iter().collect()),
                names
            );
        }
    }
}
