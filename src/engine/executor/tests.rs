//! The executor against the in-memory cloud: retries by class, token incarnations,
//! zone fallback, failure isolation. Time is paused: backoff sleeps cost nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::cloud::CloudError;
use crate::cloud::fake::FakeCloud;
use crate::manifest::Manifest;
use crate::observe::ImageResolution;
use crate::observe::Observed;
use crate::testkit::*;
use std::time::Duration;

fn setup(count: u32, max_retries: u32) -> (Arc<FakeCloud>, Manifest, Observed) {
    let text = format!(
        "name: f\nproject: p\ntemplate: t\ncount: {count}\nretry: {{max_retries: {max_retries}, initial_backoff: 1s, max_backoff: 8s}}\ntemplates:\n  t: {{image: ami-1, instance_type: t3.micro}}\n"
    );
    let manifest = crate::testkit::manifest("f.yaml", &text);
    let cloud = Arc::new(FakeCloud {
        region: "us-west-2".into(),
        zones: vec!["us-west-2a".into(), "us-west-2b".into()],
        ..FakeCloud::default()
    });
    let observed = crate::engine::tests::observed(&["t3.micro"], 64.0);
    (cloud, manifest, observed)
}

async fn apply(cloud: &Arc<FakeCloud>, manifest: &Manifest, observed: &Observed) -> Report {
    let plan = crate::plan::plan(manifest, observed);
    let engine = crate::testkit::engine(cloud, crate::testkit::pace(6000.0, 100, true));
    let opts = RunOptions {
        parallelism: 4,
        wait: None,
        poll: Duration::from_secs(1),
        retry: manifest.retry.clone(),
        throttle_deadline: Duration::from_secs(600),
    };
    engine
        .run(Job::from_plan(manifest, &plan, observed), opts)
        .report()
        .await
}

