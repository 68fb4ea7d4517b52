//! Launches in batches (`rate_limit: auto`): one RunInstances for many workspaces, and
//! each failure a batch can meet — a lost answer, a kill between the call and the
//! tags, a zone with room for fewer than asked, a call that times out, a rerun while
//! AWS does not show the instances yet — ends with exactly one instance per workspace,
//! each carrying its own tags.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::emulator::{
    Emulator, fleet_instances, per_workspace, prism_command, stderr, stdout, tag,
};
use crate::eventually::eventually;

const FLEET: &str = "cs";

fn class(emu: &Emulator, count: usize) -> String {
    emu.set_quota("ec2", "L-1216C47A", 2000.0);
    let path = emu.write(
        "class.yaml",
        &format!(
            "name: {FLEET}\nproject: p\ntemplate: t\ncount: {count}\nretry: {{initial_backoff: 100ms, max_backoff: 1s}}\ntemplates:\n  t:\n    image: ami-785db401\n    instance_type: t3.micro\n"
        ),
    );
    path.to_str().unwrap().to_string()
}

fn one_each(count: usize) -> BTreeMap<String, usize> {
    (1..=count)
        .map(|i| (format!("{FLEET}-{i:02}"), 1))
        .collect()
}

/// Every live instance of the fleet carries its own tags: `Name` and `prism:workspace`
/// the same, and the list of its batch.
async fn all_named(emu: &Emulator) {
    for i in fleet_instances(emu, FLEET).await {
        let ws = tag(&i, "prism:workspace");
        assert!(ws.is_some(), "untagged: {:?}", i.instance_id());
        assert_eq!(tag(&i, "Name"), ws, "{:?}", i.instance_id());
    }
}

fn apply(emu: &Emulator, path: &str) -> std::process::Output {
    let out = emu.prism(&["apply", "--yes", path]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    out
}

/// `prism apply --yes --no-wait path` started in the background, its launch notes under
/// `cache` (shared by the runs of one test).
fn apply_in_background(emu: &Emulator, cache: &Path, path: &str) -> Child {
    prism_command(&["apply", "--yes", "--no-wait", path])
        .env("AWS_ENDPOINT_URL", &emu.url)
        .env("XDG_CACHE_HOME", cache)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A class of 30 with no pace set: one RunInstances per zone, against AWS's buckets, and
/// every instance named; the next apply changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_class_is_one_call_per_zone_and_every_instance_is_named() {
    let emu = Emulator::start();
    let path = class(&emu, 30);
    emu.post("/_prism/throttle", json!({"enabled": true}));
    let out = apply(&emu, &path);
    assert!(
        stdout(&out).contains("Launch pace: auto"),
        "{}",
        stdout(&out)
    );
    let calls = emu.count("RunInstances");
    assert!((1..=4).contains(&calls), "one call per zone: {calls}");
    assert_eq!(per_workspace(&emu, FLEET).await, one_each(30));
    all_named(&emu).await;
    let again = apply(&emu, &path);
    assert!(stdout(&again).contains("No changes."), "{}", stdout(&again));
}

/// An explicit pace is obeyed as set: one call per workspace.
#[tokio::test(flavor = "multi_thread")]
async fn an_explicit_pace_launches_one_call_per_workspace() {
    let emu = Emulator::start();
    let path = emu.write(
        "class.yaml",
        "name: cs\nproject: p\ntemplate: t\ncount: 6\nrate_limit: {rate_per_minute: 6000, burst_size: 10}\ntemplates:\n  t: {image: ami-785db401, instance_type: t3.micro}\n",
    );
    apply(&emu, path.to_str().unwrap());
    assert_eq!(emu.count("RunInstances"), 6);
    assert_eq!(per_workspace(&emu, FLEET).await, one_each(6));
}

/// The answer of every batch is lost once (the launch took effect): the retry with the
/// same token gets the same instances back.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_answer_of_a_batch_gets_its_instances_back() {
    let emu = Emulator::start();
    let path = class(&emu, 30);
    emu.post(
        "/_prism/faults",
        json!({"faults": [{"action": "RunInstances", "code": "InternalError", "status": 500, "lost": true, "count": 4}]}),
    );
    apply(&emu, &path);
    assert_eq!(per_workspace(&emu, FLEET).await, one_each(30));
    all_named(&emu).await;
}

