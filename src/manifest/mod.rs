//! The fleet manifest: raw serde types, validation with located diagnostics, and the
//! validated [`Manifest`] the rest of prism trusts.

mod diagnostic;
mod document;
mod excerpt;
mod locate;
#[cfg(test)]
mod proptests;
pub mod raw;
mod read;
pub mod roster;
pub mod schedule;
mod schema;
mod validate;
mod visible;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use diagnostic::{ManifestError, Problem, SourceFile, did_you_mean};
pub use locate::{Locator, Span, escape as locate_escape};
pub use raw::{DesiredState, OffState};
pub use roster::Roster;
pub use schedule::Schedule;
pub use validate::{
    Files, load, load_templates, parse, parse_with, schema_json, templates_schema_json,
};

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

/// The text of the manifest file at `path` (named `name`): at most 1 MiB of UTF-8;
/// Err says why not.
pub fn read_text(path: &std::path::Path, name: &str) -> Result<String, String> {
    read::text(path, name).map_err(|e| match e {
        read::Unreadable::Io(e) => e.to_string(),
        read::Unreadable::Problem(p) => p.to_string(),
    })
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

/// The longest fleet, member or workspace name (the schema's `maxLength`).
pub const NAME_MAX: usize = 40;

/// The one naming rule of fleets, members and workspaces: 1 to [`NAME_MAX`] lowercase
/// letters, digits and '-', starting and ending with a letter or digit (the schema's
/// `pattern`).
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= NAME_MAX
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !n.starts_with('-')
        && !n.ends_with('-')
}

/// Names the workspaces of a fleet: numbered, zero-padded to two digits. The padding
/// never depends on the count, so raising the count (even past 99) only appends names.
pub fn numbered_workspaces(fleet: &str, count: u32) -> Vec<String> {
    (1..=count).map(|i| format!("{fleet}-{i:02}")).collect()
}

/// Names the workspaces of a fleet after its members.
pub fn member_workspaces(fleet: &str, members: &[String]) -> Vec<String> {
    members.iter().map(|m| format!("{fleet}-{m}")).collect()
}

/// A problem found after `manifest` was loaded (by looking at AWS), located at the
/// value `pointer` of its file, or at `fallback` when the file does not write
/// `pointer` (a template of the templates file is located at the manifest's
/// `template:`).
pub fn problem_after_load(
    manifest: &Manifest,
    pointer: &str,
    fallback: &str,
    message: String,
    label: &str,
    hint: Option<String>,
) -> ManifestError {
    let path = manifest.source.display().to_string();
    let text = std::fs::read_to_string(&manifest.source).unwrap_or_default();
    let locator = Locator::new(&text).unwrap_or_default();
    let at = if locator.contains(pointer) {
        pointer
    } else {
        fallback
    };
    let span = locator.value(at);
    let problem = SourceFile::new(path.clone(), text).problem(span, at, message, label, hint);
    ManifestError::Invalid {
        path,
        problems: vec![problem],
        more: false,
    }
}

/// Templates by name, as merged from the manifest and its templates file.
pub type Templates = BTreeMap<String, Template>;

#[cfg(test)]
mod tests {
    #[test]
    fn the_name_rule_is_the_schemas() {
        let schema = super::schema_json();
        let name = &schema["properties"]["name"];
        assert_eq!(name["maxLength"], super::NAME_MAX);
        let pattern = name["pattern"].as_str().unwrap();
        assert_eq!(pattern, "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$");
        for (n, ok) in [
            ("cs-01", true),
            ("a", true),
            ("-a", false),
            ("a-", false),
            ("A", false),
            ("a_b", false),
            ("", false),
        ] {
            assert_eq!(super::valid_name(n), ok, "{n}");
        }
        assert!(super::valid_name(&"a".repeat(40)));
        assert!(!super::valid_name(&"a".repeat(41)));
    }

    use super::*;

    #[test]
    fn numbering_is_stable_when_the_count_grows() {
        let thirty = numbered_workspaces("cs499", 30);
        let thirty_two = numbered_workspaces("cs499", 32);
        assert_eq!(thirty[0], "cs499-01");
        assert_eq!(thirty[29], "cs499-30");
        assert_eq!(&thirty_two[..30], &thirty[..]);
        assert_eq!(&thirty_two[30..], ["cs499-31", "cs499-32"]);
    }

    #[test]
    fn numbering_past_99_keeps_earlier_names() {
        let names = numbered_workspaces("lab", 100);
        assert_eq!(names[0], "lab-01");
        assert_eq!(names[98], "lab-99");
        assert_eq!(names[99], "lab-100");
    }
}

#[cfg(test)]
mod fallback_tests {
    use std::path::Path;

    #[test]
    fn fallback_types_are_other_types_each_listed_once_and_located() {
        let text = "name: cs\nproject: p\ntemplate: t\ncount: 1\ntemplates:\n  t:\n    image: ami-1\n    instance_type: t3.micro\n    fallback_instance_types: [t3a.micro, t3.micro, t3a.micro]\n";
        let Err(super::ManifestError::Invalid { problems, .. }) =
            super::parse(Path::new("c.yaml"), text)
        else {
            panic!("refused");
        };
        let got: Vec<(usize, &str)> = problems
            .iter()
            .map(|p| (p.line, p.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (9, "`t3.micro` is template `t`'s own instance type"),
                (
                    9,
                    "`t3a.micro` is listed twice in `fallback_instance_types`"
                )
            ]
        );
        assert_eq!(problems[0].column, 42);

        let ok = text.replace(", t3.micro, t3a.micro]", ", m5.large]");
        let m = super::parse(Path::new("c.yaml"), &ok).unwrap();
        assert_eq!(
            m.template.fallback_instance_types,
            ["t3a.micro", "m5.large"]
        );
    }
}
