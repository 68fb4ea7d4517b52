//! Timetables and rosters through the real binary: `plan --at` a class hour and a
//! night, roster problems located in the CSV, and `watch` starting a stopped fleet when
//! its window opens and stopping it when it ends.

use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::emulator::{Emulator, fleet_instances, prism_command, state, stderr, stdout};
use crate::eventually::eventually;

const ROSTER: &str = "Student,ID,SIS User ID,Email,Section\n\"Lee, Ana\",1,S1,ana.lee@state.edu,001\n\"García, María\",2,S2,maria.garcia@state.edu,001\n\"García, María José\",3,S3,Maria.Garcia@exchange.state.edu,002\n\"Okafor, Chidi\",4,S4,chidi.okafor@state.edu,002\n";

const CLASS: &str = "schedule:\n  timezone: America/Chicago\n  running:\n    - {days: [mon, wed], from: \"09:00\", to: \"12:15\"}\n  otherwise: stopped\n";

fn course(how: &str) -> String {
    format!(
        "name: cs101\nproject: p\ntemplate: t\nmembers_file: roster.csv\n{how}\nrate_limit: {{rate_per_minute: 600, burst_size: 10}}\ntemplates:\n  t: {{image: ami-785db401, instance_type: t3.micro}}\n"
    )
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)))
}

