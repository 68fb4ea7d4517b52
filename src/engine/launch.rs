//! Where a launch goes: the workspace's zones in turn from its first choice, skipping
//! (type, zone) pairs marked sold out, then the template's fallback types; each try
//! with its own ClientToken, noted first so that a rerun sends it again.

use std::collections::BTreeMap;

use super::call::Pace;
use super::capacity::{Availability, zone_order};
use super::client_token::{client_token, spec_digest};
use super::context::RunContext;
use super::events::Event;
use super::job::Recipe;
use super::launch_notes::TokenChoice;
use super::outcome::StepError;
use super::report::FallbackNote;
use crate::cloud::{CloudError, ErrorClass, Instance, LaunchSpec, tags};

/// How far a token walks past terminated incarnations before giving up.
pub(super) const MAX_INCARNATIONS: u32 = 20;

/// One launch try: a type of the ladder in a zone.
struct Try<'a> {
    /// The type's place in the ladder: 0 for the template's own.
    rung: usize,
    instance_type: &'a str,
    zone: Option<&'a str>,
}

/// What a workspace's launch met on its way: for the failure and the summary.
#[derive(Default)]
struct Trail {
    /// Per type, the zones found sold out (by an answer, or by a mark).
    sold_out: BTreeMap<String, Vec<String>>,
    /// The last capacity answer from AWS.
    last: Option<CloudError>,
    /// Where the last try met no capacity, for the `zone_full` line of the next try.
    full: FullAt,
}

/// Where a try met no capacity.
#[derive(Default)]
enum FullAt {
    /// The last try did not (or there was none, or the type changed since).
    #[default]
    Nowhere,
    /// In the zone AWS chose.
    AnyZone,
    /// In this zone.
    Zone(String),
}

/// Reads the region's zones (once per run) and tells the marks already in force.
/// Zones that cannot be read leave the choice to AWS.
pub(super) async fn prepare_launches(ctx: &RunContext) {
    zones(ctx).await;
    for m in ctx.engine.sold_out.in_force() {
        ctx.events.emit(Event::ZoneUnavailable {
            instance_type: m.instance_type,
            availability_zone: m.zone,
            code: m.code,
            for_s: m.left.as_secs_f64(),
            workspace: None,
        });
    }
}

async fn zones(ctx: &RunContext) -> Option<&Vec<String>> {
    ctx.zones
        .get_or_init(|| async {
            let read = ctx
                .call("", Pace::None, &mut false, |_| {
                    ctx.cloud.availability_zones()
                })
                .await;
            match read {
                Ok(zones) => Some(zones),
                Err(StepError::Cloud(e)) => {
                    tracing::warn!(
                        "could not list the availability zones ({e}); AWS chooses each launch's zone"
                    );
                    None
                }
                Err(StepError::Interrupted) => None,
            }
        })
        .await
        .as_ref()
}

/// The types a launch may use, in order: the template's, then its fallbacks.
fn ladder<'a>(ctx: &'a RunContext, template: &'a LaunchSpec) -> Vec<&'a str> {
    let fallbacks = ctx.recipe.iter().flat_map(|r| &r.fallback_types);
    std::iter::once(template.instance_type.as_str())
        .chain(fallbacks.map(String::as_str))
        .collect()
}

/// The explanation context of `e`: a capacity failure is about every zone tried
/// and every type of the ladder.
pub(super) fn explain_context(ctx: &RunContext, e: &CloudError) -> crate::errors::Context {
    let mut errors = ctx.errors.clone();
    if e.class != ErrorClass::Capacity {
        return errors;
    }
    if let Ok(template) = ctx.template() {
        errors.instance_type = Some(ladder(ctx, template).join(" or "));
    }
    if ctx.zones.get().is_some_and(Option::is_some) {
        errors.zone = Some(format!("any availability zone of {}", ctx.cloud.region()));
    }
    errors
}

