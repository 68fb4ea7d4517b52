//! Table tests of timetables: windows, days, zones and DST changes both ways; and the
//! planner's starts, stops, hibernations and hand-started workspaces at a moment.

use std::collections::BTreeMap;
use std::path::Path;

use jiff::Timestamp;

use super::*;
use crate::cloud::{Instance, InstanceState, tags};
use crate::manifest::Manifest;
use crate::observe::{ImageResolution, Observed};
use crate::plan::{ActionKind, plan, plan_at};

const CLASS: &str = "schedule:\n  timezone: America/Chicago\n  running:\n    - {days: [mon, wed], from: \"09:00\", to: \"12:15\"}\n    - {days: [fri], from: \"13:00\", to: \"17:00\", name: lab}\n";

fn manifest(schedule: &str, extra: &str) -> Manifest {
    let text = format!(
        "name: cs\nproject: p\ntemplate: t\ncount: 2\n{extra}\n{schedule}\ntemplates:\n  t: {{image: ami-1, instance_type: t3.micro, root_volume_gb: 8, hibernation: true}}\n"
    );
    crate::manifest::parse(Path::new("c.yaml"), &text).unwrap_or_else(|e| panic!("{e:?}"))
}

fn ts(text: &str) -> Timestamp {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// A wall-clock time in Chicago.
fn chicago(text: &str) -> Timestamp {
    let dt: jiff::civil::DateTime = text.parse().unwrap();
    dt.to_zoned(jiff::tz::TimeZone::get("America/Chicago").unwrap())
        .unwrap()
        .timestamp()
}

fn schedule_of(m: &Manifest) -> &crate::manifest::Schedule {
    m.schedule.as_ref().expect("a schedule")
}

#[test]
fn windows_and_days() {
    let m = manifest(CLASS, "");
    let s = schedule_of(&m);
    // (moment, state, open window, next change at (UTC), next state)
    let cases: &[(&str, Wanted, Option<&str>, &str, Wanted)] = &[
        (
            "2026-12-02T09:05",
            Wanted::Running,
            Some("class hours Wed 09:00–12:15 America/Chicago"),
            "2026-12-02T18:15:00Z",
            Wanted::Stopped,
        ),
        (
            "2026-12-02T08:59",
            Wanted::Stopped,
            None,
            "2026-12-02T15:00:00Z",
            Wanted::Running,
        ),
        (
            "2026-12-02T09:00",
            Wanted::Running,
            Some("class hours Wed 09:00–12:15 America/Chicago"),
            "2026-12-02T18:15:00Z",
            Wanted::Stopped,
        ),
        // The end is not in the window.
        (
            "2026-12-02T12:15",
            Wanted::Stopped,
            None,
            "2026-12-04T19:00:00Z",
            Wanted::Running,
        ),
        (
            "2026-12-04T16:59",
            Wanted::Running,
            Some("lab Fri 13:00–17:00 America/Chicago"),
            "2026-12-04T23:00:00Z",
            Wanted::Stopped,
        ),
        // A weekend waits for Monday.
        (
            "2026-12-05T03:00",
            Wanted::Stopped,
            None,
            "2026-12-07T15:00:00Z",
            Wanted::Running,
        ),
        (
            "2026-12-03T10:00",
            Wanted::Stopped,
            None,
            "2026-12-04T19:00:00Z",
            Wanted::Running,
        ),
    ];
    for (at, state, window, next, next_state) in cases {
        let p = phase_at(s, chicago(at));
        assert_eq!(p.state, *state, "{at}");
        assert_eq!(p.window.as_ref().map(|w| w.label.as_str()), *window, "{at}");
        let c = p.next.as_ref().expect("a next change");
        assert_eq!(c.at.timestamp(), ts(next), "{at}");
        assert_eq!(c.state, *next_state, "{at}");
    }
    let p = phase_at(s, chicago("2026-12-02T20:00"));
    assert_eq!(
        p.reason(),
        "outside the schedule; class hours Wed 09:00–12:15 America/Chicago ended Wed 12:15 CST"
    );
    assert_eq!(p.began, Some(ts("2026-12-02T18:15:00Z")));
}

#[test]
fn the_same_instant_in_other_zones() {
    let berlin = manifest(
        "schedule:\n  timezone: Europe/Berlin\n  running: [{days: [wed], from: \"09:00\", to: \"10:00\"}]\n",
        "",
    );
    let chicago_m = manifest(CLASS, "");
    let utc = manifest(
        "schedule:\n  timezone: UTC\n  running: [{days: [wed], from: \"08:00\", to: \"09:00\"}]\n",
        "",
    );
    let at = ts("2026-12-02T08:30:00Z");
    assert_eq!(phase_at(schedule_of(&berlin), at).state, Wanted::Running);
    assert_eq!(phase_at(schedule_of(&utc), at).state, Wanted::Running);
    assert_eq!(phase_at(schedule_of(&chicago_m), at).state, Wanted::Stopped);
    assert_eq!(
        moment(&phase_at(schedule_of(&berlin), at).now),
        "Wed 2026-12-02 09:30 CET"
    );
}

#[test]
fn dst_spring_forward_keeps_the_wall_clock() {
    let m = manifest(CLASS, "");
    let s = schedule_of(&m);
    // Monday 09:05 is 15:05 UTC in winter, 14:05 UTC after 2027-03-14.
    assert_eq!(
        phase_at(s, ts("2027-03-08T15:05:00Z")).state,
        Wanted::Running
    );
    assert_eq!(
        phase_at(s, ts("2027-03-15T14:05:00Z")).state,
        Wanted::Running
    );
    assert_eq!(
        phase_at(s, ts("2027-03-15T13:55:00Z")).state,
        Wanted::Stopped
    );
    // From the Saturday before, the next opening is 09:00 CDT.
    let p = phase_at(s, chicago("2027-03-13T12:00"));
    let next = p.next.unwrap();
    assert_eq!(next.at.timestamp(), ts("2027-03-15T14:00:00Z"));
    assert_eq!(moment(&next.at), "Mon 2027-03-15 09:00 CDT");
    // A window opening in the skipped hour opens when the clock jumps past it.
    let gap = manifest(
        "schedule:\n  timezone: America/Chicago\n  running: [{days: [sun], from: \"02:30\", to: \"04:00\"}]\n",
        "",
    );
    let s = schedule_of(&gap);
    assert_eq!(
        phase_at(s, ts("2027-03-14T08:15:00Z")).state,
        Wanted::Stopped
    );
    assert_eq!(
        phase_at(s, ts("2027-03-14T08:31:00Z")).state,
        Wanted::Running
    );
    // It closes at 04:00 CDT: one and a half hours on the clock, half an hour in fact.
    let p = phase_at(s, ts("2027-03-14T08:31:00Z"));
    assert_eq!(p.next.unwrap().at.timestamp(), ts("2027-03-14T09:00:00Z"));
}

#[test]
fn dst_fall_back_keeps_the_wall_clock() {
    let m = manifest(CLASS, "");
    let s = schedule_of(&m);
    // Monday 09:05 is 14:05 UTC before 2026-11-01, 15:05 UTC after.
    assert_eq!(
        phase_at(s, ts("2026-10-26T14:05:00Z")).state,
        Wanted::Running
    );
    assert_eq!(
        phase_at(s, ts("2026-11-02T14:05:00Z")).state,
        Wanted::Stopped
    );
    assert_eq!(
        phase_at(s, ts("2026-11-02T15:05:00Z")).state,
        Wanted::Running
    );
    let p = phase_at(s, chicago("2026-10-31T12:00"));
    assert_eq!(
        p.next.unwrap().at.timestamp(),
        ts("2026-11-02T15:00:00Z"),
        "the Monday after the change opens at 09:00 CST"
    );
    // A window over the repeated hour opens at its first 01:00 and closes at 03:00 CST.
    let fold = manifest(
        "schedule:\n  timezone: America/Chicago\n  running: [{days: [sun], from: \"01:00\", to: \"03:00\"}]\n",
        "",
    );
    let s = schedule_of(&fold);
    assert_eq!(
        phase_at(s, ts("2026-11-01T05:59:00Z")).state,
        Wanted::Stopped
    );
    assert_eq!(
        phase_at(s, ts("2026-11-01T06:00:00Z")).state,
        Wanted::Running
    );
    assert_eq!(
        phase_at(s, ts("2026-11-01T07:30:00Z")).state,
        Wanted::Running,
        "second 01:30"
    );
    assert_eq!(
        phase_at(s, ts("2026-11-01T09:00:00Z")).state,
        Wanted::Stopped
    );
}

#[test]
fn touching_windows_are_one_stretch_and_midnight_is_24_00() {
    let m = manifest(
        "schedule:\n  timezone: UTC\n  running:\n    - {days: [mon], from: \"22:00\", to: \"24:00\"}\n    - {days: [tue], from: \"00:00\", to: \"02:00\"}\n",
        "",
    );
    let s = schedule_of(&m);
    let p = phase_at(s, ts("2026-11-30T23:00:00Z"));
    assert_eq!(p.state, Wanted::Running);
    assert_eq!(
        p.next.as_ref().unwrap().at.timestamp(),
        ts("2026-12-01T02:00:00Z")
    );
    assert_eq!(p.began, Some(ts("2026-11-30T22:00:00Z")));
    assert_eq!(s.hours_per_week(), 4.0);
}

fn inst(id: &str, ws: &str, state: InstanceState, started: Option<Timestamp>) -> Instance {
    Instance {
        id: id.into(),
        instance_type: "t3.micro".into(),
        image_id: "ami-1".into(),
        state,
        availability_zone: Some("us-west-2a".into()),
        launch_time: started.map(|t| t.as_second()),
        first_launch_time: None,
        tags: BTreeMap::from([
            (tags::FLEET.to_string(), "cs".to_string()),
            (tags::WORKSPACE.to_string(), ws.to_string()),
        ]),
        lifecycle: None,
        hibernated: false,
        hibernation: true,
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

fn actions(p: &crate::plan::Plan) -> Vec<(ActionKind, String, String)> {
    p.actions
        .iter()
        .map(|a| (a.action, a.workspace.clone(), a.reason.clone()))
        .collect()
}

#[test]
fn the_planner_follows_the_window_holding_now() {
    let m = manifest(CLASS, "");
    let monday_night = Some(chicago("2026-11-30T08:00"));
    let o = observed(vec![
        inst("i-1", "cs-01", InstanceState::Stopped, monday_night),
        inst("i-2", "cs-02", InstanceState::Running, monday_night),
    ]);
    let class = plan_at(&m, &o, Some(chicago("2026-12-02T09:05")));
    assert_eq!(
        actions(&class),
        [(
            ActionKind::Start,
            "cs-01".into(),
            "class hours Wed 09:00–12:15 America/Chicago".into()
        )]
    );
    let view = class.schedule.as_ref().unwrap();
    assert_eq!(view.at, "2026-12-02T09:05:00-06:00");
    let next = view.next_change.as_ref().unwrap();
    assert_eq!(
        (next.at.as_str(), next.state, next.workspaces),
        ("2026-12-02T12:15:00-06:00", Wanted::Stopped, 2)
    );

    let night = plan_at(&m, &o, Some(chicago("2026-12-02T22:00")));
    assert_eq!(
        actions(&night),
        [(
            ActionKind::Stop,
            "cs-02".into(),
            "outside the schedule; class hours Wed 09:00–12:15 America/Chicago ended Wed 12:15 CST"
                .into()
        )]
    );
    let cost = night.cost.as_ref().unwrap();
    assert_eq!(cost.running_hours_per_week, 10.5);
    assert_eq!(
        (cost.per_week_usd, cost.always_on_per_week_usd),
        (Some(0.22), Some(3.49))
    );

    // Planned at no moment, a scheduled fleet's states are left as they are.
    assert!(plan(&m, &o).actions.is_empty());
    assert!(plan(&m, &o).schedule.is_none());
}

#[test]
fn a_workspace_started_by_hand_after_the_boundary_runs_until_the_next() {
    let m = manifest(CLASS, "");
    let boundary = chicago("2026-12-02T12:15");
    let o = observed(vec![
        // Running since class: the stop at 12:15 was missed.
        inst(
            "i-1",
            "cs-01",
            InstanceState::Running,
            Some(chicago("2026-12-02T09:00")),
        ),
        // Started by a student at 20:14.
        inst(
            "i-2",
            "cs-02",
            InstanceState::Running,
            Some(chicago("2026-12-02T20:14")),
        ),
    ]);
    let p = plan_at(&m, &o, Some(chicago("2026-12-02T22:00")));
    assert_eq!(
        p.actions
            .iter()
            .map(|a| (a.action, a.workspace.as_str()))
            .collect::<Vec<_>>(),
        [(ActionKind::Stop, "cs-01")]
    );
    let view = p.schedule.as_ref().unwrap();
    assert_eq!(view.left_alone.len(), 1);
    assert_eq!(view.left_alone[0].workspace, "cs-02");
    assert_eq!(
        view.left_alone[0].reason,
        "started by hand Wed 2026-12-02 20:14 CST, after the schedule stopped the fleet: left running; it is stopped when the next window ends, Fri 2026-12-04 17:00 CST"
    );
    assert_eq!(view.since.as_deref(), Some("2026-12-02T12:15:00-06:00"));
    assert_eq!(boundary, ts(view.since.as_deref().unwrap()));
    // At the end of the next window, it is stopped with the rest.
    let p = plan_at(&m, &o, Some(chicago("2026-12-04T17:00")));
    assert_eq!(p.summary.stop, 2);
}

/// Instance `id` of `ws`, running, first launched at `launched` and last started at
/// `started`, with prism's record of a start when given.
fn started(id: &str, ws: &str, launched: &str, started: &str, record: Option<&str>) -> Instance {
    let mut i = inst(id, ws, InstanceState::Running, Some(chicago(started)));
    i.first_launch_time = Some(chicago(launched).as_second());
    if let Some(r) = record {
        i.tags.insert(tags::STARTED.into(), chicago(r).to_string());
    }
    i
}

#[test]
fn only_a_start_by_someone_else_after_the_boundary_is_left_running() {
    let mut m = manifest(CLASS, "");
    m.workspaces = (1..=5).map(|n| format!("cs-0{n}")).collect();
    let o = observed(vec![
        // Launched by prism in the evening (an apply interrupted, or --no-wait).
        started("i-1", "cs-01", "2026-12-02T19:00", "2026-12-02T19:00", None),
        // Started by prism in the evening, recorded a moment before.
        started(
            "i-2",
            "cs-02",
            "2026-11-30T09:00",
            "2026-12-02T19:00:20",
            Some("2026-12-02T19:00"),
        ),
        // Started from the console in the evening: prism's record is of Monday's class.
        started(
            "i-3",
            "cs-03",
            "2026-11-30T09:00",
            "2026-12-02T20:14",
            Some("2026-11-30T09:00"),
        ),
        // Started from the console, never by prism.
        started("i-4", "cs-04", "2026-11-30T09:00", "2026-12-02T20:30", None),
        // Started from the console after the moment planned for.
        started("i-5", "cs-05", "2026-11-30T09:00", "2026-12-02T23:30", None),
    ]);
    let p = plan_at(&m, &o, Some(chicago("2026-12-02T22:00")));
    let stops: Vec<&str> = p
        .actions
        .iter()
        .filter(|a| a.action == ActionKind::Stop)
        .map(|a| a.workspace.as_str())
        .collect();
    assert_eq!(stops, ["cs-01", "cs-02", "cs-05"]);
    let left: Vec<&str> = p
        .schedule
        .as_ref()
        .unwrap()
        .left_alone
        .iter()
        .map(|l| l.workspace.as_str())
        .collect();
    assert_eq!(left, ["cs-03", "cs-04"]);
    assert!(crate::plan::started_by_prism(&o.instances[0]));
    assert!(!crate::plan::started_by_prism(&o.instances[3]));
}

#[test]
fn the_next_change_of_each_workspace_agrees_with_the_plan() {
    let mut m = manifest(CLASS, "");
    m.workspaces = (1..=3).map(|n| format!("cs-0{n}")).collect();
    let mut stopped = inst("i-3", "cs-03", InstanceState::Stopped, None);
    stopped.first_launch_time = Some(0);
    let o = observed(vec![
        started("i-1", "cs-01", "2026-12-02T19:00", "2026-12-02T19:00", None),
        started("i-2", "cs-02", "2026-11-30T09:00", "2026-12-02T20:14", None),
        stopped,
    ]);
    let night = chicago("2026-12-02T22:00");
    let next: Vec<Option<String>> = o
        .instances
        .iter()
        .map(|i| crate::plan::next_change(&m, i, night))
        .collect();
    assert_eq!(
        next,
        [
            Some("stops now".to_string()),
            Some("stopped at Fri 2026-12-04 17:00 CST".to_string()),
            Some("running at Fri 2026-12-04 13:00 CST".to_string()),
        ]
    );
    let class = chicago("2026-12-04T13:30");
    let next: Vec<Option<String>> = o
        .instances
        .iter()
        .map(|i| crate::plan::next_change(&m, i, class))
        .collect();
    assert_eq!(
        next,
        [
            Some("stopped at Fri 2026-12-04 17:00 CST".to_string()),
            Some("stopped at Fri 2026-12-04 17:00 CST".to_string()),
            Some("starts now".to_string()),
        ]
    );
    let unscheduled = manifest("", "");
    assert_eq!(
        crate::plan::next_change(&unscheduled, &o.instances[0], night),
        None
    );
}

#[test]
fn otherwise_hibernated_hibernates_what_can() {
    let m = manifest(&format!("{CLASS}  otherwise: hibernated\n"), "");
    let mut plain = inst(
        "i-2",
        "cs-02",
        InstanceState::Running,
        Some(chicago("2026-12-02T09:00")),
    );
    plain.hibernation = false;
    let o = observed(vec![
        inst(
            "i-1",
            "cs-01",
            InstanceState::Running,
            Some(chicago("2026-12-02T09:00")),
        ),
        plain,
    ]);
    let p = plan_at(&m, &o, Some(chicago("2026-12-02T13:00")));
    let kinds: Vec<_> = p.actions.iter().map(|a| a.action).collect();
    assert_eq!(kinds, [ActionKind::Hibernate, ActionKind::Stop]);
    assert!(
        p.actions[1]
            .reason
            .ends_with("launched without hibernation, so stopped instead")
    );
    let job = crate::engine::Job::from_plan(&m, &p, &o);
    assert_eq!(
        job.desired,
        crate::manifest::DesiredState::Stopped,
        "new ones launch, then stop"
    );
    let p = plan_at(&m, &o, Some(chicago("2026-12-02T10:00")));
    let job = crate::engine::Job::from_plan(&m, &p, &o);
    assert_eq!(job.desired, crate::manifest::DesiredState::Running);
}

#[test]
fn many_starts_say_when_the_last_is_sent() {
    assert_eq!(start_eta_secs(5), 0);
    assert_eq!(start_eta_secs(6), 1);
    assert_eq!(start_eta_secs(120), 58);
    let text = format!(
        "name: cs\nproject: p\ntemplate: t\ncount: 120\n{CLASS}templates:\n  t: {{image: ami-1, instance_type: t3.micro}}\n"
    );
    let m = crate::manifest::parse(Path::new("c.yaml"), &text).unwrap();
    let p = plan_at(&m, &observed(vec![]), Some(chicago("2026-12-02T08:00")));
    let next = p.schedule.as_ref().unwrap().next_change.clone().unwrap();
    assert_eq!((next.workspaces, next.last_start_after_s), (120, Some(58)));
    let text = crate::plan::render::text(&p);
    assert!(
        text.contains("Next change: Wed 2026-12-02 09:00 CST: start 120 workspaces (class hours Wed 09:00–12:15 America/Chicago opens); the last start is sent about 58 s later."),
        "{text}"
    );
}
