//! Launching what did not fit the quota as soon as it fits, against the emulator:
//! `prism watch` keeps those workspaces waiting and launches them once the quota is
//! raised; `prism apply --wait-for-quota` does the same in one run, here after a quota
//! request is approved.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::emulator::{Emulator, Running, per_workspace, prism_command, stderr, stdout, stop};
use crate::eventually::{eventually, eventually_async, file_contains};
use crate::watch::until_passes;

const STANDARD: &str = "L-1216C47A";

/// 10 × t3.xlarge (4 vCPUs each): 8 fit a quota of 32.
fn manifest() -> String {
    "name: q\nproject: p\ntemplate: t\ncount: 10\nrate_limit: {rate_per_minute: 600, burst_size: 10}\ntemplates:\n  t: {image: ami-785db401, instance_type: t3.xlarge}\n".into()
}

async fn live(emu: &Emulator) -> usize {
    per_workspace(emu, "q").await.values().sum()
}

/// Polls until the fleet has `n` live instances; returns how long it took.
async fn until_live(emu: &Emulator, n: usize, within: Duration) -> Duration {
    let start = Instant::now();
    eventually_async(&format!("{n} live instances"), within, async || {
        let now = live(emu).await;
        if now == n { Ok(()) } else { Err(now) }
    })
    .await;
    start.elapsed()
}

