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
//! - **Only a definite answer sends a workspace on.** AWS launched none for want of
//!   capacity, or fewer than asked (the zone had no more): the batch is forgotten (or
//!   the workspaces it did not launch released from it; the call answers the same if
//!   sent again), the zone marked sold out, and those workspaces form new batches in
//!   their next zones, claimed and noted afresh. AWS launched none for another reason
//!   (no quota): its workspaces launch one by one as any launch does.
//!   A call whose answer was lost and whose retries ran out launches nothing more: its
//!   workspaces are looked for before the summary and by the next run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use tokio::time::Instant;

use super::call::Pace;
use super::capacity::{Availability, zone_order};
use super::client_token::client_token;
use super::context::RunContext;
use super::events::Event;
use super::launch::{MAX_INCARNATIONS, fleet_tags, own_tags};
use super::launch_notes::{BatchNote, now_ms};
use super::ops::failed;
use super::outcome::{Outcome, StepError};
use crate::cloud::{CloudError, ErrorClass, Instance, LaunchSpec, batch_tags};
use crate::manifest::DesiredState;
use crate::plan::{Action, ActionKind};

use super::limiter::LAUNCHES_PER_CALL;

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
    /// The call's ClientToken.
    pub token: String,
    /// An earlier run's batch (or another run's, claimed a moment ago), sent again.
    pub replay: bool,
}

/// Whether the run launches in batches: at AWS's own pace (`rate_limit: auto`, the
/// default, however adaptive). An explicit pace counts launches one by one, as set.
pub fn batching(ctx: &RunContext) -> bool {
    ctx.engine.launch_rate().is_some_and(|r| r.auto)
}

