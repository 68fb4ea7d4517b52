//! Property tests that act as a fuzzer of the manifest loader: on arbitrary bytes, on
//! YAML-shaped noise and on mutated example manifests and templates files, loading
//! never panics, and every problem it reports lies inside the file it names and renders.

use std::path::{Path, PathBuf};

use miette::{GraphicalReportHandler, GraphicalTheme};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::manifest::{ManifestError, load, load_templates};

const CLASS: &str = include_str!("../../../examples/class.yaml");
const LAB: &str = include_str!("../../../examples/lab.yaml");
const TEMPLATES: &str = include_str!("../../../examples/templates.yaml");

/// Cases per property: enough to find what the fuzzing finds in a few seconds of a
/// debug build; `PROPTEST_CASES` asks for more.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600)
}

/// A folder with the file under test and the templates file `lab.yaml` names.
struct Files {
    dir: tempfile::TempDir,
}

thread_local! {
    /// One folder per test thread: making a folder costs more than a case.
    static FILES: Files = Files::new();
}

impl Files {
    fn new() -> Self {
        Files {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        path
    }
}

/// Loads `path` as a manifest and as a templates file, and checks every problem.
fn check(path: &Path) -> Result<(), TestCaseError> {
    for result in [load(path).map(|_| ()), load_templates(path).map(|_| ())] {
        match result {
            Ok(()) => {}
            Err(ManifestError::Read { source, .. }) => {
                return Err(TestCaseError::fail(format!("read error: {source}")));
            }
            Err(err @ ManifestError::Invalid { .. }) => check_problems(&err)?,
        }
    }
    Ok(())
}

fn check_problems(err: &ManifestError) -> Result<(), TestCaseError> {
    prop_assert!(!err.problems().is_empty(), "an error without problems");
    let handler = GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
        .with_links(false)
        .with_width(100);
    for p in err.problems() {
        let bytes = std::fs::read(&p.file).expect("the problem's file exists");
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.split('\n').collect();
        prop_assert!(
            p.line >= 1 && p.line <= lines.len(),
            "line {} of a {}-line file: {}",
            p.line,
            lines.len(),
            p.message
        );
        let chars = lines[p.line - 1].chars().count();
        prop_assert!(
            p.column >= 1 && p.column <= chars + 1,
            "column {} of a {chars}-character line {}: {}",
            p.column,
            p.line,
            p.message
        );
        let mut out = String::new();
        handler
            .render_report(&mut out, p)
            .map_err(|e| TestCaseError::fail(format!("rendering failed: {e}")))?;
        let first = format!("{}:{}:{}", p.file, p.line, p.column);
        prop_assert!(out.contains(&first), "snippet lacks {first}:\n{out}");
        prop_assert!(out.len() < 16 * 1024, "a snippet of {} bytes", out.len());
    }
    Ok(())
}

/// Bytes that YAML gives meaning to, words of the manifest, and characters that are
/// multi-byte, invisible or not UTF-8.
fn yaml_piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(
            &[
                "[",
                "]",
                "{",
                "}",
                ":",
                ": ",
                ",",
                "- ",
                "? ",
                "!",
                "&a ",
                "*a",
                "#",
                "|",
                ">",
                "'",
                "\"",
                "\n",
                "\n  ",
                " ",
                "\t",
                "\r\n",
                "~",
                "---\n",
                "...\n",
                "%YAML 1.2\n",
                "<<: ",
                "name",
                "count",
                "members",
                "templates",
                "template",
                "image",
                "prune",
                "1",
                "-1",
                "0x1f",
                "1e9",
                "true",
                "null",
                "é",
                "\u{200b}",
                "\u{feff}",
                "\u{202e}",
                "\u{0}",
            ][..]
        )
        .prop_map(|s| s.as_bytes().to_vec()),
        any::<u8>().prop_map(|b| vec![b]),
    ]
}

