//! The end of a term through the real binary: `prism destroy --snapshot` of a fleet
//! with a guest leaves no instance and one completed, tagged snapshot per workspace;
//! `storage list --snapshots` lists them; a student who comes back gets a workspace
//! with their disk restored. Without a yes, or with `--dry-run`, nothing changes.

use crate::emulator::{
    Emulator, fleet_instances, fleet_snapshots, mutating_calls, snapshot_tag, state, stderr,
    stdout, tag,
};

const FLEET: &str = "sem6";

fn manifest(emu: &Emulator) -> String {
    let path = emu.write(
        "sem6.yaml",
        &format!(
            "name: {FLEET}\nproject: p\ntemplate: t\nmembers: [ana, ben, chi, dev, eve]\nprune: true\nrate_limit: {{rate_per_minute: 600, burst_size: 10}}\ntemplates:\n  t: {{image: ami-785db401, instance_type: t3.micro, root_volume_gb: 20}}\n"
        ),
    );
    path.to_str().unwrap().to_string()
}

async fn live(emu: &Emulator) -> Vec<aws_sdk_ec2::types::Instance> {
    fleet_instances(emu, FLEET)
        .await
        .into_iter()
        .filter(|i| !matches!(state(i).as_str(), "terminated" | "shutting-down"))
        .collect()
}

#[tokio::test]
async fn destroy_with_snapshots_keeps_every_disk_and_a_workspace_comes_back() {
    let emu = Emulator::start();
    let path = manifest(&emu);
    let out = emu.prism(&["apply", "--yes", &path]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = emu.prism(&[
        "workspace",
        "create",
        "--template",
        "t",
        "-f",
        &path,
        "--fleet",
        FLEET,
        "--yes",
        "guest1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = live(&emu).await;
    assert_eq!(before.len(), 6);

    // Neither a dry run nor a destroy without a terminal to ask on changes anything.
    emu.clear_calls();
    let out = emu.prism(&["destroy", &path, "--snapshot", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = stdout(&out);
    assert!(
        shown.contains("6 workspaces and 6 disks (120 GiB)"),
        "{shown}"
    );
    assert!(
        shown.contains("guest1") && shown.contains("(made by hand)"),
        "{shown}"
    );
    assert!(shown.contains("saves about $"), "{shown}");
    let out = emu.prism(&["destroy", &path, "--snapshot"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    assert_eq!(mutating_calls(&emu), Vec::<String>::new());

    let out = emu.prism(&["destroy", &path, "--snapshot", "--yes"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(live(&emu).await.is_empty(), "every instance is gone");
    let calls = mutating_calls(&emu);
    let snapshots_taken = calls.iter().position(|c| c == "CreateSnapshots").unwrap();
    let first_terminate = calls
        .iter()
        .position(|c| c == "TerminateInstances")
        .unwrap();
    assert!(
        calls.iter().filter(|c| *c == "CreateSnapshots").count() == 6
            && calls[snapshots_taken..first_terminate]
                .iter()
                .filter(|c| *c == "CreateSnapshots")
                .count()
                == 6,
        "every snapshot is taken before the first termination: {calls:?}"
    );

    let snaps = fleet_snapshots(&emu, FLEET).await;
    assert_eq!(snaps.len(), 6, "{snaps:?}");
    let mut workspaces: Vec<&str> = Vec::new();
    for s in &snaps {
        assert_eq!(s.state().map(|st| st.as_str()), Some("completed"));
        assert!(snapshot_tag(s, "prism:taken").is_some_and(|d| d.len() == 10));
        assert!(snapshot_tag(s, "prism:member").is_some(), "{s:?}");
        let ws = snapshot_tag(s, "prism:workspace").unwrap();
        let instance = before
            .iter()
            .find(|i| tag(i, "prism:workspace") == Some(ws))
            .expect("a snapshot of a fleet workspace");
        assert_eq!(
            snapshot_tag(s, "prism:instance"),
            instance.instance_id(),
            "{ws}"
        );
        workspaces.push(ws);
    }
    workspaces.sort();
    assert_eq!(
        workspaces,
        [
            "guest1", "sem6-ana", "sem6-ben", "sem6-chi", "sem6-dev", "sem6-eve"
        ]
    );

    // Listed, and a second destroy has nothing to do.
    let out = emu.prism(&[
        "storage",
        "list",
        "--snapshots",
        "--fleet",
        FLEET,
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 6, "{rows}");
    let ana = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["workspace"] == "sem6-ana")
        .expect("ana's snapshot");
    assert_eq!(ana["state"], "completed");
    let out = emu.prism(&["destroy", &path, "--snapshot", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Nothing to destroy"),
        "{}",
        stdout(&out)
    );

    // Ana comes back: her disk is the new workspace's data volume.
    let snap = ana["id"].as_str().unwrap();
    let out = emu.prism(&[
        "workspace",
        "create",
        "--template",
        "t",
        "-f",
        &path,
        "--fleet",
        FLEET,
        "--yes",
        "--from-snapshot",
        snap,
        "sem6-ana",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let back = live(&emu).await;
    assert_eq!(back.len(), 1);
    let id = back[0].instance_id().unwrap();
    let volumes = emu
        .ec2()
        .describe_volumes()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("attachment.instance-id")
                .values(id)
                .build(),
        )
        .send()
        .await
        .expect("DescribeVolumes");
    let restored: Vec<_> = volumes
        .volumes()
        .iter()
        .filter(|v| v.snapshot_id() == Some(snap))
        .collect();
    assert_eq!(restored.len(), 1, "{volumes:?}");
    assert_eq!(
        restored[0].attachments()[0].device(),
        Some("/dev/sdf"),
        "{restored:?}"
    );

    // A snapshot that does not exist launches nothing.
    emu.clear_calls();
    let out = emu.prism(&[
        "workspace",
        "create",
        "--template",
        "t",
        "-f",
        &path,
        "--fleet",
        FLEET,
        "--yes",
        "--from-snapshot",
        "snap-0123456789abcdef0",
        "sem6-ben",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no snapshot `snap-0123456789abcdef0`"),
        "{}",
        stderr(&out)
    );
    assert_eq!(mutating_calls(&emu), Vec::<String>::new());
}
