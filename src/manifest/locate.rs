//! Where each value of a YAML document stands in its source.
//!
//! serde_yaml gives a location for the first syntax or type error only. To report every
//! problem at once, the manifest is validated as a JSON value (against the schema and by
//! the cross-field checks), and each problem's JSON pointer is mapped back to the source
//! through this index, built from the YAML event stream.
//!
//! This pass also guards what comes after it. It reads the events one at a time and
//! stops at the first node nested deeper than [`MAX_DEPTH`], before serde_yaml, whose
//! scanner takes time quadratic in the nesting, sees the text. And it notes every key
//! that a mapping repeats, which serde_yaml would let the last one win silently.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, ScanError, TScalarStyle};

/// Deepest nesting of mappings and lists a document may have. A manifest needs four
/// (templates, a template, its image, the image's owner).
pub const MAX_DEPTH: usize = 32;

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

/// A key written a second time in the same mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// The key as read.
    pub key: String,
    /// The pointer of the key's value.
    pub pointer: String,
    /// Where the key is first written.
    pub first: Span,
    /// Where it is written again.
    pub again: Span,
}

/// Why a document could not be indexed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Where the parser stopped.
    pub offset: usize,
    /// What it found, in the parser's words.
    pub message: String,
    /// Whether it stopped because the document nests deeper than [`MAX_DEPTH`].
    pub too_deep: bool,
}

/// JSON pointer → source span, for one YAML document.
#[derive(Debug, Default)]
pub struct Locator {
    entries: HashMap<String, Entry>,
    duplicates: Vec<Duplicate>,
}

impl Locator {
    /// Indexes `source`, or says where it stops being YAML this pass accepts.
    pub fn new(source: &str) -> Result<Self, SyntaxError> {
        // A byte-order mark (Windows editors write one) is not part of the document.
        let bom = document_start(source);
        // yaml-rust2 refuses a tab after `:`, which YAML and serde_yaml allow. Read as a
        // space, a tab keeps every offset, and no bracket moves.
        let untabbed;
        let body = match source[bom..].contains('\t') {
            true => {
                untabbed = source[bom..].replace('\t', " ");
                untabbed.as_str()
            }
            false => &source[bom..],
        };
        let mut locator = Self::index(body).map_err(|e| SyntaxError {
            offset: e.offset + bom,
            ..e
        })?;
        let shift = |s: Span| Span {
            offset: s.offset + bom,
            len: s.len,
        };
        for e in locator.entries.values_mut() {
            e.key = e.key.map(shift);
            e.value = e.value.map(shift);
        }
        for d in &mut locator.duplicates {
            d.first = shift(d.first);
            d.again = shift(d.again);
        }
        Ok(locator)
    }

    fn index(source: &str) -> Result<Self, SyntaxError> {
        let mut builder = Builder {
            source,
            line_starts: line_starts(source),
            cursor: Cursor::default(),
            frames: Vec::new(),
            entries: HashMap::new(),
            duplicates: Vec::new(),
        };
        let mut parser = Parser::new_from_str(source);
        loop {
            let (event, mark) = parser.next_token().map_err(|e| builder.scan_error(&e))?;
            if matches!(event, Event::StreamEnd) {
                break;
            }
            builder.on_event(event, mark)?;
        }
        Ok(Locator {
            entries: builder.entries,
            duplicates: builder.duplicates,
        })
    }

    /// The keys written twice, in source order of their second writing.
    pub fn duplicates(&self) -> &[Duplicate] {
        &self.duplicates
    }

