//! The [`Cloud`] on the AWS SDK: the only file that imports `aws_sdk_*`, but for the
//! store's DynamoDB table (`crate::store::dynamo`).

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, HibernationOptionsRequest, InstanceSpecification,
    InstanceType, Placement, ResourceType, Tag, TagSpecification,
};
use base64::Engine;

use super::error::Transport;
use super::{
    Cloud, CloudError, FileSystem, Image, Instance, InstanceFilter, InstanceState, LaunchSpec,
    QuotaRequest, QuotaValue, RESTORED_DEVICE, Snapshot, SnapshotFilter, Volume,
};

pub use super::settings::Connection;
use super::settings::{SettingError, Source};

/// EC2 and Service Quotas clients for one region.
#[derive(Debug, Clone)]
pub struct AwsCloud {
    ec2: aws_sdk_ec2::Client,
    quotas: aws_sdk_servicequotas::Client,
    efs: aws_sdk_efs::Client,
    region: String,
    /// The endpoint URL calls go to, when it is not AWS's own.
    endpoint_url: Option<String>,
    /// Where every call is counted, when the process serves metrics.
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    /// The configuration the clients were made from: the store's client shares it.
    config: aws_config::SdkConfig,
    /// The profile the credentials come from, when one was named.
    profile: Option<String>,
    /// The account id, once STS has told it (clones share it).
    account: std::sync::Arc<tokio::sync::OnceCell<String>>,
}

/// An error before any call.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The configuration names no region.
    #[error("no AWS region is configured")]
    NoRegion,
    /// The AWS configuration gave a region prism will not use.
    #[error(transparent)]
    Setting(#[from] SettingError),
}

impl AwsCloud {
    /// Loads the AWS configuration. The SDK's own retries are off: prism classifies
    /// and retries errors itself, so that throttling reaches its rate limiter.
    /// `conn` is checked ([`Connection::resolve`]); the region the AWS configuration
    /// supplies is checked here.
    pub async fn connect(conn: &Connection) -> Result<Self, ConnectError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(30))
                    .operation_timeout(Duration::from_secs(60))
                    .build(),
            );
        if let Some(region) = &conn.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(profile) = &conn.profile {
            loader = loader.profile_name(profile);
            if conn.named_profile {
                loader = loader.credentials_provider(named_profile(profile, conn).await);
            }
        }
        if let Some(url) = &conn.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let config = loader.load().await;
        let region = config.region().ok_or(ConnectError::NoRegion)?.to_string();
        if conn.region.is_none() {
            super::settings::region(&region, &Source::AwsConfig)?;
        }
        Ok(AwsCloud {
            ec2: aws_sdk_ec2::Client::from_conf(
                aws_sdk_ec2::config::Builder::from(&config)
                    .interceptor(RequestIds)
                    .build(),
            ),
            quotas: aws_sdk_servicequotas::Client::from_conf(
                aws_sdk_servicequotas::config::Builder::from(&config)
                    .interceptor(RequestIds)
                    .build(),
            ),
            efs: aws_sdk_efs::Client::from_conf(
                aws_sdk_efs::config::Builder::from(&config)
                    .interceptor(RequestIds)
                    .build(),
            ),
            region,
            endpoint_url: config.endpoint_url().map(str::to_string),
            metrics: None,
            config,
            profile: conn.profile.clone(),
            account: Default::default(),
        })
    }

    /// The AWS configuration (region, credentials, endpoint) the clients use.
    pub fn sdk_config(&self) -> &aws_config::SdkConfig {
        &self.config
    }

    /// The account the credentials are of (STS GetCallerIdentity, asked once).
    pub async fn account_id(&self) -> Result<String, String> {
        self.account
            .get_or_try_init(|| async {
                let sts = aws_sdk_sts::Client::new(&self.config);
                let who =
                    sts.get_caller_identity().send().await.map_err(|e| {
                        format!("STS GetCallerIdentity: {}", DisplayErrorContext(&e))
                    })?;
                who.account()
                    .map(str::to_string)
                    .ok_or_else(|| "STS GetCallerIdentity named no account".to_string())
            })
            .await
            .cloned()
    }

    /// The profile the credentials come from, when one was named.
    pub fn profile(&self) -> Option<&str> {
        self.profile.as_deref()
    }

    /// This client, counting every call in `metrics`.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }
}

