//! The command line's contract with scripts: a closed pipe, exit codes, `--dry-run`,
//! what `apply` takes, and names that do not exist.

use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::emulator::{Emulator, launch, mutating_calls, prism_command, stderr, stdout};

fn class(count: usize) -> String {
    format!(
        "name: cs\nproject: cs499\ntemplate: small\ncount: {count}\nrate_limit: {{rate_per_minute: 600, burst_size: 10}}\ntemplates:\n  small:\n    image: ami-785db401\n    instance_type: t3.micro\n"
    )
}

/// Runs `cmd` with its stdout (and, with `close_stderr`, its stderr) a pipe whose
/// reading end is closed before prism starts, so that its first write fails with EPIPE.
fn with_closed_output(mut cmd: Command, close_stderr: bool) -> Output {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    cmd.stdin(Stdio::null())
        .stdout(writer.try_clone().expect("a pipe"));
    if close_stderr {
        cmd.stderr(writer);
    } else {
        drop(writer);
        cmd.stderr(Stdio::piped());
    }
    cmd.output().expect("prism runs")
}

fn at(emu: &Emulator, args: &[&str]) -> Command {
    let mut cmd = prism_command(args);
    cmd.env("AWS_ENDPOINT_URL", &emu.url)
        .env("XDG_CACHE_HOME", emu.dir.path().join("cache"));
    cmd
}

fn assert_no_bug_report(out: &Output) {
    let err = stderr(out);
    assert!(
        !err.contains("PrismBug") && !err.contains("Broken pipe"),
        "a closed pipe is not a bug:\n{err}"
    );
    assert_ne!(out.status.code(), Some(101), "{err}");
}

