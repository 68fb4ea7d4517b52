//! `prism serve` against the emulator: the security checks, and bulk launches through
//! the API (create, follow, cancel, event stream, idempotency, restart and resume).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::emulator::{Emulator, per_workspace, prism_command};

/// A running `prism serve`.
struct Server {
    child: Child,
    port: u16,
    token: String,
    first_line: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(emu: &Emulator, state: &Path, extra: &[&str]) -> Server {
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        state.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut child = prism_command(&args)
        .env("AWS_ENDPOINT_URL", &emu.url)
        .env("XDG_CACHE_HOME", emu.dir.path().join("cache"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("prism serve starts");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first_line = String::new();
    out.read_line(&mut first_line).unwrap();
    let first_line = first_line.trim_end().to_string();
    let port = first_line
        .strip_prefix("prism serve: listening on http://127.0.0.1:")
        .unwrap_or_else(|| panic!("first line: {first_line:?}"))
        .parse()
        .unwrap();
    // Keep reading stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let token = std::fs::read_to_string(state.join("token"))
        .unwrap()
        .trim()
        .to_string();
    Server {
        child,
        port,
        token,
        first_line,
    }
}

/// One HTTP/1.1 request sent as written: (status, headers, body).
fn raw(port: u16, request: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

impl Server {
    fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> (u16, String, Value) {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n",
            self.port, self.token
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        let (status, head, text) = raw(self.port, &req);
        (
            status,
            head,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }

    fn launch(&self, id: &str) -> Value {
        self.call(
            "GET",
            &format!("/api/v1/workspaces/bulk-launch/{id}"),
            &[],
            None,
        )
        .2
    }

    /// Waits until the launch is no longer queued, running or cancelling.
    fn until_over(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let l = self.launch(id);
            if !matches!(
                l["state"].as_str(),
                Some("queued" | "running" | "cancelling")
            ) {
                return l;
            }
            assert!(Instant::now() < deadline, "launch still {}", l["state"]);
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The SSE stream from `after`: (id, event name, data) of every event.
    fn events(&self, id: &str, after: Option<usize>) -> (u16, Vec<(usize, String, Value)>) {
        let last = after
            .map(|a| format!("Last-Event-ID: {a}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "GET /api/v1/workspaces/bulk-launch/{id}/events HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\n{last}Connection: close\r\n\r\n",
            self.port, self.token
        );
        let (status, _, body) = raw(self.port, &req);
        let mut out = vec![];
        let (mut n, mut name) = (0, String::new());
        for line in body.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                n = v.parse().unwrap();
            } else if let Some(v) = line.strip_prefix("event: ") {
                name = v.to_string();
            } else if let Some(v) = line.strip_prefix("data: ") {
                out.push((n, name.clone(), serde_json::from_str(v).unwrap()));
            }
        }
        (status, out)
    }
}

fn manifest(name: &str, count: usize, rate: &str) -> String {
    format!(
        "name: {name}\nproject: p\ntemplate: t\ncount: {count}\nrate_limit: {rate}\nretry: {{initial_backoff: 100ms, max_backoff: 1s}}\ntemplates:\n  t:\n    image: ami-785db401\n    instance_type: t3.micro\n"
    )
}

const FAST: &str = "{rate_per_minute: 600, burst_size: 10}";
const BULK: &str = "/api/v1/workspaces/bulk-launch";

#[test]
fn serve_guards_its_door() {
    let emu = Emulator::start();
    let state = emu.dir.path().join("state");
    let s = start(&emu, &state, &[]);
    assert!(
        s.first_line
            .starts_with("prism serve: listening on http://127.0.0.1:")
    );
    let mode = std::fs::metadata(state.join("token"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(s.token.len(), 43);

    let port = s.port;
    let (st, _, body) = raw(
        port,
        &format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!((st, body.as_str()), (200, r#"{"status":"ok"}"#));
    // No token, a wrong one.
    let (st, head, body) = raw(
        port,
        &format!("GET {BULK} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(st, 401);
    assert!(
        head.to_lowercase().contains("www-authenticate: bearer"),
        "{head}"
    );
    assert!(body.contains(r#""code":"Unauthorized""#), "{body}");
    let (st, _, _) = raw(
        port,
        &format!(
            "GET {BULK} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer x{}\r\nConnection: close\r\n\r\n",
            &s.token[1..]
        ),
    );
    assert_eq!(st, 401);
    // A foreign Host, even with the token (DNS rebinding).
    let (st, _, _) = raw(
        port,
        &format!(
            "GET {BULK} HTTP/1.1\r\nHost: evil.example:{port}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            s.token
        ),
    );
    assert_eq!(st, 403);
    // A cross-site POST, even with the token.
    let body = json!({"manifest": manifest("cs", 1, FAST)});
    let (st, _, err) = s.call(
        "POST",
        BULK,
        &[
            ("Origin", "http://evil.example"),
            ("Sec-Fetch-Site", "cross-site"),
        ],
        Some(&body),
    );
    assert_eq!(st, 403, "{err}");
    // Headers: no CORS, nosniff, no-store.
    let (st, head, _) = s.call("GET", BULK, &[("Origin", "http://evil.example")], None);
    assert_eq!(st, 200);
    let head = head.to_lowercase();
    assert!(
        head.contains("x-content-type-options: nosniff")
            && head.contains("cache-control: no-store"),
        "{head}"
    );
    assert!(!head.contains("access-control-"), "{head}");

    // Bad requests: not JSON, bad JSON, unknown field, too big, invalid manifest. No AWS call.
    emu.clear_calls();
    let (st, _, err) = raw(
        port,
        &format!(
            "POST {BULK} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {}\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}",
            s.token
        ),
    );
    assert_eq!(st, 415, "{err}");
    let (st, _, err) = raw(
        port,
        &format!(
            "POST {BULK} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{{nop:",
            s.token
        ),
    );
    assert_eq!(st, 400, "{err}");
    let (st, _, err) = s.call(
        "POST",
        BULK,
        &[],
        Some(&json!({"manifest": "x", "colour": 1})),
    );
    assert_eq!(st, 400);
    assert!(
        err["error"]["title"]
            .as_str()
            .unwrap()
            .contains("unknown field `colour`"),
        "{err}"
    );
    let big = json!({"manifest": "#".repeat(1024 * 1024 + 10)});
    let (st, _, err) = s.call("POST", BULK, &[], Some(&big));
    assert_eq!(st, 413, "{err}");
    let bad = "name: Lab_1\nprojct: p\ntemplate: t\ncount: 0\ntemplates:\n  t: {image: ami-1, instance_type: t3.micro}\n";
    let (st, _, err) = s.call("POST", BULK, &[], Some(&json!({"manifest": bad})));
    assert_eq!(st, 400, "{err}");
    assert_eq!(err["error"]["code"], "InvalidManifest");
    let problems = err["error"]["problems"].as_array().unwrap();
    assert!(problems.len() >= 3, "{err}");
    assert!(
        problems
            .iter()
            .all(|p| p["line"].as_u64().is_some() && p["column"].as_u64().is_some()),
        "{err}"
    );
    for k in [
        "title",
        "what_happened",
        "what_prism_does",
        "what_you_can_do",
    ] {
        assert!(err["error"][k].is_string(), "{k}: {err}");
    }
    assert_eq!(emu.calls().len(), 0, "no AWS call for bad requests");
}

#[test]
fn serve_refuses_a_remote_address_without_allow_remote() {
    let dir = tempfile::tempdir().unwrap();
    let out = prism_command(&[
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--state-dir",
        dir.path().to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a loopback address") && err.contains("--allow-remote"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_launch_succeeds_once_per_key_and_streams_every_event() {
    let emu = Emulator::start();
    let state = emu.dir.path().join("state");
    let s = start(&emu, &state, &[]);
    let body = json!({"manifest": manifest("cs", 4, FAST)});
    // The same Idempotency-Key at the same time and one after the other: one launch.
    let answers: Vec<(u16, String, Value)> = std::thread::scope(|t| {
        let hs: Vec<_> = (0..3)
            .map(|_| t.spawn(|| s.call("POST", BULK, &[("Idempotency-Key", "k1")], Some(&body))))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let id = answers[0].2["id"].as_str().unwrap().to_string();
    for (st, head, v) in &answers {
        assert_eq!(*st, 202, "{v}");
        assert_eq!(v["id"], id.as_str());
        assert!(head.contains(&format!("{BULK}/{id}")), "{head}");
    }
    let (st, _, again) = s.call("POST", BULK, &[("Idempotency-Key", "k1")], Some(&body));
    assert_eq!((st, again["id"].as_str()), (202, Some(id.as_str())));
    let other = json!({"manifest": manifest("cs", 5, FAST)});
    let (st, _, _) = s.call("POST", BULK, &[("Idempotency-Key", "k1")], Some(&other));
    assert_eq!(st, 422);

    let done = s.until_over(&id);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["progress"]["total"], 4);
    assert_eq!(done["progress"]["completed"], 4);
    assert_eq!(done["report"]["launched"], 4, "{done}");
    assert_eq!(done["workspaces"].as_array().unwrap().len(), 4);
    assert_eq!(emu.call_counts()["RunInstances"], 4);
    assert_eq!(per_workspace(&emu, "cs").await.len(), 4);

    // Gap-free ids; the data is what `apply --format json` prints.
    let (st, all) = s.events(&id, None);
    assert_eq!(st, 200);
    let ids: Vec<usize> = all.iter().map(|e| e.0).collect();
    assert_eq!(ids, (1..=all.len()).collect::<Vec<_>>());
    assert_eq!(all[0].1, "started");
    let last = all.last().unwrap();
    assert_eq!(
        (last.1.as_str(), last.2["event"].as_str()),
        ("summary", Some("summary"))
    );
    assert_eq!(last.2["launched"], 4);
    assert!(last.2["workspaces"].is_object(), "{}", last.2);
    // Resuming after an id sends the rest, no duplicates; after the last: 204.
    let (_, rest) = s.events(&id, Some(3));
    assert_eq!(
        rest.iter().map(|e| e.0).collect::<Vec<_>>(),
        (4..=all.len()).collect::<Vec<_>>()
    );
    assert_eq!(s.events(&id, Some(all.len())).0, 204);

    let (_, _, list) = s.call("GET", BULK, &[], None);
    assert_eq!(list["launches"].as_array().unwrap().len(), 1);
    // Cancelling a finished launch changes nothing.
    let (st, _, v) = s.call("DELETE", &format!("{BULK}/{id}"), &[], None);
    assert_eq!((st, v["state"].as_str()), (200, Some("succeeded")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_launch_makes_no_call_after_the_cancel() {
    let emu = Emulator::start();
    let s = start(&emu, &emu.dir.path().join("state"), &[]);
    let body = json!({"manifest": manifest("cx", 5, "{rate_per_minute: 60, burst_size: 1, adaptive: false}")});
    let (st, _, l) = s.call("POST", BULK, &[], Some(&body));
    assert_eq!(st, 202, "{l}");
    let id = l["id"].as_str().unwrap();
    // A second launch of the same fleet while it runs.
    let (st, _, err) = s.call("POST", BULK, &[], Some(&body));
    assert_eq!(st, 409, "{err}");
    assert_eq!(err["error"]["launch"], id);
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.launch(id)["progress"]["completed"] != 1 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    let (st, _, v) = s.call("DELETE", &format!("{BULK}/{id}"), &[], None);
    assert_eq!(st, 200);
    assert!(
        matches!(v["state"].as_str(), Some("cancelling" | "cancelled")),
        "{v}"
    );
    let runs_at_cancel = emu.call_counts()["RunInstances"];
    let done = s.until_over(id);
    assert_eq!(done["state"], "cancelled", "{done}");
    assert_eq!(
        emu.call_counts()["RunInstances"],
        runs_at_cancel,
        "no RunInstances after the cancel"
    );
    let launched = done["report"]["launched"].as_u64().unwrap() as usize;
    assert_eq!(per_workspace(&emu, "cx").await.len(), launched);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_launch_cut_short_by_kill_resumes_after_a_restart() {
    let emu = Emulator::start();
    let state = emu.dir.path().join("state");
    let mut s = start(&emu, &state, &[]);
    let body = json!({"manifest": manifest("rs", 5, "{rate_per_minute: 120, burst_size: 1, adaptive: false}")});
    let (st, _, l) = s.call("POST", BULK, &[("Idempotency-Key", "r1")], Some(&body));
    assert_eq!(st, 202, "{l}");
    let id = l["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.launch(&id)["progress"]["completed"].as_u64().unwrap_or(0) < 2 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    s.child.kill().unwrap(); // SIGKILL
    s.child.wait().unwrap();
    drop(s);

    let s = start(&emu, &state, &[]);
    let l = s.launch(&id);
    assert_eq!(
        (l["state"].as_str(), l["resumable"].as_bool()),
        (Some("interrupted"), Some(true)),
        "{l}"
    );
    let kept = l["events"].as_u64().unwrap() as usize;
    // The key survived the restart.
    let (st, _, again) = s.call("POST", BULK, &[("Idempotency-Key", "r1")], Some(&body));
    assert_eq!((st, again["id"].as_str()), (202, Some(id.as_str())));
    let (st, _, v) = s.call("POST", &format!("{BULK}/{id}/resume"), &[], None);
    assert_eq!(st, 202, "{v}");
    let done = s.until_over(&id);
    assert_eq!(done["state"], "succeeded", "{done}");
    let counts = per_workspace(&emu, "rs").await;
    assert_eq!(counts.len(), 5, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    let (_, all) = s.events(&id, None);
    assert_eq!(
        all.iter().map(|e| e.0).collect::<Vec<_>>(),
        (1..=all.len()).collect::<Vec<_>>()
    );
    assert!(all.len() > kept);
}

#[test]
fn sigterm_stops_the_server_and_marks_running_launches_interrupted() {
    let emu = Emulator::start();
    let state = emu.dir.path().join("state");
    let mut s = start(&emu, &state, &[]);
    let body = json!({"manifest": manifest("st", 5, "{rate_per_minute: 30, burst_size: 1, adaptive: false}")});
    let (st, _, l) = s.call("POST", BULK, &[], Some(&body));
    assert_eq!(st, 202, "{l}");
    let id = l["id"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(500));
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            break status.code();
        }
        assert!(Instant::now() < deadline, "the server did not stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(code, Some(0));
    let record: Value =
        serde_json::from_slice(&std::fs::read(state.join(format!("launches/{id}.json"))).unwrap())
            .unwrap();
    assert_eq!(record["state"], "interrupted", "{record}");
}
