//! The checked-in JSON Schema matches the one generated from the manifest types, and
//! every example is valid.

use std::path::Path;

use crate::emulator::{prism_command, stdout};

#[test]
fn checked_in_schemas_match_the_types() {
    for document in ["manifest", "templates"] {
        check_schema(document);
    }
}

fn check_schema(document: &str) {
    let out = prism_command(&["schema", document])
        .output()
        .expect("prism runs");
    assert!(out.status.success());
    let generated = stdout(&out);
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("schemas/{document}.schema.json"));
    if std::env::var_os("PRISM_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).expect("write schema");
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    if checked_in != generated {
        let diff = similar::TextDiff::from_lines(&checked_in, &generated);
        panic!(
            "schemas/{document}.schema.json is out of date; regenerate it with\n  PRISM_UPDATE_SCHEMA=1 cargo test checked_in_schemas\n\n{}",
            diff.unified_diff().header("checked in", "generated")
        );
    }
}

#[test]
fn every_example_manifest_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).expect("examples/") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if path.extension().is_none_or(|e| e != "yaml") || !text.contains("template:") {
            continue;
        }
        let out = prism_command(&["validate", path.to_str().unwrap()])
            .output()
            .expect("prism runs");
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        seen += 1;
    }
    assert!(
        seen >= 2,
        "expected at least two example manifests, found {seen}"
    );
}
