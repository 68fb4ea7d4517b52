//! Members from a roster file (`members_file:`), such as the CSV an LMS exports: the
//! column to read, the workspace name each row gets, and every problem located in the
//! CSV by line and column.
//!
//! A name is derived from the column's value: an email's local part, transliterated to
//! ASCII, lowercased, each run of other characters replaced by one `-`, trimmed to the
//! name rule's length. Two different values that derive the same name both get a
//! suffix from a digest of their own value (`ana-lee-3f2a`), so a name never depends on
//! the order of the rows.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::diagnostic::{MAX_PROBLEMS, Problem, SourceFile};
use super::locate::Span;
use super::names::{NAME_MAX, valid_name};
use super::read::{self, Unreadable};

/// The columns tried, in order, when the manifest names none: those of common LMS
/// exports. Headers are compared with case, spaces, `-` and `.` ignored (`SIS User ID`
/// is `sis_user_id`).
pub const DEFAULT_COLUMNS: [&str; 4] = ["login", "username", "email", "sis_user_id"];

/// The members a roster file gives.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Roster {
    /// The file, as diagnostics and plans name it.
    pub file: String,
    /// The header of the column read, as written.
    pub column: String,
    /// One per row, in row order.
    pub members: Vec<Member>,
}

/// One row of a roster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// The member name (the workspace is `<fleet>-<name>`).
    pub name: String,
    /// The value it was derived from.
    pub value: String,
    /// The row's line in the file.
    pub line: usize,
}

/// Why a roster gives no members: the file cannot be read, or it has problems.
pub enum RosterError {
    Io(std::io::Error),
    Problems(Vec<Problem>),
}

/// Reads the roster at `path` (named `name` in diagnostics), taking names from
/// `column`, or from the first of [`DEFAULT_COLUMNS`] present.
pub fn load(path: &Path, name: &str, column: Option<&str>) -> Result<Roster, RosterError> {
    let text = match read::text(path, name) {
        Ok(t) => t,
        Err(Unreadable::Io(e)) => return Err(RosterError::Io(e)),
        Err(Unreadable::Problem(p)) => return Err(RosterError::Problems(vec![*p])),
    };
    parse(name, &text, column).map_err(RosterError::Problems)
}

/// A header as compared: lowercase, with spaces, `-` and `.` as `_`.
fn normalized(header: &str) -> String {
    header
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| if matches!(c, ' ' | '-' | '.') { '_' } else { c })
        .collect()
}

/// The index of the column names are read from: `column`, or the first of
/// [`DEFAULT_COLUMNS`] the header has; Err says what is missing.
fn column_index(header: &csv::StringRecord, column: Option<&str>) -> Result<usize, String> {
    let headers: Vec<String> = header.iter().map(normalized).collect();
    match column {
        Some(c) => headers
            .iter()
            .position(|h| *h == normalized(c))
            .ok_or_else(|| format!("the roster has no column `{c}`")),
        None => DEFAULT_COLUMNS
            .iter()
            .find_map(|c| headers.iter().position(|h| h == c))
            .ok_or_else(|| {
                format!(
                    "the roster has none of the columns {}",
                    DEFAULT_COLUMNS.join(", ")
                )
            }),
    }
}

