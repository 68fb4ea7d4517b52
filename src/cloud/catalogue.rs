//! The catalogue of errors: for every AWS error code prism can meet, what a failed call
//! calls for (its [`ErrorClass`]) and what to tell the user; and prism's own failure
//! codes, which are not AWS answers. One entry per code: classification and
//! explanation cannot drift apart. The user-facing rendering is in `crate::errors`.

use super::ErrorClass;

/// One catalogue entry. Texts may hold `{region}`, `{zone}`, `{instance_type}`,
/// `{limit}`, `{usage}`, `{quota}`, `{desired_value}`, `{operation}` and `{message}`
/// (AWS's own words).
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub codes: &'static [&'static str],
    /// What a failed call with one of these AWS codes calls for; None for prism's own
    /// codes (failures that are not AWS answers).
    pub class: Option<ErrorClass>,
    pub title: &'static str,
    pub what_happened: &'static str,
    pub what_prism_does: &'static str,
    pub what_you_can_do: &'static str,
}

const fn entry(
    codes: &'static [&'static str],
    class: Option<ErrorClass>,
    title: &'static str,
    what_happened: &'static str,
    what_prism_does: &'static str,
    what_you_can_do: &'static str,
) -> Entry {
    Entry {
        codes,
        class,
        title,
        what_happened,
        what_prism_does,
        what_you_can_do,
    }
}

