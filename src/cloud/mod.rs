//! The one door to AWS: a narrow trait that speaks prism's own types.
//!
//! [`aws::AwsCloud`] is the only implementation that talks to AWS (or the local
//! emulator); [`fake::FakeCloud`] is an in-memory stand-in for unit tests.

pub mod aws;
pub mod catalogue;
mod error;
pub mod fake;
pub mod settings;

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use error::{CloudError, ErrorClass, Transport};

/// Tag keys prism writes on every instance it launches.
pub mod tags {
    pub const FLEET: &str = "prism:fleet";
    pub const WORKSPACE: &str = "prism:workspace";
    pub const PROJECT: &str = "prism:project";
    pub const TEMPLATE: &str = "prism:template";
    pub const NAME: &str = "Name";
    /// Who the workspace is for: the roster value (an e-mail, a login) or the
    /// `members:` entry. It keeps the workspace's name when the roster changes.
    pub const MEMBER: &str = "prism:member";
    /// `hand` on an instance made with `workspace create`, not by a manifest: never
    /// pruned by a manifest's apply.
    pub const MADE_BY: &str = "prism:made-by";
    /// When prism last asked for the instance to start (RFC 3339, UTC), written just
    /// before its StartInstances: a later start that does not match it was someone
    /// else's (see `plan::schedule`).
    pub const STARTED: &str = "prism:started";
    /// The manifest that manages the fleet (its file name): another manifest naming the
    /// same fleet changes nothing until the fleet is handed over (`prism fleet adopt`).
    pub const OWNER: &str = "prism:owner";
    /// On a snapshot: the instance whose volume it was taken of.
    pub const INSTANCE: &str = "prism:instance";
    /// On a snapshot: the day it was taken (`YYYY-MM-DD`, UTC).
    pub const TAKEN: &str = "prism:taken";
}

/// The workspaces one RunInstances of many instances launched, in tags every one of
/// them gets at launch: `prism:batch:0`, `prism:batch:1`, … hold the workspace names in
/// order, space-separated, whole names only, each value within AWS's 256 characters.
/// The instance with `AmiLaunchIndex` i is the i-th workspace's, so an instance whose
/// own tags (`prism:workspace`, `Name`) were not written yet is known from its launch.
pub mod batch_tags {
    use std::collections::BTreeMap;

    /// The prefix of the keys.
    pub const PREFIX: &str = "prism:batch:";
    /// AWS's longest tag value.
    pub const VALUE_MAX: usize = 256;

    /// The tags that list `members`, in order.
    pub fn encode(members: &[String]) -> Vec<(String, String)> {
        let mut values: Vec<String> = vec![];
        for m in members {
            match values.last_mut() {
                Some(v) if v.len() + 1 + m.len() <= VALUE_MAX => {
                    v.push(' ');
                    v.push_str(m);
                }
                _ => values.push(m.clone()),
            }
        }
        values
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("{PREFIX}{i}"), v))
            .collect()
    }

    /// The members listed in `tags`, in order; empty when there are none.
    pub fn decode(tags: &BTreeMap<String, String>) -> Vec<String> {
        let mut parts: Vec<(usize, &String)> = tags
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(PREFIX)?.parse().ok()?, v)))
            .collect();
        parts.sort();
        // A gap means a part is missing: no member can be placed for sure.
        if parts.iter().enumerate().any(|(i, (n, _))| i != *n) {
            return vec![];
        }
        parts
            .into_iter()
            .flat_map(|(_, v)| v.split(' '))
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Gives an instance launched in a batch, whose own workspace tag is not written
    /// yet, its workspace: the member at its launch index.
    pub fn place(tags: &mut BTreeMap<String, String>, launch_index: Option<i32>) {
        if tags.contains_key(super::tags::WORKSPACE) {
            return;
        }
        let Some(i) = launch_index.and_then(|i| usize::try_from(i).ok()) else {
            return;
        };
        if let Some(member) = decode(tags).into_iter().nth(i) {
            tags.insert(super::tags::WORKSPACE.to_string(), member);
        }
    }

    /// Whether an instance launched in a batch still lacks its own tags.
    pub fn untagged(tags: &BTreeMap<String, String>) -> bool {
        tags.contains_key(&format!("{PREFIX}0")) && !tags.contains_key(super::tags::NAME)
    }
}

/// The lifecycle state of an EC2 instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    Pending,
    Running,
    Stopping,
    Stopped,
    ShuttingDown,
    Terminated,
}

