//! `prism workspace …` and the legacy verbs against the emulator.

use serde_json::Value;

use crate::emulator::{Emulator, launch, per_workspace, stderr, stdout};

async fn two_fleets(emu: &Emulator) {
    let ec2 = emu.ec2();
    for ws in ["cs-01", "cs-02", "cs-03"] {
        launch(&ec2, Some("cs"), Some(ws), "t3.xlarge", 1).await;
    }
    launch(&ec2, Some("lab"), Some("lab-ann"), "t3.micro", 1).await;
    launch(&ec2, None, None, "t3.micro", 1).await; // not prism's: never listed
}

#[tokio::test(flavor = "multi_thread")]
async fn list_formats_parse_back_to_the_same_data() {
    let emu = Emulator::start();
    two_fleets(&emu).await;
    let json: Value = serde_json::from_str(&stdout(&emu.prism(&[
        "workspace",
        "list",
        "--format",
        "json",
    ])))
    .unwrap();
    let yaml: Value = serde_yaml::from_str(&stdout(&emu.prism(&[
        "workspace",
        "list",
        "--format",
        "yaml",
    ])))
    .unwrap();
    assert_eq!(json, yaml);
    let names: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cs-01", "cs-02", "cs-03", "lab-ann"]);
    assert_eq!(json[0]["daily_cost"], 3.99, "t3.xlarge at $0.1664/h");
    assert_eq!(json[0]["status"], "running");
    assert!(json[0]["uptime"].as_str().unwrap().ends_with('m'));

    let table = stdout(&emu.prism(&["workspace", "list", "--fleet", "lab"]));
    assert!(
        table.contains("NAME") && table.contains("COST/DAY*") && table.contains("lab-ann"),
        "{table}"
    );
    assert!(!table.contains("cs-01"), "{table}");
}

#[tokio::test(flavor = "multi_thread")]
async fn start_stop_delete_and_their_legacy_aliases() {
    let emu = Emulator::start();
    two_fleets(&emu).await;
    let out = emu.prism(&["workspace", "stop", "cs-01", "lab-ann"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("cs-01 is stopped"),
        "{}",
        stdout(&out)
    );
    let stopped: Value = serde_json::from_str(&stdout(&emu.prism(&[
        "workspace",
        "list",
        "--state",
        "stopped",
        "--format",
        "json",
    ])))
    .unwrap();
    assert_eq!(stopped.as_array().unwrap().len(), 2);

    let legacy = emu.prism(&["start", "cs-01"]);
    assert_eq!(legacy.status.code(), Some(0));
    let warnings: Vec<&str> = std::str::from_utf8(&legacy.stderr)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect();
    assert_eq!(
        warnings,
        ["warning: `prism start` is deprecated; use `prism workspace start` (it works the same)"]
    );
    assert!(stdout(&legacy).contains("cs-01 is running"));

    let listed = emu.prism(&["list", "--format", "json"]);
    assert!(stderr(&listed).contains("`prism list` is deprecated; use `prism workspace list`"));
    let v: Value = serde_json::from_str(&stdout(&listed)).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 4);

    let refused = emu.prism(&["workspace", "delete", "cs-02"]);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "delete asks, and there is no terminal"
    );
    let missing = emu.prism(&["workspace", "delete", "--yes", "cs-02", "nope"]);
    assert!(
        stderr(&missing).contains("no workspace named `nope`"),
        "{}",
        stderr(&missing)
    );
    assert_eq!(per_workspace(&emu, "cs").await.len(), 3, "nothing deleted");

    let deleted = emu.prism(&["workspace", "delete", "--yes", "cs-02"]);
    assert_eq!(deleted.status.code(), Some(0), "{}", stdout(&deleted));
    assert_eq!(
        per_workspace(&emu, "cs").await.keys().collect::<Vec<_>>(),
        ["cs-01", "cs-03"]
    );
}
