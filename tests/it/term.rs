//! A term through the real binary, the features together: a timetabled course whose
//! roster grows (a late joiner who collides with a classmate) and shrinks, a guest made
//! by hand, a student who starts their workspace from the console out of hours, an
//! apply interrupted with Ctrl-C, `watch --once` passes, a change of instance type, and
//! at the end `prism destroy --snapshot`. After every step: a member still on the roster
//! keeps their instance, no member has two, the guest is kept, and nothing prism
//! launched runs out of hours once a whole pass has run. After the destroy: no instance
//! is left, and every workspace has a completed snapshot tagged with its member.

use std::collections::BTreeMap;

use serde_json::json;

use crate::emulator::{
    Emulator, fleet_instances, fleet_snapshots, interrupt_after, snapshot_tag, state, stderr, tag,
};
use crate::out_of_hours::{acted, booted, left_alone, off_hours_schedule, plan_json};

struct Course<'a> {
    emu: &'a Emulator,
    path: String,
    /// The instance id of each member, while on the roster.
    first: BTreeMap<String, String>,
}

impl Course<'_> {
    fn roster(&self, emails: &[&str]) {
        let rows: Vec<String> = emails.iter().map(|e| format!("x,{e}")).collect();
        self.emu
            .write("roster.csv", &format!("Name,Email\n{}\n", rows.join("\n")));
    }

    fn prism(&self, args: &[&str]) -> std::process::Output {
        let mut all = args.to_vec();
        all.push(&self.path);
        self.emu.prism(&all)
    }

    /// The invariants, after `step`.
    async fn check(&mut self, step: &str, emails: &[&str]) {
        let all = fleet_instances(self.emu, "sem").await;
        let live: Vec<_> = all
            .iter()
            .filter(|i| !matches!(state(i).as_str(), "terminated" | "shutting-down"))
            .collect();
        let mut per_member: BTreeMap<&str, usize> = BTreeMap::new();
        for i in &live {
            *per_member
                .entry(tag(i, "prism:member").unwrap_or("?"))
                .or_default() += 1;
        }
        assert!(
            per_member.values().all(|n| *n == 1),
            "{step}: {per_member:?}"
        );
        for e in emails {
            let id = live
                .iter()
                .find(|i| tag(i, "prism:member") == Some(e))
                .and_then(|i| i.instance_id())
                .unwrap_or_else(|| panic!("{step}: {e} has no instance"));
            let first = self.first.entry(e.to_string()).or_insert(id.to_string());
            assert_eq!(first, id, "{step}: {e}'s instance changed");
        }
        self.first.retain(|e, _| emails.contains(&e.as_str()));
        assert!(
            live.iter()
                .any(|i| tag(i, "prism:workspace") == Some("guest1")),
            "{step}: the guest was pruned"
        );
    }
}

const ANA: &str = "ana.lee@state.edu";
const BO: &str = "bo.chen@state.edu";
const ANA2: &str = "ana.lee@exchange.edu";
const CY: &str = "cy.diaz@state.edu";

