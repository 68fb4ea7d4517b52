//! `prism watch` against the emulator: edits, drift, invalid edits, held deletions,
//! shutdown.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::emulator::{
    Emulator, Running, fleet_instances, mutating_calls, per_workspace, prism_command, state,
    stderr, stop, tag,
};
use crate::eventually::{eventually_async, file_contains};

fn manifest(count: usize, extra: &str) -> String {
    format!(
        "name: lab\nproject: p\ntemplate: t\ncount: {count}\n{extra}\nrate_limit: {{rate_per_minute: 600, burst_size: 10}}\ntemplates:\n  t: {{image: ami-785db401, instance_type: t3.micro}}\n"
    )
}

async fn live(emu: &Emulator) -> usize {
    per_workspace(emu, "lab").await.values().sum()
}

/// Polls until the fleet has `n` live instances, or fails after 30 s.
pub(crate) async fn until_live(emu: &Emulator, n: usize) {
    eventually_async(
        &format!("{n} live instances"),
        Duration::from_secs(30),
        async || {
            let now = live(emu).await;
            if now == n { Ok(()) } else { Err(now) }
        },
    )
    .await
}

/// Waits until the watch's log holds every one of `needles`; its text.
async fn until_logged(log: &Path, needles: &[&str]) -> String {
    eventually_async(
        &format!("the watch to log {needles:?}"),
        Duration::from_secs(30),
        async || file_contains(log, needles),
    )
    .await
}

/// Waits until `passes` more passes of the watch have begun after the `since`-th
/// (counted by [`Emulator::fleet_reads`]): every pass before the last has ended.
pub(crate) async fn until_passes(emu: &Emulator, since: usize, passes: usize) {
    eventually_async(
        &format!("{passes} more passes of the watch"),
        Duration::from_secs(30),
        async || {
            let begun = emu.fleet_reads() - since;
            if begun >= passes { Ok(()) } else { Err(begun) }
        },
    )
    .await
}

/// `prism watch --resync 1s` on `path`, its log in `log`.
pub(crate) fn spawn_watch(
    emu: &Emulator,
    path: &std::path::Path,
    log: &std::path::Path,
) -> Running {
    let child = prism_command(&["watch", "--resync", "1s", path.to_str().unwrap()])
        .env("AWS_ENDPOINT_URL", &emu.url)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Running(Some(child))
}

