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
