//! The fleet manifest: raw serde types, validation with located diagnostics, and the
//! validated [`Manifest`] the rest of prism trusts.
//!
//! The files build on each other bottom-up, and never in a cycle (`layering_tests`
//! holds them to it): `visible`, `locate`, `excerpt`, `diagnostic`, `read`, `names`
//! and `raw` at the bottom; `document`, `schema` and `roster` on them; `schedule`;
//! `model`; `validate` at the top. This file only re-exports them, and holds what
//! none of them uses.

mod diagnostic;
mod document;
mod excerpt;
mod locate;
mod model;
mod names;
#[cfg(test)]
mod proptests;
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