/// The members of roster `text`, or every problem found in it.
pub fn parse(name: &str, text: &str, column: Option<&str>) -> Result<Roster, Vec<Problem>> {
    let src = SourceFile::new(name, text);
    // Spreadsheets write a byte-order mark before UTF-8 text.
    let bom = if text.starts_with('\u{feff}') { 3 } else { 0 };
    let body = &text[bom..];
    let at = |offset: usize, message: String, label: &str, hint: Option<String>| {
        src.problem(
            Span {
                offset: bom + offset,
                len: 1,
            },
            "",
            message,
            label,
            hint,
        )
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(body.as_bytes());
    let mut records = reader.records();
    let header = match records.next() {
        Some(Ok(h)) => h,
        Some(Err(e)) => return Err(vec![csv_problem(&at, &e)]),
        None => {
            return Err(vec![at(
                0,
                "the roster is empty: it has no header row".into(),
                "empty",
                Some(format!(
                    "the first row names the columns, such as {}",
                    DEFAULT_COLUMNS.join(",")
                )),
            )]);
        }
    };
    let index = column_index(&header, column);
    let index = index.map_err(|message| {
        let written: Vec<&str> = header.iter().map(str::trim).collect();
        vec![at(
            0,
            message,
            "the header",
            Some(format!(
                "its columns are: {}; name the one to use with `members_column:` in the manifest",
                written.join(", ")
            )),
        )]
    })?;
    let mut problems = Vec::new();
    let mut rows: Vec<(String, String, usize)> = Vec::new();
    let mut first_seen: BTreeMap<String, usize> = BTreeMap::new();
    for record in records {
        if problems.len() > MAX_PROBLEMS {
            break;
        }
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                problems.push(csv_problem(&at, &e));
                continue;
            }
        };
        let pos = record.position().expect("a read record has a position");
        let (start, line) = (pos.byte() as usize, pos.line() as usize);
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        if record.len() != header.len() {
            problems.push(at(
                start,
                format!(
                    "this row has {} field{}, the header has {}",
                    record.len(),
                    if record.len() == 1 { "" } else { "s" },
                    header.len()
                ),
                "wrong number of fields",
                Some(
                    "a comma inside a value needs the value in double quotes (\"Lee, Ana\")".into(),
                ),
            ));
            continue;
        }
        let offset = field_offset(body, start, index);
        match member(&record[index], header[index].trim(), line, &mut first_seen) {
            Ok(row) => rows.push(row),
            Err((message, label, hint)) => {
                problems.push(at(offset, message, label, Some(hint.into())))
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Roster {
        file: name.to_string(),
        column: header[index].trim().to_string(),
        members: distinct_names(rows),
    })
}

/// Makes the problem at a byte offset of the roster.
type At<'a> = dyn Fn(usize, String, &str, Option<String>) -> Problem + 'a;

/// A problem's message, label and hint.
type Flaw = (String, &'static str, &'static str);

/// The (value, derived name, line) of a row whose `column` holds `value`, or why it
/// gives no member: empty, no letter or digit, or a value `first_seen` already has.
fn member(
    value: &str,
    column: &str,
    line: usize,
    first_seen: &mut BTreeMap<String, usize>,
) -> Result<(String, String, usize), Flaw> {
    let value = value.trim().to_string();
    if value.is_empty() {
        return Err((
            format!("empty `{column}` value"),
            "empty",
            "every row needs a value in the column workspaces are named after; remove the row or fill it in",
        ));
    }
    let base = derive(&value);
    if base.is_empty() {
        return Err((
            format!("`{value}` gives no workspace name: it has no letter or digit"),
            "no name in it",
            "name the members after another column with `members_column:`",
        ));
    }
    let key = value.to_lowercase();
    if let Some(first) = first_seen.get(&key) {
        return Err((
            format!("`{value}` is listed twice; first on line {first}"),
            "listed again",
            "each member gets one workspace; remove the repeated row",
        ));
    }
    first_seen.insert(key, line);
    Ok((value, base, line))
}

fn csv_problem(at: &At, e: &csv::Error) -> Problem {
    let offset = e.position().map_or(0, |p| p.byte() as usize);
    at(offset, format!("cannot read the roster: {e}"), "here", None)
}

/// Byte offset in `text` of field `index` of the record that starts at `start`,
/// counting commas outside double quotes.
fn field_offset(text: &str, start: usize, index: usize) -> usize {
    let mut field = 0;
    let mut quoted = false;
    for (i, c) in text[start..].char_indices() {
        if field == index {
            return start + i;
        }
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => field += 1,
            '\n' if !quoted => break,
            _ => {}
        }
    }
    start
}