/// Launches `workspace`: the token its latest launch sent, when noted; then each
/// type of the ladder in each of its zones, from its first choice, skipping pairs
/// marked sold out and marking those AWS answers are.
pub(super) async fn launch(
    ctx: &RunContext,
    workspace: &str,
    prepaid: &mut bool,
) -> Result<Instance, StepError> {
    let template = ctx.template().map_err(|reason| {
        StepError::Cloud(CloudError::service(
            "RunInstances",
            Some("ImageUnresolved"),
            reason,
            None,
        ))
    })?;
    let ladder = ladder(ctx, template);
    let zones = zones(ctx).await;
    let order = zone_order(&ctx.fleet, workspace, zones.map_or(&[][..], Vec::as_slice));
    let mut trail = Trail::default();

    // A noted token goes first whatever the marks say: AWS answers a token it has
    // seen with its instance, sold out or not.
    let noted = noted(ctx, workspace, &ladder, order.first().cloned().flatten());
    if let Some((rung, zone, incarnation)) = &noted {
        let t = Try {
            rung: *rung,
            instance_type: ladder[*rung],
            zone: zone.as_deref(),
        };
        if let Some(done) = try_launch(
            ctx,
            workspace,
            template,
            &t,
            *incarnation,
            prepaid,
            &mut trail,
        )
        .await
        {
            return landed(ctx, workspace, &ladder, &t, &trail, done);
        }
    }
    for (rung, instance_type) in ladder.iter().enumerate() {
        if rung > 0 {
            ctx.events.emit(Event::TypeFallback {
                workspace: workspace.to_string(),
                instance_type: ladder[rung - 1].to_string(),
                next_instance_type: instance_type.to_string(),
            });
            trail.full = FullAt::Nowhere;
        }
        for zone in &order {
            let t = Try {
                rung,
                instance_type,
                zone: zone.as_deref(),
            };
            let again = noted
                .as_ref()
                .is_some_and(|(r, z, _)| *r == rung && z == zone);
            if again || !available(ctx, &t, &mut trail) {
                continue;
            }
            if let Some(done) =
                try_launch(ctx, workspace, template, &t, 0, prepaid, &mut trail).await
            {
                return landed(ctx, workspace, &ladder, &t, &trail, done);
            }
        }
    }
    Err(StepError::Cloud(no_capacity(ctx, &ladder, trail)))
}

/// The (rung, zone, incarnation) of the token `workspace`'s latest launch sent, when
/// noted and its type is still on the ladder. A note of its first choice (`first`, the
/// template's type, the first incarnation) is none: that token is tried first anyway,
/// unless its zone is marked sold out.
fn noted(
    ctx: &RunContext,
    workspace: &str,
    ladder: &[&str],
    first: Option<String>,
) -> Option<(usize, Option<String>, u32)> {
    let n = ctx
        .engine
        .memory
        .recall(&ctx.fleet, workspace, &ctx.digest)
        // A batch is sent again by the run's batches, not by one of its workspaces.
        .filter(|n| n.batch.is_none())?;
    let rung = match &n.instance_type {
        None => 0,
        Some(t) => ladder.iter().position(|l| l == t).filter(|r| *r > 0)?,
    };
    if (rung, &n.zone, n.incarnation) == (0, &first, 0) {
        return None;
    }
    Some((rung, n.zone, n.incarnation))
}

/// Whether the pair of `t` may be tried now: not while marked sold out.
fn available(ctx: &RunContext, t: &Try<'_>, trail: &mut Trail) -> bool {
    let Some(zone) = t.zone else { return true };
    match ctx.engine.sold_out.check(t.instance_type, zone) {
        Availability::Available => true,
        Availability::BackAgain => {
            ctx.events.emit(Event::ZoneAvailable {
                instance_type: t.instance_type.to_string(),
                availability_zone: zone.to_string(),
            });
            true
        }
        Availability::SoldOut { .. } => {
            trail
                .sold_out
                .entry(t.instance_type.to_string())
                .or_default()
                .push(zone.to_string());
            false
        }
    }
}

/// One try; None when AWS has no capacity there (the pair is then marked).
async fn try_launch(
    ctx: &RunContext,
    workspace: &str,
    template: &LaunchSpec,
    t: &Try<'_>,
    incarnation: u32,
    prepaid: &mut bool,
    trail: &mut Trail,
) -> Option<Result<Instance, StepError>> {
    let full = std::mem::take(&mut trail.full);
    if let Some(next) = t.zone
        && !matches!(full, FullAt::Nowhere)
    {
        ctx.events.emit(Event::ZoneFull {
            workspace: workspace.to_string(),
            availability_zone: match full {
                FullAt::Zone(z) => Some(z),
                _ => None,
            },
            next_zone: next.to_string(),
        });
    }
    match launch_in(ctx, workspace, template, t, incarnation, prepaid).await {
        Err(StepError::Cloud(e)) if e.class == ErrorClass::Capacity => {
            sold_out_at(ctx, workspace, t, &e, trail);
            trail.last = Some(e);
            trail.full = match t.zone {
                Some(z) => FullAt::Zone(z.to_string()),
                None => FullAt::AnyZone,
            };
            None
        }
        other => Some(other),
    }
}

