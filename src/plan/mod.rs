//! The planner: a pure function of the desired fleet and the observed account.
//! No IO, no clock: the same inputs always give the same [`Plan`].

pub mod cost;
mod fallback;
pub mod identity;
mod quota_check;
pub mod render;
mod render_timetable;
pub mod schedule;
mod timetable;

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cloud::{Instance, InstanceState, tags};
use crate::manifest::{ImageRef, Manifest};
use crate::observe::{ImageResolution, Observed};

pub use fallback::FallbackCheck;
pub use quota_check::QuotaCheck;
pub use timetable::{
    LeftAlone, NewMember, NextChange, ScheduleView, next_change, started_by_prism,
};

/// Version of the JSON plan format.
pub const FORMAT_VERSION: u32 = 1;

/// What to do to one workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Create,
    Start,
    Stop,
    Replace,
    Delete,
    /// Change the instance type in place: stop, change the type, start (back to the
    /// declared state). The instance keeps its id and its volumes.
    Resize,
    /// Stop with hibernation (memory kept): on the command line, and outside the
    /// windows of a schedule with `otherwise: hibernated`.
    Hibernate,
}

/// One change to one workspace, with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub action: ActionKind,
    pub workspace: String,
    /// The existing instance acted on; none for a create.
    pub instance_id: Option<String>,
    /// The instance type the workspace has after the action.
    pub instance_type: String,
    /// vCPUs of that type; unknown when AWS does not offer the type.
    pub vcpus: Option<u32>,
    pub reason: String,
    /// For a resize: the type the instance has before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<ResizeFrom>,
}

/// What a resize starts from, and what it adds to the quota usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResizeFrom {
    /// The instance's type before the resize.
    pub instance_type: String,
    /// vCPUs of that type; unknown when AWS does not describe the type.
    pub vcpus: Option<u32>,
    /// vCPUs the resize adds to the usage of the new type's quota: the difference for
    /// an instance that runs before and after, all of the new type's for a stopped
    /// instance the fleet wants running, none for one left stopped. Unknown when
    /// either type's vCPUs are.
    pub added_vcpus: Option<u32>,
}

impl Action {
    /// vCPUs this action adds to the usage of its type's quota class: a launch or a
    /// start all of the type's, a resize what it adds ([`ResizeFrom::added_vcpus`]),
    /// the others none. None when unknown.
    pub fn added_vcpus(&self) -> Option<u32> {
        match self.action {
            ActionKind::Create | ActionKind::Start | ActionKind::Replace => self.vcpus,
            ActionKind::Resize => self.resize.as_ref().and_then(|r| r.added_vcpus),
            ActionKind::Stop | ActionKind::Delete | ActionKind::Hibernate => Some(0),
        }
    }

    /// Whether the action needs room in a quota: it launches or starts an instance,
    /// or resizes one to a type with more vCPUs that runs afterwards.
    pub fn needs_quota(&self) -> bool {
        match self.action {
            ActionKind::Create | ActionKind::Start | ActionKind::Replace => true,
            ActionKind::Resize => self.added_vcpus() != Some(0),
            _ => false,
        }
    }
}

/// Counts per action kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub create: usize,
    pub start: usize,
    pub stop: usize,
    pub replace: usize,
    pub delete: usize,
    /// Left out of the JSON when there is none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub resize: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Summary {
    /// Total number of actions.
    pub fn total(&self) -> usize {
        self.create + self.start + self.stop + self.resize + self.replace + self.delete
    }
}

/// What a warning is about; serialised as a stable snake_case identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarningKind {
    /// Not every workspace fits the quota.
    QuotaShortfall,
    /// A quota or the usage could not be read.
    QuotaUnknown,
    /// A quota would be used above its alert threshold.
    QuotaHigh,
    /// The template's instance type is not offered in the region.
    UnknownInstanceType,
    /// The template's image did not resolve.
    ImageUnresolved,
    /// Deletions or replacements wait for `prune: true`.
    PruneDisabled,
    /// A workspace has more than one instance.
    DuplicateInstances,
    /// Were every launch to fall back to one of the template's fallback types, not
    /// all would fit that type's quota.
    FallbackQuotaShortfall,
    /// Other fleets' launches that AWS does not show yet are counted as in use.
    LaunchesInFlight,
}

