//! The docs run: every ```console block in README.md and docs/*.md is a transcript of
//! `$ prism …` commands and their output, replayed against a fresh emulator per page.
//!
//! In a transcript, `...` on a line of its own stands for any number of lines, `[..]`
//! for any text within a line, and the placeholders below (`[INSTANCE]`, `[DATE]`, …)
//! for values that change from run to run. A last line `? N` says the command exits
//! with code N (0 when absent). Blocks that only illustrate are ```text and not run.
//! A page's blocks run in order against one emulator, after the page's setup below.

use std::path::{Path, PathBuf};
use std::time::Instant;

use snapbox::{Assert, Redactions};

use crate::emulator::{Emulator, launch, prism_command};

/// One command of a transcript and what it should print.
struct Step {
    page: String,
    line: usize,
    args: Vec<String>,
    expected: String,
    code: i32,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every page of docs/, in a stable order.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The steps of every ```console block of `text`.
fn steps(page: &str, text: &str) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    let mut in_console = false;
    let mut in_other = false;
    let mut lines = text.lines().enumerate().peekable();
    while let Some((n, line)) = lines.next() {
        if in_other {
            in_other = !line.starts_with("```");
            continue;
        }
        if !in_console {
            if line.trim_end() == "```console" {
                in_console = true;
            } else if line.starts_with("```") {
                in_other = true;
            }
            continue;
        }
        if line.starts_with("```") {
            in_console = false;
            continue;
        }
        if let Some(cmd) = line.strip_prefix("$ ") {
            let mut cmd = cmd.to_string();
            while cmd.ends_with('\\') {
                cmd.pop();
                let (_, next) = lines.next().expect("a continued command goes on");
                cmd.push_str(next);
            }
            let args = split(&cmd);
            assert_eq!(
                args.first().map(String::as_str),
                Some("prism"),
                "{page}:{}: a transcript runs prism only: {cmd}",
                n + 1
            );
            out.push(Step {
                page: page.to_string(),
                line: n + 1,
                args: args[1..].to_vec(),
                expected: String::new(),
                code: 0,
            });
            continue;
        }
        let step = out
            .last_mut()
            .unwrap_or_else(|| panic!("{page}:{}: output before any `$ prism`", n + 1));
        if let Some(code) = line.strip_prefix("? ") {
            step.code = code.trim().parse().expect("`? N` gives an exit code");
        } else {
            step.expected.push_str(line);
            step.expected.push('\n');
        }
    }
    out
}

/// Splits a command line as a POSIX shell would for plain words and quotes.
fn split(cmd: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in cmd.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    args.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            (None, c) => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        args.push(cur);
    }
    args
}

/// The values that change from run to run, and the placeholders docs show for them.
fn redactions() -> Redactions {
    let mut r = Redactions::new();
    let re = |s: &str| regex::Regex::new(s).expect("valid regex");
    for (placeholder, pattern) in [
        ("[INSTANCE]", r"\bi-[0-9a-f]{8,17}\b"),
        ("[VOLUME]", r"\bvol-[0-9a-f]{8,17}\b"),
        ("[EFS]", r"\bfs-[0-9a-f]{8,17}\b"),
        ("[SNAPSHOT]", r"\bsnap-[0-9a-f]{8,17}\b"),
        (
            "[UUID]",
            r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b",
        ),
        (
            "[DATE]",
            r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)",
        ),
        ("[ELAPSED]", r"\b(\d+m )?\d+(\.\d+)?m?s\b"),
    ] {
        r.insert(placeholder, re(pattern))
            .expect("valid placeholder");
    }
    r
}