/// Marks the pair of `t` sold out after AWS answered `e`, for every launch.
fn sold_out_at(ctx: &RunContext, workspace: &str, t: &Try<'_>, e: &CloudError, trail: &mut Trail) {
    let Some(zone) = t.zone else { return };
    trail
        .sold_out
        .entry(t.instance_type.to_string())
        .or_default()
        .push(zone.to_string());
    let code = e.code.as_deref().unwrap_or("InsufficientInstanceCapacity");
    if let Some(ttl) = ctx.engine.sold_out.mark(t.instance_type, zone, code) {
        ctx.events.emit(Event::ZoneUnavailable {
            instance_type: t.instance_type.to_string(),
            availability_zone: zone.to_string(),
            code: code.to_string(),
            for_s: ttl.as_secs_f64(),
            workspace: Some(workspace.to_string()),
        });
    }
}

/// The end of a launch that got an answer other than "no capacity": a fallback
/// type that launched is noted for the summary.
fn landed(
    ctx: &RunContext,
    workspace: &str,
    ladder: &[&str],
    t: &Try<'_>,
    trail: &Trail,
    done: Result<Instance, StepError>,
) -> Result<Instance, StepError> {
    if t.rung > 0 && done.is_ok() {
        let passed = &ladder[..t.rung];
        let code = trail
            .last
            .as_ref()
            .and_then(|e| e.code.clone())
            .unwrap_or_else(|| "InsufficientInstanceCapacity".into());
        let (is, was) = if passed.len() == 1 {
            ("is", "was")
        } else {
            ("are", "were")
        };
        let passed = passed.join(" and ");
        let region = ctx.cloud.region();
        let reason = if trail.sold_out.is_empty() {
            // The token of an earlier launch, which fell back, got its instance.
            format!(
                "launched by an earlier run, when {passed} {was} sold out in every zone of {region}"
            )
        } else {
            format!("{passed} {is} sold out in every zone of {region} ({code})")
        };
        ctx.fallbacks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(FallbackNote {
                workspace: workspace.to_string(),
                instance_type: t.instance_type.to_string(),
                instead_of: ladder[0].to_string(),
                reason,
            });
    }
    done
}

/// The failure of a launch that found no capacity anywhere: what was tried, and
/// AWS's last answer (none when every pair was already marked sold out).
fn no_capacity(ctx: &RunContext, ladder: &[&str], trail: Trail) -> CloudError {
    let tried: Vec<String> = ladder
        .iter()
        .filter_map(|t| {
            let mut zones = trail.sold_out.get(*t)?.clone();
            zones.sort();
            zones.dedup();
            Some(format!("{t} in {}", zones.join(", ")))
        })
        .collect();
    let summary = if tried.is_empty() {
        "no zone had capacity".to_string()
    } else {
        format!("no capacity for {}", tried.join("; "))
    };
    match trail.last {
        Some(last) => CloudError {
            message: format!("{summary}. AWS's last answer: {}", last.message),
            ..last
        },
        None => CloudError {
            operation: "RunInstances",
            code: Some("InsufficientInstanceCapacity".into()),
            message: format!(
                "{summary}, all marked sold out by earlier launches within {}; no call was made",
                humantime::format_duration(ctx.engine.sold_out_ttl())
            ),
            status: None,
            class: ErrorClass::Capacity,
        },
    }
}

fn spec(
    ctx: &RunContext,
    template: &LaunchSpec,
    workspace: &str,
    t: &Try<'_>,
    incarnation: u32,
) -> LaunchSpec {
    let mut spec = template.clone();
    spec.instance_type = t.instance_type.to_string();
    spec.availability_zone = t.zone.map(str::to_string);
    spec.tags = fleet_tags(ctx);
    spec.tags.extend(own_tags(ctx, workspace));
    spec.client_token = client_token(
        &ctx.fleet,
        workspace,
        &spec_digest(&spec),
        t.zone,
        incarnation,
    );
    spec
}

