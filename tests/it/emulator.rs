//! The local AWS emulator, one per test: started on a free loopback port, stopped when
//! the handle drops. Tests fail loudly when it is not installed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ec2::types::{InstanceType, ResourceType, Tag, TagSpecification};
use serde_json::{Value, json};

/// An AMI that the emulator knows in every region.
pub const AMI: &str = "ami-785db401";
pub const REGION: &str = "us-west-2";

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("PRISM_EMULATOR_PYTHON") {
        return p.into();
    }
    let venv = std::env::var_os("PRISM_EMULATOR_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/prism/emulator-venv")
        });
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "the AWS emulator is not installed at {}: run scripts/emulator-setup (scripts/test does it)",
        venv.display()
    );
    python
}

/// A running emulator.
pub struct Emulator {
    child: Child,
    pub url: String,
    pub dir: tempfile::TempDir,
}

/// One AWS call the emulator received.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Call {
    /// The service called (`ec2`, `dynamodb`, …).
    #[serde(default)]
    pub service: String,
    pub action: String,
    /// The names of a Describe call's filters.
    #[serde(default)]
    pub filters: Vec<String>,
    /// When the call came, in seconds since the epoch.
    #[serde(default)]
    pub time: f64,
    /// The error code answered, if any.
    #[serde(default)]
    pub code: Option<String>,
    /// The account the call acted in.
    #[serde(default)]
    pub account: Option<String>,
}

impl Emulator {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port_file = dir.path().join("port");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/emulator/prism_emulator.py");
        let log = std::fs::File::create(dir.path().join("emulator.log")).expect("log file");
        let mut child = Command::new(python())
            .arg(script)
            .args(["--port", "0", "--port-file"])
            .arg(&port_file)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the emulator starts");
        let deadline = Instant::now() + Duration::from_secs(60);
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                break p;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log =
                    std::fs::read_to_string(dir.path().join("emulator.log")).unwrap_or_default();
                panic!("the emulator exited ({status}):\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "the emulator did not start within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Emulator {
            child,
            url: format!("http://127.0.0.1:{}", port.trim()),
            dir,
        }
    }

    pub fn post(&self, path: &str, body: Value) -> Value {
        ureq::post(&format!("{}{path}", self.url))
            .send_json(body)
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
            .body_mut()
            .read_json()
            .expect("json answer")
    }

    /// Every AWS call received so far.
    pub fn calls(&self) -> Vec<Call> {
        let v: Value = ureq::get(&format!("{}/_prism/calls", self.url))
            .call()
            .expect("GET calls")
            .body_mut()
            .read_json()
            .expect("json answer");
        serde_json::from_value(v["calls"].clone()).expect("calls")
    }

    /// Number of calls of `action`.
    pub fn count(&self, action: &str) -> usize {
        self.call_counts().get(action).copied().unwrap_or(0)
    }

    /// Number of calls per action.
    pub fn call_counts(&self) -> std::collections::BTreeMap<String, usize> {
        let mut out = std::collections::BTreeMap::new();
        for c in self.calls() {
            *out.entry(c.action).or_default() += 1;
        }
        out
    }

    /// How many times prism has read a fleet's live instances (DescribeInstances by the
    /// `prism:fleet` tag and the instance state) since the call log was cleared: a watch
    /// does it once at the start of each pass. The tests' own reads
    /// ([`fleet_instances`]: by the tag only) do not count.
    pub fn fleet_reads(&self) -> usize {
        self.calls()
            .iter()
            .filter(|c| {
                c.action == "DescribeInstances"
                    && c.filters.iter().any(|f| f == "tag:prism:fleet")
                    && c.filters.iter().any(|f| f == "instance-state-name")
            })
            .count()
    }

    /// Ends EC2's lag: every instance hidden so far shows, and new ones are not hidden.
    pub fn reveal(&self) {
        self.post(
            "/_prism/lag",
            serde_json::json!({"seconds": 0, "reveal": true}),
        );
    }

    pub fn clear_calls(&self) {
        ureq::delete(&format!("{}/_prism/calls", self.url))
            .call()
            .expect("DELETE calls");
    }

    /// Applies a quota value in the tests' region.
    pub fn set_quota(&self, service: &str, code: &str, value: f64) {
        self.set_quota_in(REGION, service, code, value);
    }

    /// Applies a quota value in `region`; quotas are per region.
    pub fn set_quota_in(&self, region: &str, service: &str, code: &str, value: f64) {
        self.post(
            "/_prism/quotas",
            json!({ "region": region, service: { code: value } }),
        );
    }

    /// An EC2 client on the emulator, for setting up a test's account.
    pub fn ec2(&self) -> aws_sdk_ec2::Client {
        let config = aws_sdk_ec2::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&self.url)
            .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
            .build();
        aws_sdk_ec2::Client::from_conf(config)
    }

    /// Writes `text` to a file in this test's folder.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write file");
        path
    }

    /// Runs the prism binary against this emulator.
    pub fn prism(&self, args: &[&str]) -> Output {
        prism_command(args)
            .env("AWS_ENDPOINT_URL", &self.url)
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
            .output()
            .expect("prism runs")
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The prism binary with test credentials and a clean environment.
pub fn prism_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_prism"));
    cmd.args(args)
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("RUST_LOG")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        // Launch notes in each test's own cache folder, whatever this machine has.
        .env("PRISM_SHARED_DIR", "/nonexistent/prism-shared")
        .env("NO_COLOR", "1");
    cmd
}

