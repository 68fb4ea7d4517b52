//! Manifest problems, each pointing at a file, line and column.

use std::sync::Arc;

use miette::{Diagnostic, SourceSpan};
use serde::Serialize;
use thiserror::Error;

use super::excerpt::Excerpt;
use super::locate::Span;
use super::visible;

/// Problems listed at most, so that a file of a million mistakes is still reported at
/// once and readably; more are summed up in one line.
pub const MAX_PROBLEMS: usize = 100;

/// One problem in a manifest (or its templates file), at a place in its source.
#[derive(Debug, Clone, Error, Diagnostic, Serialize)]
#[error("{message}")]
pub struct Problem {
    /// What is wrong, with invisible and lookalike characters of the user's text escaped.
    pub message: String,
    /// The file the problem is in.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The JSON pointer of the offending value, e.g. `/templates/python-ml/image`.
    pub pointer: String,
    /// How to fix it.
    #[help]
    pub hint: Option<String>,
    /// A short text under the offending source.
    #[serde(skip)]
    pub label: String,
    #[label("{label}")]
    #[serde(skip)]
    span: SourceSpan,
    #[source_code]
    #[serde(skip)]
    src: Excerpt,
}

/// A source file and its name, shared by the problems found in it.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub name: String,
    pub text: Arc<str>,
    /// Byte offset of the start of every line.
    line_starts: Arc<[usize]>,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: impl Into<Arc<str>>) -> Self {
        let text: Arc<str> = text.into();
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        SourceFile {
            name: name.into(),
            text,
            line_starts,
        }
    }

    /// A problem at `span` of this file.
    pub fn problem(
        &self,
        span: Span,
        pointer: &str,
        message: impl Into<String>,
        label: impl Into<String>,
        hint: Option<String>,
    ) -> Problem {
        let (src, excerpt_span) = Excerpt::new(
            &self.name,
            &self.text,
            &self.line_starts,
            span.offset,
            span.len,
        );
        let (line, column) = src.line_column();
        Problem {
            message: visible::for_message(&message.into()),
            file: self.name.clone(),
            line: line + 1,
            column: column + 1,
            pointer: pointer.to_string(),
            hint: hint.map(|h| visible::for_message(&h)),
            label: visible::for_message(&label.into()),
            span: excerpt_span,
            src,
        }
    }
}

impl SourceFile {
    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1) - 1;
        let start = self.line_starts[line];
        let column = self
            .text
            .get(start..offset)
            .map_or(0, |t| t.chars().count());
        (line + 1, column + 1)
    }
}

/// Why a manifest could not be loaded.
#[derive(Debug, Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file was read, and has these problems (all of them, in source order, or the
    /// first [`MAX_PROBLEMS`] when `more` says there are others).
    #[error("{}", summary(path, problems.len(), *more))]
    Invalid {
        path: String,
        problems: Vec<Problem>,
        more: bool,
    },
}

fn summary(path: &str, count: usize, more: bool) -> String {
    match (count, more) {
        (1, false) => format!("{path}: 1 problem in the manifest"),
        (n, false) => format!("{path}: {n} problems in the manifest"),
        (n, true) => {
            format!("{path}: more than {n} problems in the manifest (the first {n} are listed)")
        }
    }
}

impl ManifestError {
    /// The problems found, empty when the file could not be read.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ManifestError::Invalid { problems, .. } => problems,
            ManifestError::Read { .. } => &[],
        }
    }
}

/// The closest candidate to `word`, if close enough to be a likely typo.
pub fn did_you_mean(word: &str, candidates: &[String]) -> Option<String> {
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.clone())
}