/// Every batch's answer comes after the SDK gave up (a lost answer after a long wait):
/// the retries, with the same token, launch nothing more.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_that_times_out_launches_nothing_more() {
    let emu = Emulator::start();
    let path = class(&emu, 12);
    emu.post(
        "/_prism/faults",
        json!({"faults": [{"action": "RunInstances", "code": "RequestTimeout", "status": 503, "lost": true, "delay_ms": 1500, "count": 2}]}),
    );
    apply(&emu, &path);
    assert_eq!(per_workspace(&emu, FLEET).await, one_each(12));
}

/// How many of the fleet's instances are in `zone`.
async fn in_zone(emu: &Emulator, zone: &str) -> usize {
    fleet_instances(emu, FLEET)
        .await
        .iter()
        .filter(|i| i.placement().and_then(|p| p.availability_zone()) == Some(zone))
        .count()
}

/// After a batch a zone had no (or too little) room for: one instance each, all named,
/// in a few calls rather than one each (one per zone, then at most one more per other
/// zone for the workspaces left over; a lone one may launch alone), and a rerun
/// changes nothing.
async fn settled_in_few_calls(emu: &Emulator, path: &str, count: usize, out: &Output) {
    assert_eq!(per_workspace(emu, FLEET).await, one_each(count));
    all_named(emu).await;
    let calls = emu.count("RunInstances");
    assert!(calls <= 8, "{calls} RunInstances calls\n{}", stdout(out));
    let again = apply(emu, path);
    assert!(stdout(&again).contains("No changes."), "{}", stdout(&again));
}

/// A zone with room for 3 when a batch asks for more: AWS launches 3, the rest launch
/// in new batches elsewhere, and a rerun launches nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_zone_with_room_for_fewer_launches_what_it_can_and_the_rest_go_elsewhere() {
    let emu = Emulator::start();
    let path = class(&emu, 60);
    emu.post(
        "/_prism/capacity",
        json!({"sold_out": [{"zone": "us-west-2a", "instance_type": "t3.micro", "left": 3}]}),
    );
    let out = apply(&emu, &path);
    assert_eq!(in_zone(&emu, "us-west-2a").await, 3, "{}", stdout(&out));
    settled_in_few_calls(&emu, &path, 60, &out).await;
}

/// A zone with no room at all refuses its batch: the zone is marked sold out and its
/// workspaces form new batches in their next zones.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_refused_for_capacity_forms_new_batches_in_the_next_zones() {
    let emu = Emulator::start();
    let path = class(&emu, 40);
    emu.post(
        "/_prism/capacity",
        json!({"sold_out": [{"zone": "us-west-2a", "instance_type": "t3.micro"}]}),
    );
    let out = apply(&emu, &path);
    assert_eq!(in_zone(&emu, "us-west-2a").await, 0, "{}", stdout(&out));
    settled_in_few_calls(&emu, &path, 40, &out).await;
}

