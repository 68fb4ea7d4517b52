//! The error catalogue: for every AWS error prism can meet, what happened, what prism
//! does about it, and what the user can do — filled in with the context at hand.
//!
//! `docs/troubleshooting.md` is generated from [`CATALOGUE`] (`prism errors --markdown`)
//! and a test keeps the two equal.

use std::fmt::Write;

use serde::Serialize;

use crate::cloud::CloudError;

/// One catalogue entry. Texts may hold `{region}`, `{zone}`, `{instance_type}`,
/// `{limit}`, `{usage}`, `{quota}`, `{desired_value}`, `{operation}` and `{message}`
/// (AWS's own words).
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub codes: &'static [&'static str],
    pub title: &'static str,
    pub what_happened: &'static str,
    pub what_prism_does: &'static str,
    pub what_you_can_do: &'static str,
}

const fn entry(
    codes: &'static [&'static str],
    title: &'static str,
    what_happened: &'static str,
    what_prism_does: &'static str,
    what_you_can_do: &'static str,
) -> Entry {
    Entry {
        codes,
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
        "AWS API rate limit exceeded",
        "AWS refused the call because this account made too many {operation} requests in {region} in a short time.",
        "prism backs off, slows its launch rate (adaptive mode) and retries; workspaces keep launching at the pace AWS accepts.",
        "Nothing: this is normal for large fleets. If it persists, lower `rate_limit.rate_per_minute` in the manifest.",
    ),
    entry(
        &[
            "Throttling",
            "ThrottlingException",
            "TooManyRequestsException",
        ],
        "AWS is throttling requests",
        "AWS asked prism to slow down its {operation} requests in {region}.",
        "prism backs off and retries.",
        "Nothing, usually. If it persists, another tool may be using the same account's API budget heavily.",
    ),
    entry(
        &["InsufficientInstanceCapacity", "InsufficientCapacity"],
        "Insufficient capacity in {zone}",
        "AWS does not have enough {instance_type} capacity in {zone} right now: {message}",
        "prism retries in the region's other availability zones, each with its own ClientToken.",
        "Wait and run `prism apply` again, or choose another instance type in the template.",
    ),
    entry(
        &["VcpuLimitExceeded"],
        "AWS vCPU limit reached ({usage}/{limit} vCPUs used)",
        "The account's On-Demand vCPU quota for {instance_type}'s family in {region} is used up: {message}",
        "prism does not retry this launch; the other workspaces carry on.",
        "Stop or delete instances you no longer need, request a higher quota (`prism quota request --quota {quota} --desired-value {desired_value}`, usually 1-2 days), or use a smaller instance type. Service Quotas console: https://console.aws.amazon.com/servicequotas/home/services/ec2/quotas",
    ),
    entry(
        &["InvalidInstanceType"],
        "Unknown instance type",
        "AWS does not offer this instance type in {region}: {message}",
        "prism stops before planning or launching anything; nothing was changed.",
        "Check the spelling of `instance_type` in the template; `aws ec2 describe-instance-type-offerings --region {region}` lists the types offered there.",
    ),
    entry(
        &["InstanceLimitExceeded"],
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
        "AWS rejected a parameter",
        "AWS rejected the {operation} request: {message}",
        "prism does not retry; the other workspaces carry on.",
        "Check the template (instance type, root volume size, user data) against AWS's message, fix the manifest and run `prism apply` again.",
    ),
    entry(
        &["InvalidAMIID.NotFound"],
        "Image not found",
        "The template's image does not exist in {region}, or this account may not use it: {message}",
        "prism does not launch from it; the other actions carry on.",
        "AMI ids differ per region: look up the image in {region} (or use an `{owner, name}` lookup) and fix `image` in the template.",
    ),
    entry(
        &["InvalidAMIID.Malformed"],
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
        "AWS did not accept the credentials",
        "AWS rejected the credentials prism used: {message}",
        "prism stops; nothing was changed by this call.",
        "Check AWS_PROFILE / --profile, or create new access keys; the clock of this machine must also be right.",
    ),
    entry(
        &["ExpiredToken", "ExpiredTokenException", "RequestExpired"],
        "AWS credentials expired",
        "The session credentials in use have expired.",
        "prism stops; nothing was changed by this call.",
        "Refresh them (`aws sso login`, or new session credentials) and run the command again.",
    ),
    entry(
        &["NoCredentials"],
        "No AWS credentials",
        "prism found no AWS credentials: not in the environment, the AWS config files, nor an instance role.",
        "prism stops before calling AWS.",
        "Run `aws configure`, set AWS_PROFILE, or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.",
    ),
    entry(
        &["UnknownRegion"],
        "Unknown region {region}",
        "{message}",
        "prism stops; nothing was sent to AWS.",
        "Check `region` in the manifest, --region, AWS_REGION or the profile's region (for example us-west-2). A region newer than this prism needs a newer prism.",
    ),
    entry(
        &["EndpointUnreachable"],
        "AWS could not be reached",
        "prism could not connect to the AWS endpoint for {region}: {message}",
        "prism retries; after the last retry it stops.",
        "Check the network and any proxy (HTTPS_PROXY). When calls should go elsewhere (a local emulator, a private endpoint), set --endpoint-url or AWS_ENDPOINT_URL; when one is set, check it.",
    ),
    entry(
        &["InvalidEndpointUrl"],
        "Unusable endpoint URL",
        "{message}",
        "prism stops before calling AWS.",
        "Give a full URL with its scheme, such as http://127.0.0.1:5000 or https://ec2.us-west-2.amazonaws.com, or unset it to use AWS's own endpoints.",
    ),
    entry(
        &["EmptySetting"],
        "A setting is empty",
        "{message}",
        "prism stops before calling AWS.",
        "Give the setting a value, or leave it out to use the AWS configuration. (An empty AWS_* environment variable counts as unset.)",
    ),
    entry(
        &["InvalidSetting"],
        "A setting cannot be used",
        "{message}",
        "prism stops before calling AWS.",
        "Correct or unset the setting named above.",
    ),
    entry(
        &["ProfileNotFound"],
        "AWS profile not found",
        "{message}",
        "prism stops before calling AWS.",
        "Check the name (`aws configure list-profiles` lists them), add the profile with `aws configure --profile NAME`, or point AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE at the files that define it.",
    ),
    entry(
        &["ConfigFileUnreadable"],
        "prism's settings file cannot be read",
        "{message}",
        "prism stops before calling AWS.",
        "Point PRISM_CONFIG at a readable YAML file, or unset it to use ~/.prism/config.yaml (a missing ~/.prism/config.yaml means the defaults).",
    ),
    entry(
        &["Timeout"],
        "AWS did not answer in time",
        "The {operation} call timed out: {message}",
        "prism retries with backoff; a launch retried with the same ClientToken cannot create a second instance.",
        "Run the command again; if it keeps happening, check the network.",
    ),
    entry(
        &["IdempotentParameterMismatch"],
        "ClientToken reused with other parameters",
        "AWS already launched an instance for this workspace's ClientToken with different parameters: {message}",
        "prism does not retry: launching anyway could create a duplicate.",
        "Something else launched with prism's token, or the template changed mid-launch: run `prism plan` to see the fleet, then `prism apply` again.",
    ),
    entry(
        &["IdempotentInstanceTerminated"],
        "The workspace's previous instance was terminated",
        "The ClientToken of this workspace belongs to an instance that has since been terminated.",
        "prism launches the workspace again with its next token, once per terminated incarnation.",
        "Nothing.",
    ),
    entry(
        &["InvalidInstanceID.NotFound"],
        "Instance not found",
        "AWS does not know the instance: {message}",
        "prism does not retry this action; a new plan sees the fleet as it is now.",
        "Run `prism apply` again: the workspace is planned afresh (and recreated if it is gone).",
    ),
    entry(
        &["NoSuchQuotaRequest"],
        "No such quota request",
        "AWS has {message} in {region}.",
        "prism stops; nothing was changed.",
        "Check the id: `prism quota request list` shows the account's requests in this region, and a request made in another region is found only with that --region.",
    ),
    entry(
        &["IncorrectInstanceState"],
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
        ],
        "AWS internal error",
        "AWS answered {operation} with an internal error: {message}",
        "prism retries with backoff; a launch retried with the same ClientToken cannot create a second instance.",
        "Run the command again if it still fails.",
    ),
    entry(
        &["PrismBug"],
        "prism hit a bug",
        "prism stopped on an internal error: {message}",
        "prism stops at once; an apply already under way may have launched some workspaces (a rerun finishes it without duplicates).",
        "Report it to prism's maintainers with the command you ran, this message and `prism --version`; RUST_BACKTRACE=1 adds a backtrace to the report. Run `prism plan` to see where the fleet stands.",
    ),
];