#[tokio::test(flavor = "multi_thread")]
async fn a_term_of_edits_and_hands_keeps_every_students_work() {
    let emu = Emulator::start();
    let path = emu.write(
        "sem.yaml",
        &format!(
            "name: sem\nproject: p\ntemplate: t\nmembers_file: roster.csv\nmembers_column: Email\nprune: true\n{}\nrate_limit: {{rate_per_minute: 20, burst_size: 1}}\ntemplates:\n  t: {{image: ami-785db401, instance_type: t3.micro}}\n",
            off_hours_schedule()
        ),
    );
    let mut c = Course {
        emu: &emu,
        path: path.to_str().unwrap().to_string(),
        first: BTreeMap::new(),
    };
    let ok = |out: std::process::Output| assert!(out.status.success(), "{}", stderr(&out));

    c.roster(&[ANA, BO]);
    ok(c.prism(&["apply", "--yes"]));
    ok(emu.prism(&[
        "workspace",
        "create",
        "--template",
        "t",
        "-f",
        &c.path,
        "--fleet",
        "sem",
        "--yes",
        "guest1",
    ]));
    c.check("the course and a guest", &[ANA, BO]).await;

    // A late joiner whose name collides with Ana's.
    c.roster(&[ANA, BO, ANA2]);
    ok(c.prism(&["apply", "--yes"]));
    c.check("a late joiner", &[ANA, BO, ANA2]).await;

    // Ten minutes later, Ana starts her workspace from the console.
    emu.post("/_prism/age", json!({"seconds": 600}));
    let ana = c.first[ANA].clone();
    emu.ec2()
        .start_instances()
        .instance_ids(&ana)
        .send()
        .await
        .expect("StartInstances");
    ok(c.prism(&["watch", "--once"]));
    let plan = plan_json(&emu, &c.path);
    assert_eq!(left_alone(&plan), ["sem-ana-lee"], "{plan:#}");
    c.check("a start by hand", &[ANA, BO, ANA2]).await;

    // Bo drops; Cy joins, and the apply is interrupted after Cy's launch.
    emu.post("/_prism/boot", json!({"seconds": 2}));
    c.roster(&[ANA, ANA2, CY]);
    let (code, rest) = interrupt_after(&emu, &["apply", "--yes", &c.path], "launched (i-");
    assert_eq!(code, Some(1), "{rest}");
    booted(&emu, "sem").await;
    let plan = plan_json(&emu, &c.path);
    assert!(
        acted(&plan, "stop").contains(&"sem-cy-diaz".to_string()),
        "{plan:#}"
    );
    assert_eq!(left_alone(&plan), ["sem-ana-lee"], "{plan:#}");
    c.check("an interrupted apply", &[ANA, ANA2, CY]).await;

    // The next whole pass finishes the job: Bo's workspace goes, Cy's is stopped.
    ok(c.prism(&["watch", "--once"]));
    c.check("a whole pass", &[ANA, ANA2, CY]).await;
    let running: Vec<String> = fleet_instances(&emu, "sem")
        .await
        .iter()
        .filter(|i| state(i) == "running" && tag(i, "prism:made-by").is_none())
        .map(|i| tag(i, "prism:workspace").unwrap_or("?").to_string())
        .collect();
    assert_eq!(
        running,
        ["sem-ana-lee"],
        "only the hand start runs out of hours"
    );
    let bo = fleet_instances(&emu, "sem")
        .await
        .into_iter()
        .filter(|i| tag(i, "prism:member") == Some(BO))
        .all(|i| matches!(state(&i).as_str(), "terminated" | "shutting-down"));
    assert!(bo, "the dropped member's workspace is deleted (prune)");

    // The instructor moves the class to t3.small: each member keeps their instance.
    let text = std::fs::read_to_string(&c.path).unwrap();
    std::fs::write(&c.path, text.replace("t3.micro", "t3.small")).unwrap();
    ok(c.prism(&["apply", "--yes"]));
    c.check("a change of type", &[ANA, ANA2, CY]).await;
    let types: Vec<String> = fleet_instances(&emu, "sem")
        .await
        .iter()
        .filter(|i| state(i) != "terminated" && tag(i, "prism:made-by").is_none())
        .map(|i| {
            i.instance_type()
                .map(|t| t.as_str().to_string())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(types, ["t3.small"; 3], "resized in place");

    // The end of the term.
    let live: Vec<(String, String)> = fleet_instances(&emu, "sem")
        .await
        .iter()
        .filter(|i| !matches!(state(i).as_str(), "terminated" | "shutting-down"))
        .map(|i| {
            (
                tag(i, "prism:workspace").unwrap_or("?").to_string(),
                tag(i, "prism:member").unwrap_or("?").to_string(),
            )
        })
        .collect();
    ok(c.prism(&["destroy", "--snapshot", "--yes"]));
    let left = fleet_instances(&emu, "sem")
        .await
        .iter()
        .filter(|i| !matches!(state(i).as_str(), "terminated" | "shutting-down"))
        .count();
    assert_eq!(left, 0, "the destroy left instances");
    let snaps = fleet_snapshots(&emu, "sem").await;
    let mut kept: Vec<(String, String)> = snaps
        .iter()
        .filter(|s| s.state().map(|st| st.as_str()) == Some("completed"))
        .map(|s| {
            let t = |k: &str| snapshot_tag(s, k).unwrap_or("?").to_string();
            (t("prism:workspace"), t("prism:member"))
        })
        .collect();
    kept.sort();
    let mut expected = live;
    expected.sort();
    assert_eq!(
        kept, expected,
        "one snapshot per workspace, with its member"
    );
}