/// Instance ids of the fleet.
async fn ids(emu: &Emulator) -> Vec<String> {
    let out = emu.ec2().describe_instances().send().await.unwrap();
    let mut ids: Vec<String> = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_launches_what_waited_once_the_quota_is_raised() {
    let emu = Emulator::start();
    emu.set_quota("ec2", STANDARD, 32.0);
    let path = emu.write("q.yaml", &manifest());
    let log = emu.dir.path().join("watch.log");
    let child = Running(Some(
        prism_command(&["watch", path.to_str().unwrap()])
            .env("AWS_ENDPOINT_URL", &emu.url)
            .env("PRISM_QUOTA_RECHECK", "1s")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    ));
    until_live(&emu, 8, Duration::from_secs(30)).await;
    // Several quota readings (a pass every 1 s) with no room: still 8, said once. Once
    // the first pass has ended, two more end and a third begins.
    eventually("the first pass to end", Duration::from_secs(30), || {
        file_contains(&log, &["waiting for quota;"])
    });
    until_passes(&emu, emu.fleet_reads(), 3).await;
    assert_eq!(live(&emu).await, 8);
    let first = ids(&emu).await;
    let text = std::fs::read_to_string(&log).unwrap();
    let waiting: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("waiting for room in the On-Demand Standard"))
        .collect();
    assert_eq!(
        waiting.len(),
        2,
        "each waiting workspace is said once:\n{text}"
    );
    assert!(
        waiting[0].contains("q-09") && waiting[1].contains("q-10"),
        "{text}"
    );
    assert!(
        text.contains("8 done, 0 failed, 0 skipped, 2 waiting for quota; quota read again in 1s"),
        "{text}"
    );
    assert_eq!(
        text.matches("waiting for quota;").count(),
        1,
        "passes that change nothing are quiet:\n{text}"
    );

    emu.clear_calls();
    emu.set_quota("ec2", STANDARD, 48.0);
    let took = until_live(&emu, 10, Duration::from_secs(120)).await;
    assert!(
        took < Duration::from_secs(10),
        "launched {took:?} after the raise"
    );
    let after = ids(&emu).await;
    assert!(
        first.iter().all(|id| after.contains(id)),
        "the first 8 are still there"
    );
    let calls = emu.call_counts();
    assert_eq!(calls.get("RunInstances"), Some(&2), "{calls:?}");
    for api in ["StopInstances", "StartInstances", "TerminateInstances"] {
        assert_eq!(calls.get(api), None, "the others untouched: {calls:?}");
    }
    // The pass that launched them ends, and the watch is done with waiting.
    eventually("the launching pass to end", Duration::from_secs(30), || {
        file_contains(
            &log,
            &[": 2 done, 0 failed, 0 skipped; next resync in 5m 0s"],
        )
    });
    assert_eq!(stop(child), Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("✓ q-10 launched (i-"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_waits_for_an_approved_request_then_launches_the_rest() {
    let emu = Emulator::start();
    emu.set_quota("ec2", STANDARD, 32.0);
    let path = emu.write("q.yaml", &manifest());
    let path = path.to_str().unwrap();

    // The plan's shortfall suggests the request; made with --manifest, it says how to
    // let prism carry on by itself.
    let plan = stdout(&emu.prism(&["plan", path]));
    assert!(plan.contains("--manifest "), "{plan}");
    let out = emu.prism(&[
        "quota",
        "request",
        "--quota",
        "on-demand-vcpus",
        "--desired-value",
        "48",
        "--manifest",
        path,
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.contains(&format!("  prism watch {path}\n")), "{text}");
    assert!(
        text.contains(&format!(
            "  prism apply {path} --yes --wait-for-quota 72h\n"
        )),
        "{text}"
    );
    let request = text
        .lines()
        .find_map(|l| l.strip_prefix("Request ID: "))
        .unwrap()
        .to_string();

    let mut child = Running(Some(
        prism_command(&[
            "apply",
            "--yes",
            "--format",
            "json",
            "--wait-for-quota",
            "2m",
            path,
        ])
        .env("AWS_ENDPOINT_URL", &emu.url)
        .env("PRISM_QUOTA_RECHECK", "1s")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    ));
    let stdout_pipe = child.0.as_mut().unwrap().stdout.take().unwrap();
    let mut lines = BufReader::new(stdout_pipe).lines();
    let mut events: Vec<Value> = vec![];
    for line in lines.by_ref() {
        let e: Value = serde_json::from_str(&line.unwrap()).unwrap();
        let waiting = e["event"] == "waiting_for_quota";
        events.push(e);
        if waiting
            && events
                .iter()
                .filter(|e| e["event"] == "waiting_for_quota")
                .count()
                == 2
        {
            break;
        }
    }
    until_live(&emu, 8, Duration::from_secs(30)).await;
    // Two quota readings (every 1 s) after the 8 launched: the first found no room.
    let read = emu.count("GetServiceQuota");
    eventually("two more quota readings", Duration::from_secs(30), || {
        let now = emu.count("GetServiceQuota") - read;
        if now >= 2 { Ok(()) } else { Err(now) }
    });
    assert_eq!(live(&emu).await, 8, "nothing more before the approval");

    emu.post(
        &format!("/_prism/quota-requests/{request}"),
        json!({"status": "APPROVED"}),
    );
    let approved = Instant::now();
    events.extend(lines.map(|l| serde_json::from_str::<Value>(&l.unwrap()).unwrap()));
    let status = child.0.take().unwrap().wait().unwrap();
    assert_eq!(status.code(), Some(0), "{events:#?}");
    assert!(approved.elapsed() < Duration::from_secs(30));
    assert_eq!(live(&emu).await, 10);

    let kinds = |kind: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["event"] == kind)
            .map(|e| e["workspace"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(kinds("waiting_for_quota"), ["q-09", "q-10"]);
    assert_eq!(kinds("quota_available"), ["q-09", "q-10"]);
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["launched"], 10);
    assert_eq!(summary["workspaces"]["q-10"]["state"], "running");
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_gives_up_waiting_when_its_duration_runs_out() {
    let emu = Emulator::start();
    emu.set_quota("ec2", STANDARD, 32.0);
    let path = emu.write("q.yaml", &manifest());
    let out = prism_command(&[
        "apply",
        "--yes",
        "--wait-for-quota",
        "4s",
        path.to_str().unwrap(),
    ])
    .env("AWS_ENDPOINT_URL", &emu.url)
    .env("PRISM_QUOTA_RECHECK", "1s")
    .output()
    .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("⏸ q-09: waiting for room in the On-Demand Standard"),
        "{text}"
    );
    assert!(
        text.contains(
            "q-10 (Create) skipped: not launched: the quota had no room for it within 4s"
        ),
        "{text}"
    );
    assert_eq!(live(&emu).await, 8);
}
