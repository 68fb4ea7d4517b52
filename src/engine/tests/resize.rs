//! In-place resizes on the in-memory cloud: the calls, the order, the state left, and
//! a type AWS refuses undone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::cloud::fake::FakeCloud;
use crate::cloud::{CloudError, Instance, InstanceState, tags};
use crate::engine::*;
use crate::testkit::*;

fn manifest(extra: &str) -> Manifest {
    let text = format!(
        "name: f\nproject: p\ntemplate: t\ncount: 2\n{extra}\nretry: {{max_retries: 1, initial_backoff: 1s, max_backoff: 2s}}\ntemplates:\n  t: {{image: ami-1, instance_type: t3.xlarge}}\n"
    );
    crate::testkit::manifest("f.yaml", &text)
}

/// Two workspaces on t3.large, in `state`.
fn cloud(state: InstanceState) -> Arc<FakeCloud> {
    let instances = (1..=2)
        .map(|n| Instance {
            id: format!("i-{n}"),
            instance_type: "t3.large".into(),
            image_id: "ami-1".into(),
            state,
            availability_zone: Some("us-west-2a".into()),
            launch_time: Some(0),
            first_launch_time: None,
            tags: BTreeMap::from([
                (tags::FLEET.to_string(), "f".to_string()),
                (tags::WORKSPACE.to_string(), format!("f-{n:02}")),
            ]),
            lifecycle: None,
            hibernated: false,
            hibernation: false,
        })
        .collect();
    Arc::new(FakeCloud {
        region: "us-west-2".into(),
        zones: vec!["us-west-2a".into()],
        vcpus: BTreeMap::from([
            ("t3.large".into(), 2),
            ("t3.xlarge".into(), 4),
            ("t4g.large".into(), 2),
        ]),
        applied: BTreeMap::from([("L-1216C47A".into(), 64.0)]),
        images: FakeCloud::own_image("ami-1"),
        instances: std::sync::Mutex::new(instances),
        ..FakeCloud::default()
    })
}

async fn apply(cloud: &Arc<FakeCloud>, m: &Manifest) -> (Report, Vec<events::Event>) {
    let observed = crate::observe::observe(cloud.as_ref(), m).await.unwrap();
    let plan = crate::plan::plan(m, &observed);
    let engine = crate::testkit::engine(cloud, None);
    let opts = RunOptions {
        parallelism: 4,
        wait: Some(Duration::from_secs(60)),
        poll: Duration::from_secs(1),
        retry: m.retry.clone(),
        throttle_deadline: Duration::from_secs(60),
    };
    let mut run = engine.run(Job::from_plan(m, &plan, &observed), opts);
    let mut rx = run.events();
    let report = run.report().await;
    let mut seen = vec![];
    while let Ok(e) = rx.try_recv() {
        seen.push(e.event);
    }
    (report, seen)
}

