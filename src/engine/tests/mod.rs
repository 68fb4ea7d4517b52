//! The engine on the in-memory cloud, under paused time: pacing is proven exactly.

mod capacity;
mod pacing;
mod quota_wait;
mod resize;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::cloud::fake::FakeCloud;
use crate::observe::{ImageResolution, QuotaReading};
use crate::testkit::*;

fn fleet(name: &str, count: u32) -> (Manifest, Observed) {
    let text = format!(
        "name: {name}\nproject: p\ntemplate: t\ncount: {count}\ntemplates:\n  t: {{image: ami-1, instance_type: t3.micro}}\n"
    );
    let manifest = crate::testkit::manifest("f.yaml", &text);
    (manifest, observed(&["t3.micro"], 1024.0))
}

/// An account in us-west-2 where image ami-1 resolves, `types` have 2 vCPUs each, and
/// the standard vCPU quota is `quota`: what the engine's tests plan against.
pub(super) fn observed(types: &[&str], quota: f64) -> Observed {
    Observed {
        region: "us-west-2".into(),
        vcpus: types.iter().map(|t| (t.to_string(), 2)).collect(),
        quotas: BTreeMap::from([(
            "L-1216C47A".into(),
            QuotaReading::Known {
                value: quota,
                applied: true,
            },
        )]),
        image: ImageResolution::Resolved {
            id: "ami-1".into(),
            root_device: None,
        },
        in_flight: vec![],
        ..Observed::default()
    }
}

fn cloud() -> Arc<FakeCloud> {
    Arc::new(FakeCloud {
        region: "us-west-2".into(),
        zones: vec!["us-west-2a".into()],
        ..FakeCloud::default()
    })
}

fn engine(cloud: &Arc<FakeCloud>, rate_per_minute: f64, burst_size: u32) -> Arc<Engine> {
    crate::testkit::engine(
        cloud,
        crate::testkit::pace(rate_per_minute, burst_size, true),
    )
}

fn job(manifest: &Manifest, observed: &Observed) -> Job {
    Job::from_plan(manifest, &crate::plan::plan(manifest, observed), observed)
}

fn no_wait() -> RunOptions {
    RunOptions {
        wait: None,
        ..RunOptions::default()
    }
}

/// Seconds from `t0` of each launch call, in order.
fn launch_offsets(cloud: &FakeCloud, t0: tokio::time::Instant) -> Vec<u64> {
    cloud
        .launch_calls
        .lock()
        .unwrap()
        .iter()
        .map(|(t, _)| (*t - t0).as_secs())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn thirty_launches_at_two_a_minute_burst_five_end_at_750_s() {
    let cloud = cloud();
    let engine = engine(&cloud, 2.0, 5);
    let (m, o) = fleet("cs", 30);
    let t0 = tokio::time::Instant::now();
    let report = engine.run(job(&m, &o), no_wait()).report().await;
    assert!(report.complete(), "{report:?}");
    let offsets = launch_offsets(&cloud, t0);
    assert_eq!(offsets.len(), 30);
    assert_eq!(&offsets[..5], [0; 5], "the burst leaves at once");
    assert_eq!(offsets[5], 30, "then one every 30 s");
    assert_eq!(offsets[29], 750, "(30 − 5) / 2 per minute = 12.5 min");
}

#[tokio::test(start_paused = true)]
async fn two_runs_at_once_share_the_rate() {
    let cloud = cloud();
    let engine = engine(&cloud, 60.0, 1);
    let (a, oa) = fleet("a", 5);
    let (b, ob) = fleet("b", 5);
    let t0 = tokio::time::Instant::now();
    let first = engine.run(job(&a, &oa), no_wait());
    let second = engine.run(job(&b, &ob), no_wait());
    let (ra, rb) = tokio::join!(first.report(), second.report());
    assert!(ra.complete() && rb.complete());
    let offsets = launch_offsets(&cloud, t0);
    assert_eq!(
        offsets,
        (0..10).collect::<Vec<u64>>(),
        "ten launches of two runs, one a second: 60/min together, not each"
    );
    let calls = cloud.launch_calls.lock().unwrap();
    let fleets: std::collections::BTreeSet<char> = calls
        .iter()
        .map(|(_, w)| w.chars().next().unwrap())
        .collect();
    assert_eq!(fleets.len(), 2, "both runs launched");
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_run_finishes_what_is_in_flight_and_reports_the_rest() {
    let cloud = cloud();
    let engine = engine(&cloud, 60.0, 2);
    let (m, o) = fleet("cs", 6);
    let mut run = engine.run(job(&m, &o), no_wait());
    let mut events = run.events();
    let canceller = run.canceller();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        canceller.cancel();
    });
    let report = run.report().await;
    assert!(report.interrupted);
    assert_eq!(
        report.launched, 4,
        "the burst of two, then one at 1 s and 2 s"
    );
    assert_eq!(report.not_started, 2);
    let mut progress = Progress::default();
    while let Ok(e) = events.try_recv() {
        progress.apply(&e);
    }
    assert!(progress.finished && progress.interrupted);
    assert_eq!(progress.totals.done, 4);
    assert_eq!(progress.totals.not_started, 2);
    let cancelled = progress
        .workspaces
        .values()
        .filter(|w| w.state == progress::WorkspaceState::Cancelled)
        .count();
    assert_eq!(cancelled, 2);
}

#[tokio::test(start_paused = true)]
async fn nothing_is_said_after_the_summary() {
    let cloud = cloud();
    let (m, o) = fleet("cs", 2);
    let report = engine(&cloud, 60.0, 2)
        .run(job(&m, &o), no_wait())
        .report()
        .await;
    let (events, mut rx) = events::Events::channel();
    events.emit(events::Event::Summary(report));
    // A task winding down after the run's end (a launch that waited for its permit
    // when Ctrl-C came) says nothing more.
    events.clone().emit(events::Event::RateLimited {
        workspace: "cs-06".into(),
        wait_s: 20.0,
        eta_s: 1340.0,
    });
    let mut seen = vec![];
    while let Ok(e) = rx.try_recv() {
        seen.push(e.event);
    }
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(matches!(seen[0], events::Event::Summary(_)));
}
