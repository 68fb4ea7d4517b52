//! `prism plan` against the emulator: what it proposes, its quota check, its formats,
//! and the number of AWS calls it makes.

use serde_json::Value;

use crate::emulator::{Emulator, launch, mutating_calls, stderr, stdout};

fn manifest(name: &str, count: usize, extra: &str) -> String {
    format!(
        "name: {name}\nproject: cs499\ntemplate: python-ml\ncount: {count}\n{extra}templates:\n  python-ml:\n    image: ami-785db401\n    instance_type: t3.xlarge\n"
    )
}

fn plan_json(emu: &Emulator, path: &std::path::Path) -> Value {
    let out = emu.prism(&["plan", "--format", "json", path.to_str().unwrap()]);
    assert!(out.status.success(), "plan failed:\n{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).expect("plan JSON")
}

/// The (action, workspace) pairs of a JSON plan.
pub(crate) fn actions(plan: &Value) -> Vec<(String, String)> {
    plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap().to_string(),
                a["workspace"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn empty_account_plans_a_create_per_workspace() {
    let emu = Emulator::start();
    let path = emu.write("class.yaml", &manifest("cs499", 3, ""));
    let plan = plan_json(&emu, &path);
    assert_eq!(
        actions(&plan),
        [
            ("create", "cs499-01"),
            ("create", "cs499-02"),
            ("create", "cs499-03")
        ]
        .map(|(a, w)| (a.to_string(), w.to_string()))
    );
    assert_eq!(plan["summary"]["create"], 3);
    assert_eq!(plan["actions"][0]["vcpus"], 4);
    assert_eq!(plan["actions"][0]["instance_type"], "t3.xlarge");
    assert_eq!(plan["actions"][0]["instance_id"], Value::Null);
    assert_eq!(plan["fleet"], "cs499");

    let text = emu.prism(&["plan", path.to_str().unwrap()]);
    let text = stdout(&text);
    assert!(text.contains("+ cs499-01"), "{text}");
    assert!(
        text.contains("Plan: 3 to create, 0 to start, 0 to stop, 0 to replace, 0 to delete."),
        "{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "NO_COLOR output has escape codes: {text:?}"
    );

    let detailed = emu.prism(&["plan", "--detailed-exitcode", path.to_str().unwrap()]);
    assert_eq!(detailed.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn existing_workspaces_are_started_replaced_or_kept() {
    let emu = Emulator::start();
    let ec2 = emu.ec2();
    launch(&ec2, Some("cs499"), Some("cs499-01"), "t3.xlarge", 1).await;
    let stopped = launch(&ec2, Some("cs499"), Some("cs499-02"), "t3.xlarge", 1).await;
    ec2.stop_instances()
        .instance_ids(&stopped[0])
        .send()
        .await
        .unwrap();
    let old = launch(&ec2, Some("cs499"), Some("cs499-03"), "t3.large", 1).await;
    let gone = launch(&ec2, Some("cs499"), Some("cs499-09"), "t3.xlarge", 1).await;
    launch(
        &ec2,
        Some("other-fleet"),
        Some("other-fleet-01"),
        "t3.xlarge",
        1,
    )
    .await;

    let path = emu.write("class.yaml", &manifest("cs499", 4, ""));
    let plan = plan_json(&emu, &path);
    // A type change is a resize in place: with or without prune.
    assert_eq!(
        actions(&plan),
        [
            ("start", "cs499-02"),
            ("resize", "cs499-03"),
            ("create", "cs499-04")
        ]
        .map(|(a, w)| (a.to_string(), w.to_string()))
    );
    assert_eq!(plan["actions"][0]["instance_id"], stopped[0].as_str());
    assert_eq!(plan["actions"][1]["instance_id"], old[0].as_str());
    assert_eq!(
        plan["actions"][1]["reason"],
        "t3.large → t3.xlarge (stop, change type, start; disk kept)"
    );
    let kept = plan["would_delete_with_prune"].as_array().unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["action"], "delete");
    assert_eq!(kept[0]["instance_id"], gone[0].as_str());
    assert_eq!(plan["summary"]["delete"], 0);
    assert_eq!(plan["summary"]["replace"], 0);
    assert_eq!(plan["summary"]["resize"], 1);

    let pruning = emu.write("prune.yaml", &manifest("cs499", 4, "prune: true\n"));
    let plan = plan_json(&emu, &pruning);
    assert_eq!(
        actions(&plan),
        [
            ("start", "cs499-02"),
            ("resize", "cs499-03"),
            ("create", "cs499-04"),
            ("delete", "cs499-09")
        ]
        .map(|(a, w)| (a.to_string(), w.to_string()))
    );
    let last = plan["actions"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["action"], "delete");
    assert_eq!(last["instance_id"], gone[0].as_str());
    assert_eq!(plan["summary"]["delete"], 1);

    let stopped_fleet = emu.write("stopped.yaml", &manifest("cs499", 2, "state: stopped\n"));
    let plan = plan_json(&emu, &stopped_fleet);
    assert_eq!(
        actions(&plan),
        [("stop".to_string(), "cs499-01".to_string())]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shortfall_says_how_many_fit_in_text_and_json() {
    let emu = Emulator::start();
    emu.set_quota("ec2", "L-1216C47A", 32.0);
    // 16 vCPUs used by instances prism does not own.
    launch(&emu.ec2(), None, None, "t3.xlarge", 4).await;
    let path = emu.write("class.yaml", &manifest("cs499", 10, ""));

    let plan = plan_json(&emu, &path);
    let q = &plan["quota"][0];
    assert_eq!(q["code"], "L-1216C47A");
    assert_eq!(q["limit"], 32.0);
    assert_eq!(q["usage"], 16);
    assert_eq!(q["needed"], 40);
    assert_eq!(q["available"], 16);
    assert_eq!(q["fits"], false);
    assert_eq!(q["recommended_value"], 70.0);
    let warning = plan["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["kind"] == "quota_shortfall")
        .expect("a shortfall warning");
    let message = warning["message"].as_str().unwrap();
    assert!(
        message.starts_with("Only 4 of 10 new workspaces fit"),
        "{message}"
    );
    assert!(
        message.contains("(needs 40 vCPUs, 16 available of 32)"),
        "{message}"
    );
    let options = warning["options"].to_string();
    assert!(
        // 56 vCPUs in use after the plan: 70 keeps them at 80 %, out of critical.
        options.contains("prism quota request --quota on-demand-vcpus --desired-value 70"),
        "{options}"
    );

    let text = stdout(&emu.prism(&["plan", path.to_str().unwrap()]));
    assert!(text.contains("Only 4 of 10 new workspaces fit"), "{text}");
    assert!(text.contains("16 used + 40 needed of 32 vCPUs"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_do_not_grow_with_the_fleet() {
    let emu = Emulator::start();
    emu.set_quota("ec2", "L-1216C47A", 1000.0);
    let ec2 = emu.ec2();
    for i in 1..=40 {
        let ws = format!("big-{i:02}");
        launch(&ec2, Some("big"), Some(&ws), "t3.xlarge", 1).await;
    }
    let small = emu.write("small.yaml", &manifest("big", 5, ""));
    let large = emu.write("large.yaml", &manifest("big", 100, ""));

    emu.clear_calls();
    plan_json(&emu, &small);
    let small_calls = emu.call_counts();
    emu.clear_calls();
    let plan = plan_json(&emu, &large);
    let large_calls = emu.call_counts();
    assert_eq!(plan["summary"]["create"], 60);
    assert_eq!(small_calls, large_calls);
    assert_eq!(
        large_calls.get("DescribeInstances"),
        Some(&2),
        "{large_calls:?}"
    );
    assert_eq!(
        large_calls.get("DescribeInstanceTypes"),
        Some(&1),
        "{large_calls:?}"
    );
    let mutating: Vec<_> = large_calls
        .keys()
        .filter(|a| !a.starts_with("Describe") && !a.starts_with("Get"))
        .collect();
    assert!(
        mutating.is_empty(),
        "plan made mutating calls: {mutating:?}"
    );
}

#[test]
fn image_lookups_resolve_to_the_newest_match() {
    let emu = Emulator::start();
    let text = "name: lab\nproject: p\ntemplate: t\ncount: 1\ntemplates:\n  t:\n    image: {owner: \"099720109477\", name: \"ubuntu/images/hvm-ssd/ubuntu-*\"}\n    instance_type: t3.micro\n";
    let path = emu.write("lab.yaml", text);
    let plan = plan_json(&emu, &path);
    let id = plan["image_id"].as_str().expect("an image id");
    assert!(id.starts_with("ami-"), "{id}");

    let missing = emu.write(
        "missing.yaml",
        &text.replace("ubuntu/images", "no-such-image"),
    );
    // A lookup that matches nothing cannot launch: the plan fails at the image.
    let out = emu.prism(&["plan", missing.to_str().unwrap(), "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let failure: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        failure["error"]["code"], "InvalidAMIID.NotFound",
        "{failure}"
    );
    let problem = &failure["error"]["problems"][0];
    assert!(
        problem["pointer"].as_str().unwrap().ends_with("/image"),
        "{failure}"
    );
    assert!(
        problem["hint"]
            .as_str()
            .unwrap()
            .contains("has a name matching"),
        "{failure}"
    );
}

#[test]
fn a_saved_plan_records_the_fleet_fingerprint() {
    let emu = Emulator::start();
    let path = emu.write("class.yaml", &manifest("cs499", 2, ""));
    let saved = emu.dir.path().join("plan.json");
    let out = emu.prism(&[
        "plan",
        path.to_str().unwrap(),
        "--out",
        saved.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("Saved the plan to"));
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(saved).unwrap()).unwrap();
    assert_eq!(saved["plan"]["summary"]["create"], 2);
    assert_eq!(saved["plan"]["fingerprint"].as_str().unwrap().len(), 64);
    assert_eq!(saved["manifest_sha256"].as_str().unwrap().len(), 64);
}

#[test]
fn flags_choose_the_endpoint_and_region() {
    let emu = Emulator::start();
    let path = emu.write("class.yaml", &manifest("cs499", 1, "region: eu-west-1\n"));
    let out = crate::emulator::prism_command(&[
        "plan",
        "--format",
        "json",
        "--endpoint-url",
        &emu.url,
        "--region",
        "ap-southeast-2",
        path.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(plan["region"], "ap-southeast-2");

    let out = emu.prism(&["plan", "--format", "json", path.to_str().unwrap()]);
    let plan: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        plan["region"], "eu-west-1",
        "the manifest's region beats AWS_REGION"
    );
}

#[test]
fn an_unreachable_endpoint_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("class.yaml");
    std::fs::write(&path, manifest("cs499", 1, "")).unwrap();
    let out = crate::emulator::prism_command(&[
        "plan",
        "--endpoint-url",
        "http://127.0.0.1:9",
        path.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("AWS could not be reached [EndpointUnreachable]"),
        "{err}"
    );
    assert!(err.contains("What you can do: Check the network"), "{err}");
}

/// Calls that change the account.
#[test]
fn an_unknown_instance_type_is_a_plan_error_and_apply_changes_nothing() {
    let emu = Emulator::start();
    let path = emu.write(
        "class.yaml",
        &manifest("cs499", 2, "").replace("t3.xlarge", "t3.mega"),
    );
    let path = path.to_str().unwrap();

    let out = emu.prism(&["plan", path]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{}{err}", stdout(&out));
    assert!(
        err.contains("Unknown instance type [InvalidInstanceType]"),
        "{err}"
    );
    assert!(
        err.contains("the instance type t3.mega is not offered in us-west-2"),
        "{err}"
    );
    assert!(!stdout(&out).contains("fits"), "{}", stdout(&out));

    let json = emu.prism(&["plan", "--format", "json", "--detailed-exitcode", path]);
    assert_eq!(json.status.code(), Some(1));
    let v: Value = serde_json::from_str(&stderr(&json))
        .or_else(|_| serde_json::from_str(&stdout(&json)))
        .expect("a JSON error");
    assert_eq!(v["error"]["code"], "InvalidInstanceType");

    let apply = emu.prism(&["apply", "--yes", path]);
    assert_eq!(apply.status.code(), Some(1), "{}", stdout(&apply));
    assert!(stderr(&apply).contains("t3.mega"), "{}", stderr(&apply));
    assert_eq!(mutating_calls(&emu), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replacement_without_prune_is_shown_but_not_counted() {
    let emu = Emulator::start();
    let old = launch_from(&emu, OLD_IMAGE, "cs499", "cs499-01").await;
    let path = emu.write("class.yaml", &manifest("cs499", 1, ""));
    let path = path.to_str().unwrap();

    let text = stdout(&emu.prism(&["plan", path]));
    assert!(
        text.contains(&format!(
            "-/+ cs499-01  {old}  replace needs `prune: true`, not done: image {OLD_IMAGE} → ami-785db401; a new instance from the image: its disk is lost",
        )),
        "{text}"
    );
    assert!(
        text.contains("Plan: 0 to create, 0 to start, 0 to stop, 0 to replace, 0 to delete."),
        "{text}"
    );
    let detailed = emu.prism(&["plan", "--detailed-exitcode", path]);
    assert_eq!(detailed.status.code(), Some(0), "{}", stdout(&detailed));

    let plan = plan_json(&emu, std::path::Path::new(path));
    assert_eq!(plan["actions"], serde_json::json!([]));
    assert_eq!(plan["summary"]["replace"], 0);
    assert_eq!(plan["would_delete_with_prune"][0]["action"], "replace");
    assert_eq!(
        plan["would_delete_with_prune"][0]["instance_id"],
        old.as_str()
    );

    emu.clear_calls();
    let apply = emu.prism(&["apply", "--yes", path]);
    assert_eq!(
        apply.status.code(),
        Some(0),
        "{}{}",
        stdout(&apply),
        stderr(&apply)
    );
    // The only change: the fleet, from before owners, is now class.yaml's (a tag).
    assert_eq!(mutating_calls(&emu), ["CreateTags"]);

    // With prune, the same plan replaces it and counts it.
    let pruning = emu.write("class.yaml", &manifest("cs499", 1, "prune: true\n"));
    let detailed = emu.prism(&["plan", "--detailed-exitcode", pruning.to_str().unwrap()]);
    assert_eq!(detailed.status.code(), Some(2));
    assert!(stdout(&detailed).contains("0 to stop, 1 to replace"));
}

/// Another image than the manifests' (an x86_64 image moto knows in every region).
const OLD_IMAGE: &str = "ami-1e749f67";

/// Launches one t3.xlarge of `fleet` for `workspace` from `image`.
async fn launch_from(emu: &Emulator, image: &str, fleet: &str, workspace: &str) -> String {
    use aws_sdk_ec2::types::{InstanceType, ResourceType, Tag, TagSpecification};
    let tags = TagSpecification::builder()
        .resource_type(ResourceType::Instance)
        .tags(Tag::builder().key("prism:fleet").value(fleet).build())
        .tags(
            Tag::builder()
                .key("prism:workspace")
                .value(workspace)
                .build(),
        )
        .build();
    let out = emu
        .ec2()
        .run_instances()
        .image_id(image)
        .instance_type(InstanceType::from("t3.xlarge"))
        .min_count(1)
        .max_count(1)
        .tag_specifications(tags)
        .send()
        .await
        .expect("RunInstances");
    out.instances()[0].instance_id().unwrap().to_string()
}

#[test]
fn an_image_id_that_does_not_exist_fails_the_plan_at_its_line() {
    let emu = Emulator::start();
    let path = emu.write(
        "class.yaml",
        "name: cs\nproject: p\ntemplate: python-ml\ncount: 3\ntemplates:\n  python-ml:\n    image: ami-0123456789abcdef0\n    instance_type: t3.micro\n",
    );
    let path = path.to_str().unwrap();
    let out = emu.prism(&["plan", path]);
    let (text, err) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{text}{err}");
    assert!(
        !text.contains("to create"),
        "a plan that cannot launch: {text}"
    );
    assert!(
        err.contains(
            "class.yaml:7:12: error: image ami-0123456789abcdef0 does not exist in this region"
        ),
        "{err}"
    );
    assert!(err.contains("AMI ids belong to one region"), "{err}");
    assert!(!err.contains("name pattern"), "advice for an id: {err}");

    let out = emu.prism(&["apply", "--yes", path]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(mutating_calls(&emu), Vec::<String>::new());
}