/// What a page needs in the account before its transcripts run.
fn setup(page: &str, emu: &Emulator, cwd: &Path) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    match page {
        "docs/quota.md" => {
            emu.set_quota("ec2", "L-1216C47A", 32.0);
            rt.block_on(launch(&emu.ec2(), None, None, "t3.xlarge", 6));
        }
        "docs/resources.md" => {
            let out = prism_in(emu, cwd, &["apply", "examples/lab.yaml", "--yes"]);
            assert!(out.status.success(), "setup apply: {out:?}");
        }
        "docs/schedules.md" => {
            // The course's fleet, launched before its timetable from a course.yaml (the
            // same manifest, so the same owner): three running, three stopped.
            let course = std::fs::read_to_string(root().join("examples/course.yaml"))
                .expect("read the example");
            let start = course.find("schedule:").expect("a schedule");
            let end = course.find("templates:").expect("templates");
            let now = format!("{}state: running\n{}", &course[..start], &course[end..]).replace(
                "members_file: course-roster.csv",
                "members_file: examples/course-roster.csv",
            );
            std::fs::write(cwd.join("course.yaml"), now).expect("write course.yaml");
            let out = prism_in(emu, cwd, &["apply", "course.yaml", "--yes"]);
            assert!(out.status.success(), "setup apply: {out:?}");
            let out = prism_in(
                emu,
                cwd,
                &[
                    "workspace",
                    "stop",
                    "cs101-ana-lee",
                    "cs101-chidi-okafor",
                    "cs101-thao-nguyen",
                    "--yes",
                ],
            );
            assert!(out.status.success(), "setup stop: {out:?}");
            std::fs::write(
                cwd.join("roster.csv"),
                "Student,ID,SIS User ID,SIS Login ID,Email,Section\n\"Lee, Ana\",101,S0001,alee,ana.lee@state.edu,CS101-001\nOkafor, Chidi,102,S0002,cokafor,chidi.okafor@state.edu,CS101-001\n\"Kim, Jo\",107,S0007,jkim,,CS101-002\n",
            )
            .expect("write roster.csv");
            std::fs::write(
                cwd.join("course.yaml"),
                "name: cs101\nproject: cs101\ntemplate: t\nmembers_file: roster.csv\nstate: stopped\ntemplates:\n  t: {image: ami-785db401, instance_type: t3.medium}\n",
            )
            .expect("write course.yaml");
        }
        "docs/manifest.md" => {
            std::fs::write(
                cwd.join("class.yaml"),
                "name: cs499-fall26\nprojct: cs499\ntemplate: python-ml\ncount: 2\ntemplates:\n  python-ml:\n    image: ami-0123456789abcdef0\n    instance_type: t3.xlarge\n",
            )
            .expect("write class.yaml");
        }
        _ => {}
    }
}

/// prism run in the transcript's folder, against `emu`, with no user settings.
fn prism_in(emu: &Emulator, cwd: &Path, args: &[&str]) -> std::process::Output {
    prism_command(args)
        .current_dir(cwd)
        .env("AWS_ENDPOINT_URL", &emu.url)
        .env("HOME", cwd.join("home"))
        .env("XDG_CACHE_HOME", cwd.join("cache"))
        .env("COLUMNS", "200")
        .output()
        .expect("prism runs")
}