/// The credentials of `profile` alone. The SDK's default chain reads the environment's
/// keys first, whatever the profile: a fleet named for another account would land in
/// the account of the exported keys.
async fn named_profile(
    profile: &str,
    conn: &Connection,
) -> aws_config::profile::ProfileFileCredentialsProvider {
    use aws_config::provider_config::ProviderConfig;
    let mut config = ProviderConfig::without_region();
    if let Some(region) = &conn.region {
        config = config.with_region(Some(Region::new(region.clone())));
    } else {
        config = config.load_default_region().await;
    }
    aws_config::profile::ProfileFileCredentialsProvider::builder()
        .configure(&config)
        .profile_name(profile)
        .build()
}

tokio::task_local! {
    /// The request id of the last answer AWS gave to the call in progress.
    static REQUEST_ID: std::cell::RefCell<Option<String>>;
}

/// Notes the request id of every answer (its `x-amzn-requestid` header) for the call in
/// progress, so that its log record names it: what AWS support asks for.
#[derive(Debug)]
struct RequestIds;

impl aws_sdk_ec2::config::Intercept for RequestIds {
    fn name(&self) -> &'static str {
        "RequestIds"
    }

    fn read_after_transmit(
        &self,
        context: &aws_sdk_ec2::config::interceptors::BeforeDeserializationInterceptorContextRef<'_>,
        _: &aws_sdk_ec2::config::RuntimeComponents,
        _: &mut aws_sdk_ec2::config::ConfigBag,
    ) -> Result<(), aws_sdk_ec2::error::BoxError> {
        let headers = context.response().headers();
        let id = headers
            .get("x-amzn-requestid")
            .or_else(|| headers.get("x-amz-request-id"));
        if let Some(id) = id {
            let _ = REQUEST_ID.try_with(|r| *r.borrow_mut() = Some(id.to_string()));
        }
        Ok(())
    }
}

/// The readable head of an SDK error's text, without the debug dump that follows it.
fn short(detail: &str) -> String {
    let cut = [
        " (DispatchFailure",
        " (ServiceError",
        " (TimeoutError",
        " (ResponseError",
        " (ConstructionFailure",
        " to request `Request",
    ]
    .iter()
    .filter_map(|m| detail.find(m))
    .min()
    .unwrap_or(detail.len());
    detail[..cut].to_string()
}

