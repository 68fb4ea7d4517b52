//! Watch replicas that share a DynamoDB table (`--store dynamodb://TABLE`, served by
//! the emulator's moto): one reconciles at a time, another takes over within the
//! lease's TTL when it dies, and one paused past its lease launches nothing when it
//! wakes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::emulator::{Emulator, Running, per_workspace, prism_command, stderr, stdout};
use crate::eventually::eventually;
use crate::serve::Server;
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
    replica_set(emu, path, name, false)
}

/// [`replica`], told the store by `--store`, or with `in_settings` by the settings
/// file's `store`.
fn replica_set(
    emu: &Emulator,
    path: &Path,
    name: &str,
    in_settings: bool,
) -> (Running, PathBuf, u16) {
    let log = emu.dir.path().join(format!("{name}.log"));
    let port = crate::metrics::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["watch", "--resync", "1s", "--metrics-listen", &listen];
    if !in_settings {
        args.extend(["--store", STORE]);
    }
    args.push(path.to_str().unwrap());
    let mut command = prism_command(&args);
    if in_settings {
        let settings = emu.write(
            &format!("{name}-settings.yaml"),
            &format!("store: {STORE}\n"),
        );
        command.env("PRISM_CONFIG", settings);
    }
    let child = command
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
    // The third is told the store by its settings file.
    let (c, c_log, c_port) = replica_set(&emu, &path, "c", true);
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
    let pid = a.0.as_ref().unwrap().id();
    let signal = |sig: &str| signal(pid, sig);
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

/// Sends `sig` (`-STOP`, `-CONT`) to process `pid`.
fn signal(pid: u32, sig: &str) {
    let sent = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill {sig} {pid}");
}

fn file_has(log: &Path, needle: &str) -> Result<(), String> {
    let text = read(log);
    if text.contains(needle) {
        Ok(())
    } else {
        Err(text)
    }
}

/// A `prism serve` replica on the shared table, its log in `NAME.log`.
fn serve_replica(emu: &Emulator, name: &str) -> (crate::serve::Server, PathBuf) {
    serve_replica_with(emu, name, &[])
}

/// [`serve_replica`] with more arguments.
fn serve_replica_with(emu: &Emulator, name: &str, extra: &[&str]) -> (Server, PathBuf) {
    let state = emu.dir.path().join(format!("{name}-state"));
    std::fs::create_dir_all(&state).unwrap();
    let log = emu.dir.path().join(format!("{name}.log"));
    let server = crate::serve::start_logged(
        emu,
        &state,
        &[&["--store", STORE], extra].concat(),
        &[],
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    (server, log)
}

/// The (id, event name) of each event a stream gave, as they come.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(usize, String)>>>;

/// Follows launch `id`'s event stream on `port` from the start until the stream ends or
/// its server dies: (id, event name) of each event, as they come.
fn follow(port: u16, token: &str, id: &str) -> (Seen, std::thread::JoinHandle<()>) {
    use std::io::{BufRead, BufReader, Write};
    let seen = Seen::default();
    let out = seen.clone();
    let req = format!(
        "GET /api/v1/workspaces/bulk-launch/{id}/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n"
    );
    let reader = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let (mut n, mut name) = (0, String::new());
        for line in BufReader::new(s).lines() {
            let Ok(line) = line else { return };
            if let Some(v) = line.strip_prefix("id: ") {
                n = v.parse().unwrap();
            } else if let Some(v) = line.strip_prefix("event: ") {
                name = v.to_string();
            } else if line.starts_with("data: ") && n > 0 {
                out.lock().unwrap().push((n, name.clone()));
            }
        }
    });
    (seen, reader)
}