#[test]
fn every_transcript_in_the_docs_holds() {
    let started = Instant::now();
    let assert = Assert::new().redact_with(redactions());
    let mut failures = Vec::new();
    let mut ran = 0;
    for path in pages() {
        let page = path
            .strip_prefix(root())
            .expect("page under the root")
            .display()
            .to_string();
        let text = std::fs::read_to_string(&path).expect("read page");
        let steps = steps(&page, &text);
        if steps.is_empty() {
            continue;
        }
        let emu = Emulator::start();
        let cwd = emu.dir.path().join("work");
        std::fs::create_dir_all(cwd.join("home")).expect("work dir");
        std::os::unix::fs::symlink(root().join("examples"), cwd.join("examples"))
            .expect("link examples");
        setup(&page, &emu, &cwd);
        for step in steps {
            let args: Vec<&str> = step.args.iter().map(String::as_str).collect();
            let out = prism_in(&emu, &cwd, &args);
            ran += 1;
            let mut actual = String::from_utf8_lossy(&out.stdout).into_owned();
            actual.push_str(&String::from_utf8_lossy(&out.stderr));
            // Tables pad their last column; a doc line has no trailing spaces.
            let actual: String = actual
                .lines()
                .map(|l| format!("{}\n", l.trim_end()))
                .collect();
            let code = out.status.code().unwrap_or(-1);
            let name = format!("{}:{} `prism {}`", step.page, step.line, args.join(" "));
            if code != step.code {
                failures.push(format!(
                    "{name}: exit code {code}, the doc says {}\n{actual}",
                    step.code
                ));
            } else if let Err(e) =
                assert.try_eq(Some(&name), actual.into(), step.expected.clone().into())
            {
                failures.push(format!("{name}:\n{e}"));
            }
        }
    }
    eprintln!(
        "{ran} doc transcripts ran in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(ran > 0, "no ```console transcript found in the docs");
    assert!(
        failures.is_empty(),
        "{} of {ran} doc transcripts do not match the program:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn transcripts_are_parsed_as_written() {
    let page = "```console\n$ prism plan a.yaml \\\n  --format 'json x'\nout\n? 2\n```\n```text\n$ prism no\n```\n";
    let s = steps("p.md", page);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].args, ["plan", "a.yaml", "--format", "json x"]);
    assert_eq!(s[0].expected, "out\n");
    assert_eq!(s[0].code, 2);
}

/// The Markdown problems of `text`, each `line: what`: fences left open or closed
/// mid-line, and table rows outside a table (no header and delimiter row above) or
/// with another number of cells than their header.
fn markdown_problems(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut fence: Option<(usize, &str)> = None;
    let mut table: Option<usize> = None;
    let mut previous = "";
    let lines: Vec<&str> = text.lines().collect();
    let cells = |l: &str| {
        let l = l.trim().trim_start_matches('|').trim_end_matches('|');
        let bytes = l.as_bytes();
        1 + (0..bytes.len())
            .filter(|&i| bytes[i] == b'|' && (i == 0 || bytes[i - 1] != b'\\'))
            .count()
    };
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        let trimmed = line.trim_start();
        let marker = ["```", "~~~"].into_iter().find(|m| trimmed.starts_with(m));
        match (fence, marker) {
            (Some((_, open)), Some(m)) if m == open => {
                if !trimmed
                    .trim_start_matches(m.chars().next().unwrap())
                    .trim()
                    .is_empty()
                {
                    // Not a closing fence: what follows stays inside the block.
                    problems.push(format!("{n}: a fence is closed with text after it"));
                } else {
                    fence = None;
                }
            }
            (Some(_), _) => {}
            (None, Some(m)) => fence = Some((n, m)),
            (None, None) if trimmed.starts_with('|') => match table {
                Some(columns) if cells(trimmed) != columns => problems.push(format!(
                    "{n}: a table row with {} cells under a header of {columns}",
                    cells(trimmed)
                )),
                Some(_) => {}
                None => {
                    let delimiter = lines.get(i + 1).is_some_and(|d| {
                        let d = d.trim();
                        d.starts_with('|') && d.chars().all(|c| "|-: ".contains(c))
                    });
                    if !previous.trim().is_empty() || !delimiter {
                        problems.push(format!(
                            "{n}: a table row outside a table (a table starts after a blank line with a header row and a |---| row)"
                        ));
                    }
                    table = Some(cells(trimmed));
                }
            },
            (None, None) => table = None,
        }
        previous = line;
    }
    if let Some((n, _)) = fence {
        problems.push(format!("{n}: a fence that is never closed"));
    }
    problems
}