/// The batches the run's launches go out in. `creates` are its launches that are not
/// skipped, in plan order; `free` says which may go now (not waiting for quota).
///
/// First every launch a recent note names a batch for (an earlier run's, AWS may not
/// show its instances yet): that batch is sent again, whole, whatever this run's plan.
/// Then the launches of no note are claimed ([`LaunchNotes::claim`]), at once under
/// the notes' lock: the first choices of each zone in batches (at the auto pace), the
/// others alone (all of them when `may_batch` is false); a launch another run claimed a
/// moment ago is sent as that run noted it. What is in no batch launches on its own, by
/// its note.
///
/// [`LaunchNotes::claim`]: super::launch_notes::LaunchNotes::claim
pub fn plan(
    ctx: &RunContext,
    creates: &[&Action],
    free: impl Fn(&Action) -> bool,
    may_batch: bool,
) -> Vec<Batch> {
    let Ok(template) = ctx.template() else {
        return vec![];
    };
    let memory = &ctx.engine.memory;
    let mut replays: BTreeMap<String, (BatchNote, Vec<Action>)> = BTreeMap::new();
    // Whether the batch `token` names was found (and `a` joins its replay).
    let mut replay = |a: &Action, token: &str| {
        let Some(b) = memory.recall_batch(token) else {
            return false;
        };
        if b.fleet == ctx.fleet && b.spec_digest == ctx.digest {
            replays
                .entry(token.to_string())
                .or_insert_with(|| (b, vec![]))
                .1
                .push(a.clone());
        }
        true
    };
    let mut unnoted: Vec<&Action> = vec![];
    for a in creates
        .iter()
        .copied()
        .filter(|a| a.action == ActionKind::Create)
    {
        match memory.recall(&ctx.fleet, &a.workspace, &ctx.digest) {
            // A batch forgotten since it was read (AWS refused it a moment ago): the
            // workspace is claimed again below, under the notes' lock, where it meets
            // the other run's new claim if there is one.
            Some(n) => {
                if let Some(token) = n.batch
                    && !replay(a, &token)
                    && free(a)
                {
                    unnoted.push(a);
                }
            }
            None if free(a) => unnoted.push(a),
            None => {}
        }
    }
    let batching = may_batch && batching(ctx);
    let zones = ctx.zones.get().cloned().flatten();
    // Whether each zone takes the template's type now, looked at once per zone.
    let mut open: BTreeMap<String, bool> = BTreeMap::new();
    let mut is_open = |z: &str| {
        *open.entry(z.to_string()).or_insert_with(|| {
            match ctx.engine.sold_out.check(&template.instance_type, z) {
                Availability::Available => true,
                Availability::BackAgain => {
                    ctx.events.emit(Event::ZoneAvailable {
                        instance_type: template.instance_type.clone(),
                        availability_zone: z.to_string(),
                    });
                    true
                }
                Availability::SoldOut { .. } => false,
            }
        })
    };
    // Each workspace's zone: the first of its order not sold out, where it joins the
    // zone's batch; with every zone sold out, its first, alone.
    let mut first_zone: BTreeMap<String, (Option<String>, bool)> = BTreeMap::new();
    for a in &unnoted {
        let order = zone_order(&ctx.fleet, &a.workspace, zones.as_deref().unwrap_or(&[]));
        let choice = match zones {
            None => (None, batching),
            Some(_) => match order.iter().flatten().find(|z| is_open(z)) {
                Some(z) => (Some(z.clone()), batching),
                None => (order.first().cloned().flatten(), false),
            },
        };
        first_zone.insert(a.workspace.clone(), choice);
    }
    let compose = |free_names: &[String]| {
        let mut groups: BTreeMap<Option<String>, Vec<String>> = BTreeMap::new();
        let mut alone = vec![];
        for w in free_names {
            let (zone, batched) = first_zone.get(w).cloned().unwrap_or((None, false));
            if batched {
                groups.entry(zone).or_default().push(w.clone());
            } else {
                alone.push((w.clone(), zone));
            }
        }
        let mut batches = vec![];
        for (zone, group) in groups {
            for members in chunks(group) {
                if members.len() < 2 {
                    alone.extend(members.into_iter().map(|w| (w, zone.clone())));
                    continue;
                }
                let note = BatchNote {
                    fleet: ctx.fleet.clone(),
                    incarnation: 0,
                    members,
                    zone: zone.clone(),
                    spec_digest: ctx.digest.clone(),
                    at: now_ms() / 1000,
                };
                batches.push((batch_token(ctx, &note), note));
            }
        }
        (batches, alone)
    };
    // Claimed under the notes' lock. A workspace another run claimed into a batch that
    // is forgotten before it is read (refused a moment ago) is claimed again: it is
    // free by then, or in that run's next batch.
    let mut names: Vec<String> = unnoted.iter().map(|a| a.workspace.clone()).collect();
    let mut claimed: Vec<(String, BatchNote)> = vec![];
    for _ in 0..CLAIM_TRIES {
        let claim = memory.claim(&ctx.fleet, &ctx.digest, &names, |f| compose(f));
        claimed.extend(claim.batches);
        names = claim
            .taken
            .into_iter()
            .filter(|(w, n)| {
                let Some(token) = &n.batch else { return false };
                unnoted
                    .iter()
                    .find(|a| &a.workspace == w)
                    .is_some_and(|a| !replay(a, token))
            })
            .map(|(w, _)| w)
            .collect();
        if names.is_empty() {
            break;
        }
    }
    let action = |w: &String| {
        unnoted
            .iter()
            .find(|a| &a.workspace == w)
            .map(|a| (*a).clone())
    };
    let mut out: Vec<Batch> = replays
        .into_iter()
        .filter(|(_, (b, _))| b.members.len() > 1)
        .map(|(token, (b, actions))| Batch {
            actions,
            members: b.members,
            zone: b.zone,
            token,
            replay: true,
        })
        .collect();
    out.extend(claimed.into_iter().map(|(token, b)| Batch {
        actions: b.members.iter().filter_map(action).collect(),
        members: b.members,
        zone: b.zone,
        token,
        replay: false,
    }));
    out
}