/// What is known around an error, to fill the texts in.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub region: Option<String>,
    pub zone: Option<String>,
    pub instance_type: Option<String>,
    pub limit: Option<f64>,
    pub usage: Option<u32>,
    /// Instances in use by type: (type, count, vCPUs each), for VcpuLimitExceeded.
    pub usage_by_type: Vec<(String, u32, u32)>,
    /// The quota value to ask for ([`crate::quota::arith::recommended_value`]).
    pub recommended_value: Option<f64>,
}

impl Context {
    /// The context of a fleet's apply: its region, instance type, quota and usage. The
    /// value recommended is the one for the usage plus the launch refused (one
    /// instance of `instance_type`); [`Context::for_plan`] knows the whole need.
    pub fn from_observed(observed: &crate::observe::Observed, instance_type: &str) -> Self {
        let one = observed.vcpus.get(instance_type).copied();
        Self::with_need(observed, instance_type, one)
    }

    /// The context of a fleet's apply from its plan: the value recommended is the one
    /// the plan recommends for the class, for its usage plus everything it launches.
    pub fn for_plan(
        observed: &crate::observe::Observed,
        plan: &crate::plan::Plan,
        instance_type: &str,
    ) -> Self {
        let class = crate::quota::on_demand_class(instance_type);
        let check = plan.quota.iter().find(|q| q.code == class.code);
        let needed = match check {
            Some(q) if q.unknown_types.is_empty() => Some(q.needed),
            Some(_) => None,
            None => Some(0),
        };
        Self::with_need(observed, instance_type, needed)
    }

