//! One manifest manages each fleet, through the real binary: a second manifest naming
//! the same fleet changes nothing from plan, apply, watch, destroy or serve's API, and
//! says which manifest manages it; `prism fleet adopt` hands the fleet over; a fleet
//! from before owners is adopted by the first apply without any other change; a
//! workspace made by hand still joins any fleet. Two watches on two manifests of one
//! fleet never terminate anything.

use std::time::Duration;

use crate::emulator::{
    Emulator, fleet_instances, launch, mutating_calls, prism_command, state, stderr, tag,
};
use crate::eventually::{eventually, file_contains};
use crate::watch::{spawn_watch, until_passes};

fn manifest(emu: &Emulator, file: &str, count: u32) -> String {
    let path = emu.write(
        file,
        &format!(
            "name: mix-two\nproject: p\ntemplate: t\ncount: {count}\nprune: true\nrate_limit: {{rate_per_minute: 600, burst_size: 10}}\ntemplates:\n  t: {{image: ami-785db401, instance_type: t3.micro}}\n"
        ),
    );
    path.to_str().unwrap().to_string()
}

/// Live instances of mix-two: (workspace, instance id, owner).
async fn live(emu: &Emulator) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = fleet_instances(emu, "mix-two")
        .await
        .iter()
        .filter(|i| !matches!(state(i).as_str(), "terminated" | "shutting-down"))
        .map(|i| {
            (
                tag(i, "prism:workspace").unwrap_or("?").to_string(),
                i.instance_id().unwrap_or_default().to_string(),
                tag(i, "prism:owner").unwrap_or("-").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_second_manifest_on_a_fleet_changes_nothing_until_it_adopts_the_fleet() {
    let emu = Emulator::start();
    let a = manifest(&emu, "a.yaml", 2);
    let b = manifest(&emu, "b.yaml", 3);
    let out = emu.prism(&["apply", "--yes", &a]);
    assert!(out.status.success(), "{}", stderr(&out));
    let first = live(&emu).await;
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|(_, _, o)| o == "a.yaml"), "{first:?}");

    emu.clear_calls();
    for args in [
        vec!["plan", b.as_str()],
        vec!["apply", "--yes", b.as_str()],
        vec!["watch", "--once", b.as_str()],
        vec!["destroy", "--yes", b.as_str()],
    ] {
        let out = emu.prism(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("managed by another manifest, `a.yaml`")
                && err.contains("prism fleet adopt"),
            "{args:?} names the owner and the way to hand over: {err}"
        );
    }
    assert_eq!(mutating_calls(&emu), Vec::<String>::new());
    assert_eq!(live(&emu).await, first);

    // A guest made by hand joins the fleet whoever manages it, and carries no owner.
    let out = emu.prism(&[
        "workspace",
        "create",
        "--template",
        "t",
        "-f",
        &b,
        "--fleet",
        "mix-two",
        "--yes",
        "guest1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Handed over: b launches its third workspace, keeps the others, deletes nothing.
    let out = emu.prism(&["fleet", "adopt", "--yes", &b]);
    assert!(out.status.success(), "{}", stderr(&out));
    emu.clear_calls();
    let out = emu.prism(&["apply", "--yes", &b]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !mutating_calls(&emu).contains(&"TerminateInstances".to_string()),
        "{:?}",
        mutating_calls(&emu)
    );
    let now = live(&emu).await;
    assert_eq!(now.len(), 4, "{now:?}");
    for (w, id, _) in &first {
        assert!(
            now.iter()
                .any(|(w2, id2, o)| w2 == w && id2 == id && o == "b.yaml"),
            "{now:?}"
        );
    }
    assert!(
        now.contains(&(
            "guest1".to_string(),
            now.iter()
                .find(|(w, _, _)| w == "guest1")
                .unwrap()
                .1
                .clone(),
            "-".to_string()
        ))
    );
    // Now a is the other manifest.
    let out = emu.prism(&["apply", "--yes", &a]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("`b.yaml`"), "{}", stderr(&out));
}

#[tokio::test]
async fn a_fleet_from_before_owners_is_adopted_by_the_first_apply_unchanged() {
    let emu = Emulator::start();
    let ec2 = emu.ec2();
    launch(&ec2, Some("mix-two"), Some("mix-two-01"), "t3.micro", 1).await;
    launch(&ec2, Some("mix-two"), Some("mix-two-02"), "t3.micro", 1).await;
    let before = live(&emu).await;
    assert!(before.iter().all(|(_, _, o)| o == "-"));
    let a = manifest(&emu, "a.yaml", 2);
    emu.clear_calls();
    let out = emu.prism(&["apply", "--yes", &a]);
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = mutating_calls(&emu);
    assert!(
        calls.iter().all(|c| c == "CreateTags"),
        "only tags: {calls:?}"
    );
    let after = live(&emu).await;
    assert_eq!(after.len(), 2);
    for ((w, id, _), (w2, id2, o)) in before.iter().zip(&after) {
        assert_eq!((w, id), (w2, id2));
        assert_eq!(o, "a.yaml");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_watches_on_two_manifests_of_one_fleet_never_terminate() {
    let emu = Emulator::start();
    let a = manifest(&emu, "a.yaml", 2);
    let b = manifest(&emu, "b.yaml", 3);
    let out = emu.prism(&["apply", "--yes", &a]);
    assert!(out.status.success(), "{}", stderr(&out));
    emu.clear_calls();
    let (log_a, log_b) = (emu.dir.path().join("a.log"), emu.dir.path().join("b.log"));
    let wa = spawn_watch(&emu, std::path::Path::new(&a), &log_a);
    let wb = spawn_watch(&emu, std::path::Path::new(&b), &log_b);
    // Until b has said who manages the fleet, then a few more passes of both: four more
    // reads of the fleet (each watch reads it once a pass, every second).
    eventually("b to name the owner", Duration::from_secs(30), || {
        file_contains(&log_b, &["managed by another manifest"])
    });
    until_passes(&emu, emu.fleet_reads(), 4).await;
    drop((wa, wb));
    let calls = mutating_calls(&emu);
    assert!(
        !calls
            .iter()
            .any(|c| c == "TerminateInstances" || c == "RunInstances"),
        "{calls:?}"
    );
    assert_eq!(live(&emu).await.len(), 2);
    let b_log = std::fs::read_to_string(&log_b).unwrap();
    assert!(
        b_log.contains("managed by another manifest, `a.yaml`"),
        "{b_log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_asks_before_deleting_refuses_another_owners_fleet_and_runs_alone() {
    use crate::serve::{manifest as serve_manifest, start};
    const FAST: &str = "{rate_per_minute: 600, burst_size: 10}";
    const BULK: &str = "/api/v1/workspaces/bulk-launch";
    let emu = Emulator::start();
    let state = emu.dir.path().join("state");
    let s = start(&emu, &state, &[]);

    // A second server on the state dir, or a token rotation, is refused.
    let token = std::fs::read_to_string(state.join("token")).unwrap();
    for extra in [&[][..], &["--rotate-token"][..]] {
        let mut args = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            state.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = prism_command(&args)
            .env("AWS_ENDPOINT_URL", &emu.url)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {err}");
        assert!(
            err.contains("another prism serve uses the state dir")
                && err.contains(&format!("pid {}", s.child.id()))
                && err.contains(&format!(":{}", s.port)),
            "{err}"
        );
    }
    assert_eq!(std::fs::read_to_string(state.join("token")).unwrap(), token);

    // A launch that would delete asks for consent, naming what goes.
    let four = format!("{}prune: true\n", serve_manifest("cut", 4, FAST));
    let two = format!("{}prune: true\n", serve_manifest("cut", 2, FAST));
    let (st, _, v) = s.call(
        "POST",
        BULK,
        &[],
        Some(&serde_json::json!({"manifest": four})),
    );
    assert_eq!(st, 202, "{v}");
    s.until_over(v["id"].as_str().unwrap());
    let (st, _, v) = s.call(
        "POST",
        BULK,
        &[],
        Some(&serde_json::json!({"manifest": two})),
    );
    assert_eq!(st, 409, "{v}");
    assert_eq!(v["error"]["code"], "DeletionNeedsConsent", "{v}");
    assert_eq!(
        v["error"]["deletions"],
        serde_json::json!(["cut-03", "cut-04"])
    );
    // A refusal leaves nothing to poll for: a second must go by with the fleet whole.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(crate::emulator::per_workspace(&emu, "cut").await.len(), 4);
    let body = serde_json::json!({"manifest": two, "allow_delete": true});
    let (st, _, v) = s.call("POST", BULK, &[], Some(&body));
    assert_eq!(st, 202, "{v}");
    let done = s.until_over(v["id"].as_str().unwrap());
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(crate::emulator::per_workspace(&emu, "cut").await.len(), 2);

    // A fleet another manifest manages: 409, naming it; nothing launched.
    let a = manifest(&emu, "a.yaml", 2);
    let out = emu.prism(&["apply", "--yes", &a]);
    assert!(out.status.success(), "{}", stderr(&out));
    emu.clear_calls();
    let other = std::fs::read_to_string(&a)
        .unwrap()
        .replace("count: 2", "count: 3");
    let (st, _, v) = s.call(
        "POST",
        BULK,
        &[],
        Some(&serde_json::json!({"manifest": other})),
    );
    assert_eq!(st, 409, "{v}");
    assert_eq!(v["error"]["code"], "OwnedElsewhere", "{v}");
    assert_eq!(v["error"]["owner"], "a.yaml", "{v}");
    assert_eq!(mutating_calls(&emu), Vec::<String>::new());
}

/// A serve launch waiting for quota is cancelled after `prism apply` of the same file
/// launched the rest: its record says they were launched by another run, not "not
/// launched".
#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_serve_launch_names_what_apply_launched_meanwhile() {
    let emu = Emulator::start();
    emu.set_quota("ec2", "L-1216C47A", 4.0);
    let dir = emu.dir.path().join("manifests");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("lab.yaml");
    std::fs::write(
        &file,
        "name: lab\nproject: p\ntemplate: t\ncount: 4\nrate_limit: {rate_per_minute: 600, burst_size: 10}\ntemplates:\n  t: {image: ami-785db401, instance_type: t3.micro}\n",
    )
    .unwrap();
    let s = crate::serve::start_with(
        &emu,
        &emu.dir.path().join("state"),
        &["--manifests", dir.to_str().unwrap()],
        &[("PRISM_QUOTA_RECHECK", "10m")],
    );
    let body = serde_json::json!({"manifest_path": "lab.yaml", "wait_for_quota": "30m"});
    let (st, _, v) = s.call("POST", "/api/v1/workspaces/bulk-launch", &[], Some(&body));
    assert_eq!(st, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    eventually("2 waiting for quota", Duration::from_secs(30), || {
        let l = s.launch(&id);
        if l["progress"]["waiting_for_quota"] == 2 {
            Ok(())
        } else {
            Err(l)
        }
    });
    emu.set_quota("ec2", "L-1216C47A", 8.0);
    let out = emu.prism(&["apply", "--yes", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (st, _, _) = s.call(
        "DELETE",
        &format!("/api/v1/workspaces/bulk-launch/{id}"),
        &[],
        None,
    );
    assert_eq!(st, 200);
    let done = s.until_over(&id);
    let states: Vec<(String, String)> = done["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["name"].as_str().unwrap().to_string(),
                w["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let elsewhere: Vec<&str> = states
        .iter()
        .filter(|(_, st)| st == "launched_elsewhere")
        .map(|(w, _)| w.as_str())
        .collect();
    assert_eq!(elsewhere, ["lab-03", "lab-04"], "{states:?}");
    assert!(
        !states.iter().any(|(_, st)| st == "cancelled"),
        "{states:?}"
    );
    assert_eq!(
        done["report"]["launched_by_other_runs"],
        serde_json::json!(["lab-03", "lab-04"]),
        "{done}"
    );
    assert_eq!(crate::emulator::per_workspace(&emu, "lab").await.len(), 4);
}
