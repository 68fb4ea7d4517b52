//! `prism apply` against the emulator: convergence, idempotency under faults, failure
//! isolation, confirmation, saved plans, events and interruption.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use crate::emulator::{
    Emulator, interrupt_after, launch, mutating_calls, per_workspace, prism_command, stderr, stdout,
};

fn manifest(name: &str, count: usize, extra: &str) -> String {
    format!(
        "name: {name}\nproject: p\ntemplate: t\ncount: {count}\n{extra}\ntemplates:\n  t:\n    image: ami-785db401\n    instance_type: t3.micro\n"
    )
}

/// Fast pacing, so tests spend their time on behaviour rather than on waiting.
const FAST: &str = "rate_limit: {rate_per_minute: 600, burst_size: 10}\nretry: {initial_backoff: 100ms, max_backoff: 1s}";

fn exactly_one_each(counts: &BTreeMap<String, usize>, fleet: &str, n: usize) {
    let want: BTreeMap<String, usize> = (1..=n).map(|i| (format!("{fleet}-{i:02}"), 1)).collect();
    assert_eq!(counts, &want, "instances per workspace");
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_launches_then_a_second_apply_changes_nothing() {
    let emu = Emulator::start();
    let path = emu.write("class.yaml", &manifest("cs", 5, FAST));
    let out = emu.prism(&["apply", "--yes", path.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    assert!(
        text.contains("Rate limiting enabled: 600 launches per minute (burst: 10, adaptive)"),
        "{text}"
    );
    assert!(text.contains("✓ cs-01 launched (i-"), "{text}");
    assert!(text.contains("[5/5]"), "{text}");
    assert!(text.contains("cs-05 is running"), "{text}");
    assert!(
        text.contains("✅ All 5 workspaces launched successfully"),
        "{text}"
    );
    exactly_one_each(&per_workspace(&emu, "cs").await, "cs", 5);

    // Every instance is tagged at launch.
    let described = emu.ec2().describe_instances().send().await.unwrap();
    for i in described.reservations().iter().flat_map(|r| r.instances()) {
        let keys: Vec<&str> = i.tags().iter().filter_map(|t| t.key()).collect();
        for k in [
            "prism:fleet",
            "prism:workspace",
            "prism:project",
            "prism:template",
            "Name",
        ] {
            assert!(keys.contains(&k), "missing tag {k}: {keys:?}");
        }
    }

    emu.clear_calls();
    let again = emu.prism(&["apply", "--yes", path.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(0));
    assert!(stdout(&again).contains("No changes."), "{}", stdout(&again));
    assert_eq!(
        mutating_calls(&emu),
        Vec::<String>::new(),
        "a converged apply made mutating calls"
    );
}

/// A launch whose answer is lost is looked up by its ClientToken: found, it is done
/// without a second RunInstances (nor a launch permit).
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_answer_is_found_by_its_token() {
    let emu = Emulator::start();
    emu.post(
        "/_prism/faults",
        json!({"faults": [{"action": "RunInstances", "code": "InternalError", "status": 500, "lost": true, "count": 3}]}),
    );
    let path = emu.write("class.yaml", &manifest("lost", 4, FAST));
    let out = emu.prism(&["apply", "--yes", path.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    exactly_one_each(&per_workspace(&emu, "lost").await, "lost", 4);
    let calls = emu.calls();
    let launches = calls.iter().filter(|c| c.action == "RunInstances").count();
    assert_eq!(launches, 4, "one RunInstances per workspace");
    let lookups = calls
        .iter()
        .filter(|c| {
            c.action == "DescribeInstances" && c.filters.iter().any(|f| f == "client-token")
        })
        .count();
    assert_eq!(lookups, 3, "one lookup per lost answer");
}

/// While DescribeInstances lags behind, the lookup finds nothing and the launch is
/// retried with the same ClientToken: AWS answers with the instance it launched.
#[tokio::test(flavor = "multi_thread")]
async fn lost_answers_not_yet_seen_are_retried_with_the_same_token() {
    let emu = Emulator::start();
    emu.post("/_prism/lag", json!({"seconds": 3}));
    emu.post(
        "/_prism/faults",
        json!({"faults": [{"action": "RunInstances", "code": "InternalError", "status": 500, "lost": true, "count": 3}]}),
    );
    let path = emu.write("class.yaml", &manifest("lost", 4, FAST));
    let out = emu.prism(&["apply", "--yes", "--no-wait", path.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    assert!(text.contains("InternalError from AWS, retrying"), "{text}");
    let calls = emu.calls();
    let launches = calls.iter().filter(|c| c.action == "RunInstances").count();
    assert_eq!(launches, 7, "4 launches plus 3 retries after lost answers");
    let lookups = calls
        .iter()
        .filter(|c| c.filters.iter().any(|f| f == "client-token"))
        .count();
    assert_eq!(lookups, 3, "each lost answer was looked up first");
    emu.reveal();
    exactly_one_each(&per_workspace(&emu, "lost").await, "lost", 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_mid_apply_then_rerun_leaves_one_instance_per_workspace() {
    let emu = Emulator::start();
    // Each launch takes a second, so the kill lands with a launch in flight.
    emu.post(
        "/_prism/faults",
        json!({"faults": [{"action": "RunInstances", "code": "", "delay_ms": 1000}]}),
    );
    let path = emu.write(
        "class.yaml",
        &manifest(
            "crash",
            6,
            "rate_limit: {rate_per_minute: 120, burst_size: 2}",
        ),
    );
    let mut child = prism_command(&["apply", "--yes", path.to_str().unwrap()])
        .env("AWS_ENDPOINT_URL", &emu.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines {
        if line.unwrap().contains("launched (i-") {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = per_workspace(&emu, "crash").await.values().sum::<usize>();
    assert!(
        before < 6,
        "the kill came too late to test anything ({before} launched)"
    );

    emu.post("/_prism/faults", json!({"faults": []}));
    let out = emu.prism(&["apply", "--yes", path.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    exactly_one_each(&per_workspace(&emu, "crash").await, "crash", 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_applies_at_once_launch_each_workspace_once() {
    let emu = Emulator::start();
    emu.post(
        "/_prism/faults",
        json!({"faults": [{"action": "RunInstances", "code": "", "delay_ms": 200}]}),
    );
    let path = emu.write("class.yaml", &manifest("twin", 5, FAST));
    let spawn = || {
        prism_command(&["apply", "--yes", "--format", "json", path.to_str().unwrap()])
            .env("AWS_ENDPOINT_URL", &emu.url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert_eq!(a.status.code(), Some(0), "{}", stdout(&a));
    assert_eq!(b.status.code(), Some(0), "{}", stdout(&b));
    exactly_one_each(&per_workspace(&emu, "twin").await, "twin", 5);
    // Each instance is counted once: by the run that sent its token first; the other
    // run names it as already launched by another run.
    let summary = |out: &std::process::Output| -> Value {
        stdout(out)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["event"] == "summary")
            .unwrap_or_else(|| panic!("no summary: {}", stdout(out)))
    };
    let (sa, sb) = (summary(&a), summary(&b));
    let others = |s: &Value| -> Vec<String> {
        s["launched_by_other_runs"]
            .as_array()
            .map(|a| a.iter().map(|n| n.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    let launched = |s: &Value| s["launched"].as_u64().unwrap() as usize;
    assert_eq!(launched(&sa) + launched(&sb), 5, "{sa}\n{sb}");
    assert!(
        !others(&sa).is_empty() || !others(&sb).is_empty(),
        "both runs sent tokens, so one saw the other's: {sa}\n{sb}"
    );
    assert!(
        others(&sa).iter().all(|w| !others(&sb).contains(w)),
        "{sa}\n{sb}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn eventual_consistency_lag_causes_no_relaunch() {
    let emu = Emulator::start();
    emu.post("/_prism/lag", json!({"seconds": 4}));
    let path = emu.write("class.yaml", &manifest("lag", 3, FAST));
    let first = emu.prism(&["apply", "--yes", "--no-wait", path.to_str().unwrap()]);
    assert_eq!(first.status.code(), Some(0), "{}", stdout(&first));
    // Still invisible: this apply plans the same creates, and gets the same instances.
    let second = emu.prism(&["apply", "--yes", "--no-wait", path.to_str().unwrap()]);
    assert_eq!(second.status.code(), Some(0), "{}", stdout(&second));
    assert!(
        stdout(&second).contains("3 to create"),
        "{}",
        stdout(&second)
    );
    // A waiting apply rides out the lag.
    let third = emu.prism(&["apply", "--yes", path.to_str().unwrap()]);
    assert_eq!(third.status.code(), Some(0), "{}", stdout(&third));
    assert!(
        stdout(&third).contains("lag-03 is running"),
        "{}",
        stdout(&third)
    );
    emu.reveal();
    exactly_one_each(&per_workspace(&emu, "lag").await, "lag", 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_failure_does_not_stop_the_others() {
    let emu = Emulator::start();
    emu.post(
        "/_prism/faults",
        json!({"faults": [{"action": "RunInstances", "code": "InvalidParameterValue", "status": 400,
                           "message": "Value (x) for parameter userData is invalid.", "count": 1}]}),
    );
    let path = emu.write("class.yaml", &manifest("part", 4, FAST));
    let out = emu.prism(&["apply", "--yes", path.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("❌ 3 of 4 changes done"), "{text}");
    assert!(text.contains("(1 failed)"), "{text}");
    assert!(
        text.contains("AWS rejected a parameter [InvalidParameterValue]"),
        "{text}"
    );
    assert!(
        text.contains("What you can do: Check the template"),
        "{text}"
    );
    assert!(
        text.contains("run `prism apply` again to retry what failed"),
        "{text}"
    );
    assert_eq!(per_workspace(&emu, "part").await.values().sum::<usize>(), 3);
    assert_eq!(
        emu.call_counts()["RunInstances"],
        4,
        "permanent errors are not retried"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quota_shortfall_launches_what_fits_only_when_told_to() {
    let emu = Emulator::start();
    // Room for 3 t3.micro (2 vCPUs each).
    emu.set_quota("ec2", "L-1216C47A", 6.0);
    let path = emu.write("class.yaml", &manifest("quota", 5, FAST));
    let refused = emu.prism(&["apply", path.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    let err = stderr(&refused);
    assert!(
        err.contains("Only 3 of 5 workspaces can be launched with current quota."),
        "{err}"
    );
    assert!(
        // 10 vCPUs needed: 13 keeps them under 80 %.
        err.contains("prism quota request --quota on-demand-vcpus --desired-value 13"),
        "{err}"
    );
    assert!(
        err.contains("refusing to apply: not every workspace fits"),
        "{err}"
    );
    assert!(mutating_calls(&emu).is_empty());

    let out = emu.prism(&["apply", "--yes", path.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("⚠ 3 of 5 changes done"), "{text}");
    assert!(
        text.contains("quota-04 (Create) skipped: not launched: the On-Demand Standard"),
        "{text}"
    );
    assert!(
        text.contains(
            "as soon as it has: run `prism apply` again with `--wait-for-quota DURATION`"
        ),
        "{text}"
    );
    assert!(!text.contains("VcpuLimitExceeded"), "{text}");
    let counts = per_workspace(&emu, "quota").await;
    assert_eq!(
        counts.keys().collect::<Vec<_>>(),
        ["quota-01", "quota-02", "quota-03"],
        "the first in name order"
    );
    assert_eq!(emu.call_counts()["RunInstances"], 3);
}

#[test]
fn without_a_terminal_apply_needs_yes() {
    let emu = Emulator::start();
    let path = emu.write("class.yaml", &manifest("ask", 2, FAST));
    let out = emu.prism(&["apply", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("refusing to apply without confirmation"),
        "{}",
        stderr(&out)
    );
    assert!(mutating_calls(&emu).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_saved_plan_is_refused() {
    let emu = Emulator::start();
    let path = emu.write("class.yaml", &manifest("saved", 2, FAST));
    let plan = emu.dir.path().join("plan.json");
    let made = emu.prism(&[
        "plan",
        path.to_str().unwrap(),
        "--out",
        plan.to_str().unwrap(),
    ]);
    assert!(made.status.success());
    launch(&emu.ec2(), Some("saved"), Some("saved-01"), "t3.micro", 1).await;
    emu.clear_calls();
    let out = emu.prism(&["apply", "--yes", plan.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("the saved plan is stale"),
        "{}",
        stderr(&out)
    );
    assert!(mutating_calls(&emu).is_empty());

    let fresh = emu.prism(&[
        "plan",
        path.to_str().unwrap(),
        "--out",
        plan.to_str().unwrap(),
    ]);
    assert!(fresh.status.success());
    let out = emu.prism(&["apply", "--yes", plan.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    exactly_one_each(&per_workspace(&emu, "saved").await, "saved", 2);

    std::fs::write(&path, manifest("saved", 3, FAST)).unwrap();
    let out = emu.prism(&["apply", "--yes", plan.to_str().unwrap()]);
    assert!(
        stderr(&out).contains("changed since the plan was made"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn json_output_is_one_event_per_line() {
    let emu = Emulator::start();
    emu.post("/_prism/boot", json!({"seconds": 1}));
    emu.post(
        "/_prism/faults",
        json!({"faults": [{"action": "RunInstances", "code": "RequestLimitExceeded", "status": 503, "count": 1}]}),
    );
    let path = emu.write("class.yaml", &manifest("events", 2, FAST));
    let out = emu.prism(&["apply", "--yes", "--format", "json", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let events: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for k in [
        "plan",
        "started",
        "queued",
        "launching",
        "retrying",
        "rate_changed",
        "launched",
        "running",
        "summary",
    ] {
        assert!(kinds.contains(&k), "no {k} event in {kinds:?}");
    }
    let retry = events.iter().find(|e| e["event"] == "retrying").unwrap();
    assert_eq!(retry["code"], "RequestLimitExceeded");
    assert_eq!(retry["class"], "throttle");
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["succeeded"], 2);
    assert!(events.iter().all(|e| e["elapsed_s"].is_number()));
}

#[tokio::test(flavor = "multi_thread")]
async fn start_stop_and_prune() {
    let emu = Emulator::start();
    let path = emu.write("class.yaml", &manifest("life", 3, FAST));
    assert!(
        emu.prism(&["apply", "--yes", path.to_str().unwrap()])
            .status
            .success()
    );

    std::fs::write(
        &path,
        manifest("life", 3, &format!("{FAST}\nstate: stopped")),
    )
    .unwrap();
    let out = emu.prism(&["apply", "--yes", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("✓ life-02 stopped"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("life-03 is stopped"),
        "{}",
        stdout(&out)
    );

    std::fs::write(
        &path,
        manifest("life", 1, &format!("{FAST}\nstate: running")),
    )
    .unwrap();
    let out = emu.prism(&["apply", "--yes", path.to_str().unwrap()]);
    assert!(
        stdout(&out).contains("✓ life-01 started"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        per_workspace(&emu, "life").await.len(),
        3,
        "nothing deleted without prune"
    );

    std::fs::write(&path, manifest("life", 1, &format!("{FAST}\nprune: true"))).unwrap();
    let out = emu.prism(&["apply", "--yes", path.to_str().unwrap()]);
    assert!(
        stdout(&out).contains("✓ life-03 terminated"),
        "{}",
        stdout(&out)
    );
    exactly_one_each(&per_workspace(&emu, "life").await, "life", 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_capacity_moves_to_another_zone() {
    let emu = Emulator::start();
    emu.post(
        "/_prism/faults",
        json!({"faults": [{"action": "RunInstances", "code": "InsufficientInstanceCapacity", "status": 500,
                           "message": "We currently do not have sufficient t3.micro capacity in the Availability Zone you requested.", "count": 1}]}),
    );
    let path = emu.write("class.yaml", &manifest("zone", 1, FAST));
    let out = emu.prism(&["apply", "--yes", path.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("zone-01: no capacity in us-west-2a, trying us-west-2b"),
        "{text}"
    );
    exactly_one_each(&per_workspace(&emu, "zone").await, "zone", 1);
}

/// A rerun right after a zone fallback, while DescribeInstances still lags, sends the
/// token of the zone each workspace landed in, not the first-choice token: no second
/// instance. The same rerun from a machine without the notes (another cache folder)
/// shows what the notes prevent. Every zone but the last is sold out, so every
/// workspace that does not prefer it falls back.
#[tokio::test(flavor = "multi_thread")]
async fn a_rerun_right_after_a_zone_fallback_launches_no_duplicate() {
    let emu = Emulator::start();
    emu.post(
        "/_prism/capacity",
        json!({"sold_out": [{"zone": "us-west-2a"}, {"zone": "us-west-2b"}, {"zone": "us-west-2c"}]}),
    );
    emu.post("/_prism/lag", json!({"seconds": 20}));
    let here = emu.write("class.yaml", &manifest("fall", 5, FAST));
    let there = emu.write("other.yaml", &manifest("away", 2, FAST));
    for path in [&here, &there] {
        let out = emu.prism(&["apply", "--yes", "--no-wait", path.to_str().unwrap()]);
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
        assert!(text.contains("no capacity in us-west-2a, trying"), "{text}");
    }
    // Capacity comes back; the launches are still hidden from DescribeInstances.
    emu.post("/_prism/capacity", json!({"sold_out": []}));
    emu.clear_calls();
    let rerun = emu.prism(&["apply", "--yes", "--no-wait", here.to_str().unwrap()]);
    assert_eq!(rerun.status.code(), Some(0), "{}", stderr(&rerun));
    assert_eq!(
        mutating_calls(&emu),
        vec!["RunInstances"; 5],
        "the rerun sees nothing yet, so it launches with the remembered tokens"
    );
    let elsewhere = tempfile::tempdir().unwrap();
    let blind = prism_command(&["apply", "--yes", "--no-wait", there.to_str().unwrap()])
        .env("AWS_ENDPOINT_URL", &emu.url)
        .env("XDG_CACHE_HOME", elsewhere.path())
        .output()
        .unwrap();
    assert_eq!(blind.status.code(), Some(0), "{}", stderr(&blind));

    emu.reveal();
    exactly_one_each(&per_workspace(&emu, "fall").await, "fall", 5);
    let away = per_workspace(&emu, "away").await;
    assert_eq!(
        away.values().copied().collect::<Vec<_>>(),
        [2, 2],
        "without the notes, a rerun within the lag launches again: {away:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_stops_new_launches_and_a_rerun_finishes() {
    let emu = Emulator::start();
    let path = emu.write(
        "class.yaml",
        &manifest(
            "intr",
            4,
            "rate_limit: {rate_per_minute: 20, burst_size: 1}",
        ),
    );
    let (code, rest) = interrupt_after(
        &emu,
        &["apply", "--yes", path.to_str().unwrap()],
        "launched (i-",
    );
    assert_eq!(code, Some(1), "{rest}");
    assert!(rest.contains("Interrupted"), "{rest}");
    assert!(rest.contains("run `prism apply` again to finish"), "{rest}");
    assert!(per_workspace(&emu, "intr").await.len() < 4);

    let fast = manifest("intr", 4, FAST);
    std::fs::write(&path, fast).unwrap();
    let out = emu.prism(&["apply", "--yes", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    exactly_one_each(&per_workspace(&emu, "intr").await, "intr", 4);
}

#[test]
fn quiet_shows_only_the_summary() {
    let emu = Emulator::start();
    let path = emu.write("class.yaml", &manifest("hush", 2, FAST));
    let out = emu.prism(&["apply", "-q", "--yes", path.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        !text.contains("prism plan:") && !text.contains("launched (i-"),
        "{text}"
    );
    assert!(
        text.contains("✅ All 2 workspaces launched successfully"),
        "{text}"
    );
}

#[test]
fn a_second_ctrl_c_exits_at_once() {
    let emu = Emulator::start();
    // Every launch takes 4 s, so launches are in flight when the signals come.
    emu.post(
        "/_prism/faults",
        json!({"faults": [{"action": "RunInstances", "code": "", "delay_ms": 4000}]}),
    );
    let path = emu.write("class.yaml", &manifest("twice", 3, FAST));
    let mut child = prism_command(&["apply", "--yes", path.to_str().unwrap()])
        .env("AWS_ENDPOINT_URL", &emu.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().starts_with("Launching 3 workspaces") {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let pid = child.id().to_string();
    let started = std::time::Instant::now();
    for _ in 0..2 {
        assert!(
            std::process::Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .unwrap()
                .success()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "it waited for the launches in flight"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Exiting at once"));
}

/// A launch whose answer was lost, whose lookups failed too, then whose retries ran out,
/// is looked up before the summary: its instance is up, so it counts as launched and
/// the run succeeds.
#[test]
fn a_report_never_calls_a_running_workspace_failed() {
    let emu = Emulator::start();
    emu.post(
        "/_prism/faults",
        json!({"faults": [
            {"action": "RunInstances", "code": "InternalError", "status": 500, "lost": true, "count": 1},
            {"action": "DescribeInstances", "filter": "client-token", "code": "InternalError", "status": 500},
            {"action": "RunInstances", "code": "InternalError", "status": 500, "count": 5}
        ]}),
    );
    let path = emu.write(
        "class.yaml",
        &manifest(
            "sure",
            1,
            "retry: {max_retries: 1, initial_backoff: 100ms, max_backoff: 1s}",
        ),
    );
    let out = emu.prism(&["apply", "--yes", path.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.contains("✓ sure-01 launched (i-"), "{text}");
    assert!(text.contains("Confirmed after errors: sure-01"), "{text}");
    assert!(text.contains("sure-01 is running"), "{text}");
    let runs = emu
        .calls()
        .into_iter()
        .filter(|c| c.action == "RunInstances")
        .count();
    assert_eq!(runs, 2, "the lost launch and one failed retry");
}

/// `-vv` (or RUST_LOG) shows what a person debugging a launch needs: the plan's
/// inputs, each AWS call with its outcome and duration, retry decisions; the default
/// shows none of it.
#[test]
fn debug_logs_show_calls_retries_and_plan_inputs() {
    let emu = Emulator::start();
    emu.post(
        "/_prism/faults",
        json!({"faults": [{"action": "RunInstances", "code": "RequestLimitExceeded", "status": 503, "count": 1}]}),
    );
    let path = emu.write("class.yaml", &manifest("dbg", 1, FAST));
    let out = emu.prism(&["apply", "--yes", "-vv", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    for want in [
        "plan inputs",
        "api=\"DescribeInstances\"",
        "api=\"RunInstances\"",
        "ms=",
        "code=\"RequestLimitExceeded\"",
        "retrying",
    ] {
        assert!(err.contains(want), "missing {want}: {err}");
    }
    let quiet = emu.prism(&["plan", path.to_str().unwrap()]);
    assert!(
        !stderr(&quiet).contains("plan inputs") && !stderr(&quiet).contains("api="),
        "{}",
        stderr(&quiet)
    );
    let by_env = crate::emulator::prism_command(&["plan", path.to_str().unwrap()])
        .env("AWS_ENDPOINT_URL", &emu.url)
        .env("RUST_LOG", "prism=debug")
        .output()
        .unwrap();
    assert!(
        stderr(&by_env).contains("plan inputs"),
        "{}",
        stderr(&by_env)
    );
}

#[test]
fn deleted_workspaces_are_launched_again_at_the_launch_pace() {
    let emu = Emulator::start();
    let path = emu.write(
        "again.yaml",
        &manifest(
            "again",
            10,
            "rate_limit: {rate_per_minute: 120, burst_size: 1}",
        ),
    );
    let path = path.to_str().unwrap();
    let out = emu.prism(&["apply", "--yes", path]);
    assert!(out.status.success(), "{}", stderr(&out));
    let names: Vec<String> = (1..=10).map(|n| format!("again-{n:02}")).collect();
    let mut args = vec!["workspace", "delete", "--yes"];
    args.extend(names.iter().map(String::as_str));
    let out = emu.prism(&args);
    assert!(out.status.success(), "{}", stderr(&out));

    emu.clear_calls();
    let out = emu.prism(&["apply", "--yes", path]);
    assert!(out.status.success(), "{}", stderr(&out));
    let runs: Vec<_> = emu
        .calls()
        .into_iter()
        .filter(|c| c.action == "RunInstances")
        .collect();
    let refused = runs
        .iter()
        .filter(|c| c.code.as_deref() == Some("IdempotentInstanceTerminated"))
        .count();
    assert_eq!(refused, 10, "each first token's instance was terminated");
    let first = runs.first().expect("launches").time;
    let launched: Vec<f64> = runs
        .iter()
        .filter(|c| c.code.is_none())
        .map(|c| c.time - first)
        .collect();
    assert_eq!(launched.len(), 10);
    eprintln!(
        "10 deleted workspaces re-created at 120/min: first launch {:.2} s, last {:.2} s after the first call",
        launched[0], launched[9]
    );
    // A refused token costs no launch permit: the launches keep the pace of ten.
    assert!(launched[0] < 2.0, "{launched:?}");
    assert!(launched[9] < 7.5, "{launched:?}");
}