/// Something the user should know before applying.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    pub kind: WarningKind,
    pub message: String,
    /// What the user can do, most useful first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// A workspace's instance kept as it is because prune is off: no longer wanted (prune
/// would delete it), or to be replaced (prune would terminate it and launch anew).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    pub workspace: String,
    pub instance_id: String,
    pub reason: String,
    /// What `prune: true` would do: `delete` or `replace`.
    #[serde(default = "delete")]
    pub action: ActionKind,
}

fn delete() -> ActionKind {
    ActionKind::Delete
}

/// The changes that make the account match the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: u32,
    pub fleet: String,
    pub region: String,
    pub actions: Vec<Action>,
    pub summary: Summary,
    pub quota: Vec<QuotaCheck>,
    /// The template's fallback types, in order, each against its quota class; empty
    /// when the template lists none or nothing launches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<FallbackCheck>,
    pub warnings: Vec<Warning>,
    /// Instances kept because prune is off: what `prune: true` would delete, or
    /// replace. They are not among `actions` and not counted in `summary`.
    pub would_delete_with_prune: Vec<Kept>,
    /// Workspaces made by hand in the fleet (`workspace create`), not in the
    /// manifest: kept whatever `prune` says; `workspace delete` deletes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub made_by_hand: Vec<Kept>,
    /// The template new workspaces launch from.
    pub template: String,
    /// The image new workspaces launch from, when resolved.
    pub image_id: Option<String>,
    /// Digest of the observed fleet; a saved plan is stale once it changes.
    pub fingerprint: String,
    /// Where the fleet's timetable stands at the plan's moment, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleView>,
    /// The estimated compute cost per week, on the schedule and always on (scheduled
    /// fleets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<cost::Cost>,
    /// The roster rows the workspaces to create are named after.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub new_members: Vec<NewMember>,
    /// Set when another manifest manages the fleet: the plan then changes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owned_elsewhere: Option<OwnedElsewhere>,
    /// Instances of the fleet that no manifest manages yet (fleets from before owners
    /// were kept): the run tags them as this manifest's, and changes nothing else
    /// about them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adopt: Vec<String>,
    /// Instances launched in a batch whose own tags (`prism:workspace`, `Name`,
    /// `prism:member`) were never written (the run that launched them was stopped
    /// first): the run writes them, and changes nothing else about them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unnamed: Vec<Unnamed>,
    /// How launches are paced (see `RateSettings::describe`), when the caller knows
    /// the settings: said under the plan's launches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pace: Option<String>,
}

/// An instance known by its launch (see [`crate::cloud::batch_tags`]) that lacks its own
/// tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unnamed {
    pub instance_id: String,
    pub workspace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
}

/// Another manifest manages the fleet a plan is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedElsewhere {
    /// The owner (tag `prism:owner`), e.g. `a.yaml`.
    pub owner: String,
    /// The manifest that was planned.
    pub manifest: String,
    /// The workspaces the owner's tag is on.
    pub workspaces: Vec<String>,
}

impl OwnedElsewhere {
    /// What a person reads: who owns the fleet, and how to hand it over.
    pub fn message(&self, fleet: &str) -> String {
        format!(
            "fleet `{fleet}` is managed by another manifest, `{}` ({} of its workspaces {} its prism:owner tag); `{}` names the same fleet, so nothing was changed. If `{}` should manage it from now on, hand it over with `prism fleet adopt {}`; otherwise give this manifest's fleet another `name:`",
            self.owner,
            self.workspaces.len(),
            if self.workspaces.len() == 1 {
                "carries"
            } else {
                "carry"
            },
            self.manifest,
            self.manifest,
            self.manifest,
        )
    }
}