/// Launches `count` instances, tagged as workspaces of `fleet` when given.
pub async fn launch(
    ec2: &aws_sdk_ec2::Client,
    fleet: Option<&str>,
    workspace: Option<&str>,
    instance_type: &str,
    count: i32,
) -> Vec<String> {
    let mut tags = Vec::new();
    if let Some(f) = fleet {
        tags.push(Tag::builder().key("prism:fleet").value(f).build());
    }
    if let Some(w) = workspace {
        tags.push(Tag::builder().key("prism:workspace").value(w).build());
    }
    let mut req = ec2
        .run_instances()
        .image_id(AMI)
        .instance_type(InstanceType::from(instance_type))
        .min_count(count)
        .max_count(count);
    if !tags.is_empty() {
        req = req.tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .set_tags(Some(tags))
                .build(),
        );
    }
    let out = req.send().await.expect("RunInstances");
    out.instances()
        .iter()
        .map(|i| i.instance_id().unwrap().to_string())
        .collect()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every instance of `fleet` (by its `prism:fleet` tag) that the emulator describes,
/// terminated ones included.
pub async fn fleet_instances(emu: &Emulator, fleet: &str) -> Vec<aws_sdk_ec2::types::Instance> {
    let out = emu
        .ec2()
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:prism:fleet")
                .values(fleet)
                .build(),
        )
        .send()
        .await
        .expect("DescribeInstances");
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .cloned()
        .collect()
}

/// The snapshots of `fleet` (by their `prism:fleet` tag) the emulator describes.
pub async fn fleet_snapshots(emu: &Emulator, fleet: &str) -> Vec<aws_sdk_ec2::types::Snapshot> {
    emu.ec2()
        .describe_snapshots()
        .owner_ids("self")
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:prism:fleet")
                .values(fleet)
                .build(),
        )
        .send()
        .await
        .expect("DescribeSnapshots")
        .snapshots()
        .to_vec()
}

/// The value of tag `key` of snapshot `s`.
pub fn snapshot_tag<'a>(s: &'a aws_sdk_ec2::types::Snapshot, key: &str) -> Option<&'a str> {
    s.tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

/// The value of tag `key` of instance `i`.
pub fn tag<'a>(i: &'a aws_sdk_ec2::types::Instance, key: &str) -> Option<&'a str> {
    i.tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

/// The state name of instance `i` (`running`, `terminated`, …).
pub fn state(i: &aws_sdk_ec2::types::Instance) -> String {
    i.state()
        .and_then(|s| s.name())
        .map(|n| n.as_str().to_string())
        .unwrap_or_default()
}

/// Live (not terminated) instances per workspace of `fleet`, and the total.
pub async fn per_workspace(
    emu: &Emulator,
    fleet: &str,
) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for i in fleet_instances(emu, fleet).await {
        if matches!(state(&i).as_str(), "terminated" | "shutting-down") {
            continue;
        }
        let ws = tag(&i, "prism:workspace").unwrap_or("?").to_string();
        *counts.entry(ws).or_default() += 1;
    }
    counts
}

/// Runs prism with `args` against `emu`, sends SIGINT once the emulator has received a
/// call of `action` (still in flight when the emulator holds it), and returns the exit
/// code and everything prism printed on stdout.
pub fn interrupt_once_sent(emu: &Emulator, args: &[&str], action: &str) -> (Option<i32>, String) {
    use std::io::Read;
    let mut child = spawn_piped(emu, args);
    let mut out = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        text
    });
    crate::eventually::eventually(
        &format!("prism sends {action}"),
        std::time::Duration::from_secs(30),
        || emu.calls().iter().any(|c| c.action == action).then_some(()),
    );
    let code = interrupt(child);
    (code, reader.join().expect("stdout read"))
}

/// Runs prism with `args` against `emu`, sends SIGINT once a stdout line contains
/// `marker`, and returns the exit code and the stdout lines that followed.
pub fn interrupt_after(emu: &Emulator, args: &[&str], marker: &str) -> (Option<i32>, String) {
    use std::io::{BufRead, BufReader};
    let mut child = spawn_piped(emu, args);
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    for line in lines.by_ref() {
        if line.expect("a line").contains(marker) {
            break;
        }
    }
    let waited = std::thread::spawn(move || interrupt(child));
    let rest: Vec<String> = lines.map(|l| l.expect("a line")).collect();
    let code = waited.join().expect("prism exits");
    (code, rest.join("\n"))
}

/// prism with `args` against `emu`, its stdout piped.
fn spawn_piped(emu: &Emulator, args: &[&str]) -> Child {
    prism_command(args)
        .env("AWS_ENDPOINT_URL", &emu.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("prism runs")
}

/// Sends SIGINT to `child` and waits for it: its exit code.
fn interrupt(mut child: Child) -> Option<i32> {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill runs")
            .success()
    );
    child.wait().expect("prism exits").code()
}

/// A prism process that is killed if the test fails before stopping it.
pub struct Running(pub Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Stops a running prism with SIGTERM; its exit code.
pub fn stop(mut running: Running) -> Option<i32> {
    let mut child = running.0.take().expect("running");
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    child.wait().unwrap().code()
}

/// The calls that change an account.
pub const MUTATING: &[&str] = &[
    "RunInstances",
    "StartInstances",
    "StopInstances",
    "TerminateInstances",
    "CreateTags",
    "CreateSnapshots",
];

/// The changing calls `emu` received, in order.
pub fn mutating_calls(emu: &Emulator) -> Vec<String> {
    emu.calls()
        .into_iter()
        .map(|c| c.action)
        .filter(|a| MUTATING.contains(&a.as_str()))
        .collect()
}