/// Every known error, by AWS error code (or prism's code for failures without one).
pub const CATALOGUE: &[Entry] = &[
    entry(
        &["RequestLimitExceeded"],
        Some(ErrorClass::Throttle),
        "AWS API rate limit exceeded",
        "AWS refused the call because this account made too many {operation} requests in {region} in a short time.",
        "prism backs off, slows its launch rate (adaptive mode) and retries; workspaces keep launching at the pace AWS accepts.",
        "Nothing: this is normal for large fleets. To go faster there is nothing to set: with no `rate_limit` (or `rate_limit: auto`) prism keeps to AWS's own buckets and launches many workspaces per call. If it persists, other tools probably share the account's buckets: set a slower `rate_limit` in the manifest (for example `rate_per_minute: 30` with `burst_size: 2`).",
    ),
    entry(
        &[
            "Throttling",
            "ThrottlingException",
            "TooManyRequestsException",
            "RequestThrottled",
            "RequestThrottledException",
            "SlowDown",
            "ThrottledException",
            "EC2ThrottledException",
            "ProvisionedThroughputExceededException",
            "TransactionInProgressException",
            "BandwidthLimitExceeded",
            "LimitExceededException",
            "PriorRequestNotComplete",
        ],
        Some(ErrorClass::Throttle),
        "AWS is throttling requests",
        "AWS asked prism to slow down its {operation} requests in {region}.",
        "prism backs off and retries.",
        "Nothing, usually. If it persists, another tool may be using the same account's API budget heavily.",
    ),
    entry(
        &[
            "InsufficientInstanceCapacity",
            "InsufficientCapacity",
            "InsufficientHostCapacity",
            "InsufficientReservedInstanceCapacity",
        ],
        Some(ErrorClass::Capacity),
        "Insufficient capacity in {zone}",
        "AWS does not have enough {instance_type} capacity in {zone} right now: {message}",
        "prism remembers the sold-out type and zone for a few minutes, so that later launches avoid them, and launches in the region's other availability zones, then on the template's `fallback_instance_types`, each with its own ClientToken.",
        "Wait a few minutes and run `prism apply` again, or give the template (more) `fallback_instance_types`, for example `[m5.xlarge, m6i.xlarge]`, so that prism can launch another type when one is sold out.",
    ),
    entry(
        &["Unsupported"],
        Some(ErrorClass::Capacity),
        "Not offered in {zone}",
        "AWS does not offer {instance_type} (or this configuration of it) in {zone}: {message}",
        "prism remembers the type and zone as unavailable for a few minutes, so that later launches avoid them, and launches in the region's other availability zones, then on the template's `fallback_instance_types`, each with its own ClientToken.",
        "`aws ec2 describe-instance-type-offerings --location-type availability-zone --filters Name=instance-type,Values={instance_type} --region {region}` lists the zones that offer the type; list `fallback_instance_types` in the template, or choose a type offered in every zone.",
    ),
    entry(
        &["VcpuLimitExceeded"],
        Some(ErrorClass::Permanent),
        "AWS vCPU limit reached ({usage}/{limit} vCPUs used)",
        "The account's On-Demand vCPU quota for {instance_type}'s family in {region} is used up: {message}",
        "prism does not retry this launch; the other workspaces carry on.",
        "Stop or delete instances you no longer need, request a higher quota (`prism quota request --quota {quota} --desired-value {desired_value}`, usually 1-2 days), or use a smaller instance type. Service Quotas console: https://console.aws.amazon.com/servicequotas/home/services/ec2/quotas",
    ),
    entry(
        &["InvalidInstanceType"],
        Some(ErrorClass::Permanent),
        "Unknown instance type",
        "AWS does not offer this instance type in {region}: {message}",
        "prism stops before planning or launching anything; nothing was changed.",
        "Check the spelling of `instance_type` in the template; `aws ec2 describe-instance-type-offerings --region {region}` lists the types offered there.",
    ),
    entry(
        &["InstanceLimitExceeded"],
        Some(ErrorClass::Permanent),
        "Instance limit reached",
        "The account may not run more instances of this kind in {region}: {message}",
        "prism does not retry this launch; the other workspaces carry on.",
        "Request a higher limit with `prism quota request`, or stop instances you no longer need.",
    ),
    entry(
        &[
            "InvalidParameterValue",
            "InvalidParameterCombination",
            "InvalidParameter",
        ],
        Some(ErrorClass::Permanent),
        "AWS rejected a parameter",
        "AWS rejected the {operation} request: {message}",
        "prism does not retry; the other workspaces carry on.",
        "Check the template (instance type, root volume size, user data) against AWS's message, fix the manifest and run `prism apply` again.",
    ),
    entry(
        &["InvalidAMIID.NotFound"],
        Some(ErrorClass::Permanent),
        "Image not found",
        "The template's image does not exist in {region}, or this account may not use it: {message}",
        "prism does not launch from it; the other actions carry on.",
        "AMI ids differ per region: look up the image in {region} (or use an `{owner, name}` lookup) and fix `image` in the template.",
    ),
    entry(
        &["InvalidAMIID.Malformed"],
        Some(ErrorClass::Permanent),
        "Malformed image id",
        "The template's image id is not a valid AMI id: {message}",
        "prism does not launch from it.",
        "Write the id as `ami-` followed by 8 or 17 hexadecimal digits, or use an `{owner, name}` lookup.",
    ),
    entry(
        &[
            "UnauthorizedOperation",
            "AccessDenied",
            "AccessDeniedException",
        ],
        Some(ErrorClass::Permanent),
        "Not allowed",
        "The AWS identity in use may not call {operation} in {region}: {message}",
        "prism stops this action; nothing else is affected.",
        "Ask your AWS administrator for the permission (docs/plan.md lists what prism needs), or use another profile with --profile.",
    ),
    entry(
        &[
            "AuthFailure",
            "InvalidClientTokenId",
            "SignatureDoesNotMatch",
            "UnrecognizedClientException",
        ],
        Some(ErrorClass::Permanent),
        "AWS did not accept the credentials",
        "AWS rejected the credentials prism used: {message}",
        "prism stops; nothing was changed by this call.",
        "Check AWS_PROFILE / --profile, or create new access keys; the clock of this machine must also be right.",
    ),
    entry(
        &["ExpiredToken", "ExpiredTokenException", "RequestExpired"],
        Some(ErrorClass::Permanent),
        "AWS credentials expired",
        "The session credentials in use have expired.",
        "prism stops; nothing was changed by this call.",
        "Refresh them (`aws sso login`, or new session credentials) and run the command again.",
    ),
    entry(
        &["NoCredentials"],
        None,
        "No AWS credentials",
        "prism found no AWS credentials: not in the environment, the AWS config files, nor an instance role.",
        "prism stops before calling AWS.",
        "Run `aws configure`, set AWS_PROFILE, or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.",
    ),
    entry(
        &["UnknownRegion"],
        None,
        "Unknown region {region}",
        "{message}",
        "prism stops; nothing was sent to AWS.",
        "Check `region` in the manifest, --region, AWS_REGION or the profile's region (for example us-west-2). A region newer than this prism needs a newer prism.",
    ),
    entry(
        &["EndpointUnreachable"],
        None,
        "AWS could not be reached",
        "prism could not connect to the AWS endpoint for {region}: {message}",
        "prism retries; after the last retry it stops.",
        "Check the network and any proxy (HTTPS_PROXY). When calls should go elsewhere (a local emulator, a private endpoint), set --endpoint-url or AWS_ENDPOINT_URL; when one is set, check it.",
    ),
    entry(
        &["NotAnAwsAnswer"],
        Some(ErrorClass::Permanent),
        "The endpoint did not answer as AWS does",
        "The endpoint for {region} did not answer as AWS does: {message}",
        "prism stops: retrying an answer that is not AWS's cannot help.",
        "Check --endpoint-url or AWS_ENDPOINT_URL (a proxy, a wrong port, an emulator that does not serve this region) and the region; unset the endpoint to call AWS itself.",
    ),
    entry(
        &["InvalidEndpointUrl"],
        None,
        "Unusable endpoint URL",
        "{message}",
        "prism stops before calling AWS.",
        "Give a full URL with its scheme, such as http://127.0.0.1:5000 or https://ec2.us-west-2.amazonaws.com, or unset it to use AWS's own endpoints.",
    ),
    entry(
        &["EmptySetting"],
        None,
        "A setting is empty",
        "{message}",
        "prism stops before calling AWS.",
        "Give the setting a value, or leave it out to use the AWS configuration. (An empty AWS_* environment variable counts as unset.)",
    ),
    entry(
        &["InvalidSetting"],
        None,
        "A setting cannot be used",
        "{message}",
        "prism stops before calling AWS.",
        "Correct or unset the setting named above.",
    ),
    entry(
        &["ProfileNotFound"],
        None,
        "AWS profile not found",
        "{message}",
        "prism stops before calling AWS.",
        "Check the name (`aws configure list-profiles` lists them), add the profile with `aws configure --profile NAME`, or point AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE at the files that define it.",
    ),
    entry(
        &["ConfigFileUnreadable"],
        None,
        "prism's settings file cannot be read",
        "{message}",
        "prism stops before calling AWS.",
        "Point PRISM_CONFIG at a readable YAML file, or unset it to use ~/.prism/config.yaml (a missing ~/.prism/config.yaml means the defaults).",
    ),
    entry(
        &["Timeout"],
        None,
        "AWS did not answer in time",
        "The {operation} call timed out: {message}",
        "prism retries with backoff; a launch retried with the same ClientToken cannot create a second instance.",
        "Run the command again; if it keeps happening, check the network.",
    ),
    entry(
        &["RequestFailed"],
        None,
        "The request could not be sent",
        "The {operation} call could not be sent from this machine: {message}",
        "prism treats it as a failed call for this workspace; the other workspaces carry on.",
        "Run the command again with -vv to see the request; check the endpoint, proxy and TLS settings of this machine.",
    ),
    entry(
        &["IdempotentParameterMismatch"],
        Some(ErrorClass::Permanent),
        "ClientToken reused with other parameters",
        "AWS already launched an instance for this workspace's ClientToken with different parameters: {message}",
        "prism does not retry: launching anyway could create a duplicate.",
        "Something else launched with prism's token, or the template changed mid-launch: run `prism plan` to see the fleet, then `prism apply` again.",
    ),
    entry(
        &["IdempotentInstanceTerminated"],
        Some(ErrorClass::Permanent),
        "The workspace's previous instance was terminated",
        "The ClientToken of this workspace belongs to an instance that has since been terminated.",
        "prism launches the workspace again with its next token, once per terminated incarnation.",
        "Nothing.",
    ),
    entry(
        &["InvalidInstanceID.NotFound"],
        Some(ErrorClass::Permanent),
        "Instance not found",
        "AWS does not know the instance: {message}",
        "prism does not retry this action; a new plan sees the fleet as it is now.",
        "Run `prism apply` again: the workspace is planned afresh (and recreated if it is gone).",
    ),
    entry(
        &["NoSuchQuotaRequest"],
        None,
        "No such quota request",
        "AWS has {message} in {region}.",
        "prism stops; nothing was changed.",
        "Check the id: `prism quota request list` shows the account's requests in this region, and a request made in another region is found only with that --region.",
    ),
    entry(
        &["IncorrectInstanceState"],
        Some(ErrorClass::Permanent),
        "The instance is busy changing state",
        "The instance is not in a state that allows {operation}: {message}",
        "prism does not retry this action now.",
        "Run `prism apply` again in a minute, once the instance has settled.",
    ),
    entry(
        &[
            "Unavailable",
            "ServiceUnavailable",
            "ServiceUnavailableException",
        ],
        Some(ErrorClass::Transient),
        "AWS service unavailable",
        "The AWS service in {region} is temporarily unavailable: {message}",
        "prism backs off and retries.",
        "Wait a few minutes and run the command again if it still fails; check the AWS Health Dashboard.",
    ),
    entry(
        &[
            "InternalError",
            "InternalFailure",
            "InternalServerError",
            "ServiceException",
            "RequestTimeout",
            "RequestTimeoutException",
        ],
        Some(ErrorClass::Transient),
        "AWS internal error",
        "AWS answered {operation} with an internal error: {message}",
        "prism retries with backoff; a launch retried with the same ClientToken cannot create a second instance.",
        "Run the command again if it still fails.",
    ),
    entry(
        &["ImageUnresolved"],
        None,
        "The template's image was not found",
        "prism could not resolve the template's image in {region}, so nothing can be launched from it: {message}",
        "prism launches nothing for this template; starts, stops and deletions carry on.",
        "Check the template's `image` (an AMI id of this region, or an `{owner, name}` lookup that matches an image) and run the command again; `prism plan` shows what it resolves to.",
    ),
    entry(
        &["WaitTimedOut"],
        None,
        "The instance did not settle in time",
        "AWS accepted the call, but the instance did not reach its state within the wait: {message}",
        "prism stops waiting for it; the other workspaces carry on. The instance itself is left as it is.",
        "Look at it with `prism workspace show`; run `prism apply` again to wait longer (`--wait-timeout`), or `--no-wait` to return once AWS accepted the calls.",
    ),
    entry(
        &["InstanceTerminated"],
        None,
        "The instance went away while prism waited",
        "The instance was shutting down or terminated before it reached its state: {message}",
        "prism counts this workspace as failed; the next apply launches it again with a fresh ClientToken.",
        "Check the instance's state reason in the EC2 console (a bad user data script or an image problem can stop it at boot), then run `prism apply` again.",
    ),
    entry(
        &["PrismBug"],
        None,
        "prism hit a bug",
        "prism stopped on an internal error: {message}",
        "prism stops at once; an apply already under way may have launched some workspaces (a rerun finishes it without duplicates).",
        "Report it to prism's maintainers with the command you ran, this message and `prism --version`; RUST_BACKTRACE=1 adds a backtrace to the report. Run `prism plan` to see where the fleet stands.",
    ),
];

