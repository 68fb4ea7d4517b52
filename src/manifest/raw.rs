//! The manifest exactly as written: serde types that mirror the YAML, and from which
//! the JSON Schema is generated. Nothing here is validated beyond its shape; see
//! `validate.rs` for the checks that turn these into a [`super::Manifest`].

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A fleet of workspaces: how many, from which template, in which state.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "prism fleet manifest")]
pub struct RawManifest {
    /// Fleet name: lowercase letters, digits and '-'. Tagged on every instance as `prism:fleet`.
    #[schemars(length(min = 1, max = 40), pattern(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"))]
    pub name: String,
    /// Project the fleet belongs to; tagged as `prism:project`.
    #[schemars(length(min = 1))]
    pub project: String,
    /// Name of the template every workspace is launched from.
    #[schemars(length(min = 1))]
    pub template: String,
    /// Number of workspaces, named `<name>-01`, `<name>-02`, …. Exclusive with `members`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub count: Option<u32>,
    /// One workspace per member, named `<name>-<member>`. Exclusive with `count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1),
        inner(length(min = 1, max = 40), pattern(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"))
    )]
    pub members: Option<Vec<String>>,
    /// A CSV file of members, one workspace per row (relative to this manifest), such as
    /// a roster exported from the LMS. Exclusive with `count` and `members`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub members_file: Option<String>,
    /// The roster column workspaces are named after; default the first of `login`,
    /// `username`, `email`, `sis_user_id` in the header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub members_column: Option<String>,
    /// AWS region; defaults to the region of the AWS configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"))]
    pub region: Option<String>,
    /// The AWS account the fleet lives in: a profile of the AWS configuration
    /// (`~/.aws/config`), such as one that assumes a role in the course's account
    /// (`role_arn` with `source_profile`). Defaults to the account of the AWS
    /// configuration; `--profile` overrides it for one command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), pattern(r"^[^\s\[\]]+$"))]
    pub account: Option<String>,
    /// Desired state of every workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<DesiredState>,
    /// When the workspaces run: windows of the week in a time zone; outside them the
    /// fleet is stopped (or hibernated). Exclusive with `state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<RawSchedule>,
    /// May prism delete this fleet's workspaces that are no longer wanted? Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<bool>,
    /// Pace of launches: `auto` (the default: as fast as AWS's RunInstances bucket allows, 5 at once then 120 per minute, slower when AWS throttles), or a map of rate_per_minute, burst_size and adaptive.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "auto_or_bucket"
    )]
    #[schemars(schema_with = "auto_or_bucket_schema")]
    pub rate_limit: Option<RawRateLimit>,
    /// Retries of failed AWS calls during apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RawRetry>,
    /// Templates defined inline, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub templates: Option<BTreeMap<String, RawTemplate>>,
    /// A YAML file of further templates (a map of name to template), relative to this manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub templates_file: Option<String>,
}

/// The state every workspace of the fleet should be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DesiredState {
    /// Launched and running.
    Running,
    /// Launched, then kept stopped (no compute charges).
    Stopped,
}

/// When the workspaces run.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    /// IANA time zone the windows are written in, such as `America/Chicago` or `UTC`.
    #[schemars(length(min = 1))]
    pub timezone: String,
    /// The windows of the week in which the workspaces run.
    #[schemars(length(min = 1))]
    pub running: Vec<RawWindow>,
    /// The state outside the windows. Default `stopped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otherwise: Option<OffState>,
}

/// Days and hours in which the workspaces run.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWindow {
    /// Days of the week: mon, tue, wed, thu, fri, sat, sun.
    #[schemars(length(min = 1))]
    pub days: Vec<Day>,
    /// Start time, `HH:MM` (24-hour clock, local time of the schedule's zone).
    pub from: String,
    /// End time, `HH:MM`, after `from` on the same day; `24:00` is midnight.
    pub to: String,
    /// What the window is called in plans and logs. Default `class hours`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 60))]
    pub name: Option<String>,
}

