//! Whose workspace is whose, through the real binary: a late joiner whose name
//! collides with a classmate's launches alone and the classmate keeps their instance,
//! whether it carries its member or predates members; a guest made by hand survives
//! the manifest's applies and watch.

use crate::emulator::{
    Emulator, fleet_instances, launch, per_workspace, state, stderr, stdout, tag,
};
use crate::out_of_hours::plan_json;
use crate::plan::actions;

const ANA: &str = "ana.lee@state.edu";
const ANA2: &str = "ana.lee@exchange.edu";

fn course(emu: &Emulator, emails: &[&str]) -> String {
    emu.write(
        "roster.csv",
        &format!(
            "Name,Email\n{}\n",
            emails
                .iter()
                .map(|e| format!("x,{e}"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
    );
    let path = emu.write(
        "sem.yaml",
        "name: sem\nproject: p\ntemplate: t\nmembers_file: roster.csv\nmembers_column: Email\nprune: true\nrate_limit: {rate_per_minute: 600, burst_size: 10}\ntemplates:\n  t: {image: ami-785db401, instance_type: t3.micro}\n",
    );
    path.to_str().unwrap().to_string()
}

/// The live instance ids of fleet `fleet` by workspace.
async fn ids(emu: &Emulator, fleet: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = fleet_instances(emu, fleet)
        .await
        .iter()
        .filter(|i| !matches!(state(i).as_str(), "terminated" | "shutting-down"))
        .map(|i| {
            (
                tag(i, "prism:workspace").unwrap_or("?").to_string(),
                i.instance_id().unwrap_or_default().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn plan_actions(emu: &Emulator, path: &str) -> Vec<(String, String)> {
    actions(&plan_json(emu, path))
}

async fn late_joiner(emu: &Emulator, path: &str) {
    let before = ids(emu, "sem").await;
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0].0, "sem-ana-lee");
    course(emu, &[ANA, ANA2]);
    let actions = plan_actions(emu, path);
    assert_eq!(actions.len(), 1, "only the newcomer: {actions:?}");
    assert_eq!(actions[0].0, "create");
    assert!(actions[0].1.starts_with("sem-ana-lee-"), "{actions:?}");
    for _ in 0..2 {
        let out = emu.prism(&["apply", "--yes", path]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let after = ids(emu, "sem").await;
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(
        after.contains(&before[0]),
        "sem-ana-lee kept its instance: {after:?}"
    );
    let members: Vec<String> = fleet_instances(emu, "sem")
        .await
        .iter()
        .filter_map(|i| tag(i, "prism:member").map(str::to_string))
        .collect();
    assert!(members.contains(&ANA2.to_string()), "{members:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_joiner_who_collides_launches_alone_and_the_classmate_keeps_their_instance() {
    let emu = Emulator::start();
    let path = course(&emu, &[ANA]);
    let out = emu.prism(&["apply", "--yes", &path]);
    assert!(out.status.success(), "{}", stderr(&out));
    let first = fleet_instances(&emu, "sem").await;
    assert_eq!(tag(&first[0], "prism:member"), Some(ANA));
    late_joiner(&emu, &path).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_from_before_members_were_kept_is_adopted_by_its_name() {
    let emu = Emulator::start();
    let path = course(&emu, &[ANA]);
    launch(&emu.ec2(), Some("sem"), Some("sem-ana-lee"), "t3.micro", 1).await;
    assert!(plan_actions(&emu, &path).is_empty(), "adopted as it is");
    late_joiner(&emu, &path).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_made_by_hand_survives_apply_and_watch() {
    let emu = Emulator::start();
    let path = emu.write(
        "lab.yaml",
        "name: lab\nproject: p\ntemplate: t\ncount: 2\nprune: true\nrate_limit: {rate_per_minute: 600, burst_size: 10}\ntemplates:\n  t: {image: ami-785db401, instance_type: t3.micro}\n",
    );
    let path = path.to_str().unwrap();
    let out = emu.prism(&["apply", "--yes", path]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = emu.prism(&[
        "workspace",
        "create",
        "--template",
        "t",
        "-f",
        path,
        "--fleet",
        "lab",
        "--yes",
        "guest1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let guest = fleet_instances(&emu, "lab").await;
    let guest = guest
        .iter()
        .find(|i| tag(i, "prism:workspace") == Some("guest1"))
        .expect("guest1 launched");
    assert_eq!(tag(guest, "prism:made-by"), Some("hand"));

    let out = emu.prism(&["plan", path]);
    let text = stdout(&out);
    assert!(
        text.contains("Made by hand (workspace create), not in the manifest: kept"),
        "{text}"
    );
    assert!(text.contains("No changes"), "{text}");
    let out = emu.prism(&["apply", "--yes", path]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = emu.prism(&["watch", "--once", path]);
    assert!(out.status.success(), "{}", stderr(&out));
    let live = per_workspace(&emu, "lab").await;
    assert_eq!(live.get("guest1"), Some(&1), "{live:?}");
    assert_eq!(live.values().sum::<usize>(), 3, "{live:?}");

    // workspace delete still can.
    let out = emu.prism(&["workspace", "delete", "guest1", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(per_workspace(&emu, "lab").await.get("guest1"), None);
}