    fn with_need(
        observed: &crate::observe::Observed,
        instance_type: &str,
        needed: Option<u32>,
    ) -> Self {
        let class = crate::quota::on_demand_class(instance_type);
        let usage_by_type: Vec<(String, u32, u32)> = observed
            .account_running
            .iter()
            .filter(|(t, _)| crate::quota::on_demand_class(t).code == class.code)
            .filter_map(|(t, n)| Some((t.clone(), *n, *observed.vcpus.get(t)?)))
            .collect();
        let counts = observed
            .account_running
            .iter()
            .map(|(t, n)| (t.as_str(), None, *n));
        let usage = crate::quota::arith::vcpus_in_use(class, counts, &observed.vcpus).ok();
        let limit = observed
            .quotas
            .get(class.code)
            .and_then(crate::quota::QuotaReading::value);
        let recommended_value = match (usage, needed) {
            (Some(u), Some(n)) => crate::quota::arith::recommended_value(f64::from(u + n), limit),
            _ => None,
        };
        Context {
            region: Some(observed.region.clone()),
            zone: None,
            instance_type: Some(instance_type.to_string()),
            limit,
            usage,
            usage_by_type,
            recommended_value,
        }
    }
}

/// An error explained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explained {
    pub code: String,
    pub title: String,
    pub what_happened: String,
    pub what_prism_does: String,
    pub what_you_can_do: String,
}

/// The catalogue entry of `code`.
pub fn lookup(code: &str) -> Option<&'static Entry> {
    CATALOGUE.iter().find(|e| e.codes.contains(&code))
}

