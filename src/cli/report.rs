//! How a failed command reaches the user: located manifest diagnostics, AWS errors with
//! what to do about them, and the exit code.

use std::io::{IsTerminal, Write};

use miette::{GraphicalReportHandler, GraphicalTheme};

use crate::cloud::CloudError;
use crate::manifest::ManifestError;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// An AWS call failed; the region, when known, fills in the explanation.
    #[error("{0}")]
    Cloud(CloudError, Option<String>),
    #[error("no AWS region is configured")]
    NoRegion,
    /// A flag, environment variable or AWS configuration value prism will not use.
    #[error(transparent)]
    Setting(#[from] crate::cloud::settings::SettingError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A saved plan no longer matches the manifest or the fleet.
    #[error("the saved plan is stale: {0}")]
    StalePlan(String),
    /// An apply or a deletion needs a yes, and there is no terminal to ask on; the verb
    /// says which.
    #[error("refusing to {0} without confirmation: there is no terminal to ask on")]
    Unconfirmed(&'static str),
    /// Apply would exceed a quota, and there is no terminal to ask on.
    #[error(
        "refusing to apply: not every workspace fits the account's quota, and there is no terminal to ask on"
    )]
    QuotaShortfall,
    /// A command was asked something it cannot do; the kind gives its code and hint.
    #[error("{1}")]
    Refused(Refusal, String),
    /// A bare workspace name matches workspaces of several fleets.
    #[error("`{name}` is a workspace in more than one fleet: {}", fleets.join(", "))]
    AmbiguousName { name: String, fleets: Vec<String> },
    /// A new workspace's name is already a workspace of another fleet.
    #[error("a workspace named `{name}` already exists in fleet `{fleet}`")]
    NameTaken { name: String, fleet: String },
    /// The plan launches from an image that does not exist: located in the manifest.
    #[error("the template's image does not exist; nothing was changed")]
    ImageNotFound(ManifestError),
    #[error("cannot read the saved plan {path}: {message}")]
    BadPlanFile { path: String, message: String },
    /// `prism apply` was given a plan printed by `prism plan --format json`, which does
    /// not say which manifest it was made from.
    #[error(
        "{path} is a plan printed with `--format json`, which cannot be applied: it does not record the manifest it was made from, so apply cannot check that it still holds"
    )]
    PrintedPlan { path: String },
    /// Workspace names that no fleet has (in `fleet`, when given); `guesses` pairs a
    /// missing name with the closest existing one.
    #[error("no workspace named {}{}", super::quoted(names), in_fleet(fleet.as_deref()))]
    NoSuchWorkspace {
        names: Vec<String>,
        fleet: Option<String>,
        guesses: Vec<(String, String)>,
    },
    /// A file prism could not read or write.
    #[error("{}: {source}", path.display())]
    File {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// Writing to the terminal or another stream failed.
    #[error(transparent)]
    Io(std::io::Error),
}

/// The kinds of things a command refuses to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// What it was asked about does not exist.
    NotFound,
    /// What it was asked to create exists already.
    AlreadyExists,
    /// A flag the command needs is missing.
    MissingFlag,
    /// A flag's value cannot be used.
    InvalidValue,
    /// A name matches more than one thing.
    Ambiguous,
    /// What it was asked to delete is in use.
    InUse,
    /// The thing cannot do what was asked (e.g. hibernate without hibernation).
    Unsupported,
    /// Doing it would be unsafe without an explicit flag.
    Unsafe,
    /// Something it needs is not available (a file, an address, a value to read).
    Unavailable,
    /// Another manifest manages the fleet.
    OwnedElsewhere,
}

impl Refusal {
    /// Its stable code, in JSON and in the text.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::NotFound => "NotFound",
            Refusal::AlreadyExists => "AlreadyExists",
            Refusal::MissingFlag => "MissingFlag",
            Refusal::InvalidValue => "InvalidValue",
            Refusal::Ambiguous => "Ambiguous",
            Refusal::InUse => "InUse",
            Refusal::Unsupported => "Unsupported",
            Refusal::Unsafe => "Unsafe",
            Refusal::Unavailable => "Unavailable",
            Refusal::OwnedElsewhere => "OwnedElsewhere",
        }
    }
}

/// "in fleet `F`" after a message about names looked for in fleet F; empty for all fleets.
fn in_fleet(fleet: Option<&str>) -> String {
    fleet.map_or(String::new(), |f| format!(" in fleet `{f}`"))
}

impl From<CloudError> for Failure {
    fn from(e: CloudError) -> Self {
        Failure::Cloud(e, None)
    }
}

impl Failure {
    /// A refusal of `kind`, said as `message`.
    pub fn refused(kind: Refusal, message: impl Into<String>) -> Self {
        Failure::Refused(kind, message.into())
    }

    /// A file that could not be read or written.
    pub fn file(path: impl Into<std::path::PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Failure::File { path, source }
    }

