//! A parsed YAML document of a manifest or templates file, with what is needed to
//! point into it: the value, the index of where each value is written, the keys
//! written twice.

use serde_json::Value;

use super::diagnostic::{MAX_PROBLEMS, Problem, SourceFile};
use super::locate::{Locator, MAX_DEPTH, Span, SyntaxError, document_start};
use super::read::{self, MAX_BYTES};

/// A parsed YAML document with what is needed to point into it.
pub(super) struct Document {
    pub(super) src: SourceFile,
    pub(super) loc: Locator,
    pub(super) value: Value,
    /// Keys written twice: the document is read, but they are problems.
    pub(super) duplicates: Vec<Problem>,
}

impl Document {
    /// Reads `text` in steps that each bound the work of the next: its size, then an
    /// event pass that stops at excessive nesting (and notes repeated keys), and only
    /// then serde_yaml, which builds the value.
    pub(super) fn read(name: String, text: &str) -> Result<Self, Vec<Problem>> {
        let src = SourceFile::new(name, text);
        if text.len() > MAX_BYTES {
            return Err(vec![read::too_large(&src, Some(text.len() as u64))]);
        }
        let loc = match Locator::new(text) {
            Ok(loc) => loc,
            // yaml-rust2 is stricter than serde_yaml's libyaml in places (a quoted value
            // continued on a line indented too little). What libyaml reads is read, with
            // an empty index, when its scanner cannot be made to work hard: its time
            // grows with the nesting of brackets, and there are few.
            Err(e) if !e.too_deep && brackets(text) <= FALLBACK_BRACKETS => Locator::default(),
            Err(e) => return Err(vec![syntax_problem(&src, &e)]),
        };
        let duplicates: Vec<Problem> = loc
            .duplicates()
            .iter()
            .take(MAX_PROBLEMS + 1)
            .map(|d| {
                let (line, column) = src.line_col(d.first.offset);
                src.problem(
                    d.again,
                    &d.pointer,
                    format!("key `{}` is written twice in this mapping; first at line {line}, column {column}", d.key),
                    "written again here",
                    Some("YAML would keep only the last value and drop the first without a word: remove one of them".into()),
                )
            })
            .collect();
        let start = document_start(text);
        let value: Value = serde_yaml::from_str(&text[start..]).map_err(|e| {
            let offset = start + e.location().map_or(0, |l| l.index());
            let message = e.to_string();
            let message = message.split(" at line ").next().unwrap_or(&message);
            let mut problems = duplicates.clone();
            problems.push(src.problem(
                Span { offset, len: 1 },
                "",
                format!("invalid YAML: {message}"),
                "here",
                Some("check indentation and quoting around this place".into()),
            ));
            problems
        })?;
        Ok(Document {
            loc,
            src,
            value,
            duplicates,
        })
    }

    pub(super) fn at_value(
        &self,
        pointer: &str,
        message: String,
        label: &str,
        hint: Option<String>,
    ) -> Problem {
        self.src
            .problem(self.loc.value(pointer), pointer, message, label, hint)
    }

    pub(super) fn at_key(
        &self,
        pointer: &str,
        message: String,
        label: &str,
        hint: Option<String>,
    ) -> Problem {
        self.src
            .problem(self.loc.key(pointer), pointer, message, label, hint)
    }
}

/// Most opening brackets a document the event pass refuses may have, for serde_yaml to
/// read it still (its scanner's time is at most this many times the text's length).
pub(super) const FALLBACK_BRACKETS: usize = 128;

/// How many flow collections `text` opens at most.
pub(super) fn brackets(text: &str) -> usize {
    text.bytes().filter(|&b| b == b'[' || b == b'{').count()
}

/// Where the event pass stopped: too deep a nesting, or not YAML.
fn syntax_problem(src: &SourceFile, e: &SyntaxError) -> Problem {
    let span = Span {
        offset: e.offset,
        len: 1,
    };
    if e.too_deep {
        return src.problem(
            span,
            "",
            format!("the document is nested more than {} levels deep", MAX_DEPTH),
            "too deep",
            Some("a manifest needs four levels at most (templates, a template, its image, the owner): look for a `[` or `{` that is never closed".into()),
        );
    }
    src.problem(
        span,
        "",
        format!("invalid YAML: {}", e.message),
        "here",
        Some("check indentation and quoting around this place".into()),
    )
}
