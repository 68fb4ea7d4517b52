//! An in-memory [`Cloud`] for unit tests: state you set, calls it counts.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{
    Cloud, CloudError, FileSystem, Image, Instance, InstanceFilter, InstanceState, LaunchSpec,
    QuotaRequest, QuotaValue, Snapshot, SnapshotFilter, Volume,
};

/// A cloud held in memory.
#[derive(Debug, Default)]
pub struct FakeCloud {
    pub region: String,
    pub instances: Mutex<Vec<Instance>>,
    pub vcpus: BTreeMap<String, u32>,
    /// Applied quota values by code; codes absent here answer with the default.
    pub applied: BTreeMap<String, f64>,
    /// Quota values applied while the test runs (a request approved), over `applied`.
    pub raised: Mutex<BTreeMap<String, f64>>,
    pub defaults: BTreeMap<String, f64>,
    pub images: BTreeMap<String, Vec<Image>>,
    /// EBS volumes.
    pub volumes: Vec<Volume>,
    /// Quota increase requests by id.
    pub requests: Mutex<BTreeMap<String, QuotaRequest>>,
    /// Availability zones of the region.
    pub zones: Vec<String>,
    /// Errors to answer, per API name, before answering normally.
    pub faults: Mutex<BTreeMap<&'static str, Vec<CloudError>>>,
    /// ClientToken → instance id, as AWS remembers them.
    pub tokens: Mutex<BTreeMap<String, String>>,
    /// Number of calls per API name.
    pub calls: Mutex<BTreeMap<&'static str, usize>>,
    /// Errors answered after the call took effect (a lost answer), per API name.
    pub lost: Mutex<BTreeMap<&'static str, Vec<CloudError>>>,
    /// (instance type, zone) pairs without capacity: RunInstances there answers
    /// InsufficientInstanceCapacity. A launch without a zone goes to the first zone.
    pub sold_out: Mutex<std::collections::BTreeSet<(String, String)>>,
    /// When each RunInstances call came (tokio's clock), with its workspace tag.
    pub launch_calls: Mutex<Vec<(tokio::time::Instant, String)>>,
    /// Faults drawn at random and AWS's token bucket, for RunInstances.
    pub weather: Mutex<Option<Weather>>,
    /// Snapshots taken, with how many more DescribeSnapshots each stays `pending` for.
    pub snapshots: Mutex<Vec<(Snapshot, usize)>>,
    /// How many DescribeSnapshots a new snapshot stays `pending` for.
    pub snapshot_looks: usize,
    /// Instance id → the snapshot its data volume was restored from.
    pub restored: Mutex<BTreeMap<String, String>>,
}

/// What RunInstances meets besides queued faults: throttles and lost answers drawn at
/// random, AWS's token bucket, and the time a call takes.
#[derive(Debug)]
pub struct Weather {
    pub rng: fastrand::Rng,
    /// Share of calls throttled at random.
    pub throttle: f64,
    /// Share of the calls not throttled whose answer is lost after they took effect.
    pub lost: f64,
    /// AWS's bucket: (size, refill per second); calls that find it empty are throttled.
    pub bucket: Option<(f64, f64)>,
    /// How long each call takes.
    pub latency: std::time::Duration,
    tokens: f64,
    at: Option<tokio::time::Instant>,
}

impl Weather {
    pub fn new(seed: u64) -> Self {
        Weather {
            rng: fastrand::Rng::with_seed(seed),
            throttle: 0.0,
            lost: 0.0,
            bucket: None,
            latency: std::time::Duration::ZERO,
            tokens: 0.0,
            at: None,
        }
    }