/// Who manages the fleet whose `instances` these are, for `manifest`: another manifest
/// (then nothing may change), and the instances no manifest manages yet (to adopt).
pub fn ownership(
    manifest: &Manifest,
    instances: &[Instance],
) -> (Option<OwnedElsewhere>, Vec<String>) {
    let ours = manifest.owner();
    let managed = instances
        .iter()
        .filter(|i| !i.state.is_gone() && i.tag(tags::MADE_BY) != Some("hand"));
    let mut foreign: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut adopt = Vec::new();
    for i in managed {
        match i.tag(tags::OWNER) {
            Some(o) if o != ours => foreign
                .entry(o)
                .or_default()
                .push(i.workspace().unwrap_or(&i.id).to_string()),
            Some(_) => {}
            None => adopt.push(i.id.clone()),
        }
    }
    adopt.sort();
    // The owner with the most workspaces is named; any other owner blocks as well.
    let elsewhere =
        foreign
            .into_iter()
            .max_by_key(|(_, w)| w.len())
            .map(|(owner, mut workspaces)| {
                workspaces.sort();
                OwnedElsewhere {
                    owner: owner.to_string(),
                    manifest: ours.clone(),
                    workspaces,
                }
            });
    (elsewhere, adopt)
}

impl Plan {
    /// Keeps only the creates of `workspaces`, for commands that launch named
    /// workspaces into a fleet without touching its others.
    pub fn focus_on_creates(&mut self, workspaces: &[String]) {
        self.actions
            .retain(|a| a.action == ActionKind::Create && workspaces.contains(&a.workspace));
        self.summary = summarize(&self.actions);
        self.would_delete_with_prune.clear();
        self.warnings
            .retain(|w| w.kind != WarningKind::PruneDisabled);
        for q in &mut self.quota {
            q.over_quota.retain(|w| workspaces.contains(w));
        }
    }

    /// Whether applying would change anything.
    pub fn has_changes(&self) -> bool {
        !self.actions.is_empty()
    }
}

/// A plan saved by `prism plan --out`, for `prism apply` to carry out later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedPlan {
    /// The manifest the plan was made from.
    pub manifest: std::path::PathBuf,
    /// SHA-256 of the manifest's text when the plan was made.
    pub manifest_sha256: String,
    pub plan: Plan,
}

