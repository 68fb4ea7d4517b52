//! Sold-out zones and fallback types against the emulator: a sold-out (type, zone) is
//! met by few launches and avoided by the rest, a type sold out everywhere falls back
//! to the template's next type, and neither ever launches a duplicate.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::emulator::{
    Emulator, fleet_instances, per_workspace, prism_command, stderr, stdout, tag,
};

const ZONES: [&str; 4] = ["us-west-2a", "us-west-2b", "us-west-2c", "us-west-2d"];

fn manifest(name: &str, count: usize, rate: &str, fallbacks: &str) -> String {
    format!(
        "name: {name}\nproject: p\ntemplate: t\ncount: {count}\nrate_limit: {rate}\nretry: {{initial_backoff: 100ms, max_backoff: 1s}}\ntemplates:\n  t:\n    image: ami-785db401\n    instance_type: t3.micro\n{fallbacks}"
    )
}

const FAST: &str = "{rate_per_minute: 600, burst_size: 10}";

fn sold_out(pairs: &[(&str, &str)]) -> Value {
    let rules: Vec<Value> = pairs
        .iter()
        .map(|(t, z)| json!({"instance_type": t, "zone": z}))
        .collect();
    json!({ "sold_out": rules })
}

fn events(out: &std::process::Output) -> Vec<Value> {
    stdout(out)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

/// (type, zone) of each live instance per workspace of `fleet`.
async fn placed(emu: &Emulator, fleet: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut placed: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for i in fleet_instances(emu, fleet).await {
        let ws = tag(&i, "prism:workspace").unwrap().to_string();
        placed.entry(ws).or_default().push((
            i.instance_type().unwrap().as_str().to_string(),
            i.placement()
                .and_then(|p| p.availability_zone())
                .unwrap()
                .to_string(),
        ));
    }
    placed
}

fn run_instances(emu: &Emulator) -> usize {
    emu.call_counts()
        .get("RunInstances")
        .copied()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_sold_out_zone_is_met_by_few_launches_and_avoided_by_the_rest() {
    let emu = Emulator::start();
    emu.post("/_prism/capacity", sold_out(&[("t3.micro", "us-west-2a")]));
    let path = emu.write("class.yaml", &manifest("ice", 30, FAST, ""));
    let out = emu.prism(&[
        "apply",
        "--yes",
        "--no-wait",
        "--format",
        "json",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let events = events(&out);
    let answers = run_instances(&emu) - 30;
    let burst = 10;
    assert!(
        (1..=burst + ZONES.len()).contains(&answers),
        "{answers} InsufficientInstanceCapacity answers for the whole fleet"
    );
    let marks = named(&events, "zone_unavailable");
    assert_eq!(marks.len(), 1, "{marks:?}");
    assert_eq!(marks[0]["instance_type"], "t3.micro");
    assert_eq!(marks[0]["availability_zone"], "us-west-2a");
    assert_eq!(marks[0]["code"], "InsufficientInstanceCapacity");
    assert_eq!(marks[0]["for_s"], 180.0);
    let summary = named(&events, "summary")[0];
    assert_eq!(summary["launched"], 30);

    let placed = placed(&emu, "ice").await;
    assert_eq!(placed.len(), 30);
    assert!(placed.values().all(|v| v.len() == 1), "{placed:?}");
    let per_zone: BTreeMap<&str, usize> = ZONES
        .iter()
        .map(|z| (*z, placed.values().filter(|v| v[0].1 == *z).count()))
        .collect();
    assert_eq!(per_zone["us-west-2a"], 0);
    // The fleet stays spread: the workspaces of the sold-out zone spread over the rest.
    assert_eq!(
        (
            per_zone["us-west-2b"],
            per_zone["us-west-2c"],
            per_zone["us-west-2d"]
        ),
        (11, 10, 9),
        "{per_zone:?}"
    );
    assert_eq!(
        emu.call_counts()["DescribeAvailabilityZones"],
        1,
        "zones are read once per run"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_zone_sold_out_for_the_type_launches_the_fallback_type() {
    let emu = Emulator::start();
    let pairs: Vec<(&str, &str)> = ZONES.iter().map(|z| ("t3.micro", *z)).collect();
    emu.post("/_prism/capacity", sold_out(&pairs));
    let ladder = "    fallback_instance_types: [t3a.micro, m5.large]\n";
    let path = emu.write("class.yaml", &manifest("lad", 6, FAST, ladder));

    let plan = emu.prism(&["plan", path.to_str().unwrap()]);
    let text = stdout(&plan);
    assert!(
        text.contains("Fallback instance types: t3a.micro, then m5.large"),
        "{text}"
    );

    let out = emu.prism(&["apply", "--yes", "--no-wait", path.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(
        text.contains("⚠ t3.micro is sold out in us-west-2a (InsufficientInstanceCapacity): launches avoid it for 3m 0s"),
        "{text}"
    );
    assert!(
        text.contains(": no zone has t3.micro capacity, trying t3a.micro…"),
        "{text}"
    );
    assert!(
        text.contains("Launched as t3a.micro instead of t3.micro: lad-01, lad-02, lad-03, lad-04, lad-05, lad-06 (t3.micro is sold out in every zone of us-west-2 (InsufficientInstanceCapacity))"),
        "{text}"
    );
    let placed = placed(&emu, "lad").await;
    assert_eq!(placed.len(), 6);
    assert!(
        placed
            .values()
            .all(|v| v.len() == 1 && v[0].0 == "t3a.micro"),
        "{placed:?}"
    );
    let answers = run_instances(&emu) - 6;
    assert!(
        answers <= 10 + ZONES.len(),
        "{answers} InsufficientInstanceCapacity answers"
    );

    // Applied again, the fleet is converged: the fallback type is not a change.
    let again = emu.prism(&["apply", "--yes", path.to_str().unwrap()]);
    assert!(stdout(&again).contains("No changes."), "{}", stdout(&again));
}

/// A rerun right after a type fallback, while DescribeInstances still lags and the first
/// type has capacity again, sends the token of the type and zone each workspace
/// landed on: no second instance.
#[tokio::test(flavor = "multi_thread")]
async fn a_rerun_right_after_a_type_fallback_launches_no_duplicate() {
    let emu = Emulator::start();
    let pairs: Vec<(&str, &str)> = ZONES.iter().map(|z| ("t3.micro", *z)).collect();
    emu.post("/_prism/capacity", sold_out(&pairs));
    emu.post("/_prism/lag", json!({"seconds": 10}));
    let ladder = "    fallback_instance_types: [t3a.micro]\n";
    let path = emu.write("class.yaml", &manifest("back", 4, FAST, ladder));
    let out = emu.prism(&["apply", "--yes", "--no-wait", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    emu.post("/_prism/capacity", json!({"sold_out": []}));
    let rerun = emu.prism(&["apply", "--yes", "--no-wait", path.to_str().unwrap()]);
    let text = stdout(&rerun);
    assert_eq!(rerun.status.code(), Some(0), "{text}{}", stderr(&rerun));
    assert!(
        text.contains("Launched as t3a.micro instead of t3.micro: back-01, back-02, back-03, back-04 (launched by an earlier run"),
        "{text}"
    );

    emu.reveal();
    let placed = placed(&emu, "back").await;
    assert_eq!(placed.len(), 4);
    assert!(
        placed
            .values()
            .all(|v| v.len() == 1 && v[0].0 == "t3a.micro"),
        "one instance each, of the fallback type: {placed:?}"
    );
}

/// The settings file sets how long a sold-out zone is avoided; `0s` never remembers,
/// so each launch that prefers the zone meets the answer.
#[tokio::test(flavor = "multi_thread")]
async fn the_settings_file_sets_how_long_a_sold_out_zone_is_avoided() {
    let one_at_a_time = "{rate_per_minute: 300, burst_size: 1}";
    let mut answers = vec![];
    for ttl in ["3m", "0s"] {
        let emu = Emulator::start();
        emu.post("/_prism/capacity", sold_out(&[("t3.micro", "us-west-2a")]));
        let settings = emu.write(
            "config.yaml",
            &format!("capacity:\n  sold_out_ttl: {ttl}\n"),
        );
        let path = emu.write("class.yaml", &manifest("ttl", 9, one_at_a_time, ""));
        let out = prism_command(&[
            "apply",
            "--yes",
            "--no-wait",
            "--format",
            "json",
            path.to_str().unwrap(),
        ])
        .env("AWS_ENDPOINT_URL", &emu.url)
        .env("PRISM_CONFIG", &settings)
        .env("XDG_CACHE_HOME", settings.parent().unwrap().join("cache"))
        .output()
        .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let events = events(&out);
        assert_eq!(named(&events, "summary")[0]["launched"], 9);
        answers.push(run_instances(&emu) - 9);
        if ttl == "0s" {
            assert!(!named(&events, "zone_available").is_empty());
        }
        assert_eq!(per_workspace(&emu, "ttl").await.len(), 9);
    }
    assert_eq!(
        answers,
        [1, 3],
        "ttl-01, -05 and -09 prefer the sold-out zone: remembered, only the first meets it"
    );
}

/// The emulator scopes ClientTokens per (region, zone), as AWS does: the same token in
/// another zone is another launch, not IdempotentParameterMismatch; other parameters
/// in the same zone are. Its InsufficientInstanceCapacity names the zone asked for and
/// those that have capacity.
#[tokio::test(flavor = "multi_thread")]
async fn the_emulator_scopes_tokens_per_zone_and_names_zones_when_sold_out() {
    let emu = Emulator::start();
    let ec2 = emu.ec2();
    let run = |zone: &'static str, instance_type: &'static str| {
        ec2.run_instances()
            .image_id("ami-785db401")
            .instance_type(aws_sdk_ec2::types::InstanceType::from(instance_type))
            .min_count(1)
            .max_count(1)
            .client_token("same-token")
            .placement(
                aws_sdk_ec2::types::Placement::builder()
                    .availability_zone(zone)
                    .build(),
            )
            .send()
    };
    let id = |o: &aws_sdk_ec2::operation::run_instances::RunInstancesOutput| {
        o.instances()[0].instance_id().unwrap().to_string()
    };
    let a = id(&run("us-west-2a", "t3.micro").await.unwrap());
    let again = id(&run("us-west-2a", "t3.micro").await.unwrap());
    let b = id(&run("us-west-2b", "t3.micro").await.unwrap());
    assert_eq!(
        a, again,
        "the same token in the same zone: the same instance"
    );
    assert_ne!(a, b, "the same token in another zone: another instance");
    let mismatch = run("us-west-2a", "t3.small").await.unwrap_err();
    assert_eq!(
        aws_sdk_ec2::error::ProvideErrorMetadata::code(&mismatch),
        Some("IdempotentParameterMismatch")
    );

    emu.post(
        "/_prism/capacity",
        sold_out(&[("t3.micro", "us-west-2c"), ("t3.micro", "us-west-2d")]),
    );
    let ice = ec2
        .run_instances()
        .image_id("ami-785db401")
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .placement(
            aws_sdk_ec2::types::Placement::builder()
                .availability_zone("us-west-2c")
                .build(),
        )
        .send()
        .await
        .unwrap_err();
    let meta = aws_sdk_ec2::error::ProvideErrorMetadata::meta(&ice);
    assert_eq!(meta.code(), Some("InsufficientInstanceCapacity"));
    assert_eq!(
        meta.message(),
        Some(
            "We currently do not have sufficient t3.micro capacity in the Availability Zone you requested (us-west-2c). Our system will be working on provisioning additional capacity. You can currently get t3.micro capacity by not specifying an Availability Zone in your request or choosing us-west-2a, us-west-2b."
        )
    );
}

/// The same rerun from another user's cache folder (as a `prism watch` service runs):
/// the launch notes are kept in the machine's folder, so it too sends the tokens the
/// first run's launches used, and no workspace gets a second instance.
#[tokio::test(flavor = "multi_thread")]
async fn a_rerun_by_another_user_on_the_machine_reads_the_same_launch_notes() {
    let emu = Emulator::start();
    let shared = emu.dir.path().join("var-lib-prism");
    std::fs::create_dir_all(&shared).unwrap();
    let pairs: Vec<(&str, &str)> = ZONES.iter().map(|z| ("t3.micro", *z)).collect();
    emu.post("/_prism/capacity", sold_out(&pairs));
    emu.post("/_prism/lag", json!({"seconds": 10}));
    let ladder = "    fallback_instance_types: [t3a.micro]\n";
    let path = emu.write("class.yaml", &manifest("users", 4, FAST, ladder));
    let path = path.to_str().unwrap();
    let run_as = |cache: &str| {
        prism_command(&["apply", "--yes", "--no-wait", path])
            .env("AWS_ENDPOINT_URL", &emu.url)
            .env("XDG_CACHE_HOME", emu.dir.path().join(cache))
            .env("PRISM_SHARED_DIR", &shared)
            .output()
            .expect("prism runs")
    };
    let out = run_as("professor");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let notes: Vec<_> = std::fs::read_dir(shared.join("launches"))
        .expect("the notes are in the machine's folder")
        .collect();
    assert!(!notes.is_empty());
    assert!(!emu.dir.path().join("professor/prism/launches").exists());

    emu.post("/_prism/capacity", json!({"sold_out": []}));
    let out = run_as("service");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    emu.reveal();
    let placed = placed(&emu, "users").await;
    assert_eq!(placed.len(), 4);
    assert!(
        placed.values().all(|v| v.len() == 1),
        "one instance each: {placed:?}"
    );
}
