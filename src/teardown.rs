//! The end of a fleet (`prism destroy`): what goes, the snapshots kept of every
//! workspace's disks first, and the wait for them to complete.
//!
//! The snapshots are the students' work: a workspace is terminated only once every one
//! of its snapshots has completed. A destroy interrupted while they were being taken
//! finds them again on its rerun (tag `prism:instance`, taken the same day) instead of
//! taking them twice.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};

use crate::cloud::{
    Cloud, CloudError, Instance, InstanceFilter, InstanceState, Snapshot, SnapshotFilter, Volume,
    tags,
};
use crate::manifest::RetryPolicy;
use crate::plan::cost;
use crate::plan::{Action, ActionKind};
use crate::retry;

/// One workspace that a destroy deletes, with its disks.
#[derive(Debug, Clone, PartialEq)]
pub struct Doomed {
    pub instance: Instance,
    /// The EBS volumes attached to it (deleted with it).
    pub volumes: Vec<Volume>,
}

impl Doomed {
    /// The workspace's name.
    pub fn workspace(&self) -> &str {
        self.instance.workspace().unwrap_or(&self.instance.id)
    }

    /// Its disks' size, GiB.
    pub fn disk_gib(&self) -> u64 {
        self.volumes.iter().map(|v| v.size_gib).sum()
    }

    /// What it costs per day now: compute while running, and its disks.
    pub fn daily_usd(&self) -> Option<f64> {
        let compute = if self.instance.state.uses_quota() {
            cost::hourly_usd(&self.instance.instance_type)? * 24.0
        } else {
            0.0
        };
        Some(compute + self.disk_gib() as f64 * cost::EBS_GIB_MONTH_USD / cost::MONTH_DAYS)
    }
}

/// Everything of one fleet that a destroy deletes.
#[derive(Debug, Clone, PartialEq)]
pub struct Teardown {
    pub fleet: String,
    /// In workspace-name order.
    pub doomed: Vec<Doomed>,
}

impl Teardown {
    /// Reads the fleet's live instances (made by hand too) and their volumes.
    pub async fn survey(cloud: &dyn Cloud, fleet: &str) -> Result<Teardown, CloudError> {
        let policy = RetryPolicy::default();
        let filter = InstanceFilter {
            tags: vec![(tags::FLEET.to_string(), fleet.to_string())],
            states: InstanceState::ALL
                .into_iter()
                .filter(|s| !s.is_gone())
                .collect(),
            ..Default::default()
        };
        let mut instances = retry::call(&policy, || cloud.describe_instances(&filter)).await?;
        instances.sort_by(|a, b| (a.workspace(), &a.id).cmp(&(b.workspace(), &b.id)));
        let volumes = if instances.is_empty() {
            vec![]
        } else {
            retry::call(&policy, || cloud.describe_volumes(None)).await?
        };
        let doomed = instances
            .into_iter()
            .map(|instance| Doomed {
                volumes: volumes
                    .iter()
                    .filter(|v| v.attached_to.contains(&instance.id))
                    .cloned()
                    .collect(),
                instance,
            })
            .collect();
        Ok(Teardown {
            fleet: fleet.to_string(),
            doomed,
        })
    }

    /// Its disks' size, GiB.
    pub fn disk_gib(&self) -> u64 {
        self.doomed.iter().map(Doomed::disk_gib).sum()
    }

    /// What the fleet costs per day now (None when a type has no price).
    pub fn daily_usd(&self) -> Option<f64> {
        self.doomed.iter().map(Doomed::daily_usd).sum()
    }

    /// The deletions, but of the instances in `keep`.
    pub fn actions(&self, keep: &BTreeSet<String>) -> Vec<Action> {
        self.doomed
            .iter()
            .filter(|d| !keep.contains(&d.instance.id))
            .map(|d| Action {
                action: ActionKind::Delete,
                workspace: d.workspace().to_string(),
                instance_id: Some(d.instance.id.clone()),
                instance_type: d.instance.instance_type.clone(),
                vcpus: None,
                reason: "the fleet is destroyed".into(),
                resize: None,
            })
            .collect()
    }
}

