//! The files of a folder module use each other bottom-up: no file reaches, through
//! the others, back to itself.
//!
//! An edge `x -> y` is a reference in `x.rs` to its sibling `y.rs`: `super::y::…`,
//! `super::{y, …}` or `crate::<folder>::y` (`y::…`, `self::y::…` in `mod.rs`). A
//! reference to an item of the folder module (`super::Name`, `crate::<folder>::Name`)
//! is an edge to the file that defines it: the file `mod.rs` imports it from
//! (`use y::Name`, `pub use y::{Name, …}`), else `mod`. Test code is left out: the
//! items under `#[cfg(test)]`, and the `tests` modules in files of their own
//! (`tests.rs`; the folders `tests/` and `<file>/tests.rs` are not read).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

/// Edges between the files of a folder: file -> the files it refers to.
type Edges = BTreeMap<String, BTreeSet<String>>;

/// The cycles among the files of `folder` (the module `crate_path`, such as
/// `crate::manifest`), each as the files along it, first and last the same (see
/// [`cycles_of`]). Prints every edge.
fn cycles(folder: &str, crate_path: &str) -> Vec<Vec<String>> {
    let edges = edges(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join(folder),
        crate_path,
    );
    println!("edges among the files of {folder}:");
    for (from, to) in &edges {
        for to in to {
            println!("  {from} -> {to}");
        }
    }
    cycles_of(&edges)
}

/// The edges among the `.rs` files of `folder` (not of its subfolders), `tests.rs` left
/// out.
fn edges(folder: &Path, crate_path: &str) -> Edges {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(folder).expect("the folder is readable") {
        let path = entry.expect("the folder is readable").path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if path.extension().is_some_and(|e| e == "rs") && stem != "tests" {
            let text = std::fs::read_to_string(&path).expect("the file is readable");
            files.insert(stem.to_string(), without_test_items(&tokens(&text)));
        }
    }
    let mod_tokens = files.get("mod").cloned().unwrap_or_default();
    let siblings: BTreeSet<String> = files.keys().cloned().collect();
    let defined_in = imports_of_mod(&mod_tokens, &siblings);
    let resolve = |name: &str| -> Option<String> {
        let file = if siblings.contains(name) {
            name.to_string()
        } else if let Some(file) = defined_in.get(name) {
            file.clone()
        } else if name == "tests" {
            return None;
        } else {
            "mod".to_string()
        };
        Some(file)
    };
    // `crate::<folder>::` as tokens.
    let prefix: Vec<&str> = crate_path
        .split("::")
        .flat_map(|segment| [segment, "::"])
        .collect();
    let mut out = Edges::new();
    for (file, toks) in &files {
        let targets = out.entry(file.clone()).or_default();
        // The number of `super`s that name the folder module from the top of this file.
        let top = usize::from(file != "mod");
        for name in references(toks, &prefix, top) {
            if let Some(to) = resolve(&name)
                && to != *file
            {
                targets.insert(to);
            }
        }
    }
    out
}

/// The names that follow each path into the folder module in `toks`.
fn references(toks: &[String], prefix: &[&str], top: usize) -> Vec<String> {
    let mut out = Vec::new();
    // Brace depths at which the inline modules around the current token were opened.
    let mut inline: Vec<usize> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < toks.len() {
        let t = toks[i].as_str();
        match t {
            "{" => {
                depth += 1;
                i += 1;
                continue;
            }
            "}" => {
                depth = usize::saturating_sub(depth, 1);
                if inline.last() == Some(&depth) {
                    inline.pop();
                }
                i += 1;
                continue;
            }
            "mod" if is_ident(at(toks, i + 1)) && at(toks, i + 2) == "{" => {
                inline.push(depth);
                i += 2;
                continue;
            }
            _ => {}
        }
        let starts_path = is_ident(t) && !matches!(at(toks, i.wrapping_sub(1)), "::" | ".");
        if !starts_path {
            i += 1;
            continue;
        }
        let level = top + inline.len();
        let end = path_end(toks, i);
        let into = if starts_with(&toks[i..], prefix) {
            Some(i + prefix.len())
        } else {
            let mut j = i;
            let mut supers = 0;
            while at(toks, j) == "super" && at(toks, j + 1) == "::" {
                supers += 1;
                j += 2;
            }
            if supers == 0 && at(toks, j) == "self" && at(toks, j + 1) == "::" {
                j += 2;
            }
            let names_folder = supers == level && (supers > 0 || at(toks, j + 1) == "::");
            names_folder.then_some(j)
        };
        if let Some(j) = into.filter(|&j| j < end) {
            out.extend(first_segments(toks, j));
        }
        i = end.max(i + 1);
    }
    out
}