fn types_and_states(cloud: &FakeCloud) -> Vec<(String, String, InstanceState)> {
    cloud
        .instances
        .lock()
        .unwrap()
        .iter()
        .map(|i| (i.id.clone(), i.instance_type.clone(), i.state))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_running_fleet_is_resized_in_place_and_runs_again() {
    let cloud = cloud(InstanceState::Running);
    let (report, seen) = apply(&cloud, &manifest("")).await;
    assert!(report.complete(), "{report:?}");
    assert_eq!((report.succeeded, report.launched), (2, 0));
    assert_eq!(
        types_and_states(&cloud),
        [
            ("i-1".into(), "t3.xlarge".into(), InstanceState::Running),
            ("i-2".into(), "t3.xlarge".into(), InstanceState::Running),
        ],
        "the same instances, the new type, running"
    );
    for (api, n) in [
        ("StopInstances", 2),
        ("ModifyInstanceAttribute", 2),
        ("StartInstances", 2),
        ("RunInstances", 0),
        ("TerminateInstances", 0),
    ] {
        assert_eq!(cloud.calls_to(api), n, "{api}");
    }
    assert!(seen.iter().any(|e| matches!(
        e,
        events::Event::Resizing { workspace, from_instance_type, instance_type, .. }
            if workspace == "f-01" && from_instance_type == "t3.large" && instance_type == "t3.xlarge"
    )));
    assert!(
        seen.iter()
            .any(|e| matches!(e, events::Event::Running { workspace, .. } if workspace == "f-02"))
    );
}

#[tokio::test(start_paused = true)]
async fn a_stopped_fleet_is_resized_and_stays_stopped() {
    let cloud = cloud(InstanceState::Stopped);
    let (report, _) = apply(&cloud, &manifest("state: stopped")).await;
    assert!(report.complete(), "{report:?}");
    assert!(
        types_and_states(&cloud)
            .iter()
            .all(|(_, t, s)| t == "t3.xlarge" && *s == InstanceState::Stopped)
    );
    assert_eq!(
        (
            cloud.calls_to("StopInstances"),
            cloud.calls_to("ModifyInstanceAttribute"),
            cloud.calls_to("StartInstances")
        ),
        (0, 2, 0),
        "already stopped: only the type changes"
    );
}

#[tokio::test(start_paused = true)]
async fn a_type_aws_refuses_leaves_the_workspace_on_its_old_type_restarted() {
    let cloud = cloud(InstanceState::Running);
    cloud.fail_next(
        "ModifyInstanceAttribute",
        vec![CloudError::service(
            "ModifyInstanceAttribute",
            Some("InvalidParameterValue"),
            "The architecture 'arm64' of the specified instance type does not match the architecture 'x86_64' of the specified AMI.",
            Some(400),
        )],
    );
    let (report, seen) = apply(&cloud, &manifest("")).await;
    assert_eq!(report.failed.len(), 1, "{report:?}");
    let f = &report.failed[0];
    assert_eq!(
        (f.workspace.as_str(), f.code.as_str()),
        ("f-01", "InvalidParameterValue")
    );
    assert_eq!(f.explained.title, "AWS rejected a parameter");
    assert!(
        f.explained.what_happened.contains("architecture 'arm64'"),
        "{f:?}"
    );
    assert_eq!(
        f.explained.what_prism_does,
        "prism put f-01 back on t3.large and started it again; its disk is kept. The other workspaces carry on."
    );
    assert_eq!(
        types_and_states(&cloud),
        [
            ("i-1".into(), "t3.large".into(), InstanceState::Running),
            ("i-2".into(), "t3.xlarge".into(), InstanceState::Running),
        ]
    );
    assert!(seen.iter().any(|e| matches!(
        e,
        events::Event::ResizeUndone { workspace, instance_type, .. }
            if workspace == "f-01" && instance_type == "t3.large"
    )));
}

#[tokio::test(start_paused = true)]
async fn a_type_refused_at_start_is_changed_back_and_started() {
    let cloud = cloud(InstanceState::Running);
    cloud.fail_next(
        "StartInstances",
        vec![CloudError::service(
            "StartInstances",
            Some("InsufficientInstanceCapacity"),
            "We currently do not have sufficient t3.xlarge capacity in the Availability Zone you requested (us-west-2a).",
            Some(500),
        )],
    );
    let (report, _) = apply(&cloud, &manifest("")).await;
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].code, "InsufficientInstanceCapacity");
    assert_eq!(
        report.failed[0].explained.title,
        "Insufficient capacity in the availability zone AWS chose"
    );
    let after = types_and_states(&cloud);
    assert_eq!(
        after.iter().filter(|(_, t, _)| t == "t3.large").count(),
        1,
        "one back on its old type: {after:?}"
    );
    assert!(after.iter().all(|(_, _, s)| *s == InstanceState::Running));
    // Two resizes (stop, change, start) and one undo (change back, start again).
    assert_eq!(cloud.calls_to("ModifyInstanceAttribute"), 3);
    assert_eq!(cloud.calls_to("StartInstances"), 3);
    assert_eq!(cloud.calls_to("TerminateInstances"), 0);
}

#[tokio::test(start_paused = true)]
async fn resizes_the_quota_has_no_room_for_are_held_back_as_not_resized() {
    let cloud = cloud(InstanceState::Running);
    // 2 × t3.large run (4 vCPUs) under a quota of 6: one resize (+2) fits, not two.
    cloud.raise_quota("L-1216C47A", 6.0);
    let m = manifest("");
    let observed = crate::observe::observe(cloud.as_ref(), &m).await.unwrap();
    let plan = crate::plan::plan(&m, &observed);
    let g = gate::Gate::of(&plan, true);
    assert_eq!(
        g.over_quota.get("f-02").map(ToString::to_string).as_deref(),
        Some(
            "not resized: the On-Demand Standard (A, C, D, H, I, M, R, T, Z) quota has room for 2 more vCPUs (4 needed)"
        )
    );
    assert_eq!(g.over_quota.len(), 1);
}