impl InstanceState {
    /// All states, for filters.
    pub const ALL: [InstanceState; 6] = [
        InstanceState::Pending,
        InstanceState::Running,
        InstanceState::Stopping,
        InstanceState::Stopped,
        InstanceState::ShuttingDown,
        InstanceState::Terminated,
    ];

    /// The name AWS uses.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
            InstanceState::ShuttingDown => "shutting-down",
            InstanceState::Terminated => "terminated",
        }
    }

    /// Parses the name AWS uses.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the instance counts against vCPU quotas.
    pub fn uses_quota(self) -> bool {
        matches!(self, InstanceState::Pending | InstanceState::Running)
    }

    /// Whether the instance is on its way out and can no longer serve a workspace.
    pub fn is_gone(self) -> bool {
        matches!(
            self,
            InstanceState::ShuttingDown | InstanceState::Terminated
        )
    }
}

impl std::fmt::Display for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An EC2 instance as prism sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub instance_type: String,
    pub image_id: String,
    pub state: InstanceState,
    pub availability_zone: Option<String>,
    /// Last start, seconds since the Unix epoch: EC2's `LaunchTime`, which every start
    /// resets.
    pub launch_time: Option<i64>,
    /// The original launch, seconds since the Unix epoch: when the instance's first
    /// volume or network interface was attached, which stops and starts leave alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_launch_time: Option<i64>,
    pub tags: BTreeMap<String, String>,
    /// `spot` or `scheduled`; None for On-Demand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<String>,
    /// Stopped by hibernation (memory saved to disk): AWS reports it as `stopped`, with
    /// the state reason `Client.UserInitiatedHibernate`.
    #[serde(default)]
    pub hibernated: bool,
    /// Launched with hibernation enabled.
    #[serde(default)]
    pub hibernation: bool,
}

impl Instance {
    /// The value of tag `key`.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }

    /// The workspace this instance serves, from its `prism:workspace` tag.
    pub fn workspace(&self) -> Option<&str> {
        self.tag(tags::WORKSPACE)
    }
}

/// Which instances to describe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceFilter {
    /// Tag key → value, all of which must match.
    pub tags: Vec<(String, String)>,
    /// Tag keys that must be present, whatever their value.
    pub tag_keys: Vec<String>,
    /// Accepted states; empty means any.
    pub states: Vec<InstanceState>,
    /// Only the instance launched with this ClientToken.
    pub client_token: Option<String>,
    /// Only these instances; empty means any.
    pub ids: Vec<String>,
}

/// A Service Quotas value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaValue {
    pub service: String,
    pub code: String,
    pub name: String,
    pub value: f64,
    /// Whether AWS takes increase requests for it.
    #[serde(default = "adjustable_default")]
    pub adjustable: bool,
}

fn adjustable_default() -> bool {
    true
}

/// A machine image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub id: String,
    pub name: String,
    /// ISO 8601, as AWS gives it; sorts chronologically.
    pub creation_date: Option<String>,
    /// Device name of the root volume, e.g. `/dev/sda1`.
    pub root_device_name: Option<String>,
}

/// An EBS volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub id: String,
    pub size_gib: u64,
    pub volume_type: String,
    pub state: String,
    pub availability_zone: Option<String>,
    /// Instance ids it is attached to.
    pub attached_to: Vec<String>,
    pub tags: BTreeMap<String, String>,
}

/// Volume ids by the instance they are attached to.
pub fn volumes_by_instance(volumes: Vec<Volume>) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for v in volumes {
        for i in &v.attached_to {
            out.entry(i.clone()).or_default().push(v.id.clone());
        }
    }
    out
}

/// An EFS file system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSystem {
    pub id: String,
    pub name: Option<String>,
    pub size_bytes: u64,
    pub state: String,
    pub mount_targets: u32,
}

/// An EBS snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: String,
    /// The volume it was taken of (which may no longer exist).
    pub volume_id: String,
    pub size_gib: u64,
    /// `pending`, `completed`, `error`, `recoverable` or `recovering`.
    pub state: String,
    /// How far AWS has got, e.g. `45%`.
    pub progress: Option<String>,
    /// When it was taken, seconds since the Unix epoch.
    pub started: Option<i64>,
    pub tags: BTreeMap<String, String>,
}

impl Snapshot {
    /// The value of tag `key`.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }
}