/// The first segment of each path the use tree at `j` names: `y` for `y::…`, each item
/// of a group `{…}`, `self` for `*`.
fn first_segments(toks: &[String], j: usize) -> Vec<String> {
    match at(toks, j) {
        "{" => {
            let mut out = Vec::new();
            let mut nested = 0;
            let mut item_start = true;
            for t in &toks[j + 1..] {
                match t.as_str() {
                    "{" => nested += 1,
                    "}" if nested == 0 => break,
                    "}" => nested -= 1,
                    "," if nested == 0 => {
                        item_start = true;
                        continue;
                    }
                    _ => {}
                }
                if item_start {
                    out.push(if t == "*" { "self".into() } else { t.clone() });
                    item_start = false;
                }
            }
            out
        }
        "*" => vec!["self".into()],
        t if is_ident(t) => vec![t.to_string()],
        _ => vec![],
    }
}

/// Where the path that starts at `i` ends: after its segments, groups and `*`.
fn path_end(toks: &[String], i: usize) -> usize {
    let mut j = i + 1;
    while at(toks, j) == "::" {
        j += 1;
        if at(toks, j) == "{" {
            j = after_group(toks, j);
        } else if at(toks, j) == "<" {
            // A turbofish ends the path.
            break;
        } else {
            j += 1;
        }
    }
    j
}

/// The index after the `}` that closes the `{` at `j`.
fn after_group(toks: &[String], j: usize) -> usize {
    let mut nested = 0;
    for (k, t) in toks.iter().enumerate().skip(j) {
        match t.as_str() {
            "{" => nested += 1,
            "}" => {
                nested -= 1;
                if nested == 0 {
                    return k + 1;
                }
            }
            _ => {}
        }
    }
    toks.len()
}

