//! Manifest text → [`Manifest`], reporting every problem at once.
//!
//! The document is read as a JSON value, checked against the schema, then by the
//! cross-field rules below; only a document with no problem is turned into typed data.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::diagnostic::{MAX_PROBLEMS, ManifestError, Problem, did_you_mean};
use super::document::Document;
use super::locate::escape;
use super::model::{ImageRef, Manifest, RateLimitSpec, RetryPolicy, Template, Templates};
use super::names::{member_workspaces, numbered_workspaces};
use super::raw::{DesiredState, RawImage, RawManifest, RawTemplate};
use super::read::{self, Unreadable};
use super::schema::{manifest_problems, templates_problems};

/// Reads and validates the manifest at `path`.
pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
    let text = read_file(path)?;
    parse(path, &text)
}

/// The text of the manifest or templates file at `path`.
fn read_file(path: &Path) -> Result<String, ManifestError> {
    let name = path.display().to_string();
    read::text(path, &name).map_err(|e| match e {
        Unreadable::Io(source) => ManifestError::Read { path: name, source },
        Unreadable::Problem(p) => invalid(path, vec![*p]),
    })
}

/// The error of a file with `problems`: the first [`MAX_PROBLEMS`] in source order (the
/// file's own before its templates file's), and whether there are more.
fn invalid(path: &Path, mut problems: Vec<Problem>) -> ManifestError {
    let name = path.display().to_string();
    problems.sort_by(|a, b| {
        (a.file != name, a.line, a.column).cmp(&(b.file != name, b.line, b.column))
    });
    let more = problems.len() > MAX_PROBLEMS;
    problems.truncate(MAX_PROBLEMS);
    ManifestError::Invalid {
        path: name,
        problems,
        more,
    }
}

/// Which files a manifest may name with `templates_file` and `members_file`; a relative
/// path is always relative to the manifest's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Files {
    /// Any file the user can read: the CLI reads the user's own files.
    Anywhere,
    /// Only regular files under this folder, symlinks resolved, and relative paths
    /// relative to it (`prism serve`, whose requests must not read the server's other
    /// files: the folder is the manifest's own).
    Under(PathBuf),
    /// None at all (an inline manifest sent to a server without `--manifests`).
    Nothing,
}

/// Validates manifest `text`, read from `path` (which names it in diagnostics and
/// anchors a relative `templates_file`).
pub fn parse(path: &Path, text: &str) -> Result<Manifest, ManifestError> {
    parse_with(path, text, &Files::Anywhere)
}

/// [`parse`], reading only the files `files` allows.
pub fn parse_with(path: &Path, text: &str, files: &Files) -> Result<Manifest, ManifestError> {
    let invalid = |problems: Vec<Problem>| invalid(path, problems);
    let doc = Document::read(path.display().to_string(), text).map_err(invalid)?;
    if !doc.value.is_object() {
        let found = if doc.value.is_null() {
            "an empty document"
        } else {
            "something else"
        };
        let mut problems = doc.duplicates.clone();
        problems.push(doc.at_value(
            "",
            format!("expected a mapping of manifest keys, found {found}"),
            "here",
            Some("a manifest starts with `name:`, `project:`, `template:` and `count:`".into()),
        ));
        return Err(invalid(problems));
    }
    let mut problems = doc.duplicates.clone();
    problems.extend(manifest_problems(&doc.value, &doc.src, &doc.loc));
    let extra = templates_file(&doc, path, files, &mut problems);
    problems.extend(cross_checks(&doc, extra.as_ref()));
    problems.extend(super::schedule::problems(
        &doc,
        template_hibernates(&doc, extra.as_ref()),
    ));
    let roster = roster_file(&doc, path, files, &mut problems);
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    let raw: RawManifest = serde_json::from_value(doc.value.clone()).map_err(|e| {
        invalid(vec![doc.at_value(
            "",
            format!("cannot read the manifest: {e}"),
            "here",
            None,
        )])
    })?;
    let file_templates = match extra {
        Some(d) => serde_json::from_value(d.value).map_err(|e| {
            invalid(vec![doc.at_value(
                "/templates_file",
                format!("cannot read the templates file: {e}"),
                "here",
                None,
            )])
        })?,
        None => BTreeMap::new(),
    };
    let mut manifest = build(path, raw, file_templates);
    if let Some(roster) = roster {
        let names: Vec<String> = roster.members.iter().map(|m| m.name.clone()).collect();
        manifest.workspaces = member_workspaces(&manifest.name, &names);
        manifest.roster = Some(roster);
    }
    Ok(manifest)
}