    /// Its stable code, as JSON failures and `prism errors` name it.
    pub fn code(&self) -> String {
        match self {
            Failure::Manifest(_) => "InvalidManifest".into(),
            Failure::ImageNotFound(_) => "InvalidAMIID.NotFound".into(),
            Failure::Cloud(e, _) => e.code.clone().unwrap_or_else(|| format!("{:?}", e.class)),
            Failure::NoRegion => "NoRegion".into(),
            Failure::Setting(e) => e.code.to_string(),
            Failure::Config(crate::config::ConfigError::Invalid { .. }) => "InvalidConfig".into(),
            Failure::Config(_) => "ConfigFileUnreadable".into(),
            Failure::StalePlan(_) => "StalePlan".into(),
            Failure::Unconfirmed(_) => "Unconfirmed".into(),
            Failure::QuotaShortfall => "QuotaShortfall".into(),
            Failure::Refused(kind, _) => kind.code().into(),
            Failure::AmbiguousName { .. } => "AmbiguousName".into(),
            Failure::NameTaken { .. } => "NameTaken".into(),
            Failure::BadPlanFile { .. } | Failure::PrintedPlan { .. } => "BadPlanFile".into(),
            Failure::NoSuchWorkspace { .. } => Refusal::NotFound.code().into(),
            Failure::File { .. } => "FileUnreadable".into(),
            Failure::Io(_) => "OutputFailed".into(),
        }
    }

    /// What to do about it, when there is more to say than the message.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Failure::NoRegion => {
                "set `region:` in the manifest, pass --region, or set AWS_REGION".into()
            }
            Failure::StalePlan(_) => "nothing was changed; make a new plan with `prism plan FILE --out PLAN.json`, or apply the manifest itself".into(),
            Failure::QuotaShortfall => "pass --yes to launch the workspaces that fit (in name order) and report the rest, or raise the quota first; nothing was changed".into(),
            Failure::Unconfirmed(verb) => format!("pass --yes (-y) to {verb} without asking; nothing was changed"),
            Failure::AmbiguousName { fleets, .. } => format!(
                "name the fleet, e.g. `--fleet {}`; nothing was changed",
                fleets[0]
            ),
            Failure::NameTaken { .. } => "workspace names are unique across fleets, so that every command that takes a name acts on one workspace; choose another name (nothing was launched)".into(),
            Failure::File { .. } => "check the path and its permissions".into(),
            Failure::PrintedPlan { path } => format!(
                "`prism plan FILE --out {path}` saves a plan that `prism apply {path}` carries out, or apply the manifest itself: `prism apply FILE`; nothing was changed"
            ),
            Failure::NoSuchWorkspace { names, guesses, .. } => {
                let guess = match guesses.as_slice() {
                    [] => String::new(),
                    [(_, closest)] if names.len() == 1 => format!("did you mean `{closest}`? "),
                    _ => format!(
                        "did you mean {}? ",
                        guesses
                            .iter()
                            .map(|(name, closest)| format!("`{closest}` for `{name}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                format!("{guess}`prism workspace list` shows every workspace; nothing was changed")
            }
            _ => return None,
        })
    }

    /// The exit code: 2 for a command line that lacks a flag it needs (as clap's own
    /// usage errors), else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Refused(Refusal::MissingFlag, _) => 2,
            _ => 1,
        }
    }

    /// An AWS failure in `region`.
    pub fn aws(e: CloudError, region: &str) -> Self {
        Failure::Cloud(e, Some(region.to_string()))
    }

    /// The failure explained, for `--format json`.
    pub fn json(&self) -> serde_json::Value {
        match self {
            Failure::Cloud(e, region) => serde_json::json!({ "error": explain(e, region) }),
            Failure::Setting(e) => serde_json::json!({ "error": explain_setting(e) }),
            Failure::Config(e) => serde_json::json!({ "error": explain_config(e) }),
            Failure::Manifest(e) => serde_json::json!({
                "error": {"code": "InvalidManifest", "title": e.to_string(), "problems": e.problems()}
            }),
            Failure::ImageNotFound(e) => serde_json::json!({
                "error": {"code": self.code(), "title": self.to_string(), "problems": e.problems()}
            }),
            other => serde_json::json!({"error": {
                "code": other.code(),
                "title": other.to_string(),
                "hint": other.hint(),
            }}),
        }
    }
}

fn explain(e: &CloudError, region: &Option<String>) -> crate::errors::Explained {
    let ctx = crate::errors::Context {
        region: region.clone(),
        ..Default::default()
    };
    crate::errors::explain(e, &ctx)
}

fn explain_setting(e: &crate::cloud::settings::SettingError) -> crate::errors::Explained {
    crate::errors::explain_setting(e.code, &e.message, e.region.as_deref())
}

fn explain_config(e: &crate::config::ConfigError) -> serde_json::Value {
    match e {
        crate::config::ConfigError::Invalid { problems, .. } => serde_json::json!({
            "code": "InvalidConfig", "title": e.to_string(), "problems": problems
        }),
        crate::config::ConfigError::Unreadable { message, .. } => serde_json::to_value(
            crate::errors::explain_setting("ConfigFileUnreadable", message, None),
        )
        .expect("serializes"),
    }
}

