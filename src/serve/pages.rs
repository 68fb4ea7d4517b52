//! The web pages: server-rendered HTML that shows the current state without JavaScript,
//! one small script (`app.js`) that follows a launch with `EventSource`, and a style
//! sheet. Every action is a plain form posted to this server; the handlers call the
//! same functions as the API.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::App;
use super::api;
use super::error::ApiError;
use super::guard::{self, Guard};
use super::quotas::{self, IncreaseBody, REQUEST_STATUSES};
use crate::engine::progress::human;
use crate::quota::Status;
use crate::quota::request::number;
use crate::quota::usage::{Alert, QuotaRow};

/// Where AWS shows the account's quota requests.
const CONSOLE: &str = "https://console.aws.amazon.com/servicequotas/home/requests";

/// The cookie that hides the alert banner until the alerts change.
const DISMISSED: &str = "prism_dismissed";

pub const SCRIPT: &str = include_str!("assets/app.js");
pub const STYLE: &str = include_str!("assets/app.css");
pub const ICON: &str = include_str!("assets/icon.svg");

fn asset(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

pub async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

pub async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

pub async fn icon() -> Response {
    asset(ICON, "image/svg+xml")
}

/// Which page a layout is for, to mark it in the navigation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Nav {
    Launch,
    Quotas,
    None,
}

/// The alerts and what the banner shows of them.
struct Banner {
    alerts: Vec<Alert>,
    /// Identifies this set of alerts: a dismissal hides the banner until it changes.
    signature: String,
    dismissed: bool,
}

impl Banner {
    async fn of(app: &App, headers: &HeaderMap) -> Banner {
        let alerts = match quotas::survey(app).await {
            Ok(rows) => crate::quota::usage::alerts(&rows),
            Err(_) => vec![],
        };
        Banner::from_alerts(alerts, headers)
    }

    fn from_alerts(alerts: Vec<Alert>, headers: &HeaderMap) -> Banner {
        let signature: String = alerts
            .iter()
            .map(|a| format!("{}-{}-{}", a.code, a.usage, a.limit))
            .collect::<Vec<_>>()
            .join(".");
        let dismissed = guard::cookie(headers, DISMISSED).is_some_and(|c| c == signature);
        Banner {
            alerts,
            signature,
            dismissed,
        }
    }
}

/// "vCPU quota is 88 % used (28/32)".
pub fn alert_text(a: &Alert) -> String {
    let what = match crate::quota::by_name(&a.code) {
        Some(c) if c.unit == "vCPUs" => "vCPU quota".to_string(),
        _ => format!("{} quota", a.name),
    };
    format!(
        "{what} is {} % used ({}/{})",
        a.percent.map_or("-".into(), |p| format!("{p:.0}")),
        number(a.usage),
        number(a.limit)
    )
}

fn banner(b: &Banner, back: &str) -> Markup {
    if b.alerts.is_empty() || b.dismissed {
        return html! {};
    }
    let critical = b.alerts.iter().any(|a| a.severity == "critical");
    let level = if critical { "critical" } else { "warning" };
    html! {
        section.banner.(level) role="alert" aria-labelledby="banner-title" {
            div.banner-text {
                h2 #banner-title .visually-hidden {
                    @if critical { "Critical quota alert" } @else { "Quota warning" }
                }
                @for a in &b.alerts {
                    p {
                        span.badge.(a.severity) { @if a.severity == "critical" { "Critical" } @else { "Warning" } }
                        " "
                        strong { (alert_text(a)) }
                        " "
                        span.muted { "· " (a.name) }
                    }
                }
            }
            div.banner-actions {
                a.button.primary href={ "/quotas?request=" (b.alerts[0].code) "#request-form" } { "Request increase" }
                form method="post" action="/alerts/dismiss" {
                    input type="hidden" name="signature" value=(b.signature);
                    input type="hidden" name="back" value=(back);
                    button.button type="submit" { "Dismiss" }
                }
            }
        }
    }
}