    /// Whether AWS's bucket, when there is one, has a token for a call now (taking it).
    fn take(&mut self) -> bool {
        let Some((size, refill)) = self.bucket else {
            return true;
        };
        let now = tokio::time::Instant::now();
        self.tokens = match self.at {
            None => size,
            Some(at) => (self.tokens + now.duration_since(at).as_secs_f64() * refill).min(size),
        };
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl FakeCloud {
    /// The images map of an account that owns one image, `id`, by the owner `self`.
    pub fn own_image(id: &str) -> BTreeMap<String, Vec<Image>> {
        BTreeMap::from([(
            "self".into(),
            vec![Image {
                id: id.into(),
                name: "base".into(),
                creation_date: None,
                root_device_name: None,
            }],
        )])
    }

    /// Counts the call, then answers the next fault queued for `api`, if any.
    fn count(&self, api: &'static str) -> Result<(), CloudError> {
        *self.calls.lock().unwrap().entry(api).or_default() += 1;
        let mut faults = self.faults.lock().unwrap();
        match faults.get_mut(api) {
            Some(queue) if !queue.is_empty() => Err(queue.remove(0)),
            _ => Ok(()),
        }
    }

    /// Queues `errors` to be answered by the next calls to `api`.
    pub fn fail_next(&self, api: &'static str, errors: Vec<CloudError>) {
        self.faults
            .lock()
            .unwrap()
            .entry(api)
            .or_default()
            .extend(errors);
    }

    /// Sets every instance of `ids` to `state`, or none when one is unknown (the
    /// error names it, as AWS's does).
    fn set_state(
        &self,
        api: &'static str,
        ids: &[String],
        state: InstanceState,
    ) -> Result<(), CloudError> {
        self.count(api)?;
        let mut all = self.instances.lock().unwrap();
        let unknown: Vec<&str> = ids
            .iter()
            .filter(|id| !all.iter().any(|i| &i.id == *id))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            return Err(CloudError::service(
                api,
                Some("InvalidInstanceID.NotFound"),
                format!("The instance IDs '{}' do not exist", unknown.join(", ")),
                Some(400),
            ));
        }
        for i in all.iter_mut().filter(|i| ids.contains(&i.id)) {
            i.state = state;
        }
        Ok(())
    }

    /// Applies quota `code` at `value` from now on, as an approved request does.
    pub fn raise_quota(&self, code: &str, value: f64) {
        self.raised.lock().unwrap().insert(code.into(), value);
    }

    /// The zone a launch of `spec` goes to (the first, when it names none); AWS's
    /// InsufficientInstanceCapacity when that zone is sold out for its type.
    fn zone_with_capacity(&self, spec: &LaunchSpec) -> Result<Option<String>, CloudError> {
        let zone = spec
            .availability_zone
            .clone()
            .or_else(|| self.zones.first().cloned());
        if let Some(z) = &zone
            && self
                .sold_out
                .lock()
                .unwrap()
                .contains(&(spec.instance_type.clone(), z.clone()))
        {
            return Err(CloudError::service(
                "RunInstances",
                Some("InsufficientInstanceCapacity"),
                format!(
                    "We currently do not have sufficient {} capacity in the Availability Zone you requested ({z}).",
                    spec.instance_type
                ),
                Some(500),
            ));
        }
        Ok(zone)
    }

    /// RunInstances of one instance.
    async fn run_one(&self, spec: &LaunchSpec) -> Result<Instance, CloudError> {
        self.launch_calls.lock().unwrap().push((
            tokio::time::Instant::now(),
            spec.tags
                .get(super::tags::WORKSPACE)
                .cloned()
                .unwrap_or_default(),
        ));
        self.count("RunInstances")?;
        let mut lost = false;
        let latency = self.weather.lock().unwrap().as_ref().map(|w| w.latency);
        if let Some(latency) = latency {
            tokio::time::sleep(latency).await;
            let mut weather = self.weather.lock().unwrap();
            let w = weather.as_mut().expect("weather");
            if !w.take() || w.rng.f64() < w.throttle {
                return Err(CloudError::service(
                    "RunInstances",
                    Some("RequestLimitExceeded"),
                    "Request limit exceeded.",
                    Some(503),
                ));
            }
            lost = w.rng.f64() < w.lost;
        }
        let mut tokens = self.tokens.lock().unwrap();
        let mut all = self.instances.lock().unwrap();
        if let Some(id) = tokens.get(&spec.client_token) {
            let known = all
                .iter()
                .find(|i| &i.id == id)
                .cloned()
                .expect("token's instance");
            if known.state == InstanceState::Terminated {
                return Err(CloudError::service(
                    "RunInstances",
                    Some("IdempotentInstanceTerminated"),
                    format!(
                        "The client token {} has already been used by an instance that was terminated.",
                        spec.client_token
                    ),
                    Some(400),
                ));
            }
            return if lost { Err(lost_answer()) } else { Ok(known) };
        }
        let zone = self.zone_with_capacity(spec)?;
        let instance = Instance {
            id: format!("i-{:08x}", all.len() + 1),
            instance_type: spec.instance_type.clone(),
            image_id: spec.image_id.clone(),
            state: InstanceState::Pending,
            availability_zone: zone,
            launch_time: Some(0),
            first_launch_time: Some(0),
            tags: spec.tags.clone(),
            lifecycle: None,
            hibernated: false,
            hibernation: spec.hibernation,
        };
        tokens.insert(spec.client_token.clone(), instance.id.clone());
        if let Some(snapshot) = &spec.from_snapshot {
            self.restored
                .lock()
                .unwrap()
                .insert(instance.id.clone(), snapshot.clone());
        }
        all.push(instance.clone());
        if lost {
            return Err(lost_answer());
        }
        if let Some(queue) = self.lost.lock().unwrap().get_mut("RunInstances")
            && !queue.is_empty()
        {
            return Err(queue.remove(0));
        }
        Ok(instance)
    }

    /// RunInstances of `count` instances, all or none: the workspace of each is placed
    /// from the batch's tags and its launch index, as the AWS client does. A repeated
    /// token answers with the same instances.
    fn run_many(&self, spec: &LaunchSpec, count: u32) -> Result<Vec<(u32, Instance)>, CloudError> {
        self.count("RunInstances")?;
        let mut tokens = self.tokens.lock().unwrap();
        let mut all = self.instances.lock().unwrap();
        if let Some(ids) = tokens.get(&spec.client_token) {
            let ids: Vec<&str> = ids.split(',').collect();
            return Ok(all
                .iter()
                .filter_map(|i| {
                    let n = ids.iter().position(|id| *id == i.id)?;
                    Some((n as u32, i.clone()))
                })
                .collect());
        }
        let zone = self.zone_with_capacity(spec)?;
        let mut launched = vec![];
        for n in 0..count {
            let mut tags = spec.tags.clone();
            super::batch_tags::place(&mut tags, i32::try_from(n).ok());
            let instance = Instance {
                id: format!("i-{:08x}", all.len() + 1),
                instance_type: spec.instance_type.clone(),
                image_id: spec.image_id.clone(),
                state: InstanceState::Pending,
                availability_zone: zone.clone(),
                launch_time: Some(0),
                first_launch_time: Some(0),
                tags,
                lifecycle: None,
                hibernated: false,
                hibernation: spec.hibernation,
            };
            all.push(instance.clone());
            launched.push((n, instance));
        }
        let ids: Vec<&str> = launched.iter().map(|(_, i)| i.id.as_str()).collect();
        tokens.insert(spec.client_token.clone(), ids.join(","));
        Ok(launched)
    }

    /// How many times `api` was called.
    pub fn calls_to(&self, api: &str) -> usize {
        self.calls.lock().unwrap().get(api).copied().unwrap_or(0)
    }

    fn quota(service: &str, code: &str, value: f64) -> QuotaValue {
        QuotaValue {
            service: service.into(),
            code: code.into(),
            name: code.into(),
            value,
            adjustable: true,
        }
    }
}

/// The answer of a call whose real answer was lost (it took effect).
fn lost_answer() -> CloudError {
    CloudError::service(
        "RunInstances",
        Some("InternalError"),
        "An internal error has occurred.",
        Some(500),
    )
}

fn matches(i: &Instance, f: &InstanceFilter) -> bool {
    f.tags.iter().all(|(k, v)| i.tag(k) == Some(v.as_str()))
        && f.tag_keys.iter().all(|k| i.tag(k).is_some())
        && (f.states.is_empty() || f.states.contains(&i.state))
        && (f.ids.is_empty() || f.ids.contains(&i.id))
}

#[async_trait]
impl Cloud for FakeCloud {
    fn region(&self) -> &str {
        &self.region
    }

