//! The web pages of `prism serve` in a real headless Chromium, driven over WebDriver
//! (Debian's `chromium` and `chromium-driver`). Each test saves PNG screenshots of the
//! pages it visits under the test target's temporary folder; with
//! `PRISM_UPDATE_SCREENSHOTS=1` it also writes the ones docs/serve.md shows to
//! docs/images/.
//!
//! Without Chromium or its driver the tests fail, saying how to install them
//! (`scripts/system-packages`, which `scripts/test` runs).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::emulator::{Emulator, per_workspace};
use crate::serve::{Server, manifest, start, start_with};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Chromium under chromedriver, with a fresh profile.
struct Browser {
    driver: Child,
    client: Client,
    /// chromedriver's address and the session: ended on drop, so that a failing test
    /// leaves no browser behind.
    session: String,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session quits Chromium (a test that passed has ended it already).
        let _ = ureq::delete(&self.session).call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    /// Chromium under its driver; a missing one fails the test, saying how to install it.
    async fn start() -> Browser {
        let chromium = std::env::var("PRISM_CHROMIUM").unwrap_or_else(|_| CHROMIUM.into());
        let driver = std::env::var("PRISM_CHROMEDRIVER").unwrap_or_else(|_| CHROMEDRIVER.into());
        assert!(
            Path::new(&chromium).exists() && Path::new(&driver).exists(),
            "the browser tests need Chromium ({chromium}) and chromedriver ({driver}): \
             run scripts/system-packages (apt-get install chromium chromium-driver)"
        );
        let port = free_port();
        let driver = Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().unwrap();
        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1280,860".into(),
            "--hide-scrollbars".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({
            "goog:chromeOptions": {"binary": chromium, "args": args},
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session");
        let id = client.session_id().await.unwrap().expect("a session id");
        Browser {
            driver,
            client,
            session: format!("http://127.0.0.1:{port}/session/{id}"),
            _profile: profile,
        }
    }
}

/// Evaluates `script` (which returns a value); an error (a page being replaced) is null.
async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.unwrap_or(Value::Null)
}

/// Waits until `script` returns true.
async fn until(c: &Client, what: &str, script: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if js(c, script).await == Value::Bool(true) {
            return;
        }
        if Instant::now() > deadline {
            let url = c
                .current_url()
                .await
                .map(|u| u.to_string())
                .unwrap_or_default();
            let body = js(c, "return document.body && document.body.innerText").await;
            panic!("timed out waiting for {what} on {url}:\n{body}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The page's script ran and recorded no error and no blocked content.
async fn no_js_errors(c: &Client) {
    let errors = js(c, "return window.prismErrors").await;
    assert_eq!(
        errors,
        json!([]),
        "JavaScript errors (or the script did not run)"
    );
}

fn shots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Saves a screenshot of the page as `name.png`; into docs/images/ too when asked.
async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"));
    let path = shots().join(format!("{name}.png"));
    std::fs::write(&path, &png).unwrap();
    if std::env::var_os("PRISM_UPDATE_SCREENSHOTS").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/images");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(docs.join(format!("{name}.png")), &png).unwrap();
    }
    eprintln!("screenshot: {}", path.display());
}

fn base(s: &Server) -> String {
    format!("http://127.0.0.1:{}", s.port)
}

async fn path(c: &Client) -> String {
    c.current_url().await.unwrap().path().to_string()
}

/// Clicks the element `css` selects.
async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Names of the rows of the workspace table, in order.
async fn row_names(c: &Client) -> Vec<String> {
    let v = js(
        c,
        "return [...document.querySelectorAll('#workspaces tbody tr')].map(r => r.dataset.name)",
    )
    .await;
    serde_json::from_value(v).unwrap_or_default()
}

/// The rows' state labels, by workspace.
async fn row_states(c: &Client) -> Vec<(String, String)> {
    let v = js(
        c,
        "return [...document.querySelectorAll('#workspaces tbody tr')].map(r => [r.dataset.name, r.querySelector('[data-field=state]').textContent])",
    )
    .await;
    serde_json::from_value(v).unwrap_or_default()
}

async fn sign_in(c: &Client, s: &Server) {
    c.goto(&s.login).await.unwrap();
    let url = c.current_url().await.unwrap();
    assert_eq!(
        url.as_str(),
        format!("{}/", base(s)),
        "the code left the address bar"
    );
    assert!(url.query().is_none());
}

/// Answers the confirmation dialog with its first button after checking it says `says`;
/// returns its text.
async fn confirm(c: &Client, says: &str) -> String {
    until(
        c,
        "the confirmation dialog",
        "return !!document.querySelector('dialog.confirm[open]')",
    )
    .await;
    let text = text(c, "dialog.confirm[open]").await;
    assert!(text.contains(says), "{text}");
    // The dialog takes the focus; its safe choice has it.
    assert_eq!(
        js(c, "return document.activeElement === document.querySelector('dialog.confirm[open] .actions button:last-child')").await,
        json!(true)
    );
    click(c, "dialog.confirm[open] .actions button:first-child").await;
    text
}

async fn apply(c: &Client, s: &Server, file: &str) {
    c.goto(&format!("{}/", base(s))).await.unwrap();
    let button = format!("form[action=\"/launches\"]:has(input[value=\"{file}\"]) button");
    click(c, &button).await;
    confirm(c, "This starts").await;
    until(
        c,
        "the progress page",
        "return location.pathname.startsWith('/launches/')",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_sign_in_follow_a_launch_to_running_and_cancel_one() {
    let b = Browser::start().await;
    let c = &b.client;
    let emu = Emulator::start();
    let manifests = emu.dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let paced = "{rate_per_minute: 60, burst_size: 1, adaptive: false}";
    std::fs::write(manifests.join("lab.yaml"), manifest("lab", 6, paced)).unwrap();
    std::fs::write(
        manifests.join("seminar.yaml"),
        manifest(
            "seminar",
            5,
            "{rate_per_minute: 30, burst_size: 1, adaptive: false}",
        ),
    )
    .unwrap();
    let s = start(
        &emu,
        &emu.dir.path().join("state"),
        &["--manifests", manifests.to_str().unwrap()],
    );

    // A page without the cookie sends to the login page; the link signs in once and
    // leaves the address bar; the cookie is out of the scripts' reach.
    c.goto(&format!("{}/quotas", base(&s))).await.unwrap();
    assert_eq!(path(c).await, "/login");
    no_js_errors(c).await;
    sign_in(c, &s).await;
    assert_eq!(
        js(c, "return document.cookie.includes('prism_session')").await,
        json!(false)
    );
    assert!(text(c, "main").await.contains("6 to create"));
    no_js_errors(c).await;
    screenshot(c, "launch").await;

    // Apply: the bar rises to 6/6 and every row reaches running.
    apply(c, &s, "lab.yaml").await;
    until(
        c,
        "the first launch",
        "return Number(document.getElementById('done')?.textContent) >= 1",
    )
    .await;
    assert_eq!(text(c, "#total").await, "6");
    assert!(
        text(c, "#rate")
            .await
            .starts_with("Rate limited to 60 per minute")
    );
    screenshot(c, "launch-progress").await;
    // A reload mid-launch keeps its place: one row per workspace.
    c.refresh().await.unwrap();
    let names = row_names(c).await;
    assert_eq!(
        names,
        (1..=6).map(|i| format!("lab-{i:02}")).collect::<Vec<_>>()
    );
    // The bar moves on the event stream, without a reload.
    js(c, "window.stillHere = true; return true").await;
    until(
        c,
        "a live update to 4/6",
        "return window.stillHere === true && Number(document.getElementById('done').textContent) >= 4",
    )
    .await;
    assert_eq!(row_names(c).await, names, "no duplicate rows");
    until(
        c,
        "6/6 and all running",
        "return document.getElementById('done')?.textContent === '6' && [...document.querySelectorAll('#workspaces [data-field=state]')].every(s => s.textContent === 'running') && !!document.getElementById('summary-title')",
    )
    .await;
    assert_eq!(row_names(c).await.len(), 6, "no duplicate rows");
    assert_eq!(
        c.find(Locator::Css("#launch-bar .fill"))
            .await
            .unwrap()
            .attr("width")
            .await
            .unwrap()
            .as_deref(),
        Some("100.0")
    );
    assert_eq!(text(c, "#launch-state").await, "Succeeded");
    let ids = js(
        c,
        "return [...document.querySelectorAll('#workspaces [data-field=instance]')].map(td => td.textContent)",
    )
    .await;
    assert!(
        ids.as_array()
            .unwrap()
            .iter()
            .all(|i| i.as_str().unwrap().starts_with("i-")),
        "{ids}"
    );
    assert_eq!(per_workspace(&emu, "lab").await.len(), 6);
    no_js_errors(c).await;
    screenshot(c, "launch-finished").await;

    // Cancel: the rows never launched say so, and match the emulator.
    apply(c, &s, "seminar.yaml").await;
    until(
        c,
        "the first launch",
        "return Number(document.getElementById('done')?.textContent) >= 1",
    )
    .await;
    click(c, "#cancel-form button").await;
    confirm(c, "Launches already sent finish").await;
    until(
        c,
        "the cancelled launch",
        "return document.getElementById('launch-state')?.textContent === 'Cancelled'",
    )
    .await;
    let states = row_states(c).await;
    let not_launched = states.iter().filter(|(_, s)| s == "not launched").count();
    let launched = per_workspace(&emu, "seminar").await.len();
    assert!(not_launched > 0, "{states:?}");
    assert_eq!(launched + not_launched, 5, "{states:?}");
    for (name, state) in &states {
        if state != "not launched" {
            // Sent before the cancel: on its way up, or up.
            assert!(
                matches!(state.as_str(), "launched" | "running"),
                "{name}: {state}"
            );
        }
    }
    no_js_errors(c).await;
    screenshot(c, "launch-cancelled").await;
    // The launches list has both.
    c.goto(&format!("{}/", base(&s))).await.unwrap();
    let list = text(c, "main").await;
    assert!(
        list.contains("Succeeded") && list.contains("Cancelled"),
        "{list}"
    );
    b.client.clone().close().await.unwrap();
}

/// A manifest that does not fit the quota: "Apply and wait for quota" launches what
/// fits, shows the rest waiting for quota, and launches them once the quota has room.
#[tokio::test(flavor = "multi_thread")]
async fn a_launch_from_the_page_waits_for_quota_then_launches_the_rest() {
    let b = Browser::start().await;
    let c = &b.client;
    let emu = Emulator::start();
    emu.set_quota("ec2", "L-1216C47A", 32.0);
    let manifests = emu.dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    // 10 × t3.xlarge (4 vCPUs): 8 fit 32 vCPUs.
    std::fs::write(
        manifests.join("big.yaml"),
        "name: big\nproject: p\ntemplate: t\ncount: 10\nrate_limit: {rate_per_minute: 600, burst_size: 10}\ntemplates:\n  t: {image: ami-785db401, instance_type: t3.xlarge}\n",
    )
    .unwrap();
    let s = start_with(
        &emu,
        &emu.dir.path().join("state"),
        &["--manifests", manifests.to_str().unwrap()],
        &[("PRISM_QUOTA_RECHECK", "1s")],
    );
    sign_in(c, &s).await;
    assert!(
        text(c, "main")
            .await
            .contains("2 workspaces do not fit the quota"),
        "{}",
        text(c, "main").await
    );
    screenshot(c, "launch-short-of-quota").await;
    click(c, "button[name=wait_for_quota]").await;
    let asked = confirm(
        c,
        "This starts 8 workspaces of fleet big in us-west-2: 32 vCPUs, about $1.33 per hour",
    )
    .await;
    assert!(asked.contains("2 more do not fit the quota now"), "{asked}");
    assert!(asked.contains("Apply and wait for quota"), "{asked}");
    until(
        c,
        "8 up and 2 waiting for quota",
        "return document.getElementById('done')?.textContent === '8' && [...document.querySelectorAll('#workspaces [data-field=state]')].filter(e => e.textContent === 'waiting for quota').length === 2",
    )
    .await;
    let waiting: Vec<String> = row_states(c)
        .await
        .into_iter()
        .filter(|(_, state)| state == "waiting for quota")
        .map(|(name, _)| name)
        .collect();
    assert_eq!(waiting, ["big-09", "big-10"]);
    assert!(
        text(c, "tr[data-name=big-10]").await.contains("vCPU"),
        "the row says what it waits for"
    );
    assert_eq!(
        text(c, "#waiting").await,
        "2 waiting for quota: they launch in name order as soon as the quota has room"
    );
    no_js_errors(c).await;
    js(
        c,
        "document.querySelector('tr[data-name=big-06]').scrollIntoView(); return true",
    )
    .await;
    screenshot(c, "launch-waiting-for-quota").await;

    emu.set_quota("ec2", "L-1216C47A", 48.0);
    until(
        c,
        "the finished launch",
        "return document.getElementById('launch-state')?.textContent === 'Succeeded'",
    )
    .await;
    assert_eq!(text(c, "#done").await, "10");
    assert_eq!(text(c, "#waiting").await, "");
    assert!(
        !text(c, "tr[data-name=big-10]").await.contains("vCPU"),
        "the reason is gone once it launched"
    );
    let per = per_workspace(&emu, "big").await;
    assert_eq!(per.len(), 10);
    assert!(per.values().all(|n| *n == 1), "{per:?}");
    b.client.clone().close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_page_colours_usage_alerts_and_takes_an_increase_request() {
    let b = Browser::start().await;
    let c = &b.client;
    let emu = Emulator::start();
    emu.set_quota("ec2", "L-1216C47A", 32.0);
    // 14 × t3.micro: 28 of 32 vCPUs, 88 %.
    crate::emulator::launch(&emu.ec2(), None, None, "t3.micro", 14).await;
    let s = start(&emu, &emu.dir.path().join("state"), &[]);
    sign_in(c, &s).await;

    // The banner is on every page.
    let banner = text(c, ".banner").await;
    assert!(
        banner.contains("vCPU quota is 88 % used (28/32)"),
        "{banner}"
    );
    assert!(banner.contains("Critical"), "{banner}");
    c.goto(&format!("{}/quotas", base(&s))).await.unwrap();
    assert!(
        text(c, ".banner")
            .await
            .contains("vCPU quota is 88 % used (28/32)")
    );
    no_js_errors(c).await;

    // Bars: red and "Critical" at 28/32, green and "Healthy" at 0/8.
    let standard = "tr[data-code='L-1216C47A']";
    assert_eq!(
        text(c, &format!("{standard} [data-field=status]")).await,
        "Critical"
    );
    let bar = c
        .find(Locator::Css(&format!("{standard} svg.bar")))
        .await
        .unwrap();
    assert_eq!(
        bar.attr("class").await.unwrap().as_deref(),
        Some("bar critical")
    );
    let fill = c
        .find(Locator::Css(&format!("{standard} svg.bar .fill")))
        .await
        .unwrap();
    assert_eq!(fill.attr("width").await.unwrap().as_deref(), Some("87.5"));
    let colour = js(
        c,
        &format!(
            "return getComputedStyle(document.querySelector(\"{standard} svg.bar .fill\")).fill"
        ),
    )
    .await;
    assert_eq!(colour, json!("rgb(192, 57, 43)"), "red");
    let gpu = "tr[data-code='L-DB2E81BA']";
    assert_eq!(
        text(c, &format!("{gpu} [data-field=status]")).await,
        "Healthy"
    );
    let colour = js(
        c,
        &format!("return getComputedStyle(document.querySelector(\"{gpu} svg.bar .fill\")).fill"),
    )
    .await;
    assert_eq!(colour, json!("rgb(46, 125, 79)"), "green");
    screenshot(c, "quotas").await;

    // The form: current value, desired prefilled with the recommended one, a reason.
    click(c, &format!("{standard} a.button")).await;
    until(
        c,
        "the form",
        "return !!document.getElementById('increase')",
    )
    .await;
    assert_eq!(text(c, "#current").await, "32 vCPUs");
    let desired = c.find(Locator::Id("desired")).await.unwrap();
    assert_eq!(desired.prop("value").await.unwrap().as_deref(), Some("35"));
    emu.clear_calls();
    // Not above the current value: refused in the page, nothing sent.
    desired.clear().await.unwrap();
    desired.send_keys("32").await.unwrap();
    c.find(Locator::Id("reason"))
        .await
        .unwrap()
        .send_keys("Lab of 20 students")
        .await
        .unwrap();
    screenshot(c, "quota-request-form").await;
    click(c, "#increase button[type=submit]").await;
    let error = text(c, "#desired-error").await;
    assert!(
        error.contains("must be above the current value (32)"),
        "{error}"
    );
    assert_eq!(
        desired.attr("aria-invalid").await.unwrap().as_deref(),
        Some("true")
    );
    screenshot(c, "quota-request-refused").await;
    // No reason: refused in the page too.
    desired.clear().await.unwrap();
    desired.send_keys("40").await.unwrap();
    c.find(Locator::Id("reason"))
        .await
        .unwrap()
        .clear()
        .await
        .unwrap();
    click(c, "#increase button[type=submit]").await;
    assert_eq!(text(c, "#desired-error").await, "");
    assert!(text(c, "#reason-error").await.contains("Say why"));
    c.find(Locator::Id("reason"))
        .await
        .unwrap()
        .send_keys("Lab of 20 students")
        .await
        .unwrap();
    assert!(path(c).await == "/quotas");
    assert_eq!(emu.call_counts().get("RequestServiceQuotaIncrease"), None);
    // The server refuses it too, when the page's check is bypassed.
    js(c, "document.getElementById('increase').noValidate = true; document.getElementById('desired').value = '30'; HTMLFormElement.prototype.submit.call(document.getElementById('increase')); return true").await;
    until(
        c,
        "the refusal",
        "return !!document.querySelector('#request-form .notice.critical')",
    )
    .await;
    assert!(
        text(c, "#request-form .notice.critical")
            .await
            .contains("must be above the current")
    );
    assert_eq!(emu.call_counts().get("RequestServiceQuotaIncrease"), None);
    // A good one is sent and listed as PENDING with its reason.
    let desired = c.find(Locator::Id("desired")).await.unwrap();
    desired.clear().await.unwrap();
    desired.send_keys("40").await.unwrap();
    click(c, "#increase button[type=submit]").await;
    until(
        c,
        "the submitted request",
        "return location.search.startsWith('?submitted=') && !!document.querySelector('#request-list tr.just-submitted')",
    )
    .await;
    let row = text(c, "#request-list tr.just-submitted").await;
    assert!(row.contains("Pending") && row.contains("32 → 40"), "{row}");
    assert_eq!(
        emu.call_counts().get("RequestServiceQuotaIncrease"),
        Some(&1)
    );
    no_js_errors(c).await;
    screenshot(c, "quota-requests").await;
    // The banner knows the increase is on its way.
    let banner = text(c, ".banner").await;
    assert!(banner.contains("an increase to 40 is pending"), "{banner}");

    // The request's own page: the reason kept here, its steps, the console of its region.
    click(c, "#request-list tr.just-submitted a").await;
    until(
        c,
        "the request's page",
        "return !!document.getElementById('detail-title')",
    )
    .await;
    let detail = text(c, ".request-detail").await;
    for part in [
        "Lab of 20 students",
        "32 → 40",
        "Pending",
        "Submitted",
        "Case opened with AWS Support",
        "one or two business days",
        "(us-west-2)",
    ] {
        assert!(detail.contains(part), "{part}: {detail}");
    }
    let console = js(
        c,
        "return document.querySelector('.request-detail a.external').href",
    )
    .await;
    assert_eq!(
        console,
        json!(
            "https://us-west-2.console.aws.amazon.com/servicequotas/home/requests?region=us-west-2"
        )
    );
    no_js_errors(c).await;
    screenshot(c, "quota-request").await;
    c.goto(&format!("{}/quotas#requests", base(&s)))
        .await
        .unwrap();

    // Sort by submitted date, both ways.
    click(c, "#sort").await;
    until(
        c,
        "oldest first",
        "return location.search.includes('sort=oldest')",
    )
    .await;
    assert_eq!(
        js(
            c,
            "return document.querySelector('#request-list th[aria-sort]').getAttribute('aria-sort')"
        )
        .await,
        json!("ascending")
    );

    // Filter by status: choosing does not reload (nor lose the focus); the button does.
    let select = c.find(Locator::Id("status")).await.unwrap();
    select.select_by_value("APPROVED").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!path(c).await.contains("APPROVED"));
    assert_eq!(
        js(c, "return location.search.includes('status=') ").await,
        json!(false)
    );
    click(c, "#refresh").await;
    until(
        c,
        "the filter",
        "return location.search.includes('status=APPROVED') && location.search.includes('sort=oldest')",
    )
    .await;
    assert!(
        text(c, "#requests")
            .await
            .contains("No quota increase requests.")
    );
    no_js_errors(c).await;

    // Dismiss hides the banner until the alerts change.
    click(c, ".banner form button").await;
    until(c, "no banner", "return !document.querySelector('.banner')").await;
    c.goto(&format!("{}/", base(&s))).await.unwrap();
    assert_eq!(
        js(c, "return !!document.querySelector('.banner')").await,
        json!(false)
    );
    b.client.clone().close().await.unwrap();
}

/// axe-core, vendored from npm (tests/vendor/axe-core).
const AXE: &str = include_str!("../vendor/axe-core/axe.min.js");

/// The serious and critical axe-core violations of the page, and whether it scrolls
/// sideways.
async fn audit(c: &Client) -> (Vec<Value>, bool) {
    c.execute(&format!("{AXE}\nreturn true;"), vec![])
        .await
        .expect("axe-core loads");
    let found = c
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
axe.run(document, {resultTypes: ["violations"]}).then((r) => done(r.violations
  .filter((v) => v.impact === "serious" || v.impact === "critical")
  .map((v) => ({id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 4).map((n) => n.target.join(" ") + " — " + n.failureSummary)}))),
  (e) => done([{id: "axe-error", help: String(e)}]));"#,
            vec![],
        )
        .await
        .expect("axe-core runs");
    let sideways = js(
        c,
        "return document.documentElement.scrollWidth > document.documentElement.clientWidth",
    )
    .await;
    (
        serde_json::from_value(found).unwrap(),
        sideways == Value::Bool(true),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_page_passes_axe_and_fits_a_phone() {
    let b = Browser::start().await;
    let c = &b.client;
    let emu = Emulator::start();
    // 28 of 48 vCPUs in use: 10 of the lab's 12 t3.micro fit.
    emu.set_quota("ec2", "L-1216C47A", 48.0);
    crate::emulator::launch(&emu.ec2(), None, None, "t3.micro", 14).await;
    let manifests = emu.dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let fast = "{rate_per_minute: 600, burst_size: 10}";
    std::fs::write(manifests.join("lab.yaml"), manifest("lab", 12, fast)).unwrap();
    std::fs::write(manifests.join("broken.yaml"), "name: broken\ncount: many\n").unwrap();
    let s = start(
        &emu,
        &emu.dir.path().join("state"),
        &["--manifests", manifests.to_str().unwrap()],
    );
    c.goto(&format!("{}/login", base(&s))).await.unwrap();
    let mut pages = vec![("login".to_string(), format!("{}/login", base(&s)))];
    sign_in(c, &s).await;
    apply(c, &s, "lab.yaml").await;
    until(
        c,
        "the launch's end",
        "return !!document.getElementById('summary-title')",
    )
    .await;
    // Nothing failed: partly done, not failed; the total is what it launched.
    assert_eq!(
        text(c, "#launch-state").await,
        "Partly done — 2 skipped for quota"
    );
    assert_eq!(text(c, "#done").await, "10");
    assert_eq!(text(c, "#total").await, "10");
    assert_eq!(text(c, "#skipped").await, "· 2 skipped");
    let progress = c.current_url().await.unwrap().to_string();
    let (st, _, v) = s.call(
        "POST",
        "/api/v1/quotas/requests",
        &[],
        Some(&json!({"quota": "L-1216C47A", "desired_value": 64, "reason": "a class of 30"})),
    );
    assert_eq!(st, 201, "{v}");
    let request = v["request_id"].as_str().unwrap().to_string();
    let detail = format!("/quotas/requests/{request}");
    for (name, path) in [
        ("launch", "/"),
        ("quotas", "/quotas"),
        ("quota-form", "/quotas?request=L-1216C47A"),
        ("quota-request", detail.as_str()),
        ("sessions", "/sessions"),
        ("not-found", "/no-such-page"),
    ] {
        pages.push((name.to_string(), format!("{}{path}", base(&s))));
    }
    pages.push(("launch-progress".into(), progress));
    let mut problems = vec![];
    for (width, height, label) in [(1280, 860, "desktop"), (390, 844, "phone")] {
        c.set_window_size(width, height).await.unwrap();
        for (name, url) in &pages {
            if name == "login" {
                // Signed out, in a page of its own.
                continue;
            }
            c.goto(url).await.unwrap();
            let (violations, sideways) = audit(c).await;
            screenshot(c, &format!("axe-{name}-{label}")).await;
            if !violations.is_empty() {
                problems.push(format!("{name} at {width} px: {violations:#?}"));
            }
            if sideways {
                problems.push(format!("{name} at {width} px scrolls sideways"));
            }
            no_js_errors(c).await;
        }
    }
    // The login page, signed out.
    c.delete_all_cookies().await.unwrap();
    for (width, height) in [(1280, 860), (390, 844)] {
        c.set_window_size(width, height).await.unwrap();
        c.goto(&pages[0].1).await.unwrap();
        let (violations, sideways) = audit(c).await;
        if !violations.is_empty() || sideways {
            problems.push(format!(
                "login at {width} px: {violations:#?} sideways {sideways}"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The server stops and comes back while a page follows a launch: the page says the
/// connection dropped, reconnects, explains the interruption and offers Resume, and the
/// resumed launch ends with every workspace counted once.
#[tokio::test(flavor = "multi_thread")]
async fn a_page_follows_a_launch_across_a_server_restart_and_resumes_it() {
    let b = Browser::start().await;
    let c = &b.client;
    let emu = Emulator::start();
    let manifests = emu.dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let paced = "{rate_per_minute: 60, burst_size: 1, adaptive: false}";
    std::fs::write(manifests.join("lab.yaml"), manifest("lab", 8, paced)).unwrap();
    let state = emu.dir.path().join("state");
    let args = ["--manifests", manifests.to_str().unwrap()];
    let mut s = start(&emu, &state, &args);
    sign_in(c, &s).await;
    apply(c, &s, "lab.yaml").await;
    until(
        c,
        "three launched",
        "return Number(document.getElementById('done')?.textContent) >= 3",
    )
    .await;
    let eta = text(c, "#eta").await;
    assert!(eta.starts_with("About "), "{eta}");

    // The server stops: the page says so.
    js(c, "window.stillHere = true; return true").await;
    let port = s.port.to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &s.child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    s.child.wait().unwrap();
    until(
        c,
        "the connection notice",
        "return window.stillHere === true && document.getElementById('connection').textContent.length > 0",
    )
    .await;
    screenshot(c, "launch-connection-lost").await;
    let launched_before = per_workspace(&emu, "lab").await.len();
    assert!((3..8).contains(&launched_before), "{launched_before}");

    // Back on the same port: the page reconnects and explains the interruption.
    let listen = format!("127.0.0.1:{port}");
    let mut again: Vec<&str> = args.to_vec();
    again.extend(["--listen", listen.as_str()]);
    let s2 = start(&emu, &state, &again);
    until(
        c,
        "the interrupted launch",
        "return !!document.getElementById('interrupted-note')",
    )
    .await;
    let note = text(c, "#interrupted-note").await;
    assert!(
        note.contains("prism serve stopped while this launch ran"),
        "{note}"
    );
    assert!(
        note.contains(&format!("{launched_before} of 8 workspaces were launched")),
        "{note}"
    );
    assert_eq!(text(c, "#launch-state").await, "Interrupted");
    assert_eq!(text(c, "#connection").await, "");
    screenshot(c, "launch-interrupted").await;
    // Resume: it carries on, and what launched before stays counted.
    click(c, "#interrupted-note button").await;
    until(
        c,
        "the resumed launch's end",
        "return document.getElementById('launch-state')?.textContent === 'Succeeded'",
    )
    .await;
    assert_eq!(text(c, "#done").await, "8");
    assert_eq!(text(c, "#total").await, "8");
    assert_eq!(row_names(c).await.len(), 8, "no row lost or doubled");
    let per = per_workspace(&emu, "lab").await;
    assert_eq!(per.len(), 8);
    assert!(per.values().all(|n| *n == 1), "{per:?}");
    no_js_errors(c).await;
    drop(s2);
    b.client.clone().close().await.unwrap();
}
