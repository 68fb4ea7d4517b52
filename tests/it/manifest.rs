//! Invalid manifests: every problem reported with file:line:col, exit 1, no AWS call.

use crate::emulator::{Emulator, stderr};

/// (name, manifest, the file:line:col and text each expected problem shows)
const CASES: &[(&str, &str, &[&str])] = &[
    (
        "wrong types",
        "name: lab\nproject: p\ntemplate: t\ncount: thirty\nprune: maybe\ntemplates:\n  t: {image: ami-1, instance_type: t3.micro}\n",
        &[
            ":4:8: error: expected a whole number, found the string `thirty`",
            ":5:8: error: expected true or false",
        ],
    ),
    (
        "unknown keys",
        "name: lab\nproject: p\ntemplate: t\ncount: 2\nregon: us-west-2\ntemplates:\n  t: {image: ami-1, instance_typ: t3.micro}\n",
        &[
            ":5:1: error: unknown key `regon`",
            "did you mean `region`?",
            ":7:21: error: unknown key `instance_typ`",
            "did you mean `instance_type`?",
        ],
    ),
    (
        "count zero and members too",
        "name: lab\nproject: p\ntemplate: t\ncount: 0\nmembers: [ann]\ntemplates:\n  t: {image: ami-1, instance_type: t3.micro}\n",
        &[
            ":4:8: error: `0` is below the minimum of 1",
            ":5:1: error: `count` and `members` cannot both be set",
        ],
    ),
    (
        "unknown template and bad name",
        "name: Lab_1\nproject: p\ntemplate: pyton\ncount: 2\ntemplates:\n  python: {image: ami-1, instance_type: t3.micro}\n",
        &[
            ":1:7: error: `Lab_1` is not a valid fleet name",
            ":3:11: error: unknown template `pyton`",
            "did you mean `python`?",
        ],
    ),
    (
        "bad duration",
        "name: lab\nproject: p\ntemplate: t\ncount: 2\nretry: {initial_backoff: soon}\ntemplates:\n  t: {image: ami-1, instance_type: t3.micro}\n",
        &[":5:26: error: `soon` is not a duration"],
    ),
    (
        "bad schedule",
        "name: lab\nproject: p\ntemplate: t\ncount: 2\nschedule:\n  timezone: America/Chicgo\n  running: [{days: [mon, fry], from: \"10:00\", to: \"09:00\"}]\ntemplates:\n  t: {image: ami-1, instance_type: t3.micro}\n",
        &[
            ":6:13: error: unknown time zone `America/Chicgo`",
            "did you mean `America/Chicago`?",
            ":7:26: error: `fry` is not one of mon, tue, wed, thu, fri, sat, sun",
            ":7:51: error: the window ends at 09:00 before it starts at 10:00",
        ],
    ),
    (
        "yaml syntax",
        "name: lab\nproject: [p\ntemplate: t\n",
        &["error: invalid YAML"],
    ),
];

