//! A timetabled fleet applied outside its windows, through the real binary: prism's
//! own launches and starts are never taken for starts by hand, whether the apply was
//! interrupted or did not wait; a start from the console is; and an uninterrupted
//! launch stops each instance as it runs.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::emulator::{
    Emulator, fleet_instances, interrupt_after, prism_command, state, stderr, stdout, tag,
};

/// A manifest of `count` workspaces of fleet `name`, kept `how` (a `schedule:` or a
/// `state:`), launched at `rate`.
fn manifest(name: &str, count: usize, rate: &str, how: &str) -> String {
    format!(
        "name: {name}\nproject: p\ntemplate: t\ncount: {count}\n{how}\nrate_limit: {rate}\ntemplates:\n  t: {{image: ami-785db401, instance_type: t3.micro}}\n"
    )
}

/// A schedule whose only window, an hour, is three days from now (UTC): planned now,
/// the fleet is outside its windows, and its off period began at that window's end
/// four days ago.
pub(crate) fn off_hours_schedule() -> String {
    let day = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(72))
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("%a")
        .to_string()
        .to_lowercase();
    format!(
        "schedule:\n  timezone: UTC\n  running: [{{days: [{day}], from: \"00:00\", to: \"01:00\"}}]"
    )
}

/// A manifest of `count` workspaces kept on [`off_hours_schedule`].
fn out_of_hours(name: &str, count: usize, rate: &str) -> String {
    manifest(name, count, rate, &off_hours_schedule())
}