/// Whether the template the fleet launches from has `hibernation: true`.
fn template_hibernates(doc: &Document, extra: Option<&Document>) -> bool {
    let Some(name) = doc.value.get("template").and_then(Value::as_str) else {
        return false;
    };
    let name = escape(name);
    [
        doc.value.pointer(&format!("/templates/{name}/hibernation")),
        extra.and_then(|d| d.value.pointer(&format!("/{name}/hibernation"))),
    ]
    .into_iter()
    .flatten()
    .any(|v| v == &Value::Bool(true))
}

/// Reads the roster a manifest names with `members_file`, adding its problems (located
/// in the CSV) to `problems`.
fn roster_file(
    doc: &Document,
    manifest: &Path,
    files: &Files,
    problems: &mut Vec<Problem>,
) -> Option<super::roster::Roster> {
    let rel = doc.value.get("members_file")?.as_str()?;
    if rel.is_empty() || doc.value.get("members").is_some() || doc.value.get("count").is_some() {
        return None;
    }
    let path = allowed(doc, manifest, "members_file", rel, files, problems)?;
    let name = path.display().to_string();
    let column = doc.value.get("members_column").and_then(Value::as_str);
    match super::roster::load(&path, &name, column) {
        Ok(r) => Some(r),
        Err(super::roster::RosterError::Io(e)) => {
            problems.push(doc.at_value(
                "/members_file",
                format!("cannot read roster `{name}`: {e}"),
                "named here",
                Some("the path is relative to the manifest's folder".into()),
            ));
            None
        }
        Err(super::roster::RosterError::Problems(p)) => {
            problems.extend(p);
            None
        }
    }
}

/// The path of the file `key` names (`rel`, relative to the manifest's folder), when
/// `files` allows reading it; else a problem at the key that says why, and never what
/// the file holds.
fn allowed(
    doc: &Document,
    manifest: &Path,
    key: &str,
    rel: &str,
    files: &Files,
    problems: &mut Vec<Problem>,
) -> Option<PathBuf> {
    let base = match files {
        Files::Under(dir) => dir.as_path(),
        _ => manifest.parent().unwrap_or(Path::new(".")),
    };
    let path: PathBuf = base.join(rel);
    let refuse = |problems: &mut Vec<Problem>, why: String, fix: &str| {
        problems.push(doc.at_value(&format!("/{key}"), why, "named here", Some(fix.into())));
        None
    };
    let dir = match files {
        Files::Anywhere => return Some(path),
        Files::Nothing => {
            return refuse(
                problems,
                format!("this manifest cannot name files: `{key}` is not read"),
                "send `manifest_path`, the name of a manifest under the server's --manifests folder, whose files lie beside it",
            );
        }
        Files::Under(dir) => dir,
    };
    let inside = || -> Option<PathBuf> {
        let real = path.canonicalize().ok()?;
        let dir = dir.canonicalize().ok()?;
        let regular = std::fs::metadata(&real).ok()?.is_file();
        (real.starts_with(&dir) && regular).then_some(real)
    };
    match inside() {
        Some(real) => Some(real),
        None => refuse(
            problems,
            format!(
                "`{key}` must name a regular file in the manifest's folder: `{rel}` is not one"
            ),
            "put the file beside the manifest (or in a folder below it) and name it by its relative path",
        ),
    }
}