/// The names `mod.rs` imports from its files (`use y::Name`, `pub use y::{A, B as C}`,
/// `use self::y::Name`), each with the file it comes from.
fn imports_of_mod(toks: &[String], siblings: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut depth = 0;
    for (i, t) in toks.iter().enumerate() {
        match t.as_str() {
            "{" => depth += 1,
            "}" => depth -= 1,
            "use" if depth == 0 => {
                let mut j = i + 1;
                if at(toks, j) == "self" && at(toks, j + 1) == "::" {
                    j += 2;
                }
                if siblings.contains(at(toks, j)) {
                    let mut names = Vec::new();
                    use_tree(toks, &mut j, None, None, &mut names);
                    for (file, name) in names {
                        out.insert(name, file);
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Reads the use tree at `*j` into (first segment, name imported) pairs; `first` and
/// `last` are those of the path before a group.
fn use_tree(
    toks: &[String],
    j: &mut usize,
    first: Option<&str>,
    last: Option<&str>,
    out: &mut Vec<(String, String)>,
) {
    if at(toks, *j) == "{" {
        *j += 1;
        loop {
            match at(toks, *j) {
                "}" => {
                    *j += 1;
                    return;
                }
                "," => *j += 1,
                "" => return,
                _ => use_tree(toks, j, first, last, out),
            }
        }
    }
    let head = at(toks, *j).to_string();
    let first = first.unwrap_or(head.as_str()).to_string();
    let mut name = if head == "self" {
        last.unwrap_or_default().to_string()
    } else {
        head.clone()
    };
    *j += 1;
    while at(toks, *j) == "::" {
        *j += 1;
        match at(toks, *j) {
            "{" => return use_tree(toks, j, Some(&first), Some(&name), out),
            "*" => {
                *j += 1;
                return;
            }
            "self" => *j += 1,
            t => {
                name = t.to_string();
                *j += 1;
            }
        }
    }
    if at(toks, *j) == "as" {
        name = at(toks, *j + 1).to_string();
        *j += 2;
    }
    out.push((first, name));
}

/// `toks` without the items under `#[cfg(test)]`.
fn without_test_items(toks: &[String]) -> Vec<String> {
    const CFG_TEST: [&str; 7] = ["#", "[", "cfg", "(", "test", ")", "]"];
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        if !starts_with(&toks[i..], &CFG_TEST) {
            out.push(toks[i].clone());
            i += 1;
            continue;
        }
        i += CFG_TEST.len();
        // Further attributes, then a visibility.
        while at(toks, i) == "#" && at(toks, i + 1) == "[" {
            i = after_brackets(toks, i + 1);
        }
        if at(toks, i) == "pub" {
            i += 1;
            if at(toks, i) == "(" {
                i = after_brackets(toks, i);
            }
        }
        let is_use = at(toks, i) == "use";
        // The item ends at its first `;` or at the end of its first block, outside
        // brackets (`use` trees hold braces and end at `;`).
        let mut nested = 0;
        while i < toks.len() {
            match toks[i].as_str() {
                "(" | "[" => nested += 1,
                ")" | "]" => nested -= 1,
                ";" if nested == 0 => {
                    i += 1;
                    break;
                }
                "{" if nested == 0 && !is_use => {
                    i = after_group(toks, i);
                    break;
                }
                _ => {}
            }
            i += 1;
        }
    }
    out
}

/// The index after the bracket that closes the one at `j`.
fn after_brackets(toks: &[String], j: usize) -> usize {
    let mut nested = 0;
    for (k, t) in toks.iter().enumerate().skip(j) {
        match t.as_str() {
            "(" | "[" | "{" => nested += 1,
            ")" | "]" | "}" => {
                nested -= 1;
                if nested == 0 {
                    return k + 1;
                }
            }
            _ => {}
        }
    }
    toks.len()
}

/// The tokens of Rust source: identifiers, `::`, and every other character on its
/// own; comments dropped, each string and character literal one `""` token.
fn tokens(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let ident_char = |c: char| c.is_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied().unwrap_or(' ');
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && next == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == '*' {
            let mut nested = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    nested += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    nested -= 1;
                    i += 2;
                    if nested == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if let Some(end) = raw_string_end(&chars, i) {
            out.push("\"\"".to_string());
            i = end;
        } else if c == '"' || (c == 'b' && next == '"') {
            i += if c == 'b' { 2 } else { 1 };
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            out.push("\"\"".to_string());
            i += 1;
        } else if c == '\'' || (c == 'b' && next == '\'') {
            let start = if c == 'b' { i + 1 } else { i };
            let close = if chars.get(start + 1) == Some(&'\\') {
                (start + 3..chars.len()).find(|&k| chars[k] == '\'')
            } else {
                (chars.get(start + 2) == Some(&'\'')).then_some(start + 2)
            };
            match close {
                Some(close) => {
                    out.push("\"\"".to_string());
                    i = close + 1;
                }
                // A lifetime: its name is an identifier.
                None => i = start + 1,
            }
        } else if ident_char(c) {
            let start = i;
            while i < chars.len() && ident_char(chars[i]) {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else if c == ':' && next == ':' {
            out.push("::".to_string());
            i += 2;
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    out
}

/// The index after the raw string (`r"…"`, `r#"…"#`, `br#"…"#`) at `i`, if one starts there.
fn raw_string_end(chars: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    if chars.get(j) == Some(&'b') {
        j += 1;
    }
    if chars.get(j) != Some(&'r') || (i > 0 && chars[i - 1].is_alphanumeric()) {
        return None;
    }
    j += 1;
    let hashes = chars[j..].iter().take_while(|&&c| c == '#').count();
    j += hashes;
    if chars.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < chars.len() {
        if chars[j] == '"' && chars[j + 1..].iter().take_while(|&&c| c == '#').count() >= hashes {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(chars.len())
}

fn is_ident(t: &str) -> bool {
    t.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

fn at(toks: &[String], i: usize) -> &str {
    toks.get(i).map_or("", String::as_str)
}

fn starts_with(toks: &[String], pattern: &[&str]) -> bool {
    toks.len() >= pattern.len() && toks.iter().zip(pattern).all(|(a, b)| a == b)
}

/// Every cycle that is the shortest through one of its edges, each beginning and
/// ending at its least file, in order: every edge that closes a cycle is in one.
fn cycles_of(edges: &Edges) -> Vec<Vec<String>> {
    // The shortest path from `from` to `to`, both included.
    let path = |from: &String, to: &String| -> Option<Vec<String>> {
        let mut parent: BTreeMap<&String, &String> = BTreeMap::new();
        let mut queue = VecDeque::from([from]);
        while let Some(a) = queue.pop_front() {
            if a == to {
                let mut out = vec![a.clone()];
                let mut at = a;
                while at != from {
                    at = parent[at];
                    out.push(at.clone());
                }
                out.reverse();
                return Some(out);
            }
            for b in edges.get(a).into_iter().flatten() {
                if b != from && !parent.contains_key(b) {
                    parent.insert(b, a);
                    queue.push_back(b);
                }
            }
        }
        None
    };
    let mut found = BTreeSet::new();
    for (a, targets) in edges {
        for b in targets {
            let Some(back) = path(b, a) else { continue };
            // a -> b -> … -> a, turned to begin at its least file.
            let mut ring: Vec<String> = std::iter::once(a.clone()).chain(back).collect();
            ring.pop();
            let least = (0..ring.len()).min_by_key(|&k| &ring[k]).unwrap_or(0);
            ring.rotate_left(least);
            ring.push(ring[0].clone());
            found.insert(ring);
        }
    }
    found.into_iter().collect()
}

fn shown(cycles: &[Vec<String>]) -> String {
    cycles
        .iter()
        .map(|c| c.join(" -> "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_files_of_manifest_form_no_cycle() {
    let found = cycles("src/manifest", "crate::manifest");
    assert!(
        found.is_empty(),
        "the files of src/manifest refer to each other in a cycle:\n{}",
        shown(&found)
    );
}

#[test]
fn the_files_of_engine_form_no_cycle() {
    let found = cycles("src/engine", "crate::engine");
    assert!(
        found.is_empty(),
        "the files of src/engine refer to each other in a cycle:\n{}",
        shown(&found)
    );
}

#[test]
fn edges_follow_paths_groups_and_the_imports_of_mod() {
    let dir = std::env::temp_dir().join(format!("prism-layering-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files = [
        (
            "mod.rs",
            "mod a;\nmod b;\nmod c;\nmod d;\npub use b::{Bee as B2, inner::Deep};\nuse c::Sea;\nmod e;\npub struct Top;\nfn f() { e::go(); }\n#[cfg(test)]\nmod tests { use super::a::X; }\n",
        ),
        (
            "a.rs",
            "use super::{B2, Top};\nuse crate::m::Sea;\n// super::d::nothing\nconst S: &str = \"super::d::x\";\nfn f<'a>(c: char) -> bool { c == '{' }\nmod inner { use super::super::Deep; use super::f; }\n#[cfg(test)]\nmod tests { use crate::m::d::Y; }\n",
        ),
        (
            "b.rs",
            "pub struct Bee;\nfn g() { super::c::go::<u8>(); }\n",
        ),
        ("c.rs", "pub struct Sea;\nuse super::b::*;\n"),
        ("d.rs", "use crate::m::{self, b};\n"),
        ("e.rs", "pub fn go() {}\n"),
        ("tests.rs", "use super::d::Z;\n"),
        ("a/tests.rs", "use crate::m::d::Z;\n"),
        ("tests/mod.rs", "use crate::m::d::Z;\n"),
    ];
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::create_dir_all(dir.join("tests")).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let edges = edges(&dir, "crate::m");
    std::fs::remove_dir_all(&dir).unwrap();
    let got: Vec<String> = edges
        .iter()
        .flat_map(|(from, to)| to.iter().map(move |to| format!("{from} -> {to}")))
        .collect();
    assert_eq!(
        got,
        [
            "a -> b", "a -> c", "a -> mod", "b -> c", "c -> b", "d -> b", "d -> mod", "mod -> b",
            "mod -> c", "mod -> e"
        ]
    );
    assert_eq!(cycles_of(&edges), [["b", "c", "b"]]);
    let ring = |files: &[&str]| -> Edges {
        files
            .windows(2)
            .map(|w| (w[0].to_string(), BTreeSet::from([w[1].to_string()])))
            .collect()
    };
    let mut two = ring(&["x", "y", "z", "x"]);
    two.get_mut("y").unwrap().insert("x".into());
    assert_eq!(
        cycles_of(&two),
        [vec!["x", "y", "x"], vec!["x", "y", "z", "x"]]
    );
}
