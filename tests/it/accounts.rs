//! Fleets in two AWS accounts: a manifest's `account:` names a profile that assumes a
//! role in another account; each fleet lands in its own account, quotas are read per
//! account, and listings say which account they show.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Output;

use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use serde_json::{Value, json};

use crate::emulator::{AMI, Emulator, REGION, prism_command, stderr, stdout, tag};

/// moto's default account: the one of the tests' own keys.
const HOME_ACCOUNT: &str = "123456789012";
/// The account the `course-b` profile's role is in.
const COURSE_ACCOUNT: &str = "210987654321";
const ROLE: &str = "arn:aws:iam::210987654321:role/prism";
const STANDARD: &str = "L-1216C47A";

/// An AWS configuration with the default profile (the tests' keys) and `course-b`,
/// which assumes a role in [`COURSE_ACCOUNT`] from it.
fn aws_files(emu: &Emulator) -> (PathBuf, PathBuf) {
    let config = emu.write(
        "aws-config",
        &format!(
            "[default]\nregion = {REGION}\n\n[profile course-b]\nrole_arn = {ROLE}\nsource_profile = default\nregion = {REGION}\n"
        ),
    );
    let credentials = emu.write(
        "aws-credentials",
        "[default]\naws_access_key_id = test\naws_secret_access_key = test\n",
    );
    (config, credentials)
}

/// prism with the two-profile AWS configuration; the environment still exports the
/// tests' own keys, which a named profile must not fall back to.
fn prism(emu: &Emulator, args: &[&str]) -> Output {
    let (config, credentials) = aws_files(emu);
    prism_command(args)
        .current_dir(emu.dir.path())
        .env("AWS_ENDPOINT_URL", &emu.url)
        .env("XDG_CACHE_HOME", emu.dir.path().join("cache"))
        .env("AWS_CONFIG_FILE", config)
        .env("AWS_SHARED_CREDENTIALS_FILE", credentials)
        .output()
        .expect("prism runs")
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    stdout(&out)
}

fn json_of(out: Output) -> Value {
    let text = ok(out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn manifest(name: &str, count: u32, account: Option<&str>) -> String {
    let account = account
        .map(|a| format!("account: {a}\n"))
        .unwrap_or_default();
    format!(
        "name: {name}\nproject: {name}\ntemplate: small\ncount: {count}\nregion: {REGION}\n{account}templates:\n  small: {{image: {AMI}, instance_type: t3.micro}}\n"
    )
}

/// An EC2 client in the course's account: the role assumed through the emulator's STS.
async fn course_ec2(emu: &Emulator) -> aws_sdk_ec2::Client {
    let sts = aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&emu.url)
            .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
            .build(),
    );
    let assumed = sts
        .assume_role()
        .role_arn(ROLE)
        .role_session_name("tests")
        .send()
        .await
        .expect("AssumeRole");
    let c = assumed.credentials().expect("credentials");
    let role = Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_string()),
        None,
        "role",
    );
    let who = aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&emu.url)
            .credentials_provider(role.clone())
            .build(),
    );
    let account = who.get_caller_identity().send().await.expect("whoami");
    assert_eq!(account.account(), Some(COURSE_ACCOUNT));
    let config = aws_sdk_ec2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(&emu.url)
        .credentials_provider(role)
        .build();
    aws_sdk_ec2::Client::from_conf(config)
}

/// (fleet, workspace) of every live instance the client's account holds.
async fn live(ec2: &aws_sdk_ec2::Client) -> BTreeSet<(String, String)> {
    let out = ec2
        .describe_instances()
        .send()
        .await
        .expect("DescribeInstances");
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter(|i| {
            i.state()
                .and_then(|s| s.name())
                .is_some_and(|n| n.as_str() != "terminated")
        })
        .map(|i| {
            (
                tag(i, "prism:fleet").unwrap_or("-").to_string(),
                tag(i, "prism:workspace").unwrap_or("-").to_string(),
            )
        })
        .collect()
}

fn workspaces(fleet: &str, count: u32) -> BTreeSet<(String, String)> {
    (1..=count)
        .map(|n| (fleet.to_string(), format!("{fleet}-{n:02}")))
        .collect()
}

fn standard_row(rows: &Value) -> &Value {
    rows.as_array()
        .expect("rows")
        .iter()
        .find(|r| r["code"] == STANDARD)
        .expect("the Standard row")
}

