//! What one account and region share: the cloud client, the limiters sized to AWS's
//! buckets, the launch notes and the sold-out offerings. Every run in the process uses
//! the same [`Engine`] for its account and region, so two runs at once never exceed
//! AWS's rates together.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;

use super::capacity::SoldOut;
use super::clock::Bucket;
use super::launch_notes::LaunchNotes;
use super::limiter::{self, Limiter, RateSettings};
use crate::cloud::Cloud;
use crate::manifest::Manifest;
use crate::metrics::Metrics;
use crate::plan::Plan;

/// Carries out jobs in one account and region; share it (`Arc`) between runs.
pub struct Engine {
    cloud: Arc<dyn Cloud>,
    launch: ArcSwapOption<Limiter>,
    pub(crate) start: Bucket,
    pub(crate) tag: Bucket,
    pub(crate) terminate: Bucket,
    pub(crate) mutate: Bucket,
    pub(crate) memory: Arc<LaunchNotes>,
    /// Sold-out (instance type, zone) pairs, avoided by every launch of every run.
    pub(crate) sold_out: SoldOut,
    /// Where runs count what they do, when the process serves metrics.
    metrics: ArcSwapOption<Metrics>,
}

/// AWS's request bucket for the changes with no bucket of their own (StopInstances,
/// ModifyInstanceAttribute, …): 50 at once, 5 more per second.
const MUTATE_PER_SECOND: u32 = 5;
const MUTATE_BURST: u32 = 50;
/// AWS's own request bucket for CreateTags: 100 at once, 10 more per second.
const TAG_PER_SECOND: u32 = 10;
const TAG_BURST: u32 = 100;
/// AWS's own request bucket for TerminateInstances: 100 at once, 5 more per second.
const TERMINATE_PER_SECOND: u32 = 5;
const TERMINATE_BURST: u32 = 100;

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("region", &self.cloud.region())
            .field("launch_rate", &self.launch_rate())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine for `cloud`'s account and region. Launches are paced by `launch_rate`
    /// (None: not paced); StartInstances, CreateTags, TerminateInstances and the other
    /// mutating calls by fixed limiters sized to AWS's own request buckets for them (5
    /// refilling 2/s, 100 refilling 10/s, 100 refilling 5/s, and 50 refilling 5/s).
    pub fn new(
        cloud: Arc<dyn Cloud>,
        launch_rate: Option<RateSettings>,
        memory: Arc<LaunchNotes>,
    ) -> Arc<Engine> {
        Arc::new(Engine {
            cloud,
            launch: ArcSwapOption::from(launch_rate.map(Limiter::new)),
            start: limiter::fixed(2, 5),
            tag: limiter::fixed(TAG_PER_SECOND, TAG_BURST),
            terminate: limiter::fixed(TERMINATE_PER_SECOND, TERMINATE_BURST),
            mutate: limiter::fixed(MUTATE_PER_SECOND, MUTATE_BURST),
            memory,
            sold_out: SoldOut::default(),
            metrics: ArcSwapOption::empty(),
        })
    }

    /// About how long `calls` CreateTags take at AWS's pace for them, from a full bucket.
    pub(crate) fn tag_eta(&self, calls: usize) -> Duration {
        let past_burst = calls.saturating_sub(TAG_BURST as usize) as u32;
        Duration::from_secs(1) * past_burst / TAG_PER_SECOND
    }

    /// How long a sold-out (instance type, zone) is avoided: [`capacity::SOLD_OUT_TTL`]
    /// unless set.
    pub fn sold_out_ttl(&self) -> Duration {
        self.sold_out.ttl()
    }

    /// Changes how long a sold-out (instance type, zone) is avoided, for marks made
    /// from now on.
    pub fn set_sold_out_ttl(&self, ttl: Duration) {
        self.sold_out.set_ttl(ttl);
    }

    /// The cloud every run calls.
    pub fn cloud(&self) -> &Arc<dyn Cloud> {
        &self.cloud
    }

    /// The launch pacing runs start with; None when launches are not paced.
    pub fn launch_rate(&self) -> Option<RateSettings> {
        self.launch.load().as_ref().map(|l| l.settings())
    }

    /// Changes the launch pacing for runs started from now on (runs in flight keep
    /// theirs). Nothing changes when the settings are the same, so the limiter's state
    /// (tokens spent, adaptive slow-down) carries over.
    pub fn set_launch_rate(&self, settings: Option<RateSettings>) {
        if self.launch_rate() != settings {
            self.launch.store(settings.map(Limiter::new));
            self.report_launch_rate();
        }
    }

    /// Counts what this engine's runs do in `metrics` from now on (and its launch
    /// rate, which it sets at once).
    pub fn set_metrics(&self, metrics: Arc<Metrics>) {
        self.metrics.store(Some(metrics));
        self.report_launch_rate();
    }

    /// Where runs count what they do; None when the process serves no metrics.
    pub fn metrics(&self) -> Option<Arc<Metrics>> {
        self.metrics.load_full()
    }

    /// Sets the launch rate gauge of the engine's region to the limiter's rate.
    pub(crate) fn report_launch_rate(&self) {
        if let (Some(m), Some(l)) = (self.metrics(), self.launch_limiter()) {
            m.launch_rate(self.cloud.region(), l.rate_per_minute());
        }
    }

    pub(crate) fn launch_limiter(&self) -> Option<Arc<Limiter>> {
        self.launch.load_full()
    }
}

/// Tags the fleet's instances that no manifest manages yet (`plan.adopt`) as
/// `manifest`'s (tag `prism:owner`), and those a stopped run left without their own
/// tags (`plan.unnamed`) with them; nothing else about them changes. A failed tag is
/// only logged: the next run tags it again.
pub async fn adopt(cloud: &dyn Cloud, plan: &Plan, manifest: &Manifest) {
    let owner = manifest.owner();
    for id in &plan.adopt {
        let tagged = crate::retry::call(&manifest.retry, || {
            cloud.tag_instance(id, crate::cloud::tags::OWNER, &owner)
        })
        .await;
        if let Err(e) = tagged {
            tracing::warn!(instance = %id, error = %e, "could not mark the instance as managed by {owner}");
        }
    }
    name(cloud, plan, manifest).await;
}

/// Writes the own tags of the instances a stopped run launched in a batch and did not
/// tag (`plan.unnamed`), retried as any call. A failed tag is only logged: the
/// instance is known by its launch, and the next run tries again.
async fn name(cloud: &dyn Cloud, plan: &Plan, manifest: &Manifest) {
    use crate::cloud::tags;
    if plan.unnamed.is_empty() {
        return;
    }
    // Each instance's volumes get its tags in the same call.
    let volumes = crate::retry::call(&manifest.retry, || cloud.describe_volumes(None))
        .await
        .map(crate::cloud::volumes_by_instance)
        .unwrap_or_default();
    for u in &plan.unnamed {
        let mut own = std::collections::BTreeMap::from([
            (tags::WORKSPACE.to_string(), u.workspace.clone()),
            (tags::NAME.to_string(), u.workspace.clone()),
        ]);
        if let Some(m) = &u.member {
            own.insert(tags::MEMBER.to_string(), m.clone());
        }
        let mut ids = vec![u.instance_id.clone()];
        ids.extend(volumes.get(&u.instance_id).cloned().unwrap_or_default());
        let tagged = crate::retry::call(&manifest.retry, || cloud.tag_with(&ids, &own)).await;
        if let Err(e) = tagged {
            tracing::warn!(instance = %u.instance_id, error = %e, "could not tag the instance as {}", u.workspace);
        }
    }
}