#[test]
fn plan_at_a_class_hour_and_at_night_starts_and_stops_with_the_window_named() {
    let emu = Emulator::start();
    emu.write("roster.csv", ROSTER);
    // Two workspaces running, two stopped.
    // The course's manifest as it was before its timetable (the same file).
    let now = emu.write("course.yaml", &course("state: running"));
    let out = emu.prism(&["apply", now.to_str().unwrap(), "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = emu.prism(&[
        "workspace",
        "stop",
        "cs101-ana-lee",
        "cs101-chidi-okafor",
        "--yes",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    let path = emu.write("course.yaml", &course(CLASS));
    let path = path.to_str().unwrap();
    let out = emu.prism(&["plan", path, "--at", "2026-12-02T09:05"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    for line in ["cs101-ana-lee", "cs101-chidi-okafor"] {
        assert!(
            text.lines().any(|l| l.contains(line)
                && l.contains("start: class hours Wed 09:00–12:15 America/Chicago")),
            "{line} starts:\n{text}"
        );
    }
    assert!(text.contains("Schedule: at Wed 2026-12-02 09:05 CST: running, in class hours Wed 09:00–12:15 America/Chicago"), "{text}");
    assert!(
        text.contains("Next change: Wed 2026-12-02 12:15 CST: stop 4 workspaces"),
        "{text}"
    );
    assert!(text.contains("Compute cost per week: $0.27 on the schedule (6.5 h × 4 workspaces × $0.0104/h); $6.99 always on."), "{text}");
    assert!(
        text.contains("Plan: 0 to create, 2 to start, 0 to stop"),
        "{text}"
    );

    let out = emu.prism(&[
        "plan",
        path,
        "--at",
        "2026-12-03T02:00Z",
        "--format",
        "json",
    ]);
    let plan = json(&out);
    let actions = plan["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 2, "{plan:#}");
    for a in actions {
        assert_eq!(a["action"], "stop");
        assert_eq!(
            a["reason"],
            "outside the schedule; class hours Wed 09:00–12:15 America/Chicago ended Wed 12:15 CST"
        );
    }
    assert_eq!(plan["schedule"]["at"], "2026-12-02T20:00:00-06:00");
    assert_eq!(plan["schedule"]["state"], "stopped");
    assert_eq!(
        plan["schedule"]["next_change"]["at"],
        "2026-12-07T09:00:00-06:00"
    );
    assert_eq!(plan["cost"]["per_week_usd"], 0.27);
    assert_eq!(plan["cost"]["always_on_per_week_usd"], 6.99);

    // --at previews: it cannot be saved for apply.
    let out = emu.prism(&["plan", path, "--at", "2026-12-02T09:05", "--out", "p.json"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn a_roster_gives_stable_names_and_located_errors_without_calling_aws() {
    let emu = Emulator::start();
    emu.write("roster.csv", ROSTER);
    let path = emu.write("course.yaml", &course("state: stopped"));
    let out = emu.prism(&["plan", path.to_str().unwrap(), "--format", "json"]);
    let plan = json(&out);
    let mut names: Vec<String> = plan["new_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("{} {} {}", m["workspace"], m["value"], m["row"]).replace('"', ""))
        .collect();
    names.sort();
    let dir = emu.dir.path().display().to_string();
    assert_eq!(
        names,
        [
            format!("cs101-ana-lee ana.lee@state.edu {dir}/roster.csv:2"),
            format!("cs101-chidi-okafor chidi.okafor@state.edu {dir}/roster.csv:5"),
            format!("cs101-maria-garcia-8d71 Maria.Garcia@exchange.state.edu {dir}/roster.csv:4"),
            format!("cs101-maria-garcia-d8e8 maria.garcia@state.edu {dir}/roster.csv:3"),
        ]
    );
    // The same rows in another order: the same names.
    let mut lines: Vec<&str> = ROSTER.lines().collect();
    lines[1..].reverse();
    emu.write("roster.csv", &(lines.join("\n") + "\n"));
    let plan = json(&emu.prism(&["plan", path.to_str().unwrap(), "--format", "json"]));
    let mut again: Vec<String> = plan["new_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["workspace"].as_str().unwrap().to_string())
        .collect();
    again.sort();
    assert_eq!(
        again,
        [
            "cs101-ana-lee",
            "cs101-chidi-okafor",
            "cs101-maria-garcia-8d71",
            "cs101-maria-garcia-d8e8"
        ]
    );

    // A broken row and an empty value: located, exit 1, nothing sent to AWS.
    emu.write(
        "roster.csv",
        "Student,ID,SIS User ID,Email,Section\n\"Lee, Ana\",1,S1,ana.lee@state.edu,001\nOkafor, Chidi,4,S4,chidi.okafor@state.edu,002\n\"Kim, Jo\",5,S5,,003\n",
    );
    emu.clear_calls();
    let out = emu.prism(&["plan", path.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("roster.csv:3:1: error: this row has 6 fields, the header has 5"),
        "{err}"
    );
    assert!(
        err.contains("roster.csv:4:16: error: empty `Email` value"),
        "{err}"
    );
    assert!(err.contains("nothing was sent to AWS"), "{err}");
    assert!(
        emu.calls().is_empty(),
        "no AWS call: {:?}",
        emu.calls().len()
    );
}

/// The states of the live instances of fleet `tt`, sorted.
async fn states(emu: &Emulator) -> Vec<String> {
    let mut v: Vec<String> = fleet_instances(emu, "tt")
        .await
        .iter()
        .map(state)
        .filter(|s| !s.is_empty() && s != "terminated")
        .collect();
    v.sort();
    v
}

/// Waits until every instance is `state`, at most until `deadline`; returns when.
async fn until_all(emu: &Emulator, state: &str, n: usize, deadline: SystemTime) -> SystemTime {
    loop {
        let s = states(emu).await;
        if s.len() == n && s.iter().all(|x| x == state) {
            return SystemTime::now();
        }
        assert!(
            SystemTime::now() < deadline,
            "not all {state} by the deadline: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_starts_a_stopped_fleet_when_its_window_opens_and_stops_it_at_the_end() {
    let emu = Emulator::start();
    // A window of one minute that opens at the first whole minute at least a minute
    // from now (UTC), on prism's clock. prism runs `ahead` of this test's clock
    // (faketime), so that the window opens 8 s after it starts rather than in 1–2
    // minutes; everything below is said on this test's clock.
    let now = jiff::Timestamp::now();
    let open = now
        .checked_add(jiff::SignedDuration::from_secs(
            60 + 59 - now.as_second() % 60,
        ))
        .unwrap()
        .round(jiff::Unit::Minute)
        .unwrap();
    let ahead = open.duration_since(now) - jiff::SignedDuration::from_secs(8);
    let close = open
        .checked_add(jiff::SignedDuration::from_secs(60))
        .unwrap();
    let (o, c) = (
        open.to_zoned(jiff::tz::TimeZone::UTC),
        close.to_zoned(jiff::tz::TimeZone::UTC),
    );
    let day = o.strftime("%a").to_string().to_lowercase();
    let to = if c.date() == o.date() {
        c.strftime("%H:%M").to_string()
    } else {
        "24:00".into()
    };
    let manifest = format!(
        "name: tt\nproject: p\ntemplate: t\ncount: 3\nschedule:\n  timezone: UTC\n  running: [{{days: [{day}], from: \"{}\", to: \"{to}\"}}]\nrate_limit: {{rate_per_minute: 600, burst_size: 10}}\ntemplates:\n  t: {{image: ami-785db401, instance_type: t3.micro}}\n",
        o.strftime("%H:%M")
    );
    let path = emu.write("tt.yaml", &manifest);
    let out = ahead_by(ahead, &["apply", path.to_str().unwrap(), "--yes"])
        .env("AWS_ENDPOINT_URL", &emu.url)
        .env("XDG_CACHE_HOME", emu.dir.path().join("cache"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        states(&emu).await,
        ["stopped"; 3],
        "launched, then stopped before the window"
    );

    let log = emu.dir.path().join("watch.log");
    // In a process group of its own: faketime runs prism as its child, and both stop.
    let mut child = ahead_by(ahead, &["watch", "--resync", "1h", path.to_str().unwrap()])
        .env("AWS_ENDPOINT_URL", &emu.url)
        .env("XDG_CACHE_HOME", emu.dir.path().join("cache"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    // When prism's clock reads `at`, this test's reads `at - ahead`.
    let here = |at: jiff::Timestamp| SystemTime::from(at.checked_sub(ahead).unwrap());
    let started = Instant::now();
    let running_at = until_all(&emu, "running", 3, here(open) + Duration::from_secs(5)).await;
    let late = running_at.duration_since(here(open)).unwrap_or_default();
    let stopped_at = until_all(&emu, "stopped", 3, here(close) + Duration::from_secs(5)).await;
    let stop_late = stopped_at.duration_since(here(close)).unwrap_or_default();
    std::process::Command::new("kill")
        .args(["-TERM", "--", &format!("-{}", child.id())])
        .status()
        .unwrap();
    child.wait().unwrap();
    // prism itself (faketime's child) is gone too, not left watching.
    let group = child.id().to_string();
    eventually("prism watch to stop", Duration::from_secs(20), || {
        let left: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            // The process group is the fifth field, after the name in brackets.
            .filter(|stat| {
                stat.rsplit_once(") ")
                    .and_then(|(_, rest)| rest.split(' ').nth(2))
                    == Some(group.as_str())
            })
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(left.join("\n"))
        }
    });
    let text = std::fs::read_to_string(&log).unwrap();
    eprintln!(
        "window {open}–{close} on prism's clock ({} s ahead): all running {:.1} s after it opened, all stopped {:.1} s after it ended ({:.0} s in all)\n{text}",
        ahead.as_secs(),
        late.as_secs_f64(),
        stop_late.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(text.contains("opens at"), "{text}");
    assert!(text.contains("bringing the fleet to stopped"), "{text}");
    assert!(
        !text.contains("pass 4"),
        "one pass at the start and one per boundary:\n{text}"
    );
}

/// `prism args` with its clock `ahead` of this process's (itself perhaps moved by
/// faketime): started by faketime at this process's now + `ahead`, then running on.
fn ahead_by(ahead: jiff::SignedDuration, args: &[&str]) -> std::process::Command {
    let start = jiff::Timestamp::now()
        .checked_add(ahead)
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("@%Y-%m-%d %H:%M:%S")
        .to_string();
    let plain = prism_command(args);
    let mut cmd = std::process::Command::new("faketime");
    cmd.arg("-f")
        .arg(start)
        .arg(plain.get_program())
        .args(plain.get_args())
        .env("TZ", "UTC");
    for (k, v) in plain.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_follows_an_edit_of_the_roster() {
    let emu = Emulator::start();
    let roster = "login,email\nana,ana@x.edu\nbo,bo@x.edu\n";
    let roster_path = emu.write("roster.csv", roster);
    let path = emu.write("course.yaml", &course("state: stopped"));
    let log = emu.dir.path().join("watch.log");
    let mut child = prism_command(&["watch", "--resync", "1h", path.to_str().unwrap()])
        .env("AWS_ENDPOINT_URL", &emu.url)
        .env("XDG_CACHE_HOME", emu.dir.path().join("cache"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let until = |n: usize| {
        let emu = &emu;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let live = crate::emulator::per_workspace(emu, "cs101").await;
                if live.len() == n {
                    return live;
                }
                assert!(Instant::now() < deadline, "{live:?}, not {n} workspaces");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    until(2).await;
    std::fs::write(&roster_path, format!("{roster}cai,cai@x.edu\n")).unwrap();
    let live = until(3).await;
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
    assert!(
        live.contains_key("cs101-cai"),
        "{live:?}\n{}",
        std::fs::read_to_string(&log).unwrap()
    );
}
