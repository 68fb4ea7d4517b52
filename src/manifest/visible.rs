//! User text made safe to show in a diagnostic.
//!
//! Manifests arrive from editors, web pages and scripts. A zero-width space, a bidi
//! control or a Cyrillic `о` inside a name reads like the name the user meant, so
//! "`a​b` is not a valid member name" would look like a false alarm about `ab`. Such
//! characters are shown as `\u{200b}` escapes: invisible ones always, lookalikes of
//! ASCII when they sit in a word that also has ASCII letters or digits (a word of
//! Cyrillic or Greek alone is real text and is left as written). Values as long as the
//! file are shortened, so one message stays one readable line.

use unicode_general_category::{GeneralCategory, get_general_category};

/// Characters of a quoted value kept in a message; longer values are shortened.
const QUOTED_CHARS: usize = 60;
/// Characters kept of a whole message, label or hint.
const TEXT_CHARS: usize = 1000;

/// Whether `c` shows as nothing or as blank, or moves the text around it.
pub fn is_invisible(c: char) -> bool {
    if c == ' ' {
        return false;
    }
    use GeneralCategory::*;
    matches!(
        get_general_category(c),
        Control
            | Format
            | SpaceSeparator
            | LineSeparator
            | ParagraphSeparator
            | PrivateUse
            | Unassigned
            | Surrogate
    ) || matches!(c,
        // Marks and letters that draw nothing: combining grapheme joiner, Hangul
        // fillers, Khmer inherent vowels, Mongolian and other variation selectors,
        // the blank Braille pattern.
        '\u{034f}' | '\u{115f}' | '\u{1160}' | '\u{17b4}' | '\u{17b5}'
        | '\u{180b}'..='\u{180f}' | '\u{2800}' | '\u{3164}' | '\u{ffa0}'
        | '\u{fe00}'..='\u{fe0f}' | '\u{e0100}'..='\u{e01ef}')
}

/// Whether `c` can pass for an ASCII letter, digit or punctuation next to them: IPA,
/// Greek, Cyrillic, Armenian and Cherokee letters, dashes, super- and subscripts,
/// letterlike symbols, Roman numerals, small and fullwidth forms, mathematical letters.
pub fn is_lookalike(c: char) -> bool {
    matches!(c as u32,
        0x0250..=0x02ff | 0x0370..=0x058f | 0x13a0..=0x13ff | 0x2010..=0x2015
        | 0x2070..=0x209f | 0x2100..=0x214f | 0x2160..=0x217f | 0x2212 | 0xa789
        | 0xfe50..=0xfe6f | 0xff01..=0xff5e | 0x1d400..=0x1d7ff)
}

/// How a hidden character is written: `\t`, `\n`, `\r` or `\u{hex}`.
pub fn escape_char(c: char) -> String {
    match c {
        '\t' => "\\t".into(),
        '\n' => "\\n".into(),
        '\r' => "\\r".into(),
        c => format!("\\u{{{:x}}}", c as u32),
    }
}

/// Walks `s` as shown: calls `emit(byte_index, piece)` for every character, `piece`
/// being the character itself or its escape. Words are split at ASCII whitespace and
/// backticks, so a message's quoting does not hide a mixed word.
pub fn show(s: &str, mut emit: impl FnMut(usize, &str)) {
    let mut buf = [0u8; 4];
    for (start, word) in words(s) {
        let mixed = word.chars().any(|c| c.is_ascii_alphanumeric());
        for (i, c) in word.char_indices() {
            if is_invisible(c) || (mixed && is_lookalike(c)) {
                emit(start + i, &escape_char(c));
            } else {
                emit(start + i, c.encode_utf8(&mut buf));
            }
        }
    }
}

/// `s` split into runs that are words or separators, each with its byte offset.
fn words(s: &str) -> impl Iterator<Item = (usize, &str)> {
    let is_sep = |c: char| c == '`' || c.is_ascii_whitespace();
    let mut rest = 0;
    std::iter::from_fn(move || {
        let tail = &s[rest..];
        let first = tail.chars().next()?;
        let len = if is_sep(first) {
            first.len_utf8()
        } else {
            tail.find(is_sep).unwrap_or(tail.len())
        };
        let start = rest;
        rest += len;
        Some((start, &tail[..len]))
    })
}

