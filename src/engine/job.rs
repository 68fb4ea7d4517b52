//! What a run is asked to do: the actions of a plan, what a launch needs, and how.

use std::collections::BTreeMap;
use std::time::Duration;

use super::gate;
use super::verdict::Verdict;
use crate::cloud::LaunchSpec;
use crate::manifest::{DesiredState, Manifest, RetryPolicy};
use crate::observe::{ImageResolution, Observed};
use crate::plan::{Action, Plan};

/// What a launch needs besides the workspace's name.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// The template's name (tag `prism:template`).
    pub template: String,
    /// Tag `prism:project`.
    pub project: String,
    /// The instance as launched (image, type, user data, root volume, hibernation);
    /// each launch adds its zone, tags and ClientToken. Err: why nothing can be
    /// launched (the image did not resolve).
    pub spec: Result<LaunchSpec, String>,
    /// Types launched, in order, when the spec's type is sold out in every zone.
    pub fallback_types: Vec<String>,
    /// Each workspace's member (tag `prism:member`), by workspace name.
    pub members: BTreeMap<String, String>,
    /// Whether the launches are workspaces made by hand (`workspace create`), which a
    /// manifest's apply never prunes (tag `prism:made-by`).
    pub made_by_hand: bool,
    /// The manifest that manages the fleet (tag `prism:owner` on each launch, unless
    /// made by hand).
    pub owner: Option<String>,
}

impl Recipe {
    /// The recipe of `manifest`'s template, with the image `observed` resolved.
    pub fn of(manifest: &Manifest, observed: &Observed) -> Recipe {
        let t = &manifest.template;
        let image = match &observed.image {
            ImageResolution::Resolved { id, root_device } => Ok((id.clone(), root_device.clone())),
            ImageResolution::Failed { reason } | ImageResolution::Missing { reason } => {
                Err(reason.clone())
            }
            ImageResolution::Unresolved => Err("the image was not resolved".into()),
        };
        Recipe {
            template: t.name.clone(),
            project: manifest.project.clone(),
            spec: image.map(|(image_id, root_device)| LaunchSpec {
                client_token: String::new(),
                image_id,
                instance_type: t.instance_type.clone(),
                availability_zone: None,
                tags: BTreeMap::new(),
                user_data: t.user_data.clone(),
                root_volume: t
                    .root_volume_gb
                    .map(|gb| (root_device.unwrap_or_else(|| "/dev/xvda".into()), gb)),
                hibernation: t.hibernation,
                from_snapshot: t.restore_snapshot.clone(),
            }),
            fallback_types: t.fallback_instance_types.clone(),
            members: crate::plan::identity::members(manifest, &observed.instances),
            made_by_hand: false,
            owner: Some(manifest.owner()),
        }
    }
}

/// What a run carries out.
#[derive(Debug, Clone)]
pub struct Job {
    /// The fleet the workspaces belong to (tag `prism:fleet`).
    pub fleet: String,
    /// In the order to carry them out; launches leave in this order.
    pub actions: Vec<Action>,
    /// What launches need; None for a job without launches.
    pub recipe: Option<Recipe>,
    /// The state launched and started instances are left in.
    pub desired: DesiredState,
    /// Whether a replacement may terminate the old instance (`prune: true`).
    pub allow_replace: bool,
    /// Workspaces not to act on, with the reason (no quota left, backing off, held).
    pub skip: BTreeMap<String, Verdict>,
    /// Workspaces whose action the quota has no room for, with the reason: they wait
    /// for room (see `quota_wait`), and are reported as waiting when the run ends first.
    pub quota_waiting: BTreeMap<String, Verdict>,
    /// Whether, and how long, the run itself waits for room for `quota_waiting`.
    pub quota_wait: Option<QuotaWait>,
    /// What the error catalogue fills its explanations with.
    pub errors: crate::errors::Context,
    /// Whether the run's starts are prism's own, carrying out a plan: each is recorded
    /// on its instance (tag `prism:started`) so that a timetable never takes it for a
    /// start by hand. False for a person's `workspace start`, which is one.
    pub own_starts: bool,
}

impl Job {
    /// The job that carries out `plan`, made from `manifest` and `observed`.
    pub fn from_plan(manifest: &Manifest, plan: &Plan, observed: &Observed) -> Job {
        Job {
            fleet: plan.fleet.clone(),
            actions: plan.actions.clone(),
            recipe: Some(Recipe::of(manifest, observed)),
            // A scheduled fleet launches into the state its schedule wants now.
            desired: plan
                .schedule
                .as_ref()
                .map_or(manifest.state, |s| s.state.desired()),
            allow_replace: manifest.prune,
            skip: BTreeMap::new(),
            quota_waiting: BTreeMap::new(),
            quota_wait: None,
            errors: crate::errors::Context::for_plan(
                observed,
                plan,
                &manifest.template.instance_type,
            ),
            own_starts: true,
        }
    }

    /// What `plan`'s quota gate has no room for: with `wait`, it waits for room (as
    /// `apply --wait-for-quota` and serve's `wait_for_quota`); without, it is skipped.
    pub fn over_quota(&mut self, plan: &Plan, gate: gate::Gate, wait: Option<QuotaWait>) {
        match wait {
            Some(wait) => {
                self.quota_waiting = gate::quota_waiting(plan);
                self.quota_wait = Some(wait);
            }
            None => self.skip = gate.over_quota,
        }
    }

    /// A job of starts, stops, hibernations or deletions of existing instances.
    pub fn changes(fleet: &str, actions: Vec<Action>, region: &str) -> Job {
        Job {
            fleet: fleet.to_string(),
            actions,
            recipe: None,
            desired: DesiredState::Running,
            allow_replace: false,
            skip: BTreeMap::new(),
            quota_waiting: BTreeMap::new(),
            quota_wait: None,
            errors: crate::errors::Context {
                region: Some(region.to_string()),
                ..Default::default()
            },
            own_starts: false,
        }
    }
}

/// How a run waits for room in a quota for the workspaces that did not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaWait {
    /// How long to wait, from the start of the run; the workspaces still waiting then
    /// are skipped.
    pub until: Duration,
    /// Time between two readings of the quota and the usage.
    pub every: Duration,
}

impl QuotaWait {
    /// The pace at which quota and usage are read again while a workspace waits: about
    /// once a minute.
    pub const EVERY: Duration = Duration::from_secs(60);
}

/// How a run goes about its job.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Actions (calls and waits) in flight at once.
    pub parallelism: usize,
    /// How long to wait for instances to reach their state; None returns after the calls.
    pub wait: Option<Duration>,
    /// Time between two looks at the fleet while waiting.
    pub poll: Duration,
    pub retry: RetryPolicy,
    /// How long a throttled call keeps being retried: throttling is AWS asking to slow
    /// down, not a failure, so it does not spend the retry budget of real errors.
    pub throttle_deadline: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            parallelism: 10,
            wait: Some(Duration::from_secs(600)),
            poll: Duration::from_secs(2),
            retry: RetryPolicy::default(),
            throttle_deadline: Duration::from_secs(600),
        }
    }
}
