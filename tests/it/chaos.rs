//! Chaos: `prism apply` killed with SIGKILL at random moments while AWS loses answers,
//! lags and sells out a zone, then run to completion: exactly one instance per
//! workspace. The seed is printed; `PRISM_CHAOS_SEED=<seed>` replays the same moments.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::emulator::{Emulator, per_workspace, prism_command, stderr, stdout};

const FLEET: &str = "chaos";
const LAG_SECONDS: u64 = 3;

fn seed() -> u64 {
    std::env::var("PRISM_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// Faults for one run: answers lost after the launch took effect, slow calls.
fn faults(rng: &mut fastrand::Rng) -> serde_json::Value {
    json!({"faults": [
        {"action": "RunInstances", "code": "InternalError", "status": 500, "lost": true,
         "probability": 0.2 + rng.f64() * 0.3, "count": null},
        {"action": "RunInstances", "code": "", "delay_ms": rng.u64(100..500), "count": null},
        {"action": "DescribeInstances", "code": "", "delay_ms": rng.u64(0..200), "count": null},
        {"action": "CreateTags", "code": "", "delay_ms": rng.u64(0..50), "count": null},
    ]})
}

/// Sells out the first zone for the fleet's type, or leaves a few instances of
/// capacity there (a batch then launches fewer than asked), or neither, at random:
/// launches then fall back to another zone with that zone's token.
fn capacity(rng: &mut fastrand::Rng) -> serde_json::Value {
    match rng.u8(0..3) {
        0 => json!({"sold_out": [{"zone": "us-west-2a", "instance_type": "t3.micro"}]}),
        1 => {
            json!({"sold_out": [{"zone": "us-west-2a", "instance_type": "t3.micro", "left": rng.u8(1..6)}]})
        }
        _ => json!({"sold_out": []}),
    }
}

/// How many seeds a chaos test runs: `PRISM_CHAOS_RUNS`, else one (a new one each time).
fn runs() -> u64 {
    std::env::var("PRISM_CHAOS_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// Launches one call per workspace, at an explicit pace.
#[tokio::test(flavor = "multi_thread")]
async fn apply_killed_five_times_then_rerun_leaves_one_instance_per_workspace() {
    let first = seed();
    for seed in first..first + runs() {
        killed_five_times_then_rerun(seed, 8, "rate_limit: {rate_per_minute: 240, burst_size: 2}")
            .await;
    }
}

/// Launches in batches (`rate_limit: auto`), their own tags written slowly: kills land
/// before a batch, while it is in flight, between it and its tags, and among them.
#[tokio::test(flavor = "multi_thread")]
async fn batched_apply_killed_five_times_then_rerun_leaves_one_instance_per_workspace() {
    let first = seed();
    for seed in first..first + runs() {
        killed_five_times_then_rerun(seed, 100, "rate_limit: auto").await;
    }
}

async fn killed_five_times_then_rerun(seed: u64, workspaces: usize, pace: &str) {
    println!("chaos seed {seed} (PRISM_CHAOS_SEED={seed} replays it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let emu = Emulator::start();
    emu.set_quota("ec2", "L-1216C47A", 1000.0);
    // The emulator's first EC2 call loads its catalogue: not a moment worth killing at.
    emu.ec2().describe_instances().send().await.unwrap();
    emu.post("/_prism/lag", json!({"seconds": LAG_SECONDS}));
    let path = emu.write(
        "class.yaml",
        &format!(
            "name: {FLEET}\nproject: p\ntemplate: t\ncount: {workspaces}\n{pace}\nretry: {{initial_backoff: 100ms, max_backoff: 1s}}\ntemplates:\n  t:\n    image: ami-785db401\n    instance_type: t3.micro\n"
        ),
    );
    let cache = emu.dir.path().join("cache");
    let mut story = Vec::new();
    for kill in 1..=5 {
        emu.post("/_prism/faults", faults(&mut rng));
        emu.post("/_prism/capacity", capacity(&mut rng));
        let after = Duration::from_millis(rng.u64(300..3000));
        let mut child = prism_command(&["apply", "--yes", path.to_str().unwrap()])
            .env("AWS_ENDPOINT_URL", &emu.url)
            .env("XDG_CACHE_HOME", &cache)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while started.elapsed() < after {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let finished = child.try_wait().unwrap();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let launches = emu.count("RunInstances");
        story.push(format!(
            "kill {kill} at {after:?} ({}): {launches} RunInstances calls so far",
            if finished.is_some() {
                "had already exited"
            } else {
                "killed"
            },
        ));
    }
    println!("{}", story.join("\n"));
    let launches = emu.count("RunInstances");
    assert!(launches > 0, "no kill came after a launch: seed {seed}");

    // The last run goes to the end: answers are no longer lost, the lag stays.
    emu.post(
        "/_prism/faults",
        json!({"faults": [{"action": "RunInstances", "code": "", "delay_ms": 100, "count": null}]}),
    );
    emu.post("/_prism/capacity", capacity(&mut rng));
    let out = emu.prism(&["apply", "--yes", path.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "seed {seed}\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    // With the lag ended, every instance launched by any of the runs is visible.
    emu.reveal();
    let want: BTreeMap<String, usize> = (1..=workspaces)
        .map(|i| (format!("{FLEET}-{i:02}"), 1))
        .collect();
    assert_eq!(
        per_workspace(&emu, FLEET).await,
        want,
        "instances per workspace; seed {seed}\n{}",
        story.join("\n")
    );
    let again = emu.prism(&["apply", "--yes", path.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(0), "seed {seed}");
    assert!(
        stdout(&again).contains("No changes."),
        "seed {seed}\n{}",
        stdout(&again)
    );
}