/// The catalogue entry of `code`.
pub fn lookup(code: &str) -> Option<&'static Entry> {
    CATALOGUE.iter().find(|e| e.codes.contains(&code))
}

#[cfg(test)]
mod tests {
    /// Every error code prism writes itself (not AWS's), found in its sources: each has
    /// an entry, so that every failure is explained.
    #[test]
    fn every_code_prism_writes_has_an_entry() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![root.clone()];
        let mut codes = std::collections::BTreeSet::new();
        let written = regex::Regex::new(concat!(
            r#"transport\(Transport::\w+,\s*"(\w+)""#,
            r#"|CloudError::service\(\s*[^,()]+,\s*Some\("([\w.]+)"\)"#,
            r#"|fail\(ctx, failed, &t, "(\w+)""#,
        ))
        .unwrap();
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            } else if path.extension().is_some_and(|e| e == "rs")
                // Tests, and the fake cloud that answers as AWS does (the path inside
                // `src`: the checkout's own path may hold "test").
                && !path.strip_prefix(&root).unwrap_or(&path).to_string_lossy().contains("test")
                && !path.ends_with("fake.rs")
            {
                let text = std::fs::read_to_string(&path).unwrap();
                for c in written.captures_iter(&text) {
                    let code = c.iter().skip(1).flatten().next().expect("a code");
                    codes.insert(code.as_str().to_string());
                }
            }
        }
        for must in [
            "RequestFailed",
            "InstanceTerminated",
            "Timeout",
            "NoCredentials",
        ] {
            assert!(codes.contains(must), "the scan finds {must}: {codes:?}");
        }
        let missing: Vec<&String> = codes
            .iter()
            .filter(|c| super::lookup(c).is_none())
            .collect();
        assert!(missing.is_empty(), "codes without an entry: {missing:?}");
    }
}
