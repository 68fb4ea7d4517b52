//! `prism storage …` and the legacy `prism volume …` against the emulator.

use serde_json::Value;

use crate::emulator::{Emulator, launch, stderr, stdout};

fn list(emu: &Emulator, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["storage", "list", "--format", "json"];
    all.extend(args);
    serde_json::from_str::<Value>(&stdout(&emu.prism(&all)))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn ebs_and_efs_in_one_listing() {
    let emu = Emulator::start();
    launch(&emu.ec2(), Some("cs"), Some("cs-01"), "t3.micro", 1).await;
    let ebs = emu.prism(&[
        "storage", "create", "data", "--type", "ebs", "--size", "100",
    ]);
    assert_eq!(ebs.status.code(), Some(0), "{}", stderr(&ebs));
    assert!(
        stdout(&ebs).contains("✓ Created ebs `data`"),
        "{}",
        stdout(&ebs)
    );
    let efs = emu.prism(&["storage", "create", "shared", "--type", "efs"]);
    assert_eq!(efs.status.code(), Some(0), "{}", stderr(&efs));
    let again = emu.prism(&["storage", "create", "shared", "--type", "efs"]);
    assert_eq!(
        again.status.code(),
        Some(0),
        "creating twice returns the first"
    );
    assert!(
        stdout(&again).contains("efs `shared` exists already"),
        "{}",
        stdout(&again)
    );
    let no_size = emu.prism(&["storage", "create", "x", "--type", "ebs"]);
    assert_eq!(no_size.status.code(), Some(2), "--size is required for ebs");

    let all = list(&emu, &[]);
    let named: Vec<(&str, &str)> = all
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["type"].as_str().unwrap()))
        .collect();
    assert!(
        named.contains(&("data", "ebs")) && named.contains(&("shared", "efs")),
        "{named:?}"
    );
    let data = all.iter().find(|r| r["name"] == "data").unwrap();
    assert_eq!(data["size_gib"], 100.0);
    assert_eq!(list(&emu, &["--type", "efs"]).len(), 1);
    let yaml: Value = serde_yaml::from_str(&stdout(
        &emu.prism(&["storage", "list", "--format", "yaml"]),
    ))
    .unwrap();
    assert_eq!(
        yaml.as_array().unwrap(),
        &all,
        "YAML and JSON carry the same data"
    );

    let legacy = emu.prism(&["volume", "list", "--format", "json"]);
    assert!(
        stderr(&legacy).contains("`prism volume` is deprecated; use `prism storage … --type ebs`")
    );
    let volumes: Value = serde_json::from_str(&stdout(&legacy)).unwrap();
    assert!(
        volumes
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["type"] == "ebs")
    );

    let root = all
        .iter()
        .find(|r| r["type"] == "ebs" && !r["attached_to"].as_array().unwrap().is_empty())
        .unwrap();
    let busy = emu.prism(&["storage", "delete", "--yes", root["id"].as_str().unwrap()]);
    assert!(
        stderr(&busy).contains("is attached to"),
        "{}",
        stderr(&busy)
    );
    let refused = emu.prism(&["storage", "delete", "data"]);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "asks first, and there is no terminal"
    );
    let gone = emu.prism(&["storage", "delete", "--yes", "data", "shared"]);
    assert_eq!(gone.status.code(), Some(0), "{}", stderr(&gone));
    let left = list(&emu, &[]);
    assert!(
        left.iter()
            .all(|r| r["name"] != "data" && r["name"] != "shared")
    );
}