fn err(code: &str, status: u16) -> CloudError {
    CloudError::service("RunInstances", Some(code), code, Some(status))
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_until_success() {
    let (cloud, m, o) = setup(1, 3);
    cloud.fail_next(
        "RunInstances",
        vec![err("InternalError", 500), err("RequestLimitExceeded", 503)],
    );
    let r = apply(&cloud, &m, &o).await;
    assert!(r.complete(), "{r:?}");
    assert_eq!(cloud.calls_to("RunInstances"), 3);
    assert_eq!(cloud.instances.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_fails_its_workspace_only() {
    let (cloud, m, o) = setup(3, 3);
    cloud.fail_next("RunInstances", vec![err("InvalidParameterValue", 400)]);
    let r = apply(&cloud, &m, &o).await;
    assert_eq!(r.failed.len(), 1);
    assert_eq!(r.failed[0].code, "InvalidParameterValue");
    assert_eq!(r.succeeded, 2);
    assert_eq!(
        cloud.calls_to("RunInstances"),
        3,
        "no retry of a permanent error"
    );
}

#[tokio::test(start_paused = true)]
async fn retries_stop_after_max_retries() {
    let (cloud, m, o) = setup(1, 2);
    cloud.fail_next("RunInstances", vec![err("InternalError", 500); 5]);
    let r = apply(&cloud, &m, &o).await;
    assert_eq!(
        cloud.calls_to("RunInstances"),
        3,
        "one attempt and two retries"
    );
    assert_eq!(r.failed[0].class, Some(ErrorClass::Transient));
}

#[tokio::test(start_paused = true)]
async fn throttles_are_waited_out_without_spending_the_retry_budget() {
    let (cloud, m, o) = setup(1, 2);
    cloud.fail_next("RunInstances", vec![err("RequestLimitExceeded", 503); 12]);
    let r = apply(&cloud, &m, &o).await;
    assert!(r.complete(), "{r:?}");
    assert_eq!(
        cloud.calls_to("RunInstances"),
        13,
        "twelve throttles, then the launch"
    );
}

#[tokio::test(start_paused = true)]
async fn a_terminated_token_moves_to_the_next_incarnation() {
    let (cloud, m, o) = setup(1, 3);
    cloud.fail_next(
        "RunInstances",
        vec![err("IdempotentInstanceTerminated", 400)],
    );
    let r = apply(&cloud, &m, &o).await;
    assert!(r.complete(), "{r:?}");
    let tokens = cloud.tokens.lock().unwrap();
    assert_eq!(tokens.len(), 1);
    let expected = crate::engine::client_token::client_token(
        "f",
        "f-01",
        &crate::engine::client_token::spec_digest(&crate::cloud::LaunchSpec {
            client_token: String::new(),
            image_id: "ami-1".into(),
            instance_type: "t3.micro".into(),
            availability_zone: None,
            tags: BTreeMap::new(),
            user_data: None,
            root_volume: None,
            hibernation: false,
            from_snapshot: None,
        }),
        Some("us-west-2a"),
        1,
    );
    assert!(
        tokens.contains_key(&expected),
        "incarnation 1's token was used: {tokens:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn no_capacity_walks_the_zones_then_gives_up() {
    let (cloud, m, o) = setup(1, 3);
    cloud.fail_next(
        "RunInstances",
        vec![err("InsufficientInstanceCapacity", 500)],
    );
    let r = apply(&cloud, &m, &o).await;
    assert!(r.complete(), "{r:?}");
    let zone = cloud.instances.lock().unwrap()[0].availability_zone.clone();
    assert_eq!(zone.as_deref(), Some("us-west-2b"));
    assert_eq!(cloud.calls_to("DescribeAvailabilityZones"), 1);

    let (cloud, m, o) = setup(1, 3);
    cloud.fail_next(
        "RunInstances",
        vec![err("InsufficientInstanceCapacity", 500); 3],
    );
    let r = apply(&cloud, &m, &o).await;
    assert_eq!(r.failed[0].class, Some(ErrorClass::Capacity));
    assert_eq!(
        cloud.calls_to("RunInstances"),
        2,
        "its first zone, then the other: the zones are chosen, never left to AWS"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unresolved_image_fails_launches_without_calls() {
    let (cloud, m, mut o) = setup(2, 3);
    o.image = ImageResolution::Failed {
        reason: "no match".into(),
    };
    let r = apply(&cloud, &m, &o).await;
    assert_eq!(r.failed.len(), 2);
    assert_eq!(r.failed[0].code, "ImageUnresolved");
    assert_eq!(cloud.calls_to("RunInstances"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_launch_whose_answer_was_lost_is_confirmed_when_retries_run_out() {
    let (cloud, m, o) = setup(1, 1);
    cloud
        .lost
        .lock()
        .unwrap()
        .insert("RunInstances", vec![err("InternalError", 500)]);
    // The lookups by its token fail, and so does the retry that would have got the
    // instance back by its token.
    cloud.fail_next(
        "DescribeInstances",
        vec![err("InternalError", 500), err("InternalError", 500)],
    );
    cloud.fail_next("RunInstances", vec![err("InternalError", 500)]);
    let r = apply(&cloud, &m, &o).await;
    assert!(r.complete(), "{r:?}");
    assert_eq!(r.launched, 1);
    assert_eq!(r.confirmed_after_errors, ["f-01"]);
    assert_eq!(cloud.calls_to("RunInstances"), 2, "the retries ran out");
    assert_eq!(cloud.instances.lock().unwrap().len(), 1, "no duplicate");
}

/// A run cancelled before its launches: a workspace another run launched meanwhile is
/// said to be launched by another run, not "not launched".
#[tokio::test(start_paused = true)]
async fn a_cancelled_run_names_what_another_run_launched_meanwhile() {
    let (cloud, m, o) = setup(3, 0);
    let plan = crate::plan::plan(&m, &o);
    cloud
        .instances
        .lock()
        .unwrap()
        .push(crate::cloud::Instance {
            id: "i-other".into(),
            instance_type: "t3.micro".into(),
            image_id: "ami-1".into(),
            state: InstanceState::Running,
            availability_zone: Some("us-west-2a".into()),
            launch_time: Some(0),
            first_launch_time: Some(0),
            tags: BTreeMap::from([
                (crate::cloud::tags::FLEET.into(), "f".into()),
                (crate::cloud::tags::WORKSPACE.into(), "f-02".into()),
            ]),
            lifecycle: None,
            hibernated: false,
            hibernation: false,
        });
    let engine = crate::testkit::engine(&cloud, crate::testkit::pace(1.0, 1, false));
    let mut run = engine.run(Job::from_plan(&m, &plan, &o), RunOptions::default());
    let mut events = run.events();
    let canceller = run.canceller();
    // Cancelled once the first launch has gone out; the others wait for the limiter.
    while let Some(e) = events.recv().await {
        if matches!(e.event, Event::Launched { .. }) {
            canceller.cancel();
        }
        if let Event::LaunchedElsewhere {
            workspace,
            instance_id,
        } = &e.event
        {
            assert_eq!(
                (workspace.as_str(), instance_id.as_str()),
                ("f-02", "i-other")
            );
        }
        if matches!(e.event, Event::Summary(_)) {
            break;
        }
    }
    let r = run.report().await;
    assert!(r.interrupted);
    assert_eq!(r.launched, 1, "{r:?}");
    assert_eq!(r.launched_by_other_runs, ["f-02"], "{r:?}");
    assert_eq!(r.not_started, 1, "f-03 alone was never launched: {r:?}");
}
