//! Sold-out zones and fallback types against the in-memory cloud, under paused time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::cloud::fake::FakeCloud;
use crate::cloud::{ErrorClass, InstanceState};
use crate::engine::events::{Event, Stamped};
use crate::engine::launch_notes::LaunchNotes;
use crate::engine::limiter::RateSettings;
use crate::engine::*;
use crate::observe::Observed;
use crate::testkit::*;

const ZONES: [&str; 3] = ["us-west-2a", "us-west-2b", "us-west-2c"];

fn fleet(count: u32, fallbacks: &str) -> (Manifest, Observed) {
    let text = format!(
        "name: f\nproject: p\ntemplate: t\ncount: {count}\ntemplates:\n  t: {{image: ami-1, instance_type: t3.micro{fallbacks}}}\n"
    );
    let manifest = crate::testkit::manifest("f.yaml", &text);
    let observed = crate::engine::tests::observed(&["t3.micro", "t3a.micro", "m5.large"], 1024.0);
    (manifest, observed)
}

fn cloud(sold_out: &[(&str, &str)]) -> Arc<FakeCloud> {
    let cloud = FakeCloud {
        region: "us-west-2".into(),
        zones: ZONES.map(String::from).to_vec(),
        ..FakeCloud::default()
    };
    *cloud.sold_out.lock().unwrap() = sold_out
        .iter()
        .map(|(t, z)| (t.to_string(), z.to_string()))
        .collect();
    Arc::new(cloud)
}

const PARALLELISM: usize = 4;

fn engine(cloud: &Arc<FakeCloud>, memory: Arc<LaunchNotes>) -> Arc<Engine> {
    Engine::new(
        cloud.clone(),
        Some(RateSettings {
            rate_per_minute: 600.0,
            burst_size: 10,
            adaptive: true,
            auto: false,
        }),
        memory,
    )
}

async fn run(engine: &Arc<Engine>, m: &Manifest, o: &Observed) -> (Report, Vec<Event>) {
    let plan = crate::plan::plan(m, o);
    let opts = RunOptions {
        parallelism: PARALLELISM,
        wait: None,
        ..RunOptions::default()
    };
    let mut run = engine.run(Job::from_plan(m, &plan, o), opts);
    let mut rx = run.events();
    let report = run.report().await;
    let mut events = vec![];
    while let Ok(Stamped { event, .. }) = rx.try_recv() {
        events.push(event);
    }
    (report, events)
}

fn ice_answers(cloud: &FakeCloud) -> usize {
    cloud.calls_to("RunInstances") - cloud.instances.lock().unwrap().len()
}

/// Instances per workspace, with the type and zone of each.
fn placed(cloud: &FakeCloud) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for i in cloud.instances.lock().unwrap().iter() {
        out.entry(i.workspace().unwrap().to_string())
            .or_default()
            .push((
                i.instance_type.clone(),
                i.availability_zone.clone().unwrap(),
            ));
    }
    out
}