/// Loads the templates file a manifest names, adding its problems to `problems`.
fn templates_file(
    doc: &Document,
    manifest: &Path,
    files: &Files,
    problems: &mut Vec<Problem>,
) -> Option<Document> {
    let rel = doc.value.get("templates_file")?.as_str()?;
    let path = allowed(doc, manifest, "templates_file", rel, files, problems)?;
    let name = path.display().to_string();
    let text = match read::text(&path, &name) {
        Ok(t) => t,
        Err(Unreadable::Io(e)) => {
            problems.push(doc.at_value(
                "/templates_file",
                format!("cannot read templates file `{}`: {e}", path.display()),
                "named here",
                Some("the path is relative to the manifest's folder".into()),
            ));
            return None;
        }
        Err(Unreadable::Problem(p)) => {
            problems.push(*p);
            return None;
        }
    };
    match Document::read(name, &text) {
        Ok(t) => {
            problems.extend(t.duplicates.iter().cloned());
            problems.extend(templates_problems(&t.value, &t.src, &t.loc));
            Some(t)
        }
        Err(p) => {
            problems.extend(p);
            None
        }
    }
}

fn keys(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// The rules a schema cannot state well: exclusive keys, references, durations.
fn cross_checks(doc: &Document, extra: Option<&Document>) -> Vec<Problem> {
    let v = &doc.value;
    let mut out = Vec::new();
    match (v.get("count"), v.get("members"), v.get("members_file")) {
        (Some(_), Some(_), _) => out.push(doc.at_key(
            "/members",
            "`count` and `members` cannot both be set".into(),
            "second way to name the workspaces",
            Some("keep `count: N` for numbered workspaces (name-01, name-02, …) or `members: [...]` for one per person".into()),
        )),
        (count, members, Some(_)) if count.is_some() || members.is_some() => {
            let other = if members.is_some() { "members" } else { "count" };
            out.push(doc.at_key(
                "/members_file",
                format!("`{other}` and `members_file` cannot both be set"),
                "second way to name the workspaces",
                Some(format!("keep `members_file:` to read the members from the roster, or `{other}:` and remove `members_file`")),
            ));
        }
        (None, None, None) => out.push(doc.at_value(
            "",
            "the manifest sets neither `count` nor `members`".into(),
            "in this manifest",
            Some("add `count: 30` for numbered workspaces, `members: [alice, bob]` for one per person, or `members_file: roster.csv` to read them from a roster".into()),
        )),
        _ => {}
    }
    if v.get("members_column").is_some() && v.get("members_file").is_none() {
        out.push(doc.at_key(
            "/members_column",
            "`members_column` without `members_file`".into(),
            "names a column of no roster",
            Some("add `members_file: roster.csv`, or remove `members_column`".into()),
        ));
    }
    if let Some(members) = v.get("members").and_then(Value::as_array) {
        let mut seen = HashSet::new();
        for (i, m) in members.iter().enumerate() {
            if out.len() > MAX_PROBLEMS {
                break;
            }
            if let Some(name) = m.as_str().filter(|n| !seen.insert(*n)) {
                out.push(doc.at_value(
                    &format!("/members/{i}"),
                    format!("member `{name}` is listed twice"),
                    "listed again here",
                    Some("each member gets one workspace; remove the repeat".into()),
                ));
            }
        }
    }
    out.extend(template_checks(doc, extra));
    out.extend(retry_checks(doc));
    out
}

/// Hibernation saves memory to the root volume, which must then be sized (and is
/// encrypted): a hibernating template needs `root_volume_gb`.
fn hibernation_checks(doc: &Document, templates: &str) -> Vec<Problem> {
    let Some(map) = doc.value.pointer(templates).and_then(Value::as_object) else {
        return vec![];
    };
    map.iter()
        .filter(|(_, t)| t.get("hibernation") == Some(&Value::Bool(true)) && t.get("root_volume_gb").is_none())
        .map(|(name, _)| {
            doc.at_value(
                &format!("{templates}/{}/hibernation", escape(name)),
                format!("template `{name}` hibernates but sets no `root_volume_gb`"),
                "needs a root volume size",
                Some("hibernation saves memory to the encrypted root volume: set root_volume_gb to the disk you need plus the instance's memory".into()),
            )
        })
        .collect()
}

/// A fallback type is another type, listed once: the ladder is tried in order, and
/// a type twice (or the template's own) would only repeat sold-out launches.
fn fallback_checks(doc: &Document, templates: &str) -> Vec<Problem> {
    let Some(map) = doc.value.pointer(templates).and_then(Value::as_object) else {
        return vec![];
    };
    let mut out = Vec::new();
    for (name, t) in map {
        let Some(list) = t.get("fallback_instance_types").and_then(Value::as_array) else {
            continue;
        };
        let own = t.get("instance_type").and_then(Value::as_str);
        for (i, v) in list.iter().enumerate() {
            let Some(ty) = v.as_str() else { continue };
            let pointer = format!("{templates}/{}/fallback_instance_types/{i}", escape(name));
            if Some(ty) == own {
                out.push(doc.at_value(
                    &pointer,
                    format!("`{ty}` is template `{name}`'s own instance type"),
                    "not a fallback",
                    Some("list other types, tried in order when the first is sold out in every zone".into()),
                ));
            } else if list[..i].iter().any(|e| e.as_str() == Some(ty)) {
                out.push(doc.at_value(
                    &pointer,
                    format!("`{ty}` is listed twice in `fallback_instance_types`"),
                    "listed before",
                    Some("list each fallback type once".into()),
                ));
            }
        }
    }
    out
}

fn template_checks(doc: &Document, extra: Option<&Document>) -> Vec<Problem> {
    let mut out = hibernation_checks(doc, "/templates");
    out.extend(fallback_checks(doc, "/templates"));
    if let Some(d) = extra {
        out.extend(hibernation_checks(d, ""));
        out.extend(fallback_checks(d, ""));
    }
    let inline = keys(doc.value.get("templates"));
    let from_file = extra.map(|d| keys(Some(&d.value))).unwrap_or_default();
    if let Some(d) = extra {
        for name in from_file.iter().filter(|n| inline.contains(n)) {
            out.push(d.at_key(
                &format!("/{}", escape(name)),
                format!("template `{name}` is also defined in {}", doc.src.name),
                "defined twice",
                Some("rename one of them, or remove one definition".into()),
            ));
        }
    }
    let Some(wanted) = doc.value.get("template").and_then(Value::as_str) else {
        return out;
    };
    let all: Vec<String> = inline.into_iter().chain(from_file).collect();
    if !wanted.is_empty() && !all.iter().any(|t| t == wanted) {
        let hint = match did_you_mean(wanted, &all) {
            Some(close) => format!("did you mean `{close}`?"),
            None if all.is_empty() => {
                "define it under `templates:` or in a `templates_file`".into()
            }
            None => format!("templates defined: {}", all.join(", ")),
        };
        out.push(doc.at_value(
            "/template",
            format!("unknown template `{wanted}`"),
            "no template of this name",
            Some(hint),
        ));
    }
    out
}

fn retry_checks(doc: &Document) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut parsed = BTreeMap::new();
    for key in ["initial_backoff", "max_backoff"] {
        let pointer = format!("/retry/{key}");
        let Some(text) = doc.value.pointer(&pointer).and_then(Value::as_str) else {
            continue;
        };
        match humantime::parse_duration(text) {
            Ok(d) => {
                parsed.insert(key, d);
            }
            Err(_) => out.push(doc.at_value(
                &pointer,
                format!("`{text}` is not a duration"),
                "not a duration",
                Some("write a number and a unit, such as 500ms, 1s, 30s or 2m".into()),
            )),
        }
    }
    if let (Some(initial), Some(max)) = (parsed.get("initial_backoff"), parsed.get("max_backoff"))
        && initial > max
    {
        out.push(doc.at_value(
            "/retry/initial_backoff",
            format!(
                "initial_backoff ({}) is longer than max_backoff ({})",
                humantime::format_duration(*initial),
                humantime::format_duration(*max)
            ),
            "longer than the cap",
            Some("raise max_backoff or lower initial_backoff".into()),
        ));
    }
    out
}

