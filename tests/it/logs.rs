//! Logs for machines: `--log-format json` (or `PRISM_LOG_FORMAT=json`) writes one JSON
//! object per line whose fields name the fleet, the pass, the workspace, the server's
//! launch and the AWS request id where they apply; a stderr that is the journal gets one
//! line per record with its priority, no colour and no timestamp.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use crate::emulator::{Emulator, stderr};
use crate::eventually::eventually;
use crate::serve::{manifest, start_logged};

const FAST: &str = "{rate_per_minute: 600, burst_size: 10}";

/// Every line of `text` as JSON (failing on one that is not), with the fields every
/// record has.
fn records(text: &str) -> Vec<Value> {
    let all: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    for r in &all {
        for field in ["level", "target", "message"] {
            assert!(r[field].is_string(), "no {field}: {r}");
        }
    }
    all
}

fn message(r: &Value) -> &str {
    r["message"].as_str().unwrap_or_default()
}

#[test]
fn watch_json_records_name_the_fleet_the_workspace_and_the_aws_request() {
    let emu = Emulator::start();
    let path = emu.write("lab.yaml", &manifest("lab", 2, FAST));
    let out = crate::emulator::prism_command(&["watch", "--once", "-v", path.to_str().unwrap()])
        .env("AWS_ENDPOINT_URL", &emu.url)
        .env("XDG_CACHE_HOME", emu.dir.path().join("cache"))
        .env("PRISM_LOG_FORMAT", "json")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let all = records(&stderr(&out));
    assert!(all.iter().all(|r| r["timestamp"].is_string()));

    // What each workspace went through, under its pass.
    let launched: Vec<&Value> = all
        .iter()
        .filter(|r| message(r).starts_with("✓ lab-"))
        .collect();
    assert_eq!(launched.len(), 2, "{all:#?}");
    for r in launched {
        let ws = r["workspace"].as_str().unwrap_or_else(|| panic!("{r}"));
        assert!(message(r).starts_with(&format!("✓ {ws} launched")), "{r}");
        assert_eq!((&r["fleet"], &r["pass"]), (&json!("lab"), &json!(1)), "{r}");
    }
    let status = all
        .iter()
        .find(|r| message(r).starts_with("pass 1: 2 done"))
        .unwrap_or_else(|| panic!("{all:#?}"));
    assert_eq!(status["fleet"], "lab");

    // Each AWS call with its request id; a launch's, within its workspace.
    let calls: Vec<&Value> = all.iter().filter(|r| r["target"] == "prism::aws").collect();
    assert!(!calls.is_empty(), "{all:#?}");
    // (The emulator's own Service Quotas answers carry no request id; moto's EC2 ones do.)
    for r in calls
        .iter()
        .filter(|r| !r["api"].as_str().unwrap().contains("Quota"))
    {
        let id = r["aws_request_id"].as_str().unwrap_or_default();
        assert!(id.len() >= 8, "no request id: {r}");
    }
    let runs: Vec<&&Value> = calls
        .iter()
        .filter(|r| r["api"] == "RunInstances")
        .collect();
    assert_eq!(runs.len(), 2, "{calls:#?}");
    for r in runs {
        assert_eq!(r["fleet"], "lab", "{r}");
        assert!(
            r["workspace"]
                .as_str()
                .is_some_and(|w| w.starts_with("lab-")),
            "{r}"
        );
    }
}

#[test]
fn serve_json_records_name_the_launch() {
    let emu = Emulator::start();
    let state = emu.dir.path().join("state");
    let log = emu.dir.path().join("serve.log");
    let s = start_logged(
        &emu,
        &state,
        &["--log-format", "json"],
        &[],
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    let body = json!({"manifest": manifest("sj", 2, FAST)});
    let (st, _, created) = s.call("POST", "/api/v1/workspaces/bulk-launch", &[], Some(&body));
    assert_eq!(st, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    s.until_over(&id);
    let ended = eventually("the launch's end logged", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log).unwrap();
        records(&text)
            .into_iter()
            .find(|r| message(r).starts_with(&format!("launch {id} ended succeeded")))
            .ok_or(text)
    });
    assert_eq!(
        (&ended["launch_id"], &ended["fleet"]),
        (&json!(id), &json!("sj")),
        "{ended}"
    );
}

#[test]
fn the_journal_gets_one_line_per_record_with_its_priority_and_no_timestamp() {
    use std::os::unix::fs::MetadataExt;
    let emu = Emulator::start();
    for format in ["text", "json"] {
        // A fleet of its own: a pass with work to do logs at info.
        let path = emu.write("lab.yaml", &manifest(&format!("j{format}"), 1, FAST));
        let log = emu.dir.path().join(format!("journal-{format}"));
        let file = std::fs::File::create(&log).unwrap();
        let meta = file.metadata().unwrap();
        let status = crate::emulator::prism_command(&[
            "watch",
            "--once",
            "--log-format",
            format,
            path.to_str().unwrap(),
        ])
        .env("AWS_ENDPOINT_URL", &emu.url)
        .env("XDG_CACHE_HOME", emu.dir.path().join("cache"))
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env_remove("NO_COLOR")
        .stderr(file)
        .status()
        .unwrap();
        assert_eq!(status.code(), Some(0));
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.lines().count() >= 2, "{text}");
        for line in text.lines() {
            let rest = line
                .strip_prefix("<6>")
                .or_else(|| line.strip_prefix("<4>"))
                .unwrap_or_else(|| panic!("no priority: {line:?}"));
            assert!(!line.contains('\u{1b}'), "colour: {line:?}");
            match format {
                // The priority is the level; the journal has the time.
                "text" => assert!(
                    !rest.starts_with(|c: char| c.is_ascii_digit())
                        && !rest.trim_start().starts_with("INFO"),
                    "{line:?}"
                ),
                _ => {
                    let r: Value = serde_json::from_str(rest).unwrap();
                    assert!(r.get("timestamp").is_none(), "{r}");
                }
            }
        }
    }
}