#[tokio::test(start_paused = true)]
async fn one_sold_out_zone_is_met_by_few_launches_and_the_rest_go_straight_elsewhere() {
    let cloud = cloud(&[("t3.micro", "us-west-2a")]);
    let engine = engine(&cloud, Arc::new(LaunchNotes::in_memory()));
    let (m, o) = fleet(30, "");
    let (report, events) = run(&engine, &m, &o).await;
    assert!(report.complete(), "{report:?}");
    let placed = placed(&cloud);
    assert_eq!(placed.len(), 30);
    assert!(placed.values().all(|v| v.len() == 1), "one instance each");
    let per_zone = |z: &str| placed.values().filter(|v| v[0].1 == z).count();
    assert_eq!(per_zone("us-west-2a"), 0);
    // Those that preferred the sold-out zone spread over the others.
    assert_eq!((per_zone("us-west-2b"), per_zone("us-west-2c")), (15, 15));
    let ice = ice_answers(&cloud);
    assert!(
        (1..=PARALLELISM).contains(&ice),
        "{ice} InsufficientInstanceCapacity answers: one per launch already in flight at most"
    );
    let marks: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::ZoneUnavailable { .. }))
        .collect();
    assert_eq!(marks.len(), 1, "the zone is marked once: {marks:?}");
    assert_eq!(
        cloud.calls_to("DescribeAvailabilityZones"),
        1,
        "zones are read once per run"
    );
    assert!(report.fallbacks.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_workspace_prefers_the_same_zone_whatever_the_order_of_launches() {
    let cloud = cloud(&[]);
    let engine = engine(&cloud, Arc::new(LaunchNotes::in_memory()));
    let (m, o) = fleet(6, "");
    let (report, _) = run(&engine, &m, &o).await;
    assert!(report.complete());
    let zones: Vec<String> = placed(&cloud).values().map(|v| v[0].1.clone()).collect();
    assert_eq!(
        zones,
        [ZONES, ZONES].concat(),
        "f-01 in the first zone, f-02 in the second, …"
    );
}

#[tokio::test(start_paused = true)]
async fn every_zone_sold_out_for_the_type_launches_the_fallback_type() {
    let sold: Vec<(&str, &str)> = ZONES.iter().map(|z| ("t3.micro", *z)).collect();
    let cloud = cloud(&sold);
    let engine = engine(&cloud, Arc::new(LaunchNotes::in_memory()));
    let (m, o) = fleet(12, ", fallback_instance_types: [t3a.micro, m5.large]");
    let (report, events) = run(&engine, &m, &o).await;
    assert!(report.complete(), "{report:?}");
    let placed = placed(&cloud);
    assert_eq!(placed.len(), 12);
    assert!(
        placed
            .values()
            .all(|v| v.len() == 1 && v[0].0 == "t3a.micro"),
        "{placed:?}"
    );
    assert!(
        ice_answers(&cloud) <= PARALLELISM + ZONES.len(),
        "{} answers",
        ice_answers(&cloud)
    );
    assert_eq!(report.fallbacks.len(), 12);
    let f = &report.fallbacks[0];
    assert_eq!(
        (
            f.workspace.as_str(),
            f.instance_type.as_str(),
            f.instead_of.as_str()
        ),
        ("f-01", "t3a.micro", "t3.micro")
    );
    assert_eq!(
        f.reason,
        "t3.micro is sold out in every zone of us-west-2 (InsufficientInstanceCapacity)"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::TypeFallback { next_instance_type, .. } if next_instance_type == "t3a.micro"))
    );
}

#[tokio::test(start_paused = true)]
async fn no_capacity_anywhere_fails_each_workspace_naming_every_zone_and_type() {
    let sold: Vec<(&str, &str)> = ZONES
        .iter()
        .flat_map(|z| [("t3.micro", *z), ("t3a.micro", *z)])
        .collect();
    let cloud = cloud(&sold);
    let engine = engine(&cloud, Arc::new(LaunchNotes::in_memory()));
    let (m, o) = fleet(8, ", fallback_instance_types: [t3a.micro]");
    let (report, _) = run(&engine, &m, &o).await;
    assert_eq!(report.failed.len(), 8);
    assert!(
        cloud.calls_to("RunInstances") <= PARALLELISM + 2 * ZONES.len(),
        "later workspaces make no call: {}",
        cloud.calls_to("RunInstances")
    );
    let last = report.failed.last().unwrap();
    assert_eq!(last.class, Some(ErrorClass::Capacity));
    assert!(!last.reached_aws, "no call was made for it");
    assert_eq!(
        last.message,
        "no capacity for t3.micro in us-west-2a, us-west-2b, us-west-2c; t3a.micro in us-west-2a, us-west-2b, us-west-2c, all marked sold out by earlier launches within 3m; no call was made"
    );
    let e = &last.explained;
    assert!(
        e.what_happened
            .contains("t3.micro or t3a.micro capacity in any availability zone of us-west-2"),
        "{}",
        e.what_happened
    );
}