#[test]
fn a_closed_stdout_ends_the_output_and_not_the_exit_code() {
    let out = with_closed_output(prism_command(&["schema"]), false);
    assert_no_bug_report(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");

    let out = with_closed_output(prism_command(&["errors"]), false);
    assert_no_bug_report(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // A failure printed as JSON on a closed stdout is still a failure, said on stderr.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "name: Lab_1\nprojct: p\n").unwrap();
    let out = with_closed_output(
        prism_command(&["plan", bad.to_str().unwrap(), "--format", "json"]),
        false,
    );
    assert_no_bug_report(&out);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("problems in the manifest"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_closed_pipe_keeps_the_plan_and_its_exit_code() {
    let emu = Emulator::start();
    let path = emu.write("class.yaml", &class(3));
    let path = path.to_str().unwrap();

    let out = with_closed_output(
        at(
            &emu,
            &["plan", path, "--format", "json", "--detailed-exitcode"],
        ),
        false,
    );
    assert_no_bug_report(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "the plan has changes even when nobody reads it:\n{}",
        stderr(&out)
    );

    // stdout and stderr both closed: the plan is still saved.
    let saved = emu.dir.path().join("saved.json");
    let out = with_closed_output(
        at(&emu, &["plan", path, "--out", saved.to_str().unwrap()]),
        true,
    );
    assert_eq!(out.status.code(), Some(0));
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    assert_eq!(saved["plan"]["summary"]["create"], 3, "{saved}");
    assert_eq!(mutating_calls(&emu), Vec::<String>::new());
}

#[test]
fn exit_2_means_changes_only_with_detailed_exitcode() {
    let emu = Emulator::start();
    let path = emu.write("class.yaml", &class(1));
    let path = path.to_str().unwrap();

    let changes = emu.prism(&["plan", path, "--detailed-exitcode"]);
    assert_eq!(changes.status.code(), Some(2), "{}", stderr(&changes));
    let plain = emu.prism(&["plan", path]);
    assert_eq!(plain.status.code(), Some(0), "{}", stderr(&plain));

    // A usage error is clap's 2, but 1 once 2 would read as "changes".
    let typo = emu.prism(&["plan", path, "--formt", "json"]);
    assert_eq!(typo.status.code(), Some(2), "{}", stderr(&typo));
    assert!(
        stderr(&typo).contains("unexpected argument '--formt'"),
        "{}",
        stderr(&typo)
    );
    let typo = emu.prism(&["plan", path, "--detailed-exitcode", "--formt", "json"]);
    assert_eq!(typo.status.code(), Some(1), "{}", stderr(&typo));
    assert!(
        stderr(&typo).contains("unexpected argument '--formt'"),
        "clap's message is still printed:\n{}",
        stderr(&typo)
    );
    let missing = emu.prism(&["plan", "--detailed-exitcode"]);
    assert_eq!(missing.status.code(), Some(1), "{}", stderr(&missing));
    assert!(stderr(&missing).contains("<FILE>"), "{}", stderr(&missing));

    let bad = emu.write("bad.yaml", "name: cs\n");
    let invalid = emu.prism(&["plan", bad.to_str().unwrap(), "--detailed-exitcode"]);
    assert_eq!(invalid.status.code(), Some(1), "{}", stderr(&invalid));

    let apply = emu.prism(&["apply", path, "--yes"]);
    assert_eq!(apply.status.code(), Some(0), "{}", stderr(&apply));
    let settled = emu.prism(&["plan", path, "--detailed-exitcode"]);
    assert_eq!(settled.status.code(), Some(0), "{}", stdout(&settled));
}

#[test]
fn every_exit_code_is_documented() {
    let help = prism_command(&["--help"]).output().unwrap();
    let help = stdout(&help);
    let section = help
        .split_once("Exit codes")
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("`prism --help` has no exit codes:\n{help}"));
    for code in ["0", "1", "2", "130"] {
        assert!(
            section
                .lines()
                .any(|l| l.starts_with(&format!("* {code} — "))),
            "exit code {code} is not explained:\n{section}"
        );
    }
    assert!(section.contains("--detailed-exitcode"), "{section}");
    let reference =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cli.md")).unwrap();
    assert!(
        reference.contains(section.trim()),
        "docs/cli.md does not state the exit codes of `prism --help`"
    );
}

#[test]
fn apply_dry_run_prints_the_plan_and_changes_nothing() {
    let emu = Emulator::start();
    let path = emu.write("class.yaml", &class(2));
    let path = path.to_str().unwrap();
    emu.clear_calls();

    let dry = emu.prism(&["apply", "--dry-run", path]);
    assert_eq!(dry.status.code(), Some(0), "{}", stderr(&dry));
    assert!(
        stdout(&dry)
            .contains("Plan: 2 to create, 0 to start, 0 to stop, 0 to replace, 0 to delete."),
        "{}",
        stdout(&dry)
    );
    assert_eq!(stdout(&dry), stdout(&emu.prism(&["plan", path])));

    let dry = emu.prism(&["apply", "--dry-run", "--yes", "--format", "json", path]);
    assert_eq!(dry.status.code(), Some(0), "{}", stderr(&dry));
    let dry: Value = serde_json::from_str(&stdout(&dry)).expect("the JSON plan");
    let plan: Value =
        serde_json::from_str(&stdout(&emu.prism(&["plan", "--format", "json", path]))).unwrap();
    assert_eq!(dry, plan);
    assert_eq!(dry["summary"]["create"], 2);

    assert_eq!(mutating_calls(&emu), Vec::<String>::new());
}

#[test]
fn a_plan_printed_as_json_is_refused_by_apply_with_the_way_to_save_one() {
    let emu = Emulator::start();
    let path = emu.write("class.yaml", &class(2));
    let json = emu.prism(&["plan", path.to_str().unwrap(), "--format", "json"]);
    assert_eq!(json.status.code(), Some(0), "{}", stderr(&json));
    let printed = emu.write("p.json", &stdout(&json));
    emu.clear_calls();

    let out = emu.prism(&["apply", printed.to_str().unwrap(), "--yes"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is a plan printed with `--format json`"),
        "{err}"
    );
    assert!(err.contains("--out"), "{err}");
    assert!(err.contains("prism apply"), "{err}");
    assert!(!err.contains("missing field"), "{err}");
    assert_eq!(mutating_calls(&emu), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_misspelt_workspace_name_gets_the_closest_names() {
    let emu = Emulator::start();
    let ec2 = emu.ec2();
    for ws in ["genomics-lab-alice", "genomics-lab-bob"] {
        launch(&ec2, Some("genomics-lab"), Some(ws), "t3.micro", 1).await;
    }
    emu.clear_calls();

    for verb in ["start", "stop", "hibernate", "resume", "delete", "show"] {
        let out = emu.prism(&["workspace", verb, "genomics-lab-alic"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{verb}: {err}");
        assert!(
            err.contains("no workspace named `genomics-lab-alic`"),
            "{verb}: {err}"
        );
        assert!(
            err.contains("did you mean `genomics-lab-alice`?"),
            "{verb}: {err}"
        );
    }

    // Two misspelt names: each gets its own suggestion.
    let out = emu.prism(&["workspace", "stop", "genomics-lab-alic", "genomics-lab-bbo"]);
    let err = stderr(&out);
    assert!(
        err.contains("`genomics-lab-alice` for `genomics-lab-alic`")
            && err.contains("`genomics-lab-bob` for `genomics-lab-bbo`"),
        "{err}"
    );

    // Nothing close: no guess, only where to look.
    let out = emu.prism(&["workspace", "start", "physics-01"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("did you mean"), "{err}");
    assert!(err.contains("prism workspace list"), "{err}");

    // The legacy verbs resolve names the same way.
    let out = emu.prism(&["stop", "genomics-lab-alic"]);
    assert!(
        stderr(&out).contains("did you mean `genomics-lab-alice`?"),
        "{}",
        stderr(&out)
    );

    let json = emu.prism(&[
        "workspace",
        "start",
        "genomics-lab-alic",
        "--format",
        "json",
    ]);
    let v: Value = serde_json::from_str(&stdout(&json)).expect("a JSON error");
    assert_eq!(v["error"]["code"], "NotFound");
    assert!(
        v["error"]["hint"]
            .as_str()
            .is_some_and(|h| h.contains("genomics-lab-alice")),
        "{v}"
    );
    assert_eq!(mutating_calls(&emu), Vec::<String>::new());
}
