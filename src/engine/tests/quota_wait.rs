//! Waiting for quota on the in-memory cloud, under paused time: what did not fit goes
//! ahead, in name order, at the first reading after room appears.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::cloud::fake::FakeCloud;
use crate::cloud::{CloudError, InstanceState};
use crate::engine::*;
use crate::testkit::*;

const STANDARD: &str = "L-1216C47A";

fn manifest() -> Manifest {
    let text = "name: q\nproject: p\ntemplate: t\ncount: 10\nretry: {max_retries: 1, initial_backoff: 1s, max_backoff: 2s}\ntemplates:\n  t: {image: ami-1, instance_type: t3.xlarge}\n";
    crate::testkit::manifest("q.yaml", text)
}

/// An account whose Standard quota is 32 vCPUs: 8 of the 10 t3.xlarge fit.
fn cloud() -> Arc<FakeCloud> {
    Arc::new(FakeCloud {
        region: "us-west-2".into(),
        zones: vec!["us-west-2a".into()],
        vcpus: BTreeMap::from([("t3.xlarge".into(), 4)]),
        applied: BTreeMap::from([(STANDARD.into(), 32.0)]),
        images: FakeCloud::own_image("ami-1"),
        ..FakeCloud::default()
    })
}

/// Plans and runs the fleet with the run waiting up to `until` for quota.
async fn apply(cloud: &Arc<FakeCloud>, until: Duration) -> (Report, Vec<events::Event>) {
    let m = manifest();
    let observed = crate::observe::observe(cloud.as_ref(), &m).await.unwrap();
    let plan = crate::plan::plan(&m, &observed);
    let engine = crate::testkit::engine(cloud, None);
    let mut job = Job::from_plan(&m, &plan, &observed);
    job.quota_waiting = gate::quota_waiting(&plan);
    job.quota_wait = Some(QuotaWait {
        until,
        every: QuotaWait::EVERY,
    });
    let opts = RunOptions {
        parallelism: 4,
        wait: Some(Duration::from_secs(60)),
        poll: Duration::from_secs(1),
        retry: m.retry.clone(),
        throttle_deadline: Duration::from_secs(60),
    };
    let mut run = engine.run(job, opts);
    let mut rx = run.events();
    let report = run.report().await;
    let mut seen = vec![];
    while let Ok(e) = rx.try_recv() {
        seen.push(e.event);
    }
    (report, seen)
}

/// The workspaces launched, in launch order, with when (seconds from `t0`).
fn launches(cloud: &FakeCloud, t0: tokio::time::Instant) -> Vec<(String, u64)> {
    cloud
        .launch_calls
        .lock()
        .unwrap()
        .iter()
        .map(|(at, ws)| (ws.clone(), (*at - t0).as_secs()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn what_did_not_fit_launches_at_the_first_reading_after_a_quota_raise() {
    let cloud = cloud();
    let t0 = tokio::time::Instant::now();
    let raise = {
        let cloud = cloud.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(150)).await;
            cloud.raise_quota(STANDARD, 48.0);
        })
    };
    let (report, seen) = apply(&cloud, Duration::from_secs(3600)).await;
    raise.await.unwrap();
    assert!(report.complete(), "{report:?}");
    assert_eq!(report.launched, 10);
    let waited: Vec<&str> = seen
        .iter()
        .filter_map(|e| match e {
            events::Event::WaitingForQuota {
                workspace, reason, ..
            } => {
                assert!(
                    reason
                        .to_string()
                        .starts_with("waiting for room in the On-Demand Standard"),
                    "{reason}"
                );
                Some(workspace.as_str())
            }
            _ => None,
        })
        .collect();
    assert_eq!(waited, ["q-09", "q-10"]);
    let l = launches(&cloud, t0);
    assert_eq!(l.len(), 10, "{l:?}");
    assert!(l[..8].iter().all(|(_, at)| *at < 5), "{l:?}");
    // Readings at 60, 120, 180 s…: the raise at 150 s is seen at 180 s.
    let late: Vec<(String, u64)> = l[8..].to_vec();
    assert_eq!(
        late.iter().map(|(w, _)| w.as_str()).collect::<Vec<_>>(),
        ["q-09", "q-10"],
        "in name order"
    );
    assert!(late.iter().all(|(_, at)| (180..185).contains(at)), "{l:?}");
    assert!(seen.iter().any(|e| matches!(
        e,
        events::Event::QuotaAvailable { workspace, available_vcpus: 16, .. } if workspace == "q-09"
    )));
}

#[tokio::test(start_paused = true)]
async fn an_instance_stopped_elsewhere_makes_room_too() {
    let cloud = cloud();
    let stop = {
        let cloud = cloud.clone();
        tokio::spawn(async move {
            // Once the 8 run, another tool stops two of them: room for the 2 waiting.
            tokio::time::sleep(Duration::from_secs(30)).await;
            let mut all = cloud.instances.lock().unwrap();
            for i in all.iter_mut().take(2) {
                i.state = InstanceState::Stopped;
            }
        })
    };
    let (report, _) = apply(&cloud, Duration::from_secs(600)).await;
    stop.await.unwrap();
    assert!(report.complete(), "{report:?}");
    assert_eq!(report.launched, 10);
    assert_eq!(cloud.calls_to("RunInstances"), 10);
}

#[tokio::test(start_paused = true)]
async fn those_still_waiting_when_the_wait_runs_out_are_skipped() {
    let cloud = cloud();
    let t0 = tokio::time::Instant::now();
    let (report, _) = apply(&cloud, Duration::from_secs(300)).await;
    assert_eq!(report.launched, 8);
    let skipped: Vec<(&str, String)> = report
        .skipped
        .iter()
        .map(|s| (s.workspace.as_str(), s.reason.to_string()))
        .collect();
    assert_eq!(
        skipped
            .iter()
            .map(|(w, r)| (*w, r.as_str()))
            .collect::<Vec<_>>(),
        [
            (
                "q-09",
                "not launched: the quota had no room for it within 5m 0s"
            ),
            (
                "q-10",
                "not launched: the quota had no room for it within 5m 0s"
            ),
        ]
    );
    let took = t0.elapsed().as_secs();
    assert!(
        (300..310).contains(&took),
        "gave up at the deadline: {took}s"
    );
    // Five readings of the quota in five minutes, plus the plan's own.
    assert_eq!(cloud.calls_to("DescribeInstanceTypes"), 6);
}

#[tokio::test(start_paused = true)]
async fn a_launch_aws_refuses_for_quota_waits_again() {
    let cloud = cloud();
    // Another tool takes the room first: AWS refuses the first launch.
    let refused = CloudError::service(
        "RunInstances",
        Some("VcpuLimitExceeded"),
        "You have requested more vCPU capacity than your current vCPU limit of 32 allows",
        Some(400),
    );
    cloud.fail_next("RunInstances", vec![refused]);
    let raise = {
        let cloud = cloud.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(90)).await;
            cloud.raise_quota(STANDARD, 48.0);
        })
    };
    let (report, seen) = apply(&cloud, Duration::from_secs(600)).await;
    raise.await.unwrap();
    assert!(report.complete(), "{report:?}");
    assert_eq!(report.launched, 10);
    assert!(seen.iter().any(|e| matches!(
        e,
        events::Event::WaitingForQuota { workspace, reason, .. }
            if workspace == "q-01" && *reason == crate::engine::Verdict::RefusedWaiting
    )));
}