#[tokio::test(start_paused = true)]
async fn a_mark_is_shared_by_later_runs_until_it_runs_out() {
    let cloud = cloud(&[("t3.micro", "us-west-2a")]);
    let engine = engine(&cloud, Arc::new(LaunchNotes::in_memory()));
    engine.set_sold_out_ttl(Duration::from_secs(60));
    let (m, o) = fleet(1, "");
    let (first, _) = run(&engine, &m, &o).await;
    assert!(first.complete());
    assert_eq!(ice_answers(&cloud), 1);

    // Another fleet's f-01 prefers the same zone: the mark sends it elsewhere at once.
    tokio::time::advance(Duration::from_secs(30)).await;
    let (other, oo) = {
        let (mut m2, o2) = fleet(1, "");
        m2.name = "g".into();
        m2.workspaces = vec!["g-01".into()];
        (m2, o2)
    };
    let (second, events) = run(&engine, &other, &oo).await;
    assert!(second.complete());
    assert_eq!(ice_answers(&cloud), 1, "no second answer");
    assert!(
        matches!(&events[..], [Event::Started { .. }, Event::Queued { .. }, Event::ZoneUnavailable { workspace: None, for_s, .. }, ..] if *for_s == 30.0),
        "{events:?}"
    );

    // Once the mark runs out, the zone is tried again.
    tokio::time::advance(Duration::from_secs(31)).await;
    cloud.sold_out.lock().unwrap().clear();
    let (third_m, third_o) = {
        let (mut m3, o3) = fleet(1, "");
        m3.name = "h".into();
        m3.workspaces = vec!["h-01".into()];
        (m3, o3)
    };
    let (third, events) = run(&engine, &third_m, &third_o).await;
    assert!(third.complete());
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::ZoneAvailable { availability_zone, .. } if availability_zone == "us-west-2a"))
    );
    assert_eq!(placed(&cloud)["h-01"][0].1, "us-west-2a");
}

/// A rerun before AWS shows the first run's instances (the same plan again) sends the
/// noted token of the zone and type each workspace landed on: no second instance,
/// although capacity came back in its first choice.
#[tokio::test(start_paused = true)]
async fn a_rerun_after_a_type_fallback_sends_the_noted_token() {
    let sold: Vec<(&str, &str)> = ZONES.iter().map(|z| ("t3.micro", *z)).collect();
    let cloud = cloud(&sold);
    let memory = Arc::new(LaunchNotes::in_memory());
    let (m, o) = fleet(4, ", fallback_instance_types: [t3a.micro]");
    let (first, _) = run(&engine(&cloud, memory.clone()), &m, &o).await;
    assert!(first.complete());
    assert_eq!(
        memory.len(),
        4,
        "every launch off its first choice is noted"
    );

    cloud.sold_out.lock().unwrap().clear();
    let (rerun, _) = run(&engine(&cloud, memory.clone()), &m, &o).await;
    assert!(rerun.complete());
    let placed = placed(&cloud);
    assert!(
        placed
            .values()
            .all(|v| v.len() == 1 && v[0].0 == "t3a.micro"),
        "{placed:?}"
    );
    assert_eq!(rerun.fallbacks.len(), 4, "still on the fallback type");

    // Without the notes the first choice launches again: what the notes prevent.
    let blind = Arc::new(LaunchNotes::in_memory());
    let (again, _) = run(&engine(&cloud, blind), &m, &o).await;
    assert!(again.complete());
    assert!(placed_count(&cloud) > 4);
}

fn placed_count(cloud: &FakeCloud) -> usize {
    cloud
        .instances
        .lock()
        .unwrap()
        .iter()
        .filter(|i| i.state != InstanceState::Terminated)
        .count()
}