/// One change to a file's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, byte: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Delete { at: usize, len: usize },
    RepeatLine { line: usize },
    SwapLines { a: usize, b: usize },
    Truncate { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = 0..4096usize;
    prop_oneof![
        (at.clone(), any::<u8>()).prop_map(|(at, byte)| Mutation::Flip { at, byte }),
        (at.clone(), yaml_piece()).prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (at.clone(), 1..40usize).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (0..40usize).prop_map(|line| Mutation::RepeatLine { line }),
        (0..40usize, 0..40usize).prop_map(|(a, b)| Mutation::SwapLines { a, b }),
        at.prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn apply(source: &str, mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = source.as_bytes().to_vec();
    for m in mutations {
        let len = bytes.len().max(1);
        match m {
            Mutation::Flip { at, byte } => {
                if let Some(b) = bytes.get_mut(at % len) {
                    *b = *byte;
                }
            }
            Mutation::Insert { at, bytes: piece } => {
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, piece.iter().copied());
            }
            Mutation::Delete { at, len: n } => {
                let at = at % len;
                let end = (at + n).min(bytes.len());
                bytes.drain(at.min(end)..end);
            }
            Mutation::RepeatLine { line } => {
                let mut lines = split_lines(&bytes);
                if !lines.is_empty() {
                    let l = lines[line % lines.len()].clone();
                    lines.insert(line % lines.len(), l);
                }
                bytes = lines.concat();
            }
            Mutation::SwapLines { a, b } => {
                let mut lines = split_lines(&bytes);
                if !lines.is_empty() {
                    let n = lines.len();
                    lines.swap(a % n, b % n);
                }
                bytes = lines.concat();
            }
            Mutation::Truncate { at } => bytes.truncate(at % len),
        }
    }
    bytes
}

fn split_lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        FILES.with(|files| check(&files.write("m.yaml", &bytes)))?;
    }

    #[test]
    fn yaml_shaped_noise(pieces in prop::collection::vec(yaml_piece(), 0..200)) {
        FILES.with(|files| check(&files.write("m.yaml", &pieces.concat())))?;
    }

    #[test]
    fn mutated_manifests(
        example in 0..2usize,
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let source = [CLASS, LAB][example];
        FILES.with(|files| {
            files.write("templates.yaml", TEMPLATES.as_bytes());
            check(&files.write("m.yaml", &apply(source, &mutations)))
        })?;
    }

    #[test]
    fn mutated_templates_files(mutations in prop::collection::vec(mutation(), 1..6)) {
        FILES.with(|files| {
            files.write("templates.yaml", &apply(TEMPLATES, &mutations));
            check(&files.write("m.yaml", LAB.as_bytes()))
        })?;
    }
}

/// The event pass runs first and may refuse a document: for its nesting, or when it has
/// too many brackets to hand to serde_yaml safely, never otherwise for YAML that
/// serde_yaml reads.
fn check_agreement(bytes: &[u8]) -> Result<(), TestCaseError> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Ok(());
    };
    let start = crate::manifest::locate::document_start(text);
    if serde_yaml::from_str::<serde_json::Value>(&text[start..]).is_err() {
        return Ok(());
    }
    if let Err(e) = crate::manifest::locate::Locator::new(text)
        && !e.too_deep
        && crate::manifest::document::brackets(text) <= crate::manifest::document::FALLBACK_BRACKETS
        && let Err(err) = crate::manifest::parse(Path::new("m.yaml"), text)
    {
        let refused = err
            .problems()
            .iter()
            .find(|p| p.message.starts_with("invalid YAML"));
        prop_assert!(
            refused.is_none(),
            "serde_yaml reads it, prism does not: {refused:?}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn the_event_pass_accepts_what_serde_yaml_reads(
        example in 0..3usize,
        mutations in prop::collection::vec(mutation(), 0..6),
        noise in prop::collection::vec(yaml_piece(), 0..60),
    ) {
        check_agreement(&apply([CLASS, LAB, TEMPLATES][example], &mutations))?;
        check_agreement(&noise.concat())?;
    }
}

#[test]
fn the_examples_load() {
    let files = Files::new();
    files.write("templates.yaml", TEMPLATES.as_bytes());
    for source in [CLASS, LAB] {
        let path = files.write("m.yaml", source.as_bytes());
        load(&path).expect("example loads");
    }
    load_templates(&files.write("t.yaml", TEMPLATES.as_bytes())).expect("templates load");
}
