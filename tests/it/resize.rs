//! A type change in the manifest against the emulator: planned and carried out as an
//! in-place resize (stop, change type, start), keeping instance ids and volumes; a type
//! AWS refuses leaves the workspace on its old type, running again.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::emulator::{Emulator, stderr, stdout};

fn manifest(instance_type: &str, extra: &str) -> String {
    format!(
        "name: rs\nproject: p\ntemplate: t\ncount: 3\n{extra}\nrate_limit: {{rate_per_minute: 600, burst_size: 10}}\nretry: {{initial_backoff: 100ms, max_backoff: 1s}}\ntemplates:\n  t:\n    image: ami-785db401\n    instance_type: {instance_type}\n"
    )
}

/// Instance id → (type, state) of the fleet, as AWS describes them.
async fn instances(emu: &Emulator) -> BTreeMap<String, (String, String)> {
    let out = emu.ec2().describe_instances().send().await.unwrap();
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(|i| {
            (
                i.instance_id().unwrap().to_string(),
                (
                    i.instance_type().unwrap().as_str().to_string(),
                    i.state().unwrap().name().unwrap().as_str().to_string(),
                ),
            )
        })
        .collect()
}

/// Volume id → the instances it is attached to.
async fn volumes(emu: &Emulator) -> BTreeMap<String, Vec<String>> {
    let out = emu.ec2().describe_volumes().send().await.unwrap();
    out.volumes()
        .iter()
        .map(|v| {
            (
                v.volume_id().unwrap().to_string(),
                v.attachments()
                    .iter()
                    .filter_map(|a| a.instance_id().map(str::to_string))
                    .collect(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_type_change_resizes_in_place_keeping_ids_and_volumes() {
    let emu = Emulator::start();
    let path = emu.write("rs.yaml", &manifest("t3.large", ""));
    let path = path.to_str().unwrap();
    let out = emu.prism(&["apply", "--yes", path]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let before = instances(&emu).await;
    let disks = volumes(&emu).await;
    assert_eq!(before.len(), 3);
    assert!(!disks.is_empty(), "moto gives each instance a root volume");

    emu.write("rs.yaml", &manifest("t3.xlarge", ""));
    let plan = emu.prism(&["plan", path]);
    let text = stdout(&plan);
    assert!(
        text.contains("resize: t3.large → t3.xlarge (stop, change type, start; disk kept)"),
        "{text}"
    );
    assert!(
        text.contains(
            "Plan: 0 to create, 0 to start, 0 to stop, 3 to resize, 0 to replace, 0 to delete."
        ),
        "{text}"
    );
    // Only the added vCPUs count: 3 × (4 − 2).
    assert!(text.contains("6 used + 6 needed of 64 vCPUs"), "{text}");

    emu.clear_calls();
    let out = emu.prism(&["apply", "--yes", "--format", "json", path]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let events: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let resizing: Vec<&Value> = events.iter().filter(|e| e["event"] == "resizing").collect();
    assert_eq!(resizing.len(), 3, "{events:?}");
    assert_eq!(resizing[0]["from_instance_type"], "t3.large");
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(
        (summary["succeeded"].as_u64(), summary["launched"].as_u64()),
        (Some(3), Some(0))
    );
    assert!(
        summary["workspaces"]
            .as_object()
            .unwrap()
            .values()
            .all(|w| w["action"] == "resize" && w["state"] == "running"),
        "{summary}"
    );

    let after = instances(&emu).await;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "the same instance ids"
    );
    assert!(
        after
            .values()
            .all(|(t, s)| t == "t3.xlarge" && s == "running"),
        "{after:?}"
    );
    assert_eq!(volumes(&emu).await, disks, "the volumes untouched");
    assert_eq!(
        [
            emu.count("TerminateInstances"),
            emu.count("RunInstances"),
            emu.count("StopInstances"),
            emu.count("ModifyInstanceAttribute"),
            emu.count("StartInstances"),
        ],
        [0, 0, 3, 3, 3]
    );
    // Converged: nothing more to do.
    let again = emu.prism(&["plan", "--detailed-exitcode", path]);
    assert_eq!(again.status.code(), Some(0), "{}", stdout(&again));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_fleet_is_resized_and_stays_stopped() {
    let emu = Emulator::start();
    let path = emu.write("rs.yaml", &manifest("t3.large", "state: stopped"));
    let path = path.to_str().unwrap();
    let out = emu.prism(&["apply", "--yes", path]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    emu.write("rs.yaml", &manifest("t3.xlarge", "state: stopped"));
    emu.clear_calls();
    let out = emu.prism(&["apply", "--yes", path]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    assert!(
        text.contains("(change type; stays stopped; disk kept)"),
        "{text}"
    );
    assert!(text.contains("✓ rs-01 resized (i-"), "{text}");
    let after = instances(&emu).await;
    assert!(
        after
            .values()
            .all(|(t, s)| t == "t3.xlarge" && s == "stopped"),
        "{after:?}"
    );
    assert_eq!(emu.count("StartInstances"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_type_aws_refuses_leaves_the_old_type_running() {
    let emu = Emulator::start();
    let path = emu.write("rs.yaml", &manifest("t3.large", ""));
    let path = path.to_str().unwrap();
    let out = emu.prism(&["apply", "--yes", path]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let before = instances(&emu).await;

    // An arm64 type for an x86_64 image: AWS refuses the change.
    emu.write("rs.yaml", &manifest("t4g.large", ""));
    let out = emu.prism(&["apply", "--yes", path]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}\n{}", stderr(&out));
    assert!(
        text.contains("AWS refused the new type; back on t3.large"),
        "{text}"
    );
    assert!(
        text.contains("AWS rejected a parameter [InvalidParameterValue]"),
        "{text}"
    );
    assert!(
        text.contains("What prism did: prism put rs-01 back on t3.large and started it again; its disk is kept."),
        "{text}"
    );
    assert_eq!(
        instances(&emu).await,
        before,
        "the same instances, types and states"
    );
    assert_eq!(emu.count("TerminateInstances"), 0);
}

/// The emulator changes an instance's type as AWS does: only when it is stopped, and
/// a stopped instance started beyond the vCPU quota is refused.
#[tokio::test(flavor = "multi_thread")]
async fn the_emulator_changes_the_type_of_stopped_instances_only() {
    use aws_sdk_ec2::error::ProvideErrorMetadata;
    use aws_sdk_ec2::types::AttributeValue;
    let emu = Emulator::start();
    let ec2 = emu.ec2();
    let id = crate::emulator::launch(&ec2, None, None, "t3.large", 1).await[0].clone();
    let modify = |t: &str| {
        ec2.modify_instance_attribute()
            .instance_id(&id)
            .instance_type(AttributeValue::builder().value(t).build())
            .send()
    };
    let err = modify("t3.xlarge").await.unwrap_err();
    assert_eq!(err.code(), Some("IncorrectInstanceState"), "{err:?}");
    ec2.stop_instances().instance_ids(&id).send().await.unwrap();
    let err = modify("t4g.large").await.unwrap_err();
    assert_eq!(err.code(), Some("InvalidParameterValue"), "{err:?}");
    modify("t3.2xlarge").await.unwrap();
    assert_eq!(instances(&emu).await[&id].0, "t3.2xlarge");

    // 8 vCPUs do not start under a quota of 4.
    emu.set_quota("ec2", "L-1216C47A", 4.0);
    let err = ec2
        .start_instances()
        .instance_ids(&id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("VcpuLimitExceeded"), "{err:?}");
    emu.set_quota("ec2", "L-1216C47A", 8.0);
    ec2.start_instances()
        .instance_ids(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(instances(&emu).await[&id].1, "running");
}
