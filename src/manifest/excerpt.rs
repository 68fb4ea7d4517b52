//! The source lines a diagnostic shows: the problem's line and one on each side, each
//! cut to a window around the problem's column and with hidden characters escaped.
//!
//! Handing miette the whole file would quote a one-line file of megabytes in full, and
//! would print a bidi control raw, letting it reorder the line on the user's terminal.

use miette::{MietteError, MietteSpanContents, SourceCode, SourceSpan, SpanContents};

use super::visible;

/// Characters of a source line shown around the problem's column.
const WIDTH: usize = 100;
/// Of those, how many come before the column when the line must be cut.
const BEFORE: usize = 40;

/// A few lines of a source file, standing at their place in it.
#[derive(Debug, Clone)]
pub struct Excerpt {
    name: String,
    text: String,
    /// 0-based line of the excerpt's first line in the file.
    first_line: usize,
    line_count: usize,
    /// 0-based line and column (in characters) of the problem in the file.
    line: usize,
    column: usize,
}

impl Excerpt {
    /// The lines around `offset` of `source` (whose lines start at `line_starts`), and
    /// where the span `offset..offset + len` (cut to its line) stands in them.
    pub fn new(
        name: &str,
        source: &str,
        line_starts: &[usize],
        offset: usize,
        len: usize,
    ) -> (Excerpt, SourceSpan) {
        let offset = floor_boundary(source, offset.min(source.len()));
        let line = line_starts.partition_point(|&s| s <= offset).max(1) - 1;
        let line_text = |i: usize| {
            let start = line_starts[i];
            let end = line_starts.get(i + 1).map_or(source.len(), |&e| e - 1);
            (start, source[start..end].trim_end_matches('\r'))
        };
        let (start, text) = line_text(line);
        let column = source[start..offset].chars().count();
        let window_start = if text.chars().count() > WIDTH {
            column.saturating_sub(BEFORE)
        } else {
            0
        };
        let end = ceil_boundary(source, (offset + len).min(start + text.len()));
        let first_line = line.saturating_sub(1);
        // The empty "line" after a final newline is shown only when the problem is on it.
        let lines = line_starts.len() - usize::from(source.ends_with('\n'));
        let last_line = (line + 1).min(lines.saturating_sub(1)).max(line);
        let mut out = String::new();
        let (mut span_start, mut span_end) = (0, 0);
        for i in first_line..=last_line {
            if i > first_line {
                out.push('\n');
            }
            let (line_start, text) = line_text(i);
            let shown = window(text, window_start);
            if i == line {
                // The span as byte offsets into `shown`'s source line.
                let (from, to) = (offset - line_start, end - line_start);
                span_start = out.len() + shown.position(from);
                span_end = out.len() + shown.position(to);
            }
            out.push_str(&shown.text);
        }
        let excerpt = Excerpt {
            name: name.to_string(),
            line_count: last_line - first_line + 1,
            text: out,
            first_line,
            line,
            column,
        };
        (excerpt, (span_start, span_end - span_start).into())
    }

    /// 0-based line and column (in characters) of the problem in the file.
    pub fn line_column(&self) -> (usize, usize) {
        (self.line, self.column)
    }
}

/// One line as shown, with where each of its source bytes went.
struct Shown {
    text: String,
    /// (byte in the source line, byte in `text`), in order.
    map: Vec<(usize, usize)>,
    /// Where a source byte past the window goes.
    end: usize,
}

impl Shown {
    fn position(&self, source_byte: usize) -> usize {
        let i = self.map.partition_point(|&(s, _)| s < source_byte);
        self.map.get(i).map_or(self.end, |&(_, t)| t)
    }
}

/// The characters `from..from + WIDTH` of `line`, escaped, with `…` where cut.
fn window(line: &str, from: usize) -> Shown {
    let begin = line.char_indices().nth(from).map_or(line.len(), |(i, _)| i);
    let finish = line[begin..]
        .char_indices()
        .nth(WIDTH)
        .map_or(line.len(), |(i, _)| begin + i);
    let mut text = String::new();
    if begin > 0 {
        text.push('…');
    }
    let mut map = Vec::new();
    visible::show(&line[begin..finish], |i, piece| {
        map.push((begin + i, text.len()));
        text.push_str(piece);
    });
    let end = text.len();
    if finish < line.len() {
        text.push('…');
    }
    Shown { text, map, end }
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

impl SourceCode for Excerpt {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        if context_lines_before == 0 && context_lines_after == 0 {
            // The label alone, read for the `file:line:column` over the snippet: the
            // problem's place in the file, not in the excerpt.
            let start = span.offset().min(self.text.len());
            let end = (start + span.len()).min(self.text.len());
            return Ok(Box::new(MietteSpanContents::new_named(
                self.name.clone(),
                &self.text.as_bytes()[start..end],
                *span,
                self.line,
                self.column,
                1,
            )));
        }
        Ok(Box::new(MietteSpanContents::new_named(
            self.name.clone(),
            self.text.as_bytes(),
            (0, self.text.len()).into(),
            self.first_line,
            0,
            self.line_count,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn excerpt(source: &str, offset: usize, len: usize) -> (Excerpt, String) {
        let starts: Vec<usize> = std::iter::once(0)
            .chain(source.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        let (e, span) = Excerpt::new("f.yaml", source, &starts, offset, len);
        let under = e.text[span.offset()..span.offset() + span.len()].to_string();
        (e, under)
    }

    #[test]
    fn keeps_one_line_on_each_side() {
        let src = "a: 1\nb: 2\nc: 3\nd: 4\n";
        let (e, under) = excerpt(src, 10, 1);
        assert_eq!(e.text, "b: 2\nc: 3\nd: 4");
        assert_eq!((e.first_line, e.line, e.column), (1, 2, 0));
        assert_eq!(under, "c");
    }

    #[test]
    fn cuts_a_long_line_around_the_column() {
        let src = format!("name: {}x{}\n", "a".repeat(5_000_000), "b".repeat(1000));
        let offset = 6 + 5_000_000;
        let (e, under) = excerpt(&src, offset, 1);
        assert_eq!(under, "x");
        assert!(e.text.len() < 300, "{}", e.text.len());
        assert!(
            e.text.starts_with('…') && e.text.ends_with('…'),
            "{}",
            e.text
        );
        assert_eq!(e.column, offset);
    }

    #[test]
    fn escapes_hidden_characters_and_keeps_the_span_on_them() {
        let src = "members: [a\u{200b}b, \u{202e}c]\n";
        let (e, under) = excerpt(src, 10, 5);
        assert_eq!(e.text, "members: [a\\u{200b}b, \\u{202e}c]");
        assert_eq!(under, "a\\u{200b}b");
    }

    #[test]
    fn an_empty_file_or_a_span_at_the_end_is_fine() {
        let (e, under) = excerpt("", 0, 0);
        assert_eq!((e.text.as_str(), under.as_str()), ("", ""));
        let (_, under) = excerpt("a: 1\n", 5, 3);
        assert_eq!(under, "");
        let (_, under) = excerpt("a: é", 4, 1);
        assert_eq!(under, "é");
    }
}