/// The member name a roster value gives, before collisions are resolved: empty when
/// it has no letter or digit.
pub fn derive(value: &str) -> String {
    let value = value.trim();
    let local = match value.rsplit_once('@') {
        Some((local, _)) if !local.is_empty() => local,
        _ => value,
    };
    let ascii = deunicode::deunicode(local).to_lowercase();
    let mut name = String::new();
    for c in ascii.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            name.push(c);
        } else if !name.is_empty() && !name.ends_with('-') {
            name.push('-');
        }
    }
    trimmed(&name, NAME_MAX)
}

/// `name` cut to at most `max` characters, without a trailing `-`.
fn trimmed(name: &str, max: usize) -> String {
    let mut n: String = name.chars().take(max).collect();
    while n.ends_with('-') {
        n.pop();
    }
    n
}

/// Member name `base` with a suffix of `value`'s digest `len` characters long, as
/// members whose values derive the same name are told apart.
pub fn suffixed(base: &str, value: &str, len: usize) -> String {
    let s = suffix(value, len);
    format!("{}-{s}", trimmed(base, NAME_MAX - s.len() - 1))
}

/// The identity of a roster row's member: its value, compared without case or the
/// spaces around it.
pub fn member_key(value: &str) -> String {
    value.trim().to_lowercase()
}

/// A short, stable digest of a value: the same value always gets the same suffix.
fn suffix(value: &str, len: usize) -> String {
    let digest = Sha256::digest(value.to_lowercase().as_bytes());
    digest
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..len]
        .to_string()
}

