//! Prometheus metrics against the emulator: `prism serve`'s `/metrics` during and after a
//! 30-workspace launch (behind the token, and on `--metrics-listen`), `prism watch
//! --metrics-listen`, and the refusal of an unauthenticated listener off loopback. The
//! answers are read with a Prometheus text parser.

use std::process::Stdio;
use std::time::Duration;

use prometheus_parse::{Sample, Scrape, Value as PromValue};
use serde_json::json;

use crate::emulator::{Emulator, Running, prism_command, stderr, stop};
use crate::eventually::{eventually, eventually_async};
use crate::serve::{manifest, raw, start};

const BULK: &str = "/api/v1/workspaces/bulk-launch";
const FAST: &str = "{rate_per_minute: 600, burst_size: 10}";

/// A port nothing listens on now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /metrics` on `port` with these extra header lines: (status, head, body).
fn get_metrics(port: u16, host: &str, headers: &str) -> (u16, String, String) {
    raw(
        port,
        &format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n"),
    )
}

/// The metrics on `port`, parsed as Prometheus's text format.
pub(crate) fn scrape(port: u16, headers: &str) -> Scrape {
    let (st, head, body) = get_metrics(port, &format!("127.0.0.1:{port}"), headers);
    assert_eq!(st, 200, "{head}\n{body}");
    assert!(
        head.to_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text")
}

fn number(v: &PromValue) -> f64 {
    match v {
        PromValue::Counter(n) | PromValue::Gauge(n) | PromValue::Untyped(n) => *n,
        PromValue::Histogram(_) | PromValue::Summary(_) => f64::NAN,
    }
}

/// The sum of the samples named `name` whose labels include `labels`.
pub(crate) fn sum(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    matching(s, name, labels).map(|m| number(&m.value)).sum()
}

fn matching<'a>(
    s: &'a Scrape,
    name: &'a str,
    labels: &'a [(&str, &str)],
) -> impl Iterator<Item = &'a Sample> {
    s.samples.iter().filter(move |m| {
        m.metric == name
            && labels
                .iter()
                .all(|(k, v)| m.labels.get(k).is_some_and(|x| x == *v))
    })
}

/// Every sample of `name` has the type `kind` (counter, gauge, histogram), and one is there.
fn typed(s: &Scrape, name: &str, kind: &str) {
    let found: Vec<&Sample> = s.samples.iter().filter(|m| m.metric == name).collect();
    assert!(!found.is_empty(), "no {name} in the scrape");
    for m in found {
        let ok = matches!(
            (&m.value, kind),
            (PromValue::Counter(_), "counter")
                | (PromValue::Gauge(_), "gauge")
                | (PromValue::Histogram(_), "histogram")
        );
        assert!(ok, "{name} is not a {kind}: {:?}", m.value);
    }
}