fn duration(text: Option<String>, default: Duration) -> Duration {
    text.and_then(|t| humantime::parse_duration(&t).ok())
        .unwrap_or(default)
}

fn template(name: String, t: RawTemplate) -> Template {
    Template {
        name,
        image: match t.image {
            RawImage::Id(id) => ImageRef::Id(id),
            RawImage::Lookup(l) => ImageRef::Lookup {
                owner: l.owner,
                name: l.name,
            },
        },
        instance_type: t.instance_type,
        fallback_instance_types: t.fallback_instance_types.unwrap_or_default(),
        root_volume_gb: t.root_volume_gb,
        user_data: t.user_data,
        hibernation: t.hibernation.unwrap_or(false),
        restore_snapshot: None,
    }
}

/// The templates of a manifest (inline and from its templates file) or of a templates
/// file, validated with the same located diagnostics.
pub fn load_templates(path: &Path) -> Result<Templates, ManifestError> {
    let text = read_file(path)?;
    let invalid = |problems: Vec<Problem>| invalid(path, problems);
    let doc = Document::read(path.display().to_string(), &text).map_err(invalid)?;
    if doc.value.get("template").is_some() {
        return parse(path, &text).map(|m| m.templates);
    }
    let mut problems = doc.duplicates.clone();
    problems.extend(templates_problems(&doc.value, &doc.src, &doc.loc));
    problems.extend(hibernation_checks(&doc, ""));
    problems.extend(fallback_checks(&doc, ""));
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    let raw: BTreeMap<String, RawTemplate> =
        serde_json::from_value(doc.value.clone()).map_err(|e| {
            invalid(vec![doc.at_value(
                "",
                format!("cannot read the templates: {e}"),
                "here",
                None,
            )])
        })?;
    Ok(raw
        .into_iter()
        .map(|(n, t)| (n.clone(), template(n, t)))
        .collect())
}

