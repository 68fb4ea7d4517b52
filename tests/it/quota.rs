//! `prism quota …` and the error catalogue against the emulator.

use serde_json::{Value, json};

use crate::emulator::{Emulator, launch, stderr, stdout};

fn json_of(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "{}\n{}", stdout(out), stderr(out));
    serde_json::from_str(&stdout(out)).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)))
}

fn row<'a>(rows: &'a Value, code: &str) -> &'a Value {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["code"] == code)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_show_reports_limits_and_account_usage() {
    let emu = Emulator::start();
    emu.set_quota("ec2", "L-1216C47A", 32.0);
    let ec2 = emu.ec2();
    launch(&ec2, None, None, "t3.xlarge", 2).await; // 8 vCPUs, not prism's
    launch(&ec2, Some("f"), Some("f-01"), "t3.micro", 1).await; // 2 vCPUs
    ec2.create_volume()
        .availability_zone("us-west-2a")
        .size(512)
        .volume_type(aws_sdk_ec2::types::VolumeType::Gp3)
        .send()
        .await
        .unwrap();

    let rows = json_of(&emu.prism(&["quota", "show", "--format", "json"]));
    let standard = row(&rows, "L-1216C47A");
    assert_eq!(standard["limit"], 32.0);
    assert_eq!(standard["applied"], true);
    assert_eq!(standard["usage"], 10.0);
    assert_eq!(standard["status"], "ok");
    let gpu = row(&rows, "L-DB2E81BA");
    assert_eq!(
        (
            gpu["limit"].clone(),
            gpu["usage"].clone(),
            gpu["applied"].clone()
        ),
        (json!(8.0), json!(0.0), json!(false))
    );
    assert_eq!(
        row(&rows, "L-7A658B76")["usage"],
        0.5,
        "512 GiB of gp3 is 0.5 TiB"
    );
    assert_eq!(row(&rows, "L-34B43A08")["quota"], "spot-vcpus");

    let yaml: Value =
        serde_yaml::from_str(&stdout(&emu.prism(&["quota", "show", "--format", "yaml"]))).unwrap();
    assert_eq!(yaml, rows, "YAML and JSON carry the same data");

    let text = stdout(&emu.prism(&["quota", "show"]));
    assert!(text.contains("📊 AWS Service Quotas - us-west-2"), "{text}");
    assert!(text.contains("L-1216C47A  10"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_and_the_plan_banner_flag_a_quota_over_80_percent() {
    let emu = Emulator::start();
    emu.set_quota("ec2", "L-1216C47A", 32.0);
    launch(&emu.ec2(), None, None, "t3.xlarge", 7).await; // 28 of 32
    let alerts = json_of(&emu.prism(&["quota", "alerts", "--format", "json"]));
    let a = &alerts[0];
    assert_eq!(a["severity"], "critical");
    assert_eq!(a["code"], "L-1216C47A");
    assert!(
        a["recommendation"]
            .as_str()
            .unwrap()
            .contains("prism quota request --quota on-demand-vcpus --desired-value 35")
    );
    assert_eq!(a["recommended_value"], 35.0);

    let path = emu.write(
        "lab.yaml",
        "name: lab\nproject: p\ntemplate: t\ncount: 1\ntemplates:\n  t: {image: ami-785db401, instance_type: t3.micro}\n",
    );
    let text = stdout(&emu.prism(&["plan", path.to_str().unwrap()]));
    assert!(
        text.contains(
            "❌ The On-Demand Standard (A, C, D, H, I, M, R, T, Z) quota is 88% used (28/32 vCPUs) in us-west-2; after this plan it is 94% used (30/32 vCPUs)"
        ),
        "{text}"
    );
}

#[test]
fn a_request_is_followed_to_approved_and_raises_the_limit_everywhere() {
    let emu = Emulator::start();
    emu.set_quota("ec2", "L-1216C47A", 32.0);
    let out = emu.prism(&[
        "quota",
        "request",
        "--quota",
        "on-demand-vcpus",
        "--desired-value",
        "192",
        "--reason",
        "CS499: 40 students × 4 vCPUs",
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    for want in [
        "Current quota: 32 vCPUs",
        "Desired quota: 192 vCPUs",
        "Increase: 160 vCPUs (500%)",
        "Status: PENDING",
        "prism quota request show ",
    ] {
        assert!(text.contains(want), "lacks {want:?}: {text}");
    }
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("Request ID: "))
        .unwrap()
        .trim()
        .to_string();

    let shown = json_of(&emu.prism(&["quota", "request", "show", &id, "--format", "json"]));
    assert_eq!(shown["status"], "PENDING");
    assert_eq!(shown["desired_value"], 192.0);
    let pending = json_of(&emu.prism(&[
        "quota", "request", "list", "--status", "PENDING", "--format", "json",
    ]));
    assert_eq!(pending.as_array().unwrap().len(), 1);

    emu.post(
        &format!("/_prism/quota-requests/{id}"),
        json!({"status": "APPROVED"}),
    );
    let shown = json_of(&emu.prism(&["quota", "request", "show", &id, "--format", "json"]));
    assert_eq!(shown["status"], "APPROVED");
    let rows = json_of(&emu.prism(&["quota", "show", "--format", "json"]));
    assert_eq!(row(&rows, "L-1216C47A")["limit"], 192.0);
    let path = emu.write(
        "class.yaml",
        "name: c\nproject: p\ntemplate: t\ncount: 1\ntemplates:\n  t: {image: ami-785db401, instance_type: t3.micro}\n",
    );
    let plan = json_of(&emu.prism(&["plan", "--format", "json", path.to_str().unwrap()]));
    assert_eq!(plan["quota"][0]["limit"], 192.0);
    let none = json_of(&emu.prism(&[
        "quota", "request", "list", "--status", "PENDING", "--format", "json",
    ]));
    assert_eq!(none, json!([]));
}

#[test]
fn bad_requests_are_refused_before_asking_aws() {
    let emu = Emulator::start();
    emu.set_quota("ec2", "L-1216C47A", 32.0);
    let lower = emu.prism(&[
        "quota",
        "request",
        "--quota",
        "on-demand-vcpus",
        "--desired-value",
        "16",
    ]);
    assert_eq!(lower.status.code(), Some(1));
    assert!(
        stderr(&lower).contains("must be above the current 32"),
        "{}",
        stderr(&lower)
    );
    let unknown = emu.prism(&[
        "quota",
        "request",
        "--quota",
        "gpus",
        "--desired-value",
        "16",
    ]);
    assert!(
        stderr(&unknown).contains("unknown quota `gpus`; use one of on-demand-vcpus, gpu-vcpus"),
        "{}",
        stderr(&unknown)
    );
    let dry = emu.prism(&[
        "quota",
        "request",
        "--quota",
        "L-DB2E81BA",
        "--desired-value",
        "64",
        "--dry-run",
    ]);
    assert!(
        stdout(&dry).contains("Dry run: nothing is sent to AWS."),
        "{}",
        stdout(&dry)
    );
    assert!(
        !emu.call_counts()
            .contains_key("RequestServiceQuotaIncrease")
    );
}

/// Every catalogue entry the emulator can provoke, through `prism plan`.
#[test]
fn aws_errors_are_explained_from_the_catalogue() {
    let emu = Emulator::start();
    let path = emu.write(
        "class.yaml",
        "name: c\nproject: p\ntemplate: t\ncount: 1\nretry: {max_retries: 0}\ntemplates:\n  t: {image: ami-785db401, instance_type: t3.micro}\n",
    );
    let cases: &[(&str, u16, &str)] = &[
        ("RequestLimitExceeded", 503, "AWS API rate limit exceeded"),
        ("Throttling", 400, "AWS is throttling requests"),
        ("UnauthorizedOperation", 403, "Not allowed"),
        ("AuthFailure", 401, "AWS did not accept the credentials"),
        ("ExpiredToken", 400, "AWS credentials expired"),
        ("InvalidParameterValue", 400, "AWS rejected a parameter"),
        ("Unavailable", 503, "AWS service unavailable"),
        ("InternalError", 500, "AWS internal error"),
        ("InvalidInstanceID.NotFound", 400, "Instance not found"),
        (
            "IncorrectInstanceState",
            400,
            "The instance is busy changing state",
        ),
        (
            "SomethingNew",
            400,
            "DescribeInstances failed: SomethingNew",
        ),
    ];
    for (code, status, title) in cases {
        // A plan makes two DescribeInstances at once; when the first fails, the other
        // may still reach the emulator after the plan has exited, and take the next
        // case's fault. Two faults: a plan fails whichever of its calls gets them.
        emu.post(
            "/_prism/faults",
            json!({"faults": [{"action": "DescribeInstances", "code": code, "status": status, "message": "AWS says so.", "count": 2}]}),
        );
        let out = emu.prism(&["plan", path.to_str().unwrap()]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{code}: {err}");
        assert!(
            err.contains(&format!("❌ {title} [{code}]")),
            "{code}: {err}"
        );
        assert!(
            err.contains("What happened:") && err.contains("What you can do:"),
            "{code}: {err}"
        );
        assert!(
            err.contains("AWS says so.") || *code != "SomethingNew",
            "{code}: {err}"
        );
        assert!(
            !err.contains("DispatchFailure") && !err.contains("ServiceError"),
            "raw SDK error shown: {err}"
        );

        emu.post(
            "/_prism/faults",
            json!({"faults": [{"action": "DescribeInstances", "code": code, "status": status, "message": "AWS says so.", "count": 2}]}),
        );
        let out = emu.prism(&["plan", "--format", "json", path.to_str().unwrap()]);
        let v: Value = serde_json::from_str(&stdout(&out))
            .unwrap_or_else(|e| panic!("{code}: {e}: {}", stdout(&out)));
        assert_eq!(v["error"]["code"], *code);
        for k in [
            "title",
            "what_happened",
            "what_prism_does",
            "what_you_can_do",
        ] {
            assert!(v["error"][k].is_string(), "{code}: no {k}");
        }
    }
}

/// 28 of 32 vCPUs in use and a fleet of one t3.xlarge (4): 32 in use after it, 100 %.
/// The plan, the VcpuLimitExceeded explanation, `quota show` and `quota alerts` all
/// recommend the same value: 40, at which 32 is 80 %, out of critical.
#[tokio::test(flavor = "multi_thread")]
async fn one_situation_gives_one_recommended_value_everywhere() {
    let emu = Emulator::start();
    emu.set_quota("ec2", "L-1216C47A", 32.0);
    launch(&emu.ec2(), None, None, "t3.xlarge", 7).await;
    let path = emu.write(
        "lab.yaml",
        "name: lab\nproject: p\ntemplate: t\ncount: 1\nretry: {max_retries: 0}\ntemplates:\n  t: {image: ami-785db401, instance_type: t3.xlarge}\n",
    );
    let path = path.to_str().unwrap();
    let want = "prism quota request --quota on-demand-vcpus --desired-value 40";

    let plan = json_of(&emu.prism(&["plan", "--format", "json", path]));
    assert_eq!(plan["quota"][0]["fits"], true);
    assert_eq!(plan["quota"][0]["recommended_value"], 40.0);
    let high = plan["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["kind"] == "quota_high")
        .expect("the quota is left critical");
    assert!(
        high["options"][0].as_str().unwrap().starts_with(want),
        "{high}"
    );
    let text = stdout(&emu.prism(&["plan", path]));
    assert!(text.contains(want), "{text}");

    // AWS refuses the launch (as when another launch took the room meanwhile).
    emu.post(
        "/_prism/faults",
        json!({"faults": [{"action": "RunInstances", "code": "VcpuLimitExceeded", "status": 400,
                           "message": "You have requested more vCPU capacity than your current vCPU limit of 32 allows.", "count": 1}]}),
    );
    let refused = emu.prism(&["apply", "--yes", path]);
    let text = stdout(&refused);
    assert_eq!(refused.status.code(), Some(1), "{text}");
    // Not a failure: not launched for quota, with the quota read at that moment.
    assert!(
        text.contains(
            "lab-01 skipped: not launched for quota: AWS refused the vCPUs (VcpuLimitExceeded)"
        ) && text.contains("has 28 of 32 vCPUs in use now and these need 4 more"),
        "{text}"
    );
    assert!(!text.contains("✗"), "{text}");
    assert!(text.contains(want), "{text}");

    let done = emu.prism(&["apply", "--yes", path]);
    assert!(done.status.success(), "{}{}", stdout(&done), stderr(&done));

    let rows = json_of(&emu.prism(&["quota", "show", "--format", "json"]));
    let standard = row(&rows, "L-1216C47A");
    assert_eq!(
        (standard["usage"].clone(), standard["status"].clone()),
        (json!(32.0), json!("critical"))
    );
    assert_eq!(standard["recommended_value"], 40.0);
    let text = stdout(&emu.prism(&["quota", "show"]));
    assert!(text.contains(want), "{text}");
    let alerts = json_of(&emu.prism(&["quota", "alerts", "--format", "json"]));
    assert_eq!(alerts[0]["recommended_value"], 40.0);
    assert!(alerts[0]["recommendation"].as_str().unwrap().contains(want));
    let text = stdout(&emu.prism(&["quota", "alerts"]));
    assert!(text.contains(want), "{text}");
}

#[test]
fn request_json_carries_the_table_fields() {
    let emu = Emulator::start();
    emu.set_quota("ec2", "L-1216C47A", 32.0);
    let out = emu.prism(&[
        "quota",
        "request",
        "--quota",
        "on-demand-vcpus",
        "--desired-value",
        "70",
        "--format",
        "json",
    ]);
    let made = json_of(&out);
    let id = made["request_id"].as_str().expect("request_id").to_string();

    let shown = json_of(&emu.prism(&["quota", "request", "show", &id, "--format", "json"]));
    assert_eq!(shown, made);
    let mut keys: Vec<&str> = shown
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "code",
            "desired_value",
            "last_updated",
            "name",
            "quota",
            "request_id",
            "service",
            "status",
            "submitted",
            "support_case"
        ]
    );
    let submitted = shown["submitted"].as_str().unwrap();
    assert!(
        submitted.len() == 20 && submitted.ends_with('Z') && submitted.as_bytes()[10] == b'T',
        "RFC 3339: {submitted}"
    );
    // The quota's name is the one `quota show` and plans give it.
    let rows = json_of(&emu.prism(&["quota", "show", "--format", "json"]));
    assert_eq!(shown["name"], row(&rows, "L-1216C47A")["name"]);
    assert_eq!(shown["quota"], "on-demand-vcpus");

    let text = stdout(&emu.prism(&["quota", "request", "show", &id]));
    for line in [
        format!("Request ID: {id}"),
        format!(
            "Quota: {} [ec2/L-1216C47A]",
            shown["name"].as_str().unwrap()
        ),
        "Desired value: 70".to_string(),
        "Status: PENDING".to_string(),
        format!("Submitted: {submitted}"),
        format!("Last updated: {}", shown["last_updated"].as_str().unwrap()),
        "Support case: -".to_string(),
    ] {
        assert!(text.contains(&line), "lacks {line:?}: {text}");
    }
    assert_eq!(shown["support_case"], Value::Null);

    let listed = json_of(&emu.prism(&["quota", "request", "list", "--format", "json"]));
    assert_eq!(listed, json!([shown]));
    let table = stdout(&emu.prism(&["quota", "request", "list"]));
    for header in [
        "REQUEST ID",
        "QUOTA",
        "CODE",
        "DESIRED",
        "STATUS",
        "SUBMITTED",
        "LAST UPDATED",
        "SUPPORT CASE",
    ] {
        assert!(table.contains(header), "{table}");
    }
    assert!(table.contains(submitted) && table.contains(&id), "{table}");
}

#[test]
fn quotas_are_per_region() {
    let emu = Emulator::start();
    emu.set_quota("ec2", "L-1216C47A", 32.0);
    emu.set_quota_in("eu-west-1", "ec2", "L-1216C47A", 128.0);
    let limit = |region: &str| {
        let rows = json_of(&emu.prism(&["quota", "show", "--format", "json", "--region", region]));
        row(&rows, "L-1216C47A")["limit"].clone()
    };
    assert_eq!(limit("us-west-2"), 32.0);
    assert_eq!(limit("eu-west-1"), 128.0);
    assert_eq!(
        limit("us-east-1"),
        64.0,
        "AWS's default where nothing was applied"
    );

    let made = json_of(&emu.prism(&[
        "quota",
        "request",
        "--quota",
        "on-demand-vcpus",
        "--desired-value",
        "70",
        "--format",
        "json",
    ]));
    let id = made["request_id"].as_str().unwrap();
    emu.post(
        &format!("/_prism/quota-requests/{id}"),
        json!({"status": "APPROVED"}),
    );
    assert_eq!(limit("us-west-2"), 70.0);
    assert_eq!(limit("eu-west-1"), 128.0, "raised in us-west-2 only");
    assert_eq!(limit("us-east-1"), 64.0);
    let elsewhere = json_of(&emu.prism(&[
        "quota",
        "request",
        "list",
        "--format",
        "json",
        "--region",
        "eu-west-1",
    ]));
    assert_eq!(elsewhere, json!([]), "requests are per region too");
}