#[test]
fn serve_metrics_count_a_30_workspace_launch() {
    let emu = Emulator::start();
    emu.set_quota("ec2", "L-1216C47A", 1000.0);
    let state = emu.dir.path().join("state");
    let scrape_port = free_port();
    let scrape_at = format!("127.0.0.1:{scrape_port}");
    let s = start(&emu, &state, &["--metrics-listen", &scrape_at]);
    let port = s.port;
    let token = format!("Authorization: Bearer {}\r\n", s.token);

    // Behind the token on the main listener.
    let (st, _, _) = get_metrics(port, &format!("127.0.0.1:{port}"), "");
    assert_eq!(st, 401);

    let body = json!({"manifest": manifest("ml", 30, FAST)});
    let (st, _, created) = s.call("POST", BULK, &[], Some(&body));
    assert_eq!(st, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    // An event stream held open while the launch runs counts as one.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(
        &mut stream,
        format!(
            "GET {BULK}/{id}/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{token}Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();

    // During the launch, the counters move.
    eventually("RunInstances counted", Duration::from_secs(60), || {
        let m = scrape(port, &token);
        let ok = sum(
            &m,
            "prism_aws_requests_total",
            &[("operation", "RunInstances"), ("outcome", "ok")],
        );
        if ok > 0.0 { Ok(()) } else { Err(ok) }
    });

    let over = s.until_over(&id);
    assert_eq!(over["state"], "succeeded", "{over}");
    drop(stream);

    let m = scrape(port, &token);
    for (name, kind) in [
        ("prism_workspace_changes_total", "counter"),
        ("prism_aws_requests_total", "counter"),
        ("prism_aws_request_duration_seconds", "histogram"),
        ("prism_launch_rate_per_second", "gauge"),
        ("prism_serve_event_streams", "gauge"),
    ] {
        typed(&m, name, kind);
    }
    let launches = sum(
        &m,
        "prism_aws_requests_total",
        &[
            ("operation", "RunInstances"),
            ("outcome", "ok"),
            ("region", "us-west-2"),
        ],
    );
    assert!(launches >= 30.0, "RunInstances ok: {launches}");
    let launched = sum(
        &m,
        "prism_workspace_changes_total",
        &[("fleet", "ml"), ("outcome", "launched")],
    );
    assert_eq!(launched, 30.0);
    assert_eq!(
        sum(
            &m,
            "prism_workspace_changes_total",
            &[("outcome", "failed")]
        ),
        0.0
    );
    let rate = sum(
        &m,
        "prism_launch_rate_per_second",
        &[("region", "us-west-2")],
    );
    assert!(rate > 0.0 && rate <= 10.0, "launch rate {rate}/s");
    assert!(
        sum(
            &m,
            "prism_aws_requests_total",
            &[("operation", "DescribeInstances")]
        ) > 0.0
    );

    // The same without a token on --metrics-listen; OpenMetrics for who asks for it.
    let (st, _, body) = get_metrics(scrape_port, &scrape_at, "");
    assert_eq!(st, 200);
    assert!(
        body.contains("prism_workspace_changes_total{fleet=\"ml\",outcome=\"launched\"} 30\n"),
        "{body}"
    );
    let (st, head, body) = get_metrics(
        scrape_port,
        &scrape_at,
        "Accept: application/openmetrics-text; version=1.0.0\r\n",
    );
    assert_eq!(st, 200);
    assert!(
        head.to_lowercase().contains("application/openmetrics-text"),
        "{head}"
    );
    assert!(body.contains("# TYPE prism_workspace_changes counter\n") && body.ends_with("# EOF\n"));
    // Only by a loopback name, and nothing else there.
    let (st, _, _) = get_metrics(scrape_port, &format!("evil.example:{scrape_port}"), "");
    assert_eq!(st, 403);
    let (st, _, _) = raw(
        scrape_port,
        &format!("GET {BULK} HTTP/1.1\r\nHost: {scrape_at}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(st, 404);
}

#[test]
fn event_streams_count_while_open() {
    let emu = Emulator::start();
    emu.set_quota("ec2", "L-1216C47A", 1000.0);
    let state = emu.dir.path().join("state");
    let s = start(&emu, &state, &[]);
    let port = s.port;
    let token = format!("Authorization: Bearer {}\r\n", s.token);
    // A slow launch: its stream stays open for a while.
    let slow = "{rate_per_minute: 30, burst_size: 1, adaptive: false}";
    let body = json!({"manifest": manifest("sl", 4, slow)});
    let (st, _, created) = s.call("POST", BULK, &[], Some(&body));
    assert_eq!(st, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(
        &mut stream,
        format!(
            "GET {BULK}/{id}/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{token}Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    eventually("one open stream", Duration::from_secs(10), || {
        let n = sum(&scrape(port, &token), "prism_serve_event_streams", &[]);
        if n == 1.0 { Ok(()) } else { Err(n) }
    });
    drop(stream);
    // Cancelled, the launch ends, and so does its stream.
    let (st, _, _) = s.call("DELETE", &format!("{BULK}/{id}"), &[], None);
    assert_eq!(st, 200);
    eventually("no open stream", Duration::from_secs(30), || {
        let n = sum(&scrape(port, &token), "prism_serve_event_streams", &[]);
        if n == 0.0 { Ok(()) } else { Err(n) }
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_serves_metrics_on_its_own_listener() {
    let emu = Emulator::start();
    let path = emu.write(
        "lab.yaml",
        "name: lab\nproject: p\ntemplate: t\ncount: 3\nrate_limit: {rate_per_minute: 600, burst_size: 10}\ntemplates:\n  t: {image: ami-785db401, instance_type: t3.micro}\n",
    );
    let port = free_port();
    let at = format!("127.0.0.1:{port}");
    let log = emu.dir.path().join("watch.log");
    let child = prism_command(&[
        "watch",
        "--resync",
        "1s",
        "--metrics-listen",
        &at,
        path.to_str().unwrap(),
    ])
    .env("AWS_ENDPOINT_URL", &emu.url)
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap())
    .spawn()
    .unwrap();
    let running = Running(Some(child));
    let m = eventually_async(
        "a clean pass with 3 running",
        Duration::from_secs(60),
        async || {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                return Err("not listening yet".to_string());
            }
            let (_, _, body) = get_metrics(port, &at, "");
            let m = Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
            let clean = sum(
                &m,
                "prism_watch_passes_total",
                &[("fleet", "lab"), ("outcome", "clean")],
            );
            let running = sum(
                &m,
                "prism_workspaces",
                &[("fleet", "lab"), ("state", "running")],
            );
            if clean >= 1.0 && running == 3.0 {
                Ok(m)
            } else {
                Err(body)
            }
        },
    )
    .await;
    typed(&m, "prism_watch_passes_total", "counter");
    typed(&m, "prism_watch_pass_duration_seconds", "histogram");
    typed(&m, "prism_watch_last_success_timestamp_seconds", "gauge");
    typed(&m, "prism_workspaces", "gauge");
    typed(&m, "prism_quota_usage", "gauge");
    typed(&m, "prism_quota_limit", "gauge");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let last = sum(
        &m,
        "prism_watch_last_success_timestamp_seconds",
        &[("fleet", "lab")],
    );
    assert!((now - last).abs() < 120.0, "last success {last}, now {now}");
    assert!(sum(&m, "prism_quota_limit", &[("quota_code", "L-1216C47A")]) > 0.0);
    assert!(sum(&m, "prism_quota_usage", &[("quota_code", "L-1216C47A")]) >= 6.0);
    assert_eq!(
        sum(
            &m,
            "prism_workspace_changes_total",
            &[("fleet", "lab"), ("outcome", "launched")]
        ),
        3.0
    );
    assert_eq!(stop(running), Some(0));
}

#[test]
fn an_unauthenticated_listener_off_loopback_takes_allow_remote() {
    let emu = Emulator::start();
    let path = emu.write("lab.yaml", &manifest("lab", 1, FAST));
    let out = emu.prism(&[
        "watch",
        "--once",
        "--metrics-listen",
        "0.0.0.0:0",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out)
            .contains("refusing to serve metrics on 0.0.0.0:0, which is not a loopback address"),
        "{}",
        stderr(&out)
    );
    assert_eq!(emu.count("RunInstances"), 0);
    let state = emu.dir.path().join("state");
    let out = emu.prism(&[
        "serve",
        "--state-dir",
        state.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "0.0.0.0:0",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("pass --allow-remote"),
        "{}",
        stderr(&out)
    );
}