impl SavedPlan {
    /// Wraps `plan`, made from the manifest at `path` whose text is `text`.
    pub fn new(path: &std::path::Path, text: &[u8], plan: Plan) -> Self {
        SavedPlan {
            manifest: path.to_path_buf(),
            manifest_sha256: hex(&Sha256::digest(text)),
            plan,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Makes the plan that brings `observed` to what `manifest` declares, at no moment in
/// particular: a scheduled fleet's workspaces are left in the state they are in, and
/// new ones launched into the state outside the windows. Callers that act use
/// [`plan_at`].
pub fn plan(manifest: &Manifest, observed: &Observed) -> Plan {
    plan_at(manifest, observed, None)
}

/// Makes the plan that brings `observed` to what `manifest` declares at `now`: for a
/// scheduled fleet, the state its timetable wants then (see [`schedule`]).
pub fn plan_at(manifest: &Manifest, observed: &Observed, now: Option<jiff::Timestamp>) -> Plan {
    let mut plan = plan_by_hand(manifest, observed, now);
    let (owned_elsewhere, adopt) = ownership(manifest, &observed.instances);
    if owned_elsewhere.is_some() {
        // Another manifest's fleet: nothing is launched, changed or deleted.
        plan.actions.clear();
        plan.summary = summarize(&plan.actions);
    } else {
        plan.adopt = adopt;
        let members = identity::members(manifest, &observed.instances);
        plan.unnamed = observed
            .instances
            .iter()
            .filter(|i| !i.state.is_gone() && crate::cloud::batch_tags::untagged(&i.tags))
            .filter_map(|i| {
                let workspace = i.workspace()?.to_string();
                Some(Unnamed {
                    instance_id: i.id.clone(),
                    member: members.get(&workspace).cloned(),
                    workspace,
                })
            })
            .collect();
    }
    plan.owned_elsewhere = owned_elsewhere;
    plan
}

/// [`plan_at`] whoever manages the fleet: for workspaces made by hand
/// (`workspace create`), which join any fleet and adopt nothing.
pub fn plan_by_hand(
    manifest: &Manifest,
    observed: &Observed,
    now: Option<jiff::Timestamp>,
) -> Plan {
    // A roster's members keep the names their instances have (see `identity`).
    let resolved;
    let manifest = match &manifest.roster {
        Some(_) => {
            resolved = Manifest {
                workspaces: identity::resolve(manifest, &observed.instances),
                ..manifest.clone()
            };
            &resolved
        }
        None => manifest,
    };
    let target = timetable::Target::of(manifest, now);
    let mut left_alone = Vec::new();
    let mut by_workspace: BTreeMap<&str, Vec<&Instance>> = BTreeMap::new();
    let mut strays = Vec::new();
    for i in observed.instances.iter().filter(|i| !i.state.is_gone()) {
        match i.workspace() {
            Some(w) => by_workspace.entry(w).or_default().push(i),
            None => strays.push(i),
        }
    }
    let desired: HashSet<&str> = manifest.workspaces.iter().map(String::as_str).collect();
    let mut actions = Vec::new();
    let mut unwanted: Vec<(&Instance, String)> = Vec::new();
    let mut warnings = Vec::new();
    let mut held = Vec::new();

    for name in &manifest.workspaces {
        let mut found = by_workspace.remove(name.as_str()).unwrap_or_default();
        found.sort_by_key(|i| keep_rank(i));
        if found.len() > 1 {
            warnings.push(Warning {
                kind: WarningKind::DuplicateInstances,
                message: format!(
                    "{name} has {} instances; {} is kept",
                    found.len(),
                    found[0].id
                ),
                options: vec![],
            });
        }
        for extra in found.iter().skip(1) {
            unwanted.push((extra, format!("duplicate of {}", found[0].id)));
        }
        if let Some(i) = found.first()
            && let Some(reason) = target.left_alone(i)
        {
            left_alone.push(LeftAlone {
                workspace: name.clone(),
                instance_id: i.id.clone(),
                reason,
            });
        }
        match workspace_action(manifest, observed, name, found.first().copied(), &target) {
            // Replacing terminates the instance and its data: like a deletion, only
            // with prune. Apply would skip it, so the plan does not count it.
            Some(a) if a.action == ActionKind::Replace && !manifest.prune => {
                // The instance stays as it is, but in the state the manifest asks for.
                if let Some(i) = found.first() {
                    actions.extend(state_action(observed, name, i, &target));
                }
                held.push(Kept {
                    workspace: a.workspace,
                    instance_id: a.instance_id.unwrap_or_default(),
                    reason: a.reason,
                    action: ActionKind::Replace,
                });
            }
            Some(a) => actions.push(a),
            None => {}
        }
    }
    // AWS lists instances in no set order: the plan must not follow it.
    for (workspace, mut instances) in by_workspace {
        debug_assert!(!desired.contains(workspace));
        instances.sort_by(|a, b| a.id.cmp(&b.id));
        for i in instances {
            unwanted.push((i, "no longer in the manifest".into()));
        }
    }
    strays.sort_by(|a, b| a.id.cmp(&b.id));
    for i in strays {
        unwanted.push((i, "has the fleet tag but no workspace tag".into()));
    }

    let mut kept = Vec::new();
    let mut made_by_hand = Vec::new();
    for (i, reason) in unwanted {
        let workspace = i.workspace().unwrap_or(&i.id).to_string();
        if i.tag(tags::MADE_BY) == Some("hand") {
            made_by_hand.push(Kept {
                workspace,
                instance_id: i.id.clone(),
                reason: "not in the manifest (made by hand): kept".into(),
                action: ActionKind::Delete,
            });
        } else if manifest.prune {
            actions.push(Action {
                action: ActionKind::Delete,
                workspace,
                instance_id: Some(i.id.clone()),
                instance_type: i.instance_type.clone(),
                vcpus: observed.vcpus.get(&i.instance_type).copied(),
                reason,
                resize: None,
            });
        } else {
            kept.push(Kept {
                workspace,
                instance_id: i.id.clone(),
                reason,
                action: ActionKind::Delete,
            });
        }
    }
    warnings.extend(prune_warnings(&held, &kept));
    held.extend(kept);
    let kept = held;

    warnings.extend(launch_warnings(manifest, observed, &actions));
    warnings.extend(in_flight_warnings(observed));
    let (quota, quota_warnings) = quota_check::check(manifest, observed, &actions);
    warnings.extend(quota_warnings);
    let (fallbacks, fallback_warnings) = fallback::check(manifest, observed, &actions, &quota);
    warnings.extend(fallback_warnings);
    let summary = summarize(&actions);
    let new_members = timetable::new_members(manifest, &actions);
    let schedule = target.view(manifest, &actions, left_alone);
    let cost = manifest.schedule.as_ref().map(|_| cost::weekly(manifest));
    Plan {
        format_version: FORMAT_VERSION,
        fleet: manifest.name.clone(),
        region: observed.region.clone(),
        actions,
        summary,
        quota,
        fallbacks,
        warnings,
        would_delete_with_prune: kept,
        made_by_hand,
        template: manifest.template.name.clone(),
        image_id: observed.image.id().map(str::to_string),
        fingerprint: fingerprint(manifest, observed),
        schedule,
        cost,
        new_members,
        owned_elsewhere: None,
        adopt: vec![],
        unnamed: vec![],
        pace: None,
    }
}

/// Says which other fleets' launches, not shown by AWS yet, the quota check counts.
fn in_flight_warnings(observed: &Observed) -> Vec<Warning> {
    let mut by_fleet: BTreeMap<&str, (usize, u32)> = BTreeMap::new();
    for l in &observed.in_flight {
        let e = by_fleet.entry(l.fleet.as_str()).or_default();
        e.0 += 1;
        e.1 += observed.vcpus.get(&l.instance_type).copied().unwrap_or(0);
    }
    by_fleet
        .into_iter()
        .map(|(fleet, (n, vcpus))| Warning {
            kind: WarningKind::LaunchesInFlight,
            message: format!(
                "{vcpus} vCPUs being launched by fleet {fleet} ({n} instance{} that AWS does not show yet) are counted as in use",
                if n == 1 { "" } else { "s" }
            ),
            options: vec![],
        })
        .collect()
}

/// What prune would do that it is off for: replacements first, then deletions.
fn prune_warnings(replacements: &[Kept], deletions: &[Kept]) -> Vec<Warning> {
    let plural = |n: usize, one: &'static str, many: &'static str| if n == 1 { one } else { many };
    let mut out = Vec::new();
    if !replacements.is_empty() {
        let n = replacements.len();
        out.push(Warning {
            kind: WarningKind::PruneDisabled,
            message: format!(
                "{n} workspace{} to replace {} kept as {} because prune is off; replacing terminates an instance and its data",
                plural(n, "", "s"),
                plural(n, "is", "are"),
                plural(n, "it is", "they are"),
            ),
            options: vec![
                "set `prune: true` in the manifest to replace them".into(),
                "or change the template back to match the running instances".into(),
            ],
        });
    }
    if !deletions.is_empty() {
        let n = deletions.len();
        out.push(Warning {
            kind: WarningKind::PruneDisabled,
            message: format!(
                "{n} workspace{} no longer wanted {} kept because prune is off",
                plural(n, "", "s"),
                plural(n, "is", "are")
            ),
            options: vec!["set `prune: true` in the manifest to delete them".into()],
        });
    }
    out
}

/// Which of several instances of one workspace to keep: running first, then the oldest.
fn keep_rank(i: &Instance) -> (u8, i64, String) {
    let state = match i.state {
        InstanceState::Running => 0,
        InstanceState::Pending => 1,
        InstanceState::Stopped | InstanceState::Stopping => 2,
        _ => 3,
    };
    (state, i.launch_time.unwrap_or(i64::MAX), i.id.clone())
}

fn workspace_action(
    manifest: &Manifest,
    observed: &Observed,
    name: &str,
    existing: Option<&Instance>,
    target: &timetable::Target,
) -> Option<Action> {
    let t = &manifest.template;
    let action = |kind, instance_id: Option<&str>, reason: String| Action {
        action: kind,
        workspace: name.to_string(),
        instance_id: instance_id.map(str::to_string),
        instance_type: t.instance_type.clone(),
        vcpus: observed.vcpus.get(&t.instance_type).copied(),
        reason,
        resize: None,
    };
    let Some(i) = existing else {
        return Some(action(
            ActionKind::Create,
            None,
            "workspace does not exist".into(),
        ));
    };
    // An instance of a fallback type was launched while the template's type was sold
    // out: it is the workspace's, not a change to make.
    let new_type = (i.instance_type != t.instance_type
        && !t.fallback_instance_types.contains(&i.instance_type))
    .then(|| format!("instance type {} → {}", i.instance_type, t.instance_type));
    // A lookup image is resolved for new launches only: a newer image being published
    // must not replace every student's machine.
    let new_image = match &t.image {
        ImageRef::Id(image) if &i.image_id != image => {
            Some(format!("image {} → {image}", i.image_id))
        }
        _ => None,
    };
    // Only a new instance can change the image: the disk starts afresh from it.
    if let Some(image) = new_image {
        let changes: Vec<String> = [Some(image), new_type].into_iter().flatten().collect();
        let reason = format!(
            "{}; a new instance from the image: its disk is lost",
            changes.join(", ")
        );
        return Some(action(ActionKind::Replace, Some(&i.id), reason));
    }
    if let Some(change) = new_type {
        // AWS cannot change the type of an instance launched with hibernation.
        if i.hibernation {
            let reason = format!(
                "{change}; an instance with hibernation cannot change type: a new instance, its disk is lost"
            );
            return Some(action(ActionKind::Replace, Some(&i.id), reason));
        }
        return Some(resize(manifest, observed, name, i, target));
    }
    state_action(observed, name, i, target)
}

/// The in-place type change of instance `i` to the template's type, ending in the
/// state `target` wants.
fn resize(
    manifest: &Manifest,
    observed: &Observed,
    name: &str,
    i: &Instance,
    target: &timetable::Target,
) -> Action {
    let to = &manifest.template.instance_type;
    let runs_now = i.state.uses_quota();
    let runs_after = target.runs(i);
    let steps = match (i.state == InstanceState::Stopped, runs_after) {
        (false, true) => "stop, change type, start",
        (false, false) => "stop, change type; stays stopped",
        (true, true) => "change type, start",
        (true, false) => "change type; stays stopped",
    };
    let new_vcpus = observed.vcpus.get(to).copied();
    let old_vcpus = observed.vcpus.get(&i.instance_type).copied();
    let same_class = crate::quota::on_demand_class(to).code
        == crate::quota::on_demand_class(&i.instance_type).code;
    let added_vcpus = match (runs_after, runs_now && same_class) {
        (false, _) => Some(0),
        (true, false) => new_vcpus,
        (true, true) => new_vcpus.zip(old_vcpus).map(|(n, o)| n.saturating_sub(o)),
    };
    Action {
        action: ActionKind::Resize,
        workspace: name.to_string(),
        instance_id: Some(i.id.clone()),
        instance_type: to.clone(),
        vcpus: new_vcpus,
        reason: format!("{} → {to} ({steps}; disk kept)", i.instance_type),
        resize: Some(ResizeFrom {
            instance_type: i.instance_type.clone(),
            vcpus: old_vcpus,
            added_vcpus,
        }),
    }
}

/// The start, stop or hibernation that brings instance `i` of workspace `name` to the
/// state `target` wants.
fn state_action(
    observed: &Observed,
    name: &str,
    i: &Instance,
    target: &timetable::Target,
) -> Option<Action> {
    let (kind, reason) = target.change(i)?;
    Some(Action {
        action: kind,
        workspace: name.to_string(),
        instance_id: Some(i.id.clone()),
        instance_type: i.instance_type.clone(),
        vcpus: observed.vcpus.get(&i.instance_type).copied(),
        reason,
        resize: None,
    })
}

fn launch_warnings(manifest: &Manifest, observed: &Observed, actions: &[Action]) -> Vec<Warning> {
    let mut out = Vec::new();
    let launches = actions
        .iter()
        .any(|a| matches!(a.action, ActionKind::Create | ActionKind::Replace));
    let t = &manifest.template;
    if actions.iter().any(|a| a.action != ActionKind::Delete)
        && !observed.vcpus.contains_key(&t.instance_type)
    {
        out.push(Warning {
            kind: WarningKind::UnknownInstanceType,
            message: format!(
                "instance type {} is not offered in {}",
                t.instance_type, observed.region
            ),
            options: vec![format!(
                "check the spelling of `instance_type` in template {}",
                t.name
            )],
        });
    }
    if let (true, ImageResolution::Failed { reason } | ImageResolution::Missing { reason }) =
        (launches, &observed.image)
    {
        out.push(Warning {
            kind: WarningKind::ImageUnresolved,
            message: format!(
                "the image of template {} could not be resolved: {reason}",
                t.name
            ),
            options: vec![image_advice(&t.image, &observed.region)],
        });
    }
    out
}

/// Why `plan` cannot be carried out at all: it launches workspaces from an image that
/// does not exist. Located at the template's `image` (or the manifest's `template:`).
pub fn missing_image(
    manifest: &Manifest,
    observed: &Observed,
    plan: &Plan,
) -> Option<crate::manifest::ManifestError> {
    let ImageResolution::Missing { reason } = &observed.image else {
        return None;
    };
    let launches = plan.summary.create + plan.summary.replace;
    if launches == 0 {
        return None;
    }
    let t = &manifest.template;
    let pointer = format!(
        "/templates/{}/image",
        crate::manifest::locate_escape(&t.name)
    );
    Some(crate::manifest::problem_after_load(
        manifest,
        &pointer,
        "/template",
        format!(
            "{reason}: the {launches} workspace{} to launch from template {} cannot be launched",
            if launches == 1 { "" } else { "s" },
            t.name
        ),
        "not found",
        Some(image_advice(&t.image, &observed.region)),
    ))
}

/// What to do about an image that does not resolve, for the kind of image it is.
pub fn image_advice(image: &crate::manifest::ImageRef, region: &str) -> String {
    match image {
        crate::manifest::ImageRef::Id(id) => format!(
            "AMI ids belong to one region: check that {id} is an image of {region} (`aws ec2 describe-images --image-ids {id} --region {region}`), copy it there (`aws ec2 copy-image`), or use the id of the same image in {region}"
        ),
        crate::manifest::ImageRef::Lookup { owner, name } => format!(
            "check `image` in the template: no image of owner {owner} in {region} has a name matching `{name}` (`aws ec2 describe-images --owners {owner} --filters Name=name,Values='{name}' --region {region}`)"
        ),
    }
}

/// Counts the actions by kind.
pub fn summarize(actions: &[Action]) -> Summary {
    let mut s = Summary::default();
    for a in actions {
        *match a.action {
            ActionKind::Create => &mut s.create,
            ActionKind::Start => &mut s.start,
            ActionKind::Stop | ActionKind::Hibernate => &mut s.stop,
            ActionKind::Replace => &mut s.replace,
            ActionKind::Resize => &mut s.resize,
            ActionKind::Delete => &mut s.delete,
        } += 1;
    }
    s
}

/// Digest of what the plan was made from: the manifest's fleet and the observed fleet
/// instances (ids, states, types, images, workspaces).
pub fn fingerprint(manifest: &Manifest, observed: &Observed) -> String {
    let mut instances: Vec<_> = observed
        .instances
        .iter()
        .map(|i| (&i.id, i.state, &i.instance_type, &i.image_id, i.workspace()))
        .collect();
    instances.sort();
    let mut h = Sha256::new();
    h.update(manifest.name.as_bytes());
    h.update(observed.region.as_bytes());
    h.update(serde_json::to_vec(&instances).expect("serializable"));
    hex(&h.finalize())
}

#[cfg(test)]
mod tests;