    async fn describe_instances(&self, f: &InstanceFilter) -> Result<Vec<Instance>, CloudError> {
        self.count("DescribeInstances")?;
        let launched_with = f
            .client_token
            .as_ref()
            .map(|t| self.tokens.lock().unwrap().get(t).cloned());
        let mut all = self.instances.lock().unwrap();
        let seen = all
            .iter()
            .filter(|i| matches(i, f))
            .filter(|i| {
                launched_with
                    .as_ref()
                    .is_none_or(|id| id.as_ref() == Some(&i.id))
            })
            .cloned()
            .collect();
        // An instance seen pending has booted by the next look at the fleet (a lookup by
        // ClientToken is not one).
        if f.client_token.is_none() {
            for i in all.iter_mut().filter(|i| i.state == InstanceState::Pending) {
                i.state = InstanceState::Running;
            }
        }
        Ok(seen)
    }

    async fn instance_type_vcpus(
        &self,
        types: &[String],
    ) -> Result<BTreeMap<String, u32>, CloudError> {
        self.count("DescribeInstanceTypes")?;
        Ok(types
            .iter()
            .filter_map(|t| Some((t.clone(), *self.vcpus.get(t)?)))
            .collect())
    }

    async fn get_service_quota(
        &self,
        service: &str,
        code: &str,
    ) -> Result<Option<QuotaValue>, CloudError> {
        self.count("GetServiceQuota")?;
        let raised = self.raised.lock().unwrap().get(code).copied();
        Ok(raised
            .or_else(|| self.applied.get(code).copied())
            .map(|v| Self::quota(service, code, v)))
    }

