//! Table tests of who owns which workspace as a roster changes: late joiners who
//! collide, reordered rows, dropped members, fleets launched before members were kept,
//! and workspaces made by hand.

use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::cloud::InstanceState;
use crate::manifest::roster;
use crate::observe::{ImageResolution, Observed};
use crate::plan::{ActionKind, plan};

/// Fleet `sem` of the roster whose Email column is `emails`, pruning.
fn manifest(emails: &[&str]) -> Manifest {
    let mut m = crate::manifest::parse(
        Path::new("sem.yaml"),
        "name: sem\nproject: p\ntemplate: t\nmembers: [x]\nprune: true\ntemplates:\n  t: {image: ami-1, instance_type: t3.micro}\n",
    )
    .unwrap();
    let csv = format!("Email\n{}\n", emails.join("\n"));
    let r = roster::parse("roster.csv", &csv, None).unwrap_or_else(|_| panic!("{csv}"));
    let names: Vec<String> = r.members.iter().map(|m| m.name.clone()).collect();
    m.workspaces = crate::manifest::member_workspaces("sem", &names);
    m.roster = Some(r);
    m
}

fn inst(id: &str, ws: &str, member: Option<&str>) -> Instance {
    let mut tags = BTreeMap::from([
        (tags::FLEET.to_string(), "sem".to_string()),
        (tags::WORKSPACE.to_string(), ws.to_string()),
    ]);
    if let Some(m) = member {
        tags.insert(tags::MEMBER.to_string(), m.to_string());
    }
    Instance {
        id: id.into(),
        instance_type: "t3.micro".into(),
        image_id: "ami-1".into(),
        state: InstanceState::Running,
        availability_zone: None,
        launch_time: Some(0),
        first_launch_time: Some(0),
        tags,
        lifecycle: None,
        hibernated: false,
        hibernation: false,
    }
}

fn observed(instances: Vec<Instance>) -> Observed {
    Observed {
        region: "us-west-2".into(),
        instances,
        vcpus: BTreeMap::from([("t3.micro".into(), 2)]),
        image: ImageResolution::Resolved {
            id: "ami-1".into(),
            root_device: None,
        },
        in_flight: vec![],
        ..Observed::default()
    }
}

const ANA: &str = "ana.lee@state.edu";
const ANA2: &str = "ana.lee@exchange.edu";

fn exchange_suffixed() -> String {
    format!("sem-{}", roster::suffixed("ana-lee", ANA2, 4))
}

/// (what it shows, the roster's e-mails, the fleet's instances, the names expected).
type Case = (&'static str, Vec<&'static str>, Vec<Instance>, Vec<String>);

#[test]
fn names_follow_members_through_roster_changes() {
    let tagged = vec![inst("i-1", "sem-ana-lee", Some(ANA))];
    let untagged = vec![inst("i-1", "sem-ana-lee", None)];
    let cases: Vec<Case> = vec![
        (
            "a late joiner who collides takes the suffix",
            vec![ANA, ANA2],
            tagged.clone(),
            vec!["sem-ana-lee".into(), exchange_suffixed()],
        ),
        (
            "the late joiner listed first changes nothing",
            vec![ANA2, ANA],
            tagged.clone(),
            vec![exchange_suffixed(), "sem-ana-lee".into()],
        ),
        (
            "an instance launched before members were kept is adopted by its name",
            vec![ANA, ANA2],
            untagged.clone(),
            vec!["sem-ana-lee".into(), exchange_suffixed()],
        ),
        (
            "a newcomer does not take a dropped member's name",
            vec![ANA2],
            tagged.clone(),
            vec![exchange_suffixed()],
        ),
        (
            "nobody there yet: the roster's own names",
            vec![ANA, ANA2],
            vec![],
            manifest(&[ANA, ANA2]).workspaces.clone(),
        ),
    ];
    for (name, emails, instances, expected) in cases {
        let m = manifest(&emails);
        assert_eq!(resolve(&m, &instances), expected, "{name}");
    }
}

#[test]
fn a_late_joiner_launches_alone_and_deletes_no_one() {
    for member in [Some(ANA), None] {
        let o = observed(vec![inst("i-1", "sem-ana-lee", member)]);
        let p = plan(&manifest(&[ANA, ANA2]), &o);
        let acts: Vec<(ActionKind, &str)> = p
            .actions
            .iter()
            .map(|a| (a.action, a.workspace.as_str()))
            .collect();
        assert_eq!(
            acts,
            [(ActionKind::Create, exchange_suffixed().as_str())],
            "{member:?}"
        );
        let members = members(&manifest(&[ANA, ANA2]), &o.instances);
        assert_eq!(
            members.get(&exchange_suffixed()).map(String::as_str),
            Some(ANA2)
        );
    }
}

#[test]
fn a_workspace_made_by_hand_is_kept_whatever_prune_says() {
    let mut guest = inst("i-9", "guest1", None);
    guest.tags.insert(tags::MADE_BY.into(), "hand".into());
    let o = observed(vec![inst("i-1", "sem-ana-lee", Some(ANA)), guest]);
    let p = plan(&manifest(&[ANA]), &o);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.made_by_hand.len(), 1);
    assert_eq!(p.made_by_hand[0].workspace, "guest1");
    assert!(p.would_delete_with_prune.is_empty());
}
