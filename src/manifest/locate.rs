//! Where each value of a YAML document stands in its source.
//!
//! serde_yaml gives a location for the first syntax or type error only. To report every
//! problem at once, the manifest is validated as a JSON value (against the schema and by
//! the cross-field checks), and each problem's JSON pointer is mapped back to the source
//! through this index, built from the YAML event stream.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A range of the source, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub offset: usize,
    pub len: usize,
}

/// The key and value positions of one node.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    key: Option<Span>,
    value: Option<Span>,
}

/// JSON pointer → source span, for one YAML document.
#[derive(Debug, Default)]
pub struct Locator {
    entries: HashMap<String, Entry>,
}

impl Locator {
    /// Indexes `source`. A document the event parser cannot read yields an empty index,
    /// so every lookup falls back to the start of the file.
    pub fn new(source: &str) -> Self {
        let mut builder = Builder {
            source,
            line_starts: line_starts(source),
            frames: Vec::new(),
            entries: HashMap::new(),
        };
        let mut parser = Parser::new_from_str(source);
        if parser.load(&mut builder, false).is_err() {
            return Locator::default();
        }
        Locator {
            entries: builder.entries,
        }
    }

    /// The span of the value at `pointer`, or of its nearest located ancestor.
    pub fn value(&self, pointer: &str) -> Span {
        self.find(pointer, |e| e.value.or(e.key))
    }

    /// The span of the key that introduces `pointer` (its value's span for list items).
    pub fn key(&self, pointer: &str) -> Span {
        self.find(pointer, |e| e.key.or(e.value))
    }

    fn find(&self, pointer: &str, pick: impl Fn(&Entry) -> Option<Span>) -> Span {
        let mut p = pointer;
        loop {
            if p.is_empty() {
                // The document itself: its first line.
                return Span { offset: 0, len: 0 };
            }
            if let Some(span) = self.entries.get(p).and_then(&pick) {
                return span;
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return Span { offset: 0, len: 0 },
            }
        }
    }
}

/// Escapes one JSON-pointer segment (RFC 6901).
pub fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

fn line_starts(source: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(source.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

enum Frame {
    Mapping { path: String, key: Option<String> },
    Sequence { path: String, index: usize },
}

struct Builder<'a> {
    source: &'a str,
    line_starts: Vec<usize>,
    frames: Vec<Frame>,
    entries: HashMap<String, Entry>,
}

impl Builder<'_> {
    /// Byte offset of a marker, from its 1-based line and 0-based column (in characters).
    fn offset(&self, mark: Marker) -> usize {
        let Some(&start) = self.line_starts.get(mark.line().saturating_sub(1)) else {
            return self.source.len();
        };
        let line = &self.source[start..];
        let col = mark.col();
        start + line.char_indices().nth(col).map_or(line.len(), |(i, _)| i)
    }

    fn scalar_span(&self, mark: Marker, value: &str, style: TScalarStyle) -> Span {
        let offset = self.offset(mark);
        let rest = &self.source[offset..];
        let line_len = rest.find('\n').unwrap_or(rest.len());
        let len = match style {
            TScalarStyle::Plain => value.len(),
            TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted => value.len() + 2,
            _ => 1,
        };
        Span {
            offset,
            len: len.min(line_len),
        }
    }

    /// The pointer of the node about to be read, or None when it is a mapping key.
    fn next_value_path(&self) -> Option<String> {
        match self.frames.last() {
            None => Some(String::new()),
            Some(Frame::Mapping { path, key: Some(k) }) => Some(format!("{path}/{}", escape(k))),
            Some(Frame::Mapping { key: None, .. }) => None,
            Some(Frame::Sequence { path, index }) => Some(format!("{path}/{index}")),
        }
    }

    /// Moves the innermost container past the node just read.
    fn advance(&mut self) {
        match self.frames.last_mut() {
            Some(Frame::Mapping { key, .. }) => *key = None,
            Some(Frame::Sequence { index, .. }) => *index += 1,
            None => {}
        }
    }

    fn record_value(&mut self, path: String, span: Span) {
        self.entries.entry(path).or_default().value = Some(span);
    }
}

impl MarkedEventReceiver for Builder<'_> {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, style, ..) => {
                let span = self.scalar_span(mark, &value, style);
                match self.next_value_path() {
                    Some(path) => {
                        self.record_value(path, span);
                        self.advance();
                    }
                    None => {
                        if let Some(Frame::Mapping { path, key }) = self.frames.last_mut() {
                            let pointer = format!("{path}/{}", escape(&value));
                            *key = Some(value);
                            self.entries.entry(pointer).or_default().key = Some(span);
                        }
                    }
                }
            }
            Event::Alias(_) => {
                if let Some(path) = self.next_value_path() {
                    let span = Span {
                        offset: self.offset(mark),
                        len: 1,
                    };
                    self.record_value(path, span);
                }
                self.advance();
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let path = self.next_value_path().unwrap_or_default();
                let span = Span {
                    offset: self.offset(mark),
                    len: 0,
                };
                self.record_value(path.clone(), span);
                self.frames.push(if matches!(ev, Event::MappingStart(..)) {
                    Frame::Mapping { path, key: None }
                } else {
                    Frame::Sequence { path, index: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.frames.pop();
                self.advance();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_at(source: &str, span: Span) -> &str {
        &source[span.offset..span.offset + span.len]
    }

    #[test]
    fn finds_keys_values_and_list_items() {
        let src = "name: cs499\ntemplates:\n  python-ml:\n    instance_type: \"t3.xlarge\"\nmembers: [alice, bob]\n";
        let loc = Locator::new(src);
        assert_eq!(text_at(src, loc.value("/name")), "cs499");
        assert_eq!(text_at(src, loc.key("/name")), "name");
        assert_eq!(
            text_at(src, loc.value("/templates/python-ml/instance_type")),
            "\"t3.xlarge\""
        );
        assert_eq!(text_at(src, loc.key("/templates/python-ml")), "python-ml");
        assert_eq!(text_at(src, loc.value("/members/1")), "bob");
    }

    #[test]
    fn falls_back_to_the_nearest_ancestor() {
        let src = "retry:\n  max_retries: 3\n";
        let loc = Locator::new(src);
        assert_eq!(text_at(src, loc.key("/retry/nope")), "retry");
    }

    #[test]
    fn counts_columns_in_characters() {
        let src = "project: \"é\"\nname: x\n";
        let loc = Locator::new(src);
        assert_eq!(text_at(src, loc.value("/name")), "x");
        assert_eq!(text_at(src, loc.value("/project")), "\"é\"");
    }
}