/// Which of the account's own snapshots to describe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotFilter {
    /// Tag key → value, all of which must match.
    pub tags: Vec<(String, String)>,
    /// Tag keys that must be present, whatever their value.
    pub tag_keys: Vec<String>,
    /// Only these snapshots; empty means any.
    pub ids: Vec<String>,
}

/// A Service Quotas increase request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaRequest {
    pub id: String,
    pub service: String,
    pub code: String,
    pub name: String,
    pub desired_value: f64,
    /// PENDING, CASE_OPENED, APPROVED, DENIED, CASE_CLOSED, NOT_APPROVED, INVALID_REQUEST.
    pub status: String,
    /// Seconds since the Unix epoch.
    pub created: Option<i64>,
    pub last_updated: Option<i64>,
    pub case_id: Option<String>,
}

/// Everything needed to launch one workspace's instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LaunchSpec {
    /// Idempotency token: the same token returns the same instance.
    pub client_token: String,
    pub image_id: String,
    pub instance_type: String,
    /// None lets AWS choose the zone.
    pub availability_zone: Option<String>,
    /// Tags applied at launch, so no instance is ever untagged.
    pub tags: BTreeMap<String, String>,
    /// The first-boot script, as text.
    pub user_data: Option<String>,
    /// Root volume size, with the image's root device name.
    pub root_volume: Option<(String, u32)>,
    pub hibernation: bool,
    /// A snapshot to restore as a second disk (a data volume at [`RESTORED_DEVICE`]),
    /// deleted with the instance as its root volume is.
    pub from_snapshot: Option<String>,
}

/// The device a restored snapshot is attached at.
pub const RESTORED_DEVICE: &str = "/dev/sdf";

/// The AWS account calls act in: its id, and the profile that reached it when one was
/// named (`--profile`, the manifest's `account`, `AWS_PROFILE`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

impl std::fmt::Display for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.profile {
            Some(p) => write!(f, "{} (profile {p})", self.id),
            None => f.write_str(&self.id),
        }
    }
}

/// Everything prism asks of AWS. Each method is one AWS API (or one paginated series).
#[async_trait]
pub trait Cloud: Send + Sync {
    /// The region every call goes to.
    fn region(&self) -> &str;

    /// The account every call acts in (STS GetCallerIdentity, asked once); None when
    /// it cannot be told (no answer, or a cloud that has no accounts).
    async fn account(&self) -> Option<Account> {
        None
    }

    /// DescribeInstances, all pages.
    async fn describe_instances(
        &self,
        filter: &InstanceFilter,
    ) -> Result<Vec<Instance>, CloudError>;

    /// DescribeInstanceTypes: default vCPUs of each type AWS offers among `types`.
    /// Types AWS does not know are absent from the answer.
    async fn instance_type_vcpus(
        &self,
        types: &[String],
    ) -> Result<BTreeMap<String, u32>, CloudError>;

    /// GetServiceQuota: the applied value, or None when the quota was never changed
    /// from its default (AWS answers NoSuchResourceException then).
    async fn get_service_quota(
        &self,
        service: &str,
        code: &str,
    ) -> Result<Option<QuotaValue>, CloudError>;

    /// GetAWSDefaultServiceQuota.
    async fn get_default_service_quota(
        &self,
        service: &str,
        code: &str,
    ) -> Result<QuotaValue, CloudError>;

    /// DescribeImages: the images of `owner` whose name matches `name_pattern`.
    async fn find_images(&self, owner: &str, name_pattern: &str) -> Result<Vec<Image>, CloudError>;

    /// DescribeImages for one id; None when it does not exist.
    async fn describe_image(&self, id: &str) -> Result<Option<Image>, CloudError>;

    /// DescribeAvailabilityZones: the region's available zones, sorted.
    async fn availability_zones(&self) -> Result<Vec<String>, CloudError>;

    /// RunInstances for up to `count` instances of `spec` (`MinCount` 1, `MaxCount`
    /// `count`): AWS may launch fewer when a zone is short of capacity. Each comes
    /// with its `AmiLaunchIndex`.
    async fn run_instances(
        &self,
        spec: &LaunchSpec,
        count: u32,
    ) -> Result<Vec<(u32, Instance)>, CloudError>;

    /// RunInstances for one instance.
    async fn run_instance(&self, spec: &LaunchSpec) -> Result<Instance, CloudError> {
        self.run_instances(spec, 1)
            .await?
            .into_iter()
            .next()
            .map(|(_, i)| i)
            .ok_or_else(|| {
                CloudError::service(
                    "RunInstances",
                    None,
                    "AWS answered without an instance",
                    None,
                )
            })
    }

