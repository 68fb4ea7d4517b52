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

#[tokio::test(flavor = "multi_thread")]
async fn create_and_the_legacy_launch_go_through_the_executor() {
    let emu = Emulator::start();
    let file = emu.write(
        "templates.yaml",
        "python-ml:\n  image: ami-785db401\n  instance_type: t3.micro\n",
    );
    let f = file.to_str().unwrap();
    let out = emu.prism(&[
        "workspace",
        "create",
        "--template",
        "python-ml",
        "-f",
        f,
        "--fleet",
        "adhoc",
        "--yes",
        "ws-a",
        "ws-b",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("✅ All 2 workspaces launched successfully"),
        "{}",
        stdout(&out)
    );

    let legacy = emu.prism(&[
        "launch",
        "python-ml",
        "ws-c",
        "-f",
        f,
        "--fleet",
        "adhoc",
        "--yes",
    ]);
    assert_eq!(legacy.status.code(), Some(0), "{}", stderr(&legacy));
    assert!(stderr(&legacy).contains(
        "`prism launch` is deprecated; use `prism workspace create --template TEMPLATE`"
    ));
    assert!(
        stdout(&legacy).contains("Launching 1 workspace of"),
        "only the new one: {}",
        stdout(&legacy)
    );
    let counts = per_workspace(&emu, "adhoc").await;
    assert_eq!(counts.keys().collect::<Vec<_>>(), ["ws-a", "ws-b", "ws-c"]);
    assert!(counts.values().all(|n| *n == 1));

    let typo = emu.prism(&[
        "workspace",
        "create",
        "--template",
        "pyton-ml",
        "-f",
        f,
        "ws-d",
    ]);
    assert!(
        stderr(&typo).contains("did you mean `python-ml`?"),
        "{}",
        stderr(&typo)
    );
    let bad = emu.prism(&[
        "workspace",
        "create",
        "--template",
        "python-ml",
        "-f",
        f,
        "WS_E",
    ]);
    assert!(
        stderr(&bad).contains("invalid name `WS_E`"),
        "{}",
        stderr(&bad)
    );
    assert_eq!(per_workspace(&emu, "adhoc").await.len(), 3);
}

#[test]
fn templates_are_listed_from_manifests_and_templates_files() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let out = crate::emulator::prism_command(&[
        "template",
        "list",
        "-f",
        root.join("lab.yaml").to_str().unwrap(),
        "--format",
        "json",
    ])
    .output()
    .unwrap();
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gpu-training", "r-stats"]);
    let shown = crate::emulator::prism_command(&[
        "template",
        "show",
        "python-ml",
        "-f",
        root.join("class.yaml").to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(
        stdout(&shown).contains("Instance type: t3.xlarge"),
        "{}",
        stdout(&shown)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hibernate_needs_a_hibernation_template_and_resume_brings_it_back() {
    let emu = Emulator::start();
    let file = emu.write(
        "t.yaml",
        "hib:\n  image: ami-785db401\n  instance_type: t3.micro\n  root_volume_gb: 20\n  hibernation: true\nplain:\n  image: ami-785db401\n  instance_type: t3.micro\n",
    );
    let f = file.to_str().unwrap();
    for (template, name) in [("hib", "h-1"), ("plain", "p-1")] {
        let out = emu.prism(&[
            "workspace",
            "create",
            "-t",
            template,
            "-f",
            f,
            "--fleet",
            "hf",
            "--yes",
            name,
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    }
    let refused = emu.prism(&["workspace", "hibernate", "h-1", "p-1"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("`p-1` cannot hibernate: it was launched without hibernation"),
        "{}",
        stderr(&refused)
    );

    let out = emu.prism(&["workspace", "hibernate", "h-1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("✓ h-1 hibernated"),
        "{}",
        stdout(&out)
    );
    // AWS reports a hibernated instance as stopped; prism lists it as hibernated.
    let list = emu.prism(&["workspace", "list", "--format", "json"]);
    let rows: Value = serde_json::from_str(&stdout(&list)).unwrap();
    let h1 = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "h-1")
        .unwrap();
    assert_eq!(h1["status"], "hibernated", "{rows}");
    let legacy = emu.prism(&["resume", "h-1"]);
    assert!(stderr(&legacy).contains("`prism resume` is deprecated; use `prism workspace resume`"));
    assert!(
        stdout(&legacy).contains("h-1 is running"),
        "{}",
        stdout(&legacy)
    );
}

/// A name that exists in one fleet cannot be created in another, and a bare name
/// that exists in two fleets (made outside prism) is refused until `--fleet` says which.
#[tokio::test(flavor = "multi_thread")]
async fn a_workspace_name_never_stands_for_two_workspaces() {
    let emu = Emulator::start();
    let ec2 = emu.ec2();
    launch(&ec2, Some("small"), Some("small-02"), "t3.micro", 1).await;
    let file = emu.write(
        "templates.yaml",
        "tiny:\n  image: ami-785db401\n  instance_type: t3.micro\n",
    );
    let f = file.to_str().unwrap();
    emu.clear_calls();
    let taken = emu.prism(&[
        "workspace",
        "create",
        "--template",
        "tiny",
        "-f",
        f,
        "small-02",
        "--yes",
    ]);
    assert_eq!(taken.status.code(), Some(1), "{}", stdout(&taken));
    assert!(
        stderr(&taken).contains("a workspace named `small-02` already exists in fleet `small`"),
        "{}",
        stderr(&taken)
    );
    assert!(
        !emu.calls().iter().any(|c| c.action == "RunInstances"),
        "nothing launched"
    );
    assert_eq!(per_workspace(&emu, "workspaces").await.len(), 0);

    // The same name in two fleets, as another tool could leave it.
    launch(&ec2, Some("other"), Some("small-02"), "t3.micro", 1).await;
    for args in [
        &["workspace", "show", "small-02"][..],
        &["workspace", "delete", "small-02", "--dry-run"],
        &["workspace", "stop", "small-02", "--yes"],
    ] {
        let out = emu.prism(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stdout(&out));
        let err = stderr(&out);
        assert!(
            err.contains("`small-02` is a workspace in more than one fleet: other, small")
                && err.contains("small-02 (fleet other)")
                && err.contains("small-02 (fleet small)"),
            "{args:?}: {err}"
        );
    }
    let out = emu.prism(&[
        "workspace",
        "delete",
        "small-02",
        "--fleet",
        "small",
        "--yes",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(per_workspace(&emu, "small").await.len(), 0);
    assert_eq!(
        per_workspace(&emu, "other").await.len(),
        1,
        "the other one is kept"
    );
    let show = emu.prism(&["workspace", "show", "small-02", "--format", "json"]);
    assert_eq!(show.status.code(), Some(0), "{}", stderr(&show));
    assert!(
        stdout(&show).contains("\"fleet\": \"other\""),
        "{}",
        stdout(&show)
    );
}

/// SIGINT during `workspace start`: the calls in flight finish, no new one starts, and
/// the summary says how to finish, as apply does.
#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_start_finishes_what_is_in_flight_and_says_how_to_finish() {
    let emu = Emulator::start();
    let ec2 = emu.ec2();
    let names: Vec<String> = (1..=12).map(|i| format!("cs-{i:02}")).collect();
    let mut ids = vec![];
    for n in &names {
        ids.extend(launch(&ec2, Some("cs"), Some(n), "t3.micro", 1).await);
    }
    ec2.stop_instances()
        .set_instance_ids(Some(ids))
        .send()
        .await
        .unwrap();
    emu.post(
        "/_prism/faults",
        serde_json::json!({"faults": [{"action": "StartInstances", "code": "", "delay_ms": 1000}]}),
    );
    emu.clear_calls();
    let mut args = vec!["workspace", "start"];
    args.extend(names.iter().map(String::as_str));
    // The twelve starts are one StartInstances, which the emulator holds for a second:
    // the interruption comes while it is in flight.
    let (code, rest) = crate::emulator::interrupt_once_sent(&emu, &args, "StartInstances");
    assert_eq!(code, Some(1), "{rest}");
    assert!(rest.contains("Interrupted"), "{rest}");
    assert!(
        rest.contains(&format!(
            "run `prism workspace start {}` again to finish",
            names.join(" ")
        )),
        "{rest}"
    );
    let calls = emu
        .calls()
        .iter()
        .filter(|c| c.action == "StartInstances")
        .count();
    assert_eq!(
        calls, 1,
        "one call for the twelve, none after the interruption"
    );
    let out = emu.prism(&["workspace", "list", "--fleet", "cs", "--format", "json"]);
    let running = serde_json::from_str::<Value>(&stdout(&out))
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["status"] == "running")
        .count();
    assert_eq!(
        running, 12,
        "the call in flight was carried through: {rest}"
    );
}

/// `template list` without `--file` reads the manifests and templates files of the
/// current folder, and says where it looked when it finds none.
#[test]
fn template_list_looks_in_the_current_folder() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        crate::emulator::prism_command(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let empty = run(&["template", "list"]);
    assert_eq!(empty.status.code(), Some(1));
    assert!(
        stderr(&empty).contains("no templates found in")
            && stderr(&empty).contains("it has no *.yaml or *.yml file"),
        "{}",
        stderr(&empty)
    );
    std::fs::write(dir.path().join("notes.yaml"), "shopping: [milk]\n").unwrap();
    let other = run(&["template", "list"]);
    assert!(
        stderr(&other).contains("none of notes.yaml is a valid manifest or templates file"),
        "{}",
        stderr(&other)
    );
    std::fs::write(
        dir.path().join("class.yaml"),
        "name: cs\nproject: p\ntemplate: small\ncount: 1\ntemplates:\n  small: {image: ami-785db401, instance_type: t3.micro}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("gpu.yml"),
        "big:\n  image: ami-785db401\n  instance_type: g5.xlarge\n",
    )
    .unwrap();
    let found = run(&["template", "list"]);
    assert_eq!(found.status.code(), Some(0), "{}", stderr(&found));
    let text = stdout(&found);
    assert!(text.contains("FILE"), "{text}");
    assert!(
        text.contains("small") && text.contains("class.yaml"),
        "{text}"
    );
    assert!(text.contains("big") && text.contains("gpu.yml"), "{text}");
    let show = run(&["template", "show", "big"]);
    assert!(
        stdout(&show).contains("Instance type: g5.xlarge"),
        "{}",
        stdout(&show)
    );
}

/// `workspace stop` of a whole fleet is one StopInstances. When AWS refuses
/// one instance of the call (it names it), that workspace alone fails, and the others
/// go again in one call: none is sent twice after a call that took effect.
#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_stops_in_one_call_and_a_refused_instance_fails_alone() {
    let emu = Emulator::start();
    let ec2 = emu.ec2();
    let names: Vec<String> = (1..=20).map(|i| format!("lab-{i:02}")).collect();
    let mut ids = vec![];
    for n in &names {
        ids.extend(launch(&ec2, Some("lab"), Some(n), "t3.micro", 1).await);
    }
    let refused = ids[6].clone();
    emu.post(
        "/_prism/faults",
        serde_json::json!({"faults": [{
            "action": "StopInstances",
            "code": "IncorrectInstanceState",
            "status": 400,
            "message": format!("The instance '{refused}' is not in a state from which it can be stopped."),
            "count": 1,
        }]}),
    );
    emu.clear_calls();
    let mut args = vec!["workspace", "stop", "--fleet", "lab"];
    args.extend(names.iter().map(String::as_str));
    let out = emu.prism(&args);
    let text = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "a failure: {text}");
    assert!(
        text.contains("lab-07"),
        "the refused workspace is named: {text}"
    );
    let calls = emu
        .calls()
        .iter()
        .filter(|c| c.action == "StopInstances")
        .count();
    assert_eq!(calls, 2, "one call for the fleet, one for the rest: {text}");
    let listed = emu.prism(&["workspace", "list", "--fleet", "lab", "--format", "json"]);
    let states: Vec<(String, String)> = serde_json::from_str::<Value>(&stdout(&listed))
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["name"].as_str().unwrap_or_default().to_string(),
                w["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(states.len(), 20, "{states:?}");
    for (name, status) in &states {
        let want = if name == "lab-07" {
            "running"
        } else {
            "stopped"
        };
        assert_eq!(status, want, "{name}: {states:?}");
    }
}
