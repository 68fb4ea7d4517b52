//! Observed state: what the cloud holds that a plan needs, read in a fixed number of
//! calls whatever the fleet's size.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::cloud::{Cloud, CloudError, Instance, InstanceFilter, InstanceState, tags};
use crate::manifest::{ImageRef, Manifest, RetryPolicy};
use crate::quota;
use crate::retry;

pub use crate::quota::{QuotaReading, read_quota};

/// Everything the planner knows about the live account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    pub region: String,
    /// The fleet's instances (by its `prism:fleet` tag) that are not terminated.
    pub instances: Vec<Instance>,
    /// Pending and running On-Demand instances of the whole region by type: quotas
    /// count them all, not only the fleet's.
    pub account_running: BTreeMap<String, u32>,
    /// Default vCPUs per instance type, for the types involved.
    pub vcpus: BTreeMap<String, u32>,
    /// Quota readings by quota code, for the classes the plan touches.
    pub quotas: BTreeMap<String, QuotaReading>,
    /// The image new workspaces launch from.
    pub image: ImageResolution,
    /// Other fleets' launches noted on this machine in the last minutes that AWS does
    /// not show yet (its lag): counted in `account_running`, so that two fleets applied
    /// at once do not both plan on the same room.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_flight: Vec<crate::engine::launch_notes::Launched>,
}

/// The resolved image of the template.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ImageResolution {
    /// Not looked up (nothing to launch from it).
    #[default]
    Unresolved,
    /// A fixed AMI id, or the newest match of a lookup, with its root device name.
    Resolved {
        id: String,
        root_device: Option<String>,
    },
    /// The image does not exist: a fixed id this region does not have, or a lookup
    /// that matched nothing.
    Missing { reason: String },
    /// The image could not be looked up (AWS answered with an error).
    Failed { reason: String },
}

impl ImageResolution {
    /// The image id, when resolved.
    pub fn id(&self) -> Option<&str> {
        match self {
            ImageResolution::Resolved { id, .. } => Some(id),
            _ => None,
        }
    }
}

/// Reads the live state relevant to `manifest`.
///
/// Calls made: two DescribeInstances series (the fleet by tag; the region's pending and
/// running instances, for quota usage), one DescribeInstanceTypes for the types seen,
/// one or two Service Quotas calls per quota class touched, and one DescribeImages for
/// the template's image.
///
/// Fails with InvalidInstanceType when the region does not offer the template's
/// instance type, so that neither a plan nor an apply goes ahead with it.
pub async fn observe(cloud: &dyn Cloud, manifest: &Manifest) -> Result<Observed, CloudError> {
    observe_with(cloud, manifest, &[]).await
}