/// The tags of the snapshots of `d` taken on `day` (`YYYY-MM-DD`).
fn snapshot_tags(fleet: &str, d: &Doomed, day: &str) -> BTreeMap<String, String> {
    let mut t = BTreeMap::from([
        (tags::NAME.to_string(), format!("{} {day}", d.workspace())),
        (tags::FLEET.to_string(), fleet.to_string()),
        (tags::WORKSPACE.to_string(), d.workspace().to_string()),
        (tags::INSTANCE.to_string(), d.instance.id.clone()),
        (tags::TAKEN.to_string(), day.to_string()),
    ]);
    for key in [tags::MEMBER, tags::PROJECT, tags::TEMPLATE] {
        if let Some(v) = d.instance.tag(key) {
            t.insert(key.to_string(), v.to_string());
        }
    }
    t
}

/// How many workspaces are snapshotted at once.
const AT_ONCE: usize = 4;

/// Takes a snapshot of every disk of every workspace of `teardown` on `day`, or finds
/// those an interrupted destroy took that day. By instance id.
pub async fn take_snapshots(
    cloud: &dyn Cloud,
    teardown: &Teardown,
    day: &str,
) -> Result<BTreeMap<String, Vec<Snapshot>>, CloudError> {
    let policy = RetryPolicy::default();
    futures::stream::iter(&teardown.doomed)
        .map(|d| {
            let policy = &policy;
            async move {
                let taken = SnapshotFilter {
                    tags: vec![
                        (tags::INSTANCE.to_string(), d.instance.id.clone()),
                        (tags::TAKEN.to_string(), day.to_string()),
                    ],
                    ..Default::default()
                };
                let mut found = retry::call(policy, || cloud.describe_snapshots(&taken)).await?;
                found.retain(|s| s.state == "pending" || s.state == "completed");
                if found.is_empty() {
                    let tags = snapshot_tags(&teardown.fleet, d, day);
                    let description = format!(
                        "prism destroy of fleet {}: workspace {}",
                        teardown.fleet,
                        d.workspace()
                    );
                    // Not retried after a lost answer: the rerun finds what was taken.
                    found = cloud
                        .snapshot_instance(&d.instance.id, &description, &tags)
                        .await?;
                }
                Ok((d.instance.id.clone(), found))
            }
        })
        .buffer_unordered(AT_ONCE)
        .try_collect()
        .await
}

/// Looks at the snapshots `taken` (by instance) until each has completed or failed,
/// after 1 s, then twice as long each time up to `every`, updating them; `look` sees
/// each reading.
pub async fn wait_for(
    cloud: &dyn Cloud,
    taken: &mut BTreeMap<String, Vec<Snapshot>>,
    every: Duration,
    mut look: impl FnMut(&[Snapshot]),
) -> Result<(), CloudError> {
    let policy = RetryPolicy::default();
    let mut pause = Duration::from_secs(1).min(every);
    loop {
        let now: Vec<Snapshot> = taken.values().flatten().cloned().collect();
        look(&now);
        // Anything but a final state is looked at again (a CreateSnapshots answer may
        // leave the state out).
        let pending: Vec<String> = now
            .iter()
            .filter(|s| s.state != "completed" && s.state != "error")
            .map(|s| s.id.clone())
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(every);
        let filter = SnapshotFilter {
            ids: pending,
            ..Default::default()
        };
        let read = retry::call(&policy, || cloud.describe_snapshots(&filter)).await?;
        for s in taken.values_mut().flatten() {
            if let Some(r) = read.iter().find(|r| r.id == s.id) {
                *s = r.clone();
            }
        }
    }
}

