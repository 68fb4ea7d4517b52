//! `prism --version` and `prism version`: what was built, from which commit, when.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::emulator::{prism_command, stdout};

/// The commit the tests' own checkout is at, as the build reports it: "unknown" outside
/// a git checkout (a source archive).
fn checkout_commit() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let top = git(&["rev-parse", "--show-toplevel"]).map(|t| Path::new(&t).canonicalize().ok());
    if top.flatten() != root.canonicalize().ok() {
        return "unknown".into();
    }
    git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into())
}

/// The version of `name` in Cargo.lock.
fn locked(name: &str) -> String {
    let lock = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock"))
        .expect("Cargo.lock");
    let block = lock
        .split("[[package]]")
        .find(|b| b.contains(&format!("\nname = \"{name}\"\n")))
        .unwrap_or_else(|| panic!("{name} is not in Cargo.lock"));
    block
        .lines()
        .find_map(|l| l.strip_prefix("version = "))
        .expect("a version")
        .trim_matches('"')
        .to_string()
}

#[test]
fn version_says_the_version_the_commit_and_the_build_date() {
    let re = regex::Regex::new(r"^prism (\S+) \(([0-9a-f]{12}|unknown) (\d{4}-\d{2}-\d{2})\)\n$")
        .unwrap();
    let out = prism_command(&["--version"]).output().unwrap();
    assert!(out.status.success());
    let line = stdout(&out);
    let caps = re
        .captures(&line)
        .unwrap_or_else(|| panic!("prism --version: {line:?}"));
    assert_eq!(&caps[1], env!("CARGO_PKG_VERSION"));
    assert_eq!(caps[2], checkout_commit(), "{line}");
    let date = jiff::civil::Date::strptime("%Y-%m-%d", &caps[3]).expect("a date");
    assert!(date.year() >= 2025, "{line}");

    // The same line from the command, and from a subcommand's --version (named after it).
    let out = prism_command(&["version"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(stdout(&out), line);
    let out = prism_command(&["plan", "--version"]).output().unwrap();
    assert_eq!(stdout(&out), line.replacen("prism", "prism-plan", 1));
}

#[test]
fn version_as_json_adds_the_aws_sdk_versions() {
    let out = prism_command(&["version", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    let line = stdout(&prism_command(&["--version"]).output().unwrap());
    assert_eq!(
        line,
        format!(
            "prism {} ({} {})\n",
            v["version"].as_str().unwrap(),
            v["commit"].as_str().unwrap(),
            v["build_date"].as_str().unwrap()
        )
    );
    for name in [
        "aws-config",
        "aws-sdk-ec2",
        "aws-sdk-efs",
        "aws-sdk-servicequotas",
    ] {
        assert_eq!(v["aws_sdk"][name], locked(name), "{name}: {v}");
    }
    assert!(v["rustc"].as_str().unwrap().starts_with("rustc 1."), "{v}");
    assert!(!v["target"].as_str().unwrap().is_empty(), "{v}");
}