fn fill(text: &str, err: &CloudError, ctx: &Context) -> String {
    let or = |v: &Option<String>, d: &str| v.clone().unwrap_or_else(|| d.to_string());
    text.replace("{region}", &or(&ctx.region, "the region"))
        .replace("{zone}", &or(&ctx.zone, "the availability zone AWS chose"))
        .replace(
            "{instance_type}",
            &or(&ctx.instance_type, "this instance type"),
        )
        .replace("{limit}", &ctx.limit.map_or("?".into(), |l| format!("{l}")))
        .replace("{usage}", &ctx.usage.map_or("?".into(), |u| u.to_string()))
        .replace(
            "{quota}",
            ctx.instance_type.as_deref().map_or("on-demand-vcpus", |t| {
                crate::quota::on_demand_class(t).friendly
            }),
        )
        .replace(
            "{desired_value}",
            &ctx.recommended_value.map_or("N".into(), |v| format!("{v}")),
        )
        .replace("{operation}", err.operation)
        .replace("{message}", &err.message)
}

/// Explains `err`; an unknown code still shows AWS's code and message.
pub fn explain(err: &CloudError, ctx: &Context) -> Explained {
    let code = err
        .code
        .clone()
        .unwrap_or_else(|| format!("{:?}", err.class));
    let Some(entry) = lookup(&code) else {
        return Explained {
            title: format!("{} failed: {code}", err.operation),
            what_happened: format!(
                "AWS answered {} with {code}: {}",
                err.operation, err.message
            ),
            what_prism_does: match err.class {
                crate::cloud::ErrorClass::Permanent => "prism does not retry this error.".into(),
                _ => "prism retries with backoff.".into(),
            },
            what_you_can_do: "Read AWS's message above; fix the cause and run the command again."
                .into(),
            code,
        };
    };
    let mut what_happened = fill(entry.what_happened, err, ctx);
    if code == "VcpuLimitExceeded" && !ctx.usage_by_type.is_empty() {
        what_happened.push_str("\nCurrent usage:");
        for (t, n, v) in &ctx.usage_by_type {
            let _ = write!(what_happened, "\n- {n}× {t} ({} vCPUs total)", n * v);
        }
        let _ = write!(
            what_happened,
            "\n= {} vCPUs used / {} limit",
            ctx.usage.map_or("?".into(), |u| u.to_string()),
            ctx.limit.map_or("?".into(), |l| format!("{l}"))
        );
    }
    Explained {
        code,
        title: fill(entry.title, err, ctx),
        what_happened,
        what_prism_does: fill(entry.what_prism_does, err, ctx),
        what_you_can_do: fill(entry.what_you_can_do, err, ctx),
    }
}

/// Explains a failure that happened before any call (a setting, a bug), by its code.
pub fn explain_setting(code: &str, message: &str, region: Option<&str>) -> Explained {
    let err = CloudError::transport(
        "configuration",
        crate::cloud::Transport::Local,
        code,
        message,
    );
    let ctx = Context {
        region: region.map(str::to_string),
        ..Context::default()
    };
    explain(&err, &ctx)
}

/// The explanation as text.
pub fn render(e: &Explained) -> String {
    format!(
        "❌ {} [{}]\n\nWhat happened: {}\nWhat prism does: {}\nWhat you can do: {}\n",
        e.title, e.code, e.what_happened, e.what_prism_does, e.what_you_can_do
    )
}

/// The catalogue as Markdown, for docs/troubleshooting.md.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Troubleshooting\n\nEvery AWS error prism knows, what it means, what prism does about it, and what you can do.\nThis page is generated from prism's error catalogue (`prism errors --markdown`); words in braces are filled in from the situation at hand.\n",
    );
    for e in CATALOGUE {
        let codes: Vec<String> = e.codes.iter().map(|c| format!("`{c}`")).collect();
        let _ = write!(
            out,
            "\n## {}\n\nCodes: {}\n\n- **What happened:** {}\n- **What prism does:** {}\n- **What you can do:** {}\n",
            e.title,
            codes.join(", "),
            e.what_happened,
            e.what_prism_does,
            e.what_you_can_do
        );
    }
    out
}

#[cfg(test)]
mod tests;