fn layout(title: &str, nav: Nav, banner_html: Markup, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · prism" }
                link rel="stylesheet" href="/assets/app.css";
                link rel="icon" href="/assets/icon.svg" type="image/svg+xml";
                script src="/assets/app.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { img src="/assets/icon.svg" alt="" width="22" height="22"; " prism" }
                    nav aria-label="Pages" {
                        a href="/" aria-current=[(nav == Nav::Launch).then_some("page")] { "Launch" }
                        a href="/quotas" aria-current=[(nav == Nav::Quotas).then_some("page")] { "Quotas" }
                    }
                }
                (banner_html)
                main #main { (main) }
            }
        }
    }
}

fn page(status: StatusCode, markup: Markup) -> Response {
    (status, markup).into_response()
}

/// A usage bar: an SVG rectangle as wide as `fraction` (0–1), coloured by `class`.
fn bar(fraction: f64, class: &str, label: &str, id: Option<&str>) -> Markup {
    let width = format!("{:.1}", (fraction.clamp(0.0, 1.0) * 1000.0).round() / 10.0);
    html! {
        svg.bar.(class) id=[id] viewBox="0 0 100 10" preserveAspectRatio="none" role="img" aria-label=(label) {
            rect.track x="0" y="0" width="100" height="10" rx="0" {}
            rect.fill x="0" y="0" width=(width) height="10" rx="0" {}
        }
    }
}

fn error_box(e: &ApiError) -> Markup {
    let err = &e.body["error"];
    let text = |k: &str| err[k].as_str().unwrap_or_default().to_string();
    html! {
        div.notice.critical role="alert" {
            p { strong { (text("title")) } }
            @if text("what_happened") != text("title") { pre.explain { (text("what_happened")) } }
            @if !text("what_you_can_do").is_empty() { p { (text("what_you_can_do")) } }
            @if let Some(problems) = err["problems"].as_array() {
                ul {
                    @for p in problems {
                        li { (p["line"]) ":" (p["column"]) " " (p["message"].as_str().unwrap_or_default()) }
                    }
                }
            }
        }
    }
}

// ---- login -------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    code: Option<String>,
}

fn signed_in(guard: &Guard) -> Response {
    let mut r = Redirect::to("/").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&guard.session_cookie()).expect("a cookie is ASCII"),
    );
    r
}

fn login_page(status: StatusCode, message: Option<&str>) -> Response {
    page(
        status,
        layout(
            "Sign in",
            Nav::None,
            html! {},
            html! {
                section.card.narrow {
                    h1 { "Sign in" }
                    @if let Some(m) = message { p.notice.warning role="alert" { (m) } }
                    p { "Open the sign-in link " code { "prism serve" } " printed when it started, or paste the API token from the " code { "token" } " file of its state directory." }
                    form method="post" action="/login" {
                        label for="token" { "API token" }
                        input #token type="password" name="token" autocomplete="off" required;
                        button.button.primary type="submit" { "Sign in" }
                    }
                }
            },
        ),
    )
}

pub async fn login(State(guard): State<Arc<Guard>>, Query(q): Query<LoginQuery>) -> Response {
    match q.code {
        Some(code) if guard.use_login_code(&code) => signed_in(&guard),
        Some(_) => login_page(
            StatusCode::UNAUTHORIZED,
            Some(
                "This sign-in link was used already or is not this server's. Paste the API token instead, or restart prism serve for a new link.",
            ),
        ),
        None => login_page(StatusCode::OK, None),
    }
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: String,
}

pub async fn login_post(State(guard): State<Arc<Guard>>, Form(f): Form<LoginForm>) -> Response {
    if guard.is_token(&f.token) {
        signed_in(&guard)
    } else {
        login_page(StatusCode::UNAUTHORIZED, Some("That is not the API token."))
    }
}

#[derive(Debug, Deserialize)]
pub struct DismissForm {
    signature: String,
    back: String,
}

/// Hides the banner until the alerts change.
pub async fn dismiss(Form(f): Form<DismissForm>) -> Response {
    let back = if f.back.starts_with('/') && !f.back.starts_with("//") {
        f.back
    } else {
        "/".into()
    };
    let cookie: String = f
        .signature
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-._".contains(*c))
        .collect();
    let mut r = Redirect::to(&back).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{DISMISSED}={cookie}; HttpOnly; SameSite=Strict; Path=/"
        ))
        .expect("ASCII"),
    );
    r
}

// ---- Launch --------------------------------------------------------------------------

