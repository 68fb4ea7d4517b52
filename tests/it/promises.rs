//! What docs/resources.md and docs/quota.md promise of the imperative commands, one
//! test per promise, against the emulator.

use serde_json::Value;

use crate::emulator::{Emulator, launch, per_workspace, prism_command, stderr, stdout};

const TINY: &str = "tiny:\n  image: ami-785db401\n  instance_type: t3.micro\n";

#[test]
fn creating_an_efs_twice_returns_the_first() {
    let emu = Emulator::start();
    let first = emu.prism(&["storage", "create", "shared", "--type", "efs"]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let again = emu.prism(&["storage", "create", "shared", "--type", "efs"]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("exists already"),
        "{}",
        stdout(&again)
    );
    let list: Value = serde_json::from_str(&stdout(
        &emu.prism(&["storage", "list", "--format", "json"]),
    ))
    .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
}

#[test]
fn storage_flags_that_do_not_apply_are_refused() {
    let emu = Emulator::start();
    let size = emu.prism(&["storage", "create", "s", "--type", "efs", "--size", "5"]);
    assert_eq!(size.status.code(), Some(1));
    assert!(
        stderr(&size).contains("--type efs takes no --size"),
        "{}",
        stderr(&size)
    );
    let zone = emu.prism(&[
        "storage",
        "create",
        "v",
        "--type",
        "ebs",
        "--size",
        "1",
        "--zone",
        "us-east-1a",
    ]);
    assert_eq!(zone.status.code(), Some(1));
    assert!(
        stderr(&zone).contains("is not in region us-west-2"),
        "{}",
        stderr(&zone)
    );
    let list = emu.prism(&["storage", "list", "--format", "json"]);
    assert_eq!(stdout(&list).trim(), "[]", "nothing was created");
}

#[tokio::test(flavor = "multi_thread")]
async fn quiet_apply_prints_no_quota_screen() {
    let emu = Emulator::start();
    emu.set_quota("ec2", "L-1216C47A", 2.0);
    let file = emu.write(
        "q.yaml",
        "name: q\nproject: q\ntemplate: tiny\ncount: 3\nregion: us-west-2\ntemplates:\n  tiny:\n    image: ami-785db401\n    instance_type: t3.micro\n",
    );
    let out = emu.prism(&["apply", file.to_str().unwrap(), "--yes", "-q"]);
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!all.contains("Checking AWS quotas"), "{all}");
    assert!(!all.contains("Quotas ("), "{all}");
    assert!(
        all.contains("not launched"),
        "the summary names what did not fit: {all}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_verbs_work_the_same() {
    let emu = Emulator::start();
    let vol = emu.prism(&["volume", "create", "v1", "--size", "1"]);
    assert_eq!(vol.status.code(), Some(0), "{}", stderr(&vol));
    assert!(
        stdout(&vol).contains("Created ebs `v1`"),
        "{}",
        stdout(&vol)
    );
    let file = emu.write("t.yaml", TINY);
    let dry = emu.prism(&[
        "launch",
        "tiny",
        "ws-a",
        "-f",
        file.to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(dry.status.code(), Some(0), "{}", stderr(&dry));
    assert!(
        per_workspace(&emu, "workspaces").await.is_empty(),
        "a dry run launches nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn workspace_show_json_is_one_object_with_the_list_fields() {
    let emu = Emulator::start();
    launch(&emu.ec2(), Some("cs"), Some("cs-01"), "t3.micro", 1).await;
    let v: Value = serde_json::from_str(&stdout(&emu.prism(&[
        "workspace",
        "show",
        "cs-01",
        "--format",
        "json",
    ])))
    .unwrap();
    assert!(v.is_object(), "{v}");
    for field in [
        "name",
        "status",
        "instance_type",
        "fleet",
        "instance_id",
        "tags",
    ] {
        assert!(v.get(field).is_some(), "{field} missing: {v}");
    }
    assert_eq!(v["tags"]["prism:workspace"], "cs-01");
}

#[test]
fn quota_request_json_dates_are_rfc3339() {
    let emu = Emulator::start();
    let out = emu.prism(&[
        "quota",
        "request",
        "--quota",
        "on-demand-vcpus",
        "--desired-value",
        "100",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let list: Value = serde_json::from_str(&stdout(
        &emu.prism(&["quota", "request", "list", "--format", "json"]),
    ))
    .unwrap();
    let submitted = list[0]["submitted"].as_str().expect("a date string");
    assert!(
        submitted.len() >= 20 && submitted.as_bytes()[10] == b'T' && submitted.ends_with('Z'),
        "{submitted}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn create_does_not_ask_and_refused_deletions_say_delete() {
    let emu = Emulator::start();
    let file = emu.write("t.yaml", TINY);
    // No terminal and no --yes: create goes ahead, delete refuses.
    let create = emu.prism(&[
        "workspace",
        "create",
        "--template",
        "tiny",
        "-f",
        file.to_str().unwrap(),
        "ws-a",
    ]);
    assert_eq!(create.status.code(), Some(0), "{}", stderr(&create));
    assert_eq!(per_workspace(&emu, "workspaces").await.len(), 1);
    let delete = emu.prism(&["workspace", "delete", "ws-a"]);
    assert_eq!(delete.status.code(), Some(1));
    assert!(
        stderr(&delete).contains("refusing to delete"),
        "{}",
        stderr(&delete)
    );
    let vol = emu.prism(&["storage", "create", "v", "--type", "ebs", "--size", "1"]);
    assert_eq!(vol.status.code(), Some(0), "{}", stderr(&vol));
    let sdel = emu.prism(&["storage", "delete", "v"]);
    assert_eq!(sdel.status.code(), Some(1));
    assert!(
        stderr(&sdel).contains("refusing to delete"),
        "{}",
        stderr(&sdel)
    );
}

#[test]
fn unknown_error_codes_exit_1_naming_the_closest_and_lookups_ignore_case() {
    let out = prism_command(&["errors", "NoSuchThing"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not an error code prism knows"),
        "{}",
        stderr(&out)
    );
    let near = prism_command(&["errors", "VcpuLimit"]).output().unwrap();
    assert!(
        stderr(&near).contains("`VcpuLimitExceeded`"),
        "{}",
        stderr(&near)
    );
    let lower = prism_command(&["errors", "requestlimitexceeded"])
        .output()
        .unwrap();
    assert_eq!(lower.status.code(), Some(0));
    let text = stdout(&lower);
    assert!(text.contains("[RequestLimitExceeded]"), "{text}");
    assert!(
        !text.contains("many the call") && !text.contains('{'),
        "{text}"
    );
    let all = stdout(&prism_command(&["errors"]).output().unwrap());
    assert!(!all.contains("?/?") && !all.contains("{region}"), "{all}");
}

fn complete(emu: &Emulator, cwd: &std::path::Path, words: &[&str]) -> Vec<String> {
    let mut args = vec!["--", "prism"];
    args.extend(words);
    let out = prism_command(&args)
        .current_dir(cwd)
        .env("AWS_ENDPOINT_URL", &emu.url)
        .env("COMPLETE", "bash")
        .env("_CLAP_COMPLETE_INDEX", (words.len()).to_string())
        .env("XDG_CACHE_HOME", cwd.join("cache"))
        .output()
        .unwrap();
    stdout(&out).lines().map(str::to_string).collect()
}

#[test]
fn completion_offers_what_the_docs_claim() {
    let emu = Emulator::start();
    let dir = emu.dir.path();
    std::fs::write(dir.join("t.yaml"), TINY).unwrap();
    let vol = emu.prism(&[
        "storage", "create", "scratch", "--type", "ebs", "--size", "1",
    ]);
    assert_eq!(vol.status.code(), Some(0), "{}", stderr(&vol));
    let quota = complete(&emu, dir, &["quota", "request", "--quota", "on-"]);
    assert!(quota.iter().any(|c| c == "on-demand-vcpus"), "{quota:?}");
    let codes = complete(&emu, dir, &["errors", "Vcpu"]);
    assert_eq!(codes, ["VcpuLimitExceeded"]);
    let storage = complete(&emu, dir, &["storage", "delete", "scr"]);
    assert_eq!(storage, ["scratch"]);
    let templates = complete(&emu, dir, &["template", "show", "ti"]);
    assert_eq!(templates, ["tiny"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_change_is_worded_as_one_and_resume_speaks_of_resuming() {
    let emu = Emulator::start();
    launch(&emu.ec2(), Some("cs"), Some("cs-01"), "t3.micro", 1).await;
    let stop = emu.prism(&["workspace", "stop", "cs-01"]);
    let text = stdout(&stop);
    assert_eq!(stop.status.code(), Some(0), "{}", stderr(&stop));
    assert!(text.contains("Applying 1 change of fleet cs"), "{text}");
    assert!(text.contains("✅ 1 change applied successfully"), "{text}");
    assert!(!text.contains("1 changes"), "{text}");
    let start = emu.prism(&["workspace", "start", "cs-01"]);
    assert_eq!(start.status.code(), Some(0), "{}", stderr(&start));
    let resume = emu.prism(&["workspace", "resume", "cs-01"]);
    assert!(
        stdout(&resume).contains("Nothing to resume"),
        "{}",
        stdout(&resume)
    );
}