/// The tags every instance of the run's fleet gets at launch: fleet, project,
/// template, and who manages it.
pub(super) fn fleet_tags(ctx: &RunContext) -> BTreeMap<String, String> {
    let recipe = ctx.recipe.as_ref();
    let mut tags = BTreeMap::from([
        (tags::FLEET.to_string(), ctx.fleet.clone()),
        (
            tags::PROJECT.to_string(),
            recipe.map(|r| r.project.clone()).unwrap_or_default(),
        ),
        (
            tags::TEMPLATE.to_string(),
            recipe.map(|r| r.template.clone()).unwrap_or_default(),
        ),
    ]);
    match recipe {
        Some(r) if r.made_by_hand => {
            tags.insert(tags::MADE_BY.to_string(), "hand".to_string());
        }
        Some(Recipe {
            owner: Some(owner), ..
        }) => {
            tags.insert(tags::OWNER.to_string(), owner.clone());
        }
        _ => {}
    }
    tags
}

/// The tags of `workspace`'s own: its name, and its member when it has one.
pub(super) fn own_tags(ctx: &RunContext, workspace: &str) -> BTreeMap<String, String> {
    let mut tags = BTreeMap::from([
        (tags::WORKSPACE.to_string(), workspace.to_string()),
        (tags::NAME.to_string(), workspace.to_string()),
    ]);
    if let Some(member) = ctx.recipe.as_ref().and_then(|r| r.members.get(workspace)) {
        tags.insert(tags::MEMBER.to_string(), member.clone());
    }
    tags
}

/// The instance launched with `token`, when DescribeInstances shows it already: a
/// launch whose answer was lost is then done without sending RunInstances again
/// (which would wait for a launch permit). Not shown yet (AWS's reads lag behind
/// its writes), the launch is retried with the same token, which is as safe.
async fn launched_with(ctx: &RunContext, workspace: &str, token: &str) -> Option<Instance> {
    let filter = crate::cloud::InstanceFilter {
        tags: vec![
            (tags::FLEET.to_string(), ctx.fleet.clone()),
            (tags::WORKSPACE.to_string(), workspace.to_string()),
        ],
        client_token: Some(token.to_string()),
        ..Default::default()
    };
    let found = ctx.cloud.describe_instances(&filter).await.ok()?;
    // Checked here too: an answer that ignored a filter must not pass for this
    // workspace's instance.
    found.into_iter().find(|i| {
        !i.state.is_gone()
            && i.tag(tags::FLEET) == Some(ctx.fleet.as_str())
            && i.tag(tags::WORKSPACE) == Some(workspace)
    })
}

/// Launches in one zone with one type, moving past terminated incarnations.
async fn launch_in(
    ctx: &RunContext,
    workspace: &str,
    template: &LaunchSpec,
    t: &Try<'_>,
    first_incarnation: u32,
    prepaid: &mut bool,
) -> Result<Instance, StepError> {
    let mut last = None;
    for incarnation in first_incarnation..MAX_INCARNATIONS {
        let spec = spec(ctx, template, workspace, t, incarnation);
        // Noted even as the first choice: a rerun must not launch it in a batch.
        let choice = TokenChoice {
            zone: t.zone.map(str::to_string),
            instance_type: (t.rung > 0).then(|| t.instance_type.to_string()),
            incarnation,
        };
        ctx.engine
            .memory
            .remember(&ctx.fleet, workspace, &ctx.digest, Some(&choice));
        let sent_at = super::launch_notes::now_ms();
        let result = ctx
            .call_or_find(
                workspace,
                Pace::Launch,
                prepaid,
                |attempt| {
                    ctx.events.emit(Event::Launching {
                        workspace: workspace.to_string(),
                        attempt,
                        availability_zone: spec.availability_zone.clone(),
                        instance_type: spec.instance_type.clone(),
                    });
                    ctx.cloud.run_instance(&spec)
                },
                || launched_with(ctx, workspace, &spec.client_token),
            )
            .await;
        if let Ok(instance) = &result {
            ctx.note_sent(
                workspace,
                spec.client_token.clone(),
                sent_at,
                &instance.id,
                &spec.instance_type,
            );
        }
        match result {
            // That token's instance was terminated: the next incarnation's token,
            // at once. The refused call launched nothing, so the next one goes out
            // on its launch permit: re-creating deleted workspaces is paced as any
            // launch, not twice as slowly.
            Err(StepError::Cloud(e))
                if e.code.as_deref() == Some("IdempotentInstanceTerminated") =>
            {
                last = Some(e);
                *prepaid = true;
            }
            other => return other,
        }
    }
    Err(StepError::Cloud(last.unwrap_or_else(|| {
        CloudError::service(
            "RunInstances",
            Some("IdempotentInstanceTerminated"),
            format!("every ClientToken of {workspace} was used by a terminated instance"),
            None,
        )
    })))
}
