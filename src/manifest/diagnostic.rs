//! Manifest problems, each pointing at a file, line and column.

use std::sync::Arc;

use miette::{Diagnostic, NamedSource, SourceSpan};
use serde::Serialize;
use thiserror::Error;

use super::locate::Span;

/// One problem in a manifest (or its templates file), at a place in its source.
#[derive(Debug, Clone, Error, Diagnostic, Serialize)]
#[error("{message}")]
pub struct Problem {
    /// What is wrong.
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
    src: NamedSource<Arc<str>>,
}

/// A source file and its name, shared by the problems found in it.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub name: String,
    pub text: Arc<str>,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: impl Into<Arc<str>>) -> Self {
        SourceFile {
            name: name.into(),
            text: text.into(),
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
        let (line, column) = self.line_col(span.offset);
        Problem {
            message: message.into(),
            file: self.name.clone(),
            line,
            column,
            pointer: pointer.to_string(),
            hint,
            label: label.into(),
            span: (span.offset, span.len).into(),
            src: NamedSource::new(self.name.clone(), self.text.clone()),
        }
    }

    fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[line_start..].chars().count() + 1)
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
    /// The file was read, and has these problems (all of them, in source order).
    #[error("{path}: {} problem{} in the manifest", problems.len(), if problems.len() == 1 { "" } else { "s" })]
    Invalid {
        path: String,
        problems: Vec<Problem>,
    },
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
