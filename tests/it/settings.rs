//! Bad settings (flags, environment, settings files) against every command that calls
//! AWS: never a panic, always one clear, catalogued message naming the setting.

use std::path::Path;
use std::process::Output;

use crate::emulator::{Emulator, prism_command, stderr};

const MANIFEST: &str = "name: lab\nproject: p\ntemplate: t\ncount: 1\ntemplates:\n  t:\n    image: ami-785db401\n    instance_type: t3.micro\n";

/// Every command that calls AWS, with `{m}` standing for a manifest's path.
const COMMANDS: &[&[&str]] = &[
    &["plan", "{m}"],
    &["apply", "{m}", "--yes"],
    &["watch", "{m}", "--once"],
    &["workspace", "list"],
    &["workspace", "stop", "lab-01", "--yes"],
    &["quota", "show"],
    &["quota", "alerts"],
    &["quota", "request", "list"],
    &["storage", "list"],
    &["list"],
];

/// One bad setting: flags to add, environment to set, and the words the message must hold.
struct Case {
    flags: Vec<String>,
    env: Vec<(&'static str, String)>,
    names: &'static str,
}

fn flag(name: &str, value: &str, names: &'static str) -> Case {
    Case {
        flags: vec![format!("{name}={value}")],
        env: vec![],
        names,
    }
}

fn env(var: &'static str, value: &str) -> Case {
    Case {
        flags: vec![],
        env: vec![(var, value.to_string())],
        names: var,
    }
}

fn cases(dir: &Path) -> Vec<Case> {
    let typo = dir.join("typo.yaml");
    std::fs::write(
        &typo,
        "rate_limiting:\n  workspace_launch:\n    rate_per_minut: 5\n",
    )
    .unwrap();
    let wrong_type = dir.join("wrong-type.yaml");
    std::fs::write(&wrong_type, "rate_limiting: 5\n").unwrap();
    let zero_rate = dir.join("zero-rate.yaml");
    std::fs::write(
        &zero_rate,
        "rate_limiting: {workspace_launch: {rate_per_minute: 0}}\n",
    )
    .unwrap();
    let path = |p: &Path| p.display().to_string();
    let mut all = vec![
        flag("--endpoint-url", "", "--endpoint-url"),
        flag("--endpoint-url", "not a url", "--endpoint-url"),
        flag("--endpoint-url", "localhost:5000", "--endpoint-url"),
        flag("--endpoint-url", "ftp://127.0.0.1/", "--endpoint-url"),
        flag("--endpoint-url", "42", "--endpoint-url"),
        env("AWS_ENDPOINT_URL", "not a url"),
        env("AWS_ENDPOINT_URL", "  "),
        env("AWS_ENDPOINT_URL", "file:///etc/hosts"),
        env("AWS_ENDPOINT_URL_EC2", "127.0.0.1:5000"),
        flag("--region", "", "--region"),
        flag("--region", "us-west-9", "--region"),
        flag("--region", "not a region", "--region"),
        flag("--region", "42", "--region"),
        env("AWS_REGION", "us-west-9"),
        env("AWS_REGION", "US_WEST_2"),
        flag("--profile", "", "--profile"),
        flag("--profile", "nosuch", "nosuch"),
        env("AWS_PROFILE", "nosuch"),
        env("PRISM_CONFIG", &path(&dir.join("missing.yaml"))),
        env("PRISM_CONFIG", &path(dir)),
        env("PRISM_CONFIG", &path(&typo.join("below-a-file.yaml"))),
    ];
    for (file, words) in [
        (&typo, "rate_per_minut"),
        (&wrong_type, "invalid type"),
        (&zero_rate, "rate_per_minute"),
    ] {
        let mut c = env("PRISM_CONFIG", &path(file));
        c.names = words;
        all.push(c);
    }
    all
}

fn run(args: &[&str], case: &Case, home: &Path) -> Output {
    let mut cmd = prism_command(args);
    cmd.env("HOME", home).env_remove("PRISM_CONFIG");
    // The profile files must exist for --profile to be looked up in them.
    cmd.env("AWS_CONFIG_FILE", home.join("aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("aws-credentials"));
    for (k, v) in &case.env {
        cmd.env(k, v);
    }
    cmd.output().expect("prism runs")
}

#[test]
fn bad_settings_fail_clearly_before_any_call() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    std::fs::write(home.join("aws-config"), "[default]\nregion = us-west-2\n").unwrap();
    std::fs::write(home.join("aws-credentials"), "[default]\n").unwrap();
    let manifest = home.join("lab.yaml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    let manifest = manifest.display().to_string();
    let mut runs = 0;
    for case in cases(home) {
        for command in COMMANDS {
            let mut args: Vec<&str> = case.flags.iter().map(String::as_str).collect();
            args.extend(
                command
                    .iter()
                    .map(|a| if *a == "{m}" { manifest.as_str() } else { *a }),
            );
            let out = run(&args, &case, home);
            let err = stderr(&out);
            let what = format!("prism {} with {:?}:\n{err}", args.join(" "), case.env);
            assert!(
                matches!(out.status.code(), Some(1 | 2)),
                "{:?} {what}",
                out.status
            );
            assert!(
                err.contains(case.names),
                "the message names the setting: {what}"
            );
            for dump in ["panicked", "Request {", "SdkBody", "WARN", "\x1b["] {
                assert!(!err.contains(dump), "{dump:?} in {what}");
            }
            assert_eq!(
                err.matches("❌").count() + err.matches("error: ").count(),
                1,
                "one message: {what}"
            );
            runs += 1;
        }
    }
    assert!(runs > 200, "{runs} runs");
}

#[test]
fn an_empty_endpoint_variable_is_unset() {
    let emu = Emulator::start();
    // AWS_ENDPOINT_URL= (as `export AWS_ENDPOINT_URL=` leaves it) is unset, as for the
    // AWS CLI: the service-specific variable and the flag still apply.
    let out = prism_command(&["workspace", "list"])
        .env("AWS_ENDPOINT_URL", "")
        .env("AWS_ENDPOINT_URL_EC2", &emu.url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = prism_command(&["--endpoint-url", &emu.url, "workspace", "list"])
        .env("AWS_ENDPOINT_URL", "")
        .env("AWS_REGION", "")
        .env("AWS_PROFILE", "")
        .env("PRISM_CONFIG", "")
        .args(["--region", "us-west-2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn an_unresolvable_endpoint_is_unreachable_not_an_unknown_region() {
    let home = tempfile::tempdir().unwrap();
    let host = "ec2.us-west-2.prism-test.invalid";
    let out = prism_command(&[
        "--endpoint-url",
        &format!("http://{host}"),
        "--region",
        "us-west-2",
        "workspace",
        "list",
    ])
    .env("HOME", home.path())
    .env_remove("NO_COLOR")
    .output()
    .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("[EndpointUnreachable]"), "{err}");
    assert!(
        err.contains(&format!("the name {host} does not resolve")),
        "{err}"
    );
    assert!(err.contains("--endpoint-url"), "{err}");
    assert!(!err.contains("UnknownRegion"), "{err}");
    assert!(!err.contains("WARN"), "{err}");
    assert!(!err.contains('\x1b'), "no colour when piped: {err:?}");
}

#[test]
fn without_any_aws_configuration_only_prism_speaks() {
    let home = tempfile::tempdir().unwrap();
    let out = prism_command(&["workspace", "list"])
        .env("HOME", home.path())
        .env_remove("AWS_REGION")
        .env_remove("AWS_CONFIG_FILE")
        .env_remove("AWS_SHARED_CREDENTIALS_FILE")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err,
        "Error: no AWS region is configured\n  hint: set `region:` in the manifest, pass --region, or set AWS_REGION\n"
    );
}

#[test]
fn an_unknown_quota_request_is_catalogued() {
    let emu = Emulator::start();
    let out = emu.prism(&["quota", "request", "show", "nosuchid"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("❌ No such quota request [NoSuchQuotaRequest]"),
        "{err}"
    );
    assert!(
        err.contains("no quota increase request with the id `nosuchid` in us-west-2"),
        "{err}"
    );
    assert!(!err.contains("NoSuchResourceException"), "{err}");
}

#[test]
fn a_typo_in_the_settings_file_is_located() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join(".prism")).unwrap();
    let file = home.path().join(".prism/config.yaml");
    std::fs::write(
        &file,
        "rate_limiting:\n  workspace_launch:\n    rate_per_minut: 5\n",
    )
    .unwrap();
    let out = prism_command(&["quota", "show"])
        .env("HOME", home.path())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with(&format!(
            "{}:3:5: error: unknown key `rate_per_minut`",
            file.display()
        )),
        "{err}"
    );
    assert!(err.contains("did you mean `rate_per_minute`?"), "{err}");
}

#[test]
fn a_region_aws_does_not_have_is_refused_before_any_call_even_with_an_endpoint() {
    let emu = Emulator::start();
    let path = emu.write("lab.yaml", &format!("{MANIFEST}region: us-west-3\n"));
    let out = emu.prism(&["plan", path.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("`us-west-3` from the manifest's `region` is not an AWS region"),
        "{err}"
    );
    assert!(emu.calls().is_empty(), "{:?}", emu.calls());
}

#[test]
fn an_answer_that_is_not_aws_is_said_so_and_not_retried() {
    use std::io::{Read, Write};
    // An endpoint that answers every request with a proxy's error page.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 65536];
            let _ = s.read(&mut buf);
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = "<html><body><h1>502 Bad Gateway</h1></body></html>";
            let _ = write!(
                s,
                "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lab.yaml");
    std::fs::write(&path, MANIFEST).unwrap();
    let out = prism_command(&["plan", path.to_str().unwrap()])
        .env("AWS_ENDPOINT_URL", &url)
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("did not answer as AWS does"), "{err}");
    assert!(err.contains("502 Bad Gateway"), "{err}");
    assert!(!err.contains("prism retries"), "{err}");
    let n = served.load(std::sync::atomic::Ordering::SeqCst);
    // The plan's reads go out once each, at the same time: none is retried.
    assert!(n <= 6, "{n} requests: retried");
}
