//! Watch replicas that share a DynamoDB table (`--store dynamodb://TABLE`, served by
//! the emulator's moto): one reconciles at a time, another takes over within the
//! lease's TTL when it dies, and one paused past its lease launches nothing when it
//! wakes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::emulator::{Emulator, Running, per_workspace, prism_command, stderr, stdout};
use crate::eventually::eventually;
use crate::watch::until_live;

const STORE: &str = "dynamodb://prism-state";
/// What a replica says when it takes the lease.
const HOLDING: &str = "INFO this replica (";
/// The lease's TTL plus one renewal interval, and some room for a busy machine.
const TAKEOVER: Duration = Duration::from_secs(20);

fn manifest(emu: &Emulator) -> PathBuf {
    let out = emu.prism(&["store", "init", STORE]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("Created the DynamoDB table prism-state"),
        "{}",
        stdout(&out)
    );
    emu.write(
        "lab.yaml",
        "name: lab\nproject: p\ntemplate: t\ncount: 3\nrate_limit: {rate_per_minute: 600, burst_size: 10}\ntemplates:\n  t: {image: ami-785db401, instance_type: t3.micro}\n",
    )
}

/// A `prism watch` replica of `path` named `name`: its log, and the port of its metrics.
fn replica(emu: &Emulator, path: &Path, name: &str) -> (Running, PathBuf, u16) {
    let log = emu.dir.path().join(format!("{name}.log"));
    let port = crate::metrics::free_port();
    let child = prism_command(&[
        "watch",
        "--resync",
        "1s",
        "--store",
        STORE,
        "--metrics-listen",
        &format!("127.0.0.1:{port}"),
        path.to_str().unwrap(),
    ])
    .env("AWS_ENDPOINT_URL", &emu.url)
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap())
    .spawn()
    .unwrap();
    (Running(Some(child)), log, port)
}

/// What replica's metrics on `port` say of its lease: 1 held, 0 standing by.
fn lease_held(port: u16) -> f64 {
    crate::metrics::sum(&crate::metrics::scrape(port, ""), "prism_lease_held", &[])
}

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// How many times each log says its replica took the lease.
fn takes(logs: &[&Path]) -> Vec<usize> {
    logs.iter()
        .map(|l| read(l).matches(HOLDING).count())
        .collect()
}

/// The one replica of `logs` that holds the lease once every replica has said where it
/// stands; fails if two do.
fn the_holder(logs: &[&Path]) -> usize {
    eventually(
        "every replica to say whether it holds the lease",
        Duration::from_secs(20),
        || {
            let said: Vec<String> = logs.iter().map(|l| read(l)).collect();
            let holding: Vec<usize> = (0..logs.len())
                .filter(|i| said[*i].contains(HOLDING))
                .collect();
            let standing = said.iter().filter(|s| s.contains("standing by")).count();
            assert!(
                holding.len() <= 1,
                "two replicas hold the lease:\n{}",
                said.join("\n---\n")
            );
            match holding[..] {
                [h] if standing == logs.len() - 1 => Ok(h),
                _ => Err(said.join("\n---\n")),
            }
        },
    )
}

/// Terminates `workspace`'s instance, as someone in the console would.
async fn drift(emu: &Emulator, workspace: &str) {
    let id = crate::emulator::fleet_instances(emu, "lab")
        .await
        .into_iter()
        .find(|i| {
            crate::emulator::tag(i, "prism:workspace") == Some(workspace)
                && crate::emulator::state(i) == "running"
        })
        .and_then(|i| i.instance_id)
        .expect("a running instance");
    emu.ec2()
        .terminate_instances()
        .instance_ids(id)
        .send()
        .await
        .unwrap();
}