#[tokio::test(flavor = "multi_thread")]
async fn once_runs_a_single_pass() {
    let emu = Emulator::start();
    let path = emu.write("lab.yaml", &manifest(3, ""));
    let out = emu.prism(&["watch", "--once", path.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pass 1: 3 done, 0 failed"), "{err}");
    assert!(err.contains("one pass (--once): no next pass"), "{err}");
    assert!(!err.contains("next resync"), "{err}");
    until_live(&emu, 3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn once_with_deletions_held_says_so_and_exits_1() {
    let emu = Emulator::start();
    let path = emu.write("lab.yaml", &manifest(4, "prune: true"));
    let path = path.to_str().unwrap();
    let out = emu.prism(&["watch", "--once", path]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    emu.write("lab.yaml", &manifest(1, "prune: true"));
    let out = emu.prism(&["watch", "--once", path]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "nothing could be done:\n{err}");
    assert!(
        err.contains("held: this pass would delete 3 of the fleet's 4 instances"),
        "{err}"
    );
    assert_eq!(live(&emu).await, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_follows_edits_restores_drift_and_survives_bad_edits() {
    let emu = Emulator::start();
    let path = emu.write("lab.yaml", &manifest(3, ""));
    let log = emu.dir.path().join("watch.log");
    let child = spawn_watch(&emu, &path, &log);
    until_live(&emu, 3).await;

    std::fs::write(&path, manifest(5, "")).unwrap();
    until_live(&emu, 5).await;

    // Drift: an instance terminated outside prism comes back on the next resync.
    let ec2 = emu.ec2();
    let victim = ec2
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:prism:workspace")
                .values("lab-02")
                .build(),
        )
        .send()
        .await
        .unwrap()
        .reservations()[0]
        .instances()[0]
        .instance_id()
        .unwrap()
        .to_string();
    ec2.terminate_instances()
        .instance_ids(&victim)
        .send()
        .await
        .unwrap();
    // A new instance of lab-02 (the fleet is briefly at 4, too briefly to wait for).
    eventually_async(
        "lab-02 launched again",
        Duration::from_secs(30),
        async || {
            let again: Vec<String> = fleet_instances(&emu, "lab")
                .await
                .iter()
                .filter(|i| tag(i, "prism:workspace") == Some("lab-02"))
                .filter(|i| !matches!(state(i).as_str(), "terminated" | "shutting-down"))
                .filter_map(|i| i.instance_id().map(str::to_string))
                .collect();
            if again.len() == 1 && again[0] != victim {
                Ok(())
            } else {
                Err(format!("lab-02: {again:?}, {victim} terminated"))
            }
        },
    )
    .await;
    assert_eq!(live(&emu).await, 5);

    // An invalid edit changes nothing and says why; fixing it resumes.
    std::fs::write(&path, "name: lab\ncount: [\n").unwrap();
    until_logged(
        &log,
        &["error: invalid YAML", "keeping the last good manifest"],
    )
    .await;
    assert_eq!(live(&emu).await, 5);

    // Fewer workspaces without prune: nothing is deleted. Once three passes have begun
    // since the edit, the one it started has ended, even after a resync under way.
    emu.clear_calls();
    std::fs::write(&path, manifest(1, "")).unwrap();
    until_passes(&emu, 0, 3).await;
    assert_eq!(live(&emu).await, 5);
    assert_eq!(mutating_calls(&emu), Vec::<String>::new());

    assert_eq!(stop(child), Some(0), "SIGTERM exits 0");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("stopping: letting the actions in flight finish"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mass_deletion_is_held_and_a_deleted_file_deletes_nothing() {
    let emu = Emulator::start();
    let path = emu.write("lab.yaml", &manifest(4, "prune: true"));
    let log = emu.dir.path().join("watch.log");
    let child = spawn_watch(&emu, &path, &log);
    until_live(&emu, 4).await;

    std::fs::write(&path, manifest(1, "prune: true")).unwrap();
    // The pass's held workspaces, then its status line at its end.
    until_logged(
        &log,
        &[
            "held: this pass would delete 3 of the fleet's 4 instances",
            "(3 deletions held)",
        ],
    )
    .await;
    assert_eq!(live(&emu).await, 4, "3 of 4 is more than half");
    // Two more passes (resync 1 s) end holding the same deletions, and a third begins:
    // said once, not each pass.
    until_passes(&emu, emu.fleet_reads(), 3).await;
    let text = std::fs::read_to_string(&log).unwrap();
    let passes = text.matches(" deletions held").count();
    let held = text
        .lines()
        .filter(|l| l.contains("skipped: held: this pass would delete"))
        .count();
    assert_eq!((passes, held), (1, 3), "{text}");

    emu.clear_calls();
    std::fs::remove_file(&path).unwrap();
    until_logged(&log, &["was deleted: reconciling stops until it is back"]).await;
    // A paused watch makes no call to wait for: a resync (1 s) must go by without one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(live(&emu).await, 4);
    assert_eq!(mutating_calls(&emu), Vec::<String>::new());
    assert_eq!(stop(child), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_are_one_object_per_line() {
    let emu = Emulator::start();
    let path = emu.write("lab.yaml", &manifest(2, ""));
    let out = emu.prism(&[
        "watch",
        "--once",
        "--log-format",
        "json",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let logs: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    let messages: Vec<&str> = logs.iter().filter_map(|l| l["message"].as_str()).collect();
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("pass 1: 2 done, 0 failed")),
        "{messages:?}"
    );
    assert!(
        logs.iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string())
    );
    until_live(&emu, 2).await;
}

/// In a `state: stopped` fleet, a workspace terminated behind prism's back is relaunched
/// and stopped in the same pass, as apply does: it is not left running until the next.
#[tokio::test(flavor = "multi_thread")]
async fn a_relaunched_workspace_of_a_stopped_fleet_is_stopped_in_the_same_pass() {
    let emu = Emulator::start();
    let path = emu.write("lab.yaml", &manifest(2, "state: stopped"));
    let out = emu.prism(&["watch", "--once", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let ec2 = emu.ec2();
    let described = ec2.describe_instances().send().await.unwrap();
    let first: Vec<String> = described
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect();
    ec2.terminate_instances()
        .instance_ids(&first[0])
        .send()
        .await
        .unwrap();
    let out = emu.prism(&["watch", "--once", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let described = ec2.describe_instances().send().await.unwrap();
    let states: Vec<(String, String)> = described
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter(|i| i.instance_id() != Some(first[0].as_str()))
        .map(|i| {
            (
                i.instance_id().unwrap_or_default().to_string(),
                i.state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_string())
                    .unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(states.len(), 2, "{states:?}");
    assert!(
        states.iter().all(|(_, s)| s == "stopped"),
        "right after the pass, nothing runs: {states:?}"
    );
}