/// The innermost cause of an error: the words of the failure itself, without the
/// wrappers (and without the request that an SDK error's Debug text carries).
fn innermost(err: &(dyn StdError + 'static)) -> String {
    let mut e = err;
    while let Some(s) = e.source() {
        e = s;
    }
    e.to_string()
}

/// Converts an SDK error, keeping the AWS code, message and HTTP status; failures
/// without an AWS answer get prism's own code (NoCredentials, EndpointUnreachable,
/// Timeout), naming `host`, the endpoint the call went to.
fn convert<E>(operation: &'static str, err: SdkError<E, HttpResponse>, host: &str) -> CloudError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let detail = DisplayErrorContext(&err).to_string();
    let transport = |t, code: &str, message| CloudError::transport(operation, t, code, message);
    if detail.contains("CredentialsNotLoaded") || detail.contains("no credentials") {
        return transport(Transport::Local, "NoCredentials", short(&detail));
    }
    match &err {
        // AWS names every error it answers with a code; a body in which the SDK finds
        // none came from something else (a proxy, an emulator's page).
        SdkError::ServiceError(ctx) if ctx.err().code().is_none() && has_body(ctx.raw()) => {
            not_aws(operation, ctx.raw(), host)
        }
        SdkError::ResponseError(ctx) if has_body(ctx.raw()) => not_aws(operation, ctx.raw(), host),
        SdkError::ServiceError(ctx) => {
            let e = ctx.err();
            let message = e.message().map_or_else(|| short(&detail), str::to_string);
            CloudError::service(
                operation,
                e.code(),
                message,
                Some(ctx.raw().status().as_u16()),
            )
        }
        SdkError::ResponseError(ctx) => CloudError::service(
            operation,
            None,
            short(&detail),
            Some(ctx.raw().status().as_u16()),
        ),
        SdkError::TimeoutError(_) => transport(Transport::Timeout, "Timeout", short(&detail)),
        SdkError::DispatchFailure(d) if d.is_timeout() => {
            transport(Transport::Timeout, "Timeout", short(&detail))
        }
        // A name that does not resolve says nothing about the region: the network, a
        // proxy or the endpoint is at fault (an unknown region is refused before calling).
        SdkError::DispatchFailure(_) if detail.contains("dns error") => transport(
            Transport::Connection,
            "EndpointUnreachable",
            format!("the name {host} does not resolve ({})", innermost(&err)),
        ),
        // Refused or reset connections are IO errors; a connection closed without an
        // answer is neither IO nor timeout. Both are worth another attempt.
        SdkError::DispatchFailure(d) if d.is_io() || d.is_other() => transport(
            Transport::Connection,
            "EndpointUnreachable",
            format!("{host}: {}", innermost(&err)),
        ),
        _ => transport(Transport::Local, "RequestFailed", short(&detail)),
    }
}

/// Whether `raw` has a body to show.
fn has_body(raw: &HttpResponse) -> bool {
    raw.body()
        .bytes()
        .is_some_and(|b| !b.trim_ascii().is_empty())
}

/// An answer that is not AWS's (a proxy's page, an emulator's): never retried.
fn not_aws(operation: &'static str, raw: &HttpResponse, host: &str) -> CloudError {
    let status = raw.status().as_u16();
    let body = raw
        .body()
        .bytes()
        .map(|b| {
            String::from_utf8_lossy(b)
                .trim()
                .chars()
                .take(120)
                .collect::<String>()
        })
        .unwrap_or_default();
    // The catalogue classes the code as permanent.
    CloudError::service(
        operation,
        Some("NotAnAwsAnswer"),
        format!("HTTP {status} from {host} with a body that is not AWS's: {body:?}"),
        Some(status),
    )
}

fn to_instance(i: &aws_sdk_ec2::types::Instance) -> Option<Instance> {
    let state = i
        .state()
        .and_then(|s| s.name())
        .and_then(|n| InstanceState::parse(n.as_str()))?;
    Some(Instance {
        id: i.instance_id()?.to_string(),
        instance_type: i
            .instance_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        image_id: i.image_id().unwrap_or_default().to_string(),
        state,
        availability_zone: i
            .placement()
            .and_then(|p| p.availability_zone())
            .map(str::to_string),
        launch_time: i.launch_time().map(|t| t.secs()),
        first_launch_time: first_attached(i),
        tags: {
            let mut tags = tag_map(i.tags());
            super::batch_tags::place(&mut tags, i.ami_launch_index());
            tags
        },
        lifecycle: i.instance_lifecycle().map(|l| l.as_str().to_string()),
        hibernated: state == InstanceState::Stopped
            && i.state_reason().and_then(|r| r.code()) == Some("Client.UserInitiatedHibernate"),
        hibernation: i
            .hibernation_options()
            .and_then(|h| h.configured())
            .unwrap_or(false),
    })
}

/// The original launch of `i`: its volumes and its primary network interface are
/// attached at launch and stay attached through stops and starts, so the earliest
/// attachment is the launch, whereas `LaunchTime` is reset by every start.
fn first_attached(i: &aws_sdk_ec2::types::Instance) -> Option<i64> {
    let volumes = i
        .block_device_mappings()
        .iter()
        .filter_map(|m| m.ebs()?.attach_time());
    let interfaces = i
        .network_interfaces()
        .iter()
        .filter_map(|n| n.attachment()?.attach_time());
    volumes.chain(interfaces).map(|t| t.secs()).min()
}

fn to_volume(v: &aws_sdk_ec2::types::Volume) -> Volume {
    Volume {
        id: v.volume_id().unwrap_or_default().to_string(),
        size_gib: size(v.size()),
        volume_type: v
            .volume_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        state: v
            .state()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        availability_zone: v.availability_zone().map(str::to_string),
        attached_to: v
            .attachments()
            .iter()
            .filter_map(|a| a.instance_id().map(str::to_string))
            .collect(),
        tags: tag_map(v.tags()),
    }
}

fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_string(),
                t.value().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

/// The [`Snapshot`] an SDK snapshot describes: a `Snapshot` (DescribeSnapshots) or a
/// `SnapshotInfo` (CreateSnapshots), which have the same fields and no trait in common.
macro_rules! to_snapshot {
    ($s:expr) => {{
        let s = $s;
        Snapshot {
            id: s.snapshot_id().unwrap_or_default().to_string(),
            volume_id: s.volume_id().unwrap_or_default().to_string(),
            size_gib: size(s.volume_size()),
            state: s
                .state()
                .map(|st| st.as_str())
                .unwrap_or_default()
                .to_string(),
            progress: s.progress().filter(|p| !p.is_empty()).map(str::to_string),
            started: s.start_time().map(|t| t.secs()),
            tags: tag_map(s.tags()),
        }
    }};
}

/// The [`FileSystem`] an SDK file system describes: a `FileSystemDescription`
/// (DescribeFileSystems) or a `CreateFileSystemOutput`, which have the same fields and
/// no trait in common.
macro_rules! to_file_system {
    ($f:expr) => {{
        let f = $f;
        FileSystem {
            id: f.file_system_id().to_string(),
            name: f.name().map(str::to_string),
            size_bytes: size(f.size_in_bytes().map(|s| s.value())),
            state: f.life_cycle_state().as_str().to_string(),
            mount_targets: u32::try_from(f.number_of_mount_targets()).unwrap_or(0),
        }
    }};
}

/// A size AWS gives as a signed number: 0 when missing or negative.
fn size<N: TryInto<u64>>(n: Option<N>) -> u64 {
    n.and_then(|n| n.try_into().ok()).unwrap_or(0)
}

fn to_request(r: &aws_sdk_servicequotas::types::RequestedServiceQuotaChange) -> QuotaRequest {
    QuotaRequest {
        id: r.id().unwrap_or_default().to_string(),
        service: r.service_code().unwrap_or_default().to_string(),
        code: r.quota_code().unwrap_or_default().to_string(),
        name: r.quota_name().unwrap_or_default().to_string(),
        desired_value: r.desired_value().unwrap_or_default(),
        status: r
            .status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        created: r.created().map(|t| t.secs()),
        last_updated: r.last_updated().map(|t| t.secs()),
        case_id: r.case_id().filter(|c| !c.is_empty()).map(str::to_string),
    }
}

/// Tags to apply to a resource at its creation.
fn tag_spec(kind: ResourceType, tags: &BTreeMap<String, String>) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(
            tags.iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect(),
        ))
        .build()
}