/// Waits until the fleet is whole again after a drift, and a few more passes have had
/// their chance to repair it twice: how many instances the fleet has had in all
/// (terminated ones too).
async fn repaired(emu: &Emulator) -> usize {
    until_live(emu, 3).await;
    let since = emu.fleet_reads();
    crate::watch::until_passes(emu, since, 3).await;
    crate::emulator::fleet_instances(emu, "lab").await.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_repair_drift_once_and_hand_over_when_the_holder_dies() {
    let emu = Emulator::start();
    let path = manifest(&emu);
    let (a, a_log, a_port) = replica(&emu, &path, "a");
    let (b, b_log, b_port) = replica(&emu, &path, "b");
    let (c, c_log, c_port) = replica(&emu, &path, "c");
    let logs = [a_log.as_path(), b_log.as_path(), c_log.as_path()];
    until_live(&emu, 3).await;
    let first = the_holder(&logs);
    let held: Vec<f64> = [a_port, b_port, c_port].map(lease_held).to_vec();
    let mut expected = vec![0.0; 3];
    expected[first] = 1.0;
    assert_eq!(held, expected, "prism_lease_held of each replica");

    drift(&emu, "lab-02").await;
    assert_eq!(
        repaired(&emu).await,
        4,
        "the drift is repaired once, by the holder alone"
    );

    // The holder dies without giving the lease up: another takes it within the TTL.
    let mut running = [a, b, c];
    let dead = running[first].0.take().unwrap();
    let mut dead = dead;
    dead.kill().unwrap();
    dead.wait().unwrap();
    let died = Instant::now();
    let before = takes(&logs);
    let second = eventually("another replica to take the lease", TAKEOVER, || {
        let now = takes(&logs);
        match (0..logs.len()).find(|i| *i != first && now[*i] > before[*i]) {
            Some(i) => Ok(i),
            None => Err(format!("{now:?}")),
        }
    });
    let took = died.elapsed();
    assert!(took <= TAKEOVER, "taken over after {took:?}");
    eprintln!("taken over {took:?} after the holder was killed");

    drift(&emu, "lab-03").await;
    assert_eq!(repaired(&emu).await, 5, "repaired once, by the new holder");
    assert_eq!(
        per_workspace(&emu, "lab")
            .await
            .values()
            .copied()
            .collect::<Vec<_>>(),
        [1, 1, 1]
    );
    let third = (0..3).find(|i| *i != first && *i != second).unwrap();
    assert!(
        !read(logs[third]).contains(HOLDING),
        "the third replica stood by throughout:\n{}",
        read(logs[third])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_holder_paused_past_its_lease_launches_nothing_when_it_wakes() {
    let emu = Emulator::start();
    let path = manifest(&emu);
    let (a, a_log, _) = replica(&emu, &path, "a");
    until_live(&emu, 3).await;
    let (_b, b_log, _) = replica(&emu, &path, "b");
    let logs = [a_log.as_path(), b_log.as_path()];
    assert_eq!(the_holder(&logs), 0);
    let pid = a.0.as_ref().unwrap().id().to_string();
    let signal = |sig: &str| {
        assert!(
            std::process::Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        )
    };
    signal("-STOP");
    drift(&emu, "lab-01").await;
    eventually("the other replica to take the lease", TAKEOVER, || {
        file_has(&b_log, HOLDING)
    });
    until_live(&emu, 3).await;
    // Another drift, then awake again: the paused replica still thinks it holds the
    // lease and plans the launch, but cannot note it (the store refuses its epoch), so
    // it sends nothing; the holder repairs the drift.
    drift(&emu, "lab-02").await;
    let woke_at = read(&a_log).len();
    signal("-CONT");
    eventually("the paused replica to stand by", TAKEOVER, || {
        file_has(&a_log, "standing by")
    });
    assert_eq!(
        repaired(&emu).await,
        5,
        "one launch for each drift, by the holder"
    );
    assert_eq!(
        per_workspace(&emu, "lab")
            .await
            .values()
            .copied()
            .collect::<Vec<_>>(),
        [1, 1, 1]
    );
    // A one-off pass while a replica holds the lease leaves it to the holder.
    let once = emu.prism(&["watch", "--once", "--store", STORE, path.to_str().unwrap()]);
    assert_eq!(once.status.code(), Some(0), "{}", stderr(&once));
    assert!(
        stderr(&once).contains("another replica reconciles: no pass here"),
        "{}",
        stderr(&once)
    );
    let since_waking = read(&a_log)[woke_at..].to_string();
    assert!(!since_waking.contains("launched ("), "{since_waking}");
    if since_waking.contains("another replica holds the lease") {
        eprintln!("the woken replica planned a launch and was fenced");
    }
    drop(a);
}

fn file_has(log: &Path, needle: &str) -> Result<(), String> {
    let text = read(log);
    if text.contains(needle) {
        Ok(())
    } else {
        Err(text)
    }
}