/// Typed data from a document that passed every check.
fn build(path: &Path, raw: RawManifest, file_templates: BTreeMap<String, RawTemplate>) -> Manifest {
    let mut raw_templates = raw.templates.clone().unwrap_or_default();
    raw_templates.extend(file_templates);
    let templates: Templates = raw_templates
        .into_iter()
        .map(|(n, t)| (n.clone(), template(n, t)))
        .collect();
    let template = templates[&raw.template].clone();
    // A roster's workspaces are named once it is read (see `parse`).
    let workspaces = match (&raw.count, &raw.members) {
        (Some(count), _) => numbered_workspaces(&raw.name, *count),
        (None, Some(members)) => member_workspaces(&raw.name, members),
        (None, None) => Vec::new(),
    };
    let schedule = raw.schedule.map(super::schedule::build);
    let defaults = RetryPolicy::default();
    let retry = raw.retry.unwrap_or_default();
    let rate = raw.rate_limit.unwrap_or_default();
    Manifest {
        source: path.to_path_buf(),
        name: raw.name,
        project: raw.project,
        template,
        templates,
        workspaces,
        region: raw.region,
        account: raw.account,
        // Whatever ignores the schedule sees the fleet as it is outside its windows.
        state: match &schedule {
            Some(_) => DesiredState::Stopped,
            None => raw.state.unwrap_or(DesiredState::Running),
        },
        schedule,
        roster: None,
        prune: raw.prune.unwrap_or(false),
        rate_limit: RateLimitSpec {
            rate_per_minute: rate.rate_per_minute,
            burst_size: rate.burst_size,
            adaptive: rate.adaptive,
        },
        retry: RetryPolicy {
            max_retries: retry.max_retries.unwrap_or(defaults.max_retries),
            initial_backoff: duration(retry.initial_backoff, defaults.initial_backoff),
            max_backoff: duration(retry.max_backoff, defaults.max_backoff),
            multiplier: retry.multiplier.unwrap_or(defaults.multiplier),
        },
    }
}