    /// Whether the document writes `pointer`.
    pub fn contains(&self, pointer: &str) -> bool {
        self.entries.contains_key(pointer)
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

/// Where the document starts in `source`: after a byte-order mark, if there is one.
pub fn document_start(source: &str) -> usize {
    if source.starts_with('\u{feff}') {
        '\u{feff}'.len_utf8()
    } else {
        0
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

/// What a mapping reads next.
enum Expect {
    Key,
    /// The value of this key.
    Value(String),
    /// The value of a key that is itself a mapping, list or alias.
    ValueOfComplexKey,
}

enum Frame {
    Mapping {
        path: String,
        expect: Expect,
        seen: HashMap<String, Span>,
    },
    Sequence {
        path: String,
        index: usize,
    },
}

/// The last marker turned into an offset, so that the next one on the same line is
/// found from there: one long line costs its length once, not once per node.
#[derive(Default)]
struct Cursor {
    line: usize,
    col: usize,
    offset: usize,
}

struct Builder<'a> {
    source: &'a str,
    line_starts: Vec<usize>,
    cursor: Cursor,
    frames: Vec<Frame>,
    entries: HashMap<String, Entry>,
    duplicates: Vec<Duplicate>,
}

impl Builder<'_> {
    /// Byte offset of a marker, from its 1-based line and 0-based column (in characters).
    fn offset(&mut self, mark: Marker) -> usize {
        let Some(&start) = self.line_starts.get(mark.line().saturating_sub(1)) else {
            return self.source.len();
        };
        let (col, from) = if self.cursor.line == mark.line() && self.cursor.col <= mark.col() {
            (self.cursor.col, self.cursor.offset)
        } else {
            (0, start)
        };
        let rest = &self.source[from..];
        let offset = from
            + rest
                .char_indices()
                .nth(mark.col() - col)
                .map_or(rest.len(), |(i, _)| i);
        self.cursor = Cursor {
            line: mark.line(),
            col: mark.col(),
            offset,
        };
        offset
    }

    fn scan_error(&mut self, e: &ScanError) -> SyntaxError {
        let too_deep = e.info().contains("recursion limit");
        SyntaxError {
            offset: self.offset(*e.marker()),
            message: e.info().to_string(),
            too_deep,
        }
    }

    fn scalar_span(&mut self, mark: Marker, value: &str, style: TScalarStyle) -> Span {
        let offset = self.offset(mark);
        let len = match style {
            TScalarStyle::Plain => value.len(),
            TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted => value.len() + 2,
            _ => 1,
        };
        // Up to the end of the line, and only as far as needed to find it.
        let mut end = (offset + len).min(self.source.len());
        while !self.source.is_char_boundary(end) {
            end -= 1;
        }
        let text = &self.source[offset..end];
        Span {
            offset,
            len: text.find('\n').unwrap_or(text.len()),
        }
    }

    /// The pointer of the node about to be read, or None when it is a mapping key.
    fn next_value_path(&self) -> Option<String> {
        match self.frames.last() {
            None => Some(String::new()),
            Some(Frame::Mapping { path, expect, .. }) => match expect {
                Expect::Key => None,
                Expect::Value(k) => Some(format!("{path}/{}", escape(k))),
                // Never looked up: no JSON pointer names it.
                Expect::ValueOfComplexKey => Some(format!("{path}/?")),
            },
            Some(Frame::Sequence { path, index }) => Some(format!("{path}/{index}")),
        }
    }

    /// Moves the innermost container past the node just read.
    fn advance(&mut self) {
        match self.frames.last_mut() {
            Some(Frame::Mapping { expect, .. }) => {
                *expect = match expect {
                    Expect::Key => Expect::ValueOfComplexKey,
                    _ => Expect::Key,
                }
            }
            Some(Frame::Sequence { index, .. }) => *index += 1,
            None => {}
        }
    }

    fn record_value(&mut self, path: String, span: Span) {
        self.entries.entry(path).or_default().value = Some(span);
    }

    /// A scalar read where a mapping expects a key.
    fn record_key(&mut self, value: String, span: Span) {
        let Some(Frame::Mapping { path, expect, seen }) = self.frames.last_mut() else {
            return;
        };
        let pointer = format!("{path}/{}", escape(&value));
        match seen.get(&value) {
            Some(&first) => self.duplicates.push(Duplicate {
                key: value.clone(),
                pointer: pointer.clone(),
                first,
                again: span,
            }),
            None => {
                seen.insert(value.clone(), span);
            }
        }
        *expect = Expect::Value(value);
        self.entries.entry(pointer).or_default().key = Some(span);
    }

    fn on_event(&mut self, ev: Event, mark: Marker) -> Result<(), SyntaxError> {
        match ev {
            Event::Scalar(value, style, ..) => {
                let span = self.scalar_span(mark, &value, style);
                match self.next_value_path() {
                    Some(path) => {
                        self.record_value(path, span);
                        self.advance();
                    }
                    None => self.record_key(value, span),
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
                let offset = self.offset(mark);
                if self.frames.len() >= MAX_DEPTH {
                    return Err(SyntaxError {
                        offset,
                        message: format!("nested deeper than {MAX_DEPTH} levels"),
                        too_deep: true,
                    });
                }
                let path = match self.next_value_path() {
                    Some(path) => {
                        self.record_value(path.clone(), Span { offset, len: 0 });
                        path
                    }
                    None => match self.frames.last() {
                        Some(Frame::Mapping { path, .. }) => format!("{path}/?"),
                        _ => String::new(),
                    },
                };
                self.frames.push(if matches!(ev, Event::MappingStart(..)) {
                    Frame::Mapping {
                        path,
                        expect: Expect::Key,
                        seen: HashMap::new(),
                    }
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
        Ok(())
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
        let loc = Locator::new(src).unwrap();
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
        let loc = Locator::new(src).unwrap();
        assert_eq!(text_at(src, loc.key("/retry/nope")), "retry");
    }

    #[test]
    fn counts_columns_in_characters() {
        let src = "project: \"é\"\nname: x\n";
        let loc = Locator::new(src).unwrap();
        assert_eq!(text_at(src, loc.value("/name")), "x");
        assert_eq!(text_at(src, loc.value("/project")), "\"é\"");
    }

    #[test]
    fn notes_keys_written_twice_in_one_mapping() {
        let src = "count: 3\nprune: false\ntemplates:\n  t: {image: a, image: b}\ncount: 5\n";
        let loc = Locator::new(src).unwrap();
        let found: Vec<_> = loc
            .duplicates()
            .iter()
            .map(|d| {
                (
                    d.key.as_str(),
                    d.pointer.as_str(),
                    text_at(src, d.first),
                    d.first.offset,
                    d.again.offset,
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                ("image", "/templates/t/image", "image", 39, 49),
                ("count", "/count", "count", 0, 59),
            ]
        );
        assert_eq!(text_at(src, loc.value("/count")), "5");
    }

    #[test]
    fn the_same_key_in_different_mappings_is_no_duplicate() {
        let src = "a: {x: 1}\nb: {x: 2}\nl: [{x: 1}, {x: 2}]\n? [k]\n: x\n? [k2]\n: x\nx: 3\n";
        let loc = Locator::new(src).unwrap();
        assert_eq!(loc.duplicates(), []);
    }

    #[test]
    fn stops_at_the_first_node_nested_too_deep() {
        for src in [
            "[".repeat(100_000),
            "- ".repeat(100_000),
            "{a: ".repeat(1000),
        ] {
            let err = Locator::new(&src).unwrap_err();
            assert!(err.too_deep, "{err:?}");
            // At the latest where the scanner's own limit of 255 open brackets is.
            assert!(err.offset <= 4 * 256, "{err:?}");
        }
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(Locator::new(&ok).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        let err = Locator::new(&deep).unwrap_err();
        assert_eq!((err.offset, err.too_deep), (MAX_DEPTH, true));
    }

    #[test]
    fn reports_where_a_syntax_error_is() {
        let src = "name: lab\nproject: [p\ntemplate: t\n";
        let err = Locator::new(src).unwrap_err();
        assert!(!err.too_deep);
        assert!(err.offset > 10, "{err:?}");
    }

    #[test]
    fn finds_nodes_on_one_long_line() {
        let keys: Vec<String> = (0..2000).map(|i| format!("k{i}: v{i}")).collect();
        let src = format!("{{{}}}", keys.join(", "));
        let loc = Locator::new(&src).unwrap();
        assert_eq!(text_at(&src, loc.value("/k1999")), "v1999");
        assert_eq!(text_at(&src, loc.key("/k1000")), "k1000");
    }

    #[test]
    fn reads_past_a_byte_order_mark_and_tabs() {
        let src = "\u{feff}name: lab\ncount:\t2\ncount: 3\n";
        let loc = Locator::new(src).unwrap();
        assert_eq!(text_at(src, loc.value("/name")), "lab");
        assert_eq!(text_at(src, loc.value("/count")), "3");
        assert_eq!(text_at(src, loc.duplicates()[0].first), "count");
        let err = Locator::new("\u{feff}a: [b\n").unwrap_err();
        assert!(err.offset >= 3, "{err:?}");
    }
}