/// The manifests under `--manifests` (`.yaml`/`.yml`, two levels deep), as paths
/// relative to it, sorted.
fn manifest_files(app: &App) -> Vec<String> {
    let Some(root) = &app.manifests else {
        return vec![];
    };
    let mut out = vec![];
    let mut dirs = vec![(root.clone(), 0)];
    while let Some((dir, depth)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() && depth < 1 {
                dirs.push((path, depth + 1));
            } else if path.extension().is_some_and(|x| x == "yaml" || x == "yml")
                && let Ok(rel) = path.strip_prefix(root)
            {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

fn state_label(state: &str) -> &str {
    match state {
        "queued" => "Queued",
        "running" => "Running",
        "cancelling" => "Cancelling",
        "succeeded" => "Succeeded",
        "failed" => "Failed",
        "cancelled" => "Cancelled",
        "interrupted" => "Interrupted",
        other => other,
    }
}

fn launches_table(app: &App) -> Markup {
    let launches = app.registry.all();
    html! {
        @if launches.is_empty() {
            p.muted { "No launches yet." }
        } @else {
            table {
                caption.visually-hidden { "Launches, newest first" }
                thead { tr { th scope="col" { "Launch" } th scope="col" { "Fleet" } th scope="col" { "State" } th scope="col" { "Progress" } th scope="col" { "Started" } } }
                tbody {
                    @for l in &launches {
                        @let v = l.view();
                        @let state = v["state"].as_str().unwrap_or_default().to_string();
                        tr {
                            td { a href={ "/launches/" (l.id()) } { code { (l.id()) } } }
                            td { (v["fleet"].as_str().unwrap_or_default()) }
                            td { span.badge.(state) { (state_label(&state)) } }
                            td { (v["progress"]["completed"].as_u64().unwrap_or(0)) " / " (v["progress"]["total"].as_u64().unwrap_or(0)) }
                            td { time datetime=(v["created_at"].as_str().unwrap_or_default()) { (v["created_at"].as_str().unwrap_or_default()) } }
                        }
                    }
                }
            }
        }
    }
}

async fn manifest_card(app: &App, rel: &str) -> Markup {
    let planned = api::plan_file(app, rel).await;
    html! {
        article.card.manifest {
            h3 { code { (rel) } }
            @match &planned {
                Err(e) => { (error_box(e)) }
                Ok((plan, gate)) => {
                    @let s = &plan.summary;
                    p {
                        "Fleet " strong { (plan.fleet) } " in " (plan.region) ": "
                        @if s.total() == 0 { "in its declared state, nothing to do." } @else {
                            (s.create) " to create"
                            @if s.start > 0 { ", " (s.start) " to start" }
                            @if s.stop > 0 { ", " (s.stop) " to stop" }
                            @if s.replace > 0 { ", " (s.replace) " to replace" }
                            @if s.delete > 0 { ", " (s.delete) " to delete" }
                            "."
                        }
                    }
                    ul.quota-fit {
                        @for q in &plan.quota {
                            li {
                                @if gate.shortfalls.iter().any(|f| f.code == q.code) {
                                    span.badge.critical { "Short" } " "
                                } @else {
                                    span.badge.ok { "Fits" } " "
                                }
                                (q.name) ": needs " (q.needed) " vCPUs, "
                                (q.usage.map_or("?".into(), |u| u.to_string())) " of "
                                (q.limit.map_or("?".into(), number)) " in use"
                            }
                        }
                    }
                    @if s.total() > 0 {
                        form method="post" action="/launches" {
                            input type="hidden" name="manifest_path" value=(rel);
                            @if !gate.shortfalls.is_empty() {
                                p.notice.warning {
                                    (gate.over_quota.len()) " workspaces do not fit the quota. "
                                    "Apply launches the ones that fit (in name order) and skips the rest."
                                }
                                input type="hidden" name="allow_partial" value="true";
                            }
                            button.button.primary type="submit" { "Apply" }
                        }
                    }
                }
            }
        }
    }
}

pub async fn launch_page(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let banner_data = Banner::of(&app, &headers).await;
    let files = manifest_files(&app);
    let mut cards = vec![];
    for f in &files {
        cards.push(manifest_card(&app, f).await);
    }
    let main = html! {
        h1 { "Launch" }
        section aria-labelledby="manifests-title" {
            h2 #manifests-title { "Manifests" }
            @if app.manifests.is_none() {
                p.muted { "Start " code { "prism serve --manifests DIR" } " to launch the manifests of a folder from here." }
            } @else if files.is_empty() {
                p.muted { "No manifest (.yaml) in the manifests folder." }
            }
            div.cards { @for c in cards { (c) } }
        }
        section aria-labelledby="launches-title" {
            h2 #launches-title { "Launches" }
            (launches_table(&app))
        }
    };
    page(
        StatusCode::OK,
        layout("Launch", Nav::Launch, banner(&banner_data, "/"), main),
    )
}

#[derive(Debug, Deserialize)]
pub struct ApplyForm {
    manifest_path: String,
    #[serde(default)]
    allow_partial: Option<String>,
}

pub async fn apply(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Form(f): Form<ApplyForm>,
) -> Response {
    let allow = f.allow_partial.as_deref() == Some("true");
    match api::launch_file(&app, &f.manifest_path, allow).await {
        Ok(l) => Redirect::to(&format!("/launches/{}", l.id())).into_response(),
        Err(e) => {
            let banner_data = Banner::of(&app, &headers).await;
            let main = html! {
                h1 { "Launch" }
                (error_box(&e))
                p { a href="/" { "Back to the manifests" } }
            };
            page(
                e.status,
                layout("Launch", Nav::Launch, banner(&banner_data, "/"), main),
            )
        }
    }
}

// ---- Launch progress -----------------------------------------------------------------

/// How a workspace's state reads on the page.
pub fn workspace_label(state: &str) -> &str {
    match state {
        "queued" => "queued",
        "waiting_for_limiter" => "queued",
        "launching" => "launching",
        "retrying" => "launching (retrying)",
        "launched" => "launched",
        "changed" => "changed",
        "running" => "running",
        "stopped" => "stopped",
        "failed" => "failed",
        "skipped" => "skipped",
        "cancelled" => "not launched",
        other => other,
    }
}

fn progress_section(v: &Value) -> Markup {
    let p = &v["progress"];
    let total = p["total"].as_u64().unwrap_or(0);
    let completed = p["completed"].as_u64().unwrap_or(0);
    let fraction = if total == 0 {
        0.0
    } else {
        completed as f64 / total as f64
    };
    let rate = p["rate_per_minute"].as_f64();
    let eta = p["estimated_time_remaining_s"].as_f64();
    html! {
        div.progress {
            p.count { span #done { (completed) } " / " span #total { (total) } " workspaces" }
            (bar(fraction, "launch", "Launched so far", Some("launch-bar")))
            p.status #rate {
                @if let Some(r) = rate { "Rate limited to " (number(r.round())) " per minute" }
                @if p["rate_limited"].as_bool() == Some(true) { " · waiting for the rate limit" }
            }
            p.status #eta {
                @if let Some(s) = eta.filter(|s| *s >= 1.0) { "About " (human(std::time::Duration::from_secs_f64(s))) " remaining" }
            }
        }
    }
}

fn workspace_rows(v: &Value) -> Markup {
    let rows = v["workspaces"].as_array().cloned().unwrap_or_default();
    html! {
        @for w in &rows {
            @let name = w["name"].as_str().unwrap_or_default();
            @let state = w["state"].as_str().unwrap_or_default();
            @let attempts = w["attempts"].as_u64().unwrap_or(0);
            tr data-name=(name) {
                th scope="row" { (name) }
                td { span.badge.(state) data-field="state" { (workspace_label(state)) } }
                td data-field="instance" { @if let Some(i) = w["instance_id"].as_str() { code { (i) } } }
                td data-field="zone" { (w["availability_zone"].as_str().unwrap_or_default()) }
                td data-field="retries" { (attempts.saturating_sub(1)) }
                td data-field="error" {
                    @if let Some(t) = w["error"]["title"].as_str() {
                        strong { (t) } br; span.muted { (w["error"]["what_you_can_do"].as_str().unwrap_or_default()) }
                    } @else if let Some(r) = w["skip_reason"].as_str() { span.muted { (r) } }
                }
            }
        }
    }
}

fn summary(v: &Value) -> Markup {
    let r = &v["report"];
    if r.is_null() {
        return html! {};
    }
    let failed = r["failed"].as_array().map_or(0, Vec::len);
    let skipped = r["skipped"].as_array().map_or(0, Vec::len);
    html! {
        section.card.summary aria-labelledby="summary-title" {
            h2 #summary-title { "Summary" }
            dl {
                dt { "Launched" } dd { (r["launched"]) }
                dt { "Succeeded" } dd { (r["succeeded"]) " of " (r["total"]) }
                dt { "Failed" } dd { (failed) }
                dt { "Skipped" } dd { (skipped) }
                dt { "Not launched" } dd { (r["not_started"]) }
                @if let Some(s) = v["progress"]["elapsed_s"].as_f64() { dt { "Time" } dd { (human(std::time::Duration::from_secs_f64(s))) } }
            }
        }
    }
}

pub async fn launch_progress(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let banner_data = Banner::of(&app, &headers).await;
    let back = format!("/launches/{id}");
    let Ok(launch) = api::find(&app, &id) else {
        let main = html! { h1 { "No such launch" } p { a href="/" { "See the launches" } } };
        return page(
            StatusCode::NOT_FOUND,
            layout("Launch", Nav::Launch, banner(&banner_data, &back), main),
        );
    };
    let v = launch.view();
    let state = v["state"].as_str().unwrap_or_default().to_string();
    let active = launch.state().is_active();
    let main = html! {
        div.launch #launch data-id=(id) data-active=(active) {
            div.title-row {
                h1 { "Launch of " (v["fleet"].as_str().unwrap_or_default()) }
                span.badge.(state) #launch-state { (state_label(&state)) }
            }
            p.muted { "Launch " code { (id) } " · started " (v["created_at"].as_str().unwrap_or_default()) }
            @if state == "queued" { p.notice.warning #queued-note { "Waiting for the launch before it in this account and region to finish." } }
            @if let Some(t) = v["error"]["title"].as_str() { div.notice.critical role="alert" { strong { (t) } pre.explain { (v["error"]["what_happened"].as_str().unwrap_or_default()) } } }
            section.card aria-label="Progress" aria-live="polite" { (progress_section(&v)) }
            @if active {
                form method="post" action={ "/launches/" (id) "/cancel" } #cancel-form {
                    button.button.danger type="submit" { "Cancel remaining launches" }
                    span.muted { " Launches already sent finish; nothing new starts." }
                }
            }
            (summary(&v))
            table #workspaces {
                caption.visually-hidden { "Workspaces of this launch" }
                thead { tr { th scope="col" { "Workspace" } th scope="col" { "State" } th scope="col" { "Instance" } th scope="col" { "Zone" } th scope="col" { "Retries" } th scope="col" { "Problem" } } }
                tbody { (workspace_rows(&v)) }
            }
            noscript { p.muted { "Reload the page to see newer progress." } }
        }
    };
    page(
        StatusCode::OK,
        layout(
            "Launch progress",
            Nav::Launch,
            banner(&banner_data, &back),
            main,
        ),
    )
}

