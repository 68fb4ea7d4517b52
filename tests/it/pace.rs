//! The launch pace a manifest without `rate_limit` gets: `auto`, AWS's RunInstances
//! bucket (5 at once, 120 per minute, adaptive), said in the progress and the events;
//! an explicit pace is kept as written.

use serde_json::Value;

use crate::emulator::Emulator;

fn class(dir: &std::path::Path, name: &str, rate: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "name: {name}\nproject: p\ntemplate: t\ncount: 8\n{rate}templates:\n  t: {{image: ami-785db401, instance_type: t3.micro}}\n"
        ),
    )
    .unwrap();
    path
}

fn started(out: &std::process::Output) -> Value {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "started")
        .unwrap_or_else(|| panic!("no started event: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn a_manifest_without_a_pace_launches_at_aws_pace_and_says_so() {
    let emu = Emulator::start();
    let auto = class(emu.dir.path(), "auto", "");
    let out = emu.prism(&["apply", auto.to_str().unwrap(), "--yes", "--no-wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Launch pace: auto, as AWS's RunInstances buckets allow (up to 100 workspaces a call, 5 calls at once, then 120 per minute; slower when AWS throttles)"),
        "{text}"
    );
    // The same in the events, and `rate_limit: auto` says it in words.
    let named = class(emu.dir.path(), "named", "rate_limit: auto\n");
    let out = emu.prism(&[
        "apply",
        named.to_str().unwrap(),
        "--yes",
        "--no-wait",
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = started(&out);
    assert_eq!(
        (&s["rate_per_minute"], &s["burst_size"], &s["adaptive"]),
        (&Value::from(120.0), &Value::from(5), &Value::Bool(true)),
        "{s}"
    );
    // An explicit pace is obeyed as written: the release plan's 2 a minute.
    let slow = class(
        emu.dir.path(),
        "slow",
        "rate_limit: {rate_per_minute: 2, burst_size: 5}\n",
    );
    let mut child = crate::emulator::prism_command(&[
        "apply",
        slow.to_str().unwrap(),
        "--yes",
        "--no-wait",
        "--format",
        "json",
    ])
    .env("AWS_ENDPOINT_URL", &emu.url)
    .env("XDG_CACHE_HOME", emu.dir.path().join("cache"))
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let s = lines
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
        .find(|v| v["event"] == "started")
        .expect("a started event");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        (&s["rate_per_minute"], &s["burst_size"]),
        (&Value::from(2.0), &Value::from(5)),
        "{s}"
    );
}

#[test]
fn a_pace_that_is_neither_auto_nor_a_bucket_is_pointed_at_and_explained() {
    let emu = Emulator::start();
    let bad = class(emu.dir.path(), "bad", "rate_limit: fast\n");
    let out = emu.prism(&["apply", bad.to_str().unwrap(), "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml:5:13: error: `rate_limit` has the wrong form"),
        "{err}"
    );
    assert!(err.contains("`auto` (the default"), "{err}");
    assert!(err.contains("or a map of rate_per_minute"), "{err}");
    assert!(err.contains("nothing was sent to AWS"), "{err}");
    assert_eq!(emu.call_counts().get("RunInstances"), None);
}