/// Filters for tags that must have a value, and tag keys that must be present.
fn tag_filters(tags: &[(String, String)], keys: &[String]) -> Vec<Filter> {
    let mut filters: Vec<Filter> = tags
        .iter()
        .map(|(k, v)| filter(&format!("tag:{k}"), [v.clone()]))
        .collect();
    if !keys.is_empty() {
        filters.push(filter("tag-key", keys.iter().cloned()));
    }
    filters
}

fn filter(name: &str, values: impl IntoIterator<Item = String>) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.into_iter().collect()))
        .build()
}

fn quota_value(q: &aws_sdk_servicequotas::types::ServiceQuota) -> QuotaValue {
    QuotaValue {
        service: q.service_code().unwrap_or_default().to_string(),
        code: q.quota_code().unwrap_or_default().to_string(),
        name: q.quota_name().unwrap_or_default().to_string(),
        value: q.value().unwrap_or_default(),
        adjustable: q.adjustable(),
    }
}

/// How the body of one AWS operation failed, before [`AwsCloud::call`] names the
/// operation in a [`CloudError`].
enum Failure<E> {
    /// The SDK's error.
    Sdk(SdkError<E, HttpResponse>),
    /// What prism finds itself (an answer without what was asked for, a request it
    /// cannot build): the code, message and HTTP status to report.
    Own {
        code: Option<&'static str>,
        message: String,
        status: Option<u16>,
    },
    /// The error of another operation the body made, reported as that operation's.
    Other(CloudError),
}

impl<E> Failure<E> {
    /// prism's own error, without a code or status.
    fn own(message: impl Into<String>) -> Self {
        Failure::Own {
            code: None,
            message: message.into(),
            status: None,
        }
    }
}

impl<E> From<SdkError<E, HttpResponse>> for Failure<E> {
    fn from(e: SdkError<E, HttpResponse>) -> Self {
        Failure::Sdk(e)
    }
}

impl<E> From<CloudError> for Failure<E> {
    fn from(e: CloudError) -> Self {
        Failure::Other(e)
    }
}