/// The instances of `taken` whose snapshots did not all complete: they are kept.
pub fn unsafe_to_delete(taken: &BTreeMap<String, Vec<Snapshot>>) -> BTreeSet<String> {
    taken
        .iter()
        .filter(|(_, snaps)| snaps.is_empty() || snaps.iter().any(|s| s.state != "completed"))
        .map(|(id, _)| id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::fake::FakeCloud;

    fn instance(n: u32, state: InstanceState) -> Instance {
        Instance {
            id: format!("i-{n}"),
            instance_type: "t3.large".into(),
            image_id: "ami-1".into(),
            state,
            availability_zone: Some("us-west-2a".into()),
            launch_time: Some(0),
            first_launch_time: Some(0),
            tags: BTreeMap::from([
                (tags::FLEET.into(), "f".into()),
                (tags::WORKSPACE.into(), format!("f-{n:02}")),
                (tags::MEMBER.into(), format!("s{n}@uni.edu")),
            ]),
            lifecycle: None,
            hibernated: false,
            hibernation: false,
        }
    }

    fn cloud() -> FakeCloud {
        FakeCloud {
            instances: std::sync::Mutex::new(vec![
                instance(1, InstanceState::Running),
                instance(2, InstanceState::Stopped),
                instance(3, InstanceState::Terminated),
            ]),
            volumes: vec![Volume {
                id: "vol-1".into(),
                size_gib: 30,
                volume_type: "gp3".into(),
                state: "in-use".into(),
                availability_zone: Some("us-west-2a".into()),
                attached_to: vec!["i-1".into()],
                tags: BTreeMap::new(),
            }],
            snapshot_looks: 2,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_survey_counts_live_instances_their_disks_and_what_they_cost() {
        let c = cloud();
        let t = Teardown::survey(&c, "f").await.unwrap();
        let names: Vec<&str> = t.doomed.iter().map(Doomed::workspace).collect();
        assert_eq!(
            names,
            ["f-01", "f-02"],
            "a terminated instance is gone already"
        );
        assert_eq!(t.disk_gib(), 30);
        let per_day = t.daily_usd().unwrap();
        let expected = 0.0832 * 24.0 + 30.0 * 0.08 / 30.44;
        assert!((per_day - expected).abs() < 1e-9, "{per_day} vs {expected}");
    }

    #[tokio::test(start_paused = true)]
    async fn snapshots_are_tagged_waited_for_and_never_taken_twice_on_one_day() {
        let c = cloud();
        let t = Teardown::survey(&c, "f").await.unwrap();
        let taken = take_snapshots(&c, &t, "2027-05-14").await.unwrap();
        assert_eq!(c.calls_to("CreateSnapshots"), 2);
        let s = &taken["i-1"][0];
        assert_eq!(s.tag(tags::WORKSPACE), Some("f-01"));
        assert_eq!(s.tag(tags::MEMBER), Some("s1@uni.edu"));
        assert_eq!(s.tag(tags::FLEET), Some("f"));
        assert_eq!(s.tag(tags::TAKEN), Some("2027-05-14"));
        assert_eq!(unsafe_to_delete(&taken).len(), 2, "pending is not safe");

        let mut taken = taken;
        let mut readings = 0;
        wait_for(&c, &mut taken, Duration::from_secs(5), |_| readings += 1)
            .await
            .unwrap();
        assert!(taken.values().flatten().all(|s| s.state == "completed"));
        assert_eq!(readings, 4, "pending at the first three readings");

        // A rerun the same day finds them; the next day takes new ones.
        let again = take_snapshots(&c, &t, "2027-05-14").await.unwrap();
        assert_eq!(c.calls_to("CreateSnapshots"), 2);
        assert!(unsafe_to_delete(&again).is_empty());
        take_snapshots(&c, &t, "2027-05-15").await.unwrap();
        assert_eq!(c.calls_to("CreateSnapshots"), 4);
    }

    #[test]
    fn a_workspace_with_a_failed_snapshot_is_kept() {
        let snap = |state: &str| Snapshot {
            id: "snap-1".into(),
            volume_id: "vol-1".into(),
            size_gib: 8,
            state: state.into(),
            progress: None,
            started: None,
            tags: BTreeMap::new(),
        };
        let taken = BTreeMap::from([
            ("i-1".to_string(), vec![snap("completed"), snap("error")]),
            ("i-2".to_string(), vec![snap("completed")]),
        ]);
        assert_eq!(
            unsafe_to_delete(&taken),
            BTreeSet::from(["i-1".to_string()])
        );
    }
}