/// How many times a plan claims the workspaces whose claimed batch vanished as it was
/// read; past that they launch alone, by their notes.
const CLAIM_TRIES: usize = 3;

/// The workspaces of a zone cut into calls: at most [`LAUNCHES_PER_CALL`], and names
/// that fit in [`LIST_TAGS_MAX`] tags.
fn chunks(names: Vec<String>) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = vec![];
    for w in names {
        let fits = out.last().is_some_and(|c| {
            let mut with = c.clone();
            with.push(w.clone());
            c.len() < LAUNCHES_PER_CALL && batch_tags::encode(&with).len() <= LIST_TAGS_MAX
        });
        match out.last_mut() {
            Some(c) if fits => c.push(w),
            _ => out.push(vec![w]),
        }
    }
    out
}

/// The ClientToken of the batch `note` describes, at its incarnation: derived from the
/// fleet, the spec, the zone and the ordered list of its workspaces.
fn batch_token(ctx: &RunContext, note: &BatchNote) -> String {
    client_token(
        &ctx.fleet,
        &format!("batch {}", note.members.join(" ")),
        &ctx.digest,
        note.zone.as_deref(),
        note.incarnation,
    )
}

/// What `batch`'s call launches: the template in its zone, tagged with the fleet's
/// tags and the list of its workspaces, with the batch's own ClientToken.
fn spec(ctx: &RunContext, template: &LaunchSpec, batch: &Batch) -> LaunchSpec {
    let mut spec = template.clone();
    spec.availability_zone = batch.zone.clone();
    spec.tags = fleet_tags(ctx);
    spec.tags.extend(batch_tags::encode(&batch.members));
    spec.client_token = batch.token.clone();
    spec
}

/// Launches `batch` in one call; what it does not launch goes on in new batches in the
/// next zones, or one by one.
pub async fn launch_all(ctx: &RunContext, batch: Batch) -> Vec<(Action, Outcome)> {
    launch_in(ctx, batch, 0).await
}

