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
use crate::eventually::eventually;

/// A running `prism serve`.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub token: String,
    first_line: String,
    /// The one-time sign-in link it printed.
    pub login: String,
    /// A browser session begun with the token, on first use.
    session: std::sync::OnceLock<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(emu: &Emulator, state: &Path, extra: &[&str]) -> Server {
    start_with(emu, state, extra, &[])
}

/// [`start`] with more environment variables.
pub fn start_with(emu: &Emulator, state: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
    start_logged(emu, state, extra, env, Stdio::null())
}

/// [`start_with`], its stderr (its log) going to `log`.
pub fn start_logged(
    emu: &Emulator,
    state: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
    log: Stdio,
) -> Server {
    let mut args = vec!["serve", "--state-dir", state.to_str().unwrap()];
    if !extra.contains(&"--listen") {
        args.extend(["--listen", "127.0.0.1:0"]);
    }
    args.extend_from_slice(extra);
    let mut child = prism_command(&args)
        .envs(env.iter().copied())
        .env("AWS_ENDPOINT_URL", &emu.url)
        .env("XDG_CACHE_HOME", emu.dir.path().join("cache"))
        .stdout(Stdio::piped())
        .stderr(log)
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
    let mut second = String::new();
    out.read_line(&mut second).unwrap();
    let login = second
        .trim_end()
        .strip_prefix("prism serve: sign in: ")
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("second line: {second:?}"))
        .to_string();
    assert!(
        login.starts_with(&format!("http://127.0.0.1:{port}/login?code=")),
        "{login}"
    );
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
        login,
        session: std::sync::OnceLock::new(),
    }
}

/// The value of cookie `name` that `head` (a response head) sets.
pub fn set_cookie<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .filter_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        })
        .find_map(|(_, v)| v.trim().strip_prefix(&format!("{name}=")))
        .and_then(|v| v.split(';').next())
}