/// Prints a panic as a short bug report: what happened, and how to report it. Installed
/// as the panic hook; `RUST_BACKTRACE` adds the backtrace.
pub fn bug(info: &std::panic::PanicHookInfo<'_>) {
    let message = info
        .payload()
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| info.payload().downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "an unknown panic".into());
    let place = info
        .location()
        .map(|l| format!("{}:{}", l.file(), l.line()));
    let mut text = bug_report(&message, place.as_deref());
    if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
        text.push_str(&format!(
            "\n{}\n",
            std::backtrace::Backtrace::force_capture()
        ));
    }
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// The text of a bug report for a panic with `message` at `place`.
fn bug_report(message: &str, place: Option<&str>) -> String {
    let at = place.map(|p| format!(" at {p}")).unwrap_or_default();
    let what = format!("{message}{at} (prism {})", env!("CARGO_PKG_VERSION"));
    crate::errors::render(&crate::errors::explain_setting("PrismBug", &what, None))
}

/// Whether stderr takes colour: a terminal, and `NO_COLOR` unset.
pub(crate) fn stderr_color() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Renders every problem of a manifest, each with its file:line:column and source line.
pub fn render_problems(err: &ManifestError, color: bool) -> String {
    let mut out = render_problem_list(err.problems(), color);
    out.push_str(&format!("Error: {err}; nothing was sent to AWS.\n"));
    out
}

/// Each problem with its file:line:column, the source line and the hint.
fn render_problem_list(problems: &[crate::manifest::Problem], color: bool) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_links(false)
        .with_width(100);
    let mut out = String::new();
    for p in problems {
        // A compiler-style first line (file:line:column: message), then miette's
        // snippet of the source with the label and the hint.
        out.push_str(&format!(
            "{}:{}:{}: error: {}\n",
            p.file, p.line, p.column, p.message
        ));
        let mut rendered = String::new();
        let _ = handler.render_report(&mut rendered, p);
        let snippet = rendered
            .find('╭')
            .map_or(0, |i| rendered[..i].rfind('\n').map_or(0, |n| n + 1));
        out.push_str(&rendered[snippet..]);
        out.push('\n');
    }
    out
}

/// Prints `failure` (also on stdout as JSON when `json`) and returns its exit code. A
/// closed stdout or stderr drops what cannot be written; the code stays the failure's.
pub fn fail(failure: &Failure, json: bool) -> u8 {
    if json {
        let text = serde_json::to_string_pretty(&failure.json()).expect("serializes");
        let _ = writeln!(std::io::stdout(), "{text}");
    }
    let text = match failure {
        Failure::Manifest(e @ ManifestError::Invalid { .. }) => render_problems(e, stderr_color()),
        Failure::ImageNotFound(e) => format!(
            "{}Error: {failure}.\n",
            render_problem_list(e.problems(), stderr_color())
        ),
        Failure::Cloud(e, region) => crate::errors::render(&explain(e, region)),
        Failure::Setting(e) => crate::errors::render(&explain_setting(e)),
        Failure::Config(e @ crate::config::ConfigError::Invalid { problems, .. }) => format!(
            "{}Error: {e}; nothing was sent to AWS.\n",
            render_problem_list(problems, stderr_color())
        ),
        Failure::Config(crate::config::ConfigError::Unreadable { message, .. }) => {
            crate::errors::render(&crate::errors::explain_setting(
                "ConfigFileUnreadable",
                message,
                None,
            ))
        }
        Failure::AmbiguousName { name, fleets } => format!(
            "Error: {failure}\n  hint: {}\n  candidates:\n{}",
            failure.hint().unwrap_or_default(),
            fleets
                .iter()
                .map(|f| format!("    {name} (fleet {f})\n"))
                .collect::<String>()
        ),
        other => match other.hint() {
            Some(hint) => format!("Error: {other}\n  hint: {hint}\n"),
            None => format!("Error: {other}\n"),
        },
    };
    let _ = std::io::stderr().write_all(text.as_bytes());
    failure.exit_code()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::render_problems;

    #[test]
    fn a_panic_reads_as_a_catalogued_bug_report() {
        let text = super::bug_report("index out of bounds", Some("src/plan/mod.rs:42"));
        assert!(text.starts_with("❌ prism hit a bug [PrismBug]"), "{text}");
        assert!(
            text.contains("index out of bounds at src/plan/mod.rs:42 (prism "),
            "{text}"
        );
        assert!(text.contains("Report it"), "{text}");
    }

    #[test]
    fn manifest_diagnostics() {
        let text = "name: Lab_1\nprojct: p\ntemplate: pyton\ncount: 0\nretry: {initial_backoff: soon}\ntemplates:\n  python: {image: ami-1, instance_type: t3.micro}\n";
        let err = crate::manifest::parse(Path::new("lab.yaml"), text).unwrap_err();
        insta::assert_snapshot!(render_problems(&err, false));
    }
}