/// [`launch_all`] of a batch formed after `refusals` zones had no room for its
/// workspaces.
async fn launch_in(ctx: &RunContext, mut batch: Batch, refusals: usize) -> Vec<(Action, Outcome)> {
    let started = Instant::now();
    let template = match ctx.template() {
        Ok(t) => t.clone(),
        Err(_) => return alone(ctx, batch.actions, started).await,
    };
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
    // Whether a call may have launched although no answer said so.
    let unsure = AtomicBool::new(false);
    let mut prepaid = true;
    let mut incarnation = 0;
    let (spec, sent_at, answer) = loop {
        let spec = spec(ctx, &template, &batch);
        let sent_at = now_ms();
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
                let unsure = &unsure;
                let spec = &spec;
                async move {
                    let answer = ctx.cloud.run_instances(spec, count).await;
                    if answer
                        .as_ref()
                        .is_err_and(|e| e.class == ErrorClass::Transient)
                    {
                        unsure.store(true, Ordering::Relaxed);
                    }
                    answer
                }
            })
            .await;
        let terminated = matches!(&answer, Err(StepError::Cloud(e))
            if e.code.as_deref() == Some("IdempotentInstanceTerminated"));
        // A batch of these workspaces was launched before and its instances are all
        // gone: the next incarnation's token, noted first, on this call's permit.
        if terminated && !batch.replay && incarnation + 1 < MAX_INCARNATIONS {
            incarnation += 1;
            let note = BatchNote {
                fleet: ctx.fleet.clone(),
                incarnation,
                members: batch.members.clone(),
                zone: batch.zone.clone(),
                spec_digest: ctx.digest.clone(),
                at: now_ms() / 1000,
            };
            batch.token = batch_token(ctx, &note);
            ctx.engine.memory.remember_batch(&batch.token, &note);
            prepaid = true;
            continue;
        }
        break (spec, sent_at, answer);
    };
    let token = spec.client_token.clone();
    let launched = match answer {
        Ok(launched) => launched,
        Err(StepError::Interrupted) => return interrupted(batch.actions),
        Err(StepError::Cloud(e)) => {
            let unsure = unsure.load(Ordering::Relaxed);
            return refused(ctx, batch, &e, unsure, refusals, started).await;
        }
    };
    let mut by_member: BTreeMap<String, (usize, Instance)> = BTreeMap::new();
    for (index, instance) in launched {
        if let Some(m) = batch.members.get(index as usize) {
            by_member.insert(m.clone(), (index as usize, instance));
        }
    }
    // The workspaces the call launched no instance for (AWS had room for fewer).
    let never: Vec<String> = batch
        .actions
        .iter()
        .filter(|a| !by_member.contains_key(&a.workspace))
        .map(|a| a.workspace.clone())
        .collect();
    if batch.replay {
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
        ctx.note_sent(
            &a.workspace,
            format!("{token}/{index}"),
            sent_at,
            &instance.id,
            &spec.instance_type,
        );
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
    if short.is_empty() {
        return outcomes;
    }
    // Instances answered again but gone since launch alone, on the next incarnation.
    let (left_out, gone): (Vec<Action>, Vec<Action>) = short
        .into_iter()
        .partition(|a| never.contains(&a.workspace));
    let gone = alone(ctx, gone, started);
    // AWS launched fewer than asked: the call answers the same if sent again, so the
    // others leave the batch and launch anew, claimed as any launch; the zone had no
    // more (as the first call found it, when this one is a resend).
    let left_out = async {
        if left_out.is_empty() {
            return vec![];
        }
        ctx.engine
            .memory
            .release_members(&ctx.fleet, &token, &never);
        if !batch.replay {
            let zone = batch.zone.as_deref();
            mark_sold_out(
                ctx,
                &spec.instance_type,
                zone,
                "InsufficientInstanceCapacity",
            );
        }
        elsewhere(ctx, left_out, true, refusals, started).await
    };
    let (gone, left_out) = futures::join!(gone, left_out);
    outcomes.extend(gone);
    outcomes.extend(left_out);
    outcomes
}

/// The end of a batch AWS refused with `e`. An answer that says nothing was launched
/// sends each workspace on alone: one workspace's error stays its own. A call that may
/// have launched (`unsure`: an answer was lost on the way, then retries ran out,
/// throttled or not) is each workspace's failure, looked for before the summary and
/// sent again by the next run.
async fn refused(
    ctx: &RunContext,
    batch: Batch,
    e: &CloudError,
    unsure: bool,
    refusals: usize,
    started: Instant,
) -> Vec<(Action, Outcome)> {
    if unsure || e.class == ErrorClass::Transient {
        return batch
            .actions
            .into_iter()
            .map(|a| {
                let mut note = failed(ctx, &a, e);
                note.reached_aws = true;
                (a, Outcome::Failed(note))
            })
            .collect();
    }
    // Forgotten before any of its workspaces launches alone: sent again by a rerun,
    // it would launch them all afresh.
    ctx.engine.memory.forget_batch(&ctx.fleet, &batch.token);
    let capacity = e.class == ErrorClass::Capacity;
    if capacity {
        let code = e.code.as_deref().unwrap_or("InsufficientInstanceCapacity");
        mark_sold_out(ctx, &spec_type(ctx), batch.zone.as_deref(), code);
    }
    elsewhere(ctx, batch.actions, capacity, refusals, started).await
}