    async fn get_default_service_quota(
        &self,
        service: &str,
        code: &str,
    ) -> Result<QuotaValue, CloudError> {
        self.count("GetAWSDefaultServiceQuota")?;
        self.defaults
            .get(code)
            .map(|v| Self::quota(service, code, *v))
            .ok_or_else(|| {
                CloudError::service(
                    "GetAWSDefaultServiceQuota",
                    Some("NoSuchResourceException"),
                    code,
                    Some(400),
                )
            })
    }

    async fn find_images(&self, owner: &str, name_pattern: &str) -> Result<Vec<Image>, CloudError> {
        self.count("DescribeImages")?;
        let prefix = name_pattern.trim_end_matches('*');
        Ok(self
            .images
            .get(owner)
            .map(|imgs| {
                imgs.iter()
                    .filter(|i| i.name.starts_with(prefix))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn describe_image(&self, id: &str) -> Result<Option<Image>, CloudError> {
        self.count("DescribeImages")?;
        Ok(self.images.values().flatten().find(|i| i.id == id).cloned())
    }

    async fn availability_zones(&self) -> Result<Vec<String>, CloudError> {
        self.count("DescribeAvailabilityZones")?;
        Ok(self.zones.clone())
    }

    async fn run_instances(
        &self,
        spec: &LaunchSpec,
        count: u32,
    ) -> Result<Vec<(u32, Instance)>, CloudError> {
        if count <= 1 {
            return self.run_one(spec).await.map(|i| vec![(0, i)]);
        }
        self.run_many(spec, count)
    }

    async fn tag_with(
        &self,
        ids: &[String],
        tags: &BTreeMap<String, String>,
    ) -> Result<(), CloudError> {
        let api = "CreateTags";
        self.count(api)?;
        let mut all = self.instances.lock().unwrap();
        let known = |id: &String| id.starts_with("vol-") || all.iter().any(|i| &i.id == id);
        if let Some(id) = ids.iter().find(|id| !known(id)) {
            return Err(CloudError::service(
                api,
                Some("InvalidInstanceID.NotFound"),
                format!("The instance ID '{id}' does not exist"),
                Some(400),
            ));
        }
        for i in all.iter_mut().filter(|i| ids.contains(&i.id)) {
            i.tags.extend(tags.clone());
        }
        Ok(())
    }

    async fn start_instances(&self, ids: &[String]) -> Result<(), CloudError> {
        self.set_state("StartInstances", ids, InstanceState::Running)
    }

    async fn stop_instances(&self, ids: &[String]) -> Result<(), CloudError> {
        self.set_state("StopInstances", ids, InstanceState::Stopped)
    }

    async fn modify_instance_type(&self, id: &str, instance_type: &str) -> Result<(), CloudError> {
        let api = "ModifyInstanceAttribute";
        self.count(api)?;
        let mut all = self.instances.lock().unwrap();
        let i = all.iter_mut().find(|i| i.id == id).ok_or_else(|| {
            CloudError::service(api, Some("InvalidInstanceID.NotFound"), id, Some(400))
        })?;
        if i.state != InstanceState::Stopped {
            return Err(CloudError::service(
                api,
                Some("IncorrectInstanceState"),
                format!("The instance '{id}' is not in the 'stopped' state."),
                Some(400),
            ));
        }
        if !self.vcpus.contains_key(instance_type) {
            return Err(CloudError::service(
                api,
                Some("InvalidParameterValue"),
                format!("Invalid value '{instance_type}' for instanceType."),
                Some(400),
            ));
        }
        i.instance_type = instance_type.to_string();
        Ok(())
    }

    async fn hibernate_instance(&self, id: &str) -> Result<(), CloudError> {
        self.set_state("StopInstances", &[id.to_string()], InstanceState::Stopped)
    }

    async fn terminate_instances(&self, ids: &[String]) -> Result<(), CloudError> {
        self.set_state("TerminateInstances", ids, InstanceState::Terminated)
    }

    async fn describe_volumes(&self, volume_type: Option<&str>) -> Result<Vec<Volume>, CloudError> {
        self.count("DescribeVolumes")?;
        Ok(self
            .volumes
            .iter()
            .filter(|v| volume_type.is_none_or(|t| v.volume_type == t))
            .cloned()
            .collect())
    }

    async fn snapshot_instance(
        &self,
        id: &str,
        _description: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<Vec<Snapshot>, CloudError> {
        self.count("CreateSnapshots")?;
        if !self.instances.lock().unwrap().iter().any(|i| i.id == id) {
            return Err(CloudError::service(
                "CreateSnapshots",
                Some("InvalidInstanceID.NotFound"),
                id,
                Some(400),
            ));
        }
        // Every instance has a root volume; a restored one has its data volume too.
        let mut volumes = vec![format!("vol-root-{id}")];
        if self.restored.lock().unwrap().contains_key(id) {
            volumes.push(format!("vol-data-{id}"));
        }
        let mut all = self.snapshots.lock().unwrap();
        let mut taken = Vec::new();
        for volume_id in volumes {
            let snapshot = Snapshot {
                id: format!("snap-{:08x}", all.len() + 1),
                volume_id,
                size_gib: 8,
                state: "pending".into(),
                progress: Some("0%".into()),
                started: Some(0),
                tags: tags.clone(),
            };
            all.push((snapshot.clone(), self.snapshot_looks));
            taken.push(snapshot);
        }
        Ok(taken)
    }

    async fn describe_snapshots(&self, f: &SnapshotFilter) -> Result<Vec<Snapshot>, CloudError> {
        self.count("DescribeSnapshots")?;
        let mut all = self.snapshots.lock().unwrap();
        Ok(all
            .iter_mut()
            .filter(|(s, _)| {
                f.tags.iter().all(|(k, v)| s.tag(k) == Some(v.as_str()))
                    && f.tag_keys.iter().all(|k| s.tag(k).is_some())
                    && (f.ids.is_empty() || f.ids.contains(&s.id))
            })
            .map(|(s, looks)| {
                if *looks == 0 {
                    s.state = "completed".into();
                    s.progress = Some("100%".into());
                } else {
                    *looks -= 1;
                }
                s.clone()
            })
            .collect())
    }

    async fn create_volume(
        &self,
        size_gib: u32,
        zone: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<Volume, CloudError> {
        self.count("CreateVolume")?;
        Ok(Volume {
            id: "vol-1".into(),
            size_gib: u64::from(size_gib),
            volume_type: "gp3".into(),
            state: "creating".into(),
            availability_zone: Some(zone.into()),
            attached_to: vec![],
            tags: tags.clone(),
        })
    }

    async fn delete_volume(&self, _id: &str) -> Result<(), CloudError> {
        self.count("DeleteVolume")
    }

    async fn list_file_systems(&self) -> Result<Vec<FileSystem>, CloudError> {
        self.count("DescribeFileSystems")?;
        Ok(vec![])
    }

    async fn create_file_system(&self, name: &str, token: &str) -> Result<FileSystem, CloudError> {
        self.count("CreateFileSystem")?;
        Ok(FileSystem {
            id: format!("fs-{token}"),
            name: Some(name.into()),
            size_bytes: 0,
            state: "creating".into(),
            mount_targets: 0,
        })
    }

    async fn delete_file_system(&self, _id: &str) -> Result<(), CloudError> {
        self.count("DeleteFileSystem")
    }

    async fn request_quota_increase(
        &self,
        service: &str,
        code: &str,
        desired: f64,
    ) -> Result<QuotaRequest, CloudError> {
        self.count("RequestServiceQuotaIncrease")?;
        let mut requests = self.requests.lock().unwrap();
        let request = QuotaRequest {
            id: format!("req-{}", requests.len() + 1),
            service: service.into(),
            code: code.into(),
            name: code.into(),
            desired_value: desired,
            status: "PENDING".into(),
            created: Some(0),
            last_updated: Some(0),
            case_id: None,
        };
        requests.insert(request.id.clone(), request.clone());
        Ok(request)
    }

    async fn get_quota_request(&self, id: &str) -> Result<QuotaRequest, CloudError> {
        self.count("GetRequestedServiceQuotaChange")?;
        self.requests
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| {
                CloudError::service(
                    "GetRequestedServiceQuotaChange",
                    Some("NoSuchResourceException"),
                    id,
                    Some(400),
                )
            })
    }

    async fn list_quota_requests(
        &self,
        service: &str,
        status: Option<&str>,
    ) -> Result<Vec<QuotaRequest>, CloudError> {
        self.count("ListRequestedServiceQuotaChangeHistory")?;
        Ok(self
            .requests
            .lock()
            .unwrap()
            .values()
            .filter(|r| r.service == service && status.is_none_or(|s| r.status == s))
            .cloned()
            .collect())
    }
}
