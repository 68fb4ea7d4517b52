//! The fleet manifest: raw serde types, validation with located diagnostics, and the
//! validated [`Manifest`] the rest of prism trusts.
//!
//! The files build on each other bottom-up, and never in a cycle (the crate's
//! `tests::layering` holds them to it): `visible`, `locate`, `excerpt`, `diagnostic`,
//! `read`, `names` and `raw` at the bottom; `document`, `schema` and `roster` on them;
//! `schedule`; `model`; `validate` at the top. This file only re-exports them, and
//! holds what none of them uses.

mod diagnostic;
mod document;
mod excerpt;
mod locate;
mod model;
mod names;
pub mod raw;
mod read;
pub mod roster;
pub mod schedule;
mod schema;
mod validate;
mod visible;

pub use diagnostic::{ManifestError, Problem, SourceFile, did_you_mean};
pub use locate::{Locator, Span, escape as locate_escape};
pub use model::{ImageRef, Manifest, RateLimitSpec, RetryPolicy, Template, Templates};
pub use names::{NAME_MAX, member_workspaces, numbered_workspaces, valid_name};
pub use raw::{DesiredState, OffState};
pub use roster::Roster;
pub use schedule::Schedule;
pub use schema::{manifest_schema as schema_json, templates_schema as templates_schema_json};
pub use validate::{Files, load, load_templates, parse, parse_with};

/// The text of the manifest file at `path` (named `name`): at most 1 MiB of UTF-8;
/// Err says why not.
pub fn read_text(path: &std::path::Path, name: &str) -> Result<String, String> {
    read::text(path, name).map_err(|e| match e {
        read::Unreadable::Io(e) => e.to_string(),
        read::Unreadable::Problem(p) => p.to_string(),
    })
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

#[cfg(test)]
mod tests;