/// [`observe`], counting the `recent` launches of other fleets (the machine's launch
/// notes) that AWS does not show yet: one more DescribeInstances when there are any.
pub async fn observe_with(
    cloud: &dyn Cloud,
    manifest: &Manifest,
    recent: &[crate::engine::launch_notes::Launched],
) -> Result<Observed, CloudError> {
    let fleet_filter = InstanceFilter {
        tag_keys: vec![],
        tags: vec![(tags::FLEET.to_string(), manifest.name.clone())],
        states: InstanceState::ALL
            .into_iter()
            .filter(|s| *s != InstanceState::Terminated)
            .collect(),
        ..Default::default()
    };
    let running_filter = InstanceFilter {
        tag_keys: vec![],
        tags: vec![],
        states: vec![InstanceState::Pending, InstanceState::Running],
        ..Default::default()
    };
    let policy = &manifest.retry;
    let (instances, running) = tokio::try_join!(
        retry::call(policy, || cloud.describe_instances(&fleet_filter)),
        retry::call(policy, || cloud.describe_instances(&running_filter)),
    )?;

    let mut account_running: BTreeMap<String, u32> = BTreeMap::new();
    // On-Demand quotas count On-Demand instances; Spot has quotas of its own.
    let on_demand = |i: &&Instance| {
        quota::class_of(&i.instance_type, i.lifecycle.as_deref())
            .is_some_and(|c| quota::ON_DEMAND.contains(c))
    };
    for i in running.iter().filter(on_demand) {
        *account_running.entry(i.instance_type.clone()).or_default() += 1;
    }
    let candidates: Vec<String> = recent
        .iter()
        .filter(|l| l.fleet != manifest.name && !running.iter().any(|i| i.id == l.instance_id))
        .map(|l| l.instance_id.clone())
        .collect();
    let in_flight: Vec<crate::engine::launch_notes::Launched> = if candidates.is_empty() {
        vec![]
    } else {
        // Shown in any state (stopped, terminated) is not in flight.
        let shown_filter = InstanceFilter {
            ids: candidates.clone(),
            ..Default::default()
        };
        let shown = retry::call(policy, || cloud.describe_instances(&shown_filter)).await?;
        recent
            .iter()
            .filter(|l| candidates.contains(&l.instance_id))
            .filter(|l| !shown.iter().any(|i| i.id == l.instance_id))
            .cloned()
            .collect()
    };
    for l in &in_flight {
        if quota::class_of(&l.instance_type, None).is_some_and(|c| quota::ON_DEMAND.contains(c)) {
            *account_running.entry(l.instance_type.clone()).or_default() += 1;
        }
    }
    let fallbacks = &manifest.template.fallback_instance_types;
    let types: BTreeSet<String> = std::iter::once(manifest.template.instance_type.clone())
        .chain(fallbacks.iter().cloned())
        .chain(instances.iter().map(|i| i.instance_type.clone()))
        .chain(account_running.keys().cloned())
        .collect();
    let types: Vec<String> = types.into_iter().collect();

    let classes: BTreeSet<&'static str> = std::iter::once(&manifest.template.instance_type)
        .chain(fallbacks)
        .chain(instances.iter().map(|i| &i.instance_type))
        .map(|t| quota::on_demand_class(t).code)
        .collect();
    let quota_reads = classes.iter().map(|code| async move {
        let class = quota::by_name(code).expect("known class");
        (
            class.code.to_string(),
            read_quota(cloud, class, policy).await,
        )
    });
    let (vcpus, quotas, image) = tokio::join!(
        retry::call(policy, || cloud.instance_type_vcpus(&types)),
        in_turn(quota_reads),
        resolve_image(cloud, &manifest.template.image, policy),
    );

    let vcpus = vcpus?;
    let instance_type = &manifest.template.instance_type;
    if !vcpus.contains_key(instance_type) {
        return Err(unknown_instance_type(instance_type, cloud.region()));
    }
    let observed = Observed {
        region: cloud.region().to_string(),
        instances,
        account_running,
        vcpus,
        quotas: quotas.into_iter().collect(),
        image,
        in_flight,
    };
    tracing::debug!(
        target: "prism::plan",
        fleet = %manifest.name,
        region = %observed.region,
        fleet_instances = observed.instances.len(),
        account_running = observed.account_running.len(),
        vcpus = ?observed.vcpus,
        quotas = ?observed.quotas,
        image = ?observed.image,
        "plan inputs"
    );
    Ok(observed)
}

/// The template's instance type is not one the region offers: nothing can be planned
/// for it (its vCPUs, so its quota, are unknown) and every launch of it would fail.
/// AWS's own code for this, from DescribeInstanceTypes, is InvalidInstanceType.
fn unknown_instance_type(instance_type: &str, region: &str) -> CloudError {
    CloudError::service(
        "DescribeInstanceTypes",
        Some("InvalidInstanceType"),
        format!(
            "the instance type {instance_type} is not offered in {region} (DescribeInstanceTypes does not list it)"
        ),
        None,
    )
}

/// Runs futures one after another; the handful of quota reads does not need more.
async fn in_turn<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    for f in futures {
        out.push(f.await);
    }
    out
}

async fn resolve_image(
    cloud: &dyn Cloud,
    image: &ImageRef,
    policy: &RetryPolicy,
) -> ImageResolution {
    match image {
        ImageRef::Id(id) => match retry::call(policy, || cloud.describe_image(id)).await {
            Ok(Some(i)) => ImageResolution::Resolved {
                id: i.id,
                root_device: i.root_device_name,
            },
            Ok(None) => ImageResolution::Missing {
                reason: format!("image {id} does not exist in this region (InvalidAMIID.NotFound)"),
            },
            Err(e) => ImageResolution::Failed {
                reason: e.to_string(),
            },
        },
        ImageRef::Lookup { owner, name } => {
            match retry::call(policy, || cloud.find_images(owner, name)).await {
                Ok(images) => images
                    .into_iter()
                    .max_by(|a, b| (&a.creation_date, &a.name).cmp(&(&b.creation_date, &b.name)))
                    .map_or_else(
                        || ImageResolution::Missing {
                            reason: format!(
                                "no image of owner {owner} matches `{name}` in this region"
                            ),
                        },
                        |i| ImageResolution::Resolved {
                            id: i.id,
                            root_device: i.root_device_name,
                        },
                    ),
                Err(e) => ImageResolution::Failed {
                    reason: e.to_string(),
                },
            }
        }
    }
}