impl AwsCloud {
    /// Runs `body`, the whole of one AWS operation (every page, the reading of the
    /// answer), naming `operation` in its error; logs it at debug level with its
    /// outcome, duration and AWS request id (of its last answer): what a person
    /// debugging a launch needs (`-vv`, or `RUST_LOG=prism=debug`). Counts it in the
    /// metrics, when the process serves them.
    async fn call<T, E>(
        &self,
        operation: &'static str,
        body: impl Future<Output = Result<T, Failure<E>>>,
    ) -> Result<T, CloudError>
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        let start = std::time::Instant::now();
        let (result, request_id) = REQUEST_ID
            .scope(std::cell::RefCell::new(None), async {
                let result = body.await;
                (result, REQUEST_ID.with(|r| r.borrow_mut().take()))
            })
            .await;
        let result = result.map_err(|failure| match failure {
            Failure::Sdk(e) => convert(operation, e, &self.host(operation)),
            Failure::Own {
                code,
                message,
                status,
            } => CloudError::service(operation, code, message, status),
            Failure::Other(e) => e,
        });
        let took = start.elapsed();
        if let Some(m) = &self.metrics {
            let class = result.as_ref().err().map(|e| e.class);
            m.aws_call(&self.region, operation, class, took);
        }
        let ms = took.as_millis() as u64;
        let api = operation;
        let aws_request_id = request_id.as_deref().unwrap_or("-");
        match &result {
            Ok(_) => tracing::debug!(target: "prism::aws", api, ms, aws_request_id, "ok"),
            Err(e) => tracing::debug!(
                target: "prism::aws",
                api,
                ms,
                aws_request_id,
                code = e.code.as_deref().unwrap_or("-"),
                class = ?e.class,
                "failed: {}",
                e.message
            ),
        }
        result
    }

    /// The host a call of `operation` goes to: the custom endpoint's, else AWS's own.
    fn host(&self, operation: &str) -> String {
        if let Some(url) = &self.endpoint_url {
            return url::Url::parse(url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_else(|| url.clone());
        }
        let service = if operation.contains("Quota") {
            "servicequotas"
        } else if operation.contains("FileSystem") {
            "elasticfilesystem"
        } else {
            "ec2"
        };
        let domain = if self.region.starts_with("cn-") {
            "amazonaws.com.cn"
        } else {
            "amazonaws.com"
        };
        format!("{service}.{}.{domain}", self.region)
    }
}

#[async_trait]
impl Cloud for AwsCloud {
    fn region(&self) -> &str {
        &self.region
    }

    async fn account(&self) -> Option<super::Account> {
        match self.account_id().await {
            Ok(id) => Some(super::Account {
                id,
                profile: self.profile.clone(),
            }),
            Err(e) => {
                tracing::info!("cannot tell which AWS account this is: {e}");
                None
            }
        }
    }

