//! Reading a manifest file: at most [`MAX_BYTES`], and UTF-8 text.
//!
//! `prism watch` reads the manifest again on every save, and a manifest may be any file
//! a user points at. Reading stops one byte past the limit, so a huge file, a device or
//! a pipe that never ends is refused without being read in full.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::diagnostic::{Problem, SourceFile};
use super::locate::Span;

/// The largest manifest or templates file read: 1 MiB, far more than any fleet needs.
pub const MAX_BYTES: usize = 1024 * 1024;

/// Why a file yields no text.
#[derive(Debug)]
pub enum Unreadable {
    /// It could not be opened or read.
    Io(std::io::Error),
    /// It was read, and is too large or not UTF-8.
    Problem(Box<Problem>),
}

impl From<std::io::Error> for Unreadable {
    fn from(e: std::io::Error) -> Self {
        Unreadable::Io(e)
    }
}

/// The text of the file at `path`, named `name` in diagnostics.
pub fn text(path: &Path, name: &str) -> Result<String, Unreadable> {
    let file = File::open(path)?;
    let size = file.metadata().map_or(0, |m| m.len());
    let mut bytes = Vec::new();
    file.take(MAX_BYTES as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > MAX_BYTES {
        // A device or a pipe has no size: it is at least what was read.
        let size = (size > MAX_BYTES as u64).then_some(size);
        let src = SourceFile::new(name, String::from_utf8_lossy(&bytes).into_owned());
        return Err(Unreadable::Problem(Box::new(too_large(&src, size))));
    }
    decode(name, bytes).map_err(Unreadable::Problem)
}

/// The problem of a file over [`MAX_BYTES`] (of `size` bytes, when known).
pub fn too_large(src: &SourceFile, size: Option<u64>) -> Problem {
    let size = match size {
        Some(n) => format!("{} ({n} bytes)", human(n)),
        None => "larger than that".into(),
    };
    src.problem(
        Span { offset: 0, len: 0 },
        "",
        format!(
            "the file is {size}; a manifest may be at most {} ({MAX_BYTES} bytes)",
            human(MAX_BYTES as u64)
        ),
        "the file starts here",
        Some("is this the right file? A manifest of a thousand workspaces takes a few kilobytes; keep scripts and data out of it".into()),
    )
}

fn human(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    match bytes {
        b if b as f64 >= MIB => format!("{:.1} MiB", b as f64 / MIB),
        b if b >= 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} bytes"),
    }
}

/// `bytes` as text, or the problem at the first place that is not UTF-8.
pub fn decode(name: &str, bytes: Vec<u8>) -> Result<String, Box<Problem>> {
    let err = match String::from_utf8(bytes) {
        Ok(text) => return Ok(text),
        Err(e) => e,
    };
    let first = err.utf8_error();
    let bytes = err.into_bytes();
    let at = first.valid_up_to();
    let others = match other_invalid(&bytes[at..]) {
        0 => String::new(),
        1 => "; 1 more place after it is not UTF-8 either".into(),
        n => format!("; {n} more places after it are not UTF-8 either"),
    };
    let what = match first.error_len() {
        Some(n) => {
            let shown: Vec<String> = bytes[at..at + n]
                .iter()
                .map(|b| format!("0x{b:02x}"))
                .collect();
            format!(
                "the file is not UTF-8 text: at byte offset {at}, {} {} no character{others}",
                shown.join(" "),
                if n == 1 { "is" } else { "are" },
            )
        }
        None => format!(
            "the file is not UTF-8 text: it ends inside a character that starts at byte offset {at}"
        ),
    };
    // The text as far as it is readable: the same bytes up to the problem, so the
    // problem's line and column are those of the file.
    let src = SourceFile::new(name, String::from_utf8_lossy(&bytes).into_owned());
    Err(Box::new(src.problem(
        Span { offset: at, len: 1 },
        "",
        what,
        "not UTF-8",
        Some("save the file as UTF-8 (it may be Latin-1, Windows-1252 or UTF-16, or not a text file at all)".into()),
    )))
}

/// How many invalid sequences `rest` has after its first one.
fn other_invalid(mut rest: &[u8]) -> usize {
    let mut count: usize = 0;
    loop {
        match std::str::from_utf8(rest) {
            Ok(_) => return count.saturating_sub(1),
            Err(e) => {
                count += 1;
                match e.error_len() {
                    Some(n) => rest = &rest[e.valid_up_to() + n..],
                    None => return count - 1,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_utf8_is_located_by_line_column_and_byte() {
        let bytes = b"name: lab\nproject: caf\xe9 \xff\n".to_vec();
        let p = decode("f.yaml", bytes).unwrap_err();
        assert_eq!((p.line, p.column), (2, 13));
        assert_eq!(
            p.message,
            "the file is not UTF-8 text: at byte offset 22, 0xe9 is no character; 1 more place after it is not UTF-8 either"
        );
        let p = decode("f.yaml", b"a: \xe2\x82".to_vec()).unwrap_err();
        assert_eq!((p.line, p.column), (1, 4));
        assert!(
            p.message.contains("ends inside a character"),
            "{}",
            p.message
        );
        assert_eq!(
            decode("f.yaml", b"a: \xe2\x82\xac".to_vec()).unwrap(),
            "a: €"
        );
    }

    #[test]
    fn a_large_file_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.yaml");
        std::fs::write(&path, "a".repeat(5 * MAX_BYTES)).unwrap();
        let Err(Unreadable::Problem(p)) = text(&path, "big.yaml") else {
            panic!("a 5 MiB file was read");
        };
        assert_eq!(
            p.message,
            "the file is 5.0 MiB (5242880 bytes); a manifest may be at most 1.0 MiB (1048576 bytes)"
        );
        assert_eq!((p.line, p.column), (1, 1));
        let ok = dir.path().join("ok.yaml");
        std::fs::write(&ok, "a".repeat(MAX_BYTES)).unwrap();
        assert!(text(&ok, "ok.yaml").is_ok());
    }
}