/// A day of the week.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Day {
    /// The day as plans show it: `Mon`.
    pub fn short(self) -> &'static str {
        match self {
            Day::Mon => "Mon",
            Day::Tue => "Tue",
            Day::Wed => "Wed",
            Day::Thu => "Thu",
            Day::Fri => "Fri",
            Day::Sat => "Sat",
            Day::Sun => "Sun",
        }
    }

    /// The same day as jiff counts them.
    pub fn weekday(self) -> jiff::civil::Weekday {
        use jiff::civil::Weekday::*;
        match self {
            Day::Mon => Monday,
            Day::Tue => Tuesday,
            Day::Wed => Wednesday,
            Day::Thu => Thursday,
            Day::Fri => Friday,
            Day::Sat => Saturday,
            Day::Sun => Sunday,
        }
    }
}

/// The state of a scheduled fleet outside its windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OffState {
    #[default]
    Stopped,
    Hibernated,
}

/// `rate_limit`: the word `auto` (None: the default pace), or a bucket (a map, with its
/// own errors: an unknown key is pointed at as in any other map).
fn auto_or_bucket<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<RawRateLimit>, D::Error> {
    struct Pace;
    impl<'de> serde::de::Visitor<'de> for Pace {
        type Value = Option<RawRateLimit>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("`auto` or a map of rate_per_minute, burst_size, adaptive")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            match v {
                "auto" => Ok(None),
                other => Err(E::invalid_value(serde::de::Unexpected::Str(other), &self)),
            }
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            RawRateLimit::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }
    d.deserialize_any(Pace)
}

fn auto_or_bucket_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let bucket = generator.subschema_for::<RawRateLimit>();
    schemars::json_schema!({
        "description": "Pace of launches: `auto` (the default: as fast as AWS's RunInstances bucket allows, 5 at once then 120 per minute, slower when AWS throttles), or a map of rate_per_minute, burst_size and adaptive.",
        "anyOf": [{"const": "auto"}, bucket]
    })
}

/// Launch pacing, as a token bucket.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Launches per minute once the burst is spent. Default 120.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.01))]
    pub rate_per_minute: Option<f64>,
    /// Launches allowed at once before pacing starts. Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub burst_size: Option<u32>,
    /// Slow down when AWS throttles, speed up again as calls succeed. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<bool>,
}

/// Retry policy for failed AWS calls.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Retries after the first attempt. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 20))]
    pub max_retries: Option<u32>,
    /// First wait, as a duration such as `1s` or `500ms`. Default 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_backoff: Option<String>,
    /// Longest wait between attempts. Default 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backoff: Option<String>,
    /// Factor applied to the wait after each attempt. Default 2.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1.0, max = 10.0))]
    pub multiplier: Option<f64>,
}

/// How a workspace is launched.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTemplate {
    /// An AMI id, or the newest image matching an owner and a name pattern.
    pub image: RawImage,
    /// EC2 instance type, such as `t3.xlarge`.
    #[schemars(length(min = 1))]
    pub instance_type: String,
    /// Types to launch, in order, when `instance_type` is sold out in every zone of
    /// the region, such as `[m5.xlarge, m6i.xlarge]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 10), inner(length(min = 1)))]
    pub fallback_instance_types: Option<Vec<String>>,
    /// Size of the root volume in GiB; default the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16384))]
    pub root_volume_gb: Option<u32>,
    /// Script run at first boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// Launch with hibernation enabled (encrypted root volume); needs `root_volume_gb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hibernation: Option<bool>,
}

/// An image reference.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RawImage {
    /// An AMI id such as `ami-0123456789abcdef0`.
    Id(String),
    /// The newest image of `owner` whose name matches `name` (`*` wildcards).
    Lookup(RawImageLookup),
}

/// The newest image of an owner whose name matches a pattern.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawImageLookup {
    /// Owner account id, or an alias such as `amazon`.
    pub owner: String,
    /// Name pattern; `*` matches any run of characters.
    pub name: String,
}