    /// CreateTags: sets every tag of `tags` on every resource of `ids` (instances,
    /// volumes), in one call.
    async fn tag_with(
        &self,
        ids: &[String],
        tags: &BTreeMap<String, String>,
    ) -> Result<(), CloudError>;

    /// StartInstances for `ids`, in one call. AWS acts on all of them or, when it
    /// refuses one (an unknown id, a wrong state), on none; its message names those.
    async fn start_instances(&self, ids: &[String]) -> Result<(), CloudError>;

    /// StartInstances for one instance.
    async fn start_instance(&self, id: &str) -> Result<(), CloudError> {
        self.start_instances(&[id.to_string()]).await
    }

    /// CreateTags: sets tag `key` to `value` on every instance of `ids`, in one call.
    async fn tag_instances(
        &self,
        ids: &[String],
        key: &str,
        value: &str,
    ) -> Result<(), CloudError> {
        let tags = BTreeMap::from([(key.to_string(), value.to_string())]);
        self.tag_with(ids, &tags).await
    }

    /// CreateTags: sets tag `key` to `value` on instance `id`.
    async fn tag_instance(&self, id: &str, key: &str, value: &str) -> Result<(), CloudError> {
        self.tag_instances(&[id.to_string()], key, value).await
    }

    /// StopInstances for `ids`, in one call; all or none, as [`Cloud::start_instances`].
    async fn stop_instances(&self, ids: &[String]) -> Result<(), CloudError>;

    /// StopInstances for one instance.
    async fn stop_instance(&self, id: &str) -> Result<(), CloudError> {
        self.stop_instances(&[id.to_string()]).await
    }

    /// ModifyInstanceAttribute `InstanceType` of a stopped instance: the instance keeps
    /// its id and volumes. AWS refuses it (IncorrectInstanceState) unless stopped.
    async fn modify_instance_type(&self, id: &str, instance_type: &str) -> Result<(), CloudError>;

    /// StopInstances with Hibernate, for an instance launched with hibernation.
    async fn hibernate_instance(&self, id: &str) -> Result<(), CloudError>;

    /// TerminateInstances for `ids`, in one call; all or none, as
    /// [`Cloud::start_instances`].
    async fn terminate_instances(&self, ids: &[String]) -> Result<(), CloudError>;

    /// TerminateInstances for one instance.
    async fn terminate_instance(&self, id: &str) -> Result<(), CloudError> {
        self.terminate_instances(&[id.to_string()]).await
    }

    /// DescribeVolumes, all pages; `volume_type` filters when given.
    async fn describe_volumes(&self, volume_type: Option<&str>) -> Result<Vec<Volume>, CloudError>;

    /// CreateVolume (gp3), tagged at creation.
    async fn create_volume(
        &self,
        size_gib: u32,
        zone: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<Volume, CloudError>;

    /// DeleteVolume.
    async fn delete_volume(&self, id: &str) -> Result<(), CloudError>;

    /// CreateSnapshots: one snapshot of each EBS volume attached to instance `id`, all
    /// taken at the same moment, tagged at creation.
    async fn snapshot_instance(
        &self,
        id: &str,
        description: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<Vec<Snapshot>, CloudError>;

    /// DescribeSnapshots of the account's own snapshots, all pages.
    async fn describe_snapshots(
        &self,
        filter: &SnapshotFilter,
    ) -> Result<Vec<Snapshot>, CloudError>;

    /// DescribeFileSystems, all pages.
    async fn list_file_systems(&self) -> Result<Vec<FileSystem>, CloudError>;

    /// CreateFileSystem; `token` makes a repeated create return the same file system.
    async fn create_file_system(&self, name: &str, token: &str) -> Result<FileSystem, CloudError>;

    /// DeleteFileSystem.
    async fn delete_file_system(&self, id: &str) -> Result<(), CloudError>;

    /// RequestServiceQuotaIncrease.
    async fn request_quota_increase(
        &self,
        service: &str,
        code: &str,
        desired: f64,
    ) -> Result<QuotaRequest, CloudError>;

    /// GetRequestedServiceQuotaChange.
    async fn get_quota_request(&self, id: &str) -> Result<QuotaRequest, CloudError>;

    /// ListRequestedServiceQuotaChangeHistory for one service, all pages.
    async fn list_quota_requests(
        &self,
        service: &str,
        status: Option<&str>,
    ) -> Result<Vec<QuotaRequest>, CloudError>;
}
