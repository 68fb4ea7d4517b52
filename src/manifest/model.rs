//! The validated manifest the rest of prism trusts: defaults resolved, the template
//! looked up, workspaces named.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::raw::DesiredState;
use super::roster::Roster;
use super::schedule::Schedule;

/// A validated manifest: defaults resolved, the template looked up, workspaces named.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    /// The file it was read from.
    pub source: PathBuf,
    /// Fleet name (tag `prism:fleet`).
    pub name: String,
    /// Project (tag `prism:project`).
    pub project: String,
    /// The template every workspace is launched from.
    pub template: Template,
    /// Every template the manifest defines or reads, by name.
    #[serde(skip)]
    pub templates: Templates,
    /// Workspace names in order: `<name>-01`… or `<name>-<member>`.
    pub workspaces: Vec<String>,
    /// Region, when the manifest names one.
    pub region: Option<String>,
    /// The AWS profile whose account the fleet lives in, when the manifest names one.
    pub account: Option<String>,
    /// Desired state of every workspace; for a scheduled fleet, its state outside the
    /// windows (what anything that does not read the schedule should assume).
    pub state: DesiredState,
    /// When the workspaces run, if the fleet has a timetable.
    pub schedule: Option<Schedule>,
    /// The roster the members were read from, if any.
    pub roster: Option<Roster>,
    /// Whether workspaces no longer wanted may be deleted.
    pub prune: bool,
    /// Launch pacing as written; unset fields fall back to the user config, then defaults.
    pub rate_limit: RateLimitSpec,
    /// Retry policy, defaults resolved.
    pub retry: RetryPolicy,
}

impl Manifest {
    /// The name the fleet's owner tag gives this manifest: its file name, which stays
    /// the same when the file is moved to another folder or read by replicas on other
    /// machines.
    pub fn owner(&self) -> String {
        self.source.file_name().map_or_else(
            || self.source.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }
}

/// A launch template.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Template {
    pub name: String,
    pub image: ImageRef,
    pub instance_type: String,
    /// Types launched, in order, when `instance_type` is sold out in every zone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback_instance_types: Vec<String>,
    pub root_volume_gb: Option<u32>,
    pub user_data: Option<String>,
    pub hibernation: bool,
    /// A snapshot restored as each launch's data volume (`workspace create
    /// --from-snapshot`); never written in a manifest.
    #[serde(skip)]
    pub restore_snapshot: Option<String>,
}

/// Which image a template launches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(untagged)]
pub enum ImageRef {
    /// A fixed AMI id.
    Id(String),
    /// The newest image of `owner` whose name matches `name`.
    Lookup { owner: String, name: String },
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageRef::Id(id) => f.write_str(id),
            ImageRef::Lookup { owner, name } => write!(f, "{owner}/{name}"),
        }
    }
}

/// Launch pacing as the manifest writes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RateLimitSpec {
    pub rate_per_minute: Option<f64>,
    pub burst_size: Option<u32>,
    pub adaptive: Option<bool>,
}

/// How failed AWS calls are retried.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryPolicy {
    pub max_retries: u32,
    #[serde(with = "humantime_serde_compat")]
    pub initial_backoff: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub max_backoff: Duration,
    pub multiplier: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            multiplier: 2.0,
        }
    }
}

mod humantime_serde_compat {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }
}

/// Templates by name, as merged from the manifest and its templates file.
pub type Templates = BTreeMap<String, Template>;