/// Killed after the batches were launched, before their instances got their own tags,
/// then run again while AWS does not show the instances yet: the rerun sends the noted
/// batches again and gets the same instances; once AWS shows them, a plan knows each
/// by its launch, and the next apply names them.
#[tokio::test(flavor = "multi_thread")]
async fn killed_between_the_call_and_the_tags_then_rerun_in_the_lag() {
    let emu = Emulator::start();
    let path = class(&emu, 30);
    let cache = emu.dir.path().join("cache");
    emu.post("/_prism/lag", json!({"seconds": 600}));
    emu.post(
        "/_prism/faults",
        json!({"faults": [{"action": "CreateTags", "code": "", "delay_ms": 60000}]}),
    );
    let mut child = apply_in_background(&emu, &cache, &path);
    eventually(
        "the first CreateTags is sent",
        Duration::from_secs(30),
        || {
            emu.calls()
                .iter()
                .any(|c| c.action == "CreateTags")
                .then_some(())
        },
    );
    child.kill().unwrap(); // SIGKILL, between the launches and their tags
    child.wait().unwrap();
    let launches = emu.count("RunInstances");
    emu.post("/_prism/faults", json!({"faults": []}));

    // AWS shows none of them yet: the rerun plans 30 launches and replays the batches.
    let out = emu.prism(&["apply", "--yes", "--no-wait", &path]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(
        emu.count("RunInstances"),
        2 * launches,
        "the same calls again: {}",
        stdout(&out)
    );
    emu.reveal();
    emu.post("/_prism/lag", json!({"seconds": 0}));
    assert_eq!(
        fleet_instances(&emu, FLEET).await.len(),
        30,
        "no instance launched twice"
    );

    // The rerun named its own; a plan knows every instance by its workspace.
    let plan = emu.prism(&["plan", &path]);
    assert!(
        stdout(&plan).contains("Plan: 0 to create"),
        "{}",
        stdout(&plan)
    );
    apply(&emu, &path);
    assert_eq!(per_workspace(&emu, FLEET).await, one_each(30));
    all_named(&emu).await;
}

/// Two runs at once on one machine, with different plans (the manifest edited between
/// them), while AWS does not show the instances yet; then a workspace launched alone a
/// moment ago, which the next run would put in a batch: never a second instance.
#[tokio::test(flavor = "multi_thread")]
async fn runs_with_different_plans_at_once_launch_each_workspace_once() {
    let emu = Emulator::start();
    let small = class(&emu, 1);
    let cache = emu.dir.path().join("cache");
    emu.post("/_prism/lag", json!({"seconds": 600}));
    let run = |path: &str| apply_in_background(&emu, &cache, path);
    // cs-01 launches alone (a zone of one).
    assert!(run(&small).wait().unwrap().success());
    // Then two runs at once, for 20 and for 30 workspaces: cs-01 is still hidden.
    // The same manifest (its name is its owner tag), edited: copies in two folders.
    let edited = |folder: &str, count: usize| {
        let dir = emu.dir.path().join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("class.yaml");
        let text = std::fs::read_to_string(&small).unwrap();
        std::fs::write(&path, text.replace("count: 1", &format!("count: {count}"))).unwrap();
        path
    };
    let twenty = edited("a", 20);
    let thirty = edited("b", 30);
    let mut a = run(twenty.to_str().unwrap());
    let mut b = run(thirty.to_str().unwrap());
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());
    emu.reveal();
    emu.post("/_prism/lag", json!({"seconds": 0}));
    let live = fleet_instances(&emu, FLEET)
        .await
        .iter()
        .filter(|i| crate::emulator::state(i) != "terminated")
        .count();
    assert_eq!(live, 30, "30 instances for 30 workspaces");
    apply(&emu, thirty.to_str().unwrap());
    assert_eq!(per_workspace(&emu, FLEET).await, one_each(30));
    all_named(&emu).await;
}

/// Two runs of one class at once, while AWS does not show instances yet, one zone with
/// room for 3 and another with none: both meet the refusals, and each workspace still
/// gets one instance, whichever run formed the batch it launched in.
#[tokio::test(flavor = "multi_thread")]
async fn two_runs_at_once_meeting_sold_out_zones_launch_each_workspace_once() {
    let emu = Emulator::start();
    let path = class(&emu, 60);
    let cache = emu.dir.path().join("cache");
    emu.post("/_prism/lag", json!({"seconds": 600}));
    emu.post(
        "/_prism/capacity",
        json!({"sold_out": [
            {"zone": "us-west-2a", "instance_type": "t3.micro", "left": 3},
            {"zone": "us-west-2b", "instance_type": "t3.micro"},
        ]}),
    );
    let run = || apply_in_background(&emu, &cache, &path);
    let (mut a, mut b) = (run(), run());
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());
    emu.reveal();
    emu.post("/_prism/lag", json!({"seconds": 0}));
    assert_eq!(per_workspace(&emu, FLEET).await, one_each(60));
    let again = apply(&emu, &path);
    assert!(stdout(&again).contains("No changes."), "{}", stdout(&again));
    all_named(&emu).await;
}