#[test]
fn every_page_is_well_formed_markdown() {
    let mut problems = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        let name = page.strip_prefix(root()).unwrap().display().to_string();
        problems.extend(
            markdown_problems(&text)
                .into_iter()
                .map(|p| format!("{name}:{p}")),
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_markdown_check_finds_what_it_looks_for() {
    let orphan = "text\n| a | b |\n";
    let mid_line = "```text\nx\n``` and more\n";
    let open = "```\nx\n";
    let cells = "| a | b |\n|---|---|\n| 1 | 2 | 3 |\n";
    let fine = "| a | `x\\|y` |\n|---|---|\n| 1 | 2 |\n\n```console\n| not a table\n```\n";
    assert_eq!(markdown_problems(orphan).len(), 1, "{orphan}");
    assert_eq!(markdown_problems(mid_line).len(), 2, "{mid_line}");
    assert_eq!(markdown_problems(open).len(), 1, "{open}");
    assert_eq!(markdown_problems(cells).len(), 1, "{cells}");
    assert_eq!(markdown_problems(fine), Vec::<String>::new());
}

/// `key=` of a unit file (the last one given).
fn unit_value(unit: &str, key: &str) -> String {
    unit.lines()
        .rev()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("the unit has no {key}="))
        .to_string()
}

#[test]
fn the_packaged_units_run_what_the_package_installs() {
    let read = |p: &str| std::fs::read_to_string(root().join(p)).unwrap();
    let cargo = read("Cargo.toml");
    let postinst = read("scripts/debian/postinst");
    let docs = read("docs/install.md") + &read("docs/watch.md");
    assert!(
        cargo.contains(r#"["target/release/prism", "usr/bin/", "755"]"#),
        "the package puts prism in /usr/bin"
    );
    for (file, stand_in) in [
        ("scripts/debian/prism-watch@.service", "lab"),
        ("scripts/debian/prism-serve.service", ""),
    ] {
        let unit = read(file);
        assert!(
            cargo.contains(&format!(r#"["{file}", "usr/lib/systemd/system/", "644"]"#)),
            "the package installs {file}"
        );
        let user = unit_value(&unit, "User");
        assert!(
            postinst.contains("adduser --system") && postinst.contains(&format!(" {user}\n")),
            "scripts/debian/postinst makes the unit's user `{user}`"
        );
        // Written to: only the state folder, which postinst makes the user's.
        let state = unit_value(&unit, "ReadWritePaths");
        assert_eq!(state, "/var/lib/prism", "{file}");
        assert!(postinst.contains(&format!("fix {user}:{user} 0750 {state}\n")));
        assert_eq!(unit_value(&unit, "ProtectSystem"), "strict", "{file}");
        let exec = unit_value(&unit, "ExecStart").replace("%i", stand_in);
        let mut words = exec.split_whitespace();
        assert_eq!(words.next(), Some("/usr/bin/prism"), "{file}");
        let args: Vec<String> = words.map(str::to_string).collect();
        if let Some(dir) = args
            .windows(2)
            .find(|w| w[0] == "--state-dir")
            .map(|w| &w[1])
        {
            assert!(dir.starts_with(&format!("{state}/")), "{file}: {dir}");
        }
        if let Some(manifest) = args.iter().find(|a| a.ends_with(".yaml")) {
            assert!(
                docs.contains(&format!(
                    "examples/{stand_in}.yaml examples/templates.yaml /etc/prism/"
                )),
                "the docs copy {manifest} and its templates file into /etc/prism"
            );
        }
        // The unit's flags are prism's: with a manifest (or a manifests folder) that is
        // not there, prism fails on the file (1), not on the command line (2).
        let missing = root().join("no-such-dir/lab.yaml");
        let tmp = tempfile::tempdir().unwrap();
        let run: Vec<String> = args
            .iter()
            .map(|a| {
                if a.ends_with(".yaml") || a == "/etc/prism" {
                    missing.display().to_string()
                } else if a.starts_with(&state) {
                    tmp.path().join("serve").display().to_string()
                } else {
                    a.clone()
                }
            })
            .collect();
        let run: Vec<&str> = run.iter().map(String::as_str).collect();
        let out = prism_command(&run).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{file}: {err}");
    }
}