#[test]
fn invalid_manifests_exit_1_with_locations_and_make_no_aws_call() {
    let emu = Emulator::start();
    for (name, text, expected) in CASES {
        let path = emu.write("bad.yaml", text);
        let out = emu.prism(&["plan", path.to_str().unwrap()]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: exit code\n{err}");
        for want in *expected {
            assert!(err.contains(want), "{name}: stderr lacks {want:?}:\n{err}");
        }
        assert!(err.contains("nothing was sent to AWS"), "{name}:\n{err}");
        assert!(out.stdout.is_empty(), "{name}: stdout should be empty");
    }
    assert!(
        emu.calls().is_empty(),
        "invalid manifests made AWS calls: {:?}",
        emu.calls()
    );
}

#[test]
fn all_problems_are_reported_at_once() {
    let emu = Emulator::start();
    let path = emu.write(
        "many.yaml",
        "name: lab\nprojet: p\ntemplate: t\ncount: 0\nstate: runing\ntemplates:\n  t: {image: ami-1, instance_type: 3}\n",
    );
    let out = emu.prism(&["plan", path.to_str().unwrap()]);
    let err = stderr(&out);
    for want in [
        ":1:1: error: missing required key `project`",
        ":2:1: error: unknown key `projet`",
        ":4:8: error: `0` is below the minimum of 1",
        ":5:8: error: `runing` is not one of running, stopped",
        "did you mean `running`?",
        ":7:36: error: expected a string, found the number `3`",
        "5 problems in the manifest",
    ] {
        assert!(err.contains(want), "stderr lacks {want:?}:\n{err}");
    }
    assert!(emu.calls().is_empty());
}

#[test]
fn templates_file_problems_point_into_that_file() {
    let emu = Emulator::start();
    emu.write(
        "templates.yaml",
        "gpu:\n  image: ami-1\n  instance_type: g5.xlarge\n  root_volum_gb: 100\n",
    );
    let path = emu.write(
        "lab.yaml",
        "name: lab\nproject: p\ntemplate: gpu\nmembers: [ann, bo]\ntemplates_file: templates.yaml\n",
    );
    let out = emu.prism(&["plan", path.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("templates.yaml:4:3: error: unknown key `root_volum_gb`"),
        "{err}"
    );
    assert!(emu.calls().is_empty());
}

#[test]
fn a_hibernating_template_needs_a_root_volume_size() {
    let emu = Emulator::start();
    let path = emu.write(
        "lab.yaml",
        "name: lab\nproject: p\ntemplate: t\ncount: 1\ntemplates:\n  t:\n    image: ami-1\n    instance_type: t3.micro\n    hibernation: true\n",
    );
    let out = emu.prism(&["plan", path.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(":9:18: error: template `t` hibernates but sets no `root_volume_gb`"),
        "{err}"
    );
    assert!(emu.calls().is_empty());
}

/// Runs `validate` and `plan` on `path`: both exit 1 without a word on stdout, and the
/// stderr of `validate` is returned.
fn refused(emu: &Emulator, path: &std::path::Path) -> String {
    let mut first = None;
    for command in ["validate", "plan"] {
        let out = emu.prism(&[command, path.to_str().unwrap()]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{command}: exit code\n{err}");
        assert!(out.stdout.is_empty(), "{command}: stdout should be empty");
        assert!(err.contains("nothing was sent to AWS"), "{command}:\n{err}");
        first.get_or_insert(err);
    }
    first.unwrap()
}

const TEMPLATE: &str = "templates:\n  t: {image: ami-1, instance_type: t3.micro}\n";

#[test]
fn a_key_written_twice_is_an_error_at_both_places() {
    let emu = Emulator::start();
    let top = emu.write(
        "top.yaml",
        &format!("name: lab\nproject: p\ntemplate: t\ncount: 3\nprune: false\ncount: 5\nprune: true\n{TEMPLATE}"),
    );
    let err = refused(&emu, &top);
    for want in [
        "top.yaml:6:1: error: key `count` is written twice in this mapping; first at line 4, column 1",
        "top.yaml:7:1: error: key `prune` is written twice in this mapping; first at line 5, column 1",
        "2 problems in the manifest",
    ] {
        assert!(err.contains(want), "stderr lacks {want:?}:\n{err}");
    }

    let in_template = emu.write(
        "tpl.yaml",
        "name: lab\nproject: p\ntemplate: t\ncount: 1\ntemplates:\n  t:\n    image: ami-1\n    instance_type: t3.micro\n    image: ami-2\n",
    );
    let err = refused(&emu, &in_template);
    assert!(
        err.contains("tpl.yaml:9:5: error: key `image` is written twice in this mapping; first at line 7, column 5"),
        "{err}"
    );

    emu.write(
        "templates.yaml",
        "gpu:\n  image: ami-1\n  instance_type: g5.xlarge\n  instance_type: g5.2xlarge\ncpu: {image: ami-1, instance_type: t3.micro}\ngpu: {image: ami-2, instance_type: t3.micro}\n",
    );
    let lab = emu.write(
        "lab.yaml",
        "name: lab\nproject: p\ntemplate: gpu\ncount: 1\ntemplates_file: templates.yaml\n",
    );
    let err = refused(&emu, &lab);
    for want in [
        "templates.yaml:4:3: error: key `instance_type` is written twice in this mapping; first at line 3, column 3",
        "templates.yaml:6:1: error: key `gpu` is written twice in this mapping; first at line 1, column 1",
    ] {
        assert!(err.contains(want), "stderr lacks {want:?}:\n{err}");
    }
    let out = emu.prism(&[
        "template",
        "list",
        "--file",
        emu.dir.path().join("templates.yaml").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("templates.yaml:6:1: error: key `gpu`"),
        "{}",
        stderr(&out)
    );
    assert!(emu.calls().is_empty(), "AWS calls: {:?}", emu.calls());
}

#[test]
fn deep_nesting_is_refused_at_once() {
    let emu = Emulator::start();
    for (name, text) in [
        ("brackets.yaml", "[".repeat(100_000)),
        ("braces.yaml", "{a: ".repeat(50_000)),
        ("dashes.yaml", "- ".repeat(100_000)),
        (
            "indented.yaml",
            (0..1000)
                .map(|i| format!("{}k:\n", " ".repeat(i)))
                .collect(),
        ),
    ] {
        let path = emu.write(name, &text);
        let started = std::time::Instant::now();
        let out = emu.prism(&["validate", path.to_str().unwrap()]);
        let took = started.elapsed();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{name}:\n{err}");
        assert!(
            err.contains(&format!("{name}:1:")) || name == "indented.yaml",
            "{name}: the place is on line 1:\n{err}"
        );
        assert!(
            err.contains("error: the document is nested more than 32 levels deep"),
            "{name}:\n{err}"
        );
        // Quadratic work would take seconds; the limit stops it within milliseconds.
        assert!(took.as_secs_f64() < 1.0, "{name}: took {took:?}");
        assert!(err.len() < 10_000, "{name}: {} bytes of stderr", err.len());
    }
    assert!(emu.calls().is_empty(), "AWS calls: {:?}", emu.calls());
}

#[test]
fn a_huge_file_gets_a_short_report() {
    let emu = Emulator::start();
    let big = emu.write("big.yaml", &format!("name: {}\n", "a".repeat(5_000_000)));
    let err = refused(&emu, &big);
    assert!(
        err.contains("big.yaml:1:1: error: the file is 4.8 MiB (5000007 bytes); a manifest may be at most 1.0 MiB (1048576 bytes)"),
        "{}",
        &err[..err.len().min(2000)]
    );
    assert!(err.len() < 10_000, "{} bytes of stderr", err.len());

    // Just under the limit, a one-line value is shown cut, in the message and the snippet.
    let long = emu.write(
        "long.yaml",
        &format!(
            "name: {}\nproject: p\ntemplate: t\ncount: 1\n{TEMPLATE}",
            "x".repeat(1_000_000)
        ),
    );
    let err = refused(&emu, &long);
    assert!(
        err.contains("long.yaml:1:7: error: `xxxxxxxxxx"),
        "{}",
        &err[..err.len().min(2000)]
    );
    assert!(
        err.contains("(1000000 characters) is longer than 40 characters"),
        "{}",
        &err[..err.len().min(2000)]
    );
    assert!(err.len() < 10_000, "{} bytes of stderr", err.len());
    assert!(emu.calls().is_empty(), "AWS calls: {:?}", emu.calls());
}

#[test]
fn invisible_and_lookalike_characters_are_shown_escaped() {
    let emu = Emulator::start();
    let path = emu.write(
        "zw.yaml",
        "name: lab\nproject: p\ntemplate: t\nmembers: [a\u{200b}b, c\u{43e}unt, \u{202e}ann]\npr\u{ad}une: true\ntemplates:\n  t: {image: ami-1, instance_type: t3.micro}\n",
    );
    let err = refused(&emu, &path);
    for want in [
        "zw.yaml:4:11: error: `a\\u{200b}b` is not a valid member name",
        "zw.yaml:4:16: error: `c\\u{43e}unt` is not a valid member name",
        "zw.yaml:4:23: error: `\\u{202e}ann` is not a valid member name",
        "zw.yaml:5:1: error: unknown key `pr\\u{ad}une`",
        "did you mean `prune`?",
        // The snippet shows the line escaped as well.
        " 4 │ members: [a\\u{200b}b, c\\u{43e}unt, \\u{202e}ann]",
    ] {
        assert!(err.contains(want), "stderr lacks {want:?}:\n{err}");
    }
    for hidden in ['\u{200b}', '\u{43e}', '\u{202e}', '\u{ad}'] {
        assert!(!err.contains(hidden), "stderr shows {hidden:?} raw:\n{err}");
    }
    assert!(emu.calls().is_empty(), "AWS calls: {:?}", emu.calls());
}

#[test]
fn bytes_that_are_not_utf8_are_located() {
    let emu = Emulator::start();
    let path = emu.dir.path().join("latin1.yaml");
    std::fs::write(&path, b"name: lab\nproject: caf\xe9\ntemplate: t\n").unwrap();
    let err = refused(&emu, &path);
    assert!(
        err.contains("latin1.yaml:2:13: error: the file is not UTF-8 text: at byte offset 22, 0xe9 is no character"),
        "{err}"
    );

    std::fs::write(
        emu.dir.path().join("templates.yaml"),
        b"t:\n  image: ami-1\n  instance_type: t3.micro\n  user_data: \xff\xfe\n",
    )
    .unwrap();
    let lab = emu.write(
        "lab.yaml",
        "name: lab\nproject: p\ntemplate: t\ncount: 1\ntemplates_file: templates.yaml\n",
    );
    let err = refused(&emu, &lab);
    assert!(
        err.contains("templates.yaml:4:14: error: the file is not UTF-8 text: at byte offset 57, 0xff is no character; 1 more place after it is not UTF-8 either"),
        "{err}"
    );
    assert!(emu.calls().is_empty(), "AWS calls: {:?}", emu.calls());
}