/// Members with distinct names: a name that several values derive gets, on each, a
/// suffix of the value's digest, lengthened until every name is unique.
fn distinct_names(rows: Vec<(String, String, usize)>) -> Vec<Member> {
    let mut by_base: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, base, _) in &rows {
        *by_base.entry(base.as_str()).or_default() += 1;
    }
    let plain: std::collections::HashSet<String> = rows
        .iter()
        .filter(|(_, b, _)| by_base[b.as_str()] == 1)
        .map(|(_, b, _)| b.clone())
        .collect();
    for len in [4, 8, 16, 64] {
        let names: Vec<String> = rows
            .iter()
            .map(|(value, base, _)| {
                if by_base[base.as_str()] == 1 {
                    return base.clone();
                }
                suffixed(base, value, len)
            })
            .collect();
        let unique: std::collections::HashSet<&String> = names.iter().collect();
        let clash_with_plain = names
            .iter()
            .zip(&rows)
            .any(|(n, (_, b, _))| by_base[b.as_str()] > 1 && plain.contains(n));
        if unique.len() == names.len() && !clash_with_plain || len == 64 {
            debug_assert!(names.iter().all(|n| valid_name(n)));
            return rows
                .into_iter()
                .zip(names)
                .map(|((value, _, line), name)| Member { name, value, line })
                .collect();
        }
    }
    unreachable!("the last length returns")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<(String, String)> {
        parse("roster.csv", text, None)
            .unwrap_or_else(|p| panic!("{p:?}"))
            .members
            .into_iter()
            .map(|m| (m.value, m.name))
            .collect()
    }

    fn errors(text: &str, column: Option<&str>) -> Vec<String> {
        let Err(problems) = parse("roster.csv", text, column) else {
            panic!("no problem in {text:?}");
        };
        problems
            .iter()
            .map(|p| format!("{}:{}:{}: {}", p.file, p.line, p.column, p.message))
            .collect()
    }

    #[test]
    fn names_are_derived_from_the_value() {
        for (value, name) in [
            ("Ana.Lee@uni.edu", "ana-lee"),
            ("bob_smith", "bob-smith"),
            ("  carl+cs101@x.org ", "carl-cs101"),
            ("José.García@uni.es", "jose-garcia"),
            ("Jürgen Weiß", "jurgen-weiss"),
            ("王芳@example.cn", "wang-fang"),
            ("--x--", "x"),
            ("000123", "000123"),
            ("@handle", "handle"),
            ("!!!", ""),
        ] {
            assert_eq!(derive(value), name, "{value}");
        }
        let long = derive(&format!("{}@x.org", "a.b".repeat(30)));
        assert!(long.len() <= NAME_MAX && valid_name(&long), "{long}");
        assert_eq!(derive(&format!("{}-tail", "x".repeat(39))), "x".repeat(39));
    }

    #[test]
    fn the_default_column_is_the_first_lms_column_present() {
        let text = "Student,ID,SIS User ID,Email\n\"Lee, Ana\",1,s1,ana.lee@uni.edu\n";
        assert_eq!(names(text), [("ana.lee@uni.edu".into(), "ana-lee".into())]);
        let text = "Name,SIS User ID\nAna,S-0042\n";
        assert_eq!(names(text), [("S-0042".into(), "s-0042".into())]);
        let r = parse("r.csv", "\u{feff}Login,Email\nana,x@y\n", None).unwrap();
        assert_eq!(
            (r.column.as_str(), r.members[0].name.as_str()),
            ("Login", "ana")
        );
        let r = parse("r.csv", "Student,Email\nAna,ana@x\n", Some("student")).unwrap();
        assert_eq!(r.members[0].name, "ana");
    }

    #[test]
    fn colliding_names_get_stable_suffixes_whatever_the_row_order() {
        let a = "email\nana.lee@uni.edu\nbob@uni.edu\nana_lee@other.edu\n";
        let b = "email\nana_lee@other.edu\nbob@uni.edu\nana.lee@uni.edu\n";
        let (mut x, mut y) = (names(a), names(b));
        x.sort();
        y.sort();
        assert_eq!(x, y, "row order changes no name");
        let lee: Vec<&String> = x
            .iter()
            .filter(|(v, _)| v.contains("lee"))
            .map(|(_, n)| n)
            .collect();
        assert_eq!(lee.len(), 2);
        assert_ne!(lee[0], lee[1]);
        assert!(
            lee.iter()
                .all(|n| n.starts_with("ana-lee-") && n.len() == 12),
            "{lee:?}"
        );
        assert!(
            x.contains(&("bob@uni.edu".into(), "bob".into())),
            "no collision, no suffix"
        );
        // A long pair keeps within the length rule.
        let long = format!("email\n{0}.a@x\n{0}-a@y\n", "n".repeat(50));
        for (_, n) in names(&long) {
            assert!(valid_name(&n) && n.len() == NAME_MAX, "{n}");
        }
    }

    #[test]
    fn problems_are_located_in_the_csv() {
        let text =
            "name,email,section\nAna,ana@x,1\nBob,bob@x\nCai,,2\n\"Dee, D\",ana@X,3\nEve,!!!,1\n";
        assert_eq!(
            errors(text, None),
            [
                "roster.csv:3:1: this row has 2 fields, the header has 3",
                "roster.csv:4:5: empty `email` value",
                "roster.csv:5:10: `ana@X` is listed twice; first on line 2",
                "roster.csv:6:5: `!!!` gives no workspace name: it has no letter or digit",
            ]
        );
        assert_eq!(
            errors("name,section\nAna,1\n", None),
            [
                "roster.csv:1:1: the roster has none of the columns login, username, email, sis_user_id"
            ]
        );
        assert_eq!(
            errors("name,email\nAna,a@x\n", Some("netid")),
            ["roster.csv:1:1: the roster has no column `netid`"]
        );
        assert_eq!(
            errors("", None),
            ["roster.csv:1:1: the roster is empty: it has no header row"]
        );
    }

    #[test]
    fn a_file_that_is_not_utf8_is_located() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("roster.csv");
        std::fs::write(&path, b"email\nana@x\njos\xe9@x\n").unwrap();
        let Err(RosterError::Problems(p)) = load(&path, "roster.csv", None) else {
            panic!("read a Latin-1 file");
        };
        assert_eq!((p[0].line, p[0].column), (3, 4));
        assert!(p[0].message.contains("not UTF-8"), "{}", p[0].message);
    }
}