/// `s` with its hidden characters escaped.
pub fn escaped(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    show(s, |_, piece| out.push_str(piece));
    out
}

/// A message, label or hint as shown: long quoted values shortened, the whole cut to a
/// readable length, hidden characters escaped.
pub fn for_message(s: &str) -> String {
    let clipped = clip_quoted(s);
    let clipped = match clipped.char_indices().nth(TEXT_CHARS) {
        Some((i, _)) => format!("{}…", &clipped[..i]),
        None => clipped,
    };
    escaped(&clipped)
}

/// Shortens every backtick-quoted value longer than [`QUOTED_CHARS`] to its start and
/// end, followed by its length.
fn clip_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(4 * TEXT_CHARS));
    // The length of the value just shortened, written after its closing backtick.
    let mut note = None;
    for (i, part) in s.split('`').enumerate() {
        if i > 0 {
            out.push('`');
        }
        if let Some(chars) = note.take() {
            out.push_str(&format!(" ({chars} characters)"));
        }
        let chars = part.chars().count();
        if i % 2 == 0 || chars <= QUOTED_CHARS {
            out.push_str(part);
            continue;
        }
        out.extend(part.chars().take(QUOTED_CHARS - 10));
        out.push('…');
        out.extend(part.chars().skip(chars - 8));
        note = Some(chars);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_characters_are_always_escaped() {
        for (raw, shown) in [
            ("a\u{200b}b", "a\\u{200b}b"),
            ("\u{202e}evil", "\\u{202e}evil"),
            ("\u{feff}name", "\\u{feff}name"),
            ("tab\there", "tab\\there"),
            ("nb\u{a0}sp", "nb\\u{a0}sp"),
            ("\u{3164}", "\\u{3164}"),
            ("x\u{fe0f}", "x\\u{fe0f}"),
            ("\u{7}bell", "\\u{7}bell"),
        ] {
            assert_eq!(escaped(raw), shown, "{raw:?}");
        }
    }

    #[test]
    fn lookalikes_are_escaped_only_in_mixed_words() {
        // Cyrillic о in an ASCII word; a Unicode hyphen between ASCII letters.
        assert_eq!(escaped("c\u{43e}unt"), "c\\u{43e}unt");
        assert_eq!(escaped("cs499\u{2010}lab"), "cs499\\u{2010}lab");
        assert_eq!(escaped("ｃount"), "\\u{ff43}ount");
        // Real Cyrillic and Greek text, accents and our own dashes stay as written.
        assert_eq!(escaped("физика"), "физика");
        assert_eq!(escaped("λόγος"), "λόγος");
        assert_eq!(escaped("café"), "café");
        assert_eq!(escaped("valid — fleet"), "valid — fleet");
        // Backticks end a word: the quoted value is judged on its own.
        assert_eq!(escaped("key `c\u{43e}unt`"), "key `c\\u{43e}unt`");
        assert_eq!(escaped("member `физика`"), "member `физика`");
    }

    #[test]
    fn show_reports_the_source_index_of_each_piece() {
        let mut seen = Vec::new();
        show("é\u{200b}x", |i, piece| seen.push((i, piece.to_string())));
        assert_eq!(
            seen,
            [(0, "é".into()), (2, "\\u{200b}".into()), (5, "x".into())]
        );
    }

    #[test]
    fn long_quoted_values_are_shortened() {
        let long = "a".repeat(100_000);
        let shown = for_message(&format!("`{long}` is not a valid fleet name"));
        assert_eq!(
            shown,
            format!(
                "`{}…{}` (100000 characters) is not a valid fleet name",
                "a".repeat(50),
                "a".repeat(8)
            )
        );
        assert_eq!(for_message("`short` stays"), "`short` stays");
    }

    #[test]
    fn long_messages_are_cut() {
        let shown = for_message(&"word ".repeat(10_000));
        assert_eq!(shown.chars().count(), TEXT_CHARS + 1);
        assert!(shown.ends_with('…'));
    }
}