pub async fn cancel(State(app): State<Arc<App>>, UrlPath(id): UrlPath<String>) -> Response {
    if let Ok(l) = api::find(&app, &id) {
        l.cancel(false);
    }
    Redirect::to(&format!("/launches/{id}")).into_response()
}

// ---- Quotas --------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
pub struct QuotaQuery {
    /// The quota whose increase form is open.
    request: Option<String>,
    /// Only requests in this status.
    status: Option<String>,
    /// The request just submitted.
    submitted: Option<String>,
}

fn status_text(s: Status) -> (&'static str, &'static str) {
    match s {
        Status::Critical => ("critical", "Critical"),
        Status::Warning => ("warning", "Warning"),
        Status::Ok => ("ok", "Healthy"),
        _ => ("unknown", "Unknown"),
    }
}

fn quota_table(rows: &[QuotaRow]) -> Markup {
    html! {
        table.quotas {
            caption.visually-hidden { "Quotas with their usage" }
            thead { tr { th scope="col" { "Quota" } th scope="col" { "Usage" } th scope="col" { "Used" } th scope="col" { "Status" } th scope="col" { span.visually-hidden { "Action" } } } }
            tbody {
                @for r in rows {
                    @let (class, text) = status_text(r.status);
                    tr data-code=(r.code) {
                        th scope="row" { (r.name) br; span.muted { code { (r.code) } " · " (r.quota) } }
                        td.usage {
                            @if let (Some(u), Some(l)) = (r.usage, r.limit) {
                                (bar(if l > 0.0 { u / l } else if u > 0.0 { 1.0 } else { 0.0 }, class, &format!("{} % used", r.percent.map_or(0.0, |p| p.round())), None))
                            } @else { span.muted { "unknown" } }
                        }
                        td.num {
                            (r.usage.map_or("?".into(), number)) " / " (r.limit.map_or("?".into(), number)) " " (r.unit)
                            @if let Some(p) = r.percent { br; span.muted { (format!("{p:.0}")) " %" } }
                        }
                        td { span.badge.(class) data-field="status" { (text) } @if let Some(n) = &r.note { br; span.muted { (n) } } }
                        td {
                            @if r.adjustable == Some(true) && r.limit.is_some() {
                                a.button.small href={ "/quotas?request=" (r.code) "#request-form" } aria-label={ "Request increase of " (r.name) } { "Request increase" }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn request_form(
    row: &QuotaRow,
    error: Option<&ApiError>,
    reason: &str,
    desired: Option<f64>,
) -> Markup {
    let current = row.limit.unwrap_or(0.0);
    let suggested = desired
        .or(row.recommended_value)
        .or_else(|| {
            row.usage
                .and_then(|u| crate::quota::arith::recommended_value(u, row.limit))
        })
        .filter(|d| *d > current)
        .unwrap_or(current + 1.0);
    let step = if row.unit == "vCPUs" { "1" } else { "any" };
    let min = if row.unit == "vCPUs" {
        number(current + 1.0)
    } else {
        number(current)
    };
    html! {
        section.card #request-form aria-labelledby="request-title" {
            h2 #request-title { "Request an increase: " (row.name) }
            @if let Some(e) = error { (error_box(e)) }
            form #increase method="post" action="/quotas/requests" data-current=(current) {
                input type="hidden" name="quota" value=(row.code);
                div.field {
                    label for="current" { "Current value" }
                    output #current name="current" { (number(current)) " " (row.unit) }
                }
                div.field {
                    label for="desired" { "Desired value (" (row.unit) ")" }
                    input #desired type="number" name="desired_value" required min=(min) step=(step) value=(number(suggested)) aria-describedby="desired-help desired-error";
                    span #desired-help .muted { "Must be above " (number(current)) ". Suggested: " (number(suggested)) "." }
                    span #desired-error .field-error role="alert" {}
                }
                div.field {
                    label for="reason" { "Reason" }
                    textarea #reason name="reason" required rows="3" aria-describedby="reason-help" { (reason) }
                    span #reason-help .muted { "Kept by prism with the request (AWS keeps no reason)." }
                }
                div.actions {
                    button.button.primary type="submit" { "Submit request" }
                    a.button href="/quotas" { "Cancel" }
                }
            }
        }
    }
}

fn requests_section(requests: &Result<Vec<Value>, ApiError>, q: &QuotaQuery) -> Markup {
    html! {
        section #requests aria-labelledby="requests-title" {
            div.title-row {
                h2 #requests-title { "Increase requests" }
                a.external href=(CONSOLE) rel="noopener noreferrer" target="_blank" { "View in AWS Console" }
            }
            form.filters method="get" action="/quotas#requests" {
                label for="status" { "Status" }
                select #status name="status" {
                    option value="" selected[q.status.is_none()] { "All" }
                    @for s in REQUEST_STATUSES {
                        option value=(s) selected[q.status.as_deref() == Some(s)] { (s) }
                    }
                }
                button.button type="submit" #refresh { "Refresh" }
            }
            @match requests {
                Err(e) => { (error_box(e)) }
                Ok(rows) if rows.is_empty() => { p.muted { "No quota increase requests." } }
                Ok(rows) => {
                    table #request-list {
                        caption.visually-hidden { "Quota increase requests, newest first" }
                        thead { tr { th scope="col" { "Request" } th scope="col" { "Quota" } th scope="col" { "Value" } th scope="col" { "Reason" } th scope="col" { "Status" } th scope="col" { "Submitted" } th scope="col" { "Updated" } th scope="col" { "Case" } } }
                        tbody {
                            @for r in rows {
                                @let id = r["request_id"].as_str().unwrap_or_default();
                                @let status = r["status"].as_str().unwrap_or_default();
                                tr data-id=(id) .just-submitted[q.submitted.as_deref() == Some(id)] {
                                    td { code { (id) } }
                                    td { (r["quota"].as_str().or(r["name"].as_str()).unwrap_or_default()) }
                                    td.num {
                                        @if let Some(v) = r["value_at_request"].as_f64() { (number(v)) " → " }
                                        (r["desired_value"].as_f64().map_or("?".into(), number))
                                    }
                                    td { (r["reason"].as_str().unwrap_or("—")) }
                                    td { span.badge.(status.to_lowercase()) data-field="status" { (status) } }
                                    td { (date(&r["submitted"])) }
                                    td { (date(&r["last_updated"])) }
                                    td { (r["support_case"].as_str().unwrap_or("—")) }
                                }
                            }
                        }
                    }
                    p.muted { "AWS usually answers within one or two business days." }
                }
            }
        }
    }
}

/// An RFC 3339 date as the tables show it: `2026-03-01 09:30 UTC`.
fn date(v: &Value) -> Markup {
    match v.as_str() {
        Some(d) => {
            let shown = d.get(..16).unwrap_or(d).replace('T', " ");
            html! { time datetime=(d) { (shown) " UTC" } }
        }
        None => html! { "—" },
    }
}

async fn quotas_view(
    app: &App,
    headers: &HeaderMap,
    q: &QuotaQuery,
    form: Option<(&ApiError, &str, Option<f64>, &str)>,
) -> Response {
    let rows = quotas::survey(app).await;
    let requests = quotas::requests(app, q.status.as_deref().filter(|s| !s.is_empty())).await;
    let alerts = rows
        .as_ref()
        .map(|r| crate::quota::usage::alerts(r))
        .unwrap_or_default();
    let banner_data = Banner::from_alerts(alerts, headers);
    let open = form.map(|f| f.3.to_string()).or_else(|| q.request.clone());
    let main = html! {
        div.title-row {
            h1 { "Quotas" }
            a.button href="/quotas" { "Refresh" }
        }
        @match &rows {
            Err(e) => { (error_box(e)) }
            Ok(rows) => {
                (quota_table(rows))
                p.legend.muted { span.badge.ok { "Healthy" } " under 50 % · " span.badge.warning { "Warning" } " 50–80 % · " span.badge.critical { "Critical" } " over 80 %" }
                @if let Some(code) = &open {
                    @if let Some(row) = crate::quota::by_name(code).and_then(|c| rows.iter().find(|r| r.code == c.code)) {
                        @if let Some((e, reason, desired, _)) = form {
                            (request_form(row, Some(e), reason, desired))
                        } @else {
                            (request_form(row, None, "", None))
                        }
                    }
                }
            }
        }
        @if let Some(id) = &q.submitted {
            p.notice.ok role="status" { "Request " code { (id) } " was sent to AWS." }
        }
        (requests_section(&requests, q))
    };
    let status = form.map_or(StatusCode::OK, |f| f.0.status);
    page(
        status,
        layout("Quotas", Nav::Quotas, banner(&banner_data, "/quotas"), main),
    )
}

pub async fn quotas_page(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<QuotaQuery>,
) -> Response {
    quotas_view(&app, &headers, &q, None).await
}

#[derive(Debug, Deserialize)]
pub struct IncreaseForm {
    quota: String,
    desired_value: String,
    reason: String,
}

pub async fn request_increase(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Form(f): Form<IncreaseForm>,
) -> Response {
    let desired = f
        .desired_value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite());
    let result = match desired {
        None => Err(
            ApiError::bad_request(format!("`{}` is not a number", f.desired_value))
                .fix("Enter the desired value as a number."),
        ),
        Some(d) => {
            quotas::ask(
                &app,
                &IncreaseBody {
                    quota: f.quota.clone(),
                    desired_value: d,
                    reason: f.reason.clone(),
                },
            )
            .await
        }
    };
    match result {
        Ok(row) => Redirect::to(&format!(
            "/quotas?submitted={}#requests",
            row["request_id"].as_str().unwrap_or_default()
        ))
        .into_response(),
        Err(e) => {
            quotas_view(
                &app,
                &headers,
                &QuotaQuery::default(),
                Some((&e, &f.reason, desired, &f.quota)),
            )
            .await
        }
    }
}
