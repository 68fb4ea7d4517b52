//! `prism serve`'s doors: browser sessions (not the token; idle and absolute expiry,
//! sign-out, revocation, rotation, sign-in attempts limited), connections that never
//! finish their headers, the last event before a stop, and remote access from another
//! address in a network namespace.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::emulator::Emulator;
use crate::eventually::eventually;
use crate::serve::{manifest, raw, set_cookie, start, survey_calls};

fn get(port: u16, path: &str, cookie: &str) -> (u16, String, String) {
    raw(
        port,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: prism_session={cookie}\r\nConnection: close\r\n\r\n"
        ),
    )
}

fn post_form(port: u16, path: &str, cookie: &str, form: &str) -> (u16, String, String) {
    raw(
        port,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\nCookie: prism_session={cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        ),
    )
}

#[test]
fn sessions_are_not_the_token_expire_and_end_when_asked() {
    let emu = Emulator::start();
    let state = emu.dir.path().join("state");
    let s = start(
        &emu,
        &state,
        &["--session-idle", "3s", "--session-max", "6s"],
    );
    let port = s.port;
    let signed_in = |id: &str| get(port, "/sessions", id).0 == 200;

    // The link begins a session whose id is no token, kept hashed, in a private file.
    let path = s
        .login
        .strip_prefix(&format!("http://127.0.0.1:{port}"))
        .unwrap();
    let (st, head, _) = raw(
        port,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0.0.0 Safari/537.36\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(st, 303, "{head}");
    let first = set_cookie(&head, "prism_session").unwrap().to_string();
    assert_ne!(first, s.token);
    assert!(head.to_lowercase().contains("max-age=6"), "{head}");
    let (st, _, page) = get(port, "/sessions", &first);
    assert_eq!(st, 200);
    assert!(page.contains("Chrome 131.0.0.0 (X11)"), "{page}");
    assert!(page.contains("This browser"), "{page}");
    let kept = state.join("sessions.json");
    assert_eq!(
        std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!std::fs::read_to_string(&kept).unwrap().contains(&first));
    // A session is no bearer token, and the token is no session.
    let (st, _, _) = s.call("GET", "/api/v1/sessions", &[], None);
    assert_eq!(st, 200);
    let as_bearer = raw(
        port,
        &format!(
            "GET /api/v1/workspaces/bulk-launch HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {first}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(as_bearer.0, 401);
    assert!(!signed_in(&s.token));

    // Idle for longer than --session-idle: over. Any look would be a use, so it must
    // wait: 3 s and a bit (lifetimes count whole seconds).
    std::thread::sleep(Duration::from_millis(3200));
    assert!(!signed_in(&first), "idle for 3 s");

    // In use all along, it lives past --session-idle and ends at --session-max: 6 s in
    // whole seconds, so between 5 and 6 s after the server began it, and by 7 s here.
    let busy = s.sign_in();
    let began = Instant::now();
    let lived = eventually(
        "the busy session to end at --session-max",
        Duration::from_secs(7),
        || (!signed_in(&busy)).then(|| began.elapsed()),
    );
    assert!(
        lived > Duration::from_millis(4500),
        "in use, over after {lived:?}"
    );

    // Sign out ends this browser's session and forgets the cookie.
    let mine = s.sign_in();
    let (st, head, _) = post_form(port, "/logout", &mine, "");
    assert_eq!(st, 303, "{head}");
    assert!(head.contains("/login?signed_out=1"), "{head}");
    assert!(
        head.to_lowercase().contains("prism_session=; httponly"),
        "{head}"
    );
    assert!(!signed_in(&mine));

    // The page and the API end another browser's session.
    let other = s.sign_in();
    let mine = s.sign_in();
    let (_, _, list) = s.call("GET", "/api/v1/sessions", &[], None);
    let ids: Vec<String> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2, "{list}");
    let (st, _, _) = post_form(port, "/sessions/end-others", &mine, "");
    assert_eq!(st, 303);
    assert!(!signed_in(&other) && signed_in(&mine));
    let (_, _, list) = s.call("GET", "/api/v1/sessions", &[], None);
    let id = list["sessions"][0]["id"].as_str().unwrap().to_string();
    let (st, _, _) = s.call("DELETE", &format!("/api/v1/sessions/{id}"), &[], None);
    assert_eq!(st, 204);
    assert!(!signed_in(&mine));
    let (st, _, v) = s.call("DELETE", &format!("/api/v1/sessions/{id}"), &[], None);
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (404, Some("NotFound")),
        "{v}"
    );

    // A restart keeps the sessions; --rotate-token ends them.
    let kept = s.sign_in();
    drop(s);
    let s = start(
        &emu,
        &state,
        &["--session-idle", "1h", "--session-max", "2h"],
    );
    assert_eq!(
        get(s.port, "/sessions", &kept).0,
        200,
        "kept across a restart"
    );
    drop(s);
    let s = start(&emu, &state, &["--rotate-token"]);
    assert_eq!(
        get(s.port, "/sessions", &kept).0,
        303,
        "ended by --rotate-token"
    );

    // Sign-in attempts: ten a minute from one address, then 429 with Retry-After,
    // even for the right token.
    let mut statuses = vec![];
    for _ in 0..10 {
        statuses.push(post_form(s.port, "/login", "", "token=wrong").0);
    }
    assert!(statuses.iter().all(|st| *st == 401), "{statuses:?}");
    let form = format!("token={}", s.token);
    let (st, head, body) = post_form(s.port, "/login", "", &form);
    assert_eq!(st, 429, "{body}");
    assert!(head.to_lowercase().contains("retry-after: "), "{head}");
    assert!(body.contains("Too many sign-in attempts"), "{body}");
}

#[test]
fn bad_session_lifetimes_are_refused_before_listening() {
    let emu = Emulator::start();
    let state = emu.dir.path().join("state");
    let out = emu.prism(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        state.to_str().unwrap(),
        "--session-idle",
        "2d",
        "--session-max",
        "1d",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--session-idle 2days must be more than zero and at most --session-max 1day"),
        "{err}"
    );
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn clients_that_never_finish_their_headers_are_bounded_and_let_go() {
    let emu = Emulator::start();
    let s = start(
        &emu,
        &emu.dir.path().join("state"),
        &["--max-connections", "200"],
    );
    let pid = s.child.id();
    let before = open_fds(pid);
    // 1 000 connections that send nothing, and 20 that send a header a byte a second.
    let mut idle = vec![];
    for _ in 0..1000 {
        idle.push(TcpStream::connect(("127.0.0.1", s.port)).unwrap());
    }
    let port = s.port;
    let trickling: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
                let began = Instant::now();
                for b in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter().cycle() {
                    if c.write_all(&[*b]).is_err() || began.elapsed() > Duration::from_secs(40) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1000));
                }
                began.elapsed()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // The server holds at most its cap of them, and still answers at once.
    let held = open_fds(pid).saturating_sub(before);
    assert!(held <= 200, "{held} descriptors held for idle clients");
    let t = Instant::now();
    let (st, _, body) = raw(
        port,
        &format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!((st, body.as_str()), (200, r#"{"status":"ok"}"#));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // Every one of them is let go after the 10 s header deadline.
    eventually("the idle clients let go", Duration::from_secs(20), || {
        let open = open_fds(pid).saturating_sub(before);
        if open > 2 {
            Err(format!("{open} descriptors still open"))
        } else {
            Ok(())
        }
    });
    for t in trickling {
        let took = t.join().unwrap();
        assert!(
            took < Duration::from_secs(15),
            "a slow header held {took:?}"
        );
    }
    // Closed from the server's side: reading gives end of file (or a reset).
    let mut c = idle.pop().unwrap();
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 1];
    assert!(matches!(c.read(&mut buf), Ok(0) | Err(_)));
}

#[test]
fn a_stopping_server_ends_each_event_stream_with_a_last_event() {
    let emu = Emulator::start();
    let state = emu.dir.path().join("state");
    let s = start(&emu, &state, &[]);
    let body = json!({"manifest": manifest("stop", 5, "{rate_per_minute: 30, burst_size: 1, adaptive: false}")});
    let (st, _, l) = s.call("POST", "/api/v1/workspaces/bulk-launch", &[], Some(&body));
    assert_eq!(st, 202, "{l}");
    let id = l["id"].as_str().unwrap().to_string();
    // The stream follows the launch: its first workspace launched, the stop comes.
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        c,
        "GET /api/v1/workspaces/bulk-launch/{id}/events HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        s.port, s.token
    )
    .unwrap();
    let mut stream = BufReader::new(c);
    let mut text = String::new();
    loop {
        let mut line = String::new();
        assert!(stream.read_line(&mut line).unwrap() > 0, "ended: {text}");
        text.push_str(&line);
        if line.trim_end() == "event: launched" {
            break;
        }
    }
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &s.child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    stream.read_to_string(&mut text).unwrap();
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(names.last(), Some(&"stopping"), "{text}");
    assert!(
        names.contains(&"interrupted"),
        "the run's own end first: {names:?}"
    );
    let last = text.rsplit("event: stopping").next().unwrap();
    assert!(last.contains("retry: 5000"), "{last}");
    let data: Value =
        serde_json::from_str(last.lines().find_map(|l| l.strip_prefix("data: ")).unwrap()).unwrap();
    assert_eq!(data["state"], "interrupted", "{data}");
    assert!(!last.contains("\nid: "), "the last event has no id: {last}");
}

/// Runs `script` (sh) in a network namespace of its own, where 10.200.0.1 is an address
/// of this machine that is not loopback; returns its standard output.
fn in_namespace(script: &str, env: &[(&str, &str)]) -> String {
    let out = std::process::Command::new("unshare")
        .args(["-rn", "sh", "-ec"])
        .arg(format!(
            "ip link set lo up\nip addr add 10.200.0.1/32 dev lo\n{script}"
        ))
        .envs(env.iter().copied())
        .stderr(Stdio::inherit())
        .output()
        .expect("unshare (util-linux) runs");
    assert!(
        out.status.success(),
        "the namespace script failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A client in Python's standard library: each line of `requests` is
/// `METHOD PATH HOST [ORIGIN]`; prints one JSON line per answer.
const CLIENT: &str = r#"
import http.client, json, sys
port = int(sys.argv[1])
cookie = ""
for line in sys.argv[2:]:
    method, path, host, *origin = line.split(" ")
    c = http.client.HTTPConnection("10.200.0.1", port, timeout=10)
    headers = {"Host": host}
    if origin: headers["Origin"] = origin[0]
    if cookie: headers["Cookie"] = cookie
    c.request(method, path, headers=headers)
    r = c.getresponse()
    body = r.read()
    set = r.getheader("Set-Cookie")
    if set: cookie = set.split(";")[0]
    print(json.dumps({"status": r.status, "cookie": set, "names_peer": b"10.200.0.1" in body}))
"#;

#[test]
fn remote_access_works_from_another_address_by_ip_and_by_public_url() {
    let emu = Emulator::start();
    let dir = emu.dir.path();
    let python = std::env::var("PRISM_EMULATOR_PYTHON").unwrap_or_else(|_| "python3".into());
    std::fs::write(dir.join("client.py"), CLIENT).unwrap();
    let prism = env!("CARGO_BIN_EXE_prism");
    // prism serve in the namespace, the client at 10.200.0.1 (not loopback) beside it.
    let script = format!(
        r#"
{prism} serve --listen 0.0.0.0:0 --allow-remote --public-url http://prism.test:8443 --state-dir {dir}/state > {dir}/out 2>{dir}/err &
server=$!
for i in $(seq 100); do grep -q 'sign in' {dir}/out 2>/dev/null && break; sleep 0.1; done
port=$(sed -n 's/.*listening on http:\/\/0.0.0.0:\([0-9]*\).*/\1/p' {dir}/out)
code=$(sed -n 's/.*login?code=\([^ ]*\).*/\1/p' {dir}/out)
{python} {dir}/client.py $port \
  "GET /healthz 10.200.0.1:$port" \
  "GET /healthz evil.example:$port" \
  "GET /login?code=$code 10.200.0.1:$port" \
  "GET /sessions 10.200.0.1:$port" \
  "GET /sessions prism.test:8443" \
  "POST /alerts/dismiss 10.200.0.1:$port http://evil.example" \
  "POST /logout prism.test:8443 http://prism.test:8443"
cat {dir}/out
kill $server
wait $server
"#,
        dir = dir.display(),
        python = python,
    );
    let out = in_namespace(
        &script,
        &[
            ("PRISM_CONFIG", "/dev/null"),
            ("HOME", dir.to_str().unwrap()),
        ],
    );
    let mut lines = out.lines();
    let answers: Vec<Value> = lines
        .by_ref()
        .take(7)
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{out}")))
        .collect();
    let status: Vec<u64> = answers
        .iter()
        .map(|a| a["status"].as_u64().unwrap())
        .collect();
    assert_eq!(status, [200, 403, 303, 200, 200, 403, 303], "{out}");
    assert!(
        answers[2]["cookie"]
            .as_str()
            .unwrap()
            .starts_with("prism_session="),
        "{out}"
    );
    let printed: Vec<&str> = lines.collect();
    assert!(
        printed
            .iter()
            .any(|l| l.starts_with("prism serve: sign in: http://prism.test:8443/login?code=")),
        "the link uses the public URL: {printed:?}"
    );
    // The Sessions page shows the address the browser came from; sign-out ended it.
    assert_eq!(answers[3]["names_peer"], true, "{out}");
    let kept = std::fs::read_to_string(dir.join("state/sessions.json")).unwrap();
    assert_eq!(kept.trim(), "{}", "signed out");
}

#[test]
fn two_hundred_quota_requests_a_second_cost_aws_a_bounded_number_of_calls() {
    let emu = Emulator::start();
    let s = start(&emu, &emu.dir.path().join("state"), &[]);
    let (st, _, first) = s.call("GET", "/api/v1/quotas", &[], None);
    assert_eq!(st, 200, "{first}");
    let per_survey = survey_calls(&emu);
    assert!(per_survey > 0);
    emu.clear_calls();
    // 20 clients, each 10 requests a second, for 10 s; /healthz asked alongside.
    let began = Instant::now();
    let (mut took, health): (Vec<Duration>, Vec<Duration>) = std::thread::scope(|t| {
        let clients: Vec<_> = (0..20)
            .map(|i| {
                let (s, first) = (&s, &first);
                t.spawn(move || {
                    let mut took = vec![];
                    for n in 0..100u32 {
                        let due = began + Duration::from_millis(u64::from(n) * 100 + i * 5);
                        std::thread::sleep(due.saturating_duration_since(Instant::now()));
                        let t0 = Instant::now();
                        let (st, _, v) = s.call("GET", "/api/v1/quotas", &[], None);
                        took.push(t0.elapsed());
                        assert_eq!(st, 200, "{v}");
                        assert_eq!(&v, first);
                    }
                    took
                })
            })
            .collect();
        let health = t.spawn(|| {
            let mut took = vec![];
            while began.elapsed() < Duration::from_secs(10) {
                let t0 = Instant::now();
                let (st, _, _) = s.call("GET", "/healthz", &[], None);
                assert_eq!(st, 200);
                took.push(t0.elapsed());
                std::thread::sleep(Duration::from_millis(200));
            }
            took
        });
        (
            clients
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect(),
            health.join().unwrap(),
        )
    });
    took.sort();
    assert_eq!(took.len(), 2000);
    let p99 = took[took.len() * 99 / 100];
    println!(
        "2000 quota answers in {:?}: p50 {:?}, p99 {:?}, max {:?}; /healthz max {:?}",
        began.elapsed(),
        took[1000],
        p99,
        took[1999],
        health.iter().max().unwrap()
    );
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");
    // A survey is shared for 5 s: about 10 s of answers cost AWS two or three surveys.
    let asked = survey_calls(&emu);
    assert!(
        asked <= 3 * per_survey,
        "2000 answers asked AWS {asked} times; one survey asks {per_survey}"
    );
}
