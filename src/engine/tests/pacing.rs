//! The engine's launch pacing against AWS's weather, in virtual time: random throttles
//! with lost answers, and AWS's RunInstances bucket. What `scripts/bench-apply` measures
//! against the emulator, over many seeds at once.

use std::sync::Arc;
use std::time::Duration;

use super::observed;
use crate::cloud::fake::{FakeCloud, Weather};
use crate::engine::*;
use crate::manifest::RetryPolicy;
use crate::testkit::*;

/// One `apply --no-wait` of `n` workspaces at `rate`/min burst `burst` (adaptive)
/// under `weather`: (seconds, RunInstances calls, throttled calls, most instances of
/// one workspace).
async fn launch(n: u32, rate: f64, burst: u32, weather: Weather) -> (f64, usize, usize, usize) {
    let cloud = Arc::new(FakeCloud {
        region: "us-west-2".into(),
        zones: vec![
            "us-west-2a".into(),
            "us-west-2b".into(),
            "us-west-2c".into(),
        ],
        weather: std::sync::Mutex::new(Some(weather)),
        ..FakeCloud::default()
    });
    let engine = crate::testkit::engine(&cloud, crate::testkit::pace(rate, burst, true));
    let text = format!(
        "name: w\nproject: p\ntemplate: t\ncount: {n}\ntemplates:\n  t: {{image: ami-1, instance_type: t3.micro}}\n"
    );
    let manifest = crate::testkit::manifest("w.yaml", &text);
    let observed = observed(&["t3.micro"], 100_000.0);
    let job = Job::from_plan(
        &manifest,
        &crate::plan::plan(&manifest, &observed),
        &observed,
    );
    let opts = RunOptions {
        wait: None,
        retry: RetryPolicy {
            max_retries: 6,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            multiplier: 2.0,
        },
        ..RunOptions::default()
    };
    let t0 = tokio::time::Instant::now();
    let mut run = engine.run(job, opts);
    let mut events = run.events();
    let mut throttled = 0;
    let counter = tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            if let Event::Retrying { code, .. } = &e.event
                && code == "RequestLimitExceeded"
            {
                throttled += 1;
            }
        }
        throttled
    });
    let report = run.report().await;
    let took = t0.elapsed().as_secs_f64();
    assert!(report.complete(), "{report:?}");
    let throttled = counter.await.unwrap();
    let mut per = std::collections::BTreeMap::<String, usize>::new();
    for i in cloud.instances.lock().unwrap().iter() {
        *per.entry(i.tag(crate::cloud::tags::WORKSPACE).unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(per.len(), n as usize);
    (
        took,
        cloud.calls_to("RunInstances"),
        throttled,
        per.values().copied().max().unwrap(),
    )
}

/// Calls that take 40 ms, faults drawn from `seed`; the retries' jitter is drawn from
/// it too (the runtime runs every task on this thread), so each run is repeatable.
fn weather(seed: u64) -> Weather {
    fastrand::seed(seed);
    let mut w = Weather::new(seed);
    w.latency = Duration::from_millis(40);
    w
}

/// 20 % of launch calls throttled at random and 10 % of answers lost, as the benchmark's
/// `faults` scenario, over 20 seeds: no duplicate, and the runs take on average at most
/// 1.3 × the fault-free one (the benchmark measures the same against the emulator).
#[tokio::test(start_paused = true)]
async fn random_throttles_and_lost_answers_cost_little_time() {
    for n in [30, 100] {
        let (clean, ..) = launch(n, 120.0, 5, weather(0)).await;
        let mut ratios = vec![];
        for seed in 0..20 {
            let mut w = weather(seed);
            w.throttle = 0.2;
            w.lost = 0.125;
            let (took, calls, throttled, most) = launch(n, 120.0, 5, w).await;
            assert_eq!(most, 1, "{n} seed {seed}: a workspace launched twice");
            eprintln!(
                "{n} seed {seed}: {took:.1} s ({:.2} × {clean:.1} s), {calls} calls, {throttled} throttled",
                took / clean
            );
            ratios.push(took / clean);
        }
        let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
        let worst = ratios.iter().copied().fold(0.0, f64::max);
        eprintln!("{n}: wall ÷ fault-free: mean {mean:.2}, worst {worst:.2}");
        assert!(ratios.iter().all(|r| *r <= 1.3), "{n}: {ratios:.2?}");
    }
}

/// Configured at 600/min burst 20 against AWS's RunInstances bucket (5, refilling 2 per
/// second): at most 5 % of calls throttled, within 1.15 × AWS's own bound.
#[tokio::test(start_paused = true)]
async fn configured_above_aws_the_engine_keeps_to_its_bucket() {
    for n in [30u32, 100] {
        for seed in 0..5 {
            let mut w = weather(seed);
            w.bucket = Some((5.0, 2.0));
            let (took, calls, throttled, most) = launch(n, 600.0, 20, w).await;
            let bound = (f64::from(n) - 5.0) / 2.0;
            eprintln!(
                "{n} seed {seed}: {took:.1} s ({:.2} × {bound:.1} s), {throttled}/{calls} throttled",
                took / bound
            );
            assert_eq!(most, 1);
            assert!(
                throttled * 20 <= calls,
                "{n} seed {seed}: {throttled}/{calls}"
            );
            assert!(took <= bound * 1.15, "{n} seed {seed}: {took:.1} s");
        }
    }
}
