//! Fleets that fit alone but not together: when another fleet's launches take the room
//! a plan saw, AWS's VcpuLimitExceeded sends a workspace to "not launched for quota"
//! with the quota as it stands then, never to "failed".

use serde_json::json;

use crate::emulator::{Emulator, per_workspace, stderr, stdout};

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
async fn a_launch_refused_for_quota_mid_run_is_not_launched_for_quota_not_failed() {
    let emu = Emulator::start();
    emu.set_quota("ec2", "L-1216C47A", 40.0);
    let qa = fleet(&emu, "qa", 15);
    let qb = fleet(&emu, "qb", 15);
    // qa's launches are not yet shown when qb plans (EC2's lag): qb's plan sees room
    // for all 15, and AWS refuses the launches past the quota.
    emu.post("/_prism/lag", json!({"seconds": 30}));
    let out = emu.prism(&["apply", "--yes", "--no-wait", &qa]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = emu.prism(&["apply", "--yes", "--no-wait", &qb]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(
        out.status.code(),
        Some(1),
        "not every workspace launched:\n{text}"
    );
    assert!(!text.contains("✗"), "nothing is called failed:\n{text}");
    assert!(
        text.contains("0 failed") || !text.contains("failed"),
        "{text}"
    );
    assert!(
        text.contains("not launched for quota: AWS refused the vCPUs (VcpuLimitExceeded)")
            && text.contains("On-Demand Standard")
            && text.contains("vCPUs in use now"),
        "{text}"
    );
    assert!(!text.contains("--desired-value N"), "{text}");
    let launched = per_workspace(&emu, "qb").await.len() + per_workspace(&emu, "qa").await.len();
    assert!(
        launched <= 20,
        "{launched} instances of 2 vCPUs in a 40-vCPU quota"
    );
}