/// One HTTP/1.1 request sent as written: (status, headers, body).
pub fn raw(port: u16, request: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut bytes = vec![];
    s.read_to_end(&mut bytes).unwrap();
    // A compressed body is no text: only its head matters then.
    let text = String::from_utf8_lossy(&bytes);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

impl Server {
    pub fn call(
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

    pub fn launch(&self, id: &str) -> Value {
        self.call(
            "GET",
            &format!("/api/v1/workspaces/bulk-launch/{id}"),
            &[],
            None,
        )
        .2
    }

    /// Signs in as a browser does with the token form: the session id.
    pub fn sign_in(&self) -> String {
        let port = self.port;
        let form = format!("token={}", self.token);
        let (st, head, _) = raw(
            port,
            &format!(
                "POST /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
                form.len()
            ),
        );
        assert_eq!(st, 303, "{head}");
        set_cookie(&head, "prism_session")
            .unwrap_or_else(|| panic!("no session cookie: {head}"))
            .to_string()
    }

    /// The `Cookie` header of a signed-in browser.
    pub fn cookie(&self) -> String {
        format!(
            "prism_session={}",
            self.session.get_or_init(|| self.sign_in())
        )
    }

    /// A page as a signed-in browser gets it: (status, HTML).
    pub fn page(&self, path: &str) -> (u16, String) {
        let port = self.port;
        let (st, _, html) = raw(
            port,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {}\r\nConnection: close\r\n\r\n",
                self.cookie()
            ),
        );
        (st, html)
    }

    /// Waits until the launch is no longer queued, running or cancelling.
    pub fn until_over(&self, id: &str) -> Value {
        eventually("the launch to end", Duration::from_secs(120), || {
            let l = self.launch(id);
            match l["state"].as_str() {
                Some("queued" | "running" | "cancelling") => Err(l),
                _ => Ok(l),
            }
        })
    }

    /// Waits until the launch has at least `n` workspaces done.
    pub fn until_completed(&self, id: &str, n: u64) {
        eventually(
            &format!("{n} workspaces done"),
            Duration::from_secs(30),
            || {
                let l = self.launch(id);
                if l["progress"]["completed"].as_u64() >= Some(n) {
                    Ok(())
                } else {
                    Err(l)
                }
            },
        )
    }

    /// The SSE stream from `after`: (id, event name, data) of every event.
    pub fn events(&self, id: &str, after: Option<usize>) -> (u16, Vec<(usize, String, Value)>) {
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

pub fn manifest(name: &str, count: usize, rate: &str) -> String {
    format!(
        "name: {name}\nproject: p\ntemplate: t\ncount: {count}\nrate_limit: {rate}\nretry: {{initial_backoff: 100ms, max_backoff: 1s}}\ntemplates:\n  t:\n    image: ami-785db401\n    instance_type: t3.micro\n"
    )
}

/// The calls of the quota surveys `emu` answered (each reads every quota's value and
/// default).
pub fn survey_calls(emu: &Emulator) -> usize {
    emu.count("GetServiceQuota") + emu.count("GetAWSDefaultServiceQuota")
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
            "GET {BULK} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {}{}\r\nConnection: close\r\n\r\n",
            // One character changed: never the token itself.
            if s.token.starts_with('x') { 'y' } else { 'x' },
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
    let long = "k".repeat(256);
    let (st, _, e) = s.call("POST", BULK, &[("Idempotency-Key", &long)], Some(&other));
    assert_eq!(st, 400, "{e}");
    assert!(
        e["error"]["title"].as_str().unwrap().contains("1 to 255"),
        "{e}"
    );

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
    s.until_completed(id, 1);
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
    s.until_completed(&id, 2);
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
    // The table and the totals keep what launched before the restart.
    assert_eq!(done["workspaces"].as_array().unwrap().len(), 5, "{done}");
    assert_eq!(
        (&done["progress"]["total"], &done["progress"]["completed"]),
        (&json!(5), &json!(5)),
        "{done}"
    );
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
    let code = eventually("the server to stop", Duration::from_secs(60), || {
        s.child.try_wait().unwrap().map(|status| status.code())
    });
    assert_eq!(code, Some(0));
    let record: Value =
        serde_json::from_slice(&std::fs::read(state.join(format!("launches/{id}.json"))).unwrap())
            .unwrap();
    assert_eq!(record["state"], "interrupted", "{record}");
}

fn cli_json(emu: &Emulator, args: &[&str]) -> Value {
    let out = emu.prism(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A request's row without what the server keeps beside AWS's answer.
fn without_notes(mut row: Value) -> Value {
    let o = row.as_object_mut().unwrap();
    o.remove("reason");
    o.remove("value_at_request");
    row
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_endpoints_answer_as_the_cli_and_alert_past_50_and_80_percent() {
    let emu = Emulator::start();
    emu.set_quota("ec2", "L-1216C47A", 200.0);
    let s = start(&emu, &emu.dir.path().join("state"), &[]);
    let ec2 = emu.ec2();
    // t3.micro has 2 vCPUs: 49, 51, 79 and 81 % of 200.
    let mut running = 0;
    for (percent, severity) in [
        (49, None),
        (51, Some("warning")),
        (79, Some("warning")),
        (81, Some("critical")),
    ] {
        let want = percent * 2 / 2;
        crate::emulator::launch(&ec2, None, None, "t3.micro", want - running).await;
        running = want;
        let (st, _, alerts) = s.call(
            "GET",
            "/api/v1/quotas/alerts",
            &[("Cache-Control", "no-cache")],
            None,
        );
        assert_eq!(st, 200, "{alerts}");
        assert_eq!(
            alerts,
            cli_json(&emu, &["quota", "alerts", "--format", "json"]),
            "{percent} %"
        );
        let standard: Vec<&Value> = alerts
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["code"] == "L-1216C47A")
            .collect();
        assert_eq!(
            standard.first().map(|a| a["severity"].as_str().unwrap()),
            severity,
            "{percent} %: {alerts}"
        );
    }
    let (st, _, rows) = s.call("GET", "/api/v1/quotas", &[], None);
    assert_eq!(st, 200);
    assert_eq!(rows, cli_json(&emu, &["quota", "show", "--format", "json"]));
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["adjustable"] == true),
        "{rows}"
    );
    let (_, _, one) = s.call("GET", "/api/v1/quotas/on-demand-vcpus", &[], None);
    let (_, _, by_code) = s.call("GET", "/api/v1/quotas/L-1216C47A", &[], None);
    assert_eq!(one, by_code);
    assert_eq!(
        (one["usage"].as_f64(), one["limit"].as_f64()),
        (Some(162.0), Some(200.0))
    );
    assert_eq!(one["status"], "critical");
    let (st, _, err) = s.call("GET", "/api/v1/quotas/no-such-quota", &[], None);
    assert_eq!(
        (st, err["error"]["code"].as_str()),
        (404, Some("UnknownQuota"))
    );

    // Asking for an increase: refused unless above the current value, with a reason.
    const REQS: &str = "/api/v1/quotas/requests";
    emu.clear_calls();
    let low = json!({"quota": "on-demand-vcpus", "desired_value": 200, "reason": "course"});
    let (st, _, err) = s.call("POST", REQS, &[], Some(&low));
    assert_eq!(
        (st, err["error"]["code"].as_str()),
        (422, Some("DesiredNotAbove")),
        "{err}"
    );
    let no_reason = json!({"quota": "on-demand-vcpus", "desired_value": 300, "reason": " "});
    assert_eq!(s.call("POST", REQS, &[], Some(&no_reason)).0, 400);
    let extra =
        json!({"quota": "on-demand-vcpus", "desired_value": 300, "reason": "x", "colour": 1});
    assert_eq!(s.call("POST", REQS, &[], Some(&extra)).0, 400);
    let missing = json!({"quota": "on-demand-vcpus", "reason": "x"});
    assert_eq!(s.call("POST", REQS, &[], Some(&missing)).0, 400);
    assert_eq!(
        emu.call_counts().get("RequestServiceQuotaIncrease"),
        None,
        "nothing asked of AWS for refused requests"
    );
    let ask =
        json!({"quota": "on-demand-vcpus", "desired_value": 250, "reason": "CS 499 needs 50 more"});
    let (st, head, made) = s.call("POST", REQS, &[], Some(&ask));
    assert_eq!(st, 201, "{made}");
    let id = made["request_id"].as_str().unwrap().to_string();
    assert!(head.contains(&format!("{REQS}/{id}")), "{head}");
    assert_eq!(made["status"], "PENDING");
    assert_eq!(made["reason"], "CS 499 needs 50 more");
    assert_eq!(made["value_at_request"], 200.0);
    // The release plan's spelling of the same endpoint.
    let ebs = json!({"quota": "ebs-gp3-tib", "desired_value": 100, "reason": "datasets"});
    let (st, _, made_ebs) = s.call("POST", "/api/v1/quotas/request", &[], Some(&ebs));
    assert_eq!(st, 201, "{made_ebs}");

    let (_, _, shown) = s.call("GET", &format!("{REQS}/{id}"), &[], None);
    assert_eq!(shown["reason"], "CS 499 needs 50 more");
    assert_eq!(
        without_notes(shown),
        cli_json(&emu, &["quota", "request", "show", &id, "--format", "json"])
    );
    let (_, _, list) = s.call("GET", REQS, &[], None);
    let cli = cli_json(&emu, &["quota", "request", "list", "--format", "json"]);
    let bare: Vec<Value> = list
        .as_array()
        .unwrap()
        .iter()
        .cloned()
        .map(without_notes)
        .collect();
    assert_eq!(Value::Array(bare), cli);
    assert_eq!(list.as_array().unwrap().len(), 2);
    let (_, _, pending) = s.call("GET", &format!("{REQS}?status=PENDING"), &[], None);
    assert_eq!(pending.as_array().unwrap().len(), 2);
    let (_, _, approved) = s.call("GET", &format!("{REQS}?status=APPROVED"), &[], None);
    assert_eq!(approved, json!([]));
    assert_eq!(
        s.call("GET", &format!("{REQS}?status=MAYBE"), &[], None).0,
        400
    );
    let (st, _, err) = s.call("GET", &format!("{REQS}/no-such-request"), &[], None);
    assert_eq!(st, 404, "{err}");
    // The notes survive a restart.
    drop(s);
    let s = start(&emu, &emu.dir.path().join("state"), &[]);
    let (_, _, shown) = s.call("GET", &format!("{REQS}/{id}"), &[], None);
    assert_eq!(
        (shown["reason"].as_str(), shown["value_at_request"].as_f64()),
        (Some("CS 499 needs 50 more"), Some(200.0))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn workspaces_are_the_rows_of_workspace_list() {
    let emu = Emulator::start();
    let s = start(&emu, &emu.dir.path().join("state"), &[]);
    let (st, _, l) = s.call(
        "POST",
        BULK,
        &[],
        Some(&json!({"manifest": manifest("wl", 3, FAST)})),
    );
    assert_eq!(st, 202, "{l}");
    assert_eq!(
        s.until_over(l["id"].as_str().unwrap())["state"],
        "succeeded"
    );
    crate::emulator::launch(&emu.ec2(), Some("other"), Some("other-01"), "t3.micro", 1).await;
    let (st, _, rows) = s.call("GET", "/api/v1/workspaces", &[], None);
    assert_eq!(st, 200);
    assert_eq!(
        rows,
        cli_json(&emu, &["workspace", "list", "--format", "json"])
    );
    assert_eq!(rows.as_array().unwrap().len(), 4);
    let (_, _, mine) = s.call(
        "GET",
        "/api/v1/workspaces?fleet=wl&state=running",
        &[],
        None,
    );
    assert_eq!(
        mine,
        cli_json(
            &emu,
            &[
                "workspace",
                "list",
                "--fleet",
                "wl",
                "--state",
                "running",
                "--format",
                "json"
            ]
        )
    );
    let (st, _, err) = s.call("GET", "/api/v1/workspaces?state=asleep", &[], None);
    assert_eq!(
        (st, err["error"]["code"].as_str()),
        (400, Some("BadRequest"))
    );
    let (st, _, _) = s.call("GET", "/api/v1/workspaces?colour=red", &[], None);
    assert_eq!(st, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn launches_of_other_fleets_in_the_region_wait_as_queued() {
    let emu = Emulator::start();
    let s = start(&emu, &emu.dir.path().join("state"), &[]);
    let slow = "{rate_per_minute: 120, burst_size: 1, adaptive: false}";
    let (st, _, a) = s.call(
        "POST",
        BULK,
        &[],
        Some(&json!({"manifest": manifest("qa", 4, slow)})),
    );
    assert_eq!(st, 202, "{a}");
    let (st, _, b) = s.call(
        "POST",
        BULK,
        &[],
        Some(&json!({"manifest": manifest("qb", 2, FAST)})),
    );
    assert_eq!(st, 202, "{b}");
    assert_eq!(b["state"], "queued", "{b}");
    let (st, _, c) = s.call(
        "POST",
        BULK,
        &[],
        Some(&json!({"manifest": manifest("qc", 2, FAST)})),
    );
    assert_eq!((st, c["state"].as_str()), (202, Some("queued")), "{c}");
    let (a, b, c) = (
        a["id"].as_str().unwrap(),
        b["id"].as_str().unwrap(),
        c["id"].as_str().unwrap(),
    );
    // A queued launch can be cancelled before it starts: it never calls RunInstances.
    let (st, _, v) = s.call("DELETE", &format!("{BULK}/{c}"), &[], None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(s.until_over(c)["state"], "cancelled");
    assert_eq!(s.launch(b)["state"], "queued", "b waits while a runs");
    assert_eq!(s.until_over(a)["state"], "succeeded");
    let done = s.until_over(b);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["report"]["launched"], 2);
    assert_eq!(per_workspace(&emu, "qa").await.len(), 4);
    assert_eq!(per_workspace(&emu, "qb").await.len(), 2);
    assert_eq!(per_workspace(&emu, "qc").await.len(), 0);
    let (st, events) = s.events(b, None);
    assert_eq!(st, 200);
    assert_eq!(events[0].1, "started");
}

#[test]
fn the_login_link_signs_in_once_and_pages_carry_no_inline_code() {
    let emu = Emulator::start();
    let s = start(&emu, &emu.dir.path().join("state"), &[]);
    let port = s.port;
    let get = |path: &str, headers: &str| {
        raw(
            port,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}Connection: close\r\n\r\n"
            ),
        )
    };
    let path = s
        .login
        .strip_prefix(&format!("http://127.0.0.1:{port}"))
        .unwrap();
    let (st, head, _) = get(path, "");
    assert_eq!(st, 303, "{head}");
    let lower = head.to_lowercase();
    assert!(lower.contains("\r\nlocation: /\r\n"), "{head}");
    // The cookie carries a session, not the token.
    let session = set_cookie(&head, "prism_session").expect("a session cookie");
    assert_eq!(session.len(), 43);
    assert!(!head.contains(&s.token), "{head}");
    assert!(
        lower.contains("; httponly; samesite=strict; path=/; max-age=604800"),
        "{head}"
    );
    // The link works once.
    let (st, head, _) = get(path, "");
    assert_eq!(st, 401, "{head}");
    assert!(!head.to_lowercase().contains("set-cookie"));
    // Pages: CSP without inline code; the HTML has no inline script, style or handler.
    let cookie = format!("Cookie: prism_session={session}\r\n");
    let hashed = regex::Regex::new(r#"/assets/(app|icon)\.[0-9a-f]{12}\.(js|css|svg)"#).unwrap();
    let script =
        regex::Regex::new(r#"<script src="/assets/app\.[0-9a-f]{12}\.js" defer></script>"#)
            .unwrap();
    let mut assets = std::collections::BTreeSet::new();
    for page in [
        "/",
        "/quotas",
        "/quotas?request=on-demand-vcpus",
        "/sessions",
        "/login",
    ] {
        let (st, head, body) = get(page, &cookie);
        assert_eq!(st, 200, "{page}: {body}");
        let head = head.to_lowercase();
        assert!(head.contains("content-type: text/html"), "{head}");
        assert!(head.contains("cache-control: no-store"), "{head}");
        assert!(
            head.contains(
                "content-security-policy: default-src 'none'; script-src 'self'; style-src 'self'"
            ),
            "{head}"
        );
        assert!(head.contains("x-content-type-options: nosniff"), "{head}");
        assert!(
            !body.contains("<script>") && !body.contains(" style=") && !body.contains(" onclick="),
            "{page}: {body}"
        );
        assert!(script.is_match(&body), "{page}");
        assets.extend(hashed.find_iter(&body).map(|m| m.as_str().to_string()));
    }
    // Assets by their digest names: kept a year, compressed when asked.
    assert_eq!(assets.len(), 3, "{assets:?}");
    for asset in &assets {
        let (st, head, _) = get(asset, "Accept-Encoding: gzip\r\n");
        assert_eq!(st, 200, "{asset}");
        let head = head.to_lowercase();
        assert!(
            head.contains("cache-control: public, max-age=31536000, immutable"),
            "{head}"
        );
        if !asset.ends_with(".svg") {
            assert!(head.contains("content-encoding: gzip"), "{asset}: {head}");
        }
    }
    for asset in ["/assets/app.js", "/assets/app.css", "/assets/icon.svg"] {
        let (st, head, _) = get(asset, "");
        assert_eq!(st, 200, "{asset}");
        assert!(
            head.to_lowercase().contains("cache-control: no-cache"),
            "{head}"
        );
    }
    assert_eq!(get("/assets/app.0123456789ab.js", "").0, 404);
    // Without a session (or with the token as if it were one), a page sends to the
    // login page.
    for cookie in [
        String::new(),
        format!("Cookie: prism_session={}\r\n", s.token),
    ] {
        let (st, head, _) = get("/quotas", &cookie);
        assert_eq!(st, 303);
        assert!(head.to_lowercase().contains("location: /login"), "{head}");
    }
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Follows the event stream of `id` to its end: the id of every event and when the first
/// one arrived.
fn follow_stream(port: u16, token: &str, id: &str) -> (Vec<usize>, Option<Instant>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    write!(
        s,
        "GET {BULK}/{id}/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let (mut ids, mut first) = (vec![], None);
    for line in BufReader::new(s).lines() {
        let Ok(line) = line else { break };
        if let Some(n) = line.strip_prefix("id: ") {
            first.get_or_insert_with(Instant::now);
            ids.push(n.parse().unwrap());
        }
    }
    (ids, first)
}

/// A bounded loopback load test: 50 event streams follow one launch of 100 workspaces
/// from start to end, and none loses an event. Prints the time from the POST to the
/// first event and the server's memory, idle and during the launch.
#[tokio::test(flavor = "multi_thread")]
async fn fifty_event_streams_follow_a_hundred_workspace_launch_without_loss() {
    let emu = Emulator::start();
    emu.set_quota("ec2", "L-1216C47A", 1000.0);
    let s = start(&emu, &emu.dir.path().join("state"), &[]);
    let pid = s.child.id();
    std::thread::sleep(Duration::from_millis(500));
    let idle = rss_kib(pid);
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(idle));
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let text = manifest("load", 100, "{rate_per_minute: 1200, burst_size: 20}");
    // The first request of a region makes its engine and AWS clients: timed apart.
    let cold = Instant::now();
    let dry = json!({"manifest": text, "dry_run": true});
    let (st, _, plan) = s.call("POST", BULK, &[], Some(&dry));
    assert_eq!(
        (st, plan["summary"]["create"].as_u64()),
        (200, Some(100)),
        "{plan}"
    );
    let cold = cold.elapsed();
    let body = json!({"manifest": text});
    let t0 = Instant::now();
    let (st, _, l) = s.call("POST", BULK, &[], Some(&body));
    let posted = t0.elapsed();
    assert_eq!(st, 202, "{l}");
    let id = l["id"].as_str().unwrap().to_string();
    let streams: Vec<_> = (0..50)
        .map(|_| {
            let (port, token, id) = (s.port, s.token.clone(), id.clone());
            std::thread::spawn(move || follow_stream(port, &token, &id))
        })
        .collect();
    let results: Vec<(Vec<usize>, Option<Instant>)> =
        streams.into_iter().map(|h| h.join().unwrap()).collect();
    let done = s.until_over(&id);
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!(done["state"], "succeeded", "{}", done["report"]);
    assert_eq!(done["report"]["launched"], 100);
    let total = done["events"].as_u64().unwrap() as usize;
    let all: Vec<usize> = (1..=total).collect();
    for (i, (ids, _)) in results.iter().enumerate() {
        assert_eq!(ids, &all, "stream {i} lost or repeated an event");
    }
    let first = results
        .iter()
        .filter_map(|r| r.1)
        .min()
        .unwrap()
        .duration_since(t0);
    eprintln!(
        "serve load: first dry run (cold engine) {} ms; POST answered in {} ms; first event delivered {} ms after the POST; \
         {total} events to each of 50 streams, none lost; RSS idle {} KiB, peak during the \
         100-workspace launch {} KiB; launch took {:.1} s",
        cold.as_millis(),
        posted.as_millis(),
        first.as_millis(),
        idle,
        peak.load(std::sync::atomic::Ordering::Relaxed),
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(per_workspace(&emu, "load").await.len(), 100);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_progress_page_shows_retries_and_explains_failures_without_javascript() {
    let emu = Emulator::start();
    // The first launch is answered with a passing fault (retried), the next with one
    // retrying cannot help.
    emu.post(
        "/_prism/faults",
        json!({"faults": [
            {"action": "RunInstances", "code": "InternalError", "status": 500, "count": 1},
            {"action": "RunInstances", "code": "InvalidParameterValue", "status": 400, "count": 1, "message": "Value (t3.micro) for parameter instanceType is invalid."}
        ]}),
    );
    let s = start(&emu, &emu.dir.path().join("state"), &[]);
    let rate = "{rate_per_minute: 600, burst_size: 1, adaptive: false}";
    let (st, _, l) = s.call(
        "POST",
        BULK,
        &[],
        Some(&json!({"manifest": manifest("pf", 3, rate)})),
    );
    assert_eq!(st, 202, "{l}");
    let id = l["id"].as_str().unwrap();
    let done = s.until_over(id);
    assert_eq!(done["state"], "failed", "{done}");
    let (st, html) = s.page(&format!("/launches/{id}"));
    assert_eq!(st, 200);
    let failed: Vec<&Value> = done["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["state"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{done}");
    let title = failed[0]["error"]["title"].as_str().unwrap();
    assert!(
        html.contains(&format!("<strong>{title}</strong>")),
        "{title}: {html}"
    );
    assert!(
        html.contains(r#"<span class="badge failed" data-field="state">failed</span>"#),
        "{html}"
    );
    assert_eq!(
        html.matches(r#"data-field="state">running</span>"#).count(),
        2,
        "{html}"
    );
    let retried = done["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["attempts"].as_u64() > Some(1))
        .count();
    assert!(retried >= 1, "{done}");
    assert!(
        html.contains(r#"<td data-field="retries" data-label="Retries">1</td>"#),
        "{html}"
    );
    assert!(
        html.contains("Summary") && html.contains("<dt>Failed</dt><dd>1</dd>"),
        "{html}"
    );
    assert!(!html.contains("Cancel remaining launches"));
}

/// Sent with `wait_for_quota`, a launch keeps what does not fit the quota waiting (as
/// `apply --wait-for-quota`) and launches it once the quota is raised; the workspaces
/// already up keep their instances.
#[tokio::test(flavor = "multi_thread")]
async fn a_launch_that_waits_for_quota_launches_the_rest_when_it_is_raised() {
    let emu = Emulator::start();
    emu.post("/_prism/quotas", json!({"ec2": {"L-1216C47A": 32}}));
    let state = emu.dir.path().join("state");
    let s = start_with(&emu, &state, &[], &[("PRISM_QUOTA_RECHECK", "1s")]);
    // 10 × t3.xlarge (4 vCPUs): 8 fit 32 vCPUs.
    let text = "name: q\nproject: p\ntemplate: t\ncount: 10\nrate_limit: {rate_per_minute: 600, burst_size: 10}\ntemplates:\n  t: {image: ami-785db401, instance_type: t3.xlarge}\n";
    let (st, _, v) = s.call(
        "POST",
        BULK,
        &[],
        Some(&json!({"manifest": text, "wait_for_quota": "soon"})),
    );
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"]["title"]
            .as_str()
            .unwrap()
            .contains("wait_for_quota `soon`"),
        "{v}"
    );
    let (st, _, v) = s.call(
        "POST",
        BULK,
        &[],
        Some(&json!({"manifest": text, "wait_for_quota": "soon", "dry_run": true})),
    );
    assert_eq!(st, 400, "a dry run checks it too: {v}");
    assert_eq!(
        emu.call_counts().get("RunInstances"),
        None,
        "nothing launched"
    );

    let (st, _, v) = s.call(
        "POST",
        BULK,
        &[],
        Some(&json!({"manifest": text, "wait_for_quota": "5m"})),
    );
    assert_eq!(st, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let waiting = eventually("8 done, 2 waiting", Duration::from_secs(60), || {
        let l = s.launch(&id);
        if l["progress"]["completed"] == 8 && l["progress"]["waiting_for_quota"] == 2 {
            Ok(l)
        } else {
            Err(l)
        }
    });
    assert_eq!(waiting["state"], "running", "{waiting}");
    assert_eq!(waiting["wait_for_quota"], "5m");
    let rows = waiting["workspaces"].as_array().unwrap();
    let waiting_rows: Vec<&str> = rows
        .iter()
        .filter(|w| w["state"] == "waiting_for_quota")
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        waiting_rows,
        ["q-09", "q-10"],
        "the last in name order wait"
    );
    assert!(
        rows.iter()
            .filter(|w| w["state"] == "waiting_for_quota")
            .all(|w| w["skip_reason"]
                .as_str()
                .is_some_and(|r| r.contains("vCPU"))),
        "{waiting}"
    );
    let before: Vec<Value> = rows
        .iter()
        .filter(|w| w["instance_id"].is_string())
        .map(|w| w["instance_id"].clone())
        .collect();
    assert_eq!(before.len(), 8);
    // The progress page shows the wait in words.
    let (st, html) = s.page(&format!("/launches/{id}"));
    assert_eq!(st, 200);
    assert_eq!(html.matches(">waiting for quota<").count(), 2, "{html}");

    emu.post("/_prism/quotas", json!({"ec2": {"L-1216C47A": 48}}));
    let done = s.until_over(&id);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["report"]["launched"], 10, "{done}");
    let after: Vec<Value> = done["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| before.contains(&w["instance_id"]))
        .map(|w| w["instance_id"].clone())
        .collect();
    assert_eq!(after.len(), 8, "the first 8 keep their instances");
    let per = per_workspace(&emu, "q").await;
    assert_eq!(per.len(), 10);
    assert!(per.values().all(|n| *n == 1), "{per:?}");
}

/// The Launch page asks AWS for a manifest's plan once, then shows it again while
/// nothing changes; an edit of the manifest or a launch makes it plan afresh.
#[tokio::test(flavor = "multi_thread")]
async fn the_launch_page_plans_again_only_when_something_changed() {
    let emu = Emulator::start();
    let manifests = emu.dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let file = manifests.join("lab.yaml");
    std::fs::write(&file, manifest("lab", 3, FAST)).unwrap();
    // Neither a templates file nor a pipe is listed (nor read) as a manifest.
    std::fs::write(
        manifests.join("templates.yaml"),
        "templates:\n  t: {image: ami-785db401, instance_type: t3.micro}\n",
    )
    .unwrap();
    let pipe = manifests.join("a-pipe.yaml");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&pipe)
            .status()
            .unwrap()
            .success()
    );
    let s = start(
        &emu,
        &emu.dir.path().join("state"),
        &["--manifests", manifests.to_str().unwrap()],
    );
    let (_, listed) = s.page("/");
    assert!(
        listed.contains("lab.yaml")
            && !listed.contains("templates.yaml")
            && !listed.contains("a-pipe.yaml"),
        "{listed}"
    );
    // The plan's look at the fleet: DescribeInstances by the fleet's tag.
    let plans = || {
        emu.calls()
            .iter()
            .filter(|c| {
                c.action == "DescribeInstances"
                    && c.filters.first().is_some_and(|f| f == "tag:prism:fleet")
            })
            .count()
    };
    let (st, html) = s.page("/");
    assert_eq!(st, 200);
    assert!(html.contains("3 to create"), "{html}");
    assert_eq!(plans(), 1, "the listing's view and this one: one plan");
    let (_, again) = s.page("/");
    assert!(again.contains("3 to create"));
    assert_eq!(plans(), 1, "the second view asked AWS nothing");

    std::fs::write(&file, manifest("lab", 4, FAST)).unwrap();
    let (_, edited) = s.page("/");
    assert!(edited.contains("4 to create"), "{edited}");
    assert_eq!(plans(), 2, "an edited manifest is planned again");

    let (st, _, v) = s.call(
        "POST",
        BULK,
        &[],
        Some(&json!({"manifest_path": "lab.yaml"})),
    );
    assert_eq!(st, 202, "{v}");
    let done = s.until_over(v["id"].as_str().unwrap());
    assert_eq!(done["state"], "succeeded", "{done}");
    let (_, after) = s.page("/");
    assert!(after.contains("nothing to do"), "{after}");
}

/// A manifest sent to serve reads no file outside its own folder: absolute paths, `../`,
/// a symlink out, `/proc`, a FIFO (which would block) and an inline manifest's files
/// are refused at the key, and no answer quotes what the file holds.
#[test]
fn a_manifest_sent_to_serve_reads_no_file_outside_its_folder() {
    let emu = Emulator::start();
    let root = emu.dir.path();
    let dir = root.join("manifests");
    std::fs::create_dir_all(&dir).unwrap();
    let secret = root.join("secret.csv");
    std::fs::write(&secret, "Email\nSECRET-MARKER-42@x.edu\n").unwrap();
    std::os::unix::fs::symlink(&secret, dir.join("link.csv")).unwrap();
    let fifo = dir.join("fifo.csv");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    std::fs::write(dir.join("ok.csv"), "Email\nana@x.edu\n").unwrap();
    let s = start(
        &emu,
        &root.join("state"),
        &["--manifests", dir.to_str().unwrap()],
    );
    let with_members = |file: &str| {
        format!(
            "name: leak\nproject: p\ntemplate: t\nmembers_file: {file}\ntemplates:\n  t: {{image: ami-785db401, instance_type: t3.micro}}\n"
        )
    };
    for file in [
        secret.to_str().unwrap(),
        "../secret.csv",
        "link.csv",
        "/proc/self/environ",
        "fifo.csv",
    ] {
        std::fs::write(dir.join("m.yaml"), with_members(file)).unwrap();
        let body = json!({"manifest_path": "m.yaml", "dry_run": true});
        let started = Instant::now();
        let (st, _, v) = s.call("POST", BULK, &[], Some(&body));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{file}: blocked"
        );
        assert_eq!(st, 400, "{file}: {v}");
        let text = v.to_string();
        assert!(
            text.contains("must name a regular file in the manifest's folder"),
            "{file}: {text}"
        );
        assert!(
            !text.contains("SECRET-MARKER") && !text.contains("AWS_SECRET"),
            "{file}: {text}"
        );
    }
    // An inline manifest reads from --manifests only; a file there is fine.
    let body = json!({"manifest": with_members("ok.csv"), "dry_run": true});
    let (st, _, v) = s.call("POST", BULK, &[], Some(&body));
    assert_eq!(st, 200, "{v}");
    let body = json!({"manifest": with_members("../secret.csv"), "dry_run": true});
    let (st, _, v) = s.call("POST", BULK, &[], Some(&body));
    assert_eq!(st, 400, "{v}");
    assert!(!v.to_string().contains("SECRET-MARKER"), "{v}");
    // The server still answers.
    let (st, _, _) = s.call("GET", "/healthz", &[], None);
    assert_eq!(st, 200);

    // Without --manifests an inline manifest names no file at all.
    let bare = start(&emu, &root.join("state2"), &[]);
    let body =
        json!({"manifest": with_members(dir.join("ok.csv").to_str().unwrap()), "dry_run": true});
    let (st, _, v) = bare.call("POST", BULK, &[], Some(&body));
    assert_eq!(st, 400, "{v}");
    assert!(
        v.to_string().contains("this manifest cannot name files"),
        "{v}"
    );
}

/// The smaller API promises: the auth scheme in any case, a JSON body on 405, the same
/// Idempotency-Key with the same JSON spaced otherwise is the same launch, durations and
/// quota values AWS would refuse are refused before asking it.
#[test]
fn the_api_answers_as_promised_at_its_edges() {
    let emu = Emulator::start();
    let s = start(&emu, &emu.dir.path().join("state"), &[]);
    let (st, _, _) = raw(
        s.port,
        &format!(
            "GET /api/v1/workspaces/bulk-launch HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: bearer {}\r\nConnection: close\r\n\r\n",
            s.port, s.token
        ),
    );
    assert_eq!(st, 200, "the scheme is case-insensitive");

    let (st, _, v) = s.call("PUT", "/api/v1/workspaces", &[], None);
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (405, Some("MethodNotAllowed")),
        "{v}"
    );

    // An unknown address: a page for a browser, JSON for the API.
    let (st, head, html) = raw(
        s.port,
        &format!(
            "GET /no-such-page HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nCookie: {}\r\nAccept: text/html\r\nConnection: close\r\n\r\n",
            s.port,
            s.cookie()
        ),
    );
    assert_eq!(st, 404);
    assert!(
        head.to_lowercase().contains("content-type: text/html"),
        "{head}"
    );
    assert!(
        html.contains("<html lang=\"en\">")
            && html.contains("Nothing here")
            && html.contains("href=\"/\""),
        "{html}"
    );
    let (st, _, v) = s.call("GET", "/api/v1/nope", &[("Accept", "text/html")], None);
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (404, Some("NotFound")),
        "{v}"
    );

    let text = manifest("edge", 1, FAST);
    let request = json!({"manifest": text, "dry_run": false});
    let tight = serde_json::to_string(&request).unwrap();
    let spaced = serde_json::to_string_pretty(&request).unwrap();
    let post = |body: &str| {
        raw(
            s.port,
            &format!(
                "POST {BULK} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\nIdempotency-Key: edge-1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                s.port,
                s.token,
                body.len()
            ),
        )
    };
    let (st1, _, first) = post(&tight);
    let (st2, _, second) = post(&spaced);
    assert_eq!((st1, st2), (202, 202), "{first}\n{second}");
    let id = |b: &str| serde_json::from_str::<Value>(b).unwrap()["id"].clone();
    assert_eq!(id(&first), id(&second), "one launch for one request");
    s.until_over(id(&first).as_str().unwrap());

    let forever =
        json!({"manifest": manifest("edge2", 1, FAST), "wait_for_quota": "99999999999999h"});
    let (st, _, v) = s.call("POST", BULK, &[], Some(&forever));
    assert_eq!(st, 400, "{v}");
    assert!(v.to_string().contains("longer than a week"), "{v}");

    emu.clear_calls();
    for huge in [json!(1e308), json!(-5), json!(10.5)] {
        let ask = json!({"quota": "on-demand-vcpus", "desired_value": huge, "reason": "x"});
        let (st, _, v) = s.call("POST", "/api/v1/quotas/requests", &[], Some(&ask));
        assert_eq!(st, 400, "{huge}: {v}");
    }
    assert_eq!(emu.call_counts().get("RequestServiceQuotaIncrease"), None);
}

/// Many quota requests at once cost AWS one survey, not one each; the answers agree.
#[test]
fn quota_answers_at_once_share_one_survey() {
    let emu = Emulator::start();
    let s = start(&emu, &emu.dir.path().join("state"), &[]);
    // 40 at once on a server that has read no quota yet.
    emu.clear_calls();
    let answers: Vec<(u16, Value)> = std::thread::scope(|t| {
        let hs: Vec<_> = (0..40)
            .map(|_| {
                t.spawn(|| {
                    let (st, _, v) = s.call("GET", "/api/v1/quotas", &[], None);
                    (st, v)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        answers
            .iter()
            .all(|(st, v)| *st == 200 && v == &answers[0].1)
    );
    let asked = survey_calls(&emu);
    // What one survey asks: a request that takes no shared answer (no-cache).
    emu.clear_calls();
    let (st, _, one) = s.call(
        "GET",
        "/api/v1/quotas",
        &[("Cache-Control", "no-cache")],
        None,
    );
    assert_eq!((st, &one), (200, &answers[0].1));
    let per_survey = survey_calls(&emu);
    assert!(per_survey > 0);
    assert!(
        asked <= per_survey,
        "40 answers asked AWS {asked} times; one survey asks {per_survey}"
    );
}