    async fn describe_instances(&self, f: &InstanceFilter) -> Result<Vec<Instance>, CloudError> {
        self.call("DescribeInstances", async move {
            let mut filters = tag_filters(&f.tags, &f.tag_keys);
            if !f.states.is_empty() {
                filters.push(filter(
                    "instance-state-name",
                    f.states.iter().map(|s| s.as_str().to_string()),
                ));
            }
            if let Some(token) = &f.client_token {
                filters.push(filter("client-token", [token.clone()]));
            }
            // A filter rather than InstanceIds: an id AWS does not show (yet) is simply
            // absent instead of failing the call.
            if !f.ids.is_empty() {
                filters.push(filter("instance-id", f.ids.iter().cloned()));
            }
            let mut pages = self
                .ec2
                .describe_instances()
                .set_filters(Some(filters))
                .max_results(1000)
                .into_paginator()
                .send();
            let mut out = Vec::new();
            while let Some(page) = pages.next().await {
                let page = page?;
                for r in page.reservations() {
                    out.extend(r.instances().iter().filter_map(to_instance));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn instance_type_vcpus(
        &self,
        types: &[String],
    ) -> Result<BTreeMap<String, u32>, CloudError> {
        self.call("DescribeInstanceTypes", async move {
            let mut out = BTreeMap::new();
            // A filter rather than the InstanceTypes parameter: an unknown type is then
            // simply absent instead of failing the whole call.
            for chunk in types.chunks(100) {
                let mut pages = self
                    .ec2
                    .describe_instance_types()
                    .filters(filter("instance-type", chunk.iter().cloned()))
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page?;
                    for t in page.instance_types() {
                        let vcpus = t.v_cpu_info().and_then(|v| v.default_v_cpus());
                        if let (Some(name), Some(vcpus)) = (t.instance_type(), vcpus) {
                            out.insert(
                                name.as_str().to_string(),
                                u32::try_from(vcpus).unwrap_or(0),
                            );
                        }
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn get_service_quota(
        &self,
        service: &str,
        code: &str,
    ) -> Result<Option<QuotaValue>, CloudError> {
        self.call("GetServiceQuota", async move {
            let answer = self
                .quotas
                .get_service_quota()
                .service_code(service)
                .quota_code(code)
                .send()
                .await;
            match answer {
                Ok(out) => Ok(out.quota().map(quota_value)),
                Err(e) if e.code() == Some("NoSuchResourceException") => Ok(None),
                Err(e) => Err(Failure::Sdk(e)),
            }
        })
        .await
    }

    async fn get_default_service_quota(
        &self,
        service: &str,
        code: &str,
    ) -> Result<QuotaValue, CloudError> {
        self.call("GetAWSDefaultServiceQuota", async move {
            let out = self
                .quotas
                .get_aws_default_service_quota()
                .service_code(service)
                .quota_code(code)
                .send()
                .await?;
            out.quota()
                .map(quota_value)
                .ok_or_else(|| Failure::own(format!("no value for {service}/{code}")))
        })
        .await
    }

    async fn find_images(&self, owner: &str, name_pattern: &str) -> Result<Vec<Image>, CloudError> {
        self.call("DescribeImages", async move {
            let out = self
                .ec2
                .describe_images()
                .owners(owner)
                .filters(filter("name", [name_pattern.to_string()]))
                .send()
                .await?;
            Ok(out.images().iter().filter_map(to_image).collect())
        })
        .await
    }

    async fn describe_image(&self, id: &str) -> Result<Option<Image>, CloudError> {
        self.call("DescribeImages", async move {
            let answer = self.ec2.describe_images().image_ids(id).send().await;
            match answer {
                Ok(out) => Ok(out.images().iter().find_map(to_image)),
                Err(e) if e.code().is_some_and(|c| c.starts_with("InvalidAMIID")) => Ok(None),
                Err(e) => Err(Failure::Sdk(e)),
            }
        })
        .await
    }

    async fn availability_zones(&self) -> Result<Vec<String>, CloudError> {
        self.call("DescribeAvailabilityZones", async move {
            let out = self
                .ec2
                .describe_availability_zones()
                .filters(filter("state", ["available".to_string()]))
                .send()
                .await?;
            let mut zones: Vec<String> = out
                .availability_zones()
                .iter()
                .filter_map(|z| z.zone_name().map(str::to_string))
                .collect();
            zones.sort();
            Ok(zones)
        })
        .await
    }

    async fn run_instances(
        &self,
        spec: &LaunchSpec,
        count: u32,
    ) -> Result<Vec<(u32, Instance)>, CloudError> {
        let count = i32::try_from(count).unwrap_or(i32::MAX);
        self.call("RunInstances", async move {
            let mut req = self
                .ec2
                .run_instances()
                .client_token(&spec.client_token)
                .image_id(&spec.image_id)
                .instance_type(InstanceType::from(spec.instance_type.as_str()))
                .min_count(1)
                .max_count(count)
                .tag_specifications(tag_spec(ResourceType::Instance, &spec.tags))
                .tag_specifications(tag_spec(ResourceType::Volume, &spec.tags));
            if let Some(zone) = &spec.availability_zone {
                req = req.placement(Placement::builder().availability_zone(zone).build());
            }
            if let Some(script) = &spec.user_data {
                req = req.user_data(base64::engine::general_purpose::STANDARD.encode(script));
            }
            if let Some((device, gb)) = &spec.root_volume {
                let ebs = EbsBlockDevice::builder()
                    .volume_size(i32::try_from(*gb).unwrap_or(i32::MAX))
                    .volume_type(aws_sdk_ec2::types::VolumeType::Gp3)
                    .set_encrypted(spec.hibernation.then_some(true))
                    .delete_on_termination(true)
                    .build();
                req = req.block_device_mappings(
                    BlockDeviceMapping::builder()
                        .device_name(device)
                        .ebs(ebs)
                        .build(),
                );
            }
            if let Some(snapshot) = &spec.from_snapshot {
                // Sized as the snapshot; deleted with the instance, as its root is.
                let ebs = EbsBlockDevice::builder()
                    .snapshot_id(snapshot)
                    .volume_type(aws_sdk_ec2::types::VolumeType::Gp3)
                    .delete_on_termination(true)
                    .build();
                req = req.block_device_mappings(
                    BlockDeviceMapping::builder()
                        .device_name(RESTORED_DEVICE)
                        .ebs(ebs)
                        .build(),
                );
            }
            if spec.hibernation {
                req = req.hibernation_options(
                    HibernationOptionsRequest::builder()
                        .configured(true)
                        .build(),
                );
            }
            let out = req.send().await?;
            let launched: Vec<(u32, Instance)> = out
                .instances()
                .iter()
                .enumerate()
                .filter_map(|(n, i)| {
                    let index = i.ami_launch_index().and_then(|x| u32::try_from(x).ok());
                    Some((index.unwrap_or(n as u32), to_instance(i)?))
                })
                .collect();
            if launched.is_empty() {
                return Err(Failure::own("AWS answered without an instance"));
            }
            Ok(launched)
        })
        .await
    }

    async fn tag_with(
        &self,
        ids: &[String],
        tags: &BTreeMap<String, String>,
    ) -> Result<(), CloudError> {
        self.call("CreateTags", async move {
            self.ec2
                .create_tags()
                .set_resources(Some(ids.to_vec()))
                .set_tags(Some(
                    tags.iter()
                        .map(|(k, v)| Tag::builder().key(k).value(v).build())
                        .collect(),
                ))
                .send()
                .await?;
            Ok(())
        })
        .await
    }

    async fn start_instances(&self, ids: &[String]) -> Result<(), CloudError> {
        self.call("StartInstances", async move {
            self.ec2
                .start_instances()
                .set_instance_ids(Some(ids.to_vec()))
                .send()
                .await?;
            Ok(())
        })
        .await
    }

    async fn stop_instances(&self, ids: &[String]) -> Result<(), CloudError> {
        self.call("StopInstances", async move {
            self.ec2
                .stop_instances()
                .set_instance_ids(Some(ids.to_vec()))
                .send()
                .await?;
            Ok(())
        })
        .await
    }

    async fn modify_instance_type(&self, id: &str, instance_type: &str) -> Result<(), CloudError> {
        self.call("ModifyInstanceAttribute", async move {
            self.ec2
                .modify_instance_attribute()
                .instance_id(id)
                .instance_type(
                    aws_sdk_ec2::types::AttributeValue::builder()
                        .value(instance_type)
                        .build(),
                )
                .send()
                .await?;
            Ok(())
        })
        .await
    }

    async fn hibernate_instance(&self, id: &str) -> Result<(), CloudError> {
        self.call("StopInstances", async move {
            self.ec2
                .stop_instances()
                .instance_ids(id)
                .hibernate(true)
                .send()
                .await?;
            Ok(())
        })
        .await
    }

    async fn terminate_instances(&self, ids: &[String]) -> Result<(), CloudError> {
        self.call("TerminateInstances", async move {
            self.ec2
                .terminate_instances()
                .set_instance_ids(Some(ids.to_vec()))
                .send()
                .await?;
            Ok(())
        })
        .await
    }

    async fn describe_volumes(&self, volume_type: Option<&str>) -> Result<Vec<Volume>, CloudError> {
        self.call("DescribeVolumes", async move {
            let filters = volume_type.map(|t| vec![filter("volume-type", [t.to_string()])]);
            let mut pages = self
                .ec2
                .describe_volumes()
                .set_filters(filters)
                .into_paginator()
                .send();
            let mut out = Vec::new();
            while let Some(page) = pages.next().await {
                let page = page?;
                out.extend(page.volumes().iter().map(to_volume));
            }
            Ok(out)
        })
        .await
    }

    async fn snapshot_instance(
        &self,
        id: &str,
        description: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<Vec<Snapshot>, CloudError> {
        self.call("CreateSnapshots", async move {
            let out = self
                .ec2
                .create_snapshots()
                .instance_specification(InstanceSpecification::builder().instance_id(id).build())
                .description(description)
                .tag_specifications(tag_spec(ResourceType::Snapshot, tags))
                .send()
                .await?;
            Ok(out.snapshots().iter().map(|s| to_snapshot!(s)).collect())
        })
        .await
    }

    async fn describe_snapshots(&self, f: &SnapshotFilter) -> Result<Vec<Snapshot>, CloudError> {
        self.call("DescribeSnapshots", async move {
            let mut filters = tag_filters(&f.tags, &f.tag_keys);
            if !f.ids.is_empty() {
                filters.push(filter("snapshot-id", f.ids.iter().cloned()));
            }
            let mut pages = self
                .ec2
                .describe_snapshots()
                .owner_ids("self")
                .set_filters(Some(filters))
                .into_paginator()
                .send();
            let mut out = Vec::new();
            while let Some(page) = pages.next().await {
                let page = page?;
                out.extend(page.snapshots().iter().map(|s| to_snapshot!(s)));
            }
            Ok(out)
        })
        .await
    }

    async fn create_volume(
        &self,
        size_gib: u32,
        zone: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<Volume, CloudError> {
        self.call("CreateVolume", async move {
            let out = self
                .ec2
                .create_volume()
                .size(i32::try_from(size_gib).unwrap_or(i32::MAX))
                .availability_zone(zone)
                .volume_type(aws_sdk_ec2::types::VolumeType::Gp3)
                .tag_specifications(tag_spec(ResourceType::Volume, tags))
                .send()
                .await?;
            Ok(Volume {
                id: out.volume_id().unwrap_or_default().to_string(),
                size_gib: u64::from(size_gib),
                volume_type: "gp3".into(),
                state: out
                    .state()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
                availability_zone: Some(zone.to_string()),
                attached_to: vec![],
                tags: tags.clone(),
            })
        })
        .await
    }

    async fn delete_volume(&self, id: &str) -> Result<(), CloudError> {
        self.call("DeleteVolume", async move {
            self.ec2.delete_volume().volume_id(id).send().await?;
            Ok(())
        })
        .await
    }

    async fn list_file_systems(&self) -> Result<Vec<FileSystem>, CloudError> {
        self.call("DescribeFileSystems", async move {
            let mut pages = self.efs.describe_file_systems().into_paginator().send();
            let mut out = Vec::new();
            while let Some(page) = pages.next().await {
                let page = page?;
                out.extend(page.file_systems().iter().map(|f| to_file_system!(f)));
            }
            Ok(out)
        })
        .await
    }

    async fn create_file_system(&self, name: &str, token: &str) -> Result<FileSystem, CloudError> {
        self.call("CreateFileSystem", async move {
            let tag = aws_sdk_efs::types::Tag::builder()
                .key("Name")
                .value(name)
                .build()
                .map_err(|e| Failure::Own {
                    code: Some("InvalidParameterValue"),
                    message: e.to_string(),
                    status: None,
                })?;
            let out = self
                .efs
                .create_file_system()
                .creation_token(token)
                .encrypted(true)
                .tags(tag)
                .send()
                .await;
            match out {
                Ok(f) => {
                    let created = to_file_system!(&f);
                    Ok(FileSystem {
                        name: created.name.or_else(|| Some(name.to_string())),
                        ..created
                    })
                }
                // The token was used before: that file system is the one asked for.
                Err(e) if e.code() == Some("FileSystemAlreadyExists") => {
                    let existing = self.list_file_systems().await?;
                    existing
                        .into_iter()
                        .find(|f| f.name.as_deref() == Some(name))
                        .ok_or(Failure::Sdk(e))
                }
                Err(e) => Err(Failure::Sdk(e)),
            }
        })
        .await
    }

    async fn delete_file_system(&self, id: &str) -> Result<(), CloudError> {
        self.call("DeleteFileSystem", async move {
            self.efs
                .delete_file_system()
                .file_system_id(id)
                .send()
                .await?;
            Ok(())
        })
        .await
    }

    async fn request_quota_increase(
        &self,
        service: &str,
        code: &str,
        desired: f64,
    ) -> Result<QuotaRequest, CloudError> {
        self.call("RequestServiceQuotaIncrease", async move {
            let out = self
                .quotas
                .request_service_quota_increase()
                .service_code(service)
                .quota_code(code)
                .desired_value(desired)
                .send()
                .await?;
            out.requested_quota()
                .map(to_request)
                .ok_or_else(|| Failure::own("AWS answered without the request"))
        })
        .await
    }

    async fn get_quota_request(&self, id: &str) -> Result<QuotaRequest, CloudError> {
        self.call("GetRequestedServiceQuotaChange", async move {
            let out = self
                .quotas
                .get_requested_service_quota_change()
                .request_id(id)
                .send()
                .await;
            let missing = |status| Failure::Own {
                code: Some("NoSuchQuotaRequest"),
                message: format!("no quota increase request with the id `{id}`"),
                status,
            };
            let out = match out {
                Ok(out) => out,
                Err(e) if e.code() == Some("NoSuchResourceException") => {
                    return Err(missing(e.raw_response().map(|r| r.status().as_u16())));
                }
                Err(e) => return Err(Failure::Sdk(e)),
            };
            out.requested_quota()
                .map(to_request)
                .ok_or_else(|| missing(None))
        })
        .await
    }

    async fn list_quota_requests(
        &self,
        service: &str,
        status: Option<&str>,
    ) -> Result<Vec<QuotaRequest>, CloudError> {
        self.call("ListRequestedServiceQuotaChangeHistory", async move {
            let mut pages = self
                .quotas
                .list_requested_service_quota_change_history()
                .service_code(service)
                .set_status(status.map(aws_sdk_servicequotas::types::RequestStatus::from))
                .into_paginator()
                .send();
            let mut out = Vec::new();
            while let Some(page) = pages.next().await {
                let page = page?;
                out.extend(page.requested_quotas().iter().map(to_request));
            }
            Ok(out)
        })
        .await
    }
}

fn to_image(i: &aws_sdk_ec2::types::Image) -> Option<Image> {
    Some(Image {
        id: i.image_id()?.to_string(),
        name: i.name().unwrap_or_default().to_string(),
        creation_date: i.creation_date().map(str::to_string),
        root_device_name: i.root_device_name().map(str::to_string),
    })
}