pub(crate) fn plan_json(emu: &Emulator, path: &str) -> Value {
    let out = emu.prism(&["plan", path, "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)))
}

/// The workspaces of `plan`'s actions of `kind`, sorted.
pub(crate) fn acted(plan: &Value, kind: &str) -> Vec<String> {
    let mut v: Vec<String> = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == kind)
        .map(|a| a["workspace"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

pub(crate) fn left_alone(plan: &Value) -> Vec<String> {
    plan["schedule"]["left_alone"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|x| x["workspace"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The workspaces of `fleet` whose instance is `wanted`, sorted.
pub(crate) async fn in_state(emu: &Emulator, fleet: &str, wanted: &str) -> Vec<String> {
    let mut v: Vec<String> = fleet_instances(emu, fleet)
        .await
        .iter()
        .filter(|i| state(i) == wanted)
        .map(|i| tag(i, "prism:workspace").unwrap_or("?").to_string())
        .collect();
    v.sort();
    v
}

/// Waits until no instance of `fleet` is pending.
pub(crate) async fn booted(emu: &Emulator, fleet: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !in_state(emu, fleet, "pending").await.is_empty() {
        assert!(Instant::now() < deadline, "instances still pending");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_or_unwaited_apply_out_of_hours_is_stopped_by_the_next_plan() {
    let emu = Emulator::start();
    // Instances take two seconds to boot: Ctrl-C lands while they are pending.
    emu.post("/_prism/boot", json!({"seconds": 2}));
    let path = emu.write(
        "oh.yaml",
        &out_of_hours("oh", 4, "{rate_per_minute: 20, burst_size: 1}"),
    );
    let path = path.to_str().unwrap();
    let (code, rest) = interrupt_after(&emu, &["apply", "--yes", path], "launched (i-");
    assert_eq!(code, Some(1), "{rest}");
    booted(&emu, "oh").await;
    let running = in_state(&emu, "oh", "running").await;
    assert!(
        !running.is_empty() && running.len() < 4,
        "the interruption came after the first launches: {running:?}"
    );
    let plan = plan_json(&emu, path);
    assert_eq!(acted(&plan, "stop"), running, "{plan:#}");
    assert!(left_alone(&plan).is_empty(), "{plan:#}");

    // --no-wait launches the rest and sends the stops, and returns at once.
    let out = emu.prism(&["apply", "--yes", "--no-wait", path]);
    assert!(out.status.success(), "{}", stderr(&out));
    booted(&emu, "oh").await;
    let running = in_state(&emu, "oh", "running").await;
    assert_eq!(
        running.len(),
        4 - in_state(&emu, "oh", "stopped").await.len()
    );
    assert!(!running.is_empty(), "the launches of --no-wait run");
    let plan = plan_json(&emu, path);
    assert_eq!(acted(&plan, "stop"), running, "{plan:#}");
    assert!(left_alone(&plan).is_empty(), "{plan:#}");

    let out = emu.prism(&["apply", "--yes", path]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(in_state(&emu, "oh", "stopped").await.len(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_start_from_the_console_is_left_running_and_prisms_own_starts_are_not() {
    let emu = Emulator::start();
    const RATE: &str = "{rate_per_minute: 600, burst_size: 10}";
    let path = emu.write("hand.yaml", &out_of_hours("hand", 3, RATE));
    let path = path.to_str().unwrap();
    let out = emu.prism(&["apply", "--yes", path]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(in_state(&emu, "hand", "stopped").await.len(), 3);
    // The launches were ten minutes ago.
    emu.post("/_prism/age", json!({"seconds": 600}));

    // A student starts hand-02 from the console, another hand-03 with prism's own
    // `workspace start`: both are starts by hand.
    let id = |ws: &'static str| {
        let emu = &emu;
        async move {
            fleet_instances(emu, "hand")
                .await
                .iter()
                .find(|i| tag(i, "prism:workspace") == Some(ws))
                .and_then(|i| i.instance_id())
                .unwrap()
                .to_string()
        }
    };
    emu.ec2()
        .start_instances()
        .instance_ids(id("hand-02").await)
        .send()
        .await
        .expect("StartInstances");
    let out = emu.prism(&["workspace", "start", "hand-03", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let plan = plan_json(&emu, path);
    assert!(acted(&plan, "stop").is_empty(), "{plan:#}");
    assert_eq!(left_alone(&plan), ["hand-02", "hand-03"], "{plan:#}");
    let reason = plan["schedule"]["left_alone"][0]["reason"]
        .as_str()
        .unwrap();
    assert!(reason.starts_with("started by hand "), "{reason}");
    let next_window = plan["schedule"]["next_change"]["shown"].as_str().unwrap();

    // workspace list says what the plan says.
    let out = emu.prism(&["workspace", "list", "--manifest", path, "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let next: Vec<(String, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["next_change"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut sorted = next.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            ("hand-01".into(), format!("running at {next_window}")),
            (
                "hand-02".into(),
                format!("stopped at {}", next_window.replace("00:00", "01:00"))
            ),
            (
                "hand-03".into(),
                format!("stopped at {}", next_window.replace("00:00", "01:00"))
            ),
        ]
    );

    // prism's own start, of a fleet run always on for a day, is recorded on the
    // instance; planned on the timetable again, it is stopped, not left running.
    // The same manifest (its file name, in another folder) without its timetable.
    std::fs::create_dir_all(emu.dir.path().join("always")).unwrap();
    let always = emu.write(
        "always/hand.yaml",
        &manifest("hand", 3, RATE, "state: running"),
    );
    let out = emu.prism(&["apply", "--yes", always.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let recorded: Vec<Option<String>> = {
        let mut all = fleet_instances(&emu, "hand").await;
        all.sort_by_key(|i| tag(i, "prism:workspace").map(str::to_string));
        all.iter()
            .map(|i| tag(i, "prism:started").map(str::to_string))
            .collect()
    };
    assert!(
        recorded[0].is_some(),
        "prism's start is recorded: {recorded:?}"
    );
    assert_eq!(
        recorded[1..],
        [None, None],
        "starts by hand are not: {recorded:?}"
    );
    let plan = plan_json(&emu, path);
    assert_eq!(acted(&plan, "stop"), ["hand-01"], "{plan:#}");
    assert_eq!(left_alone(&plan), ["hand-02", "hand-03"], "{plan:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_out_of_hours_launch_stops_each_instance_as_it_runs() {
    let emu = Emulator::start();
    let path = emu.write(
        "many.yaml",
        &out_of_hours("many", 20, "{rate_per_minute: 120, burst_size: 1}"),
    );
    let mut child = prism_command(&["apply", "--yes", path.to_str().unwrap()])
        .env("AWS_ENDPOINT_URL", &emu.url)
        .env("XDG_CACHE_HOME", emu.dir.path().join("cache"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let (mut most, mut looks) = (0, 0);
    while child.try_wait().unwrap().is_none() {
        most = most.max(in_state(&emu, "many", "running").await.len());
        looks += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = child.wait().unwrap();
    eprintln!(
        "20 launched at 120/min outside the windows in {:.1} s: at most {most} running at once ({looks} looks)",
        started.elapsed().as_secs_f64()
    );
    assert!(status.success());
    assert!(looks > 10, "the run was watched: {looks} looks");
    assert!(most <= 10, "at most 10 running at once, saw {most}");
    assert_eq!(in_state(&emu, "many", "stopped").await.len(), 20);
}