#[tokio::test(flavor = "multi_thread")]
async fn fleets_in_two_accounts_stay_in_their_own() {
    let emu = Emulator::start();
    // Quotas differ by account, in the same region.
    emu.post(
        "/_prism/quotas",
        json!({"account": HOME_ACCOUNT, "region": REGION, "ec2": {STANDARD: 20}}),
    );
    emu.post(
        "/_prism/quotas",
        json!({"account": COURSE_ACCOUNT, "region": REGION, "ec2": {STANDARD: 8}}),
    );
    let home = emu.write("home.yaml", &manifest("home-lab", 5, None));
    let course = emu.write("course.yaml", &manifest("course-lab", 3, Some("course-b")));
    let too_big = emu.write("too-big.yaml", &manifest("course-lab", 5, Some("course-b")));
    let (home, course, too_big) = (
        home.to_str().unwrap(),
        course.to_str().unwrap(),
        too_big.to_str().unwrap(),
    );

    // The plan reads the quota of the manifest's own account: 5 t3.micro (10 vCPUs)
    // fit the home account's 20, not the course account's 8.
    let plan = json_of(prism(&emu, &["plan", home, "--format", "json"]));
    assert_eq!(
        (
            plan["quota"][0]["limit"].clone(),
            plan["quota"][0]["fits"].clone()
        ),
        (json!(20.0), json!(true))
    );
    let plan = json_of(prism(&emu, &["plan", too_big, "--format", "json"]));
    assert_eq!(
        (
            plan["quota"][0]["limit"].clone(),
            plan["quota"][0]["available"].clone(),
            plan["quota"][0]["fits"].clone()
        ),
        (json!(8.0), json!(8), json!(false))
    );

    ok(prism(&emu, &["apply", home, "--yes"]));
    ok(prism(&emu, &["apply", course, "--yes"]));

    // Each account holds exactly its own fleet.
    assert_eq!(live(&emu.ec2()).await, workspaces("home-lab", 5));
    assert_eq!(
        live(&course_ec2(&emu).await).await,
        workspaces("course-lab", 3)
    );
    // A second apply of each finds its fleet complete: nothing is launched again.
    let calls_before = emu.count("RunInstances");
    ok(prism(&emu, &["apply", home, "--yes"]));
    ok(prism(&emu, &["apply", course, "--yes"]));
    assert_eq!(emu.count("RunInstances"), calls_before);

    // Quotas are read per account: limit and usage of each.
    let rows = json_of(prism(&emu, &["quota", "show", "--format", "json"]));
    let row = standard_row(&rows);
    assert_eq!(
        (row["limit"].clone(), row["usage"].clone()),
        (json!(20.0), json!(10.0))
    );
    let rows = json_of(prism(
        &emu,
        &["quota", "show", "--profile", "course-b", "--format", "json"],
    ));
    let row = standard_row(&rows);
    assert_eq!(
        (row["limit"].clone(), row["usage"].clone()),
        (json!(8.0), json!(6.0))
    );
    let text = ok(prism(&emu, &["quota", "show", "--profile", "course-b"]));
    assert!(
        text.starts_with(&format!(
            "📊 AWS Service Quotas - {REGION}, account {COURSE_ACCOUNT} (profile course-b)\n"
        )),
        "{text}"
    );

    // Listings say which account they show, and show only its workspaces.
    let text = ok(prism(&emu, &["workspace", "list"]));
    assert!(
        text.ends_with(&format!("Account {HOME_ACCOUNT}, {REGION}\n")),
        "{text}"
    );
    assert_eq!(text.matches("home-lab-").count(), 5, "{text}");
    assert!(!text.contains("course-lab"), "{text}");
    let rows = json_of(prism(
        &emu,
        &[
            "workspace",
            "list",
            "--manifest",
            course,
            "--format",
            "json",
        ],
    ));
    let shown: Vec<(String, String, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["account"].as_str().unwrap().to_string(),
                r["profile"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        (1..=3)
            .map(|n| (
                format!("course-lab-{n:02}"),
                COURSE_ACCOUNT.to_string(),
                "course-b".to_string()
            ))
            .collect::<Vec<_>>()
    );
    let text = ok(prism(&emu, &["workspace", "list", "--profile", "course-b"]));
    assert!(
        text.ends_with(&format!(
            "Account {COURSE_ACCOUNT} (profile course-b), {REGION}\n"
        )),
        "{text}"
    );

    // Launch notes are kept per account and region.
    let notes: BTreeSet<String> = std::fs::read_dir(emu.dir.path().join("cache/prism/launches"))
        .expect("the notes folder")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .map(|n| n.split('-').next().unwrap().to_string())
        .collect();
    assert_eq!(
        notes,
        BTreeSet::from([HOME_ACCOUNT.to_string(), COURSE_ACCOUNT.to_string()])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_fleet_name_in_two_accounts_is_two_fleets() {
    // The same manifest copied into two accounts: same fleet, workspace names and so
    // ClientTokens; each account gets its own instances, and neither apply sees the
    // other's fleet as its own or as another manifest's.
    let emu = Emulator::start();
    let home = emu.write("lab.yaml", &manifest("lab", 2, None));
    std::fs::create_dir_all(emu.dir.path().join("b")).unwrap();
    let course = emu.write("b/lab.yaml", &manifest("lab", 2, Some("course-b")));
    ok(prism(&emu, &["apply", home.to_str().unwrap(), "--yes"]));
    ok(prism(&emu, &["apply", course.to_str().unwrap(), "--yes"]));
    assert_eq!(live(&emu.ec2()).await, workspaces("lab", 2));
    assert_eq!(live(&course_ec2(&emu).await).await, workspaces("lab", 2));
    let launched_in: BTreeSet<Option<String>> = emu
        .calls()
        .into_iter()
        .filter(|c| c.action == "RunInstances" && c.code.is_none())
        .map(|c| c.account)
        .collect();
    assert_eq!(
        launched_in,
        BTreeSet::from([
            Some(HOME_ACCOUNT.to_string()),
            Some(COURSE_ACCOUNT.to_string())
        ])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_pass_keeps_the_fleet_in_its_manifests_account() {
    let emu = Emulator::start();
    let course = emu.write("course.yaml", &manifest("course-lab", 2, Some("course-b")));
    ok(prism(&emu, &["watch", "--once", course.to_str().unwrap()]));
    assert_eq!(live(&emu.ec2()).await, BTreeSet::new());
    assert_eq!(
        live(&course_ec2(&emu).await).await,
        workspaces("course-lab", 2)
    );
}

#[test]
fn the_endpoint_flag_reaches_the_role_assumption_too() {
    let emu = Emulator::start();
    let (config, credentials) = aws_files(&emu);
    let out = prism_command(&[
        "workspace",
        "list",
        "--profile",
        "course-b",
        "--endpoint-url",
        &emu.url,
    ])
    .env("XDG_CACHE_HOME", emu.dir.path().join("cache"))
    .env("AWS_CONFIG_FILE", config)
    .env("AWS_SHARED_CREDENTIALS_FILE", credentials)
    .output()
    .expect("prism runs");
    assert_eq!(
        ok(out),
        format!("No workspaces in account {COURSE_ACCOUNT} (profile course-b), {REGION}.\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_account_the_configuration_lacks_is_located_in_the_manifest() {
    let emu = Emulator::start();
    let path = emu.write("bad.yaml", &manifest("lab", 1, Some("course-c")));
    let path = path.to_str().unwrap();
    let out = prism(&emu, &["plan", path]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{path}:6:10: error: The profile `course-c` from the manifest's `account` is not defined in"
        )),
        "{err}"
    );
    assert!(err.contains("Did you mean `course-b`?"), "{err}");
    assert_eq!(emu.count("DescribeInstances"), 0, "nothing was sent to AWS");

    // --profile overrides the manifest's account for one command.
    let plan = json_of(prism(
        &emu,
        &["plan", path, "--profile", "course-b", "--format", "json"],
    ));
    assert_eq!(plan["actions"].as_array().map(Vec::len), Some(1), "{plan}");
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_launches_each_fleet_in_its_manifests_account() {
    const BULK: &str = "/api/v1/workspaces/bulk-launch";
    let emu = Emulator::start();
    let (config, credentials) = aws_files(&emu);
    let s = crate::serve::start_with(
        &emu,
        &emu.dir.path().join("state"),
        &[],
        &[
            ("AWS_CONFIG_FILE", config.to_str().unwrap()),
            ("AWS_SHARED_CREDENTIALS_FILE", credentials.to_str().unwrap()),
        ],
    );
    let mut ids = vec![];
    for body in [
        manifest("home-lab", 2, None),
        manifest("course-lab", 3, Some("course-b")),
    ] {
        let (st, _, v) = s.call("POST", BULK, &[], Some(&json!({ "manifest": body })));
        assert_eq!(st, 202, "{v}");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    // Each launch says where it launches, as its page does.
    for (id, place) in ids.iter().zip([
        format!("account {HOME_ACCOUNT}, us-west-2"),
        format!("account {COURSE_ACCOUNT} (profile course-b), us-west-2"),
    ]) {
        let done = s.until_over(id);
        assert_eq!(done["state"], "succeeded", "{done}");
        assert_eq!(done["place"], place.as_str(), "{done}");
        let (st, page) = s.page(&format!("/launches/{id}"));
        assert_eq!(st, 200);
        assert!(page.contains(&format!("· in {place}")), "{page}");
    }
    let (_, quotas) = s.page("/quotas");
    assert!(
        quotas.contains(&format!("In account {HOME_ACCOUNT}, us-west-2")),
        "the quotas page names the server's own account"
    );
    assert_eq!(live(&emu.ec2()).await, workspaces("home-lab", 2));
    assert_eq!(
        live(&course_ec2(&emu).await).await,
        workspaces("course-lab", 3)
    );

    // The workspace rows are those of the server's own account, and say so.
    let (st, _, rows) = s.call("GET", "/api/v1/workspaces", &[], None);
    assert_eq!(st, 200, "{rows}");
    let shown: BTreeSet<(String, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["account"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        BTreeSet::from([
            ("home-lab-01".to_string(), HOME_ACCOUNT.to_string()),
            ("home-lab-02".to_string(), HOME_ACCOUNT.to_string()),
        ])
    );
}