/// Two serve replicas on one table, A running a launch of 100 workspaces (at an
/// explicit pace, long enough to stop A in the middle of it) that B shows 20 of done:
/// (A, its log, B, its log, the launch's id).
fn launching_on_a(emu: &Emulator) -> (Server, PathBuf, Server, PathBuf, String) {
    manifest(emu);
    emu.set_quota("ec2", "L-1216C47A", 256.0);
    let (a, a_log) = serve_replica(emu, "a");
    let (b, b_log) = serve_replica(emu, "b");
    assert_eq!(a.token, b.token, "the replicas share the table's API token");
    let body = serde_json::json!({
        "manifest": crate::serve::manifest("class", 100, "{rate_per_minute: 300, burst_size: 5}"),
    });
    let (st, _, created) = a.call(
        "POST",
        "/api/v1/workspaces/bulk-launch",
        &[("Idempotency-Key", "class-1")],
        Some(&body),
    );
    assert_eq!(st, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    // Any replica answers for it, and the same key names the same launch on B.
    let (st, _, again) = b.call(
        "POST",
        "/api/v1/workspaces/bulk-launch",
        &[("Idempotency-Key", "class-1")],
        Some(&body),
    );
    assert_eq!(
        (st, again["id"].as_str()),
        (202, Some(id.as_str())),
        "{again}"
    );
    eventually(
        "B to show the launch's progress",
        Duration::from_secs(60),
        || {
            let l = b.launch(&id);
            if l["progress"]["completed"].as_u64() >= Some(20) {
                Ok(())
            } else {
                Err(l)
            }
        },
    );
    (a, a_log, b, b_log, id)
}

/// Waits until B says it took launch `id` over: how long after `since`.
fn taken_over(b_log: &Path, id: &str, since: Instant) -> Duration {
    eventually("B to take the launch over", TAKEOVER, || {
        file_has(b_log, &format!("takes launch {id} of fleet `class` over"))
    });
    since.elapsed()
}

/// The launch ended on B with every workspace done; the events a client saw before
/// (`before`, from the start) and then from B with `Last-Event-ID` are each event
/// exactly once, in order; the fleet has one instance per workspace, and never had
/// more.
async fn done_once(emu: &Emulator, b: &Server, b_log: &Path, id: &str, before: &[(usize, String)]) {
    let done = b.until_over(id);
    assert_eq!(done["state"], "succeeded", "{done}\n{}", read(b_log));
    assert_eq!(done["progress"]["completed"], 100, "{done}");
    let last = before.last().map_or(0, |e| e.0);
    let (st, rest) = b.events(id, Some(last));
    assert_eq!(st, 200);
    let ids: Vec<usize> = before
        .iter()
        .map(|e| e.0)
        .chain(rest.iter().map(|e| e.0))
        .collect();
    let total = done["events"].as_u64().unwrap() as usize;
    assert_eq!(
        ids,
        (1..=total).collect::<Vec<_>>(),
        "each event exactly once, in order"
    );
    assert_eq!(
        rest.last().map(|e| e.1.as_str()),
        Some("summary"),
        "{:?}",
        &rest[rest.len().saturating_sub(5)..]
    );
    assert!(
        rest.iter().any(|e| e.1 == "taken_over"),
        "the stream says where the launch was carried on"
    );
    let counts = per_workspace(emu, "class").await;
    assert_eq!(counts.len(), 100, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    assert_eq!(
        crate::emulator::fleet_instances(emu, "class").await.len(),
        100,
        "no instance launched twice"
    );
    let dynamodb: Vec<String> = emu
        .calls()
        .iter()
        .filter(|c| c.service == "dynamodb")
        .map(|c| c.action.clone())
        .collect();
    eprintln!(
        "DynamoDB requests for the launch of 100 on two replicas: {} in all, {:?}",
        dynamodb.len(),
        dynamodb.iter().fold(
            std::collections::BTreeMap::<&str, usize>::new(),
            |mut m, a| {
                *m.entry(a.as_str()).or_default() += 1;
                m
            }
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_replicas_carry_a_launch_on_when_the_one_running_it_dies() {
    let emu = Emulator::start();
    let (mut a, _, b, b_log, id) = launching_on_a(&emu);
    let (on_a, reader) = follow(a.port, &a.token, &id);
    std::thread::sleep(Duration::from_secs(1));
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let died = Instant::now();
    reader.join().unwrap();
    let seen_on_a = on_a.lock().unwrap().clone();
    assert!(!seen_on_a.is_empty(), "A sent events before it died");
    let took = taken_over(&b_log, &id, died);
    assert!(took <= TAKEOVER, "taken over after {took:?}");
    eprintln!("launch taken over {took:?} after its replica was killed");
    done_once(&emu, &b, &b_log, &id, &seen_on_a).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_serve_replica_paused_past_its_lease_writes_and_launches_nothing_when_it_wakes() {
    let emu = Emulator::start();
    let (a, a_log, b, b_log, id) = launching_on_a(&emu);
    let pid = a.child.id();
    let signal = |sig: &str| signal(pid, sig);
    signal("-STOP");
    let paused = Instant::now();
    taken_over(&b_log, &id, paused);
    // Awake again in the middle of B's run: A's next write is refused (another epoch),
    // so it stops its run and shows the launch as the table has it.
    let woke_at = read(&a_log).len();
    signal("-CONT");
    eventually("A to find its lease lost", TAKEOVER, || {
        file_has(&a_log, "this replica lost the lease")
    });
    done_once(&emu, &b, &b_log, &id, &[]).await;
    let on_a = eventually("A to show the end", Duration::from_secs(10), || {
        let l = a.launch(&id);
        if l["state"] == "succeeded" {
            Ok(l)
        } else {
            Err(l)
        }
    });
    assert_eq!(on_a["events"], b.launch(&id)["events"]);
    let since_waking = read(&a_log)[woke_at..].to_string();
    assert!(
        !since_waking.contains("takes launch"),
        "A took nothing back:\n{since_waking}"
    );
}

/// The status of page `path` on `server` for a browser with session cookie `session`.
fn page_status(server: &Server, path: &str, session: &str) -> u16 {
    let port = server.port;
    crate::serve::raw(
        port,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: prism_session={session}\r\nConnection: close\r\n\r\n"
        ),
    )
    .0
}

#[test]
fn serve_replicas_share_browser_sessions_and_quota_request_notes() {
    let emu = Emulator::start();
    manifest(&emu);
    let (a, _) = serve_replica(&emu, "a");
    let (b, _) = serve_replica(&emu, "b");
    // Signed in on A, the browser is let in by B (a load balancer may send it there).
    let session = a.sign_in();
    assert_eq!(page_status(&a, "/quotas", &session), 200);
    assert_eq!(page_status(&b, "/quotas", &session), 200);
    assert_eq!(page_status(&b, "/quotas", "no-such-session"), 303);

    // A quota request sent through A is shown with its reason by B.
    let (st, _, sent) = a.call(
        "POST",
        "/api/v1/quotas/requests",
        &[],
        Some(&serde_json::json!({"quota": "L-1216C47A", "desired_value": 128, "reason": "a class of 30"})),
    );
    assert_eq!(st, 201, "{sent}");
    let request = sent["request_id"].as_str().unwrap();
    let (st, _, shown) = b.call(
        "GET",
        &format!("/api/v1/quotas/requests/{request}"),
        &[],
        None,
    );
    assert_eq!(
        (st, shown["reason"].as_str()),
        (200, Some("a class of 30")),
        "{shown}"
    );

    // Ended on B, the session ends on A too.
    let (_, _, list) = b.call("GET", "/api/v1/sessions", &[], None);
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{list}");
    let handle = sessions[0]["id"].as_str().unwrap();
    let (st, _, _) = b.call("DELETE", &format!("/api/v1/sessions/{handle}"), &[], None);
    assert!((200..300).contains(&st), "{st}");
    eventually(
        "A to end the session",
        Duration::from_secs(5),
        || match page_status(&a, "/quotas", &session) {
            303 => Ok(()),
            st => Err(st),
        },
    );
}