/// Launches `actions`, which their batch did not launch and whose notes no longer name
/// it, claimed again as any launch (so that another run sending the same batch at once
/// meets these claims, and sends what they say): for want of `capacity` (the zone now
/// marked sold out), in new batches in their next zones; else, or when marks do not
/// hold (`sold_out_ttl: 0s`) or every zone refused already, each alone, meeting the
/// zones' answers itself.
async fn elsewhere(
    ctx: &RunContext,
    actions: Vec<Action>,
    capacity: bool,
    refusals: usize,
    started: Instant,
) -> Vec<(Action, Outcome)> {
    let zones = ctx.zones.get().cloned().flatten().unwrap_or_default();
    let may_batch = capacity && !ctx.engine.sold_out_ttl().is_zero() && refusals + 1 < zones.len();
    let creates: Vec<&Action> = actions.iter().collect();
    let again = plan(ctx, &creates, |_| true, may_batch);
    let mut rest = actions;
    rest.retain(|a| {
        !again
            .iter()
            .flat_map(|b| &b.actions)
            .any(|m| m.workspace == a.workspace)
    });
    let calls = again
        .into_iter()
        .map(|b| Box::pin(launch_in(ctx, b, refusals + 1)));
    let (batched, alone) =
        futures::join!(futures::future::join_all(calls), alone(ctx, rest, started));
    batched.into_iter().flatten().chain(alone).collect()
}

fn spec_type(ctx: &RunContext) -> String {
    ctx.template()
        .map(|t| t.instance_type.clone())
        .unwrap_or_default()
}

/// Marks (type, zone) sold out for every launch, as a launch alone does when AWS has
/// no capacity there.
fn mark_sold_out(ctx: &RunContext, instance_type: &str, zone: Option<&str>, code: &str) {
    let Some(zone) = zone else { return };
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

/// CreateTags calls of one run in flight at once: enough to keep up with AWS's bucket for
/// them (10 a second) whatever the latency of one call.
const TAGGING_AT_ONCE: usize = 16;

/// Writes the own tags of the instances this run launched in batches: one CreateTags
/// each, several at once at AWS's pace for CreateTags, while the run waits for its
/// instances. A failure leaves
/// an instance known by its batch tags; a later run writes them (`plan.unnamed`).
pub async fn write_own_tags(ctx: &RunContext) {
    let untagged = std::mem::take(&mut *ctx.untagged.lock().unwrap_or_else(|e| e.into_inner()));
    if untagged.is_empty() {
        return;
    }
    ctx.events.emit(Event::Tagging {
        instances: untagged.len(),
        eta_s: ctx.engine.tag_eta(untagged.len()).as_secs_f64(),
    });
    // Each instance's volumes get its tags in the same call.
    let volumes = volumes_of(ctx).await;
    let volumes = &volumes;
    futures::stream::iter(&untagged)
        .for_each_concurrent(TAGGING_AT_ONCE, |(id, workspace)| async move {
            let tags = own_tags(ctx, workspace);
            let mut ids = vec![id.clone()];
            ids.extend(volumes.get(id).cloned().unwrap_or_default());
            let written = ctx
                .call(workspace, Pace::Tag, &mut false, |_| {
                    ctx.cloud.tag_with(&ids, &tags)
                })
                .await;
            if let Err(StepError::Cloud(e)) = written {
                tracing::warn!(
                    "could not tag {id} as {workspace} ({e}); prism knows it from its launch, and the next run tags it"
                );
            }
        })
        .await;
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

    #[test]
    fn calls_hold_at_most_a_hundred_and_what_their_tags_can_list() {
        let many: Vec<String> = (0..250).map(|i| format!("cs-{i:03}")).collect();
        let sizes: Vec<usize> = chunks(many).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![100, 100, 50]);
        // Names of 40 characters: 6 to a tag, 40 tags hold 240.
        let long: Vec<String> = (0..300).map(|i| format!("{i:040}")).collect();
        for names in chunks(long) {
            assert!(batch_tags::encode(&names).len() <= LIST_TAGS_MAX);
            let tags = batch_tags::encode(&names).into_iter().collect();
            assert_eq!(batch_tags::decode(&tags), names);
        }
    }
}
