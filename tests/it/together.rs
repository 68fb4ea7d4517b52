//! Front doors together. Fleets that fit alone but not together: a plan counts the
//! launches other fleets made on this machine that AWS does not show yet, and says so;
//! when a launch from elsewhere took the room, AWS's VcpuLimitExceeded sends a
//! workspace to "not launched for quota" with the quota as it stands then, never to
//! "failed". And the front doors on one fleet in a seeded order.

use serde_json::json;

use crate::emulator::{Emulator, stderr, stdout};

fn fleet(emu: &Emulator, name: &str, count: u32) -> String {
    let path = emu.write(
        &format!("{name}.yaml"),
        &format!(
            "name: {name}\nproject: p\ntemplate: t\ncount: {count}\nrate_limit: {{rate_per_minute: 600, burst_size: 20}}\ntemplates:\n  t: {{image: ami-785db401, instance_type: t3.micro}}\n"
        ),
    );
    path.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn fleets_that_fit_alone_but_not_together() {
    let emu = Emulator::start();
    emu.set_quota("ec2", "L-1216C47A", 40.0);
    let qa = fleet(&emu, "qa", 15);
    let qb = fleet(&emu, "qb", 15);
    let qc = fleet(&emu, "qc", 5);
    // qa's launches are not yet shown by DescribeInstances (EC2's lag).
    emu.post("/_prism/lag", json!({"seconds": 30}));
    let out = emu.prism(&["apply", "--yes", "--no-wait", &qa]);
    assert!(out.status.success(), "{}", stderr(&out));

    // On this machine, qb's plan counts them from the launch notes, and says so.
    let out = emu.prism(&["plan", "--format", "json", &qb]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON plan");
    let warning = plan["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["kind"] == "launches_in_flight")
        .unwrap_or_else(|| panic!("{plan:#}"));
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .starts_with("30 vCPUs being launched by fleet qa (15 instances"),
        "{warning}"
    );
    assert_eq!(
        plan["quota"][0]["over_quota"].as_array().unwrap().len(),
        10,
        "{plan:#}"
    );
    let out = emu.prism(&["apply", "--yes", "--no-wait", &qb]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!text.contains("✗ qb"), "nothing is called failed:\n{text}");
    assert!(
        text.contains("5 of 15 changes done") && text.contains("(10 skipped)"),
        "{text}"
    );

    // From another machine (no shared notes) the plan sees room that is not there;
    // AWS refuses, and the workspace is not launched for quota, never failed.
    let other = crate::emulator::prism_command(&["apply", "--yes", "--no-wait", &qc])
        .env("AWS_ENDPOINT_URL", &emu.url)
        .env("XDG_CACHE_HOME", emu.dir.path().join("other-machine"))
        .output()
        .unwrap();
    let text = format!("{}{}", stdout(&other), stderr(&other));
    assert_eq!(other.status.code(), Some(1), "{text}");
    assert!(!text.contains("✗ qc"), "nothing is called failed:\n{text}");
    assert!(
        text.contains("not launched for quota: AWS refused the vCPUs (VcpuLimitExceeded)")
            && text.contains("vCPUs in use now"),
        "{text}"
    );
    assert!(!text.contains("--desired-value N"), "{text}");
    // DescribeInstances still lags: count the launches AWS accepted.
    let accepted = emu
        .calls()
        .iter()
        .filter(|c| c.action == "RunInstances" && c.code.is_none())
        .count();
    assert_eq!(accepted, 20, "the quota's 40 vCPUs, 2 each");
}

/// The front doors on one fleet, in a seeded order: `apply` and `watch --once` of the
/// manifest that manages it, serve launches of the same file, `workspace stop|start`,
/// edits of its count, and a second manifest naming the same fleet through apply and
/// watch. After every step: no workspace has two live instances, the second manifest
/// made no changing call, and an instance is terminated only by a shrink of the owner's
/// count, for a workspace the manifest no longer has (no flapping).
/// `PRISM_FRONT_SEED=<seed>` replays one order.
#[tokio::test(flavor = "multi_thread")]
async fn front_doors_together_on_one_fleet() {
    use crate::emulator::{fleet_instances, mutating_calls, state, tag};
    let seed: u64 = std::env::var("PRISM_FRONT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("front doors: seed {seed} (PRISM_FRONT_SEED={seed} replays it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let emu = Emulator::start();
    let dir = emu.dir.path().join("manifests");
    std::fs::create_dir_all(&dir).unwrap();
    let text = |count: u32| {
        format!(
            "name: doors\nproject: p\ntemplate: t\ncount: {count}\nprune: true\nrate_limit: {{rate_per_minute: 600, burst_size: 20}}\ntemplates:\n  t: {{image: ami-785db401, instance_type: t3.micro}}\n"
        )
    };
    let a = dir.join("a.yaml");
    let a_str = a.to_str().unwrap().to_string();
    let mut count = 3u32;
    std::fs::write(&a, text(count)).unwrap();
    let b = emu.write("b.yaml", &text(5));
    let b_str = b.to_str().unwrap().to_string();
    let server = crate::serve::start(
        &emu,
        &emu.dir.path().join("state"),
        &["--manifests", dir.to_str().unwrap()],
    );
    let out = emu.prism(&["apply", "--yes", &a_str]);
    assert!(out.status.success(), "{}", stderr(&out));

    let mut story = vec![];
    for _ in 0..12 {
        emu.clear_calls();
        let before = count;
        let step = match rng.u8(0..8) {
            0 => {
                let out = emu.prism(&["apply", "--yes", &a_str]);
                assert!(out.status.success(), "{story:?}: {}", stderr(&out));
                "apply a".to_string()
            }
            1 => {
                let out = emu.prism(&["watch", "--once", &a_str]);
                assert!(out.status.code() != Some(2), "{story:?}: {}", stderr(&out));
                "watch a".to_string()
            }
            2 => {
                let body = json!({"manifest_path": "a.yaml", "allow_delete": true});
                let (st, _, v) =
                    server.call("POST", "/api/v1/workspaces/bulk-launch", &[], Some(&body));
                assert!(st == 202 || st == 409, "{story:?}: {st} {v}");
                if st == 202 {
                    let done = server.until_over(v["id"].as_str().unwrap());
                    assert_ne!(done["progress"]["failed"], 1, "{done}");
                }
                format!("serve a ({st})")
            }
            3 | 4 => {
                let verb = if rng.bool() { "stop" } else { "start" };
                let ws = format!("doors-{:02}", rng.u32(1..=count));
                let out = emu.prism(&["workspace", verb, "--yes", &ws]);
                assert!(out.status.code() != Some(2), "{story:?}: {}", stderr(&out));
                format!("{verb} {ws}")
            }
            5 => {
                count = if rng.bool() && count > 1 {
                    count - 1
                } else {
                    count + 1
                };
                std::fs::write(&a, text(count)).unwrap();
                let out = emu.prism(&["apply", "--yes", &a_str]);
                assert!(out.status.success(), "{story:?}: {}", stderr(&out));
                format!("a to {count}")
            }
            _ => {
                let cmd = if rng.bool() { "apply" } else { "watch" };
                let out = if cmd == "apply" {
                    emu.prism(&["apply", "--yes", &b_str])
                } else {
                    emu.prism(&["watch", "--once", &b_str])
                };
                assert_eq!(out.status.code(), Some(1), "{story:?}");
                assert!(stderr(&out).contains("`a.yaml`"), "{}", stderr(&out));
                assert_eq!(mutating_calls(&emu), Vec::<String>::new(), "{story:?}");
                format!("{cmd} b")
            }
        };
        story.push(step.clone());
        let all = fleet_instances(&emu, "doors").await;
        let mut live: std::collections::BTreeMap<String, usize> = Default::default();
        for i in &all {
            if !matches!(state(i).as_str(), "terminated" | "shutting-down") {
                *live
                    .entry(tag(i, "prism:workspace").unwrap_or("?").to_string())
                    .or_default() += 1;
            }
        }
        assert!(live.values().all(|n| *n == 1), "{story:?}: {live:?}");
        let terminations = mutating_calls(&emu)
            .iter()
            .filter(|c| *c == "TerminateInstances")
            .count();
        let shrank = step.starts_with("a to") && count < before;
        assert!(
            terminations == 0 || shrank,
            "{story:?}: {terminations} terminations in `{step}`"
        );
        assert!(terminations <= 1, "{story:?}");
    }
    eprintln!("front doors: {}", story.join(" → "));
}
